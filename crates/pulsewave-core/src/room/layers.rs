//! Layer and keyframe policy: which simulcast layer each consumer gets, and
//! when publishers are asked for keyframes.

use crate::owners::Owner;
use std::time::Instant;

use pulsewave_protocol::{ConsumerId, ProducerId};
use str0m::media::KeyframeRequestKind;
use str0m::rtp::Ssrc;

use crate::error::Error;
use crate::media::{DEFAULT_PRIORITY, ProducerKey, View};
use crate::transport::{Timer, TransportKey, drain};

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

    /// Sets the highest layers `owner`'s consumer `id` may get (mediasoup's
    /// `consumer.setPreferredLayers`): spatial layer (`None`: the best the
    /// publisher sends, the default) and temporal layer (`None`: every
    /// one). Layers past the producer's last one mean its last. The
    /// allocator applies it at once (a new spatial layer at its next
    /// keyframe, which the publisher is asked for).
    pub fn set_consumer_preferred_layers(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        c.preferred_layer = spatial_layer.map(usize::from);
        c.preferred_temporal = temporal_layer;
        let (transport, producer) = (c.transport, c.producer);
        self.want_allocation(transport);
        self.dynacast(now, producer);
        self.process(now);
        Ok(())
    }

    /// Sets the share of bandwidth `owner`'s consumer `id` gets when its
    /// transport's estimate is short (mediasoup's `consumer.setPriority`):
    /// 1 to 255, higher first (0 counts as 1); `None` restores its
    /// producer's. Returns the priority now in force.
    pub fn set_consumer_priority(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
        priority: Option<u8>,
    ) -> Result<u8, Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        c.priority = priority.map(|p| p.max(1));
        let (transport, producer) = (c.transport, c.producer);
        let effective = c
            .priority
            .or_else(|| self.producers.get(producer).map(|p| p.effective_priority()))
            .unwrap_or(DEFAULT_PRIORITY);
        self.want_allocation(transport);
        self.process(now);
        Ok(effective)
    }

    /// Sets the priority of every consumer of `owner`'s producer `id` that
    /// has none of its own (1 to 255; a screen share above a camera, an
    /// active speaker above the rest). New consumers start with it.
    pub fn set_producer_priority(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ProducerId,
        priority: u8,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_producer(owner, id)?;
        let p = &mut self.producers[key];
        if p.priority == priority.max(1) {
            return Ok(());
        }
        p.priority = priority.max(1);
        let transports: Vec<TransportKey> = p
            .consumers
            .iter()
            .filter_map(|c| self.consumers.get(*c).map(|c| c.transport))
            .collect();
        for t in transports {
            self.want_allocation(t);
        }
        self.process(now);
        Ok(())
    }

    /// Tells the room how `owner` shows its consumer `id` (LiveKit's
    /// adaptive stream): the rendered size caps the spatial layer (the
    /// lowest at least 90% as tall), and a disabled view gets no video.
    /// Dynacast follows.
    pub fn set_consumer_view(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
        view: View,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        if c.view == view {
            return Ok(());
        }
        c.view = view;
        let (transport, producer) = (c.transport, c.producer);
        self.want_allocation(transport);
        self.dynacast(now, producer);
        self.process(now);
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
        let mut transports = Vec::new();
        for &c in &p.consumers {
            if let Some(c) = self.consumers.get_mut(c) {
                c.needs_resync = true;
                c.layer = None;
                transports.push(c.transport);
            }
        }
        for t in transports {
            self.want_allocation(t);
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
        let (p, transport, target) = (c.producer, c.transport, c.target);
        self.want_keyframe(now, p, target.map(|(s, _)| usize::from(s)));
        self.want_allocation(transport);
        self.dynacast(now, p);
        self.process(now);
        Ok(())
    }
}
