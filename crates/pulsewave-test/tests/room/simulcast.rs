//! Simulcast as mediasoup-client sends it: one producer with three layers
//! (`r0` < `r1` < `r2`) whose ssrcs the server learns from their first
//! packets. Each subscriber gets the highest layer the publisher is sending,
//! switches layers only at a keyframe of the new layer (which the server
//! asks for), and sees one ssrc with contiguous sequence numbers throughout.
//!
//! The synthetic layers make keyframes only at their start and when asked
//! ([`SimulcastOptions::new`]), so every later keyframe answers a request.

use std::time::Instant;

use pulsewave_client::parse_synthetic;
use pulsewave_core::{Error, Owner, RoomConfig};
use pulsewave_protocol::rtp::{MediaKind, RtpCapabilities, RtpEncodingParameters, uri};
use pulsewave_protocol::{ConsumerId, ProducerId};
use pulsewave_test::{Origin, ReceivedRtp, SERVER_ADDR, Sim, SimConfig, SimulcastOptions};

use crate::{
    MS, SECOND, alice_and_bob, alice_and_bob_in, assert_contiguous, is_vp8_keyframe_start, send_tid,
};

const VP8: &str = "video/VP8";
const RIDS: [&str; 3] = ["r0", "r1", "r2"];

/// Alice publishing three VP8 layers for half a second, Bob with a receive
/// transport. These tests are about switching, on a network that carries
/// everything: the subscriber's bandwidth estimate starts high enough for
/// the top layer (the allocator's own tests are in `bandwidth.rs`).
fn three_layers(seed: u64) -> (Sim, Owner, Owner, ProducerId, String) {
    let config = SimConfig {
        seed,
        room: RoomConfig {
            local_addr: SERVER_ADDR,
            initial_available_outgoing_bitrate: 10_000_000,
            ..RoomConfig::default()
        },
        ..SimConfig::default()
    };
    let (mut sim, alice, bob) = alice_and_bob_in(Sim::with_config(config));
    let (producer, mid) = sim.publish_simulcast(alice, VP8, &RIDS);
    sim.advance(SECOND / 2);
    (sim, alice, bob, producer, mid)
}

/// What a consumer received, each packet with the layer that sent it.
fn received(sim: &Sim, who: Owner, consumer: &ConsumerId) -> Vec<(ReceivedRtp, Origin)> {
    sim.received_origins(who, consumer)
        .into_iter()
        .map(|(r, origin)| {
            let origin = origin.unwrap_or_else(|| panic!("packet {} was never sent", r.seq_no));
            (r, origin)
        })
        .collect()
}

/// The rid of each packet.
fn rids(got: &[(ReceivedRtp, Origin)]) -> Vec<&str> {
    got.iter()
        .map(|(_, o)| o.rid.as_deref().expect("a simulcast layer"))
        .collect()
}

/// Index of the first packet from `rid` at or after `from`.
fn first_from(got: &[(ReceivedRtp, Origin)], rid: &str, from: usize) -> Option<usize> {
    (from..got.len()).find(|&i| got[i].1.rid.as_deref() == Some(rid))
}

