//! The load tester's error type.

use pulsewave_client::ClientError;

/// What can stop a load test or one of its participants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadTestError {
    /// A command-line value is invalid.
    #[error("invalid {what}: {detail}")]
    InvalidArgument {
        /// The option.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// Minting an access token failed.
    #[error("token: {0}")]
    Token(#[from] pulsewave_auth::AuthError),
    /// The client failed (connect, join, publish, subscribe).
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// A participant did not get ready in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// Reading the server's CPU, memory or metrics failed.
    #[error("server probe: {0}")]
    Probe(String),
    /// The tokio runtime could not start.
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
}
