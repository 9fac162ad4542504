//! The endpoint: many rooms behind one socket, routed by ICE ufrag and
//! authenticated address, one timer heap, and a panicking room contained.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use pulsewave_core::{Datagram, Event, Protocol, RoomGone};
use pulsewave_protocol::MediaKind;
use pulsewave_test::{Direction, PacketKind, Sim};

use crate::{SECOND, assert_contiguous, send_tid};

/// A datagram taken off the link: its source and bytes.
type Caught = (SocketAddr, Vec<u8>);

/// Two rooms on one endpoint (one socket, one address): each subscriber
/// gets its own room's media, intact, and nothing of the other room's.
#[test]
fn two_rooms_share_one_endpoint() {
    let mut sim = Sim::new(300);
    let second = sim.open_room();
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let carol = sim.join_room("carol", second);
    let dave = sim.join_room("dave", second);
    for p in [alice, carol] {
        sim.send_transport(p);
    }
    for p in [bob, dave] {
        sim.recv_transport(p);
    }
    let (a_video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let (c_video, _) = sim.publish(carol, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &a_video);
    let dave_c = sim.subscribe(dave, &c_video);
    sim.advance(2 * SECOND);
    for (who, consumer) in [(bob, &bob_c), (dave, &dave_c)] {
        let got = sim.received(who, consumer);
        assert!(got.len() > 100, "{who}: {}", got.len());
        assert_contiguous(&got);
    }
    // Rooms are separate: Bob cannot subscribe to Carol's producer.
    let caps = sim.router_caps().clone();
    assert!(sim.try_subscribe(bob, None, &c_video, &caps, true).is_err());
    assert_eq!(sim.endpoint().stats().rooms, 2);
    assert_eq!(sim.room_by_id(second).stats().producers, 1);
}

/// A room that panics (a bug) is dropped with everything in it and
/// reported; the other rooms of the endpoint keep forwarding.
#[test]
fn a_panicking_room_is_contained() {
    let mut sim = Sim::new(301);
    let doomed = sim.open_room();
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let carol = sim.join_room("carol", doomed);
    sim.send_transport(alice);
    sim.recv_transport(bob);
    sim.send_transport(carol);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &video);
    sim.publish(carol, MediaKind::Audio, "audio/opus");
    sim.advance(SECOND);

    let now = sim.now();
    let r = sim
        .endpoint_mut()
        .with_room(now, doomed, |room, _| room.panic_for_test());
    assert_eq!(r, Err(RoomGone));
    assert!(sim.endpoint().room(doomed).is_none());
    assert_eq!(sim.endpoint().stats().rooms_failed, 1);
    assert_eq!(sim.endpoint().stats().rooms, 1);
    sim.advance(SECOND / 10);
    assert!(
        sim.events().iter().any(|(_, e)| *e == Event::RoomFailed),
        "the failure is reported"
    );

    // The survivor goes on, and Carol's datagrams now reach nobody.
    let before = sim.received(bob, &consumer).len();
    sim.advance(2 * SECOND);
    let got = sim.received(bob, &consumer);
    assert!(got.len() > before + 100, "{} -> {}", before, got.len());
    assert_contiguous(&got);
    assert!(sim.endpoint().stats().datagrams_unknown > 0);
    assert_eq!(
        sim.endpoint_mut().with_room(now, doomed, |_, _| ()),
        Err(RoomGone)
    );
}

