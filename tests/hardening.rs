//! The attacks of the security review (one valid token each), over real
//! sockets: each test reproduces one and checks what a user would see.
//!
//! Tests about time set the server's durations short through its
//! configuration (named in each test) and wait for the event with a bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulsewave_auth::{AccessToken, AccessTokenOptions, TokenVerifier, VideoGrant};
use pulsewave_tests::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(c: &mut Client, code: u64) -> Value {
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], code, "unexpected error {e}");
    e
}

fn vp8_params(ssrc: u32) -> Value {
    json!({
        "mid": "0",
        "codecs": [
            {"mimeType":"video/VP8","payloadType":101,"clockRate":90000,
             "rtcpFeedback":[{"type":"nack"},{"type":"nack","parameter":"pli"}]},
            {"mimeType":"video/rtx","payloadType":102,"clockRate":90000,"parameters":{"apt":101}}
        ],
        "headerExtensions": [{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1}],
        "encodings": [{"ssrc": ssrc, "rtx": {"ssrc": ssrc + 1}}],
        "rtcp": {"cname": "test"}
    })
}

async fn transport(c: &mut Client, direction: &str) -> Value {
    c.send(json!({"type":"create-transport","direction":direction,"requestId":direction}))
        .await;
    let t = c.wait_for("transport-created").await;
    assert_eq!(t["requestId"], direction);
    t["transport"].clone()
}

const FINGERPRINT: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

/// A send transport, connected (DTLS parameters given), ready for `publish`.
async fn send_transport(c: &mut Client) {
    let t = transport(c, "send").await;
    c.send(json!({"type":"connect-transport","transportId":t["id"],"requestId":"ct",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}}))
        .await;
    assert_eq!(c.wait_for("transport-connected").await["requestId"], "ct");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_full(
    identity: &str,
    room: &str,
    metadata: &str,
    ttl: Duration,
    f: impl FnOnce(&mut VideoGrant),
) -> String {
    let mut t = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: identity.into(),
            name: Some(format!("{identity} name")),
            metadata: Some(metadata.into()),
            ttl: Some(ttl),
        },
    );
    let mut grant = VideoGrant {
        room: Some(room.into()),
        room_join: true,
        ..Default::default()
    };
    f(&mut grant);
    t.add_grant(grant);
    t.to_jwt().unwrap()
}

async fn join_with(
    server: &TestServer,
    identity: &str,
    room: &str,
    token: &str,
) -> (Client, Value) {
    let mut c = Client::connect(&server.ws_url(token), identity).await;
    c.send(json!({"type":"join","room":room,"requestId":"join"}))
        .await;
    let joined = c.recv_type("joined").await;
    (c, joined)
}

// ---- 2. A client that stops reading ------------------------------------

