//! [`RedisCluster`]: the node registry, room placement, room records and
//! tunnels, on one [`RedisConnection`].
//!
//! Tasks (all stop on [`ClusterBackend::shutdown`]):
//! - **monitor** (every 200 ms and on every reconnection event): notices
//!   when the connection to Redis drops. A drop loses pub/sub messages, so
//!   every tunnel is declared lost; when the connection is back the node
//!   re-registers and re-asserts its room claims at once.
//! - **heartbeat** (every second): writes `pw:node:<id>` with its load,
//!   refreshes the list of live nodes, refreshes room claims and records
//!   every 3 s, sends tunnel keepalives and declares silent tunnels, or
//!   tunnels to nodes that left the registry, lost.
//! - **flusher**: writes room changes reported by the room actors, so that
//!   an actor never waits for Redis.
//! - **router**: reads this node's two channels, verifies each message
//!   (signature, recipient, timestamp, sequence number, sender registered)
//!   and hands it to its tunnel.
//! - one **writer** per tunnel: publishes its frames in order.
//! - **journal writer**: appends webhook events to this node's webhook
//!   journals and removes them once delivered, in order, so that the
//!   webhook notifier never waits for Redis (see
//!   [`ClusterBackend::webhook_journal_append`]).
//!
//! Everything this node writes for others is signed with the cluster key
//! ([`crate::trust`]); everything it reads from Redis is verified before it
//! is used, and refused (and counted) otherwise.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use pulsewave_auth::Claims;
use pulsewave_protocol::{RoomInfo, RoomSid};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::RedisConnection;
use super::keys;
use crate::backend::{BoxFuture, ClusterBackend, LocalRooms};
use crate::cpu::CpuSampler;
use crate::error::ClusterError;
use crate::trust::{
    ClusterKey, EVERY_NODE, Header, Kind, RejectCounters, RejectedMessages, Rejection,
    SignedMessage, valid_node_id,
};
use crate::tunnel::{IncomingTunnel, Op, TUNNEL_QUEUE, TunnelEnd, TunnelFrame};
use crate::types::{
    ClusterRoom, ClusterTimings, JournaledWebhook, NodeConfig, NodeInfo, NodeLoad,
    OrphanedWebhooks, Placement, random_tunnel_id, unix_millis,
};

/// Serializes the messages of one tunnel end, so that their sequence
/// numbers reach the peer in increasing order.
type OutLock = Arc<tokio::sync::Mutex<()>>;

/// Incoming tunnels waiting for the signaling server to take them.
const INCOMING_QUEUE: usize = 256;
/// Webhook journal writes waiting for the journal writer; beyond this they
/// are dropped (an event not journaled, or a delivered event left in the
/// journal: sent again after a failover, with the same id).
const JOURNAL_QUEUE: usize = 8192;
/// Lifetime of a webhook journal without appends (far beyond any webhook's
/// maximum age): leftovers of removals that failed disappear by themselves.
const JOURNAL_TTL: Duration = Duration::from_secs(600);
/// Journal keys looked at per search for orphaned journals.
const JOURNAL_SCAN_KEYS: usize = 64;
/// Journals claimed per search.
const JOURNAL_CLAIMS: usize = 8;
/// Entries read from one claimed journal (a room's webhook queue holds at
/// most 200 events); further ones are dropped and counted.
const JOURNAL_READ: usize = 256;

/// Appends kept while the store is unreachable, written once it is back;
/// beyond this the oldest is dropped (about a minute of a busy node's
/// events: an event delivered meanwhile leaves the list).
const JOURNAL_PENDING: usize = 4096;
/// How often pending appends are tried again while the store is away.
const JOURNAL_RETRY: Duration = Duration::from_millis(500);
/// Tries of an append the store refuses while reachable (a script error,
/// say) before it is dropped, so one bad entry cannot hold the rest back.
const JOURNAL_ATTEMPTS: u32 = 3;

/// An append to the webhook journal not written yet.
#[derive(Debug)]
struct PendingAppend {
    room: String,
    id: String,
    body: String,
    created_ms: u64,
    /// Refusals by a reachable store.
    failures: u32,
}

/// One write to the webhook journals, in the order the notifier made them.
#[derive(Debug)]
enum JournalOp {
    Append {
        room: String,
        id: String,
        body: String,
        created_ms: u64,
    },
    Remove {
        room: String,
        id: String,
    },
}

/// The journal entries this node wrote or claimed and has not removed:
/// `(room, event id)` to `(journal key, entry text, when added, Unix ms)`.
type JournalEntries = HashMap<(String, String), (String, String, u64)>;

/// The Redis backend. Cheap to clone; every clone is the same node.
///
/// ```no_run
/// # async fn run() -> Result<(), pulsewave_cluster::ClusterError> {
/// use pulsewave_cluster::{
///     Cluster, ClusterBackend, ClusterKey, ClusterTimings, NodeConfig, RedisCluster, RedisManager,
///     RedisOptions,
/// };
///
/// let connection = RedisManager::new(RedisOptions::default()).connect().await?;
/// let node = NodeConfig { id: "node-a".into(), ..NodeConfig::default() };
/// let key = ClusterKey::derive("the cluster secret, the same on every node")?;
/// let cluster = Cluster::new(RedisCluster::start(connection, node, key, ClusterTimings::default())?);
/// for node in cluster.nodes().await? {
///     println!("{} at {} ({} rooms)", node.id, node.signaling_url, node.rooms);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

/// Which end of a tunnel this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The client is connected here; the room is elsewhere.
    Relay,
    /// The room (and the session) is here.
    Owner,
}

#[derive(Debug)]
struct Slot {
    peer: String,
    role: Role,
    deliver: mpsc::Sender<TunnelFrame>,
    last_heard: Instant,
    last_keepalive: Instant,
    created: Instant,
    epoch: u64,
    /// Highest sequence number accepted from the peer on this tunnel.
    last_seq: u64,
    /// Held while a message of this end is signed and published.
    out: OutLock,
}

