//! Mute, close, leave, ICE timeout: what subscribers stop receiving and what
//! signaling is told.

use std::time::Duration;

use pulsewave_core::{CloseReason, Error, Event, RoomConfig, StateChange};
use pulsewave_protocol::rtp::MediaKind;
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_test::{SERVER_ADDR, Sim, SimConfig};

use crate::{
    MS, SECOND, alice_and_bob, assert_contiguous, is_vp8_keyframe_start, recv_tid, send_tid,
};

#[test]
fn mute_stops_every_subscriber_and_unmute_resumes_without_a_gap() {
    let (mut sim, alice, bob) = alice_and_bob(20);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let (video, vmid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let consumers = [
        (bob, sim.subscribe(bob, &video)),
        (bob, sim.subscribe(bob, &audio)),
        (carol, sim.subscribe(carol, &video)),
        (carol, sim.subscribe(carol, &audio)),
    ];
    sim.advance(2 * SECOND);
    let alice_tid = send_tid(&sim, alice);

    let now = sim.now();
    sim.room_mut().pause_producer(now, alice, &video).unwrap();
    sim.room_mut().pause_producer(now, alice, &audio).unwrap();
    sim.advance(50 * MS); // what was on the wire lands
    let before: Vec<usize> = consumers
        .iter()
        .map(|(who, c)| sim.received(*who, c).len())
        .collect();
    sim.advance(SECOND);
    for ((who, c), n) in consumers.iter().zip(&before) {
        assert_eq!(
            sim.received(*who, c).len(),
            *n,
            "{who} got media while muted"
        );
    }

    let unmuted = sim.now();
    sim.room_mut()
        .resume_producer(unmuted, alice, &video)
        .unwrap();
    sim.room_mut()
        .resume_producer(unmuted, alice, &audio)
        .unwrap();
    sim.advance(SECOND);
    assert!(
        sim.peer(&alice_tid)
            .keyframe_requests_since(&vmid, Some(unmuted))
            >= 1,
        "unmuting video asks for a keyframe"
    );
    for ((who, c), n) in consumers.iter().zip(&before) {
        let got = sim.received(*who, c);
        assert!(got.len() > n + 20, "{who} gets media again");
        // No gap in sequence numbers across the mute: the receiver sees
        // nothing to repair.
        assert_contiguous(&got);
        // The timestamp moved on by about the muted time.
        let jump = got[*n].rtp_time.wrapping_sub(got[n - 1].rtp_time);
        let clock = if sim.subscription(*who, c).kind == MediaKind::Video {
            90_000
        } else {
            48_000
        };
        assert!(
            jump > clock && jump < clock * 3 / 2,
            "timestamp jump {jump} for about 1.05 s at {clock} Hz"
        );
        if sim.subscription(*who, c).kind == MediaKind::Video {
            assert!(
                is_vp8_keyframe_start(&got[*n].payload),
                "video resumes on a keyframe"
            );
        }
    }
}

fn consumer_closed(events: &[(std::time::Instant, Event)]) -> Vec<(String, String, &'static str)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ConsumerClosed {
                consumer_id,
                owner,
                reason,
                ..
            } => Some((consumer_id.to_string(), owner.to_string(), reason.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn closing_a_producer_closes_its_consumers() {
    let (mut sim, alice, bob) = alice_and_bob(21);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &video);
    let carol_c = sim.subscribe(carol, &video);
    sim.advance(SECOND);
    sim.take_events();

    let now = sim.now();
    sim.room_mut().close_producer(now, alice, &video).unwrap();
    sim.advance(50 * MS);
    let events = sim.take_events();
    let mut closed = consumer_closed(&events);
    closed.sort();
    let mut expected = vec![
        (
            bob_c.to_string(),
            bob.to_string(),
            CloseReason::ProducerClosed.as_str(),
        ),
        (
            carol_c.to_string(),
            carol.to_string(),
            CloseReason::ProducerClosed.as_str(),
        ),
    ];
    expected.sort();
    assert_eq!(closed, expected);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::ProducerClosed { .. })),
        "the caller knows it closed the producer"
    );
    assert_eq!(sim.stats().producers, 0);
    assert_eq!(sim.stats().consumers, 0);
    let n = sim.received(bob, &bob_c).len();
    sim.advance(SECOND);
    assert_eq!(
        sim.received(bob, &bob_c).len(),
        n,
        "nothing after the close"
    );
    // The ids are gone.
    let now = sim.now();
    assert!(matches!(
        sim.room_mut().resume_consumer(now, bob, &bob_c),
        Err(Error::ConsumerNotFound(_))
    ));
}

