//! Producers and consumers: the state the forwarding path reads per packet.

use crate::owners::Owner;
use std::time::{Duration, Instant};

use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_protocol::{ConsumerId, MediaKind, ProducerId};

use crate::event::AppData;
use crate::keyframe::VideoCodec;
use crate::rate::LayerRate;
use crate::transport::TransportKey;
use crate::vp8::Vp8Selector;

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
    /// Default share of bandwidth for its consumers (1 to 255).
    pub(crate) priority: u8,
    /// A video producer whose publisher is among the active speakers: its
    /// consumers rank at least [`SPEAKER_PRIORITY`] (see
    /// [`Producer::effective_priority`]).
    pub(crate) speaking: bool,
    /// Dynacast: the layers reported wanted to the publisher (bit `i`:
    /// layer `i`), `None` before the first report.
    pub(crate) wanted_reported: Option<u32>,
    /// When fewer wanted layers may be reported (after
    /// [`DYNACAST_DOWN_DELAY`]).
    pub(crate) wanted_pending: Option<Instant>,
    /// Audio: the levels seen since the last speaker evaluation.
    pub(crate) speech: crate::speaker::SpeechLevel,
    /// Since when a layer that was sent and is wanted (dynacast) has not
    /// been arriving: the publisher sends less than expected.
    pub(crate) missing_since: Option<Instant>,
}

/// What `produce` validated, ready to become a [`Producer`].
pub(crate) struct ProducerPlan {
    /// Its `mid` on the send transport (given or allocated).
    pub(crate) mid: String,
    pub(crate) mime_type: String,
    /// Parameters consumers are derived from (router payload types).
    pub(crate) consumable: RtpParameters,
    /// Producer payload type to router payload type.
    pub(crate) pt_map: Vec<(u8, u8)>,
    /// The encodings, lowest first.
    pub(crate) layers: Vec<Layer>,
    /// The ssrcs given in the parameters, each with its RTX ssrc.
    pub(crate) declared: Vec<(u32, Option<u32>)>,
}

/// How long a layer may be silent and still count as sent.
pub(crate) const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// Dynacast reports a layer unwanted only after nobody wanted it for this
/// long (as LiveKit), so a subscriber resizing a tile back and forth does
/// not make the publisher stop and restart an encoder.
pub(crate) const DYNACAST_DOWN_DELAY: Duration = Duration::from_secs(5);

/// The default priority of a consumer: LiveKit's and mediasoup's 1.
pub const DEFAULT_PRIORITY: u8 = 1;

/// The priority the video of an active speaker gets while it speaks: above
/// cameras ([`DEFAULT_PRIORITY`]), below a screen share (255), so a
/// subscriber short of bandwidth keeps the speaker's layers over the
/// other cameras. A consumer's own priority (mediasoup's `setPriority`)
/// still wins.
pub const SPEAKER_PRIORITY: u8 = 128;

/// One encoding of a producer: a single stream, or a simulcast layer.
pub(crate) struct Layer {
    /// Its `rid` (simulcast by rid).
    pub(crate) rid: Option<String>,
    /// Its media ssrc: given in the parameters, or learned from the first
    /// packet carrying its mid and rid.
    pub(crate) ssrc: Option<u32>,
    /// When its last packet arrived.
    pub(crate) last_packet: Option<Instant>,
    /// Its measured bitrate per temporal layer.
    pub(crate) rate: LayerRate,
    /// Its picture height, from its keyframes (VP8), if known.
    pub(crate) height: Option<u16>,
    /// Upstream loss and jitter since the last quality evaluation.
    pub(crate) link: crate::quality::LinkStats,
}

impl Layer {
    /// A layer with its `rid` and declared `ssrc`, not seen yet, of a
    /// codec with this clock rate.
    pub(crate) fn new(rid: Option<String>, ssrc: Option<u32>, clock_rate: u32) -> Self {
        Self {
            rid,
            ssrc,
            last_packet: None,
            rate: LayerRate::default(),
            height: None,
            link: crate::quality::LinkStats::new(clock_rate),
        }
    }

    /// Whether the publisher sends it now.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
    }
}

