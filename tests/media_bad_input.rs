//! Bad media requests and garbage datagrams: clear errors, nobody else
//! disturbed, the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pulsewave_tests::*;
use serde_json::{Value, json};

async fn expect_error(c: &mut Client, code: u64) -> Value {
    let e = c.wait_for("error").await;
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

const FINGERPRINT: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

async fn transport(c: &mut Client, direction: &str) -> Value {
    c.send(json!({"type":"create-transport","direction":direction,"requestId":direction}))
        .await;
    let t = c.wait_for("transport-created").await;
    assert_eq!(t["requestId"], direction);
    t["transport"].clone()
}

#[tokio::test]
async fn media_requests_with_bad_input_get_clear_errors() {
    let server = TestServer::start().await;
    let (mut a, joined) = server.join("a", "r").await;
    // The router capabilities are mediasoup-shaped.
    let caps = &joined["rtpCapabilities"];
    assert!(
        caps["codecs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["mimeType"] == "video/VP8")
    );
    assert!(
        caps["headerExtensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["uri"]
                == "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
    );
    let (mut b, _) = server.join("b", "r").await;
    a.wait_for("participant-joined").await;

    // `rtpCapabilities` on create-transport is optional and no longer used,
    // but what is sent is still checked.
    a.send(json!({"type":"create-transport","direction":"send",
        "rtpCapabilities":{"codecs":[{"kind":"video","mimeType":"video/VP8","preferredPayloadType":300,"clockRate":90000}]}}))
        .await;
    expect_error(&mut a, 202).await;
    a.send(json!({"type":"create-transport","direction":"send",
        "rtpCapabilities":{"codecs":[{"kind":"video","mimeType":"video/rtx","preferredPayloadType":97,"clockRate":90000,"parameters":{"apt":96}}]}}))
        .await;
    expect_error(&mut a, 408).await;
    let send = transport(&mut a, "send").await;
    let tid = send["id"].as_str().unwrap().to_owned();
    assert!(tid.starts_with("TP_"));
    assert_eq!(send["iceParameters"]["iceLite"], true);
    assert_eq!(send["dtlsParameters"]["role"], "auto");
    assert_eq!(send["iceCandidates"][0]["address"], "127.0.0.1");
    assert_eq!(send["sctpParameters"]["port"], 5000);

    // Publish before connect-transport.
    a.send(
        json!({"type":"publish","transportId":tid,"kind":"video","rtpParameters":vp8_params(1000)}),
    )
    .await;
    expect_error(&mut a, 401).await;
    // Unknown transport id; another participant's transport id.
    a.send(json!({"type":"connect-transport","transportId":"TP_nope",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}}))
        .await;
    expect_error(&mut a, 400).await;
    b.send(json!({"type":"connect-transport","transportId":tid,
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}}))
        .await;
    expect_error(&mut b, 400).await;
    // Malformed DTLS parameters.
    a.send(json!({"type":"connect-transport","transportId":tid,
        "dtlsParameters":{"fingerprints":[{"algorithm":"sha-256","value":"zz"}]}}))
        .await;
    expect_error(&mut a, 202).await;
    // Now connect properly; twice is an error.
    let connect = json!({"type":"connect-transport","transportId":tid,"requestId":"c1",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}});
    a.send(connect.clone()).await;
    assert_eq!(a.wait_for("transport-connected").await["requestId"], "c1");
    a.send(connect).await;
    expect_error(&mut a, 410).await;

    // Malformed RTP parameters.
    let mut bad = vp8_params(2000);
    bad["codecs"][1]["parameters"]["apt"] = json!(55);
    a.send(json!({"type":"publish","kind":"video","rtpParameters":bad}))
        .await;
    expect_error(&mut a, 408).await;
    let mut bad = vp8_params(2000);
    bad["codecs"][0]["mimeType"] = json!("video/NOPE");
    a.send(json!({"type":"publish","kind":"video","rtpParameters":bad}))
        .await;
    expect_error(&mut a, 405).await;
    // Kind and codec disagree; source and kind disagree.
    a.send(json!({"type":"publish","kind":"audio","rtpParameters":vp8_params(2000)}))
        .await;
    expect_error(&mut a, 408).await;
    a.send(json!({"type":"publish","kind":"video","source":"microphone","rtpParameters":vp8_params(2000)}))
        .await;
    expect_error(&mut a, 202).await;
    // Wrong types inside rtpParameters are caught by the decoder.
    a.send(json!({"type":"publish","kind":"video","rtpParameters":{"codecs":"VP8"}}))
        .await;
    expect_error(&mut a, 202).await;

    // A good publish.
    a.send(json!({"type":"publish","kind":"video","source":"camera","rtpParameters":vp8_params(3000),"requestId":"p"}))
        .await;
    let published = a.wait_for("published").await;
    assert_eq!(published["requestId"], "p");
    let producer = published["producerId"].as_str().unwrap().to_owned();
    let ev = b.wait_for("track-published").await;
    assert_eq!(ev["track"]["producerId"], producer);
    assert_eq!(ev["track"]["participantIdentity"], "a");
    assert_eq!(ev["track"]["source"], "camera");
    assert_eq!(ev["track"]["muted"], false);
    // Duplicate ssrc on the same transport.
    let mut dup = vp8_params(3000);
    dup["mid"] = json!("1");
    a.send(json!({"type":"publish","kind":"video","rtpParameters":dup}))
        .await;
    expect_error(&mut a, 406).await;
    // A second track claiming the first one's payload type for another codec.
    a.send(json!({"type":"publish","kind":"audio","rtpParameters":{
        "mid":"5",
        "codecs":[{"mimeType":"audio/opus","payloadType":101,"clockRate":48000,"channels":2}],
        "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1}],
        "encodings":[{"ssrc":5000}],"rtcp":{"cname":"test"}}}))
        .await;
    let e = expect_error(&mut a, 408).await;
    assert!(e["message"].as_str().unwrap().contains("clashes"), "{e}");

    // b may not unpublish or mute a's producer.
    b.send(json!({"type":"unpublish","producerId":producer}))
        .await;
    expect_error(&mut b, 303).await;
    b.send(json!({"type":"mute","producerId":producer})).await;
    expect_error(&mut b, 303).await;
    // Subscribing: unknown producer, no recv transport, caps without VP8.
    let b_caps = json!({"codecs":[{"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,"channels":2}],"headerExtensions":[]});
    b.send(json!({"type":"subscribe","producerId":"PR_nope","rtpCapabilities":caps}))
        .await;
    expect_error(&mut b, 403).await;
    b.send(json!({"type":"subscribe","producerId":producer,"rtpCapabilities":caps}))
        .await;
    expect_error(&mut b, 400).await;
    transport(&mut b, "recv").await;
    b.send(json!({"type":"subscribe","producerId":producer,"rtpCapabilities":b_caps}))
        .await;
    expect_error(&mut b, 407).await;
    // A good subscription: router payload types, fresh ssrc, paused.
    b.send(
        json!({"type":"subscribe","producerId":producer,"rtpCapabilities":caps,"requestId":"s"}),
    )
    .await;
    let sub = b.wait_for("track-subscribed").await;
    assert_eq!(sub["requestId"], "s");
    assert_eq!(sub["paused"], true);
    assert_eq!(sub["kind"], "video");
    assert_eq!(sub["participantIdentity"], "a");
    assert_eq!(sub["trackSid"], ev["track"]["sid"]);
    let rp = &sub["rtpParameters"];
    assert_eq!(rp["codecs"][0]["mimeType"], "video/VP8");
    assert_eq!(rp["codecs"][0]["payloadType"], 101);
    assert_ne!(rp["encodings"][0]["ssrc"], 3000);
    assert_eq!(rp["mid"], "0");
    let consumer = sub["consumerId"].as_str().unwrap().to_owned();
    // a may not touch b's consumer.
    a.send(json!({"type":"resume-consumer","consumerId":consumer}))
        .await;
    expect_error(&mut a, 404).await;
    a.send(json!({"type":"unsubscribe","consumerId":consumer}))
        .await;
    expect_error(&mut a, 404).await;
    a.send(json!({"type":"set-preferred-layers","consumerId":consumer,"spatialLayer":0}))
        .await;
    expect_error(&mut a, 404).await;
    // b caps its own consumer's layer, and lifts the cap; a bad layer is a
    // decoding error.
    b.send(json!({"type":"set-preferred-layers","consumerId":consumer,"spatialLayer":0,"requestId":"l"}))
        .await;
    let set = b.wait_for("preferred-layers-set").await;
    assert_eq!(set["requestId"], "l");
    assert_eq!(set["consumerId"], consumer);
    assert_eq!(set["spatialLayer"], 0);
    b.send(json!({"type":"set-preferred-layers","consumerId":consumer,"spatialLayer":null}))
        .await;
    assert_eq!(
        b.wait_for("preferred-layers-set").await["spatialLayer"],
        Value::Null
    );
    b.send(json!({"type":"set-preferred-layers","consumerId":consumer,"spatialLayer":-1}))
        .await;
    expect_error(&mut b, 202).await;
    // Mute reaches everyone, requester's copy with its requestId.
    a.send(json!({"type":"mute","producerId":producer,"requestId":"m"}))
        .await;
    assert_eq!(a.wait_for("track-muted").await["requestId"], "m");
    let m = b.wait_for("track-muted").await;
    assert_eq!(m["producerId"], producer);
    assert!(m.get("requestId").is_none());
    // Unpublish closes b's consumer.
    a.send(json!({"type":"unpublish","producerId":producer,"requestId":"u"}))
        .await;
    assert_eq!(a.wait_for("track-unpublished").await["requestId"], "u");
    assert_eq!(
        b.wait_for("track-unpublished").await["producerId"],
        producer
    );
    let unsub = b.wait_for("track-unsubscribed").await;
    assert_eq!(unsub["consumerId"], consumer);
    // Both still fine.
    for c in [&mut a, &mut b] {
        c.send(json!({"type":"ping","requestId":"alive"})).await;
        assert_eq!(c.wait_for("pong").await["requestId"], "alive");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn permissions_for_media() {
    let server = TestServer::start().await;
    let t = token_with("viewer", "r", |g| {
        g.can_publish = Some(false);
        g.can_publish_data = Some(false);
    });
    let mut v = Client::connect(&server.ws_url(&t), "viewer").await;
    v.send(json!({"type":"join","room":"r"})).await;
    v.wait_for("joined").await;
    v.send(json!({"type":"create-transport","direction":"send"}))
        .await;
    expect_error(&mut v, 301).await;
    let t = token_with("deaf", "r", |g| g.can_subscribe = Some(false));
    let mut d = Client::connect(&server.ws_url(&t), "deaf").await;
    d.send(json!({"type":"join","room":"r"})).await;
    d.wait_for("joined").await;
    d.send(json!({"type":"subscribe","producerId":"PR_x","rtpCapabilities":{}}))
        .await;
    expect_error(&mut d, 301).await;
    let t = token_with("cam-only", "r", |g| {
        g.can_publish_sources = vec!["camera".into()]
    });
    let mut c = Client::connect(&server.ws_url(&t), "cam-only").await;
    c.send(json!({"type":"join","room":"r"})).await;
    c.wait_for("joined").await;
    c.send(
        json!({"type":"publish","kind":"video","source":"screen","rtpParameters":vp8_params(1)}),
    )
    .await;
    expect_error(&mut c, 301).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_on_the_media_port_are_dropped_and_counted() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    let t = transport(&mut a, "recv").await;
    let port = t["iceCandidates"][0]["port"].as_u64().unwrap() as u16;
    let ufrag = t["iceParameters"]["usernameFragment"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two senders: one with random bytes from an address the server never
    // saw (every datagram must be dropped and counted), one imitating STUN
    // with the transport's ufrag, RTP and DTLS (the server must survive it).
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mimic = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = ("127.0.0.1", port);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let workers = server.running.as_ref().unwrap().workers().unwrap().clone();
    let count = |f: fn(&pulsewave_signal::media::WorkerStats) -> u64| -> u64 {
        workers.workers().iter().map(|w| f(w.stats())).sum()
    };
    let dropped_before = count(|s| {
        s.datagrams_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    let dropped = || {
        count(|s| {
            s.datagrams_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        }) - dropped_before
    };
    let mut strangers = 0u64;
    for i in 0..2000 {
        let len = (next() % 1400) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 {
            if stranger.send_to(&buf, target).await.is_ok() {
                strangers += 1;
            }
        } else {
            match i % 5 {
                0 | 1 if len > 12 => buf[0] = if i % 5 == 0 { 0x80 } else { 22 },
                _ if len > 40 => {
                    buf[0] = 0;
                    buf[1] = 1;
                    buf[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
                    buf[20..22].copy_from_slice(&[0, 6]);
                    let u = format!("{ufrag}:x");
                    let n = u.len().min(len - 24);
                    buf[22..24].copy_from_slice(&(n as u16).to_be_bytes());
                    buf[24..24 + n].copy_from_slice(&u.as_bytes()[..n]);
                }
                _ => {}
            }
            let _ = mimic.send_to(&buf, target).await;
        }
        if i % 40 == 39 {
            // Paced by the server: each batch is counted before the next is
            // sent, so the socket buffer never overflows and the kernel
            // drops nothing before the server sees it, however loaded.
            let sent = strangers;
            eventually(
                "the worker counts the unknown address's datagrams",
                EVENTUALLY,
                async || (dropped() >= sent).then_some(()),
            )
            .await;
        }
    }
    assert_eq!(strangers, 1000);
    eventually(
        "every datagram from the unknown address is dropped and counted",
        EVENTUALLY,
        async || (dropped() >= strangers).then_some(()),
    )
    .await;
    a.send(json!({"type":"ping","requestId":1})).await;
    a.wait_for("pong").await;
    transport(&mut a, "send").await;
    let (_b, _) = server.join("b", "r").await;
    server.shutdown().await;
}
