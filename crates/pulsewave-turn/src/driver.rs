//! The tokio driver: listeners, connections and relay sockets around one
//! [`Server`] owned by one task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::{Client, Event, RelayId, Server, ServerConfig, Stats, Transmit, Transport};
use crate::{Error, stun};

/// A TLS listener: where, and with which rustls configuration.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// Listen address.
    pub listen: SocketAddr,
    /// Server configuration (see [`tls_config_from_pem`]).
    pub config: Arc<rustls::ServerConfig>,
}

/// Everything [`TurnServer::start`] needs.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The core's limits, lifetimes, credentials and peer policy.
    pub core: ServerConfig,
    /// UDP listener.
    pub udp: Option<SocketAddr>,
    /// TCP listener.
    pub tcp: Option<SocketAddr>,
    /// TLS listener.
    pub tls: Option<TlsListener>,
    /// IP relay sockets bind.
    pub relay_bind_ip: IpAddr,
    /// Port range of relay sockets (inclusive); `None`: any free port.
    pub relay_ports: Option<(u16, u16)>,
    /// Most TCP and TLS connections at once; past it, new ones are closed.
    pub max_connections: usize,
    /// Most TCP and TLS connections from one client IP; past it, new ones
    /// from that IP are closed.
    pub max_connections_per_ip: usize,
    /// A TCP/TLS connection that sends nothing for this long is closed (a
    /// browser with a relay sends ICE consent checks every few seconds).
    pub idle_timeout: Duration,
    /// Time a new TCP/TLS connection has for its TLS handshake and first
    /// message.
    pub handshake_timeout: Duration,
    /// Longest one write to a TCP/TLS client may take before the
    /// connection is dropped.
    pub write_timeout: Duration,
}

