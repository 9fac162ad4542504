//! The stream allocator of one receive transport: divides the bandwidth
//! estimate toward a subscriber among its video consumers, choosing for each
//! a spatial and a temporal layer (or none), by priority. Pure: the room
//! gathers the demands and applies the result (`room/allocate.rs`).
//!
//! # The rules
//!
//! - Audio is never starved: its measured rate is taken off the budget first
//!   (the room does that).
//! - Each video consumer climbs one path of layers, cheapest first: the
//!   temporal layers of spatial layer 0, then each higher spatial layer from
//!   its second temporal layer up. A higher resolution is only worth it at
//!   half the frame rate or more, so a short budget drops frame rate first
//!   (30, then 15 fps) and resolution next, and 7.5 fps happens only at the
//!   lowest resolution. The path stops at the consumer's preferred layers
//!   and at the layers the publisher sends now.
//! - First every consumer, highest priority first, gets the bottom of its
//!   path; one that does not fit gets nothing (paused for congestion).
//!   Then, priority level by priority level (highest first), consumers of
//!   the level climb one step each in turn while the budget lasts. So a
//!   screen share (higher priority) keeps its layers over cameras when the
//!   estimate is short, and cameras of equal priority share fairly.
//! - Damping: keeping a consumer's current layer needs the budget; going
//!   above it needs the budget with [`UP_HEADROOM`] to spare, and at most
//!   `max_up_steps` steps per run, so a steady estimate settles and stays.

/// Going above a consumer's current layer needs the budget to exceed the
/// new total by this factor (1.15: 15% headroom). With the estimate's own
/// noise of a few percent, a steady estimate never flips a layer back and
/// forth.
pub(crate) const UP_HEADROOM: f64 = 1.15;

/// Going up to a new spatial layer starts with its keyframe, several times
/// the size of its other frames, and its rate is measured less steadily:
/// such a step also needs this share of the new layer's rate to spare.
pub(crate) const KEYFRAME_ALLOWANCE: f64 = 0.25;

/// A layer: spatial index and temporal index.
pub(crate) type LayerId = (u8, u8);

/// Spatial layers the allocator considers (encodings are at most 4).
pub(crate) const MAX_SPATIAL: usize = 4;
/// Temporal layers the allocator considers.
pub(crate) const MAX_TEMPORAL: usize = 4;

/// What one video consumer could receive.
#[derive(Debug, Clone, Default)]
pub(crate) struct Demand {
    /// 1 to 255, higher first.
    pub(crate) priority: u8,
    /// `rates[s][t]`: bits per second of spatial layer `s` with temporal
    /// layers `0..=t`; 0 where the layer is not sent now.
    pub(crate) rates: [[u64; MAX_TEMPORAL]; MAX_SPATIAL],
    /// Spatial layers the producer has.
    pub(crate) spatial_layers: u8,
    /// Temporal layers its streams have (1 without temporal scalability).
    pub(crate) temporal_layers: u8,
    /// Highest spatial layer wanted (preference, rendered size).
    pub(crate) max_spatial: u8,
    /// Highest temporal layer wanted.
    pub(crate) max_temporal: u8,
    /// The layer it has now (`None`: nothing, or not started).
    pub(crate) current: Option<LayerId>,
    /// Paused for congestion by an earlier run: restarting needs headroom.
    pub(crate) congested: bool,
}

/// The layers of `d` in the order the allocator climbs them.
pub(crate) fn path(d: &Demand) -> impl Iterator<Item = LayerId> + '_ {
    let temporal = d.temporal_layers.clamp(1, MAX_TEMPORAL as u8);
    let max_t = d.max_temporal.min(temporal - 1);
    let max_s = d
        .max_spatial
        .min(d.spatial_layers.clamp(1, MAX_SPATIAL as u8) - 1);
    (0..=max_s)
        .flat_map(move |s| {
            let low = if s == 0 { 0 } else { 1.min(max_t) };
            (low..=max_t).map(move |t| (s, t))
        })
        .filter(move |&(s, t)| d.rates[usize::from(s)][usize::from(t)] > 0)
}

