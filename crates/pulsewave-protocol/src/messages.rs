//! Client and server signaling messages.
//!
//! Every message is a JSON object with a `type` naming it (the seed's names:
//! `join`, `create-transport`, `track-published`, ...) and camelCase fields.
//! A client message may carry a `requestId` (string or number); the server
//! echoes it on the reply to that message or on the `error` it caused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::ids::{
    ConsumerId, DataConsumerId, DataProducerId, ParticipantSid, ProducerId, RoomSid, TrackSid,
    TransportId,
};
use crate::rtp::{MediaKind, RtpCapabilities, RtpParameters};
use crate::transport::{
    DtlsParameters, IceParameters, IceServer, SctpCapabilities, SctpStreamParameters,
    TransportDirection, TransportOptions,
};

/// Correlates a request with its reply: any string or number the client
/// chooses, echoed verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Number(u64),
    /// A string id.
    Text(String),
}

/// What a track carries, as in the seed and LiveKit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackSource {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A shared screen or window.
    Screen,
    /// Audio captured with a shared screen.
    ScreenAudio,
}

impl TrackSource {
    /// The media kind this source produces.
    pub fn kind(self) -> MediaKind {
        match self {
            TrackSource::Camera | TrackSource::Screen => MediaKind::Video,
            TrackSource::Microphone | TrackSource::ScreenAudio => MediaKind::Audio,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::Screen => "screen",
            TrackSource::ScreenAudio => "screen-audio",
        }
    }

    /// Every source.
    pub const ALL: [TrackSource; 4] = [
        TrackSource::Camera,
        TrackSource::Microphone,
        TrackSource::Screen,
        TrackSource::ScreenAudio,
    ];

    /// Reads a source name as PulseWave or LiveKit write it: `camera`,
    /// `microphone`, `screen` / `screen_share`, `screen-audio` /
    /// `screen_share_audio`, in any ASCII case, with `-` or `_`; `None` for
    /// anything else (LiveKit's `UNKNOWN` included).
    pub fn from_name(name: &str) -> Option<TrackSource> {
        let name = name.trim();
        if name.len() > 32 {
            return None;
        }
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "camera" => Some(TrackSource::Camera),
            "microphone" => Some(TrackSource::Microphone),
            "screen" | "screen_share" => Some(TrackSource::Screen),
            "screen_audio" | "screen_share_audio" => Some(TrackSource::ScreenAudio),
            _ => None,
        }
    }

    /// LiveKit's protobuf number of the source (`CAMERA` = 1 …
    /// `SCREEN_SHARE_AUDIO` = 4).
    pub fn from_livekit_number(n: u64) -> Option<TrackSource> {
        match n {
            1 => Some(TrackSource::Camera),
            2 => Some(TrackSource::Microphone),
            3 => Some(TrackSource::Screen),
            4 => Some(TrackSource::ScreenAudio),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            TrackSource::Camera => 1,
            TrackSource::Microphone => 2,
            TrackSource::Screen => 4,
            TrackSource::ScreenAudio => 8,
        }
    }
}

/// How a `data` message's `data` is encoded when it is not a JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    /// Bytes, as a base64 string (standard alphabet, padded).
    Base64,
}

/// The track sources a participant may publish (LiveKit's
/// `canPublishSources`): empty means every source. On the wire, a list of
/// [`TrackSource`] names (left out when empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishSources(u8);

impl PublishSources {
    /// Every source allowed (the empty list).
    pub const ALL: PublishSources = PublishSources(0);

    /// Only these sources (every source when `sources` is empty).
    pub fn only(sources: impl IntoIterator<Item = TrackSource>) -> Self {
        PublishSources(sources.into_iter().fold(0, |b, s| b | s.bit()))
    }

    /// Whether every source is allowed (no restriction).
    pub fn is_all(&self) -> bool {
        self.0 == 0
    }

    /// Whether `source` may be published.
    pub fn allows(self, source: TrackSource) -> bool {
        self.0 == 0 || self.0 & source.bit() != 0
    }

