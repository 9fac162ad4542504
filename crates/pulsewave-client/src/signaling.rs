//! The signaling task: owns the WebSocket, correlates requests and replies
//! by `requestId`, turns everything else into events, and keeps the
//! transports in step with `transport-closed` and `track-unsubscribed`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsewave_protocol::{
    ClientMessage, DisconnectReason, ErrorCode, ParticipantSid, RequestId, ResumeRequest,
    ServerMessage, TransportId, decode_server, encode_client,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientEvent, Inner, Joined, ReconnectPolicy, lock};
use crate::driver::{Command, EventSink};
use crate::error::ClientError;

/// Appends `token` to `url` as a query parameter, adding the `/` path when
/// `url` has none.
pub(crate) fn ws_url(url: &str, token: &str) -> String {
    let mut url = url.to_owned();
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    if url[authority_end..].is_empty() || url[authority_end..].starts_with('?') {
        url.insert(authority_end, '/');
    }
    if token.is_empty() {
        return url;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let encoded: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{url}{sep}token={encoded}")
}

pub(crate) enum SignalCommand {
    Request {
        id: u64,
        text: String,
        reply: oneshot::Sender<Result<ServerMessage, ClientError>>,
    },
    Send {
        text: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close,
    /// Drop the socket without a close frame (a simulated network loss).
    Drop,
}

pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The running transports, so that the signaling task can act on
/// `transport-closed` and `track-unsubscribed`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry(Arc<std::sync::Mutex<Vec<RegisteredTransport>>>);

#[derive(Debug)]
pub(crate) struct RegisteredTransport {
    pub(crate) id: TransportId,
    pub(crate) cancel: CancellationToken,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<RegisteredTransport>) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.retain(|t| !t.commands.is_closed());
        f(&mut guard)
    }

    pub(crate) fn add(&self, t: RegisteredTransport) {
        self.with(|v| v.push(t));
    }

    /// Keeps the client's transports in step with what the server says.
    fn on_server_message(&self, msg: &ServerMessage) {
        match msg {
            ServerMessage::TransportClosed { transport_id, .. } => self.with(|v| {
                for t in v.iter().filter(|t| t.id == *transport_id) {
                    t.cancel.cancel();
                }
            }),
            ServerMessage::TrackUnsubscribed { consumer_id, .. } => self.with(|v| {
                for t in v.iter() {
                    // Only the receive transport knows the consumer; the
                    // others ignore it. A full queue only delays cleanup.
                    let _ = t.commands.try_send(Command::RemoveConsumer {
                        consumer_id: consumer_id.clone(),
                    });
                }
            }),
            _ => {}
        }
    }
}

/// What the signaling task needs to reconnect by itself.
pub(crate) struct Reconnect {
    /// The full URL, token included.
    pub(crate) url: String,
    pub(crate) policy: ReconnectPolicy,
    pub(crate) connect_timeout: Duration,
    /// The client's shared state; gone when the client is dropped.
    pub(crate) inner: Weak<Inner>,
}

impl Reconnect {
    /// The URL to reconnect to: with the latest token when the server
    /// refreshed it, else the one the client connected with.
    fn current_url(&self, inner: &Inner) -> String {
        let token = lock(&inner.token).clone();
        if token.is_empty() {
            self.url.clone()
        } else {
            ws_url(&inner.base_url, &token)
        }
    }
}

/// How one signaling session (one WebSocket) ended.
struct SessionEnd {
    /// The close frame's code and reason, or the error.
    reason: Option<String>,
    /// The last `disconnected` reason the server gave.
    disconnected: Option<DisconnectReason>,
}

/// Disconnect reasons after which the client does not reconnect (as the
/// JavaScript client).
fn is_final(reason: Option<DisconnectReason>) -> bool {
    matches!(
        reason,
        Some(
            DisconnectReason::ClientLeave
                | DisconnectReason::DuplicateIdentity
                | DisconnectReason::RoomClosed
                | DisconnectReason::ParticipantRemoved
                | DisconnectReason::RoomDeleted
        )
    )
}