/// Floods a room where `slow` does not read; `fast` must get every message
/// and see `slow` leave within `bound`.
async fn flood_past_a_slow_reader(server: &TestServer, bound: Duration) {
    let mut slow =
        Client::connect_small_buffer(&server.ws_url(&token("slow", "r")), server.addr, "slow")
            .await;
    slow.send(json!({"type":"join","room":"r"})).await;
    slow.recv_type("joined").await;
    let (mut fast, _) = server.join("fast", "r").await;
    let (mut sender, _) = server.join("sender", "r").await;
    fast.recv_type("participant-joined").await;
    // From here on `slow` reads nothing.
    let payload = "x".repeat(30_000);
    let n = 300; // 9 MB, more than the kernel buffers of both ends hold.
    let started = Instant::now();
    let flood = async {
        for i in 0..n {
            sender
                .send(json!({"type":"publish-data","kind":"reliable","data":{"i":i,"p":payload}}))
                .await;
        }
    };
    let mut got = 0;
    let mut slow_left = None;
    let receive = async {
        while got < n || slow_left.is_none() {
            let m = fast.next().await.expect("fast was disconnected");
            match m["type"].as_str() {
                Some("data") => {
                    assert_eq!(m["data"]["i"], got, "fast lost or reordered data");
                    got += 1;
                }
                Some("participant-left") if m["participant"]["identity"] == "slow" => {
                    slow_left = Some(started.elapsed());
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(bound + Duration::from_secs(20), async {
        tokio::join!(flood, receive)
    })
    .await
    .expect("the room stalled: fast did not get every message and slow's departure");
    let left = slow_left.unwrap();
    assert!(
        left <= bound,
        "slow was disconnected after {left:?}, later than {bound:?}"
    );
    assert_eq!(got, n);
    assert!(limit_hits(server.addr, "slow_client").await >= 1);
    // The slow client's socket is closed by the server.
    assert!(slow.closed_within(Duration::from_secs(10)).await);
}

/// WS_SEND_TIMEOUT (1 s here): a write that cannot complete for 1 s
/// disconnects the client. The queue is made large so that only the timeout
/// can fire.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_send_timeout() {
    let server = TestServer::start_with(|c| {
        c.limits.send_timeout = Duration::from_secs(1);
        c.limits.outbound_queue = 100_000;
        c.limits.messages_per_second = 10_000;
        c.limits.message_burst = 10_000;
    })
    .await;
    flood_past_a_slow_reader(&server, Duration::from_secs(8)).await;
    server.shutdown().await;
}

/// OUTBOUND_QUEUE (64 here): a client whose queue overflows is disconnected
/// at once, even when a write would wait much longer (WS_SEND_TIMEOUT 60 s).
#[tokio::test]
async fn a_client_whose_queue_overflows_is_disconnected() {
    let server = TestServer::start_with(|c| {
        c.limits.send_timeout = Duration::from_secs(60);
        c.limits.outbound_queue = 64;
        c.limits.messages_per_second = 10_000;
        c.limits.message_burst = 10_000;
    })
    .await;
    flood_past_a_slow_reader(&server, Duration::from_secs(8)).await;
    server.shutdown().await;
}

// ---- 6. Every frame is rate-limited ---------------------------------------

/// Sends `ping` requests until one is answered; returns everything received.
async fn drain_until_pong(c: &mut Client) -> Vec<Value> {
    let mut seen = Vec::new();
    for attempt in 0..100 {
        c.send(json!({"type":"ping","requestId":format!("probe-{attempt}")}))
            .await;
        // The answer to the probe, or errors before it; paced by the wait.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        loop {
            let Ok(m) = tokio::time::timeout_at(deadline, c.next()).await else {
                break;
            };
            let m = m.expect("socket closed");
            if m["type"] == "pong" {
                return seen;
            }
            seen.push(m);
        }
    }
    panic!("never answered: {seen:?}");
}

#[tokio::test]
async fn binary_frames_are_rate_limited_like_text() {
    // RATE_LIMIT 10/s, burst 10.
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 10;
        c.limits.message_burst = 10;
    })
    .await;
    let (mut c, _) = server.join("a", "r").await;
    for _ in 0..2000 {
        c.send_raw(Message::binary(vec![0u8; 16])).await;
    }
    let seen = drain_until_pong(&mut c).await;
    let unsupported = seen.iter().filter(|m| m["code"] == 207).count();
    let limited = seen.iter().filter(|m| m["code"] == 204).count();
    assert!(
        unsupported <= 40,
        "{unsupported} binary frames were answered (burst 10)"
    );
    assert!(limited >= 1, "no 204 for a binary flood: {seen:?}");
    assert!(limit_hits(server.addr, "rate").await >= 1900);
    server.shutdown().await;
}

#[tokio::test]
async fn ping_and_pong_frames_count_against_the_rate() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 10;
        c.limits.message_burst = 10;
    })
    .await;
    let (mut c, _) = server.join("a", "r").await;
    for _ in 0..500 {
        c.send_raw(Message::Ping(vec![1u8; 8].into())).await;
        c.send_raw(Message::Pong(vec![1u8; 8].into())).await;
    }
    let seen = drain_until_pong(&mut c).await;
    assert!(
        seen.iter().any(|m| m["code"] == 204),
        "a control-frame flood was not rate-limited: {seen:?}"
    );
    assert!(limit_hits(server.addr, "rate").await >= 900);
    server.shutdown().await;
}

