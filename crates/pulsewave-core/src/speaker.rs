//! Active speakers, from the audio-level header extension (RFC 6464) of
//! every audio producer, as LiveKit's `audiolevel` and mediasoup's
//! `AudioLevelObserver` do.
//!
//! - On the forwarding path each audio packet's level is added to its
//!   producer's [`SpeechLevel`]: two additions and a compare, no
//!   allocation, no lock.
//! - Every [`SPEAKER_INTERVAL`] (400 ms, LiveKit's `update_interval`) the
//!   room looks at each audio producer once: it spoke in that interval when
//!   at least [`MIN_ACTIVE_PERCENT`] of its packets were at
//!   [`ACTIVE_LEVEL`] (-35 dBov) or louder; its level is the mean loudness
//!   (linear, 0 to 1) of those packets, averaged with the previous
//!   interval's (LiveKit's `smooth_intervals` 2), rounded up to eighths.
//!   A paused (muted) producer, or one sending silence or nothing (DTX),
//!   has level 0 and is no speaker.
//! - When the list of speakers (loudest first) or a level changed, the room
//!   emits [`Event::ActiveSpeakers`](crate::Event::ActiveSpeakers): at most
//!   once per interval, only on change, an empty list when the last one
//!   stopped.

use std::time::Duration;

use pulsewave_protocol::ProducerId;

use crate::owners::Owner;

/// How often speakers are evaluated (and at most how often they are
/// reported).
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(400);
/// A packet at this level (in -dBov) or louder counts as speech.
pub const ACTIVE_LEVEL: u8 = 35;
/// The share of an interval's packets that must be speech.
pub const MIN_ACTIVE_PERCENT: u32 = 40;

/// One speaker in [`Event::ActiveSpeakers`](crate::Event::ActiveSpeakers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSpeaker {
    /// The audio producer.
    pub producer_id: ProducerId,
    /// Its publisher.
    pub owner: Owner,
    /// Loudness in thousandths (125 to 1000, in eighths: 125, 250, ...).
    pub level: u16,
}

/// What one audio producer sent since the last evaluation.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpeechLevel {
    packets: u32,
    active: u32,
    /// Sum of the linear loudness of the speech packets.
    loudness: f32,
    /// The previous interval's level, for smoothing.
    previous: f32,
}

impl SpeechLevel {
    /// One packet's audio level (RFC 6464 as str0m reads it: 0 is the
    /// loudest, -127 silence). The forwarding path's only cost.
    #[inline]
    pub(crate) fn observe(&mut self, level: i8) {
        let dbov = level.unsigned_abs().min(127);
        self.packets = self.packets.saturating_add(1);
        if dbov <= ACTIVE_LEVEL {
            self.active = self.active.saturating_add(1);
            self.loudness += LOUDNESS[usize::from(dbov)];
        }
    }

    /// Ends an interval: the level in thousandths (0: not speaking), and
    /// starts the next.
    pub(crate) fn tick(&mut self, paused: bool) -> u16 {
        let speaking = !paused
            && self.packets > 0
            && self.active.saturating_mul(100) >= self.packets.saturating_mul(MIN_ACTIVE_PERCENT);
        let now = if speaking {
            self.loudness / self.active as f32
        } else {
            0.0
        };
        let smoothed = if paused {
            0.0
        } else {
            (now + self.previous) / 2.0
        };
        *self = SpeechLevel {
            previous: now,
            ..SpeechLevel::default()
        };
        if smoothed <= 0.0 {
            return 0;
        }
        // Rounded up to eighths, as LiveKit quantizes.
        let eighths = (smoothed * 8.0).ceil().clamp(1.0, 8.0) as u16;
        eighths * 125
    }
}

/// 10^(-dBov/20) for 0 to 35 dBov: the linear loudness of a speech packet.
const LOUDNESS: [f32; ACTIVE_LEVEL as usize + 1] = [
    1.0, 0.891, 0.794, 0.708, 0.631, 0.562, 0.501, 0.447, 0.398, 0.355, 0.316, 0.282, 0.251, 0.224,
    0.200, 0.178, 0.158, 0.141, 0.126, 0.112, 0.100, 0.089, 0.079, 0.071, 0.063, 0.056, 0.050,
    0.045, 0.040, 0.035, 0.032, 0.028, 0.025, 0.022, 0.020, 0.018,
];

/// The room's speaker state.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    /// Audio producers (keys; a key whose producer is gone or not audio is
    /// dropped at the next evaluation).
    pub(crate) audio: Vec<usize>,
    /// Whether the evaluation timer is armed.
    pub(crate) armed: bool,
    /// The last list reported: producer keys and levels, loudest first.
    pub(crate) last: Vec<(usize, u16)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_speech_counts_silence_and_mute_do_not() {
        let mut s = SpeechLevel::default();
        for _ in 0..20 {
            s.observe(-10);
        }
        // (0.316 + 0) / 2 rounded up to eighths: 2/8.
        assert_eq!(s.tick(false), 250);
        for _ in 0..20 {
            s.observe(-10);
        }
        assert_eq!(s.tick(false), 375);
        // Silence (DTX sends -127): two quiet intervals and it is gone.
        s.observe(-127);
        assert!(s.tick(false) > 0);
        s.observe(-127);
        assert_eq!(s.tick(false), 0);
        // Muted: 0 at once.
        for _ in 0..20 {
            s.observe(0);
        }
        assert_eq!(s.tick(true), 0);
        // Mostly quiet packets: not speech.
        for i in 0..20 {
            s.observe(if i < 5 { -5 } else { -90 });
        }
        assert_eq!(s.tick(false), 0);
    }
}
