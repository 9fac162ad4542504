//! A connected room, fed past the handshake.
//!
//! Every input builds the same room from scratch on the simulation's
//! virtual clock (`pulsewave_test::Sim`, seeded): Alice's send transport
//! and Bob's receive transport connect with real ICE and DTLS handshakes
//! against in-process `PeerTransport`s; Alice publishes opus audio, VP8
//! video with RTX and a two-layer VP8 simulcast track and a reliable data
//! channel; Bob subscribes to all of it, resumed. Then the input is read as
//! a sequence of operations: RTP and RTCP of the fuzzer's making encrypted
//! with Alice's or Bob's own SRTP keys (str0m's `_protect_rtp` /
//! `_protect_rtcp` test exports, vendor/str0m/PATCH.md), so they pass the
//! room's SRTP authentication and reach its parsers and `forward`, its
//! keyframe and NACK handling; data channel messages on Alice's channel
//! (relayed by the room), on channels opened without signaling and on
//! Bob's consumer stream; authenticated and malformed STUN requests from
//! new addresses; raw datagrams; time; loss; and the commands signaling
//! would run (pause, resume, preferred layer, close, produce data).
//!
//! What must hold: nothing panics (libFuzzer aborts on a panic even where
//! the endpoint would contain it), the room is never dropped as failed, a
//! transport never has more routes than its ufrag and four addresses, and
//! closing the room leaves the endpoint with no route at all.
//!
//! Determinism: the endpoint, the simulation and the link are seeded, and
//! str0m's non-cryptographic generator (`fastrand`, thread-local) is
//! reseeded before every input. What stays random — DTLS keys and
//! certificates (aws-lc-rs), SCTP's initial TSN and verification tags
//! (`rand` in sctp-proto), the client's SSRCs and CNAME — changes the bytes
//! on the wire, not what the room does with them: the harness names SSRCs,
//! mids and sequence numbers by index, never by value.
//! `ROOM_CONNECTED_TWICE=1` runs every input twice and compares what the
//! room did.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pulsewave_client::SyntheticConfig;
use pulsewave_core::{Event, Owner};
use pulsewave_protocol::rtp::uri;
use pulsewave_protocol::transport::SctpStreamParameters;
use pulsewave_protocol::{
    ConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};
use pulsewave_test::{
    Direction, LinkConfig, PacketKind, Sim, SimConfig, SimulcastOptions, TrackOptions,
};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::ice::{StunMessage, TransId};

/// Operations read per input, at most.
const MAX_OPS: usize = 96;
/// Virtual time an input may spend, at most.
const MAX_TIME: Duration = Duration::from_secs(20);
/// Other addresses the peers may send from (a network change).
const ALT_ADDRS: usize = 6;

/// The bytes of an input, read front to back; past the end everything is 0.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// A length byte (scaled by `scale`), then that many bytes (fewer at
    /// the end of the input).
    fn bytes(&mut self, scale: usize) -> &'a [u8] {
        let n = (usize::from(self.u8()) * scale).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// One RTP stream Alice may send on.
#[derive(Clone)]
struct Stream {
    ssrc: u32,
    pt: u8,
    mid: String,
    rid: Option<String>,
    /// An RTX stream (its payload starts with the original sequence
    /// number).
    rtx: bool,
    /// The highest extended sequence number sent on it so far (the
    /// receiver's idea of the SRTP rollover counter follows it).
    max_seq: Option<u64>,
    last_ts: u32,
}

/// What the setup built.
struct World {
    sim: Sim,
    alice: Owner,
    bob: Owner,
    send: TransportId,
    recv: TransportId,
    producers: Vec<ProducerId>,
    /// Track mids of Alice's tracks, same order as `producers`.
    mids: Vec<String>,
    consumers: Vec<ConsumerId>,
    data_producer: DataProducerId,
    /// Bob's stream id of his data consumer.
    bob_stream: u16,
    streams: Vec<Stream>,
    /// Header extension ids (router's) by URI.
    ext: Vec<(String, u8)>,
    /// Channels Alice opened without signaling.
    raw_channels: Vec<ChannelId>,
    /// Negotiated stream ids Alice's stack was given (never twice in an
    /// input: str0m asserts when asked for a stream it still holds, a
    /// precondition of its API that the harness keeps on the client side).
    alice_streams: Vec<u16>,
    alt: Vec<SocketAddr>,
    spent: Duration,
    /// Payloads of the RTP packets the fuzzer sent (to count those Bob got).
    fuzz_payloads: Vec<Vec<u8>>,
}

impl World {
    fn ext_id(&self, u: &str) -> Option<u8> {
        self.ext.iter().find(|(x, _)| x == u).map(|(_, id)| *id)
    }
}

