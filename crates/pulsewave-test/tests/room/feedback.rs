//! Feedback: NACK and RTX in both directions, keyframe requests.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use pulsewave_client::SyntheticConfig;
use pulsewave_protocol::rtp::MediaKind;
use pulsewave_test::{Direction, Fate, PacketKind, Sim, TrackOptions};

use crate::{
    MS, SECOND, alice_and_bob, assert_contiguous, assert_no_holes, is_vp8_keyframe_start, send_tid,
};

/// Datagrams delivered in `direction` carrying RTP with `ssrc` and `pt`.
fn delivered_rtp(sim: &Sim, direction: Direction, ssrc: u32, pt: u8) -> usize {
    sim.link()
        .log()
        .iter()
        .filter(|e| e.direction == direction && matches!(e.fate, Fate::Delivered(_)))
        .filter(
            |e| matches!(e.kind, PacketKind::Rtp { ssrc: s, pt: p, .. } if s == ssrc && p == pt),
        )
        .count()
}

/// A filter that drops the `n`th RTP packet with `ssrc` going `direction`
/// and remembers its 16-bit sequence number.
fn drop_nth(sim: &mut Sim, direction: Direction, ssrc: u32, n: usize) -> Rc<Cell<Option<u16>>> {
    let dropped = Rc::new(Cell::new(None));
    let seen = dropped.clone();
    let mut count = 0;
    sim.add_filter(move |d| {
        let PacketKind::Rtp { ssrc: s, seq, .. } = d.kind else {
            return false;
        };
        if d.direction != direction || s != ssrc {
            return false;
        }
        count += 1;
        if count == n {
            seen.set(Some(seq));
            return true;
        }
        false
    });
    dropped
}

#[test]
fn a_packet_lost_on_the_way_to_the_subscriber_is_repaired_by_nack_and_rtx() {
    let (mut sim, alice, bob) = alice_and_bob(10);
    let (producer, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    let sub = sim.subscription(bob, &consumer).clone();
    let (rtx_ssrc, rtx_pt) = (sub.rtx_ssrc.unwrap(), sub.rtx_payload_type.unwrap());
    // Without loss, everything came in order. (The RTX ssrc does carry
    // packets already: the bandwidth estimator's probes and padding.)
    assert_contiguous(&sim.received(bob, &consumer));

    let dropped = drop_nth(&mut sim, Direction::Down, sub.ssrc, 10);
    sim.advance(2 * SECOND);

    let lost = dropped.get().expect("the 10th packet was dropped");
    let got = sim.received(bob, &consumer);
    assert_no_holes(&got);
    let at = |seq: u16| {
        got.iter()
            .find(|r| r.seq_no as u16 == seq)
            .unwrap_or_else(|| panic!("seq {seq} never arrived"))
            .at
    };
    assert!(
        at(lost) > at(lost.wrapping_add(1)),
        "the lost packet arrived late, after the next one: a retransmission"
    );
    assert!(
        delivered_rtp(&sim, Direction::Down, rtx_ssrc, rtx_pt) >= 1,
        "the server sent it again on the consumer's RTX ssrc and payload type"
    );
    // Bob asked for it: some RTCP went up from Bob's transport.
    assert!(sim.link().log().iter().any(|e| {
        e.direction == Direction::Up
            && e.participant == Some(bob)
            && matches!(e.kind, PacketKind::Rtcp { pt: 205 })
    }));
}

#[test]
fn a_packet_lost_on_the_way_to_the_server_is_repaired_by_the_sfus_nack() {
    let (mut sim, alice, bob) = alice_and_bob(11);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    let track = sim.track(alice, &mid).local().clone();
    let rtx_ssrc = track.rtx_ssrc.expect("video tracks have RTX");
    let rtx_pt = track.rtp_parameters.codecs[1].payload_type;
    assert_eq!(delivered_rtp(&sim, Direction::Up, rtx_ssrc, rtx_pt), 0);

    let dropped = drop_nth(&mut sim, Direction::Up, track.ssrc, 10);
    sim.advance(2 * SECOND);

    let lost = dropped.get().expect("the 10th packet was dropped");
    assert!(
        delivered_rtp(&sim, Direction::Up, rtx_ssrc, rtx_pt) >= 1,
        "the publisher retransmitted on RTX because the SFU asked"
    );
    let lost_payload = sim
        .track(alice, &mid)
        .sent()
        .iter()
        .find(|s| s.seq_no as u16 == lost)
        .expect("the dropped packet was sent")
        .payload
        .clone();
    let got = sim.received(bob, &consumer);
    assert!(
        got.iter().any(|r| r.payload == lost_payload),
        "the repaired packet was forwarded to the subscriber"
    );
    assert_no_holes(&got);
}

#[test]
fn a_subscribers_keyframe_requests_reach_the_publisher_throttled() {
    let (mut sim, alice, bob) = alice_and_bob(12);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);
    let alice_tid = send_tid(&sim, alice);
    let requests_before = sim.stats().keyframe_requests;

    // Twenty PLIs in 100 ms.
    let t0 = sim.now();
    for _ in 0..20 {
        sim.request_keyframe(bob, &consumer);
        sim.advance(5 * MS);
    }
    sim.advance(SECOND);

    let peer = sim.peer(&alice_tid);
    let n = peer.keyframe_requests_since(&mid, Some(t0));
    assert!((1..=2).contains(&n), "{n} keyframe requests reached Alice");
    let first = peer
        .events()
        .iter()
        .find(|(at, e)| {
            *at >= t0 && matches!(e, pulsewave_client::PeerEvent::KeyframeRequest { .. })
        })
        .map(|(at, _)| *at - t0)
        .unwrap();
    assert!(
        first < Duration::from_millis(60),
        "the first one is not delayed: {first:?}"
    );
    let sent = sim.stats().keyframe_requests - requests_before;
    assert!((1..=2).contains(&sent), "{sent}");
    // Alice answered, and Bob got the keyframe.
    let got = sim.received(bob, &consumer);
    assert!(
        got.iter()
            .any(|r| r.at > t0 + Duration::from_millis(40) && is_vp8_keyframe_start(&r.payload))
    );
    assert_contiguous(&got);
}