/// Everything a consumer got is a faithful cut of the layers: one ssrc,
/// contiguous sequence numbers, intact payloads, made of `runs` runs of
/// consecutive packets of one layer (a run ends at a layer switch or a
/// mute), each starting with the first packet of a keyframe of its layer,
/// with timestamps that go on across the cuts.
#[track_caller]
fn assert_clean_switches(
    sim: &Sim,
    publisher: Owner,
    mid: &str,
    who: Owner,
    consumer: &ConsumerId,
    runs: usize,
) {
    let mut starts = 0;
    let got = received(sim, who, consumer);
    assert!(!got.is_empty(), "{who} received nothing");
    let sub = sim.subscription(who, consumer);
    let track = sim.track(publisher, mid);
    let packets: Vec<ReceivedRtp> = got.iter().map(|(r, _)| r.clone()).collect();
    assert_contiguous(&packets);
    for (i, (r, o)) in got.iter().enumerate() {
        assert_eq!(r.ssrc, sub.ssrc, "one ssrc, the consumer's");
        assert_eq!(r.payload_type, sub.payload_type);
        let info = parse_synthetic(&r.payload).expect("a synthetic payload");
        assert!(info.intact, "{info:?}");
        let layer = track.layer(o.rid.as_deref().unwrap()).unwrap();
        let sent = &layer.sent()[o.index];
        assert_eq!(r.marker, sent.marker);
        let continues = i > 0 && got[i - 1].1.rid == o.rid && o.index == got[i - 1].1.index + 1;
        if continues {
            // Within a layer, timestamps move by one frame at a time.
            let d = r.rtp_time.wrapping_sub(got[i - 1].0.rtp_time);
            let frame = 90_000 / layer.source().config().fps;
            assert_eq!(d, if got[i - 1].0.marker { frame } else { 0 });
        } else {
            starts += 1;
            assert!(
                sent.keyframe && is_vp8_keyframe_start(&r.payload),
                "packet {i} starts layer {:?} without a keyframe",
                o.rid
            );
            if i > 0 {
                // Across a switch, time goes on (by the wall time between
                // the two packets, at 90 kHz).
                let d = r.rtp_time.wrapping_sub(got[i - 1].0.rtp_time);
                let elapsed = r.at.duration_since(got[i - 1].0.at);
                let expected = elapsed.as_micros() as i64 * 9 / 100;
                assert!(
                    (i64::from(d) - expected).abs() <= 9_000,
                    "timestamp jump {d} after {elapsed:?} of silence"
                );
            }
        }
    }
    assert_eq!(starts, runs, "runs of consecutive packets of one layer");
}

/// Times at or after `since` at which Alice was asked for a keyframe on
/// `rid`.
fn requests_since(sim: &Sim, alice: Owner, mid: &str, rid: &str, since: Instant) -> Vec<Instant> {
    let tid = send_tid(sim, alice);
    sim.peer(&tid)
        .layer_keyframe_requests(mid, rid)
        .into_iter()
        .filter(|t| *t >= since)
        .collect()
}

#[test]
fn a_subscriber_gets_the_top_layer_intact_on_its_own_ssrc() {
    let (mut sim, alice, bob, producer, mid) = three_layers(80);
    let track = sim.track(alice, &mid).local().clone();
    assert_eq!(track.layers.len(), 3);
    let subscribed = sim.now();
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(2 * SECOND);

    let got = received(&sim, bob, &consumer);
    assert!(got.len() > 200, "about 140 packets a second: {}", got.len());
    assert!(
        rids(&got).iter().all(|r| *r == "r2"),
        "only the top layer: {:?}",
        rids(&got).iter().filter(|r| **r != "r2").count()
    );
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 1);
    let sub = sim.subscription(bob, &consumer);
    assert!(
        track.layers.iter().all(|l| l.ssrc != sub.ssrc),
        "the consumer's own ssrc"
    );
    // The server asked for a keyframe on the top layer, once (the keyframe
    // that answered ends the wish), and only there.
    assert_eq!(
        requests_since(&sim, alice, &mid, "r2", subscribed).len(),
        1,
        "one keyframe request"
    );
    for rid in ["r0", "r1"] {
        assert!(
            requests_since(&sim, alice, &mid, rid, subscribed).is_empty(),
            "no keyframe asked on {rid}"
        );
    }
    // Nothing of the top layer from its first keyframe on is missing
    // (except what is still in flight).
    let sent = sim.track(alice, &mid).layer("r2").unwrap().sent().len();
    let first = got[0].1.index;
    assert!(
        sent - first - got.len() <= 20,
        "{} of {}",
        got.len(),
        sent - first
    );
}

