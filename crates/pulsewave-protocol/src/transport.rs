//! WebRTC transport types in mediasoup-client's shapes.

use serde::{Deserialize, Serialize};

use crate::ids::TransportId;

/// Direction of a transport, from the client's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportDirection {
    /// The client publishes on it (mediasoup-client `createSendTransport`).
    Send,
    /// The client subscribes on it (mediasoup-client `createRecvTransport`).
    Recv,
}

/// The server's ICE parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// ICE username fragment.
    pub username_fragment: String,
    /// ICE password.
    pub password: String,
    /// The server is ICE-lite (always `true`).
    #[serde(default)]
    pub ice_lite: bool,
}

/// One ICE candidate of the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// Foundation.
    pub foundation: String,
    /// Priority.
    pub priority: u32,
    /// Address (IP) the client sends to.
    pub address: String,
    /// Same as `address` (older mediasoup-client versions read `ip`).
    pub ip: String,
    /// UDP or TCP port.
    pub port: u16,
    /// Always `host`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `udp`, or `tcp` for the passive ICE-TCP candidate.
    pub protocol: String,
    /// `passive` on a TCP candidate (mediasoup-client writes it into the
    /// SDP's `tcptype`); absent on UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_type: Option<String>,
}

/// DTLS role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    /// Either; the server answers `auto` and becomes DTLS server.
    Auto,
    /// DTLS client.
    Client,
    /// DTLS server.
    Server,
}

/// A certificate fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsFingerprint {
    /// Hash algorithm, such as `sha-256`.
    pub algorithm: String,
    /// Colon-separated upper-case hex bytes.
    pub value: String,
}

/// DTLS parameters of one side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtlsParameters {
    /// Role; absent means `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DtlsRole>,
    /// Certificate fingerprints (mediasoup-client uses the last one).
    pub fingerprints: Vec<DtlsFingerprint>,
}

/// SCTP parameters of a server transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SctpParameters {
    /// SCTP port (always 5000).
    pub port: u16,
    /// Outgoing streams.
    #[serde(rename = "OS")]
    pub os: u16,
    /// Maximum incoming streams.
    #[serde(rename = "MIS")]
    pub mis: u16,
    /// Largest message the server accepts, in bytes.
    #[serde(rename = "maxMessageSize")]
    pub max_message_size: u32,
}

/// Stream counts a client supports (`device.sctpCapabilities.numStreams`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumSctpStreams {
    /// Outgoing streams.
    #[serde(rename = "OS")]
    pub os: u16,
    /// Maximum incoming streams.
    #[serde(rename = "MIS")]
    pub mis: u16,
}

/// A client's SCTP capabilities (`device.sctpCapabilities`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpCapabilities {
    /// Stream counts.
    pub num_streams: NumSctpStreams,
}

/// How a data channel is carried on SCTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpStreamParameters {
    /// SCTP stream id (the data channel's id).
    pub stream_id: u16,
    /// Ordered delivery; defaults to `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Partial reliability: lifetime in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    /// Partial reliability: retransmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
}

/// A STUN/TURN server for the client, from `ICE_SERVERS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// One URL or several.
    pub urls: IceUrls,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `urls` of an [`IceServer`]: a string or a list, as in `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IceUrls {
    /// A single URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

/// Everything `device.createSendTransport()` / `createRecvTransport()` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportOptions {
    /// Transport id.
    pub id: TransportId,
    /// Server ICE parameters (ICE-lite).
    pub ice_parameters: IceParameters,
    /// Server candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// Server DTLS parameters (role `auto`).
    pub dtls_parameters: DtlsParameters,
    /// SCTP parameters, when data channels are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_parameters: Option<SctpParameters>,
    /// STUN/TURN servers from `ICE_SERVERS`.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
}