// ---- 8. An oversized message's requestId ------------------------------

#[tokio::test]
async fn an_oversized_message_is_answered_with_its_request_id() {
    // MAX_MESSAGE_SIZE 1024 (hard limit 4096).
    let server = TestServer::start_with(|c| c.limits.max_message_size = 1024).await;
    let (mut c, _) = server.join("a", "r").await;
    let big = "x".repeat(2000);
    c.send_raw(Message::text(format!(
        r#"{{"requestId":"big-1","type":"publish-data","kind":"reliable","data":"{big}"}}"#
    )))
    .await;
    let e = expect_error(&mut c, 203).await;
    assert_eq!(e["requestId"], "big-1", "{e}");
    // Numeric ids too, and after other small fields.
    c.send_raw(Message::text(format!(
        r#"{{"type":"publish-data","kind":"reliable","requestId":77,"data":"{big}"}}"#
    )))
    .await;
    assert_eq!(expect_error(&mut c, 203).await["requestId"], 77);
    // A requestId past the first MAX_MESSAGE_SIZE bytes is not looked for.
    c.send_raw(Message::text(format!(
        r#"{{"type":"publish-data","data":"{big}","requestId":"late"}}"#
    )))
    .await;
    assert!(expect_error(&mut c, 203).await.get("requestId").is_none());
    // The session goes on.
    c.send(json!({"type":"ping","requestId":1})).await;
    c.recv_type("pong").await;
    server.shutdown().await;
}

// ---- 7. Tokens expire; sessions get fresh ones ------------------------

