//! What a room reports back: datagrams to send and events for signaling.

use crate::owners::Owner;
use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;

use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, MediaKind, ProducerId, TransportId,
};

/// What the application keeps with a producer or data producer (mediasoup's
/// `appData`): the room stores it and hands it back in [`StateChange`]s,
/// never looks inside. Two `AppData` are equal when they are the same
/// allocation.
#[derive(Clone, Default)]
pub struct AppData(Option<Arc<dyn Any + Send + Sync>>);

impl AppData {
    /// Wraps the application's value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Some(Arc::new(value)))
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_deref().and_then(|v| v.downcast_ref())
    }
}

impl PartialEq for AppData {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for AppData {}

impl std::fmt::Debug for AppData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AppData(..)"
        } else {
            "AppData(none)"
        })
    }
}

/// A change of what the room publishes. Every change is reported, whatever
/// caused it (a command, the network, a participant leaving), so an
/// application can keep its view of the room's tracks and data channels
/// from these alone: the room is the one source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChange {
    /// A producer was created (`produce`).
    ProducerCreated {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: Owner,
        /// Audio or video.
        kind: MediaKind,
        /// The codec, such as `video/VP8`.
        mime_type: String,
        /// Whether it has several encodings.
        simulcast: bool,
        /// Whether it starts paused (muted).
        paused: bool,
        /// The application's data given to `produce`.
        app_data: AppData,
    },
    /// A producer was paused (muted) or resumed.
    ProducerPaused {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: Owner,
        /// Paused now.
        paused: bool,
        /// The application's data.
        app_data: AppData,
    },
    /// A producer was closed, by its owner or as a consequence.
    ProducerClosed {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: Owner,
        /// The application's data.
        app_data: AppData,
    },
    /// A data producer was created (`produce_data`).
    DataProducerCreated {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Its publisher.
        owner: Owner,
        /// Channel label.
        label: String,
        /// Channel sub-protocol.
        protocol: String,
        /// Ordered and retransmitted.
        reliable: bool,
        /// The application's data given to `produce_data`.
        app_data: AppData,
    },
    /// A data producer was closed, by its owner or as a consequence.
    DataProducerClosed {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Its publisher.
        owner: Owner,
        /// The application's data.
        app_data: AppData,
    },
}

/// One encoding in [`Event::ProducerLayersWanted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerWanted {
    /// Its `rid`, when the encodings have rids.
    pub rid: Option<String>,
    /// Whether any consumer wants it.
    pub wanted: bool,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// UDP, or the TCP connection whose remote address is `destination`
    /// (the driver adds the RFC 4571 framing).
    pub proto: crate::endpoint::Protocol,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local address it must leave from (the room's candidate).
    pub source: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Why something was closed by the room itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// ICE never completed, or consent was lost (no traffic for `ice_timeout`).
    IceTimeout,
    /// The WebRTC stack failed (DTLS handshake, fingerprint mismatch).
    Failed,
    /// The peer closed DTLS or SCTP.
    ClosedByPeer,
    /// Its transport was closed.
    TransportClosed,
    /// The producer it consumed was closed.
    ProducerClosed,
    /// The data producer it consumed was closed.
    DataProducerClosed,
    /// Its participant left.
    ParticipantLeft,
}

impl CloseReason {
    /// A short machine-readable name (`ice-timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IceTimeout => "ice-timeout",
            CloseReason::Failed => "failed",
            CloseReason::ClosedByPeer => "closed-by-peer",
            CloseReason::TransportClosed => "transport-closed",
            CloseReason::ProducerClosed => "producer-closed",
            CloseReason::DataProducerClosed => "data-producer-closed",
            CloseReason::ParticipantLeft => "participant-left",
        }
    }
}

/// Something signaling must tell participants about.
///
/// The `*Closed` events report what a room closed **as a consequence** of a
/// command or of the network (a producer's consumers when the producer
/// closes, everything on a transport whose ICE timed out), never the object
/// a command closed directly: the caller of `close_producer` already knows.
/// [`Event::State`] reports every change of what the room publishes,
/// whatever caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// ICE and DTLS completed on a transport.
    TransportConnected {
        /// The transport.
        transport_id: TransportId,
        /// Its participant.
        owner: Owner,
    },
    /// The room closed a transport.
    TransportClosed {
        /// The transport.
        transport_id: TransportId,
        /// Its participant.
        owner: Owner,
        /// Why.
        reason: CloseReason,
    },
    /// The room closed a producer.
    ProducerClosed {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: Owner,
        /// Why.
        reason: CloseReason,
    },
    /// The room closed a consumer.
    ConsumerClosed {
        /// The consumer.
        consumer_id: ConsumerId,
        /// The producer it consumed.
        producer_id: ProducerId,
        /// Its subscriber.
        owner: Owner,
        /// Why.
        reason: CloseReason,
    },
    /// The room closed a data producer.
    DataProducerClosed {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Its publisher.
        owner: Owner,
        /// Why.
        reason: CloseReason,
    },
    /// What the room publishes changed.
    State(StateChange),
    /// The layers a consumer forwards changed (mediasoup's
    /// `layerschange`): `(spatial, temporal)`, `None` when it forwards no
    /// video (paused for congestion, hidden, or waiting for a keyframe).
    ConsumerLayersChanged {
        /// The consumer.
        consumer_id: ConsumerId,
        /// Its subscriber.
        owner: Owner,
        /// Spatial and temporal layer.
        layers: Option<(u8, u8)>,
    },
    /// The allocator paused a consumer because not even its lowest layer
    /// fits the subscriber's bandwidth (`congested: true`), or resumed it.
    ConsumerCongested {
        /// The consumer.
        consumer_id: ConsumerId,
        /// Its subscriber.
        owner: Owner,
        /// Paused for congestion now.
        congested: bool,
    },
    /// Dynacast: which layers of a producer any consumer wants now (index:
    /// spatial layer, lowest first). The publisher should send exactly
    /// these; an unwanted layer costs nobody anything.
    ProducerLayersWanted {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: Owner,
        /// Every encoding, lowest first.
        layers: Vec<LayerWanted>,
    },
    /// The room panicked (a bug) and was dropped by its endpoint, with
    /// everything in it; the endpoint's other rooms are not affected.
    /// Signaling should tell the room's participants and close the room.
    RoomFailed,
    /// A participant's connection quality changed (evaluated every
    /// [`QUALITY_INTERVAL`](crate::QUALITY_INTERVAL)).
    ConnectionQuality {
        /// The participant.
        owner: Owner,
        /// Its quality now.
        quality: crate::quality::ConnectionQuality,
    },
    /// Who speaks now, loudest first (see [`SPEAKER_INTERVAL`]): sent when
    /// the list or a level changed, at most once per interval; empty when
    /// nobody speaks any more.
    ///
    /// [`SPEAKER_INTERVAL`]: crate::SPEAKER_INTERVAL
    ActiveSpeakers {
        /// The speaking audio producers.
        speakers: Vec<crate::speaker::ActiveSpeaker>,
    },
    /// The room closed a data consumer.
    DataConsumerClosed {
        /// The data consumer.
        data_consumer_id: DataConsumerId,
        /// Its subscriber.
        owner: Owner,
        /// Why.
        reason: CloseReason,
    },
}
