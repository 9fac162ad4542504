//! Adaptive media on the simulated network: each subscriber's bandwidth is
//! estimated from its transport-wide-cc feedback and divided among its
//! consumers by the allocator, with temporal layers, congestion pauses,
//! priorities, dynacast and adaptive stream.
//!
//! The publisher sends what Chromium sends for a 720p camera: three VP8
//! simulcast layers (150 kbit/s at 15 fps, 500 kbit/s and 1.2 Mbit/s at
//! 30 fps), each with three temporal layers; subscribers sit behind links
//! with a capacity and a 100 ms drop-tail queue ([`Bottleneck`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use pulsewave_client::parse_synthetic;
use pulsewave_core::{Event, Owner, View};
use pulsewave_protocol::rtp::MediaKind;
use pulsewave_protocol::{ConsumerId, ProducerId};
use pulsewave_test::{Bottleneck, Direction, Sim, SimulcastOptions};

use crate::{MS, SECOND, alice_and_bob, recv_tid};

const VP8: &str = "video/VP8";

/// Alice publishing a three-layer, three-temporal-layer camera; Bob with a
/// receive transport.
fn camera(seed: u64) -> (Sim, Owner, Owner, ProducerId, String) {
    let (mut sim, alice, bob) = alice_and_bob(seed);
    let (producer, mid) = publish_camera(&mut sim, alice);
    sim.advance(SECOND / 2);
    (sim, alice, bob, producer, mid)
}

fn publish_camera(sim: &mut Sim, who: Owner) -> (ProducerId, String) {
    let mut options = SimulcastOptions::new(VP8, &["r0", "r1", "r2"]);
    for (_, config) in &mut options.layers {
        config.temporal_layers = 3;
    }
    sim.try_publish_simulcast(who, None, VP8, options)
        .expect("publish the camera")
}

fn limit(sim: &mut Sim, who: Owner, rate_bps: Option<u64>) {
    sim.link_mut()
        .set_bottleneck(who, Direction::Down, rate_bps.map(Bottleneck::rate));
}

/// The layers `consumer` forwards over time, from the room's events.
fn layer_changes(
    events: &[(Instant, Event)],
    consumer: &ConsumerId,
) -> Vec<(Instant, Option<(u8, u8)>)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::ConsumerLayersChanged {
                consumer_id,
                layers,
                ..
            } if consumer_id == consumer => Some((*at, *layers)),
            _ => None,
        })
        .collect()
}

/// Frames `who` got on `consumer` since `since`: per frame (layer, frame
/// number), its arrival (last packet) and whether every packet came.
#[derive(Debug, Default)]
struct Frames {
    /// Arrival of each complete frame, in order.
    complete: Vec<Instant>,
    /// Frames with packets missing.
    incomplete: usize,
}

fn frames(sim: &Sim, who: Owner, consumer: &ConsumerId, since: Instant) -> Frames {
    let mut by_frame: BTreeMap<(String, u32), (u16, u16, Instant)> = BTreeMap::new();
    for (r, origin) in sim.received_origins(who, consumer) {
        if r.at < since {
            continue;
        }
        let Some(info) = parse_synthetic(&r.payload) else {
            continue;
        };
        let rid = origin.and_then(|o| o.rid).unwrap_or_default();
        let e = by_frame
            .entry((rid, info.frame_number))
            .or_insert((0, info.packet_count, r.at));
        e.0 += 1;
        e.2 = e.2.max(r.at);
    }
    let mut out = Frames::default();
    for (got, count, at) in by_frame.values() {
        if got >= count {
            out.complete.push(*at);
        } else {
            out.incomplete += 1;
        }
    }
    out.complete.sort();
    out
}

/// The longest time without a complete frame, between `from` and `to`.
fn longest_freeze(f: &Frames, from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for at in f
        .complete
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
    {
        worst = worst.max(at - last);
        last = at;
    }
    worst.max(to.saturating_duration_since(last))
}

