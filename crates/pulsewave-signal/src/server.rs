//! The HTTP listener: `POST /api/token`, `GET /healthz` and the WebSocket
//! upgrade on `/`, all on one port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::http;
use crate::limits::ConnectionLimiter;
use crate::media::WorkerPool;
use crate::room::{RoomManager, RoomSettings};
use pulsewave_auth::TokenVerifier;
use pulsewave_protocol::DisconnectReason;

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) rooms: RoomManager,
    pub(crate) verifier: TokenVerifier,
    shutdown_tx: watch::Sender<bool>,
    pub(crate) sessions: tokio_util::task::TaskTracker,
    /// Open WebSockets per client IP and per identity.
    pub(crate) connections: Arc<ConnectionLimiter>,
}

impl Shared {
    /// Fires once when the server starts shutting down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }
}

/// The signaling server (the seed's `WebSocketServer`): HTTP API and
/// WebSocket signaling on one port.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use pulsewave_signal::{ServerConfig, WebSocketServer};
///
/// let server = WebSocketServer::new(ServerConfig::dev(3000, "devkey", "secret"));
/// let running = server.start().await?;
/// println!("listening on {}", running.local_addr());
/// running.wait_for_signal().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WebSocketServer {
    config: ServerConfig,
    rooms: Option<RoomManager>,
}

impl WebSocketServer {
    /// A server with `config`. Its media workers ([`ServerConfig::media`])
    /// and room manager are created by [`WebSocketServer::start`].
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            rooms: None,
        }
    }

    /// A server using an existing room manager (and that manager's media
    /// workers, if any). Its rooms report to the manager's
    /// [`RoomSettings::cluster`], which should be `config.cluster`.
    pub fn with_rooms(config: ServerConfig, rooms: RoomManager) -> Self {
        Self {
            config,
            rooms: Some(rooms),
        }
    }

    /// Starts the media workers, binds the listening socket and starts
    /// accepting connections.
    pub async fn start(self) -> io::Result<RunningServer> {
        let (rooms, pool) = match self.rooms {
            Some(rooms) => (rooms, None),
            None => {
                let webhooks = if self.config.webhook_urls.is_empty() {
                    None
                } else {
                    Some(
                        crate::webhook::WebhookNotifier::start_with_cluster(
                            &self.config.webhook_urls,
                            &self.config.api_key,
                            &self.config.api_secret,
                            self.config.webhook_ca_file.as_deref(),
                            self.config.cluster.clone(),
                        )
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                    )
                };
                let pool = match &self.config.media {
                    Some(media) => Some(WorkerPool::start(media)?),
                    None => None,
                };
                let rooms = RoomManager::new(RoomSettings {
                    max_participants: self.config.limits.max_participants,
                    max_rooms: self.config.limits.max_rooms,
                    max_tracks_per_participant: self.config.limits.max_tracks_per_participant,
                    max_data_channels_per_participant: self
                        .config
                        .limits
                        .max_data_channels_per_participant,
                    max_room_listing_bytes: self.config.limits.max_room_listing_bytes,
                    empty_timeout: self.config.empty_room_timeout,
                    auto_create: self.config.auto_create_rooms,
                    resume_grace: self.config.resume_grace,
                    resume_buffer: self.config.resume_buffer,
                    ice_servers: self.config.ice_servers.clone(),
                    participant_ice_servers: self.config.participant_ice_servers.clone(),
                    media: pool.clone(),
                    cluster: self.config.cluster.clone(),
                    webhooks,
                });
                (rooms, pool)
            }
        };
        let listener = match TcpListener::bind(self.config.listen).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(pool) = &pool {
                    pool.stop();
                }
                return Err(e);
            }
        };
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            connections: ConnectionLimiter::new(
                self.config.limits.max_connections_per_ip,
                self.config.limits.max_connections_per_identity,
            ),
            verifier: self.config.verifier(),
            config: self.config,
            rooms,
            shutdown_tx,
            sessions: tokio_util::task::TaskTracker::new(),
        });
        info!(%local_addr, node = %shared.config.cluster.node_id(), "signaling server listening");
        if http::open_on_network(&shared.config) {
            warn!(
                %local_addr,
                "DEVELOPMENT MODE ON A NETWORK ADDRESS: POST /api/token is open, so anyone who \
                 reaches {local_addr} can mint tokens and join any room as anyone. Use --dev only \
                 on 127.0.0.1, or run without --dev (API_KEY/API_SECRET). Browsers on other \
                 origins are not allowed to call /api/token (no Access-Control-Allow-Origin)."
            );
        }
        if let Some(incoming) = shared.config.cluster.take_incoming_tunnels() {
            tokio::spawn(crate::cluster::accept_tunnels(shared.clone(), incoming));
        }
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(RunningServer {
            local_addr,
            shared,
            accept,
            pool,
        })
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        set_tcp_user_timeout(&stream, shared.config.limits.tcp_user_timeout);
        let mut stop = shared.shutdown_signal();
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(http::route(req, peer, shared).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
}

