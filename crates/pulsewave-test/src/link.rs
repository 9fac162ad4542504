//! The simulated network between the room and its peers: one-way latency,
//! jitter, seeded random loss, an MTU, filters that drop chosen packets, and
//! per-participant bottlenecks (a capacity with a drop-tail queue, as a
//! `tbf` qdisc on a home link). Datagrams in flight wait in a priority
//! queue ordered by delivery time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pulsewave_core::Owner;
use pulsewave_protocol::TransportId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer to the server (publishing, or feedback from a subscriber).
    Up,
    /// From the server to a peer.
    Down,
}

/// What a datagram carries, read from its first bytes (RFC 7983). SRTP and
/// SRTCP leave the fixed headers in clear, so RTP ssrc, payload type and
/// sequence number can be read even though the payload is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// A STUN message (first byte 0..=3).
    Stun,
    /// A DTLS record (first byte 20..=63): handshake, alerts, SCTP.
    Dtls,
    /// An RTP packet.
    Rtp {
        /// The ssrc.
        ssrc: u32,
        /// The payload type.
        pt: u8,
        /// The 16-bit sequence number.
        seq: u16,
    },
    /// An RTCP compound packet (RFC 5761 demultiplexing: packet type
    /// 192..=223).
    Rtcp {
        /// The packet type of the first RTCP packet (200 SR, 201 RR, 205
        /// transport feedback such as NACK, 206 payload feedback such as PLI).
        pt: u8,
    },
    /// Anything else (garbage).
    Other,
}

impl PacketKind {
    /// Whether this is an RTP packet.
    pub fn is_rtp(&self) -> bool {
        matches!(self, PacketKind::Rtp { .. })
    }

    /// The ssrc of an RTP packet.
    pub fn rtp_ssrc(&self) -> Option<u32> {
        match self {
            PacketKind::Rtp { ssrc, .. } => Some(*ssrc),
            _ => None,
        }
    }
}

/// Classifies a datagram by its first bytes.
pub fn classify(bytes: &[u8]) -> PacketKind {
    let Some(&b0) = bytes.first() else {
        return PacketKind::Other;
    };
    match b0 {
        0..=3 if bytes.len() >= 20 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        128..=191 if bytes.len() >= 8 => {
            let b1 = bytes[1];
            if (192..=223).contains(&b1) {
                PacketKind::Rtcp { pt: b1 }
            } else if bytes.len() >= 12 {
                PacketKind::Rtp {
                    ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
                    pt: b1 & 0x7f,
                    seq: u16::from_be_bytes([bytes[2], bytes[3]]),
                }
            } else {
                PacketKind::Other
            }
        }
        _ => PacketKind::Other,
    }
}

/// One datagram on the simulated network.
#[derive(Clone)]
pub struct Datagram {
    /// Up (peer to server) or down.
    pub direction: Direction,
    /// Sender address.
    pub source: SocketAddr,
    /// Receiver address.
    pub destination: SocketAddr,
    /// The peer's transport (the sender's for `Up`, the receiver's for
    /// `Down`), when the address belongs to a simulated peer.
    pub transport: Option<TransportId>,
    /// The peer's participant.
    pub participant: Option<Owner>,
    /// What it carries.
    pub kind: PacketKind,
    /// When it was sent.
    pub sent_at: Instant,
    /// The bytes.
    pub contents: Vec<u8>,
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("direction", &self.direction)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("transport", &self.transport)
            .field("kind", &self.kind)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// What happened to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// It will be (or was) delivered at this instant.
    Delivered(Instant),
    /// Random loss.
    Lost,
    /// Larger than the MTU.
    TooBig,
    /// Dropped by a filter.
    Filtered,
    /// Dropped at a full bottleneck queue.
    QueueFull,
}

/// A participant's bottleneck in one direction: datagrams leave it one
/// after the other at `rate_bps`; one that would wait longer than
/// `max_queue` is dropped (drop-tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bottleneck {
    /// Capacity, bits per second.
    pub rate_bps: u64,
    /// The longest a datagram may wait in the queue.
    pub max_queue: Duration,
}

impl Bottleneck {
    /// `rate_bps` with a queue of 100 ms (a typical home router buffer at
    /// these rates).
    pub fn rate(rate_bps: u64) -> Self {
        Self {
            rate_bps,
            max_queue: Duration::from_millis(100),
        }
    }
}

/// A bottleneck and when its queue drains.
#[derive(Debug, Clone, Copy)]
struct Queue {
    shape: Bottleneck,
    busy_until: Option<Instant>,
}