/// The cap is lifted at several moments of the allocator's probe cycle
/// (probes back off to one every 6 s plus a 3 s window while a cap
/// lasts): the climb back must not depend on where in that cycle the
/// network got better. With backoffs up to 16 s and no probe while holding
/// after a downgrade, lifting 0.7 s later than at 20 s took 16.5 s.
#[test]
fn a_subscriber_behind_400_kbits_settles_low_and_climbs_back_when_the_cap_lifts() {
    for k in 0..8 {
        capped_then_lifted(20 * SECOND + Duration::from_millis(1_300 * k));
    }
}

/// A 400 kbit/s cap for `capped`, then none.
fn capped_then_lifted(capped: Duration) {
    let (mut sim, _alice, bob, producer, _mid) = camera(300);
    limit(&mut sim, bob, Some(400_000));
    sim.take_events();
    let start = sim.now();
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(capped);
    let events = sim.take_events();
    let changes = layer_changes(&events, &consumer);
    assert!(!changes.is_empty(), "the consumer forwards something");
    // Settled on the lowest spatial layer within 5 s, and stays there.
    let settled = changes
        .iter()
        .rposition(|(_, l)| l.is_none_or(|l| l.0 != 0))
        .map_or(changes[0].0, |i| {
            changes.get(i + 1).map_or(sim.now(), |c| c.0)
        });
    assert!(
        settled <= start + 5 * SECOND,
        "on the lowest layer after {:?}: {changes:?}",
        settled - start
    );
    // From then on: no freeze over 1 s, under 1% of frames damaged.
    let f = frames(&sim, bob, &consumer, settled);
    let freeze = longest_freeze(&f, settled, sim.now());
    assert!(
        freeze <= SECOND,
        "capped {capped:?}: a freeze of {freeze:?}"
    );
    let total = f.complete.len() + f.incomplete;
    assert!(total > 100, "{total} frames");
    assert!(
        f.incomplete * 100 < total,
        "capped {capped:?}: {} of {total} frames damaged",
        f.incomplete
    );

    // The cap lifts: back on the top layer within 15 s.
    limit(&mut sim, bob, None);
    let lifted = sim.now();
    sim.advance(20 * SECOND);
    let changes = layer_changes(&sim.take_events(), &consumer);
    let top = changes
        .iter()
        .find(|(_, l)| l.is_some_and(|l| l.0 == 2))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("capped {capped:?}: never back on the top layer: {changes:?}"));
    assert!(
        top - lifted <= 15 * SECOND,
        "capped {capped:?}: back on top after {:?}",
        top - lifted
    );
}

/// An ICE restart (a network change) starts the subscriber's estimate
/// again from the initial one: what was measured on the old path, here a
/// 100 kbit/s link, says nothing of the new one, and without the reset the
/// browser tests saw video stay paused after an address change. (At
/// 200 kbit/s the lowest layer still flows and the estimate follows the
/// link; at 100 kbit/s video is paused, and once the pause ends the losses
/// str0m's estimate goes back to its delay-based value, which never saw
/// the drop-tail queue grow: the estimate swings with the pause.)
#[test]
fn an_ice_restart_starts_the_estimate_again() {
    let (mut sim, _alice, bob, producer, _mid) = camera(310);
    limit(&mut sim, bob, Some(200_000));
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(10 * SECOND);
    let estimate = |sim: &Sim| sim.room().transport_allocations(bob)[0].available_outgoing_bitrate;
    let low = estimate(&sim).expect("an estimate on the slow link");
    assert!(low < 300_000, "the slow link's estimate: {low}");
    // Bob moves to a fast network and restarts ICE.
    limit(&mut sim, bob, None);
    let recv = recv_tid(&sim, bob);
    sim.move_peer(&recv);
    sim.restart_ice(&recv).unwrap();
    let initial = sim
        .endpoint()
        .room_config()
        .initial_available_outgoing_bitrate;
    let after = estimate(&sim);
    assert!(
        after.is_none_or(|e| e >= initial),
        "the estimate starts again from {initial}, not {after:?}"
    );
    // The new path's estimate climbs from there, and video flows.
    let restarted = sim.now();
    sim.advance(5 * SECOND);
    let now = estimate(&sim).expect("an estimate on the new path");
    assert!(
        now > low * 3,
        "the estimate on the new path: {now} (was {low})"
    );
    let f = frames(&sim, bob, &consumer, restarted);
    assert!(
        f.complete.len() > 50,
        "{} frames after the restart",
        f.complete.len()
    );
}

