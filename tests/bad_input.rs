//! Bad input gets a clear error and never disturbs anyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_tests::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, http::StatusCode};

async fn expect_error(c: &mut Client, code: u64) -> Value {
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], code, "unexpected error {e}");
    assert!(!e["message"].as_str().unwrap().is_empty());
    e
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let (mut c, _) = server.join("a", "r").await;
    let cases: Vec<(&str, u64)> = vec![
        ("{not json", 200),
        ("[]", 200),
        ("\"join\"", 200),
        (r#"{"room":"r"}"#, 200),
        (r#"{"type":null}"#, 200),
        (r#"{"type":"teleport"}"#, 201),
        (r#"{"type":"publish-data","kind":"reliable"}"#, 202),
        (
            r#"{"type":"publish-data","kind":"sometimes","data":1}"#,
            202,
        ),
        (r#"{"type":"unpublish","producerId":42}"#, 202),
        (r#"{"type":"create-transport","direction":"sideways"}"#, 202),
        (r#"{"type":"ping","requestId":-5}"#, 202),
    ];
    for (text, code) in cases {
        c.send_raw(Message::text(text)).await;
        let e = expect_error(&mut c, code).await;
        assert!(e.get("requestId").is_none());
    }
    // The requestId is echoed even when the fields are bad.
    c.send(json!({"type":"publish-data","requestId":"x1"}))
        .await;
    let e = expect_error(&mut c, 202).await;
    assert_eq!(e["requestId"], "x1");
    assert!(e["message"].as_str().unwrap().contains("kind"), "{e}");
    // Binary frames are refused.
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    expect_error(&mut c, 207).await;
    // Still alive.
    c.send(json!({"type":"ping","requestId":1})).await;
    c.recv_type("pong").await;
    server.shutdown().await;
}

#[tokio::test]
async fn state_and_permission_errors() {
    let server = TestServer::start().await;
    let mut c = server.connect("a", "r").await;
    // Before join.
    for m in [
        json!({"type":"leave","requestId":1}),
        json!({"type":"publish-data","kind":"reliable","data":1,"requestId":2}),
        json!({"type":"mute","producerId":"PR_x","requestId":3}),
    ] {
        c.send(m.clone()).await;
        let e = expect_error(&mut c, 205).await;
        assert_eq!(e["requestId"], m["requestId"]);
    }
    // Join a room the token does not grant.
    c.send(json!({"type":"join","room":"other"})).await;
    expect_error(&mut c, 302).await;
    c.send(json!({"type":"join","room":"r"})).await;
    c.recv_type("joined").await;
    c.send(json!({"type":"join","room":"r"})).await;
    expect_error(&mut c, 206).await;
    // Destination not in the room.
    c.send(
        json!({"type":"publish-data","kind":"reliable","data":1,"destinationIdentities":["ghost"]}),
    )
    .await;
    expect_error(&mut c, 103).await;

    // No canPublishData.
    let t = token_with("mute", "r", |g| g.can_publish_data = Some(false));
    let mut m = Client::connect(&server.ws_url(&t), "mute").await;
    m.send(json!({"type":"join","room":"r"})).await;
    m.recv_type("joined").await;
    c.recv_type("participant-joined").await;
    m.send(json!({"type":"publish-data","kind":"reliable","data":"x"}))
        .await;
    expect_error(&mut m, 301).await;
    // Nothing reached c: the next thing c gets is m leaving, which m asks
    // for after the refused message.
    m.send(json!({"type":"leave"})).await;
    assert_eq!(
        c.recv_type("participant-left").await["participant"]["identity"],
        "mute"
    );

    // No roomJoin.
    let t = token_with("nojoin", "r", |g| g.room_join = false);
    let mut n = Client::connect(&server.ws_url(&t), "nojoin").await;
    n.send(json!({"type":"join","room":"r"})).await;
    expect_error(&mut n, 301).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let expired = {
        let mut t = AccessToken::new(
            KEY,
            SECRET,
            AccessTokenOptions {
                identity: "late".into(),
                ttl: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        );
        t.add_grant(VideoGrant {
            room: Some("r".into()),
            room_join: true,
            ..Default::default()
        });
        t.to_jwt_at(SystemTime::now() - Duration::from_secs(3600))
            .unwrap()
    };
    let forged = {
        let mut t = AccessToken::new(
            KEY,
            "not-the-secret-at-all",
            AccessTokenOptions {
                identity: "evil".into(),
                ..Default::default()
            },
        );
        t.add_grant(VideoGrant {
            room: Some("r".into()),
            room_join: true,
            ..Default::default()
        });
        t.to_jwt().unwrap()
    };
    let unknown_key = {
        let t = AccessToken::new(
            "otherkey",
            SECRET,
            AccessTokenOptions {
                identity: "x".into(),
                ..Default::default()
            },
        );
        t.to_jwt().unwrap()
    };
    let urls = [
        format!("ws://{}/", server.addr),
        format!("ws://{}/?token=", server.addr),
        format!("ws://{}/?token=garbage", server.addr),
        format!("ws://{}/?token={expired}", server.addr),
        format!("ws://{}/?token={forged}", server.addr),
        format!("ws://{}/?token={unknown_key}", server.addr),
    ];
    for url in urls {
        match tokio_tungstenite::connect_async(&url).await {
            Err(WsError::Http(res)) => {
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{url}");
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
                assert!(body["error"].as_str().unwrap().len() > 5, "{body}");
            }
            other => panic!("{url}: expected HTTP 401, got {other:?}"),
        }
    }
    // The error names the problem.
    let res = http(
        server.addr,
        "GET",
        &format!("/?token={expired}"),
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(res.0, 401);
    assert!(
        res.2["error"].as_str().unwrap().contains("expired"),
        "{}",
        res.2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_messages() {
    let server = TestServer::start_with(|c| c.limits.max_message_size = 1024).await;
    let (mut a, _) = server.join("a", "r").await;
    let (mut b, _) = server.join("b", "r").await;
    a.recv_type("participant-joined").await;
    // Over the limit: an error, the message is dropped, the session goes on.
    let big = "x".repeat(2000);
    b.send(json!({"type":"publish-data","kind":"reliable","data":big}))
        .await;
    expect_error(&mut b, 203).await;
    // Nothing reached a: the next thing a gets is what b sends after it.
    b.send(json!({"type":"publish-data","kind":"reliable","data":"small"}))
        .await;
    assert_eq!(a.recv_type("data").await["data"], "small");
    b.send(json!({"type":"ping"})).await;
    b.recv_type("pong").await;
    // Far over the limit: an error and the connection is closed (1009).
    let huge = "y".repeat(10_000);
    b.send(json!({"type":"publish-data","kind":"reliable","data":huge}))
        .await;
    expect_error(&mut b, 203).await;
    assert_eq!(b.closed().await, Some(1009));
    // Everyone else is fine.
    assert_eq!(
        a.recv_type("participant-left").await["participant"]["identity"],
        "b"
    );
    a.send(json!({"type":"ping"})).await;
    a.recv_type("pong").await;
    server.shutdown().await;
}

/// About time, on short configured durations and the real clock (the
/// limiter reads the clock when a frame arrives over a real socket): a
/// burst of 5, then one message per second.
#[tokio::test]
async fn rate_limit_drops_excess_and_keeps_serving() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 5;
    })
    .await;
    let (mut a, _) = server.join("a", "r").await;
    let (mut b, _) = server.join("b", "r").await;
    a.recv_type("participant-joined").await;
    for i in 0..30 {
        b.send(json!({"type":"publish-data","kind":"reliable","data":i}))
            .await;
    }
    // b is told once, not thirty times.
    expect_error(&mut b, 204).await;
    // After a pause that refills the bucket (at least one token: a longer
    // pause on a loaded machine only refills more), b can talk again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.send(json!({"type":"publish-data","kind":"reliable","data":"later"}))
        .await;
    // a received the burst only (the join took one token), then "later":
    // b's messages reach a in order, so none of the flood comes after it.
    let mut got = Vec::new();
    loop {
        let v = a.wait_for("data").await;
        if v["data"] == "later" {
            break;
        }
        got.push(v["data"].as_i64().unwrap());
    }
    assert!(got.len() >= 4 && got.len() <= 7, "got {got:?}");
    assert_eq!(got[0], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn room_full() {
    let server = TestServer::start_with(|c| c.limits.max_participants = 2).await;
    let (_a, _) = server.join("a", "r").await;
    let (_b, _) = server.join("b", "r").await;
    let mut c = server.connect("c", "r").await;
    c.send(json!({"type":"join","room":"r","requestId":"j"}))
        .await;
    let e = expect_error(&mut c, 101).await;
    assert_eq!(e["requestId"], "j");
    // Rejoining with an identity already present is a replacement, not a new seat.
    let (_b2, _) = server.join("b", "r").await;
    server.shutdown().await;
}

#[tokio::test]
async fn room_not_found_without_auto_create() {
    let server = TestServer::start_with(|c| c.auto_create_rooms = false).await;
    let mut c = server.connect("a", "r").await;
    c.send(json!({"type":"join","room":"r"})).await;
    let e = expect_error(&mut c, 100).await;
    assert!(e["message"].as_str().unwrap().contains("not found"));
    // A token with roomCreate may create it.
    let t = token_with("admin", "r", |g| g.room_create = true);
    let mut admin = Client::connect(&server.ws_url(&t), "admin").await;
    admin.send(json!({"type":"join","room":"r"})).await;
    admin.recv_type("joined").await;
    c.send(json!({"type":"join","room":"r"})).await;
    c.recv_type("joined").await;
    server.shutdown().await;
}
