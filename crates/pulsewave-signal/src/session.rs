//! One WebSocket connection: reads client messages, dispatches them to their
//! handlers, and writes what the room and the handlers queue for the client.
//!
//! The loop is written over any `Stream` + `Sink` of WebSocket messages, so
//! it runs the same over a real socket and over in-memory channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use pulsewave_auth::Claims;
use pulsewave_protocol::{
    DisconnectReason, ErrorCode, ParticipantSid, RequestId, ServerMessage, decode_client,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, warn};

use crate::error::SignalError;
use crate::handlers::{Flow, HandlerRegistry};
use crate::outbound::{self, Outbound, OutboundRx, Outgoing, encode};
use crate::rate::RateLimiter;
use crate::room::RoomHandle;
use crate::server::Shared;

/// Where a session is in its life.
#[derive(Debug)]
pub(crate) enum SessionState {
    /// Authenticated, not in a room.
    Connected,
    /// In a room.
    Joined {
        room: RoomHandle,
        sid: ParticipantSid,
    },
}

/// The per-connection state handlers work on.
pub(crate) struct Session {
    pub(crate) claims: Claims,
    pub(crate) shared: Arc<Shared>,
    pub(crate) outbound: Outbound,
    pub(crate) state: SessionState,
}

impl Session {
    /// Queues a reply for this client.
    pub(crate) fn reply(&self, message: &ServerMessage, request_id: Option<&RequestId>) {
        self.outbound.send(message, request_id);
    }

    /// The room and participant sid, or `NotJoined`.
    pub(crate) fn joined(&self) -> Result<(&RoomHandle, &ParticipantSid), SignalError> {
        match &self.state {
            SessionState::Joined { room, sid } => Ok((room, sid)),
            SessionState::Connected => Err(SignalError::NotJoined),
        }
    }

    /// Leaves the room, if in one.
    pub(crate) async fn leave_room(&mut self) {
        if let SessionState::Joined { room, sid } =
            std::mem::replace(&mut self.state, SessionState::Connected)
        {
            room.leave(sid).await;
        }
    }
}

/// Runs one session until the client goes away, leaves or is disconnected.
pub(crate) async fn run<S>(
    ws: S,
    claims: Claims,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let limits = shared.config.limits.clone();
    let (outbound, OutboundRx { mut rx, overflow }) = outbound::channel(limits.outbound_queue);
    let mut session = Session {
        claims,
        shared: shared.clone(),
        outbound,
        state: SessionState::Connected,
    };
    let (mut sink, mut stream) = ws.split();
    let mut rate = RateLimiter::new(
        limits.messages_per_second,
        limits.message_burst,
        Instant::now(),
    );
    let mut last_rate_error: Option<Instant> = None;
    let ping_interval = shared.config.ping_interval;
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    // A shutdown that began while the socket was being upgraded counts too.
    shutdown.mark_changed();

    let close: Option<(CloseCode, &'static str)> = loop {
        tokio::select! {
            incoming = stream.next() => {
                let msg = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(e))) => {
                        debug!(error = %e, "message over the hard size limit");
                        session.reply(&ServerMessage::error(ErrorCode::MessageTooLarge, format!("message too large: {e}")), None);
                        break Some((CloseCode::Size, "message too large"));
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "websocket read error");
                        break None;
                    }
                    None => break None,
                };
                last_heard = Instant::now();
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        session.reply(&ServerMessage::error(ErrorCode::UnsupportedFrame, "binary frames are not supported; send JSON text"), None);
                        continue;
                    }
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                if !rate.allow(Instant::now()) {
                    // Say so at most once a second, so a flood is not answered by a flood.
                    if last_rate_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_rate_error = Some(Instant::now());
                        session.reply(&ServerMessage::error(ErrorCode::RateLimited, format!(
                            "more than {} messages per second; message dropped", limits.messages_per_second)), None);
                    }
                    continue;
                }
                if text.len() > limits.max_message_size {
                    session.reply(&ServerMessage::error(ErrorCode::MessageTooLarge, format!(
                        "message of {} bytes exceeds the limit of {} bytes", text.len(), limits.max_message_size)), None);
                    continue;
                }
                let request = match decode_client(&text) {
                    Ok(r) => r,
                    Err(e) => {
                        session.reply(&ServerMessage::error(e.code, e.detail), e.request_id.as_ref());
                        continue;
                    }
                };
                let request_id = request.request_id.clone();
                match HandlerRegistry::dispatch(&mut session, request).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) => break Some((CloseCode::Normal, "bye")),
                    Err(e) => session.reply(&e.to_message(), request_id.as_ref()),
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break None };
                match out {
                    Outgoing::Text(t) => {
                        if sink.send(Message::Text(t)).await.is_err() {
                            break None;
                        }
                    }
                    Outgoing::Disconnect(reason) => {
                        // The room already removed us; do not send it a leave.
                        session.state = SessionState::Connected;
                        let _ = sink.send(Message::Text(encode(&ServerMessage::Disconnected { reason }, None))).await;
                        break Some((CloseCode::Normal, reason_text(reason)));
                    }
                }
            }
            _ = overflow.notified() => {
                warn!(identity = %session.claims.sub, "client too slow to keep up; disconnecting");
                break Some((CloseCode::Policy, "too slow"));
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_interval * 3 {
                    debug!(identity = %session.claims.sub, "no traffic from client; closing");
                    break Some((CloseCode::Away, "timeout"));
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            Ok(()) = shutdown.changed() => {
                // The room manager tells joined participants; a session not in a
                // room is told here.
                if *shutdown.borrow_and_update() && matches!(session.state, SessionState::Connected) {
                    let _ = sink.send(Message::Text(encode(&ServerMessage::Disconnected { reason: DisconnectReason::ServerShutdown }, None))).await;
                    break Some((CloseCode::Away, "server shutdown"));
                }
            }
        }
    };

    session.leave_room().await;
    // Flush what the handlers queued before closing (for example `left`).
    while let Ok(Outgoing::Text(t)) = rx.try_recv() {
        if sink.send(Message::Text(t)).await.is_err() {
            break;
        }
    }
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}

fn reason_text(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ClientLeave => "leave",
        DisconnectReason::DuplicateIdentity => "duplicate identity",
        DisconnectReason::ServerShutdown => "server shutdown",
        DisconnectReason::RoomClosed => "room closed",
        DisconnectReason::Migration => "migration",
    }
}
