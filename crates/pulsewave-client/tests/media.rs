//! Media through the real server: publish, subscribe, RTP and data
//! channels over UDP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

mod common;

use pulsewave_client::{Client, ClientEvent, SYNTHETIC_AUDIO_LEVEL, parse_synthetic};
use pulsewave_protocol::rtp::RtpCapabilities;
use pulsewave_protocol::{DataKind, ServerMessage};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};

const KEY: &str = "mediakey";
const SECRET: &str = "mediasecret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// A server whose media workers are running: without them these tests
/// fail here, saying so, rather than anywhere later.
async fn server() -> RunningServer {
    let s = WebSocketServer::new(ServerConfig::dev(0, KEY, SECRET))
        .start()
        .await
        .unwrap();
    let workers = s.workers().expect("the server started no media workers");
    assert!(
        !workers.workers().is_empty() && workers.workers().iter().all(|w| w.is_alive()),
        "the server's media workers are not running"
    );
    s
}

fn token(identity: &str, room: &str) -> String {
    common::token(KEY, SECRET, identity, room)
}

async fn joined(s: &RunningServer, identity: &str, room: &str) -> Client {
    let mut c = Client::connect(&format!("ws://{}", s.local_addr()), &token(identity, room))
        .await
        .unwrap();
    c.join(room).await.unwrap();
    c
}

