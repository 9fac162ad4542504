//! The signaling side of the cluster: where a new WebSocket's session runs,
//! the relay that carries a client's WebSocket to the node owning its room,
//! and the owner side that runs tunneled sessions.
//!
//! ```text
//!  client ──ws──► node B (relay) ──pw:node:A:in──► node A (owner)
//!         ◄─ws──                 ◄─pw:node:B:out──  session::run over a TunnelSocket
//!  client ──────────── UDP media (A's candidates) ──► node A
//! ```
//!
//! The client sees exactly the messages it would see connected to the owner,
//! and sends its media straight to the owner's UDP candidates (the transport
//! options carry them). See `docs/cluster.md`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::{HeaderValue, Response, StatusCode, header};
use pulsewave_auth::Claims;
use pulsewave_cluster::{ClusterError, IncomingTunnel, Placement, TunnelEnd, TunnelFrame};
use pulsewave_protocol::{DisconnectReason, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::PollSender;
use tracing::{debug, info, warn};

use crate::http::{Body, json_error};
use crate::limits::Limit;
use crate::outbound::encode;
use crate::rate::RateLimiter;
use crate::room::validate_room_name;
use crate::server::Shared;
use crate::session;

/// Where a new WebSocket's session runs.
#[derive(Debug)]
pub(crate) enum Route {
    /// Here.
    Local,
    /// On the room's owner, through this tunnel.
    Tunnel(TunnelEnd),
}

/// A 503 that tells the client to try again shortly.
fn unavailable(message: &str) -> Response<Body> {
    let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// Decides, before the upgrade, where the session of a client holding
/// `claims` (verified here) runs. A room already open here is served here,
/// even when the cluster store is unreachable. Otherwise the cluster places
/// the room: here (claimed for this node), or on its owner through a
/// tunnel that carries the claims, never the token. Failures are HTTP 503
/// responses with a JSON error, which clients retry.
pub(crate) async fn place(shared: &Shared, claims: &Claims) -> Result<Route, Response<Body>> {
    let cluster = &shared.config.cluster;
    if cluster.is_single_node() {
        return Ok(Route::Local);
    }
    // Without a valid room in the token, `join` fails here with the usual error.
    let Some(room) = claims
        .video
        .room
        .as_deref()
        .filter(|r| validate_room_name(r).is_ok())
    else {
        return Ok(Route::Local);
    };
    if shared.rooms.get_room(room).is_some() {
        return Ok(Route::Local);
    }
    let full = shared.rooms.is_full();
    match cluster
        .place_room(room, !cluster.is_draining() && !full)
        .await
    {
        Ok(Placement::Local) => Ok(Route::Local),
        Ok(Placement::Remote(owner)) => match cluster.open_tunnel(&owner.id, room, claims).await {
            Ok(end) => {
                debug!(%room, owner = %owner.id, identity = %claims.sub, "relaying the session to the room's node");
                Ok(Route::Tunnel(end))
            }
            Err(e) => {
                warn!(%room, owner = %owner.id, error = %e, "cannot reach the room's node");
                Err(unavailable(&format!(
                    "room `{room}` lives on node `{}`, which does not answer ({e}); retry shortly",
                    owner.id
                )))
            }
        },
        Err(ClusterError::Draining) if full && !cluster.is_draining() => {
            shared.rooms.counters().hit(Limit::Rooms);
            Err(unavailable(
                "this node holds its limit of rooms (MAX_ROOMS) and takes no new ones; retry (another node will take the room)",
            ))
        }
        Err(ClusterError::Draining) => Err(unavailable(
            "this node is draining and takes no new rooms; retry (another node will take the room)",
        )),
        Err(e) => {
            warn!(%room, error = %e, "cannot place the room");
            Err(unavailable(&format!(
                "cannot place room `{room}`: {e}; retry shortly"
            )))
        }
    }
}

fn close_message(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

fn disconnected(reason: DisconnectReason) -> Message {
    Message::Text(encode(&ServerMessage::Disconnected { reason }, None))
}

/// How a relay ended.
enum RelayEnd {
    /// The client went away (or closed); the owner is told.
    ClientGone(u16, String),
    /// The owner closed the session; the client got the close.
    OwnerClosed,
    /// The tunnel died: the client is told to reconnect (`migration`).
    Lost,
    /// This node shuts down.
    Shutdown,
}

/// Writes the client's socket for a relay, each write bounded by
/// `send_timeout`; fires `dead` when a write fails or times out.
async fn relay_writer<K>(
    mut sink: K,
    mut rx: mpsc::Receiver<Message>,
    send_timeout: std::time::Duration,
    dead: tokio::sync::oneshot::Sender<bool>,
) where
    K: Sink<Message, Error = WsError> + Unpin,
{
    while let Some(msg) = rx.recv().await {
        match tokio::time::timeout(send_timeout, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let _ = dead.send(false);
                return;
            }
            Err(_) => {
                let _ = dead.send(true);
                return;
            }
        }
    }
    let _ = tokio::time::timeout(send_timeout, sink.close()).await;
}

/// Carries one client's WebSocket to the room's owner until either side
/// closes. When the tunnel dies (owner node gone, Redis connection lost) the
/// client gets `{"type":"disconnected","reason":"migration"}` and is closed,
/// so that it reconnects and its room is placed again.
///
/// The relay applies the session's limits on its side too: every client
/// frame counts against `RATE_LIMIT` before it is forwarded (excess frames
/// never reach Redis), and the client's socket is written by its own task
/// through a queue of `OUTBOUND_QUEUE` messages with `WS_SEND_TIMEOUT` per
/// write, so a client that stops reading is dropped (and the owner told)
/// instead of stalling the relay.
pub(crate) async fn relay<S>(
    ws: S,
    end: TunnelEnd,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let limits = &shared.config.limits;
    let counters = shared.rooms.counters().clone();
    let peer = end.peer_node().to_owned();
    let (tx, mut rx) = end.into_channels();
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel::<Message>(limits.outbound_queue.max(1));
    let (dead_tx, mut dead) = tokio::sync::oneshot::channel();
    let mut writer = tokio::spawn(relay_writer(sink, out_rx, limits.send_timeout, dead_tx));
    let mut rate = RateLimiter::new(
        limits.messages_per_second,
        limits.message_burst,
        Instant::now(),
    );
    let mut last_rate_error: Option<Instant> = None;
    shutdown.mark_changed();
    let ended = loop {
        tokio::select! {
            incoming = stream.next() => {
                let msg = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(e))) => {
                        counters.hit(Limit::MessageSize);
                        let error = ServerMessage::error(ErrorCode::MessageTooLarge, format!("message too large: {e}"));
                        let _ = out.try_send(Message::Text(encode(&error, None)));
                        let _ = out.try_send(close_message(CloseCode::Size, "message too large"));
                        break RelayEnd::ClientGone(1009, "message too large".into());
                    }
                    Some(Err(_)) | None => break RelayEnd::ClientGone(1001, "client gone".into()),
                };
                if let Message::Close(f) = msg {
                    let (code, reason) = f
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1000, String::new()));
                    break RelayEnd::ClientGone(code, reason);
                }
                let now = Instant::now();
                if !rate.allow(now) {
                    counters.hit(Limit::Rate);
                    if last_rate_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_rate_error = Some(now);
                        let error = ServerMessage::error(ErrorCode::RateLimited, format!(
                            "more than {} messages per second; message dropped", limits.messages_per_second));
                        let _ = out.try_send(Message::Text(encode(&error, None)));
                    }
                    continue;
                }
                let frame = match msg {
                    Message::Text(t) => TunnelFrame::Text(t.to_string()),
                    Message::Binary(_) => TunnelFrame::Binary,
                    Message::Pong(_) => TunnelFrame::Pong,
                    Message::Ping(_) | Message::Frame(_) | Message::Close(_) => continue,
                };
                match tokio::time::timeout(limits.send_timeout, tx.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break RelayEnd::Lost,
                }
            }
            frame = rx.recv() => match frame {
                Some(TunnelFrame::Text(t)) => {
                    if out.try_send(Message::text(t)).is_err() {
                        counters.hit(Limit::SlowClient);
                        warn!(owner = %peer, "relayed client too slow to keep up; disconnecting");
                        break RelayEnd::ClientGone(1008, "too slow".into());
                    }
                }
                Some(TunnelFrame::Ping) => {
                    let _ = out.try_send(Message::Ping(Bytes::new()));
                }
                Some(TunnelFrame::Pong | TunnelFrame::Binary) => {}
                Some(TunnelFrame::Close { code, reason }) => {
                    let _ = out.try_send(close_message(CloseCode::from(code), &reason));
                    break RelayEnd::OwnerClosed;
                }
                Some(TunnelFrame::Lost) | None => break RelayEnd::Lost,
            },
            timed_out = &mut dead => {
                if timed_out.unwrap_or(false) {
                    counters.hit(Limit::SlowClient);
                    warn!(owner = %peer, timeout = ?limits.send_timeout, "relayed client stopped reading; disconnecting");
                    // 1008 tells the owner it was cut off: no resume grace.
                    break RelayEnd::ClientGone(1008, "too slow".into());
                }
                break RelayEnd::ClientGone(1001, "client gone".into());
            }
            Ok(()) = shutdown.changed() => {
                if *shutdown.borrow_and_update() {
                    break RelayEnd::Shutdown;
                }
            }
        }
    };
    let tell_owner = |code: u16, reason: String| {
        let tx = tx.clone();
        async move {
            let _ = tokio::time::timeout(
                limits.send_timeout,
                tx.send(TunnelFrame::Close { code, reason }),
            )
            .await;
        }
    };
    match ended {
        RelayEnd::ClientGone(code, reason) => {
            let _ = out.try_send(close_message(CloseCode::from(code), &reason));
            tell_owner(code, reason).await;
        }
        RelayEnd::OwnerClosed => {}
        RelayEnd::Lost => {
            info!(owner = %peer, "tunnel to the room's node lost; telling the client to reconnect");
            let _ = out.try_send(disconnected(DisconnectReason::Migration));
            let _ = out.try_send(close_message(CloseCode::Away, "migration"));
        }
        RelayEnd::Shutdown => {
            let _ = out.try_send(disconnected(DisconnectReason::ServerShutdown));
            let _ = out.try_send(close_message(CloseCode::Away, "server shutdown"));
            tell_owner(1001, "relay shutting down".into()).await;
        }
    }
    drop(out);
    if tokio::time::timeout(limits.send_timeout.saturating_mul(2), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// A tunnel seen as a WebSocket, so that [`session::run`] runs over it
/// unchanged on the owner.
pub(crate) struct TunnelSocket {
    rx: mpsc::Receiver<TunnelFrame>,
    tx: PollSender<TunnelFrame>,
}

impl TunnelSocket {
    pub(crate) fn new(end: TunnelEnd) -> Self {
        let (tx, rx) = end.into_channels();
        Self {
            rx,
            tx: PollSender::new(tx),
        }
    }
}

impl Stream for TunnelSocket {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let msg = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None | Some(TunnelFrame::Lost)) => return Poll::Ready(None),
            Poll::Ready(Some(frame)) => match frame {
                TunnelFrame::Text(t) => Message::text(t),
                TunnelFrame::Binary => Message::Binary(Bytes::new()),
                TunnelFrame::Ping => Message::Ping(Bytes::new()),
                TunnelFrame::Pong => Message::Pong(Bytes::new()),
                TunnelFrame::Close { code, reason } => Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                })),
                TunnelFrame::Lost => return Poll::Ready(None),
            },
        };
        Poll::Ready(Some(Ok(msg)))
    }
}

