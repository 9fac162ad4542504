//! The forwarding hot path: one SRTP packet from a publisher into
//! `Endpoint::handle_datagram`, forwarded to N consumers, and the outputs
//! drained as the media worker drains them (`poll_transmit`, `poll_event`,
//! `poll_timeout`). No sockets: the real per-packet work of the SFU is one
//! SRTP decrypt and N x (rewrite + SRTP encrypt).
//!
//! The publisher and the subscribers are pulsewave-client `PeerTransport`s
//! connected to the room in-process by the `pulsewave-test` simulation
//! (ICE, DTLS, subscriptions resumed, a keyframe forwarded). Then the
//! publisher's track stops its own media and the benchmark writes VP8-sized
//! packets (1100-byte payload, not a keyframe) in batches: each batch is
//! encrypted by the publisher outside the timing, fed to the room inside it,
//! and between batches the simulation runs 5 ms of virtual time so RTCP and
//! ICE consent keep flowing.
//!
//! `forward/consumers/N` runs the room's timers after every datagram (what
//! an idle worker does: the str0m pacer only emits a written packet on its
//! next timeout input); `forward/burst8_consumers/N` after every 8
//! datagrams (a worker that reads a burst of datagrams before running the
//! timers).
//!
//! `forward_idle/consumers_50/*` measures the same 50-consumer room alone,
//! with 950 idle connected transports beside its consumers, and with 20
//! idle rooms of 50 participants on the same endpoint: the cost per
//! forwarded packet must not grow with what else the endpoint holds.
//!
//! ```bash
//! cargo bench -p pulsewave-test --bench forward
//! # One figure without criterion (also PULSEWAVE_BENCH_IDLE_TRANSPORTS=950
//! # or PULSEWAVE_BENCH_IDLE_ROOMS=20, rooms of 50):
//! PULSEWAVE_BENCH_CONSUMERS=50 PULSEWAVE_BENCH_PACKETS=2000 \
//!   cargo bench -p pulsewave-test --bench forward
//! # Instruction counts (valgrind), N = 50 consumers, 2000 packets:
//! PULSEWAVE_BENCH_CONSUMERS=50 PULSEWAVE_BENCH_PACKETS=2000 PULSEWAVE_BENCH_BURST=1 \
//!   valgrind --tool=callgrind --toggle-collect='*forward_batch*' \
//!   target/release/deps/forward-<hash>
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use pulsewave_core::{Datagram, Endpoint, Protocol, RoomConfig};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{MediaKind, TransportId};
use pulsewave_test::{SERVER_ADDR, Sim, SimConfig};

/// Packets encrypted by the publisher per batch.
const BATCH: usize = 64;

struct Setup {
    sim: Sim,
    publisher: TransportId,
    mid: String,
    source: SocketAddr,
    next_seq: u64,
    rtp_time: u32,
    payload: Arc<[u8]>,
    consumers: usize,
}

/// What else the publisher's endpoint holds, doing nothing: connected
/// receive transports in the busy room that consume nothing, and rooms of
/// idle participants beside it.
#[derive(Debug, Clone, Copy, Default)]
struct Idle {
    transports: usize,
    rooms: usize,
    per_room: usize,
}

fn setup(consumers: usize) -> Setup {
    setup_with(consumers, Idle::default())
}