/// VP8 with no periodic keyframes that does not answer keyframe requests
/// on its own.
fn lazy_encoder() -> TrackOptions {
    TrackOptions {
        media: Some(SyntheticConfig {
            keyframe_interval: Duration::from_secs(1000),
            ..SyntheticConfig::vp8(30, 300_000)
        }),
        answer_keyframe_requests: false,
        ..TrackOptions::default()
    }
}

#[test]
fn resuming_a_video_consumer_asks_for_a_keyframe_and_waits_for_it() {
    let (mut sim, alice, bob) = alice_and_bob(13);
    let (producer, mid) = sim
        .try_publish(alice, None, MediaKind::Video, "video/VP8", lazy_encoder())
        .unwrap();
    let alice_tid = send_tid(&sim, alice);
    sim.advance(SECOND);
    let caps = sim.router_caps().clone();
    let consumer = sim
        .try_subscribe(bob, None, &producer, &caps, false)
        .unwrap();
    sim.advance(SECOND);
    assert!(sim.received(bob, &consumer).is_empty(), "paused");
    assert_eq!(sim.peer(&alice_tid).keyframe_requests(&mid), 0);

    let resumed = sim.now();
    sim.resume(bob, &consumer).unwrap();
    sim.advance(SECOND);
    let asked = sim
        .peer(&alice_tid)
        .keyframe_requests_since(&mid, Some(resumed));
    assert!(asked >= 1, "resume asks the publisher for a keyframe");
    assert!(asked <= 3, "at most one request per 500 ms: {asked}");
    assert!(
        sim.received(bob, &consumer).is_empty(),
        "no video before a keyframe"
    );

    sim.force_keyframe(alice, &mid);
    sim.advance(SECOND);
    let got = sim.received(bob, &consumer);
    assert!(got.len() > 30, "{}", got.len());
    assert!(is_vp8_keyframe_start(&got[0].payload));
    assert_contiguous(&got);
    // Everything from the keyframe on arrived.
    let sent = sim.track(alice, &mid).sent();
    let key = sent
        .iter()
        .position(|s| s.payload == got[0].payload)
        .unwrap();
    assert!(sent[key].keyframe);
    for (r, s) in got.iter().zip(&sent[key..]) {
        assert_eq!(r.payload, s.payload);
    }
    let recent = sent
        .iter()
        .filter(|s| sim.now().duration_since(s.at) < Duration::from_millis(100))
        .count();
    assert!(
        got.len() + recent >= sent.len() - key,
        "nothing after the keyframe is missing"
    );
}
