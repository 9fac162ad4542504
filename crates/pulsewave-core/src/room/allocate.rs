//! The allocator at work: for each receive transport, what its consumers
//! could receive, divided by [`allocator::allocate`] along the transport's
//! bandwidth estimate, and the result applied (target layers, congestion
//! pauses and resumes, keyframe requests, str0m's probing goals); and
//! dynacast, which layers of each producer anyone wants.
//!
//! An allocation runs when something it depends on changes (an estimate, a
//! consumer resumed or closed, a preference, a layer starting or stopping)
//! and every [`ALLOCATION_INTERVAL`] while the transport has consumers, so
//! measured layer rates and dead layers are followed.

use std::time::{Duration, Instant};

use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{ConsumerId, MediaKind, ProducerId, TransportId};
use str0m::bwe::Bitrate;
use str0m::rtp::Ssrc;

use crate::allocator::{self, Allocation, Demand, MAX_SPATIAL, MAX_TEMPORAL};
use crate::event::{Event, LayerWanted};
use crate::media::{
    ConsumerKey, DEFAULT_PRIORITY, DYNACAST_DOWN_DELAY, LAYER_TIMEOUT, Producer, ProducerKey, View,
};
use crate::owners::Owner;
use crate::transport::{Timer, TransportKey, drain};

use super::Room;

/// How often a receive transport's allocation runs without a reason.
pub(crate) const ALLOCATION_INTERVAL: Duration = Duration::from_millis(500);

/// After a consumer went down a layer (or paused) for lack of bandwidth,
/// no consumer of the transport goes up for this long: the estimate has
/// just dropped, and going straight back up is what makes layers flap.
pub(crate) const HOLD_AFTER_DOWNGRADE: Duration = Duration::from_secs(4);

/// A downgrade this soon after an upgrade means the upgrade did not fit:
/// the next hold is twice as long, up to [`MAX_HOLD`].
const FAILED_UPGRADE_WINDOW: Duration = Duration::from_secs(10);

/// The longest hold after repeated failed upgrades.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// Without a downgrade for this long, holds are back to
/// [`HOLD_AFTER_DOWNGRADE`].
const STABLE_RESET: Duration = Duration::from_secs(30);

/// How far above what is wanted a probe is asked for (str0m probes at
/// `desired` and twice it, capped at twice the estimate).
const PROBE_NUDGE: f64 = 1.1;

/// The first wait between probes while a consumer is below what it wants;
/// it doubles after each probe that let nothing go up, up to
/// [`MAX_PROBE_EVERY`] (LiveKit backs off its probes the same way).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between probes: short enough that a link capped for a
/// long while and then lifted gets its top layer back within 15 s wherever
/// in the probe cycle the lift falls (16 s took up to 19 s and more).
const MAX_PROBE_EVERY: Duration = Duration::from_secs(6);

/// How long a probe pads the link up to the estimate.
const PROBE_WINDOW: Duration = Duration::from_secs(3);

/// A probe is only tried for a step the estimate could plausibly grow
/// into: the allocation with the step at most this many times the
/// estimate. Past it (a link far too small for the next layer), probes
/// would only congest the link and hurt its audio.
const PROBE_REACH: f64 = 1.5;

/// The part of the estimate the allocator divides: the rest absorbs
/// keyframes, retransmissions and an estimate a little above the link.
/// Layers forwarded now are kept while the estimate climbs or the whole
/// estimate covers them: a delay-based estimate of a link that carries
/// them runs about at what is sent until a probe lifts it, and it falls
/// when the link is congested.
const BUDGET_SHARE: f64 = 0.9;

/// Steps each consumer may go above its current layers per allocation run
/// (each needs its headroom and, for a new spatial layer, a keyframe).
const UP_STEPS_PER_RUN: usize = 1;

/// A rendered size is served by the lowest layer at least this tall
/// relative to it (LiveKit's tolerance).
const HEIGHT_TOLERANCE: f64 = 0.9;