/// A network change as a browser sees it: the old path dies for 3 s while
/// the server keeps sending into it, then the subscriber comes back from
/// another address with an ICE restart. What was lost on the dead path
/// (reported in the first transport-wide-cc feedback from the new one)
/// must not set the new path's estimate: the top layer comes back.
#[test]
fn after_a_cut_and_a_network_change_the_estimate_does_not_collapse() {
    let (mut sim, _alice, bob, producer, _mid) = camera(311);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(10 * SECOND);
    let top = |sim: &mut Sim| {
        let events = sim.take_events();
        layer_changes(&events, &consumer)
            .last()
            .and_then(|(_, l)| *l)
    };
    assert_eq!(
        top(&mut sim).map(|l| l.0),
        Some(2),
        "unlimited: the top layer"
    );
    let recv = recv_tid(&sim, bob);
    sim.cut(&recv, true);
    sim.advance(3 * SECOND);
    sim.move_peer(&recv);
    sim.cut(&recv, false);
    sim.restart_ice(&recv).unwrap();
    let restarted = sim.now();
    sim.advance(15 * SECOND);
    let estimate = sim.room().transport_allocations(bob)[0].available_outgoing_bitrate;
    let initial = sim
        .endpoint()
        .room_config()
        .initial_available_outgoing_bitrate;
    assert!(
        estimate.is_some_and(|e| e >= initial / 2),
        "the new path's estimate {estimate:?} (initial {initial})"
    );
    let congested = sim.take_events().into_iter().any(|(at, e)| {
        at >= restarted + 5 * SECOND
            && matches!(e, Event::ConsumerCongested { ref consumer_id, congested: true, .. } if *consumer_id == consumer)
    });
    assert!(!congested, "paused for congestion on the new path");
    let layers = sim.room().transport_allocations(bob)[0].consumers.clone();
    let f = frames(&sim, bob, &consumer, restarted + 5 * SECOND);
    assert!(
        f.complete.len() > 200,
        "{} frames in the last 10 s ({layers:?})",
        f.complete.len()
    );
}

#[test]
fn two_subscribers_with_different_caps_get_different_layers() {
    let (mut sim, _alice, bob, producer, _mid) = camera(301);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    limit(&mut sim, bob, Some(400_000));
    let bob_c = sim.subscribe(bob, &producer);
    let carol_c = sim.subscribe(carol, &producer);
    sim.advance(15 * SECOND);
    let events = sim.take_events();
    let last = |c: &ConsumerId| layer_changes(&events, c).last().and_then(|(_, l)| *l);
    assert_eq!(last(&bob_c).map(|l| l.0), Some(0), "Bob behind 400 kbit/s");
    assert_eq!(last(&carol_c), Some((2, 2)), "Carol unlimited: everything");
}

