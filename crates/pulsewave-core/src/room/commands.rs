//! Commands from signaling: transports, producers, consumers, data
//! producers and data consumers.

use crate::owners::Owner;
use std::time::Instant;

use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{
    DtlsParameters, IceParameters, SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::media::{Mid, Rid};
use str0m::rtp::Ssrc;
use tracing::debug;

use crate::bucket::TokenBucket;
use crate::data::{DataConsumer, DataProducer, is_reliable};
use crate::error::Error;
use crate::event::Event;
use crate::event::{AppData, StateChange};
use crate::media::{
    Consumer, ConsumerKey, Layer, Producer, ProducerKey, ProducerPlan, Rewriter, View,
};
use crate::ortc;
use crate::transport::DemuxChange;
use crate::transport::{RxSsrc, SctpStream, Transport, TransportKey, TransportSpec, drain};
use crate::vp8::Vp8Selector;

use rand::Rng;

use crate::registry::Lookup;

use super::{Consumed, DataConsumed, Produced, Room, to_rtc_kind};

impl Room {
    pub(super) fn owned_transport(
        &self,
        owner: Owner,
        id: Option<&TransportId>,
        direction: TransportDirection,
    ) -> Result<TransportKey, Error> {
        let name = |d| match d {
            TransportDirection::Send => "send",
            TransportDirection::Recv => "recv",
        };
        let key = match id {
            // Another participant's transport is "not found": nothing leaks.
            Some(id) => self
                .transports
                .owned(id, owner)
                .map_err(|_| Error::TransportNotFound(id.to_string()))?,
            None => {
                let mut matching = self
                    .owners
                    .of(owner)
                    .transports
                    .iter()
                    .copied()
                    .filter(|k| {
                        self.transports
                            .get(*k)
                            .is_some_and(|t| t.direction == direction)
                    });
                let first = matching.next();
                if matching.next().is_some() {
                    return Err(Error::AmbiguousTransport(name(direction)));
                }
                first.ok_or_else(|| {
                    Error::TransportNotFound(format!("({} transport)", name(direction)))
                })?
            }
        };
        let t = &self.transports[key];
        if t.direction != direction {
            return Err(Error::WrongTransportDirection {
                id: t.id.to_string(),
                actual: t.direction_name(),
                expected: name(direction),
            });
        }
        Ok(key)
    }

    /// Creates a WebRTC transport for `owner` and returns mediasoup-client's
    /// transport options. A receive transport sends with the router's
    /// payload types and extension ids; a send transport learns the
    /// sender's from each [`Room::produce`].
    pub fn create_transport(
        &mut self,
        now: Instant,
        owner: Owner,
        direction: TransportDirection,
    ) -> Result<TransportOptions, Error> {
        let now = self.advance(now);
        if self.owners.of(owner).transports.len() >= self.config.max_transports_per_participant {
            return Err(Error::LimitReached("transports per participant"));
        }
        let spec = TransportSpec {
            owner,
            direction,
            router_caps: &self.config.rtp_capabilities,
            local_addr: self.config.local_addr,
            tcp_addr: self.config.tcp_addr,
            local_addr6: self.config.local_addr6,
            tcp_addr6: self.config.tcp_addr6,
            sctp_max_message_size: self.config.sctp_max_message_size,
            rng: &mut self.rng,
            max_incoming_bitrate: self.config.max_incoming_bitrate,
            max_outgoing_bitrate: self.config.max_outgoing_bitrate,
            initial_bitrate: self.config.initial_available_outgoing_bitrate,
            bandwidth_estimation: self.config.bandwidth_estimation,
        };
        let (mut transport, options) = Transport::new(now, spec)?;
        let key = self.transports.next_key();
        self.out
            .demux
            .push_back(DemuxChange::Ufrag(transport.local_ufrag.clone(), key));
        self.owners.add(owner, |h| h.transports.push(key));
        self.arm_quality();
        drain(key, &mut transport, &mut self.out, self.config.ice_timeout);
        self.transports.insert(transport);
        self.process(now);
        Ok(options)
    }

    /// Gives a transport the client's DTLS parameters and starts DTLS.
    pub fn connect_transport(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &TransportId,
        dtls: &DtlsParameters,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self
            .transports
            .owned(id, owner)
            .map_err(|_| Error::TransportNotFound(id.to_string()))?;
        let t = &mut self.transports[key];
        t.connect(now, dtls)?;
        drain(key, t, &mut self.out, self.config.ice_timeout);
        self.process(now);
        Ok(())
    }

    /// Restarts ICE on one of `owner`'s transports (mediasoup's
    /// `transport.restartIce()`): new local ICE credentials, returned for
    /// the client's `transport.restartIce({iceParameters})`. The client's
    /// new ufrag is learned from its first binding request carrying the new
    /// credentials, and the pair it nominates then carries the media. The
    /// candidates, DTLS, SRTP and SCTP stay, and so do the transport's
    /// producers, consumers and ids. Requests to the old ufrag are refused
    /// from now on.
    pub fn restart_ice(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &TransportId,
    ) -> Result<IceParameters, Error> {
        let now = self.advance(now);
        let key = self
            .transports
            .owned(id, owner)
            .map_err(|_| Error::TransportNotFound(id.to_string()))?;
        let t = &mut self.transports[key];
        let params = t.restart_ice(key, &mut self.rng, &mut self.out);
        // A restart follows a network change or a cut: the estimate of the
        // old path says nothing of the new one, and what was measured
        // through the cut is far too low (str0m's estimator may not climb
        // back from it, leaving the subscriber on a paused or lowest
        // layer). Start again from the initial estimate, as a new
        // transport does.
        // It starts again a second time when the new path proves itself
        // (the first binding request with the new credentials, room/io.rs):
        // what was sent to the old address until then is lost, and its
        // feedback must not weigh on the new path's estimate.
        if t.direction == TransportDirection::Recv && self.config.bandwidth_estimation {
            t.restart_estimate(
                key,
                self.config.initial_available_outgoing_bitrate,
                &mut self.out,
            );
            t.estimate_restart_pending = true;
            // And once more when media leaves for the new address (the
            // browser may keep the old pair selected for a while).
            t.estimate_restart_on_move = Some(self.config.initial_available_outgoing_bitrate);
        }
        drain(key, t, &mut self.out, self.config.ice_timeout);
        self.process(now);
        Ok(params)
    }

    /// Closes one of `owner`'s transports with everything on it. Events
    /// report what closes as a consequence (producers, consumers, and other
    /// participants' consumers of those producers), not the transport.
    pub fn close_transport(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &TransportId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self
            .transports
            .owned(id, owner)
            .map_err(|_| Error::TransportNotFound(id.to_string()))?;
        self.close_transport_key(key, None);
        self.process(now);
        Ok(())
    }

    /// Closes every transport of `owner`. Events report only what other
    /// participants lose (their consumers and data consumers).
    pub fn close_participant(&mut self, now: Instant, owner: Owner) {
        let now = self.advance(now);
        let keys = self.owners.of(owner).transports.clone();
        for key in keys {
            self.close_transport_key(key, None);
        }
        // Drop events about the participant's own objects.
        self.events.retain(|e| match e {
            Event::TransportConnected { owner: o, .. }
            | Event::TransportClosed { owner: o, .. }
            | Event::ProducerClosed { owner: o, .. }
            | Event::ConsumerClosed { owner: o, .. }
            | Event::DataProducerClosed { owner: o, .. }
            | Event::DataConsumerClosed { owner: o, .. }
            | Event::ConsumerLayersChanged { owner: o, .. }
            | Event::ConsumerCongested { owner: o, .. }
            | Event::ProducerLayersWanted { owner: o, .. } => *o != owner,
            Event::ConnectionQuality { owner: o, .. } => *o != owner,
            Event::RoomFailed | Event::State(_) | Event::ActiveSpeakers { .. } => true,
        });
        self.process(now);
    }

    /// Publishes a track on a send transport.
    ///
    /// `rtp_parameters` are mediasoup-client's `produce` parameters, with the
    /// sender's payload types. They are validated against the router's
    /// capabilities and the transport's payload-type table.
    // The arguments of mediasoup's `produce` / `produceData` plus time and
    // owner; an options struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn produce(
        &mut self,
        now: Instant,
        owner: Owner,
        transport_id: Option<&TransportId>,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool,
        app_data: AppData,
    ) -> Result<Produced, Error> {
        let now = self.advance(now);
        let tkey = self.owned_transport(owner, transport_id, TransportDirection::Send)?;
        let plan = self.plan_producer(owner, tkey, kind, rtp_parameters)?;
        let id = ProducerId::generate_from(&mut self.rng);
        let simulcast = plan.layers.len() > 1;
        let mime_type = plan.mime_type.clone();
        let (mid, declared) = (plan.mid.clone(), plan.declared.clone());
        let rids: Vec<String> = plan.layers.iter().filter_map(|l| l.rid.clone()).collect();
        let known: Vec<(u32, usize)> = plan
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.ssrc.map(|s| (s, i)))
            .collect();
        let pkey = self.producers.insert(Producer::new(
            id.clone(),
            owner,
            tkey,
            kind,
            plan,
            paused,
            app_data.clone(),
        ));
        self.owners.add(owner, |h| h.producers += 1);
        if kind == MediaKind::Audio {
            self.watch_speaker(pkey);
        }
        self.bind_producer_streams(tkey, pkey, kind, mid, &rids, &declared, known);
        // Dynacast: nobody watches yet; unless someone subscribes soon, the
        // publisher is told so.
        self.dynacast(now, pkey);
        self.process(now);
        debug!(producer = %id, %kind, mime = %mime_type, "producer created");
        self.events
            .push_back(Event::State(StateChange::ProducerCreated {
                producer_id: id.clone(),
                owner,
                kind,
                mime_type: mime_type.clone(),
                simulcast,
                paused,
                app_data,
            }));
        Ok(Produced {
            producer_id: id,
            kind,
            mime_type,
            simulcast,
        })
    }

    /// Validates `produce` on the send transport `tkey`: limits, the
    /// parameters against the router's capabilities, ssrcs and `mid` free
    /// on the transport. Its last step teaches the transport the sender's
    /// payload types and extension ids: nothing changes if an error is
    /// returned.
    fn plan_producer(
        &mut self,
        owner: Owner,
        tkey: TransportKey,
        kind: MediaKind,
        mut rtp_parameters: RtpParameters,
    ) -> Result<ProducerPlan, Error> {
        if self.owners.of(owner).producers >= self.config.max_producers_per_participant {
            return Err(Error::LimitReached("producers per participant"));
        }
        // What the client declares is capped before any work scales with
        // it (the validation below is linear in these lists).
        if rtp_parameters.encodings.len() > self.config.max_encodings_per_producer {
            return Err(Error::LimitReached("encodings per producer"));
        }
        let t = &self.transports[tkey];
        if !t.dtls_started {
            return Err(Error::TransportNotConnected(t.id.to_string()));
        }
        let mapping = ortc::get_producer_rtp_parameters_mapping(
            &mut rtp_parameters,
            &self.config.rtp_capabilities,
            &mut || ortc::random_ssrc_from(&mut self.rng),
        )?;
        let ortc::ProducerShape {
            mime_type,
            layers,
            declared,
        } = ortc::validate_producer(kind, &rtp_parameters)?;
        let clock_rate = rtp_parameters
            .codecs
            .first()
            .map_or(90_000, |c| c.clock_rate);
        let layers: Vec<Layer> = layers
            .into_iter()
            .map(|(rid, ssrc)| Layer::new(rid, ssrc, clock_rate))
            .collect();
        let new_ssrcs = declared.iter().map(|(_, r)| 1 + usize::from(r.is_some())).sum::<usize>()
            // Each rid layer will bind one ssrc (and maybe its RTX) later.
            + layers.iter().filter(|l| l.ssrc.is_none()).count();
        if t.rx_ssrcs.len() + new_ssrcs > self.config.max_ssrcs_per_transport {
            return Err(Error::LimitReached("ssrcs per transport"));
        }
        for s in declared
            .iter()
            .flat_map(|(m, r)| std::iter::once(*m).chain(*r))
        {
            if t.rx_ssrcs.contains_key(&s) {
                return Err(Error::DuplicateSsrc(s));
            }
        }
        let mid = match rtp_parameters.mid.clone() {
            Some(mid) => {
                if t.mids.iter().any(|(m, _)| *m == mid) {
                    return Err(Error::InvalidRtpParameters(format!(
                        "mid `{mid}` is already in use on this transport"
                    )));
                }
                mid
            }
            None => self.transports[tkey].allocate_mid(),
        };
        let consumable = ortc::get_consumable_rtp_parameters(
            kind,
            &rtp_parameters,
            &self.config.rtp_capabilities,
            &mapping,
        )?;
        // The sender's payload types and extension ids become the
        // transport's (the last check: nothing changes if it fails).
        self.transports[tkey].learn_sender_parameters(&rtp_parameters)?;
        Ok(ProducerPlan {
            mid,
            mime_type,
            consumable,
            pt_map: mapping
                .codecs
                .iter()
                .map(|m| (m.payload_type, m.mapped_payload_type))
                .collect(),
            layers,
            declared,
        })
    }

    // Each argument is one fact about the new producer's streams.
    #[allow(clippy::too_many_arguments)]
    /// Tells the transport's `Rtc` about a new producer's media (its `mid`,
    /// its rids, its declared ssrcs) and routes its ssrcs to it.
    fn bind_producer_streams(
        &mut self,
        tkey: TransportKey,
        pkey: ProducerKey,
        kind: MediaKind,
        mid: String,
        rids: &[String],
        declared: &[(u32, Option<u32>)],
        known: Vec<(u32, usize)>,
    ) {
        let t = &mut self.transports[tkey];
        let rtc_mid = Mid::from(mid.as_str());
        {
            let mut api = t.rtc.direct_api();
            let media = api.declare_media(rtc_mid, to_rtc_kind(kind));
            for rid in rids {
                media.expect_rid_rx(Rid::from(rid.as_str()));
            }
            for (ssrc, rtx) in declared {
                api.expect_stream_rx(Ssrc::from(*ssrc), rtx.map(Ssrc::from), rtc_mid, None);
            }
        }
        t.mids.push((mid, pkey));
        for (s, layer) in known {
            t.rx_ssrcs.insert(
                s,
                RxSsrc {
                    producer: pkey,
                    layer: Some(layer),
                },
            );
        }
        for rtx in declared.iter().filter_map(|(_, r)| *r) {
            t.rx_ssrcs.insert(
                rtx,
                RxSsrc {
                    producer: pkey,
                    layer: None,
                },
            );
        }
        drain(tkey, t, &mut self.out, self.config.ice_timeout);
    }

    pub(super) fn owned_producer(
        &self,
        owner: Owner,
        id: &ProducerId,
    ) -> Result<ProducerKey, Error> {
        self.producers.owned(id, owner).map_err(|e| match e {
            Lookup::NotOwner => Error::NotOwner(format!("producer `{id}`")),
            Lookup::NotFound => Error::ProducerNotFound(id.to_string()),
        })
    }

    /// Closes one of `owner`'s producers; its consumers close with
    /// [`Event::ConsumerClosed`].
    pub fn close_producer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ProducerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_producer(owner, id)?;
        self.close_producer_key(key, None);
        self.process(now);
        Ok(())
    }

    /// Mutes a producer: nothing is forwarded until it is resumed.
    pub fn pause_producer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ProducerId,
    ) -> Result<(), Error> {
        self.advance(now);
        let key = self.owned_producer(owner, id)?;
        self.producers[key].paused = true;
        self.report_paused(key);
        Ok(())
    }

    /// Subscribes `owner` to a producer on one of its receive transports.
    /// `rtp_capabilities` are the subscriber's receiving capabilities. The
    /// consumer starts paused.
    pub fn consume(
        &mut self,
        now: Instant,
        owner: Owner,
        transport_id: Option<&TransportId>,
        producer_id: &ProducerId,
        rtp_capabilities: &RtpCapabilities,
    ) -> Result<Consumed, Error> {
        let now = self.advance(now);
        let ukey = self.owned_transport(owner, transport_id, TransportDirection::Recv)?;
        let pkey = self
            .producers
            .key(producer_id)
            .ok_or_else(|| Error::ProducerNotFound(producer_id.to_string()))?;
        if self.owners.of(owner).consumers >= self.config.max_consumers_per_participant {
            return Err(Error::LimitReached("consumers per participant"));
        }
        if self.transports[ukey].mids.len() >= self.config.max_consumers_per_transport {
            return Err(Error::LimitReached("consumers per transport"));
        }
        let p = &self.producers[pkey];
        if p.owner == owner {
            return Err(Error::CannotConsume(
                "a participant cannot subscribe to its own producer".into(),
            ));
        }
        // Consumers of this producer held by this participant, on any of
        // its transports (a handful, each with a bounded number of mids).
        let already = self
            .owners
            .of(owner)
            .transports
            .iter()
            .filter_map(|k| self.transports.get(*k))
            .filter(|u| u.direction == TransportDirection::Recv)
            .flat_map(|u| u.mids.iter())
            .filter(|(_, c)| {
                self.consumers
                    .get(*c)
                    .is_some_and(|c| c.producer == pkey && c.owner == owner)
            })
            .count();
        if already >= self.config.max_consumers_per_producer {
            return Err(Error::LimitReached(
                "consumers of one producer per participant",
            ));
        }
        let kind = p.kind;
        if !ortc::can_consume(&p.consumable, rtp_capabilities)? {
            return Err(Error::CannotConsume(format!(
                "the subscriber's capabilities have no codec for {}",
                p.mime_type
            )));
        }
        let mut params = ortc::get_consumer_rtp_parameters(
            &p.consumable,
            rtp_capabilities,
            false,
            kind == MediaKind::Video,
            &mut || ortc::random_ssrc_from(&mut self.rng),
        )?;
        let encoding = params
            .encodings
            .first()
            .ok_or_else(|| Error::CannotConsume("no encoding".into()))?;
        let ssrc = encoding
            .ssrc
            .ok_or_else(|| Error::CannotConsume("no ssrc".into()))?;
        let rtx_ssrc = encoding.rtx.map(|r| r.ssrc);
        let pt_map: Vec<(u8, u8)> = p
            .pt_map
            .iter()
            .copied()
            .filter(|(_, router)| params.codecs.iter().any(|c| c.payload_type == *router))
            .collect();
        let clock_rate = params.codecs.first().map_or(90_000, |c| c.clock_rate);
        let nackable = rtx_ssrc.is_some();
        let producer_id = p.id.clone();
        let u = &mut self.transports[ukey];
        let mid = u.allocate_mid();
        params.mid = Some(mid.clone());
        let id = ConsumerId::generate_from(&mut self.rng);
        let ckey = self.consumers.insert(Consumer {
            id: id.clone(),
            owner,
            transport: ukey,
            producer: pkey,
            producer_id: producer_id.clone(),
            mid: mid.clone(),
            ssrc,
            pt_map,
            paused: true,
            layer: None,
            needs_resync: true,
            preferred_layer: None,
            preferred_temporal: None,
            priority: None,
            view: View::default(),
            target: (kind == MediaKind::Audio).then_some((0, 0)),
            congested: false,
            padded: true,
            allocated: 0,
            expected: 0,
            short_since: None,
            vp8: Vp8Selector::new(),
            reported_layers: None,
            nackable,
            rewriter: Rewriter::new(clock_rate, self.rng.random(), self.rng.random()),
            packets: 0,
        });
        self.owners.add(owner, |h| h.consumers += 1);
        self.producers[pkey].consumers.push(ckey);
        let rtc_mid = Mid::from(mid.as_str());
        {
            let mut api = u.rtc.direct_api();
            api.declare_media(rtc_mid, to_rtc_kind(kind));
            api.declare_stream_tx(Ssrc::from(ssrc), rtx_ssrc.map(Ssrc::from), rtc_mid, None);
        }
        u.mids.push((mid, ckey));
        drain(ukey, u, &mut self.out, self.config.ice_timeout);
        self.process(now);
        debug!(consumer = %id, producer = %producer_id, "consumer created");
        Ok(Consumed {
            consumer_id: id,
            producer_id,
            kind,
            rtp_parameters: params,
            paused: true,
        })
    }

    pub(super) fn owned_consumer(
        &self,
        owner: Owner,
        id: &ConsumerId,
    ) -> Result<ConsumerKey, Error> {
        // Another participant's consumer is "not found": nothing leaks.
        self.consumers
            .owned(id, owner)
            .map_err(|_| Error::ConsumerNotFound(id.to_string()))
    }

    /// Stops media on a consumer.
    pub fn pause_consumer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let c = &mut self.consumers[key];
        if c.paused {
            return Ok(());
        }
        c.paused = true;
        let (transport, producer) = (c.transport, c.producer);
        // Its share goes to the transport's other consumers.
        self.want_allocation(transport);
        self.dynacast(now, producer);
        self.process(now);
        Ok(())
    }

    /// Closes one of `owner`'s consumers.
    pub fn close_consumer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &ConsumerId,
    ) -> Result<ProducerId, Error> {
        let now = self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        let producer_id = self.consumers[key].producer_id.clone();
        self.close_consumer_key(key, None);
        self.process(now);
        Ok(producer_id)
    }

    /// Opens a data producer: the negotiated SCTP stream `params.stream_id`
    /// on one of `owner`'s transports (mediasoup-client `produceData`).
    // The arguments of mediasoup's `produce` / `produceData` plus time and
    // owner; an options struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn produce_data(
        &mut self,
        now: Instant,
        owner: Owner,
        transport_id: Option<&TransportId>,
        params: SctpStreamParameters,
        label: &str,
        protocol: &str,
        app_data: AppData,
    ) -> Result<DataProducerId, Error> {
        let now = self.advance(now);
        let tkey = self.owned_transport(owner, transport_id, TransportDirection::Send)?;
        if self.owners.of(owner).data_producers >= self.config.max_data_producers_per_participant {
            return Err(Error::LimitReached("data producers per participant"));
        }
        validate_sctp(&params)?;
        if label.len() > 256 || protocol.len() > 256 {
            return Err(Error::InvalidSctpParameters(
                "label and protocol are at most 256 bytes".into(),
            ));
        }
        let t = &mut self.transports[tkey];
        // str0m may hold the stream when the room does not: a channel the
        // peer opened in-band (DCEP), or one whose reset is unanswered. It
        // asserts when asked for such a stream (the room would panic).
        if t.sctp_streams
            .iter()
            .any(|s| s.stream_id == params.stream_id)
            || t.rtc
                .direct_api()
                .data_channel_stream_in_use(params.stream_id)
        {
            return Err(Error::InvalidSctpParameters(format!(
                "stream id {} is already in use on this transport",
                params.stream_id
            )));
        }
        let channel = t
            .rtc
            .direct_api()
            .create_data_channel(channel_config(&params, label, protocol));
        let id = DataProducerId::generate_from(&mut self.rng);
        let key = self.data_producers.insert(DataProducer {
            id: id.clone(),
            owner,
            transport: tkey,
            channel,
            params,
            label: label.to_owned(),
            protocol: protocol.to_owned(),
            consumers: Vec::new(),
            messages: 0,
            app_data: app_data.clone(),
            message_budget: TokenBucket::new(
                f64::from(self.config.max_data_messages_per_second),
                2.0 * f64::from(self.config.max_data_messages_per_second),
            ),
            byte_budget: TokenBucket::new(
                f64::from(self.config.max_data_bytes_per_second),
                2.0 * f64::from(self.config.max_data_bytes_per_second),
            ),
        });
        t.sctp_streams.push(SctpStream {
            stream_id: params.stream_id,
            channel,
            key,
        });
        self.owners.add(owner, |h| h.data_producers += 1);
        drain(tkey, t, &mut self.out, self.config.ice_timeout);
        self.events
            .push_back(Event::State(StateChange::DataProducerCreated {
                data_producer_id: id.clone(),
                owner,
                label: label.to_owned(),
                protocol: protocol.to_owned(),
                reliable: is_reliable(&params),
                app_data,
            }));
        self.process(now);
        Ok(id)
    }

    /// Whether a data producer is reliable (every message retransmitted
    /// until it arrives, ordered or not).
    pub fn data_producer_reliable(&self, id: &DataProducerId) -> Option<bool> {
        self.data_producers
            .by_id(id)
            .map(|d| is_reliable(&d.params))
    }

    /// Closes one of `owner`'s data producers; its consumers close with
    /// [`Event::DataConsumerClosed`].
    pub fn close_data_producer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &DataProducerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.data_producers.owned(id, owner).map_err(|e| match e {
            Lookup::NotOwner => Error::NotOwner(format!("data producer `{id}`")),
            Lookup::NotFound => Error::DataProducerNotFound(id.to_string()),
        })?;
        self.close_data_producer_key(key, None);
        self.process(now);
        Ok(())
    }

    /// Subscribes `owner` to a data producer on one of its receive
    /// transports; the server picks the SCTP stream id.
    pub fn consume_data(
        &mut self,
        now: Instant,
        owner: Owner,
        transport_id: Option<&TransportId>,
        data_producer_id: &DataProducerId,
    ) -> Result<DataConsumed, Error> {
        let now = self.advance(now);
        let ukey = self.owned_transport(owner, transport_id, TransportDirection::Recv)?;
        if self.owners.of(owner).data_consumers >= self.config.max_data_consumers_per_participant {
            return Err(Error::LimitReached("data consumers per participant"));
        }
        let dpkey = self
            .data_producers
            .key(data_producer_id)
            .ok_or_else(|| Error::DataProducerNotFound(data_producer_id.to_string()))?;
        let (params, label, protocol) = {
            let d = &self.data_producers[dpkey];
            (d.params, d.label.clone(), d.protocol.clone())
        };
        let u = &mut self.transports[ukey];
        // Not one str0m holds either (see `produce_data`).
        let api = u.rtc.direct_api();
        let stream_id = free_stream_id(&u.sctp_streams, u.next_sctp_stream, |id| {
            api.data_channel_stream_in_use(id)
        })
        .ok_or(Error::LimitReached("SCTP streams on this transport"))?;
        u.next_sctp_stream = (stream_id + 1) % SCTP_STREAM_IDS;
        let params = SctpStreamParameters {
            stream_id,
            ..params
        };
        let channel = u
            .rtc
            .direct_api()
            .create_data_channel(channel_config(&params, &label, &protocol));
        let id = DataConsumerId::generate_from(&mut self.rng);
        let key = self.data_consumers.insert(DataConsumer {
            id: id.clone(),
            owner,
            transport: ukey,
            data_producer: dpkey,
            channel,
            stream_id,
        });
        u.sctp_streams.push(SctpStream {
            stream_id,
            channel,
            key,
        });
        self.owners.add(owner, |h| h.data_consumers += 1);
        self.data_producers[dpkey].consumers.push(key);
        drain(ukey, u, &mut self.out, self.config.ice_timeout);
        self.process(now);
        Ok(DataConsumed {
            data_consumer_id: id,
            data_producer_id: data_producer_id.clone(),
            sctp_stream_parameters: params,
            label,
            protocol,
        })
    }

    /// Closes one of `owner`'s data consumers.
    pub fn close_data_consumer(
        &mut self,
        now: Instant,
        owner: Owner,
        id: &DataConsumerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self
            .data_consumers
            .owned(id, owner)
            .map_err(|_| Error::DataConsumerNotFound(id.to_string()))?;
        self.close_data_consumer_key(key, None);
        self.process(now);
        Ok(())
    }
}

