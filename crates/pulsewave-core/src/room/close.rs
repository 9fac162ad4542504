//! The close cascade: what closes when a transport, producer or data
//! producer closes.

use pulsewave_protocol::transport::TransportDirection;
use str0m::media::Mid;
use tracing::debug;

use crate::data::{DataConsumerKey, DataProducerKey};
use crate::event::StateChange;
use crate::event::{CloseReason, Event};
use crate::media::{ConsumerKey, ProducerKey};
use crate::transport::{DemuxChange, Outputs};
use crate::transport::{TransportKey, drain};

use super::Room;

impl Room {
    pub(super) fn close_transport_key(&mut self, key: TransportKey, reason: Option<CloseReason>) {
        let children = reason.map(|_| CloseReason::TransportClosed);
        let Some(t) = self.transports.get(key) else {
            return;
        };
        // The transport's own lists name its children: producers or
        // consumers by mid, data producers or consumers by SCTP stream.
        let direction = t.direction;
        let media: Vec<usize> = t.mids.iter().map(|(_, k)| *k).collect();
        let data: Vec<usize> = t.sctp_streams.iter().map(|s| s.key).collect();
        for k in media {
            match direction {
                TransportDirection::Send => self.close_producer_key(k, children),
                TransportDirection::Recv => self.close_consumer_key(k, children),
            }
        }
        for k in data {
            match direction {
                TransportDirection::Send => self.close_data_producer_key(k, children),
                TransportDirection::Recv => self.close_data_consumer_key(k, children),
            }
        }
        let Some(mut t) = self.transports.remove(key) else {
            return;
        };
        self.out
            .demux
            .push_back(DemuxChange::ForgetUfrag(t.local_ufrag.clone()));
        for (proto, addr) in &t.remote_addrs {
            self.out.demux.push_back(DemuxChange::Unbind(*proto, *addr));
        }
        self.owners
            .remove(t.owner, |h| h.transports.retain(|k| *k != key));
        // Say goodbye (DTLS close_notify) if the stack has anything to send.
        t.rtc.disconnect();
        let mut goodbye = Outputs::default();
        drain(key, &mut t, &mut goodbye, self.config.ice_timeout);
        self.out.transmits.append(&mut goodbye.transmits);
        debug!(transport = %t.id, ?reason, "transport closed");
        if let Some(reason) = reason {
            self.events.push_back(Event::TransportClosed {
                transport_id: t.id,
                owner: t.owner,
                reason,
            });
        }
        // Events queued for this key are stale now.
        self.out.rtc_events.retain(|(k, _)| *k != key);
    }

    pub(super) fn close_producer_key(&mut self, key: ProducerKey, reason: Option<CloseReason>) {
        let Some(p) = self.producers.remove(key) else {
            return;
        };
        self.owners.remove(p.owner, |h| h.producers -= 1);
        // The producer's end is reported before its consequences, so a
        // subscriber hears "unpublished" before "unsubscribed".
        self.events
            .push_back(Event::State(StateChange::ProducerClosed {
                producer_id: p.id.clone(),
                owner: p.owner,
                app_data: p.app_data.clone(),
            }));
        for c in &p.consumers {
            self.close_consumer_key(*c, Some(CloseReason::ProducerClosed));
        }
        if let Some(t) = self.transports.get_mut(p.transport) {
            t.rx_ssrcs.retain(|_, v| v.producer != key);
            t.mids.retain(|(m, k)| !(*k == key && *m == p.mid));
            t.rtc.direct_api().remove_media(Mid::from(p.mid.as_str()));
            drain(p.transport, t, &mut self.out, self.config.ice_timeout);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::ProducerClosed {
                producer_id: p.id,
                owner: p.owner,
                reason,
            });
        }
    }

    pub(super) fn close_consumer_key(&mut self, key: ConsumerKey, reason: Option<CloseReason>) {
        let Some(c) = self.consumers.remove(key) else {
            return;
        };
        self.owners.remove(c.owner, |h| h.consumers -= 1);
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(u) = self.transports.get_mut(c.transport) {
            u.mids.retain(|(m, k)| !(*k == key && *m == c.mid));
            u.rtc.direct_api().remove_media(Mid::from(c.mid.as_str()));
            drain(c.transport, u, &mut self.out, self.config.ice_timeout);
            // Its share goes to the transport's other consumers.
            self.out.want_allocation(c.transport, u);
        }
        let now = self.now;
        self.dynacast(now, c.producer);
        if let Some(reason) = reason {
            self.events.push_back(Event::ConsumerClosed {
                consumer_id: c.id,
                producer_id: c.producer_id,
                owner: c.owner,
                reason,
            });
        }
    }

    pub(super) fn close_data_producer_key(
        &mut self,
        key: DataProducerKey,
        reason: Option<CloseReason>,
    ) {
        let Some(d) = self.data_producers.remove(key) else {
            return;
        };
        self.owners.remove(d.owner, |h| h.data_producers -= 1);
        self.events
            .push_back(Event::State(StateChange::DataProducerClosed {
                data_producer_id: d.id.clone(),
                owner: d.owner,
                app_data: d.app_data.clone(),
            }));
        for c in &d.consumers {
            self.close_data_consumer_key(*c, Some(CloseReason::DataProducerClosed));
        }
        if let Some(t) = self.transports.get_mut(d.transport) {
            t.sctp_streams.retain(|s| s.stream_id != d.params.stream_id);
            t.rtc.direct_api().close_data_channel(d.channel);
            drain(d.transport, t, &mut self.out, self.config.ice_timeout);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::DataProducerClosed {
                data_producer_id: d.id,
                owner: d.owner,
                reason,
            });
        }
    }

    pub(super) fn close_data_consumer_key(
        &mut self,
        key: DataConsumerKey,
        reason: Option<CloseReason>,
    ) {
        let Some(d) = self.data_consumers.remove(key) else {
            return;
        };
        self.owners.remove(d.owner, |h| h.data_consumers -= 1);
        if let Some(p) = self.data_producers.get_mut(d.data_producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(u) = self.transports.get_mut(d.transport) {
            u.sctp_streams.retain(|s| s.stream_id != d.stream_id);
            u.rtc.direct_api().close_data_channel(d.channel);
            drain(d.transport, u, &mut self.out, self.config.ice_timeout);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::DataConsumerClosed {
                data_consumer_id: d.id,
                owner: d.owner,
                reason,
            });
        }
    }
}
