use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pulsewave_protocol::rtp::RtpCapabilities;
use pulsewave_protocol::{
    DataKind, DisconnectReason, ParticipantInfo, ParticipantSid, RoomInfo, RoomSid, ServerMessage,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

use super::manager::{JoinRequest, ManagerInner, RoomHandle};
use crate::error::SignalError;
use crate::outbound::{Outbound, encode};

type Reply<T> = oneshot::Sender<Result<T, SignalError>>;

/// What a room can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Join {
        request: Box<JoinRequest>,
        reply: Reply<ParticipantSid>,
    },
    Leave {
        sid: ParticipantSid,
    },
    PublishData {
        from: ParticipantSid,
        kind: DataKind,
        data: Value,
        destinations: Vec<String>,
        topic: Option<String>,
        reply: Reply<()>,
    },
    Info {
        reply: Reply<RoomInfo>,
    },
    Close {
        reason: DisconnectReason,
        reply: oneshot::Sender<()>,
    },
}

struct Participant {
    info: ParticipantInfo,
    outbound: Outbound,
}

/// The task owning one room's state.
pub(crate) struct RoomActor {
    name: String,
    sid: RoomSid,
    created_at: u64,
    manager: Arc<ManagerInner>,
    /// In join order.
    participants: Vec<Participant>,
    /// When the room became empty, if it is.
    empty_since: Option<Instant>,
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
        let actor = RoomActor {
            name: name.clone(),
            sid: sid.clone(),
            created_at: unix_millis(),
            manager,
            participants: Vec::new(),
            empty_since: Some(Instant::now()),
        };
        info!(room = %name, sid = %sid, "room created");
        tokio::spawn(actor.run(rx));
        RoomHandle { name, sid, tx }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let empty_timeout = self.manager.settings().empty_timeout;
        loop {
            let deadline = self.empty_since.map(|t| t + empty_timeout);
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = sleep_until_opt(deadline) => {
                    debug!(room = %self.name, "empty room timed out");
                    None
                }
            };
            let Some(cmd) = cmd else { break };
            if let Command::Close { reason, reply } = cmd {
                self.close_everyone(reason);
                let _ = reply.send(());
                break;
            }
            self.handle(cmd);
            self.reap_closed();
        }
        // Leave the table first so that new joins create a fresh room, then
        // refuse whatever is still queued.
        self.manager.forget(&self.name, &self.sid);
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.refuse(cmd);
        }
        self.close_everyone(DisconnectReason::RoomClosed);
        info!(room = %self.name, sid = %self.sid, "room closed");
    }

    fn refuse(&self, cmd: Command) {
        let closed = || SignalError::RoomClosed(self.name.clone());
        match cmd {
            Command::Join { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::PublishData { reply, .. } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Info { reply } => {
                let _ = reply.send(Err(closed()));
            }
            Command::Close { reply, .. } => {
                let _ = reply.send(());
            }
            Command::Leave { .. } => {}
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { request, reply } => {
                let _ = reply.send(self.join(*request));
            }
            Command::Leave { sid } => self.remove(&sid, None),
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
            Command::Info { reply } => {
                let _ = reply.send(Ok(self.info(None)));
            }
            Command::Close { .. } => {}
        }
    }

    fn info(&self, except: Option<&ParticipantSid>) -> RoomInfo {
        RoomInfo {
            sid: self.sid.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            max_participants: self.manager.settings().max_participants,
            participants: self
                .participants
                .iter()
                .filter(|p| Some(&p.info.sid) != except && !p.info.permission.hidden)
                .map(|p| p.info.clone())
                .collect(),
        }
    }

    fn join(&mut self, req: JoinRequest) -> Result<ParticipantSid, SignalError> {
        // A second connection with the same identity replaces the first.
        if let Some(old) = self
            .participants
            .iter()
            .find(|p| p.info.identity == req.identity)
            .map(|p| p.info.sid.clone())
        {
            info!(room = %self.name, identity = %req.identity, "identity reconnected; replacing old session");
            self.remove(&old, Some(DisconnectReason::DuplicateIdentity));
        }
        let max = self.manager.settings().max_participants;
        if max > 0 && self.participants.len() as u32 >= max {
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
        };
        let sid = info.sid.clone();
        let joined = ServerMessage::Joined {
            room: self.info(None),
            participant: info.clone(),
            rtp_capabilities: RtpCapabilities::default(),
            ice_servers: self.manager.settings().ice_servers.clone(),
        };
        req.outbound.send(&joined, req.request_id.as_ref());
        if !info.permission.hidden {
            self.broadcast(
                &ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
                None,
            );
        }
        info!(room = %self.name, identity = %info.identity, sid = %sid, "participant joined");
        self.participants.push(Participant {
            info,
            outbound: req.outbound,
        });
        self.empty_since = None;
        Ok(sid)
    }

    /// Removes a participant; tells it `reason` if given, and tells the others.
    fn remove(&mut self, sid: &ParticipantSid, reason: Option<DisconnectReason>) {
        let Some(idx) = self.participants.iter().position(|p| &p.info.sid == sid) else {
            return;
        };
        let p = self.participants.remove(idx);
        if let Some(reason) = reason {
            p.outbound.disconnect(reason);
        }
        info!(room = %self.name, identity = %p.info.identity, sid = %p.info.sid, "participant left");
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

    /// Drops participants whose sessions ended without a `Leave`.
    fn reap_closed(&mut self) {
        let gone: Vec<ParticipantSid> = self
            .participants
            .iter()
            .filter(|p| p.outbound.is_closed())
            .map(|p| p.info.sid.clone())
            .collect();
        for sid in gone {
            self.remove(&sid, None);
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
        let sender = self
            .participants
            .iter()
            .find(|p| &p.info.sid == from)
            .ok_or(SignalError::NotJoined)?;
        if !sender.info.permission.can_publish_data {
            return Err(SignalError::PermissionDenied("canPublishData"));
        }
        for d in destinations {
            if !self.participants.iter().any(|p| &p.info.identity == d) {
                return Err(SignalError::ParticipantNotFound(d.clone()));
            }
        }
        let text = encode(
            &ServerMessage::Data {
                participant_identity: sender.info.identity.clone(),
                kind,
                data,
                topic,
            },
            None,
        );
        for p in &self.participants {
            if &p.info.sid == from
                || (!destinations.is_empty() && !destinations.contains(&p.info.identity))
            {
                continue;
            }
            match kind {
                DataKind::Reliable => {
                    p.outbound.send_encoded(text.clone());
                }
                DataKind::Lossy => p.outbound.send_lossy(text.clone()),
            }
        }
        Ok(())
    }

    /// Sends `message` to every participant except `except`.
    fn broadcast(&self, message: &ServerMessage, except: Option<&ParticipantSid>) {
        let text = encode(message, None);
        for p in &self.participants {
            if Some(&p.info.sid) != except {
                p.outbound.send_encoded(text.clone());
            }
        }
    }

    fn close_everyone(&mut self, reason: DisconnectReason) {
        for p in self.participants.drain(..) {
            p.outbound.disconnect(reason);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
