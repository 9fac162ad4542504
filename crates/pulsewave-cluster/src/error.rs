//! The crate's error type.

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cluster store (Redis) cannot be reached now. Rooms already open on
    /// this node keep working; placing other rooms waits for the store.
    #[error("the cluster store (Redis) is unreachable: {0}")]
    Unavailable(String),
    /// This node is draining and takes no new rooms.
    #[error("this node is draining and takes no new rooms")]
    Draining,
    /// The node that owns the room did not answer the tunnel request.
    #[error("node `{node}`, owner of the room, did not answer: {detail}")]
    OwnerUnreachable {
        /// The owner's node id.
        node: String,
        /// What happened.
        detail: String,
    },
    /// The tunnel is closed.
    #[error("the tunnel is closed")]
    TunnelClosed,
    /// Redis refused the credentials (`REDIS_USERNAME`, `REDIS_PASSWORD` or
    /// the URL's): wrong password, unknown or disabled ACL user. Retrying
    /// does not help; fix the configuration.
    #[error("Redis refused the credentials: {0}")]
    Auth(String),
    /// The Redis configuration (URL, host, port) is invalid.
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// A Redis command failed.
    #[error("Redis error: {0}")]
    Redis(String),
    /// Data in the store could not be decoded.
    #[error("malformed cluster data: {0}")]
    Decode(String),
}

impl From<fred::error::Error> for ClusterError {
    fn from(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind;
        match e.kind() {
            ErrorKind::Config | ErrorKind::Url | ErrorKind::Tls => {
                ClusterError::Config(e.to_string())
            }
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled => {
                ClusterError::Unavailable(e.to_string())
            }
            ErrorKind::Auth => ClusterError::Auth(e.to_string()),
            _ => ClusterError::Redis(e.to_string()),
        }
    }
}
