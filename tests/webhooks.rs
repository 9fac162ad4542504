//! Webhooks: LiveKit's events, signed as LiveKit signs them, retried, in
//! order per room, with stable ids. The Node side (`WebhookReceiver` of
//! livekit-server-sdk) is checked in `web/test/admin-e2e.mjs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pulsewave_auth::{TokenVerifier, verify_webhook};
use pulsewave_tests::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the receiver got: the Authorization header and the body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// A webhook receiver on 127.0.0.1 that fails its first `fail_first`
/// requests with 503.
async fn receiver(fail_first: usize) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let seen = Arc::new(Mutex::new(0usize));
    let got2 = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let got = got2.clone();
            let seen = seen.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let got = got.clone();
                    let seen = seen.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let ctype = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let n = {
                            let mut s = seen.lock().unwrap();
                            *s += 1;
                            *s
                        };
                        got.lock().unwrap().push((auth, ctype, body));
                        let status = if n <= fail_first { 503 } else { 200 };
                        let mut res = http::Response::new(Full::new(Bytes::new()));
                        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(res)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, got)
}

fn events(got: &Received) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
        .collect()
}

#[tokio::test]
async fn room_and_participant_events_are_signed_ordered_and_retried() {
    let (addr, got) = receiver(1).await;
    let server = TestServer::start_with(|c| {
        c.webhook_urls = vec![format!("http://{addr}/hook")];
    })
    .await;
    let (alice, _) = server.join("alice", "hooked").await;
    let (bob, _) = server.join("bob", "hooked").await;
    bob.close().await;
    alice.close().await;
    // The room closes when empty (300 ms in tests): room_finished ends it.
    let received = eventually("room_finished arrives", EVENTUALLY, async || {
        let e = events(&got);
        e.iter().any(|e| e["event"] == "room_finished").then_some(e)
    })
    .await;

    // The first POST failed (503) and was retried with the same id and body.
    assert_eq!(received[0]["event"], "room_started");
    assert_eq!(received[0], received[1], "the retry is the same event");
    let delivered = &received[1..];
    let names: Vec<String> = delivered
        .iter()
        .map(|e| {
            let who = e["participant"]["identity"].as_str().unwrap_or("");
            format!("{} {who}", e["event"].as_str().unwrap())
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "room_started",
            "participant_joined alice",
            "participant_joined bob",
            "participant_left bob",
            "participant_left alice",
            "room_finished"
        ]
    );
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("EV_")));
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "ids are unique");
    for e in delivered {
        assert_eq!(e["room"]["name"], "hooked");
        assert!(e["createdAt"].as_str().unwrap().parse::<u64>().unwrap() > 1_700_000_000);
    }
    assert_eq!(delivered[1]["participant"]["state"], "ACTIVE");
    assert_eq!(delivered[3]["participant"]["state"], "DISCONNECTED");

    // Each POST is signed as LiveKit signs it: a bare JWT of the API key
    // whose sha256 claim is the body's.
    let verifier = TokenVerifier::new(KEY, SECRET);
    for (auth, ctype, body) in got.lock().unwrap().iter() {
        assert_eq!(ctype, "application/webhook+json");
        assert!(!auth.starts_with("Bearer"));
        verify_webhook(&verifier, auth, body).unwrap();
        assert!(verify_webhook(&verifier, auth, b"{}").is_err());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_dead_receiver_never_blocks_the_room() {
    // Nothing listens on this port: every POST fails and is retried in the
    // background while the room goes on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = TestServer::start_with(|c| {
        c.webhook_urls = vec![format!("http://{dead}/hook")];
    })
    .await;
    let (mut alice, _) = server.join("alice", "busy").await;
    let (mut bob, _) = server.join("bob", "busy").await;
    alice.wait_for("participant-joined").await;
    // A request through the room's task is answered at once.
    alice
        .send(json!({"type": "publish-data", "kind": "reliable", "data": "hi", "requestId": 1}))
        .await;
    let sent = tokio::time::timeout(Duration::from_secs(2), alice.wait_for("data-sent"))
        .await
        .expect("the room answers at once");
    assert_eq!(sent["requestId"], 1);
    assert_eq!(bob.wait_for("data").await["data"], "hi");
    let metrics = metrics_text(server.addr).await;
    assert!(
        metrics.contains("pulsewave_webhooks_failed_total"),
        "{metrics}"
    );
    server.shutdown().await;
}