/// SCTP stream ids a data consumer may get: 0 to 1023.
const SCTP_STREAM_IDS: u16 = 1024;

/// The first SCTP stream id (0 to 1023) neither in `streams` nor `taken`,
/// searching from `from` and wrapping around.
pub(super) fn free_stream_id(
    streams: &[SctpStream],
    from: u16,
    taken: impl Fn(u16) -> bool,
) -> Option<u16> {
    let mut used = [0u64; SCTP_STREAM_IDS as usize / 64];
    for s in streams {
        if let Some(word) = used.get_mut(usize::from(s.stream_id / 64)) {
            *word |= 1 << (s.stream_id % 64);
        }
    }
    (0..SCTP_STREAM_IDS)
        .map(|i| (from % SCTP_STREAM_IDS + i) % SCTP_STREAM_IDS)
        .find(|id| used[usize::from(id / 64)] & (1 << (id % 64)) == 0 && !taken(*id))
}

pub(super) fn validate_sctp(p: &SctpStreamParameters) -> Result<(), Error> {
    if p.stream_id >= 1024 {
        return Err(Error::InvalidSctpParameters(format!(
            "stream id {} is out of range (0-1023)",
            p.stream_id
        )));
    }
    if p.max_packet_life_time.is_some() && p.max_retransmits.is_some() {
        return Err(Error::InvalidSctpParameters(
            "give maxPacketLifeTime or maxRetransmits, not both".into(),
        ));
    }
    Ok(())
}

pub(super) fn channel_config(
    p: &SctpStreamParameters,
    label: &str,
    protocol: &str,
) -> ChannelConfig {
    let reliability = match (p.max_packet_life_time, p.max_retransmits) {
        (Some(lifetime), _) => Reliability::MaxPacketLifetime { lifetime },
        (None, Some(retransmits)) => Reliability::MaxRetransmits { retransmits },
        (None, None) => Reliability::Reliable,
    };
    ChannelConfig {
        label: label.to_owned(),
        ordered: p.ordered.unwrap_or(true),
        reliability,
        negotiated: Some(p.stream_id),
        protocol: protocol.to_owned(),
    }
}
