//! Counting without allocating per packet: a log-linear histogram and a
//! sequence tracker (loss, duplicates, reordering) over a bitmap.

use serde::Serialize;

/// Values below this are counted exactly.
const LINEAR: u64 = 256;
/// Sub-buckets per power of two above [`LINEAR`] (precision 1/128).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above [`LINEAR`]: up to 2^40 units.
const OCTAVES: usize = 33;
const BUCKETS: usize = LINEAR as usize + OCTAVES * SUB as usize;

/// A histogram of `u64` values (microseconds, say) with a relative error
/// under 1%, in a fixed array: recording never allocates.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u32]>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    // v >= 256: exponent e >= 8; keep the SUB_BITS bits below the top one.
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    let octave = (e - 8) as usize;
    (LINEAR as usize + octave * SUB as usize + sub as usize).min(BUCKETS - 1)
}

/// The largest value of a bucket.
fn bucket_high(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let rest = b - LINEAR as usize;
    let octave = (rest / SUB as usize) as u32;
    let sub = (rest % SUB as usize) as u64;
    let e = octave + 8;
    let shift = e - SUB_BITS;
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        let b = bucket_of(v);
        if let Some(c) = self.counts.get_mut(b) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's top.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return bucket_high(b).min(self.max);
            }
        }
        self.max
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// p50, p99, max and mean, divided by `unit` (1000 for µs to ms).
    pub fn summary(&self, unit: f64) -> Summary {
        Summary {
            count: self.total,
            p50: self.quantile(0.50) as f64 / unit,
            p99: self.quantile(0.99) as f64 / unit,
            max: self.max as f64 / unit,
            mean: self.mean() / unit,
        }
    }
}

/// Quantiles of a [`Histogram`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Tracks the sequence numbers of one stream: unique packets, duplicates
/// and reordering, in a bitmap that grows by doubling (amortised, not per
/// packet).
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    bits: Vec<u64>,
    /// Distinct packets seen.
    pub unique: u64,
    /// Packets seen more than once.
    pub duplicates: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Packets older than the first one seen (counted, not tracked).
    pub before_first: u64,
}

/// Largest span of sequence numbers tracked (2^26 packets, 8 MiB of bits);
/// anything further is ignored as bogus.
const MAX_SPAN: u64 = 1 << 26;

impl SeqTracker {
    /// A tracker sized for about `expected` packets.
    pub fn with_capacity(expected: usize) -> Self {
        Self {
            bits: Vec::with_capacity(expected.div_ceil(64).min(1 << 20)),
            ..Self::default()
        }
    }

    /// Counts sequence number `seq`.
    pub fn record(&mut self, seq: u64) {
        let first = *self.first.get_or_insert(seq);
        if seq < first {
            self.before_first += 1;
            self.reordered += 1;
            self.unique += 1;
            return;
        }
        let off = seq - first;
        if off >= MAX_SPAN {
            return;
        }
        let word = (off / 64) as usize;
        let bit = 1u64 << (off % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let w = &mut self.bits[word];
        if *w & bit != 0 {
            self.duplicates += 1;
            return;
        }
        *w |= bit;
        self.unique += 1;
        if self.unique > 1 && seq < self.highest {
            self.reordered += 1;
        }
        self.highest = self.highest.max(seq);
    }

    /// The first sequence number seen.
    pub fn first(&self) -> Option<u64> {
        self.first
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.first.map(|_| self.highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.01, "{p99}");
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.quantile(1.0), 100_000);
        let mut small = Histogram::default();
        for v in [3, 3, 3, 7] {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), 3);
        assert_eq!(small.quantile(0.99), 7);
        small.merge(&h);
        assert_eq!(small.count(), 100_004);
        // Huge values land in the last bucket instead of panicking.
        small.record(u64::MAX);
        assert_eq!(small.max(), u64::MAX);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in (0..1u64 << 20).step_by(97) {
            let b = bucket_of(v);
            assert!(b >= last);
            assert!(bucket_high(b) >= v, "{v} {b}");
            last = b;
        }
    }

    #[test]
    fn seq_tracker_counts_loss_duplicates_reordering() {
        let mut s = SeqTracker::with_capacity(16);
        for q in [10, 11, 13, 12, 13, 15, 9] {
            s.record(q);
        }
        assert_eq!(s.first(), Some(10));
        assert_eq!(s.highest(), Some(15));
        assert_eq!(s.unique, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 2, "12 after 13, and 9 before the first");
        assert_eq!(s.before_first, 1);
        s.record(10 + MAX_SPAN);
        assert_eq!(s.unique, 6, "bogus jump ignored");
    }
}