fn setup() -> World {
    fastrand::seed(0x5057_4655_5a5a);
    // A short link and light media: each input builds all of this.
    let mut sim = Sim::with_config(SimConfig {
        seed: 7,
        link: LinkConfig::with_latency(Duration::from_millis(2)),
        ..SimConfig::default()
    });
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let send = sim.send_transport(alice);
    let recv = sim.recv_transport(bob);
    // The tracks start 1.3 ms apart and the layers run at different rates,
    // and every source starts silent (the fuzzer turns them on): packets of
    // several streams queued in one str0m stack at the same instant leave in
    // the order of a std HashMap (its null pacer breaks ties by iteration
    // order), which std seeds from the operating system.
    let stagger = Duration::from_micros(1300);
    let (audio, amid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    sim.set_sending(alice, &amid, false);
    sim.advance(stagger);
    let video_media = SyntheticConfig {
        keyframe_interval: Duration::from_secs(1),
        ..SyntheticConfig::vp8(15, 150_000)
    };
    let video_options = TrackOptions {
        media: Some(video_media),
        ..TrackOptions::default()
    };
    let (video, vmid) = sim
        .try_publish(alice, None, MediaKind::Video, "video/VP8", video_options)
        .expect("Alice publishes video");
    sim.set_sending(alice, &vmid, false);
    sim.advance(stagger);
    let mut layers = SimulcastOptions::new("video/VP8", &["l", "h"]);
    for ((_, media), fps) in layers.layers.iter_mut().zip([7, 11]) {
        media.fps = fps;
        media.bitrate_bps = 80_000;
    }
    let (simul, smid) = sim
        .try_publish_simulcast(alice, None, "video/VP8", layers)
        .expect("Alice publishes simulcast video");
    sim.set_sending(alice, &smid, false);
    let producers = vec![audio, video, simul];
    let consumers: Vec<ConsumerId> = producers.iter().map(|p| sim.subscribe(bob, p)).collect();
    let data_producer = sim
        .publish_data(alice, 1, "chat", true, None)
        .expect("Alice publishes a data channel");
    let bob_stream = sim
        .subscribe_data(bob, &data_producer)
        .expect("Bob subscribes to it")
        .sctp_stream_parameters
        .stream_id;
    // The channels open (media flows meanwhile).
    let open = sim.run_until(Duration::from_secs(2), |s| {
        s.peer(&send).channel_open(1) && s.peer(&recv).channel_open(bob_stream)
    });
    assert!(open, "the data channels open");

    let mut streams = Vec::new();
    let peer = sim.peer(&send);
    for t in peer.tracks() {
        let local = t.local();
        let max_seq = t.sent().last().map(|s| s.seq_no);
        let last_ts = t.sent().last().map(|s| s.rtp_time).unwrap_or(0);
        if local.layers.is_empty() {
            streams.push(Stream {
                ssrc: local.ssrc,
                pt: local.payload_type,
                mid: local.mid.clone(),
                rid: None,
                rtx: false,
                max_seq,
                last_ts,
            });
            if let Some(rtx) = local.rtx_ssrc {
                let rtx_pt = local
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.mime_type.to_ascii_lowercase().ends_with("/rtx"))
                    .map(|c| c.payload_type)
                    .unwrap_or(local.payload_type.wrapping_add(1));
                streams.push(Stream {
                    ssrc: rtx,
                    pt: rtx_pt,
                    mid: local.mid.clone(),
                    rid: None,
                    rtx: true,
                    max_seq: None,
                    last_ts,
                });
            }
        } else {
            for (l, layer) in local.layers.iter().zip(t.layers()) {
                streams.push(Stream {
                    ssrc: l.ssrc,
                    pt: local.payload_type,
                    mid: local.mid.clone(),
                    rid: Some(l.rid.clone()),
                    rtx: false,
                    max_seq: layer.sent().last().map(|s| s.seq_no),
                    last_ts: layer.sent().last().map(|s| s.rtp_time).unwrap_or(0),
                });
            }
        }
    }
    let ext = sim
        .router_caps()
        .header_extensions
        .iter()
        .map(|e| (e.uri.clone(), e.preferred_id))
        .collect();
    let alt = (0..ALT_ADDRS)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1 + i as u8)), 7000))
        .collect();
    World {
        sim,
        alice,
        bob,
        send,
        recv,
        producers,
        mids: vec![amid, vmid, smid],
        consumers,
        data_producer,
        bob_stream,
        streams,
        ext,
        raw_channels: Vec::new(),
        alice_streams: vec![1],
        alt,
        spent: Duration::ZERO,
        fuzz_payloads: Vec::new(),
    }
}

