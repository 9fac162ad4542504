//! The signaling error type and its one mapping onto the wire.

use pulsewave_auth::AuthError;
use pulsewave_protocol::{ErrorCode, ServerMessage};

/// Why a signaling request failed. Every variant maps to one stable
/// [`ErrorCode`] in [`SignalError::code`]; [`SignalError::to_message`] is the
/// only place an error becomes a wire message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The room does not exist and auto-creation is off.
    #[error("room `{0}` not found")]
    RoomNotFound(String),
    /// The room reached its participant limit.
    #[error("room is full ({max} participants)")]
    RoomFull {
        /// The limit.
        max: u32,
    },
    /// The room is closing.
    #[error("room `{0}` is closed")]
    RoomClosed(String),
    /// A destination identity is not in the room.
    #[error("participant `{0}` is not in the room")]
    ParticipantNotFound(String),
    /// The request needs a joined room.
    #[error("not joined to a room: send `join` first")]
    NotJoined,
    /// `join.resume` cannot be honoured; the client joins again without it.
    #[error("cannot resume: {0}; join again without `resume`")]
    ResumeFailed(&'static str),
    /// `join` sent twice.
    #[error("already joined room `{0}`")]
    AlreadyJoined(String),
    /// The token lacks a grant for this action.
    #[error("permission denied: the token does not grant `{0}`")]
    PermissionDenied(&'static str),
    /// The joined room differs from the token's grant.
    #[error("the token grants room `{granted}`, not `{requested}`")]
    RoomMismatch {
        /// Room in the grant.
        granted: String,
        /// Room requested.
        requested: String,
    },
    /// The resource belongs to another participant.
    #[error("{0} belongs to another participant")]
    NotOwner(String),
    /// A field is invalid.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A token problem.
    #[error("unauthorized: {0}")]
    Auth(#[from] AuthError),
    /// The session's token expired before `join`.
    #[error(
        "unauthorized: the token expired at {exp} (unix seconds); get a new token and reconnect"
    )]
    TokenExpired {
        /// The token's `exp`.
        exp: u64,
    },
    /// The room's participant listing is at `MAX_ROOM_LISTING_BYTES`.
    #[error("room is full: its participant listing reached {max} bytes")]
    RoomListingFull {
        /// The limit.
        max: usize,
    },
    /// A hidden participant tried to be seen (publish, send data).
    #[error("permission denied: a hidden participant cannot {0}")]
    Hidden(&'static str),
    /// A per-participant or per-room limit was reached.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// A media error with its own code.
    #[error("{message}")]
    Media {
        /// The wire code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
    /// The server is shutting down or cannot take the request now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure; the request had no effect.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SignalError {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SignalError::RoomNotFound(_) => ErrorCode::RoomNotFound,
            SignalError::RoomFull { .. } => ErrorCode::RoomFull,
            SignalError::RoomClosed(_) => ErrorCode::RoomClosed,
            SignalError::ParticipantNotFound(_) => ErrorCode::ParticipantNotFound,
            SignalError::NotJoined => ErrorCode::NotJoined,
            SignalError::ResumeFailed(_) => ErrorCode::ResumeFailed,
            SignalError::AlreadyJoined(_) => ErrorCode::AlreadyJoined,
            SignalError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            SignalError::RoomMismatch { .. } => ErrorCode::RoomMismatch,
            SignalError::NotOwner(_) => ErrorCode::NotOwner,
            SignalError::InvalidParameters(_) => ErrorCode::InvalidParameters,
            SignalError::Auth(AuthError::RoomMismatch { .. }) => ErrorCode::RoomMismatch,
            SignalError::Auth(AuthError::MissingGrant(_)) => ErrorCode::PermissionDenied,
            SignalError::Auth(_) => ErrorCode::Unauthorized,
            SignalError::TokenExpired { .. } => ErrorCode::Unauthorized,
            SignalError::LimitReached(_) => ErrorCode::LimitReached,
            SignalError::RoomListingFull { .. } => ErrorCode::RoomFull,
            SignalError::Hidden(_) => ErrorCode::PermissionDenied,
            SignalError::Media { code, .. } => *code,
            SignalError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            SignalError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The `error` message for this failure.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code(), self.to_string())
    }
}
