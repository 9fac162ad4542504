//! The trait every cluster backend fills, the [`Cluster`] handle the
//! signaling server holds, and the table of this node's rooms both
//! backends keep.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsewave_auth::Claims;
use pulsewave_protocol::{RoomInfo, RoomSid};
use tokio::sync::mpsc;

use crate::error::ClusterError;
use crate::local::LocalCluster;
use crate::trust::RejectedMessages;
use crate::tunnel::{IncomingTunnel, TunnelEnd};
use crate::types::{ClusterRoom, NodeInfo, NodeLoad, OrphanedWebhooks, Placement};

/// A boxed, sendable future: the return type of the trait's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the signaling server needs from the cluster. [`LocalCluster`]
/// (single node, no Redis) and [`RedisCluster`](crate::RedisCluster) fill
/// it; the server holds either through a [`Cluster`].
///
/// The `room_*` notifications are synchronous and never wait for the
/// store: room actors call them on every change, and a slow or unreachable
/// Redis must not slow a room down.
pub trait ClusterBackend: Send + Sync + fmt::Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// Whether this is the single-node backend (no other node exists).
    fn is_single_node(&self) -> bool;

    /// Whether the cluster store is reachable now (always true for a single
    /// node).
    fn is_available(&self) -> bool;

    /// Decides where `room` runs for a client connecting to this node.
    /// Rooms already open here are the caller's business (it serves them
    /// locally without asking). If another live node owns the room, that
    /// node; otherwise this node claims the room atomically and answers
    /// [`Placement::Local`], unless `may_claim` is false (the node is
    /// draining): then [`ClusterError::Draining`].
    fn place_room<'a>(
        &'a self,
        room: &'a str,
        may_claim: bool,
    ) -> BoxFuture<'a, Result<Placement, ClusterError>>;

    /// A room open on this node changed (created, participant joined or
    /// left, track published, unpublished or muted). Claims the room for
    /// this node if it is new.
    fn room_updated(&self, info: &RoomInfo);

    /// A room on this node closed: its claim and record are released.
    /// Ignored if the room `name` open here is not the instance `sid`.
    fn room_closed(&self, name: &str, sid: &RoomSid);

    /// Every live node, sorted by id.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>>;

    /// Every open room of the cluster with the node it lives on, sorted by
    /// name.
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<ClusterRoom>, ClusterError>>;

    /// Opens a tunnel to `owner` for a client of `room` whose access token
    /// this node verified, with the token's `claims` (never the token
    /// itself), and waits until the owner runs the session.
    fn open_tunnel<'a>(
        &'a self,
        owner: &'a str,
        room: &'a str,
        claims: &'a Claims,
    ) -> BoxFuture<'a, Result<TunnelEnd, ClusterError>>;

    /// The tunnels other nodes open towards this one. Returns the receiver
    /// once; `None` afterwards and for a single node.
    fn take_incoming_tunnels(&self) -> Option<mpsc::Receiver<IncomingTunnel>>;

    /// Marks the node draining (no new rooms) or not, in the registry.
    fn set_draining(&self, draining: bool);

    /// Whether the node is draining.
    fn is_draining(&self) -> bool;

    /// Load of this node: its open rooms, participants and tracks.
    fn local_load(&self) -> NodeLoad;

    /// Messages and records read from the cluster store that were refused
    /// (forged, altered, replayed, stale, from an unregistered node) since
    /// the node started, by reason: for a metric. Always zero for a single
    /// node.
    fn rejected_messages(&self) -> RejectedMessages {
        RejectedMessages::default()
    }

    /// A webhook event `id` of `room` (its JSON `body`) was queued on this
    /// node: keep it in the node's webhook journal in the store until
    /// [`webhook_journal_remove`](Self::webhook_journal_remove), so that a
    /// surviving node delivers it if this one dies. Never waits (the write
    /// is queued, in order); an event queued while the store is
    /// unreachable is journaled once it is back (a bounded wait list),
    /// unless removed before. No-op for a single node.
    fn webhook_journal_append(&self, room: &str, id: &str, body: &str) {
        let _ = (room, id, body);
    }

    /// Event `id` of `room` was delivered or dropped: remove it from the
    /// journal (this node's own, or one it claimed). Never waits. No-op for
    /// a single node.
    fn webhook_journal_remove(&self, room: &str, id: &str) {
        let _ = (room, id);
    }

    /// Looks for webhook journals of nodes that left the registry (bounded
    /// work per call), claims each atomically (no two nodes get the same
    /// journal) and answers their events in order. Entries that do not
    /// verify under the cluster key are refused, counted in
    /// [`rejected_messages`](Self::rejected_messages) and removed, never
    /// answered; entries older than `max_age` are removed and counted in
    /// [`OrphanedWebhooks::dropped`]. Always empty for a single node.
    fn webhook_journal_claim_orphans(
        &self,
        max_age: Duration,
    ) -> BoxFuture<'_, Result<OrphanedWebhooks, ClusterError>> {
        let _ = max_age;
        Box::pin(async { Ok(OrphanedWebhooks::default()) })
    }

    /// Leaves the cluster: releases this node's claims, removes it from the
    /// registry and closes the connection to the store.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// The cluster backend a server uses: a cheap, cloneable handle on a
/// [`ClusterBackend`]. The default is a single node ([`Cluster::local`]).
#[derive(Clone)]
pub struct Cluster(Arc<dyn ClusterBackend>);

impl Cluster {
    /// A single node: no Redis, every room placed here.
    pub fn local() -> Self {
        Self::new(LocalCluster::default())
    }

    /// Wraps a backend.
    pub fn new<B: ClusterBackend>(backend: B) -> Self {
        Self(Arc::new(backend))
    }

    /// Wraps a shared backend.
    pub fn from_arc(backend: Arc<dyn ClusterBackend>) -> Self {
        Self(backend)
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::local()
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Deref for Cluster {
    type Target = dyn ClusterBackend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// The rooms open on this node, as last reported by their actors.
#[derive(Debug, Default)]
pub(crate) struct LocalRooms {
    rooms: Mutex<HashMap<String, RoomInfo>>,
}

impl LocalRooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomInfo>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `info`; true if the room was not known (or was another
    /// instance).
    pub(crate) fn update(&self, info: &RoomInfo) -> bool {
        let mut rooms = self.lock();
        let new = rooms.get(&info.name).is_none_or(|r| r.sid != info.sid);
        rooms.insert(info.name.clone(), info.clone());
        new
    }

    /// Forgets room `name` if it is the instance `sid`; true if it was.
    pub(crate) fn remove(&self, name: &str, sid: &RoomSid) -> bool {
        let mut rooms = self.lock();
        if rooms.get(name).is_some_and(|r| &r.sid == sid) {
            rooms.remove(name);
            true
        } else {
            false
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<RoomInfo> {
        self.lock().get(name).cloned()
    }

    pub(crate) fn snapshot(&self) -> Vec<RoomInfo> {
        let mut v: Vec<RoomInfo> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub(crate) fn load(&self) -> NodeLoad {
        let rooms = self.lock();
        let mut load = NodeLoad {
            rooms: rooms.len() as u32,
            ..NodeLoad::default()
        };
        for r in rooms.values() {
            load.participants += r.participants.len() as u32;
            load.tracks += r
                .participants
                .iter()
                .map(|p| p.tracks.len() as u32)
                .sum::<u32>();
        }
        load
    }
}
