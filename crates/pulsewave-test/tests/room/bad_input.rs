//! Bad input from clients and the network: errors, never panics, and the
//! room keeps working.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use pulsewave_core::{DatagramError, Error};
use pulsewave_protocol::rtp::{MediaKind, ParamValue, RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{ConsumerId, ProducerId, TransportId};
use pulsewave_test::{Direction, PacketKind, Sim, TrackOptions};
use rand::{Rng, SeedableRng};

use crate::{SECOND, alice_and_bob, assert_contiguous, recv_tid, send_tid};

#[test]
fn publishing_before_connect_transport_is_refused() {
    let mut sim = Sim::new(30);
    let alice = sim.join("alice");
    let tid = sim
        .open_transport(alice, TransportDirection::Send, None)
        .unwrap();
    let err = sim
        .try_publish(
            alice,
            Some(&tid),
            MediaKind::Audio,
            "audio/opus",
            TrackOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::TransportNotConnected(_)), "{err:?}");
    assert!(
        matches!(err, Error::TransportNotConnected { .. }),
        "{err:?}"
    );
    // After connecting, the same publish works.
    sim.connect(&tid).unwrap();
    sim.try_publish(
        alice,
        Some(&tid),
        MediaKind::Audio,
        "audio/opus",
        TrackOptions::default(),
    )
    .unwrap();
}

/// Valid VP8 parameters (with RTX) from Alice's peer, for tampering with.
fn vp8_parameters(sim: &mut Sim, tid: &TransportId) -> RtpParameters {
    sim.peer_mut(tid)
        .transport_mut()
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap()
        .rtp_parameters
}