#[test]
fn when_the_publisher_stops_r2_the_subscriber_drops_to_r1_at_a_keyframe() {
    let (mut sim, alice, bob, producer, mid) = three_layers(81);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    let before = received(&sim, bob, &consumer).len();
    assert!(
        rids(&received(&sim, bob, &consumer))
            .iter()
            .all(|r| *r == "r2")
    );

    let stopped = sim.now();
    sim.set_layer_sending(alice, &mid, "r2", false);
    sim.advance(2 * SECOND);

    let got = received(&sim, bob, &consumer);
    let switch = first_from(&got, "r1", before).expect("the subscriber switched to r1");
    let switched_at = got[switch].0.at;
    let delay = switched_at - stopped;
    assert!(
        delay >= SECOND && delay <= SECOND * 3 / 2,
        "r2 counts as stopped after 1 s of silence; the switch came after {delay:?}"
    );
    // The server asked Alice for a keyframe on r1 (the one it switched at).
    let asked = requests_since(&sim, alice, &mid, "r1", stopped);
    assert_eq!(asked.len(), 1, "one keyframe was asked on r1");
    assert!(asked[0] >= stopped + SECOND && asked[0] < switched_at);
    let key = &sim.track(alice, &mid).layer("r1").unwrap().sent()[got[switch].1.index];
    assert!(
        key.keyframe && key.at >= asked[0],
        "the answer to that request"
    );
    // Before the switch only r2, after it only r1; no gap in between.
    let layers = rids(&got);
    assert!(layers[..switch].iter().all(|r| *r == "r2"));
    assert!(layers[switch..].iter().all(|r| *r == "r1"));
    assert!(
        got.len() - switch > 50,
        "r1 keeps flowing: {}",
        got.len() - switch
    );
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 2);
}

#[test]
fn when_r2_comes_back_the_subscriber_switches_up_at_an_r2_keyframe() {
    let (mut sim, alice, bob, producer, mid) = three_layers(82);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    sim.set_layer_sending(alice, &mid, "r2", false);
    sim.advance(2 * SECOND);
    let down = received(&sim, bob, &consumer);
    assert_eq!(rids(&down).last(), Some(&"r1"), "on r1 while r2 is stopped");

    let back = sim.now();
    sim.set_layer_sending(alice, &mid, "r2", true);
    sim.advance(2 * SECOND);

    let got = received(&sim, bob, &consumer);
    let switch = first_from(&got, "r2", down.len()).expect("the subscriber switched back to r2");
    let delay = got[switch].0.at - back;
    assert!(delay < 300 * MS, "switched up {delay:?} after r2 came back");
    let asked = requests_since(&sim, alice, &mid, "r2", back);
    assert_eq!(asked.len(), 1, "one keyframe was asked on r2");
    assert!(asked[0] < got[switch].0.at);
    let layers = rids(&got);
    assert!(layers[down.len()..switch].iter().all(|r| *r == "r1"));
    assert!(layers[switch..].iter().all(|r| *r == "r2"));
    assert!(
        got.len() - switch > 150,
        "r2 keeps flowing: {}",
        got.len() - switch
    );
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 3);
}

#[test]
fn two_subscribers_joining_at_different_times_both_get_the_top_layer() {
    let (mut sim, alice, bob, producer, mid) = three_layers(83);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let bob_c = sim.subscribe(bob, &producer);
    sim.advance(SECOND * 6 / 5);
    let carol_c = sim.subscribe(carol, &producer);
    sim.advance(2 * SECOND);

    for (who, c) in [(bob, &bob_c), (carol, &carol_c)] {
        let got = received(&sim, who, c);
        assert!(got.len() > 200, "{who}: {}", got.len());
        assert!(
            rids(&got).iter().all(|r| *r == "r2"),
            "{who}: only the top layer"
        );
        assert_clean_switches(&sim, alice, &mid, who, c, 1);
    }
    assert_ne!(
        sim.subscription(bob, &bob_c).ssrc,
        sim.subscription(carol, &carol_c).ssrc
    );
    // Carol's start cost Bob nothing: he got the keyframe asked for her
    // within his own contiguous stream.
    let bob_got = received(&sim, bob, &bob_c);
    assert!(bob_got[0].0.at < received(&sim, carol, &carol_c)[0].0.at);
}

