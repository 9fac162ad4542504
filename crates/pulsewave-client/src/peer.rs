//! One WebRTC transport to a PulseWave server, sans-IO.
//!
//! [`PeerTransport`] wraps one str0m [`Rtc`] configured the way a PulseWave
//! server transport expects its peer: full ICE agent in the controlling role
//! (the server is ICE-lite), DTLS client, SCTP client, RTP mode, the
//! router's payload types and header-extension ids. It never reads a clock
//! and never touches a socket: time is passed in, datagrams are handed in
//! with [`PeerTransport::handle_receive`] and taken out with
//! [`PeerTransport::poll_transmit`].
//!
//! # Using it
//!
//! Methods come in four groups:
//!
//! - getters: [`id`](PeerTransport::id),
//!   [`dtls_parameters`](PeerTransport::dtls_parameters),
//!   [`server_addr`](PeerTransport::server_addr),
//!   [`is_connected`](PeerTransport::is_connected), ...
//! - inputs: [`handle_receive`](PeerTransport::handle_receive) for a
//!   datagram from the socket, [`handle_timeout`](PeerTransport::handle_timeout)
//!   when the instant of [`poll_timeout`](PeerTransport::poll_timeout) is
//!   reached;
//! - commands: [`add_track`](PeerTransport::add_track),
//!   [`add_simulcast_track`](PeerTransport::add_simulcast_track),
//!   [`write_rtp`](PeerTransport::write_rtp),
//!   [`write_rtp_layer`](PeerTransport::write_rtp_layer),
//!   [`add_consumer`](PeerTransport::add_consumer),
//!   [`open_data_channel`](PeerTransport::open_data_channel),
//!   [`send_data`](PeerTransport::send_data), ...;
//! - outputs: [`poll_transmit`](PeerTransport::poll_transmit),
//!   [`poll_event`](PeerTransport::poll_event),
//!   [`poll_timeout`](PeerTransport::poll_timeout).
//!
//! After any input or command, send every [`Transmit`], handle every
//! [`PeerEvent`], then wait for the next datagram, command or the timeout.
//! Internally every mutation of the `Rtc` is followed by draining its output
//! (str0m's run-loop rule), so the order in which you poll the three outputs
//! does not matter. Time only moves forward: an instant earlier than one
//! already seen is treated as the later one.
//!
//! # Panics, errors
//!
//! Nothing here panics on network input: a datagram that is not STUN, DTLS,
//! RTP or RTCP gives an error from `handle_receive` and changes nothing.
//! Invalid commands (unknown mid, codec not in the router's capabilities,
//! consumer parameters without an SSRC) return [`ClientError`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsewave_protocol::ConsumerId;
use pulsewave_protocol::TransportId;
use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, RtpCapabilities, RtpEncodingParameters,
    RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters, uri,
};
use pulsewave_protocol::transport::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceParameters, SctpStreamParameters,
    TransportDirection, TransportOptions,
};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::config::Fingerprint;
use str0m::media::{KeyframeRequestKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

use crate::caps::{RouterCodec, RouterTable};
use crate::error::ClientError;

/// The audio level (-dBov, RFC 6464) every synthetic audio packet carries.
pub const SYNTHETIC_AUDIO_LEVEL: i8 = -30;

/// The silence after which a connected transport whose binding request
/// went unanswered for [`STALL_UNANSWERED`] counts as lost (see
/// [`PeerTransport::set_stall_after`]); as the JavaScript client's
/// `stallRestartMs`.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(2);

/// How long a binding request must stay unanswered (nothing at all
/// received since it left) before a silent path counts as lost. The server
/// is ICE-lite and answers at once.
pub const STALL_UNANSWERED: Duration = Duration::from_secs(1);

/// A datagram to send on the transport's UDP socket.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it (the server's media address).
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Something that happened on a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media and data channels can flow.
    Connected,
    /// The connection was lost (ICE disconnected, the server closed DTLS,
    /// or a fatal error). ICE may come back, giving another `Connected`.
    Disconnected,
    /// An RTP packet from the server (RTX already unwrapped, duplicates and
    /// padding dropped).
    RtpPacket {
        /// The consumer's mid on this transport.
        mid: String,
        /// Media SSRC (the consumer's, chosen by the server).
        ssrc: u32,
        /// Payload type (the router's).
        payload_type: u8,
        /// Extended sequence number.
        seq_no: u64,
        /// RTP timestamp.
        rtp_time: u32,
        /// Marker bit (last packet of a video frame).
        marker: bool,
        /// The RTP payload, without header.
        payload: Arc<[u8]>,
        /// The audio level header extension (RFC 6464, -dBov), if the
        /// packet carried it.
        audio_level: Option<i8>,
        /// When the datagram was handed to [`PeerTransport::handle_receive`].
        received_at: Instant,
    },
    /// The server asks for a keyframe on one of our tracks.
    KeyframeRequest {
        /// The track's mid.
        mid: String,
        /// The simulcast layer asked for (its rid); `None` for a track
        /// without layers.
        rid: Option<String>,
        /// `true` for FIR, `false` for PLI.
        full: bool,
    },
    /// A data channel opened.
    ChannelOpen {
        /// SCTP stream id.
        stream_id: u16,
        /// Channel label.
        label: String,
    },
    /// A data channel message.
    ChannelData {
        /// SCTP stream id.
        stream_id: u16,
        /// Binary (`true`) or text message.
        binary: bool,
        /// The message.
        data: Vec<u8>,
    },
    /// A data channel closed.
    ChannelClose {
        /// SCTP stream id.
        stream_id: u16,
    },
}

