//! The room: every transport, producer and consumer of one conference, and
//! the forwarding between them.

use crate::owners::Owner;
use std::collections::VecDeque;

use rand::rngs::StdRng;
use std::net::SocketAddr;
use std::time::Instant;

use pulsewave_protocol::rtp::{RtpCapabilities, RtpParameters};
use pulsewave_protocol::transport::{SctpStreamParameters, TransportDirection};
use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};
use str0m::Event as RtcEvent;
use str0m::bwe::BweKind;
use str0m::media::MediaKind as RtcMediaKind;
use tracing::debug;

use crate::config::RoomConfig;
use crate::data::{DataConsumer, DataProducer};
use crate::event::{CloseReason, Event, StateChange, Transmit};
use crate::media::{Consumer, Producer, ProducerKey};
use crate::owners::Owners;
use crate::registry::Registry;
use crate::transport::{DemuxChange, Outputs, Timer, Transport, TransportKey};

mod allocate;
mod quality;
mod speakers;
pub use allocate::{ConsumerAllocation, TransportAllocation};
mod close;
mod commands;
mod forward;
mod io;
pub(crate) use io::Routed;
mod layers;

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
    /// Changes of the layers a consumer forwards (spatial or temporal).
    pub layer_switches: u64,
    /// Consumers paused because their subscriber's bandwidth did not carry
    /// even their lowest layer.
    pub congestion_pauses: u64,
}

impl RoomStats {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &RoomStats) {
        self.transports += other.transports;
        self.producers += other.producers;
        self.consumers += other.consumers;
        self.datagrams_in += other.datagrams_in;
        self.datagrams_dropped += other.datagrams_dropped;
        self.rtp_in += other.rtp_in;
        self.rtp_forwarded += other.rtp_forwarded;
        self.keyframe_requests += other.keyframe_requests;
        self.data_relayed += other.data_relayed;
        self.rtp_ingress_dropped += other.rtp_ingress_dropped;
        self.rtp_egress_dropped += other.rtp_egress_dropped;
        self.data_dropped += other.data_dropped;
        self.layer_switches += other.layer_switches;
        self.congestion_pauses += other.congestion_pauses;
    }
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

