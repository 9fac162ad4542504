//! A media worker: one thread, one UDP socket (and a TCP listener for
//! ICE-TCP), one [`Endpoint`] with many rooms.
//!
//! The worker is the small, dumb driver of `pulsewave-core`: it feeds the
//! endpoint the datagrams of its socket and the timeouts it asks for, sends
//! what it transmits, runs commands on its rooms, and forwards each room's
//! events to that room's channel. Routing, timers and panic isolation are
//! the endpoint's.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pulsewave_core::{Datagram, Endpoint, EndpointConfig, Event, Protocol, RoomConfig, RoomId};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::command::Op;
use crate::outbox::Outbox;
use crate::room::MediaRoom;
use crate::tcp::{SendError, TcpConns, TcpIn};

/// Largest datagram read.
const RECV_BUFFER: usize = 2048;
/// Most datagrams read in one go before the endpoint runs its timers and
/// sends (bounds the delay a burst adds to its first packet).
const BURST: usize = 16;
/// How often the room counters behind [`WorkerStats`] are refreshed.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// What a worker thread is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        config: Box<RoomConfig>,
        events: mpsc::UnboundedSender<Event>,
        reply: oneshot::Sender<RoomId>,
    },
    Close {
        room: RoomId,
    },
    Op {
        room: RoomId,
        op: Op,
    },
    Stop,
}

/// Counters of one worker, readable from any thread.
#[derive(Debug)]
pub struct WorkerStats {
    /// Whether the worker thread is running. A stopped worker (or one whose
    /// thread died) is never given a room.
    pub alive: AtomicBool,
    /// Rooms on this worker.
    pub rooms: AtomicUsize,
    /// Rooms dropped because they panicked.
    pub rooms_failed: AtomicU64,
    /// Transports on this worker.
    pub transports: AtomicUsize,
    /// Entries of the worker's routing table (ICE username fragments and
    /// remote addresses leading to a transport); zero with no room open.
    pub routes: AtomicUsize,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Datagrams dropped: garbage, unknown source, rejected.
    pub datagrams_dropped: AtomicU64,
    /// Open ICE-TCP connections.
    pub tcp_connections: AtomicUsize,
    /// ICE-TCP connections dropped because their peer fell too far behind
    /// (its queue overflowed).
    pub tcp_overflows: AtomicU64,
    /// RTP packets forwarded to consumers.
    pub rtp_forwarded: AtomicU64,
    /// Changes of the layers a consumer forwards.
    pub layer_switches: AtomicU64,
    /// Consumers paused because their subscriber's bandwidth was short.
    pub congestion_pauses: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self {
            alive: AtomicBool::new(true),
            rooms: AtomicUsize::new(0),
            rooms_failed: AtomicU64::new(0),
            transports: AtomicUsize::new(0),
            routes: AtomicUsize::new(0),
            datagrams_in: AtomicU64::new(0),
            datagrams_out: AtomicU64::new(0),
            datagrams_dropped: AtomicU64::new(0),
            tcp_connections: AtomicUsize::new(0),
            tcp_overflows: AtomicU64::new(0),
            rtp_forwarded: AtomicU64::new(0),
            layer_switches: AtomicU64::new(0),
            congestion_pauses: AtomicU64::new(0),
        }
    }
}

/// A handle to one worker thread (the seed's `MediasoupWorker`).
#[derive(Debug, Clone)]
pub struct MediaWorker {
    index: usize,
    local_addr: SocketAddr,
    announced_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    announced_tcp_addr: Option<SocketAddr>,
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<WorkerStats>,
}