#[tokio::test]
async fn join_after_the_token_expired_is_refused() {
    // Leeway 0 (the default 10 s would make the test wait 10 s more).
    let server = TestServer::start_with(|c| c.token_leeway = Duration::ZERO).await;
    let t = token_full("late", "r", "", Duration::from_secs(1), |_| {});
    let exp = TokenVerifier::new(KEY, SECRET).verify(&t).unwrap().exp;
    let mut c = Client::connect(&server.ws_url(&t), "late").await;
    // The scenario: the socket stays open past the token's expiry. About
    // time, on the real wall clock (a token's `exp` is whole UNIX seconds
    // that the server compares with the system time) and the shortest
    // lifetime, 1 s: this waits for the clock to pass `exp`, nothing else.
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.send(json!({"type":"join","room":"r","requestId":"j"}))
        .await;
    let e = expect_error(&mut c, 300).await;
    assert_eq!(e["requestId"], "j");
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    // Nobody joined.
    let (_b, joined) = server.join("b", "r").await;
    assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn participants_are_sent_fresh_tokens_that_work_for_reconnecting() {
    // TOKEN_REFRESH_INTERVAL 300 ms.
    let server =
        TestServer::start_with(|c| c.token_refresh_interval = Duration::from_millis(300)).await;
    let original = token_full(
        "alice",
        "r",
        "{\"role\":\"host\"}",
        Duration::from_secs(3600),
        |g| g.can_publish_data = Some(false),
    );
    let verifier = TokenVerifier::new(KEY, SECRET);
    let before = verifier.verify(&original).unwrap();
    let (mut a, _) = join_with(&server, "alice", "r", &original).await;
    let refresh = a.wait_for("token-refresh").await;
    assert!(refresh.get("requestId").is_none());
    let fresh = refresh["token"].as_str().unwrap().to_owned();
    let after = verifier.verify(&fresh).unwrap();
    assert_eq!(after.sub, before.sub);
    assert_eq!(after.name, before.name);
    assert_eq!(after.metadata, before.metadata);
    assert_eq!(after.video, before.video);
    assert!(
        after.exp >= before.exp,
        "a refresh never shortens the token"
    );
    // And again, on the timer.
    let again = a.wait_for("token-refresh").await;
    assert!(again["token"].is_string());
    // A reconnect with the fresh token joins (and replaces the old session).
    let (_a2, joined) = join_with(&server, "alice", "r", &fresh).await;
    assert_eq!(joined["participant"]["permission"]["canPublishData"], false);
    assert_eq!(
        a.wait_for("disconnected").await["reason"],
        "duplicate-identity"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_short_token_is_refreshed_before_half_its_lifetime() {
    // Interval 1 h; the token lives 4 s, so the refresh comes at about 2 s.
    let server =
        TestServer::start_with(|c| c.token_refresh_interval = Duration::from_secs(3600)).await;
    let t = token_full("bob", "r", "", Duration::from_secs(4), |_| {});
    let exp = TokenVerifier::new(KEY, SECRET).verify(&t).unwrap().exp;
    let (mut b, _) = join_with(&server, "bob", "r", &t).await;
    let refresh = b.wait_for("token-refresh").await;
    assert!(
        unix_now() <= exp,
        "the refresh came after the token expired"
    );
    let fresh = TokenVerifier::new(KEY, SECRET)
        .verify(refresh["token"].as_str().unwrap())
        .unwrap();
    assert!(fresh.exp >= unix_now() + 3600);
    server.shutdown().await;
}

// ---- 5. Hidden participants -----------------------------------------------

#[tokio::test]
async fn hidden_participants_cannot_be_detected() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("alice", "r").await;
    let ht = token_with("ghost", "r", |g| g.hidden = true);
    let (mut h, hj) = join_with(&server, "ghost", "r", &ht).await;
    assert_eq!(hj["participant"]["permission"]["hidden"], true);
    assert_eq!(hj["participant"]["permission"]["canPublish"], false);
    assert_eq!(hj["participant"]["permission"]["canPublishData"], false);
    // The hidden participant sees the room.
    assert_eq!(hj["room"]["participants"][0]["identity"], "alice");

    // Naming the hidden participant is the same as naming nobody.
    a.send(json!({"type":"publish-data","kind":"reliable","data":1,"destinationIdentities":["ghost"],"requestId":"d1"}))
        .await;
    assert_eq!(expect_error(&mut a, 103).await["requestId"], "d1");
    a.send(json!({"type":"publish-data","kind":"reliable","data":1,"destinationIdentities":["nobody"],"requestId":"d2"}))
        .await;
    assert_eq!(expect_error(&mut a, 103).await["requestId"], "d2");
    // It cannot send data, publish, or open a send transport.
    for (m, rid) in [
        (
            json!({"type":"publish-data","kind":"reliable","data":"boo"}),
            "h1",
        ),
        (json!({"type":"create-transport","direction":"send"}), "h2"),
        (
            json!({"type":"publish","kind":"video","rtpParameters":vp8_params(1000)}),
            "h3",
        ),
        (
            json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":1}}),
            "h4",
        ),
    ] {
        let mut m = m;
        m["requestId"] = json!(rid);
        h.send(m).await;
        let e = expect_error(&mut h, 301).await;
        assert_eq!(e["requestId"], rid);
        assert!(e["message"].as_str().unwrap().contains("hidden"), "{e}");
    }
    // It receives broadcast data and may open a receive transport.
    a.send(json!({"type":"publish-data","kind":"reliable","data":"hi"}))
        .await;
    let d = h.wait_for("data").await;
    assert_eq!(d["participantIdentity"], "alice");
    h.send(json!({"type":"create-transport","direction":"recv","requestId":"rt"}))
        .await;
    assert_eq!(h.wait_for("transport-created").await["requestId"], "rt");

    // A newcomer's listing and the admin listing do not show it.
    let (b, bj) = server.join("bob", "r").await;
    let listed: Vec<&str> = bj["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["alice"]);
    // Alice's next event is bob's arrival: nothing about ghost came before.
    let ev = a.next().await.unwrap();
    assert_eq!(ev["type"], "participant-joined", "{ev}");
    assert_eq!(ev["participant"]["identity"], "bob");
    let (status, _, rooms) = http(server.addr, "GET", "/api/rooms", &[], "").await;
    assert_eq!(status, 200);
    assert!(!rooms.to_string().contains("ghost"), "{rooms}");
    // It leaves without a trace: alice's next event is bob's departure.
    h.close().await;
    b.close().await;
    let ev = a.next().await.unwrap();
    assert_eq!(ev["type"], "participant-left", "{ev}");
    assert_eq!(ev["participant"]["identity"], "bob");
    server.shutdown().await;
}

// ---- D. Global limits -------------------------------------------------------

#[tokio::test]
async fn a_socket_that_never_joins_is_closed_after_the_join_timeout() {
    // JOIN_TIMEOUT 300 ms.
    let server =
        TestServer::start_with(|c| c.limits.join_timeout = Duration::from_millis(300)).await;
    let mut idle = server.connect("idle", "r").await;
    let started = Instant::now();
    let e = expect_error(&mut idle, 205).await;
    assert!(e["message"].as_str().unwrap().contains("join"), "{e}");
    assert_eq!(idle.closed().await, Some(1008));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(limit_hits(server.addr, "join_timeout").await, 1);
    // A socket that joins in time stays.
    let (mut c, _) = server.join("prompt", "r").await;
    c.send(json!({"type":"ping","requestId":1})).await;
    c.recv_type("pong").await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_per_identity_and_per_ip_are_capped() {
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_identity = 2;
        c.limits.max_connections_per_ip = 3;
    })
    .await;
    let url = |id: &str| server.ws_url(&token(id, "r"));
    let a1 = Client::try_connect(&url("a"), "a", &[]).await.unwrap();
    let _a2 = Client::try_connect(&url("a"), "a", &[]).await.unwrap();
    assert_eq!(
        Client::try_connect(&url("a"), "a", &[]).await.err(),
        Some(429)
    );
    let _b = Client::try_connect(&url("b"), "b", &[]).await.unwrap();
    // Four from 127.0.0.1: refused, and a forged X-Forwarded-For does not help.
    assert_eq!(
        Client::try_connect(&url("c"), "c", &[("x-forwarded-for", "203.0.113.9")])
            .await
            .err(),
        Some(429)
    );
    assert_eq!(limit_hits(server.addr, "connections_per_identity").await, 1);
    assert_eq!(limit_hits(server.addr, "connections_per_ip").await, 1);
    // A closed connection gives its place back (once the server has seen
    // the close: retried until then).
    a1.close().await;
    let _again = eventually(
        "a connection after the closed one gave its place back",
        EVENTUALLY,
        async || match Client::try_connect(&url("c"), "c", &[]).await {
            Ok(c) => Some(c),
            Err(status) => {
                assert_eq!(status, 429);
                None
            }
        },
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let url = |id: &str| server.ws_url(&token(id, "r"));
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    let _a = Client::try_connect(&url("a"), "a", &xff("198.51.100.1"))
        .await
        .unwrap();
    let _b = Client::try_connect(&url("b"), "b", &xff("198.51.100.2"))
        .await
        .unwrap();
    assert_eq!(
        Client::try_connect(&url("c"), "c", &xff("198.51.100.1"))
            .await
            .err(),
        Some(429)
    );
    // A client-written left part is not believed: the proxy's right-most entry counts.
    assert_eq!(
        Client::try_connect(&url("d"), "d", &xff("192.0.2.77, 198.51.100.2"))
            .await
            .err(),
        Some(429)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rooms_per_node_are_capped() {
    let server = TestServer::start_with(|c| c.limits.max_rooms = 2).await;
    let (_a, _) = server.join("a", "r1").await;
    let (_b, _) = server.join("b", "r2").await;
    let mut c = server.connect("c", "r3").await;
    c.send(json!({"type":"join","room":"r3","requestId":"j"}))
        .await;
    let e = expect_error(&mut c, 501).await;
    assert_eq!(e["requestId"], "j");
    assert!(e["message"].as_str().unwrap().contains("MAX_ROOMS"), "{e}");
    // An existing room still takes participants.
    let (_d, joined) = server.join("d", "r1").await;
    assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 1);
    assert_eq!(limit_hits(server.addr, "rooms_per_node").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn participants_per_room_default_and_counter() {
    assert_eq!(pulsewave_signal::Limits::default().max_participants, 500);
    let server = TestServer::start_with(|c| c.limits.max_participants = 1).await;
    let (_a, _) = server.join("a", "r").await;
    let mut b = server.connect("b", "r").await;
    b.send(json!({"type":"join","room":"r"})).await;
    expect_error(&mut b, 101).await;
    assert_eq!(limit_hits(server.addr, "participants_per_room").await, 1);
    server.shutdown().await;
}

// ---- 4. `joined` is bounded -------------------------------------------

#[tokio::test]
async fn the_room_listing_in_joined_is_capped() {
    // MAX_ROOM_LISTING_BYTES 8000; each participant carries 1000 bytes of metadata.
    let max = 8000;
    let server = TestServer::start_with(|c| c.limits.max_room_listing_bytes = max).await;
    let metadata = "m".repeat(1000);
    let mut clients = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let id = format!("p{i}");
        let t = token_full(&id, "r", &metadata, Duration::from_secs(600), |_| {});
        let mut c = Client::connect(&server.ws_url(&t), &id).await;
        c.send(json!({"type":"join","room":"r"})).await;
        let m = c.next().await.unwrap();
        if m["type"] == "error" {
            assert_eq!(m["code"], 101, "{m}");
            refused = Some(i);
            break;
        }
        assert_eq!(m["type"], "joined");
        let listing = m["room"]["participants"].to_string().len();
        assert!(listing <= max, "listing of {listing} bytes");
        clients.push(c);
    }
    let refused = refused.expect("the listing grew without bound");
    assert!((6..=8).contains(&refused), "refused at {refused}");
    assert_eq!(limit_hits(server.addr, "room_listing_bytes").await, 1);
    // Metadata over 4 KiB is refused at join.
    let t = token_full(
        "fat",
        "r2",
        &"m".repeat(5000),
        Duration::from_secs(600),
        |_| {},
    );
    let mut c = Client::connect(&server.ws_url(&t), "fat").await;
    c.send(json!({"type":"join","room":"r2"})).await;
    let e = expect_error(&mut c, 202).await;
    assert!(e["message"].as_str().unwrap().contains("metadata"), "{e}");
    server.shutdown().await;
}

// ---- F. Dev mode on a network address ----------------------------------

#[tokio::test]
async fn an_open_token_endpoint_on_the_network_sends_no_cors_header() {
    let body = r#"{"identity":"x","room":"r"}"#;
    let local = TestServer::start().await;
    let (status, headers, _) = http(local.addr, "POST", "/api/token", &[], body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "*");
    local.shutdown().await;
    let exposed = TestServer::start_with(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], exposed.addr.port()));
    let (status, headers, _) = http(addr, "POST", "/api/token", &[], body).await;
    assert_eq!(status, 200);
    assert!(headers.get("access-control-allow-origin").is_none());
    let (status, headers, _) = http(addr, "OPTIONS", "/api/token", &[], "").await;
    assert_eq!(status, 204);
    assert!(headers.get("access-control-allow-origin").is_none());
    exposed.shutdown().await;
}

// ---- 4 and F. Per-participant caps, LiveKit source names, data grants ------

#[tokio::test]
async fn tracks_per_participant_are_capped() {
    // MAX_TRACKS_PER_PARTICIPANT 2.
    let server = TestServer::start_with(|c| c.limits.max_tracks_per_participant = 2).await;
    let (mut a, _) = server.join("a", "r").await;
    send_transport(&mut a).await;
    for (i, ssrc) in [1000u32, 2000].into_iter().enumerate() {
        let mut params = vp8_params(ssrc);
        params["mid"] = json!(i.to_string());
        a.send(json!({"type":"publish","kind":"video","rtpParameters":params,"requestId":i}))
            .await;
        let m = a.next().await.unwrap();
        assert_eq!(
            (&m["type"], &m["requestId"]),
            (&json!("published"), &json!(i)),
            "{m}"
        );
    }
    let mut params = vp8_params(3000);
    params["mid"] = json!("2");
    a.send(json!({"type":"publish","kind":"video","rtpParameters":params,"requestId":"third"}))
        .await;
    let e = a.wait_for("error").await;
    assert_eq!(
        (e["code"].as_u64(), &e["requestId"]),
        (Some(409), &json!("third")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("MAX_TRACKS_PER_PARTICIPANT")
    );
    assert_eq!(limit_hits(server.addr, "tracks_per_participant").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn data_channels_per_participant_are_capped() {
    // MAX_DATA_CHANNELS_PER_PARTICIPANT 2.
    let server = TestServer::start_with(|c| c.limits.max_data_channels_per_participant = 2).await;
    let (mut a, _) = server.join("a", "r").await;
    transport(&mut a, "send").await;
    for i in 0..2 {
        a.send(json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":i},"label":"l","requestId":i}))
            .await;
        assert_eq!(a.wait_for("data-channel-published").await["requestId"], i);
    }
    a.send(json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":5},"requestId":"third"}))
        .await;
    let e = a.wait_for("error").await;
    assert_eq!(
        (e["code"].as_u64(), &e["requestId"]),
        (Some(409), &json!("third")),
        "{e}"
    );
    // Labels are bounded too.
    a.send(json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":6},"label":"l".repeat(300),"requestId":"long"}))
        .await;
    assert_eq!(a.wait_for("error").await["code"], 202);
    server.shutdown().await;
}

#[tokio::test]
async fn livekit_source_names_in_the_grant_allow_screen_sharing() {
    let server = TestServer::start().await;
    let t = token_with("sharer", "r", |g| {
        g.can_publish_sources = vec!["screen_share".into(), "microphone".into()]
    });
    let (mut s, _) = join_with(&server, "sharer", "r", &t).await;
    send_transport(&mut s).await;
    s.send(json!({"type":"publish","kind":"video","source":"screen","rtpParameters":vp8_params(1000),"requestId":"screen"}))
        .await;
    assert_eq!(s.wait_for("published").await["track"]["source"], "screen");
    s.send(json!({"type":"publish","kind":"video","source":"camera","rtpParameters":vp8_params(2000),"requestId":"cam"}))
        .await;
    let e = s.wait_for("error").await;
    assert_eq!(
        (e["code"].as_u64(), &e["requestId"]),
        (Some(301), &json!("cam")),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn receiving_data_channels_needs_no_subscribe_grant() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    send_transport(&mut a).await;
    a.send(json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":1},"label":"chat","requestId":"dc"}))
        .await;
    let dp = a.wait_for("data-channel-published").await["dataProducerId"].clone();
    let t = token_with("listener", "r", |g| {
        g.can_subscribe = Some(false);
        g.can_publish_data = Some(false);
        g.can_publish = Some(false);
    });
    let (mut l, joined) = join_with(&server, "listener", "r", &t).await;
    assert_eq!(
        joined["room"]["participants"][0]["dataChannels"][0]["dataProducerId"],
        dp
    );
    transport(&mut l, "recv").await;
    l.send(json!({"type":"subscribe-data","dataProducerId":dp,"requestId":"sd"}))
        .await;
    assert_eq!(l.wait_for("data-subscribed").await["requestId"], "sd");
    // Media still needs canSubscribe.
    a.send(
        json!({"type":"publish","kind":"video","rtpParameters":vp8_params(1000),"requestId":"p"}),
    )
    .await;
    let producer = a.wait_for("published").await["producerId"].clone();
    l.send(json!({"type":"subscribe","producerId":producer,"rtpCapabilities":joined["rtpCapabilities"],"requestId":"s"}))
        .await;
    let e = l.wait_for("error").await;
    assert_eq!(
        (e["code"].as_u64(), &e["requestId"]),
        (Some(301), &json!("s")),
        "{e}"
    );
    server.shutdown().await;
}
