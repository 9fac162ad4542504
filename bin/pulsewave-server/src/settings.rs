//! Configuration from command-line flags, the environment and a `.env` file.
//!
//! Every variable of the seed server keeps its name and meaning. A flag wins
//! over the environment, which wins over `.env` (dotenvy never overrides a
//! variable that is already set). Each invalid value is reported with the
//! name of its variable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use pulsewave_cluster::{Cluster, ClusterKey, NodeConfig};
use pulsewave_core::RoomConfig;
use pulsewave_protocol::transport::IceServer;
use pulsewave_signal::media::MediaConfig;
use pulsewave_signal::{Limits, ServerConfig, TokenEndpointAuth};

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
    /// Log output: `text` or `json` [env: LOG_FORMAT].
    #[arg(long)]
    pub(crate) log_format: Option<String>,
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
            outbound_queue: defaults.outbound_queue,
        };
        let empty_room_timeout = match src.get(&None, "ROOM_EMPTY_TIMEOUT") {
            Some(v) => parse_duration("ROOM_EMPTY_TIMEOUT", &v)?,
            None => Duration::from_secs(10),
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
                limits,
                empty_room_timeout,
                auto_create_rooms,
                ping_interval: Duration::from_secs(15),
                media: Some(MediaConfig {
                    num_workers,
                    listen_ip,
                    announced_ip: Some(announced),
                    min_port,
                    max_port,
                    room: RoomConfig::default(),
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
            },
            redis,
            node,
            log_format,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], dev: bool) -> Result<Settings, ConfigError> {
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
            (&[("REDIS_ENABLED", "maybe")], "REDIS_ENABLED"),
            (&[("REDIS_PORT", "-1")], "REDIS_PORT"),
            (&[("MAX_MESSAGE_SIZE", "1")], "MAX_MESSAGE_SIZE"),
            (&[("NODE_ID", "no spaces")], "NODE_ID"),
            (&[("NODE_URL", "http://x")], "NODE_URL"),
            (&[("DRAIN_TIMEOUT", "later")], "DRAIN_TIMEOUT"),
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