#[test]
fn muting_and_unmuting_a_simulcast_producer_resumes_at_a_keyframe_without_a_gap() {
    let (mut sim, alice, bob, producer, mid) = three_layers(84);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);

    let now = sim.now();
    sim.room_mut()
        .pause_producer(now, alice, &producer)
        .unwrap();
    sim.advance(50 * MS); // what was on the wire lands
    let muted = received(&sim, bob, &consumer).len();
    sim.advance(SECOND);
    assert_eq!(
        received(&sim, bob, &consumer).len(),
        muted,
        "nothing while muted"
    );

    let unmuted = sim.now();
    sim.room_mut()
        .resume_producer(unmuted, alice, &producer)
        .unwrap();
    sim.advance(SECOND);
    assert!(
        !requests_since(&sim, alice, &mid, "r2", unmuted).is_empty(),
        "unmuting asks for a keyframe on the top layer"
    );
    let got = received(&sim, bob, &consumer);
    assert!(got.len() > muted + 100, "{} after {muted}", got.len());
    assert!(rids(&got).iter().all(|r| *r == "r2"));
    assert!(is_vp8_keyframe_start(&got[muted].0.payload));
    // Sequence numbers go on across the mute; every run starts at a
    // keyframe.
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 2);
}

#[test]
fn a_simulcast_producer_by_ssrc_switches_layers_the_same_way() {
    let (mut sim, alice, bob) = alice_and_bob(85);
    let options = SimulcastOptions {
        by_ssrc: true,
        ..SimulcastOptions::new(VP8, &["r0", "r1"])
    };
    let (producer, mid) = sim
        .try_publish_simulcast(alice, None, VP8, options)
        .unwrap();
    sim.advance(SECOND / 2);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    let top = received(&sim, bob, &consumer);
    assert!(top.len() > 30);
    assert!(rids(&top).iter().all(|r| *r == "r1"), "the top layer");

    let stopped = sim.now();
    sim.set_layer_sending(alice, &mid, "r1", false);
    sim.advance(2 * SECOND);
    let got = received(&sim, bob, &consumer);
    let down = first_from(&got, "r0", top.len()).expect("switched down to r0");
    let delay = got[down].0.at - stopped;
    assert!(delay >= SECOND && delay <= SECOND * 3 / 2, "{delay:?}");
    assert!(!requests_since(&sim, alice, &mid, "r0", stopped).is_empty());

    let back = sim.now();
    sim.set_layer_sending(alice, &mid, "r1", true);
    sim.advance(SECOND);
    let got = received(&sim, bob, &consumer);
    let up = first_from(&got, "r1", down).expect("switched back up to r1");
    assert!(got[up].0.at - back < 300 * MS);
    assert!(rids(&got)[up..].iter().all(|r| *r == "r1"));
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 3);
}

#[test]
fn bad_simulcast_encodings_are_refused() {
    let (mut sim, alice, _bob) = alice_and_bob(86);
    let tid = send_tid(&sim, alice);
    let good = sim
        .peer_mut(&tid)
        .transport_mut()
        .add_simulcast_track(MediaKind::Video, VP8, &RIDS)
        .unwrap()
        .rtp_parameters;
    let now = sim.now();
    let with_rids = |rids: &[&str]| {
        let mut p = good.clone();
        p.encodings = rids
            .iter()
            .map(|r| RtpEncodingParameters {
                rid: Some((*r).to_owned()),
                ..Default::default()
            })
            .collect();
        p
    };
    for rids in [
        &["r0", "r1", "r0"][..], // the same rid twice
        &["r0", "abcdefghi"],    // 9 characters: str0m holds 8
        &["r0", "r-1"],          // RFC 8851 allows '-', PulseWave does not
        &["r0", "r_1"],
        &["r0", "r 1"],
        &["r0", "r1;"],
        &["", "r1"],
        &["r0", "ŕ1"],
    ] {
        let e = sim
            .room_mut()
            .produce(
                now,
                alice,
                Some(&tid),
                MediaKind::Video,
                with_rids(rids),
                false,
                pulsewave_core::AppData::default(),
            )
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidRtpParameters(_)),
            "{rids:?}: {e:?}"
        );
        assert!(matches!(e, Error::InvalidRtpParameters { .. }), "{e:?}");
    }
    // The same ssrc for two layers.
    let mut p = good.clone();
    p.encodings = vec![
        RtpEncodingParameters {
            ssrc: Some(1234),
            ..Default::default()
        };
        2
    ];
    let e = sim
        .room_mut()
        .produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Video,
            p,
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::DuplicateSsrc(1234)), "{e:?}");
    assert_eq!(sim.stats().producers, 0, "nothing was created");

    // Eight letters or digits are fine.
    let p = with_rids(&["r0", "abcdefgh", "Z9"]);
    let produced = sim
        .room_mut()
        .produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Video,
            p,
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap();
    assert!(produced.simulcast);
}