#[test]
fn unknown_and_other_participants_transports_are_not_found() {
    let (mut sim, alice, bob) = alice_and_bob(31);
    let alice_tid = send_tid(&sim, alice);
    let bob_tid = recv_tid(&sim, bob);
    let params = vp8_parameters(&mut sim, &alice_tid);
    let caps = sim.router_caps().clone();
    let dtls = sim.peer(&bob_tid).transport().dtls_parameters();
    let now = sim.now();
    let mut room = sim.room_mut();
    let nope = TransportId::new("TP_nope");

    let e = room
        .produce(
            now,
            alice,
            Some(&nope),
            MediaKind::Video,
            params.clone(),
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    // Bob names Alice's transport.
    let e = room
        .produce(
            now,
            bob,
            Some(&alice_tid),
            MediaKind::Video,
            params.clone(),
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    let e = room
        .connect_transport(now, bob, &alice_tid, &dtls)
        .unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    let e = room.close_transport(now, bob, &alice_tid).unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    let p = room
        .produce(
            now,
            alice,
            Some(&alice_tid),
            MediaKind::Video,
            params,
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap();
    let e = room
        .consume(now, alice, Some(&bob_tid), &p.producer_id, &caps)
        .unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    assert!(matches!(e, Error::TransportNotFound { .. }), "{e:?}");
    // Alice has no receive transport at all.
    let e = room
        .consume(now, alice, None, &p.producer_id, &caps)
        .unwrap_err();
    assert!(matches!(e, Error::TransportNotFound(_)), "{e:?}");
    // Subscribing on a send transport.
    let e = room
        .consume(now, alice, Some(&alice_tid), &p.producer_id, &caps)
        .unwrap_err();
    assert!(matches!(e, Error::WrongTransportDirection { .. }), "{e:?}");
    let e = room
        .consume(now, bob, None, &ProducerId::new("PR_nope"), &caps)
        .unwrap_err();
    assert!(matches!(e, Error::ProducerNotFound(_)), "{e:?}");
    // Nothing of this disturbed the room.
    assert_eq!(room.stats().transports, 2);
    assert!(room.is_transport_connected(&alice_tid));
}

#[test]
fn other_participants_producers_and_consumers_are_off_limits() {
    let (mut sim, alice, bob) = alice_and_bob(32);
    let carol = sim.join("carol");
    sim.recv_transport(carol);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    let now = sim.now();
    let mut room = sim.room_mut();

    for e in [
        room.close_producer(now, bob, &video).unwrap_err(),
        room.pause_producer(now, bob, &video).unwrap_err(),
        room.resume_producer(now, bob, &video).unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotOwner(_)), "{e:?}");
        assert!(matches!(e, Error::NotOwner { .. }), "{e:?}");
    }
    for e in [
        room.resume_consumer(now, carol, &bob_c).unwrap_err(),
        room.pause_consumer(now, carol, &bob_c).unwrap_err(),
        room.close_consumer(now, carol, &bob_c)
            .map(|_| ())
            .unwrap_err(),
        room.resume_consumer(now, bob, &ConsumerId::new("CN_nope"))
            .unwrap_err(),
    ] {
        assert!(matches!(e, Error::ConsumerNotFound(_)), "{e:?}");
        assert!(matches!(e, Error::ConsumerNotFound { .. }), "{e:?}");
    }
    drop(room);
    // Bob still receives.
    let n = sim.received(bob, &bob_c).len();
    sim.advance(SECOND);
    let got = sim.received(bob, &bob_c);
    assert!(got.len() > n + 20);
    assert_contiguous(&got);
}

#[test]
fn malformed_rtp_parameters_are_refused() {
    let (mut sim, alice, _bob) = alice_and_bob(33);
    let tid = send_tid(&sim, alice);
    let good = vp8_parameters(&mut sim, &tid);
    let now = sim.now();
    let produce = |sim: &mut Sim, p: RtpParameters| {
        sim.room_mut().produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Video,
            p,
            false,
            pulsewave_core::AppData::default(),
        )
    };

    // Two codecs on one payload type.
    let mut p = good.clone();
    let mut dup = p.codecs[0].clone();
    dup.mime_type = "video/VP9".into();
    p.codecs.push(dup);
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");
    assert!(matches!(e, Error::InvalidRtpParameters { .. }), "{e:?}");

    // RTX without apt, and RTX whose apt names nothing.
    let mut p = good.clone();
    p.codecs[1].parameters.remove("apt");
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");
    let mut p = good.clone();
    p.codecs[1]
        .parameters
        .insert("apt".into(), ParamValue::Int(55));
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");

    // An encoding with neither ssrc nor rid, without a mid to find it by;
    // a malformed rid; no encoding at all.
    let mut p = good.clone();
    p.mid = None;
    p.encodings[0].ssrc = None;
    p.encodings[0].rtx = None;
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");
    let mut p = good.clone();
    p.encodings[0].ssrc = None;
    p.encodings[0].rtx = None;
    p.encodings[0].rid = Some("r 0;".into());
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");
    let mut p = good.clone();
    p.encodings.clear();
    p.mid = None;
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");

    // No codecs; the kind does not match the codec.
    let mut p = good.clone();
    p.codecs.clear();
    assert!(matches!(
        produce(&mut sim, p).unwrap_err(),
        Error::InvalidRtpParameters(_)
    ));
    let e = sim
        .room_mut()
        .produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Audio,
            good.clone(),
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRtpParameters(_)), "{e:?}");

    // The same ssrc for media and RTX.
    let mut p = good.clone();
    p.encodings[0].rtx.as_mut().unwrap().ssrc = p.encodings[0].ssrc.unwrap();
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::DuplicateSsrc(_)), "{e:?}");

    // A codec the router does not have.
    let mut p = good.clone();
    p.codecs[0].mime_type = "video/H265".into();
    let e = produce(&mut sim, p).unwrap_err();
    assert!(matches!(e, Error::UnsupportedCodec(_)), "{e:?}");

    assert_eq!(sim.stats().producers, 0, "nothing was created");

    // The good parameters work; publishing their ssrc again does not.
    produce(&mut sim, good.clone()).unwrap();
    let mut again = good;
    again.mid = Some("7".into());
    let e = produce(&mut sim, again).unwrap_err();
    assert!(matches!(e, Error::DuplicateSsrc(_)), "{e:?}");
    assert!(matches!(e, Error::DuplicateSsrc { .. }), "{e:?}");
    assert_eq!(sim.stats().producers, 1);
}

