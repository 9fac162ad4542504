//! A media worker: one thread, one UDP socket (and a TCP listener for
//! ICE-TCP) per address family it serves (IPv4, and IPv6 beside it in dual
//! stack), one [`Endpoint`] with many rooms.
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
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pulsewave_core::{Datagram, Endpoint, EndpointConfig, Event, Protocol, RoomConfig, RoomId};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::command::Op;
use crate::outbox::Outbox;
use crate::room::MediaRoom;
use crate::tcp::{SendError, TcpConns, TcpIn, TcpLimits};

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
    /// A room command (boxed: the arguments of `produce` or `consume`
    /// are large, and commands are rare beside the other messages).
    Op {
        room: RoomId,
        op: Box<Op>,
    },
    Stop,
}

/// Counters of one worker, readable from any thread.
#[derive(Debug, Default)]
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
    /// Outgoing UDP datagrams dropped: the kernel refused them, or the
    /// socket's send buffer stayed full (`outbox::WRITABLE_WAIT`).
    pub send_dropped: AtomicU64,
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

/// A handle to one worker thread (the seed's `MediasoupWorker`).
#[derive(Debug, Clone)]
pub struct MediaWorker {
    index: usize,
    local_addr: SocketAddr,
    announced_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    announced_tcp_addr: Option<SocketAddr>,
    /// Dual stack: the IPv6 socket's bound and announced addresses.
    udp6: Option<(SocketAddr, SocketAddr)>,
    /// Dual stack with ICE-TCP: the IPv6 listener's bound and announced
    /// addresses.
    tcp6: Option<(SocketAddr, SocketAddr)>,
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<WorkerStats>,
}

/// The sockets a worker is started with, each with the address announced
/// for it.
#[derive(Debug)]
pub(crate) struct Sockets {
    /// The main UDP socket.
    pub(crate) udp: (StdUdpSocket, SocketAddr),
    /// The ICE-TCP listener, if ICE-TCP is on.
    pub(crate) tcp: Option<(StdTcpListener, SocketAddr)>,
    /// Dual stack: the IPv6 UDP socket beside the IPv4 one.
    pub(crate) udp6: Option<(StdUdpSocket, SocketAddr)>,
    /// Dual stack with ICE-TCP: the IPv6 TCP listener.
    pub(crate) tcp6: Option<(StdTcpListener, SocketAddr)>,
    /// Bounds of the ICE-TCP connections.
    pub(crate) tcp_limits: TcpLimits,
}

