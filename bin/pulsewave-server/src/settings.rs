//! Configuration from command-line flags, the environment and a `.env` file.
//!
//! Every variable of the seed server keeps its name and meaning. A flag wins
//! over the environment, which wins over `.env` (dotenvy never overrides a
//! variable that is already set). Each invalid value is reported with the
//! name of its variable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use pulsewave_cluster::{Cluster, ClusterKey, NodeConfig};
use pulsewave_core::RoomConfig;
use pulsewave_protocol::transport::IceServer;
use pulsewave_signal::media::{MediaConfig, TcpLimits};
use pulsewave_signal::{IpNet, Limits, ServerConfig, TokenEndpointAuth};

mod turn;
pub(crate) use turn::TurnSettings;

/// The development API key used by `--dev` when `API_KEY` is not set.
pub(crate) const DEV_API_KEY: &str = "devkey";
/// The development API secret used by `--dev` when `API_SECRET` is not set.
pub(crate) const DEV_API_SECRET: &str = "secret";

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub(crate) struct ConfigError {
    /// The variable (or flag) at fault.
    pub(crate) var: &'static str,
    /// What is wrong with it.
    pub(crate) message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Server options. Each flag also reads the variable named in its help.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    /// Development mode: no configuration needed, dev API key and secret,
    /// open token endpoint, single node, no Redis.
    #[arg(long, global = true)]
    pub(crate) dev: bool,
    /// Read this file instead of `./.env`.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) env_file: Option<String>,
    /// Listen address [env: HOST] (default 0.0.0.0; 127.0.0.1 in --dev).
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Listen port for HTTP and WebSocket [env: PORT] (default 3000).
    #[arg(long)]
    pub(crate) port: Option<String>,
    /// API key [env: API_KEY].
    #[arg(long)]
    pub(crate) api_key: Option<String>,
    /// API secret [env: API_SECRET].
    #[arg(long)]
    pub(crate) api_secret: Option<String>,
    /// Media worker threads [env: MEDIASOUP_NUM_WORKERS] (default: CPU count).
    #[arg(long)]
    pub(crate) num_workers: Option<String>,
    /// Lowest media UDP port [env: MEDIASOUP_MIN_PORT] (default 40000).
    #[arg(long)]
    pub(crate) min_port: Option<String>,
    /// Highest media UDP port [env: MEDIASOUP_MAX_PORT] (default 50000).
    #[arg(long)]
    pub(crate) max_port: Option<String>,
    /// IP clients send media to, for servers behind NAT [env: MEDIASOUP_ANNOUNCED_IP].
    #[arg(long)]
    pub(crate) announced_ip: Option<String>,
    /// ICE-TCP: a passive TCP candidate beside UDP on every transport [env: RTC_TCP_ENABLED] (default true).
    #[arg(long)]
    pub(crate) tcp_enabled: Option<String>,
    /// First ICE-TCP port; worker i listens on it + i [env: RTC_TCP_PORT] (default: each worker's UDP port number).
    #[arg(long)]
    pub(crate) tcp_port: Option<String>,
    /// Log output: `text` or `json` [env: LOG_FORMAT].
    #[arg(long)]
    pub(crate) log_format: Option<String>,
    /// The embedded TURN server (`TURN_*`).
    #[command(flatten)]
    pub(crate) turn: turn::TurnArgs,
}

/// Media worker settings (`MEDIASOUP_*`).
#[derive(Debug, Clone)]
pub(crate) struct MediaSettings {
    pub(crate) num_workers: usize,
    pub(crate) min_port: u16,
    pub(crate) max_port: u16,
    pub(crate) log_level: String,
    pub(crate) listen_ip: IpAddr,
    pub(crate) announced_ip: Option<IpAddr>,
    pub(crate) tcp_enabled: bool,
    pub(crate) tcp_port: Option<u16>,
    pub(crate) listen_ip6: Option<Ipv6Addr>,
    pub(crate) announced_ip6: Option<Ipv6Addr>,
}

/// Redis settings (`REDIS_*`) and the cluster key (`CLUSTER_SECRET*`).
#[derive(Clone)]
pub(crate) struct RedisSettings {
    pub(crate) enabled: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// Signs and verifies every message between nodes: from
    /// `CLUSTER_SECRET`, else `API_SECRET` (see docs/cluster.md).
    pub(crate) cluster_key: ClusterKey,
    /// Whether the key comes from `CLUSTER_SECRET` (else `API_SECRET`).
    pub(crate) cluster_secret_set: bool,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password or a secret.
        f.debug_struct("RedisSettings")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "url",
                &self.url.as_deref().map(pulsewave_cluster::redact_url),
            )
            .field("tls_ca", &self.tls_ca)
            .field("cluster_key", &self.cluster_key)
            .finish()
    }
}

/// This node in a cluster (`NODE_ID`, `NODE_REGION`, `NODE_URL`,
/// `DRAIN_TIMEOUT`).
#[derive(Debug, Clone)]
pub(crate) struct NodeSettings {
    pub(crate) node: NodeConfig,
    /// How long a SIGTERM waits for rooms to empty (Redis enabled only).
    pub(crate) drain_timeout: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dev: bool,
    pub(crate) server: ServerConfig,
    pub(crate) media: MediaSettings,
    pub(crate) redis: RedisSettings,
    pub(crate) node: NodeSettings,
    /// The embedded TURN server, when `TURN_ENABLED`.
    pub(crate) turn: Option<TurnSettings>,
    pub(crate) log_format: LogFormat,
    /// Things worth a warning once logging is up.
    pub(crate) warnings: Vec<String>,
}

/// Where values come from: a flag if given, else the environment.
pub(crate) struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { env }
    }

    fn get(&self, flag: &Option<String>, var: &str) -> Option<String> {
        flag.clone()
            .or_else(|| (self.env)(var))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// The IP of the interface that routes to the Internet: a UDP socket
/// "connected" to a public address (no packet is sent) reveals it.
fn detect_local_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(err(var, format!("`{v}` is not a boolean (true/false)"))),
    }
}

fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    v: &str,
    what: &str,
) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| err(var, format!("`{v}` is not {what}")))
}