/// What an audio consumer is assumed to cost before its rate is measured.
const AUDIO_ASSUMED: u64 = 40_000;

/// The highest spatial layer a rendered `view` needs from `p`: the lowest
/// layer at least [`HEIGHT_TOLERANCE`] times as tall as the view, where the
/// heights are known from keyframes, else assumed from the usual simulcast
/// ladder (each layer half the height of the next, the top 720p).
pub(crate) fn view_cap(p: &Producer, view: &View) -> usize {
    let last = p.layers.len().saturating_sub(1);
    if view.height == 0 {
        return last;
    }
    let want = f64::from(view.height) * HEIGHT_TOLERANCE;
    let height = |i: usize| -> f64 {
        p.layers[i]
            .height
            .map(f64::from)
            .unwrap_or_else(|| 720.0 / f64::from(1u32 << (last - i).min(8)))
    };
    (0..=last).find(|&i| height(i) >= want).unwrap_or(last)
}

/// The highest spatial layer `c` may have: its preference and its view.
fn spatial_cap(p: &Producer, preferred: Option<usize>, view: &View) -> usize {
    let last = p.layers.len().saturating_sub(1);
    preferred.unwrap_or(last).min(view_cap(p, view)).min(last)
}

/// A receive transport's bandwidth estimate and what its consumers get
/// ([`Room::transport_allocations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportAllocation {
    /// The transport.
    pub transport_id: TransportId,
    /// The bandwidth estimate toward the subscriber, bits per second
    /// (`None` before the first one).
    pub available_outgoing_bitrate: Option<u64>,
    /// What the last allocation gave its consumers, bits per second.
    pub allocated_bitrate: u64,
    /// Its consumers.
    pub consumers: Vec<ConsumerAllocation>,
}

/// One consumer in a [`TransportAllocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAllocation {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The producer it consumes (`None` if that producer is gone).
    pub producer_id: Option<ProducerId>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its priority.
    pub priority: u8,
    /// The layers it forwards now (spatial, temporal).
    pub layers: Option<(u8, u8)>,
    /// The layers the allocator chose for it.
    pub target: Option<(u8, u8)>,
    /// Paused for congestion.
    pub congested: bool,
    /// The bitrate of its target layers, bits per second.
    pub bitrate: u64,
}

impl Room {
    /// The bandwidth estimate and allocation of each of `owner`'s receive
    /// transports.
    pub fn transport_allocations(&self, owner: Owner) -> Vec<TransportAllocation> {
        let mut out = Vec::new();
        for &key in &self.owners.of(owner).transports {
            let Some(t) = self.transports.get(key) else {
                continue;
            };
            if t.direction != TransportDirection::Recv {
                continue;
            }
            let consumers = t
                .mids
                .iter()
                .filter_map(|(_, ckey)| self.consumers.get(*ckey))
                .map(|c| {
                    let p = self.producers.get(c.producer);
                    ConsumerAllocation {
                        consumer_id: c.id.clone(),
                        producer_id: p.map(|p| p.id.clone()),
                        kind: p.map_or(MediaKind::Video, |p| p.kind),
                        priority: c
                            .priority
                            .or(p.map(|p| p.effective_priority()))
                            .unwrap_or(DEFAULT_PRIORITY),
                        layers: c.reported_layers,
                        target: c.target,
                        congested: c.congested,
                        bitrate: c.allocated,
                    }
                })
                .collect();
            out.push(TransportAllocation {
                transport_id: t.id.clone(),
                available_outgoing_bitrate: t.bwe.available(),
                allocated_bitrate: t.bwe.allocated,
                consumers,
            });
        }
        out
    }

    /// Runs the allocations asked for during this input.
    pub(super) fn run_allocations(&mut self, now: Instant) {
        while let Some(key) = self.out.allocate.pop() {
            let Some(t) = self.transports.get_mut(key) else {
                continue;
            };
            t.bwe.pending = false;
            self.allocate_transport(now, key);
        }
    }