/// The cost of `layer` for `d`.
pub(crate) fn cost(d: &Demand, layer: LayerId) -> u64 {
    d.rates[usize::from(layer.0)][usize::from(layer.1)]
}

/// The allocator's answer for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Allocation {
    /// The layer to forward; `None` when nothing fits (or nothing is sent).
    pub(crate) layer: Option<LayerId>,
    /// Its cost.
    pub(crate) bitrate: u64,
    /// The best layer it could have (end of its path).
    pub(crate) optimal: Option<LayerId>,
    /// The cost of its next step up, when it is below its optimum.
    pub(crate) next_step: Option<u64>,
}

/// Divides `budget` (bits per second for video) among `demands`, writing one
/// allocation per demand into `out`. `max_up_steps` bounds how far above its
/// current layer each consumer may go in this run, when the budget does not
/// cover everyone's best anyway. Returns the total allocated.
#[cfg(test)]
pub(crate) fn allocate(
    budget: u64,
    demands: &[Demand],
    max_up_steps: usize,
    out: &mut Vec<Allocation>,
) -> u64 {
    allocate_with(budget, demands, max_up_steps, Rules::NORMAL, out)
}

/// How [`allocate_with`] treats steps up and the bottoms of paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Steps above a current layer need [`UP_HEADROOM`] and
    /// [`KEYFRAME_ALLOWANCE`]. Off when `budget` is a total already known
    /// to fit (what is forwarded now, while holding after congestion), and
    /// only its share among consumers changes.
    pub(crate) headroom: bool,
    /// Every consumer gets the bottom of its path, fitting or not: the
    /// budget is a guess (no estimate measured yet), and only a
    /// measurement may pause a consumer for congestion. Climbing still
    /// stays within the budget.
    pub(crate) bottoms_always: bool,
}

#[cfg(test)]
impl Rules {
    /// Headroom on steps up; bottoms only when they fit.
    pub(crate) const NORMAL: Rules = Rules {
        headroom: true,
        bottoms_always: false,
    };
}