fn parse_duration(var: &'static str, v: &str) -> Result<Duration, ConfigError> {
    pulsewave_auth::parse_ttl(v).map_err(|e| err(var, e.to_string()))
}

/// The per-room media limits (docs/security.md): each a positive number
/// from its variable, else [`RoomConfig`]'s default.
fn media_limits(src: &Source<'_>) -> Result<RoomConfig, ConfigError> {
    fn limit<T: std::str::FromStr + PartialOrd + From<u8> + Copy>(
        src: &Source<'_>,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match src.get(&None, var) {
            Some(v) => {
                let n: T = parse_num(var, &v, "a positive number")?;
                if n < T::from(1) {
                    return Err(err(var, "must be at least 1"));
                }
                Ok(n)
            }
            None => Ok(default),
        }
    }
    let d = RoomConfig::default();
    Ok(RoomConfig {
        max_consumers_per_participant: limit(
            src,
            "MAX_CONSUMERS_PER_PARTICIPANT",
            d.max_consumers_per_participant,
        )?,
        max_consumers_per_transport: limit(
            src,
            "MAX_CONSUMERS_PER_TRANSPORT",
            d.max_consumers_per_transport,
        )?,
        max_consumers_per_producer: limit(
            src,
            "MAX_CONSUMERS_PER_PRODUCER",
            d.max_consumers_per_producer,
        )?,
        max_encodings_per_producer: limit(
            src,
            "MAX_ENCODINGS_PER_PRODUCER",
            d.max_encodings_per_producer,
        )?,
        max_ssrcs_per_transport: limit(src, "MAX_SSRCS_PER_TRANSPORT", d.max_ssrcs_per_transport)?,
        max_data_consumers_per_participant: limit(
            src,
            "MAX_DATA_CONSUMERS_PER_PARTICIPANT",
            d.max_data_consumers_per_participant,
        )?,
        max_data_messages_per_second: limit(
            src,
            "DATA_CHANNEL_RATE_LIMIT",
            d.max_data_messages_per_second,
        )?,
        max_data_bytes_per_second: limit(
            src,
            "DATA_CHANNEL_BYTE_RATE_LIMIT",
            d.max_data_bytes_per_second,
        )?,
        max_incoming_bitrate: limit(src, "MAX_INCOMING_BITRATE", d.max_incoming_bitrate)?,
        max_outgoing_bitrate: limit(src, "MAX_OUTGOING_BITRATE", d.max_outgoing_bitrate)?,
        bandwidth_estimation: match src.get(&None, "BANDWIDTH_ESTIMATION") {
            Some(v) => parse_bool("BANDWIDTH_ESTIMATION", &v)?,
            None => d.bandwidth_estimation,
        },
        initial_available_outgoing_bitrate: limit(
            src,
            "INITIAL_AVAILABLE_OUTGOING_BITRATE",
            d.initial_available_outgoing_bitrate,
        )?,
        ..d
    })
}

