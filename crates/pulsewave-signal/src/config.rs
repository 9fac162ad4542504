//! Configuration of the signaling server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pulsewave_auth::TokenVerifier;
use pulsewave_cluster::Cluster;
use pulsewave_protocol::transport::IceServer;

use crate::media::MediaConfig;

/// Limits that protect the server from one client.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest text message accepted, in bytes (`MAX_MESSAGE_SIZE`). A larger
    /// message gets error 203 and is dropped; one over four times this size
    /// closes the connection (close code 1009).
    pub max_message_size: usize,
    /// Most participants in one room (`MAX_PARTICIPANTS`; 0 means no limit).
    pub max_participants: u32,
    /// Sustained messages per second per connection (`RATE_LIMIT`).
    pub messages_per_second: u32,
    /// Burst of messages allowed above the sustained rate (`RATE_LIMIT_BURST`).
    pub message_burst: u32,
    /// Messages queued towards one slow client before it is disconnected.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_participants: 0,
            messages_per_second: 50,
            message_burst: 100,
            outbound_queue: 512,
        }
    }
}

/// How `POST /api/token` is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEndpointAuth {
    /// Anyone who reaches the endpoint may mint tokens (only in `--dev`).
    Open,
    /// HTTP Basic authentication with `API_KEY:API_SECRET` is required.
    ApiKey,
    /// The endpoint is off (404).
    Disabled,
}

/// Everything the signaling server needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (`HOST`:`PORT`).
    pub listen: SocketAddr,
    /// API key used to mint tokens (`API_KEY`).
    pub api_key: String,
    /// API secret (`API_SECRET`).
    pub api_secret: String,
    /// Lifetime of minted tokens (`JWT_EXPIRES_IN`).
    pub token_ttl: Duration,
    /// How `POST /api/token` is protected.
    pub token_endpoint: TokenEndpointAuth,
    /// STUN/TURN servers handed to clients (`ICE_SERVERS`).
    pub ice_servers: Vec<IceServer>,
    /// Per-connection and per-room limits.
    pub limits: Limits,
    /// How long an empty room stays open before it is closed (`ROOM_EMPTY_TIMEOUT`).
    pub empty_room_timeout: Duration,
    /// Whether `join` creates rooms that do not exist (`ROOM_AUTO_CREATE`).
    pub auto_create_rooms: bool,
    /// Interval of WebSocket pings; a connection silent for three intervals is closed.
    pub ping_interval: Duration,
    /// Media workers; `None` runs signaling only.
    pub media: Option<MediaConfig>,
    /// Serve the demo app at `/demo/` from this folder (the repository's
    /// `web/`); `None` turns the demo off.
    pub web_dir: Option<std::path::PathBuf>,
    /// The cluster this server is a node of: [`Cluster::local`] (the
    /// default: single node, no Redis) or a
    /// [`RedisCluster`](pulsewave_cluster::RedisCluster). Decides where each
    /// room runs; see `docs/cluster.md`.
    pub cluster: Cluster,
}

impl ServerConfig {
    /// A configuration for development and tests: listens on
    /// `127.0.0.1:port`, open token endpoint, one media worker on
    /// 127.0.0.1 with an ephemeral UDP port.
    pub fn dev(port: u16, api_key: &str, api_secret: &str) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            token_ttl: Duration::from_secs(24 * 3600),
            token_endpoint: TokenEndpointAuth::Open,
            ice_servers: Vec::new(),
            limits: Limits::default(),
            empty_room_timeout: Duration::from_secs(10),
            auto_create_rooms: true,
            ping_interval: Duration::from_secs(15),
            media: Some(MediaConfig::loopback()),
            web_dir: None,
            cluster: Cluster::local(),
        }
    }

    /// The verifier for this configuration's key pair.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(self.api_key.clone(), self.api_secret.clone())
    }
}