/// [`allocate`] under `rules`.
pub(crate) fn allocate_with(
    budget: u64,
    demands: &[Demand],
    max_up_steps: usize,
    rules: Rules,
    out: &mut Vec<Allocation>,
) -> u64 {
    out.clear();
    out.resize(demands.len(), Allocation::default());
    // When everyone's best fits with headroom, nobody needs to climb
    // step by step: the budget is not what limits them.
    let optimal: u64 = demands
        .iter()
        .filter_map(|d| path(d).last().map(|l| cost(d, l)))
        .sum();
    let max_up_steps = if (optimal as f64) * UP_HEADROOM <= budget as f64 {
        usize::MAX
    } else {
        max_up_steps
    };
    // Highest priority first; equal ones in their given order.
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(demands[i].priority));
    // Position on each path (index into path()), and steps taken above the
    // current layer.
    let mut pos: Vec<Option<usize>> = vec![None; demands.len()];
    let mut ups: Vec<usize> = vec![0; demands.len()];
    let mut used: u64 = 0;
    let fits = |used: u64, extra: u64, up: bool, keyframe: u64| {
        let total = used.saturating_add(extra) as f64;
        if up && rules.headroom {
            total * UP_HEADROOM + keyframe as f64 * KEYFRAME_ALLOWANCE <= budget as f64
        } else {
            total <= budget as f64
        }
    };
    // The rank of the current layer on the path (steps up to it are kept,
    // not raised).
    let rank_of_current = |i: usize| -> Option<usize> {
        let d = &demands[i];
        let cur = d.current?;
        path(d).position(|l| l == cur).or_else(|| {
            // Current layer no longer on the path (preference lowered, or
            // the layer stopped): the best path layer not above it.
            path(d).filter(|l| *l <= cur).count().checked_sub(1)
        })
    };
    // 1. The bottom of every path. Keeping it, or starting a new consumer,
    // needs the budget; restarting one paused for congestion needs
    // headroom.
    for &i in &order {
        let d = &demands[i];
        let Some(first) = path(d).next() else {
            continue;
        };
        let c = cost(d, first);
        if rules.bottoms_always || fits(used, c, d.congested, c) {
            used += c;
            pos[i] = Some(0);
        }
    }
    // 2. Climb, level by level.
    let mut start = 0;
    while start < order.len() {
        let level = demands[order[start]].priority;
        let end = order[start..]
            .iter()
            .position(|&i| demands[i].priority != level)
            .map_or(order.len(), |n| start + n);
        loop {
            let mut moved = false;
            for &i in &order[start..end] {
                let Some(p) = pos[i] else { continue };
                let d = &demands[i];
                let Some(next) = path(d).nth(p + 1) else {
                    continue;
                };
                // A new consumer climbs as far as the budget goes; one that
                // has a layer goes above it with headroom, a few steps per
                // run.
                let above = rank_of_current(i).is_none_or(|r| p + 1 > r);
                let limited = d.current.is_some() || d.congested;
                if above && limited && ups[i] >= max_up_steps {
                    continue;
                }
                let here = path(d).nth(p).unwrap_or(next);
                let delta = cost(d, next).saturating_sub(cost(d, here));
                // A new consumer's first layer needs no allowance either:
                // its first keyframe comes whichever layer it starts on.
                let keyframe = if next.0 != here.0 && d.current.is_some() {
                    cost(d, next)
                } else {
                    0
                };
                if fits(used, delta, above, keyframe) {
                    used += delta;
                    pos[i] = Some(p + 1);
                    if above {
                        ups[i] += 1;
                    }
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        start = end;
    }
    for (i, d) in demands.iter().enumerate() {
        let optimal = path(d).last();
        let layer = pos[i].and_then(|p| path(d).nth(p));
        let next = match pos[i] {
            Some(p) => path(d).nth(p + 1),
            None => path(d).next(),
        };
        out[i] = Allocation {
            layer,
            bitrate: layer.map_or(0, |l| cost(d, l)),
            optimal,
            next_step: next.map(|n| cost(d, n)),
        };
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three simulcast layers with three temporal layers each: 180p 150k,
    /// 360p 500k, 720p 1.5M at 40/60/100%.
    fn camera(priority: u8) -> Demand {
        let mut rates = [[0; MAX_TEMPORAL]; MAX_SPATIAL];
        for (s, total) in [150_000u64, 500_000, 1_500_000].into_iter().enumerate() {
            rates[s][0] = total * 4 / 10;
            rates[s][1] = total * 6 / 10;
            rates[s][2] = total;
        }
        Demand {
            priority,
            rates,
            spatial_layers: 3,
            temporal_layers: 3,
            max_spatial: 2,
            max_temporal: 2,
            current: None,
            congested: false,
        }
    }

    fn run(budget: u64, demands: &[Demand]) -> Vec<Option<LayerId>> {
        let mut out = Vec::new();
        allocate(budget, demands, usize::MAX, &mut out);
        out.iter().map(|a| a.layer).collect()
    }

    #[test]
    fn the_path_drops_frame_rate_before_resolution() {
        let d = camera(1);
        let p: Vec<_> = path(&d).collect();
        assert_eq!(
            p,
            vec![(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
        );
        // A preference caps it; layers not sent are skipped.
        let mut capped = camera(1);
        capped.max_spatial = 1;
        capped.max_temporal = 1;
        capped.rates[1] = [0; MAX_TEMPORAL];
        assert_eq!(path(&capped).collect::<Vec<_>>(), vec![(0, 0), (0, 1)]);
        // Without temporal layers: one step per spatial layer.
        let mut plain = camera(1);
        plain.temporal_layers = 1;
        for s in 0..3 {
            plain.rates[s][0] = plain.rates[s][2];
        }
        assert_eq!(
            path(&plain).collect::<Vec<_>>(),
            vec![(0, 0), (1, 0), (2, 0)]
        );
    }

    #[test]
    fn a_short_budget_gets_the_layer_that_fits() {
        assert_eq!(run(5_000_000, &[camera(1)]), vec![Some((2, 2))]);
        // 400 kbit/s: 360p at 15 fps costs 300k (x1.15 = 345k fits).
        assert_eq!(run(400_000, &[camera(1)]), vec![Some((1, 1))]);
        assert_eq!(run(300_000, &[camera(1)]), vec![Some((0, 2))]);
        assert_eq!(run(110_000, &[camera(1)]), vec![Some((0, 1))]);
        // Less than the lowest layer: paused.
        assert_eq!(run(50_000, &[camera(1)]), vec![None]);
    }

    #[test]
    fn higher_priority_keeps_its_layers_and_equals_share() {
        let screen = camera(2);
        // 1.2 Mbit/s: the screen share climbs first to 360p 30 fps (500k),
        // then 720p 15 fps (900k) fits with the cameras at their lowest
        // (60k each): 1.02M, and nothing more.
        let got = run(1_200_000, &[camera(1), screen, camera(1)]);
        assert_eq!(got, vec![Some((0, 0)), Some((2, 1)), Some((0, 0))]);
        // Equal priorities climb in turn.
        let got = run(650_000, &[camera(1), camera(1)]);
        assert_eq!(got, vec![Some((1, 1)), Some((0, 2))]);
    }

    #[test]
    fn keeping_a_layer_needs_no_headroom_but_going_up_does() {
        let mut d = camera(1);
        d.current = Some((1, 1));
        // 310k keeps 360p@15 (300k) although a fresh start would not take it.
        assert_eq!(run(310_000, &[d.clone()]), vec![Some((1, 1))]);
        let mut fresh = camera(1);
        fresh.current = Some((0, 2));
        assert_eq!(run(310_000, &[fresh]), vec![Some((0, 2))]);
        // Steps above the current layer are limited per run while the
        // budget is short of everyone's best...
        let mut out = Vec::new();
        d.current = Some((0, 0));
        allocate(1_500_000, &[d.clone()], 1, &mut out);
        assert_eq!(out[0].layer, Some((0, 1)));
        assert_eq!(out[0].optimal, Some((2, 2)));
        assert_eq!(out[0].next_step, Some(150_000));
        // ... and not when it covers it.
        allocate(10_000_000, &[d], 1, &mut out);
        assert_eq!(out[0].layer, Some((2, 2)));
        assert_eq!(out[0].next_step, None);
    }

    #[test]
    fn without_headroom_a_held_total_is_shared_anew_by_priority() {
        // Two cameras at 360p@15 (300k each): 600k forwarded, held.
        let mut speaker = camera(128);
        speaker.current = Some((1, 1));
        let mut other = camera(1);
        other.current = Some((1, 1));
        // With headroom, the speaker cannot climb inside that total...
        let mut out = Vec::new();
        allocate_with(
            600_000,
            &[speaker.clone(), other.clone()],
            1,
            Rules::NORMAL,
            &mut out,
        );
        assert_eq!(out[0].layer, Some((1, 1)));
        // ... without it (the total is known to fit), it takes 360p@30
        // (500k) and the other camera gives way, within the same total.
        let held = Rules {
            headroom: false,
            ..Rules::NORMAL
        };
        let used = allocate_with(600_000, &[speaker, other], 1, held, &mut out);
        assert_eq!(out[0].layer, Some((1, 2)));
        assert!(out[1].layer < Some((1, 1)), "{:?}", out[1].layer);
        assert!(used <= 600_000, "{used}");
    }
}