#[test]
fn consuming_without_the_codec_is_refused() {
    let (mut sim, alice, bob) = alice_and_bob(34);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let mut audio_only = sim.router_caps().clone();
    audio_only.codecs.retain(|c| c.kind == MediaKind::Audio);
    let e = sim
        .try_subscribe(bob, None, &video, &audio_only, true)
        .unwrap_err();
    assert!(matches!(e, Error::CannotConsume(_)), "{e:?}");
    assert!(matches!(e, Error::CannotConsume { .. }), "{e:?}");
    let e = sim
        .try_subscribe(bob, None, &video, &RtpCapabilities::default(), true)
        .unwrap_err();
    assert!(matches!(e, Error::CannotConsume(_)), "{e:?}");
    assert_eq!(sim.stats().consumers, 0);
}

/// Real datagrams kept by a filter, with their source.
type Samples = Rc<RefCell<Vec<(PacketKind, SocketAddr, Vec<u8>)>>>;

#[test]
fn garbage_datagrams_never_panic_and_the_room_keeps_forwarding() {
    let mut sim = Sim::new(35);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    // Keep a few real datagrams of every kind from Alice and Bob, handshake
    // included.
    let samples: Samples = Rc::default();
    let keep = samples.clone();
    let filter = sim.add_filter(move |d| {
        let mut k = keep.borrow_mut();
        let same_kind = k
            .iter()
            .filter(|(kind, _, _)| std::mem::discriminant(kind) == std::mem::discriminant(&d.kind))
            .count();
        if d.direction == Direction::Up && same_kind < 3 {
            k.push((d.kind, d.source, d.contents.clone()));
        }
        false
    });
    let alice_tid = sim.send_transport(alice);
    let bob_tid = sim.recv_transport(bob);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    sim.remove_filter(filter);
    let samples = samples.take();
    for kind in ["Stun", "Dtls", "Rtp", "Rtcp"] {
        assert!(
            samples
                .iter()
                .any(|(k, _, _)| format!("{k:?}").starts_with(kind)),
            "a {kind} sample: {samples:?}"
        );
    }
    let alice_addr = sim.peer(&alice_tid).transport().local_addr();
    let bob_addr = sim.peer(&bob_tid).transport().local_addr();

    // Refused by the endpoint (malformed, unknown source) or by the room's
    // transports (rejected).
    let dropped = |sim: &Sim| {
        let e = sim.endpoint().stats();
        sim.stats().datagrams_dropped + e.datagrams_malformed + e.datagrams_unknown
    };
    let dropped_before = dropped(&sim);
    let mut rng = rand::rngs::StdRng::seed_from_u64(35);
    let mut refused = 0u64;
    let mut inject = |sim: &mut Sim, source: SocketAddr, bytes: &[u8]| {
        let r = sim.inject(source, bytes);
        refused += u64::from(r.is_err());
        r
    };

    // 1000 random buffers of random sizes, from strangers and from the
    // participants' own addresses.
    for i in 0..1000 {
        let len = rng.random_range(0..1500);
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf[..]);
        // Steer a share into each demultiplexing range (STUN, DTLS, RTP).
        if len > 0 {
            match i % 4 {
                0 => buf[0] = rng.random_range(0..4),
                1 => buf[0] = rng.random_range(20..64),
                2 => buf[0] = rng.random_range(128..192),
                _ => {}
            }
        }
        if i % 3 == 0 {
            let stranger = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(rng.random::<u32>() | 1)),
                rng.random(),
            );
            assert!(
                inject(&mut sim, stranger, &buf).is_err(),
                "strangers are refused"
            );
        } else {
            let source = if i % 3 == 1 { alice_addr } else { bob_addr };
            let _ = inject(&mut sim, source, &buf);
        }
    }
    // Every real datagram truncated at every length, and with bits flipped,
    // from its own source; and replayed. (A valid STUN request replayed from
    // another peer's address would move that address to the request's
    // transport, as ICE wants for a peer whose address changed.)
    for (kind, source, d) in &samples {
        let boundaries = dtls_record_ends(d);
        for len in 0..d.len() {
            let r = inject(&mut sim, *source, &d[..len]);
            let framed = match kind {
                PacketKind::Stun => false,
                // A datagram cut between two records is two fewer records.
                PacketKind::Dtls => boundaries.contains(&len),
                PacketKind::Rtp { .. } => len >= 12 + 10,
                _ => len >= 8 + 4 + 10,
            };
            if !framed {
                assert_eq!(
                    r,
                    Err(DatagramError::Malformed),
                    "{kind:?} truncated to {len} of {} bytes",
                    d.len()
                );
            }
        }
        for bit in (0..d.len() * 8).step_by(13) {
            let mut f = d.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let _ = inject(&mut sim, *source, &f);
        }
        let _ = inject(&mut sim, *source, d);
    }

    assert_eq!(
        dropped(&sim) - dropped_before,
        refused,
        "every refusal is counted"
    );
    assert!(refused > 1000 / 3);

    // The room keeps forwarding, to the same consumer, without a gap.
    let n = sim.received(bob, &bob_c).len();
    sim.advance(2 * SECOND);
    let got = sim.received(bob, &bob_c);
    assert!(got.len() > n + 60, "{} then {}", n, got.len());
    assert_contiguous(&got);
    assert!(sim.is_connected(&alice_tid));
    assert!(sim.is_connected(&bob_tid));
    assert_eq!(sim.stats().transports, 2);
    assert_eq!(sim.stats().consumers, 1);
}

