//! Connection quality per participant, as LiveKit's `ConnectionQuality`
//! (excellent / good / poor / lost), from what the room sees of each
//! participant's links:
//!
//! - upstream, per producer (per simulcast layer, each its own stream,
//!   summed): packet loss (expected from the sequence
//!   numbers against packets received in order: a loss repaired by a
//!   retransmission still counts, as the link lost it) and
//!   interarrival jitter (RFC 3550), both measured on the forwarding path
//!   with a few integer operations and no allocation ([`LinkStats`]);
//! - upstream bitrate against expected: a simulcast layer the publisher
//!   sent, that some subscriber wants (dynacast), and that has stopped
//!   arriving for [`SHORT_AFTER`] (the browser dropped it, usually because
//!   its own uplink estimate fell) makes the publisher at best good;
//! - downstream: a consumer paused for congestion (its subscriber's
//!   bandwidth does not carry even the lowest layer) makes the link poor;
//!   bitrate against expected: a consumer whose allocation has been below
//!   what it would get with bandwidth to spare (its best layers within its
//!   preferences and rendered size) for [`SHORT_AFTER`] makes it good
//!   below 80 % of that, poor below 25 % ([`ConnectionQuality::from_bitrate`]);
//!   and the loss the subscriber itself reports on what the room sends it
//!   (RTCP receiver reports' fraction lost, read from str0m's egress stats
//!   every [`STATS_INTERVAL`]) is scored as upstream loss is, less what
//!   the publisher's own link lost over the last two intervals (gaps the
//!   room forwards are in every subscriber's reports, and are the
//!   publisher's, not theirs);
//! - round-trip time, on any of the participant's transports that the room
//!   sends media on (from the RTCP receiver reports on that media; a
//!   participant that only publishes has no measure and is not scored on
//!   it): over [`RTT_GOOD`] is at best good, over [`RTT_POOR`] poor
//!   ([`ConnectionQuality::from_rtt`]);
//! - lost: a connected transport of the participant that received nothing
//!   (media or RTCP) for [`LOST_AFTER`].
//!
//! Every [`QUALITY_INTERVAL`] the room scores each participant (the worst
//! of its links) and emits
//! [`Event::ConnectionQuality`](crate::Event::ConnectionQuality) for those
//! whose score changed.

use std::time::{Duration, Instant};

/// How often quality is evaluated.
pub const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// Silence after which a connected transport counts as lost.
/// Browsers send an ICE consent check at least every 5 s (RFC 7675), so an
/// idle but healthy transport is never this silent.
pub const LOST_AFTER: Duration = Duration::from_secs(8);
/// How often str0m reports a transport's statistics (receiver-report loss
/// and round-trip time).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Round-trip time above which a participant is at best `good`.
pub const RTT_GOOD: Duration = Duration::from_millis(300);
/// Round-trip time above which a participant is `poor`.
pub const RTT_POOR: Duration = Duration::from_millis(600);
/// How long a bitrate must stay below what is expected before it counts:
/// layers climb over a few seconds after a subscription starts, and a
/// publisher takes a moment to restart a layer dynacast asks for again.
pub const SHORT_AFTER: Duration = Duration::from_secs(4);

/// Whether `bitrate` is short of `expected` enough to lower a score
/// (below 80 % of it).
pub(crate) fn short_of_expected(bitrate: u64, expected: u64) -> bool {
    bitrate.saturating_mul(5) < expected.saturating_mul(4)
}

/// A participant's connection quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnectionQuality {
    /// Nothing heard from it for [`LOST_AFTER`].
    Lost,
    /// Loss over 6 % (either direction), jitter over 80 ms, round-trip
    /// time over [`RTT_POOR`], or a congested subscription.
    Poor,
    /// Loss over 2 % (either direction), jitter over 30 ms or round-trip
    /// time over [`RTT_GOOD`].
    Good,
    /// Loss and jitter low, every subscription flowing.
    Excellent,
}

impl ConnectionQuality {
    /// The wire name (`excellent`, `good`, `poor`, `lost`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionQuality::Lost => "lost",
            ConnectionQuality::Poor => "poor",
            ConnectionQuality::Good => "good",
            ConnectionQuality::Excellent => "excellent",
        }
    }

    /// The score of a link with this loss (0 to 1) and jitter.
    pub fn from_link(loss: f32, jitter: Duration) -> Self {
        if loss > 0.06 || jitter > Duration::from_millis(80) {
            ConnectionQuality::Poor
        } else if loss > 0.02 || jitter > Duration::from_millis(30) {
            ConnectionQuality::Good
        } else {
            ConnectionQuality::Excellent
        }
    }

    /// The score of a subscription that gets `bitrate` where `expected`
    /// would be sent with bandwidth to spare: poor below a quarter of it,
    /// good below 80 %.
    pub fn from_bitrate(bitrate: u64, expected: u64) -> Self {
        if bitrate.saturating_mul(4) < expected {
            ConnectionQuality::Poor
        } else if short_of_expected(bitrate, expected) {
            ConnectionQuality::Good
        } else {
            ConnectionQuality::Excellent
        }
    }

    /// The score of a link with this round-trip time.
    pub fn from_rtt(rtt: Duration) -> Self {
        if rtt > RTT_POOR {
            ConnectionQuality::Poor
        } else if rtt > RTT_GOOD {
            ConnectionQuality::Good
        } else {
            ConnectionQuality::Excellent
        }
    }
}

/// One producer's counters, for the admin API's per-track stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStats {
    /// The producer.
    pub producer_id: pulsewave_protocol::ProducerId,
    /// Audio or video.
    pub kind: pulsewave_protocol::MediaKind,
    /// RTP packets received from the publisher.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Paused (muted).
    pub paused: bool,
}