#[test]
fn behind_100_kbits_video_pauses_and_audio_keeps_flowing() {
    let (mut sim, alice, bob, producer, _mid) = camera(302);
    let (audio, amid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    limit(&mut sim, bob, Some(100_000));
    let video = sim.subscribe(bob, &producer);
    let voice = sim.subscribe(bob, &audio);
    sim.advance(10 * SECOND);
    let events = sim.take_events();
    let paused = events.iter().find_map(|(at, e)| match e {
        Event::ConsumerCongested {
            consumer_id,
            congested: true,
            ..
        } if *consumer_id == video => Some(*at),
        _ => None,
    });
    let paused = paused.expect("the video consumer was paused for congestion");
    // From a second after the pause, the audio arrives (what str0m's pacer
    // held of the video is dropped at the pause).
    let from = paused + SECOND;
    let sent: Vec<u64> = sim
        .track(alice, &amid)
        .sent()
        .iter()
        .filter(|s| s.at >= from && s.at < sim.now() - SECOND / 5)
        .map(|s| parse_synthetic(&s.payload).unwrap().sequence)
        .collect();
    let got: Vec<u64> = sim
        .received(bob, &voice)
        .iter()
        .filter_map(|r| parse_synthetic(&r.payload))
        .map(|i| i.sequence)
        .collect();
    let missing = sent.iter().filter(|s| !got.contains(s)).count();
    assert!(sent.len() > 250, "{}", sent.len());
    // str0m's periodic probes (every 5 s while the link is idle enough,
    // at twice the estimate) cost a 100 ms queue of 100 kbit/s a few audio
    // packets each; no more than that.
    assert!(
        missing * 100 <= sent.len() * 3,
        "{missing} of {} audio packets lost behind the paused video",
        sent.len()
    );
    let video_after = sim
        .received(bob, &video)
        .iter()
        .filter(|r| r.at >= from)
        .count();
    assert_eq!(video_after, 0, "no video while paused");
}

#[test]
fn a_screen_share_keeps_its_layer_over_a_camera_when_the_estimate_is_short() {
    let (mut sim, alice, bob, camera_p, _mid) = camera(303);
    let (screen, _) = publish_camera(&mut sim, alice);
    let now = sim.now();
    // What signaling does for a screen share.
    sim.room_mut()
        .set_producer_priority(now, alice, &screen, 255)
        .unwrap();
    limit(&mut sim, bob, Some(1_500_000));
    let cam = sim.subscribe(bob, &camera_p);
    let scr = sim.subscribe(bob, &screen);
    sim.advance(15 * SECOND);
    let events = sim.take_events();
    let last = |c: &ConsumerId| layer_changes(&events, c).last().and_then(|(_, l)| *l);
    let (s_cam, s_scr) = (last(&cam), last(&scr));
    assert!(
        s_scr.is_some_and(|s| s.0 >= 1),
        "the screen share keeps a high layer: {s_scr:?}"
    );
    assert!(
        s_cam < s_scr,
        "the camera gives way: camera {s_cam:?}, screen {s_scr:?}"
    );
}

#[test]
fn a_steady_cap_does_not_make_layers_flap() {
    let (mut sim, _alice, bob, producer, _mid) = camera(304);
    limit(&mut sim, bob, Some(800_000));
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(10 * SECOND);
    sim.take_events();
    sim.advance(60 * SECOND);
    let changes = layer_changes(&sim.take_events(), &consumer);
    // At most 6 changes a minute (one every 10 s), once settled.
    assert!(
        changes.len() <= 6,
        "{} layer changes in a minute at a steady cap: {changes:?}",
        changes.len()
    );
}

#[test]
fn a_temporal_preference_drops_frames_and_keeps_the_stream_valid() {
    let (mut sim, _alice, bob, producer, _mid) = camera(305);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);
    let now = sim.now();
    sim.room_mut()
        .set_consumer_preferred_layers(now, bob, &consumer, Some(2), Some(0))
        .unwrap();
    sim.advance(SECOND / 2);
    let from = sim.now();
    sim.advance(2 * SECOND);
    let got: Vec<_> = sim
        .received(bob, &consumer)
        .into_iter()
        .filter(|r| r.at >= from)
        .collect();
    // The base layer only: a quarter of the frames of a 30 fps stream.
    let frames: std::collections::BTreeSet<u32> = got
        .iter()
        .filter_map(|r| parse_synthetic(&r.payload))
        .map(|i| i.frame_number)
        .collect();
    assert!(
        (12..=18).contains(&frames.len()),
        "{} frames in 2 s at 7.5 fps",
        frames.len()
    );
    // Sequence numbers without holes, picture ids one apart, TL0PICIDX
    // one apart: a decoder sees a complete stream.
    crate::assert_contiguous(&got);
    let mut pictures: Vec<(u16, u8)> = Vec::new();
    for r in &got {
        let p = &r.payload;
        if p[0] & 0x10 != 0 {
            let pid = (u16::from(p[2] & 0x7f) << 8) | u16::from(p[3]);
            pictures.push((pid, p[4]));
            assert_eq!(p[5] >> 6, 0, "only base-layer pictures");
        }
    }
    for w in pictures.windows(2) {
        assert_eq!(w[1].0, (w[0].0 + 1) & 0x7fff, "picture ids: {pictures:?}");
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "TL0PICIDX: {pictures:?}");
    }
}

