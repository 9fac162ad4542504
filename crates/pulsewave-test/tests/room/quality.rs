//! Connection quality on a lossy link, on the virtual clock: it degrades
//! with loss, recovers, and is `lost` while the network is cut.

use std::time::Duration;

use pulsewave_core::{ConnectionQuality, Event, Owner};
use pulsewave_protocol::MediaKind;
use pulsewave_test::{Direction, LinkConfig, Sim};

use crate::{alice_and_bob, send_tid};

/// The last quality reported for `who`.
pub(crate) fn quality(sim: &Sim, who: Owner) -> Option<ConnectionQuality> {
    sim.events().iter().rev().find_map(|(_, e)| match e {
        Event::ConnectionQuality { owner, quality } if *owner == who => Some(*quality),
        _ => None,
    })
}

fn uplink_loss(sim: &mut Sim, loss: f64) {
    sim.link_mut().set_config(
        Direction::Up,
        LinkConfig {
            loss,
            ..LinkConfig::default()
        },
    );
}

#[test]
fn quality_degrades_with_loss_recovers_and_is_lost_when_cut() {
    let (mut sim, alice, bob) = alice_and_bob(11);
    let (mic, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.subscribe(bob, &mic);
    sim.advance(Duration::from_secs(5));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Excellent));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));

    // 15 % of what Alice sends is lost: poor.
    uplink_loss(&mut sim, 0.15);
    sim.advance(Duration::from_secs(5));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Poor));

    // The loss goes away: excellent again.
    uplink_loss(&mut sim, 0.0);
    sim.advance(Duration::from_secs(5));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Excellent));

    // Her network is cut: lost, while Bob stays fine; then back.
    let tid = send_tid(&sim, alice);
    sim.cut(&tid, true);
    sim.advance(Duration::from_secs(12));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Lost));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));
    sim.cut(&tid, false);
    sim.advance(Duration::from_secs(6));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Excellent));

    // Reported on change only: a steady link adds no report.
    let reports = |sim: &Sim| {
        sim.events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::ConnectionQuality { .. }))
            .count()
    };
    let before = reports(&sim);
    sim.advance(Duration::from_secs(10));
    assert_eq!(reports(&sim), before);
}

fn downlink(sim: &mut Sim, config: LinkConfig) {
    sim.link_mut().set_config(Direction::Down, config);
}

#[test]
fn a_lossy_downlink_scores_the_subscriber_down_then_it_recovers() {
    let (mut sim, alice, bob) = alice_and_bob(12);
    let (mic, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.subscribe(bob, &mic);
    sim.advance(Duration::from_secs(5));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));

    // 15 % of what the room sends is lost, nothing of what it receives:
    // Bob reports the loss in his receiver reports and is scored poor;
    // Alice's upstream is clean.
    downlink(
        &mut sim,
        LinkConfig {
            loss: 0.15,
            ..LinkConfig::default()
        },
    );
    sim.advance(Duration::from_secs(8));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Poor));
    assert_eq!(quality(&sim, alice), Some(ConnectionQuality::Excellent));

    // The loss goes away: excellent again.
    downlink(&mut sim, LinkConfig::default());
    sim.advance(Duration::from_secs(8));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));
}

#[test]
fn a_high_round_trip_time_is_not_excellent() {
    let (mut sim, alice, bob) = alice_and_bob(13);
    let (mic, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.subscribe(bob, &mic);
    sim.advance(Duration::from_secs(5));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));

    // 200 ms each way: a 400 ms round trip, no loss, no jitter.
    let slow = LinkConfig::with_latency(Duration::from_millis(200));
    downlink(&mut sim, slow);
    sim.link_mut().set_config(Direction::Up, slow);
    sim.advance(Duration::from_secs(8));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Good));

    // 400 ms each way: poor.
    let slower = LinkConfig::with_latency(Duration::from_millis(400));
    downlink(&mut sim, slower);
    sim.link_mut().set_config(Direction::Up, slower);
    sim.advance(Duration::from_secs(8));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Poor));

    // Back to 10 ms: excellent (the packets the change reorders are
    // reported lost for a moment).
    downlink(&mut sim, LinkConfig::default());
    sim.link_mut()
        .set_config(Direction::Up, LinkConfig::default());
    sim.advance(Duration::from_secs(12));
    assert_eq!(quality(&sim, bob), Some(ConnectionQuality::Excellent));
}