impl Sink<Message> for TunnelSocket {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| WsError::ConnectionClosed)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let frame = match item {
            Message::Text(t) => TunnelFrame::Text(t.to_string()),
            Message::Binary(_) => TunnelFrame::Binary,
            Message::Ping(_) => TunnelFrame::Ping,
            Message::Pong(_) => TunnelFrame::Pong,
            Message::Close(f) => {
                let (code, reason) = f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1000, String::new()));
                TunnelFrame::Close { code, reason }
            }
            Message::Frame(_) => {
                self.tx.abort_send();
                return Ok(());
            }
        };
        self.tx
            .send_item(frame)
            .map_err(|_| WsError::ConnectionClosed)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// Runs the sessions that other nodes relay to this one, until shutdown.
pub(crate) async fn accept_tunnels(
    shared: Arc<Shared>,
    mut incoming: mpsc::Receiver<IncomingTunnel>,
) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let tunnel = tokio::select! {
            t = incoming.recv() => match t {
                Some(t) => t,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        // The relay verified the client's token and forwarded its claims in
        // a message signed with the cluster key: they are trusted as such.
        // Still refused: claims for another room, or expired since.
        let IncomingTunnel { room, claims, end } = tunnel;
        if let Err(reason) = tunneled_claims_usable(&claims, &room) {
            warn!(relay = %end.peer_node(), %room, identity = %claims.sub, %reason, "tunneled session refused");
            // Never let one stuck tunnel hold up the others.
            let _ = tokio::time::timeout(
                shared.config.limits.send_timeout,
                end.send(TunnelFrame::Close {
                    code: 1008,
                    reason: format!("invalid token: {reason}"),
                }),
            )
            .await;
            continue;
        }
        if crate::twirp::is_api_tunnel(&claims) {
            // A server API call for a room of this node, authorized by the
            // node it reached.
            debug!(%room, relay = %end.peer_node(), "forwarded server API call");
            shared
                .sessions
                .spawn(crate::twirp::serve_tunnel(shared.clone(), room, end));
            continue;
        }
        if shared.is_shutting_down() {
            let _ = tokio::time::timeout(
                shared.config.limits.send_timeout,
                end.send(TunnelFrame::Text(
                    encode(
                        &ServerMessage::Disconnected {
                            reason: DisconnectReason::ServerShutdown,
                        },
                        None,
                    )
                    .to_string(),
                )),
            )
            .await;
            continue;
        }
        debug!(%room, relay = %end.peer_node(), identity = %claims.sub, "tunneled session started");
        let shared2 = shared.clone();
        let stop = shared.shutdown_signal();
        shared.sessions.spawn(async move {
            session::run(TunnelSocket::new(end), claims, shared2, stop).await;
        });
    }
}

