//! A media worker: one thread, one UDP socket, many rooms.
//!
//! The worker is the small, dumb driver of `pulsewave-core`: it feeds each
//! room the datagrams addressed to it and the timeouts it asked for, sends
//! what the room transmits, and forwards the room's events to signaling. All
//! state lives in the rooms; the worker only routes.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use pulsewave_core::{Event, Room, RoomConfig, stun_username};
use pulsewave_protocol::random_string;
use tokio::net::UdpSocket;

use super::outbox::Outbox;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Length of the ICE ufrag prefix that names a room inside a worker.
const PREFIX_LEN: usize = 8;
/// Largest datagram read.
const RECV_BUFFER: usize = 2048;
/// Most datagrams read in one go before the rooms run their timers and send
/// (bounds the delay a burst adds to its first packet).
const BURST: usize = 16;

type RoomKey = u64;
type Call = Box<dyn FnOnce(&mut Room, Instant) + Send>;

enum Command {
    Open {
        key: RoomKey,
        config: Box<RoomConfig>,
        events: mpsc::UnboundedSender<Event>,
    },
    Close {
        key: RoomKey,
    },
    Call {
        key: RoomKey,
        call: Call,
    },
    Stop,
}

/// Counters of one worker, readable from any thread.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Rooms on this worker.
    pub rooms: AtomicUsize,
    /// Transports on this worker.
    pub transports: AtomicUsize,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Datagrams dropped: garbage, unknown source, rejected.
    pub datagrams_dropped: AtomicU64,
    /// RTP packets forwarded to consumers.
    pub rtp_forwarded: AtomicU64,
}

/// The seed's `MediasoupWorker`: a handle to one worker thread.
#[derive(Debug, Clone)]
pub struct MediaWorker {
    index: usize,
    local_addr: SocketAddr,
    announced_addr: SocketAddr,
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<WorkerStats>,
    next_key: Arc<AtomicU64>,
}

impl MediaWorker {
    /// Starts a worker thread on `socket`, announcing `announced_addr` to
    /// clients.
    pub(crate) fn spawn(
        index: usize,
        socket: StdUdpSocket,
        announced_addr: SocketAddr,
    ) -> io::Result<(Self, JoinHandle<()>)> {
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WorkerStats::default());
        let stats2 = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pulsewave-media-{index}"))
            .spawn(move || {
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
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            let mut w = Worker {
                                index,
                                socket,
                                rooms: HashMap::new(),
                                prefixes: HashMap::new(),
                                addrs: HashMap::new(),
                                stats: stats2,
                                outbox: Outbox::new(),
                            };
                            w.run(rx).await;
                        }
                        Err(e) => warn!(worker = index, error = %e, "cannot use worker socket"),
                    }
                });
            })?;
        info!(worker = index, %local_addr, %announced_addr, "media worker started");
        Ok((
            Self {
                index,
                local_addr,
                announced_addr,
                tx,
                stats,
                next_key: Arc::new(AtomicU64::new(1)),
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

    /// The worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// How busy the worker is, for placing new rooms: transports, then rooms.
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.stats.transports.load(Ordering::Relaxed),
            self.stats.rooms.load(Ordering::Relaxed),
        )
    }

    /// Opens a room on this worker. Its events arrive on the returned
    /// channel; dropping the [`MediaRoom`] closes it.
    pub(crate) fn open_room(
        &self,
        mut config: RoomConfig,
    ) -> Result<(MediaRoom, mpsc::UnboundedReceiver<Event>), WorkerGone> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        config.local_addr = self.announced_addr;
        let (events, events_rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Open {
                key,
                config: Box::new(config),
                events,
            })
            .map_err(|_| WorkerGone)?;
        Ok((
            MediaRoom {
                key,
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

/// A room living on a worker. Commands run on the worker thread; dropping
/// the handle closes the room there.
#[derive(Debug)]
pub struct MediaRoom {
    key: RoomKey,
    worker: usize,
    tx: mpsc::UnboundedSender<Command>,
}

impl MediaRoom {
    /// Runs `f` on the room, on its worker thread, with the current time,
    /// then sends what the room transmits. Returns `f`'s result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Room, Instant) -> R + Send + 'static,
    ) -> Result<R, WorkerGone> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |room, now| {
            let _ = tx.send(f(room, now));
        });
        self.tx
            .send(Command::Call {
                key: self.key,
                call,
            })
            .map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }

    /// The worker the room lives on.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for MediaRoom {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Close { key: self.key });
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Open { key, .. } => write!(f, "Open({key})"),
            Command::Close { key } => write!(f, "Close({key})"),
            Command::Call { key, .. } => write!(f, "Call({key})"),
            Command::Stop => write!(f, "Stop"),
        }
    }
}

struct RoomSlot {
    room: Room,
    prefix: String,
    events: mpsc::UnboundedSender<Event>,
    next_timeout: Option<Instant>,
    last_stats: pulsewave_core::RoomStats,
}

struct Worker {
    index: usize,
    socket: UdpSocket,
    rooms: HashMap<RoomKey, RoomSlot>,
    prefixes: HashMap<String, RoomKey>,
    addrs: HashMap<SocketAddr, RoomKey>,
    stats: Arc<WorkerStats>,
    outbox: Outbox,
}