#[test]
fn dynacast_tells_the_publisher_which_layers_anyone_wants() {
    let (mut sim, _alice, bob, producer, _mid) = camera(306);
    let wanted = |events: &[(Instant, Event)]| -> Vec<(Instant, Vec<bool>)> {
        events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::ProducerLayersWanted {
                    producer_id,
                    layers,
                    ..
                } if *producer_id == producer => {
                    Some((*at, layers.iter().map(|l| l.wanted).collect()))
                }
                _ => None,
            })
            .collect()
    };
    // Nobody watches: after 5 s, nothing is wanted.
    sim.advance(5 * SECOND);
    let w = wanted(&sim.take_events());
    assert_eq!(w.last().map(|x| x.1.clone()), Some(vec![false; 3]), "{w:?}");
    // A subscriber wants everything, at once.
    let consumer = sim.subscribe(bob, &producer);
    let asked = sim.now();
    sim.advance(10 * MS);
    let w = wanted(&sim.take_events());
    assert_eq!(w.last().map(|x| x.1.clone()), Some(vec![true; 3]), "{w:?}");
    assert!(w.last().unwrap().0 <= asked + 10 * MS);
    // It shows the track small: the top layers go, 5 s later.
    let now = sim.now();
    sim.room_mut()
        .set_consumer_view(
            now,
            bob,
            &consumer,
            View {
                disabled: false,
                width: 320,
                height: 180,
            },
        )
        .unwrap();
    sim.advance(4 * SECOND);
    assert!(wanted(&sim.take_events()).is_empty(), "not before 5 s");
    sim.advance(2 * SECOND);
    let w = wanted(&sim.take_events());
    assert_eq!(
        w.last().map(|x| x.1.clone()),
        Some(vec![true, false, false])
    );
}

#[test]
fn adaptive_stream_serves_the_rendered_size_and_a_hidden_tile_gets_nothing() {
    let (mut sim, _alice, bob, producer, _mid) = camera(307);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);
    let view = |sim: &mut Sim, disabled: bool, height: u32| {
        let now = sim.now();
        sim.room_mut()
            .set_consumer_view(
                now,
                bob,
                &consumer,
                View {
                    disabled,
                    width: height * 16 / 9,
                    height,
                },
            )
            .unwrap();
        sim.advance(2 * SECOND);
    };
    let last = |sim: &mut Sim| {
        layer_changes(&sim.take_events(), &consumer)
            .last()
            .map(|(_, l)| *l)
    };
    sim.take_events();
    // 360 pixels tall: the middle layer (360p).
    view(&mut sim, false, 360);
    assert_eq!(last(&mut sim).flatten().map(|l| l.0), Some(1));
    // A thumbnail: the lowest.
    view(&mut sim, false, 120);
    assert_eq!(last(&mut sim).flatten().map(|l| l.0), Some(0));
    // Hidden: no video at all.
    view(&mut sim, true, 120);
    assert_eq!(last(&mut sim), Some(None));
    let hidden = sim.now();
    sim.advance(SECOND);
    let after: HashMap<_, _> = sim
        .received(bob, &consumer)
        .iter()
        .filter(|r| r.at > hidden)
        .map(|r| (r.seq_no, ()))
        .collect();
    assert!(after.is_empty(), "{} packets to a hidden tile", after.len());
    // Shown again, full size: the top layer.
    view(&mut sim, false, 720);
    assert_eq!(last(&mut sim).flatten().map(|l| l.0), Some(2));
}