pub(crate) async fn signaling_task(
    mut ws: WsStream,
    mut commands: mpsc::Receiver<SignalCommand>,
    sink: EventSink,
    cancel: CancellationToken,
    registry: Registry,
    reconnect: Option<Reconnect>,
) {
    let mut overflow: VecDeque<ClientEvent> = VecDeque::new();
    let inner = reconnect.as_ref().map(|r| r.inner.clone());
    let reason = loop {
        let end = run_session(
            ws,
            &mut commands,
            &sink,
            &cancel,
            &registry,
            &mut overflow,
            inner.as_ref(),
        )
        .await;
        let Some(rc) = reconnect.as_ref() else {
            break end.reason;
        };
        let Some(inner) = rc.inner.upgrade() else {
            break end.reason;
        };
        if cancel.is_cancelled()
            || inner.leaving.load(Ordering::Relaxed)
            || is_final(end.disconnected)
            || lock(&inner.room).is_none()
        {
            break end.reason;
        }
        let why = match end.disconnected {
            Some(DisconnectReason::Migration) => "migration".to_owned(),
            Some(DisconnectReason::ServerShutdown) => "server-shutdown".to_owned(),
            _ => end.reason.unwrap_or_else(|| "connection lost".to_owned()),
        };
        // A lost socket (not a `disconnected` from the server) first tries
        // to take the session back; a refusal falls back to a full rejoin.
        if end.disconnected.is_none() {
            match resume_session(rc, &inner, &sink, &mut overflow, &cancel, &why).await {
                Ok(Some(new_ws)) => {
                    ws = new_ws;
                    continue;
                }
                Ok(None) => {}
                Err(e) => break Some(e),
            }
        }
        match reconnect_session(rc, &inner, &sink, &mut overflow, &cancel, why).await {
            Ok(new_ws) => ws = new_ws,
            Err(e) => break Some(e),
        }
    };
    // Stop the transports, then deliver the rest.
    cancel.cancel();
    overflow.push_back(ClientEvent::Closed { reason });
    for e in overflow {
        if sink.tx.send(e).await.is_err() {
            break;
        }
    }
}

/// Runs one WebSocket until it closes; fails its pending requests then.
async fn run_session(
    ws: WsStream,
    commands: &mut mpsc::Receiver<SignalCommand>,
    sink: &EventSink,
    cancel: &CancellationToken,
    registry: &Registry,
    overflow: &mut VecDeque<ClientEvent>,
    inner: Option<&Weak<Inner>>,
) -> SessionEnd {
    let (mut write, mut read) = ws.split();
    let mut pending: HashMap<u64, oneshot::Sender<Result<ServerMessage, ClientError>>> =
        HashMap::new();
    let mut end = SessionEnd {
        reason: None,
        disconnected: None,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = write.send(Message::Close(None)).await;
                break;
            }
            cmd = commands.recv() => match cmd {
                Some(SignalCommand::Request { id, text, reply }) => {
                    pending.retain(|_, tx| !tx.is_closed());
                    match write.send(Message::text(text)).await {
                        Ok(()) => {
                            pending.insert(id, reply);
                        }
                        Err(e) => {
                            end.reason = Some(e.to_string());
                            let _ = reply.send(Err(e.into()));
                            break;
                        }
                    }
                }
                Some(SignalCommand::Send { text, reply }) => {
                    let r = write.send(Message::text(text)).await;
                    let failed = r.is_err();
                    let _ = reply.send(r.map_err(Into::into));
                    if failed {
                        break;
                    }
                }
                Some(SignalCommand::Drop) => {
                    end.reason = Some("connection dropped (simulated)".into());
                    break;
                }
                Some(SignalCommand::Close) | None => {
                    let _ = write.send(Message::Close(None)).await;
                    // Keep reading until the server's close or `left`.
                }
            },
            msg = read.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reason) = on_text(&text, &mut pending, sink, overflow, registry, inner) {
                        end.disconnected = Some(reason);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    end.reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    end.reason = Some(e.to_string());
                    break;
                }
                None => break,
            },
            permit = sink.tx.reserve(), if !overflow.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(e) = overflow.pop_front() {
                        permit.send(e);
                    }
                }
                Err(_) => overflow.clear(),
            },
        }
    }
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(ClientError::Closed));
    }
    end
}

