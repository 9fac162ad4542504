//! The tokio `Client` against the real signaling server on 127.0.0.1:
//! join, request correlation, error mapping, events, leave.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{Client, ClientError, ClientEvent};
use pulsewave_protocol::{ClientMessage, DataKind, ErrorCode, ServerMessage};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};
use serde_json::json;

const KEY: &str = "clientkey";
const SECRET: &str = "clientsecret-0123456789";
const WAIT: Duration = Duration::from_secs(5);

async fn server() -> RunningServer {
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.empty_room_timeout = Duration::from_millis(300);
    WebSocketServer::new(config).start().await.unwrap()
}

fn token(identity: &str, room: &str) -> String {
    let mut t = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: identity.into(),
            name: Some(format!("{identity} name")),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(room.into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    });
    t.to_jwt().unwrap()
}

fn url(s: &RunningServer) -> String {
    format!("ws://{}", s.local_addr())
}

async fn joined(s: &RunningServer, identity: &str, room: &str) -> Client {
    let mut c = Client::connect(&url(s), &token(identity, room))
        .await
        .unwrap();
    c.join(room).await.unwrap();
    c
}

#[tokio::test]
async fn join_returns_room_participant_and_router_capabilities() {
    let s = server().await;
    let mut alice = Client::connect(&url(&s), &token("alice", "r1"))
        .await
        .unwrap();
    assert!(alice.joined().is_none());
    let j = alice.join("r1").await.unwrap();
    assert_eq!(j.room.name, "r1");
    assert_eq!(j.participant.identity, "alice");
    assert!(j.room.participants.is_empty());
    assert_eq!(alice.joined().unwrap().participant.sid, j.participant.sid);

    let mut bob = Client::connect(&url(&s), &token("bob", "r1"))
        .await
        .unwrap();
    let jb = bob.join("r1").await.unwrap();
    assert_eq!(jb.room.participants.len(), 1);
    assert_eq!(jb.room.participants[0].identity, "alice");

    // Alice hears about Bob as an unsolicited event.
    let who = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantJoined { participant }) => {
                Some(participant.identity)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(who, "bob");
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn bad_token_is_rejected_with_http_401() {
    let s = server().await;
    let err = Client::connect(&url(&s), "not-a-jwt").await.unwrap_err();
    match err {
        ClientError::Rejected { status, body } => {
            assert_eq!(status, 401);
            assert!(body.contains("invalid token"), "{body}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn error_replies_map_to_server_errors_with_codes() {
    let s = server().await;
    let mut c = Client::connect(&url(&s), &token("carol", "r2"))
        .await
        .unwrap();
    // Before join: 205.
    let err = c
        .mute(&pulsewave_protocol::ProducerId::new("PR_nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotJoined), "{err}");
    // Wrong room: 302.
    let err = c.join("other-room").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomMismatch), "{err}");
    c.join("r2").await.unwrap();
    // Twice: 206.
    let err = c.join("r2").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyJoined), "{err}");
    // Unknown producer: 403 (or 303).
    let err = c
        .mute(&pulsewave_protocol::ProducerId::new("PR_nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Server { code, .. }
            if code == ErrorCode::ProducerNotFound || code == ErrorCode::NotOwner),
        "{err}"
    );
    // The client is still usable after errors.
    assert!(c.ping().await.unwrap() > 0);
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn concurrent_requests_get_their_own_replies() {
    let s = server().await;
    let c = joined(&s, "dave", "r3").await;
    let c = std::sync::Arc::new(c);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.ping().await.map(|_| ())
            } else {
                // An error reply in the middle must go to its own request.
                match c
                    .request(ClientMessage::Unsubscribe {
                        consumer_id: pulsewave_protocol::ConsumerId::new(format!("CN_{i}")),
                    })
                    .await
                {
                    Err(ClientError::Server { code, .. }) => {
                        assert_eq!(code, ErrorCode::ConsumerNotFound);
                        Ok(())
                    }
                    other => panic!("expected error 404, got {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn data_messages_are_acknowledged_and_delivered_as_events() {
    let s = server().await;
    let alice = joined(&s, "alice", "r4").await;
    let mut bob = joined(&s, "bob", "r4").await;
    alice
        .publish_data(DataKind::Reliable, json!({"type": "chat", "message": "hi"}))
        .await
        .unwrap();
    let (from, data) = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::Data {
                participant_identity,
                data,
                ..
            }) => Some((participant_identity, data)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(from, "alice");
    assert_eq!(data["message"], "hi");

    // To an identity that is not there: 103, nothing sent.
    let err = alice
        .publish_data_to(DataKind::Lossy, json!(1), vec!["nobody".into()], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ParticipantNotFound));
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn leave_ends_with_a_closed_event_and_requests_fail_afterwards() {
    let s = server().await;
    let mut alice = joined(&s, "alice", "r5").await;
    let mut bob = joined(&s, "bob", "r5").await;
    bob.leave().await.unwrap();
    let reason = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Closed { reason } => Some(reason),
            _ => None,
        })
        .await
        .unwrap();
    assert!(reason.unwrap_or_default().starts_with("1000"));
    // The channel ends after Closed.
    assert!(
        tokio::time::timeout(WAIT, bob.next_event())
            .await
            .unwrap()
            .is_none()
    );
    assert!(bob.is_closed());
    assert!(matches!(bob.ping().await, Err(ClientError::Closed)));

    let who = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantLeft { participant }) => {
                Some(participant.identity)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(who, "bob");
    s.shutdown(WAIT).await;
}

/// A dropped client is a dropped socket: its participant waits for a
/// resume for `RESUME_GRACE` (here 200 ms, short for the test), then the
/// others see it leave.
#[tokio::test]
async fn dropping_a_client_closes_its_session() {
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.resume_grace = Duration::from_millis(200);
    let s = WebSocketServer::new(config).start().await.unwrap();
    let mut alice = joined(&s, "alice", "r6").await;
    let bob = joined(&s, "bob", "r6").await;
    drop(bob);
    alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantLeft { .. }) => Some(()),
            _ => None,
        })
        .await
        .unwrap();
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn server_shutdown_is_an_event_then_closed() {
    let s = server().await;
    let mut alice = Client::builder()
        .no_reconnect()
        .connect(&url(&s), &token("alice", "r7"))
        .await
        .unwrap();
    alice.join("r7").await.unwrap();
    s.shutdown(WAIT).await;
    let reason = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::Disconnected { reason }) => Some(reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, pulsewave_protocol::DisconnectReason::ServerShutdown);
    alice
        .wait_for(WAIT, |e| {
            matches!(e, ClientEvent::Closed { .. }).then_some(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn publishing_before_join_is_not_joined() {
    let s = server().await;
    let c = Client::connect(&url(&s), &token("erin", "r8"))
        .await
        .unwrap();
    assert!(matches!(
        c.publish_audio().await,
        Err(ClientError::NotJoined)
    ));
    assert!(matches!(
        c.subscribe(&pulsewave_protocol::ProducerId::new("PR_x"))
            .await,
        Err(ClientError::NotJoined)
    ));
    s.shutdown(WAIT).await;
}

/// A WebSocket server that answers every request with the frames
/// `reply(request)` returns.
async fn fake_server(
    reply: impl Fn(&serde_json::Value) -> Vec<String> + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = std::sync::Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        for r in reply(&v) {
                            let _ = ws.send(Message::text(r)).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn requests_time_out_when_the_server_is_silent() {
    let addr = fake_server(|_| Vec::new()).await;
    let c = Client::builder()
        .request_timeout(Duration::from_millis(200))
        .connect(&format!("ws://{addr}"), "t")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn replies_are_matched_by_request_id_and_others_are_events() {
    // Answers out of order: an unsolicited event first, then the reply.
    let addr = fake_server(|v| {
        let id = v["requestId"].as_u64().unwrap();
        match v["type"].as_str().unwrap() {
            "ping" => vec![
                r#"{"type":"disconnected","reason":"migration"}"#.to_owned(),
                format!(
                    r#"{{"type":"pong","timestamp":{},"requestId":{id}}}"#,
                    1000 + id
                ),
            ],
            "mute" => vec![format!(r#"{{"type":"bogus","requestId":{id}}}"#)],
            "leave" => vec![format!(
                r#"{{"type":"error","code":500,"message":"boom","requestId":{id}}}"#
            )],
            _ => Vec::new(),
        }
    })
    .await;
    let mut c = Client::connect(&format!("ws://{addr}"), "t").await.unwrap();
    assert_eq!(c.ping().await.unwrap(), 1001);
    assert_eq!(c.ping().await.unwrap(), 1002);
    // An undecodable reply fails its request as a protocol error.
    let err = c
        .mute(&pulsewave_protocol::ProducerId::new("PR_1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    // An error reply keeps its message.
    match c.leave().await.unwrap_err() {
        ClientError::Server { code, message } => {
            assert_eq!(code, ErrorCode::InternalError);
            assert_eq!(message, "boom");
        }
        other => panic!("{other:?}"),
    }
    // The unsolicited messages are events; none of the replies leaked.
    for _ in 0..2 {
        let e = c.next_event().await.unwrap();
        assert_eq!(
            e,
            ClientEvent::Signal(ServerMessage::Disconnected {
                reason: pulsewave_protocol::DisconnectReason::Migration
            })
        );
    }
    // Nothing else is queued: the next event is the one a later ping brings.
    c.ping().await.unwrap();
    assert_eq!(
        c.next_event().await.unwrap(),
        ClientEvent::Signal(ServerMessage::Disconnected {
            reason: pulsewave_protocol::DisconnectReason::Migration
        })
    );
}