/// Marks the worker dead when its thread ends, however it ends.
struct AliveGuard(Arc<WorkerStats>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

impl MediaWorker {
    /// Starts a worker thread on `socket`, announcing `announced_addr` to
    /// clients; `room` is the template of its rooms. With `tcp`, the
    /// worker also listens for ICE-TCP there and announces the second
    /// address as every transport's passive TCP candidate.
    pub(crate) fn spawn(
        index: usize,
        socket: StdUdpSocket,
        announced_addr: SocketAddr,
        tcp: Option<(StdTcpListener, SocketAddr)>,
        room: RoomConfig,
    ) -> io::Result<(Self, JoinHandle<()>)> {
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let (tcp_listener, tcp_addr, announced_tcp_addr) = match tcp {
            Some((listener, announced)) => {
                listener.set_nonblocking(true)?;
                let local = listener.local_addr()?;
                (Some(listener), Some(local), Some(announced))
            }
            None => (None, None, None),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WorkerStats::default());
        let guard = AliveGuard(stats.clone());
        let stats2 = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pulsewave-media-{index}"))
            .spawn(move || {
                let _alive = guard;
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(worker = index, error = %e, "cannot start worker runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let tcp_listener = match tcp_listener.map(TcpListener::from_std).transpose() {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(worker = index, error = %e, "cannot use worker TCP listener");
                            return;
                        }
                    };
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            let config = EndpointConfig {
                                room: RoomConfig {
                                    local_addr: announced_addr,
                                    tcp_addr: announced_tcp_addr,
                                    ..room
                                },
                                seed: None,
                            };
                            let mut w = Worker {
                                index,
                                socket,
                                endpoint: Endpoint::new(config, Instant::now()),
                                rooms: HashMap::new(),
                                stats: stats2,
                                outbox: Outbox::new(),
                                tcp: tcp_listener.as_ref().map(|_| TcpConns::new()),
                                tcp_listener,
                            };
                            w.run(rx).await;
                        }
                        Err(e) => warn!(worker = index, error = %e, "cannot use worker socket"),
                    }
                });
            })?;
        info!(worker = index, %local_addr, %announced_addr, ?tcp_addr, "media worker started");
        Ok((
            Self {
                index,
                local_addr,
                announced_addr,
                tcp_addr,
                announced_tcp_addr,
                tx,
                stats,
            },
            thread,
        ))
    }

    /// The worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The address the worker's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address announced to clients.
    pub fn announced_addr(&self) -> SocketAddr {
        self.announced_addr
    }

    /// The address the worker's ICE-TCP listener is bound to, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The passive TCP candidate announced to clients, if any.
    pub fn announced_tcp_addr(&self) -> Option<SocketAddr> {
        self.announced_tcp_addr
    }

    /// The worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Whether the worker thread is running.
    pub fn is_alive(&self) -> bool {
        self.stats.alive.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// How busy the worker is, for placing new rooms: transports, then rooms.
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.stats.transports.load(Ordering::Relaxed),
            self.stats.rooms.load(Ordering::Relaxed),
        )
    }

    /// Opens a room on this worker with `config` (its candidate address is
    /// the worker's). Its events arrive on the returned channel; dropping
    /// the [`MediaRoom`] closes it.
    pub async fn open_room(
        &self,
        config: RoomConfig,
    ) -> Result<(MediaRoom, mpsc::UnboundedReceiver<Event>), WorkerGone> {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        self.tx
            .send(Command::Open {
                config: Box::new(config),
                events,
                reply,
            })
            .map_err(|_| WorkerGone)?;
        let id = id.await.map_err(|_| WorkerGone)?;
        Ok((
            MediaRoom {
                id,
                worker: self.index,
                tx: self.tx.clone(),
            },
            events_rx,
        ))
    }

    /// Stops the worker thread; its rooms are dropped.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

/// The worker thread is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the media worker is not running")]
pub struct WorkerGone;

struct Worker {
    index: usize,
    socket: UdpSocket,
    endpoint: Endpoint,
    /// Where each room's events go.
    rooms: HashMap<RoomId, mpsc::UnboundedSender<Event>>,
    stats: Arc<WorkerStats>,
    outbox: Outbox,
    /// ICE-TCP, when enabled: the listener and the connections.
    tcp_listener: Option<TcpListener>,
    tcp: Option<TcpConns>,
}

