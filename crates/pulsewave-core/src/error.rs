//! The media core's error type.

use crate::ortc::OrtcError;

/// Why a room command failed. The command had no effect. The variants say
/// what a caller can act on; turning them into wire error codes is the
/// signaling layer's business.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No transport with this id belongs to the participant.
    #[error("transport `{0}` not found")]
    TransportNotFound(String),
    /// The participant has several transports of this direction; name one.
    #[error("several {0} transports: give `transportId`")]
    AmbiguousTransport(&'static str),
    /// `connect-transport` has not been done.
    #[error("transport `{0}` is not connected: connect it first")]
    TransportNotConnected(String),
    /// `connect-transport` was done already.
    #[error("transport `{0}` is already connected")]
    TransportAlreadyConnected(String),
    /// Publishing on a receive transport or subscribing on a send transport.
    #[error("transport `{id}` is a {actual} transport; this needs a {expected} transport")]
    WrongTransportDirection {
        /// The transport.
        id: String,
        /// Its direction.
        actual: &'static str,
        /// The direction needed.
        expected: &'static str,
    },
    /// No producer with this id in the room.
    #[error("producer `{0}` not found")]
    ProducerNotFound(String),
    /// No consumer with this id belongs to the participant.
    #[error("consumer `{0}` not found")]
    ConsumerNotFound(String),
    /// No data producer with this id in the room.
    #[error("data producer `{0}` not found")]
    DataProducerNotFound(String),
    /// No data consumer with this id belongs to the participant.
    #[error("data consumer `{0}` not found")]
    DataConsumerNotFound(String),
    /// The object belongs to another participant.
    #[error("{0} belongs to another participant")]
    NotOwner(String),
    /// A codec is not supported by the router or not negotiated on the transport.
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// An ssrc is already in use on the transport.
    #[error("ssrc {0} is already in use on this transport")]
    DuplicateSsrc(u32),
    /// RTP parameters are malformed or inconsistent.
    #[error("invalid RTP parameters: {0}")]
    InvalidRtpParameters(String),
    /// DTLS parameters are malformed.
    #[error("invalid DTLS parameters: {0}")]
    InvalidDtlsParameters(String),
    /// The subscriber cannot receive this producer.
    #[error("cannot consume: {0}")]
    CannotConsume(String),
    /// SCTP stream parameters are invalid.
    #[error("invalid SCTP parameters: {0}")]
    InvalidSctpParameters(String),
    /// A per-participant limit is reached.
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
}

impl From<OrtcError> for Error {
    fn from(e: OrtcError) -> Self {
        match e {
            OrtcError::UnsupportedCodec { .. } | OrtcError::UnsupportedRtx { .. } => {
                Error::UnsupportedCodec(e.to_string())
            }
            OrtcError::DuplicateSsrc(s) => Error::DuplicateSsrc(s),
            OrtcError::CannotConsume(m) => Error::CannotConsume(m),
            other => Error::InvalidRtpParameters(other.to_string()),
        }
    }
}