/// Marks the worker dead when its thread ends, however it ends.
struct AliveGuard(Arc<WorkerStats>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

impl MediaWorker {
    /// Starts a worker thread on `sockets`, announcing each one's address
    /// to clients; `room` is the template of its rooms. With a TCP
    /// listener, the worker also takes ICE-TCP there and announces its
    /// address as every transport's passive TCP candidate; with IPv6
    /// sockets beside the IPv4 ones, transports get IPv6 candidates too.
    pub(crate) fn spawn(
        index: usize,
        sockets: Sockets,
        room: RoomConfig,
    ) -> io::Result<(Self, JoinHandle<()>)> {
        let Sockets {
            udp,
            tcp,
            udp6,
            tcp6,
            tcp_limits,
        } = sockets;
        // Each socket, non-blocking, with its bound and announced
        // addresses: the main one first, then dual stack's IPv6 one.
        let udp: Vec<_> = std::iter::once(udp).chain(udp6).collect();
        let tcp: Vec<_> = tcp.into_iter().chain(tcp6).collect();
        let mut udp_addrs = Vec::new();
        for (s, announced) in &udp {
            s.set_nonblocking(true)?;
            udp_addrs.push((s.local_addr()?, *announced));
        }
        let mut tcp_addrs = Vec::new();
        for (l, announced) in &tcp {
            l.set_nonblocking(true)?;
            tcp_addrs.push((l.local_addr()?, *announced));
        }
        let (local_addr, announced_addr) = udp_addrs[0];
        let config = EndpointConfig {
            room: RoomConfig {
                local_addr: announced_addr,
                local_addr6: udp_addrs.get(1).map(|a| a.1),
                tcp_addr: tcp_addrs.first().map(|a| a.1),
                tcp_addr6: tcp_addrs.get(1).map(|a| a.1),
                ..room
            },
            seed: None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WorkerStats::default());
        stats.alive.store(true, Ordering::Relaxed);
        let guard = AliveGuard(stats.clone());
        let stats2 = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pulsewave-media-{index}"))
            .spawn(move || {
                let _alive = guard;
                let worker = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let _entered = runtime.enter();
                        let udp = udp
                            .into_iter()
                            .map(|(s, announced)| {
                                Ok(UdpPort {
                                    socket: UdpSocket::from_std(s)?,
                                    announced,
                                    outbox: Outbox::new(),
                                })
                            })
                            .collect::<io::Result<Vec<_>>>()?;
                        let listeners = tcp
                            .into_iter()
                            .map(|(l, announced)| Ok((TcpListener::from_std(l)?, announced)))
                            .collect::<io::Result<Vec<_>>>()?;
                        let worker = Worker {
                            index,
                            endpoint: Endpoint::new(config, Instant::now()),
                            rooms: HashMap::new(),
                            stats: stats2,
                            tcp: (!listeners.is_empty()).then(|| TcpConns::new(tcp_limits)),
                            udp,
                            next_port: 0,
                            listeners,
                        };
                        Ok((runtime, worker))
                    });
                match worker {
                    Ok((runtime, mut w)) => runtime.block_on(w.run(rx)),
                    Err(e) => warn!(worker = index, error = %e, "cannot start the worker"),
                }
            })?;
        info!(
            worker = index,
            %local_addr,
            %announced_addr,
            tcp = ?tcp_addrs.first().map(|a| a.0),
            ipv6 = ?udp_addrs.get(1).map(|a| a.1),
            "media worker started"
        );
        Ok((
            Self {
                index,
                local_addr,
                announced_addr,
                tcp_addr: tcp_addrs.first().map(|a| a.0),
                announced_tcp_addr: tcp_addrs.first().map(|a| a.1),
                udp6: udp_addrs.get(1).copied(),
                tcp6: tcp_addrs.get(1).copied(),
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

    /// Dual stack: the address the worker's IPv6 UDP socket is bound to.
    pub fn local_addr6(&self) -> Option<SocketAddr> {
        self.udp6.map(|(local, _)| local)
    }

    /// Dual stack: the IPv6 UDP candidate announced to clients.
    pub fn announced_addr6(&self) -> Option<SocketAddr> {
        self.udp6.map(|(_, announced)| announced)
    }

    /// Dual stack with ICE-TCP: the address of the IPv6 TCP listener.
    pub fn tcp_addr6(&self) -> Option<SocketAddr> {
        self.tcp6.map(|(local, _)| local)
    }

    /// Dual stack with ICE-TCP: the IPv6 passive TCP candidate announced
    /// to clients.
    pub fn announced_tcp_addr6(&self) -> Option<SocketAddr> {
        self.tcp6.map(|(_, announced)| announced)
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
    endpoint: Endpoint,
    /// Where each room's events go.
    rooms: HashMap<RoomId, mpsc::UnboundedSender<Event>>,
    stats: Arc<WorkerStats>,
    /// The UDP sockets: the main one, then dual stack's IPv6 one.
    udp: Vec<UdpPort>,
    /// The socket read first on the next wakeup (they take turns, so a
    /// busy one cannot starve the other).
    next_port: usize,
    /// ICE-TCP, when enabled: the listeners (one per family, each with the
    /// candidate it announces) and the connections of all.
    listeners: Vec<(TcpListener, SocketAddr)>,
    tcp: Option<TcpConns>,
}

/// One UDP socket of a worker: the candidate it announces and the batch of
/// datagrams waiting to leave from it.
struct UdpPort {
    socket: UdpSocket,
    announced: SocketAddr,
    outbox: Outbox,
}

impl Worker {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut next_stats = Instant::now() + STATS_INTERVAL;
        loop {
            let wake = self
                .endpoint
                .poll_timeout()
                .map_or(next_stats, |t| t.min(next_stats));
            // Not `biased`: the branches are polled from a random one on,
            // so a socket that is always ready (an overloaded worker)
            // cannot starve the others (the other family, ICE-TCP).
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(cmd) => self.command(cmd),
                },
                (port, r) = recv_any(&self.udp, self.next_port, &mut buf) => match r {
                    Ok((n, source)) => {
                        self.next_port = port + 1;
                        self.datagram(port, source, &buf[..n]);
                        self.read_burst(port, &mut buf);
                    }
                    // ICMP errors surface here on Linux; they concern one peer.
                    Err(e) => debug!(worker = self.index, error = %e, "recv error"),
                },
                accepted = accept_any(&self.listeners) => match accepted {
                    Ok((stream, peer)) => {
                        if let Some(tcp) = &mut self.tcp {
                            tcp.add(stream, peer);
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
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
            self.flush().await;
            // On the clock, not in a branch of its own: a worker kept busy
            // by its sockets still refreshes what the metrics read.
            if now >= next_stats {
                self.refresh_stats();
                next_stats = now + STATS_INTERVAL;
            }
        }
        info!(worker = self.index, "media worker stopped");
    }

    /// Takes the datagrams already waiting on socket `port`, up to
    /// [`BURST`] in all, without waiting: the endpoint then runs its timers
    /// once for the whole burst (a forwarded packet leaves on the next
    /// timeout, so each subscriber's stack is polled once per burst, not
    /// per packet).
    fn read_burst(&mut self, port: usize, buf: &mut [u8]) {
        for _ in 1..BURST {
            let Some(p) = self.udp.get(port) else { return };
            match p.socket.try_recv_from(buf) {
                Ok((n, source)) => self.datagram(port, source, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(worker = self.index, error = %e, "recv error");
                    return;
                }
            }
        }
    }

    /// A datagram from `source` on socket `port`; its destination is that
    /// socket's announced address (the candidate the client sent to).
    fn datagram(&mut self, port: usize, source: SocketAddr, contents: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let accepted = self.udp.get(port).is_some_and(|p| {
            let d = Datagram {
                proto: Protocol::Udp,
                source,
                destination: p.announced,
                contents,
            };
            self.endpoint.handle_datagram(Instant::now(), d).is_ok()
        });
        if !accepted {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One packet (or the end) of an ICE-TCP connection. A connection's
    /// first packet must be a STUN request a transport accepts (as
    /// Chromium requires of its peers); otherwise it is closed. Its
    /// destination is the passive candidate of the peer's family.
    fn tcp_input(&mut self, input: TcpIn) {
        let Some(tcp) = &mut self.tcp else { return };
        match input {
            TcpIn::Closed { peer, conn } => tcp.close(peer, conn),
            TcpIn::Packet { peer, conn, bytes } => {
                let Some(routed) = tcp.state(peer, conn) else {
                    return;
                };
                self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                let destination = self
                    .listeners
                    .iter()
                    .find(|(_, a)| a.is_ipv6() == peer.is_ipv6())
                    .or(self.listeners.first())
                    .map(|(_, a)| *a);
                let accepted = (routed || pulsewave_core::is_stun(&bytes))
                    && destination.is_some_and(|destination| {
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

    /// Sends what the endpoint transmits and forwards its events. A UDP
    /// datagram leaves from the socket of its destination's family.
    async fn flush(&mut self) {
        let mut sent = 0;
        while let Some(t) = self.endpoint.poll_transmit() {
            if t.proto == Protocol::Tcp {
                sent += self.send_tcp(t);
                continue;
            }
            let port = usize::from(self.udp.len() > 1 && t.destination.is_ipv6());
            let Some(p) = self.udp.get_mut(port) else {
                continue;
            };
            if p.outbox.push(t) {
                sent += p.outbox.send(&p.socket, self.index).await;
            }
        }
        let mut dropped = 0;
        for p in &mut self.udp {
            sent += p.outbox.send(&p.socket, self.index).await;
            dropped += p.outbox.take_dropped();
        }
        self.stats.datagrams_out.fetch_add(sent, Ordering::Relaxed);
        if dropped > 0 {
            self.stats
                .send_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if let Some(tcp) = &self.tcp {
            self.stats
                .tcp_connections
                .store(tcp.len(), Ordering::Relaxed);
        }
        self.forward_events();
    }

    /// Queues one packet on its TCP connection; never waits. Returns 1 if
    /// it was queued.
    fn send_tcp(&mut self, t: pulsewave_core::Transmit) -> u64 {
        let Some(tcp) = &mut self.tcp else { return 0 };
        let result = tcp.send(t.destination, t.contents);
        if result == Err(SendError::Overflow) {
            self.stats.tcp_overflows.fetch_add(1, Ordering::Relaxed);
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

/// The next datagram of any of `ports`, polled in turn from `first`: the
/// port it came on, and its length and source.
async fn recv_any(
    ports: &[UdpPort],
    first: usize,
    buf: &mut [u8],
) -> (usize, io::Result<(usize, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for k in 0..ports.len() {
            let port = (first + k) % ports.len();
            let mut read = tokio::io::ReadBuf::new(buf);
            if let Poll::Ready(r) = ports[port].socket.poll_recv_from(cx, &mut read) {
                return Poll::Ready((port, r.map(|source| (read.filled().len(), source))));
            }
        }
        Poll::Pending
    })
    .await
}

/// The next connection of any of the TCP listeners; never, without one.
async fn accept_any(
    listeners: &[(TcpListener, SocketAddr)],
) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        listeners
            .iter()
            .find_map(|(l, _)| match l.poll_accept(cx) {
                Poll::Ready(r) => Some(Poll::Ready(r)),
                Poll::Pending => None,
            })
            .unwrap_or(Poll::Pending)
    })
    .await
}

/// The next packet of the TCP readers; never, without TCP.
async fn tcp_inbound(tcp: &mut Option<TcpConns>) -> Option<TcpIn> {
    match tcp {
        Some(t) => t.inbound.recv().await,
        None => std::future::pending().await,
    }
}