impl Worker {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        loop {
            let deadline = self.endpoint.poll_timeout();
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(cmd) => self.command(cmd),
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => {
                        self.datagram(source, &buf[..n]);
                        self.read_burst(&mut buf);
                    }
                    Err(e) => {
                        // ICMP errors surface here on Linux; they concern one peer.
                        debug!(worker = self.index, error = %e, "recv error");
                    }
                },
                accepted = accept(&self.tcp_listener) => match accepted {
                    Ok((stream, peer)) => {
                        if let Some(tcp) = &mut self.tcp {
                            tcp.add(stream, peer);
                            self.stats.tcp_connections.store(tcp.len(), Ordering::Relaxed);
                        }
                    }
                    Err(e) => debug!(worker = self.index, error = %e, "TCP accept error"),
                },
                Some(input) = tcp_inbound(&mut self.tcp) => {
                    self.tcp_input(input);
                    // Take what else the readers brought, up to a burst.
                    for _ in 1..BURST {
                        let Some(input) = self.tcp.as_mut().and_then(|t| t.inbound.try_recv().ok()) else {
                            break;
                        };
                        self.tcp_input(input);
                    }
                }
                _ = sleep_until(deadline) => {}
                _ = stats_tick.tick() => self.refresh_stats(),
            }
            let now = Instant::now();
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
            self.flush().await;
        }
        info!(worker = self.index, "media worker stopped");
    }

    /// Takes the datagrams already waiting on the socket, up to [`BURST`]
    /// in all, without waiting: the endpoint then runs its timers once for
    /// the whole burst (a forwarded packet leaves on the next timeout, so
    /// each subscriber's stack is polled once per burst, not per packet).
    fn read_burst(&mut self, buf: &mut [u8]) {
        for _ in 1..BURST {
            match self.socket.try_recv_from(buf) {
                Ok((n, source)) => self.datagram(source, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(worker = self.index, error = %e, "recv error");
                    return;
                }
            }
        }
    }

    fn datagram(&mut self, source: SocketAddr, contents: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let d = Datagram {
            proto: Protocol::Udp,
            source,
            destination: self.endpoint.local_addr(),
            contents,
        };
        if self.endpoint.handle_datagram(Instant::now(), d).is_err() {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One packet (or the end) of an ICE-TCP connection. A connection's
    /// first packet must be a STUN request a transport accepts (as
    /// Chromium requires of its peers); otherwise it is closed.
    fn tcp_input(&mut self, input: TcpIn) {
        let Some(tcp) = &mut self.tcp else { return };
        match input {
            TcpIn::Closed { peer, conn } => tcp.close(peer, conn),
            TcpIn::Packet { peer, conn, bytes } => {
                let Some(routed) = tcp.state(peer, conn) else {
                    return;
                };
                self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                let accepted = (routed || pulsewave_core::is_stun(&bytes))
                    && self.endpoint.tcp_addr().is_some_and(|destination| {
                        let d = Datagram {
                            proto: Protocol::Tcp,
                            source: peer,
                            destination,
                            contents: &bytes,
                        };
                        self.endpoint.handle_datagram(Instant::now(), d).is_ok()
                    });
                if !accepted {
                    self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                }
                if accepted && !routed {
                    tcp.set_routed(peer);
                } else if !routed {
                    debug!(worker = self.index, %peer, "TCP connection without a valid STUN request: closed");
                    tcp.close(peer, conn);
                }
            }
        }
        self.stats
            .tcp_connections
            .store(tcp.len(), Ordering::Relaxed);
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Open {
                config,
                events,
                reply,
            } => {
                let id = self.endpoint.open_room_with(now, *config);
                self.rooms.insert(id, events);
                let _ = reply.send(id);
                self.refresh_stats();
            }
            Command::Close { room } => {
                self.endpoint.close_room(now, room);
                self.rooms.remove(&room);
                self.refresh_stats();
            }
            Command::Op { room, op } => {
                // A command for a room that is gone is dropped with its
                // reply channel: the caller sees `MediaError::Gone`. The
                // events the command caused go out before its answer, so a
                // caller that has the answer finds them in its channel.
                if let Ok(answer) = self.endpoint.with_room(now, room, |r, now| op.run(r, now)) {
                    self.forward_events();
                    answer();
                }
            }
            Command::Stop => {}
        }
    }

    /// Sends what the endpoint transmits and forwards its events.
    async fn flush(&mut self) {
        let mut sent = 0;
        while let Some(t) = self.endpoint.poll_transmit() {
            if t.proto == Protocol::Tcp {
                sent += self.send_tcp(t);
                continue;
            }
            if self.outbox.push(t) {
                sent += self.outbox.send(&self.socket, self.index).await;
            }
        }
        sent += self.outbox.send(&self.socket, self.index).await;
        self.stats.datagrams_out.fetch_add(sent, Ordering::Relaxed);
        self.forward_events();
    }

    /// Queues one packet on its TCP connection; never waits. Returns 1 if
    /// it was queued.
    fn send_tcp(&mut self, t: pulsewave_core::Transmit) -> u64 {
        let Some(tcp) = &mut self.tcp else { return 0 };
        let result = tcp.send(t.destination, t.contents);
        if result == Err(SendError::Overflow) {
            self.stats.tcp_overflows.fetch_add(1, Ordering::Relaxed);
            self.stats
                .tcp_connections
                .store(tcp.len(), Ordering::Relaxed);
        }
        u64::from(result.is_ok())
    }

    /// Forwards the endpoint's events to their rooms' channels.
    fn forward_events(&mut self) {
        while let Some((room, event)) = self.endpoint.poll_event() {
            let failed = event == Event::RoomFailed;
            if let Some(tx) = self.rooms.get(&room) {
                let _ = tx.send(event);
            }
            if failed {
                self.rooms.remove(&room);
                self.stats.rooms_failed.fetch_add(1, Ordering::Relaxed);
                self.refresh_stats();
            }
        }
    }

    /// Updates the counters other threads read (O(rooms): on a timer and
    /// after rooms open or close, not per datagram).
    fn refresh_stats(&mut self) {
        let totals = self.endpoint.room_stats();
        let endpoint = self.endpoint.stats();
        self.stats.rooms.store(endpoint.rooms, Ordering::Relaxed);
        self.stats.routes.store(endpoint.routes, Ordering::Relaxed);
        self.stats
            .transports
            .store(totals.transports, Ordering::Relaxed);
        self.stats
            .rtp_forwarded
            .store(totals.rtp_forwarded, Ordering::Relaxed);
        self.stats
            .layer_switches
            .store(totals.layer_switches, Ordering::Relaxed);
        self.stats
            .congestion_pauses
            .store(totals.congestion_pauses, Ordering::Relaxed);
    }
}

/// The next connection of the worker's TCP listener; never, without one.
async fn accept(listener: &Option<TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The next packet of the TCP readers; never, without TCP.
async fn tcp_inbound(tcp: &mut Option<TcpConns>) -> Option<TcpIn> {
    match tcp {
        Some(t) => t.inbound.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