/// Connects again with backoff and joins the room; on success, starts
/// republishing and resubscribing and returns the new socket.
async fn reconnect_session(
    rc: &Reconnect,
    inner: &Arc<Inner>,
    sink: &EventSink,
    overflow: &mut VecDeque<ClientEvent>,
    cancel: &CancellationToken,
    why: String,
) -> Result<WsStream, String> {
    let generation = inner.begin_reconnect().await;
    tracing::info!(reason = %why, "connection lost; reconnecting");
    let policy = &rc.policy;
    let deadline = tokio::time::Instant::now() + policy.give_up_after;
    let mut delay = if why == "migration" {
        Duration::ZERO
    } else {
        policy.min_delay
    };
    let mut last_error = String::from("none");
    for attempt in 1u32.. {
        if tokio::time::Instant::now() + delay > deadline {
            break;
        }
        sink.push(
            overflow,
            ClientEvent::Reconnecting {
                attempt,
                reason: why.clone(),
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Err("closed while reconnecting".into()),
        }
        if inner.leaving.load(Ordering::Relaxed) {
            return Err("left while reconnecting".into());
        }
        let attempt_result = tokio::select! {
            r = connect_and_join(rc, inner) => r,
            _ = cancel.cancelled() => return Err("closed while reconnecting".into()),
        };
        match attempt_result {
            Ok((ws, joined)) => {
                tracing::info!(attempt, "reconnected");
                inner.rejoined(&joined);
                sink.push(
                    overflow,
                    ClientEvent::Reconnected {
                        joined: Box::new(joined.clone()),
                    },
                );
                tokio::spawn(inner.clone().resume(joined, generation));
                return Ok(ws);
            }
            Err(e) if is_fatal(&e) => {
                return Err(format!("reconnection refused: {e}"));
            }
            Err(e) => {
                tracing::debug!(attempt, error = %e, "reconnection attempt failed");
                last_error = e.to_string();
                delay = (delay * 2).clamp(policy.min_delay, policy.max_delay);
            }
        }
    }
    Err(format!(
        "gave up reconnecting after {:?}: {last_error}",
        policy.give_up_after
    ))
}

/// How long a client keeps trying to resume before a full rejoin: the
/// server's default `RESUME_GRACE`.
const RESUME_WINDOW: Duration = Duration::from_secs(15);

/// Longest wait between two resume attempts: with the doubling delays of a
/// full reconnect ([`ReconnectPolicy`]'s, up to `max_delay`), a network
/// back late in the window could find the next attempt past it and lose
/// the session.
const RESUME_MAX_DELAY: Duration = Duration::from_secs(2);

/// The last resume attempt is made this long before the window closes.
const RESUME_LAST_TRY_MARGIN: Duration = Duration::from_millis(500);

/// Tries to resume the session (same sid, transports, producers and
/// consumers) with backoff for up to [`RESUME_WINDOW`]. `Ok(None)`: the
/// server refused or the window passed; the caller rejoins in full.
async fn resume_session(
    rc: &Reconnect,
    inner: &Arc<Inner>,
    sink: &EventSink,
    overflow: &mut VecDeque<ClientEvent>,
    cancel: &CancellationToken,
    why: &str,
) -> Result<Option<WsStream>, String> {
    if inner.resume_request().is_none() {
        return Ok(None);
    }
    tracing::info!(reason = %why, "connection lost; resuming");
    let policy = &rc.policy;
    let deadline = tokio::time::Instant::now() + RESUME_WINDOW.min(policy.give_up_after);
    let mut delay = Duration::ZERO;
    for attempt in 1u32.. {
        if tokio::time::Instant::now() + delay > deadline {
            break;
        }
        sink.push(
            overflow,
            ClientEvent::Reconnecting {
                attempt,
                reason: why.to_owned(),
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Err("closed while resuming".into()),
        }
        if inner.leaving.load(Ordering::Relaxed) {
            return Err("left while resuming".into());
        }
        let Some(resume) = inner.resume_request() else {
            return Ok(None);
        };
        let result = tokio::select! {
            r = connect_and_resume(rc, inner, resume) => r,
            _ = cancel.cancelled() => return Err("closed while resuming".into()),
        };
        match result {
            Ok((ws, participant_sid, token, replayed)) => {
                tracing::info!(attempt, replayed, "session resumed");
                inner.resumed(token);
                // If a transport's ICE also broke while the socket was
                // down, its `restart_on_loss` task has asked for
                // `restart-ice` meanwhile: the request waited in the
                // command queue (or times out and is retried) and goes out
                // on this socket.
                sink.push(
                    overflow,
                    ClientEvent::Resumed {
                        participant_sid,
                        replayed,
                    },
                );
                return Ok(Some(ws));
            }
            Err(ClientError::Server { code, message }) => {
                tracing::info!(?code, %message, "resume refused; rejoining");
                inner.forget_resume();
                return Ok(None);
            }
            Err(e) => {
                tracing::debug!(attempt, error = %e, "resume attempt failed");
                delay = (delay * 2).clamp(
                    policy.min_delay,
                    policy.max_delay.min(RESUME_MAX_DELAY).max(policy.min_delay),
                );
                // The last attempt just before the window closes rather than none.
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .saturating_sub(RESUME_LAST_TRY_MARGIN);
                if left.is_zero() {
                    break;
                }
                delay = delay.min(left);
            }
        }
    }
    inner.forget_resume();
    Ok(None)
}

/// Opens a WebSocket and sends `join` with `resume`; the socket, the
/// participant sid, the new resume token and the number of replayed
/// messages (which follow on the socket).
async fn connect_and_resume(
    rc: &Reconnect,
    inner: &Inner,
    resume: ResumeRequest,
) -> Result<(WsStream, ParticipantSid, String, u64), ClientError> {
    let room = lock(&inner.room).clone().ok_or(ClientError::NotJoined)?;
    let (mut ws, id) = open_and_join(rc, inner, room, Some(resume)).await?;
    let frame = read_reply(&mut ws, id, inner.request_timeout).await?;
    match frame {
        ServerMessage::Resumed {
            participant,
            resume_token,
            replayed,
            ..
        } => Ok((ws, participant.sid, resume_token, replayed)),
        ServerMessage::Error { code, message } => Err(ClientError::Server { code, message }),
        other => Err(ClientError::Protocol(format!(
            "expected `resumed`, got `{}`",
            other.type_name()
        ))),
    }
}

/// Opens a WebSocket and sends `join` (with `resume` if given); the socket
/// and the request id.
async fn open_and_join(
    rc: &Reconnect,
    inner: &Inner,
    room: String,
    resume: Option<ResumeRequest>,
) -> Result<(WsStream, u64), ClientError> {
    if inner.offline.load(Ordering::Relaxed) {
        return Err(ClientError::Timeout("network down (simulated)".into()));
    }
    let (mut ws, _) = tokio::time::timeout(
        rc.connect_timeout,
        tokio_tungstenite::connect_async(rc.current_url(inner)),
    )
    .await
    .map_err(|_| ClientError::Timeout("WebSocket connect timed out".into()))??;
    let id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
    let join = encode_client(
        &ClientMessage::Join { room, resume },
        Some(&RequestId::Number(id)),
    );
    ws.send(Message::text(join)).await?;
    Ok((ws, id))
}

/// Reads until the reply to request `id`, within `timeout`.
async fn read_reply(
    ws: &mut WsStream,
    id: u64,
    timeout: Duration,
) -> Result<ServerMessage, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| ClientError::Timeout("no reply to `join`".into()))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        let Ok(frame) = decode_server(&text) else {
            continue;
        };
        if frame.request_id == Some(RequestId::Number(id)) {
            return Ok(frame.message);
        }
    }
}

