use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pulsewave_core::{Event as MediaEvent, Owner};
use pulsewave_protocol::rtp::RtpCapabilities;
use pulsewave_protocol::{
    DataKind, DisconnectReason, ParticipantInfo, ParticipantSid, RequestId, RoomInfo, RoomSid,
    ServerMessage,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::admin::{AdminOp, AdminReply};
use super::link::Link;
use super::manager::{JoinRequest, ManagerInner, ResumeRequest, RoomHandle};
use super::media::{Cause, MediaRequest};
use crate::error::SignalError;
use crate::limits::Limit;
use crate::outbound::{Outbound, encode};
use crate::webhook::WebhookKind;
use pulsewave_media::MediaRoom;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SignalError>>;

/// What a room can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Join {
        request: Box<JoinRequest>,
        reply: Reply<ParticipantSid>,
    },
    /// An explicit `leave` from the session attached to `sid`.
    Leave {
        sid: ParticipantSid,
        outbound: Outbound,
    },
    /// The socket of the session attached to `sid` went away.
    Detach {
        sid: ParticipantSid,
        outbound: Outbound,
    },
    Resume {
        request: Box<ResumeRequest>,
        reply: Reply<ParticipantSid>,
    },
    PublishData {
        from: ParticipantSid,
        kind: DataKind,
        data: Value,
        destinations: Vec<String>,
        topic: Option<String>,
        reply: Reply<()>,
    },
    Media {
        from: ParticipantSid,
        request: Box<MediaRequest>,
        request_id: Option<RequestId>,
        reply: Reply<()>,
    },
    Info {
        reply: Reply<RoomInfo>,
    },
    /// The server API (`twirp.rs`).
    Admin {
        op: Box<AdminOp>,
        reply: Reply<AdminReply>,
    },
    /// A participant's `update-metadata`.
    UpdateOwn {
        from: ParticipantSid,
        metadata: Option<String>,
        name: Option<String>,
        request_id: Option<RequestId>,
        reply: Reply<()>,
    },
    Close {
        reason: DisconnectReason,
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct Participant {
    pub(crate) info: ParticipantInfo,
    /// Its key in the room's media core (unique in the room, never reused).
    pub(crate) owner: Owner,
    /// Its client's queue, the numbering of room messages and the replay
    /// buffer for resume.
    pub(crate) outbound: Link,
    /// Its last connection quality (`connection-quality`), once known.
    pub(crate) quality: Option<pulsewave_protocol::Quality>,
    /// Bytes this participant's entry takes in the room listing of `joined`
    /// (0 for a hidden participant, who is not listed).
    pub(crate) listed_bytes: usize,
    /// It created a transport (it tried to connect media).
    pub(crate) media_tried: bool,
    /// One of its transports connected (ICE and DTLS up).
    pub(crate) media_connected: bool,
}

/// Bytes of `value` as JSON, counted without building the string.
pub(crate) fn json_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// What `info` takes in a room listing: its JSON, a separating comma, and a
/// byte per track for `"muted":false` being longer than `true`.
pub(crate) fn listed_bytes(info: &ParticipantInfo) -> usize {
    if info.permission.hidden {
        return 0;
    }
    json_len(info) + 1 + info.tracks.len()
}

/// The task owning one room's state.
pub(crate) struct RoomActor {
    pub(crate) name: String,
    pub(crate) sid: RoomSid,
    created_at: u64,
    /// The room's metadata (admin API).
    pub(crate) metadata: String,
    /// How long the room stays open once empty (`ROOM_EMPTY_TIMEOUT`, or
    /// `CreateRoom`'s `emptyTimeout`).
    pub(crate) empty_timeout: std::time::Duration,
    /// Most participants (`MAX_PARTICIPANTS`, or `CreateRoom`'s
    /// `maxParticipants`; 0: no limit).
    pub(crate) max_participants: u32,
    pub(crate) manager: Arc<ManagerInner>,
    /// In join order.
    pub(crate) participants: Vec<Participant>,
    /// The last media owner key handed out.
    next_owner: u64,
    /// When the room became empty, if it is.
    empty_since: Option<Instant>,
    /// The room's media on its worker, if the server has media workers.
    pub(crate) media: Option<MediaRoom>,
    /// The room's media events (the worker puts a command's events here
    /// before its answer).
    pub(crate) events: Option<mpsc::UnboundedReceiver<MediaEvent>>,
    pub(crate) rtp_capabilities: RtpCapabilities,
    /// Fingerprint of the state last reported to the cluster.
    reported: u64,
    /// Bytes of the participant listing a newcomer's `joined` carries (the
    /// sum of the visible participants' `listed_bytes`).
    pub(crate) listing_bytes: usize,
    /// Quality changes of the media events being applied, sent together
    /// once the events at hand are drained (`flush_quality`).
    pub(crate) quality_updates: Vec<(bool, pulsewave_protocol::ConnectionQualityInfo)>,
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RoomActor {
    pub(crate) fn spawn(name: String, manager: Arc<ManagerInner>) -> RoomHandle {
        let (tx, rx) = mpsc::channel(256);
        let sid = RoomSid::generate();
        let rtp_capabilities = match &manager.settings().media {
            Some(pool) => pool.rtp_capabilities().clone(),
            None => RtpCapabilities::default(),
        };
        let mut actor = RoomActor {
            name: name.clone(),
            sid: sid.clone(),
            created_at: unix_millis(),
            metadata: String::new(),
            empty_timeout: manager.settings().empty_timeout,
            max_participants: manager.settings().max_participants,
            manager,
            participants: Vec::new(),
            next_owner: 0,
            empty_since: Some(Instant::now()),
            media: None,
            events: None,
            rtp_capabilities,
            reported: 0,
            listing_bytes: 0,
            quality_updates: Vec::new(),
        };
        info!(room = %name, sid = %sid, "room created");
        actor.webhook(WebhookKind::RoomStarted, None, None);
        actor.report_to_cluster();
        tokio::spawn(actor.start(rx));
        RoomHandle { name, sid, tx }
    }

    /// Opens the room's media on a worker, then runs the room. A server
    /// with media workers never runs a room without media: if no worker
    /// can take it, the room closes and every request gets 501.
    async fn start(mut self, mut rx: mpsc::Receiver<Command>) {
        if let Some(pool) = self.manager.settings().media.clone() {
            match pool.open_room().await {
                Ok((media, events)) => {
                    self.media = Some(media);
                    self.events = Some(events);
                }
                Err(e) => {
                    warn!(room = %self.name, error = %e, "no live media worker; the room is closed");
                    self.manager.forget(&self.name, &self.sid);
                    rx.close();
                    while let Some(cmd) = rx.recv().await {
                        self.refuse_unavailable(cmd);
                    }
                    self.manager
                        .settings()
                        .cluster
                        .room_closed(&self.name, &self.sid);
                    return;
                }
            }
        }
        self.run(rx).await;
    }

    /// Refuses a command of a room whose media could not start.
    fn refuse_unavailable(&self, cmd: Command) {
        let unavailable =
            || SignalError::Unavailable("no media worker is running to host this room".into());
        match cmd {
            Command::Join { reply, .. } | Command::Resume { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::PublishData { reply, .. } | Command::Media { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::Info { reply } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::Admin { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::UpdateOwn { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::Close { reply, .. } => {
                let _ = reply.send(());
            }
            Command::Leave { .. } | Command::Detach { .. } => {}
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.empty_since.map(|t| t + self.empty_timeout);
            let grace_deadline = self.next_grace_expiry();
            // The event receiver is lent to the select and given back
            // before anything runs: handlers drain it themselves after each
            // media call (`apply_media_events`).
            let mut events = self.events.take();
            let step = tokio::select! {
                cmd = rx.recv() => Step::Command(cmd),
                event = recv_event(&mut events) => Step::Event(event),
                _ = sleep_until_opt(deadline) => Step::EmptyTimeout,
                _ = sleep_until_opt(grace_deadline) => Step::GraceExpired,
            };
            self.events = events;
            match step {
                Step::Command(cmd) => {
                    let Some(cmd) = cmd else { break };
                    if let Command::Close { reason, reply } = cmd {
                        self.close_everyone(reason);
                        let _ = reply.send(());
                        break;
                    }
                    let changes =
                        !matches!(cmd, Command::PublishData { .. } | Command::Info { .. });
                    if let Command::Admin { op, .. } = &cmd
                        && matches!(**op, AdminOp::Configure { .. })
                        && self.participants.is_empty()
                    {
                        // A room created through the API waits its own
                        // empty timeout from now.
                        self.empty_since = Some(Instant::now());
                    }
                    self.handle(cmd).await;
                    if changes {
                        self.report_to_cluster();
                    }
                }
                Step::Event(event) => match event {
                    Some(MediaEvent::RoomFailed) => {
                        // The media core contained a panic to this room:
                        // everyone is disconnected (clients rejoin a fresh
                        // room) and the room closes.
                        warn!(room = %self.name, "the room's media failed; closing the room");
                        break;
                    }
                    Some(event) => {
                        self.media_event(event, Cause::Other);
                        // What the worker queued with it (one evaluation's
                        // quality changes come together).
                        self.apply_media_events(Cause::Other);
                        self.report_to_cluster();
                    }
                    None => {
                        warn!(room = %self.name, "media worker went away");
                        self.events = None;
                    }
                },
                Step::EmptyTimeout => {
                    debug!(room = %self.name, "empty room timed out");
                    break;
                }
                Step::GraceExpired => {
                    self.remove_expired().await;
                    self.report_to_cluster();
                }
            }
            if self.reap_closed().await {
                self.report_to_cluster();
            }
        }
        // Leave the table first so that new joins create a fresh room, then
        // refuse whatever is still queued.
        self.manager.forget(&self.name, &self.sid);
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.refuse(cmd);
        }
        self.close_everyone(DisconnectReason::RoomClosed);
        // Dropping the media handle closes the room on its worker.
        self.media = None;
        self.manager
            .settings()
            .cluster
            .room_closed(&self.name, &self.sid);
        self.webhook(WebhookKind::RoomFinished, None, None);
        info!(room = %self.name, sid = %self.sid, "room closed");
    }

    fn refuse(&self, cmd: Command) {
        let closed = || SignalError::RoomClosed(self.name.clone());
        match cmd {
            Command::Join { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Resume { reply, .. } => {
                let _ = reply.send(Err(SignalError::ResumeFailed("the room has closed")));
            }
            Command::PublishData { reply, .. } | Command::Media { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Info { reply } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Admin { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::UpdateOwn { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Close { reply, .. } => {
                let _ = reply.send(());
            }
            Command::Leave { .. } | Command::Detach { .. } => {}
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { request, reply } => {
                let result = self.join(*request).await;
                let _ = reply.send(result);
            }
            Command::Leave { sid, outbound } => {
                if self.attached(&sid, &outbound) {
                    self.remove(&sid, None).await;
                }
            }
            Command::Detach { sid, outbound } => {
                if self.attached(&sid, &outbound) {
                    self.detach(&sid).await;
                }
            }
            Command::Resume { request, reply } => {
                let result = self.resume(*request);
                let _ = reply.send(result);
            }
            Command::PublishData {
                from,
                kind,
                data,
                destinations,
                topic,
                reply,
            } => {
                let _ = reply.send(self.publish_data(&from, kind, data, &destinations, topic));
            }
            Command::Media {
                from,
                request,
                request_id,
                reply,
            } => {
                let result = self.media_request(&from, *request, request_id).await;
                let _ = reply.send(result);
            }
            Command::Info { reply } => {
                // For the operator (`RoomManager::list_rooms`, drain): everyone.
                let _ = reply.send(Ok(self.info(None, true)));
            }
            Command::Admin { op, reply } => {
                let result = self.admin(*op).await;
                let _ = reply.send(result);
            }
            Command::UpdateOwn {
                from,
                metadata,
                name,
                request_id,
                reply,
            } => {
                let _ = reply.send(self.update_own(&from, metadata, name, request_id.as_ref()));
            }
            Command::Close { .. } => {}
        }
    }

    /// The room as participants see it: hidden participants are listed only
    /// with `include_hidden` (for the operator).
    pub(crate) fn info(&self, except: Option<&ParticipantSid>, include_hidden: bool) -> RoomInfo {
        RoomInfo {
            sid: self.sid.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            max_participants: self.max_participants,
            metadata: self.metadata.clone(),
            empty_timeout: u32::try_from(self.empty_timeout.as_secs()).unwrap_or(u32::MAX),
            participants: self
                .participants
                .iter()
                .filter(|p| {
                    Some(&p.info.sid) != except && (include_hidden || !p.info.permission.hidden)
                })
                .map(|p| p.info.clone())
                .collect(),
        }
    }

    pub(crate) fn participant(&self, sid: &ParticipantSid) -> Result<&Participant, SignalError> {
        self.participants
            .iter()
            .find(|p| &p.info.sid == sid)
            .ok_or(SignalError::NotJoined)
    }

    /// Recounts `sid`'s place in the listing after its tracks or data
    /// channels changed (bounded: one participant's entry).
    pub(crate) fn recount(&mut self, sid: &ParticipantSid) {
        if let Some(p) = self.participants.iter_mut().find(|p| &p.info.sid == sid) {
            let now = listed_bytes(&p.info);
            self.listing_bytes = self.listing_bytes - p.listed_bytes + now;
            p.listed_bytes = now;
        }
    }

    /// Refuses an addition of `extra` bytes to the listing past
    /// `MAX_ROOM_LISTING_BYTES`.
    pub(crate) fn check_listing(&self, extra: usize) -> Result<(), SignalError> {
        let max = self.manager.settings().max_room_listing_bytes;
        if max > 0 && self.listing_bytes + extra > max {
            self.manager.counters().hit(Limit::RoomListing);
            return Err(SignalError::LimitReached(format!(
                "the room's participant listing would exceed {max} bytes (MAX_ROOM_LISTING_BYTES)"
            )));
        }
        Ok(())
    }

    pub(crate) fn participant_mut(
        &mut self,
        sid: &ParticipantSid,
    ) -> Result<&mut Participant, SignalError> {
        self.participants
            .iter_mut()
            .find(|p| &p.info.sid == sid)
            .ok_or(SignalError::NotJoined)
    }

    async fn join(&mut self, req: JoinRequest) -> Result<ParticipantSid, SignalError> {
        // A second connection with the same identity replaces the first.
        if let Some(old) = self
            .participants
            .iter()
            .find(|p| p.info.identity == req.identity)
            .map(|p| p.info.sid.clone())
        {
            info!(room = %self.name, identity = %req.identity, "identity reconnected; replacing old session");
            self.remove(&old, Some(DisconnectReason::DuplicateIdentity))
                .await;
        }
        let max = self.max_participants;
        if max > 0 && self.participants.len() as u32 >= max {
            self.manager.counters().hit(Limit::Participants);
            return Err(SignalError::RoomFull { max });
        }
        let info = ParticipantInfo {
            sid: ParticipantSid::generate(),
            identity: req.identity,
            name: req.name,
            metadata: req.metadata,
            joined_at: unix_millis(),
            permission: req.permission,
            tracks: Vec::new(),
            data_channels: Vec::new(),
            attributes: req.attributes,
        };
        let sid = info.sid.clone();
        let settings = self.manager.settings();
        let capacity = if settings.resume_grace.is_zero() {
            0
        } else {
            settings.resume_buffer
        };
        let link = Link::new(req.outbound, capacity);
        let cost = listed_bytes(&info);
        if cost > 0 {
            let max = self.manager.settings().max_room_listing_bytes;
            if max > 0 && self.listing_bytes + cost > max {
                self.manager.counters().hit(Limit::RoomListing);
                return Err(SignalError::RoomListingFull { max });
            }
        }
        let joined = ServerMessage::Joined {
            room: self.info(None, false),
            participant: info.clone(),
            rtp_capabilities: self.rtp_capabilities.clone(),
            ice_servers: self.manager.settings().ice_servers_for(&info.identity),
            resume_token: link.token(),
        };
        // Not numbered: a client that never saw `joined` has nothing to resume.
        link.send_unnumbered(encode(&joined, req.request_id.as_ref()), false);
        if !info.permission.hidden {
            self.broadcast(
                &ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
                None,
            );
        }
        info!(room = %self.name, identity = %info.identity, sid = %sid, "participant joined");
        self.next_owner += 1;
        self.participants.push(Participant {
            info,
            owner: Owner::new(self.next_owner),
            outbound: link,
            quality: None,
            listed_bytes: cost,
            media_tried: false,
            media_connected: false,
        });
        self.listing_bytes += cost;
        self.empty_since = None;
        if let Some(p) = self.participants.last() {
            self.webhook(WebhookKind::ParticipantJoined, Some(&p.info), None);
        }
        Ok(sid)
    }

    /// Removes a participant with its media; tells it `reason` if given, and
    /// tells the others.
    pub(crate) async fn remove(&mut self, sid: &ParticipantSid, reason: Option<DisconnectReason>) {
        if !self.participants.iter().any(|p| &p.info.sid == sid) {
            return;
        }
        // Its media goes first, while it is still listed: the room's state
        // changes (its tracks and data channels closing) reach the others.
        let owner = self.participant(sid).map(|p| p.owner);
        if let (Some(media), Ok(owner)) = (&self.media, owner) {
            let _ = media.close_participant(owner).await;
            self.apply_media_events(Cause::Leaving(sid));
        }
        let Some(idx) = self.participants.iter().position(|p| &p.info.sid == sid) else {
            return;
        };
        let p = self.participants.remove(idx);
        self.manager.counters().quality_changed(p.quality, None);
        self.listing_bytes -= p.listed_bytes;
        if let Some(reason) = reason {
            p.outbound.disconnect(reason);
        }
        info!(room = %self.name, identity = %p.info.identity, sid = %p.info.sid, "participant left");
        if p.media_tried && !p.media_connected {
            // Its media never connected (LiveKit's event for a connection
            // that failed before the participant was really in); `left`
            // still follows the `joined` sent at its join.
            self.webhook(
                WebhookKind::ParticipantConnectionAborted,
                Some(&p.info),
                None,
            );
        }
        self.webhook(WebhookKind::ParticipantLeft, Some(&p.info), None);
        if !p.info.permission.hidden {
            self.broadcast(
                &ServerMessage::ParticipantLeft {
                    participant: p.info,
                },
                None,
            );
        }
        if self.participants.is_empty() {
            self.empty_since = Some(Instant::now());
        }
    }

    /// Drops participants whose sessions ended without a `Leave`; true if
    /// any was.
    async fn reap_closed(&mut self) -> bool {
        let gone: Vec<ParticipantSid> = self
            .participants
            .iter()
            .filter(|p| p.outbound.is_closed())
            .map(|p| p.info.sid.clone())
            .collect();
        let any = !gone.is_empty();
        for sid in gone {
            self.detach(&sid).await;
        }
        any
    }

    /// Whether `outbound`'s session is the one attached to `sid`.
    fn attached(&self, sid: &ParticipantSid, outbound: &Outbound) -> bool {
        self.participant(sid)
            .is_ok_and(|p| p.outbound.is_attached_to(outbound))
    }

    /// `sid`'s socket went away without `leave`: it stays, media and all,
    /// for the grace time, unseen by the others; with resume off it is
    /// removed at once.
    async fn detach(&mut self, sid: &ParticipantSid) {
        if self.manager.settings().resume_grace.is_zero() {
            return self.remove(sid, None).await;
        }
        let name = self.name.clone();
        if let Ok(p) = self.participant_mut(sid) {
            info!(room = %name, identity = %p.info.identity, sid = %sid, "participant's socket dropped; waiting for a resume");
            p.outbound.detach(Instant::now());
        }
    }

    /// When the earliest grace time of a detached participant ends.
    fn next_grace_expiry(&self) -> Option<Instant> {
        let grace = self.manager.settings().resume_grace;
        self.participants
            .iter()
            .filter_map(|p| p.outbound.detached_at())
            .min()
            .map(|t| t + grace)
    }

    /// Removes, as if they had left, the detached participants whose grace
    /// time is over.
    async fn remove_expired(&mut self) {
        let grace = self.manager.settings().resume_grace;
        let now = Instant::now();
        let mut expired: Vec<(Instant, ParticipantSid)> = self
            .participants
            .iter()
            .filter_map(|p| p.outbound.detached_at().map(|t| (t, p.info.sid.clone())))
            .filter(|(t, _)| *t + grace <= now)
            .collect();
        // In the order their sockets dropped, as `leave`s would have come.
        expired.sort_by_key(|(t, _)| *t);
        for (_, sid) in expired {
            info!(room = %self.name, sid = %sid, "no resume within the grace time; removing");
            self.remove(&sid, None).await;
        }
    }

    /// Gives a participant's session to a new connection: same sid, media
    /// and ids; `resumed`, then the messages it missed, in order.
    fn resume(&mut self, req: ResumeRequest) -> Result<ParticipantSid, SignalError> {
        let room = self.info(Some(&req.sid), false);
        let name = self.name.clone();
        let p = self
            .participants
            .iter_mut()
            .find(|p| p.info.sid == req.sid)
            .ok_or(SignalError::ResumeFailed(
                "the session is gone (left, replaced or past the grace time)",
            ))?;
        if p.info.identity != req.identity {
            return Err(SignalError::ResumeFailed(
                "the resume credentials do not match this session",
            ));
        }
        p.outbound
            .check_resume(&req.token, req.last_seq)
            .map_err(SignalError::ResumeFailed)?;
        let (resume_token, missed) = p.outbound.resume(req.outbound, req.last_seq);
        let resumed = ServerMessage::Resumed {
            room,
            participant: p.info.clone(),
            resume_token,
            replayed: missed.len() as u64,
        };
        p.outbound
            .send_replay(encode(&resumed, req.request_id.as_ref()), missed);
        info!(room = %name, identity = %p.info.identity, sid = %p.info.sid, "participant resumed");
        let sid = p.info.sid.clone();
        // The new connection's token may predate a server API change: the
        // session takes the room's grants (and refreshes its token).
        self.push_grants(&sid);
        Ok(sid)
    }

    /// Tells the cluster the room's participants and tracks if they changed
    /// since the last report. Never waits: the cluster writes to its store
    /// in the background.
    fn report_to_cluster(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.metadata.hash(&mut h);
        self.empty_timeout.hash(&mut h);
        self.max_participants.hash(&mut h);
        for p in &self.participants {
            p.info.sid.as_str().hash(&mut h);
            p.info.permission.hidden.hash(&mut h);
            p.info.name.hash(&mut h);
            p.info.metadata.hash(&mut h);
            for t in &p.info.tracks {
                t.sid.as_str().hash(&mut h);
                t.muted.hash(&mut h);
            }
            p.info.data_channels.len().hash(&mut h);
        }
        // Never 0, so that the first report always goes out.
        let fingerprint = h.finish() | 1;
        if fingerprint != self.reported {
            self.reported = fingerprint;
            self.manager
                .settings()
                .cluster
                .room_updated(&self.info(None, false));
        }
    }

    fn publish_data(
        &mut self,
        from: &ParticipantSid,
        kind: DataKind,
        data: Value,
        destinations: &[String],
        topic: Option<String>,
    ) -> Result<(), SignalError> {
        let sender = self.participant(from)?;
        if sender.info.permission.hidden {
            return Err(SignalError::Hidden("send data"));
        }
        if !sender.info.permission.can_publish_data {
            return Err(SignalError::PermissionDenied("canPublishData"));
        }
        // A hidden participant is absent for everyone else: naming it is
        // the same error as naming nobody, and it gets nothing sent to it.
        let visible = |p: &&Participant| !p.info.permission.hidden;
        for d in destinations {
            if !self
                .participants
                .iter()
                .filter(visible)
                .any(|p| &p.info.identity == d)
            {
                return Err(SignalError::ParticipantNotFound(d.clone()));
            }
        }
        let text = encode(
            &ServerMessage::Data {
                participant_identity: sender.info.identity.clone(),
                kind,
                data,
                topic,
                encoding: None,
            },
            None,
        );
        for p in &self.participants {
            if &p.info.sid == from
                || (!destinations.is_empty()
                    && (p.info.permission.hidden || !destinations.contains(&p.info.identity)))
            {
                continue;
            }
            match kind {
                DataKind::Reliable => {
                    p.outbound.send_encoded(text.clone());
                }
                DataKind::Lossy => p.outbound.send_unnumbered(text.clone(), true),
            }
        }
        Ok(())
    }

    /// Sends `message` to every participant except `except`.
    pub(crate) fn broadcast(&self, message: &ServerMessage, except: Option<&ParticipantSid>) {
        let text = encode(message, None);
        for p in &self.participants {
            if Some(&p.info.sid) != except {
                p.outbound.send_encoded(text.clone());
            }
        }
    }

    /// Sends `message` to everyone; `to`'s copy carries `request_id`.
    pub(crate) fn broadcast_reply(
        &self,
        message: &ServerMessage,
        to: &ParticipantSid,
        request_id: Option<&RequestId>,
    ) {
        if request_id.is_none() {
            return self.broadcast(message, None);
        }
        let text = encode(message, None);
        for p in &self.participants {
            if &p.info.sid == to {
                p.outbound.send(message, request_id);
            } else {
                p.outbound.send_encoded(text.clone());
            }
        }
    }

    /// Sends `message` to one participant.
    pub(crate) fn send_to(
        &self,
        to: &ParticipantSid,
        message: &ServerMessage,
        request_id: Option<&RequestId>,
    ) {
        if let Some(p) = self.participants.iter().find(|p| &p.info.sid == to) {
            p.outbound.send(message, request_id);
        }
    }

    /// Queues a webhook about this room (never waits).
    pub(crate) fn webhook(
        &self,
        kind: WebhookKind,
        participant: Option<&ParticipantInfo>,
        track: Option<&pulsewave_protocol::TrackInfo>,
    ) {
        if let Some(hooks) = &self.manager.settings().webhooks {
            hooks.notify(kind, &self.info(None, true), participant, track);
        }
    }

    fn close_everyone(&mut self, reason: DisconnectReason) {
        for p in &self.participants {
            self.webhook(WebhookKind::ParticipantLeft, Some(&p.info), None);
        }
        for p in self.participants.drain(..) {
            self.manager.counters().quality_changed(p.quality, None);
            p.outbound.disconnect(reason);
        }
    }
}

async fn recv_event(
    events: &mut Option<mpsc::UnboundedReceiver<MediaEvent>>,
) -> Option<MediaEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What woke the room actor.
enum Step {
    Command(Option<Command>),
    Event(Option<MediaEvent>),
    EmptyTimeout,
    /// A detached participant's grace time is over.
    GraceExpired,
}
