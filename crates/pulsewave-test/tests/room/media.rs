//! Publish and subscribe: what arrives, with which ssrc, payload type,
//! sequence numbers and timestamps.

use pulsewave_client::parse_synthetic;
use pulsewave_core::Owner;
use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpHeaderExtension, RtpHeaderExtensionDirection, uri,
};
use pulsewave_test::{Direction, PacketKind, ReceivedRtp, Sim};

use crate::{SECOND, alice_and_bob, assert_contiguous, is_vp8_keyframe_start};

/// The payloads received are exactly a run of consecutive payloads the
/// publisher sent, byte for byte.
#[track_caller]
fn assert_payloads_match(sim: &Sim, publisher: Owner, mid: &str, got: &[ReceivedRtp]) {
    let sent = sim.track(publisher, mid).sent();
    let first = sent
        .iter()
        .position(|s| s.payload == got[0].payload)
        .expect("the first payload received was sent");
    for (i, r) in got.iter().enumerate() {
        let s = &sent[first + i];
        assert_eq!(r.payload, s.payload, "payload {i} differs");
        assert_eq!(r.marker, s.marker, "marker of payload {i}");
        let info = parse_synthetic(&r.payload).expect("a synthetic payload");
        assert!(info.intact, "{info:?}");
    }
}

fn router_pt(sim: &Sim, mime: &str) -> u8 {
    sim.router_caps()
        .codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime))
        .expect("a router codec")
        .preferred_payload_type
}

#[test]
fn audio_arrives_intact_with_the_consumers_ssrc_and_router_payload_type() {
    let (mut sim, alice, bob) = alice_and_bob(1);
    let (producer, mid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);

    let sub = sim.subscription(bob, &consumer).clone();
    let track = sim.track(alice, &mid).local().clone();
    let got = sim.received(bob, &consumer);
    assert!(
        got.len() >= 90,
        "about 50 packets a second, got {}",
        got.len()
    );
    assert_ne!(sub.ssrc, track.ssrc, "the consumer has its own ssrc");
    assert_eq!(sub.payload_type, router_pt(&sim, "audio/opus"));
    for r in &got {
        assert_eq!(r.ssrc, sub.ssrc);
        assert_eq!(r.payload_type, sub.payload_type);
        assert_eq!(r.mid, sub.mid);
    }
    assert_contiguous(&got);
    for w in got.windows(2) {
        assert_eq!(
            w[1].rtp_time.wrapping_sub(w[0].rtp_time),
            960,
            "20 ms at 48 kHz"
        );
    }
    assert_payloads_match(&sim, alice, &mid, &got);
    // Nothing else arrived on Bob's transport.
    assert_eq!(sim.peer(&sub.transport_id).rtp().len(), got.len());
}

#[test]
fn video_arrives_from_a_keyframe_with_contiguous_sequence_numbers() {
    let (mut sim, alice, bob) = alice_and_bob(2);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    sim.advance(SECOND / 2);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);

    let sub = sim.subscription(bob, &consumer).clone();
    let got = sim.received(bob, &consumer);
    assert!(got.len() > 100, "got {}", got.len());
    assert!(
        is_vp8_keyframe_start(&got[0].payload),
        "a subscriber's video starts with a keyframe"
    );
    assert_ne!(sub.ssrc, sim.track(alice, &mid).local().ssrc);
    assert_eq!(sub.payload_type, router_pt(&sim, "video/VP8"));
    assert!(sub.rtx_ssrc.is_some(), "video consumers get RTX");
    assert!(
        got.iter()
            .all(|r| r.ssrc == sub.ssrc && r.payload_type == sub.payload_type)
    );
    assert_contiguous(&got);
    // Timestamps never go back, and advance 3000 ticks (90 kHz, 30 fps)
    // from one frame to the next.
    for w in got.windows(2) {
        let d = w[1].rtp_time.wrapping_sub(w[0].rtp_time);
        if w[0].marker {
            assert_eq!(d, 3000, "next frame");
        } else {
            assert_eq!(d, 0, "same frame");
        }
    }
    assert_payloads_match(&sim, alice, &mid, &got);
}

