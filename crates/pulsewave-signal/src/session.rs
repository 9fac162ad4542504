//! One WebSocket connection: reads client messages, dispatches them to their
//! handlers, and writes what the room and the handlers queue for the client.
//!
//! The loop is written over any `Stream` + `Sink` of WebSocket messages, so
//! it runs the same over a real socket and over in-memory channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use pulsewave_auth::{AccessToken, Claims};
use pulsewave_protocol::{
    DisconnectReason, ErrorCode, ParticipantSid, RequestId, ServerMessage, TrackSource,
    decode_client, peek_request_id,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, warn};

use crate::error::SignalError;
use crate::handlers::{Flow, HandlerRegistry};
use crate::limits::Limit;
use crate::outbound::{self, GrantUpdate, Outbound, OutboundRx, Outgoing, encode};
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

    /// Leaves the room, if in one (an explicit `leave`).
    pub(crate) async fn leave_room(&mut self) {
        if let SessionState::Joined { room, sid } =
            std::mem::replace(&mut self.state, SessionState::Connected)
        {
            room.leave(sid, self.outbound.clone()).await;
        }
    }

    /// The socket went away without `leave`: the participant stays in the
    /// room for the resume grace time (`RESUME_GRACE`).
    async fn detach_room(&mut self) {
        if let SessionState::Joined { room, sid } =
            std::mem::replace(&mut self.state, SessionState::Connected)
        {
            room.detach(sid, self.outbound.clone()).await;
        }
    }
}