/// The run-loop contract: a forwarded packet waits for the next
/// `handle_timeout`, and `poll_timeout` says so at once (no hidden
/// deadline); that timeout sends it.
#[test]
fn a_forwarded_packet_leaves_at_the_timeout_poll_timeout_asks_for_now() {
    let (mut sim, alice, bob) = crate::alice_and_bob(302);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    let bob_tid = sim.subscription(bob, &consumer).transport_id.clone();
    let bob_addr = sim.peer(&bob_tid).transport().local_addr();
    // Catch one of Alice's RTP packets on its way to the server.
    let tid = send_tid(&sim, alice);
    let caught: Rc<RefCell<Option<Caught>>> = Rc::default();
    let slot = caught.clone();
    let filter = sim.add_filter(move |d| {
        let mine = d.direction == Direction::Up
            && d.transport.as_ref() == Some(&tid)
            && matches!(d.kind, PacketKind::Rtp { .. })
            && slot.borrow().is_none();
        if mine {
            *slot.borrow_mut() = Some((d.source, d.contents.clone()));
        }
        mine
    });
    assert!(sim.run_until(SECOND, |_| caught.borrow().is_some()));
    sim.remove_filter(filter);
    let (source, contents) = caught.borrow_mut().take().unwrap();

    // Between the datagram and the timeout: nothing for Bob yet, and the
    // endpoint wants its timeout now.
    let now = sim.now();
    let endpoint = sim.endpoint_mut();
    while endpoint.poll_transmit().is_some() {}
    endpoint
        .handle_datagram(
            now,
            Datagram {
                proto: Protocol::Udp,
                source,
                destination: endpoint.local_addr(),
                contents: &contents,
            },
        )
        .unwrap();
    let mut to_bob = 0;
    while let Some(t) = endpoint.poll_transmit() {
        to_bob += usize::from(t.destination == bob_addr);
    }
    assert_eq!(to_bob, 0, "forwarded packets wait for the timeout");
    assert_eq!(endpoint.poll_timeout(), Some(now), "and it is due now");
    endpoint.handle_timeout(now);
    let mut to_bob = 0;
    while let Some(t) = endpoint.poll_transmit() {
        to_bob += usize::from(t.destination == bob_addr);
    }
    assert!(to_bob >= 1, "the timeout sends the forwarded packet");
}

/// What the media worker does with a burst: it reads every datagram
/// waiting on the socket, then runs the timers. Alice's packets held back
/// (eight or more) and fed at one instant, then `handle_timeout` for as
/// long as `poll_timeout` asks within the millisecond (the worker's loop),
/// reach Bob whole, in order and at once (the estimator's pacer lets a
/// burst through), and that loop ends after one or two timeouts, not one
/// per packet.
#[test]
fn a_burst_read_before_the_timers_leaves_whole_and_in_order() {
    let (mut sim, alice, bob) = crate::alice_and_bob(304);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    let tid = send_tid(&sim, alice);
    let held: Rc<RefCell<Vec<Caught>>> = Rc::default();
    let slot = held.clone();
    let filter = sim.add_filter(move |d| {
        let mine = d.direction == Direction::Up
            && d.transport.as_ref() == Some(&tid)
            && matches!(d.kind, PacketKind::Rtp { .. });
        if mine {
            slot.borrow_mut().push((d.source, d.contents.clone()));
        }
        mine
    });
    assert!(sim.run_until(SECOND, |_| held.borrow().len() >= 8));
    sim.remove_filter(filter);
    let burst = held.borrow_mut().split_off(0);
    let before = sim.received(bob, &consumer).len();

    let now = sim.now();
    for (source, contents) in &burst {
        sim.inject(*source, contents).unwrap();
    }
    let endpoint = sim.endpoint_mut();
    assert_eq!(endpoint.poll_timeout(), Some(now), "due at once");
    // The worker's loop: the timers due within its timer's resolution
    // (tokio's, 1 ms), each at its deadline. The estimator's pacer lets
    // the whole burst out in one drain (str0m's pacer asked for a timeout
    // 1 us later after each packet, a whole `Rtc` timeout per packet,
    // before the patch described in vendor/str0m/PATCH.md).
    let horizon = now + Duration::from_millis(1);
    let mut rounds = 0;
    while let Some(at) = endpoint.poll_timeout().filter(|t| *t <= horizon) {
        rounds += 1;
        assert!(rounds <= 4 * burst.len(), "the timers keep asking for now");
        endpoint.handle_timeout(at);
    }
    assert!(
        rounds <= 2,
        "{rounds} timeouts for a burst of {}: one per packet",
        burst.len()
    );
    // The link carries what the endpoint sent to Bob.
    sim.advance(SECOND / 20);
    let got = sim.received(bob, &consumer);
    let new = &got[before..];
    assert!(new.len() >= burst.len(), "{} of {}", new.len(), burst.len());
    assert_contiguous(&new[..burst.len()]);
    assert_contiguous(&got);
    // All sent within that millisecond: they arrive together, one link
    // latency later, none left for a later timer.
    let first = new[0].at;
    assert!(
        new[..burst.len()].iter().all(|r| r.at == first),
        "{:?}",
        new.iter().map(|r| r.at - now).collect::<Vec<_>>()
    );
}