/// Errors another attempt cannot fix.
fn is_fatal(e: &ClientError) -> bool {
    match e {
        ClientError::Server { code, .. } => matches!(
            code,
            ErrorCode::RoomNotFound
                | ErrorCode::Unauthorized
                | ErrorCode::PermissionDenied
                | ErrorCode::RoomMismatch
        ),
        ClientError::Rejected { status, .. } => matches!(status, 400 | 401 | 403 | 404),
        _ => false,
    }
}

/// Opens a WebSocket and sends `join`; the socket and the reply.
async fn connect_and_join(
    rc: &Reconnect,
    inner: &Inner,
) -> Result<(WsStream, Joined), ClientError> {
    let room = lock(&inner.room).clone().ok_or(ClientError::NotJoined)?;
    let (mut ws, id) = open_and_join(rc, inner, room, None).await?;
    match read_reply(&mut ws, id, inner.request_timeout).await? {
        ServerMessage::Joined {
            room,
            participant,
            rtp_capabilities,
            ice_servers,
            resume_token,
        } => Ok((
            ws,
            Joined {
                room,
                participant,
                rtp_capabilities,
                ice_servers,
                resume_token,
            },
        )),
        ServerMessage::Error { code, message } => Err(ClientError::Server { code, message }),
        other => Err(ClientError::Protocol(format!(
            "expected `joined`, got `{}`",
            other.type_name()
        ))),
    }
}