/// The bounds of each worker's ICE-TCP connections (`RTC_TCP_*`).
fn tcp_limits(src: &Source<'_>) -> Result<TcpLimits, ConfigError> {
    let defaults = TcpLimits::default();
    let count = |var: &'static str, default: usize, max: usize| -> Result<usize, ConfigError> {
        match src.get(&None, var) {
            Some(v) => {
                let n: usize = parse_num(var, v.trim(), "a whole number")?;
                if n == 0 || n > max {
                    return Err(err(var, format!("{n} is not between 1 and {max}")));
                }
                Ok(n)
            }
            None => Ok(default),
        }
    };
    let idle_timeout = match src.get(&None, "RTC_TCP_IDLE_TIMEOUT") {
        Some(v) => {
            let d = parse_duration("RTC_TCP_IDLE_TIMEOUT", &v)?;
            if d < MIN_TCP_IDLE_TIMEOUT {
                return Err(err(
                    "RTC_TCP_IDLE_TIMEOUT",
                    format!(
                        "`{v}` is below {}s: browsers send an ICE consent check only every few seconds, \
                         so live connections would be cut",
                        MIN_TCP_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            d
        }
        None => defaults.idle_timeout,
    };
    Ok(TcpLimits {
        max_connections: count(
            "RTC_TCP_MAX_CONNECTIONS",
            defaults.max_connections,
            1_000_000,
        )?,
        backlog: count("RTC_TCP_BACKLOG", defaults.backlog, 65_536)?,
        idle_timeout,
    })
}

/// The shortest `RTC_TCP_IDLE_TIMEOUT`: above a browser's consent check
/// interval (RFC 7675: about 5 s).
const MIN_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration where `0` means off.
fn parse_duration_or_zero(var: &'static str, v: &str) -> Result<Duration, ConfigError> {
    if v.trim().trim_end_matches('s') == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(var, v)
}

/// A count where 0 means no limit.
fn parse_limit<T: std::str::FromStr>(
    src: &Source<'_>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match src.get(&None, var) {
        Some(v) => parse_num(var, &v, "a whole number (0: no limit)"),
        None => Ok(default),
    }
}

impl Settings {
    /// Builds the configuration from flags and the environment.
    pub(crate) fn load(args: &ServeArgs, src: &Source<'_>) -> Result<Settings, ConfigError> {
        let dev = args.dev;
        let mut warnings = Vec::new();
        let host: IpAddr = match src.get(&args.host, "HOST") {
            Some(h) => parse_num("HOST", &h, "an IP address")?,
            None if dev => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let port: u16 = match src.get(&args.port, "PORT") {
            Some(p) => parse_num("PORT", &p, "a port number (0-65535)")?,
            None => 3000,
        };

        let api_key = src.get(&args.api_key, "API_KEY");
        let api_secret = src.get(&args.api_secret, "API_SECRET");
        let (api_key, api_secret) = match (api_key, api_secret) {
            (Some(k), Some(s)) => (k, s),
            (None, None) if dev => (DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned()),
            (None, _) => {
                return Err(err(
                    "API_KEY",
                    "required (or start with --dev for development keys)",
                ));
            }
            (_, None) => {
                return Err(err(
                    "API_SECRET",
                    "required (or start with --dev for development keys)",
                ));
            }
        };
        if api_key.contains(':') {
            return Err(err("API_KEY", "must not contain `:`"));
        }
        if !dev && api_secret.len() < 16 {
            return Err(err(
                "API_SECRET",
                "must be at least 16 characters outside --dev",
            ));
        }

        let token_ttl = match src.get(&None, "JWT_EXPIRES_IN") {
            Some(v) => parse_duration("JWT_EXPIRES_IN", &v)?,
            None => Duration::from_secs(24 * 3600),
        };

        let ice_servers: Vec<IceServer> = match src.get(&None, "ICE_SERVERS") {
            Some(v) => serde_json::from_str(&v).map_err(|e| {
                err(
                    "ICE_SERVERS",
                    format!(
                        "not a JSON list of {{\"urls\":[...],\"username\"?,\"credential\"?}}: {e}"
                    ),
                )
            })?,
            None => Vec::new(),
        };

        let num_workers = match src.get(&args.num_workers, "MEDIASOUP_NUM_WORKERS") {
            Some(v) => {
                let n: usize = parse_num("MEDIASOUP_NUM_WORKERS", &v, "a positive integer")?;
                if n == 0 || n > 256 {
                    return Err(err("MEDIASOUP_NUM_WORKERS", "must be between 1 and 256"));
                }
                n
            }
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let min_port: u16 = match src.get(&args.min_port, "MEDIASOUP_MIN_PORT") {
            Some(v) => parse_num("MEDIASOUP_MIN_PORT", &v, "a port number")?,
            None => 40000,
        };
        let max_port: u16 = match src.get(&args.max_port, "MEDIASOUP_MAX_PORT") {
            Some(v) => parse_num("MEDIASOUP_MAX_PORT", &v, "a port number")?,
            None => 50000,
        };
        if min_port == 0 {
            return Err(err("MEDIASOUP_MIN_PORT", "must be at least 1"));
        }
        if min_port > max_port {
            return Err(err(
                "MEDIASOUP_MAX_PORT",
                format!("{max_port} is below MEDIASOUP_MIN_PORT {min_port}"),
            ));
        }
        let tcp_enabled = match src.get(&args.tcp_enabled, "RTC_TCP_ENABLED") {
            Some(v) => parse_bool("RTC_TCP_ENABLED", &v)?,
            None => true,
        };
        let tcp_port: Option<u16> = match src.get(&args.tcp_port, "RTC_TCP_PORT") {
            Some(v) => {
                let p: u16 = parse_num("RTC_TCP_PORT", &v, "a port number")?;
                if p == 0 {
                    return Err(err("RTC_TCP_PORT", "must be at least 1"));
                }
                if usize::from(p) + num_workers - 1 > usize::from(u16::MAX) {
                    return Err(err(
                        "RTC_TCP_PORT",
                        format!("{p} + {num_workers} workers is past 65535"),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let tcp_limits = tcp_limits(src)?;
        let log_level = match src.get(&None, "MEDIASOUP_LOG_LEVEL") {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                l @ ("debug" | "warn" | "error" | "none" | "info" | "trace") => l.to_owned(),
                _ => {
                    return Err(err(
                        "MEDIASOUP_LOG_LEVEL",
                        format!("`{v}` is not one of debug, warn, error, none"),
                    ));
                }
            },
            None => "error".to_owned(),
        };
        let listen_ip: IpAddr = match src.get(&None, "MEDIASOUP_LISTEN_IP") {
            Some(v) => parse_num("MEDIASOUP_LISTEN_IP", &v, "an IP address")?,
            None => host,
        };
        let announced_ip: Option<IpAddr> =
            match src.get(&args.announced_ip, "MEDIASOUP_ANNOUNCED_IP") {
                Some(v) => Some(parse_num("MEDIASOUP_ANNOUNCED_IP", &v, "an IP address")?),
                None => None,
            };

        let listen_ip6: Option<Ipv6Addr> = match src.get(&None, "MEDIASOUP_LISTEN_IP6") {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(parse_num(
                "MEDIASOUP_LISTEN_IP6",
                v.trim(),
                "an IPv6 address",
            )?),
            None => None,
        };
        let announced_ip6: Option<Ipv6Addr> = match src.get(&None, "MEDIASOUP_ANNOUNCED_IP6") {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(parse_num(
                "MEDIASOUP_ANNOUNCED_IP6",
                v.trim(),
                "an IPv6 address",
            )?),
            None => None,
        };
        match (listen_ip6, announced_ip6) {
            (None, Some(_)) => {
                return Err(err(
                    "MEDIASOUP_ANNOUNCED_IP6",
                    "is set but MEDIASOUP_LISTEN_IP6 is not: set the IPv6 address the media sockets bind",
                ));
            }
            (Some(_), _) if listen_ip.is_ipv6() => {
                return Err(err(
                    "MEDIASOUP_LISTEN_IP6",
                    format!(
                        "MEDIASOUP_LISTEN_IP {listen_ip} is already IPv6: dual stack needs an IPv4 \
                         MEDIASOUP_LISTEN_IP beside it (for IPv6 only, leave MEDIASOUP_LISTEN_IP6 unset)"
                    ),
                ));
            }
            (Some(ip), None) if ip.is_unspecified() => {
                return Err(err(
                    "MEDIASOUP_ANNOUNCED_IP6",
                    "must be set when MEDIASOUP_LISTEN_IP6 is `::` (the IPv6 address clients reach)",
                ));
            }
            _ => {}
        }
        let announced = match announced_ip {
            Some(ip) => ip,
            None if !listen_ip.is_unspecified() => listen_ip,
            None => match detect_local_ip() {
                Some(ip) => ip,
                None => {
                    warnings.push(
                        "MEDIASOUP_ANNOUNCED_IP is not set and no routed interface was found: \
                         announcing 127.0.0.1, which only local clients can reach"
                            .to_owned(),
                    );
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                }
            },
        };

        let turn = turn::load(&args.turn, src, &api_secret, listen_ip, announced)?;

        let redis_enabled = match src.get(&None, "REDIS_ENABLED") {
            Some(v) => parse_bool("REDIS_ENABLED", &v)? && !dev,
            None => false,
        };
        let redis_port: u16 = match src.get(&None, "REDIS_PORT") {
            Some(v) => parse_num("REDIS_PORT", &v, "a port number")?,
            None => 6379,
        };
        // The cluster key: CLUSTER_SECRET, else derived from API_SECRET
        // (HKDF: the key cannot sign tokens). CLUSTER_SECRET_ACCEPT is also
        // accepted, never used to sign: for a rotation.
        let cluster_secret = src.get(&None, "CLUSTER_SECRET");
        if let Some(s) = &cluster_secret
            && !dev
            && s.len() < 16
        {
            return Err(err(
                "CLUSTER_SECRET",
                "must be at least 16 characters outside --dev",
            ));
        }
        let mut cluster_key = ClusterKey::derive(cluster_secret.as_deref().unwrap_or(&api_secret))
            .map_err(|e| err("CLUSTER_SECRET", e.to_string()))?;
        if let Some(extra) = src.get(&None, "CLUSTER_SECRET_ACCEPT") {
            cluster_key = cluster_key
                .also_accept(&extra)
                .map_err(|e| err("CLUSTER_SECRET_ACCEPT", e.to_string()))?;
        }
        let tls_ca = src.get(&None, "REDIS_TLS_CA").map(std::path::PathBuf::from);
        if let Some(path) = &tls_ca
            && redis_enabled
            && !path.is_file()
        {
            return Err(err(
                "REDIS_TLS_CA",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let redis = RedisSettings {
            enabled: redis_enabled,
            host: src
                .get(&None, "REDIS_HOST")
                .unwrap_or_else(|| "localhost".into()),
            port: redis_port,
            username: src.get(&None, "REDIS_USERNAME"),
            password: src.get(&None, "REDIS_PASSWORD"),
            url: src.get(&None, "REDIS_URL"),
            tls_ca,
            cluster_secret_set: cluster_secret.is_some(),
            cluster_key,
        };

        let node_id = match src.get(&None, "NODE_ID") {
            Some(id) => {
                if id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(err(
                        "NODE_ID",
                        "must be 1 to 64 characters among A-Z a-z 0-9 - _ .",
                    ));
                }
                id
            }
            None => pulsewave_cluster::random_node_id(),
        };
        let node_url = match src.get(&None, "NODE_URL") {
            Some(u) => {
                if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                    return Err(err(
                        "NODE_URL",
                        format!("`{u}` is not a ws:// or wss:// URL"),
                    ));
                }
                u
            }
            None => match announced {
                IpAddr::V6(ip) => format!("ws://[{ip}]:{port}"),
                IpAddr::V4(ip) => format!("ws://{ip}:{port}"),
            },
        };
        let drain_timeout = match src.get(&None, "DRAIN_TIMEOUT") {
            Some(v) => parse_duration("DRAIN_TIMEOUT", &v)?,
            None => Duration::from_secs(60),
        };
        let node = NodeSettings {
            node: NodeConfig {
                id: node_id,
                signaling_url: node_url,
                media_ip: announced.to_string(),
                region: src
                    .get(&None, "NODE_REGION")
                    .unwrap_or_else(|| "default".into()),
            },
            drain_timeout,
        };

        let defaults = Limits::default();
        let limits = Limits {
            max_message_size: match src.get(&None, "MAX_MESSAGE_SIZE") {
                Some(v) => {
                    let n: usize = parse_num("MAX_MESSAGE_SIZE", &v, "a size in bytes")?;
                    if !(256..=16 * 1024 * 1024).contains(&n) {
                        return Err(err("MAX_MESSAGE_SIZE", "must be between 256 and 16777216"));
                    }
                    n
                }
                None => defaults.max_message_size,
            },
            max_participants: match src.get(&None, "MAX_PARTICIPANTS") {
                Some(v) => parse_num("MAX_PARTICIPANTS", &v, "a number (0: no limit)")?,
                None => defaults.max_participants,
            },
            messages_per_second: match src.get(&None, "RATE_LIMIT") {
                Some(v) => {
                    let n: u32 = parse_num("RATE_LIMIT", &v, "messages per second")?;
                    if n == 0 {
                        return Err(err("RATE_LIMIT", "must be at least 1"));
                    }
                    n
                }
                None => defaults.messages_per_second,
            },
            message_burst: match src.get(&None, "RATE_LIMIT_BURST") {
                Some(v) => parse_num("RATE_LIMIT_BURST", &v, "a number of messages")?,
                None => defaults.message_burst,
            },
            outbound_queue: match src.get(&None, "OUTBOUND_QUEUE") {
                Some(v) => {
                    let n: usize = parse_num("OUTBOUND_QUEUE", &v, "a number of messages")?;
                    if n == 0 {
                        return Err(err("OUTBOUND_QUEUE", "must be at least 1"));
                    }
                    n
                }
                None => defaults.outbound_queue,
            },
            max_rooms: parse_limit(src, "MAX_ROOMS", defaults.max_rooms)?,
            max_connections_per_ip: parse_limit(
                src,
                "MAX_CONNECTIONS_PER_IP",
                defaults.max_connections_per_ip,
            )?,
            max_connections_per_identity: parse_limit(
                src,
                "MAX_CONNECTIONS_PER_IDENTITY",
                defaults.max_connections_per_identity,
            )?,
            max_tracks_per_participant: parse_limit(
                src,
                "MAX_TRACKS_PER_PARTICIPANT",
                defaults.max_tracks_per_participant,
            )?,
            max_data_channels_per_participant: parse_limit(
                src,
                "MAX_DATA_CHANNELS_PER_PARTICIPANT",
                defaults.max_data_channels_per_participant,
            )?,
            max_room_listing_bytes: parse_limit(
                src,
                "MAX_ROOM_LISTING_BYTES",
                defaults.max_room_listing_bytes,
            )?,
            join_timeout: match src.get(&None, "JOIN_TIMEOUT") {
                Some(v) => parse_duration("JOIN_TIMEOUT", &v)?,
                None => defaults.join_timeout,
            },
            send_timeout: match src.get(&None, "WS_SEND_TIMEOUT") {
                Some(v) => parse_duration("WS_SEND_TIMEOUT", &v)?,
                None => defaults.send_timeout,
            },
            tcp_user_timeout: match src.get(&None, "TCP_USER_TIMEOUT") {
                Some(v) => {
                    Some(parse_duration_or_zero("TCP_USER_TIMEOUT", &v)?).filter(|d| !d.is_zero())
                }
                None => defaults.tcp_user_timeout,
            },
        };
        let webhook_urls: Vec<String> = src
            .get(&None, "WEBHOOK_URLS")
            .map(|v| {
                v.split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let token_refresh_interval = match src.get(&None, "TOKEN_REFRESH_INTERVAL") {
            Some(v) => parse_duration_or_zero("TOKEN_REFRESH_INTERVAL", &v)?,
            None => Duration::from_secs(300),
        };
        let trusted_proxies = match src.get(&None, "TRUSTED_PROXIES") {
            Some(v) => v
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.parse::<IpNet>().map_err(|e| err("TRUSTED_PROXIES", e)))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let mut room = media_limits(src)?;
        // One variable for each of these: the media core enforces the same
        // numbers as signaling (0: no limit).
        let unlimited = |n: u32| if n == 0 { usize::MAX } else { n as usize };
        room.max_producers_per_participant = unlimited(limits.max_tracks_per_participant);
        room.max_data_producers_per_participant =
            unlimited(limits.max_data_channels_per_participant);
        let empty_room_timeout = match src.get(&None, "ROOM_EMPTY_TIMEOUT") {
            Some(v) => parse_duration("ROOM_EMPTY_TIMEOUT", &v)?,
            None => Duration::from_secs(10),
        };
        let resume_grace = match src.get(&None, "RESUME_GRACE") {
            Some(v) => parse_duration("RESUME_GRACE", &v)?,
            None => pulsewave_signal::DEFAULT_RESUME_GRACE,
        };
        let resume_buffer = match src.get(&None, "RESUME_BUFFER") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|e| err("RESUME_BUFFER", e.to_string()))?,
            None => pulsewave_signal::DEFAULT_RESUME_BUFFER,
        };
        let auto_create_rooms = match src.get(&None, "ROOM_AUTO_CREATE") {
            Some(v) => parse_bool("ROOM_AUTO_CREATE", &v)?,
            None => true,
        };
        let token_endpoint = match src.get(&None, "TOKEN_ENDPOINT") {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "open" if dev => TokenEndpointAuth::Open,
                "open" => {
                    return Err(err(
                        "TOKEN_ENDPOINT",
                        "`open` is only allowed with --dev; use `apikey`",
                    ));
                }
                "apikey" | "api-key" | "basic" => TokenEndpointAuth::ApiKey,
                "disabled" | "off" => TokenEndpointAuth::Disabled,
                _ => {
                    return Err(err(
                        "TOKEN_ENDPOINT",
                        format!("`{v}` is not one of apikey, disabled, open"),
                    ));
                }
            },
            None if dev => TokenEndpointAuth::Open,
            None => TokenEndpointAuth::ApiKey,
        };
        if token_endpoint == TokenEndpointAuth::Open && !host.is_loopback() {
            warnings.push(format!(
                "--dev with HOST={host}: POST /api/token is OPEN to everyone who reaches this \
                 address (any identity, any room). Use --dev only on 127.0.0.1, or set \
                 API_KEY/API_SECRET and run without --dev. /api/token sends no \
                 Access-Control-Allow-Origin in this mode."
            ));
        }
        let demo = match src.get(&None, "DEMO_ENABLED") {
            Some(v) => parse_bool("DEMO_ENABLED", &v)?,
            None => dev,
        };
        let web_dir = if demo {
            let dir = std::path::PathBuf::from(
                src.get(&None, "PULSEWAVE_WEB_DIR")
                    .unwrap_or_else(|| "web".to_owned()),
            );
            if dir.join("demo").is_dir() {
                Some(dir)
            } else {
                warnings.push(format!(
                    "the demo is enabled but {} has no demo/ folder (set PULSEWAVE_WEB_DIR); /demo/ is off",
                    dir.display()
                ));
                None
            }
        } else {
            None
        };
        let log_format = match src.get(&args.log_format, "LOG_FORMAT") {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "text" | "pretty" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(err("LOG_FORMAT", format!("`{v}` is not text or json"))),
            },
            None => LogFormat::Text,
        };

        Ok(Settings {
            dev,
            server: ServerConfig {
                listen: SocketAddr::new(host, port),
                api_key,
                api_secret,
                token_ttl,
                token_endpoint,
                ice_servers,
                participant_ice_servers: turn.as_ref().map(TurnSettings::participant_ice_servers),
                limits,
                empty_room_timeout,
                auto_create_rooms,
                resume_grace,
                resume_buffer,
                ping_interval: Duration::from_secs(15),
                token_refresh_interval,
                webhook_urls,
                webhook_ca_file: src
                    .get(&None, "WEBHOOK_CA_FILE")
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(std::path::PathBuf::from),
                metrics_room_limit: parse_limit(src, "METRICS_ROOM_LIMIT", 0usize)?,
                // Set by main once the embedded TURN server runs.
                extra_metrics: None,
                token_leeway: pulsewave_auth::DEFAULT_LEEWAY,
                trusted_proxies,
                media: Some(MediaConfig {
                    num_workers,
                    listen_ip,
                    announced_ip: Some(announced),
                    min_port,
                    max_port,
                    enable_tcp: tcp_enabled,
                    tcp_port,
                    tcp_limits,
                    listen_ip6,
                    announced_ip6,
                    room,
                }),
                web_dir,
                // Set by main once connected (Redis) or built (single node).
                cluster: Cluster::local(),
            },
            media: MediaSettings {
                num_workers,
                min_port,
                max_port,
                log_level,
                listen_ip,
                announced_ip,
                tcp_enabled,
                tcp_port,
                listen_ip6,
                announced_ip6,
            },
            redis,
            node,
            turn,
            log_format,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Settings from `vars` alone (no process environment); also used by
    /// the `turn` module's tests.
    pub(in crate::settings) fn load(
        vars: &[(&str, &str)],
        dev: bool,
    ) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| map.get(k).cloned();
        let args = ServeArgs {
            dev,
            ..Default::default()
        };
        Settings::load(&args, &Source::new(&env))
    }

    #[test]
    fn dev_needs_nothing() {
        let s = load(&[], true).unwrap();
        assert_eq!(s.server.api_key, DEV_API_KEY);
        assert_eq!(s.server.listen.port(), 3000);
        assert!(s.server.listen.ip().is_loopback());
        assert_eq!(s.server.token_endpoint, TokenEndpointAuth::Open);
        assert!(!s.redis.enabled);
    }

    #[test]
    fn seed_env_example_is_accepted() {
        let s = load(
            &[
                ("PORT", "3000"),
                ("HOST", "0.0.0.0"),
                ("MEDIASOUP_NUM_WORKERS", "4"),
                ("MEDIASOUP_MIN_PORT", "40000"),
                ("MEDIASOUP_MAX_PORT", "50000"),
                ("MEDIASOUP_LOG_LEVEL", "error"),
                ("REDIS_HOST", "localhost"),
                ("REDIS_PORT", "6379"),
                ("REDIS_ENABLED", "true"),
                ("API_KEY", "your-api-key"),
                ("API_SECRET", "your-api-secret-0123456789"),
                ("JWT_EXPIRES_IN", "24h"),
                (
                    "ICE_SERVERS",
                    r#"[{"urls":["stun:stun.l.google.com:19302"]}]"#,
                ),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.media.num_workers, 4);
        assert_eq!((s.media.min_port, s.media.max_port), (40000, 50000));
        assert!(s.redis.enabled);
        assert_eq!(s.server.token_ttl, Duration::from_secs(86400));
        assert_eq!(s.server.ice_servers.len(), 1);
        assert_eq!(s.server.token_endpoint, TokenEndpointAuth::ApiKey);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PORT", "abc")], "PORT"),
            (&[("PORT", "70000")], "PORT"),
            (&[("HOST", "nowhere")], "HOST"),
            (&[("JWT_EXPIRES_IN", "soon")], "JWT_EXPIRES_IN"),
            (&[("ICE_SERVERS", "[{")], "ICE_SERVERS"),
            (&[("MEDIASOUP_NUM_WORKERS", "0")], "MEDIASOUP_NUM_WORKERS"),
            (
                &[
                    ("MEDIASOUP_MIN_PORT", "5000"),
                    ("MEDIASOUP_MAX_PORT", "4000"),
                ],
                "MEDIASOUP_MAX_PORT",
            ),
            (&[("MEDIASOUP_LOG_LEVEL", "loud")], "MEDIASOUP_LOG_LEVEL"),
            (&[("RTC_TCP_ENABLED", "sometimes")], "RTC_TCP_ENABLED"),
            (&[("RTC_TCP_PORT", "0")], "RTC_TCP_PORT"),
            (
                &[("RTC_TCP_PORT", "65535"), ("MEDIASOUP_NUM_WORKERS", "2")],
                "RTC_TCP_PORT",
            ),
            (
                &[("RTC_TCP_MAX_CONNECTIONS", "0")],
                "RTC_TCP_MAX_CONNECTIONS",
            ),
            (
                &[("RTC_TCP_MAX_CONNECTIONS", "lots")],
                "RTC_TCP_MAX_CONNECTIONS",
            ),
            (&[("RTC_TCP_BACKLOG", "0")], "RTC_TCP_BACKLOG"),
            (&[("RTC_TCP_BACKLOG", "100000")], "RTC_TCP_BACKLOG"),
            (&[("RTC_TCP_IDLE_TIMEOUT", "2s")], "RTC_TCP_IDLE_TIMEOUT"),
            (&[("RTC_TCP_IDLE_TIMEOUT", "never")], "RTC_TCP_IDLE_TIMEOUT"),
            (
                &[("MEDIASOUP_LISTEN_IP6", "10.0.0.1")],
                "MEDIASOUP_LISTEN_IP6",
            ),
            (&[("MEDIASOUP_LISTEN_IP6", "::")], "MEDIASOUP_ANNOUNCED_IP6"),
            (
                &[("MEDIASOUP_ANNOUNCED_IP6", "2001:db8::1")],
                "MEDIASOUP_ANNOUNCED_IP6",
            ),
            (
                &[
                    ("MEDIASOUP_LISTEN_IP6", "::1"),
                    ("MEDIASOUP_ANNOUNCED_IP6", "192.0.2.1"),
                ],
                "MEDIASOUP_ANNOUNCED_IP6",
            ),
            (
                &[
                    ("MEDIASOUP_LISTEN_IP", "::1"),
                    ("MEDIASOUP_LISTEN_IP6", "::1"),
                ],
                "MEDIASOUP_LISTEN_IP6",
            ),
            (&[("REDIS_ENABLED", "maybe")], "REDIS_ENABLED"),
            (&[("REDIS_PORT", "-1")], "REDIS_PORT"),
            (&[("MAX_MESSAGE_SIZE", "1")], "MAX_MESSAGE_SIZE"),
            (&[("NODE_ID", "no spaces")], "NODE_ID"),
            (&[("NODE_URL", "http://x")], "NODE_URL"),
            (&[("DRAIN_TIMEOUT", "later")], "DRAIN_TIMEOUT"),
            (
                &[("MAX_ENCODINGS_PER_PRODUCER", "0")],
                "MAX_ENCODINGS_PER_PRODUCER",
            ),
            (&[("MAX_INCOMING_BITRATE", "fast")], "MAX_INCOMING_BITRATE"),
            (
                &[("DATA_CHANNEL_RATE_LIMIT", "-3")],
                "DATA_CHANNEL_RATE_LIMIT",
            ),
            (&[("MAX_ROOMS", "many")], "MAX_ROOMS"),
            (
                &[("MAX_CONNECTIONS_PER_IP", "-1")],
                "MAX_CONNECTIONS_PER_IP",
            ),
            (
                &[("MAX_CONNECTIONS_PER_IDENTITY", "x")],
                "MAX_CONNECTIONS_PER_IDENTITY",
            ),
            (&[("JOIN_TIMEOUT", "soon")], "JOIN_TIMEOUT"),
            (&[("WS_SEND_TIMEOUT", "soon")], "WS_SEND_TIMEOUT"),
            (&[("TCP_USER_TIMEOUT", "soon")], "TCP_USER_TIMEOUT"),
            (&[("OUTBOUND_QUEUE", "0")], "OUTBOUND_QUEUE"),
            (
                &[("MAX_TRACKS_PER_PARTICIPANT", "x")],
                "MAX_TRACKS_PER_PARTICIPANT",
            ),
            (
                &[("MAX_DATA_CHANNELS_PER_PARTICIPANT", "x")],
                "MAX_DATA_CHANNELS_PER_PARTICIPANT",
            ),
            (
                &[("MAX_ROOM_LISTING_BYTES", "big")],
                "MAX_ROOM_LISTING_BYTES",
            ),
            (
                &[("TOKEN_REFRESH_INTERVAL", "often")],
                "TOKEN_REFRESH_INTERVAL",
            ),
            (&[("TRUSTED_PROXIES", "10.0.0.0/40")], "TRUSTED_PROXIES"),
        ];
        for (vars, var) in cases {
            let e = load(vars, true).unwrap_err();
            assert_eq!(e.var, *var, "{e}");
            assert!(e.to_string().contains(var));
        }
        let production: &[(&[(&str, &str)], &str)] = &[
            (&[("CLUSTER_SECRET", "short")], "CLUSTER_SECRET"),
            (
                &[
                    ("REDIS_ENABLED", "true"),
                    ("REDIS_TLS_CA", "/nonexistent/ca.pem"),
                ],
                "REDIS_TLS_CA",
            ),
        ];
        for (vars, var) in production {
            let mut vars = vars.to_vec();
            vars.extend([("API_KEY", "k"), ("API_SECRET", "0123456789abcdef")]);
            let e = load(&vars, false).unwrap_err();
            assert_eq!(e.var, *var, "{e}");
        }
    }

    #[test]
    fn ice_tcp_limits_have_defaults_and_variables() {
        let media = load(&[], true).unwrap().server.media.unwrap();
        assert_eq!(media.tcp_limits, TcpLimits::default());
        assert_eq!(media.tcp_limits.max_connections, 4096);
        assert_eq!(media.tcp_limits.backlog, 512);
        assert_eq!(media.tcp_limits.idle_timeout, Duration::from_secs(30));
        let media = load(
            &[
                ("RTC_TCP_MAX_CONNECTIONS", "100"),
                ("RTC_TCP_BACKLOG", "64"),
                ("RTC_TCP_IDLE_TIMEOUT", "1m"),
            ],
            true,
        )
        .unwrap()
        .server
        .media
        .unwrap();
        assert_eq!(
            media.tcp_limits,
            TcpLimits {
                max_connections: 100,
                backlog: 64,
                idle_timeout: Duration::from_secs(60),
            }
        );
        let e = load(&[("RTC_TCP_IDLE_TIMEOUT", "5")], true).unwrap_err();
        assert!(e.to_string().contains("consent"), "{e}");
    }

    #[test]
    fn dual_stack_is_off_unless_an_ipv6_listen_address_is_set() {
        let s = load(&[], true).unwrap();
        assert_eq!(s.media.listen_ip6, None);
        assert_eq!(s.server.media.unwrap().listen_ip6, None);
        let s = load(&[("MEDIASOUP_LISTEN_IP6", "::1")], true).unwrap();
        let media = s.server.media.unwrap();
        assert_eq!(media.listen_ip6, Some(Ipv6Addr::LOCALHOST));
        assert_eq!(media.announced_ip6, None, "announced: the listen address");
        let s = load(
            &[
                ("MEDIASOUP_LISTEN_IP", "0.0.0.0"),
                ("MEDIASOUP_ANNOUNCED_IP", "192.0.2.7"),
                ("MEDIASOUP_LISTEN_IP6", "::"),
                ("MEDIASOUP_ANNOUNCED_IP6", "2001:db8::7"),
            ],
            true,
        )
        .unwrap();
        let media = s.server.media.unwrap();
        assert_eq!(media.listen_ip6, Some(Ipv6Addr::UNSPECIFIED));
        assert_eq!(media.announced_ip6, "2001:db8::7".parse().ok());
        // An empty variable is unset (compose files often pass one).
        let s = load(&[("MEDIASOUP_LISTEN_IP6", "")], true).unwrap();
        assert_eq!(s.media.listen_ip6, None);
    }

    #[test]
    fn ice_tcp_is_on_by_default_and_configurable() {
        let media = load(&[], true).unwrap().server.media.unwrap();
        assert!(media.enable_tcp);
        assert_eq!(media.tcp_port, None);
        let media = load(
            &[("RTC_TCP_ENABLED", "false"), ("RTC_TCP_PORT", "7881")],
            true,
        )
        .unwrap()
        .server
        .media
        .unwrap();
        assert!(!media.enable_tcp);
        assert_eq!(media.tcp_port, Some(7881));
    }

    #[test]
    fn media_limits_from_the_environment() {
        let s = load(&[], true).unwrap();
        let room = s.server.media.unwrap().room;
        assert_eq!(room.max_encodings_per_producer, 4);
        assert_eq!(room.max_incoming_bitrate, 20_000_000);
        let s = load(
            &[
                ("MAX_CONSUMERS_PER_PRODUCER", "1"),
                ("MAX_SSRCS_PER_TRANSPORT", "32"),
                ("DATA_CHANNEL_RATE_LIMIT", "10"),
                ("MAX_OUTGOING_BITRATE", "5000000"),
            ],
            true,
        )
        .unwrap();
        let room = s.server.media.unwrap().room;
        assert_eq!(room.max_consumers_per_producer, 1);
        assert_eq!(room.max_ssrcs_per_transport, 32);
        assert_eq!(room.max_data_messages_per_second, 10);
        assert_eq!(room.max_outgoing_bitrate, 5_000_000);
    }

    #[test]
    fn limits_have_defaults_and_variables() {
        let s = load(&[], true).unwrap();
        let l = &s.server.limits;
        assert_eq!(l.max_participants, 500);
        assert_eq!(l.max_rooms, 1000);
        assert_eq!(l.max_connections_per_ip, 200);
        assert_eq!(l.max_connections_per_identity, 10);
        assert_eq!(l.join_timeout, Duration::from_secs(15));
        assert_eq!(l.send_timeout, Duration::from_secs(10));
        assert_eq!(l.tcp_user_timeout, Some(Duration::from_secs(30)));
        assert_eq!(l.outbound_queue, 512);
        assert_eq!(l.max_tracks_per_participant, 16);
        assert_eq!(l.max_data_channels_per_participant, 16);
        assert_eq!(l.max_room_listing_bytes, 1024 * 1024);
        assert_eq!(s.server.token_refresh_interval, Duration::from_secs(300));
        assert!(s.server.trusted_proxies.is_empty());
        // --dev on 127.0.0.1: no warning about the token endpoint.
        assert!(
            !s.warnings.iter().any(|w| w.contains("/api/token")),
            "{:?}",
            s.warnings
        );
        let s = load(
            &[
                ("MAX_PARTICIPANTS", "0"),
                ("MAX_ROOMS", "3"),
                ("MAX_CONNECTIONS_PER_IP", "0"),
                ("MAX_CONNECTIONS_PER_IDENTITY", "2"),
                ("JOIN_TIMEOUT", "2s"),
                ("WS_SEND_TIMEOUT", "3s"),
                ("TCP_USER_TIMEOUT", "0"),
                ("OUTBOUND_QUEUE", "64"),
                ("MAX_TRACKS_PER_PARTICIPANT", "4"),
                ("MAX_DATA_CHANNELS_PER_PARTICIPANT", "5"),
                ("MAX_ROOM_LISTING_BYTES", "65536"),
                ("TOKEN_REFRESH_INTERVAL", "0"),
                ("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ],
            true,
        )
        .unwrap();
        let l = &s.server.limits;
        assert_eq!((l.max_participants, l.max_rooms), (0, 3));
        assert_eq!(
            (l.max_connections_per_ip, l.max_connections_per_identity),
            (0, 2)
        );
        assert_eq!(l.join_timeout, Duration::from_secs(2));
        assert_eq!(l.send_timeout, Duration::from_secs(3));
        assert_eq!(l.tcp_user_timeout, None);
        assert_eq!(l.outbound_queue, 64);
        assert_eq!(
            (
                l.max_tracks_per_participant,
                l.max_data_channels_per_participant
            ),
            (4, 5)
        );
        assert_eq!(l.max_room_listing_bytes, 65536);
        assert_eq!(s.server.token_refresh_interval, Duration::ZERO);
        assert_eq!(s.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn dev_on_a_network_address_warns() {
        let s = load(&[("HOST", "0.0.0.0")], true).unwrap();
        assert!(
            s.warnings.iter().any(|w| w.contains("/api/token is OPEN")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn node_settings() {
        let s = load(&[("PORT", "3005")], true).unwrap();
        assert!(s.node.node.id.starts_with("node-"));
        assert_eq!(s.node.node.region, "default");
        assert_eq!(s.node.node.signaling_url, "ws://127.0.0.1:3005");
        assert_eq!(s.node.node.media_ip, "127.0.0.1");
        assert_eq!(s.node.drain_timeout, Duration::from_secs(60));
        let s = load(
            &[
                ("NODE_ID", "eu-1"),
                ("NODE_REGION", "eu-west"),
                ("NODE_URL", "wss://eu-1.example.com"),
                ("DRAIN_TIMEOUT", "5s"),
                ("REDIS_ENABLED", "true"),
                ("API_KEY", "k"),
                ("API_SECRET", "0123456789abcdef"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.node.node.id, "eu-1");
        assert_eq!(s.node.node.region, "eu-west");
        assert_eq!(s.node.node.signaling_url, "wss://eu-1.example.com");
        assert_eq!(s.node.drain_timeout, Duration::from_secs(5));
        assert!(s.redis.enabled);
        // --dev never uses Redis.
        assert!(
            !load(&[("REDIS_ENABLED", "true")], true)
                .unwrap()
                .redis
                .enabled
        );
    }

    #[test]
    fn cluster_key_from_cluster_secret_else_api_secret() {
        let base = [("API_KEY", "k"), ("API_SECRET", "0123456789abcdef")];
        let s = load(&base, false).unwrap();
        assert!(!s.redis.cluster_secret_set);
        assert_eq!(
            s.redis.cluster_key.fingerprint(),
            ClusterKey::derive("0123456789abcdef")
                .unwrap()
                .fingerprint()
        );
        let mut vars = base.to_vec();
        vars.push(("CLUSTER_SECRET", "another-secret-of-the-cluster"));
        let s = load(&vars, false).unwrap();
        assert!(s.redis.cluster_secret_set);
        assert_eq!(
            s.redis.cluster_key.fingerprint(),
            ClusterKey::derive("another-secret-of-the-cluster")
                .unwrap()
                .fingerprint()
        );
        // Never printed.
        let shown = format!("{:?}", s.redis);
        assert!(!shown.contains("another-secret"), "{shown}");
    }

    #[test]
    fn production_requires_keys() {
        assert_eq!(load(&[], false).unwrap_err().var, "API_KEY");
        assert_eq!(
            load(&[("API_KEY", "k")], false).unwrap_err().var,
            "API_SECRET"
        );
        assert_eq!(
            load(&[("API_KEY", "k"), ("API_SECRET", "short")], false)
                .unwrap_err()
                .var,
            "API_SECRET"
        );
        assert_eq!(
            load(
                &[
                    ("API_KEY", "k"),
                    ("API_SECRET", "0123456789abcdef"),
                    ("TOKEN_ENDPOINT", "open")
                ],
                false
            )
            .unwrap_err()
            .var,
            "TOKEN_ENDPOINT"
        );
    }
}