    /// Asks for an allocation of `key` before this input ends.
    pub(super) fn want_allocation(&mut self, key: TransportKey) {
        if let Some(t) = self.transports.get_mut(key) {
            self.out.want_allocation(key, t);
        }
    }

    /// Divides one receive transport's bandwidth among its consumers.
    fn allocate_transport(&mut self, now: Instant, key: TransportKey) {
        let Some(t) = self.transports.get(key) else {
            return;
        };
        if t.direction != TransportDirection::Recv {
            return;
        }
        // The estimate, never above the transport's hard outgoing cap.
        let estimate = if self.config.bandwidth_estimation {
            Some(
                t.bwe
                    .available()
                    .unwrap_or(self.config.initial_available_outgoing_bitrate)
                    .min(self.config.max_outgoing_bitrate),
            )
        } else {
            None
        };
        let hold = t.bwe.hold_until.is_some_and(|h| now < h);
        // Gather: audio's measured cost, each video consumer's demand.
        let mut audio: u64 = 0;
        let mut keys: Vec<ConsumerKey> = Vec::new();
        let mut demands: Vec<Demand> = Vec::new();
        let mut hidden: Vec<ConsumerKey> = Vec::new();
        // The next instant a layer counts as stopped, to run again then
        // rather than up to an interval late.
        let mut next_run = now + ALLOCATION_INTERVAL;
        for &(_, ckey) in &t.mids {
            let Some(c) = self.consumers.get(ckey) else {
                continue;
            };
            let Some(p) = self.producers.get_mut(c.producer) else {
                continue;
            };
            if c.paused || p.paused {
                continue;
            }
            if p.kind == MediaKind::Audio {
                let rate = p.layers.first_mut().map_or(0, |l| l.rate.bitrate(now, 3));
                audio += if rate == 0 { AUDIO_ASSUMED } else { rate };
                continue;
            }
            if c.view.disabled {
                hidden.push(ckey);
                continue;
            }
            let mut d = Demand {
                priority: c.priority.unwrap_or(p.effective_priority()).max(1),
                spatial_layers: p.layers.len().min(MAX_SPATIAL) as u8,
                temporal_layers: 1,
                max_spatial: spatial_cap(p, c.preferred_layer, &c.view).min(MAX_SPATIAL - 1) as u8,
                max_temporal: c.preferred_temporal.unwrap_or(MAX_TEMPORAL as u8 - 1),
                current: if c.congested { None } else { c.target },
                congested: c.congested,
                ..Demand::default()
            };
            for (s, l) in p.layers.iter_mut().enumerate().take(MAX_SPATIAL) {
                if !l.is_live(now) {
                    continue;
                }
                if let Some(last) = l.last_packet {
                    next_run = next_run.min(last + LAYER_TIMEOUT + Duration::from_millis(1));
                }
                let layers = l.rate.temporal_layers(now).min(MAX_TEMPORAL);
                d.temporal_layers = d.temporal_layers.max(layers as u8);
                for tl in 0..layers {
                    // A live layer always costs something, even before its
                    // rate is measured.
                    d.rates[s][tl] = l.rate.bitrate(now, tl).max(1);
                }
            }
            // A lower temporal layer that was not seen yet costs what the
            // full layer costs (safe side).
            keys.push(ckey);
            demands.push(d);
        }
        let budget = estimate.map_or(u64::MAX, |e| {
            ((e as f64 * BUDGET_SHARE) as u64).saturating_sub(audio)
        });
        // What the layers forwarded until now cost at today's rates, and
        // what consumers without a layer yet would take at best.
        let mut current_cost: u64 = 0;
        let mut newcomers: u64 = 0;
        let mut best: u64 = 0;
        for d in &demands {
            let top = allocator::path(d)
                .last()
                .map_or(0, |l| allocator::cost(d, l));
            best = best.saturating_add(top);
            match d.current {
                Some(l) => current_cost = current_cost.saturating_add(allocator::cost(d, l)),
                None if !d.congested => newcomers = newcomers.saturating_add(top),
                None => {}
            }
        }
        // What is forwarded now stays while the estimate climbs, and while
        // the whole estimate covers it (`BUDGET_SHARE` spares room for
        // growth, not for keeping). Congestion shows as a falling
        // estimate; one climbing from its start value toward a stream the
        // link carries runs at or a little below what is sent (1.22 Mbit/s
        // against 1.22 to 1.5 sent, until a probe lifts it).
        let rising = estimate.is_some_and(|e| t.bwe.previous.is_some_and(|p| e > p));
        let budget = match estimate {
            Some(_) if rising => budget.max(current_cost),
            Some(e) => budget.max(current_cost.min(e.saturating_sub(audio))),
            None => budget,
        };
        // While holding after a congestion downgrade (and the budget does
        // not cover everyone's best anyway) the total does not grow past
        // what is forwarded now, a total known to fit, plus what new
        // consumers take; but it may be shared anew: an active speaker or
        // a screen share still takes its place.
        let covered = best as f64 * allocator::UP_HEADROOM <= budget as f64;
        let (share, headroom) = if hold && !covered && current_cost <= budget {
            (budget.min(current_cost.saturating_add(newcomers)), false)
        } else {
            (budget, true)
        };
        // Before anything is measured the budget comes from the configured
        // initial estimate, a guess: it bounds how high consumers start,
        // but pauses nobody (a single 1 Mbit/s stream against a 1 Mbit/s
        // guess would otherwise never send the media its estimate needs).
        let rules = allocator::Rules {
            headroom,
            bottoms_always: self.config.bandwidth_estimation && !t.bwe.measured,
        };
        let mut result: Vec<Allocation> = Vec::with_capacity(demands.len());
        let used = allocator::allocate_with(share, &demands, UP_STEPS_PER_RUN, rules, &mut result);
        // Apply.
        let mut downgraded = false;
        let mut upgraded = false;
        let mut probe_step: Option<u64> = None;
        let mut desired: u64 = audio;
        for (i, &ckey) in keys.iter().enumerate() {
            let a = result[i];
            let d = &demands[i];
            desired = desired.saturating_add(a.optimal.map_or(0, |l| allocator::cost(d, l)));
            if a.layer.is_some() && a.layer != a.optimal && probe_step.is_none() {
                probe_step = a.next_step.map(|n| n.saturating_sub(a.bitrate));
            }
            if a.layer.is_none() && a.optimal.is_some() && probe_step.is_none() {
                probe_step = a.next_step;
            }
            let (down, up) = self.apply(now, ckey, d, a);
            downgraded |= down;
            upgraded |= up;
        }
        for ckey in hidden {
            self.hide(ckey);
        }
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        t.bwe.allocated = used.saturating_add(audio);
        t.bwe.previous = estimate;
        // A downgrade is a sign of congestion only when the layers forwarded
        // until now no longer fit the budget; one made to give way to a
        // higher priority (an active speaker, a screen share) or to a new
        // consumer holds nothing down.
        let downgraded = downgraded && current_cost > budget;
        let last_up = t.bwe.last_up;
        if upgraded {
            t.bwe.last_up = Some(now);
            t.bwe.probe_every = None;
        }
        if downgraded {
            let bwe = &mut t.bwe;
            let failed_upgrade =
                last_up.is_some_and(|u| now.saturating_duration_since(u) < FAILED_UPGRADE_WINDOW);
            let stable = bwe
                .last_down
                .is_none_or(|d| now.saturating_duration_since(d) > STABLE_RESET);
            let hold_for = match bwe.hold_for {
                Some(h) if failed_upgrade && !stable => (h * 2).min(MAX_HOLD),
                Some(h) if !stable => h,
                _ => HOLD_AFTER_DOWNGRADE,
            };
            bwe.hold_for = Some(hold_for);
            bwe.hold_until = Some(now + hold_for);
            bwe.last_down = Some(now);
        }
        // Probing: padding up to the next step, so the estimate learns
        // whether it fits before a layer goes up; the estimator probes
        // toward everything wanted. Also while holding: the hold keeps the
        // layers, the probe finds out whether the link got better (once the
        // estimate covers everyone's best the hold no longer binds).
        if let Some(estimate) = estimate {
            // While something is below what it wants, now and then (less
            // often after each probe that let nothing go up): `desired` is
            // raised a little (str0m sends a probe cluster on a raise), and
            // for a while padding fills the link up to the estimate, so the
            // estimate can grow toward the next step.
            let bwe = &mut t.bwe;
            let reachable = probe_step.is_some_and(|step| {
                (bwe.allocated.saturating_add(step)) as f64 <= estimate as f64 * PROBE_REACH
            });
            // A next step far beyond the estimate (a single 1 Mbit/s stream
            // paused behind a link that now carries 500 kbit/s) is still
            // probed for, toward `PROBE_REACH` times the estimate, so the
            // estimate can climb to it over a few windows.
            if probe_step.is_none() {
                bwe.probe_every = None;
                bwe.next_probe = None;
                bwe.probe_from = None;
                bwe.nudge = false;
                bwe.probe_until = None;
            } else if bwe.nudge {
                bwe.nudge = false;
            } else if bwe.next_probe.is_none_or(|at| now >= at) {
                let every = bwe.probe_every.unwrap_or(PROBE_EVERY);
                bwe.nudge = true;
                bwe.next_probe = Some(now + PROBE_WINDOW + every);
                bwe.probe_every = Some((every * 2).min(MAX_PROBE_EVERY));
                bwe.probe_until = Some(now + PROBE_WINDOW);
                // str0m's loss-based estimate may stay where a past loss
                // left it, even with no loss since (it grows only from
                // what it saw acknowledged): if the last probe did not
                // move the estimate, start the estimator again from it,
                // which sends its initial probe clusters.
                let stuck = bwe
                    .probe_from
                    .is_some_and(|from| estimate as f64 <= from as f64 * 1.05);
                bwe.probe_from = Some(estimate);
                if stuck {
                    t.rtc.bwe().reset(Bitrate::bps(estimate));
                    t.bwe.configured = None;
                }
            }
            let bwe = &mut t.bwe;
            let probing = bwe.probe_until.is_some_and(|u| now < u);
            // Padding only in probe windows. Outside them str0m's own
            // floor (a 50 kbit/s keep-alive target, which media exceeds)
            // is enough: asking it to sustain the allocation filled every
            // dip of the media below the allocated rate (which counts
            // per-packet overhead str0m's pacer does not) with padding,
            // 13-22 % more datagrams than forwarded packets at 1x100
            // (5-10 % without; docs/benchmarks.md).
            let minimum = if probing {
                bwe.allocated.max((estimate as f64 * 0.95) as u64)
            } else {
                0
            };
            let nudge = if t.bwe.nudge { PROBE_NUDGE } else { 1.0 };
            // str0m probes up to twice `desired` and no further: aim above
            // what is wanted (mediasoup: 1.35x), and never below the
            // starting estimate (rates measured in the first second are
            // low).
            // A link far too small for the next step: str0m is not asked to
            // look beyond the estimate (its own periodic probes go to twice
            // `desired`, a burst such a link pays for with audio).
            let desired = if probe_step.is_some() && !reachable {
                if probing {
                    ((estimate as f64 * PROBE_REACH) as u64).max(minimum)
                } else {
                    estimate.max(minimum)
                }
            } else {
                ((desired.saturating_mul(3) / 2)
                    .max(self.config.initial_available_outgoing_bitrate)
                    .max(minimum) as f64
                    * nudge) as u64
            };
            let changed = t.bwe.configured.is_none_or(|(m, d)| {
                m.abs_diff(minimum) * 20 > m.max(1) || d.abs_diff(desired) * 20 > d.max(1)
            });
            if changed {
                t.bwe.configured = Some((minimum, desired));
                t.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
                drain(key, t, &mut self.out, self.config.ice_timeout);
            }
        }
        // No padding on a stopped consumer's stream: its subscriber would
        // count it, and it costs for nothing. A consumer paused for
        // congestion carries the padding of probe windows, though: it may
        // be the only video of the transport, and with nothing sent the
        // estimate could never learn that it fits again.
        let probing = t.bwe.probe_until.is_some_and(|u| now < u);
        for &(_, ckey) in &t.mids {
            let Some(c) = self.consumers.get_mut(ckey) else {
                continue;
            };
            let producer_paused = self.producers.get(c.producer).is_none_or(|p| p.paused);
            let pad =
                !(c.paused || producer_paused || c.view.disabled) && (!c.congested || probing);
            if pad != c.padded {
                c.padded = pad;
                if let Some(stream) = t.rtc.direct_api().stream_tx(&Ssrc::from(c.ssrc)) {
                    stream.set_padding_allowed(pad);
                }
            }
        }
        // Again in a while, as long as there is something to allocate.
        if !t.mids.is_empty() {
            let at = next_run;
            if t.bwe.timer.is_none_or(|a| a <= now || at < a) {
                t.bwe.timer = Some(at);
                self.out.timers.push(at, Timer::Allocate(key));
            }
        } else {
            t.bwe.timer = None;
        }
    }