    /// The sources listed (empty when every source is allowed).
    pub fn listed(self) -> impl Iterator<Item = TrackSource> {
        TrackSource::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }
}

impl Serialize for PublishSources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.listed())
    }
}

impl<'de> Deserialize<'de> for PublishSources {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PublishSources;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of track sources")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<PublishSources, E> {
                Ok(PublishSources::ALL)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PublishSources, A::Error> {
                let mut bits = 0u8;
                // At most a few entries are looked at; more is an error.
                for _ in 0..8 {
                    let Some(name) = seq.next_element::<std::borrow::Cow<'de, str>>()? else {
                        return Ok(PublishSources(bits));
                    };
                    let source = TrackSource::from_name(&name).ok_or_else(|| {
                        serde::de::Error::custom(format!("unknown track source `{name}`"))
                    })?;
                    bits |= source.bit();
                }
                Err(serde::de::Error::custom("too many track sources"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Delivery of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Ordered and retransmitted.
    Reliable,
    /// Unordered, not retransmitted; may be dropped under load.
    Lossy,
}

/// A client-to-server message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Join the room named in the token's grant.
    Join {
        /// Room name; must equal the token's `video.room`.
        room: String,
        /// Take back a session whose WebSocket dropped, instead of joining
        /// afresh (see `docs/protocol.md`, "Session resume").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeRequest>,
    },
    /// Leave the room; the server replies `left` and closes the socket.
    Leave,
    /// Create a WebRTC transport.
    CreateTransport {
        /// `send` to publish, `recv` to subscribe.
        direction: TransportDirection,
        /// Optional and not used (older clients sent
        /// `device.sendRtpCapabilities` here): each `publish` carries the
        /// payload types and extension ids the sender really uses. Still
        /// checked when present.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtp_capabilities: Option<RtpCapabilities>,
        /// The client's SCTP capabilities (`device.sctpCapabilities`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sctp_capabilities: Option<SctpCapabilities>,
    },
    /// Give the server the client's DTLS parameters (mediasoup-client's
    /// transport `connect` event).
    ConnectTransport {
        /// The transport.
        transport_id: TransportId,
        /// The client's DTLS parameters.
        dtls_parameters: DtlsParameters,
    },
    /// Restart ICE on a transport (mediasoup's `transport.restartIce()`),
    /// after a network change: answered with `ice-restarted` and new ICE
    /// parameters for the client's `transport.restartIce({iceParameters})`.
    RestartIce {
        /// The transport.
        transport_id: TransportId,
    },
    /// Publish a media track (mediasoup-client's transport `produce` event).
    Publish {
        /// Send transport; may be omitted when the participant has exactly one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport_id: Option<TransportId>,
        /// Audio or video.
        kind: MediaKind,
        /// What the track carries; defaults from `kind` (camera, microphone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<TrackSource>,
        /// The producer's RTP parameters.
        rtp_parameters: RtpParameters,
        /// Optional track name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Publish muted.
        #[serde(default)]
        muted: bool,
    },
    /// Stop publishing a track.
    Unpublish {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Subscribe to a track.
    Subscribe {
        /// The producer to receive.
        producer_id: ProducerId,
        /// The subscriber's receiving capabilities (`device.recvRtpCapabilities`).
        rtp_capabilities: RtpCapabilities,
        /// Receive transport; may be omitted when the participant has exactly one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport_id: Option<TransportId>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// Start media on a consumer (consumers start paused).
    ResumeConsumer {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// Pause media on a consumer.
    PauseConsumer {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// Cap the simulcast layer a consumer receives (mediasoup's
    /// `consumer.setPreferredLayers`): the best layer the publisher sends
    /// up to `spatialLayer` (0 = the lowest); `null` or absent: the best.
    SetPreferredLayers {
        /// The consumer.
        consumer_id: ConsumerId,
        /// Highest spatial layer wanted.
        #[serde(default)]
        spatial_layer: Option<u8>,
        /// Highest temporal layer wanted (0 = the base frame rate); `null`
        /// or absent: the highest.
        #[serde(default)]
        temporal_layer: Option<u8>,
    },
    /// Set a consumer's share of its transport's bandwidth when the
    /// estimate is short (mediasoup's `consumer.setPriority`): 1 to 255,
    /// higher first. `null` or absent restores the default, which depends
    /// on the track's source (a screen share above a camera).
    SetConsumerPriority {
        /// The consumer.
        consumer_id: ConsumerId,
        /// The priority.
        #[serde(default)]
        priority: Option<u8>,
    },
    /// How a subscriber shows a video consumer (LiveKit's adaptive stream):
    /// the size of the element it is rendered in, and whether it is
    /// visible. The server sends no more than the size needs, and no video
    /// at all to a hidden or disabled element.
    UpdateTrackSettings {
        /// The consumer.
        consumer_id: ConsumerId,
        /// `true`: the subscriber shows nothing; no video is sent.
        #[serde(default)]
        disabled: bool,
        /// Rendered width in pixels (0 or absent: unknown).
        #[serde(default)]
        width: u32,
        /// Rendered height in pixels (0 or absent: unknown).
        #[serde(default)]
        height: u32,
    },
    /// Ask for the bandwidth estimate and the layer allocation of the
    /// participant's receive transports; answered with `stats`.
    GetStats,
    /// Mute one of the participant's own tracks.
    Mute {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Unmute one of the participant's own tracks.
    Unmute {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Send a data message through the signaling server.
    PublishData {
        /// Reliable or lossy.
        kind: DataKind,
        /// Any JSON value.
        data: Value,
        /// Only these identities receive it; absent or empty means everyone else.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        destination_identities: Vec<String>,
        /// Optional topic, passed through.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// Open an SCTP data channel for sending (mediasoup-client's
    /// `producedata` event).
    PublishDataChannel {
        /// Send transport; may be omitted when the participant has exactly one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport_id: Option<TransportId>,
        /// The channel's SCTP stream parameters.
        sctp_stream_parameters: SctpStreamParameters,
        /// Channel label.
        #[serde(default)]
        label: String,
        /// Channel sub-protocol.
        #[serde(default)]
        protocol: String,
    },
    /// Close a data channel opened with `publish-data-channel`.
    UnpublishDataChannel {
        /// The data producer.
        data_producer_id: DataProducerId,
    },
    /// Receive another participant's data channel.
    SubscribeData {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Receive transport; may be omitted when the participant has exactly one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport_id: Option<TransportId>,
    },
    /// Stop receiving a data channel.
    UnsubscribeData {
        /// The data consumer.
        data_consumer_id: DataConsumerId,
    },
    /// Change one's own metadata and/or name (needs the token's
    /// `canUpdateOwnMetadata`); everyone gets `participant-updated`.
    UpdateMetadata {
        /// New metadata (at most 4096 bytes); unchanged when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
        /// New display name (at most 256 bytes); unchanged when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Keep-alive; answered with `pong`.
    Ping,
}

impl ClientMessage {
    /// Every client message type name, as on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "leave",
        "create-transport",
        "connect-transport",
        "restart-ice",
        "publish",
        "unpublish",
        "subscribe",
        "unsubscribe",
        "resume-consumer",
        "pause-consumer",
        "set-preferred-layers",
        "set-consumer-priority",
        "update-track-settings",
        "get-stats",
        "mute",
        "unmute",
        "publish-data",
        "publish-data-channel",
        "unpublish-data-channel",
        "subscribe-data",
        "unsubscribe-data",
        "update-metadata",
        "ping",
    ];

    /// This message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave => "leave",
            ClientMessage::CreateTransport { .. } => "create-transport",
            ClientMessage::ConnectTransport { .. } => "connect-transport",
            ClientMessage::RestartIce { .. } => "restart-ice",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Unpublish { .. } => "unpublish",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::ResumeConsumer { .. } => "resume-consumer",
            ClientMessage::PauseConsumer { .. } => "pause-consumer",
            ClientMessage::SetPreferredLayers { .. } => "set-preferred-layers",
            ClientMessage::SetConsumerPriority { .. } => "set-consumer-priority",
            ClientMessage::UpdateTrackSettings { .. } => "update-track-settings",
            ClientMessage::GetStats => "get-stats",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Unmute { .. } => "unmute",
            ClientMessage::PublishData { .. } => "publish-data",
            ClientMessage::PublishDataChannel { .. } => "publish-data-channel",
            ClientMessage::UnpublishDataChannel { .. } => "unpublish-data-channel",
            ClientMessage::SubscribeData { .. } => "subscribe-data",
            ClientMessage::UnsubscribeData { .. } => "unsubscribe-data",
            ClientMessage::UpdateMetadata { .. } => "update-metadata",
            ClientMessage::Ping => "ping",
        }
    }
}

/// What a participant may do, from its token's grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantPermission {
    /// May publish media.
    pub can_publish: bool,
    /// May subscribe to media.
    pub can_subscribe: bool,
    /// May send data.
    pub can_publish_data: bool,
    /// Hidden from other participants.
    #[serde(default)]
    pub hidden: bool,
    /// May change its own metadata and name (`update-metadata`), from the
    /// token's `canUpdateOwnMetadata`.
    #[serde(default)]
    pub can_update_metadata: bool,
    /// The sources it may publish (`canPublishSources`; every source when
    /// empty or absent).
    #[serde(default, skip_serializing_if = "PublishSources::is_all")]
    pub can_publish_sources: PublishSources,
}

/// A published media track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    /// Room-wide track sid.
    pub sid: TrackSid,
    /// The producer id to subscribe with.
    pub producer_id: ProducerId,
    /// Publisher identity.
    pub participant_identity: String,
    /// Publisher session.
    pub participant_sid: ParticipantSid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone, screen, ...
    pub source: TrackSource,
    /// Whether the publisher muted it.
    pub muted: bool,
    /// Optional name given at publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Codec mime type, such as `video/VP8`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime_type: String,
    /// Whether the publisher sends several simulcast layers.
    #[serde(default)]
    pub simulcast: bool,
}

/// A published SCTP data channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataChannelInfo {
    /// The data producer id to subscribe with.
    pub data_producer_id: DataProducerId,
    /// Publisher identity.
    pub participant_identity: String,
    /// Publisher session.
    pub participant_sid: ParticipantSid,
    /// Channel label.
    pub label: String,
    /// Channel sub-protocol.
    pub protocol: String,
    /// Reliable (ordered, retransmitted) or lossy.
    pub kind: DataKind,
}

/// A participant in a room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    /// Session id, new on every connection.
    pub sid: ParticipantSid,
    /// Identity from the token (`sub`).
    pub identity: String,
    /// Display name from the token.
    pub name: String,
    /// Metadata from the token: a string, as in LiveKit (objects passed to
    /// `/api/token` arrive JSON-encoded).
    pub metadata: String,
    /// Unix time of the join, in milliseconds.
    pub joined_at: u64,
    /// Permissions from the token.
    pub permission: ParticipantPermission,
    /// Published media tracks.
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
    /// Published data channels.
    #[serde(default)]
    pub data_channels: Vec<DataChannelInfo>,
    /// Attributes (LiveKit's participant attributes): from the token, then
    /// changed through the server API's `UpdateParticipant`. Left out when
    /// empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    /// Room instance id.
    pub sid: RoomSid,
    /// Room name.
    pub name: String,
    /// Unix time of creation, in milliseconds.
    pub created_at: u64,
    /// Participant limit (0: none).
    pub max_participants: u32,
    /// The room's metadata, set through the admin API (`CreateRoom`,
    /// `UpdateRoomMetadata`); empty by default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// Seconds the room stays open once empty (0: the server's default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub empty_timeout: u32,
    /// The other participants present (in `joined`: everyone already there).
    pub participants: Vec<ParticipantInfo>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Why the server ends a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisconnectReason {
    /// The client sent `leave`.
    ClientLeave,
    /// A new connection with the same identity took over.
    DuplicateIdentity,
    /// The server is shutting down.
    ServerShutdown,
    /// The room was closed.
    RoomClosed,
    /// The node owning the room went away; reconnect to be placed again.
    Migration,
    /// An administrator removed the participant (`RemoveParticipant`).
    ParticipantRemoved,
    /// An administrator deleted the room (`DeleteRoom`).
    RoomDeleted,
}

/// The resume credentials a client sends in `join` to take back its
/// session after its WebSocket dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRequest {
    /// The participant sid `joined` (or the last `resumed`) gave.
    pub participant_sid: ParticipantSid,
    /// The `resumeToken` of the last `joined` or `resumed`.
    pub token: String,
    /// The highest `seq` the client received (0 if none).
    #[serde(default)]
    pub last_seq: u64,
}

/// A server-to-client message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// Reply to `join`.
    Joined {
        /// The room, with everyone already in it.
        room: RoomInfo,
        /// The joining participant itself.
        participant: ParticipantInfo,
        /// The router's RTP capabilities, for `device.load()`.
        rtp_capabilities: RtpCapabilities,
        /// STUN/TURN servers from `ICE_SERVERS`.
        ice_servers: Vec<IceServer>,
        /// The secret to present in `join.resume` after a dropped WebSocket
        /// (absent when the server keeps no sessions for resume).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    /// Reply to a `join` with `resume`: the session is back. The messages
    /// the client missed (each with its `seq`) follow, in order.
    Resumed {
        /// The room as it is now.
        room: RoomInfo,
        /// The participant itself (same sid as before).
        participant: ParticipantInfo,
        /// The new resume token (the old one no longer works).
        resume_token: String,
        /// How many missed messages follow.
        replayed: u64,
    },
    /// Reply to `leave`; the socket closes next.
    Left,
    /// Another participant joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Another participant left.
    ParticipantLeft {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Reply to `create-transport`.
    TransportCreated {
        /// Send or recv, as requested.
        direction: TransportDirection,
        /// Options for `device.createSendTransport()` / `createRecvTransport()`.
        transport: TransportOptions,
    },
    /// Reply to `connect-transport`.
    TransportConnected {
        /// The transport.
        transport_id: TransportId,
    },
    /// Reply to `restart-ice`: the transport's new ICE parameters.
    IceRestarted {
        /// The transport.
        transport_id: TransportId,
        /// Pass to mediasoup-client's `transport.restartIce({iceParameters})`.
        ice_parameters: IceParameters,
        /// The STUN/TURN servers, fresh (as in `transport-created`: the
        /// embedded TURN server's credentials are short-lived, so the ones
        /// the transport was created with may have expired). Pass to
        /// `transport.updateIceServers({iceServers})` before `restartIce`.
        /// Empty from older servers.
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// A transport was closed by the server (ICE or DTLS failure, timeout).
    TransportClosed {
        /// The transport.
        transport_id: TransportId,
        /// Why.
        reason: String,
    },
    /// Reply to `publish`: the producer id for mediasoup-client's `produce`
    /// callback.
    Published {
        /// The producer.
        producer_id: ProducerId,
        /// The track as others see it.
        track: TrackInfo,
    },
    /// A track was published by another participant.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished (to everyone, including its publisher).
    TrackUnpublished {
        /// The producer.
        producer_id: ProducerId,
        /// The track sid.
        track_sid: TrackSid,
        /// Publisher identity.
        participant_identity: String,
    },
    /// Reply to `subscribe`: parameters for mediasoup-client's `consume()`.
    TrackSubscribed {
        /// The track sid.
        track_sid: TrackSid,
        /// The consumer.
        consumer_id: ConsumerId,
        /// The producer.
        producer_id: ProducerId,
        /// Audio or video.
        kind: MediaKind,
        /// The consumer's RTP parameters (router payload types).
        rtp_parameters: RtpParameters,
        /// Publisher identity.
        participant_identity: String,
        /// Consumers start paused; send `resume-consumer`.
        paused: bool,
    },
    /// A consumer was closed (reply to `unsubscribe`, or its producer or
    /// transport went away).
    TrackUnsubscribed {
        /// The consumer.
        consumer_id: ConsumerId,
        /// The producer it consumed.
        producer_id: ProducerId,
    },
    /// Reply to `resume-consumer`.
    ConsumerResumed {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// Reply to `pause-consumer`.
    ConsumerPaused {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// Reply to `set-preferred-layers`.
    PreferredLayersSet {
        /// The consumer.
        consumer_id: ConsumerId,
        /// The preference now in force (`null`: the best layer).
        spatial_layer: Option<u8>,
        /// The temporal preference now in force (`null`: the highest).
        temporal_layer: Option<u8>,
    },
    /// Reply to `set-consumer-priority`.
    ConsumerPrioritySet {
        /// The consumer.
        consumer_id: ConsumerId,
        /// The priority now in force.
        priority: u8,
    },
    /// Reply to `update-track-settings`.
    TrackSettingsUpdated {
        /// The consumer.
        consumer_id: ConsumerId,
    },
    /// The layers a consumer forwards changed (mediasoup's
    /// `consumer.on('layerschange')`): both `null` when it forwards no
    /// video (paused for congestion, hidden, or waiting for a keyframe).
    ConsumerLayersChanged {
        /// The consumer.
        consumer_id: ConsumerId,
        /// Spatial layer (0 = the lowest).
        spatial_layer: Option<u8>,
        /// Temporal layer (0 = the base frame rate).
        temporal_layer: Option<u8>,
    },
    /// The server stopped (`paused`) or restarted (`active`) a consumer's
    /// media on its own, as LiveKit's `StreamStateUpdate`.
    StreamStateChanged {
        /// The consumer.
        consumer_id: ConsumerId,
        /// `active` or `paused`.
        state: StreamState,
        /// Why (`congestion`: the subscriber's bandwidth does not carry
        /// even the lowest layer).
        reason: String,
    },
    /// Dynacast, to a publisher: which layers of its track any subscriber
    /// wants now. The client sets `active` on each encoding (through
    /// `rtpSender.setParameters`), so an unwatched layer costs nothing.
    SubscribedLayers {
        /// The producer.
        producer_id: ProducerId,
        /// Every encoding, lowest first.
        layers: Vec<SubscribedLayer>,
    },
    /// Reply to `get-stats`.
    Stats {
        /// One entry per receive transport.
        transports: Vec<TransportStats>,
    },
    /// A track was muted (to everyone, including its publisher).
    TrackMuted {
        /// The producer.
        producer_id: ProducerId,
        /// The track sid.
        track_sid: TrackSid,
        /// Publisher identity.
        participant_identity: String,
    },
    /// A track was unmuted (to everyone, including its publisher).
    TrackUnmuted {
        /// The producer.
        producer_id: ProducerId,
        /// The track sid.
        track_sid: TrackSid,
        /// Publisher identity.
        participant_identity: String,
    },
    /// A data message relayed from another participant.
    Data {
        /// Sender identity.
        participant_identity: String,
        /// Reliable or lossy.
        kind: DataKind,
        /// The JSON value sent; with `encoding` `base64`, a string holding
        /// the bytes sent (base64, standard alphabet, padded).
        data: Value,
        /// Topic, when the sender gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// `base64` when `data` carries arbitrary bytes (the server API's
        /// `SendData` with a payload that is neither JSON nor UTF-8 text);
        /// absent for a JSON value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<DataEncoding>,
    },
    /// Reply to `publish-data` (only when it carried a `requestId`).
    DataSent,
    /// Reply to `publish-data-channel`.
    DataChannelPublished {
        /// The data producer, for mediasoup-client's `producedata` callback.
        data_producer_id: DataProducerId,
        /// The channel as others see it.
        data_channel: DataChannelInfo,
    },
    /// Another participant published a data channel.
    DataTrackPublished {
        /// The channel.
        data_channel: DataChannelInfo,
    },
    /// A data channel was unpublished (to everyone, including its publisher).
    DataTrackUnpublished {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Publisher identity.
        participant_identity: String,
    },
    /// Reply to `subscribe-data`: parameters for `transport.consumeData()`.
    DataSubscribed {
        /// The data consumer.
        data_consumer_id: DataConsumerId,
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Stream parameters chosen by the server on the receive transport.
        sctp_stream_parameters: SctpStreamParameters,
        /// Channel label.
        label: String,
        /// Channel sub-protocol.
        protocol: String,
        /// Publisher identity.
        participant_identity: String,
    },
    /// A data consumer was closed (reply to `unsubscribe-data`, or its
    /// producer went away).
    DataUnsubscribed {
        /// The data consumer.
        data_consumer_id: DataConsumerId,
    },
    /// Reply to `ping`.
    Pong {
        /// Server time, unix milliseconds.
        timestamp: u64,
    },
    /// A fresh access token for this session, sent on a timer while the
    /// participant is in a room (as LiveKit's `refresh_token`): same
    /// identity, room and grants, a new expiry. Clients keep the latest one
    /// and use it when they reconnect.
    TokenRefresh {
        /// The new JWT.
        token: String,
    },
    /// A participant's metadata, name or permissions changed (through the
    /// admin API or its own `update-metadata`): sent to everyone, the
    /// participant itself included, as LiveKit's `ParticipantUpdate`.
    ParticipantUpdated {
        /// The participant as it is now.
        participant: ParticipantInfo,
    },
    /// The room's metadata changed (`UpdateRoomMetadata`): sent to everyone.
    RoomUpdated {
        /// The room's name.
        name: String,
        /// The room's sid.
        sid: RoomSid,
        /// The new metadata.
        metadata: String,
    },
    /// Connection qualities that changed (as LiveKit's
    /// `ConnectionQualityUpdate`): evaluated every 2 s, and each
    /// evaluation's changes reach a participant in one message (everyone
    /// who can see a participant gets its change, itself included), so a
    /// large room costs one message per participant per evaluation, not
    /// one per change.
    ConnectionQuality {
        /// One entry per participant whose quality changed.
        updates: Vec<ConnectionQualityInfo>,
    },
    /// Who speaks now, loudest first (as LiveKit's `SpeakersChanged`): sent
    /// to everyone when the list or a level changes, at most every 400 ms;
    /// an empty list when nobody speaks any more.
    ActiveSpeakers {
        /// The speakers, loudest first.
        speakers: Vec<SpeakerInfo>,
    },
    /// An administrator asks this participant to subscribe to, or drop,
    /// tracks (`UpdateSubscriptions`). The JavaScript client acts on it:
    /// `subscribe` for each track it does not receive yet, or `unsubscribe`
    /// its consumers of them.
    UpdateSubscriptions {
        /// The tracks, by sid.
        track_sids: Vec<TrackSid>,
        /// Their producers, in the same order, to `subscribe` with.
        producer_ids: Vec<ProducerId>,
        /// `true`: subscribe; `false`: unsubscribe.
        subscribe: bool,
    },
    /// The server ends the session; the socket closes next.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// A request failed, or the connection misbehaved.
    Error {
        /// Stable code (see [`ErrorCode`]).
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// A participant's connection quality in `connection-quality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Low loss and jitter, every subscription flowing.
    Excellent,
    /// Some loss (over 2 %) or jitter (over 30 ms).
    Good,
    /// Heavy loss (over 6 %) or jitter (over 80 ms), or a subscription
    /// paused for lack of bandwidth.
    Poor,
    /// Nothing heard from it for 8 s.
    Lost,
}

impl Quality {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Poor => "poor",
            Quality::Lost => "lost",
        }
    }
}

/// One participant's quality in `connection-quality`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionQualityInfo {
    /// The participant.
    pub participant_identity: String,
    /// Its session.
    pub participant_sid: ParticipantSid,
    /// Its quality now.
    pub quality: Quality,
}

/// One speaker in `active-speakers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerInfo {
    /// The speaking participant.
    pub participant_identity: String,
    /// Its session.
    pub participant_sid: ParticipantSid,
    /// Its loudness, 0 to 1 in eighths (0.125 ... 1).
    pub level: f32,
}

/// Whether the server is sending a consumer's media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamState {
    /// Media flows.
    Active,
    /// Stopped by the server.
    Paused,
}

/// One encoding of a published track in `subscribed-layers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedLayer {
    /// Its index, 0 = the lowest.
    pub spatial_layer: u8,
    /// Its `rid`, when the encodings have rids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Whether anyone wants it: send it (`true`) or stop encoding it.
    pub active: bool,
}

/// A receive transport in `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStats {
    /// The transport.
    pub transport_id: TransportId,
    /// The bandwidth estimate toward the subscriber, bits per second
    /// (`null` before the first estimate).
    pub available_outgoing_bitrate: Option<u64>,
    /// What the allocator gave its consumers, bits per second.
    pub allocated_bitrate: u64,
    /// Its consumers.
    pub consumers: Vec<ConsumerStats>,
}