/// A track declared with [`PeerTransport::add_track`] or
/// [`PeerTransport::add_simulcast_track`].
#[derive(Clone, Debug, PartialEq)]
pub struct LocalTrack {
    /// The track's mid on this transport (`"0"`, `"1"`, ...).
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec's MIME type as the router spells it.
    pub mime_type: String,
    /// Media SSRC (for a simulcast track, its first layer's).
    pub ssrc: u32,
    /// Retransmission SSRC, for video with RTX (simulcast layers have none).
    pub rtx_ssrc: Option<u32>,
    /// The router payload type to write with.
    pub payload_type: u8,
    /// Clock rate of RTP timestamps, in Hz.
    pub clock_rate: u32,
    /// What to send in `publish{rtpParameters}`: what mediasoup-client's
    /// `produce` event would give, with the router's payload types and ids.
    pub rtp_parameters: RtpParameters,
    /// The simulcast layers, lowest first (in the order of the rids given
    /// to [`PeerTransport::add_simulcast_track`]); empty for a track
    /// without layers.
    pub layers: Vec<LocalLayer>,
}

/// One simulcast layer of a [`LocalTrack`]: a send stream of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalLayer {
    /// Its RTP stream id, as in `rtpParameters.encodings[i].rid`.
    pub rid: String,
    /// Its media SSRC (not in the RTP parameters: the server learns it from
    /// the first packets, which carry the mid and rid header extensions).
    pub ssrc: u32,
}

#[derive(Clone, Debug)]
struct RxConsumer {
    mid: String,
    kind: MediaKind,
    ssrc: u32,
}

/// One WebRTC transport to the server, sans-IO. See the [module
/// documentation](self).
pub struct PeerTransport {
    rtc: Rtc,
    id: TransportId,
    direction: TransportDirection,
    proto: IceProtocol,
    local_addr: SocketAddr,
    server_addr: SocketAddr,
    table: RouterTable,
    cname: String,
    sctp: bool,
    tracks: HashMap<String, LocalTrack>,
    consumers: HashMap<ConsumerId, RxConsumer>,
    rx_by_ssrc: HashMap<u32, ConsumerId>,
    channels: HashMap<u16, ChannelId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PeerEvent>,
    timeout: Option<Instant>,
    last_now: Instant,
    dtls_up: bool,
    ice_up: bool,
    connected: bool,
    /// When the last datagram arrived.
    last_received: Option<Instant>,
    /// When a binding request left with nothing received since.
    unanswered_since: Option<Instant>,
    /// The path went silent with a check unanswered: reported
    /// `Disconnected` until a datagram arrives.
    stalled: bool,
    /// See [`PeerTransport::set_stall_after`].
    stall_after: Option<Duration>,
    /// The audio level (RFC 6464, -dBov) written on audio packets; `None`:
    /// no extension.
    audio_level: Option<i8>,
    failure: Option<String>,
    // `DirectApi` needs `&mut Rtc` even to read these, so they are copied
    // at construction.
    local_fingerprint: Fingerprint,
    local_ice: IceParameters,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("local_addr", &self.local_addr)
            .field("server_addr", &self.server_addr)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// Which of the server's candidates a transport uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IceProtocol {
    /// The UDP candidate (the default; what browsers prefer).
    #[default]
    Udp,
    /// Only the passive TCP candidate (ICE-TCP, RFC 6544), as a client
    /// behind a firewall that drops UDP must. The caller connects a TCP
    /// stream to [`server_candidate`] and carries each datagram with RFC
    /// 4571 framing (`pulsewave_core::framing`).
    Tcp,
}

impl IceProtocol {
    fn name(self) -> &'static str {
        match self {
            IceProtocol::Udp => "udp",
            IceProtocol::Tcp => "tcp",
        }
    }

    fn str0m(self) -> Protocol {
        match self {
            IceProtocol::Udp => Protocol::Udp,
            IceProtocol::Tcp => Protocol::Tcp,
        }
    }
}

/// Chooses the server's candidate of protocol `proto`, preferring the
/// family of `local` (when known).
pub fn server_candidate(
    options: &TransportOptions,
    proto: IceProtocol,
    local: Option<SocketAddr>,
) -> Option<SocketAddr> {
    let udp: Vec<SocketAddr> = options
        .ice_candidates
        .iter()
        .filter(|c| c.protocol.eq_ignore_ascii_case(proto.name()))
        .filter_map(|c| {
            let ip: IpAddr = c.address.parse().or_else(|_| c.ip.parse()).ok()?;
            Some(SocketAddr::new(ip, c.port))
        })
        .collect();
    udp.iter()
        .find(|a| local.is_none_or(|l| a.is_ipv4() == l.is_ipv4()))
        .or_else(|| udp.first())
        .copied()
}

/// Our host candidate at `addr` (an active one for TCP: we connect).
fn local_candidate(proto: IceProtocol, addr: SocketAddr) -> Result<Candidate, ClientError> {
    let c = match proto {
        IceProtocol::Udp => Candidate::host(addr, "udp"),
        IceProtocol::Tcp => Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Active)
            .build(),
    };
    c.map_err(|e| ClientError::InvalidParameters(format!("local address {addr}: {e}")))
}

/// The server's candidate at `addr` (passive for TCP).
fn remote_candidate(proto: IceProtocol, addr: SocketAddr) -> Result<Candidate, ClientError> {
    let c = match proto {
        IceProtocol::Udp => Candidate::host(addr, "udp"),
        IceProtocol::Tcp => Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Passive)
            .build(),
    };
    c.map_err(|e| ClientError::InvalidParameters(format!("server address {addr}: {e}")))
}

/// The server's certificate fingerprint; mediasoup-client uses the last one,
/// and we prefer sha-256.
fn server_fingerprint(options: &TransportOptions) -> Result<Fingerprint, ClientError> {
    let fps = &options.dtls_parameters.fingerprints;
    let chosen = fps
        .iter()
        .rev()
        .find(|f| f.algorithm.eq_ignore_ascii_case("sha-256"))
        .or_else(|| fps.last())
        .ok_or_else(|| ClientError::InvalidParameters("server sent no DTLS fingerprint".into()))?;
    format!("{} {}", chosen.algorithm.to_ascii_lowercase(), chosen.value)
        .parse()
        .map_err(|e| ClientError::InvalidParameters(format!("server DTLS fingerprint: {e}")))
}