#[test]
fn two_subscribers_get_independent_ssrcs_and_the_same_media() {
    let (mut sim, alice, bob) = alice_and_bob(3);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let (audio, amid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let (video, vmid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_audio = sim.subscribe(bob, &audio);
    let bob_video = sim.subscribe(bob, &video);
    let carol_audio = sim.subscribe(carol, &audio);
    let carol_video = sim.subscribe(carol, &video);
    sim.advance(2 * SECOND);

    let ssrcs = [
        sim.subscription(bob, &bob_audio).ssrc,
        sim.subscription(bob, &bob_video).ssrc,
        sim.subscription(carol, &carol_audio).ssrc,
        sim.subscription(carol, &carol_video).ssrc,
        sim.track(alice, &amid).local().ssrc,
        sim.track(alice, &vmid).local().ssrc,
    ];
    for (i, a) in ssrcs.iter().enumerate() {
        for b in &ssrcs[i + 1..] {
            assert_ne!(a, b, "every stream has its own ssrc");
        }
    }
    for (who, consumer, mid) in [
        (bob, &bob_audio, &amid),
        (bob, &bob_video, &vmid),
        (carol, &carol_audio, &amid),
        (carol, &carol_video, &vmid),
    ] {
        let got = sim.received(who, consumer);
        assert!(got.len() > 50, "{who}: {}", got.len());
        assert_contiguous(&got);
        assert_payloads_match(&sim, alice, mid, &got);
    }
}

/// A browser's send capabilities: VP8 on 96 with RTX on 97, the mid
/// extension on id 4 (the router uses 101, 102 and 1).
fn browser_caps() -> RtpCapabilities {
    let fb = vec![
        RtcpFeedback::new("nack", ""),
        RtcpFeedback::new("nack", "pli"),
        RtcpFeedback::new("ccm", "fir"),
        RtcpFeedback::new("transport-cc", ""),
    ];
    let mut apt = CodecParameters::new();
    apt.insert("apt".into(), ParamValue::Int(96));
    RtpCapabilities {
        codecs: vec![
            RtpCodecCapability {
                kind: MediaKind::Video,
                mime_type: "video/VP8".into(),
                preferred_payload_type: 96,
                clock_rate: 90_000,
                channels: None,
                parameters: CodecParameters::new(),
                rtcp_feedback: fb,
            },
            RtpCodecCapability {
                kind: MediaKind::Video,
                mime_type: "video/rtx".into(),
                preferred_payload_type: 97,
                clock_rate: 90_000,
                channels: None,
                parameters: apt,
                rtcp_feedback: Vec::new(),
            },
        ],
        header_extensions: vec![RtpHeaderExtension {
            kind: MediaKind::Video,
            uri: uri::MID.into(),
            preferred_id: 4,
            preferred_encrypt: false,
            direction: Some(RtpHeaderExtensionDirection::Sendrecv),
        }],
    }
}

#[test]
fn a_publisher_with_its_own_payload_types_is_forwarded_with_the_routers() {
    let mut sim = Sim::new(4);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let caps = browser_caps();
    let tid = sim.send_transport_with_caps(alice, &caps);
    sim.recv_transport(bob);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let track = sim.track(alice, &mid).local().clone();
    assert_eq!(track.payload_type, 96);
    assert_eq!(track.rtp_parameters.codecs[1].payload_type, 97);
    assert_eq!(track.rtp_parameters.header_extensions[0].id, 4);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);

    // Alice really sent payload type 96.
    let up_pts: Vec<u8> = sim
        .link()
        .log()
        .iter()
        .filter(|e| e.direction == Direction::Up && e.transport.as_ref() == Some(&tid))
        .filter_map(|e| match e.kind {
            PacketKind::Rtp { ssrc, pt, .. } if ssrc == track.ssrc => Some(pt),
            _ => None,
        })
        .collect();
    assert!(!up_pts.is_empty());
    assert!(up_pts.iter().all(|pt| *pt == 96));

    // Bob gets the router's 101, with RTX on 102.
    let sub = sim.subscription(bob, &consumer).clone();
    assert_eq!(sub.payload_type, router_pt(&sim, "video/VP8"));
    assert_eq!(sub.payload_type, 101);
    assert_eq!(sub.rtx_payload_type, Some(102));
    let got = sim.received(bob, &consumer);
    assert!(got.len() > 100, "got {}", got.len());
    assert!(got.iter().all(|r| r.payload_type == 101));
    assert!(is_vp8_keyframe_start(&got[0].payload));
    assert_contiguous(&got);
    assert_payloads_match(&sim, alice, &mid, &got);
}
