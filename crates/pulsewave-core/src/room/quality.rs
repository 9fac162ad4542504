//! The room's side of connection quality (see `crate::quality`): the
//! evaluation timer and the `ConnectionQuality` events.

use std::time::{Duration, Instant};

use pulsewave_protocol::transport::TransportDirection;

use crate::event::Event;
use crate::quality::{ConnectionQuality, LOST_AFTER, QUALITY_INTERVAL, SHORT_AFTER};
use crate::transport::Timer;

use super::Room;

impl Room {
    /// The counters of each producer of `owner`.
    pub fn producer_stats(&self, owner: crate::Owner) -> Vec<crate::ProducerStats> {
        let mut out = Vec::new();
        for &tk in &self.owners.of(owner).transports {
            let Some(t) = self.transports.get(tk) else {
                continue;
            };
            if t.direction != TransportDirection::Send {
                continue;
            }
            for (_, pk) in &t.mids {
                if let Some(p) = self.producers.get(*pk) {
                    out.push(crate::ProducerStats {
                        producer_id: p.id.clone(),
                        kind: p.kind,
                        packets: p.packets,
                        bytes: p.bytes,
                        paused: p.paused,
                    });
                }
            }
        }
        out
    }

    /// Arms the evaluation timer if it is not.
    pub(super) fn arm_quality(&mut self) {
        if !self.quality_armed {
            self.quality_armed = true;
            self.out
                .timers
                .push(self.now + QUALITY_INTERVAL, Timer::Quality);
        }
    }

    /// Scores every participant (the worst of its links) and reports the
    /// changes. Costs one step per transport, producer and consumer, every
    /// `QUALITY_INTERVAL`.
    pub(super) fn quality_tick(&mut self, now: Instant) {
        self.quality_armed = false;
        let Room {
            owners,
            transports,
            producers,
            consumers,
            quality,
            events,
            ..
        } = self;
        let mut scores = Vec::new();
        for (owner, holdings) in owners.iter() {
            let mut q = ConnectionQuality::Excellent;
            let mut connected = false;
            for &tk in &holdings.transports {
                let Some(t) = transports.get_mut(tk) else {
                    continue;
                };
                if !t.connected {
                    continue;
                }
                connected = true;
                if t.last_received
                    .is_some_and(|r| now.saturating_duration_since(r) > LOST_AFTER)
                {
                    q = ConnectionQuality::Lost;
                }
                if let Some(loss) = t.remote_loss.take() {
                    q = q.min(ConnectionQuality::from_link(loss, Duration::ZERO));
                }
                if let Some(rtt) = t.rtt {
                    q = q.min(ConnectionQuality::from_rtt(rtt));
                }
                for (_, key) in &t.mids {
                    match t.direction {
                        TransportDirection::Send => {
                            if let Some(p) = producers.get_mut(*key) {
                                let link = p.take_link();
                                if let (false, Some(link)) = (p.paused, link) {
                                    q = q.min(ConnectionQuality::from_link(
                                        link.loss(),
                                        link.jitter,
                                    ));
                                }
                                if missing_layers(now, p) {
                                    q = q.min(ConnectionQuality::Good);
                                }
                            }
                        }
                        TransportDirection::Recv => {
                            let Some(c) = consumers.get(*key) else {
                                continue;
                            };
                            if c.congested {
                                q = q.min(ConnectionQuality::Poor);
                            } else if !c.paused
                                && producers.get(c.producer).is_some_and(|p| !p.paused)
                                && c.short_since.is_some_and(|s| {
                                    now.saturating_duration_since(s) >= SHORT_AFTER
                                })
                            {
                                q = q.min(ConnectionQuality::from_bitrate(c.allocated, c.expected));
                            }
                        }
                    }
                }
            }
            if connected {
                scores.push((owner, q));
            }
        }
        for (owner, q) in scores {
            if quality.insert(owner, q) != Some(q) {
                events.push_back(Event::ConnectionQuality { owner, quality: q });
            }
        }
        quality.retain(|o, _| !owners.of(*o).transports.is_empty());
        if !self.owners.is_empty() {
            self.arm_quality();
        }
    }
}

/// Whether `p`'s publisher has, for [`SHORT_AFTER`], not been sending a
/// layer it sent before and that some subscriber wants (dynacast): less
/// than expected. Updates the producer's record of since when.
fn missing_layers(now: Instant, p: &mut crate::media::Producer) -> bool {
    let wanted = match p.wanted_reported {
        Some(w) if !p.paused => w,
        _ => 0,
    };
    let missing = p.layers.iter().enumerate().any(|(i, l)| {
        i < 32 && wanted & (1 << i) != 0 && l.last_packet.is_some() && !l.is_live(now)
    });
    if !missing {
        p.missing_since = None;
        return false;
    }
    let since = *p.missing_since.get_or_insert(now);
    now.saturating_duration_since(since) >= SHORT_AFTER
}