/// A closed transport's addresses are forgotten by the endpoint (they used
/// to live until the room closed). The cap per transport is unit-tested
/// with the transport.
#[test]
fn address_routes_are_removed_with_the_transport() {
    let (mut sim, alice, _bob) = crate::alice_and_bob(303);
    sim.publish(alice, MediaKind::Video, "video/VP8");
    sim.advance(SECOND);
    let tid = send_tid(&sim, alice);
    let routed_before = sim.endpoint().stats().datagrams_routed;
    assert!(routed_before > 0);
    // Each connected transport has two routes: its ufrag and its address.
    assert_eq!(sim.endpoint().stats().routes, 4);
    // Close Alice's transport: datagrams from her address stop routing.
    let now = sim.now();
    sim.room_mut().close_transport(now, alice, &tid).unwrap();
    assert_eq!(sim.endpoint().stats().routes, 2);
    let unknown = sim.endpoint().stats().datagrams_unknown;
    sim.advance(SECOND);
    assert!(
        sim.endpoint().stats().datagrams_unknown > unknown,
        "her packets now come from an unknown source"
    );
    // Closing the room forgets the rest.
    let (now, room) = (sim.now(), sim.endpoint().rooms().next().unwrap().0);
    assert!(sim.endpoint_mut().close_room(now, room));
    assert_eq!(sim.endpoint().stats().routes, 0);
}

/// The endpoint's randomness comes from its configured seed: two
/// simulations with the same seed hand out the same ids, ICE credentials
/// and SSRCs and report the same events at the same virtual times; another
/// seed gives other ids.
#[test]
fn the_same_seed_gives_the_same_ids_and_events() {
    let run = |seed: u64| {
        let (mut sim, alice, bob) = crate::alice_and_bob(seed);
        let (producer, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
        let consumer = sim.subscribe(bob, &producer);
        sim.advance(SECOND);
        let send = send_tid(&sim, alice);
        let recv = crate::recv_tid(&sim, bob);
        let ufrags: Vec<String> = [&send, &recv]
            .iter()
            .map(|t| {
                sim.peer(t)
                    .options()
                    .ice_parameters
                    .username_fragment
                    .clone()
            })
            .collect();
        let ssrc = sim.subscription(bob, &consumer).ssrc;
        let start = sim.start();
        let events: Vec<String> = sim
            .events()
            .iter()
            .map(|(at, e)| format!("{:?} {e:?}", *at - start))
            .collect();
        (send, recv, producer, consumer, ufrags, ssrc, events)
    };
    let (a, b) = (run(17), run(17));
    assert_eq!(a.0, b.0, "send transport id");
    assert_eq!(a.1, b.1, "receive transport id");
    assert_eq!(a.2, b.2, "producer id");
    assert_eq!(a.3, b.3, "consumer id");
    assert_eq!(a.4, b.4, "ICE ufrags");
    assert_eq!(a.5, b.5, "consumer SSRC");
    assert!(!a.6.is_empty());
    assert_eq!(a.6, b.6, "events and their times");
    let c = run(18);
    assert_ne!(a.0, c.0, "another seed, another transport id");
    assert_ne!(a.3, c.3, "another seed, another consumer id");
    assert_ne!(a.4, c.4, "another seed, other ufrags");
}
