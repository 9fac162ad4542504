//! The signaling task: owns the WebSocket, correlates requests and replies
//! by `requestId`, turns everything else into events, and keeps the
//! transports in step with `transport-closed` and `track-unsubscribed`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use pulsewave_protocol::{RequestId, ServerMessage, TransportId, decode_server};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::ClientEvent;
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

pub(crate) async fn signaling_task(
    ws: WsStream,
    mut commands: mpsc::Receiver<SignalCommand>,
    sink: EventSink,
    cancel: CancellationToken,
    registry: Registry,
) {
    let (mut write, mut read) = ws.split();
    let mut pending: HashMap<u64, oneshot::Sender<Result<ServerMessage, ClientError>>> =
        HashMap::new();
    let mut overflow: VecDeque<ClientEvent> = VecDeque::new();
    let mut reason: Option<String> = None;
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
                            reason = Some(e.to_string());
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
                Some(SignalCommand::Close) | None => {
                    let _ = write.send(Message::Close(None)).await;
                    // Keep reading until the server's close or `left`.
                }
            },
            msg = read.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    on_text(&text, &mut pending, &sink, &mut overflow, &registry);
                }
                Some(Ok(Message::Close(frame))) => {
                    reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    reason = Some(e.to_string());
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
    // Stop the transports, release the socket, then deliver the rest.
    cancel.cancel();
    drop(write);
    drop(read);
    overflow.push_back(ClientEvent::Closed { reason });
    for e in overflow {
        if sink.tx.send(e).await.is_err() {
            break;
        }
    }
}

fn on_text(
    text: &str,
    pending: &mut HashMap<u64, oneshot::Sender<Result<ServerMessage, ClientError>>>,
    sink: &EventSink,
    overflow: &mut VecDeque<ClientEvent>,
    registry: &Registry,
) {
    match decode_server(text) {
        Ok(frame) => match frame.request_id {
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
                sink.push(overflow, ClientEvent::Signal(frame.message));
            }
        },
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