impl TurnConfig {
    /// No listener yet, relays bound on `relay_bind_ip` at any free port.
    pub fn new(core: ServerConfig, relay_bind_ip: IpAddr) -> Self {
        Self {
            core,
            udp: None,
            tcp: None,
            tls: None,
            relay_bind_ip,
            relay_ports: None,
            max_connections: 1000,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A rustls server configuration (aws-lc-rs provider, TLS 1.2 and 1.3)
/// from a PEM certificate chain and a PEM private key.
pub fn tls_config_from_pem(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

enum Input {
    Client {
        client: Client,
        bytes: Vec<u8>,
    },
    Peer {
        relay: RelayId,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Opened {
        connection: u64,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Closed {
        client: Client,
    },
    Stats(oneshot::Sender<Stats>),
}

/// A running TURN server. Dropping it does not stop it; call
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct TurnServer {
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    inputs: mpsc::Sender<Input>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Inputs queued towards the core task; readers wait when it is full.
const INPUT_QUEUE: usize = 4096;
/// Frames queued towards one TCP/TLS client; past it frames are dropped.
const WRITE_QUEUE: usize = 256;
/// Most ports tried per relay in a port range.
const MAX_BIND_ATTEMPTS: u32 = 256;

impl TurnServer {
    /// Binds the listeners and starts serving.
    pub async fn start(config: TurnConfig) -> Result<Self, Error> {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let udp = match config.udp {
            Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await.map_err(|source| {
                Error::Bind {
                    what: "udp",
                    addr,
                    source,
                }
            })?)),
            None => None,
        };
        let tcp = match config.tcp {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "tcp",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let tls = match &config.tls {
            Some(l) => Some((
                TcpListener::bind(l.listen)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "tls",
                        addr: l.listen,
                        source,
                    })?,
                TlsAcceptor::from(l.config.clone()),
            )),
            None => None,
        };
        let udp_addr = udp.as_ref().map(|s| s.local_addr()).transpose()?;
        let tcp_addr = tcp.as_ref().map(|s| s.local_addr()).transpose()?;
        let tls_addr = tls.as_ref().map(|(s, _)| s.local_addr()).transpose()?;

        if let Some(udp) = &udp {
            tasks.spawn(udp_reader(udp.clone(), tx.clone(), cancel.clone()));
        }
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let next_connection = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let accept = Acceptor {
            tx: tx.clone(),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            connections,
            next_connection,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            per_ip: Arc::new(std::sync::Mutex::new(HashMap::new())),
            max_per_ip: config.max_connections_per_ip,
            write_timeout: config.write_timeout,
        };
        if let Some(l) = tcp {
            tasks.spawn(accept.clone().run(l, None));
        }
        if let Some((l, acceptor)) = tls {
            tasks.spawn(accept.clone().run(l, Some(acceptor)));
        }
        let core = Server::new(config.core.clone(), Instant::now(), SystemTime::now());
        let driver = Driver {
            core,
            udp,
            writers: HashMap::new(),
            relays: HashMap::new(),
            tx: tx.clone(),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            relay_bind_ip: config.relay_bind_ip,
            relay_ports: config.relay_ports,
            next_port: 0,
        };
        tasks.spawn(driver.run(rx));
        tracing::info!(?udp_addr, ?tcp_addr, ?tls_addr, "TURN server listening");
        Ok(Self {
            udp_addr,
            tcp_addr,
            tls_addr,
            inputs: tx,
            cancel,
            tasks,
        })
    }

    /// The UDP listener's address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The TCP listener's address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS listener's address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The core's counters (default values once stopped).
    pub async fn stats(&self) -> Stats {
        self.stats_handle().stats().await
    }

    /// A cloneable handle that reads the counters, for a metrics endpoint
    /// that outlives a borrow of the server.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            inputs: self.inputs.clone(),
        }
    }

    /// Stops every listener, connection and relay, and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Reads a [`TurnServer`]'s counters ([`TurnServer::stats_handle`]).
#[derive(Debug, Clone)]
pub struct StatsHandle {
    inputs: mpsc::Sender<Input>,
}

impl StatsHandle {
    /// The core's counters (default values once the server stopped).
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Stats(tx)).await.is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }
}

async fn udp_reader(socket: Arc<UdpSocket>, tx: mpsc::Sender<Input>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors surface as recv errors on some systems.
                Err(_) => continue,
            },
        };
        let client = Client {
            transport: Transport::Udp,
            remote: from,
            connection: 0,
        };
        let input = Input::Client {
            client,
            bytes: buf[..n].to_vec(),
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct Acceptor {
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    connections: Arc<Semaphore>,
    next_connection: Arc<std::sync::atomic::AtomicU64>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    /// Open TCP/TLS connections per client IP.
    per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// One connection's place in the per-IP count, given back on drop.
struct IpSlot {
    per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Acceptor {
    fn take_ip_slot(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.per_ip.clone(),
            ip,
        })
    }

    async fn run(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, remote) = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(r) => r,
                    Err(e) => {
                        // EMFILE and friends: back off a little.
                        tracing::warn!(error = %e, "TURN accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::debug!(%remote, "TURN connection limit reached");
                continue;
            };
            let Some(slot) = self.take_ip_slot(remote.ip()) else {
                tracing::debug!(%remote, "TURN connection limit per IP reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = self
                .next_connection
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let this = self.clone();
            let tls = tls.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                let _slot = slot;
                this.serve(stream, remote, connection, tls).await;
            });
        }
    }

    async fn serve(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        connection: u64,
        tls: Option<TlsAcceptor>,
    ) {
        match tls {
            None => {
                let client = Client {
                    transport: Transport::Tcp,
                    remote,
                    connection,
                };
                self.serve_stream(stream, client).await;
            }
            Some(acceptor) => {
                let accepted = tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    r = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)) => r,
                };
                let stream = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TURN TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let client = Client {
                    transport: Transport::Tls,
                    remote,
                    connection,
                };
                self.serve_stream(stream, client).await;
            }
        }
    }

    async fn serve_stream<S>(&self, stream: S, client: Client)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        if self
            .tx
            .send(Input::Opened {
                connection: client.connection,
                writer: wtx,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = read_stream(reader, client, self.tx.clone(), self.handshake_timeout, self.idle_timeout) => {}
            _ = write_stream(writer, wrx, self.write_timeout) => {}
        }
        let _ = self.tx.send(Input::Closed { client }).await;
    }
}

/// Reads STUN and ChannelData frames; returns when the stream ends, is not
/// TURN, sends nothing within `first_timeout` of opening, or nothing for
/// `idle_timeout` afterwards.
async fn read_stream<R: AsyncRead + Unpin>(
    mut reader: R,
    client: Client,
    tx: mpsc::Sender<Input>,
    first_timeout: Duration,
    idle_timeout: Duration,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16384];
    let mut seen_frame = false;
    loop {
        // Like Chromium's ICE-TCP rule: the first message must be STUN
        // (ChannelData before an allocation is nonsense, and an HTTP
        // request would otherwise look like a ChannelData header).
        if !seen_frame && buf.first().is_some_and(|b| b & 0xC0 != 0) {
            tracing::debug!(remote = %client.remote, "not TURN on a TURN stream");
            return;
        }
        loop {
            match stun::stream_frame_len(&buf) {
                Ok(Some(n)) => {
                    let bytes: Vec<u8> = buf.drain(..n).collect();
                    seen_frame = true;
                    if tx.send(Input::Client { client, bytes }).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!(remote = %client.remote, "not TURN on a TURN stream");
                    return;
                }
            }
        }
        let wait = if seen_frame {
            idle_timeout
        } else {
            first_timeout
        };
        let read = match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(r) => r,
            Err(_) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // Frames are drained as soon as they are whole, so the buffer holds
        // at most one partial frame plus one read.
        if buf.len() > stun::MAX_STREAM_FRAME + chunk.len() {
            return;
        }
    }
}

