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
    /// A join past it gets error 101.
    pub max_participants: u32,
    /// Most open rooms on this node (`MAX_ROOMS`; 0 means no limit). A join
    /// that would create one more gets error 501.
    pub max_rooms: u32,
    /// Most WebSocket connections from one client IP (`MAX_CONNECTIONS_PER_IP`;
    /// 0 means no limit). More are refused with HTTP 429 before the upgrade.
    /// Behind a reverse proxy, set [`ServerConfig::trusted_proxies`].
    pub max_connections_per_ip: u32,
    /// Most WebSocket connections with one identity (`MAX_CONNECTIONS_PER_IDENTITY`;
    /// 0 means no limit). More are refused with HTTP 429 before the upgrade.
    pub max_connections_per_identity: u32,
    /// How long an authenticated socket may stay without joining a room
    /// (`JOIN_TIMEOUT`); then it gets error 205 and is closed (1008).
    pub join_timeout: Duration,
    /// Longest a write of one message to a client may take
    /// (`WS_SEND_TIMEOUT`); a client that does not read for that long is
    /// disconnected, and the room goes on without it.
    pub send_timeout: Duration,
    /// `TCP_USER_TIMEOUT` of accepted sockets (Linux): how long sent data may
    /// stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`; `None`/0 leaves the system default).
    pub tcp_user_timeout: Option<Duration>,
    /// Most tracks one participant may publish at once (`MAX_TRACKS_PER_PARTICIPANT`);
    /// past it `publish` gets error 409.
    pub max_tracks_per_participant: u32,
    /// Most data channels one participant may publish at once
    /// (`MAX_DATA_CHANNELS_PER_PARTICIPANT`); past it `publish-data-channel`
    /// gets error 409.
    pub max_data_channels_per_participant: u32,
    /// Largest size, in bytes, of a room's participant listing as sent in
    /// `joined` (`MAX_ROOM_LISTING_BYTES`). A `join`, `publish` or
    /// `publish-data-channel` that would make it larger is refused (101 or
    /// 409), so `joined` stays under this plus the joiner's own entry and the
    /// router's capabilities.
    pub max_room_listing_bytes: usize,
    /// Sustained messages per second per connection (`RATE_LIMIT`).
    pub messages_per_second: u32,
    /// Burst of messages allowed above the sustained rate (`RATE_LIMIT_BURST`).
    pub message_burst: u32,
    /// Messages queued towards one slow client before it is disconnected
    /// (`OUTBOUND_QUEUE`).
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_participants: 500,
            max_rooms: 1000,
            max_connections_per_ip: 200,
            max_connections_per_identity: 10,
            join_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(10),
            tcp_user_timeout: Some(Duration::from_secs(30)),
            max_tracks_per_participant: 16,
            max_data_channels_per_participant: 16,
            max_room_listing_bytes: 1024 * 1024,
            messages_per_second: 50,
            message_burst: 100,
            outbound_queue: 512,
        }
    }
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or one address), as in
/// `TRUSTED_PROXIES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => IpNet {
                addr: IpAddr::V6(net),
                prefix: self.prefix,
            }
            .contains(IpAddr::V6(ip.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
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

/// ICE servers made for one participant from its identity, at `join` and
/// at each `create-transport`: the embedded TURN server's `turn:`/`turns:`
/// URLs with credentials derived for that identity and valid for a short
/// time (see `pulsewave-turn`).
///
/// ```
/// use pulsewave_protocol::transport::{IceServer, IceUrls};
/// use pulsewave_signal::ParticipantIceServers;
///
/// let turn = ParticipantIceServers::new(|identity| {
///     vec![IceServer {
///         urls: IceUrls::One("turn:turn.example.com:3478".into()),
///         username: Some(format!("1700000000:{identity}")),
///         credential: Some("derived".into()),
///     }]
/// });
/// assert_eq!(turn.for_identity("alice")[0].username.as_deref(), Some("1700000000:alice"));
/// ```
#[derive(Clone)]
pub struct ParticipantIceServers(std::sync::Arc<IceServersFn>);

type IceServersFn = dyn Fn(&str) -> Vec<IceServer> + Send + Sync;

impl ParticipantIceServers {
    /// Wraps a function from a participant identity to its ICE servers.
    pub fn new(f: impl Fn(&str) -> Vec<IceServer> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// The ICE servers for `identity`.
    pub fn for_identity(&self, identity: &str) -> Vec<IceServer> {
        (self.0)(identity)
    }
}

impl std::fmt::Debug for ParticipantIceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParticipantIceServers(..)")
    }
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
    /// ICE servers computed for each participant and handed after
    /// `ice_servers` (the embedded TURN server's short-lived credentials,
    /// `TURN_ENABLED`); `None`: only `ice_servers`.
    pub participant_ice_servers: Option<ParticipantIceServers>,
    /// Per-connection and per-room limits.
    pub limits: Limits,
    /// How long an empty room stays open before it is closed (`ROOM_EMPTY_TIMEOUT`).
    pub empty_room_timeout: Duration,
    /// Whether `join` creates rooms that do not exist (`ROOM_AUTO_CREATE`).
    pub auto_create_rooms: bool,
    /// How long a participant whose WebSocket dropped (without `leave`)
    /// stays in its room, media alive, waiting to be resumed
    /// (`RESUME_GRACE`, 15 s; 0 turns resume off). Keep it below the media
    /// core's ICE timeout (30 s) so a resumed client still finds its
    /// transports.
    pub resume_grace: Duration,
    /// How many room messages are kept per participant for replay on
    /// resume (`RESUME_BUFFER`, 256).
    pub resume_buffer: usize,
    /// Interval of WebSocket pings; a connection silent for three intervals is closed.
    pub ping_interval: Duration,
    /// How often a participant in a room is sent a fresh token
    /// (`token-refresh`; `TOKEN_REFRESH_INTERVAL`, 0 turns it off). The first
    /// one comes sooner when half the token's remaining lifetime is shorter.
    pub token_refresh_interval: Duration,
    /// Clock skew tolerated on a token's `exp` and `nbf`, at the upgrade and
    /// at `join` (10 s).
    pub token_leeway: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed
    /// (`TRUSTED_PROXIES`: IPs or CIDR blocks). A connection from one of them
    /// counts against the client IP it forwards for; from anywhere else the
    /// header is ignored and the TCP peer's IP counts.
    pub trusted_proxies: Vec<IpNet>,
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
    /// URLs (`http://` or `https://`) that receive webhooks in LiveKit's format
    /// (`WEBHOOK_URLS`, comma-separated); empty: no webhooks. Signed with
    /// `api_key` / `api_secret`. See `docs/api.md`.
    pub webhook_urls: Vec<String>,
    /// Extra root certificates (PEM) trusted for `https://` webhook URLs
    /// (`WEBHOOK_CA_FILE`), beside the system's.
    pub webhook_ca_file: Option<std::path::PathBuf>,
    /// Per-room series in `/metrics` (`METRICS_ROOM_LIMIT`): at most this
    /// many rooms of this node, the first by name; 0 (the default): none,
    /// only the node's aggregates.
    pub metrics_room_limit: usize,
    /// More series appended to `/metrics` (the embedded TURN server's
    /// counters); `None`: none.
    pub extra_metrics: Option<MetricsSource>,
}

/// A source of more Prometheus series for `/metrics`: an async function
/// that returns text in the exposition format (each series with its
/// `# HELP` and `# TYPE`), called on every scrape.
///
/// ```
/// use pulsewave_signal::MetricsSource;
///
/// let extra = MetricsSource::new(|| async {
///     "# HELP my_gauge Something.\n# TYPE my_gauge gauge\nmy_gauge 1\n".to_owned()
/// });
/// # let _ = extra;
/// ```
#[derive(Clone)]
pub struct MetricsSource(std::sync::Arc<MetricsFn>);

type MetricsFn = dyn Fn() -> futures_util::future::BoxFuture<'static, String> + Send + Sync;

impl MetricsSource {
    /// Wraps an async function returning exposition-format text.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = String> + Send + 'static,
    {
        Self(std::sync::Arc::new(move || Box::pin(f())))
    }

    /// The series, now.
    pub async fn render(&self) -> String {
        (self.0)().await
    }
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource(..)")
    }
}

/// Default of [`ServerConfig::resume_grace`]: 15 s, half the media core's
/// 30 s ICE timeout.
pub const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(15);
/// Default of [`ServerConfig::resume_buffer`].
pub const DEFAULT_RESUME_BUFFER: usize = 256;

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
            participant_ice_servers: None,
            limits: Limits::default(),
            empty_room_timeout: Duration::from_secs(10),
            auto_create_rooms: true,
            resume_grace: DEFAULT_RESUME_GRACE,
            resume_buffer: DEFAULT_RESUME_BUFFER,
            ping_interval: Duration::from_secs(15),
            token_refresh_interval: Duration::from_secs(300),
            token_leeway: pulsewave_auth::DEFAULT_LEEWAY,
            trusted_proxies: Vec::new(),
            media: Some(MediaConfig::loopback()),
            web_dir: None,
            cluster: Cluster::local(),
            webhook_urls: Vec::new(),
            webhook_ca_file: None,
            metrics_room_limit: 0,
            extra_metrics: None,
        }
    }

    /// The verifier for this configuration's key pair.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(self.api_key.clone(), self.api_secret.clone())
            .with_leeway(self.token_leeway)
    }
}