/// The live nodes as last read from the registry, and when.
#[derive(Debug, Default, Clone)]
struct LiveNodes {
    nodes: HashMap<String, NodeInfo>,
    read_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    node: NodeConfig,
    key: ClusterKey,
    timings: ClusterTimings,
    /// Sequence number of the next signed message: starts at the Unix time
    /// in microseconds, so that it also increases across restarts.
    seq: AtomicU64,
    /// Messages and records refused, by reason.
    rejected: RejectCounters,
    /// Ids of the tunnels opened towards this node recently (for the
    /// replay window), and when.
    seen_opens: Mutex<HashMap<String, Instant>>,
    conn: RedisConnection,
    started_at: u64,
    in_channel: String,
    out_channel: String,
    rooms: LocalRooms,
    /// Rooms whose claim and record must be written.
    dirty: Mutex<HashSet<String>>,
    /// Rooms whose claim and record must be released.
    released: Mutex<HashSet<String>>,
    flush: Notify,
    /// Wakes the heartbeat early (reconnected, draining changed).
    resync: Notify,
    draining: AtomicBool,
    /// Whether the connection is up, as last seen by the monitor.
    connected: AtomicBool,
    /// Until when (after a reconnect) this node claims no new room; see
    /// [`ClusterTimings::resync_grace`].
    resync_until: Mutex<Option<Instant>>,
    /// Incremented on every loss of the connection.
    epoch: AtomicU64,
    live: Mutex<LiveNodes>,
    tunnels: Mutex<HashMap<String, Slot>>,
    pending_opens: Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>,
    incoming_tx: mpsc::Sender<IncomingTunnel>,
    incoming_rx: Mutex<Option<mpsc::Receiver<IncomingTunnel>>>,
    cpu: Mutex<CpuSampler>,
    stop: watch::Sender<bool>,
    /// Writes for the journal writer.
    journal_tx: mpsc::Sender<JournalOp>,
    /// Entries in the store not yet delivered, to remove them by id.
    journal_entries: Mutex<JournalEntries>,
    /// Where the next search for orphaned journals goes on in the set.
    journal_cursor: Mutex<String>,
    /// Journals this node claimed but could not read yet (the store failed
    /// in between): read on the next search.
    journal_unread: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl RedisCluster {
    /// Joins the cluster as `node` over `connection` and starts the
    /// background tasks. Must be called within a tokio runtime. Works while
    /// Redis is still unreachable: the node registers as soon as it is
    /// reachable. `key` signs and verifies everything nodes exchange: every
    /// node of the cluster needs the same (see [`ClusterKey::derive`]).
    pub fn start(
        connection: RedisConnection,
        node: NodeConfig,
        key: ClusterKey,
        timings: ClusterTimings,
    ) -> Result<Self, ClusterError> {
        if !valid_node_id(&node.id) {
            return Err(ClusterError::Config(format!(
                "node id `{}` must be 1 to 64 characters among A-Z a-z 0-9 - _ .",
                node.id
            )));
        }
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let (journal_tx, journal_rx) = mpsc::channel(JOURNAL_QUEUE);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            in_channel: keys::node_in(&node.id),
            out_channel: keys::node_out(&node.id),
            node,
            key,
            timings,
            seq: AtomicU64::new(unix_millis().saturating_mul(1000)),
            rejected: RejectCounters::default(),
            seen_opens: Mutex::new(HashMap::new()),
            conn: connection,
            started_at: unix_millis(),
            rooms: LocalRooms::default(),
            dirty: Mutex::new(HashSet::new()),
            released: Mutex::new(HashSet::new()),
            flush: Notify::new(),
            resync: Notify::new(),
            draining: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            resync_until: Mutex::new(None),
            epoch: AtomicU64::new(0),
            live: Mutex::new(LiveNodes::default()),
            tunnels: Mutex::new(HashMap::new()),
            pending_opens: Mutex::new(HashMap::new()),
            incoming_tx,
            incoming_rx: Mutex::new(Some(incoming_rx)),
            cpu: Mutex::new(CpuSampler::new()),
            stop,
            journal_tx,
            journal_entries: Mutex::new(HashMap::new()),
            journal_cursor: Mutex::new("0".to_owned()),
            journal_unread: Mutex::new(Vec::new()),
        });
        info!(node = %inner.node.id, url = %inner.node.signaling_url, region = %inner.node.region, cluster_key = %inner.key.fingerprint(), "joining the cluster (Redis)");
        tokio::spawn(inner.clone().router());
        tokio::spawn(inner.clone().monitor());
        tokio::spawn(inner.clone().heartbeat());
        tokio::spawn(inner.clone().flusher());
        tokio::spawn(inner.clone().subscribe());
        tokio::spawn(inner.clone().journal_writer(journal_rx));
        Ok(Self { inner })
    }

    /// The connection this node uses.
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.conn
    }

    /// The timings in force.
    pub fn timings(&self) -> &ClusterTimings {
        &self.inner.timings
    }
}