/// What the session asks of its writer besides the outbound queue.
#[derive(Debug)]
enum Control {
    /// A WebSocket ping.
    Ping,
    /// Write what is still queued, then the close frame (if any), then close.
    Close(Option<(CloseCode, &'static str)>),
}

/// What the writer tells the session.
#[derive(Debug)]
enum WriterEvent {
    /// The room disconnected us; the `disconnected` message was written.
    Disconnected(DisconnectReason),
    /// A write failed, or took longer than the send timeout.
    Failed { timed_out: bool },
    /// The room changed the participant's grants (server API).
    Grants(Box<GrantUpdate>),
}

/// Writes one client's socket: the outbound queue and the session's pings
/// and close. Every write is bounded by `send_timeout`, so a client that
/// stops reading costs the server a stuck task for at most that long, and
/// never blocks its session's reader, timers or room.
async fn writer<K>(
    mut sink: K,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
    mut control: tokio::sync::mpsc::Receiver<Control>,
    send_timeout: Duration,
    events: tokio::sync::mpsc::UnboundedSender<WriterEvent>,
) where
    K: Sink<Message, Error = WsError> + Unpin,
{
    /// One write; `Err(timed_out)` when it failed.
    async fn write<K: Sink<Message, Error = WsError> + Unpin>(
        sink: &mut K,
        msg: Message,
        send_timeout: Duration,
    ) -> Result<(), bool> {
        match tokio::time::timeout(send_timeout, sink.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(false),
            Err(_) => Err(true),
        }
    }
    loop {
        let msg = tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(Control::Ping) => Message::Ping(Default::default()),
                Some(Control::Close(frame)) => {
                    // Flush what the handlers queued before closing (for example `left`).
                    while let Ok(out) = rx.try_recv() {
                        let msg = match out {
                            Outgoing::Text(t) => Message::Text(t),
                            Outgoing::Disconnect(reason) => Message::Text(encode(&ServerMessage::Disconnected { reason }, None)),
                            Outgoing::Grants(_) => continue,
                        };
                        if write(&mut sink, msg, send_timeout).await.is_err() {
                            return;
                        }
                    }
                    if let Some((code, reason)) = frame {
                        let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                        if write(&mut sink, close, send_timeout).await.is_err() {
                            return;
                        }
                    }
                    let _ = tokio::time::timeout(send_timeout, sink.close()).await;
                    return;
                }
                None => return,
            },
            out = rx.recv() => match out {
                Some(Outgoing::Text(t)) => Message::Text(t),
                Some(Outgoing::Grants(update)) => {
                    // In queue order: after the `participant-updated` that
                    // announced the change.
                    let _ = events.send(WriterEvent::Grants(update));
                    continue;
                }
                Some(Outgoing::Disconnect(reason)) => {
                    let text = encode(&ServerMessage::Disconnected { reason }, None);
                    if let Err(timed_out) = write(&mut sink, Message::Text(text), send_timeout).await {
                        let _ = events.send(WriterEvent::Failed { timed_out });
                        return;
                    }
                    let _ = events.send(WriterEvent::Disconnected(reason));
                    continue;
                }
                None => return,
            },
        };
        if let Err(timed_out) = write(&mut sink, msg, send_timeout).await {
            let _ = events.send(WriterEvent::Failed { timed_out });
            return;
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
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let limits = shared.config.limits.clone();
    let counters = shared.rooms.counters().clone();
    let (outbound, OutboundRx { rx, overflow }) = outbound::channel(limits.outbound_queue);
    let mut session = Session {
        claims,
        shared: shared.clone(),
        outbound,
        state: SessionState::Connected,
    };
    let (sink, mut stream) = ws.split();
    let (control, control_rx) = tokio::sync::mpsc::channel(4);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut writer = tokio::spawn(writer(sink, rx, control_rx, limits.send_timeout, events_tx));
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
    // A socket that never joins is closed at this deadline.
    let join_deadline = tokio::time::Instant::now() + limits.join_timeout;
    let mut joined_once = false;
    // When the next `token-refresh` is due, while in a room.
    let mut refresh_at: Option<tokio::time::Instant> = None;
    // A shutdown that began while the socket was being upgraded counts too.
    shutdown.mark_changed();
    // Whether the participant may be resumed after this socket: yes when
    // the network or the client ended it, no when the server cut the client
    // off for misbehaving (too slow, message too large), which removes it
    // at once as before.
    let mut resumable = true;

    let close: Option<(CloseCode, &'static str)> = loop {
        tokio::select! {
            incoming = stream.next() => {
                let msg = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(e))) => {
                        debug!(error = %e, "message over the hard size limit");
                        counters.hit(Limit::MessageSize);
                        session.reply(&ServerMessage::error(ErrorCode::MessageTooLarge, format!("message too large: {e}")), None);
                        resumable = false;
                        break Some((CloseCode::Size, "message too large"));
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "websocket read error");
                        break None;
                    }
                    None => break None,
                };
                let now = Instant::now();
                last_heard = now;
                if let Message::Close(frame) = msg {
                    // A cluster relay that cut its client off (too slow, too
                    // large) says so with the close code: no resume then,
                    // as for a client cut off here.
                    if frame.is_some_and(|f| matches!(f.code, CloseCode::Policy | CloseCode::Size)) {
                        resumable = false;
                    }
                    break None;
                }
                // Every frame counts against the rate, whatever it is, before
                // anything else is done with it.
                if !rate.allow(now) {
                    counters.hit(Limit::Rate);
                    // Say so at most once a second, so a flood is not answered by a flood.
                    if last_rate_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_rate_error = Some(now);
                        session.reply(&ServerMessage::error(ErrorCode::RateLimited, format!(
                            "more than {} messages per second; message dropped", limits.messages_per_second)), None);
                    }
                    continue;
                }
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        session.reply(&ServerMessage::error(ErrorCode::UnsupportedFrame, "binary frames are not supported; send JSON text"), None);
                        continue;
                    }
                    Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                if text.len() > limits.max_message_size {
                    counters.hit(Limit::MessageSize);
                    // Only the envelope is read, never the whole message.
                    let request_id = peek_request_id(&text, limits.max_message_size);
                    session.reply(&ServerMessage::error(ErrorCode::MessageTooLarge, format!(
                        "message of {} bytes exceeds the limit of {} bytes", text.len(), limits.max_message_size)), request_id.as_ref());
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
                let was_joined = matches!(session.state, SessionState::Joined { .. });
                match HandlerRegistry::dispatch(&mut session, request).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) => break Some((CloseCode::Normal, "bye")),
                    Err(e) => session.reply(&e.to_message(), request_id.as_ref()),
                }
                if !was_joined && matches!(session.state, SessionState::Joined { .. }) {
                    joined_once = true;
                    refresh_at = first_refresh(&session.claims, shared.config.token_refresh_interval);
                }
            }
            ev = events.recv() => match ev {
                Some(WriterEvent::Disconnected(reason)) => {
                    // The room already removed us; do not send it a leave.
                    session.state = SessionState::Connected;
                    break Some((CloseCode::Normal, reason_text(reason)));
                }
                Some(WriterEvent::Failed { timed_out }) => {
                    if timed_out {
                        counters.hit(Limit::SlowClient);
                        warn!(identity = %session.claims.sub, timeout = ?limits.send_timeout, "client stopped reading; disconnecting");
                        resumable = false;
                    }
                    break None;
                }
                Some(WriterEvent::Grants(update)) => {
                    apply_grants(&mut session.claims, *update);
                    // At once, so that a reconnection keeps the change.
                    if matches!(session.state, SessionState::Joined { .. }) {
                        refresh_at = send_refresh(&session, &shared);
                    }
                }
                None => break None,
            },
            _ = overflow.notified() => {
                counters.hit(Limit::SlowClient);
                warn!(identity = %session.claims.sub, "client too slow to keep up; disconnecting");
                resumable = false;
                break Some((CloseCode::Policy, "too slow"));
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_interval * 3 {
                    debug!(identity = %session.claims.sub, "no traffic from client; closing");
                    break Some((CloseCode::Away, "timeout"));
                }
                // A full control queue means the writer is stuck; its timeout ends it.
                let _ = control.try_send(Control::Ping);
            }
            _ = tokio::time::sleep_until(join_deadline), if !joined_once => {
                counters.hit(Limit::JoinTimeout);
                debug!(identity = %session.claims.sub, "no join in time; closing");
                session.reply(&ServerMessage::error(ErrorCode::NotJoined, format!(
                    "no `join` within {:?} of connecting; closing", limits.join_timeout)), None);
                break Some((CloseCode::Policy, "join timeout"));
            }
            _ = sleep_until_opt(refresh_at) => {
                refresh_at = send_refresh(&session, &shared);
            }
            Ok(()) = shutdown.changed() => {
                // The room manager tells joined participants; a session not in a
                // room is told here.
                if *shutdown.borrow_and_update() && matches!(session.state, SessionState::Connected) {
                    session.reply(&ServerMessage::Disconnected { reason: DisconnectReason::ServerShutdown }, None);
                    break Some((CloseCode::Away, "server shutdown"));
                }
            }
        }
    };

    // The room learns first, so that it starts the participant's resume
    // grace time (or removes it, with resume off) even while this client's
    // socket is stuck.
    if resumable {
        session.detach_room().await;
    } else {
        session.leave_room().await;
    }
    let _ = control.try_send(Control::Close(close));
    drop(session);
    // The writer flushes and closes within its send timeout per write; a
    // client that does not read is cut off.
    if tokio::time::timeout(limits.send_timeout.saturating_mul(2), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// The session's claims after the room changed the participant (server
/// API): the name, metadata, attributes and permissions the next
/// `token-refresh` carries.
fn apply_grants(claims: &mut Claims, update: GrantUpdate) {
    let p = update.permission;
    claims.name = update.name;
    claims.metadata = update.metadata;
    claims.attributes = update.attributes;
    let v = &mut claims.video;
    v.can_publish = Some(p.can_publish);
    v.can_subscribe = Some(p.can_subscribe);
    v.can_publish_data = Some(p.can_publish_data);
    v.hidden = p.hidden;
    v.can_update_own_metadata = p.can_update_metadata;
    v.can_publish_sources = p
        .can_publish_sources
        .listed()
        .map(|s| {
            match s {
                TrackSource::Camera => "camera",
                TrackSource::Microphone => "microphone",
                TrackSource::Screen => "screen_share",
                TrackSource::ScreenAudio => "screen_share_audio",
            }
            .to_owned()
        })
        .collect();
}

/// When to send the first `token-refresh` after joining: after `interval`,
/// or sooner, at half the token's remaining lifetime.
fn first_refresh(claims: &Claims, interval: Duration) -> Option<tokio::time::Instant> {
    if interval.is_zero() {
        return None;
    }
    let remaining = Duration::from_secs(claims.exp.saturating_sub(unix_seconds()));
    Some(tokio::time::Instant::now() + interval.min(remaining / 2))
}

/// Sends a fresh token (same identity, name, metadata and grants) valid for
/// twice the refresh interval, and never shorter than the token the session
/// was opened with; returns when the next one is due.
fn send_refresh(session: &Session, shared: &Shared) -> Option<tokio::time::Instant> {
    let interval = shared.config.token_refresh_interval;
    if interval.is_zero() || !matches!(session.state, SessionState::Joined { .. }) {
        return None;
    }
    let claims = &session.claims;
    let secret = shared.verifier.secret_for(&claims.iss)?;
    let now = unix_seconds();
    // Whole seconds (JWT dates), at least one, rounded up.
    let ttl = interval
        .saturating_mul(2)
        .max(Duration::from_secs(claims.exp.saturating_sub(now)));
    let ttl = Duration::from_secs(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
        .max(Duration::from_secs(1));
    let mut token = AccessToken::from_claims(claims, secret);
    token.set_ttl(ttl);
    match token.to_jwt() {
        Ok(token) => {
            debug!(identity = %claims.sub, "token refreshed");
            session.reply(&ServerMessage::TokenRefresh { token }, None);
        }
        Err(e) => warn!(identity = %claims.sub, error = %e, "cannot refresh the token"),
    }
    Some(tokio::time::Instant::now() + interval)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn reason_text(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ClientLeave => "leave",
        DisconnectReason::DuplicateIdentity => "duplicate identity",
        DisconnectReason::ServerShutdown => "server shutdown",
        DisconnectReason::RoomClosed => "room closed",
        DisconnectReason::Migration => "migration",
        DisconnectReason::ParticipantRemoved => "participant removed",
        DisconnectReason::RoomDeleted => "room deleted",
    }
}