#[test]
fn layers_by_rid_need_the_rid_extension_on_the_send_transport() {
    let mut sim = Sim::new(87);
    let alice = sim.join("alice");
    // A browser whose sending capabilities lack the rid extension.
    let mut caps: RtpCapabilities = sim.router_caps().clone();
    caps.header_extensions.retain(|h| h.uri != uri::RID);
    let tid = sim.send_transport_with_caps(alice, &caps);
    let params = sim
        .peer_mut(&tid)
        .transport_mut()
        .add_simulcast_track(MediaKind::Video, VP8, &RIDS)
        .unwrap()
        .rtp_parameters;
    assert!(params.header_extensions.iter().all(|h| h.uri != uri::RID));
    let now = sim.now();
    let e = sim
        .room_mut()
        .produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Video,
            params,
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");
}

/// The layer runs of what a consumer received: `(rid, arrival of the first
/// packet)`.
fn runs(got: &[(ReceivedRtp, Origin)]) -> Vec<(&str, Instant)> {
    let mut runs: Vec<(&str, Instant)> = Vec::new();
    for (i, (r, o)) in got.iter().enumerate() {
        let rid = o.rid.as_deref().unwrap();
        let cut = i == 0 || got[i - 1].1.rid != o.rid || got[i - 1].1.index + 1 != o.index;
        if cut {
            runs.push((rid, r.at));
        }
    }
    runs
}

#[test]
fn a_subscriber_from_the_very_start_settles_on_the_top_layer() {
    let (mut sim, alice, bob) = alice_and_bob(88);
    let (producer, mid) = sim.publish_simulcast(alice, VP8, &RIDS);
    // Subscribed before any packet: the server knows no layer yet.
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(3 * SECOND);
    let got = received(&sim, bob, &consumer);
    let runs = runs(&got);
    // Every layer starts with a keyframe; which of them reaches the server
    // first depends on the ssrcs (random), and the allocator works from the
    // layers' measured rates and an estimate that starts at 1 Mbit/s and
    // grows with probing, so the subscriber may show a lower layer first;
    // it is on the top one within two seconds, and stays there.
    let (last, at) = *runs.last().unwrap();
    assert_eq!(last, "r2", "{runs:?}");
    assert!(at - got[0].0.at < 2 * SECOND, "{runs:?}");
    assert!(got.len() > 200, "{}", got.len());
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, runs.len());
}

#[test]
fn an_unanswered_switch_up_keeps_the_lower_layer_flowing_and_asks_every_500_ms() {
    let (mut sim, alice, bob, producer, mid) = three_layers(89);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    // Bandwidth drops: only r0 is left.
    let stopped = sim.now();
    sim.set_layer_sending(alice, &mid, "r2", false);
    sim.set_layer_sending(alice, &mid, "r1", false);
    sim.advance(2 * SECOND);
    assert_eq!(requests_since(&sim, alice, &mid, "r0", stopped).len(), 1);
    assert!(requests_since(&sim, alice, &mid, "r1", stopped).is_empty());
    let down = received(&sim, bob, &consumer);
    assert_eq!(rids(&down).last(), Some(&"r0"));

    // r2 comes back, but its encoder ignores keyframe requests for a while.
    sim.set_answer_keyframe_requests(alice, &mid, false);
    let back = sim.now();
    sim.set_layer_sending(alice, &mid, "r2", true);
    sim.advance(2 * SECOND);
    let waiting = received(&sim, bob, &consumer);
    assert!(
        rids(&waiting)[down.len()..].iter().all(|r| *r == "r0"),
        "no switch without a keyframe"
    );
    assert!(
        waiting.len() - down.len() >= 2 * 15 * 2 - 5,
        "r0 keeps flowing meanwhile: {}",
        waiting.len() - down.len()
    );
    let asked = requests_since(&sim, alice, &mid, "r2", back);
    assert!(
        (4..=5).contains(&asked.len()),
        "{} requests in 2 s",
        asked.len()
    );
    for w in asked.windows(2) {
        assert!(w[1] - w[0] >= 500 * MS, "throttled: {:?}", w[1] - w[0]);
    }

    // The encoder finally makes one.
    let forced = sim.now();
    sim.force_layer_keyframe(alice, &mid, "r2");
    sim.advance(SECOND);
    let got = received(&sim, bob, &consumer);
    let up = first_from(&got, "r2", waiting.len()).expect("switched up at the keyframe");
    assert!(got[up].0.at - forced < 100 * MS);
    assert!(rids(&got)[up..].iter().all(|r| *r == "r2"));
    let runs = runs(&got);
    let layers: Vec<&str> = runs.iter().map(|(r, _)| *r).collect();
    assert_eq!(layers, ["r2", "r0", "r2"]);
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 3);
}

