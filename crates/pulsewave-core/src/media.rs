//! Producers and consumers: the state the forwarding path reads per packet.

use crate::owners::Owner;
use std::time::{Duration, Instant};

use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_protocol::{ConsumerId, MediaKind, ProducerId};

use crate::event::AppData;
use crate::keyframe::VideoCodec;
use crate::transport::TransportKey;

pub(crate) type ProducerKey = usize;
pub(crate) type ConsumerKey = usize;

/// A published track on a send transport.
pub(crate) struct Producer {
    pub(crate) id: ProducerId,
    pub(crate) owner: Owner,
    pub(crate) transport: TransportKey,
    pub(crate) kind: MediaKind,
    pub(crate) mid: String,
    pub(crate) mime_type: String,
    /// For video: how to find keyframes.
    pub(crate) video: Option<VideoCodec>,
    /// Parameters consumers are derived from (router payload types).
    pub(crate) consumable: RtpParameters,
    /// Producer payload type to router payload type.
    pub(crate) pt_map: Vec<(u8, u8)>,
    /// The encodings (simulcast layers), lowest first.
    pub(crate) layers: Vec<Layer>,
    /// Muted by its owner.
    pub(crate) paused: bool,
    /// The application's data (`produce`).
    pub(crate) app_data: AppData,
    pub(crate) consumers: Vec<ConsumerKey>,
    pub(crate) last_keyframe_request: Option<Instant>,
    /// Layers a keyframe request is due for (bit `i`: layer `i`), sent once
    /// the throttle allows it.
    pub(crate) keyframe_layers: u32,
    /// When the room's timers send the throttled keyframe request.
    pub(crate) keyframe_timer: Option<Instant>,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// How long a layer may be silent and still count as sent.
const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// One encoding of a producer: a single stream, or a simulcast layer.
pub(crate) struct Layer {
    /// Its `rid` (simulcast by rid).
    pub(crate) rid: Option<String>,
    /// Its media ssrc: given in the parameters, or learned from the first
    /// packet carrying its mid and rid.
    pub(crate) ssrc: Option<u32>,
    /// When its last packet arrived.
    pub(crate) last_packet: Option<Instant>,
}

impl Producer {
    /// The highest layer the publisher is sending now (0 if none is).
    pub(crate) fn best_layer(&self, now: Instant) -> usize {
        self.layers
            .iter()
            .rposition(|l| {
                l.last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
            })
            .unwrap_or(0)
    }

    /// The layer to forward to a consumer that prefers `preferred` (a
    /// spatial layer index; `None`: the best): the highest layer at or
    /// below it that the publisher is sending now, else the lowest one it
    /// is sending (as mediasoup's `setPreferredLayers`), else 0.
    pub(crate) fn target_layer(&self, now: Instant, preferred: Option<usize>) -> usize {
        let Some(max) = preferred else {
            return self.best_layer(now);
        };
        let live = |l: &Layer| {
            l.last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
        };
        let below = self.layers.len().min(max.saturating_add(1));
        self.layers[..below]
            .iter()
            .rposition(live)
            .or_else(|| self.layers.iter().position(live))
            .unwrap_or(0)
    }

    /// Marks a keyframe as wanted on `layer`.
    pub(crate) fn want_keyframe_on(&mut self, layer: usize) {
        if layer < 32 {
            self.keyframe_layers |= 1 << layer;
        }
    }
}

/// A subscription of a producer on a receive transport.
pub(crate) struct Consumer {
    pub(crate) id: ConsumerId,
    pub(crate) owner: Owner,
    pub(crate) transport: TransportKey,
    pub(crate) producer: ProducerKey,
    pub(crate) producer_id: ProducerId,
    pub(crate) mid: String,
    pub(crate) ssrc: u32,
    /// Producer payload type to this consumer's payload type.
    pub(crate) pt_map: Vec<(u8, u8)>,
    /// Paused by its owner (consumers start paused).
    pub(crate) paused: bool,
    /// The producer layer being forwarded; `None` until a keyframe (any
    /// packet, for audio) starts one, after a start, resume or unmute.
    pub(crate) layer: Option<usize>,
    /// The next forwarded packet starts a new sequence/timestamp base.
    pub(crate) needs_resync: bool,
    /// The highest spatial layer the subscriber wants (`None`: the best the
    /// publisher sends), set by `set-preferred-layers`.
    pub(crate) preferred_layer: Option<usize>,
    /// Whether str0m keeps packets for retransmission (video with RTX).
    pub(crate) nackable: bool,
    pub(crate) rewriter: Rewriter,
    pub(crate) packets: u64,
}

impl Consumer {
    pub(crate) fn map_pt(&self, pt: u8) -> Option<u8> {
        self.pt_map.iter().find(|(i, _)| *i == pt).map(|(_, o)| *o)
    }
}

/// Rewrites a producer's sequence numbers and timestamps into one consumer's
/// continuous space: every consumer starts at its own random base, and after
/// a pause, a mute or a keyframe wait it continues where it left off, so the
/// receiver sees neither a jump nor a gap it would try to repair.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    clock_rate: u32,
    started: bool,
    seq_offset: u64,
    ts_offset: u32,
    /// Producer sequence number of the last resynchronization; older packets
    /// (late retransmissions) are dropped.
    sync_in_seq: u64,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    initial_seq: u64,
    initial_ts: u32,
}

