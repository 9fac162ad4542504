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
    receiver_on(fail_first, None).await
}

/// A CA and a certificate for `localhost` signed by it: the CA's PEM file
/// (for `WEBHOOK_CA_FILE`) and the receiver's TLS configuration.
fn test_ca() -> (std::path::PathBuf, Arc<tokio_rustls::rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls;
    // One folder per call: two CAs must not share a file.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pw-webhook-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_file, Arc::new(config))
}

/// [`receiver`], over TLS with `tls`.
async fn receiver_on(
    fail_first: usize,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (SocketAddr, Received) {
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
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
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

#[tokio::test]
async fn https_receivers_are_reached_and_their_certificate_checked() {
    let (ca_file, tls) = test_ca();
    let (addr, got) = receiver_on(0, Some(tls)).await;
    let url = format!("https://localhost:{}/hook", addr.port());
    let server = TestServer::start_with(|c| {
        c.webhook_urls = vec![url.clone()];
        c.webhook_ca_file = Some(ca_file.clone());
    })
    .await;
    let (alice, _) = server.join("alice", "secure").await;
    let received = eventually(
        "participant_joined arrives over https",
        EVENTUALLY,
        async || {
            let e = events(&got);
            e.iter()
                .any(|e| e["event"] == "participant_joined")
                .then_some(e)
        },
    )
    .await;
    assert_eq!(received[0]["event"], "room_started");
    let verifier = TokenVerifier::new(KEY, SECRET);
    for (auth, _, body) in got.lock().unwrap().iter() {
        verify_webhook(&verifier, auth, body).unwrap();
    }
    alice.close().await;
    server.shutdown().await;

    // Without the CA the receiver's certificate is not trusted: nothing is
    // delivered (each attempt fails the TLS handshake and is counted).
    let (_, tls) = test_ca();
    let (addr, got) = receiver_on(0, Some(tls)).await;
    let server = TestServer::start_with(|c| {
        c.webhook_urls = vec![format!("https://localhost:{}/hook", addr.port())];
        c.webhook_ca_file = Some(ca_file.clone());
    })
    .await;
    let (alice, _) = server.join("alice", "untrusted").await;
    eventually("failed deliveries are counted", EVENTUALLY, async || {
        let text = metrics_text(server.addr).await;
        text.lines()
            .any(|l| {
                l.starts_with("pulsewave_webhooks_failed_total")
                    && l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) > Some(0)
            })
            .then_some(())
    })
    .await;
    assert!(
        got.lock().unwrap().is_empty(),
        "delivered to an untrusted receiver"
    );
    alice.close().await;
    server.shutdown().await;

    // A CA file that does not exist stops the server at start.
    let mut config = pulsewave_signal::ServerConfig::dev(0, KEY, SECRET);
    config.webhook_urls = vec!["https://localhost:1/hook".into()];
    config.webhook_ca_file = Some("/nonexistent/ca.pem".into());
    assert!(
        pulsewave_signal::WebSocketServer::new(config)
            .start()
            .await
            .is_err(),
        "a missing WEBHOOK_CA_FILE is refused"
    );
}

#[tokio::test]
async fn a_participant_whose_media_never_connects_is_reported_aborted() {
    let (addr, got) = receiver(0).await;
    let server = TestServer::start_with(|c| {
        c.webhook_urls = vec![format!("http://{addr}/hook")];
    })
    .await;
    // Bob only signals (no transport): his leaving is a plain leave.
    let (bob, _) = server.join("bob", "aborted").await;
    // Alice creates a transport and leaves before it ever connects (no ICE
    // and DTLS: a client that failed to get its media through).
    let (mut alice, _) = server.join("alice", "aborted").await;
    alice
        .send(json!({"type": "create-transport", "direction": "recv", "requestId": "t"}))
        .await;
    alice.wait_for("transport-created").await;
    alice.close().await;
    eventually("alice's participant_left arrives", EVENTUALLY, async || {
        events(&got)
            .iter()
            .any(|e| e["event"] == "participant_left")
            .then_some(())
    })
    .await;
    bob.close().await;
    let received = eventually("room_finished arrives", EVENTUALLY, async || {
        let e = events(&got);
        e.iter().any(|e| e["event"] == "room_finished").then_some(e)
    })
    .await;
    let names: Vec<String> = received
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
            "participant_joined bob",
            "participant_joined alice",
            "participant_connection_aborted alice",
            "participant_left alice",
            "participant_left bob",
            "room_finished"
        ]
    );
    let aborted = &received[3];
    assert_eq!(aborted["participant"]["state"], "DISCONNECTED");
    server.shutdown().await;
}