/// The extended sequence number `seq` most likely means after `max`
/// (RFC 3550 A.1: the rollover counter of `max`, or one more or less).
fn extend_seq(max: Option<u64>, seq: u16) -> u64 {
    let Some(max) = max else {
        return u64::from(seq);
    };
    let roc = max >> 16;
    [roc.wrapping_sub(1), roc, roc + 1]
        .into_iter()
        .filter(|r| *r < (1 << 32))
        .map(|r| (r << 16) | u64::from(seq))
        .min_by_key(|v| v.abs_diff(max))
        .unwrap_or(u64::from(seq))
}

/// A plain RTP packet: header, one-byte header extensions, payload, padding.
fn rtp_bytes(
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    exts: &[(u8, Vec<u8>)],
    payload: &[u8],
    padding: u8,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 32 + payload.len() + 256);
    let x = !exts.is_empty();
    out.push(0x80 | (u8::from(padding > 0) << 5) | (u8::from(x) << 4));
    out.push((u8::from(marker) << 7) | (pt & 0x7f));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if x {
        let mut body = Vec::new();
        for (id, value) in exts {
            if value.is_empty() || value.len() > 16 || !(1..=14).contains(id) {
                continue;
            }
            body.push((id << 4) | (value.len() as u8 - 1));
            body.extend_from_slice(value);
        }
        while body.len() % 4 != 0 {
            body.push(0);
        }
        out.extend_from_slice(&[0xBE, 0xDE]);
        out.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out.extend_from_slice(payload);
    if padding > 0 {
        out.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
        out.push(padding);
    }
    out
}