async fn write_stream<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    write_timeout: Duration,
) {
    while let Some(bytes) = rx.recv().await {
        match tokio::time::timeout(write_timeout, writer.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: CancellationToken,
}

struct Driver {
    core: Server,
    udp: Option<Arc<UdpSocket>>,
    writers: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<RelayId, Relay>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    relay_bind_ip: IpAddr,
    relay_ports: Option<(u16, u16)>,
    next_port: u32,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.core.handle_timeout(Instant::now());
                }
            }
            self.drain();
        }
        for (_, relay) in self.relays.drain() {
            relay.reader.cancel();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Client { client, bytes } => self.core.handle_client(now, client, &bytes),
            Input::Peer { relay, from, bytes } => self.core.handle_peer(now, relay, from, &bytes),
            Input::Opened { connection, writer } => {
                self.writers.insert(connection, writer);
            }
            Input::Closed { client } => {
                self.writers.remove(&client.connection);
                self.core.connection_closed(client);
            }
            Input::Stats(reply) => {
                let _ = reply.send(self.core.stats());
            }
        }
    }

    fn drain(&mut self) {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                self.send(t);
            }
            let Some(event) = self.core.poll_event() else {
                break;
            };
            match event {
                Event::BindRelay { relay, ipv6 } => {
                    let bound = self.bind_relay(relay, ipv6);
                    self.core.relay_bound(Instant::now(), relay, bound);
                }
                Event::RelayClosed { relay } => {
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.cancel();
                    }
                }
            }
        }
    }

    fn send(&mut self, t: Transmit) {
        match t {
            Transmit::Client { client, bytes } => match client.transport {
                Transport::Udp => {
                    if let Some(udp) = &self.udp {
                        // Non-blocking: a full socket buffer drops, as a
                        // network would.
                        let _ = udp.try_send_to(&bytes, client.remote);
                    }
                }
                Transport::Tcp | Transport::Tls => {
                    if let Some(w) = self.writers.get(&client.connection) {
                        let _ = w.try_send(bytes);
                    }
                }
            },
            Transmit::Peer { relay, peer, bytes } => {
                if let Some(r) = self.relays.get(&relay) {
                    let _ = r.socket.try_send_to(&bytes, peer);
                }
            }
        }
    }

    fn bind_relay(&mut self, relay: RelayId, ipv6: bool) -> Option<SocketAddr> {
        if ipv6 != self.relay_bind_ip.is_ipv6() {
            return None;
        }
        let socket = match self.relay_ports {
            None => std::net::UdpSocket::bind(SocketAddr::new(self.relay_bind_ip, 0)).ok()?,
            Some((min, max)) => {
                let span = u32::from(max.saturating_sub(min)) + 1;
                let mut found = None;
                for _ in 0..span.min(MAX_BIND_ATTEMPTS) {
                    let port = u32::from(min) + self.next_port % span;
                    self.next_port = self.next_port.wrapping_add(1);
                    let port = u16::try_from(port).ok()?;
                    if let Ok(s) =
                        std::net::UdpSocket::bind(SocketAddr::new(self.relay_bind_ip, port))
                    {
                        found = Some(s);
                        break;
                    }
                }
                found?
            }
        };
        socket.set_nonblocking(true).ok()?;
        let socket = Arc::new(UdpSocket::from_std(socket).ok()?);
        let addr = socket.local_addr().ok()?;
        let reader = self.cancel.child_token();
        self.tasks.spawn(relay_reader(
            relay,
            socket.clone(),
            self.tx.clone(),
            reader.clone(),
        ));
        self.relays.insert(relay, Relay { socket, reader });
        Some(addr)
    }
}

async fn relay_reader(
    relay: RelayId,
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let input = Input::Peer {
            relay,
            from,
            bytes: buf[..n].to_vec(),
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
