//! What a room reports back: datagrams to send and events for signaling.

use std::net::SocketAddr;

use pulsewave_protocol::{
    ConsumerId, DataConsumerId, DataProducerId, ParticipantSid, ProducerId, TransportId,
};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
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
/// A room reports what it closed **as a consequence** of a command or of the
/// network (a producer's consumers when the producer closes, everything on a
/// transport whose ICE timed out), never the object a command closed directly:
/// the caller of `close_producer` already knows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// ICE and DTLS completed on a transport.
    TransportConnected {
        /// The transport.
        transport_id: TransportId,
        /// Its participant.
        owner: ParticipantSid,
    },
    /// The room closed a transport.
    TransportClosed {
        /// The transport.
        transport_id: TransportId,
        /// Its participant.
        owner: ParticipantSid,
        /// Why.
        reason: CloseReason,
    },
    /// The room closed a producer.
    ProducerClosed {
        /// The producer.
        producer_id: ProducerId,
        /// Its publisher.
        owner: ParticipantSid,
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
        owner: ParticipantSid,
        /// Why.
        reason: CloseReason,
    },
    /// The room closed a data producer.
    DataProducerClosed {
        /// The data producer.
        data_producer_id: DataProducerId,
        /// Its publisher.
        owner: ParticipantSid,
        /// Why.
        reason: CloseReason,
    },
    /// The room panicked (a bug) and was dropped by its endpoint, with
    /// everything in it; the endpoint's other rooms are not affected.
    /// Signaling should tell the room's participants and close the room.
    RoomFailed,
    /// The room closed a data consumer.
    DataConsumerClosed {
        /// The data consumer.
        data_consumer_id: DataConsumerId,
        /// Its subscriber.
        owner: ParticipantSid,
        /// Why.
        reason: CloseReason,
    },
}