/// One RTCP packet with a correct length field (padded to 32-bit words).
fn rtcp_packet(count: u8, pt: u8, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut out = vec![0x80 | (count & 0x1f), pt];
    out.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Evidence of what the fuzzer reached, summed over every input.
struct Reached {
    inputs: AtomicU64,
    rtp_in: AtomicU64,
    rtp_forwarded: AtomicU64,
    keyframe_requests: AtomicU64,
    data_relayed: AtomicU64,
    data_dropped: AtomicU64,
    datagrams_dropped: AtomicU64,
    rtx_sent: AtomicU64,
    fuzz_rtp_sent: AtomicU64,
    fuzz_rtp_forwarded: AtomicU64,
    fuzz_rtcp_sent: AtomicU64,
    stun_bound: AtomicU64,
}

static REACHED: Reached = Reached {
    inputs: AtomicU64::new(0),
    rtp_in: AtomicU64::new(0),
    rtp_forwarded: AtomicU64::new(0),
    keyframe_requests: AtomicU64::new(0),
    data_relayed: AtomicU64::new(0),
    data_dropped: AtomicU64::new(0),
    datagrams_dropped: AtomicU64::new(0),
    rtx_sent: AtomicU64::new(0),
    fuzz_rtp_sent: AtomicU64::new(0),
    fuzz_rtp_forwarded: AtomicU64::new(0),
    fuzz_rtcp_sent: AtomicU64::new(0),
    stun_bound: AtomicU64::new(0),
};

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What one input made the room do, to compare two runs.
#[derive(Debug, PartialEq)]
struct Outcome {
    room: String,
    endpoint: String,
    bob_rtp: usize,
    bob_data: usize,
    room_events: usize,
}

fn run(data: &[u8]) -> Outcome {
    let mut w = setup();
    let before = w.sim.stats();
    let mut r = Reader(data);
    let mut ops = 0;
    while !r.is_empty() && ops < MAX_OPS && w.spent < MAX_TIME {
        ops += 1;
        step(&mut w, &mut r);
    }
    // Let what was sent arrive.
    w.sim.advance(Duration::from_millis(50));

    // Routes: one ufrag and at most four addresses per transport.
    let stats = w.sim.endpoint().stats();
    let transports = w.sim.stats().transports;
    assert!(
        stats.routes <= transports * 5,
        "{} routes for {transports} transports",
        stats.routes
    );
    assert_eq!(stats.rooms_failed, 0, "the room panicked");
    assert!(
        !w.sim.events().iter().any(|(_, e)| *e == Event::RoomFailed),
        "the room failed"
    );

    let after = w.sim.stats();
    add(&REACHED.rtp_in, after.rtp_in - before.rtp_in);
    add(
        &REACHED.rtp_forwarded,
        after.rtp_forwarded - before.rtp_forwarded,
    );
    add(
        &REACHED.keyframe_requests,
        after.keyframe_requests - before.keyframe_requests,
    );
    add(
        &REACHED.data_relayed,
        after.data_relayed - before.data_relayed,
    );
    add(
        &REACHED.data_dropped,
        after.data_dropped - before.data_dropped,
    );
    add(
        &REACHED.datagrams_dropped,
        after.datagrams_dropped - before.datagrams_dropped,
    );
    let rtx_pt = w.sim.subscription(w.bob, &w.consumers[1]).rtx_payload_type;
    let rtx = w
        .sim
        .link()
        .log()
        .iter()
        .filter(|e| {
            e.direction == Direction::Down
                && matches!(e.kind, PacketKind::Rtp { pt, .. } if Some(pt) == rtx_pt)
        })
        .count();
    add(&REACHED.rtx_sent, rtx as u64);
    let got = w
        .sim
        .peer(&w.recv)
        .rtp()
        .iter()
        .filter(|p| !p.payload.is_empty() && w.fuzz_payloads.iter().any(|f| f[..] == p.payload[..]))
        .count();
    add(&REACHED.fuzz_rtp_forwarded, got as u64);

    let outcome = Outcome {
        room: format!("{:?}", w.sim.stats()),
        endpoint: format!("{:?}", w.sim.endpoint().stats()),
        bob_rtp: w.sim.peer(&w.recv).rtp().len(),
        bob_data: w.sim.data_received(w.bob).len(),
        room_events: w.sim.events().len(),
    };

    // Closing the room forgets every route.
    let now = w.sim.now();
    let room = w
        .sim
        .endpoint()
        .rooms()
        .next()
        .map(|(id, _)| id)
        .expect("the room is open");
    assert!(w.sim.endpoint_mut().close_room(now, room));
    assert_eq!(
        w.sim.endpoint().stats().routes,
        0,
        "routes left after the room closed"
    );
    outcome
}

/// The address a peer sends from: its own, or one of the others.
fn source(w: &World, tid: &TransportId, sel: u8) -> SocketAddr {
    if sel >= 0xE0 {
        w.alt[usize::from(sel) % ALT_ADDRS]
    } else {
        w.sim.peer(tid).transport().local_addr()
    }
}

fn step(w: &mut World, r: &mut Reader<'_>) {
    let now = w.sim.now();
    match r.u8() % 24 {
        // Time.
        0 | 1 => {
            let d = Duration::from_millis(u64::from(r.u8()) * 4 + 1);
            w.spent += d;
            w.sim.advance(d);
        }
        // RTP from Alice, encrypted with her keys.
        2..=5 => send_rtp(w, r),
        // RTCP from Bob (feedback on his consumers) or Alice.
        6..=8 => send_rtcp(w, r),
        // Data on Alice's channel (relayed to Bob).
        9 => {
            let binary = r.u8() & 1 == 1;
            let d = r.bytes(4).to_vec();
            let _ = w
                .sim
                .peer_mut(&w.send)
                .transport_mut()
                .send_data(1, binary, &d);
        }
        // Data the other way, on Bob's consumer stream.
        10 => {
            let binary = r.u8() & 1 == 1;
            let d = r.bytes(4).to_vec();
            let stream = w.bob_stream;
            let _ = w
                .sim
                .peer_mut(&w.recv)
                .transport_mut()
                .send_data(stream, binary, &d);
        }
        // A channel opened on Alice's transport without signaling (DCEP, or
        // negotiated on a stream the room does not know), then written to.
        11 => {
            let flags = r.u8();
            // Odd: as the DTLS client, Alice's stack picks even ids itself
            // for channels announced in-band.
            let stream = (r.u16() % 64) | 1;
            let label = String::from_utf8_lossy(r.bytes(1)).into_owned();
            let reliability = match flags % 3 {
                0 => Reliability::Reliable,
                1 => Reliability::MaxRetransmits {
                    retransmits: u16::from(r.u8() % 4),
                },
                _ => Reliability::MaxPacketLifetime { lifetime: r.u16() },
            };
            let negotiated = (flags & 8 != 0).then_some(stream);
            if negotiated.is_some() {
                if w.alice_streams.contains(&stream) {
                    return;
                }
                w.alice_streams.push(stream);
            }
            let peer = w.sim.peer_mut(&w.send).transport_mut();
            let cid = peer
                .rtc_mut()
                .direct_api()
                .create_data_channel(ChannelConfig {
                    label,
                    ordered: flags & 4 != 0,
                    reliability,
                    negotiated,
                    protocol: String::new(),
                });
            peer.handle_timeout(now);
            w.raw_channels.push(cid);
        }
        12 => {
            let which = usize::from(r.u8());
            let binary = r.u8() & 1 == 1;
            let d = r.bytes(4).to_vec();
            if !w.raw_channels.is_empty() {
                let cid = w.raw_channels[which % w.raw_channels.len()];
                let peer = w.sim.peer_mut(&w.send).transport_mut();
                if let Some(mut ch) = peer.rtc_mut().channel(cid) {
                    let _ = ch.write(binary, &d);
                }
                peer.handle_timeout(now);
            }
        }
        // produce-data and subscribe-data with the fuzzer's parameters; the
        // channel is opened on Alice's side first (an odd stream not used
        // before), or not at all (any stream: only the room is asked).
        13 => {
            let flags = r.u8();
            let open_first = flags & 32 != 0;
            let stream = if open_first {
                (r.u16() % 80) | 1
            } else {
                r.u16() % 80
            };
            let params = SctpStreamParameters {
                stream_id: stream,
                ordered: (flags & 1 != 0).then_some(flags & 2 != 0),
                max_packet_life_time: (flags & 4 != 0).then(|| r.u16()),
                max_retransmits: (flags & 8 != 0).then(|| r.u16()),
            };
            let label = String::from_utf8_lossy(r.bytes(1)).into_owned();
            if open_first && !w.alice_streams.contains(&stream) {
                w.alice_streams.push(stream);
                let _ = w.sim.peer_mut(&w.send).transport_mut().open_data_channel(
                    stream,
                    &label,
                    params.ordered.unwrap_or(true),
                    params.max_retransmits,
                );
            }
            let (alice, send) = (w.alice.clone(), w.send.clone());
            let produced =
                w.sim
                    .room_mut()
                    .produce_data(now, alice, Some(&send), params, &label, "", pulsewave_core::AppData::default());
            if let Ok(dp) = produced
                && flags & 16 != 0
            {
                let (bob, recv) = (w.bob.clone(), w.recv.clone());
                let consumed = w.sim.room_mut().consume_data(now, bob, Some(&recv), &dp);
                if let Ok(c) = consumed {
                    let _ = w
                        .sim
                        .peer_mut(&w.recv)
                        .transport_mut()
                        .accept_data_channel(&c.sctp_stream_parameters, &c.label);
                }
            }
        }
        // Close a data channel (Alice's published one, or one of hers).
        14 => {
            let stream = if r.u8() & 1 == 0 { 1 } else { r.u16() % 80 };
            let _ = w
                .sim
                .peer_mut(&w.send)
                .transport_mut()
                .close_data_channel(stream);
        }
        // STUN: authenticated binding requests (from the peer's address or
        // a new one), and requests with the right ufrag and fuzzed rest.
        15 => send_valid_stun(w, r),
        16 => {
            let to_bob = r.u8() & 1 == 1;
            let sel = r.u8();
            let body = r.bytes(1).to_vec();
            let tid = if to_bob {
                w.recv.clone()
            } else {
                w.send.clone()
            };
            let src = source(w, &tid, sel);
            let ufrag = w
                .sim
                .peer(&tid)
                .options()
                .ice_parameters
                .username_fragment
                .clone();
            let mut d = body;
            if d.len() >= 20 {
                d[0] = 0;
                d[1] = 1;
                d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
                let user = format!("{ufrag}:x");
                let mut attr = vec![0, 6, 0, user.len() as u8];
                attr.extend_from_slice(user.as_bytes());
                d.splice(20..20, attr);
            }
            let _ = w.sim.inject(src, &d);
        }
        // Raw bytes from a peer's address (DTLS records after the
        // handshake, RTP without SRTP, ...).
        17 => {
            let to_bob = r.u8() & 1 == 1;
            let sel = r.u8();
            let d = r.bytes(2).to_vec();
            let tid = if to_bob {
                w.recv.clone()
            } else {
                w.send.clone()
            };
            let src = source(w, &tid, sel);
            let _ = w.sim.inject(src, &d);
        }
        // Signaling: pause, resume, preferred layer, close.
        18 => {
            let which = r.u8();
            let c = w.consumers[usize::from(which) % w.consumers.len()].clone();
            let bob = w.bob.clone();
            let mut room = w.sim.room_mut();
            let _ = match which / 64 {
                0 => room.pause_consumer(now, bob, &c),
                1 => room.resume_consumer(now, bob, &c),
                2 => room.set_consumer_preferred_layers(now, bob, &c, Some(which % 4), None),
                _ => room.set_consumer_preferred_layers(now, bob, &c, None, None),
            };
        }
        19 => {
            let which = r.u8();
            let p = w.producers[usize::from(which) % w.producers.len()].clone();
            let alice = w.alice.clone();
            let mut room = w.sim.room_mut();
            let _ = if which & 0x80 == 0 {
                room.pause_producer(now, alice, &p)
            } else {
                room.resume_producer(now, alice, &p)
            };
        }
        20 => {
            let which = r.u8();
            match which % 4 {
                0 => {
                    let c = w.consumers[usize::from(which / 4) % w.consumers.len()].clone();
                    let bob = w.bob.clone();
                    let _ = w.sim.room_mut().close_consumer(now, bob, &c);
                    let _ = w.sim.peer_mut(&w.recv).transport_mut().remove_consumer(&c);
                }
                1 => {
                    let i = usize::from(which / 4) % w.producers.len();
                    let p = w.producers[i].clone();
                    let alice = w.alice.clone();
                    let _ = w.sim.room_mut().close_producer(now, alice, &p);
                    let mid = w.mids[i].clone();
                    w.sim.set_sending(alice, &mid, false);
                }
                2 => {
                    let alice = w.alice.clone();
                    let dp = w.data_producer.clone();
                    let _ = w.sim.room_mut().close_data_producer(now, alice, &dp);
                }
                _ => {
                    // The rarest: a peer closes its transport (RTCP BYE,
                    // SCTP shutdown, DTLS close_notify).
                    let tid = if which & 4 == 0 {
                        w.send.clone()
                    } else {
                        w.recv.clone()
                    };
                    w.sim.peer_mut(&tid).transport_mut().close(now);
                }
            }
        }
        // Bob asks for a keyframe the way str0m does (PLI).
        21 => {
            let which = usize::from(r.u8());
            let c = w.consumers[which % w.consumers.len()].clone();
            let _ = w.sim.peer_mut(&w.recv).transport_mut().request_keyframe(&c);
        }
        // One of Alice's streams (audio, video, a simulcast layer) starts
        // or stops sending frames.
        22 => {
            let which = r.u8();
            let on = which & 0x80 == 0;
            let alice = w.alice.clone();
            match usize::from(which & 0x7f) % 4 {
                i @ (0 | 1) => {
                    let mid = w.mids[i].clone();
                    w.sim.set_sending(alice, &mid, on);
                }
                i => {
                    let mid = w.mids[2].clone();
                    let rid = if i == 2 { "l" } else { "h" };
                    w.sim.set_layer_sending(alice, &mid, rid, on);
                }
            }
        }
        // Loss and jitter on the link (seeded): real NACKs and RTX.
        _ => {
            let loss = f64::from(r.u8() % 40) / 100.0;
            let jitter = Duration::from_millis(u64::from(r.u8() % 30));
            w.sim.set_link(LinkConfig {
                loss,
                jitter,
                ..LinkConfig::default()
            });
        }
    }
}

fn send_rtp(w: &mut World, r: &mut Reader<'_>) {
    let flags = r.u8();
    let flags2 = r.u8();
    let sel = usize::from(r.u8());
    let src_sel = r.u8();
    let foreign = sel % (w.streams.len() + 1) == w.streams.len();
    let mut stream = if foreign {
        Stream {
            ssrc: r.u32(),
            pt: r.u8(),
            mid: String::new(),
            rid: None,
            rtx: false,
            max_seq: None,
            last_ts: 0,
        }
    } else {
        let mut s = w.streams[sel % w.streams.len()].clone();
        // The synthetic source may have sent on it too.
        if !s.rtx {
            let track = w.sim.track(w.alice, &s.mid);
            let sent = match &s.rid {
                Some(rid) => track.layer(rid).and_then(|l| l.sent().last()),
                None => track.sent().last(),
            };
            if let Some(last) = sent {
                s.max_seq = Some(s.max_seq.map_or(last.seq_no, |m| m.max(last.seq_no)));
            }
        }
        s
    };
    let pt = if flags2 & 1 != 0 {
        r.u8() & 0x7f
    } else {
        stream.pt
    };
    // Mostly the next sequence number, sometimes a jump or an old one.
    let seq = match flags2 >> 6 {
        0 | 1 => stream.max_seq.map_or(1, |m| m + 1) as u16,
        2 => (stream.max_seq.unwrap_or(0) as u16)
            .wrapping_add(r.u8().into())
            .wrapping_sub(128),
        _ => r.u16(),
    };
    let ts = if flags2 & 2 != 0 {
        r.u32()
    } else {
        stream.last_ts.wrapping_add(u32::from(r.u16()))
    };
    let mut exts: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut ext = |u: &str, v: Vec<u8>| {
        if let Some(id) = w.ext_id(u) {
            exts.push((id, v));
        }
    };
    if flags & 4 != 0 {
        let v = if flags2 & 4 != 0 {
            r.bytes(1).to_vec()
        } else {
            stream.mid.clone().into_bytes()
        };
        ext(uri::MID, v);
    }
    if flags & 8 != 0 {
        let v = if flags2 & 8 != 0 {
            r.bytes(1).to_vec()
        } else {
            stream.rid.clone().unwrap_or_default().into_bytes()
        };
        let u = if stream.rtx && flags2 & 16 == 0 {
            uri::REPAIRED_RID
        } else {
            uri::RID
        };
        ext(u, v);
    }
    if flags & 16 != 0 {
        ext(uri::AUDIO_LEVEL, vec![r.u8()]);
    }
    if flags & 32 != 0 {
        ext(uri::TRANSPORT_CC, r.u16().to_be_bytes().to_vec());
    }
    if flags & 64 != 0 {
        let t = r.u32().to_be_bytes();
        ext(uri::ABS_SEND_TIME, t[1..].to_vec());
    }
    if flags2 & 32 != 0 {
        ext(uri::VIDEO_ORIENTATION, vec![r.u8()]);
    }
    let padding = if flags & 2 != 0 { r.u8() % 64 } else { 0 };
    let payload = r.bytes(5).to_vec();
    let packet = rtp_bytes(
        flags & 1 != 0,
        pt,
        seq,
        ts,
        stream.ssrc,
        &exts,
        &payload,
        padding,
    );
    let index = extend_seq(stream.max_seq, seq);
    let src = source(w, &w.send.clone(), src_sel);
    let protected = w
        .sim
        .peer_mut(&w.send)
        .transport_mut()
        .rtc_mut()
        ._protect_rtp(&packet, index);
    if let Some(bytes) = protected {
        let _ = w.sim.inject(src, &bytes);
        add(&REACHED.fuzz_rtp_sent, 1);
        // What Bob gets of it: the payload (an RTX packet's without its
        // original sequence number).
        let sent = if stream.rtx {
            payload.get(2..).unwrap_or_default()
        } else {
            &payload[..]
        };
        if !sent.is_empty() && w.fuzz_payloads.len() < 256 {
            w.fuzz_payloads.push(sent.to_vec());
        }
    }
    stream.max_seq = Some(stream.max_seq.map_or(index, |m| m.max(index)));
    stream.last_ts = ts;
    if !foreign {
        let i = sel % w.streams.len();
        w.streams[i] = stream;
    }
}

fn send_rtcp(w: &mut World, r: &mut Reader<'_>) {
    let head = r.u8();
    let from_bob = head & 1 == 0;
    let src_sel = r.u8();
    let tid = if from_bob {
        w.recv.clone()
    } else {
        w.send.clone()
    };
    // The SSRCs the feedback is about: Bob's consumers' (media and RTX), or
    // Alice's streams'.
    let ssrcs: Vec<u32> = if from_bob {
        w.consumers
            .iter()
            .flat_map(|c| {
                let s = w.sim.subscription(w.bob, c);
                [Some(s.ssrc), s.rtx_ssrc]
            })
            .flatten()
            .collect()
    } else {
        w.streams.iter().map(|s| s.ssrc).collect()
    };
    let pick = |b: u8| -> u32 {
        ssrcs
            .get(usize::from(b) % (ssrcs.len() + 1))
            .copied()
            .unwrap_or(0x5057_0000 | u32::from(b))
    };
    let sender = 0x0B0B_0000 | u32::from(head);
    let mut compound = Vec::new();
    for _ in 0..1 + (head >> 6) {
        let kind = r.u8();
        let media = pick(r.u8());
        let p = match kind % 12 {
            // Receiver report with report blocks.
            0 | 1 => {
                let n = r.u8() % 4;
                let mut b = sender.to_be_bytes().to_vec();
                for _ in 0..n {
                    b.extend_from_slice(&pick(r.u8()).to_be_bytes());
                    for _ in 0..5 {
                        b.extend_from_slice(&r.u32().to_be_bytes());
                    }
                }
                rtcp_packet(n, 201, &b)
            }
            // Sender report.
            2 => {
                let mut b = media.to_be_bytes().to_vec();
                for _ in 0..5 {
                    b.extend_from_slice(&r.u32().to_be_bytes());
                }
                rtcp_packet(0, 200, &b)
            }
            // PLI.
            3 | 4 => {
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(&media.to_be_bytes());
                rtcp_packet(1, 206, &b)
            }
            // FIR.
            5 => {
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&media.to_be_bytes());
                b.extend_from_slice(&[r.u8(), 0, 0, 0]);
                rtcp_packet(4, 206, &b)
            }
            // NACK of packets Bob received (recent sequence numbers), or
            // any.
            6 | 7 => {
                let consumer = w
                    .consumers
                    .iter()
                    .find(|c| {
                        let s = w.sim.subscription(w.bob, c);
                        s.ssrc == media
                    })
                    .cloned();
                let last = consumer
                    .map(|c| {
                        let mid = w.sim.subscription(w.bob, &c).mid.clone();
                        w.sim
                            .peer(&w.recv)
                            .rtp()
                            .iter()
                            .rev()
                            .find(|p| p.mid == mid)
                            .map(|p| p.seq_no as u16)
                            .unwrap_or(0)
                    })
                    .unwrap_or_else(|| r.u16());
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(&media.to_be_bytes());
                for _ in 0..1 + r.u8() % 3 {
                    b.extend_from_slice(&last.wrapping_sub(u16::from(r.u8())).to_be_bytes());
                    b.extend_from_slice(&r.u16().to_be_bytes());
                }
                rtcp_packet(1, 205, &b)
            }
            // Transport-wide congestion control feedback.
            8 => {
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(&media.to_be_bytes());
                b.extend_from_slice(&r.u16().to_be_bytes()); // base sequence number
                b.extend_from_slice(&(u16::from(r.u8())).to_be_bytes()); // status count
                b.extend_from_slice(&r.u32().to_be_bytes()); // reference time, fb count
                b.extend_from_slice(r.bytes(1)); // chunks and deltas
                rtcp_packet(15, 205, &b)
            }
            // REMB.
            9 => {
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(b"REMB");
                b.push(1);
                b.extend_from_slice(&r.u32().to_be_bytes()[1..]);
                b.extend_from_slice(&media.to_be_bytes());
                rtcp_packet(15, 206, &b)
            }
            // BYE.
            10 => rtcp_packet(1, 203, &media.to_be_bytes()),
            // Anything: a type byte, a count and a body (SDES, APP, XR, ...).
            _ => {
                let pt = 192 + r.u8() % 32;
                let count = r.u8();
                let mut b = sender.to_be_bytes().to_vec();
                b.extend_from_slice(r.bytes(2));
                rtcp_packet(count, pt, &b)
            }
        };
        compound.extend_from_slice(&p);
    }
    let src = source(w, &tid, src_sel);
    let protected = w
        .sim
        .peer_mut(&tid)
        .transport_mut()
        .rtc_mut()
        ._protect_rtcp(&compound);
    if let Some(bytes) = protected {
        let _ = w.sim.inject(src, &bytes);
        add(&REACHED.fuzz_rtcp_sent, 1);
    }
}