impl Worker {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut touched: Vec<RoomKey> = Vec::new();
        loop {
            let deadline = self.rooms.values().filter_map(|r| r.next_timeout).min();
            touched.clear();
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(cmd) => touched.extend(self.command(cmd)),
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => {
                        touched.extend(self.datagram(source, &buf[..n]));
                        self.read_burst(&mut buf, &mut touched);
                    }
                    Err(e) => {
                        // ICMP errors surface here on Linux; they concern one peer.
                        debug!(worker = self.index, error = %e, "recv error");
                    }
                },
                _ = sleep_until(deadline) => {
                    self.timeouts().await;
                }
            };
            for &key in &touched {
                self.run_due_timers(key);
                self.flush(key).await;
            }
        }
        info!(worker = self.index, "media worker stopped");
    }

    /// Takes the datagrams already waiting on the socket, up to [`BURST`]
    /// in all, without waiting: the rooms they touch then run their timers
    /// once for the whole burst. (str0m encrypts and emits a forwarded RTP
    /// packet on its transport's next timeout input, so one timer run per
    /// burst sends every packet of the burst with one poll of each
    /// subscriber's stack instead of one per packet.)
    fn read_burst(&mut self, buf: &mut [u8], touched: &mut Vec<RoomKey>) {
        for _ in 1..BURST {
            match self.socket.try_recv_from(buf) {
                Ok((n, source)) => {
                    if let Some(key) = self.datagram(source, &buf[..n])
                        && !touched.contains(&key)
                    {
                        touched.push(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(worker = self.index, error = %e, "recv error");
                    return;
                }
            }
        }
    }

    /// Runs a room's timers if they are due (after a datagram or a burst).
    fn run_due_timers(&mut self, key: RoomKey) {
        if let Some(slot) = self.rooms.get_mut(&key) {
            let now = Instant::now();
            if slot.room.poll_timeout().is_some_and(|t| t <= now) {
                slot.room.handle_timeout(now);
            }
        }
    }

    fn command(&mut self, cmd: Command) -> Option<RoomKey> {
        match cmd {
            Command::Open {
                key,
                mut config,
                events,
            } => {
                let prefix = loop {
                    let p = random_string(PREFIX_LEN);
                    if !self.prefixes.contains_key(&p) {
                        break p;
                    }
                };
                config.ufrag_prefix = prefix.clone();
                let room = Room::new(*config, Instant::now());
                self.prefixes.insert(prefix.clone(), key);
                self.rooms.insert(
                    key,
                    RoomSlot {
                        room,
                        prefix,
                        events,
                        next_timeout: None,
                        last_stats: Default::default(),
                    },
                );
                self.stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
                Some(key)
            }
            Command::Close { key } => {
                if let Some(slot) = self.rooms.remove(&key) {
                    self.prefixes.remove(&slot.prefix);
                    self.addrs.retain(|_, k| *k != key);
                    self.stats
                        .transports
                        .fetch_sub(slot.last_stats.transports, Ordering::Relaxed);
                }
                self.stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
                None
            }
            Command::Call { key, call } => {
                // A call for a closed room is dropped; its caller sees WorkerGone.
                let slot = self.rooms.get_mut(&key)?;
                call(&mut slot.room, Instant::now());
                Some(key)
            }
            Command::Stop => None,
        }
    }

    fn datagram(&mut self, source: SocketAddr, contents: &[u8]) -> Option<RoomKey> {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        // A STUN request names its room in its ufrag prefix; anything else is
        // routed by the source address a room accepted a request from.
        let by_prefix = stun_username(contents)
            .and_then(|(local, _)| local.get(..PREFIX_LEN))
            .and_then(|p| self.prefixes.get(p).copied());
        let Some(key) = by_prefix.or_else(|| self.addrs.get(&source).copied()) else {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let slot = self.rooms.get_mut(&key)?;
        match slot.room.handle_datagram(Instant::now(), source, contents) {
            Ok(()) => {
                // Bind the address only once the room authenticated the
                // request (str0m checks MESSAGE-INTEGRITY).
                if by_prefix.is_some() && self.addrs.get(&source) != Some(&key) {
                    self.addrs.insert(source, key);
                }
            }
            Err(_) => {
                self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(key)
    }

    async fn timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<RoomKey> = self
            .rooms
            .iter()
            .filter(|(_, s)| s.next_timeout.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(slot) = self.rooms.get_mut(&key) {
                slot.room.handle_timeout(now);
            }
            self.flush(key).await;
        }
    }

    /// Sends what a room transmits, forwards its events, and records its
    /// next timeout.
    async fn flush(&mut self, key: RoomKey) {
        let Some(slot) = self.rooms.get_mut(&key) else {
            return;
        };
        let mut sent = 0;
        while let Some(t) = slot.room.poll_transmit() {
            if self.outbox.push(t) {
                sent += self.outbox.send(&self.socket, self.index).await;
            }
        }
        sent += self.outbox.send(&self.socket, self.index).await;
        self.stats.datagrams_out.fetch_add(sent, Ordering::Relaxed);
        while let Some(event) = slot.room.poll_event() {
            let _ = slot.events.send(event);
        }
        slot.next_timeout = slot.room.poll_timeout();
        let stats = slot.room.stats();
        let last = std::mem::replace(&mut slot.last_stats, stats);
        if stats.transports != last.transports {
            if stats.transports > last.transports {
                self.stats
                    .transports
                    .fetch_add(stats.transports - last.transports, Ordering::Relaxed);
            } else {
                self.stats
                    .transports
                    .fetch_sub(last.transports - stats.transports, Ordering::Relaxed);
            }
        }
        self.stats
            .rtp_forwarded
            .fetch_add(stats.rtp_forwarded - last.rtp_forwarded, Ordering::Relaxed);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
