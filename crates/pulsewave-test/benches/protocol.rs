//! Signaling encode/decode: `decode_client` of the requests a session
//! handles (`join`, `publish` with VP8 + RTX parameters, `subscribe` with a
//! browser's full capabilities, `publish-data`) and `encode_server` of the
//! replies and broadcasts (`joined` into a room of 10 publishers,
//! `track-subscribed`, `track-published`, `data`).
//!
//! ```bash
//! cargo bench -p pulsewave-test --bench protocol
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulsewave_core::ortc;
use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_protocol::{
    DataKind, MediaKind, ParticipantInfo, ParticipantPermission, ParticipantSid, ProducerId,
    RequestId, RoomInfo, ServerMessage, TrackInfo, TrackSid, TrackSource, decode_client,
    encode_server,
};
use pulsewave_test::Sim;
use serde_json::json;

/// Real producer and consumer parameters from an in-process room.
fn params() -> (RtpParameters, RtpParameters) {
    let mut sim = Sim::new(1);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    sim.send_transport(alice);
    sim.recv_transport(bob);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    (
        sim.track(alice, &mid).local().rtp_parameters.clone(),
        sim.subscription(bob, &consumer).rtp_parameters.clone(),
    )
}

fn track(i: usize, kind: MediaKind) -> TrackInfo {
    TrackInfo {
        sid: TrackSid::new(format!("TR_{i:012}{kind}")),
        producer_id: ProducerId::new(format!("PR_{i:012}{kind}")),
        participant_identity: format!("user-{i}"),
        participant_sid: ParticipantSid::new(format!("PA_{i:012}")),
        kind,
        source: match kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video => TrackSource::Camera,
        },
        muted: false,
        name: None,
        mime_type: match kind {
            MediaKind::Audio => "audio/opus".into(),
            MediaKind::Video => "video/VP8".into(),
        },
        simulcast: false,
    }
}

fn participant(i: usize) -> ParticipantInfo {
    ParticipantInfo {
        sid: ParticipantSid::new(format!("PA_{i:012}")),
        identity: format!("user-{i}"),
        name: format!("User {i}"),
        metadata: String::new(),
        joined_at: 1_700_000_000_000 + i as u64,
        permission: ParticipantPermission {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            hidden: false,
            can_update_metadata: false,
            can_publish_sources: Default::default(),
        },
        tracks: vec![track(i, MediaKind::Video), track(i, MediaKind::Audio)],
        data_channels: Vec::new(),
        attributes: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let caps = ortc::default_router_capabilities();
    let (producer, consumer) = params();
    let requests = [
        (
            "join",
            json!({"type":"join","room":"my-room","requestId":1}).to_string(),
        ),
        (
            "publish",
            json!({"type":"publish","requestId":2,"kind":"video","source":"camera",
                   "rtpParameters": producer})
            .to_string(),
        ),
        (
            "subscribe",
            json!({"type":"subscribe","requestId":3,"producerId":"PR_000000000001video",
                   "rtpCapabilities": caps})
            .to_string(),
        ),
        (
            "publish-data",
            json!({"type":"publish-data","kind":"reliable",
                   "data":{"type":"chat","message":"Hello, everyone!"}})
            .to_string(),
        ),
    ];
    let mut g = c.benchmark_group("decode_client");
    for (name, text) in &requests {
        decode_client(text).unwrap();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| decode_client(black_box(text)).unwrap())
        });
    }
    g.finish();

    let room = RoomInfo {
        sid: "RM_000000000001".into(),
        name: "my-room".into(),
        created_at: 1_700_000_000_000,
        max_participants: 0,
        metadata: String::new(),
        empty_timeout: 0,
        participants: (0..10).map(participant).collect(),
    };
    let replies = [
        (
            "joined-10-participants",
            ServerMessage::Joined {
                room,
                participant: participant(99),
                rtp_capabilities: caps.clone(),
                ice_servers: Vec::new(),
                resume_token: None,
            },
        ),
        (
            "track-subscribed",
            ServerMessage::TrackSubscribed {
                track_sid: "TR_000000000001video".into(),
                consumer_id: "CN_000000000001".into(),
                producer_id: "PR_000000000001video".into(),
                kind: MediaKind::Video,
                rtp_parameters: consumer,
                participant_identity: "user-1".into(),
                paused: true,
            },
        ),
        (
            "track-published",
            ServerMessage::TrackPublished {
                track: track(1, MediaKind::Video),
            },
        ),
        (
            "data",
            ServerMessage::Data {
                participant_identity: "user-1".into(),
                kind: DataKind::Reliable,
                data: json!({"type":"chat","message":"Hello, everyone!"}),
                topic: None,
                encoding: None,
            },
        ),
    ];
    let id = RequestId::Number(7);
    let mut g = c.benchmark_group("encode_server");
    for (name, msg) in &replies {
        g.throughput(Throughput::Bytes(encode_server(msg, Some(&id)).len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| encode_server(black_box(msg), Some(&id)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