/// Whether claims a relay forwarded can run a session for `room`: they
/// name that room and have not expired (with the verifier's leeway).
fn tunneled_claims_usable(claims: &Claims, room: &str) -> Result<(), String> {
    if claims.video.room.as_deref() != Some(room) {
        return Err(format!("the claims are not for room `{room}`"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.saturating_sub(pulsewave_auth::DEFAULT_LEEWAY.as_secs()) > claims.exp {
        return Err("token expired".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunneled_claims_must_name_the_room_and_be_current() {
        let mut claims = Claims {
            iss: "k".into(),
            sub: "alice".into(),
            name: String::new(),
            metadata: String::new(),
            nbf: 0,
            exp: 4_000_000_000,
            jti: String::new(),
            video: pulsewave_auth::VideoGrant {
                room: Some("r".into()),
                room_join: true,
                ..Default::default()
            },
            attributes: Default::default(),
        };
        assert!(tunneled_claims_usable(&claims, "r").is_ok());
        assert!(tunneled_claims_usable(&claims, "other").is_err());
        claims.exp = 1;
        assert!(tunneled_claims_usable(&claims, "r").is_err());
    }

    #[tokio::test]
    async fn tunnel_socket_maps_frames_both_ways() {
        let (a, mut b) = TunnelEnd::memory_pair("t");
        let mut socket = TunnelSocket::new(a);
        b.send(TunnelFrame::Text("{\"type\":\"ping\"}".into()))
            .await
            .ok();
        b.send(TunnelFrame::Pong).await.ok();
        assert!(
            matches!(socket.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "{\"type\":\"ping\"}")
        );
        assert!(matches!(socket.next().await, Some(Ok(Message::Pong(_)))));
        socket.send(Message::text("hello")).await.ok();
        socket.send(Message::Ping(Bytes::new())).await.ok();
        socket
            .send(close_message(CloseCode::Normal, "bye"))
            .await
            .ok();
        assert_eq!(b.recv().await, Some(TunnelFrame::Text("hello".into())));
        assert_eq!(b.recv().await, Some(TunnelFrame::Ping));
        assert_eq!(
            b.recv().await,
            Some(TunnelFrame::Close {
                code: 1000,
                reason: "bye".into()
            })
        );
        b.send(TunnelFrame::Lost).await.ok();
        assert!(socket.next().await.is_none());
    }
}
