use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsewave_cluster::Cluster;
use pulsewave_protocol::transport::IceServer;
use pulsewave_protocol::{
    DataKind, DisconnectReason, ParticipantPermission, ParticipantSid, RequestId, RoomInfo, RoomSid,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::actor::{Command, RoomActor};
use super::admin::{AdminOp, AdminReply};
use super::media::MediaRequest;
use crate::error::SignalError;
use crate::limits::{Counters, Limit};
use crate::media::WorkerPool;
use crate::outbound::Outbound;

/// Settings every room is created with.
#[derive(Clone, Debug)]
pub struct RoomSettings {
    /// Most participants (0: no limit).
    pub max_participants: u32,
    /// Most open rooms in this manager (0: no limit).
    pub max_rooms: u32,
    /// Most tracks one participant may publish at once (0: no limit).
    pub max_tracks_per_participant: u32,
    /// Most data channels one participant may publish at once (0: no limit).
    pub max_data_channels_per_participant: u32,
    /// Largest size in bytes of a room's participant listing in `joined`
    /// (0: no limit).
    pub max_room_listing_bytes: usize,
    /// How long an empty room stays open.
    pub empty_timeout: Duration,
    /// Whether `join` creates a missing room.
    pub auto_create: bool,
    /// How long a participant whose WebSocket dropped waits to be resumed
    /// (0: removed at once).
    pub resume_grace: Duration,
    /// Room messages kept per participant for replay on resume.
    pub resume_buffer: usize,
    /// STUN/TURN servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// ICE servers made per participant (embedded TURN credentials),
    /// handed after `ice_servers`.
    pub participant_ice_servers: Option<crate::ParticipantIceServers>,
    /// Media workers; `None` runs rooms without media (signaling only).
    pub media: Option<Arc<WorkerPool>>,
    /// The cluster rooms report to (participants and tracks for the admin
    /// listing, room claims); by default a single node.
    pub cluster: Cluster,
    /// Where rooms send their webhooks (`WEBHOOK_URLS`); `None`: none.
    pub webhooks: Option<crate::webhook::WebhookNotifier>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        let limits = crate::config::Limits::default();
        Self {
            max_participants: limits.max_participants,
            max_rooms: limits.max_rooms,
            max_tracks_per_participant: limits.max_tracks_per_participant,
            max_data_channels_per_participant: limits.max_data_channels_per_participant,
            max_room_listing_bytes: limits.max_room_listing_bytes,
            empty_timeout: Duration::from_secs(10),
            auto_create: true,
            resume_grace: crate::config::DEFAULT_RESUME_GRACE,
            resume_buffer: crate::config::DEFAULT_RESUME_BUFFER,
            ice_servers: Vec::new(),
            participant_ice_servers: None,
            media: None,
            cluster: Cluster::local(),
            webhooks: None,
        }
    }
}

impl RoomSettings {
    /// The ICE servers for `identity`: `ice_servers`, then the
    /// participant's own ones.
    pub fn ice_servers_for(&self, identity: &str) -> Vec<IceServer> {
        let mut all = self.ice_servers.clone();
        if let Some(extra) = &self.participant_ice_servers {
            all.extend(extra.for_identity(identity));
        }
        all
    }
}

/// Creates, finds and closes rooms. Cheap to clone; usable from Rust without
/// the WebSocket layer, as the seed's `RoomManager`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pulsewave_signal::{RoomManager, RoomSettings};
///
/// let manager = RoomManager::new(RoomSettings::default());
/// let room = manager.get_or_create_room("my-room").await.unwrap();
/// assert_eq!(room.name(), "my-room");
/// assert_eq!(manager.room_names(), vec!["my-room".to_string()]);
/// assert!(manager.close_room("my-room").await);
/// assert!(manager.get_room("my-room").is_none());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RoomManager {
    inner: Arc<ManagerInner>,
}

#[derive(Debug)]
pub(crate) struct ManagerInner {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    settings: RoomSettings,
    counters: Arc<Counters>,
}

