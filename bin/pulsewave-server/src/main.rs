//! `pulsewave-server`: the PulseWave SFU as one binary.
//!
//! ```text
//! pulsewave-server --dev                                   # run with embedded defaults
//! pulsewave-server token --dev --identity u1 --room r1     # print a JWT
//! ```

mod logging;
mod settings;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pulsewave_auth::{AccessToken, AccessTokenOptions, Metadata, VideoGrant};
use pulsewave_cluster::{
    Cluster, ClusterError, ClusterTimings, LocalCluster, RedisCluster, RedisManager, RedisOptions,
};
use pulsewave_signal::WebSocketServer;
use tracing::{error, info, warn};

use settings::{ServeArgs, Settings, Source};

/// PulseWave: a WebRTC selective forwarding unit.
#[derive(Debug, Parser)]
#[command(name = "pulsewave-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print an access token (JWT) signed with API_KEY/API_SECRET.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Participant identity (`sub`).
    #[arg(long)]
    identity: String,
    /// Room to grant.
    #[arg(long)]
    room: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Metadata: a JSON value or plain text.
    #[arg(long)]
    metadata: Option<String>,
    /// Lifetime such as `24h` (default: JWT_EXPIRES_IN).
    #[arg(long)]
    ttl: Option<String>,
    /// API key [env: API_KEY].
    #[arg(long)]
    api_key: Option<String>,
    /// API secret [env: API_SECRET].
    #[arg(long)]
    api_secret: Option<String>,
    /// Deny publishing.
    #[arg(long)]
    no_publish: bool,
    /// Deny subscribing.
    #[arg(long)]
    no_subscribe: bool,
    /// Deny sending data.
    #[arg(long)]
    no_data: bool,
    /// Hide the participant from others.
    #[arg(long)]
    hidden: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env_file = cli.serve.env_file.clone();
    match env_file {
        Some(path) => {
            if let Err(e) = dotenvy::from_path(&path) {
                eprintln!("error: cannot read env file {path}: {e}");
                return ExitCode::from(2);
            }
        }
        None => {
            // A missing ./.env is fine; a broken one is not.
            if let Err(e) = dotenvy::dotenv()
                .map(|_| ())
                .or_else(|e| if e.not_found() { Ok(()) } else { Err(e) })
            {
                eprintln!("error: cannot read .env: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let env = |k: &str| std::env::var(k).ok();
    let source = Source::new(&env);
    match cli.command {
        Some(Command::Token(args)) => print_token(&cli.serve, args, &source),
        Some(Command::Serve) | None => serve(&cli.serve, &source),
    }
}

fn print_token(serve: &ServeArgs, args: TokenArgs, source: &Source<'_>) -> ExitCode {
    let mut serve = serve.clone();
    serve.api_key = args.api_key.or(serve.api_key);
    serve.api_secret = args.api_secret.or(serve.api_secret);
    let settings = match Settings::load(&serve, source) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ttl = match args.ttl.as_deref().map(pulsewave_auth::parse_ttl) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("error: --ttl: {e}");
            return ExitCode::from(2);
        }
        None => settings.server.token_ttl,
    };
    let metadata = args.metadata.map(|m| match serde_json::from_str(&m) {
        Ok(v) => Metadata::Json(v),
        Err(_) => Metadata::Text(m),
    });
    let mut token = AccessToken::new(
        settings.server.api_key,
        settings.server.api_secret,
        AccessTokenOptions {
            identity: args.identity,
            name: args.name,
            metadata,
            ttl: Some(ttl),
        },
    );
    token.add_grant(VideoGrant {
        room: Some(args.room),
        room_join: true,
        can_publish: Some(!args.no_publish),
        can_subscribe: Some(!args.no_subscribe),
        can_publish_data: Some(!args.no_data),
        hidden: args.hidden,
        ..VideoGrant::default()
    });
    match token.to_jwt() {
        Ok(jwt) => {
            println!("{jwt}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs, source: &Source<'_>) -> ExitCode {
    let settings = match Settings::load(args, source) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(settings.log_format, &settings.media.log_level) {
        eprintln!("error: RUST_LOG: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pulsewave-signal")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    for w in &settings.warnings {
        warn!("{w}");
    }
    runtime.block_on(async move {
        if settings.dev {
            warn!(
                "development mode: API key `{}`, API secret `{}`; the token endpoint is open; single node, no Redis",
                settings.server.api_key, settings.server.api_secret
            );
            println!(
                "PulseWave dev mode\n  API key:    {}\n  API secret: {}\n  signaling:  ws://{}/?token=<token>\n  token:      curl -X POST http://{}/api/token -H 'Content-Type: application/json' -d '{{\"identity\":\"user-123\",\"room\":\"my-room\"}}'",
                settings.server.api_key,
                settings.server.api_secret,
                settings.server.listen,
                settings.server.listen,
            );
        }
        let cluster = match cluster(&settings).await {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot set up the cluster (REDIS_*)");
                return ExitCode::from(2);
            }
        };
        let mut server_config = settings.server.clone();
        server_config.cluster = cluster.clone();
        info!(
            workers = settings.media.num_workers,
            ports = %format!("{}-{}", settings.media.min_port, settings.media.max_port),
            listen_ip = %settings.media.listen_ip,
            announced_ip = ?settings.media.announced_ip,
            tcp = settings.media.tcp_enabled,
            tcp_port = ?settings.media.tcp_port,
            listen_ip6 = ?settings.media.listen_ip6,
            announced_ip6 = ?settings.media.announced_ip6,
            "media settings"
        );
        // The embedded TURN server (TURN_ENABLED): started first, so that
        // the credentials handed out in `joined` always point at a server.
        let turn = match &settings.turn {
            Some(t) => match pulsewave_turn::TurnServer::start(t.config.clone()).await {
                Ok(server) => {
                    info!(
                        udp = ?server.udp_addr(),
                        tcp = ?server.tcp_addr(),
                        tls = ?server.tls_addr(),
                        urls = ?t.urls,
                        credential_ttl = ?t.ttl,
                        "embedded TURN server ready"
                    );
                    Some(server)
                }
                Err(e) => {
                    error!(error = %e, "cannot start the embedded TURN server (TURN_*)");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        server_config.extra_metrics = turn.as_ref().map(|t| turn_metrics(t.stats_handle()));
        let server = WebSocketServer::new(server_config);
        let running = match server.start().await {
            Ok(r) => r,
            Err(e) => {
                error!(listen = %settings.server.listen, error = %e, "cannot listen (HOST/PORT)");
                return ExitCode::FAILURE;
            }
        };
        info!(addr = %running.local_addr(), node = %cluster.node_id(), "PulseWave is ready");
        pulsewave_signal::shutdown_signal().await;
        if !cluster.is_single_node() {
            // Graceful drain: no new rooms here, let the rooms finish.
            info!(deadline = ?settings.node.drain_timeout, "signal received; draining (a second signal stops at once)");
            tokio::select! {
                _ = running.drain(settings.node.drain_timeout) => {}
                _ = pulsewave_signal::shutdown_signal() => info!("second signal: stopping now"),
            }
        }
        info!("shutting down");
        running.shutdown(Duration::from_secs(10)).await;
        if let Some(turn) = turn {
            turn.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// The embedded TURN server's counters as `/metrics` series.
fn turn_metrics(handle: pulsewave_turn::StatsHandle) -> pulsewave_signal::MetricsSource {
    pulsewave_signal::MetricsSource::new(move || {
        let handle = handle.clone();
        async move { render_turn_metrics(&handle.stats().await) }
    })
}

/// The Prometheus text of the TURN counters.
fn render_turn_metrics(s: &pulsewave_turn::Stats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in values {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "pulsewave_turn_allocations",
        "gauge",
        "Relay allocations open on the embedded TURN server.",
        &[("", s.allocations as u64)],
    );
    metric(
        "pulsewave_turn_allocations_total",
        "counter",
        "Relay allocations created by the embedded TURN server.",
        &[("", s.allocations_created)],
    );
    metric(
        "pulsewave_turn_auth_failures_total",
        "counter",
        "TURN requests refused for bad or expired credentials.",
        &[("", s.auth_failures)],
    );
    metric(
        "pulsewave_turn_relayed_packets_total",
        "counter",
        "Datagrams relayed by the embedded TURN server, by direction.",
        &[
            ("{direction=\"to_peer\"}", s.packets_to_peers),
            ("{direction=\"to_client\"}", s.packets_to_clients),
        ],
    );
    metric(
        "pulsewave_turn_relayed_bytes_total",
        "counter",
        "Payload bytes relayed by the embedded TURN server, by direction.",
        &[
            ("{direction=\"to_peer\"}", s.bytes_to_peers),
            ("{direction=\"to_client\"}", s.bytes_to_clients),
        ],
    );
    metric(
        "pulsewave_turn_dropped_total",
        "counter",
        "Datagrams the embedded TURN server dropped: no permission or channel, over quota, malformed.",
        &[("", s.dropped)],
    );
    out
}

/// The cluster backend: Redis when `REDIS_ENABLED=true`, else a single node.
/// An unreachable Redis does not stop the start: the node keeps trying,
/// and meanwhile refuses rooms it cannot place (HTTP 503).
async fn cluster(settings: &Settings) -> Result<Cluster, ClusterError> {
    let node = settings.node.node.clone();
    if !settings.redis.enabled {
        info!(node = %node.id, "single node (REDIS_ENABLED=false)");
        return Ok(Cluster::new(LocalCluster::new(node)));
    }
    let r = &settings.redis;
    let manager = RedisManager::new(RedisOptions {
        host: r.host.clone(),
        port: r.port,
        username: r.username.clone(),
        password: r.password.clone(),
        url: r.url.clone(),
        tls_ca: r.tls_ca.clone(),
        ..RedisOptions::default()
    });
    let target = match &r.url {
        Some(url) => pulsewave_cluster::redact_url(url),
        None => format!("{}:{}", r.host, r.port),
    };
    let connection = manager.connect_lazy()?;
    match connection.wait_connected(Duration::from_secs(5)).await {
        Ok(()) => {
            info!(redis = %target, node = %node.id, region = %node.region, url = %node.signaling_url, "connected to Redis")
        }
        // Wrong credentials or TLS setup: retrying cannot help.
        Err(e @ (ClusterError::Auth(_) | ClusterError::Config(_))) => {
            connection.quit().await;
            return Err(e);
        }
        Err(e) => {
            warn!(redis = %target, error = %e, "Redis is not reachable yet; retrying in the background (new rooms are refused until it is)")
        }
    }
    info!(
        cluster_key = %r.cluster_key.fingerprint(),
        from = if r.cluster_secret_set { "CLUSTER_SECRET" } else { "API_SECRET" },
        "cluster messages are signed; every node must show the same key fingerprint"
    );
    Ok(Cluster::new(RedisCluster::start(
        connection,
        node,
        r.cluster_key.clone(),
        ClusterTimings::default(),
    )?))
}