/// One conference: its transports, producers, consumers, data producers
/// and data consumers, and the forwarding between them.
///
/// A room lives on an [`Endpoint`](crate::Endpoint), which routes its
/// datagrams, runs its timers and collects its outputs; commands run on it
/// through [`Endpoint::with_room`](crate::Endpoint::with_room) (or the
/// [`Endpoint::room_mut`](crate::Endpoint::room_mut) guard). Time is an
/// argument of every command; an earlier `now` counts as the latest one
/// seen.
///
/// # Methods
///
/// - Getters: [`Room::rtp_capabilities`], [`Room::stats`],
///   [`Room::producer_owner`], ...
/// - Commands: [`Room::create_transport`], [`Room::connect_transport`],
///   [`Room::produce`], [`Room::consume`], [`Room::resume_consumer`], the
///   data channel commands and the `close_*` ones. Each validates fully
///   before it changes anything: an error leaves the room as it was.
///
/// ```
/// use std::time::Instant;
/// use pulsewave_core::{Endpoint, EndpointConfig, Owner};
/// use pulsewave_protocol::transport::TransportDirection;
///
/// let now = Instant::now();
/// let mut endpoint = Endpoint::new(EndpointConfig::default(), now);
/// let id = endpoint.open_room(now);
/// let mut room = endpoint.room_mut(now, id).unwrap();
/// let options = room
///     .create_transport(now, Owner::new(1), TransportDirection::Recv)
///     .unwrap();
/// assert!(options.ice_parameters.ice_lite);
/// assert_eq!(room.stats().transports, 1);
/// ```
pub struct Room {
    config: RoomConfig,
    transports: Registry<Transport>,
    producers: Registry<Producer>,
    consumers: Registry<Consumer>,
    data_producers: Registry<DataProducer>,
    data_consumers: Registry<DataConsumer>,
    owners: Owners,
    out: Outputs,
    events: VecDeque<Event>,
    /// Ids, ssrcs, ufrags and sequence bases come from here: seeded by the
    /// endpoint, so a simulation is reproducible.
    rng: StdRng,
    now: Instant,
    stats: RoomStats,
    /// Reused buffer of the timers due in one `handle_timeout`.
    due_timers: Vec<(Instant, Timer)>,
    /// Active speaker detection (`speaker.rs`).
    speakers: crate::speaker::Speakers,
    /// Connection quality evaluation (`quality.rs`): armed, and each
    /// participant's last reported score.
    quality_armed: bool,
    quality: std::collections::HashMap<Owner, crate::quality::ConnectionQuality>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("local_addr", &self.config.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

pub(super) fn to_rtc_kind(kind: MediaKind) -> RtcMediaKind {
    match kind {
        MediaKind::Audio => RtcMediaKind::Audio,
        MediaKind::Video => RtcMediaKind::Video,
    }
}

impl Room {
    /// A room with `config`, at time `now`, drawing its randomness from
    /// `rng`. Rooms are made by [`crate::Endpoint::open_room`].
    pub(crate) fn new(config: RoomConfig, rng: StdRng, now: Instant) -> Self {
        Self {
            config,
            transports: Registry::default(),
            producers: Registry::default(),
            consumers: Registry::default(),
            data_producers: Registry::default(),
            data_consumers: Registry::default(),
            owners: Owners::default(),
            out: Outputs::default(),
            events: VecDeque::new(),
            rng,
            due_timers: Vec::new(),
            speakers: Default::default(),
            quality_armed: false,
            quality: Default::default(),
            now,
            stats: RoomStats::default(),
        }
    }

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
    pub fn producer_owner(&self, id: &ProducerId) -> Option<Owner> {
        self.producers.by_id(id).map(|p| p.owner)
    }

    /// The owner of a data producer.
    pub fn data_producer_owner(&self, id: &DataProducerId) -> Option<Owner> {
        self.data_producers.by_id(id).map(|p| p.owner)
    }

    /// Whether the transport's ICE and DTLS are up.
    pub fn is_transport_connected(&self, id: &TransportId) -> bool {
        self.transports.by_id(id).is_some_and(|t| t.connected)
    }

    /// Whether the room holds nothing.
    pub fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }

    /// The ICE username fragment of a transport (to route datagrams to this
    /// room when several rooms share a socket).
    pub fn transport_ufrag(&self, id: &TransportId) -> Option<&str> {
        self.transports.by_id(id).map(|t| t.local_ufrag.as_str())
    }

    /// Panics, to test that a panicking room is contained (needs the
    /// `test-hooks` feature; never in production builds).
    #[cfg(feature = "test-hooks")]
    pub fn panic_for_test(&mut self) {
        panic!("panic_for_test: a room panicked on purpose");
    }

    /// Reports a producer's paused state (after a pause or resume command).
    fn report_paused(&mut self, key: ProducerKey) {
        // Its consumers' transports allocate again (their share changes).
        if let Some(p) = self.producers.get(key) {
            for &ckey in &p.consumers {
                if let Some(c) = self.consumers.get(ckey)
                    && let Some(t) = self.transports.get_mut(c.transport)
                {
                    self.out.want_allocation(c.transport, t);
                }
            }
        }
        if let Some(p) = self.producers.get(key) {
            self.events
                .push_back(Event::State(StateChange::ProducerPaused {
                    producer_id: p.id.clone(),
                    owner: p.owner,
                    paused: p.paused,
                    app_data: p.app_data.clone(),
                }));
        }
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for signaling.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next change the endpoint's demultiplexer must make.
    pub(crate) fn poll_demux(&mut self) -> Option<DemuxChange> {
        self.out.demux.pop_front()
    }

    /// When [`Room::handle_timeout`] must be called next: now when
    /// forwarded packets wait for their transports' next poll, else the
    /// earliest timer (O(1)).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.due.is_empty() || !self.out.failed.is_empty() {
            return Some(self.now);
        }
        self.out.timers.next()
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Handles the str0m events queued by drains until none is left, then
    /// closes transports that failed.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((key, event)) = self.out.rtc_events.pop_front() {
                self.on_rtc_event(now, key, event);
            }
            if !self.out.failed.is_empty() {
                for key in std::mem::take(&mut self.out.failed) {
                    if let Some(reason) = self.transports.get(key).and_then(|t| t.failed) {
                        self.close_transport_key(key, Some(reason));
                    }
                }
                continue;
            }
            if self.out.allocate.is_empty() {
                break;
            }
            self.run_allocations(now);
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
                    owner: t.owner,
                });
                // Subscribers whose transport just came up need a picture.
                let waiting: Vec<(ProducerKey, Option<usize>)> = match t.direction {
                    TransportDirection::Recv => t
                        .mids
                        .iter()
                        .filter_map(|(_, c)| self.consumers.get(*c))
                        .filter(|c| !c.paused)
                        .map(|c| (c.producer, c.layer))
                        .collect(),
                    TransportDirection::Send => Vec::new(),
                };
                for (p, layer) in waiting {
                    self.want_keyframe(now, p, layer);
                }
                self.want_allocation(key);
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
            RtcEvent::Closed => self.out.fail(key, t, CloseReason::ClosedByPeer),
            // What the peer reports on what this transport sends it: the
            // connection quality's downstream loss and round-trip time.
            RtcEvent::MediaEgressStats(stats) => {
                if let Some(loss) = stats.loss.filter(|l| l.is_finite()) {
                    // Less what the publisher's link lost: the room
                    // forwards those gaps to every subscriber.
                    let upstream = t
                        .mids
                        .iter()
                        .find(|(m, _)| m.as_str() == &*stats.mid)
                        .and_then(|(_, c)| self.consumers.get(*c))
                        .and_then(|c| self.producers.get(c.producer))
                        .map_or(0.0, |p| p.recent_loss());
                    let loss = (loss.clamp(0.0, 1.0) - upstream).max(0.0);
                    t.remote_loss = Some(t.remote_loss.map_or(loss, |l| l.max(loss)));
                }
                if let Some(rtt) = stats.rtt {
                    t.rtt = Some(rtt);
                }
            }
            RtcEvent::EgressBitrateEstimate(kind) if t.direction == TransportDirection::Recv => {
                match kind {
                    BweKind::Twcc { estimate, .. } => {
                        // str0m reports the configured start value until
                        // feedback moves it; its first steps from there
                        // are noise, not a measure of the link.
                        let e = estimate.as_u64();
                        let start = self.config.initial_available_outgoing_bitrate;
                        t.bwe.measured |= e.abs_diff(start) > start / 5;
                        t.bwe.estimate = Some(e);
                    }
                    BweKind::Remb { estimate, .. } => {
                        t.bwe.measured = true;
                        t.bwe.remb = Some(estimate.as_u64());
                    }
                    _ => return,
                }
                tracing::debug!(transport = %t.id, estimate = ?kind, "egress estimate");
                self.out.want_allocation(key, t);
            }
            _ => {}
        }
    }
}