/// What one producer's packets showed since the last evaluation.
#[derive(Debug, Clone)]
pub(crate) struct LinkStats {
    clock_rate: u32,
    /// Highest extended sequence number seen (ever), and at the last
    /// evaluation.
    max_seq: Option<u64>,
    base_seq: Option<u64>,
    received: u32,
    /// RFC 3550 jitter estimate, in RTP timestamp units times 16.
    jitter16: u64,
    last: Option<(Instant, u32)>,
    /// Loss of the last two intervals: what the publisher's link lost
    /// is lost for every subscriber too, and is not held against them.
    recent_loss: [f32; 2],
}

impl LinkStats {
    pub(crate) fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            max_seq: None,
            base_seq: None,
            received: 0,
            jitter16: 0,
            last: None,
            recent_loss: [0.0; 2],
        }
    }

    /// One packet (extended sequence number, RTP timestamp) arrived at
    /// `now`. The forwarding path's cost: a few integer operations.
    #[inline]
    pub(crate) fn observe(&mut self, now: Instant, seq: u64, rtp_time: u32) {
        // Only packets that arrive in order count: a late one is, almost
        // always, a retransmission repairing a loss, which the link still
        // suffered (str0m hands RTX over unwrapped, on the media ssrc).
        if self.max_seq.is_none_or(|m| seq > m) {
            self.max_seq = Some(seq);
            self.received = self.received.saturating_add(1);
        }
        if self.base_seq.is_none() {
            self.base_seq = Some(seq.saturating_sub(1));
        }
        if let Some((at, ts)) = self.last {
            // Transit difference in RTP units: arrival spacing minus
            // timestamp spacing.
            let arrival = now.saturating_duration_since(at).as_micros() as i64
                * i64::from(self.clock_rate)
                / 1_000_000;
            let sent = i64::from(rtp_time.wrapping_sub(ts) as i32);
            let d = (arrival - sent).unsigned_abs();
            // J += (|D| - J) / 16, kept times 16.
            self.jitter16 = self.jitter16 + d - (self.jitter16 + 8) / 16;
        }
        self.last = Some((now, rtp_time));
    }

    /// Ends an interval: what was expected, lost and the jitter since the
    /// last call; `None` when no packet was expected (nothing sent, or
    /// paused).
    pub(crate) fn take(&mut self) -> Option<LinkSample> {
        self.recent_loss = [self.recent_loss[1], 0.0];
        let (Some(max), Some(base)) = (self.max_seq, self.base_seq) else {
            return None;
        };
        let expected = max.saturating_sub(base);
        let received = u64::from(std::mem::take(&mut self.received));
        self.base_seq = Some(max);
        if expected == 0 {
            return None;
        }
        let sample = LinkSample {
            expected,
            lost: expected.saturating_sub(received),
            jitter: Duration::from_micros(
                self.jitter16 / 16 * 1_000_000 / u64::from(self.clock_rate),
            ),
        };
        self.recent_loss[1] = sample.loss();
        Some(sample)
    }
}

/// One interval of a [`LinkStats`]: packets expected and lost, and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct LinkSample {
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    pub(crate) jitter: Duration,
}

impl LinkSample {
    /// The fraction lost (0 to 1).
    pub(crate) fn loss(&self) -> f32 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost.min(self.expected) as f32 / self.expected as f32
        }
    }

    /// Both intervals as one (each simulcast layer is its own stream, with
    /// its own sequence numbers): the loss over all packets, the worst
    /// jitter.
    pub(crate) fn merge(self, other: Option<LinkSample>) -> LinkSample {
        match other {
            None => self,
            Some(o) => LinkSample {
                expected: self.expected + o.expected,
                lost: self.lost + o.lost,
                jitter: self.jitter.max(o.jitter),
            },
        }
    }
}

impl LinkStats {
    /// The publisher's loss over the last two intervals (the worst), to
    /// take off what its subscribers report.
    pub(crate) fn recent_loss(&self) -> f32 {
        self.recent_loss[0].max(self.recent_loss[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repaired_loss_still_counts() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(48_000);
        for i in 0..20u64 {
            if i != 10 {
                s.observe(t0 + Duration::from_millis(20 * i), i + 1, (960 * i) as u32);
            }
        }
        // Packet 11 arrives late, retransmitted.
        s.observe(t0 + Duration::from_millis(420), 11, 9600);
        let loss = s.take().unwrap_or_default().loss();
        assert!((loss - 0.05).abs() < 0.001, "loss {loss}");
    }

    #[test]
    fn loss_and_jitter_of_an_interval() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(48_000);
        // 50 packets, every 20 ms, 960 ticks apart, every 10th missing.
        for i in 0..50u64 {
            if i % 10 == 5 {
                continue;
            }
            s.observe(
                t0 + Duration::from_millis(20 * i),
                100 + i,
                (960 * i) as u32,
            );
        }
        let sample = s.take().unwrap_or_default();
        let (loss, jitter) = (sample.loss(), sample.jitter);
        assert!((loss - 0.1).abs() < 0.03, "loss {loss}");
        assert!(jitter < Duration::from_millis(2), "jitter {jitter:?}");
        assert_eq!(
            ConnectionQuality::from_link(loss, jitter),
            ConnectionQuality::Poor
        );
        // Nothing since: nothing to say.
        assert_eq!(s.take(), None);
        assert_eq!(
            ConnectionQuality::from_link(0.0, Duration::from_millis(5)),
            ConnectionQuality::Excellent
        );
        assert_eq!(
            ConnectionQuality::from_link(0.03, Duration::ZERO),
            ConnectionQuality::Good
        );
    }
}