impl ManagerInner {
    pub(crate) fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Removes `name` from the table if it still maps to the room `sid`.
    pub(crate) fn forget(&self, name: &str, sid: &RoomSid) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.get(name).is_some_and(|h| &h.sid == sid) {
            rooms.remove(name);
        }
    }
}

impl RoomManager {
    /// A manager creating rooms with `settings`.
    pub fn new(settings: RoomSettings) -> Self {
        Self {
            inner: Arc::new(ManagerInner {
                rooms: Mutex::new(HashMap::new()),
                settings,
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// The settings rooms are created with.
    pub fn settings(&self) -> &RoomSettings {
        &self.inner.settings
    }

    /// How often each limit was crossed (for `/metrics`).
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner.counters
    }

    /// Whether this manager holds `MAX_ROOMS` open rooms already.
    pub(crate) fn is_full(&self) -> bool {
        let max = self.inner.settings.max_rooms;
        if max == 0 {
            return false;
        }
        let rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.values().filter(|h| !h.tx.is_closed()).count() >= max as usize
    }

    /// The open room named `name`, creating it if needed. Must be called
    /// within a tokio runtime (the room runs as a task).
    pub async fn get_or_create_room(&self, name: &str) -> Result<RoomHandle, SignalError> {
        self.open_room(name, true)
    }

    /// The open room named `name`, if any.
    pub fn get_room(&self, name: &str) -> Option<RoomHandle> {
        let rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(name).filter(|h| !h.tx.is_closed()).cloned()
    }

    pub(crate) fn open_room(&self, name: &str, create: bool) -> Result<RoomHandle, SignalError> {
        validate_room_name(name)?;
        let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = rooms.get(name).filter(|h| !h.tx.is_closed()) {
            return Ok(h.clone());
        }
        if !create {
            return Err(SignalError::RoomNotFound(name.to_owned()));
        }
        let max = self.inner.settings.max_rooms;
        if max > 0 {
            // Closed rooms still in the table are replaced, not counted.
            rooms.retain(|_, h| !h.tx.is_closed());
            if rooms.len() >= max as usize {
                self.inner.counters.hit(Limit::Rooms);
                return Err(SignalError::Unavailable(format!(
                    "this server holds its limit of {max} rooms (MAX_ROOMS); try again later"
                )));
            }
        }
        let handle = RoomActor::spawn(name.to_owned(), self.inner.clone());
        rooms.insert(name.to_owned(), handle.clone());
        Ok(handle)
    }

    /// Closes the room: every participant is told (`disconnected` with
    /// reason `room-closed`) and disconnected. Returns false if no such room
    /// was open.
    pub async fn close_room(&self, name: &str) -> bool {
        let handle = {
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.remove(name)
        };
        match handle {
            Some(h) => {
                h.close(DisconnectReason::RoomClosed).await;
                true
            }
            None => false,
        }
    }

    /// Closes the room as [`RoomManager::close_room`] does, telling
    /// participants `reason`.
    pub(crate) async fn close_room_with(&self, name: &str, reason: DisconnectReason) -> bool {
        let handle = {
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.remove(name)
        };
        match handle {
            Some(h) => {
                h.close(reason).await;
                true
            }
            None => false,
        }
    }

    /// Closes every room, telling participants `reason`.
    pub async fn close_all(&self, reason: DisconnectReason) {
        let handles: Vec<RoomHandle> = {
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.drain().map(|(_, h)| h).collect()
        };
        for h in handles {
            h.close(reason).await;
        }
    }

    /// Names of the open rooms, sorted.
    pub fn room_names(&self) -> Vec<String> {
        let rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = rooms
            .iter()
            .filter(|(_, h)| !h.tx.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// A snapshot of every open room with its participants.
    pub async fn list_rooms(&self) -> Vec<RoomInfo> {
        let handles: Vec<RoomHandle> = {
            let rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.values().cloned().collect()
        };
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(info) = h.info().await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

pub(crate) fn validate_room_name(name: &str) -> Result<(), SignalError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(SignalError::InvalidParameters(
            "room name must be 1 to 256 characters, without control characters".into(),
        ));
    }
    Ok(())
}

/// A participant about to join a room.
#[derive(Debug)]
pub(crate) struct JoinRequest {
    pub(crate) identity: String,
    pub(crate) name: String,
    pub(crate) metadata: String,
    pub(crate) attributes: std::collections::BTreeMap<String, String>,
    pub(crate) permission: ParticipantPermission,
    pub(crate) outbound: Outbound,
    pub(crate) request_id: Option<RequestId>,
}

/// A client taking back its session after its WebSocket dropped.
#[derive(Debug)]
pub(crate) struct ResumeRequest {
    /// The identity of the new connection's token: must be the session's.
    pub(crate) identity: String,
    pub(crate) sid: ParticipantSid,
    pub(crate) token: String,
    pub(crate) last_seq: u64,
    pub(crate) outbound: Outbound,
    pub(crate) request_id: Option<RequestId>,
}

/// A handle to one open room. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    pub(crate) name: String,
    pub(crate) sid: RoomSid,
    pub(crate) tx: mpsc::Sender<Command>,
}

impl RoomHandle {
    /// The room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room instance id.
    pub fn sid(&self) -> &RoomSid {
        &self.sid
    }

    /// Whether the room has closed.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SignalError>>) -> Command,
    ) -> Result<T, SignalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SignalError::RoomClosed(self.name.clone()))?;
        rx.await
            .map_err(|_| SignalError::RoomClosed(self.name.clone()))?
    }

    /// A snapshot of the room.
    pub async fn info(&self) -> Result<RoomInfo, SignalError> {
        self.call(|reply| Command::Info { reply }).await
    }

    /// Closes the room, telling participants `reason`.
    pub async fn close(&self, reason: DisconnectReason) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Close { reason, reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) async fn join(&self, request: JoinRequest) -> Result<ParticipantSid, SignalError> {
        self.call(|reply| Command::Join {
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Runs an operation of the server API in the room.
    pub(crate) async fn admin(&self, op: AdminOp) -> Result<AdminReply, SignalError> {
        self.call(|reply| Command::Admin {
            op: Box::new(op),
            reply,
        })
        .await
    }

    /// A participant's `update-metadata`.
    pub(crate) async fn update_own(
        &self,
        from: ParticipantSid,
        metadata: Option<String>,
        name: Option<String>,
        request_id: Option<RequestId>,
    ) -> Result<(), SignalError> {
        self.call(|reply| Command::UpdateOwn {
            from,
            metadata,
            name,
            request_id,
            reply,
        })
        .await
    }

    /// Removes `sid` (an explicit `leave`) if `outbound`'s session is the
    /// one attached to it.
    pub(crate) async fn leave(&self, sid: ParticipantSid, outbound: Outbound) {
        let _ = self.tx.send(Command::Leave { sid, outbound }).await;
    }

    /// `outbound`'s socket went away without `leave`: `sid` waits for a
    /// resume for the grace time (or is removed at once if resume is off).
    pub(crate) async fn detach(&self, sid: ParticipantSid, outbound: Outbound) {
        let _ = self.tx.send(Command::Detach { sid, outbound }).await;
    }

    pub(crate) async fn resume(
        &self,
        request: ResumeRequest,
    ) -> Result<ParticipantSid, SignalError> {
        self.call(|reply| Command::Resume {
            request: Box::new(request),
            reply,
        })
        .await
    }

    pub(crate) async fn media(
        &self,
        from: ParticipantSid,
        request: MediaRequest,
        request_id: Option<RequestId>,
    ) -> Result<(), SignalError> {
        self.call(|reply| Command::Media {
            from,
            request: Box::new(request),
            request_id,
            reply,
        })
        .await
    }

    pub(crate) async fn publish_data(
        &self,
        from: ParticipantSid,
        kind: DataKind,
        data: Value,
        destinations: Vec<String>,
        topic: Option<String>,
    ) -> Result<(), SignalError> {
        self.call(|reply| Command::PublishData {
            from,
            kind,
            data,
            destinations,
            topic,
            reply,
        })
        .await
    }
}