/// str0m silently rewrites mids it cannot hold; refuse them instead.
fn valid_mid(mid: &str) -> bool {
    !mid.is_empty() && mid.len() <= 16 && mid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The same for rids: str0m holds at most 8 bytes (and PulseWave's server
/// accepts letters and digits only).
fn valid_rid(rid: &str) -> bool {
    !rid.is_empty() && rid.len() <= 8 && rid.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn str0m_kind(kind: MediaKind) -> str0m::media::MediaKind {
    match kind {
        MediaKind::Audio => str0m::media::MediaKind::Audio,
        MediaKind::Video => str0m::media::MediaKind::Video,
    }
}

/// Whether `datagram` is a STUN binding request (RFC 8489: message type
/// 0x0001 and the magic cookie).
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[0..2] == [0x00, 0x01]
        && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

fn reliability(max_retransmits: Option<u16>, max_packet_life_time: Option<u16>) -> Reliability {
    match (max_retransmits, max_packet_life_time) {
        (Some(retransmits), _) => Reliability::MaxRetransmits { retransmits },
        (None, Some(lifetime)) => Reliability::MaxPacketLifetime { lifetime },
        (None, None) => Reliability::Reliable,
    }
}

impl PeerTransport {
    /// Builds the transport for the server transport described by `options`
    /// (from `transport-created`), with the payload types and extension ids
    /// of `router_caps` (from `joined.rtpCapabilities`).
    ///
    /// `local_addr` must be the exact address of the UDP socket the caller
    /// uses for this transport (not `0.0.0.0`): it becomes the ICE host
    /// candidate. Use one socket per transport. ICE, DTLS and (when
    /// `options` has SCTP parameters) SCTP start right away: send
    /// `connect-transport` with [`dtls_parameters`](Self::dtls_parameters)
    /// before sending the first [`Transmit`], so the server knows the
    /// fingerprint when the DTLS handshake arrives.
    pub fn new(
        now: Instant,
        direction: TransportDirection,
        local_addr: SocketAddr,
        options: &TransportOptions,
        router_caps: &RtpCapabilities,
    ) -> Result<Self, ClientError> {
        Self::with_protocol(
            now,
            direction,
            IceProtocol::Udp,
            local_addr,
            options,
            router_caps,
        )
    }

    /// As [`new`](Self::new), over the server's candidate of protocol
    /// `proto`. For [`IceProtocol::Tcp`], `local_addr` is the local
    /// address of the TCP stream connected to the server's TCP candidate,
    /// and every datagram in and out travels on that stream.
    pub fn with_protocol(
        now: Instant,
        direction: TransportDirection,
        proto: IceProtocol,
        local_addr: SocketAddr,
        options: &TransportOptions,
        router_caps: &RtpCapabilities,
    ) -> Result<Self, ClientError> {
        let server_addr = server_candidate(options, proto, Some(local_addr)).ok_or_else(|| {
            ClientError::InvalidParameters(format!(
                "server sent no usable {} ICE candidate",
                proto.name()
            ))
        })?;
        let fingerprint = server_fingerprint(options)?;
        let local_candidate = local_candidate(proto, local_addr)?;
        let remote_candidate = remote_candidate(proto, server_addr)?;

        let table = RouterTable::new(router_caps);
        let config = table.configure(RtcConfig::new().set_rtp_mode(true));
        let mut rtc = config.build(now);

        rtc.add_local_candidate(local_candidate);
        rtc.add_remote_candidate(remote_candidate);
        let sctp = options.sctp_parameters.is_some();
        let (local_fingerprint, local_ice) = {
            let mut api = rtc.direct_api();
            api.set_ice_controlling(true);
            api.set_remote_ice_credentials(IceCreds {
                ufrag: options.ice_parameters.username_fragment.clone(),
                pass: options.ice_parameters.password.clone(),
            });
            api.set_remote_fingerprint(fingerprint);
            api.enable_twcc_feedback();
            api.start_dtls(true)?;
            if sctp {
                api.start_sctp(true);
            }
            let creds = api.local_ice_credentials();
            (
                api.local_dtls_fingerprint().clone(),
                IceParameters {
                    username_fragment: creds.ufrag,
                    password: creds.pass,
                    ice_lite: false,
                },
            )
        };

        let mut peer = PeerTransport {
            rtc,
            id: options.id.clone(),
            direction,
            proto,
            local_addr,
            server_addr,
            table,
            cname: pulsewave_protocol::random_string(16),
            sctp,
            tracks: HashMap::new(),
            consumers: HashMap::new(),
            rx_by_ssrc: HashMap::new(),
            channels: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            last_now: now,
            dtls_up: false,
            ice_up: false,
            connected: false,
            last_received: None,
            unanswered_since: None,
            stalled: false,
            stall_after: Some(DEFAULT_STALL_AFTER),
            audio_level: Some(SYNTHETIC_AUDIO_LEVEL),
            failure: None,
            local_fingerprint,
            local_ice,
        };
        // A first timeout starts ICE now; str0m's first wakeup would
        // otherwise be about a second away.
        peer.handle_timeout(now);
        Ok(peer)
    }

    // ------------------------------------------------------------------
    // Getters

    /// The server's transport id.
    pub fn id(&self) -> &TransportId {
        &self.id
    }

    /// Send or receive.
    pub fn direction(&self) -> TransportDirection {
        self.direction
    }

    /// Our DTLS parameters for `connect-transport`: role `client` and our
    /// certificate's sha-256 fingerprint.
    pub fn dtls_parameters(&self) -> DtlsParameters {
        let fp = &self.local_fingerprint;
        let value = fp
            .bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        DtlsParameters {
            role: Some(DtlsRole::Client),
            fingerprints: vec![DtlsFingerprint {
                algorithm: fp.hash_func.to_ascii_lowercase(),
                value,
            }],
        }
    }

    /// Our ICE credentials. The real server learns them from our first STUN
    /// request; test stand-ins may set them directly.
    pub fn local_ice_parameters(&self) -> IceParameters {
        self.local_ice.clone()
    }

    /// UDP or TCP.
    pub fn ice_protocol(&self) -> IceProtocol {
        self.proto
    }

    /// The address of the socket this transport uses.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's media address (its UDP ICE candidate).
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// Whether ICE and DTLS are up (and the path has not stalled, see
    /// [`set_stall_after`](Self::set_stall_after)).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A connected transport that has received nothing for `after` while a
    /// binding request it sent went unanswered for [`STALL_UNANSWERED`] is
    /// reported lost ([`PeerEvent::Disconnected`]) at once, as the
    /// JavaScript client's stall check does, rather than when str0m's ICE
    /// agent gives the pair up (its checks back off to 3 s apart: about
    /// 15 s). The next datagram that arrives makes it `Connected` again.
    /// Default [`DEFAULT_STALL_AFTER`]; `None` turns the check off.
    pub fn set_stall_after(&mut self, after: Option<Duration>) {
        self.stall_after = after;
    }

    /// When the stall check fires, if nothing arrives before.
    fn stall_deadline(&self) -> Option<Instant> {
        let after = self.stall_after?;
        if !self.connected || self.stalled {
            return None;
        }
        let unanswered = self.unanswered_since?;
        let last = self.last_received?;
        Some((last + after).max(unanswered + STALL_UNANSWERED))
    }

    /// Whether the transport can still do anything (not closed, no fatal
    /// error).
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// The fatal error that stopped the transport, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A track declared with [`add_track`](Self::add_track), by mid.
    pub fn local_track(&self, mid: &str) -> Option<&LocalTrack> {
        self.tracks.get(mid)
    }

    /// The str0m stack underneath, for fuzzing and tests that must reach
    /// below this API (to encrypt RTP and RTCP of their own making with the
    /// transport's SRTP keys, say). Needs the `test-hooks` feature; never in
    /// production builds.
    #[cfg(feature = "test-hooks")]
    pub fn rtc_mut(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    /// The consumer that receives the media SSRC `ssrc`.
    pub fn consumer_for_ssrc(&self, ssrc: u32) -> Option<&ConsumerId> {
        self.rx_by_ssrc.get(&ssrc)
    }

    /// The mid of a consumer added with [`add_consumer`](Self::add_consumer).
    pub fn consumer_mid(&self, consumer_id: &ConsumerId) -> Option<&str> {
        self.consumers.get(consumer_id).map(|c| c.mid.as_str())
    }

    // ------------------------------------------------------------------
    // Inputs

    /// Restarts ICE with the server's new parameters (from `ice-restarted`,
    /// after `restart-ice`), as mediasoup-client's
    /// `transport.restartIce({iceParameters})`: new local credentials (the
    /// server learns them from our next binding request), the server's new
    /// ones, and fresh connectivity checks to its candidate. DTLS, SRTP,
    /// tracks and consumers stay.
    pub fn restart_ice(&mut self, now: Instant, server: &IceParameters) -> Result<(), ClientError> {
        self.restart_ice_from(now, server, None)
    }

    /// [`restart_ice`](Self::restart_ice) from a new local address (a new
    /// socket, such as a new TCP connection after a network change): the
    /// old host candidate is replaced in the same step, so that no check
    /// leaves with the old credentials from the new address.
    pub fn restart_ice_from(
        &mut self,
        now: Instant,
        server: &IceParameters,
        local_addr: Option<SocketAddr>,
    ) -> Result<(), ClientError> {
        let now = self.advance(now);
        let remote = remote_candidate(self.proto, self.server_addr)?;
        if let Some(addr) = local_addr {
            let old = local_candidate(self.proto, self.local_addr)?;
            let new = local_candidate(self.proto, addr)?;
            self.rtc.direct_api().invalidate_candidate(&old);
            self.rtc.add_local_candidate(new);
            self.local_addr = addr;
        }
        let local = IceCreds::new();
        {
            let mut api = self.rtc.direct_api();
            api.ice_restart(local.clone(), true);
            api.set_remote_ice_credentials(IceCreds {
                ufrag: server.username_fragment.clone(),
                pass: server.password.clone(),
            });
        }
        self.rtc.add_remote_candidate(remote);
        self.local_ice = IceParameters {
            username_fragment: local.ufrag,
            password: local.pass,
            ice_lite: false,
        };
        self.drain();
        self.handle_timeout(now);
        Ok(())
    }

    /// The transport's socket moved to `local_addr` (a network change: a
    /// new interface, a new NAT binding): the old host candidate is
    /// dropped and the new one used. Follow with an ICE restart.
    pub fn rebind(&mut self, now: Instant, local_addr: SocketAddr) -> Result<(), ClientError> {
        let now = self.advance(now);
        let old = local_candidate(self.proto, self.local_addr)?;
        let new = local_candidate(self.proto, local_addr)?;
        self.rtc.direct_api().invalidate_candidate(&old);
        self.rtc.add_local_candidate(new);
        self.local_addr = local_addr;
        self.drain();
        self.handle_timeout(now);
        Ok(())
    }

    /// A datagram arrived on the transport's socket from `source`.
    ///
    /// Errors for datagrams that are not STUN, DTLS, RTP or RTCP, or that
    /// str0m rejects; the transport is unchanged and can go on.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), ClientError> {
        let now = self.advance(now);
        if !self.rtc.is_alive() {
            return Err(ClientError::Closed);
        }
        let receive = Receive::new(self.proto.str0m(), source, self.local_addr, contents)
            .map_err(|e| ClientError::WebRtc(format!("unrecognised datagram: {e}")))?;
        // Something arrived: the path is alive.
        self.last_received = Some(now);
        self.unanswered_since = None;
        let result = self.rtc.handle_input(Input::Receive(now, receive));
        self.drain();
        if self.stalled && self.rtc.is_alive() {
            self.stalled = false;
            if self.ice_up && self.dtls_up {
                self.set_connected(true);
            }
        }
        result.map_err(Into::into)
    }

    /// Time passed: call when [`poll_timeout`](Self::poll_timeout) is reached
    /// (calling earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(transport = %self.id, error = %e, "timeout handling failed");
        }
        self.drain();
        if self.stall_deadline().is_some_and(|t| t <= now) {
            tracing::debug!(transport = %self.id, "path silent with a check unanswered: lost");
            self.stalled = true;
            self.set_connected(false);
        }
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    // ------------------------------------------------------------------
    // Commands

    /// Declares a track to publish with the router's codec `mime_type`
    /// (`"audio/opus"`, `"video/VP8"`, ...): a new mid, random SSRCs and, for
    /// video when `with_rtx` and the router has RTX for the codec, an RTX
    /// stream. Send the returned [`LocalTrack::rtp_parameters`] in `publish`.
    pub fn add_track(
        &mut self,
        kind: MediaKind,
        mime_type: &str,
        with_rtx: bool,
    ) -> Result<LocalTrack, ClientError> {
        let codec: RouterCodec =
            self.table
                .find_codec(kind, mime_type)
                .cloned()
                .ok_or_else(|| {
                    ClientError::Unsupported(format!(
                        "{kind} codec {mime_type} is not in the router's capabilities"
                    ))
                })?;
        let mid = self.free_mid();
        let ssrc = self.fresh_ssrc();
        let rtx_ssrc = (with_rtx && kind == MediaKind::Video && codec.rtx.is_some())
            .then(|| self.fresh_ssrc_except(ssrc));
        let rtp_parameters =
            self.table
                .producer_parameters(&codec, &mid, ssrc, rtx_ssrc, &self.cname);
        {
            let smid = Mid::from(mid.as_str());
            let mut api = self.rtc.direct_api();
            api.declare_media(smid, str0m_kind(kind));
            api.declare_stream_tx(ssrc.into(), rtx_ssrc.map(Into::into), smid, None);
        }
        let track = LocalTrack {
            mid: mid.clone(),
            kind,
            mime_type: codec.mime_type.clone(),
            ssrc,
            rtx_ssrc,
            payload_type: codec.pt,
            clock_rate: codec.clock_rate,
            rtp_parameters,
            layers: Vec::new(),
        };
        self.tracks.insert(mid, track.clone());
        self.drain();
        Ok(track)
    }

    /// Declares a simulcast track with the router's video codec `mime_type`:
    /// a new mid and one send stream per rid in `rids` (lowest layer first,
    /// as mediasoup-client orders them), each with a random SSRC and no
    /// RTX. Until an RTCP receiver report acknowledges a layer's SSRC, its
    /// packets carry the mid and rid header extensions, so the server can
    /// bind the SSRC to the layer.
    ///
    /// The returned [`LocalTrack::rtp_parameters`] are what mediasoup-client
    /// sends for simulcast: encodings `[{rid}, ...]` without SSRCs, and the
    /// rid header extension (when the router has one) after the mid's.
    /// Write with [`write_rtp_layer`](Self::write_rtp_layer).
    ///
    /// Errors for audio, a codec the router lacks, no rid, a rid that is not
    /// 1 to 8 letters or digits, or a rid given twice.
    pub fn add_simulcast_track(
        &mut self,
        kind: MediaKind,
        mime_type: &str,
        rids: &[&str],
    ) -> Result<LocalTrack, ClientError> {
        let invalid = |m: String| ClientError::InvalidParameters(m);
        if kind != MediaKind::Video {
            return Err(ClientError::Unsupported(
                "simulcast is for video tracks".into(),
            ));
        }
        if rids.is_empty() {
            return Err(invalid("a simulcast track needs at least one rid".into()));
        }
        for (i, rid) in rids.iter().enumerate() {
            if !valid_rid(rid) {
                return Err(invalid(format!("rid {rid:?} is not 1-8 letters or digits")));
            }
            if rids[..i].contains(rid) {
                return Err(invalid(format!("rid {rid:?} given twice")));
            }
        }
        let codec: RouterCodec =
            self.table
                .find_codec(kind, mime_type)
                .cloned()
                .ok_or_else(|| {
                    ClientError::Unsupported(format!(
                        "{kind} codec {mime_type} is not in the router's capabilities"
                    ))
                })?;
        let mid = self.free_mid();
        let mut layers: Vec<LocalLayer> = Vec::with_capacity(rids.len());
        for rid in rids {
            let ssrc = loop {
                let s = self.fresh_ssrc();
                if layers.iter().all(|l| l.ssrc != s) {
                    break s;
                }
            };
            layers.push(LocalLayer {
                rid: (*rid).to_owned(),
                ssrc,
            });
        }
        // Built as for a single track, then reshaped as mediasoup-client
        // shapes simulcast: encodings by rid only, plus the rid extension.
        let mut rtp_parameters =
            self.table
                .producer_parameters(&codec, &mid, layers[0].ssrc, None, &self.cname);
        rtp_parameters.encodings = layers
            .iter()
            .map(|l| RtpEncodingParameters {
                rid: Some(l.rid.clone()),
                ..Default::default()
            })
            .collect();
        let rid_ext = self.table.extensions.iter().find(|e| {
            e.kind == kind
                && e.uri == uri::RID
                && matches!(
                    e.direction,
                    None | Some(RtpHeaderExtensionDirection::Sendrecv)
                        | Some(RtpHeaderExtensionDirection::Recvonly)
                )
        });
        if let Some(e) = rid_ext {
            let at = rtp_parameters
                .header_extensions
                .iter()
                .position(|h| h.uri == uri::MID)
                .map_or(0, |i| i + 1);
            rtp_parameters.header_extensions.insert(
                at,
                RtpHeaderExtensionParameters {
                    uri: e.uri.clone(),
                    id: e.id,
                    encrypt: false,
                    parameters: CodecParameters::new(),
                },
            );
        }
        {
            let smid = Mid::from(mid.as_str());
            let mut api = self.rtc.direct_api();
            api.declare_media(smid, str0m_kind(kind));
            for l in &layers {
                api.declare_stream_tx(l.ssrc.into(), None, smid, Some(Rid::from(l.rid.as_str())));
            }
        }
        let track = LocalTrack {
            mid: mid.clone(),
            kind,
            mime_type: codec.mime_type.clone(),
            ssrc: layers[0].ssrc,
            rtx_ssrc: None,
            payload_type: codec.pt,
            clock_rate: codec.clock_rate,
            rtp_parameters,
            layers,
        };
        self.tracks.insert(mid, track.clone());
        self.drain();
        Ok(track)
    }

    /// Removes a track declared with [`add_track`](Self::add_track) or
    /// [`add_simulcast_track`](Self::add_simulcast_track).
    pub fn remove_track(&mut self, mid: &str) -> Result<(), ClientError> {
        let track = self
            .tracks
            .remove(mid)
            .ok_or_else(|| ClientError::NotFound(format!("track mid {mid}")))?;
        {
            let mut api = self.rtc.direct_api();
            api.remove_stream_tx(track.ssrc.into());
            for l in &track.layers {
                api.remove_stream_tx(l.ssrc.into());
            }
            api.remove_media(Mid::from(mid));
        }
        self.drain();
        Ok(())
    }

    /// Sends one RTP packet on the track with `mid`.
    ///
    /// `seq_no` is the extended sequence number (start below 65536 and count
    /// up by one per packet; the low 16 bits go on the wire). Packets are
    /// kept for retransmission when the track has RTX. Audio packets carry
    /// an audio level of -30 dBov. Errors when the mid is unknown, the track
    /// is a simulcast track (use [`write_rtp_layer`](Self::write_rtp_layer))
    /// or the transport is not connected.
    pub fn write_rtp(
        &mut self,
        mid: &str,
        seq_no: u64,
        rtp_time: u32,
        marker: bool,
        payload: impl Into<Arc<[u8]>>,
        now: Instant,
    ) -> Result<(), ClientError> {
        let (ssrc, pt, kind, nackable) = {
            let t = self
                .tracks
                .get(mid)
                .ok_or_else(|| ClientError::NotFound(format!("track mid {mid}")))?;
            if !t.layers.is_empty() {
                return Err(ClientError::InvalidParameters(format!(
                    "track mid {mid} is a simulcast track: say which layer with write_rtp_layer"
                )));
            }
            (t.ssrc, t.payload_type, t.kind, t.rtx_ssrc.is_some())
        };
        self.write_on(
            ssrc,
            pt,
            kind,
            nackable,
            seq_no,
            rtp_time,
            marker,
            payload.into(),
            now,
        )
    }

    /// Sends one RTP packet on the simulcast layer `rid` of the track with
    /// `mid` (from [`add_simulcast_track`](Self::add_simulcast_track)).
    ///
    /// Each layer is an RTP stream of its own: `seq_no` and `rtp_time`
    /// count per layer, as for [`write_rtp`](Self::write_rtp). Layers have
    /// no RTX, so nothing is kept for retransmission. Errors when the mid or
    /// the rid is unknown or the transport is not connected.
    #[allow(clippy::too_many_arguments)] // `write_rtp`'s arguments plus the rid
    pub fn write_rtp_layer(
        &mut self,
        mid: &str,
        rid: &str,
        seq_no: u64,
        rtp_time: u32,
        marker: bool,
        payload: impl Into<Arc<[u8]>>,
        now: Instant,
    ) -> Result<(), ClientError> {
        let (ssrc, pt, kind) = {
            let t = self
                .tracks
                .get(mid)
                .ok_or_else(|| ClientError::NotFound(format!("track mid {mid}")))?;
            let layer =
                t.layers.iter().find(|l| l.rid == rid).ok_or_else(|| {
                    ClientError::NotFound(format!("layer {rid} of track mid {mid}"))
                })?;
            (layer.ssrc, t.payload_type, t.kind)
        };
        self.write_on(
            ssrc,
            pt,
            kind,
            false,
            seq_no,
            rtp_time,
            marker,
            payload.into(),
            now,
        )
    }

    /// Sets the audio level (RFC 6464: 0 is the loudest, -127 silence)
    /// written on this transport's audio packets from now on; `None` sends
    /// none. [`SYNTHETIC_AUDIO_LEVEL`] by default.
    pub fn set_audio_level(&mut self, level: Option<i8>) {
        self.audio_level = level;
    }

    /// Writes one packet on the send stream `ssrc`.
    #[allow(clippy::too_many_arguments)]
    fn write_on(
        &mut self,
        ssrc: u32,
        pt: u8,
        kind: MediaKind,
        nackable: bool,
        seq_no: u64,
        rtp_time: u32,
        marker: bool,
        payload: Arc<[u8]>,
        now: Instant,
    ) -> Result<(), ClientError> {
        if !self.connected {
            return Err(ClientError::NotConnected(format!(
                "transport {} is not connected",
                self.id
            )));
        }
        if now > self.last_now {
            self.handle_timeout(now);
        }
        let now = self.last_now;
        let ext_vals = match kind {
            MediaKind::Audio => ExtensionValues {
                audio_level: self.audio_level,
                voice_activity: Some(self.audio_level.is_some_and(|l| l > -127)),
                ..Default::default()
            },
            MediaKind::Video => ExtensionValues::default(),
        };
        {
            let mut api = self.rtc.direct_api();
            let stream = api
                .stream_tx(&ssrc.into())
                .ok_or_else(|| ClientError::NotFound(format!("send stream {ssrc}")))?;
            stream.write_rtp(
                RtpWrite::new(pt.into(), seq_no.into(), rtp_time, now, payload)
                    .marker(marker)
                    .ext_vals(ext_vals)
                    .nackable(nackable),
            );
        }
        self.drain();
        Ok(())
    }

    /// Prepares to receive a consumer (from `track-subscribed`): declares
    /// its mid and expects its SSRC (and RTX SSRC).
    pub fn add_consumer(
        &mut self,
        consumer_id: ConsumerId,
        kind: MediaKind,
        rtp_parameters: &RtpParameters,
    ) -> Result<(), ClientError> {
        let invalid = |m: String| ClientError::InvalidParameters(m);
        let mid = rtp_parameters
            .mid
            .clone()
            .ok_or_else(|| invalid("consumer rtpParameters has no mid".into()))?;
        if !valid_mid(&mid) {
            return Err(invalid(format!(
                "consumer mid {mid:?} is not 1-16 alphanumeric characters"
            )));
        }
        if self.consumers.contains_key(&consumer_id) {
            return Err(invalid(format!("consumer {consumer_id} already added")));
        }
        if self.mid_in_use(&mid) {
            return Err(invalid(format!(
                "mid {mid} already in use on this transport"
            )));
        }
        let encoding = rtp_parameters
            .encodings
            .first()
            .ok_or_else(|| invalid("consumer rtpParameters has no encoding".into()))?;
        let ssrc = encoding
            .ssrc
            .ok_or_else(|| invalid("consumer encoding has no ssrc".into()))?;
        let rtx_ssrc = encoding.rtx.map(|r| r.ssrc);
        if self.rx_by_ssrc.contains_key(&ssrc) {
            return Err(invalid(format!("ssrc {ssrc} already expected")));
        }
        let codec = rtp_parameters
            .codecs
            .first()
            .ok_or_else(|| invalid("consumer rtpParameters has no codec".into()))?;
        match self.table.codec_by_pt(codec.payload_type) {
            Some(c) if c.kind == kind => {}
            _ => {
                return Err(ClientError::Unsupported(format!(
                    "consumer payload type {} ({}) is not a router {kind} codec",
                    codec.payload_type, codec.mime_type
                )));
            }
        }
        {
            let smid = Mid::from(mid.as_str());
            let mut api = self.rtc.direct_api();
            api.declare_media(smid, str0m_kind(kind));
            api.expect_stream_rx(ssrc.into(), rtx_ssrc.map(Into::into), smid, None);
        }
        self.rx_by_ssrc.insert(ssrc, consumer_id.clone());
        self.consumers
            .insert(consumer_id, RxConsumer { mid, kind, ssrc });
        self.drain();
        Ok(())
    }

    /// Forgets a consumer (after `unsubscribe` or `track-unsubscribed`).
    pub fn remove_consumer(&mut self, consumer_id: &ConsumerId) -> Result<(), ClientError> {
        let c = self
            .consumers
            .remove(consumer_id)
            .ok_or_else(|| ClientError::NotFound(format!("consumer {consumer_id}")))?;
        self.rx_by_ssrc.remove(&c.ssrc);
        {
            let mut api = self.rtc.direct_api();
            api.remove_stream_rx(c.ssrc.into());
            api.remove_media(Mid::from(c.mid.as_str()));
        }
        self.drain();
        Ok(())
    }

    /// Asks the server for a keyframe on a video consumer (RTCP PLI).
    pub fn request_keyframe(&mut self, consumer_id: &ConsumerId) -> Result<(), ClientError> {
        let c = self
            .consumers
            .get(consumer_id)
            .ok_or_else(|| ClientError::NotFound(format!("consumer {consumer_id}")))?;
        if c.kind != MediaKind::Video {
            return Err(ClientError::Unsupported(
                "keyframe requests are for video consumers".into(),
            ));
        }
        let ssrc = c.ssrc;
        {
            let mut api = self.rtc.direct_api();
            let rx = api
                .stream_rx(&ssrc.into())
                .ok_or_else(|| ClientError::NotFound(format!("receive stream {ssrc}")))?;
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        self.drain();
        Ok(())
    }

    /// Opens a negotiated data channel on SCTP stream `stream_id` to send on
    /// (as mediasoup-client's `produceData` does); announce it with
    /// `publish-data-channel`. `ordered` without `max_retransmits` is
    /// reliable; `ordered: false, max_retransmits: Some(0)` is lossy.
    pub fn open_data_channel(
        &mut self,
        stream_id: u16,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> Result<(), ClientError> {
        self.create_channel(
            stream_id,
            label,
            ordered,
            reliability(max_retransmits, None),
        )
    }

    /// Opens the negotiated data channel of a data consumer, with the stream
    /// parameters the server chose (`data-subscribed`).
    pub fn accept_data_channel(
        &mut self,
        params: &SctpStreamParameters,
        label: &str,
    ) -> Result<(), ClientError> {
        self.create_channel(
            params.stream_id,
            label,
            params.ordered.unwrap_or(true),
            reliability(params.max_retransmits, params.max_packet_life_time),
        )
    }

    fn create_channel(
        &mut self,
        stream_id: u16,
        label: &str,
        ordered: bool,
        reliability: Reliability,
    ) -> Result<(), ClientError> {
        if !self.sctp {
            return Err(ClientError::Unsupported(
                "the server transport has no SCTP parameters".into(),
            ));
        }
        if self.channels.contains_key(&stream_id) {
            return Err(ClientError::InvalidParameters(format!(
                "SCTP stream {stream_id} already in use"
            )));
        }
        let cid = self.rtc.direct_api().create_data_channel(ChannelConfig {
            label: label.to_owned(),
            ordered,
            reliability,
            negotiated: Some(stream_id),
            protocol: String::new(),
        });
        self.channels.insert(stream_id, cid);
        self.drain();
        Ok(())
    }

    /// Closes a data channel.
    pub fn close_data_channel(&mut self, stream_id: u16) -> Result<(), ClientError> {
        let cid = self
            .channels
            .remove(&stream_id)
            .ok_or_else(|| ClientError::NotFound(format!("data channel {stream_id}")))?;
        self.rtc.direct_api().close_data_channel(cid);
        self.drain();
        Ok(())
    }

    /// Sends a message on an open data channel. `Ok(false)` means the
    /// channel's buffer is full and the message was not queued.
    pub fn send_data(
        &mut self,
        stream_id: u16,
        binary: bool,
        data: &[u8],
    ) -> Result<bool, ClientError> {
        let cid = *self
            .channels
            .get(&stream_id)
            .ok_or_else(|| ClientError::NotFound(format!("data channel {stream_id}")))?;
        let written = {
            let mut ch = self.rtc.channel(cid).ok_or_else(|| {
                ClientError::NotConnected(format!("data channel {stream_id} is not open"))
            })?;
            ch.write(binary, data)
        };
        self.drain();
        written.map_err(Into::into)
    }

    /// Starts closing: RTCP BYE, SCTP shutdown and DTLS close_notify are
    /// queued as transmits; then the transport is dead.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        if let Err(e) = self.rtc.close() {
            tracing::debug!(transport = %self.id, error = %e, "close failed");
        }
        self.drain();
        self.set_connected(false);
    }

    // ------------------------------------------------------------------
    // Outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None`
    /// once the transport is dead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.rtc.is_alive() {
            return None;
        }
        match (self.timeout, self.stall_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ------------------------------------------------------------------
    // Internals

    /// The lowest mid not in use: a mid freed by `remove_track` is used
    /// again, as mediasoup-client reuses the media section of a closed
    /// producer.
    fn free_mid(&self) -> String {
        (0u32..)
            .map(|n| n.to_string())
            .find(|m| !self.mid_in_use(m))
            .unwrap_or_default()
    }

    fn mid_in_use(&self, mid: &str) -> bool {
        self.tracks.contains_key(mid) || self.consumers.values().any(|c| c.mid == mid)
    }

    fn ssrc_in_use(&self, ssrc: u32) -> bool {
        ssrc == 0
            || self.rx_by_ssrc.contains_key(&ssrc)
            || self.tracks.values().any(|t| {
                t.ssrc == ssrc
                    || t.rtx_ssrc == Some(ssrc)
                    || t.layers.iter().any(|l| l.ssrc == ssrc)
            })
    }

    fn fresh_ssrc(&self) -> u32 {
        loop {
            let s: u32 = rand::random();
            if !self.ssrc_in_use(s) {
                return s;
            }
        }
    }

    fn fresh_ssrc_except(&self, other: u32) -> u32 {
        loop {
            let s = self.fresh_ssrc();
            if s != other {
                return s;
            }
        }
    }

    fn set_connected(&mut self, connected: bool) {
        if connected != self.connected {
            self.connected = connected;
            self.events.push_back(if connected {
                PeerEvent::Connected
            } else {
                PeerEvent::Disconnected
            });
        }
    }

    /// Drains the `Rtc` until it returns a timeout (str0m's run-loop rule).
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if self.unanswered_since.is_none() && is_binding_request(&t.contents) {
                        self.unanswered_since = Some(self.last_now);
                    }
                    self.transmits.push_back(Transmit {
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::warn!(transport = %self.id, error = %e, "transport failed");
                    self.failure = Some(e.to_string());
                    self.rtc.disconnect();
                    self.timeout = None;
                    break;
                }
            }
        }
        if !self.rtc.is_alive() {
            self.set_connected(false);
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.dtls_up = true;
                self.ice_up = true;
                self.set_connected(true);
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.ice_up = true;
                    if self.dtls_up {
                        self.set_connected(true);
                    }
                }
                IceConnectionState::Disconnected => {
                    self.ice_up = false;
                    self.set_connected(false);
                }
                _ => {}
            },
            Event::Closed => {
                self.dtls_up = false;
                self.set_connected(false);
            }
            Event::RtpPacket(p) => {
                let ssrc = *p.header.ssrc;
                let mid = match self
                    .rx_by_ssrc
                    .get(&ssrc)
                    .and_then(|c| self.consumers.get(c))
                {
                    Some(c) => c.mid.clone(),
                    None => p
                        .header
                        .ext_vals
                        .mid
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                };
                self.events.push_back(PeerEvent::RtpPacket {
                    mid,
                    ssrc,
                    payload_type: *p.header.payload_type,
                    seq_no: *p.seq_no,
                    rtp_time: p.header.timestamp,
                    marker: p.header.marker,
                    audio_level: p.header.ext_vals.audio_level,
                    payload: p.payload,
                    received_at: p.timestamp,
                });
            }
            Event::KeyframeRequest(r) => self.events.push_back(PeerEvent::KeyframeRequest {
                mid: r.mid.to_string(),
                rid: r.rid.map(|r| r.to_string()),
                full: r.kind == KeyframeRequestKind::Fir,
            }),
            Event::ChannelOpen(cid, label) => {
                if let Some(stream_id) = self.stream_of(cid) {
                    self.events
                        .push_back(PeerEvent::ChannelOpen { stream_id, label });
                }
            }
            Event::ChannelData(d) => {
                if let Some(stream_id) = self.stream_of(d.id) {
                    self.events.push_back(PeerEvent::ChannelData {
                        stream_id,
                        binary: d.binary,
                        data: d.data,
                    });
                }
            }
            Event::ChannelClose(cid) => {
                if let Some(stream_id) = self.stream_of(cid) {
                    self.channels.remove(&stream_id);
                    self.events.push_back(PeerEvent::ChannelClose { stream_id });
                }
            }
            _ => {}
        }
    }

    fn stream_of(&self, cid: ChannelId) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, c)| **c == cid)
            .map(|(s, _)| *s)
    }
}