impl Producer {
    /// A new producer of `owner` on `transport`, from what `produce`
    /// validated.
    pub(crate) fn new(
        id: ProducerId,
        owner: Owner,
        transport: TransportKey,
        kind: MediaKind,
        plan: ProducerPlan,
        paused: bool,
        app_data: AppData,
    ) -> Self {
        let video = match kind {
            MediaKind::Video => Some(VideoCodec::from_mime(&plan.mime_type)),
            MediaKind::Audio => None,
        };
        Self {
            id,
            owner,
            transport,
            kind,
            mid: plan.mid,
            mime_type: plan.mime_type,
            video,
            consumable: plan.consumable,
            pt_map: plan.pt_map,
            layers: plan.layers,
            paused,
            app_data,
            consumers: Vec::new(),
            last_keyframe_request: None,
            keyframe_layers: 0,
            keyframe_timer: None,
            packets: 0,
            bytes: 0,
            priority: DEFAULT_PRIORITY,
            speaking: false,
            wanted_reported: None,
            wanted_pending: None,
            missing_since: None,
            speech: Default::default(),
        }
    }

    /// Upstream loss and jitter since the last call, over every layer.
    pub(crate) fn take_link(&mut self) -> Option<crate::quality::LinkSample> {
        self.layers
            .iter_mut()
            .filter_map(|l| l.link.take())
            .reduce(|a, b| a.merge(Some(b)))
    }

    /// What the publisher's link lost lately (the worst layer): gaps every
    /// subscriber is forwarded too.
    pub(crate) fn recent_loss(&self) -> f32 {
        self.layers
            .iter()
            .map(|l| l.link.recent_loss())
            .fold(0.0, f32::max)
    }

    /// The priority its consumers without one of their own get: its own,
    /// raised to [`SPEAKER_PRIORITY`] while its publisher speaks.
    pub(crate) fn effective_priority(&self) -> u8 {
        if self.speaking {
            self.priority.max(SPEAKER_PRIORITY)
        } else {
            self.priority
        }
    }

    /// The highest layer the publisher is sending now (0 if none is).
    pub(crate) fn best_layer(&self, now: Instant) -> usize {
        self.layers
            .iter()
            .rposition(|l| l.is_live(now))
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
    /// The highest temporal layer it wants (`None`: every one).
    pub(crate) preferred_temporal: Option<u8>,
    /// Its priority, when the subscriber set one (else its producer's).
    pub(crate) priority: Option<u8>,
    /// How the subscriber shows it (adaptive stream).
    pub(crate) view: View,
    /// The layers the allocator gives it (spatial, temporal); `None` for
    /// video until the first allocation or while paused for congestion.
    /// Audio always has `Some((0, 0))`.
    pub(crate) target: Option<(u8, u8)>,
    /// Paused by the allocator: not even its lowest layer fits.
    pub(crate) congested: bool,
    /// Whether str0m may pad on its stream (what was last set): not while
    /// it is stopped.
    pub(crate) padded: bool,
    /// The bitrate of its target layers.
    pub(crate) allocated: u64,
    /// The bitrate of the best layers it could have with bandwidth to
    /// spare (within its preferences): what is expected.
    pub(crate) expected: u64,
    /// Since when its allocation has been below what is expected
    /// (connection quality: bitrate against expected).
    pub(crate) short_since: Option<Instant>,
    /// Temporal layer selection and VP8 rewriting.
    pub(crate) vp8: Vp8Selector,
    /// The layers last reported in `ConsumerLayersChanged`.
    pub(crate) reported_layers: Option<(u8, u8)>,
    /// Whether str0m keeps packets for retransmission (video with RTX).
    pub(crate) nackable: bool,
    pub(crate) rewriter: Rewriter,
    pub(crate) packets: u64,
}

/// How a subscriber shows a video consumer (LiveKit's adaptive stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// The subscriber shows nothing: no video is sent.
    pub disabled: bool,
    /// Rendered width in pixels (0: unknown).
    pub width: u32,
    /// Rendered height in pixels (0: unknown).
    pub height: u32,
}

impl Consumer {
    pub(crate) fn map_pt(&self, pt: u8) -> Option<u8> {
        self.pt_map.iter().find(|(i, _)| *i == pt).map(|(_, o)| *o)
    }
}

/// Runs of dropped packets remembered to place late packets among them.
const DROP_RUNS: usize = 16;