/// Where the DTLS records of a datagram end.
fn dtls_record_ends(d: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while let Some(h) = d.get(pos..pos + 13) {
        if !(20..=25).contains(&h[0]) {
            break;
        }
        pos += 13 + usize::from(u16::from_be_bytes([h[11], h[12]]));
        ends.push(pos);
    }
    ends
}

#[test]
fn a_forged_stun_request_cannot_move_another_peers_address() {
    let mut sim = Sim::new(36);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    // Keep one of Bob's binding requests.
    let request: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let keep = request.clone();
    let bob_sid = bob;
    let filter = sim.add_filter(move |d| {
        if d.kind == PacketKind::Stun
            && d.direction == Direction::Up
            && d.participant.as_ref() == Some(&bob_sid)
        {
            keep.borrow_mut().get_or_insert_with(|| d.contents.clone());
        }
        false
    });
    let alice_tid = sim.send_transport(alice);
    sim.recv_transport(bob);
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let bob_c = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    sim.remove_filter(filter);

    // Bob's request with a damaged integrity check, from Alice's address:
    // it names Bob's transport but proves nothing.
    let mut forged = request.take().unwrap();
    let integrity = stun_attribute(&forged, 0x0008).expect("MESSAGE-INTEGRITY");
    forged[integrity] ^= 0xff;
    let alice_addr = sim.peer(&alice_tid).transport().local_addr();
    assert!(sim.inject(alice_addr, &forged).is_err());

    // Alice's media still reaches the server and Bob, without a hole.
    let n = sim.received(bob, &bob_c).len();
    sim.advance(SECOND);
    let got = sim.received(bob, &bob_c);
    assert!(got.len() > n + 30);
    assert_contiguous(&got);
}

/// Where the value of the first STUN attribute of `kind` starts.
fn stun_attribute(m: &[u8], kind: u16) -> Option<usize> {
    let mut pos = 20;
    while pos + 4 <= m.len() {
        let t = u16::from_be_bytes([m[pos], m[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([m[pos + 2], m[pos + 3]]));
        if t == kind {
            return Some(pos + 4);
        }
        pos += 4 + len.div_ceil(4) * 4;
    }
    None
}