    /// Gives consumer `ckey` its allocation. Returns whether it went down
    /// for lack of budget, and whether it went up.
    fn apply(
        &mut self,
        now: Instant,
        ckey: ConsumerKey,
        d: &Demand,
        a: Allocation,
    ) -> (bool, bool) {
        let Some(c) = self.consumers.get_mut(ckey) else {
            return (false, false);
        };
        c.allocated = a.bitrate;
        c.expected = a.optimal.map_or(0, |l| allocator::cost(d, l));
        c.short_since = if crate::quality::short_of_expected(c.allocated, c.expected) {
            c.short_since.or(Some(now))
        } else {
            None
        };
        let pkey = c.producer;
        let nothing_sent = allocator::path(d).next().is_none();
        let Some((s, tl)) = a.layer else {
            if nothing_sent {
                // Nothing to choose from yet: take the first keyframe of
                // the best layer allowed, whichever comes.
                if c.target.is_none() && !c.congested {
                    c.target = Some((d.max_spatial, d.max_temporal));
                    c.vp8.target = d.max_temporal;
                }
                return (false, false);
            }
            if c.congested {
                return (false, false);
            }
            c.congested = true;
            c.target = None;
            self.stats.congestion_pauses += 1;
            self.events.push_back(Event::ConsumerCongested {
                consumer_id: c.id.clone(),
                owner: c.owner,
                congested: true,
            });
            if c.reported_layers.take().is_some() {
                self.events.push_back(Event::ConsumerLayersChanged {
                    consumer_id: c.id.clone(),
                    owner: c.owner,
                    layers: None,
                });
            }
            // What str0m's pacer still holds of it would delay the audio
            // of a link already too small: drop it (the consumer restarts
            // at a keyframe).
            let (tkey, ssrc) = (c.transport, c.ssrc);
            c.layer = None;
            c.needs_resync = true;
            if let Some(t) = self.transports.get_mut(tkey)
                && let Some(stream) = t.rtc.direct_api().stream_tx(&Ssrc::from(ssrc))
            {
                stream.discard_queued();
            }
            return (true, false);
        };
        let old = c.target;
        let mut restart = false;
        if c.congested {
            c.congested = false;
            c.needs_resync = true;
            c.layer = None;
            restart = true;
            self.events.push_back(Event::ConsumerCongested {
                consumer_id: c.id.clone(),
                owner: c.owner,
                congested: false,
            });
        }
        c.target = Some((s, tl));
        c.vp8.target = tl;
        let went_down = old.is_some_and(|o| (s, tl) < o) && a.layer != a.optimal;
        let went_up = restart || old.is_some_and(|o| (s, tl) > o);
        let needs_keyframe =
            restart || (old.map(|o| o.0) != Some(s) && c.layer != Some(usize::from(s)));
        if needs_keyframe {
            self.want_keyframe(now, pkey, Some(usize::from(s)));
        }
        (went_down, went_up)
    }