/// Rewrites a producer's sequence numbers and timestamps into one consumer's
/// continuous space: every consumer starts at its own random base, and after
/// a pause, a mute or a keyframe wait it continues where it left off, so the
/// receiver sees neither a jump nor a gap it would try to repair. Packets
/// the consumer does not get (pictures of temporal layers above its own)
/// are taken out of the sequence ([`Rewriter::skip`]), so the receiver does
/// not ask for them.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    /// Runs `(first, count)` of skipped producer sequence numbers since the
    /// last resynchronization, oldest first (a ring of `runs` entries from
    /// `run_head`).
    drops: [(u64, u64); DROP_RUNS],
    runs: usize,
    run_head: usize,
    /// Skipped packets in runs no longer remembered (all older).
    folded: u64,
    /// Every skipped packet since the last resynchronization.
    skipped: u64,
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
            drops: [(0, 0); DROP_RUNS],
            runs: 0,
            run_head: 0,
            folded: 0,
            skipped: 0,
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
            self.runs = 0;
            self.folded = 0;
            self.skipped = 0;
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
        let out_seq = in_seq
            .wrapping_add(self.seq_offset)
            .wrapping_sub(self.skipped_below(in_seq));
        let out_ts = in_ts.wrapping_add(self.ts_offset);
        if out_seq > self.last_out_seq {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Some((out_seq, out_ts))
    }

    /// Takes producer packet `in_seq` out of the consumer's sequence (it is
    /// not forwarded): later packets move down by one. A skip older than
    /// the newest one is not recorded (rare: a late packet of a dropped
    /// picture), which leaves a hole the receiver may ask about.
    pub(crate) fn skip(&mut self, in_seq: u64) {
        if !self.started || in_seq < self.sync_in_seq {
            return;
        }
        if self.runs > 0 {
            let last = (self.run_head + self.runs - 1) % DROP_RUNS;
            let (first, count) = self.drops[last];
            if in_seq == first + count {
                self.drops[last].1 += 1;
                self.skipped += 1;
                return;
            }
            if in_seq < first + count {
                return;
            }
        }
        if self.runs == DROP_RUNS {
            self.folded += self.drops[self.run_head].1;
            self.run_head = (self.run_head + 1) % DROP_RUNS;
            self.runs -= 1;
        }
        let at = (self.run_head + self.runs) % DROP_RUNS;
        self.drops[at] = (in_seq, 1);
        self.runs += 1;
        self.skipped += 1;
    }

    /// Skipped packets before `in_seq`.
    fn skipped_below(&self, in_seq: u64) -> u64 {
        if self.skipped == 0 {
            return 0;
        }
        let last = (self.run_head + self.runs.max(1) - 1) % DROP_RUNS;
        let (first, count) = self.drops[last];
        if self.runs > 0 && in_seq >= first + count {
            return self.skipped;
        }
        let mut below = self.folded;
        for i in 0..self.runs {
            let (first, count) = self.drops[(self.run_head + i) % DROP_RUNS];
            if in_seq <= first {
                break;
            }
            below += count.min(in_seq - first);
        }
        below
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
    fn skipped_packets_leave_no_hole_and_late_packets_find_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 100, 0);
        assert_eq!(r.rewrite(1000, 0, t0, false), Some((100, 0)));
        // 1001 and 1002 are a dropped picture; 1003 follows 1000 directly.
        r.skip(1001);
        r.skip(1002);
        assert_eq!(r.rewrite(1003, 3000, t0, false).map(|x| x.0), Some(101));
        r.skip(1004);
        assert_eq!(r.rewrite(1005, 6000, t0, false).map(|x| x.0), Some(102));
        assert_eq!(r.rewrite(1006, 6000, t0, false).map(|x| x.0), Some(103));
        // A late retransmission of 1003 gets the same number as before.
        assert_eq!(r.rewrite(1003, 3000, t0, false).map(|x| x.0), Some(101));
        // Many runs: old ones are folded, the count stays right.
        let mut seq = 1007;
        for _ in 0..40 {
            r.skip(seq);
            seq += 1;
            r.rewrite(seq, 0, t0, false);
            seq += 1;
        }
        // 40 forwarded after 103.
        assert_eq!(r.rewrite(seq, 0, t0, false).map(|x| x.0), Some(144));
        // A resync forgets the runs.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(r.rewrite(5000, 0, t1, true).map(|x| x.0), Some(145));
        assert_eq!(r.rewrite(5001, 0, t1, false).map(|x| x.0), Some(146));
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
