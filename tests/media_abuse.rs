//! One participant with a valid token must not be able to hurt a room, a
//! worker or the node: the attacks of the hardening review, over real
//! sockets, each refused by outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pulsewave_tests::*;
use serde_json::{Value, json};

async fn expect_error(c: &mut Client, code: u64) -> Value {
    let e = c.wait_for("error").await;
    assert_eq!(e["code"], code, "unexpected error {e}");
    e
}

const FINGERPRINT: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

/// A connected send (or receive) transport of `c`; returns its id.
async fn transport(c: &mut Client, direction: &str) -> String {
    c.send(json!({"type":"create-transport","direction":direction,"requestId":"t"}))
        .await;
    let t = c.wait_for("transport-created").await;
    let id = t["transport"]["id"].as_str().unwrap().to_owned();
    c.send(json!({"type":"connect-transport","transportId":id,"requestId":"c",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}}))
        .await;
    c.wait_for("transport-connected").await;
    id
}

fn vp8(mid: &str, encodings: Value) -> Value {
    json!({
        "mid": mid,
        "codecs": [{"mimeType":"video/VP8","payloadType":101,"clockRate":90000}],
        "headerExtensions": [{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1}],
        "encodings": encodings,
        "rtcp": {"cname": "x"}
    })
}

/// The worker stall of the review: 16 producers with thousands of encodings
/// each, re-published in a loop. Every such publish is refused before the
/// worker does work that grows with it (409, encodings per producer), and a
/// participant of another room on the same worker keeps being served: each
/// of its requests is answered.
#[tokio::test]
async fn publishes_with_thousands_of_encodings_are_refused() {
    let server = TestServer::start_with(|c| {
        if let Some(m) = c.media.as_mut() {
            m.num_workers = 1;
        }
    })
    .await;
    let (mut attacker, _) = server.join("attacker", "a").await;
    let (mut victim, _) = server.join("victim", "b").await;
    transport(&mut attacker, "send").await;
    let victim_tid = transport(&mut victim, "send").await;
    let encodings: Vec<Value> = (0..2500u32).map(|i| json!({"ssrc": 1000 + i})).collect();
    let huge = vp8("0", Value::Array(encodings));
    assert!(
        huge.to_string().len() > 30_000,
        "a real-size attack message"
    );
    for round in 0..20 {
        attacker
            .send(json!({"type":"publish","kind":"video","rtpParameters":huge,"requestId":round}))
            .await;
        let e = expect_error(&mut attacker, 409).await;
        assert_eq!(e["requestId"], round);
        assert!(e["message"].as_str().unwrap().contains("encodings"), "{e}");
        victim
            .send(
                json!({"type":"publish","transportId":victim_tid,"kind":"video",
                "rtpParameters":vp8(&round.to_string(), json!([{"ssrc": 50_000 + round}])),
                "requestId":round}),
            )
            .await;
        let reply = victim.next().await.unwrap();
        // The victim's own producer limit (16) is the only thing it meets.
        if round < 16 {
            assert_eq!(reply["type"], "published", "{reply}");
        } else {
            assert_eq!(reply["code"], 409, "{reply}");
        }
    }
    // Four encodings, as a browser sends, are fine.
    let four: Vec<Value> = (0..4u32).map(|i| json!({"ssrc": 90_000 + i})).collect();
    attacker
        .send(json!({"type":"publish","kind":"video","rtpParameters":vp8("1", Value::Array(four)),"requestId":"ok"}))
        .await;
    assert_eq!(attacker.wait_for("published").await["requestId"], "ok");
    server.shutdown().await;
}

/// Subscribing many times multiplied egress: one's own producers are
/// refused, and a participant holds at most two consumers of one producer.
#[tokio::test]
async fn own_and_repeated_subscriptions_are_refused() {
    let server = TestServer::start().await;
    let (mut a, joined) = server.join("a", "r").await;
    let caps = joined["rtpCapabilities"].clone();
    let (mut b, _) = server.join("b", "r").await;
    transport(&mut a, "send").await;
    transport(&mut a, "recv").await;
    transport(&mut b, "recv").await;
    a.send(json!({"type":"publish","kind":"video","rtpParameters":vp8("0", json!([{"ssrc": 7}]))}))
        .await;
    let producer = a.wait_for("published").await["producerId"].clone();
    for _ in 0..3 {
        a.send(json!({"type":"subscribe","producerId":producer,"rtpCapabilities":caps}))
            .await;
        let e = expect_error(&mut a, 407).await;
        assert!(e["message"].as_str().unwrap().contains("own"), "{e}");
    }
    for i in 0..5 {
        b.send(json!({"type":"subscribe","producerId":producer,"rtpCapabilities":caps}))
            .await;
        if i < 2 {
            b.wait_for("track-subscribed").await;
        } else {
            let e = expect_error(&mut b, 409).await;
            assert!(
                e["message"].as_str().unwrap().contains("one producer"),
                "{e}"
            );
        }
    }
    server.shutdown().await;
}

/// A thousand data producers on one transport made a newcomer's `joined`
/// 662 KB. Now a participant holds at most 16 (MAX_DATA_CHANNELS_PER_PARTICIPANT).
#[tokio::test]
async fn data_producers_per_participant_are_capped() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    transport(&mut a, "send").await;
    for i in 0..40u16 {
        a.send(
            json!({"type":"publish-data-channel","label":"x","requestId":i,
            "sctpStreamParameters":{"streamId": i, "ordered": true}}),
        )
        .await;
        let reply = a.next().await.unwrap();
        assert_eq!(reply["requestId"], i);
        if i < 16 {
            assert_ne!(reply["type"], "error", "{reply}");
        } else {
            assert_eq!(reply["code"], 409, "{reply}");
        }
    }
    let (_newcomer, joined) = server.join("newcomer", "r").await;
    assert!(joined.to_string().len() < 64 * 1024);
    server.shutdown().await;
}