/// HMAC-SHA1 over the parts, for STUN's MESSAGE-INTEGRITY.
fn sha1_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    use aws_lc_rs::hmac;
    let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// A binding request with the transport's credentials, as ICE sends after a
/// network change: the room binds the new address.
fn send_valid_stun(w: &mut World, r: &mut Reader<'_>) {
    let flags = r.u8();
    let sel = r.u8();
    let prio = r.u32();
    let tid = if flags & 1 == 0 {
        w.send.clone()
    } else {
        w.recv.clone()
    };
    let src = source(w, &tid, sel | if flags & 2 != 0 { 0xE0 } else { 0 });
    let ice = w.sim.peer(&tid).options().ice_parameters.clone();
    let local = w.sim.peer(&tid).transport().local_ice_parameters();
    let username = if flags & 4 != 0 {
        format!(
            "{}:{}",
            ice.username_fragment,
            String::from_utf8_lossy(r.bytes(1))
        )
    } else {
        format!("{}:{}", ice.username_fragment, local.username_fragment)
    };
    let msg = StunMessage::binding_request(
        &username,
        TransId::new(),
        true,
        u64::from(r.u32()),
        prio,
        flags & 8 != 0,
    );
    let mut buf = vec![0u8; 1500];
    let password = if flags & 16 != 0 {
        b"wrong".to_vec()
    } else {
        ice.password.into_bytes()
    };
    if let Ok(n) = msg.to_bytes(Some(&password), &mut buf, sha1_hmac) {
        let routes = w.sim.endpoint().stats().routes;
        let _ = w.sim.inject(src, &buf[..n]);
        if w.sim.endpoint().stats().routes > routes {
            add(&REACHED.stun_bound, 1);
        }
    }
}

