//! The crate's error type.

use pulsewave_protocol::ErrorCode;

/// Everything that can go wrong in the client, grouped by what a caller can
/// do about it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered the request with an `error` message.
    #[error("server error {code}: {message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
    },
    /// The WebSocket upgrade was refused with an HTTP status (401 for a bad
    /// token).
    #[error("connection rejected with HTTP {status}: {body}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// Response body (JSON `{"error": ..}` from PulseWave).
        body: String,
    },
    /// No reply, or no connection, within the allowed time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The signaling connection or the transport is closed.
    #[error("connection closed")]
    Closed,
    /// The request needs a joined room: call `join` first.
    #[error("not joined to a room")]
    NotJoined,
    /// The transport is not connected yet (ICE and DTLS are not up) or the
    /// data channel is not open yet.
    #[error("not connected: {0}")]
    NotConnected(String),
    /// A codec or feature the router's capabilities do not offer.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A mid, consumer, channel or transport that is not known here.
    #[error("not found: {0}")]
    NotFound(String),
    /// Bad arguments or inconsistent parameters (from the caller or the
    /// server), such as consumer RTP parameters without an SSRC.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// The WebRTC stack (str0m) failed or rejected input.
    #[error("WebRTC error: {0}")]
    WebRtc(String),
    /// The server sent something that does not follow the protocol
    /// (undecodable message, unexpected reply type).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A WebSocket failure.
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// A socket failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The server's error code, when this is [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<str0m::RtcError> for ClientError {
    fn from(e: str0m::RtcError) -> Self {
        ClientError::WebRtc(e.to_string())
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as E;
        match e {
            E::Http(resp) => ClientError::Rejected {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            E::ConnectionClosed | E::AlreadyClosed => ClientError::Closed,
            E::Io(io) => ClientError::Io(io),
            other => ClientError::WebSocket(other.to_string()),
        }
    }
}
