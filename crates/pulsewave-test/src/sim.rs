//! The simulation: one [`Room`], its participants' [`PeerTransport`]s, the
//! [`Link`] between them and a virtual clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulsewave_client::synthetic::{SyntheticConfig, SyntheticSource};
use pulsewave_client::{LocalTrack, PeerEvent, PeerTransport};
use pulsewave_core::{
    AppData, DataConsumed, Datagram as EndpointDatagram, DatagramError, Endpoint, EndpointConfig,
    Error, Event, Owner, Protocol, Room, RoomConfig, RoomId, RoomMut, RoomStats,
};
use pulsewave_protocol::rtp::{RtpCapabilities, RtpEncodingParameters, RtpParameters};
use pulsewave_protocol::transport::{
    IceParameters, SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{ConsumerId, DataProducerId, MediaKind, ProducerId, TransportId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::link::{Datagram, Direction, FilterId, Link, LinkConfig, classify};

/// The room's address in every simulation (unless [`SimConfig::room`] says
/// otherwise).
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);

/// The wall-clock time written into synthetic payloads at the simulation's
/// start (the harness never reads the OS clock for them).
const VIRTUAL_EPOCH_SECS: u64 = 1_700_000_000;

/// Settings of a [`Sim`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the link's random loss and jitter and of the harness's own
    /// choices (RTP timestamp bases, first sequence numbers).
    pub seed: u64,
    /// The room's configuration. `local_addr` is the server's address on the
    /// simulated network.
    pub room: RoomConfig,
    /// Link conditions, both directions.
    pub link: LinkConfig,
    /// Period of the callback of [`Sim::run_for`].
    pub tick: Duration,
    /// How long [`Sim::connect`] waits for ICE and DTLS (virtual time).
    pub connect_timeout: Duration,
    /// Steps at one instant before the simulation declares a livelock
    /// (something asks to be woken at the current time forever).
    pub max_steps_per_instant: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            room: RoomConfig {
                local_addr: SERVER_ADDR,
                ..RoomConfig::default()
            },
            link: LinkConfig::default(),
            tick: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(10),
            max_steps_per_instant: 10_000,
        }
    }
}

/// An RTP packet a peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRtp {
    /// Virtual time of arrival.
    pub at: Instant,
    /// The consumer's mid.
    pub mid: String,
    /// Media ssrc (the consumer's).
    pub ssrc: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Extended sequence number.
    pub seq_no: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Arc<[u8]>,
    /// The audio level header extension (-dBov), if it was forwarded.
    pub audio_level: Option<i8>,
}

/// An RTP packet a track wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRtp {
    /// Virtual time of writing.
    pub at: Instant,
    /// Extended sequence number.
    pub seq_no: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// Marker bit.
    pub marker: bool,
    /// Whether it belongs to a keyframe.
    pub keyframe: bool,
    /// Payload.
    pub payload: Arc<[u8]>,
}

/// How [`Sim::try_publish`] sets up a track.
#[derive(Debug, Clone)]
pub struct TrackOptions {
    /// The synthetic media; `None` for [`SyntheticConfig::for_mime`].
    pub media: Option<SyntheticConfig>,
    /// Declare an RTX stream (video, when the codec has RTX).
    pub with_rtx: bool,
    /// Answer keyframe requests from the server with a keyframe on the next
    /// frame, as an encoder does.
    pub answer_keyframe_requests: bool,
    /// Produce paused (muted).
    pub paused: bool,
}

impl Default for TrackOptions {
    fn default() -> Self {
        Self {
            media: None,
            with_rtx: true,
            answer_keyframe_requests: true,
            paused: false,
        }
    }
}

/// How [`Sim::try_publish_simulcast`] sets up a simulcast track.
#[derive(Debug, Clone)]
pub struct SimulcastOptions {
    /// The layers, lowest first: rid and synthetic media of each.
    pub layers: Vec<(String, SyntheticConfig)>,
    /// Announce the layers by ssrc (`encodings: [{ssrc}, ...]`) instead of
    /// by rid (mediasoup-client's `[{rid}, ...]`). The packets carry the
    /// rid extension either way; the server then goes by ssrc.
    pub by_ssrc: bool,
    /// Answer a keyframe request on a layer with a keyframe on that layer's
    /// next frame, as an encoder does.
    pub answer_keyframe_requests: bool,
    /// Produce paused (muted).
    pub paused: bool,
}

impl SimulcastOptions {
    /// Layers `rids` (lowest first) of codec `mime` as a browser sends
    /// them: the lowest at 15 fps, the others at 30 fps, rising bitrates
    /// (150 kbit/s, 500 kbit/s, 1.2 Mbit/s, then doubling) and resolutions
    /// (the top one 1280x720, each lower one half as wide and high), and no
    /// periodic keyframe: each layer starts with a keyframe and then makes
    /// one only when asked (as Chrome's encoders do), so every later
    /// keyframe is the answer to a request.
    pub fn new(mime: &str, rids: &[&str]) -> Self {
        let n = rids.len();
        let layers = rids
            .iter()
            .enumerate()
            .map(|(i, rid)| {
                let bitrate = match i {
                    0 => 150_000,
                    1 => 500_000,
                    k => 1_200_000u32.saturating_mul(1 << (k - 2).min(8)),
                };
                let down = 1u16 << (n - 1 - i).min(8);
                let config = SyntheticConfig {
                    fps: if i == 0 && n > 1 { 15 } else { 30 },
                    bitrate_bps: bitrate,
                    keyframe_interval: Duration::from_secs(100_000),
                    width: 1280 / down,
                    height: 720 / down,
                    ..SyntheticConfig::for_mime(mime)
                };
                ((*rid).to_owned(), config)
            })
            .collect();
        Self {
            layers,
            by_ssrc: false,
            answer_keyframe_requests: true,
            paused: false,
        }
    }
}

/// One RTP stream of a published [`Track`]: the track's only stream, or
/// one of its simulcast layers. Its synthetic source is paced by the
/// virtual clock.
#[derive(Debug)]
pub struct TrackLayer {
    rid: Option<String>,
    ssrc: u32,
    source: SyntheticSource,
    start: Instant,
    frames: u64,
    next_seq: u64,
    sending: bool,
    sent: Vec<SentRtp>,
    write_errors: u64,
}

impl TrackLayer {
    /// Its rid (`None` for a track without layers).
    pub fn rid(&self) -> Option<&str> {
        self.rid.as_deref()
    }

    /// Its media ssrc.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Every packet written on it so far.
    pub fn sent(&self) -> &[SentRtp] {
        &self.sent
    }

    /// Whether its frames are written.
    pub fn is_sending(&self) -> bool {
        self.sending
    }

    /// Writes refused by the peer.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Its synthetic source.
    pub fn source(&self) -> &SyntheticSource {
        &self.source
    }

    fn next_due(&self) -> Instant {
        self.start + self.source.frame_offset(self.frames)
    }
}

/// A published track: one synthetic source per RTP stream (one, or one
/// per simulcast layer), paced by the virtual clock.
#[derive(Debug)]
pub struct Track {
    local: LocalTrack,
    producer_id: Option<ProducerId>,
    answer_keyframe_requests: bool,
    /// Never empty.
    layers: Vec<TrackLayer>,
}

impl Track {
    /// What `add_track` (or `add_simulcast_track`) returned (mid, ssrcs,
    /// payload type, parameters, layers).
    pub fn local(&self) -> &LocalTrack {
        &self.local
    }

    /// The producer, once published.
    pub fn producer_id(&self) -> Option<&ProducerId> {
        self.producer_id.as_ref()
    }

    /// Every packet written so far (for a simulcast track: on its lowest
    /// layer; see [`Track::layer`]).
    pub fn sent(&self) -> &[SentRtp] {
        &self.layers[0].sent
    }

    /// Writes refused by the peer (not connected), on every layer.
    pub fn write_errors(&self) -> u64 {
        self.layers.iter().map(|l| l.write_errors).sum()
    }