#[test]
fn the_active_speakers_camera_keeps_its_layers_over_the_others() {
    let (mut sim, alice, bob) = alice_and_bob(404);
    let carol = sim.join("carol");
    sim.send_transport(carol);
    let (alice_cam, _) = publish_camera(&mut sim, alice);
    let (carol_cam, _) = publish_camera(&mut sim, carol);
    sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.publish(carol, MediaKind::Audio, "audio/opus");
    let set_level = |sim: &mut Sim, who: Owner, level: i8| {
        let tid = crate::send_tid(sim, who);
        sim.peer_mut(&tid)
            .transport_mut()
            .set_audio_level(Some(level));
    };
    set_level(&mut sim, alice, -127);
    set_level(&mut sim, carol, -127);
    // Bob can take one top layer and one bottom one, not two middle ones
    // and a top one: 1.8 Mbit/s.
    limit(&mut sim, bob, Some(1_800_000));
    let a = sim.subscribe(bob, &alice_cam);
    let c = sim.subscribe(bob, &carol_cam);
    sim.advance(15 * SECOND);
    let events = sim.take_events();
    let last = |events: &[(Instant, Event)], id: &ConsumerId| {
        layer_changes(events, id).last().and_then(|(_, l)| *l)
    };
    let (quiet_a, quiet_c) = (last(&events, &a), last(&events, &c));
    assert!(
        quiet_a.is_some() && quiet_c.is_some(),
        "nobody speaks: both cameras are forwarded ({quiet_a:?}, {quiet_c:?})"
    );

    // Carol speaks: her camera ranks above Alice's.
    set_level(&mut sim, carol, -6);
    sim.advance(10 * SECOND);
    let events = sim.take_events();
    let layers = sim.room().transport_allocations(bob);
    let (a1, c1) = (last(&events, &a).or(quiet_a), last(&events, &c).or(quiet_c));
    assert!(
        c1.is_some_and(|c| c.0 >= 1) && a1 < c1,
        "the speaker (Carol) gets the better layers, Alice gives way: alice {a1:?}, carol {c1:?} ({layers:?})"
    );

    // Carol stops, Alice speaks: the ranks swap.
    set_level(&mut sim, carol, -127);
    set_level(&mut sim, alice, -6);
    sim.advance(10 * SECOND);
    let events = sim.take_events();
    let (a2, c2) = (last(&events, &a).or(a1), last(&events, &c).or(c1));
    assert!(
        a2.is_some_and(|a| a.0 >= 1) && c2 < a2,
        "the speaker (Alice) gets the better layers now: alice {a2:?}, carol {c2:?}"
    );
}

#[test]
fn a_single_1_mbit_stream_starts_at_once_pauses_behind_a_small_link_and_comes_back() {
    // One 1 Mbit/s encoding, no audio: the configured start estimate
    // (1 Mbit/s) is a guess that must not pause it, and once paused for
    // congestion it is its own stream that carries the probes.
    let (mut sim, alice, bob) = alice_and_bob(505);
    let mut options = SimulcastOptions::new(VP8, &["r0"]);
    options.layers[0].1.bitrate_bps = 1_000_000;
    let (producer, _) = sim
        .try_publish_simulcast(alice, None, VP8, options)
        .expect("publish");
    sim.advance(SECOND / 2);
    let c = sim.subscribe(bob, &producer);
    let congested = |events: &[(Instant, Event)]| {
        events
            .iter()
            .filter(|(_, e)| matches!(e, Event::ConsumerCongested { consumer_id, congested: true, .. } if *consumer_id == c))
            .count()
    };
    sim.advance(10 * SECOND);
    let events = sim.take_events();
    let start = sim.now() - 5 * SECOND;
    let f = frames(&sim, bob, &c, start);
    assert_eq!(congested(&events), 0, "an open link never pauses it");
    assert!(f.complete.len() >= 140, "30 fps in the last 5 s: {f:?}");
    let t = &sim.room().transport_allocations(bob)[0];
    assert!(
        t.available_outgoing_bitrate.is_some_and(|e| e > 1_200_000),
        "the estimate grew past the stream: {t:?}"
    );

    limit(&mut sim, bob, Some(600_000));
    sim.advance(10 * SECOND);
    let events = sim.take_events();
    assert!(congested(&events) >= 1, "600 kbit/s pauses it");

    limit(&mut sim, bob, None);
    sim.advance(30 * SECOND);
    let from = sim.now() - 5 * SECOND;
    let f = frames(&sim, bob, &c, from);
    assert!(
        f.complete.len() >= 140,
        "back once the link is open again, probed on its own stream: {f:?} {:?}",
        sim.room().transport_allocations(bob)
    );
}