/// Milliseconds of a duration, for time windows.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Inner {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn wait_stop(stop: &mut watch::Receiver<bool>) {
        let _ = stop.wait_for(|s| *s).await;
    }

    fn available(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.conn.is_connected()
    }

    fn node_info(&self, cpu: f32) -> NodeInfo {
        let load = self.rooms.load();
        NodeInfo {
            id: self.node.id.clone(),
            signaling_url: self.node.signaling_url.clone(),
            media_ip: self.node.media_ip.clone(),
            region: self.node.region.clone(),
            rooms: load.rooms,
            participants: load.participants,
            tracks: load.tracks,
            cpu,
            draining: self.draining.load(Ordering::Relaxed),
            started_at: self.started_at,
            updated_at: unix_millis(),
        }
    }

    // ------------------------------------------------------------------
    // Signing and verifying

    /// Signs `body` as a message of `kind` from this node.
    fn sign(&self, kind: Kind, to: &str, subject: &str, body: &str) -> String {
        self.sign_at(kind, to, subject, body, unix_millis())
    }

    /// Signs `body` as a message of `kind` from this node, timestamped `ts`
    /// (Unix ms).
    fn sign_at(&self, kind: Kind, to: &str, subject: &str, body: &str, ts: u64) -> String {
        let header = Header {
            kind,
            from: &self.node.id,
            to,
            subject,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            ts,
        };
        SignedMessage::sign(&self.key, &header, body)
    }

    /// This node's claim on `room`.
    fn claim(&self, room: &str) -> String {
        self.sign(Kind::Claim, EVERY_NODE, room, "")
    }

    /// Counts and logs a refused message or record. Warnings for forgeries
    /// are logged for the 1st, 2nd, 4th, 8th… so that a flood of garbage
    /// does not flood the log.
    fn reject(&self, what: &str, subject: &str, r: &Rejection) {
        self.rejected.count(r);
        let n = self.rejected.snapshot().total();
        match r {
            Rejection::BadSignature | Rejection::Unexpected if n.is_power_of_two() => {
                warn!(node = %self.node.id, %what, %subject, reason = %r, refused_so_far = n, "refused a cluster message that does not verify (forged, or another CLUSTER_SECRET)")
            }
            _ => {
                debug!(node = %self.node.id, %what, %subject, reason = %r, "cluster message refused")
            }
        }
    }

    /// The window around this node's clock in which signed timestamps are
    /// accepted, in milliseconds.
    fn window(&self) -> u64 {
        millis(self.timings.message_window)
    }

    /// The record of node `id`, if `text` is a valid, recent record of it.
    fn verify_node(&self, id: &str, text: &str) -> Result<NodeInfo, Rejection> {
        let w = self.window();
        let m = SignedMessage::open(
            text,
            &self.key,
            Kind::Node,
            EVERY_NODE,
            unix_millis(),
            millis(self.timings.node_ttl) + w,
            w,
        )?;
        if m.from != id || m.subject != id {
            return Err(Rejection::Unexpected);
        }
        let info: NodeInfo =
            serde_json::from_str(&m.body).map_err(|_| Rejection::Malformed("node record"))?;
        if info.id != id {
            return Err(Rejection::Unexpected);
        }
        Ok(info)
    }

    /// The holder of `room`, if `text` is a valid, recent claim on it.
    fn verify_claim(&self, room: &str, text: &str) -> Result<String, Rejection> {
        let w = self.window();
        let m = SignedMessage::open(
            text,
            &self.key,
            Kind::Claim,
            EVERY_NODE,
            unix_millis(),
            millis(self.timings.room_ttl) + w,
            w,
        )?;
        if m.subject != room {
            return Err(Rejection::Unexpected);
        }
        Ok(m.from)
    }

    /// The record of room `name`, if `text` is a valid, recent record
    /// written by the node it names.
    fn verify_room(&self, name: &str, text: &str) -> Result<ClusterRoom, Rejection> {
        let w = self.window();
        let m = SignedMessage::open(
            text,
            &self.key,
            Kind::Room,
            EVERY_NODE,
            unix_millis(),
            millis(self.timings.room_ttl) + w,
            w,
        )?;
        let room: ClusterRoom =
            serde_json::from_str(&m.body).map_err(|_| Rejection::Malformed("room record"))?;
        if m.subject != name || room.room.name != name || room.node != m.from {
            return Err(Rejection::Unexpected);
        }
        Ok(room)
    }

    /// The holder of `room` if both its claim and its node record verify.
    fn verify_holder(&self, room: &str, claim: &str, record: &str) -> Result<NodeInfo, Rejection> {
        let holder = self.verify_claim(room, claim)?;
        self.verify_node(&holder, record)
    }

    /// Replaces the claim `seen` on `room` (which did not verify) by this
    /// node's, with `record` if given; false if the claim changed meanwhile.
    async fn take_over(
        &self,
        room: &str,
        seen: &str,
        record: Option<String>,
    ) -> Result<bool, ClusterError> {
        let took: i64 = self
            .conn
            .client
            .eval(
                keys::TAKEOVER,
                vec![
                    keys::room_owner(room),
                    keys::room_info(room),
                    keys::ROOMS.to_owned(),
                ],
                vec![
                    seen.to_owned(),
                    self.claim(room),
                    ms(self.timings.room_ttl),
                    record.unwrap_or_default(),
                    room.to_owned(),
                ],
            )
            .await?;
        if took == 1 {
            warn!(node = %self.node.id, %room, "took over a room whose claim or holder record did not verify");
        }
        Ok(took == 1)
    }

    // ------------------------------------------------------------------
    // Tasks

    /// Subscribes to this node's channels, retrying until it works; the
    /// subscriber client restores the subscription after reconnections.
    async fn subscribe(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let channels = vec![self.in_channel.clone(), self.out_channel.clone()];
        loop {
            match self.conn.subscriber.subscribe(channels.clone()).await {
                Ok(()) => {
                    debug!(node = %self.node.id, "subscribed to the node channels");
                    return;
                }
                Err(e) => debug!(error = %e, "subscribe failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = Self::wait_stop(&mut stop) => return,
            }
        }
    }

    async fn monitor(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut client_reconnects = Some(self.conn.client.reconnect_rx());
        let mut sub_reconnects = Some(self.conn.subscriber.reconnect_rx());
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut was_up = false;
        // The first connection has no earlier state to wait for.
        let mut ever_up = false;
        loop {
            let reconnected = tokio::select! {
                _ = tick.tick() => false,
                r = next_event(&mut client_reconnects) => r,
                r = next_event(&mut sub_reconnects) => r,
                _ = Self::wait_stop(&mut stop) => return,
            };
            let up = self.conn.is_connected();
            if was_up && (!up || reconnected) {
                // Messages published while a connection was down are lost:
                // no tunnel survives that.
                self.epoch.fetch_add(1, Ordering::Relaxed);
                let lost = self.lose_all_tunnels();
                warn!(node = %self.node.id, tunnels_lost = lost, "connection to Redis lost; rooms on this node keep running");
            }
            if up && (!was_up || reconnected) {
                info!(node = %self.node.id, "connected to Redis; registering and re-asserting room claims");
                if ever_up {
                    *lock(&self.resync_until) = Some(Instant::now() + self.timings.resync_grace);
                }
                ever_up = true;
                self.connected.store(true, Ordering::Relaxed);
                self.resync.notify_one();
            }
            if !up {
                self.connected.store(false, Ordering::Relaxed);
            }
            was_up = up;
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(self.timings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_room_refresh: Option<Instant> = None;
        loop {
            let resync = tokio::select! {
                _ = tick.tick() => false,
                _ = self.resync.notified() => true,
                _ = Self::wait_stop(&mut stop) => return,
            };
            if self.available() {
                if let Err(e) = self.register().await {
                    debug!(error = %e, "heartbeat failed");
                }
                if let Err(e) = self.read_live_nodes().await {
                    debug!(error = %e, "reading the registry failed");
                }
                if resync
                    || last_room_refresh.is_none_or(|t| t.elapsed() >= self.timings.room_refresh)
                {
                    last_room_refresh = Some(Instant::now());
                    {
                        let mut dirty = lock(&self.dirty);
                        for r in self.rooms.snapshot() {
                            dirty.insert(r.name);
                        }
                    }
                    self.flush.notify_one();
                }
            }
            self.maintain_tunnels().await;
        }
    }

    async fn register(&self) -> Result<(), ClusterError> {
        let cpu = lock(&self.cpu).sample();
        let info = self.node_info(cpu);
        let json = serde_json::to_string(&info).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let record = self.sign(Kind::Node, EVERY_NODE, &self.node.id, &json);
        let client = &self.conn.client;
        client
            .set::<(), _, _>(
                keys::node(&self.node.id),
                record,
                Some(Expiration::PX(self.timings.node_ttl.as_millis() as i64)),
                None,
                false,
            )
            .await?;
        client
            .sadd::<(), _, _>(keys::NODES, self.node.id.clone())
            .await?;
        Ok(())
    }

    async fn read_live_nodes(&self) -> Result<(), ClusterError> {
        let nodes = self.read_nodes().await?;
        let mut live = lock(&self.live);
        live.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        live.read_at = Some(Instant::now());
        Ok(())
    }

    async fn flusher(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = self.flush.notified() => {}
                _ = Self::wait_stop(&mut stop) => return,
            }
            if !self.available() {
                // Everything is re-asserted on reconnection.
                continue;
            }
            let released: Vec<String> = lock(&self.released).drain().collect();
            for name in released {
                if self.rooms.get(&name).is_some() {
                    continue; // reopened since
                }
                if let Err(e) = self.release(&name).await {
                    debug!(room = %name, error = %e, "release failed; the claim expires by itself");
                }
            }
            let dirty: Vec<String> = lock(&self.dirty).drain().collect();
            for name in dirty {
                let Some(room) = self.rooms.get(&name) else {
                    continue;
                };
                if let Err(e) = self.assert_room(room).await {
                    debug!(room = %name, error = %e, "writing the room failed; retried on the next refresh");
                }
            }
        }
    }

    async fn assert_room(&self, room: RoomInfo) -> Result<(), ClusterError> {
        let name = room.name.clone();
        let record = ClusterRoom {
            node: self.node.id.clone(),
            room,
        };
        let json =
            serde_json::to_string(&record).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let record = self.sign(Kind::Room, EVERY_NODE, &name, &json);
        let other: Vec<String> = self
            .conn
            .client
            .eval(
                keys::ASSERT,
                vec![
                    keys::room_owner(&name),
                    keys::room_info(&name),
                    keys::ROOMS.to_owned(),
                ],
                vec![
                    self.node.id.clone(),
                    ms(self.timings.room_ttl),
                    keys::NODE_PREFIX.to_owned(),
                    record.clone(),
                    name.clone(),
                    self.claim(&name),
                ],
            )
            .await?;
        if let [claim, node] = other.as_slice() {
            match self.verify_holder(&name, claim, node) {
                Ok(owner) => {
                    warn!(room = %name, owner = %owner.id, "room is open here but claimed by another live node; it keeps running here")
                }
                Err(r) => {
                    self.reject("room claim", &name, &r);
                    self.take_over(&name, claim, Some(record)).await?;
                }
            }
        }
        Ok(())
    }

    async fn release(&self, name: &str) -> Result<(), ClusterError> {
        self.conn
            .client
            .eval::<i64, _, _, _>(
                keys::RELEASE,
                vec![
                    keys::room_owner(name),
                    keys::room_info(name),
                    keys::ROOMS.to_owned(),
                ],
                vec![self.node.id.clone(), name.to_owned()],
            )
            .await?;
        Ok(())
    }

    async fn router(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut messages = self.conn.subscriber.message_rx();
        loop {
            let msg = tokio::select! {
                m = messages.recv() => m,
                _ = Self::wait_stop(&mut stop) => return,
            };
            match msg {
                Ok(m) => {
                    let channel = m.channel.to_string();
                    let Some(payload) = m.value.as_string() else {
                        continue;
                    };
                    self.on_message(&channel, &payload);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lost = self.lose_all_tunnels();
                    warn!(
                        skipped = n,
                        tunnels_lost = lost,
                        "tunnel messages were dropped; tunnels closed"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    // ------------------------------------------------------------------
    // Tunnels

    /// Handles one message from this node's channels. Nothing is acted on
    /// unless it verifies: signed with the cluster key, for this node, of
    /// the kind this channel carries, recent, not seen before, and from the
    /// tunnel's peer (or, for an `open`, from a registered node).
    fn on_message(self: &Arc<Self>, channel: &str, payload: &str) {
        let (kind, role) = if channel == self.in_channel {
            (Kind::ToOwner, Role::Owner)
        } else if channel == self.out_channel {
            (Kind::ToRelay, Role::Relay)
        } else {
            return;
        };
        let w = self.window();
        let m =
            match SignedMessage::open(payload, &self.key, kind, &self.node.id, unix_millis(), w, w)
            {
                Ok(m) => m,
                Err(r) => {
                    self.reject("tunnel message", channel, &r);
                    return;
                }
            };
        let op: Op = match serde_json::from_str(&m.body) {
            Ok(op) => op,
            Err(_) => {
                self.reject(
                    "tunnel message",
                    &m.subject,
                    &Rejection::Malformed("tunnel op"),
                );
                return;
            }
        };
        let SignedMessage {
            subject: tunnel,
            from,
            seq,
            ..
        } = m;
        match (role, op) {
            (Role::Owner, Op::Open { room, claims }) => {
                self.on_open(tunnel, from, seq, room, *claims)
            }
            (Role::Relay, Op::Opened) => {
                if self.accept_seq(Role::Relay, &tunnel, &from, seq) == Some(true)
                    && let Some(tx) = lock(&self.pending_opens).remove(&tunnel)
                {
                    let _ = tx.send(Ok(()));
                }
            }
            (Role::Relay, Op::Close { code, reason })
                if lock(&self.pending_opens).contains_key(&tunnel) =>
            {
                // A refusal of a tunnel still opening.
                if self.accept_seq(Role::Relay, &tunnel, &from, seq) == Some(true) {
                    let pending = lock(&self.pending_opens).remove(&tunnel);
                    if let Some(tx) = pending {
                        let _ = tx.send(Err(format!("refused ({code} {reason})")));
                    }
                    lock(&self.tunnels).remove(&tunnel);
                }
            }
            (role, op) => self.deliver(role, &tunnel, &from, seq, op),
        }
    }

    /// Checks the sequence number of a message on tunnel `id` from `from`
    /// and notes that the peer is alive: `None` if there is no such tunnel,
    /// `Some(false)` (counted) if the number is not above the last one
    /// accepted (a replay), `Some(true)` otherwise.
    fn accept_seq(&self, role: Role, id: &str, from: &str, seq: u64) -> Option<bool> {
        let mut tunnels = lock(&self.tunnels);
        let slot = tunnels
            .get_mut(id)
            .filter(|s| s.peer == from && s.role == role)?;
        if seq <= slot.last_seq {
            drop(tunnels);
            self.reject("tunnel message", id, &Rejection::Replayed);
            return Some(false);
        }
        slot.last_seq = seq;
        slot.last_heard = Instant::now();
        Some(true)
    }

    /// Hands a frame to its tunnel end.
    fn deliver(self: &Arc<Self>, role: Role, id: &str, from: &str, seq: u64, op: Op) {
        let is_close = matches!(op, Op::Close { .. });
        let mut tunnels = lock(&self.tunnels);
        let Some(slot) = tunnels
            .get_mut(id)
            .filter(|s| s.peer == from && s.role == role)
        else {
            drop(tunnels);
            if !is_close {
                // The sender (a node: the message verified) thinks this
                // tunnel is alive; tell it otherwise.
                let kind = match role {
                    Role::Owner => Kind::ToRelay,
                    Role::Relay => Kind::ToOwner,
                };
                self.spawn_publish(
                    kind,
                    from.to_owned(),
                    id.to_owned(),
                    Op::Close {
                        code: 1001,
                        reason: "unknown tunnel".into(),
                    },
                    None,
                );
            }
            return;
        };
        if seq <= slot.last_seq {
            drop(tunnels);
            self.reject("tunnel message", id, &Rejection::Replayed);
            return;
        }
        slot.last_seq = seq;
        slot.last_heard = Instant::now();
        let Some(frame) = op.into_frame() else {
            return; // keepalive
        };
        match slot.deliver.try_send(frame) {
            Ok(()) => {
                if is_close {
                    tunnels.remove(id);
                }
            }
            Err(_) => {
                // The local end is gone or too slow to keep up.
                let slot = tunnels.remove(id);
                drop(tunnels);
                if let Some(slot) = slot {
                    let _ = slot.deliver.try_send(TunnelFrame::Lost);
                    if !is_close {
                        self.spawn_publish(
                            slot.role.sends(),
                            slot.peer.clone(),
                            id.to_owned(),
                            Op::Close {
                                code: 1008,
                                reason: "tunnel too slow".into(),
                            },
                            Some(slot.out.clone()),
                        );
                    }
                }
            }
        }
    }

    fn spawn_publish(
        self: &Arc<Self>,
        kind: Kind,
        peer: String,
        tunnel: String,
        op: Op,
        out: Option<OutLock>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.publish(kind, &peer, &tunnel, &op, out.as_ref()).await;
        });
    }

    /// Signs and publishes one tunnel message of `kind` to `peer`; the
    /// number of subscribers that got it. Holds `out` (the tunnel end's
    /// lock) from numbering to publishing, so that the peer receives this
    /// end's messages in the order of their sequence numbers.
    async fn publish(
        &self,
        kind: Kind,
        peer: &str,
        tunnel: &str,
        op: &Op,
        out: Option<&OutLock>,
    ) -> Result<i64, ClusterError> {
        let body = serde_json::to_string(op).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let channel = match kind {
            Kind::ToOwner => keys::node_in(peer),
            _ => keys::node_out(peer),
        };
        let _guard = match out {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let text = self.sign(kind, peer, tunnel, &body);
        Ok(self.conn.client.publish::<i64, _, _>(channel, text).await?)
    }

    /// Owner side: a verified `open` from node `from`. Refused if this
    /// tunnel id was opened before (a replay), or if `from` has no valid
    /// registry record.
    fn on_open(self: &Arc<Self>, id: String, from: String, seq: u64, room: String, claims: Claims) {
        {
            let mut seen = lock(&self.seen_opens);
            if seen.contains_key(&id) || lock(&self.tunnels).contains_key(&id) {
                drop(seen);
                self.reject("tunnel open", &id, &Rejection::Replayed);
                return;
            }
            seen.insert(id.clone(), Instant::now());
        }
        if lock(&self.live).nodes.contains_key(&from) {
            self.accept(id, from, seq, room, claims);
            return;
        }
        // Not in the last registry read (a node that just joined): read its
        // record now.
        let this = self.clone();
        tokio::spawn(async move {
            let record: Result<Option<String>, _> = this.conn.client.get(keys::node(&from)).await;
            match record {
                Ok(Some(text)) => match this.verify_node(&from, &text) {
                    Ok(info) => {
                        lock(&this.live).nodes.insert(from.clone(), info);
                        this.accept(id, from, seq, room, claims);
                    }
                    Err(r) => this.reject("tunnel open (sender's node record)", &from, &r),
                },
                Ok(None) => this.reject(
                    "tunnel open (unregistered sender)",
                    &from,
                    &Rejection::Unexpected,
                ),
                Err(e) => debug!(error = %e, "cannot read the registry; tunnel open dropped"),
            }
        });
    }

    /// Owner side: a relay opened a tunnel.
    fn accept(self: &Arc<Self>, id: String, from: String, seq: u64, room: String, claims: Claims) {
        let refuse = |reason: &str| {
            self.spawn_publish(
                Kind::ToRelay,
                from.clone(),
                id.clone(),
                Op::Close {
                    code: 1013,
                    reason: reason.to_owned(),
                },
                None,
            );
        };
        if self.stopped() {
            refuse("node shutting down");
            return;
        }
        let (deliver_tx, deliver_rx) = mpsc::channel(TUNNEL_QUEUE);
        let (send_tx, send_rx) = mpsc::channel(TUNNEL_QUEUE);
        let end = TunnelEnd::new(id.clone(), from.clone(), send_tx, deliver_rx);
        let now = Instant::now();
        let out = OutLock::default();
        lock(&self.tunnels).insert(
            id.clone(),
            Slot {
                peer: from.clone(),
                role: Role::Owner,
                deliver: deliver_tx,
                last_heard: now,
                last_keepalive: now,
                created: now,
                epoch: self.epoch.load(Ordering::Relaxed),
                last_seq: seq,
                out: out.clone(),
            },
        );
        if self
            .incoming_tx
            .try_send(IncomingTunnel {
                room: room.clone(),
                claims,
                end,
            })
            .is_err()
        {
            lock(&self.tunnels).remove(&id);
            refuse("node not accepting tunnels");
            return;
        }
        debug!(tunnel = %id, relay = %from, %room, "tunnel opened by a relay");
        tokio::spawn(self.clone().writer(
            id.clone(),
            from,
            Role::Owner,
            Some(Op::Opened),
            send_rx,
            out,
        ));
    }

    /// Publishes a tunnel's frames in order; on the end of its queue, says
    /// `close` unless a close was sent or the tunnel is already gone.
    async fn writer(
        self: Arc<Self>,
        id: String,
        peer: String,
        role: Role,
        first: Option<Op>,
        mut frames: mpsc::Receiver<TunnelFrame>,
        out: OutLock,
    ) {
        let kind = role.sends();
        if let Some(op) = first {
            match self.publish(kind, &peer, &id, &op, Some(&out)).await {
                Ok(0) => self.lose_tunnel(&id, "peer not listening"),
                Ok(_) => {}
                Err(e) => self.lose_tunnel(&id, &e.to_string()),
            }
        }
        let mut closed = false;
        while let Some(frame) = frames.recv().await {
            let Some(op) = Op::from_frame(frame) else {
                continue;
            };
            closed = matches!(op, Op::Close { .. });
            match self.publish(kind, &peer, &id, &op, Some(&out)).await {
                Ok(0) => {
                    self.lose_tunnel(&id, "peer not listening");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.lose_tunnel(&id, &e.to_string());
                    break;
                }
            }
            if closed {
                break;
            }
        }
        let still_open = lock(&self.tunnels).remove(&id).is_some();
        if still_open && !closed {
            let close = Op::Close {
                code: 1001,
                reason: "tunnel closed".into(),
            };
            let _ = self.publish(kind, &peer, &id, &close, Some(&out)).await;
        }
    }

    fn lose_tunnel(&self, id: &str, why: &str) {
        if let Some(tx) = lock(&self.pending_opens).remove(id) {
            let _ = tx.send(Err(why.to_owned()));
        }
        if let Some(slot) = lock(&self.tunnels).remove(id) {
            debug!(tunnel = %id, peer = %slot.peer, why, "tunnel lost");
            let _ = slot.deliver.try_send(TunnelFrame::Lost);
        }
    }

    fn lose_all_tunnels(&self) -> usize {
        let slots: Vec<Slot> = lock(&self.tunnels).drain().map(|(_, s)| s).collect();
        for s in &slots {
            let _ = s.deliver.try_send(TunnelFrame::Lost);
        }
        for (_, tx) in lock(&self.pending_opens).drain() {
            let _ = tx.send(Err("connection to Redis lost".into()));
        }
        slots.len()
    }

    /// Declares lost the tunnels whose peer is silent, left the registry,
    /// or that predate a connection loss; sends keepalives on the others;
    /// forgets tunnel ids older than the replay window.
    async fn maintain_tunnels(self: &Arc<Self>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let live = lock(&self.live).clone();
        let now = Instant::now();
        let mut lost = Vec::new();
        let mut keepalives = Vec::new();
        {
            let mut tunnels = lock(&self.tunnels);
            for (id, slot) in tunnels.iter_mut() {
                let peer_gone = live
                    .read_at
                    .is_some_and(|t| t > slot.created + self.timings.heartbeat)
                    && !live.nodes.contains_key(&slot.peer);
                if slot.epoch != epoch
                    || now.duration_since(slot.last_heard) > self.timings.tunnel_timeout
                    || peer_gone
                {
                    lost.push(id.clone());
                } else if now.duration_since(slot.last_keepalive) >= self.timings.tunnel_keepalive {
                    slot.last_keepalive = now;
                    keepalives.push((
                        slot.role.sends(),
                        slot.peer.clone(),
                        id.clone(),
                        slot.out.clone(),
                    ));
                }
            }
        }
        for id in lost {
            self.lose_tunnel(&id, "peer silent or gone");
        }
        let keep = self.timings.message_window * 2;
        lock(&self.seen_opens).retain(|_, at| now.duration_since(*at) < keep);
        if !self.available() {
            return;
        }
        for (kind, peer, id, out) in keepalives {
            if let Ok(0) = self.publish(kind, &peer, &id, &Op::Ka, Some(&out)).await {
                self.lose_tunnel(&id, "peer not listening");
            }
        }
    }

    /// Every node whose registry record verifies, sorted by id. Ids whose
    /// record expired leave the set; records that do not verify are refused
    /// (and counted) but left for their TTL.
    async fn read_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let client = &self.conn.client;
        let ids: Vec<String> = client.smembers(keys::NODES).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| keys::node(id)).collect();
        let values: Vec<Option<String>> = client.mget(keys).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value {
                Some(text) => match self.verify_node(&id, &text) {
                    Ok(n) => nodes.push(n),
                    Err(r) => self.reject("node record", &id, &r),
                },
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _ = client.srem::<(), _, _>(keys::NODES, gone).await;
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Every room whose record verifies, sorted by name; cleaned like
    /// [`Inner::read_nodes`].
    async fn read_rooms(&self) -> Result<Vec<ClusterRoom>, ClusterError> {
        let client = &self.conn.client;
        let names: Vec<String> = client.smembers(keys::ROOMS).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names.iter().map(|n| keys::room_info(n)).collect();
        let values: Vec<Option<String>> = client.mget(keys).await?;
        let mut rooms = Vec::with_capacity(names.len());
        let mut gone = Vec::new();
        for (name, value) in names.into_iter().zip(values) {
            match value {
                Some(text) => match self.verify_room(&name, &text) {
                    Ok(r) => rooms.push(r),
                    Err(r) => self.reject("room record", &name, &r),
                },
                None => gone.push(name),
            }
        }
        if !gone.is_empty() {
            let _ = client.srem::<(), _, _>(keys::ROOMS, gone).await;
        }
        rooms.sort_by(|a, b| a.room.name.cmp(&b.room.name));
        Ok(rooms)
    }
}

// ----------------------------------------------------------------------
// Webhook journals

impl Inner {
    /// Applies the notifier's journal writes in order. An append that
    /// cannot be written (store unreachable) waits in a bounded list of
    /// pending appends, written in order once the store is back, unless the
    /// event is delivered first (then there is nothing left to journal); a
    /// full list drops its oldest entry. A removal that fails is not
    /// retried: the entry is sent again after a failover, with its id, or
    /// dropped as too old.
    async fn journal_writer(self: Arc<Self>, mut ops: mpsc::Receiver<JournalOp>) {
        let mut stop = self.stop.subscribe();
        let incarnation = self.started_at.to_string();
        let mut pending: VecDeque<PendingAppend> = VecDeque::new();
        let mut retry = tokio::time::interval(JOURNAL_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The map of entries is purged of what outlived the journals
        // (removals lost to a full queue) whenever it doubles.
        let mut purge_at = JOURNAL_QUEUE;
        loop {
            let op = tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => Some(op),
                    None => return,
                },
                _ = retry.tick(), if !pending.is_empty() => None,
                _ = Self::wait_stop(&mut stop) => return,
            };
            match op {
                Some(JournalOp::Append {
                    room,
                    id,
                    body,
                    created_ms,
                }) => {
                    if pending.len() >= JOURNAL_PENDING
                        && let Some(dropped) = pending.pop_front()
                    {
                        warn!(room = %dropped.room, id = %dropped.id, "Redis unreachable too long; webhook event not journaled");
                    }
                    pending.push_back(PendingAppend {
                        room,
                        id,
                        body,
                        created_ms,
                        failures: 0,
                    });
                }
                Some(JournalOp::Remove { room, id }) => {
                    // Delivered before it could be journaled: nothing to do.
                    if let Some(i) = pending.iter().position(|p| p.room == room && p.id == id) {
                        pending.remove(i);
                        continue;
                    }
                    let entry = lock(&self.journal_entries).remove(&(room, id));
                    if let Some((key, text, _)) = entry
                        && let Err(e) = self.journal_remove(&key, &text).await
                    {
                        debug!(journal = %key, error = %e, "webhook journal entry not removed; it expires with the journal");
                    }
                }
                None => {}
            }
            self.journal_flush(&mut pending, &incarnation, &mut purge_at)
                .await;
        }
    }

    /// Writes the pending appends, oldest first, while the store is
    /// reachable. An append the store refuses while reachable is tried
    /// [`JOURNAL_ATTEMPTS`] times, then dropped.
    async fn journal_flush(
        &self,
        pending: &mut VecDeque<PendingAppend>,
        incarnation: &str,
        purge_at: &mut usize,
    ) {
        while let Some(p) = pending.front_mut() {
            if !self.available() {
                if p.failures == 0 {
                    debug!(room = %p.room, id = %p.id, "Redis unreachable; webhook event kept to journal later");
                }
                return;
            }
            let key = keys::webhook_journal(&self.node.id, incarnation, &p.room);
            let text = self.sign_at(Kind::Webhook, EVERY_NODE, &p.room, &p.body, p.created_ms);
            if SignedMessage::parse(&text).is_err() {
                debug!(room = %p.room, id = %p.id, "room name not allowed in a signed record; webhook event not journaled");
                pending.pop_front();
                continue;
            }
            let written = self
                .conn
                .client
                .eval::<i64, _, _, _>(
                    keys::JOURNAL_APPEND,
                    vec![key.clone(), keys::WEBHOOK_JOURNALS.to_owned()],
                    vec![text.clone(), ms(JOURNAL_TTL)],
                )
                .await;
            match written {
                Ok(_) => {
                    let Some(p) = pending.pop_front() else { return };
                    let mut entries = lock(&self.journal_entries);
                    entries.insert((p.room, p.id), (key, text, unix_millis()));
                    if entries.len() > *purge_at {
                        let oldest = unix_millis().saturating_sub(millis(JOURNAL_TTL));
                        entries.retain(|_, (_, _, at)| *at >= oldest);
                        *purge_at = JOURNAL_QUEUE.max(entries.len() * 2);
                    }
                }
                Err(e) => {
                    p.failures += 1;
                    debug!(room = %p.room, id = %p.id, error = %e, failures = p.failures, "webhook event not journaled yet");
                    if p.failures >= JOURNAL_ATTEMPTS && self.available() {
                        pending.pop_front();
                        continue;
                    }
                    return;
                }
            }
        }
    }

    async fn journal_remove(&self, key: &str, text: &str) -> Result<(), ClusterError> {
        self.conn
            .client
            .eval::<i64, _, _, _>(
                keys::JOURNAL_REMOVE,
                vec![key.to_owned(), keys::WEBHOOK_JOURNALS.to_owned()],
                vec![text.to_owned()],
            )
            .await?;
        Ok(())
    }

    /// The event id, body and queueing time of a journal entry of `room`,
    /// if it verifies: signed with the cluster key, a webhook record for
    /// every node about `room`, not from the future, a JSON body with an
    /// `id`.
    fn verify_webhook(&self, room: &str, text: &str) -> Result<(String, String, u64), Rejection> {
        let m = SignedMessage::parse(text)?;
        m.verify(&self.key)?;
        if m.kind != Kind::Webhook || m.to != EVERY_NODE || m.subject != room {
            return Err(Rejection::Unexpected);
        }
        if m.ts.saturating_sub(unix_millis()) > self.window() {
            return Err(Rejection::Stale);
        }
        let body: serde_json::Value =
            serde_json::from_str(&m.body).map_err(|_| Rejection::Malformed("webhook event"))?;
        let id = body
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or(Rejection::Malformed("webhook event without id"))?
            .to_owned();
        Ok((id, m.body, m.ts))
    }

    /// One search for journals of dead nodes: a page of the journal set,
    /// at most [`JOURNAL_CLAIMS`] journals claimed and read.
    async fn claim_orphans(&self, max_age: Duration) -> Result<OrphanedWebhooks, ClusterError> {
        let mut out = OrphanedWebhooks::default();
        if !self.available() {
            return Err(not_connected());
        }
        // Journals claimed earlier but not read yet.
        let unread: Vec<String> = lock(&self.journal_unread).drain(..).collect();
        for (i, key) in unread.iter().enumerate() {
            if let Err(e) = self.read_claimed(key, max_age, &mut out).await {
                lock(&self.journal_unread).extend(unread[i..].iter().cloned());
                return Err(e);
            }
        }
        let live = lock(&self.live).clone();
        if live.read_at.is_none() {
            return Ok(out); // no registry read yet: nobody known alive
        }
        let cursor = lock(&self.journal_cursor).clone();
        let page: Vec<String> = self
            .conn
            .client
            .eval(
                keys::JOURNAL_SCAN,
                vec![keys::WEBHOOK_JOURNALS.to_owned()],
                vec![cursor, JOURNAL_SCAN_KEYS.to_string()],
            )
            .await?;
        let mut page = page.into_iter();
        *lock(&self.journal_cursor) = page.next().unwrap_or_else(|| "0".to_owned());
        let mut claimed = 0;
        for key in page {
            if claimed >= JOURNAL_CLAIMS {
                break;
            }
            let Some((writer, started, room)) = keys::parse_webhook_journal(&key) else {
                // Not a journal key: nothing of ours put it there.
                let _ = self
                    .conn
                    .client
                    .srem::<(), _, _>(keys::WEBHOOK_JOURNALS, key.clone())
                    .await;
                continue;
            };
            if writer == self.node.id && started == self.started_at {
                continue; // this process's own (or claimed) journal
            }
            let require_absent = match live.nodes.get(writer) {
                Some(info) if info.started_at == started => continue, // alive
                // A later process with the same node id: the writer died.
                Some(_) => false,
                None => true,
            };
            let new_key = keys::webhook_journal(
                &self.node.id,
                &format!("{}-{:016x}", self.started_at, rand::random::<u64>()),
                room,
            );
            let took: i64 = self
                .conn
                .client
                .eval(
                    keys::JOURNAL_CLAIM,
                    vec![
                        key.clone(),
                        new_key.clone(),
                        keys::WEBHOOK_JOURNALS.to_owned(),
                    ],
                    vec![
                        keys::node(writer),
                        if require_absent { "1" } else { "0" }.to_owned(),
                    ],
                )
                .await?;
            if took != 1 {
                continue;
            }
            claimed += 1;
            info!(node = %self.node.id, dead = %writer, %room, "claimed the webhook journal of a node that left; delivering its events");
            if let Err(e) = self.read_claimed(&new_key, max_age, &mut out).await {
                lock(&self.journal_unread).push(new_key);
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Reads a journal this node claimed: its valid, recent entries join
    /// `out` (and this node's entries, to remove once delivered); the
    /// others are removed (and counted).
    async fn read_claimed(
        &self,
        key: &str,
        max_age: Duration,
        out: &mut OrphanedWebhooks,
    ) -> Result<(), ClusterError> {
        let Some((_, _, room)) = keys::parse_webhook_journal(key) else {
            return Ok(());
        };
        let client = &self.conn.client;
        let read = JOURNAL_READ as i64;
        let entries: Vec<String> = client.lrange(key, 0, read - 1).await?;
        let len: i64 = client.llen(key).await?;
        if len > read {
            client.ltrim::<(), _>(key, 0, read - 1).await?;
            out.dropped += (len - read) as u64;
            warn!(journal = %key, dropped = len - read, "webhook journal longer than {JOURNAL_READ} entries; the rest dropped");
        }
        let now = unix_millis();
        let max_age = millis(max_age);
        for text in entries {
            let (id, body, ts) = match self.verify_webhook(room, &text) {
                Ok(v) => v,
                Err(r) => {
                    self.reject("webhook journal entry", room, &r);
                    self.journal_remove(key, &text).await?;
                    continue;
                }
            };
            if now.saturating_sub(ts) > max_age {
                out.dropped += 1;
                warn!(%room, %id, "webhook event of a dead node too old; dropped");
                self.journal_remove(key, &text).await?;
                continue;
            }
            let entry = (room.to_owned(), id.clone());
            let duplicate = match lock(&self.journal_entries).entry(entry) {
                std::collections::hash_map::Entry::Occupied(_) => true,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((key.to_owned(), text.clone(), unix_millis()));
                    false
                }
            };
            if duplicate {
                // The same event twice: send it once.
                self.reject("webhook journal entry", room, &Rejection::Replayed);
                self.journal_remove(key, &text).await?;
                continue;
            }
            out.events.push(JournaledWebhook {
                room: room.to_owned(),
                id,
                body,
                created_at_ms: ts,
            });
        }
        Ok(())
    }
}

impl Role {
    /// The kind of the messages this end sends.
    fn sends(self) -> Kind {
        match self {
            Role::Relay => Kind::ToOwner,
            Role::Owner => Kind::ToRelay,
        }
    }
}

/// Whether a reconnection event arrived (a lag counts as one); waits
/// forever once the channel is closed.
async fn next_event<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> bool {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    match r.recv().await {
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
        Err(broadcast::error::RecvError::Closed) => {
            *rx = None;
            false
        }
    }
}

fn not_connected() -> ClusterError {
    ClusterError::Unavailable("not connected".into())
}

impl ClusterBackend for RedisCluster {
    fn node_id(&self) -> &str {
        &self.inner.node.id
    }

    fn is_single_node(&self) -> bool {
        false
    }

    fn is_available(&self) -> bool {
        self.inner.available()
    }

    fn place_room<'a>(
        &'a self,
        room: &'a str,
        may_claim: bool,
    ) -> BoxFuture<'a, Result<Placement, ClusterError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if !inner.available() {
                return Err(not_connected());
            }
            // Right after a reconnect, look up the room but claim it only
            // once the other nodes had time to re-assert theirs.
            let resyncing = lock(&inner.resync_until).is_some_and(|t| Instant::now() < t);
            let claim = may_claim && !resyncing;
            let no_claim = || {
                if may_claim && resyncing {
                    ClusterError::Unavailable(
                        "re-synchronizing with Redis after a reconnect; retry in a few seconds"
                            .to_owned(),
                    )
                } else {
                    ClusterError::Draining
                }
            };
            // A claim that does not verify is replaced; if it changes between
            // reading and replacing, look again (a few times).
            for _ in 0..3 {
                let answer: Vec<String> = inner
                    .conn
                    .client
                    .eval(
                        keys::PLACE,
                        vec![keys::room_owner(room)],
                        vec![
                            inner.node.id.clone(),
                            ms(inner.timings.room_ttl),
                            keys::NODE_PREFIX.to_owned(),
                            if claim { "1" } else { "0" }.to_owned(),
                            inner.claim(room),
                        ],
                    )
                    .await?;
                match answer.as_slice() {
                    [l] if l == "L" => return Ok(Placement::Local),
                    [d] if d == "D" => return Err(no_claim()),
                    [r, seen, record] if r == "R" => {
                        match inner.verify_holder(room, seen, record) {
                            Ok(owner) => return Ok(Placement::Remote(owner)),
                            Err(rejection) => {
                                // Never send a client to a node whose claim or
                                // record does not verify: the room is free.
                                inner.reject("room claim or its holder's record", room, &rejection);
                                if !claim {
                                    return Err(no_claim());
                                }
                                if inner.take_over(room, seen, None).await? {
                                    return Ok(Placement::Local);
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(ClusterError::Decode(format!(
                            "unexpected placement answer {answer:?}"
                        )));
                    }
                }
            }
            Err(ClusterError::Unavailable(format!(
                "the claim on room `{room}` keeps changing; retry shortly"
            )))
        })
    }

    fn room_updated(&self, info: &RoomInfo) {
        let inner = &self.inner;
        inner.rooms.update(info);
        lock(&inner.released).remove(&info.name);
        lock(&inner.dirty).insert(info.name.clone());
        inner.flush.notify_one();
    }

    fn room_closed(&self, name: &str, sid: &RoomSid) {
        let inner = &self.inner;
        if inner.rooms.remove(name, sid) {
            lock(&inner.dirty).remove(name);
            lock(&inner.released).insert(name.to_owned());
            inner.flush.notify_one();
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move {
            if !self.inner.available() {
                return Err(not_connected());
            }
            self.inner.read_nodes().await
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<ClusterRoom>, ClusterError>> {
        Box::pin(async move {
            if !self.inner.available() {
                return Err(not_connected());
            }
            self.inner.read_rooms().await
        })
    }

    fn open_tunnel<'a>(
        &'a self,
        owner: &'a str,
        room: &'a str,
        claims: &'a Claims,
    ) -> BoxFuture<'a, Result<TunnelEnd, ClusterError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let unreachable = |detail: String| ClusterError::OwnerUnreachable {
                node: owner.to_owned(),
                detail,
            };
            if !inner.available() {
                return Err(not_connected());
            }
            let id = random_tunnel_id();
            let (deliver_tx, deliver_rx) = mpsc::channel(TUNNEL_QUEUE);
            let (send_tx, send_rx) = mpsc::channel(TUNNEL_QUEUE);
            let (opened_tx, opened_rx) = oneshot::channel();
            let now = Instant::now();
            let out = OutLock::default();
            lock(&inner.pending_opens).insert(id.clone(), opened_tx);
            lock(&inner.tunnels).insert(
                id.clone(),
                Slot {
                    peer: owner.to_owned(),
                    role: Role::Relay,
                    deliver: deliver_tx,
                    last_heard: now,
                    last_keepalive: now,
                    created: now,
                    epoch: inner.epoch.load(Ordering::Relaxed),
                    last_seq: 0,
                    out: out.clone(),
                },
            );
            tokio::spawn(inner.clone().writer(
                id.clone(),
                owner.to_owned(),
                Role::Relay,
                Some(Op::Open {
                    room: room.to_owned(),
                    claims: Box::new(claims.clone()),
                }),
                send_rx,
                out,
            ));
            let end = TunnelEnd::new(id.clone(), owner.to_owned(), send_tx, deliver_rx);
            let result = tokio::time::timeout(inner.timings.tunnel_open_timeout, opened_rx).await;
            lock(&inner.pending_opens).remove(&id);
            let failure = match result {
                Ok(Ok(Ok(()))) => {
                    debug!(tunnel = %id, %owner, %room, "tunnel open");
                    return Ok(end);
                }
                Ok(Ok(Err(detail))) => detail,
                Ok(Err(_)) => "tunnel lost while opening".to_owned(),
                Err(_) => format!("no answer within {:?}", inner.timings.tunnel_open_timeout),
            };
            inner.lose_tunnel(&id, &failure);
            drop(end);
            Err(unreachable(failure))
        })
    }

    fn take_incoming_tunnels(&self) -> Option<mpsc::Receiver<IncomingTunnel>> {
        lock(&self.inner.incoming_rx).take()
    }

    fn set_draining(&self, draining: bool) {
        let was = self.inner.draining.swap(draining, Ordering::Relaxed);
        if was != draining {
            info!(node = %self.inner.node.id, draining, "draining state changed");
            self.inner.resync.notify_one();
        }
    }

    fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    fn local_load(&self) -> NodeLoad {
        self.inner.rooms.load()
    }

    fn rejected_messages(&self) -> RejectedMessages {
        self.inner.rejected.snapshot()
    }

    fn webhook_journal_append(&self, room: &str, id: &str, body: &str) {
        let op = JournalOp::Append {
            room: room.to_owned(),
            id: id.to_owned(),
            body: body.to_owned(),
            created_ms: unix_millis(),
        };
        match self.inner.journal_tx.try_send(op) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%room, %id, "webhook journal queue full; event not journaled")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(%room, %id, "node left the cluster; event not journaled")
            }
        }
    }

    fn webhook_journal_remove(&self, room: &str, id: &str) {
        let op = JournalOp::Remove {
            room: room.to_owned(),
            id: id.to_owned(),
        };
        if self.inner.journal_tx.try_send(op).is_err() {
            debug!(%room, %id, "webhook journal queue full; delivered event left in the journal");
        }
    }

    fn webhook_journal_claim_orphans(
        &self,
        max_age: Duration,
    ) -> BoxFuture<'_, Result<OrphanedWebhooks, ClusterError>> {
        Box::pin(self.inner.claim_orphans(max_age))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.stop.send_replace(true) {
                return;
            }
            inner.lose_all_tunnels();
            let leave = async {
                for room in inner.rooms.snapshot() {
                    let _ = inner.release(&room.name).await;
                }
                let released: Vec<String> = lock(&inner.released).drain().collect();
                for name in released {
                    let _ = inner.release(&name).await;
                }
                let client = &inner.conn.client;
                let _ = client.del::<(), _>(keys::node(&inner.node.id)).await;
                let _ = client
                    .srem::<(), _, _>(keys::NODES, inner.node.id.clone())
                    .await;
            };
            if inner.available() {
                let _ = tokio::time::timeout(Duration::from_secs(3), leave).await;
            }
            inner.conn.quit().await;
            info!(node = %inner.node.id, "left the cluster");
        })
    }
}
