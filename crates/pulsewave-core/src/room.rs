//! The room: every transport, producer and consumer of one conference, and
//! the forwarding between them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{
    DtlsParameters, SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ParticipantSid, ProducerId, TransportId,
};
use slab::Slab;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{KeyframeRequestKind, MediaKind as RtcMediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Event as RtcEvent, IceCreds, Input};
use tracing::{debug, trace};

use crate::bucket::TokenBucket;
use crate::config::RoomConfig;
use crate::data::{DataConsumer, DataConsumerKey, DataProducer, DataProducerKey, is_reliable};
use crate::datagram::is_well_formed;
use crate::demux::Demux;
use crate::error::Error;
use crate::event::{CloseReason, Event, Transmit};
use crate::keyframe::VideoCodec;
use crate::media::{Consumer, ConsumerKey, Layer, Producer, ProducerKey, Rewriter};
use crate::ortc;
use crate::owners::Owners;
use crate::transport::{RxSsrc, SctpStream, Transport, TransportKey, TransportSpec, drain};

/// Why a datagram was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// No transport of this room expects traffic from this source.
    #[error("datagram from an unknown source")]
    UnknownSource,
    /// The bytes are not STUN, DTLS, RTP or RTCP.
    #[error("malformed datagram")]
    Malformed,
    /// The transport's WebRTC stack refused it.
    #[error("datagram rejected by the transport")]
    Rejected,
}

/// Counters of one room, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Open transports.
    pub transports: usize,
    /// Open producers.
    pub producers: usize,
    /// Open consumers.
    pub consumers: usize,
    /// Datagrams taken.
    pub datagrams_in: u64,
    /// Datagrams dropped: unknown source, malformed or rejected.
    pub datagrams_dropped: u64,
    /// RTP packets received from producers.
    pub rtp_in: u64,
    /// RTP packets written to consumers.
    pub rtp_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Data channel messages relayed.
    pub data_relayed: u64,
    /// RTP packets dropped because a send transport exceeded
    /// [`RoomConfig::max_incoming_bitrate`].
    pub rtp_ingress_dropped: u64,
    /// RTP packets not forwarded because a receive transport exceeded
    /// [`RoomConfig::max_outgoing_bitrate`].
    pub rtp_egress_dropped: u64,
    /// Data channel messages dropped because their data producer exceeded
    /// its message or byte rate.
    pub data_dropped: u64,
}

/// What `produce` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// The new producer.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec, such as `video/VP8`.
    pub mime_type: String,
    /// Whether the producer has several encodings.
    pub simulcast: bool,
}

/// What `consume` returns: the arguments of mediasoup-client's `consume()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumed {
    /// The new consumer.
    pub consumer_id: ConsumerId,
    /// The producer it consumes.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its parameters (router payload types, its own ssrc, its mid).
    pub rtp_parameters: RtpParameters,
    /// Always true: resume it to start media.
    pub paused: bool,
}

/// What `consume_data` returns: the arguments of `consumeData()`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConsumed {
    /// The new data consumer.
    pub data_consumer_id: DataConsumerId,
    /// The data producer it consumes.
    pub data_producer_id: DataProducerId,
    /// Stream parameters on the subscriber's transport.
    pub sctp_stream_parameters: SctpStreamParameters,
    /// Channel label.
    pub label: String,
    /// Channel sub-protocol.
    pub protocol: String,
}