fn report() {
    let n = add_input();
    if n.is_power_of_two() || n % 5000 == 0 {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let r = &REACHED;
        eprintln!(
            "room_connected: {n} inputs; fuzzed RTP sent {}, of which Bob received {} (room took {} RTP in all, forwarded {}), fuzzed RTCP sent {}, keyframe requests upstream {}, RTX retransmissions to Bob {}, data relayed {} (dropped {}), datagrams refused {}, new addresses bound by STUN {}",
            g(&r.fuzz_rtp_sent),
            g(&r.fuzz_rtp_forwarded),
            g(&r.rtp_in),
            g(&r.rtp_forwarded),
            g(&r.fuzz_rtcp_sent),
            g(&r.keyframe_requests),
            g(&r.rtx_sent),
            g(&r.data_relayed),
            g(&r.data_dropped),
            g(&r.datagrams_dropped),
            g(&r.stun_bound),
        );
    }
}

fn add_input() -> u64 {
    REACHED.inputs.fetch_add(1, Ordering::Relaxed) + 1
}

fuzz_target!(|data: &[u8]| {
    let first = run(data);
    if std::env::var_os("ROOM_CONNECTED_TWICE").is_some() {
        let second = run(data);
        assert_eq!(
            first, second,
            "the same input did something else the second time"
        );
    }
    report();
});