impl Rewriter {
    /// A rewriter starting at `initial_seq` (below 2^15, so the receiver's
    /// rollover counter starts at 0) and `initial_ts`.
    pub(crate) fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            started: false,
            seq_offset: 0,
            ts_offset: 0,
            sync_in_seq: 0,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
            initial_seq: u64::from(initial_seq & 0x7fff),
            initial_ts,
        }
    }

    /// The outgoing `(extended sequence number, timestamp)` of a producer
    /// packet, or `None` to drop it. `resync` starts a new base at this packet.
    pub(crate) fn rewrite(
        &mut self,
        in_seq: u64,
        in_ts: u32,
        now: Instant,
        resync: bool,
    ) -> Option<(u64, u32)> {
        if resync || !self.started {
            let (out_seq, out_ts) = if self.started {
                let elapsed = self
                    .last_out_at
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
                    .clamp(1, u128::from(u32::MAX / 2)) as u32;
                (self.last_out_seq + 1, self.last_out_ts.wrapping_add(ticks))
            } else {
                (self.initial_seq, self.initial_ts)
            };
            self.seq_offset = out_seq.wrapping_sub(in_seq);
            self.ts_offset = out_ts.wrapping_sub(in_ts);
            self.sync_in_seq = in_seq;
            self.started = true;
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
            return Some((out_seq, out_ts));
        }
        if in_seq < self.sync_in_seq {
            return None;
        }
        let out_seq = in_seq.wrapping_add(self.seq_offset);
        let out_ts = in_ts.wrapping_add(self.ts_offset);
        if out_seq > self.last_out_seq {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Some((out_seq, out_ts))
    }
}

crate::registry::entry!(Producer, ProducerId);
crate::registry::entry!(Consumer, ConsumerId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_across_resync() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 1000, 5000);
        assert_eq!(r.rewrite(70_000, 1_000_000, t0, false), Some((1000, 5000)));
        assert_eq!(r.rewrite(70_001, 1_003_000, t0, false), Some((1001, 8000)));
        // Reordered packet keeps its place.
        assert_eq!(r.rewrite(70_003, 1_006_000, t0, false), Some((1003, 11000)));
        assert_eq!(r.rewrite(70_002, 1_006_000, t0, false), Some((1002, 11000)));
        // A pause: the producer moved on by 500 packets; 100 ms passed.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            r.rewrite(70_500, 2_000_000, t1, true),
            Some((1004, 11000 + 9000))
        );
        assert_eq!(r.rewrite(70_501, 2_003_000, t1, false), Some((1005, 23000)));
        // A late packet from before the resync is dropped.
        assert_eq!(r.rewrite(70_400, 1_900_000, t1, false), None);
    }

    #[test]
    fn timestamps_and_sequence_wrap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, 0x7fff, u32::MAX - 10);
        assert_eq!(r.rewrite(5, 100, t0, false), Some((0x7fff, u32::MAX - 10)));
        // Sequence numbers go past 65535 as extended numbers; timestamps wrap.
        let (seq, ts) = r.rewrite(5 + 40_000, 100 + 960, t0, false).unwrap();
        assert_eq!(seq, 0x7fff + 40_000);
        assert_eq!(ts, (u32::MAX - 10).wrapping_add(960));
    }
}