/// Handles one text message; returns the reason of a `disconnected`.
fn on_text(
    text: &str,
    pending: &mut HashMap<u64, oneshot::Sender<Result<ServerMessage, ClientError>>>,
    sink: &EventSink,
    overflow: &mut VecDeque<ClientEvent>,
    registry: &Registry,
    inner: Option<&Weak<Inner>>,
) -> Option<DisconnectReason> {
    let mut disconnected = None;
    match decode_server(text) {
        Ok(frame) => {
            if let Some(seq) = frame.seq
                && let Some(inner) = inner.and_then(Weak::upgrade)
            {
                inner.saw_seq(seq);
            }
            match frame.request_id {
                Some(RequestId::Number(id)) => {
                    if let Some(tx) = pending.remove(&id) {
                        let r = match frame.message {
                            ServerMessage::Error { code, message } => {
                                Err(ClientError::Server { code, message })
                            }
                            m => Ok(m),
                        };
                        let _ = tx.send(r);
                    } else {
                        tracing::debug!(
                            id,
                            kind = frame.message.type_name(),
                            "late or unknown reply dropped"
                        );
                    }
                }
                _ => {
                    registry.on_server_message(&frame.message);
                    match &frame.message {
                        ServerMessage::Disconnected { reason } => disconnected = Some(*reason),
                        ServerMessage::TokenRefresh { token } => {
                            if let Some(inner) = inner.and_then(Weak::upgrade) {
                                *lock(&inner.token) = token.clone();
                            }
                        }
                        ServerMessage::TrackPublished { track } => {
                            if let Some(inner) = inner.and_then(Weak::upgrade) {
                                inner.on_track_published(track);
                            }
                        }
                        ServerMessage::TrackUnsubscribed { consumer_id, .. } => {
                            if let Some(inner) = inner.and_then(Weak::upgrade) {
                                inner.forget_subscription(consumer_id);
                            }
                        }
                        _ => {}
                    }
                    sink.push(overflow, ClientEvent::Signal(frame.message));
                }
            }
        }
        Err(e) => {
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("requestId").and_then(Value::as_u64));
            match id.and_then(|id| pending.remove(&id)) {
                Some(tx) => {
                    let _ = tx.send(Err(ClientError::Protocol(format!(
                        "undecodable reply: {e}"
                    ))));
                }
                None => tracing::warn!(error = %e, "undecodable server message ignored"),
            }
        }
    }
    disconnected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_path_and_an_encoded_token() {
        assert_eq!(ws_url("ws://h:1", "a.b"), "ws://h:1/?token=a.b");
        assert_eq!(ws_url("ws://h:1/", "a b"), "ws://h:1/?token=a%20b");
        assert_eq!(ws_url("ws://h:1/rtc?x=1", "t"), "ws://h:1/rtc?x=1&token=t");
        assert_eq!(ws_url("ws://h:1?x=1", ""), "ws://h:1/?x=1");
    }
}