#[test]
fn the_publisher_leaving_closes_its_consumers() {
    let (mut sim, alice, bob) = alice_and_bob(22);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let bob_v = sim.subscribe(bob, &video);
    let bob_a = sim.subscribe(bob, &audio);
    sim.advance(SECOND);
    sim.take_events();

    let now = sim.now();
    sim.room_mut().close_participant(now, alice);
    sim.advance(50 * MS);
    let events = sim.take_events();
    let mut closed = consumer_closed(&events);
    closed.sort();
    let mut expected = vec![
        (
            bob_v.to_string(),
            bob.to_string(),
            CloseReason::ProducerClosed.as_str(),
        ),
        (
            bob_a.to_string(),
            bob.to_string(),
            CloseReason::ProducerClosed.as_str(),
        ),
    ];
    expected.sort();
    assert_eq!(closed, expected);
    // Alice's own producers are reported once each, as state changes only
    // (no ProducerClosed event: her leaving is not news to her).
    let mut state: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.1 {
            Event::State(StateChange::ProducerClosed {
                producer_id, owner, ..
            }) if *owner == alice => Some(producer_id.to_string()),
            _ => None,
        })
        .collect();
    state.sort();
    let mut published = vec![video.to_string(), audio.to_string()];
    published.sort();
    assert_eq!(state, published, "{events:?}");
    assert_eq!(
        events.len(),
        4,
        "only Bob's consumers and Alice's producers: {events:?}"
    );
    assert_eq!(sim.stats().transports, 1, "Bob's receive transport stays");
    assert!(sim.room().is_transport_connected(&recv_tid(&sim, bob)));
}

#[test]
fn rooms_are_separate() {
    let (mut a, alice, _bob) = alice_and_bob(23);
    let (video, _) = a.publish(alice, MediaKind::Video, "video/VP8");
    let alice_tid = send_tid(&a, alice);

    let (mut b, _, dave) = alice_and_bob(24);
    let caps = b.router_caps().clone();
    let now = b.now();
    let err = b
        .room_mut()
        .consume(now, dave, None, &video, &caps)
        .unwrap_err();
    assert!(matches!(err, Error::ProducerNotFound(_)), "{err:?}");
    // Even under the same participant id.
    let err = b.room_mut().close_producer(now, alice, &video).unwrap_err();
    assert!(matches!(err, Error::ProducerNotFound(_)), "{err:?}");
    let err = b
        .room_mut()
        .produce(
            now,
            alice,
            Some(&alice_tid),
            MediaKind::Audio,
            Default::default(),
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::TransportNotFound(_)), "{err:?}");
}

fn quick_ice(seed: u64) -> Sim {
    Sim::with_config(SimConfig {
        seed,
        room: RoomConfig {
            local_addr: SERVER_ADDR,
            ice_timeout: Duration::from_secs(5),
            ..RoomConfig::default()
        },
        ..SimConfig::default()
    })
}

#[test]
fn a_publisher_that_goes_silent_is_closed_after_the_ice_timeout() {
    let mut sim = quick_ice(25);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let alice_tid = sim.send_transport(alice);
    let bob_tid = sim.recv_transport(bob);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    sim.take_events();

    // Alice's network goes away.
    let cut = sim.now();
    sim.cut(&alice_tid, true);
    sim.advance(4 * SECOND);
    // (Connection quality is reported on its own timer; not about closing.)
    let early: Vec<_> = sim
        .events()
        .iter()
        .filter(|(_, e)| !matches!(e, Event::ConnectionQuality { .. }))
        .collect();
    assert!(early.is_empty(), "not before the timeout: {early:?}");
    sim.advance(3 * SECOND);

    let events = sim.take_events();
    let closed_at = events
        .iter()
        .find_map(|(at, e)| match e {
            Event::TransportClosed {
                transport_id,
                owner,
                reason,
            } if transport_id == &alice_tid => {
                assert_eq!(*owner, alice);
                assert_eq!(*reason, CloseReason::IceTimeout);
                Some(*at)
            }
            _ => None,
        })
        .expect("Alice's transport closed");
    let after = closed_at - cut;
    assert!(
        after >= Duration::from_secs(5) && after < Duration::from_secs(6),
        "closed {after:?} after the cut"
    );
    assert!(events.iter().any(|(_, e)| matches!(e,
        Event::ProducerClosed { producer_id, reason: CloseReason::TransportClosed, .. }
            if producer_id == &video)));
    assert!(events.iter().any(|(_, e)| matches!(e,
        Event::ConsumerClosed { consumer_id, owner, reason: CloseReason::ProducerClosed, .. }
            if consumer_id == &bob_c && *owner == bob)));
    assert!(
        sim.room().is_transport_connected(&bob_tid),
        "Bob is unaffected"
    );
    assert_eq!(sim.stats().transports, 1);
}

#[test]
fn a_transport_that_never_connects_is_closed_after_the_ice_timeout() {
    let mut sim = quick_ice(26);
    let alice = sim.join("alice");
    let tid = sim
        .open_transport(alice, TransportDirection::Send, None)
        .unwrap();
    sim.cut(&tid, true);
    let dtls = sim.peer(&tid).transport().dtls_parameters();
    let now = sim.now();
    sim.room_mut()
        .connect_transport(now, alice, &tid, &dtls)
        .unwrap();
    sim.advance(6 * SECOND);
    let events = sim.take_events();
    assert!(
        events.iter().any(|(_, e)| matches!(e,
            Event::TransportClosed { transport_id, reason: CloseReason::IceTimeout, .. }
                if transport_id == &tid)),
        "{events:?}"
    );
    assert_eq!(sim.stats().transports, 0);
}
