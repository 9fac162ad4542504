//! Room configuration.

use std::net::SocketAddr;
use std::time::Duration;

use pulsewave_protocol::rtp::RtpCapabilities;

use crate::ortc::default_router_capabilities;

/// How a [`Room`](crate::Room) behaves. `Default` gives mediasoup-like
/// settings with the candidate `127.0.0.1:0`; set [`RoomConfig::local_addr`]
/// to the address clients send media to.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// The router's RTP capabilities (codecs and header extensions).
    pub rtp_capabilities: RtpCapabilities,
    /// The address announced to clients as the ICE host candidate: the
    /// public (announced) IP and the UDP port of the socket that carries the
    /// room's traffic.
    pub local_addr: SocketAddr,
    /// The address announced as the passive TCP host candidate (ICE-TCP,
    /// RFC 6544, with RFC 4571 framing done by the driver), beside the UDP
    /// one; `None`: UDP only. Its priority is lower than the UDP
    /// candidate's, so a client that reaches both uses UDP.
    pub tcp_addr: Option<SocketAddr>,
    /// A second UDP host candidate of the other address family (dual
    /// stack: an IPv6 address beside an IPv4 `local_addr`), carried by a
    /// second socket of the driver; `None`: one family only.
    pub local_addr6: Option<SocketAddr>,
    /// The passive TCP host candidate of that second family, if the driver
    /// listens on TCP there too.
    pub tcp_addr6: Option<SocketAddr>,
    /// A connected transport that receives nothing for this long is closed
    /// (ICE consent lost); so is a transport that does not complete ICE and
    /// DTLS this long after `connect-transport`.
    pub ice_timeout: Duration,
    /// Minimum time between two keyframe requests sent to one publisher.
    pub keyframe_request_interval: Duration,
    /// Largest SCTP message accepted and sent, in bytes.
    pub sctp_max_message_size: u32,
    /// Most transports one participant may hold.
    pub max_transports_per_participant: usize,
    /// Most producers one participant may hold.
    pub max_producers_per_participant: usize,
    /// Most consumers one participant may hold.
    pub max_consumers_per_participant: usize,
    /// Most consumers on one receive transport.
    pub max_consumers_per_transport: usize,
    /// Most consumers one participant may hold of one producer (mediasoup
    /// allows several, LiveKit one; two covers a thumbnail and a spotlight).
    pub max_consumers_per_producer: usize,
    /// Most encodings (simulcast layers) of one producer. Browsers send at
    /// most four.
    pub max_encodings_per_producer: usize,
    /// Most receive ssrcs (media and RTX) one send transport may declare.
    pub max_ssrcs_per_transport: usize,
    /// Most data producers one participant may hold.
    pub max_data_producers_per_participant: usize,
    /// Most data consumers one participant may hold.
    pub max_data_consumers_per_participant: usize,
    /// Messages per second one data producer may send; more are dropped
    /// (and counted) instead of relayed to every subscriber. The burst is
    /// twice this.
    pub max_data_messages_per_second: u32,
    /// Bytes per second one data producer may send, likewise.
    pub max_data_bytes_per_second: u32,
    /// Media bitrate (RTP payload, bits per second) one send transport may
    /// bring in; packets past it (one second of burst) are dropped and
    /// counted, as mediasoup's `setMaxIncomingBitrate` bounds a publisher.
    pub max_incoming_bitrate: u64,
    /// Media bitrate one receive transport may be sent; packets past it
    /// are dropped and counted. A safety bound for a subscriber with many
    /// consumers, not a congestion control.
    pub max_outgoing_bitrate: u64,
    /// Estimate the bandwidth toward each subscriber (transport-wide-cc)
    /// and fit its layers in it. Off: subscribers get the layers they
    /// prefer whatever their network (the forwarding of the first
    /// versions, for comparison).
    pub bandwidth_estimation: bool,
    /// The estimate a receive transport starts from, bits per second
    /// (mediasoup's `initialAvailableOutgoingBitrate`); probing raises it
    /// within a second or two when the network allows.
    pub initial_available_outgoing_bitrate: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            rtp_capabilities: default_router_capabilities(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp_addr: None,
            local_addr6: None,
            tcp_addr6: None,
            ice_timeout: Duration::from_secs(30),
            keyframe_request_interval: Duration::from_millis(500),
            sctp_max_message_size: 262_144,
            max_transports_per_participant: 4,
            max_producers_per_participant: 16,
            max_consumers_per_participant: 512,
            max_consumers_per_transport: 256,
            max_consumers_per_producer: 2,
            max_encodings_per_producer: 4,
            max_ssrcs_per_transport: 64,
            max_data_producers_per_participant: 16,
            max_data_consumers_per_participant: 512,
            max_data_messages_per_second: 100,
            max_data_bytes_per_second: 1_000_000,
            max_incoming_bitrate: 20_000_000,
            max_outgoing_bitrate: 100_000_000,
            bandwidth_estimation: true,
            initial_available_outgoing_bitrate: 1_000_000,
        }
    }
}