fn setup_with(consumers: usize, idle: Idle) -> Setup {
    let config = SimConfig {
        room: RoomConfig {
            local_addr: SERVER_ADDR,
            // The subscribers' consent checks are simulated, but keep the
            // transports whatever the virtual clock does.
            ice_timeout: Duration::from_secs(24 * 3600),
            // Bandwidth estimation, the allocator and str0m's pacer run,
            // from an estimate far above what the bench sends (about 120
            // Mbit/s per subscriber), so the pacer never holds a packet:
            // what is measured is their cost, not a throttle.
            // PULSEWAVE_BENCH_BWE=0: without them (the forwarding of the
            // first versions).
            bandwidth_estimation: std::env::var("PULSEWAVE_BENCH_BWE").map_or(true, |v| v != "0"),
            initial_available_outgoing_bitrate: 10_000_000_000,
            max_outgoing_bitrate: 10_000_000_000,
            ..RoomConfig::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::with_config(config);
    let alice = sim.join("alice");
    let publisher = sim.send_transport(alice);
    let (producer, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    // No media while the subscribers connect, and all of them connect in
    // one run of the simulation: connecting them one by one, each run
    // ticks every earlier transport (and forwarded the publisher's video
    // to them), O(N^2) work (1,000 consumers took 14 minutes; the timed
    // part is the same).
    sim.set_sending(alice, &mid, false);
    let mut subs = Vec::new();
    let mut pending = Vec::new();
    for i in 0..consumers {
        let s = sim.join(&format!("s{i}"));
        let t = sim
            .open_transport(s, TransportDirection::Recv, None)
            .expect("a receive transport");
        pending.push(t);
        subs.push(s);
    }
    for i in 0..idle.transports {
        let p = sim.join(&format!("idle{i}"));
        let t = sim
            .open_transport(p, TransportDirection::Recv, None)
            .expect("a receive transport");
        pending.push(t);
    }
    for r in 0..idle.rooms {
        let room = sim.open_room();
        for i in 0..idle.per_room {
            let p = sim.join_room(&format!("r{r}p{i}"), room);
            let t = sim
                .open_transport(p, TransportDirection::Recv, None)
                .expect("a receive transport");
            pending.push(t);
        }
    }
    sim.connect_all(&pending).expect("connect");
    let subs: Vec<_> = subs
        .into_iter()
        .map(|s| (s, sim.subscribe(s, &producer)))
        .collect();
    sim.set_sending(alice, &mid, true);
    sim.advance(Duration::from_millis(500));
    for (s, c) in &subs {
        assert!(
            !sim.received(*s, c).is_empty(),
            "every consumer receives media before the benchmark"
        );
    }
    sim.set_sending(alice, &mid, false);
    sim.advance(Duration::from_millis(100));
    let last = sim.track(alice, &mid).sent().last().cloned().expect("sent");
    // A VP8 packet in the middle of a frame (S bit clear): never a keyframe.
    let mut payload = vec![0u8; 1100];
    for (i, b) in payload.iter_mut().enumerate().skip(1) {
        *b = i as u8;
    }
    let source = sim.peer(&publisher).transport().local_addr();
    Setup {
        sim,
        publisher,
        mid,
        source,
        next_seq: last.seq_no + 1,
        rtp_time: last.rtp_time.wrapping_add(3000),
        payload: payload.into(),
        consumers,
    }
}

impl Setup {
    /// `k` SRTP datagrams from the publisher (and any RTCP it has to send).
    fn batch(&mut self, k: usize) -> Vec<Vec<u8>> {
        let now = self.sim.now();
        let t = self.sim.peer_mut(&self.publisher).transport_mut();
        for _ in 0..k {
            t.write_rtp(
                &self.mid,
                self.next_seq,
                self.rtp_time,
                self.next_seq.is_multiple_of(4),
                self.payload.clone(),
                now,
            )
            .expect("write");
            if self.next_seq.is_multiple_of(4) {
                self.rtp_time = self.rtp_time.wrapping_add(3000);
            }
            self.next_seq += 1;
        }
        // str0m queues written packets until its next timeout input.
        t.handle_timeout(now);
        let mut out = Vec::with_capacity(k);
        while let Some(tx) = t.poll_transmit() {
            out.push(tx.contents);
        }
        out
    }
}

/// What the media worker does with datagrams, minus the syscalls: each
/// datagram into `handle_datagram`, the outputs drained; every `burst`
/// datagrams (1: after each one, as an idle worker does), the timers that
/// are due: str0m only hands a written RTP packet to its pacer, and so
/// encrypts and emits it, on its next timeout input.
#[inline(never)]
fn forward_batch(
    endpoint: &mut Endpoint,
    now: Instant,
    source: SocketAddr,
    batch: &[Vec<u8>],
    burst: usize,
) -> usize {
    let mut bytes = 0;
    let mut drain = |endpoint: &mut Endpoint| {
        while let Some(t) = endpoint.poll_transmit() {
            bytes += t.contents.len();
            drop(black_box(t));
        }
        while let Some(e) = endpoint.poll_event() {
            drop(black_box(e));
        }
        endpoint.poll_timeout()
    };
    for chunk in batch.chunks(burst.max(1)) {
        for d in chunk {
            let datagram = Datagram {
                proto: Protocol::Udp,
                source,
                destination: SERVER_ADDR,
                contents: d,
            };
            let _ = endpoint.handle_datagram(now, datagram);
            drain(endpoint);
        }
        if drain(endpoint).is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
            drain(endpoint);
        }
    }
    bytes
}

/// Feeds `packets` packets through the room; returns the time spent inside
/// the room, the RTP packets it forwarded and the bytes it sent.
fn run(s: &mut Setup, packets: u64, burst: usize) -> (Duration, u64, usize) {
    let before = s.sim.room().stats().rtp_forwarded;
    let mut spent = Duration::ZERO;
    let mut bytes = 0;
    let mut left = packets;
    while left > 0 {
        let k = (left as usize).min(BATCH);
        let batch = s.batch(k);
        assert!(batch.len() >= k, "the publisher sent its packets");
        let now = s.sim.now();
        let source = s.source;
        let endpoint = s.sim.endpoint_mut();
        let t0 = Instant::now();
        bytes += black_box(forward_batch(endpoint, now, source, &batch, burst));
        spent += t0.elapsed();
        left -= k as u64;
        s.sim.advance(Duration::from_millis(5));
    }
    (spent, s.sim.room().stats().rtp_forwarded - before, bytes)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for n in [1usize, 10, 50, 100, 200, 500, 1000] {
        let mut s = setup(n);
        let (_, forwarded, bytes) = run(&mut s, 64, 1);
        assert_eq!(
            forwarded,
            64 * n as u64,
            "every packet reaches every consumer"
        );
        assert!(
            bytes >= 64 * n * 1100,
            "the forwarded packets leave the room inside the timing"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("consumers", n), &n, |b, _| {
            b.iter_custom(|iters| run(&mut s, iters, 1).0);
        });
        group.bench_with_input(BenchmarkId::new("burst8_consumers", n), &n, |b, _| {
            b.iter_custom(|iters| run(&mut s, iters, 8).0);
        });
    }
    group.finish();

    // Flat cost: the busy room's cost per forwarded packet with 950 idle
    // transports beside its 50 consumers, or 20 idle rooms of 50 on its
    // endpoint, against the busy room alone.
    let mut group = c.benchmark_group("forward_idle");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    let cases = [
        ("alone", Idle::default()),
        (
            "idle_transports_950",
            Idle {
                transports: 950,
                ..Idle::default()
            },
        ),
        (
            "idle_rooms_20x50",
            Idle {
                rooms: 20,
                per_room: 50,
                ..Idle::default()
            },
        ),
    ];
    for (name, idle) in cases {
        let mut s = setup_with(50, idle);
        let (_, forwarded, _) = run(&mut s, 64, 1);
        assert_eq!(forwarded, 64 * 50, "every packet reaches every consumer");
        group.throughput(Throughput::Elements(50));
        group.bench_function(BenchmarkId::new("consumers_50", name), |b| {
            b.iter_custom(|iters| run(&mut s, iters, 1).0);
        });
    }
    group.finish();
}

fn main() {
    if let Ok(n) = std::env::var("PULSEWAVE_BENCH_CONSUMERS") {
        // Fixed work for instruction counting under valgrind.
        let n: usize = n.parse().expect("PULSEWAVE_BENCH_CONSUMERS");
        let packets: u64 = std::env::var("PULSEWAVE_BENCH_PACKETS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let env = |name: &str| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let idle = Idle {
            transports: env("PULSEWAVE_BENCH_IDLE_TRANSPORTS"),
            rooms: env("PULSEWAVE_BENCH_IDLE_ROOMS"),
            per_room: 50,
        };
        let mut s = setup_with(n, idle);
        let burst: usize = std::env::var("PULSEWAVE_BENCH_BURST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let (spent, forwarded, bytes) = run(&mut s, packets, burst);
        println!(
            "{} consumers: {packets} packets in, {forwarded} forwarded, {bytes} bytes out, \
             {:?} per packet in",
            s.consumers,
            spent / packets.max(1) as u32
        );
        println!(
            "per_packet_ns {}",
            spent.as_nanos() / u128::from(packets.max(1))
        );
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