/// One conference: a sans-IO SFU.
///
/// A `Room` never reads a clock or touches a socket. Time and datagrams go in
/// as arguments; datagrams to send, events for signaling and the next
/// timeout come out. Commands from signaling (`create_transport`,
/// `produce`, `consume`, ...) are inputs like datagrams.
///
/// # Methods
///
/// - Getters: [`Room::rtp_capabilities`], [`Room::stats`],
///   [`Room::producer_owner`], ...
/// - Inputs: [`Room::handle_datagram`], [`Room::handle_timeout`] and the
///   commands.
/// - Outputs: [`Room::poll_transmit`], [`Room::poll_event`],
///   [`Room::poll_timeout`].
///
/// # The run-loop rule
///
/// After every input, drain the outputs: send every [`Transmit`], handle
/// every [`Event`], then arm a timer for [`Room::poll_timeout`] and call
/// [`Room::handle_timeout`] when it fires. `now` must never go backwards
/// between calls (an earlier `now` is treated as the latest one seen).
///
/// ```
/// use std::time::Instant;
/// use pulsewave_core::{Room, RoomConfig};
/// use pulsewave_protocol::transport::TransportDirection;
///
/// let now = Instant::now();
/// let mut room = Room::new(RoomConfig::default(), now);
/// let alice = "PA_alice".into();
/// let options = room
///     .create_transport(now, &alice, TransportDirection::Recv)
///     .unwrap();
/// assert!(options.ice_parameters.ice_lite);
///
/// // Drive the room: datagrams in, transmits out, timers.
/// room.handle_timeout(now);
/// while let Some(transmit) = room.poll_transmit() {
///     let _ = (transmit.destination, transmit.contents); // send on the socket
/// }
/// while let Some(event) = room.poll_event() {
///     println!("{event:?}");
/// }
/// let _next_wakeup = room.poll_timeout();
/// ```
pub struct Room {
    config: RoomConfig,
    transports: Slab<Transport>,
    producers: Slab<Producer>,
    consumers: Slab<Consumer>,
    data_producers: Slab<DataProducer>,
    data_consumers: Slab<DataConsumer>,
    transport_ids: HashMap<TransportId, TransportKey>,
    producer_ids: HashMap<ProducerId, ProducerKey>,
    consumer_ids: HashMap<ConsumerId, ConsumerKey>,
    data_producer_ids: HashMap<DataProducerId, DataProducerKey>,
    data_consumer_ids: HashMap<DataConsumerId, DataConsumerKey>,
    demux: Demux<TransportKey>,
    owners: Owners,
    transmits: VecDeque<Transmit>,
    rtc_events: VecDeque<(TransportKey, RtcEvent)>,
    events: VecDeque<Event>,
    now: Instant,
    stats: RoomStats,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("local_addr", &self.config.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn to_rtc_kind(kind: MediaKind) -> RtcMediaKind {
    match kind {
        MediaKind::Audio => RtcMediaKind::Audio,
        MediaKind::Video => RtcMediaKind::Video,
    }
}

fn valid_mid(mid: &str) -> bool {
    !mid.is_empty() && mid.len() <= 16 && mid.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn random_u16() -> u16 {
    rand::random()
}

impl Room {
    /// A room with `config`, at time `now`.
    pub fn new(config: RoomConfig, now: Instant) -> Self {
        Self {
            config,
            transports: Slab::new(),
            producers: Slab::new(),
            consumers: Slab::new(),
            data_producers: Slab::new(),
            data_consumers: Slab::new(),
            transport_ids: HashMap::new(),
            producer_ids: HashMap::new(),
            consumer_ids: HashMap::new(),
            data_producer_ids: HashMap::new(),
            data_consumer_ids: HashMap::new(),
            demux: Demux::new(),
            owners: Owners::default(),
            transmits: VecDeque::new(),
            rtc_events: VecDeque::new(),
            events: VecDeque::new(),
            now,
            stats: RoomStats::default(),
        }
    }

    // ----------------------------------------------------------- getters

    /// The router's RTP capabilities (for `joined` and `device.load()`).
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        &self.config.rtp_capabilities
    }

    /// The address announced as ICE candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.config.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> RoomStats {
        RoomStats {
            transports: self.transports.len(),
            producers: self.producers.len(),
            consumers: self.consumers.len(),
            ..self.stats
        }
    }

    /// The owner of a producer.
    pub fn producer_owner(&self, id: &ProducerId) -> Option<&ParticipantSid> {
        let key = self.producer_ids.get(id)?;
        self.producers.get(*key).map(|p| &p.owner)
    }

    /// The owner of a data producer.
    pub fn data_producer_owner(&self, id: &DataProducerId) -> Option<&ParticipantSid> {
        let key = self.data_producer_ids.get(id)?;
        self.data_producers.get(*key).map(|p| &p.owner)
    }

    /// Whether the transport's ICE and DTLS are up.
    pub fn is_transport_connected(&self, id: &TransportId) -> bool {
        self.transport_ids
            .get(id)
            .and_then(|k| self.transports.get(*k))
            .is_some_and(|t| t.connected)
    }

    /// Whether the room holds nothing.
    pub fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }

    /// The ICE username fragment of a transport (to route datagrams to this
    /// room when several rooms share a socket).
    pub fn transport_ufrag(&self, id: &TransportId) -> Option<&str> {
        let key = self.transport_ids.get(id)?;
        self.transports.get(*key).map(|t| t.local_ufrag.as_str())
    }

