//! The stable table of error codes sent in `{"type":"error","code":…}`.
//!
//! Codes are grouped by hundreds: 1xx room, 2xx request, 3xx permission,
//! 4xx media, 5xx server. A code never changes meaning once released; new
//! codes are only added. `docs/protocol.md` carries the same table.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $msg:literal; )*) => {
        /// A signaling error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The numeric code on the wire.
            pub fn code(self) -> u16 {
                match self { $(ErrorCode::$name => $code,)* }
            }

            /// The code for a number, if it is in the table.
            pub fn from_code(code: u16) -> Option<Self> {
                match code { $($code => Some(ErrorCode::$name),)* _ => None }
            }

            /// The generic message for this code.
            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$name => $msg,)* }
            }

            /// The variant's name, as in the documentation.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name),)* }
            }
        }
    };
}

error_codes! {
    /// The room does not exist (auto-creation is off) or was closed.
    RoomNotFound = 100, "Room not found";
    /// The room has reached its participant limit.
    RoomFull = 101, "Room is full";
    /// The room is closing; join again later.
    RoomClosed = 102, "Room is closed";
    /// A destination identity is not in the room.
    ParticipantNotFound = 103, "Participant not found";
    /// `join.resume` cannot be honoured (unknown or expired session, wrong
    /// token, missed messages no longer buffered): join again without it.
    ResumeFailed = 104, "Session cannot be resumed; join again";

    /// The text is not a JSON object with a string `type`.
    MalformedMessage = 200, "Malformed message";
    /// `type` names no client message.
    UnknownMessageType = 201, "Unknown message type";
    /// A field is missing, of the wrong type or out of range.
    InvalidParameters = 202, "Invalid parameters";
    /// The message exceeds the maximum message size.
    MessageTooLarge = 203, "Message too large";
    /// The connection sent more messages than its rate allows.
    RateLimited = 204, "Rate limit exceeded";
    /// The request needs a joined room; send `join` first.
    NotJoined = 205, "Not joined to a room";
    /// `join` was sent twice on one connection.
    AlreadyJoined = 206, "Already joined";
    /// Binary frames are not part of the protocol.
    UnsupportedFrame = 207, "Binary frames are not supported";

    /// The access token is missing, malformed, expired or forged.
    Unauthorized = 300, "Unauthorized";
    /// The token's grant does not allow this action.
    PermissionDenied = 301, "Permission denied";
    /// `join` names a room other than the token's grant.
    RoomMismatch = 302, "Room does not match the token";
    /// The resource belongs to another participant.
    NotOwner = 303, "Not the owner of this resource";

    /// No transport with this id belongs to the participant.
    TransportNotFound = 400, "Transport not found";
    /// The transport has not been connected with `connect-transport`.
    TransportNotConnected = 401, "Transport not connected";
    /// The transport's direction does not allow this (publish on a recv transport, ...).
    WrongTransportDirection = 402, "Wrong transport direction";
    /// No producer with this id exists in the room.
    ProducerNotFound = 403, "Producer not found";
    /// No consumer with this id belongs to the participant.
    ConsumerNotFound = 404, "Consumer not found";
    /// The codec is not in the router's capabilities.
    UnsupportedCodec = 405, "Unsupported codec";
    /// An ssrc in the parameters is already in use on the transport.
    DuplicateSsrc = 406, "Duplicate ssrc";
    /// The subscriber's capabilities cannot receive this producer.
    CannotConsume = 407, "Cannot consume";
    /// RTP parameters are malformed or inconsistent.
    InvalidRtpParameters = 408, "Invalid RTP parameters";
    /// A per-participant limit (transports, tracks, subscriptions) is reached.
    LimitReached = 409, "Limit reached";
    /// The transport is already connected.
    TransportAlreadyConnected = 410, "Transport already connected";
    /// No data producer with this id exists in the room.
    DataProducerNotFound = 411, "Data producer not found";
    /// No data consumer with this id belongs to the participant.
    DataConsumerNotFound = 412, "Data consumer not found";
    /// Invalid SCTP stream parameters (stream id in use, out of range, ...).
    InvalidSctpParameters = 413, "Invalid SCTP parameters";

    /// An unexpected server error; the request had no effect.
    InternalError = 500, "Internal server error";
    /// The server cannot take this request now (draining, cluster store down).
    ServiceUnavailable = 501, "Service unavailable";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        ErrorCode::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {code}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(ErrorCode::from_code(c.code()), Some(*c));
        }
        assert_eq!(ErrorCode::RoomNotFound.code(), 100);
        assert_eq!(ErrorCode::RoomNotFound.default_message(), "Room not found");
    }
}