    /// Whether frames are written (else they are made and discarded, as an
    /// encoder whose output is thrown away), on at least one layer.
    pub fn is_sending(&self) -> bool {
        self.layers.iter().any(|l| l.sending)
    }

    /// Whether it has simulcast layers.
    pub fn is_simulcast(&self) -> bool {
        !self.local.layers.is_empty()
    }

    /// Its streams: the only one, or the simulcast layers lowest first.
    pub fn layers(&self) -> &[TrackLayer] {
        &self.layers
    }

    /// A simulcast layer by rid.
    pub fn layer(&self, rid: &str) -> Option<&TrackLayer> {
        self.layers.iter().find(|l| l.rid.as_deref() == Some(rid))
    }

    /// Which stream sent a payload, and its index in that stream's
    /// [`TrackLayer::sent`] log.
    pub fn origin_of(&self, payload: &[u8]) -> Option<Origin> {
        self.layers.iter().find_map(|l| {
            l.sent
                .iter()
                .position(|s| &s.payload[..] == payload)
                .map(|index| Origin {
                    rid: l.rid.clone(),
                    index,
                })
        })
    }

    fn layer_mut(&mut self, rid: &str) -> Option<&mut TrackLayer> {
        self.layers
            .iter_mut()
            .find(|l| l.rid.as_deref() == Some(rid))
    }
}

/// Where a received payload was sent: by which stream of the published
/// track, as which of its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The simulcast layer (`None` for a track without layers).
    pub rid: Option<String>,
    /// Index in that stream's [`TrackLayer::sent`] log.
    pub index: usize,
}

/// A consumer set up with [`Sim::subscribe`].
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The producer it consumes.
    pub producer_id: ProducerId,
    /// The receive transport.
    pub transport_id: TransportId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its mid on the receive transport.
    pub mid: String,
    /// Its media ssrc (chosen by the server).
    pub ssrc: u32,
    /// Its RTX ssrc, if any.
    pub rtx_ssrc: Option<u32>,
    /// The media payload type (the router's).
    pub payload_type: u8,
    /// The RTX payload type, if any.
    pub rtx_payload_type: Option<u8>,
    /// The full parameters `consume` returned.
    pub rtp_parameters: RtpParameters,
}

/// One simulated WebRTC transport of a participant: a [`PeerTransport`] and
/// everything it reported.
#[derive(Debug)]
pub struct Peer {
    owner: Owner,
    id: TransportId,
    direction: TransportDirection,
    options: TransportOptions,
    transport: PeerTransport,
    rtp: Vec<ReceivedRtp>,
    events: Vec<(Instant, PeerEvent)>,
    receive_errors: u64,
    tracks: Vec<Track>,
}

impl Peer {
    /// Its participant.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The transport id (the server's).
    pub fn id(&self) -> &TransportId {
        &self.id
    }

    /// Send or receive.
    pub fn direction(&self) -> TransportDirection {
        self.direction
    }

    /// What `create_transport` returned.
    pub fn options(&self) -> &TransportOptions {
        &self.options
    }

    /// The client stack.
    pub fn transport(&self) -> &PeerTransport {
        &self.transport
    }

    /// The client stack, to call commands on directly (outputs are moved
    /// to the network on the next step).
    pub fn transport_mut(&mut self) -> &mut PeerTransport {
        &mut self.transport
    }

    /// Every RTP packet received, in order of arrival.
    pub fn rtp(&self) -> &[ReceivedRtp] {
        &self.rtp
    }

    /// Every other event, with its virtual time.
    pub fn events(&self) -> &[(Instant, PeerEvent)] {
        &self.events
    }

    /// Datagrams `handle_receive` refused.
    pub fn receive_errors(&self) -> u64 {
        self.receive_errors
    }

    /// Keyframe requests received for the track `mid` (since the start).
    pub fn keyframe_requests(&self, mid: &str) -> usize {
        self.keyframe_requests_since(mid, None)
    }

    /// Keyframe requests received for the track `mid` at or after `since`.
    pub fn keyframe_requests_since(&self, mid: &str, since: Option<Instant>) -> usize {
        self.events
            .iter()
            .filter(|(at, e)| {
                since.is_none_or(|s| *at >= s)
                    && matches!(e, PeerEvent::KeyframeRequest { mid: m, .. } if m == mid)
            })
            .count()
    }

    /// When keyframe requests for the simulcast layer `rid` of the track
    /// `mid` arrived.
    pub fn layer_keyframe_requests(&self, mid: &str, rid: &str) -> Vec<Instant> {
        self.events
            .iter()
            .filter(|(_, e)| {
                matches!(e, PeerEvent::KeyframeRequest { mid: m, rid: Some(r), .. }
                    if m == mid && r == rid)
            })
            .map(|(at, _)| *at)
            .collect()
    }