    // ----------------------------------------------------------- outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for signaling.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Room::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        for (_, t) in &self.transports {
            consider(t.next_timeout);
            if let Some(deadline) = self.ice_deadline(t) {
                consider(deadline);
            }
        }
        for (_, p) in &self.producers {
            if p.keyframe_layers != 0 {
                consider(
                    p.last_keyframe_request
                        .map_or(self.now, |t| t + self.config.keyframe_request_interval),
                );
            }
        }
        next
    }

    fn ice_deadline(&self, t: &Transport) -> Option<Instant> {
        if t.connected {
            t.last_received.map(|r| r + self.config.ice_timeout)
        } else {
            t.dtls_started_at.map(|s| s + self.config.ice_timeout)
        }
    }

    // ----------------------------------------------------------- inputs

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Takes a datagram that arrived on `destination` from `source`. The
    /// room routes it to its transport by ICE username (STUN) or by source
    /// address. Errors only count: the caller drops the datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), DatagramError> {
        let now = self.advance(now);
        // Check the framing first, so that a malformed datagram changes
        // nothing (no address binding, no remote ufrag) and is counted as
        // dropped: str0m itself silently ignores truncated DTLS records and
        // RTP headers (found by the simulation's garbage-datagram test).
        if !is_well_formed(contents) {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::Malformed);
        }
        // Look up without binding: a STUN request may only bind its source
        // address or teach the remote ufrag once str0m has checked its
        // MESSAGE-INTEGRITY with the transport's password. (Found by the
        // simulation's garbage-datagram test: a damaged or foreign request
        // from a peer's address rebound that address to another transport,
        // and the peer's media was dropped until its next consent check.)
        let Some(route) = self.demux.lookup(source, contents) else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::UnknownSource);
        };
        let key = route.key;
        let Some(t) = self.transports.get_mut(key) else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::UnknownSource);
        };
        let Ok(datagram) = contents.try_into() else {
            self.stats.datagrams_dropped += 1;
            return Err(DatagramError::Malformed);
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.config.local_addr,
                contents: datagram,
            },
        );
        if let Some(remote) = route.remote_ufrag {
            if !t.rtc.accepts(&input) {
                trace!("STUN request failed authentication");
                self.stats.datagrams_dropped += 1;
                return Err(DatagramError::Rejected);
            }
            self.demux.bind(source, key);
            if t.remote_ufrag.as_deref() != Some(remote) {
                // mediasoup-client never sends the browser's ufrag: learn it
                // from the first binding request. ICE-lite never sends
                // checks, so the remote password is not needed.
                t.remote_ufrag = Some(remote.to_owned());
                t.rtc.direct_api().set_remote_ice_credentials(IceCreds {
                    ufrag: remote.to_owned(),
                    pass: String::new(),
                });
                drain(key, t, &mut self.transmits, &mut self.rtc_events);
            }
        }
        let result = t.rtc.handle_input(input);
        // Only what the stack took counts as a sign of life: spoofed garbage
        // from a peer's address must not keep a dead transport open.
        if result.is_ok() {
            t.last_received = Some(now);
        }
        drain(key, t, &mut self.transmits, &mut self.rtc_events);
        self.stats.datagrams_in += 1;
        self.process(now);
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                trace!(error = %e, "datagram rejected");
                self.stats.datagrams_dropped += 1;
                Err(DatagramError::Rejected)
            }
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let due: Vec<TransportKey> = self
            .transports
            .iter()
            .filter(|(_, t)| t.next_timeout <= now)
            .map(|(k, _)| k)
            .collect();
        for key in due {
            if let Some(t) = self.transports.get_mut(key) {
                if let Err(e) = t.rtc.handle_input(Input::Timeout(now)) {
                    debug!(transport = %t.id, error = %e, "timeout input failed");
                    t.failed = Some(CloseReason::Failed);
                }
                drain(key, t, &mut self.transmits, &mut self.rtc_events);
            }
        }
        let expired: Vec<TransportKey> = self
            .transports
            .iter()
            .filter(|(_, t)| self.ice_deadline(t).is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(t) = self.transports.get_mut(key) {
                debug!(transport = %t.id, "ICE timed out");
                t.failed = Some(CloseReason::IceTimeout);
            }
        }
        let wanted: Vec<ProducerKey> = self
            .producers
            .iter()
            .filter(|(_, p)| p.keyframe_layers != 0)
            .map(|(k, _)| k)
            .collect();
        for key in wanted {
            self.request_keyframe(now, key);
        }
        self.process(now);
    }

    /// Handles the str0m events queued by drains until none is left, then
    /// closes transports that failed.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((key, event)) = self.rtc_events.pop_front() {
                self.on_rtc_event(now, key, event);
            }
            let failed: Vec<(TransportKey, CloseReason)> = self
                .transports
                .iter()
                .filter_map(|(k, t)| t.failed.map(|r| (k, r)))
                .collect();
            if failed.is_empty() {
                break;
            }
            for (key, reason) in failed {
                self.close_transport_key(key, Some(reason));
            }
        }
    }

    fn on_rtc_event(&mut self, now: Instant, key: TransportKey, event: RtcEvent) {
        let Some(t) = self.transports.get_mut(key) else {
            return;
        };
        match event {
            RtcEvent::RtpPacket(pkt) if t.direction == TransportDirection::Send => {
                self.forward(now, key, pkt);
            }
            RtcEvent::Connected => {
                t.connected = true;
                t.last_received = Some(now);
                debug!(transport = %t.id, "transport connected");
                self.events.push_back(Event::TransportConnected {
                    transport_id: t.id.clone(),
                    owner: t.owner.clone(),
                });
                // Subscribers whose transport just came up need a picture.
                let waiting: Vec<(ProducerKey, Option<usize>)> = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| c.transport == key && !c.paused)
                    .map(|(_, c)| (c.producer, c.layer))
                    .collect();
                for (p, layer) in waiting {
                    self.want_keyframe(now, p, layer);
                }
            }
            RtcEvent::KeyframeRequest(req) => {
                let mid = req.mid.to_string();
                let consumer = t.mids.iter().find(|(m, _)| *m == mid).map(|(_, c)| *c);
                if t.direction == TransportDirection::Recv
                    && let Some((p, layer)) = consumer
                        .and_then(|c| self.consumers.get(c))
                        .map(|c| (c.producer, c.layer))
                {
                    self.want_keyframe(now, p, layer);
                }
            }
            RtcEvent::ChannelData(data) => {
                self.relay_data(now, key, data.id, data.binary, &data.data)
            }
            RtcEvent::ChannelClose(id) => {
                let dp = (t.direction == TransportDirection::Send)
                    .then(|| t.sctp_streams.iter().find(|s| s.channel == id))
                    .flatten()
                    .map(|s| s.key);
                if let Some(dp) = dp {
                    self.close_data_producer_key(dp, Some(CloseReason::ClosedByPeer));
                }
            }
            RtcEvent::Closed => {
                t.failed = Some(CloseReason::ClosedByPeer);
            }
            _ => {}
        }
    }

    /// The forwarding path: one RTP packet from a producer to each of its
    /// consumers, with payload type, ssrc, sequence number and timestamp
    /// rewritten per consumer. The payload is shared, not copied; nothing is
    /// allocated per consumer.
    fn forward(&mut self, now: Instant, key: TransportKey, pkt: RtpPacket) {
        let max_ssrcs = self.config.max_ssrcs_per_transport;
        let Room {
            transports,
            producers,
            consumers,
            stats,
            ..
        } = self;
        let ssrc = *pkt.header.ssrc;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        let (pkey, layer) = match t.rx_ssrcs.get(&ssrc) {
            Some(RxSsrc {
                producer,
                layer: Some(layer),
            }) => (*producer, *layer),
            // str0m hands RTX over unwrapped, on the media ssrc.
            Some(RxSsrc { layer: None, .. }) => return,
            // A simulcast layer announces itself with its mid and rid on its
            // first packets: bind its ssrc once.
            None => match learn_layer(t, producers, ssrc, &pkt, max_ssrcs) {
                Some(x) => x,
                None => return,
            },
        };
        // The publisher's budget: a flood is dropped here, before it costs
        // any subscriber anything.
        if !t.ingress.take(now, pkt.payload.len() as f64) {
            stats.rtp_ingress_dropped += 1;
            return;
        }
        let Some(p) = producers.get_mut(pkey) else {
            return;
        };
        stats.rtp_in += 1;
        p.packets += 1;
        p.bytes += pkt.payload.len() as u64;
        if let Some(l) = p.layers.get_mut(layer) {
            l.last_packet = Some(now);
        }
        if p.paused {
            return;
        }
        let best = p.best_layer(now);
        let keyframe = p.video.is_none_or(|c| c.is_keyframe_start(&pkt.payload));
        // A keyframe on this layer answers any request still waiting for
        // the throttle: drop it, as mediasoup's KeyFrameRequestManager does.
        // (Found by the simulcast tests: packets arriving between a PLI and
        // its keyframe re-armed the wish, and a second, useless PLI went out
        // 500 ms after the switch.)
        if keyframe && layer < 32 {
            p.keyframe_layers &= !(1 << layer);
        }
        let in_pt = *pkt.header.payload_type;
        let in_seq = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let ext_in = &pkt.header.ext_vals;
        // Layers a consumer waits for a keyframe on (bit i: layer i).
        let mut keyframe_needed = 0u32;
        for &ckey in &p.consumers {
            let Some(c) = consumers.get_mut(ckey) else {
                continue;
            };
            if c.paused {
                continue;
            }
            let Some(u) = transports.get_mut(c.transport) else {
                continue;
            };
            if !u.connected {
                continue;
            }
            let Some(out_pt) = c.map_pt(in_pt) else {
                continue;
            };
            // Forward the consumer's current layer; switch to its target (the
            // best layer the publisher sends, up to the consumer's preferred
            // one) at the target's next keyframe (any packet, for audio).
            let target = match c.preferred_layer {
                None => best,
                Some(_) => p.target_layer(now, c.preferred_layer),
            };
            let resync = if c.layer == Some(layer) {
                if layer != target && target < 32 {
                    keyframe_needed |= 1 << target;
                }
                c.needs_resync
            } else if layer == target {
                if !keyframe {
                    if target < 32 {
                        keyframe_needed |= 1 << target;
                    }
                    continue;
                }
                c.layer = Some(layer);
                true
            } else {
                continue;
            };
            c.needs_resync = false;
            let Some((seq, ts)) = c.rewriter.rewrite(in_seq, in_ts, now, resync) else {
                continue;
            };
            if !u.egress.take(now, pkt.payload.len() as f64) {
                stats.rtp_egress_dropped += 1;
                continue;
            }
            let ext = ExtensionValues {
                audio_level: ext_in.audio_level,
                voice_activity: ext_in.voice_activity,
                video_orientation: ext_in.video_orientation,
                ..ExtensionValues::default()
            };
            let mut api = u.rtc.direct_api();
            let Some(stream) = api.stream_tx(&Ssrc::from(c.ssrc)) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    Pt::from(out_pt),
                    SeqNo::from(seq),
                    ts,
                    pkt.timestamp,
                    pkt.payload.clone(),
                )
                .marker(pkt.header.marker)
                .ext_vals(ext)
                .nackable(c.nackable),
            );
            // str0m hands a written packet to its pacer, which encrypts and
            // emits it, only on the transport's next timeout input: draining
            // now would poll the whole stack for nothing. Mark the transport
            // due instead; `handle_timeout` polls it once for every packet
            // written since (the driver calls it right away, or after a
            // burst of datagrams).
            u.next_timeout = u.next_timeout.min(now);
            c.packets += 1;
            stats.rtp_forwarded += 1;
        }
        p.keyframe_layers |= keyframe_needed;
    }

    /// Asks the producer for a keyframe on `layer` (the best layer when
    /// `None`) now, or as soon as the throttle allows.
    fn want_keyframe(&mut self, now: Instant, pkey: ProducerKey, layer: Option<usize>) {
        if let Some(p) = self.producers.get_mut(pkey) {
            let layer = layer.unwrap_or_else(|| p.best_layer(now));
            p.want_keyframe_on(layer);
        }
        self.request_keyframe(now, pkey);
    }

    fn request_keyframe(&mut self, now: Instant, pkey: ProducerKey) {
        let interval = self.config.keyframe_request_interval;
        let Some(p) = self.producers.get_mut(pkey) else {
            return;
        };
        if p.video.is_none() {
            p.keyframe_layers = 0;
            return;
        }
        if p.keyframe_layers == 0 || p.last_keyframe_request.is_some_and(|t| now < t + interval) {
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
        drain(tkey, t, &mut self.transmits, &mut self.rtc_events);
    }

    fn relay_data(
        &mut self,
        now: Instant,
        key: TransportKey,
        channel: ChannelId,
        binary: bool,
        data: &[u8],
    ) {
        let Room {
            transports,
            data_producers,
            data_consumers,
            transmits,
            rtc_events,
            stats,
            ..
        } = self;
        let Some(dp) = transports
            .get(key)
            .and_then(|t| t.sctp_streams.iter().find(|s| s.channel == channel))
            .and_then(|s| data_producers.get_mut(s.key))
        else {
            return;
        };
        dp.messages += 1;
        // One sender must not be amplified to every subscriber without
        // bound: past its budget, messages are dropped here.
        if !dp.message_budget.take(now, 1.0) || !dp.byte_budget.take(now, data.len() as f64) {
            stats.data_dropped += 1;
            return;
        }
        for &dckey in &dp.consumers {
            let Some(dc) = data_consumers.get(dckey) else {
                continue;
            };
            let Some(u) = transports.get_mut(dc.transport) else {
                continue;
            };
            if let Some(mut ch) = u.rtc.channel(dc.channel)
                && let Ok(true) = ch.write(binary, data)
            {
                stats.data_relayed += 1;
            }
            drain(dc.transport, u, transmits, rtc_events);
        }
    }

    // ----------------------------------------------------------- commands

    fn owned_transport(
        &self,
        owner: &ParticipantSid,
        id: Option<&TransportId>,
        direction: TransportDirection,
    ) -> Result<TransportKey, Error> {
        let name = |d| match d {
            TransportDirection::Send => "send",
            TransportDirection::Recv => "recv",
        };
        let key = match id {
            Some(id) => {
                let key = *self
                    .transport_ids
                    .get(id)
                    .ok_or_else(|| Error::TransportNotFound(id.to_string()))?;
                match self.transports.get(key) {
                    Some(t) if &t.owner == owner => key,
                    _ => return Err(Error::TransportNotFound(id.to_string())),
                }
            }
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
        owner: &ParticipantSid,
        direction: TransportDirection,
    ) -> Result<TransportOptions, Error> {
        let now = self.advance(now);
        if self.owners.of(owner).transports.len() >= self.config.max_transports_per_participant {
            return Err(Error::LimitReached("transports per participant"));
        }
        let spec = TransportSpec {
            owner: owner.clone(),
            direction,
            router_caps: &self.config.rtp_capabilities,
            local_addr: self.config.local_addr,
            sctp_max_message_size: self.config.sctp_max_message_size,
            ufrag_prefix: &self.config.ufrag_prefix,
            max_incoming_bitrate: self.config.max_incoming_bitrate,
            max_outgoing_bitrate: self.config.max_outgoing_bitrate,
        };
        let (mut transport, options) = Transport::new(now, spec)?;
        let entry = self.transports.vacant_entry();
        let key = entry.key();
        self.demux.insert_ufrag(transport.local_ufrag.clone(), key);
        self.transport_ids.insert(transport.id.clone(), key);
        self.owners.add(owner, |h| h.transports.push(key));
        drain(
            key,
            &mut transport,
            &mut self.transmits,
            &mut self.rtc_events,
        );
        entry.insert(transport);
        self.process(now);
        Ok(options)
    }

    /// Gives a transport the client's DTLS parameters and starts DTLS.
    pub fn connect_transport(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        id: &TransportId,
        dtls: &DtlsParameters,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = *self
            .transport_ids
            .get(id)
            .ok_or_else(|| Error::TransportNotFound(id.to_string()))?;
        let t = match self.transports.get_mut(key) {
            Some(t) if &t.owner == owner => t,
            _ => return Err(Error::TransportNotFound(id.to_string())),
        };
        t.connect(now, dtls)?;
        drain(key, t, &mut self.transmits, &mut self.rtc_events);
        self.process(now);
        Ok(())
    }

    /// Closes one of `owner`'s transports with everything on it. Events
    /// report what closes as a consequence (producers, consumers, and other
    /// participants' consumers of those producers), not the transport.
    pub fn close_transport(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        id: &TransportId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = *self
            .transport_ids
            .get(id)
            .ok_or_else(|| Error::TransportNotFound(id.to_string()))?;
        if self.transports.get(key).is_none_or(|t| &t.owner != owner) {
            return Err(Error::TransportNotFound(id.to_string()));
        }
        self.close_transport_key(key, None);
        self.process(now);
        Ok(())
    }

    /// Closes every transport of `owner`. Events report only what other
    /// participants lose (their consumers and data consumers).
    pub fn close_participant(&mut self, now: Instant, owner: &ParticipantSid) {
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
            | Event::DataConsumerClosed { owner: o, .. } => o != owner,
        });
        self.process(now);
    }

    /// Publishes a track on a send transport.
    ///
    /// `rtp_parameters` are mediasoup-client's `produce` parameters, with the
    /// sender's payload types. They are validated against the router's
    /// capabilities and the transport's payload-type table.
    pub fn produce(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        transport_id: Option<&TransportId>,
        kind: MediaKind,
        mut rtp_parameters: RtpParameters,
        paused: bool,
    ) -> Result<Produced, Error> {
        let now = self.advance(now);
        let tkey = self.owned_transport(owner, transport_id, TransportDirection::Send)?;
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
            &mut ortc::random_ssrc,
        )?;
        let media_codec = rtp_parameters
            .codecs
            .iter()
            .find(|c| !ortc::is_rtx_mime_type(&c.mime_type))
            .ok_or_else(|| Error::InvalidRtpParameters("no media codec".into()))?;
        let codec_kind = if media_codec
            .mime_type
            .to_ascii_lowercase()
            .starts_with("audio/")
        {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        if codec_kind != kind {
            return Err(Error::InvalidRtpParameters(format!(
                "kind is {kind} but the codec {} is {codec_kind}",
                media_codec.mime_type
            )));
        }
        let mime_type = media_codec.mime_type.clone();
        // Encodings: by ssrc (with optional RTX), or by rid (simulcast), or
        // a single one found by mid alone. Ssrcs of rid layers are learned
        // from their first packets.
        let mut layers = Vec::new();
        let mut declared: Vec<(u32, Option<u32>)> = Vec::new();
        for e in &rtp_parameters.encodings {
            if let Some(rid) = &e.rid
                && (rid.is_empty()
                    || rid.len() > 8
                    || !rid.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(Error::InvalidRtpParameters(format!(
                    "rid `{rid}` must be 1 to 8 letters or digits"
                )));
            }
            if let Some(ssrc) = e.ssrc {
                declared.push((ssrc, e.rtx.map(|r| r.ssrc)));
            }
            layers.push(Layer {
                rid: e.rid.clone(),
                ssrc: e.ssrc,
                last_packet: None,
            });
        }
        if layers.is_empty() {
            return Err(Error::InvalidRtpParameters("no encoding".into()));
        }
        let by_rid = layers.iter().any(|l| l.ssrc.is_none());
        let has_extension = |u: &str| {
            rtp_parameters
                .header_extensions
                .iter()
                .any(|e| e.uri == u && (1..=14).contains(&e.id))
        };
        if by_rid
            && (!has_extension(pulsewave_protocol::rtp::uri::MID)
                || (layers.len() > 1 && !has_extension(pulsewave_protocol::rtp::uri::RID)))
        {
            return Err(Error::InvalidRtpParameters(
                "encodings without ssrc need the mid (and, for simulcast, rid) header \
                 extensions on the transport"
                    .into(),
            ));
        }
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
                if !valid_mid(&mid) {
                    return Err(Error::InvalidRtpParameters(format!(
                        "mid `{mid}` must be 1 to 16 letters or digits"
                    )));
                }
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
        let pt_map: Vec<(u8, u8)> = mapping
            .codecs
            .iter()
            .map(|m| (m.payload_type, m.mapped_payload_type))
            .collect();
        let id = ProducerId::generate();
        let simulcast = layers.len() > 1;
        let rids: Vec<String> = layers.iter().filter_map(|l| l.rid.clone()).collect();
        let known: Vec<(u32, usize)> = layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.ssrc.map(|s| (s, i)))
            .collect();
        let video = match kind {
            MediaKind::Video => Some(VideoCodec::from_mime(&mime_type)),
            MediaKind::Audio => None,
        };
        let pkey = self.producers.insert(Producer {
            id: id.clone(),
            owner: owner.clone(),
            transport: tkey,
            kind,
            mid: mid.clone(),
            mime_type: mime_type.clone(),
            video,
            consumable,
            pt_map,
            layers,
            paused,
            consumers: Vec::new(),
            last_keyframe_request: None,
            keyframe_layers: 0,
            packets: 0,
            bytes: 0,
        });
        self.producer_ids.insert(id.clone(), pkey);
        self.owners.add(owner, |h| h.producers += 1);
        let t = &mut self.transports[tkey];
        let rtc_mid = Mid::from(mid.as_str());
        {
            let mut api = t.rtc.direct_api();
            let media = api.declare_media(rtc_mid, to_rtc_kind(kind));
            for rid in &rids {
                media.expect_rid_rx(Rid::from(rid.as_str()));
            }
            for (ssrc, rtx) in &declared {
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
        drain(tkey, t, &mut self.transmits, &mut self.rtc_events);
        self.process(now);
        debug!(producer = %id, %kind, mime = %mime_type, "producer created");
        Ok(Produced {
            producer_id: id,
            kind,
            mime_type,
            simulcast,
        })
    }

    fn owned_producer(
        &self,
        owner: &ParticipantSid,
        id: &ProducerId,
    ) -> Result<ProducerKey, Error> {
        let key = *self
            .producer_ids
            .get(id)
            .ok_or_else(|| Error::ProducerNotFound(id.to_string()))?;
        match self.producers.get(key) {
            Some(p) if &p.owner == owner => Ok(key),
            Some(_) => Err(Error::NotOwner(format!("producer `{id}`"))),
            None => Err(Error::ProducerNotFound(id.to_string())),
        }
    }

    /// Closes one of `owner`'s producers; its consumers close with
    /// [`Event::ConsumerClosed`].
    pub fn close_producer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
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
        owner: &ParticipantSid,
        id: &ProducerId,
    ) -> Result<(), Error> {
        self.advance(now);
        let key = self.owned_producer(owner, id)?;
        self.producers[key].paused = true;
        Ok(())
    }

    /// Unmutes a producer and asks it for a keyframe.
    pub fn resume_producer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        id: &ProducerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = self.owned_producer(owner, id)?;
        let p = &mut self.producers[key];
        if !p.paused {
            return Ok(());
        }
        p.paused = false;
        for &c in &p.consumers {
            if let Some(c) = self.consumers.get_mut(c) {
                c.needs_resync = true;
                c.layer = None;
            }
        }
        self.want_keyframe(now, key, None);
        self.process(now);
        Ok(())
    }

    /// Subscribes `owner` to a producer on one of its receive transports.
    /// `rtp_capabilities` are the subscriber's receiving capabilities. The
    /// consumer starts paused.
    pub fn consume(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        transport_id: Option<&TransportId>,
        producer_id: &ProducerId,
        rtp_capabilities: &RtpCapabilities,
    ) -> Result<Consumed, Error> {
        let now = self.advance(now);
        let ukey = self.owned_transport(owner, transport_id, TransportDirection::Recv)?;
        let pkey = *self
            .producer_ids
            .get(producer_id)
            .ok_or_else(|| Error::ProducerNotFound(producer_id.to_string()))?;
        if self.owners.of(owner).consumers >= self.config.max_consumers_per_participant {
            return Err(Error::LimitReached("consumers per participant"));
        }
        if self.transports[ukey].mids.len() >= self.config.max_consumers_per_transport {
            return Err(Error::LimitReached("consumers per transport"));
        }
        let p = &self.producers[pkey];
        if &p.owner == owner {
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
                    .is_some_and(|c| c.producer == pkey && &c.owner == owner)
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
            &mut ortc::random_ssrc,
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
        let id = ConsumerId::generate();
        let ckey = self.consumers.insert(Consumer {
            id: id.clone(),
            owner: owner.clone(),
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
            nackable,
            rewriter: Rewriter::new(clock_rate, random_u16(), rand::random()),
            packets: 0,
        });
        self.consumer_ids.insert(id.clone(), ckey);
        self.owners.add(owner, |h| h.consumers += 1);
        self.producers[pkey].consumers.push(ckey);
        let rtc_mid = Mid::from(mid.as_str());
        {
            let mut api = u.rtc.direct_api();
            api.declare_media(rtc_mid, to_rtc_kind(kind));
            api.declare_stream_tx(Ssrc::from(ssrc), rtx_ssrc.map(Ssrc::from), rtc_mid, None);
        }
        u.mids.push((mid, ckey));
        drain(ukey, u, &mut self.transmits, &mut self.rtc_events);
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

    fn owned_consumer(
        &self,
        owner: &ParticipantSid,
        id: &ConsumerId,
    ) -> Result<ConsumerKey, Error> {
        match self.consumer_ids.get(id) {
            Some(&k) if self.consumers.get(k).is_some_and(|c| &c.owner == owner) => Ok(k),
            _ => Err(Error::ConsumerNotFound(id.to_string())),
        }
    }

    /// Starts media on a consumer and asks the publisher for a keyframe.
    pub fn resume_consumer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
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

    /// Sets the highest spatial layer `owner`'s consumer `id` forwards
    /// (mediasoup's `consumer.setPreferredLayers`; `None`: the best the
    /// publisher sends, the default). The consumer switches at the next
    /// keyframe of its new layer, which the publisher is asked for. Layers
    /// past the producer's last one mean its last; a producer without
    /// simulcast has one layer, and nothing changes.
    pub fn set_consumer_preferred_layer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
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

    /// Stops media on a consumer.
    pub fn pause_consumer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        id: &ConsumerId,
    ) -> Result<(), Error> {
        self.advance(now);
        let key = self.owned_consumer(owner, id)?;
        self.consumers[key].paused = true;
        Ok(())
    }

    /// Closes one of `owner`'s consumers.
    pub fn close_consumer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
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
    pub fn produce_data(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        transport_id: Option<&TransportId>,
        params: SctpStreamParameters,
        label: &str,
        protocol: &str,
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
        if t.sctp_streams
            .iter()
            .any(|s| s.stream_id == params.stream_id)
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
        let id = DataProducerId::generate();
        let key = self.data_producers.insert(DataProducer {
            id: id.clone(),
            owner: owner.clone(),
            transport: tkey,
            channel,
            params,
            label: label.to_owned(),
            protocol: protocol.to_owned(),
            consumers: Vec::new(),
            messages: 0,
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
        self.data_producer_ids.insert(id.clone(), key);
        self.owners.add(owner, |h| h.data_producers += 1);
        drain(tkey, t, &mut self.transmits, &mut self.rtc_events);
        self.process(now);
        Ok(id)
    }

    /// Whether a data producer is reliable (ordered, retransmitted).
    pub fn data_producer_reliable(&self, id: &DataProducerId) -> Option<bool> {
        let key = self.data_producer_ids.get(id)?;
        self.data_producers
            .get(*key)
            .map(|d| is_reliable(&d.params))
    }

    /// Closes one of `owner`'s data producers; its consumers close with
    /// [`Event::DataConsumerClosed`].
    pub fn close_data_producer(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        id: &DataProducerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = *self
            .data_producer_ids
            .get(id)
            .ok_or_else(|| Error::DataProducerNotFound(id.to_string()))?;
        match self.data_producers.get(key) {
            Some(d) if &d.owner == owner => {}
            Some(_) => return Err(Error::NotOwner(format!("data producer `{id}`"))),
            None => return Err(Error::DataProducerNotFound(id.to_string())),
        }
        self.close_data_producer_key(key, None);
        self.process(now);
        Ok(())
    }

    /// Subscribes `owner` to a data producer on one of its receive
    /// transports; the server picks the SCTP stream id.
    pub fn consume_data(
        &mut self,
        now: Instant,
        owner: &ParticipantSid,
        transport_id: Option<&TransportId>,
        data_producer_id: &DataProducerId,
    ) -> Result<DataConsumed, Error> {
        let now = self.advance(now);
        let ukey = self.owned_transport(owner, transport_id, TransportDirection::Recv)?;
        if self.owners.of(owner).data_consumers >= self.config.max_data_consumers_per_participant {
            return Err(Error::LimitReached("data consumers per participant"));
        }
        let dpkey = *self
            .data_producer_ids
            .get(data_producer_id)
            .ok_or_else(|| Error::DataProducerNotFound(data_producer_id.to_string()))?;
        let (params, label, protocol) = {
            let d = &self.data_producers[dpkey];
            (d.params, d.label.clone(), d.protocol.clone())
        };
        let u = &mut self.transports[ukey];
        let stream_id = free_stream_id(&u.sctp_streams)
            .ok_or(Error::LimitReached("SCTP streams on this transport"))?;
        let params = SctpStreamParameters {
            stream_id,
            ..params
        };
        let channel = u
            .rtc
            .direct_api()
            .create_data_channel(channel_config(&params, &label, &protocol));
        let id = DataConsumerId::generate();
        let key = self.data_consumers.insert(DataConsumer {
            id: id.clone(),
            owner: owner.clone(),
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
        self.data_consumer_ids.insert(id.clone(), key);
        self.owners.add(owner, |h| h.data_consumers += 1);
        self.data_producers[dpkey].consumers.push(key);
        drain(ukey, u, &mut self.transmits, &mut self.rtc_events);
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
        owner: &ParticipantSid,
        id: &DataConsumerId,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let key = match self.data_consumer_ids.get(id) {
            Some(&k)
                if self
                    .data_consumers
                    .get(k)
                    .is_some_and(|d| &d.owner == owner) =>
            {
                k
            }
            _ => return Err(Error::DataConsumerNotFound(id.to_string())),
        };
        self.close_data_consumer_key(key, None);
        self.process(now);
        Ok(())
    }

    // ----------------------------------------------------------- closing

    fn close_transport_key(&mut self, key: TransportKey, reason: Option<CloseReason>) {
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
        let Some(mut t) = self.transports.try_remove(key) else {
            return;
        };
        self.demux.remove(key);
        self.transport_ids.remove(&t.id);
        self.owners
            .remove(&t.owner, |h| h.transports.retain(|k| *k != key));
        // Say goodbye (DTLS close_notify) if the stack has anything to send.
        t.rtc.disconnect();
        let mut ignored = VecDeque::new();
        drain(key, &mut t, &mut self.transmits, &mut ignored);
        debug!(transport = %t.id, ?reason, "transport closed");
        if let Some(reason) = reason {
            self.events.push_back(Event::TransportClosed {
                transport_id: t.id,
                owner: t.owner,
                reason,
            });
        }
        // Events queued for this key are stale now.
        self.rtc_events.retain(|(k, _)| *k != key);
    }

    fn close_producer_key(&mut self, key: ProducerKey, reason: Option<CloseReason>) {
        let Some(p) = self.producers.try_remove(key) else {
            return;
        };
        self.producer_ids.remove(&p.id);
        self.owners.remove(&p.owner, |h| h.producers -= 1);
        for c in &p.consumers {
            self.close_consumer_key(*c, Some(CloseReason::ProducerClosed));
        }
        if let Some(t) = self.transports.get_mut(p.transport) {
            t.rx_ssrcs.retain(|_, v| v.producer != key);
            t.mids.retain(|(m, k)| !(*k == key && *m == p.mid));
            t.rtc.direct_api().remove_media(Mid::from(p.mid.as_str()));
            drain(p.transport, t, &mut self.transmits, &mut self.rtc_events);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::ProducerClosed {
                producer_id: p.id,
                owner: p.owner,
                reason,
            });
        }
    }

    fn close_consumer_key(&mut self, key: ConsumerKey, reason: Option<CloseReason>) {
        let Some(c) = self.consumers.try_remove(key) else {
            return;
        };
        self.consumer_ids.remove(&c.id);
        self.owners.remove(&c.owner, |h| h.consumers -= 1);
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(u) = self.transports.get_mut(c.transport) {
            u.mids.retain(|(m, k)| !(*k == key && *m == c.mid));
            u.rtc.direct_api().remove_media(Mid::from(c.mid.as_str()));
            drain(c.transport, u, &mut self.transmits, &mut self.rtc_events);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::ConsumerClosed {
                consumer_id: c.id,
                producer_id: c.producer_id,
                owner: c.owner,
                reason,
            });
        }
    }

    fn close_data_producer_key(&mut self, key: DataProducerKey, reason: Option<CloseReason>) {
        let Some(d) = self.data_producers.try_remove(key) else {
            return;
        };
        self.data_producer_ids.remove(&d.id);
        self.owners.remove(&d.owner, |h| h.data_producers -= 1);
        for c in &d.consumers {
            self.close_data_consumer_key(*c, Some(CloseReason::DataProducerClosed));
        }
        if let Some(t) = self.transports.get_mut(d.transport) {
            t.sctp_streams.retain(|s| s.stream_id != d.params.stream_id);
            t.rtc.direct_api().close_data_channel(d.channel);
            drain(d.transport, t, &mut self.transmits, &mut self.rtc_events);
        }
        if let Some(reason) = reason {
            self.events.push_back(Event::DataProducerClosed {
                data_producer_id: d.id,
                owner: d.owner,
                reason,
            });
        }
    }

    fn close_data_consumer_key(&mut self, key: DataConsumerKey, reason: Option<CloseReason>) {
        let Some(d) = self.data_consumers.try_remove(key) else {
            return;
        };
        self.data_consumer_ids.remove(&d.id);
        self.owners.remove(&d.owner, |h| h.data_consumers -= 1);
        if let Some(p) = self.data_producers.get_mut(d.data_producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(u) = self.transports.get_mut(d.transport) {
            u.sctp_streams.retain(|s| s.stream_id != d.stream_id);
            u.rtc.direct_api().close_data_channel(d.channel);
            drain(d.transport, u, &mut self.transmits, &mut self.rtc_events);
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

/// Binds the ssrc of a packet that carries its mid (and rid) to the
/// producer layer it belongs to: rid-based simulcast layers, and single
/// encodings announced by mid only.
fn learn_layer(
    t: &mut Transport,
    producers: &mut Slab<Producer>,
    ssrc: u32,
    pkt: &RtpPacket,
    max_ssrcs: usize,
) -> Option<(ProducerKey, usize)> {
    if t.rx_ssrcs.len() >= max_ssrcs {
        return None;
    }
    let mid = pkt.header.ext_vals.mid?;
    let rid = pkt.header.ext_vals.rid;
    let pkey = t
        .mids
        .iter()
        .find(|(m, _)| m.as_str() == &*mid)
        .map(|(_, k)| *k)?;
    let p = producers.get_mut(pkey)?;
    let layer = p.layers.iter().position(|l| {
        l.ssrc.is_none()
            && match (&l.rid, rid) {
                (Some(want), Some(got)) => want.as_str() == &*got,
                (None, None) => true,
                _ => false,
            }
    })?;
    p.layers[layer].ssrc = Some(ssrc);
    t.rx_ssrcs.insert(
        ssrc,
        RxSsrc {
            producer: pkey,
            layer: Some(layer),
        },
    );
    Some((pkey, layer))
}

/// The lowest SCTP stream id (0 to 1023) not in `streams`.
fn free_stream_id(streams: &[SctpStream]) -> Option<u16> {
    let mut used = [0u64; 16];
    for s in streams {
        if let Some(word) = used.get_mut(usize::from(s.stream_id / 64)) {
            *word |= 1 << (s.stream_id % 64);
        }
    }
    used.iter()
        .enumerate()
        .find(|(_, w)| **w != u64::MAX)
        .map(|(i, w)| (i * 64) as u16 + w.trailing_ones() as u16)
}

fn validate_sctp(p: &SctpStreamParameters) -> Result<(), Error> {
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

fn channel_config(p: &SctpStreamParameters, label: &str, protocol: &str) -> ChannelConfig {
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
