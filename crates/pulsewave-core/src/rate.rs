//! Measured bitrates of a producer's layers: bytes per temporal layer in
//! 100 ms slots over the last two seconds, so the allocator knows what each
//! spatial and temporal layer really costs (keyframes included) without
//! trusting what the publisher declared. Recording is O(1) and allocates
//! nothing.

use std::time::{Duration, Instant};

/// Temporal layers measured apart (VP8 has at most 4).
/// What a forwarded packet costs on the wire beyond its payload: IPv4 and
/// UDP (28 bytes), the RTP header with its extensions (about 20) and the
/// SRTP tag (10). Layer rates count it, since the estimate does.
pub(crate) const PACKET_OVERHEAD: usize = 60;

pub(crate) const MAX_TEMPORAL: usize = 4;
const SLOT: Duration = Duration::from_millis(100);
const SLOTS: usize = 20;

/// One stream's bytes per temporal layer over the last [`SLOTS`] slots.
#[derive(Debug, Clone)]
pub(crate) struct LayerRate {
    slots: [[u32; MAX_TEMPORAL]; SLOTS],
    /// Start of the slot at `head`.
    head_start: Option<Instant>,
    head: usize,
    /// Highest temporal layer id seen in the window (0 without layers).
    max_tid: u8,
    max_tid_at: Option<Instant>,
    /// When measuring began (the window may not be full yet).
    first: Option<Instant>,
}

impl Default for LayerRate {
    fn default() -> Self {
        Self {
            slots: [[0; MAX_TEMPORAL]; SLOTS],
            head_start: None,
            head: 0,
            max_tid: 0,
            max_tid_at: None,
            first: None,
        }
    }
}

impl LayerRate {
    /// Moves the window to `now`, clearing slots that fell out of it.
    fn roll(&mut self, now: Instant) {
        let Some(start) = self.head_start else {
            self.head_start = Some(now);
            self.first = Some(now);
            return;
        };
        if now < start + SLOT {
            return;
        }
        let steps = (now.saturating_duration_since(start).as_millis() / SLOT.as_millis()) as usize;
        for i in 1..=steps.min(SLOTS) {
            self.slots[(self.head + i) % SLOTS] = [0; MAX_TEMPORAL];
        }
        self.head = (self.head + steps) % SLOTS;
        self.head_start = Some(start + SLOT * steps as u32);
    }

    /// Counts a packet of `bytes` on temporal layer `tid` (0 without
    /// temporal layers).
    pub(crate) fn record(&mut self, now: Instant, tid: u8, bytes: usize) {
        self.roll(now);
        let t = usize::from(tid).min(MAX_TEMPORAL - 1);
        let slot = &mut self.slots[self.head][t];
        *slot = slot.saturating_add(bytes as u32);
        if tid >= self.max_tid {
            self.max_tid = tid.min(MAX_TEMPORAL as u8 - 1);
            self.max_tid_at = Some(now);
        }
    }

    /// Temporal layers the stream has had in the window (1 without
    /// temporal scalability).
    pub(crate) fn temporal_layers(&self, now: Instant) -> usize {
        let recent = self
            .max_tid_at
            .is_some_and(|t| now.saturating_duration_since(t) < SLOT * SLOTS as u32);
        if recent {
            usize::from(self.max_tid) + 1
        } else {
            1
        }
    }

    /// Bits per second of temporal layers `0..=tid`, over the window (or
    /// the time since measuring began, when shorter, but at least 500 ms
    /// so one keyframe does not read as a high rate).
    pub(crate) fn bitrate(&mut self, now: Instant, tid: usize) -> u64 {
        self.roll(now);
        let Some(first) = self.first else { return 0 };
        let bytes: u64 = self
            .slots
            .iter()
            .map(|s| {
                s[..=tid.min(MAX_TEMPORAL - 1)]
                    .iter()
                    .map(|b| u64::from(*b))
                    .sum::<u64>()
            })
            .sum();
        let window = now
            .saturating_duration_since(first)
            .clamp(Duration::from_millis(500), SLOT * SLOTS as u32);
        bytes * 8 * 1000 / window.as_millis().max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_cumulative_rates_per_temporal_layer() {
        let t0 = Instant::now();
        let mut r = LayerRate::default();
        // 3 s at 30 fps, pattern 0,2,1,2: base frames 2000 bytes, others
        // 1000: 15 kB/s + 7.5 kB/s + 15 kB/s.
        for k in 0..90u32 {
            let tid = [0, 2, 1, 2][k as usize % 4];
            let bytes = if tid == 0 { 2000 } else { 1000 };
            r.record(
                t0 + Duration::from_millis(u64::from(k) * 1000 / 30),
                tid,
                bytes,
            );
        }
        let now = t0 + Duration::from_millis(3000);
        assert_eq!(r.temporal_layers(now), 3);
        let near = |got: u64, want: u64| got.abs_diff(want) * 10 < want;
        assert!(near(r.bitrate(now, 0), 120_000), "{}", r.bitrate(now, 0));
        assert!(near(r.bitrate(now, 1), 180_000), "{}", r.bitrate(now, 1));
        assert!(near(r.bitrate(now, 2), 300_000), "{}", r.bitrate(now, 2));
        // Silence empties the window.
        let later = now + Duration::from_secs(5);
        assert_eq!(r.bitrate(later, 2), 0);
        assert_eq!(r.temporal_layers(later), 1);
    }

    #[test]
    fn a_young_stream_is_not_overestimated() {
        let t0 = Instant::now();
        let mut r = LayerRate::default();
        // A 30 kB keyframe: over the 500 ms floor, 480 kbit/s, not 30 kB in
        // one slot read as 2.4 Mbit/s.
        r.record(t0, 0, 30_000);
        assert_eq!(r.bitrate(t0 + Duration::from_millis(100), 0), 480_000);
    }
}