    /// Data channel messages received: `(stream id, bytes)`.
    pub fn data_messages(&self) -> Vec<(u16, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                PeerEvent::ChannelData {
                    stream_id, data, ..
                } => Some((*stream_id, data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the data channel on `stream_id` has opened.
    pub fn channel_open(&self, stream_id: u16) -> bool {
        self.events.iter().any(
            |(_, e)| matches!(e, PeerEvent::ChannelOpen { stream_id: s, .. } if *s == stream_id),
        )
    }

    /// The tracks published on this transport.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// A track by mid.
    pub fn track(&self, mid: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.local.mid == mid)
    }

    fn track_mut(&mut self, mid: &str) -> Option<&mut Track> {
        self.tracks.iter_mut().find(|t| t.local.mid == mid)
    }
}

#[derive(Debug)]
struct Participant {
    name: String,
    sid: Owner,
    room: RoomId,
    ip: IpAddr,
    next_port: u16,
    subscriptions: Vec<Subscription>,
}

/// A deterministic simulation of one room: the sans-IO [`Room`], N
/// participants with sans-IO [`PeerTransport`]s, the [`Link`] between them
/// and a virtual clock. See the [crate documentation](crate).
pub struct Sim {
    config: SimConfig,
    start: Instant,
    now: Instant,
    endpoint: Endpoint,
    /// The room participants join unless told otherwise.
    room: RoomId,
    router_caps: RtpCapabilities,
    link: Link,
    rng: StdRng,
    participants: Vec<Participant>,
    peers: Vec<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    events: Vec<(Instant, Event)>,
    datagram_errors: Vec<(Instant, SocketAddr, DatagramError)>,
    spin: usize,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("endpoint", &self.endpoint)
            .field("participants", &self.participants.len())
            .field("peers", &self.peers.len())
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation with default settings and `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_config(SimConfig {
            seed,
            ..SimConfig::default()
        })
    }

    /// A simulation with `config`. This reads the OS clock once, for the
    /// base instant; from then on time moves only when the simulation
    /// moves it.
    pub fn with_config(config: SimConfig) -> Self {
        let start = Instant::now();
        let mut endpoint = Endpoint::new(
            EndpointConfig {
                room: config.room.clone(),
                seed: Some(config.seed),
            },
            start,
        );
        let room = endpoint.open_room(start);
        let router_caps = config.room.rtp_capabilities.clone();
        let link = Link::new(config.link, config.seed);
        let rng = StdRng::seed_from_u64(config.seed ^ 0x5057_5349_4d00_0000);
        Self {
            config,
            start,
            now: start,
            endpoint,
            room,
            router_caps,
            link,
            rng,
            participants: Vec::new(),
            peers: Vec::new(),
            by_addr: HashMap::new(),
            events: Vec::new(),
            datagram_errors: Vec::new(),
            spin: 0,
        }
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The virtual time at the start.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The default room (the one [`Sim::join`] joins).
    pub fn room(&self) -> &Room {
        self.room_by_id(self.room)
    }

    /// A room of the endpoint.
    ///
    /// # Panics
    ///
    /// When the room is gone (closed, or it panicked).
    pub fn room_by_id(&self, id: RoomId) -> &Room {
        self.endpoint
            .room(id)
            .unwrap_or_else(|| panic!("{id} is gone"))
    }

    /// The default room, to call commands directly (its outputs are
    /// collected when the guard drops). Use [`Sim::now`] as `now`.
    pub fn room_mut(&mut self) -> RoomMut<'_> {
        let (now, id) = (self.now, self.room);
        self.endpoint
            .room_mut(now, id)
            .unwrap_or_else(|| panic!("{id} is gone"))
    }

    /// The room `p` joined, to call commands on.
    fn room_of(&mut self, p: Owner) -> RoomMut<'_> {
        let (now, id) = (self.now, self.participant(p).room);
        self.endpoint
            .room_mut(now, id)
            .unwrap_or_else(|| panic!("{id} is gone"))
    }

    /// The endpoint every room of the simulation lives on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint, to open rooms or run commands with panic isolation
    /// ([`Endpoint::with_room`]).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Opens another room on the endpoint (participants join it with
    /// [`Sim::join_room`]).
    pub fn open_room(&mut self) -> RoomId {
        let now = self.now;
        self.endpoint.open_room(now)
    }

    /// The default room's counters.
    pub fn stats(&self) -> RoomStats {
        self.room().stats()
    }

    /// The router's RTP capabilities.
    pub fn router_caps(&self) -> &RtpCapabilities {
        &self.router_caps
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.config.room.local_addr
    }

    /// The network.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The network, to change its conditions or add filters.
    pub fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    /// Sets the conditions of both directions.
    pub fn set_link(&mut self, config: LinkConfig) {
        self.link.set_config(Direction::Up, config);
        self.link.set_config(Direction::Down, config);
    }

    /// Adds a filter that drops the datagrams for which it returns `true`.
    pub fn add_filter(&mut self, filter: impl FnMut(&Datagram) -> bool + 'static) -> FilterId {
        self.link.add_filter(filter)
    }

    /// Removes a filter.
    pub fn remove_filter(&mut self, id: FilterId) -> bool {
        self.link.remove_filter(id)
    }

    /// Cuts (`true`) or restores the network of one peer transport: while
    /// cut, nothing it sends or is sent arrives.
    pub fn cut(&mut self, transport: &TransportId, cut: bool) {
        self.link.set_blocked(transport, cut);
    }

    /// The harness's seeded generator (independent of the link's).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Every room event so far, with its virtual time.
    pub fn events(&self) -> &[(Instant, Event)] {
        &self.events
    }

    /// Takes the room events collected so far.
    pub fn take_events(&mut self) -> Vec<(Instant, Event)> {
        std::mem::take(&mut self.events)
    }

    /// Datagrams the room refused, with their source.
    pub fn datagram_errors(&self) -> &[(Instant, SocketAddr, DatagramError)] {
        &self.datagram_errors
    }

    /// A peer transport.
    ///
    /// # Panics
    ///
    /// When there is no such transport.
    pub fn peer(&self, id: &TransportId) -> &Peer {
        self.peers
            .iter()
            .find(|p| &p.id == id)
            .unwrap_or_else(|| panic!("no peer transport {id}"))
    }

    /// A peer transport, mutably.
    ///
    /// # Panics
    ///
    /// When there is no such transport.
    pub fn peer_mut(&mut self, id: &TransportId) -> &mut Peer {
        self.peers
            .iter_mut()
            .find(|p| &p.id == id)
            .unwrap_or_else(|| panic!("no peer transport {id}"))
    }

    /// Every peer transport of a participant, in order of creation.
    pub fn peers_of<'a>(&'a self, p: Owner) -> impl Iterator<Item = &'a Peer> + 'a {
        self.peers.iter().filter(move |x| x.owner == p)
    }

    /// A participant's name.
    pub fn name(&self, p: Owner) -> &str {
        &self.participant(p).name
    }

    /// The first send (or receive) transport of a participant that the room
    /// still holds.
    pub fn transport_of(&self, p: Owner, direction: TransportDirection) -> Option<TransportId> {
        self.peers_of(p)
            .find(|x| {
                x.direction == direction
                    && self
                        .endpoint
                        .room(self.participant(p).room)
                        .is_some_and(|r| r.transport_ufrag(&x.id).is_some())
            })
            .map(|x| x.id.clone())
    }

    /// A subscription of `p`.
    ///
    /// # Panics
    ///
    /// When `p` has no such consumer.
    pub fn subscription(&self, p: Owner, consumer: &ConsumerId) -> &Subscription {
        self.participant(p)
            .subscriptions
            .iter()
            .find(|s| &s.consumer_id == consumer)
            .unwrap_or_else(|| panic!("{p} has no consumer {consumer}"))
    }

    /// The RTP packets a consumer of `p` received (by its media ssrc), in
    /// order of arrival.
    pub fn received(&self, p: Owner, consumer: &ConsumerId) -> Vec<ReceivedRtp> {
        let s = self.subscription(p, consumer);
        self.peer(&s.transport_id)
            .rtp
            .iter()
            .filter(|r| r.ssrc == s.ssrc)
            .cloned()
            .collect()
    }

    /// The RTP packets a consumer of `p` received (as [`Sim::received`]),
    /// each with where it was sent: which stream (simulcast layer) of the
    /// published track, as which of its packets (matched by payload; `None`
    /// when no stream of the producer's track sent it).
    ///
    /// # Panics
    ///
    /// When `p` has no such consumer.
    pub fn received_origins(
        &self,
        p: Owner,
        consumer: &ConsumerId,
    ) -> Vec<(ReceivedRtp, Option<Origin>)> {
        let s = self.subscription(p, consumer);
        let track = self
            .peers
            .iter()
            .flat_map(|x| x.tracks.iter())
            .find(|t| t.producer_id.as_ref() == Some(&s.producer_id));
        let mut index: HashMap<&[u8], Origin> = HashMap::new();
        for l in track.iter().flat_map(|t| t.layers.iter()) {
            for (i, sent) in l.sent.iter().enumerate() {
                index.entry(&sent.payload[..]).or_insert_with(|| Origin {
                    rid: l.rid.clone(),
                    index: i,
                });
            }
        }
        self.received(p, consumer)
            .into_iter()
            .map(|r| {
                let origin = index.get(&r.payload[..]).cloned();
                (r, origin)
            })
            .collect()
    }

    /// The track `mid` published by `p`.
    ///
    /// # Panics
    ///
    /// When there is no such track.
    pub fn track(&self, p: Owner, mid: &str) -> &Track {
        self.peers
            .iter()
            .filter(|x| x.owner == p)
            .find_map(|x| x.track(mid))
            .unwrap_or_else(|| panic!("{p} has no track {mid}"))
    }

    fn participant(&self, p: Owner) -> &Participant {
        self.participants
            .iter()
            .find(|x| x.sid == p)
            .unwrap_or_else(|| panic!("no participant {p}"))
    }

    fn participant_mut(&mut self, p: Owner) -> &mut Participant {
        self.participants
            .iter_mut()
            .find(|x| x.sid == p)
            .unwrap_or_else(|| panic!("no participant {p}"))
    }

    fn track_mut(&mut self, p: Owner, mid: &str) -> &mut Track {
        self.peers
            .iter_mut()
            .filter(|x| x.owner == p)
            .find_map(|x| x.track_mut(mid))
            .unwrap_or_else(|| panic!("{p} has no track {mid}"))
    }

    // ----------------------------------------------------- participants

    /// Adds a participant `name` (its owner key is its rank of joining,
    /// from 1) with its own IP address.
    pub fn join(&mut self, name: &str) -> Owner {
        let room = self.room;
        self.join_room(name, room)
    }

    /// Adds a participant to `room` (of [`Sim::open_room`]); every
    /// participant has its own address on the simulated network.
    pub fn join_room(&mut self, name: &str, room: RoomId) -> Owner {
        let i = self.participants.len();
        let sid = Owner::new(i as u64 + 1);
        assert!(
            self.participants.iter().all(|p| p.name != name),
            "participant {name} joined twice"
        );
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1));
        self.participants.push(Participant {
            name: name.to_owned(),
            sid,
            room,
            ip,
            next_port: 5000,
            subscriptions: Vec::new(),
        });
        sid
    }

    /// Creates a server transport and its peer, without connecting. The
    /// peer sends with `sender_caps` (send transports; a browser's own
    /// payload types and extension ids), else the router's; the server
    /// learns them from each `produce`.
    pub fn open_transport(
        &mut self,
        p: Owner,
        direction: TransportDirection,
        sender_caps: Option<&RtpCapabilities>,
    ) -> Result<TransportId, Error> {
        let peer_caps = sender_caps
            .cloned()
            .unwrap_or_else(|| self.router_caps.clone());
        let now = self.now;
        let options = self.room_of(p).create_transport(now, p, direction)?;
        let part = self.participant_mut(p);
        let addr = SocketAddr::new(part.ip, part.next_port);
        part.next_port += 1;
        let mut transport = PeerTransport::new(now, direction, addr, &options, &peer_caps)
            .expect("the client accepts the server's transport options");
        // Work around the client: str0m's ICE agent starts its checks on the
        // first timeout input, and the first `poll_timeout` of a fresh
        // `PeerTransport` lies about a second away, so without this nudge
        // every connection would start with an idle second.
        transport.handle_timeout(now);
        let id = options.id.clone();
        self.by_addr.insert(addr, self.peers.len());
        self.peers.push(Peer {
            owner: p,
            id: id.clone(),
            direction,
            options,
            transport,
            rtp: Vec::new(),
            events: Vec::new(),
            receive_errors: 0,
            tracks: Vec::new(),
        });
        Ok(id)
    }

    /// Sends `connect-transport` with the peer's DTLS parameters and runs
    /// until both sides report the transport connected.
    ///
    /// # Panics
    ///
    /// When it does not connect within [`SimConfig::connect_timeout`].
    pub fn connect(&mut self, id: &TransportId) -> Result<(), Error> {
        self.connect_transport(id)?;
        let timeout = self.config.connect_timeout;
        let id2 = id.clone();
        let connected = self.run_until(timeout, move |sim| sim.is_connected(&id2));
        assert!(
            connected,
            "transport {id} did not connect within {timeout:?}: peer connected {}, server \
             connected {}, peer failure {:?}, events {:?}",
            self.peer(id).transport.is_connected(),
            self.server_connected(id),
            self.peer(id).transport.failure(),
            self.events
        );
        Ok(())
    }

    /// Whether both the peer and the room report the transport connected.
    pub fn is_connected(&self, id: &TransportId) -> bool {
        self.peers
            .iter()
            .find(|p| &p.id == id)
            .is_some_and(|p| p.transport.is_connected())
            && self.server_connected(id)
    }

    /// Whether the server side of transport `id` is connected.
    fn server_connected(&self, id: &TransportId) -> bool {
        self.peers
            .iter()
            .find(|p| &p.id == id)
            .and_then(|p| self.endpoint.room(self.participant(p.owner).room))
            .is_some_and(|r| r.is_transport_connected(id))
    }

    /// Creates and connects a send transport with the router's payload
    /// types.
    pub fn send_transport(&mut self, p: Owner) -> TransportId {
        let id = self
            .open_transport(p, TransportDirection::Send, None)
            .expect("create a send transport");
        self.connect(&id).expect("connect the send transport");
        id
    }

    /// Creates and connects a send transport whose peer sends with its own
    /// capabilities (payload types and extension ids), as a browser whose
    /// ids differ from the router's.
    pub fn send_transport_with_caps(&mut self, p: Owner, caps: &RtpCapabilities) -> TransportId {
        let id = self
            .open_transport(p, TransportDirection::Send, Some(caps))
            .expect("create a send transport");
        self.connect(&id).expect("connect the send transport");
        id
    }

    /// `connect-transport` for a peer transport, with its DTLS parameters
    /// (the simulation is not run).
    fn connect_transport(&mut self, id: &TransportId) -> Result<(), Error> {
        let now = self.now;
        let (owner, dtls) = {
            let peer = self.peer(id);
            (peer.owner, peer.transport.dtls_parameters())
        };
        self.room_of(owner).connect_transport(now, owner, id, &dtls)
    }

    /// Connects many transports in one run of the simulation (each
    /// [`Sim::connect`] runs it alone: connecting N transports one by one
    /// costs O(N²) steps, with every earlier transport's timers).
    ///
    /// # Panics
    ///
    /// When one does not connect within the configured connect timeout.
    pub fn connect_all(&mut self, ids: &[TransportId]) -> Result<(), Error> {
        for id in ids {
            self.connect_transport(id)?;
        }
        let timeout = self.config.connect_timeout;
        let all = ids.to_vec();
        let connected = self.run_until(timeout, move |sim| {
            all.iter().all(|id| sim.is_connected(id))
        });
        assert!(
            connected,
            "not every transport connected within {timeout:?}"
        );
        Ok(())
    }

    /// Creates and connects a receive transport.
    pub fn recv_transport(&mut self, p: Owner) -> TransportId {
        let id = self
            .open_transport(p, TransportDirection::Recv, None)
            .expect("create a receive transport");
        self.connect(&id).expect("connect the receive transport");
        id
    }

    // ------------------------------------------------------------- media

    /// Publishes a track of `kind` with the codec `mime` on `p`'s send
    /// transport, with synthetic media paced by the virtual clock. Returns
    /// the producer and the track's mid.
    ///
    /// # Panics
    ///
    /// When the room refuses.
    pub fn publish(&mut self, p: Owner, kind: MediaKind, mime: &str) -> (ProducerId, String) {
        self.try_publish(p, None, kind, mime, TrackOptions::default())
            .unwrap_or_else(|e| panic!("publish {mime}: {e}"))
    }

    /// Declares a track on the peer (`transport`, else `p`'s first send
    /// transport) and produces it. On refusal the track is removed again.
    pub fn try_publish(
        &mut self,
        p: Owner,
        transport: Option<&TransportId>,
        kind: MediaKind,
        mime: &str,
        options: TrackOptions,
    ) -> Result<(ProducerId, String), Error> {
        let tid = match transport {
            Some(t) => t.clone(),
            None => self
                .peers_of(p)
                .find(|x| x.direction == TransportDirection::Send)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| panic!("{p} has no send transport")),
        };
        let now = self.now;
        let local = self
            .peer_mut(&tid)
            .transport
            .add_track(kind, mime, options.with_rtx)
            .unwrap_or_else(|e| panic!("add_track {mime}: {e}"));
        let produced = self.room_of(p).produce(
            now,
            p,
            Some(&tid),
            kind,
            local.rtp_parameters.clone(),
            options.paused,
            AppData::default(),
        );
        let produced = match produced {
            Ok(x) => x,
            Err(e) => {
                let _ = self.peer_mut(&tid).transport.remove_track(&local.mid);
                return Err(e);
            }
        };
        let config = options
            .media
            .unwrap_or_else(|| SyntheticConfig::for_mime(mime));
        let layer = self.new_layer(None, local.ssrc, config);
        let mid = local.mid.clone();
        self.peer_mut(&tid).tracks.push(Track {
            local,
            producer_id: Some(produced.producer_id.clone()),
            answer_keyframe_requests: options.answer_keyframe_requests,
            layers: vec![layer],
        });
        Ok((produced.producer_id, mid))
    }

    /// Unpublishes: closes the producer of `p`'s track `mid` in the room and
    /// removes the track from its peer (its mid is free again), as
    /// mediasoup-client's `producer.close()` and `unpublish` do.
    ///
    /// # Panics
    ///
    /// When there is no such track or the room refuses.
    pub fn unpublish(&mut self, p: Owner, mid: &str) {
        let (tid, producer) = self
            .peers_of(p)
            .find_map(|x| {
                let t = x.track(mid)?;
                Some((x.id.clone(), t.producer_id.clone()?))
            })
            .unwrap_or_else(|| panic!("{p} has no published track {mid}"));
        let now = self.now;
        self.room_of(p)
            .close_producer(now, p, &producer)
            .unwrap_or_else(|e| panic!("unpublish {mid}: {e}"));
        let peer = self.peer_mut(&tid);
        peer.tracks.retain(|t| t.local.mid != mid);
        peer.transport
            .remove_track(mid)
            .unwrap_or_else(|e| panic!("remove_track {mid}: {e}"));
    }

    /// A stream starting now, with a seeded RTP timestamp base and first
    /// sequence number.
    fn new_layer(&mut self, rid: Option<String>, ssrc: u32, config: SyntheticConfig) -> TrackLayer {
        let rtp_base: u32 = self.rng.random();
        let first_seq: u64 = self.rng.random_range(1..30_000);
        TrackLayer {
            rid,
            ssrc,
            source: SyntheticSource::new(config).with_rtp_base(rtp_base),
            start: self.now,
            frames: 0,
            next_seq: first_seq,
            sending: true,
            sent: Vec::new(),
            write_errors: 0,
        }
    }

    /// Publishes a simulcast video track with the codec `mime` and the
    /// layers `rids` (lowest first) on `p`'s send transport, as
    /// mediasoup-client does (encodings `[{rid}, ...]`), with the layers of
    /// [`SimulcastOptions::new`]. Returns the producer and the track's mid.
    ///
    /// # Panics
    ///
    /// When the room refuses.
    pub fn publish_simulcast(
        &mut self,
        p: Owner,
        mime: &str,
        rids: &[&str],
    ) -> (ProducerId, String) {
        self.try_publish_simulcast(p, None, mime, SimulcastOptions::new(mime, rids))
            .unwrap_or_else(|e| panic!("publish simulcast {mime} {rids:?}: {e}"))
    }

    /// Declares a simulcast track on the peer (`transport`, else `p`'s
    /// first send transport) with `add_simulcast_track` and produces it;
    /// each layer gets its own paced synthetic source. On refusal the track
    /// is removed again.
    ///
    /// # Panics
    ///
    /// When the peer refuses the rids (see
    /// [`PeerTransport::add_simulcast_track`]).
    pub fn try_publish_simulcast(
        &mut self,
        p: Owner,
        transport: Option<&TransportId>,
        mime: &str,
        options: SimulcastOptions,
    ) -> Result<(ProducerId, String), Error> {
        let tid = match transport {
            Some(t) => t.clone(),
            None => self
                .peers_of(p)
                .find(|x| x.direction == TransportDirection::Send)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| panic!("{p} has no send transport")),
        };
        let now = self.now;
        let rids: Vec<&str> = options.layers.iter().map(|(r, _)| r.as_str()).collect();
        let local = self
            .peer_mut(&tid)
            .transport
            .add_simulcast_track(MediaKind::Video, mime, &rids)
            .unwrap_or_else(|e| panic!("add_simulcast_track {mime} {rids:?}: {e}"));
        let mut params = local.rtp_parameters.clone();
        if options.by_ssrc {
            params.encodings = local
                .layers
                .iter()
                .map(|l| RtpEncodingParameters {
                    ssrc: Some(l.ssrc),
                    ..Default::default()
                })
                .collect();
        }
        let produced = self.room_of(p).produce(
            now,
            p,
            Some(&tid),
            MediaKind::Video,
            params,
            options.paused,
            AppData::default(),
        );
        let produced = match produced {
            Ok(x) => x,
            Err(e) => {
                let _ = self.peer_mut(&tid).transport.remove_track(&local.mid);
                return Err(e);
            }
        };
        let layers = options
            .layers
            .into_iter()
            .zip(&local.layers)
            .map(|((rid, config), l)| self.new_layer(Some(rid), l.ssrc, config))
            .collect();
        let mid = local.mid.clone();
        self.peer_mut(&tid).tracks.push(Track {
            local,
            producer_id: Some(produced.producer_id.clone()),
            answer_keyframe_requests: options.answer_keyframe_requests,
            layers,
        });
        Ok((produced.producer_id, mid))
    }

    /// Starts or stops writing the frames of a track, every layer (the
    /// sources keep their pace; frames made while stopped are discarded).
    pub fn set_sending(&mut self, p: Owner, mid: &str, sending: bool) {
        for l in &mut self.track_mut(p, mid).layers {
            l.sending = sending;
        }
    }

    /// Starts or stops writing the frames of one simulcast layer, as a
    /// browser stops its top layers when bandwidth drops.
    ///
    /// # Panics
    ///
    /// When the track has no layer `rid`.
    pub fn set_layer_sending(&mut self, p: Owner, mid: &str, rid: &str, sending: bool) {
        self.track_mut(p, mid)
            .layer_mut(rid)
            .unwrap_or_else(|| panic!("track {mid} has no layer {rid}"))
            .sending = sending;
    }

    /// Whether a track answers the server's keyframe requests.
    pub fn set_answer_keyframe_requests(&mut self, p: Owner, mid: &str, answer: bool) {
        self.track_mut(p, mid).answer_keyframe_requests = answer;
    }

    /// Makes the next frame of a track (of every layer) a keyframe.
    pub fn force_keyframe(&mut self, p: Owner, mid: &str) {
        for l in &mut self.track_mut(p, mid).layers {
            l.source.request_keyframe();
        }
    }

    /// Makes the next frame of one simulcast layer a keyframe.
    ///
    /// # Panics
    ///
    /// When the track has no layer `rid`.
    pub fn force_layer_keyframe(&mut self, p: Owner, mid: &str, rid: &str) {
        self.track_mut(p, mid)
            .layer_mut(rid)
            .unwrap_or_else(|| panic!("track {mid} has no layer {rid}"))
            .source
            .request_keyframe();
    }

    /// Subscribes `p` to `producer` on its first receive transport with the
    /// router's capabilities, adds the consumer to the peer and resumes it.
    ///
    /// # Panics
    ///
    /// When the room refuses.
    pub fn subscribe(&mut self, p: Owner, producer: &ProducerId) -> ConsumerId {
        let caps = self.router_caps.clone();
        self.try_subscribe(p, None, producer, &caps, true)
            .unwrap_or_else(|e| panic!("subscribe to {producer}: {e}"))
    }

    /// Like [`Sim::subscribe`], leaving the consumer paused.
    pub fn subscribe_paused(&mut self, p: Owner, producer: &ProducerId) -> ConsumerId {
        let caps = self.router_caps.clone();
        self.try_subscribe(p, None, producer, &caps, false)
            .unwrap_or_else(|e| panic!("subscribe to {producer}: {e}"))
    }

    /// `consume` with the given capabilities on `transport` (else `p`'s
    /// first receive transport), `add_consumer` on the peer, and
    /// `resume_consumer` when `resume`.
    pub fn try_subscribe(
        &mut self,
        p: Owner,
        transport: Option<&TransportId>,
        producer: &ProducerId,
        caps: &RtpCapabilities,
        resume: bool,
    ) -> Result<ConsumerId, Error> {
        let tid = match transport {
            Some(t) => t.clone(),
            None => self
                .peers_of(p)
                .find(|x| x.direction == TransportDirection::Recv)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| panic!("{p} has no receive transport")),
        };
        let now = self.now;
        let consumed = self
            .room_of(p)
            .consume(now, p, Some(&tid), producer, caps)?;
        let params = consumed.rtp_parameters.clone();
        self.peer_mut(&tid)
            .transport
            .add_consumer(consumed.consumer_id.clone(), consumed.kind, &params)
            .unwrap_or_else(|e| panic!("add_consumer: {e}"));
        let media = params
            .codecs
            .iter()
            .find(|c| !c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let rtx = params
            .codecs
            .iter()
            .find(|c| c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let encoding = params.encodings.first();
        let sub = Subscription {
            consumer_id: consumed.consumer_id.clone(),
            producer_id: consumed.producer_id.clone(),
            transport_id: tid,
            kind: consumed.kind,
            mid: params.mid.clone().unwrap_or_default(),
            ssrc: encoding.and_then(|e| e.ssrc).unwrap_or_default(),
            rtx_ssrc: encoding.and_then(|e| e.rtx).map(|r| r.ssrc),
            payload_type: media.map(|c| c.payload_type).unwrap_or_default(),
            rtx_payload_type: rtx.map(|c| c.payload_type),
            rtp_parameters: params,
        };
        self.participant_mut(p).subscriptions.push(sub);
        if resume {
            self.room_of(p)
                .resume_consumer(now, p, &consumed.consumer_id)
                .unwrap_or_else(|e| panic!("resume_consumer: {e}"));
        }
        Ok(consumed.consumer_id)
    }

    /// Resumes a consumer of `p`.
    pub fn resume(&mut self, p: Owner, consumer: &ConsumerId) -> Result<(), Error> {
        let now = self.now;
        self.room_of(p).resume_consumer(now, p, consumer)
    }

    /// The subscriber asks for a keyframe on one of its video consumers
    /// (RTCP PLI from its peer transport).
    pub fn request_keyframe(&mut self, p: Owner, consumer: &ConsumerId) {
        let tid = self.subscription(p, consumer).transport_id.clone();
        self.peer_mut(&tid)
            .transport
            .request_keyframe(consumer)
            .unwrap_or_else(|e| panic!("request_keyframe: {e}"));
    }

    // -------------------------------------------------------------- data

    /// Opens a negotiated data channel on `p`'s first send transport and
    /// announces it with `produce_data`.
    pub fn publish_data(
        &mut self,
        p: Owner,
        stream_id: u16,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> Result<DataProducerId, Error> {
        let tid = self
            .peers_of(p)
            .find(|x| x.direction == TransportDirection::Send)
            .map(|x| x.id.clone())
            .unwrap_or_else(|| panic!("{p} has no send transport"));
        self.peer_mut(&tid)
            .transport
            .open_data_channel(stream_id, label, ordered, max_retransmits)
            .unwrap_or_else(|e| panic!("open_data_channel: {e}"));
        let params = SctpStreamParameters {
            stream_id,
            ordered: Some(ordered),
            max_packet_life_time: None,
            max_retransmits,
        };
        let now = self.now;
        self.room_of(p)
            .produce_data(now, p, Some(&tid), params, label, "", AppData::default())
    }

    /// Subscribes `p` to a data producer on its first receive transport and
    /// opens the channel on the peer.
    pub fn subscribe_data(
        &mut self,
        p: Owner,
        data_producer: &DataProducerId,
    ) -> Result<DataConsumed, Error> {
        let tid = self
            .peers_of(p)
            .find(|x| x.direction == TransportDirection::Recv)
            .map(|x| x.id.clone())
            .unwrap_or_else(|| panic!("{p} has no receive transport"));
        let now = self.now;
        let consumed = self
            .room_of(p)
            .consume_data(now, p, Some(&tid), data_producer)?;
        self.peer_mut(&tid)
            .transport
            .accept_data_channel(&consumed.sctp_stream_parameters, &consumed.label)
            .unwrap_or_else(|e| panic!("accept_data_channel: {e}"));
        Ok(consumed)
    }

    /// Sends a binary message on `p`'s data channel `stream_id` (first send
    /// transport). `false` when the channel is not open or its buffer is
    /// full.
    pub fn send_data(&mut self, p: Owner, stream_id: u16, data: &[u8]) -> bool {
        let Some(tid) = self
            .peers_of(p)
            .find(|x| x.direction == TransportDirection::Send)
            .map(|x| x.id.clone())
        else {
            return false;
        };
        matches!(
            self.peer_mut(&tid)
                .transport
                .send_data(stream_id, true, data),
            Ok(true)
        )
    }

    /// Data messages received by `p` on its receive transports.
    pub fn data_received(&self, p: Owner) -> Vec<(u16, Vec<u8>)> {
        self.peers_of(p)
            .filter(|x| x.direction == TransportDirection::Recv)
            .flat_map(|x| x.data_messages())
            .collect()
    }

    // ---------------------------------------------------------- network

    /// The participant's network changed under transport `id` (a new
    /// Wi-Fi, a switch to LTE): its peer now sends from a new address, and
    /// what the server sends to the old one is lost. Returns the new
    /// address. Follow with [`Sim::restart_ice`].
    pub fn move_peer(&mut self, id: &TransportId) -> SocketAddr {
        let now = self.now;
        let owner = self.peer(id).owner;
        let part = self.participant_mut(owner);
        // A new address in the 10.2/16 range: another network.
        let ip = match part.ip {
            IpAddr::V4(v4) => {
                let [_, _, c, d] = v4.octets();
                IpAddr::V4(Ipv4Addr::new(10, 2, c, d))
            }
            other => other,
        };
        part.ip = ip;
        let addr = SocketAddr::new(ip, part.next_port);
        part.next_port += 1;
        let i = self
            .peers
            .iter()
            .position(|p| &p.id == id)
            .unwrap_or_else(|| panic!("no transport {id}"));
        let old = self.peers[i].transport.local_addr();
        self.by_addr.remove(&old);
        self.by_addr.insert(addr, i);
        self.peers[i]
            .transport
            .rebind(now, addr)
            .expect("the peer takes its new address");
        addr
    }

    /// Restarts ICE on transport `id` as mediasoup-client does after
    /// `restart-ice`: the room gives new ICE parameters, the peer restarts
    /// with them. Returns the parameters.
    pub fn restart_ice(&mut self, id: &TransportId) -> Result<IceParameters, Error> {
        let now = self.now;
        let owner = self.peer(id).owner;
        let params = self.room_of(owner).restart_ice(now, owner, id)?;
        self.peer_mut(id)
            .transport
            .restart_ice(now, &params)
            .expect("the peer restarts ICE");
        Ok(params)
    }

    /// Hands a datagram to the room right now, from `source` (which need
    /// not be a simulated peer). Refusals are also recorded in
    /// [`Sim::datagram_errors`].
    pub fn inject(&mut self, source: SocketAddr, contents: &[u8]) -> Result<(), DatagramError> {
        let now = self.now;
        let r = self
            .endpoint
            .handle_datagram(now, server_datagram(source, contents))
            .map(|_| ());
        if let Err(e) = r {
            self.datagram_errors.push((now, source, e));
        }
        r
    }

    // ------------------------------------------------------------- time

    /// Runs every wakeup (timers, deliveries, frames) up to and including
    /// `until`, then sets the clock to `until`.
    pub fn step_until(&mut self, until: Instant) {
        while self.step_to(until) {}
        if until > self.now {
            self.now = until;
        }
    }

    /// Runs for `duration` of virtual time.
    pub fn advance(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.step_until(until);
    }

    /// Runs for `duration`, calling `tick` every [`SimConfig::tick`] of
    /// virtual time (and at the end).
    pub fn run_for(&mut self, duration: Duration, mut tick: impl FnMut(&mut Sim)) {
        let end = self.now + duration;
        let period = self.config.tick.max(Duration::from_micros(1));
        while self.now < end {
            let next = (self.now + period).min(end);
            self.step_until(next);
            tick(self);
        }
    }

    /// Runs until `done` holds (checked after every step) or `max` of
    /// virtual time has passed. Returns whether `done` held.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + max;
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            if !self.step_to(deadline) {
                self.now = self.now.max(deadline);
                return done(self);
            }
        }
    }

    /// Runs until no datagram is in flight (timers that fire later are left
    /// alone), at most 100 000 steps.
    ///
    /// # Panics
    ///
    /// When the network does not settle: something keeps sending.
    pub fn drive(&mut self) {
        self.drive_bounded(100_000);
    }

    /// Runs until no datagram is in flight, at most `max_steps` steps.
    ///
    /// # Panics
    ///
    /// When the network does not settle within `max_steps`.
    pub fn drive_bounded(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            self.flush();
            if self.link.in_flight() == 0 {
                return;
            }
            let far = self.now + Duration::from_secs(3600);
            self.step_to(far);
        }
        panic!(
            "the network did not settle in {max_steps} steps ({} datagrams in flight at {:?})",
            self.link.in_flight(),
            self.elapsed()
        );
    }

    /// The next instant something is due: a delivery, a timer, a frame.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut next = self.link.next_delivery();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.endpoint.poll_timeout());
        for p in &self.peers {
            consider(p.transport.poll_timeout());
            for t in &p.tracks {
                for l in &t.layers {
                    consider(Some(l.next_due()));
                }
            }
        }
        next
    }

    /// Moves the outputs of the room and the peers to the network and the
    /// logs, then processes the next wakeup if it is not after `limit`.
    /// Returns `false` when nothing is due by `limit`.
    fn step_to(&mut self, limit: Instant) -> bool {
        self.flush();
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        if next > limit {
            return false;
        }
        let target = next.max(self.now);
        if target == self.now {
            self.spin += 1;
            assert!(
                self.spin <= self.config.max_steps_per_instant,
                "livelock: {} steps at {:?} without time moving (room timeout {:?}, next \
                 delivery {:?}, peer timeouts {:?})",
                self.spin,
                self.elapsed(),
                self.endpoint
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(self.start)),
                self.link
                    .next_delivery()
                    .map(|t| t.saturating_duration_since(self.start)),
                self.peers
                    .iter()
                    .map(|p| p
                        .transport
                        .poll_timeout()
                        .map(|t| t.saturating_duration_since(self.start)))
                    .collect::<Vec<_>>(),
            );
        } else {
            self.spin = 0;
        }
        self.now = target;
        self.process_due();
        self.flush();
        true
    }

    /// Delivers due datagrams, fires due timers, writes due frames.
    fn process_due(&mut self) {
        let now = self.now;
        while let Some(d) = self.link.pop_due(now) {
            self.deliver(d);
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        for p in &mut self.peers {
            if p.transport.poll_timeout().is_some_and(|t| t <= now) {
                p.transport.handle_timeout(now);
            }
        }
        let wall = UNIX_EPOCH + Duration::from_secs(VIRTUAL_EPOCH_SECS) + (now - self.start);
        for p in &mut self.peers {
            let Peer {
                transport, tracks, ..
            } = p;
            for t in tracks.iter_mut() {
                for l in &mut t.layers {
                    while l.next_due() <= now {
                        l.frames += 1;
                        write_frame(transport, &t.local.mid, l, now, wall);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        match d.direction {
            Direction::Up => {
                if let Err(e) = self
                    .endpoint
                    .handle_datagram(now, server_datagram(d.source, &d.contents))
                {
                    self.datagram_errors.push((now, d.source, e));
                }
            }
            Direction::Down => {
                let Some(&i) = self.by_addr.get(&d.destination) else {
                    return;
                };
                let peer = &mut self.peers[i];
                if peer
                    .transport
                    .handle_receive(now, d.source, &d.contents)
                    .is_err()
                {
                    peer.receive_errors += 1;
                }
            }
        }
    }

    /// Moves every pending output to the network and the logs.
    fn flush(&mut self) {
        let now = self.now;
        while let Some(t) = self.endpoint.poll_transmit() {
            let peer = self.by_addr.get(&t.destination).map(|&i| &self.peers[i]);
            let datagram = Datagram {
                direction: Direction::Down,
                source: t.source,
                destination: t.destination,
                transport: peer.map(|p| p.id.clone()),
                participant: peer.map(|p| p.owner),
                kind: classify(&t.contents),
                sent_at: now,
                contents: t.contents,
            };
            self.link.send(datagram);
        }
        while let Some((_, e)) = self.endpoint.poll_event() {
            self.events.push((now, e));
        }
        for p in &mut self.peers {
            while let Some(t) = p.transport.poll_transmit() {
                let datagram = Datagram {
                    direction: Direction::Up,
                    source: p.transport.local_addr(),
                    destination: t.destination,
                    transport: Some(p.id.clone()),
                    participant: Some(p.owner),
                    kind: classify(&t.contents),
                    sent_at: now,
                    contents: t.contents,
                };
                self.link.send(datagram);
            }
            while let Some(e) = p.transport.poll_event() {
                match e {
                    PeerEvent::RtpPacket {
                        mid,
                        ssrc,
                        payload_type,
                        seq_no,
                        rtp_time,
                        marker,
                        payload,
                        audio_level,
                        ..
                    } => p.rtp.push(ReceivedRtp {
                        at: now,
                        mid,
                        ssrc,
                        payload_type,
                        seq_no,
                        rtp_time,
                        marker,
                        payload,
                        audio_level,
                    }),
                    PeerEvent::KeyframeRequest {
                        ref mid, ref rid, ..
                    } => {
                        // On the layer asked for (every layer if the
                        // request names none).
                        if let Some(t) = p.track_mut(mid)
                            && t.answer_keyframe_requests
                        {
                            for l in &mut t.layers {
                                if rid.is_none() || l.rid == *rid {
                                    l.source.request_keyframe();
                                }
                            }
                        }
                        p.events.push((now, e));
                    }
                    other => p.events.push((now, other)),
                }
            }
        }
    }
}

/// Makes the stream's next frame and writes its packets (or discards them
/// when the stream is not sending).
fn write_frame(
    transport: &mut PeerTransport,
    mid: &str,
    t: &mut TrackLayer,
    now: Instant,
    wall: SystemTime,
) {
    let packets = t.source.next_frame_at_wall(wall);
    if !t.sending {
        return;
    }
    for pkt in packets {
        let payload: Arc<[u8]> = pkt.payload.into();
        let seq = t.next_seq;
        t.next_seq += 1;
        let written = match &t.rid {
            Some(rid) => transport.write_rtp_layer(
                mid,
                rid,
                seq,
                pkt.rtp_time,
                pkt.marker,
                payload.clone(),
                now,
            ),
            None => transport.write_rtp(mid, seq, pkt.rtp_time, pkt.marker, payload.clone(), now),
        };
        match written {
            Ok(()) => t.sent.push(SentRtp {
                at: now,
                seq_no: seq,
                rtp_time: pkt.rtp_time,
                marker: pkt.marker,
                keyframe: pkt.keyframe,
                payload,
            }),
            Err(_) => t.write_errors += 1,
        }
    }
}

/// A datagram from `source` to the simulated server.
fn server_datagram(source: SocketAddr, contents: &[u8]) -> EndpointDatagram<'_> {
    EndpointDatagram {
        proto: Protocol::Udp,
        source,
        destination: SERVER_ADDR,
        contents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Fate, PacketKind};
    use pulsewave_core::Event;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn transports_connect_on_the_virtual_clock() {
        let mut sim = Sim::new(1);
        let alice = sim.join("alice");
        let send = sim.send_transport(alice);
        let recv = sim.recv_transport(alice);
        assert!(sim.is_connected(&send) && sim.is_connected(&recv));
        assert!(
            sim.elapsed() < Duration::from_secs(1),
            "{:?}",
            sim.elapsed()
        );
        let connected = sim
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::TransportConnected { .. }))
            .count();
        assert_eq!(connected, 2);
        for direction in [Direction::Up, Direction::Down] {
            for kind in [PacketKind::Stun, PacketKind::Dtls] {
                assert!(
                    sim.link()
                        .log()
                        .iter()
                        .any(|e| e.direction == direction && e.kind == kind),
                    "{direction:?} {kind:?}"
                );
            }
        }
        assert_eq!(sim.peers_of(alice).count(), 2);
        assert_eq!(
            sim.transport_of(alice, TransportDirection::Send),
            Some(send)
        );
    }

    #[test]
    fn latency_shows_in_the_handshake_time() {
        let mut sim = Sim::with_config(SimConfig {
            link: LinkConfig::with_latency(ms(100)),
            ..SimConfig::default()
        });
        let alice = sim.join("alice");
        sim.send_transport(alice);
        // STUN there and back, then at least two DTLS round trips.
        assert!(sim.elapsed() >= ms(600), "{:?}", sim.elapsed());
        assert!(
            sim.elapsed() < Duration::from_secs(3),
            "{:?}",
            sim.elapsed()
        );
    }

    #[test]
    fn the_clock_moves_only_when_told() {
        let mut sim = Sim::new(2);
        assert_eq!(sim.now(), sim.start());
        let alice = sim.join("alice");
        sim.send_transport(alice);
        let t = sim.now() + ms(1234);
        sim.step_until(t);
        assert_eq!(sim.now(), t);
        let mut ticks = 0;
        let mut last = sim.now();
        sim.run_for(Duration::from_secs(1), |s| {
            ticks += 1;
            assert_eq!(s.now() - last, ms(10));
            last = s.now();
        });
        assert_eq!(ticks, 100);
        assert_eq!(sim.now(), t + Duration::from_secs(1));
        // Nothing to run until: time still moves to the deadline.
        let before = sim.now();
        assert!(!sim.run_until(ms(50), |_| false));
        assert_eq!(sim.now(), before + ms(50));
    }

    #[test]
    fn tracks_are_paced_in_real_time() {
        let mut sim = Sim::new(3);
        let alice = sim.join("alice");
        sim.send_transport(alice);
        let (_, mid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
        sim.advance(Duration::from_secs(2));
        let sent = sim.track(alice, &mid).sent();
        assert_eq!(sent.len(), 101, "frame 0 at publish, then every 20 ms");
        for w in sent.windows(2) {
            assert_eq!(w[1].at - w[0].at, ms(20));
            assert_eq!(w[1].seq_no, w[0].seq_no + 1);
            assert_eq!(w[1].rtp_time.wrapping_sub(w[0].rtp_time), 960);
        }
        assert_eq!(sim.stats().rtp_in, 101 - 1, "the last one is in flight");
        sim.set_sending(alice, &mid, false);
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.track(alice, &mid).sent().len(), 101);
    }

    #[test]
    fn simulcast_layers_are_paced_and_stopped_one_by_one() {
        let mut sim = Sim::new(9);
        let alice = sim.join("alice");
        sim.send_transport(alice);
        let (_, mid) = sim.publish_simulcast(alice, "video/VP8", &["r0", "r1", "r2"]);
        sim.advance(Duration::from_secs(1));
        let track = sim.track(alice, &mid);
        assert!(track.is_simulcast());
        let frames = |l: &TrackLayer| l.sent().iter().filter(|s| s.marker).count();
        let r0 = track.layer("r0").unwrap();
        let r2 = track.layer("r2").unwrap();
        assert_eq!(frames(r0), 16, "15 fps, frame 0 at publish");
        assert_eq!(frames(r2), 31, "30 fps");
        assert!(r2.sent().len() > 3 * r0.sent().len(), "rising bitrates");
        assert_eq!(r0.ssrc(), track.local().layers[0].ssrc);
        // Only the first frame of each layer is a keyframe.
        for l in track.layers() {
            assert!(l.sent()[0].keyframe);
            assert!(
                l.sent()
                    .iter()
                    .skip_while(|s| s.keyframe)
                    .all(|s| !s.keyframe)
            );
        }
        let last = r2.sent().last().unwrap().payload.clone();
        assert_eq!(
            track.origin_of(&last),
            Some(Origin {
                rid: Some("r2".into()),
                index: r2.sent().len() - 1
            })
        );

        let n2 = r2.sent().len();
        sim.set_layer_sending(alice, &mid, "r2", false);
        sim.force_layer_keyframe(alice, &mid, "r1");
        sim.advance(Duration::from_millis(500));
        let track = sim.track(alice, &mid);
        assert_eq!(track.layer("r2").unwrap().sent().len(), n2, "r2 stopped");
        assert!(track.is_sending(), "r0 and r1 go on");
        let keyframes = |rid: &str| {
            track
                .layer(rid)
                .unwrap()
                .sent()
                .iter()
                .filter(|s| s.keyframe && s.marker)
                .count()
        };
        assert_eq!((keyframes("r0"), keyframes("r1")), (1, 2));
        assert_eq!(track.write_errors(), 0);
    }

    #[test]
    fn drive_settles_the_network() {
        let mut sim = Sim::new(4);
        let alice = sim.join("alice");
        let bob = sim.join("bob");
        sim.send_transport(alice);
        sim.recv_transport(bob);
        let (p, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
        let c = sim.subscribe(bob, &p);
        sim.advance(ms(100));
        sim.drive();
        assert_eq!(sim.link().in_flight(), 0);
        assert!(!sim.received(bob, &c).is_empty());
    }

    #[test]
    #[should_panic(expected = "did not settle")]
    fn drive_bounded_catches_a_network_that_never_settles() {
        let mut sim = Sim::new(5);
        let alice = sim.join("alice");
        sim.send_transport(alice);
        sim.publish(alice, MediaKind::Audio, "audio/opus");
        // A packet every 20 ms, each a second in flight: never quiet.
        sim.set_link(LinkConfig::with_latency(Duration::from_secs(1)));
        sim.advance(ms(10));
        sim.drive_bounded(50);
    }

    #[test]
    fn filters_mtu_and_cuts_drop_what_they_should() {
        let mut sim = Sim::new(6);
        let alice = sim.join("alice");
        let tid = sim.send_transport(alice);
        let (_, audio) = sim.publish(alice, MediaKind::Audio, "audio/opus");
        let (_, video) = sim.publish(alice, MediaKind::Video, "video/VP8");
        let audio_ssrc = sim.track(alice, &audio).local().ssrc;
        let video_ssrc = sim.track(alice, &video).local().ssrc;
        let mut n = 0;
        sim.add_filter(move |d| {
            if d.direction == Direction::Up && d.kind.rtp_ssrc() == Some(audio_ssrc) {
                n += 1;
                return n == 10;
            }
            false
        });
        sim.link_mut().set_config(
            Direction::Up,
            LinkConfig {
                mtu: Some(600),
                ..LinkConfig::default()
            },
        );
        sim.advance(Duration::from_secs(1));
        let fates = |ssrc: u32, fate: Fate| {
            sim.link()
                .log()
                .iter()
                .filter(|e| e.kind.rtp_ssrc() == Some(ssrc) && e.fate == fate)
                .count()
        };
        assert_eq!(
            fates(audio_ssrc, Fate::Filtered),
            1,
            "the 10th audio packet"
        );
        assert_eq!(
            fates(audio_ssrc, Fate::TooBig),
            0,
            "audio packets are small"
        );
        assert!(
            fates(video_ssrc, Fate::TooBig) > 10,
            "video packets exceed 600 bytes"
        );

        sim.cut(&tid, true);
        let rtp_in = sim.stats().rtp_in;
        let dropped = sim.link().log().len();
        sim.advance(Duration::from_secs(1));
        assert!(sim.stats().rtp_in <= rtp_in + 2, "only what was in flight");
        assert!(
            sim.link().log()[dropped..]
                .iter()
                .all(|e| e.fate == Fate::Filtered)
        );
    }

    #[test]
    fn the_same_seed_loses_the_same_packets() {
        let run = |seed| {
            let mut sim = Sim::new(seed);
            let alice = sim.join("alice");
            sim.send_transport(alice);
            let (_, mid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
            let ssrc = sim.track(alice, &mid).local().ssrc;
            let start = sim.link().log().len();
            sim.set_link(LinkConfig {
                loss: 0.2,
                ..LinkConfig::default()
            });
            sim.advance(Duration::from_secs(2));
            // Which of the track's packets were lost, by index.
            sim.link().log()[start..]
                .iter()
                .filter(|e| e.kind.rtp_ssrc() == Some(ssrc))
                .map(|e| e.fate == Fate::Lost)
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert!(a.iter().any(|l| *l));
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
    }
}