#[tokio::test]
async fn published_video_and_audio_reach_a_subscriber_intact() {
    let s = server().await;
    let mut alice = joined(&s, "alice", "media1").await;
    let mut bob = joined(&s, "bob", "media1").await;

    let mut video = alice
        .publish_video("video/VP8")
        .await
        .unwrap_or_else(|e| panic!("publish video (are the media workers up?): {e}"));
    let mut audio = alice.publish_audio().await.unwrap();
    assert!(video.producer_id().as_str().starts_with("PR_"));

    // Bob hears about both tracks and subscribes.
    let mut published = HashSet::new();
    while published.len() < 2 {
        let id = bob
            .wait_for(WAIT, |e| match e {
                ClientEvent::Signal(ServerMessage::TrackPublished { track }) => {
                    Some(track.producer_id)
                }
                _ => None,
            })
            .await
            .unwrap();
        published.insert(id);
    }
    let rv = bob.subscribe(video.producer_id()).await.unwrap();
    let ra = bob.subscribe(audio.producer_id()).await.unwrap();
    assert_ne!(rv.ssrc, 0);
    assert_ne!(rv.mid, ra.mid);

    // Send one second of media.
    let sender = tokio::spawn(async move {
        let mut vs = video.synthetic_source();
        let mut aus = audio.synthetic_source();
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < end {
            tokio::select! {
                pkts = vs.tick() => for p in pkts { video.send_synthetic(&p).await.unwrap(); },
                pkts = aus.tick() => for p in pkts { audio.send_synthetic(&p).await.unwrap(); },
            }
        }
        (video, audio)
    });

    let mut video_pkts = 0;
    let mut audio_pkts = 0;
    let mut keyframe_seen = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while (video_pkts < 50 || audio_pkts < 20) && tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, bob.next_event()).await else {
            break;
        };
        if let ClientEvent::Rtp(p) = e {
            let info = parse_synthetic(&p.payload).expect("synthetic payload");
            assert!(info.intact, "{info:?}");
            assert!(info.latency(SystemTime::now()) < Duration::from_secs(2));
            if p.consumer_id == rv.consumer_id {
                video_pkts += 1;
                keyframe_seen |= info.keyframe;
            } else if p.consumer_id == ra.consumer_id {
                audio_pkts += 1;
            }
        }
    }
    assert!(video_pkts >= 50, "video packets: {video_pkts}");
    assert!(audio_pkts >= 20, "audio packets: {audio_pkts}");
    assert!(keyframe_seen);
    rv.request_keyframe().await.unwrap();
    let (video, audio) = sender.await.unwrap();

    // Resuming the consumer (and Bob's PLI) asked Alice for a keyframe.
    let asked = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::KeyframeRequested { producer_id, .. } => producer_id,
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(&asked, video.producer_id());

    alice.mute(audio.producer_id()).await.unwrap();
    alice.unmute(audio.producer_id()).await.unwrap();
    bob.unsubscribe(&ra.consumer_id).await.unwrap();
    alice.unpublish(video.producer_id()).await.unwrap();
    // Bob's video subscription ends with the track.
    let gone = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::TrackUnsubscribed { consumer_id, .. }) => {
                Some(consumer_id)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(gone, rv.consumer_id);
    // A new subscription on the same transport still works.
    let again = bob.subscribe(audio.producer_id()).await.unwrap();
    assert_ne!(again.consumer_id, ra.consumer_id);
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn data_channels_through_the_server() {
    let s = server().await;
    let alice = joined(&s, "alice", "media2").await;
    let mut bob = joined(&s, "bob", "media2").await;
    let chan = alice
        .publish_data_channel("chat", DataKind::Reliable)
        .await
        .unwrap_or_else(|e| panic!("publish data channel (are the media workers up?): {e}"));
    let sub = bob.subscribe_data(&chan.data_producer_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no data arrived");
        // Until the channel is open, sends fail with NotConnected: the
        // sender retries every 100 ms (the wait for bob's event below paces
        // it) until bob gets the message, bounded by WAIT.
        let _ = chan.send_text("hello").await;
        if let Ok(Some(ClientEvent::DataChannelMessage {
            stream_id, data, ..
        })) = tokio::time::timeout(Duration::from_millis(100), bob.next_event()).await
        {
            assert_eq!(stream_id, sub.stream_id);
            assert_eq!(data, b"hello");
            break;
        }
    }
    s.shutdown(Duration::from_secs(5)).await;
}

/// A publisher that sends as Chromium does on a send transport whose first
/// track is video: VP8 on 96 (RTX 97), opus on 111, `mid` on id 9,
/// transport-cc on 4, audio-level on 14, as Chromium 156 does (the router
/// uses 101, 100, 1, 5, 6). Video first, then audio: the subscriber gets both, and the audio
/// level the server read at the browser's id.
#[tokio::test]
async fn a_video_first_publisher_with_the_browsers_ids() {
    let s = server().await;
    let send_caps: RtpCapabilities = serde_json::from_value(serde_json::json!({
        "codecs": [
            {"kind":"audio","mimeType":"audio/opus","preferredPayloadType":111,"clockRate":48000,"channels":2,
             "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc"}]},
            {"kind":"video","mimeType":"video/VP8","preferredPayloadType":96,"clockRate":90000,
             "rtcpFeedback":[{"type":"transport-cc"},{"type":"ccm","parameter":"fir"},{"type":"nack"},{"type":"nack","parameter":"pli"}]},
            {"kind":"video","mimeType":"video/rtx","preferredPayloadType":97,"clockRate":90000,"parameters":{"apt":96}}
        ],
        "headerExtensions": [
            {"kind":"video","uri":"urn:ietf:params:rtp-hdrext:toffset","preferredId":1},
            {"kind":"video","uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","preferredId":2},
            {"kind":"video","uri":"urn:3gpp:video-orientation","preferredId":3},
            {"kind":"video","uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","preferredId":4},
            {"kind":"video","uri":"urn:ietf:params:rtp-hdrext:sdes:mid","preferredId":9},
            {"kind":"audio","uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","preferredId":2},
            {"kind":"audio","uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","preferredId":4},
            {"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:sdes:mid","preferredId":9},
            {"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":14}
        ]
    }))
    .unwrap();
    let mut alice = Client::builder()
        .send_capabilities(send_caps)
        .connect(
            &format!("ws://{}", s.local_addr()),
            &token("alice", "media3"),
        )
        .await
        .unwrap();
    alice.join("media3").await.unwrap();
    let mut bob = joined(&s, "bob", "media3").await;
    let mut video = alice.publish_video("video/VP8").await.unwrap();
    let mut audio = alice.publish_audio().await.unwrap();
    let rv = bob.subscribe(video.producer_id()).await.unwrap();
    let ra = bob.subscribe(audio.producer_id()).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut vs = video.synthetic_source();
        let mut aus = audio.synthetic_source();
        let end = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < end {
            tokio::select! {
                pkts = vs.tick() => for p in pkts { video.send_synthetic(&p).await.unwrap(); },
                pkts = aus.tick() => for p in pkts { audio.send_synthetic(&p).await.unwrap(); },
            }
        }
    });
    let (mut video_pkts, mut audio_pkts) = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while (video_pkts < 50 || audio_pkts < 20) && tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, bob.next_event()).await else {
            break;
        };
        if let ClientEvent::Rtp(p) = e {
            assert!(parse_synthetic(&p.payload).expect("synthetic").intact);
            if p.consumer_id == rv.consumer_id {
                assert_eq!(p.payload_type, 101, "the router's VP8");
                video_pkts += 1;
            } else if p.consumer_id == ra.consumer_id {
                assert_eq!(p.payload_type, 100, "the router's opus");
                assert_eq!(p.audio_level, Some(SYNTHETIC_AUDIO_LEVEL));
                audio_pkts += 1;
            }
        }
    }
    assert!(video_pkts >= 50, "video packets: {video_pkts}");
    assert!(audio_pkts >= 20, "audio packets: {audio_pkts}");
    sender.abort();
    s.shutdown(Duration::from_secs(5)).await;
}