    /// A consumer the subscriber does not show: no video at all.
    fn hide(&mut self, ckey: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ckey) else {
            return;
        };
        c.allocated = 0;
        c.expected = 0;
        c.short_since = None;
        if c.target.take().is_some() {
            c.layer = None;
            c.needs_resync = true;
        }
        if c.reported_layers.take().is_some() {
            self.events.push_back(Event::ConsumerLayersChanged {
                consumer_id: c.id.clone(),
                owner: c.owner,
                layers: None,
            });
        }
    }

    /// The layers of `pkey` some consumer wants (bit `i`: layer `i`): up
    /// to its preference and its rendered size, for every consumer that
    /// is neither paused nor hidden.
    fn wanted_layers(&self, pkey: ProducerKey) -> u32 {
        let Some(p) = self.producers.get(pkey) else {
            return 0;
        };
        let mut want: u32 = 0;
        for &ckey in &p.consumers {
            let Some(c) = self.consumers.get(ckey) else {
                continue;
            };
            if c.paused || c.view.disabled {
                continue;
            }
            let cap = spatial_cap(p, c.preferred_layer, &c.view).min(30);
            want |= (1u32 << (cap + 1)) - 1;
        }
        want
    }

    /// Dynacast: works out which layers of `pkey` anyone wants, and reports
    /// it to the publisher: more at once, fewer after
    /// [`DYNACAST_DOWN_DELAY`] (and nothing at all, for a track nobody
    /// watches, only after that delay from its publication).
    pub(super) fn dynacast(&mut self, now: Instant, pkey: ProducerKey) {
        if self
            .producers
            .get(pkey)
            .is_none_or(|p| p.kind != MediaKind::Video)
        {
            return;
        }
        let want = self.wanted_layers(pkey);
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        let reported = p.wanted_reported.unwrap_or(0);
        let add = want & !reported;
        if add != 0 {
            self.report_wanted(pkey, reported | add);
        }
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        let fewer = p.wanted_reported.is_none() || reported & !want != 0;
        if !fewer {
            p.wanted_pending = None;
        } else if p.wanted_pending.is_none() {
            let at = now + DYNACAST_DOWN_DELAY;
            p.wanted_pending = Some(at);
            self.out.timers.push(at, Timer::Dynacast(pkey));
        }
    }

    /// The dynacast timer of `pkey`, set for `at`, came due: report what is
    /// wanted now if it changed.
    pub(super) fn dynacast_timer(&mut self, pkey: ProducerKey, at: Instant) {
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        if p.wanted_pending != Some(at) {
            return;
        }
        p.wanted_pending = None;
        let before = p.wanted_reported;
        let want = self.wanted_layers(pkey);
        if before != Some(want) {
            self.report_wanted(pkey, want);
        }
    }

    fn report_wanted(&mut self, pkey: ProducerKey, want: u32) {
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        p.wanted_reported = Some(want);
        let layers = p
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerWanted {
                rid: l.rid.clone(),
                wanted: want & (1 << i.min(31)) != 0,
            })
            .collect();
        self.events.push_back(Event::ProducerLayersWanted {
            producer_id: p.id.clone(),
            owner: p.owner,
            layers,
        });
    }
}