/// Sets `TCP_USER_TIMEOUT` (Linux): the kernel drops a connection whose sent
/// data stays unacknowledged that long (a peer gone without a FIN, or one
/// whose receive window stays closed), whatever the application is doing.
pub(crate) fn set_tcp_user_timeout(stream: &tokio::net::TcpStream, timeout: Option<Duration>) {
    #[cfg(target_os = "linux")]
    if let Some(t) = timeout.filter(|t| !t.is_zero()) {
        let ms = u32::try_from(t.as_millis()).unwrap_or(u32::MAX);
        if let Err(e) =
            nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::TcpUserTimeout, &ms)
        {
            debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, timeout);
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    pool: Option<Arc<WorkerPool>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The room manager.
    pub fn rooms(&self) -> &RoomManager {
        &self.shared.rooms
    }

    /// The media workers, if this server started them.
    pub fn workers(&self) -> Option<&Arc<WorkerPool>> {
        self.pool.as_ref()
    }

    /// The cluster this server is a node of.
    pub fn cluster(&self) -> &pulsewave_cluster::Cluster {
        &self.shared.config.cluster
    }

    /// Graceful drain, before [`shutdown`](Self::shutdown): marks the node
    /// draining in the cluster registry, so that it takes no new rooms
    /// (WebSockets for rooms not open here are relayed to their owner, or
    /// refused with 503 so that the load balancer retries elsewhere) and
    /// `/healthz` answers 503; then waits until no participant is left in
    /// this node's rooms, or `deadline`. Returns true if the rooms emptied.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let cluster = &self.shared.config.cluster;
        cluster.set_draining(true);
        let rooms = self.shared.rooms.room_names().len();
        info!(
            rooms,
            ?deadline,
            "draining: no new rooms; waiting for rooms to empty"
        );
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let busy: usize = self
                .shared
                .rooms
                .list_rooms()
                .await
                .iter()
                .map(|r| r.participants.len())
                .sum();
            if busy == 0 {
                info!("drained: no participant left");
                return true;
            }
            if tokio::time::Instant::now() >= end {
                warn!(participants = busy, "drain deadline reached");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops accepting connections, tells every participant
    /// (`disconnected`, reason `server-shutdown`), closes every room, waits
    /// up to `deadline` for sessions to end, and leaves the cluster
    /// (releases this node's room claims and registry entry).
    pub async fn shutdown(self, deadline: Duration) {
        info!("shutting down: closing rooms and sessions");
        self.shared.shutdown_tx.send_replace(true);
        self.shared
            .rooms
            .close_all(DisconnectReason::ServerShutdown)
            .await;
        self.shared.sessions.close();
        if tokio::time::timeout(deadline, self.shared.sessions.wait())
            .await
            .is_err()
        {
            warn!("some sessions did not end before the deadline");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.accept).await;
        self.shared.config.cluster.shutdown().await;
        if let Some(pool) = self.pool {
            // Rooms are closed; joining the worker threads is quick.
            let _ = tokio::task::spawn_blocking(move || pool.stop()).await;
        }
        info!("shutdown complete");
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully (10 s deadline).
    pub async fn wait_for_signal(self) {
        shutdown_signal().await;
        self.shutdown(Duration::from_secs(10)).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