/// A single encoding of 1 to 1.4 Mbit/s and its audio, to a subscriber on
/// an open link (what the load tester publishes): while the estimate
/// climbs from its 1 Mbit/s start value it runs at or a little below what
/// is sent (1.22 Mbit/s against 1.22 to 1.5, until a probe lifts it); the
/// video the link carries is kept, not paused for want of the allocator's
/// spare share. (Before, each of these but the first was paused for a
/// moment, and 55 of 100 loopback load-tester subscribers were, within a
/// second of their estimate's first measure.)
#[test]
fn a_stream_the_link_carries_is_kept_while_the_estimate_climbs() {
    for (seed, rate) in [
        (506, 1_000_000),
        (507, 1_100_000),
        (508, 1_200_000),
        (509, 1_300_000),
        (510, 1_400_000),
    ] {
        let (mut sim, alice, bob) = alice_and_bob(seed);
        let mut options = SimulcastOptions::new(VP8, &["r0"]);
        options.layers[0].1.bitrate_bps = rate;
        let (producer, _) = sim
            .try_publish_simulcast(alice, None, VP8, options)
            .expect("publish");
        let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
        sim.advance(SECOND / 2);
        let c = sim.subscribe(bob, &producer);
        sim.subscribe(bob, &audio);
        sim.advance(10 * SECOND);
        let events = sim.take_events();
        let pauses = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::ConsumerCongested { consumer_id, congested: true, .. } if *consumer_id == c))
            .count();
        let t = &sim.room().transport_allocations(bob)[0];
        assert_eq!(
            pauses, 0,
            "{rate} bit/s: an open link never pauses it: {t:?}"
        );
        let from = sim.now() - 9 * SECOND;
        let f = frames(&sim, bob, &c, from);
        assert!(
            longest_freeze(&f, from, sim.now()) < SECOND / 5,
            "{rate} bit/s: {f:?}"
        );
    }
}

/// Connection quality weighs bitrate against expected, both ways: a
/// subscriber whose link carries only the lowest of three layers scores
/// poor while an unlimited one stays excellent, and recovers once the cap
/// lifts; a publisher that stops sending a layer someone wants (as a
/// browser does when its own uplink estimate falls) scores good until the
/// layer is back, while its subscribers, served the best of what arrives,
/// stay excellent.
#[test]
fn quality_weighs_bitrate_against_expected_both_ways() {
    use crate::quality::quality;
    use pulsewave_core::ConnectionQuality::{Excellent, Good, Poor};

    let (mut sim, alice, bob, producer, mid) = camera(310);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    limit(&mut sim, bob, Some(400_000));
    sim.subscribe(bob, &producer);
    sim.subscribe(carol, &producer);
    sim.advance(15 * SECOND);
    assert_eq!(quality(&sim, bob), Some(Poor), "Bob behind 400 kbit/s");
    assert_eq!(quality(&sim, carol), Some(Excellent), "Carol unlimited");
    assert_eq!(quality(&sim, alice), Some(Excellent), "Alice sends all");

    limit(&mut sim, bob, None);
    sim.advance(25 * SECOND);
    assert_eq!(quality(&sim, bob), Some(Excellent), "Bob, cap lifted");

    sim.set_layer_sending(alice, &mid, "r2", false);
    sim.advance(3 * SECOND);
    assert_eq!(quality(&sim, alice), Some(Excellent), "not at once");
    sim.advance(5 * SECOND);
    assert_eq!(
        quality(&sim, alice),
        Some(Good),
        "top layer wanted, not sent"
    );
    assert_eq!(
        quality(&sim, carol),
        Some(Excellent),
        "Carol gets the best sent"
    );
    sim.set_layer_sending(alice, &mid, "r2", true);
    sim.advance(6 * SECOND);
    assert_eq!(quality(&sim, alice), Some(Excellent), "top layer back");
}
