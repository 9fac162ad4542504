//! Layer and keyframe policy: which simulcast layer each consumer gets, and
//! when publishers are asked for keyframes.

use crate::owners::Owner;
use std::time::Instant;

use pulsewave_protocol::{ConsumerId, ProducerId};
use str0m::media::KeyframeRequestKind;
use str0m::rtp::Ssrc;

use crate::error::Error;
use crate::media::ProducerKey;
use crate::transport::{Timer, drain};

use super::Room;

impl Room {
    /// Asks the producer for a keyframe on `layer` (the best layer when
    /// `None`) now, or as soon as the throttle allows.
    pub(super) fn want_keyframe(&mut self, now: Instant, pkey: ProducerKey, layer: Option<usize>) {
        if let Some(p) = self.producers.get_mut(pkey) {
            let layer = layer.unwrap_or_else(|| p.best_layer(now));
            p.want_keyframe_on(layer);
        }
        self.request_keyframe(now, pkey);
    }

    pub(super) fn request_keyframe(&mut self, now: Instant, pkey: ProducerKey) {
        let interval = self.config.keyframe_request_interval;
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        if p.video.is_none() {
            p.keyframe_layers = 0;
            return;
        }
        if p.keyframe_layers == 0 {
            return;
        }
        if let Some(last) = p.last_keyframe_request
            && now < last + interval
        {
            // Throttled: a timer sends it when the interval has passed.
            let at = last + interval;
            if p.keyframe_timer.is_none_or(|a| at < a) {
                p.keyframe_timer = Some(at);
                self.out.timers.push(at, Timer::Keyframe(pkey));
            }
            return;
        }
        let wanted = std::mem::take(&mut p.keyframe_layers);
        p.last_keyframe_request = Some(now);
        let tkey = p.transport;
        let Some(t) = self.transports.get_mut(tkey) else {
            return;
        };
        if !t.connected {
            return;
        }
        for (i, layer) in p.layers.iter().enumerate() {
            let Some(ssrc) = layer.ssrc else { continue };
            if wanted & (1 << i.min(31)) == 0 {
                continue;
            }
            if let Some(rx) = t.rtc.direct_api().stream_rx(&Ssrc::from(ssrc)) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                self.stats.keyframe_requests += 1;
            }
        }
        drain(tkey, t, &mut self.out, self.config.ice_timeout);
    }

    /// Sets the highest spatial layer `owner`'s consumer `id` forwards
    /// (mediasoup's `consumer.setPreferredLayers`; `None`: the best the
    /// publisher sends, the default). The consumer switches at the next
    /// keyframe of its new layer, which the publisher is asked for. Layers
    /// past the producer's last one mean its last; a producer without
    /// simulcast has one layer, and nothing changes.
    pub fn set_consumer_preferred_layer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
        spatial_layer: Option<u8>,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        let preferred = spatial_layer.map(usize::from);
        if c.preferred_layer == preferred {
            return Ok(());
        }
        c.preferred_layer = preferred;
        let pkey = c.producer;
        let current = c.layer;
        let Some(p) = self.producers.get(pkey) else {
            return Ok(());
        };
        let target = p.target_layer(now, preferred);
        if !self.consumers[key].paused && current != Some(target) {
            self.want_keyframe(now, pkey, Some(target));
            self.process(now);
        }
        Ok(())
    }

    /// Unmutes a producer and asks it for a keyframe.
    pub fn resume_producer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ProducerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_producer(owner, id)?;
        let p = &mut self.producers[key];
        if !p.paused {
            self.report_paused(key);
            return Ok(());
        }
        p.paused = false;
        for &c in &p.consumers {
            if let Some(c) = self.consumers.get_mut(c) {
                c.needs_resync = true;
                c.layer = None;
            }
        }
        self.report_paused(key);
        self.want_keyframe(now, key, None);
        self.process(now);
        Ok(())
    }

    /// Starts media on a consumer and asks the publisher for a keyframe.
    pub fn resume_consumer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        if !c.paused {
            return Ok(());
        }
        c.paused = false;
        c.needs_resync = true;
        c.layer = None;
        let p = c.producer;
        self.want_keyframe(now, p, None);
        self.process(now);
        Ok(())
    }
}