#[test]
fn a_preferred_layer_caps_what_one_subscriber_gets_and_lifting_it_restores_the_top() {
    let (mut sim, alice, bob, producer, mid) = three_layers(90);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let consumer = sim.subscribe(bob, &producer);
    let other = sim.subscribe(carol, &producer);
    sim.advance(SECOND);
    assert!(
        rids(&received(&sim, bob, &consumer))
            .iter()
            .all(|r| *r == "r2")
    );

    // Bob asks for the lowest layer only (a small tile, say).
    let capped = sim.now();
    sim.room_mut()
        .set_consumer_preferred_layers(capped, bob, &consumer, Some(0), None)
        .unwrap();
    sim.advance(2 * SECOND);
    let got = received(&sim, bob, &consumer);
    let switch = first_from(&got, "r0", 0).expect("Bob switched to r0");
    assert!(
        rids(&got)[switch..].iter().all(|r| *r == "r0"),
        "only r0 after the switch"
    );
    assert!(rids(&got)[..switch].iter().all(|r| *r == "r2"));
    assert!(
        !requests_since(&sim, alice, &mid, "r0", capped).is_empty(),
        "a keyframe was asked on r0"
    );
    // Carol's subscription of the same track is untouched.
    assert!(
        rids(&received(&sim, carol, &other))
            .iter()
            .all(|r| *r == "r2")
    );

    // A layer past the last one means the last one; `None` the best.
    let lifted = sim.now();
    sim.room_mut()
        .set_consumer_preferred_layers(lifted, bob, &consumer, None, None)
        .unwrap();
    sim.advance(2 * SECOND);
    let got = received(&sim, bob, &consumer);
    let back = first_from(&got, "r2", switch).expect("Bob is back on r2");
    assert!(rids(&got)[back..].iter().all(|r| *r == "r2"));
    assert_clean_switches(&sim, alice, &mid, bob, &consumer, 3);

    // Only the consumer's owner may set it.
    let err = sim
        .room_mut()
        .set_consumer_preferred_layers(lifted, carol, &consumer, Some(1), None)
        .unwrap_err();
    assert!(matches!(err, Error::ConsumerNotFound(_)), "{err:?}");
}

#[test]
fn a_preferred_layer_the_publisher_does_not_send_falls_back_to_the_next_one_down() {
    let (mut sim, alice, bob, producer, mid) = three_layers(91);
    let consumer = sim.subscribe(bob, &producer);
    sim.advance(SECOND);
    sim.set_layer_sending(alice, &mid, "r1", false);
    sim.advance(2 * SECOND);
    let now = sim.now();
    sim.room_mut()
        .set_consumer_preferred_layers(now, bob, &consumer, Some(1), None)
        .unwrap();
    sim.advance(2 * SECOND);
    let got = received(&sim, bob, &consumer);
    let switch = first_from(&got, "r0", 0).expect("r1 is silent: r0");
    assert!(rids(&got)[switch..].iter().all(|r| *r == "r0"));
    // Asking for layer 7 of three means the top one.
    let now = sim.now();
    sim.room_mut()
        .set_consumer_preferred_layers(now, bob, &consumer, Some(7), None)
        .unwrap();
    sim.advance(2 * SECOND);
    let got = received(&sim, bob, &consumer);
    let back = first_from(&got, "r2", switch).expect("back on r2");
    assert!(rids(&got)[back..].iter().all(|r| *r == "r2"));
}