/// A consumer in `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStats {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its priority.
    pub priority: u8,
    /// The spatial layer it forwards (`null`: none).
    pub spatial_layer: Option<u8>,
    /// The temporal layer it forwards (`null`: none).
    pub temporal_layer: Option<u8>,
    /// The layers the allocator chose, which it switches to at the next
    /// keyframe (`null`: none).
    pub target_spatial_layer: Option<u8>,
    /// The target temporal layer.
    pub target_temporal_layer: Option<u8>,
    /// Paused by the server for congestion.
    pub congested: bool,
    /// The bitrate of the layers it forwards, bits per second.
    pub bitrate: u64,
}

impl ServerMessage {
    /// An `error` message with `code` and `message`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// This message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Resumed { .. } => "resumed",
            ServerMessage::Left => "left",
            ServerMessage::ParticipantJoined { .. } => "participant-joined",
            ServerMessage::ParticipantLeft { .. } => "participant-left",
            ServerMessage::TransportCreated { .. } => "transport-created",
            ServerMessage::TransportConnected { .. } => "transport-connected",
            ServerMessage::IceRestarted { .. } => "ice-restarted",
            ServerMessage::TransportClosed { .. } => "transport-closed",
            ServerMessage::Published { .. } => "published",
            ServerMessage::TrackPublished { .. } => "track-published",
            ServerMessage::TrackUnpublished { .. } => "track-unpublished",
            ServerMessage::TrackSubscribed { .. } => "track-subscribed",
            ServerMessage::TrackUnsubscribed { .. } => "track-unsubscribed",
            ServerMessage::ConsumerResumed { .. } => "consumer-resumed",
            ServerMessage::ConsumerPaused { .. } => "consumer-paused",
            ServerMessage::PreferredLayersSet { .. } => "preferred-layers-set",
            ServerMessage::ConsumerPrioritySet { .. } => "consumer-priority-set",
            ServerMessage::TrackSettingsUpdated { .. } => "track-settings-updated",
            ServerMessage::ConsumerLayersChanged { .. } => "consumer-layers-changed",
            ServerMessage::StreamStateChanged { .. } => "stream-state-changed",
            ServerMessage::SubscribedLayers { .. } => "subscribed-layers",
            ServerMessage::Stats { .. } => "stats",
            ServerMessage::TrackMuted { .. } => "track-muted",
            ServerMessage::TrackUnmuted { .. } => "track-unmuted",
            ServerMessage::Data { .. } => "data",
            ServerMessage::DataSent => "data-sent",
            ServerMessage::DataChannelPublished { .. } => "data-channel-published",
            ServerMessage::DataTrackPublished { .. } => "data-track-published",
            ServerMessage::DataTrackUnpublished { .. } => "data-track-unpublished",
            ServerMessage::DataSubscribed { .. } => "data-subscribed",
            ServerMessage::DataUnsubscribed { .. } => "data-unsubscribed",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::TokenRefresh { .. } => "token-refresh",
            ServerMessage::ParticipantUpdated { .. } => "participant-updated",
            ServerMessage::RoomUpdated { .. } => "room-updated",
            ServerMessage::UpdateSubscriptions { .. } => "update-subscriptions",
            ServerMessage::ActiveSpeakers { .. } => "active-speakers",
            ServerMessage::ConnectionQuality { .. } => "connection-quality",
            ServerMessage::Disconnected { .. } => "disconnected",
            ServerMessage::Error { .. } => "error",
        }
    }
}