/// One line of the link's log: a datagram without its bytes, and its fate.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Up or down.
    pub direction: Direction,
    /// The peer's transport, if known.
    pub transport: Option<TransportId>,
    /// The peer's participant, if known.
    pub participant: Option<Owner>,
    /// What it carried.
    pub kind: PacketKind,
    /// Its size in bytes.
    pub len: usize,
    /// When it was sent.
    pub sent_at: Instant,
    /// What became of it.
    pub fate: Fate,
}

/// Conditions of one direction of the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter` (so packets may be reordered).
    pub jitter: Duration,
    /// Probability that a datagram is lost, 0.0 to 1.0.
    pub loss: f64,
    /// Datagrams larger than this many bytes are dropped.
    pub mtu: Option<usize>,
}

impl Default for LinkConfig {
    /// 10 ms one way, no jitter, no loss, no MTU.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            mtu: None,
        }
    }
}

impl LinkConfig {
    /// A link with this one-way latency and nothing else.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }
}

/// Handle of a filter, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterId(u64);

/// A filter: returns `true` to drop the datagram.
pub type Filter = Box<dyn FnMut(&Datagram) -> bool>;

struct InFlight {
    at: Instant,
    order: u64,
    datagram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.order == other.order
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed, so that `BinaryHeap` pops the earliest delivery first (and,
    /// at equal times, the one sent first).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// The network: two [`LinkConfig`]s, a seeded random generator, filters and
/// the datagrams in flight. Sans-IO: time is passed in.
pub struct Link {
    up: LinkConfig,
    down: LinkConfig,
    rng: StdRng,
    filters: Vec<(FilterId, Filter)>,
    next_filter: u64,
    blocked: Vec<TransportId>,
    bottlenecks: Vec<((Owner, Direction), Queue)>,
    in_flight: BinaryHeap<InFlight>,
    order: u64,
    log: Vec<LogEntry>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("up", &self.up)
            .field("down", &self.down)
            .field("filters", &self.filters.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link with `config` in both directions and random loss seeded with
    /// `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            up: config,
            down: config,
            rng: StdRng::seed_from_u64(seed),
            filters: Vec::new(),
            next_filter: 0,
            blocked: Vec::new(),
            bottlenecks: Vec::new(),
            in_flight: BinaryHeap::new(),
            order: 0,
            log: Vec::new(),
        }
    }

    /// The conditions of one direction.
    pub fn config(&self, direction: Direction) -> LinkConfig {
        match direction {
            Direction::Up => self.up,
            Direction::Down => self.down,
        }
    }

    /// Changes the conditions of one direction (for datagrams sent from now
    /// on).
    pub fn set_config(&mut self, direction: Direction, config: LinkConfig) {
        match direction {
            Direction::Up => self.up = config,
            Direction::Down => self.down = config,
        }
    }

    /// Adds a filter; it sees every datagram sent and drops those for which
    /// it returns `true`.
    pub fn add_filter(&mut self, filter: impl FnMut(&Datagram) -> bool + 'static) -> FilterId {
        let id = FilterId(self.next_filter);
        self.next_filter += 1;
        self.filters.push((id, Box::new(filter)));
        id
    }

    /// Removes a filter. Returns whether it existed.
    pub fn remove_filter(&mut self, id: FilterId) -> bool {
        let before = self.filters.len();
        self.filters.retain(|(f, _)| *f != id);
        self.filters.len() != before
    }

    /// Cuts (`true`) or restores a peer transport: while cut, every datagram
    /// from or to it is dropped (logged as [`Fate::Filtered`]).
    pub fn set_blocked(&mut self, transport: &TransportId, blocked: bool) {
        self.blocked.retain(|t| t != transport);
        if blocked {
            self.blocked.push(transport.clone());
        }
    }

    /// Puts a bottleneck on one participant's link in one direction
    /// (`Down`: what the server sends it; `Up`: what it sends), or removes
    /// it (`None`). Datagrams already queued keep their delivery times.
    pub fn set_bottleneck(
        &mut self,
        participant: Owner,
        direction: Direction,
        shape: Option<Bottleneck>,
    ) {
        let key = (participant, direction);
        let busy_until = self
            .bottlenecks
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, q)| q.busy_until);
        self.bottlenecks.retain(|(k, _)| *k != key);
        if let Some(shape) = shape {
            self.bottlenecks.push((key, Queue { shape, busy_until }));
        }
    }

    /// Whether a peer transport is cut.
    pub fn is_blocked(&self, transport: &TransportId) -> bool {
        self.blocked.contains(transport)
    }

    /// Sends a datagram at `datagram.sent_at`: filters, MTU, random loss,
    /// then it is queued for delivery after the latency (and jitter).
    pub fn send(&mut self, datagram: Datagram) -> Fate {
        let config = self.config(datagram.direction);
        // Every filter sees every datagram, so counting filters count right.
        let mut filtered = datagram
            .transport
            .as_ref()
            .is_some_and(|t| self.blocked.contains(t));
        for (_, f) in &mut self.filters {
            filtered |= f(&datagram);
        }
        // Draw from the generator for every datagram, dropped or not, so
        // that a filter does not shift the random losses of later packets.
        let lost = self.rng.random_bool(config.loss.clamp(0.0, 1.0));
        let jitter = if config.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(config.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(self.rng.random_range(0..=nanos))
        };
        let fate = if filtered {
            Fate::Filtered
        } else if config.mtu.is_some_and(|m| datagram.contents.len() > m) {
            Fate::TooBig
        } else if lost {
            Fate::Lost
        } else {
            match self.queue(&datagram) {
                Some(left) => Fate::Delivered(left + config.latency + jitter),
                None => Fate::QueueFull,
            }
        };
        self.log.push(LogEntry {
            direction: datagram.direction,
            transport: datagram.transport.clone(),
            participant: datagram.participant,
            kind: datagram.kind,
            len: datagram.contents.len(),
            sent_at: datagram.sent_at,
            fate,
        });
        if let Fate::Delivered(at) = fate {
            self.order += 1;
            self.in_flight.push(InFlight {
                at,
                order: self.order,
                datagram,
            });
        }
        fate
    }

    /// Passes `datagram` through its participant's bottleneck: when it
    /// leaves the queue, or `None` when the queue is full.
    fn queue(&mut self, datagram: &Datagram) -> Option<Instant> {
        let now = datagram.sent_at;
        let Some(owner) = datagram.participant else {
            return Some(now);
        };
        let key = (owner, datagram.direction);
        let Some((_, q)) = self.bottlenecks.iter_mut().find(|(k, _)| *k == key) else {
            return Some(now);
        };
        let start = q.busy_until.map_or(now, |b| b.max(now));
        if start - now > q.shape.max_queue {
            return None;
        }
        let bits = datagram.contents.len() as u64 * 8;
        let nanos = bits * 1_000_000_000 / q.shape.rate_bps.max(1);
        let left = start + Duration::from_nanos(nanos);
        q.busy_until = Some(left);
        Some(left)
    }

    /// When the next datagram arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|f| f.at)
    }

    /// The next datagram due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Datagram> {
        if self.in_flight.peek().is_some_and(|f| f.at <= now) {
            self.in_flight.pop().map(|f| f.datagram)
        } else {
            None
        }
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Every datagram sent so far, with its fate.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// Forgets the log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The link's seeded generator (for tests that need reproducible
    /// randomness of their own; drawing from it shifts later losses).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(now: Instant, direction: Direction, contents: Vec<u8>) -> Datagram {
        Datagram {
            direction,
            source: "10.1.0.1:5000".parse().unwrap(),
            destination: "10.0.0.1:40000".parse().unwrap(),
            transport: None,
            participant: None,
            kind: classify(&contents),
            sent_at: now,
            contents,
        }
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0; 20]);
        p
    }

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(
            classify(&rtp(7, 42)),
            PacketKind::Rtp {
                ssrc: 42,
                pt: 96,
                seq: 7
            }
        );
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&[0; 28]);
        assert_eq!(classify(&rr), PacketKind::Rtcp { pt: 201 });
        assert_eq!(classify(&[0u8; 20]), PacketKind::Stun);
        assert_eq!(classify(&[0u8; 4]), PacketKind::Other, "too short for STUN");
        assert_eq!(classify(&[22, 0xfe, 0xfd]), PacketKind::Dtls);
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(&[0x80, 96, 0]), PacketKind::Other);
        assert_eq!(classify(&[200]), PacketKind::Other);
    }

    #[test]
    fn delivers_in_time_order_after_latency() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::with_latency(Duration::from_millis(30)), 1);
        link.set_config(
            Direction::Down,
            LinkConfig::with_latency(Duration::from_millis(5)),
        );
        link.send(dg(t0, Direction::Up, rtp(1, 1)));
        link.send(dg(t0, Direction::Down, rtp(2, 1)));
        link.send(dg(t0, Direction::Up, rtp(3, 1)));
        assert_eq!(link.in_flight(), 3);
        assert_eq!(link.next_delivery(), Some(t0 + Duration::from_millis(5)));
        assert!(link.pop_due(t0 + Duration::from_millis(4)).is_none());
        let d = link.pop_due(t0 + Duration::from_millis(5)).unwrap();
        assert_eq!(d.kind.rtp_ssrc(), Some(1));
        assert_eq!(d.direction, Direction::Down);
        let later = t0 + Duration::from_millis(30);
        let seqs: Vec<_> = std::iter::from_fn(|| link.pop_due(later))
            .map(|d| match d.kind {
                PacketKind::Rtp { seq, .. } => seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, [1, 3], "same delivery time: sending order");
        assert_eq!(link.next_delivery(), None);
    }

    #[test]
    fn seeded_loss_is_reproducible() {
        let t0 = Instant::now();
        let fates = |seed| {
            let mut link = Link::new(
                LinkConfig {
                    loss: 0.3,
                    ..LinkConfig::default()
                },
                seed,
            );
            (0..200)
                .map(|i| link.send(dg(t0, Direction::Up, rtp(i, 1))) == Fate::Lost)
                .collect::<Vec<_>>()
        };
        let a = fates(7);
        assert_eq!(a, fates(7));
        assert_ne!(a, fates(8));
        let lost = a.iter().filter(|l| **l).count();
        assert!((30..90).contains(&lost), "{lost} of 200 lost at 30%");
    }

    #[test]
    fn mtu_and_filters_drop() {
        let t0 = Instant::now();
        let mut link = Link::new(
            LinkConfig {
                mtu: Some(30),
                ..LinkConfig::default()
            },
            1,
        );
        assert_eq!(
            link.send(dg(t0, Direction::Up, vec![0x80; 31])),
            Fate::TooBig
        );
        // Drop the 3rd RTP packet.
        let mut n = 0;
        let id = link.add_filter(move |d| {
            if d.kind.is_rtp() {
                n += 1;
                n == 3
            } else {
                false
            }
        });
        let fates: Vec<_> = (0..4)
            .map(|i| {
                link.send(dg(
                    t0,
                    Direction::Up,
                    vec![0x80, 96, 0, i, 0, 0, 0, 0, 0, 0, 0, 1],
                ))
            })
            .collect();
        assert_eq!(fates[2], Fate::Filtered);
        assert!(matches!(fates[3], Fate::Delivered(_)));
        assert!(link.remove_filter(id));
        assert!(!link.remove_filter(id));
        assert_eq!(link.log().len(), 5);
        assert_eq!(
            link.log()
                .iter()
                .filter(|e| e.fate == Fate::Filtered)
                .count(),
            1
        );
    }

    #[test]
    fn a_bottleneck_paces_and_drops_past_its_queue() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::with_latency(Duration::ZERO), 1);
        let who = Owner::new(7);
        // 1000-byte datagrams at 800 kbit/s: one leaves every 10 ms; the
        // queue holds 50 ms.
        link.set_bottleneck(
            who,
            Direction::Down,
            Some(Bottleneck {
                rate_bps: 800_000,
                max_queue: Duration::from_millis(50),
            }),
        );
        let mut fates = Vec::new();
        for i in 0..10u16 {
            let mut d = dg(t0, Direction::Down, rtp(i, 1));
            d.contents.resize(1000, 0);
            d.participant = Some(who);
            fates.push(link.send(d));
        }
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(fates[0], Fate::Delivered(ms(10)));
        assert_eq!(fates[5], Fate::Delivered(ms(60)), "waited 50 ms");
        assert_eq!(fates[6], Fate::QueueFull);
        assert_eq!(fates[9], Fate::QueueFull);
        // Another participant, and the other direction, are not shaped.
        let mut d = dg(t0, Direction::Up, rtp(1, 1));
        d.participant = Some(who);
        assert_eq!(link.send(d), Fate::Delivered(t0));
        // Lifted: no more queueing.
        link.set_bottleneck(who, Direction::Down, None);
        let mut d = dg(ms(1), Direction::Down, rtp(1, 1));
        d.participant = Some(who);
        assert_eq!(link.send(d), Fate::Delivered(ms(1)));
    }

    #[test]
    fn jitter_reorders_but_stays_within_bounds() {
        let t0 = Instant::now();
        let mut link = Link::new(
            LinkConfig {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(20),
                ..LinkConfig::default()
            },
            3,
        );
        for i in 0..50 {
            link.send(dg(t0, Direction::Up, rtp(i, 1)));
        }
        let end = t0 + Duration::from_millis(30);
        let seqs: Vec<u16> = std::iter::from_fn(|| link.pop_due(end))
            .filter_map(|d| match d.kind {
                PacketKind::Rtp { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs.len(), 50, "all within latency + jitter");
        assert!(seqs.windows(2).any(|w| w[0] > w[1]), "some reordering");
    }
}
