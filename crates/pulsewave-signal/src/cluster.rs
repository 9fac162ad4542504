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
use crate::outbound::encode;
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
    match cluster.place_room(room, !cluster.is_draining()).await {
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

/// Carries one client's WebSocket to the room's owner until either side
/// closes. When the tunnel dies (owner node gone, Redis connection lost) the
/// client gets `{"type":"disconnected","reason":"migration"}` and is closed,
/// so that it reconnects and its room is placed again.
pub(crate) async fn relay<S>(ws: S, end: TunnelEnd, mut shutdown: watch::Receiver<bool>)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let peer = end.peer_node().to_owned();
    let (tx, mut rx) = end.into_channels();
    let (mut sink, mut stream) = ws.split();
    shutdown.mark_changed();
    let ended = loop {
        tokio::select! {
            incoming = stream.next() => {
                let frame = match incoming {
                    Some(Ok(Message::Text(t))) => TunnelFrame::Text(t.to_string()),
                    Some(Ok(Message::Binary(_))) => TunnelFrame::Binary,
                    Some(Ok(Message::Pong(_))) => TunnelFrame::Pong,
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1000, String::new()));
                        break RelayEnd::ClientGone(code, reason);
                    }
                    Some(Err(WsError::Capacity(e))) => {
                        let error = ServerMessage::error(ErrorCode::MessageTooLarge, format!("message too large: {e}"));
                        let _ = sink.send(Message::Text(encode(&error, None))).await;
                        let _ = sink.send(close_message(CloseCode::Size, "message too large")).await;
                        break RelayEnd::ClientGone(1009, "message too large".into());
                    }
                    Some(Err(_)) | None => break RelayEnd::ClientGone(1001, "client gone".into()),
                };
                if tx.send(frame).await.is_err() {
                    break RelayEnd::Lost;
                }
            }
            frame = rx.recv() => match frame {
                Some(TunnelFrame::Text(t)) => {
                    if sink.send(Message::text(t)).await.is_err() {
                        break RelayEnd::ClientGone(1001, "client gone".into());
                    }
                }
                Some(TunnelFrame::Ping) => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        break RelayEnd::ClientGone(1001, "client gone".into());
                    }
                }
                Some(TunnelFrame::Pong | TunnelFrame::Binary) => {}
                Some(TunnelFrame::Close { code, reason }) => {
                    let _ = sink.send(close_message(CloseCode::from(code), &reason)).await;
                    break RelayEnd::OwnerClosed;
                }
                Some(TunnelFrame::Lost) | None => break RelayEnd::Lost,
            },
            Ok(()) = shutdown.changed() => {
                if *shutdown.borrow_and_update() {
                    break RelayEnd::Shutdown;
                }
            }
        }
    };
    match ended {
        RelayEnd::ClientGone(code, reason) => {
            let _ = tx.send(TunnelFrame::Close { code, reason }).await;
        }
        RelayEnd::OwnerClosed => {}
        RelayEnd::Lost => {
            info!(owner = %peer, "tunnel to the room's node lost; telling the client to reconnect");
            let _ = sink.send(disconnected(DisconnectReason::Migration)).await;
            let _ = sink.send(close_message(CloseCode::Away, "migration")).await;
        }
        RelayEnd::Shutdown => {
            let _ = sink
                .send(disconnected(DisconnectReason::ServerShutdown))
                .await;
            let _ = sink
                .send(close_message(CloseCode::Away, "server shutdown"))
                .await;
            let _ = tx
                .send(TunnelFrame::Close {
                    code: 1001,
                    reason: "relay shutting down".into(),
                })
                .await;
        }
    }
    let _ = sink.close().await;
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
            let _ = end
                .send(TunnelFrame::Close {
                    code: 1008,
                    reason: format!("invalid token: {reason}"),
                })
                .await;
            continue;
        }
        if shared.is_shutting_down() {
            let _ = end
                .send(TunnelFrame::Text(
                    encode(
                        &ServerMessage::Disconnected {
                            reason: DisconnectReason::ServerShutdown,
                        },
                        None,
                    )
                    .to_string(),
                ))
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
