//! Active speakers from synthetic audio levels, on the virtual clock: who
//! speaks changes, silence and mute are excluded, the rate is bounded.

use std::time::{Duration, Instant};

use pulsewave_core::{ActiveSpeaker, Event, Owner, SPEAKER_INTERVAL};
use pulsewave_protocol::MediaKind;
use pulsewave_test::Sim;

use crate::send_tid;

/// The speaker lists the room reported, with their times.
fn reports(sim: &Sim) -> Vec<(Instant, Vec<ActiveSpeaker>)> {
    sim.events()
        .iter()
        .filter_map(|(at, e)| match e {
            Event::ActiveSpeakers { speakers } => Some((*at, speakers.clone())),
            _ => None,
        })
        .collect()
}

/// The owners of the last list reported.
fn speaking(sim: &Sim) -> Vec<Owner> {
    reports(sim)
        .last()
        .map(|(_, s)| s.iter().map(|s| s.owner).collect())
        .unwrap_or_default()
}

fn set_level(sim: &mut Sim, who: Owner, level: Option<i8>) {
    let tid = send_tid(sim, who);
    sim.peer_mut(&tid).transport_mut().set_audio_level(level);
}

#[test]
fn the_loudest_speaker_leads_silence_and_mute_drop_out_and_reports_are_bounded() {
    let mut sim = Sim::new(7);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    sim.send_transport(alice);
    sim.send_transport(bob);
    let (alice_mic, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.publish(bob, MediaKind::Audio, "audio/opus");
    // Both silent at first: nobody speaks.
    set_level(&mut sim, alice, Some(-127));
    set_level(&mut sim, bob, Some(-127));
    sim.advance(Duration::from_secs(2));
    assert!(speaking(&sim).is_empty(), "{:?}", reports(&sim));

    // Alice speaks loudly (-6 dBov): she is the speaker within two intervals.
    set_level(&mut sim, alice, Some(-6));
    sim.advance(2 * SPEAKER_INTERVAL + Duration::from_millis(50));
    assert_eq!(speaking(&sim), [alice]);

    // Bob speaks louder (-1 dBov), Alice softer (-30): Bob leads.
    set_level(&mut sim, bob, Some(-1));
    set_level(&mut sim, alice, Some(-30));
    sim.advance(3 * SPEAKER_INTERVAL);
    assert_eq!(speaking(&sim), [bob, alice]);
    let last = reports(&sim).last().map(|(_, s)| s.clone()).unwrap();
    assert!(last[0].level > last[1].level, "{last:?}");
    assert!(last.iter().all(|s| s.level % 125 == 0 && s.level <= 1000));

    // Bob goes silent (DTX-style -127): only Alice is left.
    set_level(&mut sim, bob, Some(-127));
    sim.advance(3 * SPEAKER_INTERVAL);
    assert_eq!(speaking(&sim), [alice]);

    // Alice is muted (her producer paused) though her client still sends
    // loud packets: nobody speaks, and the empty list is reported.
    set_level(&mut sim, alice, Some(-3));
    let now = sim.now();
    sim.room_mut()
        .pause_producer(now, alice, &alice_mic)
        .unwrap();
    sim.advance(3 * SPEAKER_INTERVAL);
    assert!(speaking(&sim).is_empty(), "{:?}", reports(&sim).last());

    // Rate: never two reports within one interval, and only on change:
    // a steady speaker for 5 s adds one report, not one per interval.
    let before = reports(&sim).len();
    let now = sim.now();
    sim.room_mut()
        .resume_producer(now, alice, &alice_mic)
        .unwrap();
    sim.advance(Duration::from_secs(5));
    let all = reports(&sim);
    assert!(
        all.len() - before <= 2,
        "steady speech reported {} times",
        all.len() - before
    );
    for w in all.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= SPEAKER_INTERVAL,
            "two reports {:?} apart",
            w[1].0 - w[0].0
        );
    }
    for (_, list) in &all {
        assert!(
            list.windows(2).all(|w| w[0].level >= w[1].level),
            "loudest first: {list:?}"
        );
    }
}
