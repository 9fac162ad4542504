//! ICE restart: a participant whose network changed gets its media back
//! on the same transports, producers and consumers, with the same ids.

use std::time::Duration;

use pulsewave_core::Event;
use pulsewave_protocol::rtp::MediaKind;

use crate::{SECOND, alice_and_bob, recv_tid, send_tid};

#[test]
fn media_flows_again_after_both_sides_move_and_restart_ice() {
    let (mut sim, alice, bob) = alice_and_bob(31);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    let (send, recv) = (send_tid(&sim, alice), recv_tid(&sim, bob));
    sim.advance(SECOND);
    let before = sim.received(bob, &consumer).len();
    assert!(before > 10, "media flows before the change: {before}");
    let old_params = sim.peer(&recv).options().ice_parameters.clone();

    // Both move to another network: what the server sends to the old
    // addresses is lost, and nothing reaches Bob any more.
    let alice_addr = sim.move_peer(&send);
    let bob_addr = sim.move_peer(&recv);
    sim.advance(SECOND);
    let stalled = sim.received(bob, &consumer).len();
    sim.advance(SECOND);
    assert_eq!(
        sim.received(bob, &consumer).len(),
        stalled,
        "no media reaches Bob's new address before the restart"
    );

    // The clients ask for an ICE restart (mediasoup's restartIce).
    let alice_params = sim.restart_ice(&send).unwrap();
    let bob_params = sim.restart_ice(&recv).unwrap();
    assert_ne!(bob_params.username_fragment, old_params.username_fragment);
    assert_ne!(bob_params.password, old_params.password);
    assert_ne!(alice_params.username_fragment, bob_params.username_fragment);
    assert!(bob_params.ice_lite);
    let restarted = sim.now();
    let flowing = sim.run_until(2 * SECOND, |sim| {
        sim.received(bob, &consumer)
            .iter()
            .any(|r| r.at > restarted)
    });
    assert!(flowing, "media reaches Bob again within 2 s of the restart");
    sim.advance(2 * SECOND);
    let after: Vec<_> = sim
        .received(bob, &consumer)
        .into_iter()
        .filter(|r| r.at > restarted)
        .collect();
    assert!(after.len() > 50, "media keeps flowing: {}", after.len());

    // Same producer, consumer and transports: nothing was closed, and the
    // room still sees both transports connected.
    assert!(sim.is_connected(&send) && sim.is_connected(&recv));
    assert!(
        !sim.events().iter().any(|(_, e)| matches!(
            e,
            Event::TransportClosed { .. } | Event::ConsumerClosed { .. }
        )),
        "nothing closed: {:?}",
        sim.events()
    );
    assert_eq!(sim.room().stats().consumers, 1);
    assert_eq!(sim.subscription(bob, &consumer).transport_id, recv);
    assert_eq!(sim.track(alice, &mid).producer_id(), Some(&producer));
    // The server now answers at the new addresses only, and has learned
    // the peers' new ICE ufrags.
    assert_eq!(
        sim.peer(&recv).transport().local_addr(),
        bob_addr,
        "Bob is on his new address"
    );
    assert_eq!(sim.peer(&send).transport().local_addr(), alice_addr);
}

#[test]
fn a_restart_in_place_swaps_the_route_and_only_the_owner_may_restart() {
    let (mut sim, alice, bob) = alice_and_bob(32);
    let (producer, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let consumer = sim.subscribe(bob, &producer);
    let recv = recv_tid(&sim, bob);
    sim.advance(SECOND);
    let routes = sim.endpoint().stats().routes;
    // A restart without moving: the media goes on after the peer's new
    // checks; the routing table swaps one ufrag for another.
    sim.restart_ice(&recv).unwrap();
    let restarted = sim.now();
    assert!(sim.run_until(2 * SECOND, |sim| {
        sim.received(bob, &consumer)
            .iter()
            .any(|r| r.at > restarted)
    }));
    assert_eq!(sim.endpoint().stats().routes, routes, "no route leaks");
    // Another participant's transport cannot be restarted.
    let now = sim.now();
    let err = sim.room_mut().restart_ice(now, alice, &recv);
    assert!(err.is_err(), "{err:?}");
}

/// The Rust client's stall check (`PeerTransport::set_stall_after`, as the
/// JavaScript client's `stallRestartMs`): a transport whose path is cut is
/// reported lost seconds after the cut, not when str0m's ICE agent gives
/// the pair up (about 15 s), and connected again by the first datagram once
/// the path is back. A quiet but live path (its only traffic the checks
/// the server answers) is never reported lost.
#[test]
fn a_cut_path_is_reported_lost_within_seconds_and_a_quiet_one_never() {
    use pulsewave_client::peer::PeerEvent;

    let (mut sim, alice, bob) = alice_and_bob(32);
    let (producer, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &producer);
    let (send, recv) = (send_tid(&sim, alice), recv_tid(&sim, bob));
    sim.advance(SECOND);
    assert!(sim.received(bob, &consumer).len() > 10, "media flows");
    let lost_events = |sim: &pulsewave_test::Sim, id: &pulsewave_protocol::TransportId| {
        sim.peer(id)
            .events()
            .iter()
            .filter(|(_, e)| *e == PeerEvent::Disconnected)
            .count()
    };

    // Alice's send transport carries media and gets feedback; Bob's
    // receive transport is cut.
    sim.cut(&recv, true);
    let cut_at = sim.now();
    let lost = sim.run_until(20 * SECOND, |sim| lost_events(sim, &recv) > 0);
    assert!(lost, "the cut transport is reported lost");
    let after = sim.now() - cut_at;
    assert!(
        // 2 s from the last datagram (in flight at the cut), a check
        // unanswered for 1 s.
        after >= Duration::from_millis(1900) && after <= Duration::from_secs(5),
        "reported lost {after:?} after the cut (2 s of silence, a check unanswered for 1 s)"
    );
    assert!(!sim.peer(&recv).transport().is_connected());
    assert_eq!(lost_events(&sim, &send), 0, "the live transport is not");

    // The path comes back: the next datagram makes it connected again.
    sim.cut(&recv, false);
    let back = sim.run_until(10 * SECOND, |sim| {
        sim.peer(&recv).transport().is_connected()
    });
    assert!(back, "connected again once datagrams arrive");
    assert_eq!(lost_events(&sim, &recv), 1, "reported lost once");

    // Quiet but live: Bob's consumer paused, nothing but checks and RTCP
    // on his receive transport for 20 s.
    let now = sim.now();
    sim.room_mut()
        .pause_consumer(now, bob, &consumer)
        .expect("Bob pauses his own consumer");
    sim.advance(20 * SECOND);
    assert_eq!(
        lost_events(&sim, &recv),
        1,
        "a quiet live path is never reported lost"
    );
    assert!(sim.peer(&recv).transport().is_connected());
}
