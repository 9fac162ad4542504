//! The room's side of active speaker detection (see `crate::speaker`): the
//! evaluation timer and the `ActiveSpeakers` event.

use std::time::Instant;

use pulsewave_protocol::MediaKind;

use crate::event::Event;
use crate::owners::Owner;
use crate::speaker::{ActiveSpeaker, SPEAKER_INTERVAL};
use crate::transport::Timer;
use crate::transport::TransportKey;

use super::Room;

impl Room {
    /// Starts watching a new audio producer's levels.
    pub(super) fn watch_speaker(&mut self, pkey: usize) {
        self.speakers.audio.push(pkey);
        self.arm_speakers();
    }

    fn arm_speakers(&mut self) {
        if !self.speakers.armed {
            self.speakers.armed = true;
            self.out
                .timers
                .push(self.now + SPEAKER_INTERVAL, Timer::Speakers);
        }
    }

    /// Raises the video of the publishers now speaking to
    /// [`SPEAKER_PRIORITY`](crate::SPEAKER_PRIORITY) and lowers the video
    /// of those who stopped, reallocating the transports that consume it.
    /// Runs only when the speakers change (at most every
    /// `SPEAKER_INTERVAL`), one step per producer.
    fn rank_speakers_video(&mut self) {
        let speaking: Vec<Owner> = self
            .speakers
            .last
            .iter()
            .filter_map(|&(k, _)| self.producers.get(k).map(|p| p.owner))
            .collect();
        let mut transports: Vec<TransportKey> = Vec::new();
        for (_, p) in self.producers.iter_mut() {
            if p.kind != MediaKind::Video {
                continue;
            }
            let now_speaking = speaking.contains(&p.owner);
            if p.speaking == now_speaking {
                continue;
            }
            p.speaking = now_speaking;
            for &c in &p.consumers {
                if let Some(c) = self.consumers.get(c)
                    && !transports.contains(&c.transport)
                {
                    transports.push(c.transport);
                }
            }
        }
        for t in transports {
            self.want_allocation(t);
        }
    }

    /// Evaluates every audio producer once and reports the speakers if
    /// they changed. Costs one step per audio producer, every
    /// `SPEAKER_INTERVAL`.
    pub(super) fn speakers_tick(&mut self, now: Instant) {
        self.speakers.armed = false;
        let producers = &mut self.producers;
        self.speakers
            .audio
            .retain(|&k| producers.get(k).is_some_and(|p| p.kind == MediaKind::Audio));
        let mut current: Vec<(usize, u16)> = Vec::new();
        for &k in &self.speakers.audio {
            if let Some(p) = producers.get_mut(k) {
                let level = p.speech.tick(p.paused);
                if level > 0 {
                    current.push((k, level));
                }
            }
        }
        // Loudest first; equal levels in a stable order.
        current.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if current != self.speakers.last {
            let speakers = current
                .iter()
                .filter_map(|&(k, level)| {
                    producers.get(k).map(|p| ActiveSpeaker {
                        producer_id: p.id.clone(),
                        owner: p.owner,
                        level,
                    })
                })
                .collect();
            self.events.push_back(Event::ActiveSpeakers { speakers });
            self.speakers.last = current;
            self.rank_speakers_video();
        }
        if !self.speakers.audio.is_empty() || !self.speakers.last.is_empty() {
            self.speakers.armed = true;
            self.out
                .timers
                .push(now + SPEAKER_INTERVAL, Timer::Speakers);
        }
    }
}
