//! `POST /api/token` and `GET /healthz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pulsewave_auth::TokenVerifier;
use pulsewave_signal::TokenEndpointAuth;
use pulsewave_tests::*;
use serde_json::json;

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn token_endpoint_in_dev_mode_is_open_and_tokens_work() {
    let server = TestServer::start().await;
    let body = json!({"identity":"user-123","name":"John Doe","room":"my-room","metadata":{"role":"host"}});
    let (status, headers, v) = http(
        server.addr,
        "POST",
        "/api/token",
        &[JSON],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["content-type"], "application/json");
    let token = v["token"].as_str().unwrap();
    let claims = TokenVerifier::new(KEY, SECRET).verify(token).unwrap();
    assert_eq!(claims.sub, "user-123");
    assert_eq!(claims.name, "John Doe");
    assert_eq!(claims.video.room.as_deref(), Some("my-room"));
    assert!(claims.video.room_join);
    let meta: serde_json::Value = serde_json::from_str(&claims.metadata).unwrap();
    assert_eq!(meta, json!({"role":"host"}));
    // The token joins the room, and others see the metadata.
    let mut c = Client::connect(&server.ws_url(token), "user-123").await;
    c.send(json!({"type":"join","room":"my-room"})).await;
    let j = c.recv_type("joined").await;
    assert_eq!(j["participant"]["metadata"], r#"{"role":"host"}"#);
    server.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_requires_api_key_outside_dev() {
    let server = TestServer::start_with(|c| c.token_endpoint = TokenEndpointAuth::ApiKey).await;
    let body = json!({"identity":"u","room":"r"}).to_string();
    let (status, headers, v) = http(server.addr, "POST", "/api/token", &[JSON], &body).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert!(v["error"].as_str().unwrap().contains("API_KEY"));
    let wrong = basic(KEY, "wrong-secret");
    let (status, _, _) = http(
        server.addr,
        "POST",
        "/api/token",
        &[JSON, ("authorization", &wrong)],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    let right = basic(KEY, SECRET);
    let (status, _, v) = http(
        server.addr,
        "POST",
        "/api/token",
        &[JSON, ("authorization", &right)],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        TokenVerifier::new(KEY, SECRET)
            .verify(v["token"].as_str().unwrap())
            .is_ok()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_disabled() {
    let server = TestServer::start_with(|c| c.token_endpoint = TokenEndpointAuth::Disabled).await;
    let (status, _, _) = http(
        server.addr,
        "POST",
        "/api/token",
        &[JSON],
        r#"{"identity":"u","room":"r"}"#,
    )
    .await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_bad_requests() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, &str, u16)> = vec![
        ("POST", "{not json", 400),
        ("POST", "", 400),
        ("POST", r#"{"room":"r"}"#, 400),
        ("POST", r#"{"identity":"u"}"#, 400),
        ("POST", r#"{"identity":5,"room":"r"}"#, 400),
        ("POST", r#"{"identity":"","room":"r"}"#, 400),
        ("POST", r#"{"identity":"u","room":"r","admin":true}"#, 400),
        ("GET", "", 405),
        ("DELETE", "", 405),
    ];
    for (method, body, expected) in cases {
        let (status, headers, v) = http(server.addr, method, "/api/token", &[JSON], body).await;
        assert_eq!(status, expected, "{method} {body}: {v}");
        assert_eq!(headers["content-type"], "application/json");
        assert!(v["error"].as_str().unwrap().len() > 3, "{v}");
    }
    let big = format!(
        r#"{{"identity":"u","room":"r","name":"{}"}}"#,
        "n".repeat(20_000)
    );
    let (status, _, _) = http(server.addr, "POST", "/api/token", &[JSON], &big).await;
    assert_eq!(status, 413);
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let server = TestServer::start().await;
    let (status, _, v) = http(server.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok");
    let (status, _, v) = http(server.addr, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
    assert!(v["error"].is_string());
    let (status, _, _) = http(server.addr, "POST", "/healthz", &[], "").await;
    assert_eq!(status, 405);
    // Plain GET on the WebSocket endpoint without an upgrade.
    let (status, _, v) = http(server.addr, "GET", "/", &[], "").await;
    assert_eq!(status, 426);
    assert!(v["error"].as_str().unwrap().contains("WebSocket"));
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_endpoint() {
    let server = TestServer::start().await;
    let (_a, _) = server.join("a", "r").await;
    let (status, headers, _) = http(server.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // The body is text, not JSON: fetch it raw.
    let body = raw_get(server.addr, "/metrics").await;
    for name in [
        "pulsewave_rooms 1",
        "pulsewave_media_workers 1",
        "pulsewave_media_rtp_forwarded_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    server.shutdown().await;

    let server = TestServer::start_with(|c| c.token_endpoint = TokenEndpointAuth::ApiKey).await;
    let (status, _, _) = http(server.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 401);
    let right = basic(KEY, SECRET);
    let (status, _, _) = http(
        server.addr,
        "GET",
        "/metrics",
        &[("authorization", &right)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A server whose media workers stopped says so: `/healthz` fails (so a
/// load balancer takes it out), `/metrics` counts the live workers, and a
/// new room is refused (501) instead of running without media.
#[tokio::test]
async fn dead_media_workers_fail_the_health_check_and_refuse_rooms() {
    let server = TestServer::start().await;
    let (status, _, v) = http(server.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200, "{v}");
    server
        .running
        .as_ref()
        .unwrap()
        .workers()
        .expect("media workers")
        .stop();
    let (status, _, v) = http(server.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "media-workers-down");
    assert_eq!(v["workersAlive"], 0);
    let text = metrics_text(server.addr).await;
    assert!(text.contains("pulsewave_media_workers_alive 0"), "{text}");
    let mut c = server.connect("late", "no-media").await;
    c.send(json!({"type":"join","room":"no-media","requestId":"j"}))
        .await;
    let e = c.wait_for("error").await;
    assert_eq!(e["code"], 501, "{e}");
    assert_eq!(e["requestId"], "j");
    server.shutdown().await;
}
