//! ICE-TCP for one worker: a passive listener, RFC 4571 framing, and the
//! connections keyed by their remote address (the address the core's
//! transmits name).
//!
//! Each connection has a reader task and a writer task on the worker's
//! current-thread runtime. The reader splits the byte stream into packets
//! ([`Deframer`]) and hands them to the worker loop over one bounded
//! channel shared by every connection (a flood waits in its own socket,
//! not in memory); the worker routes them through the endpoint like UDP
//! datagrams, by the ICE ufrag of the first STUN request.
//!
//! Outgoing packets are written by the worker itself, at once and without
//! waiting (`try_write_vectored` of the length prefix and the packet, no
//! copy), as long as the socket takes them: a packet leaves when str0m's
//! pacer emits it, as over UDP. What the socket refuses goes, framed, to a
//! bounded per-connection backlog that the writer task flushes when the
//! socket is writable again (and later packets queue behind it, in order).
//! The worker never waits for a TCP peer, and a peer that falls
//! [`TcpLimits::backlog`] packets behind (a dead or too slow link) loses its connection at once,
//! as a UDP peer would lose the datagrams.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pulsewave_core::framing::{Deframer, frame_header};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

/// Bounds of a worker's ICE-TCP connections (`RTC_TCP_MAX_CONNECTIONS`,
/// `RTC_TCP_BACKLOG`, `RTC_TCP_IDLE_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most TCP connections one worker holds; more are closed at accept
    /// (default 4096).
    pub max_connections: usize,
    /// Packets the socket refused, queued toward one connection, before
    /// the connection is dropped as too slow (default 512, about 600 KB of
    /// video: a second at 5 Mbit/s).
    pub backlog: usize,
    /// A connection that brings nothing for this long is closed (default
    /// 30 s; a browser sends a consent check every few seconds).
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            backlog: 512,
            idle_timeout: Duration::from_secs(30),
        }
    }
}
/// Packets in flight from all readers to the worker loop.
const INBOUND: usize = 1024;
/// Bytes read from a socket at once.
const READ_BUFFER: usize = 8192;
/// Backlog entries the writer joins into one `write` call.
const WRITE_BATCH: usize = 32;

/// What a reader task tells the worker.
#[derive(Debug)]
pub(crate) enum TcpIn {
    /// One packet of the connection `conn` from `peer`.
    Packet {
        peer: SocketAddr,
        conn: u64,
        bytes: Vec<u8>,
    },
    /// The connection ended (closed by the peer, an error, idle).
    Closed { peer: SocketAddr, conn: u64 },
}

struct Conn {
    id: u64,
    write: Arc<OwnedWriteHalf>,
    /// The backlog: framed bytes the socket refused, for the writer task.
    tx: mpsc::Sender<Vec<u8>>,
    /// The backlog is empty and the writer holds nothing: the worker may
    /// write directly. (Worker and writer run on one thread: no race.)
    idle: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// A packet of it was accepted by a transport: from then on what it
    /// brings is routed like any datagram; before, its first packet must
    /// be a STUN request that routes, or it is closed.
    routed: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Why a packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No connection from that address.
    NoConnection,
    /// The connection's queue was full: it was dropped.
    Overflow,
}

/// A worker's TCP listener and connections.
pub(crate) struct TcpConns {
    pub(crate) inbound: mpsc::Receiver<TcpIn>,
    inbound_tx: mpsc::Sender<TcpIn>,
    conns: HashMap<SocketAddr, Conn>,
    next_id: u64,
    limits: TcpLimits,
}

impl TcpConns {
    pub(crate) fn new(limits: TcpLimits) -> Self {
        let (inbound_tx, inbound) = mpsc::channel(INBOUND);
        Self {
            inbound,
            inbound_tx,
            conns: HashMap::new(),
            next_id: 0,
            limits: TcpLimits {
                max_connections: limits.max_connections.max(1),
                backlog: limits.backlog.max(1),
                idle_timeout: limits.idle_timeout.max(Duration::from_millis(1)),
            },
        }
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Takes an accepted connection (refused past
    /// [`TcpLimits::max_connections`]).
    pub(crate) fn add(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.conns.len() >= self.limits.max_connections {
            debug!(%peer, "too many TCP connections: refused");
            return;
        }
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel(self.limits.backlog);
        let write = Arc::new(w);
        let idle = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read_loop(
            r,
            peer,
            id,
            self.inbound_tx.clone(),
            self.limits.idle_timeout,
        ));
        let writer = tokio::spawn(write_loop(write.clone(), rx, idle.clone()));
        // A new connection from the same address replaces an old one.
        self.conns.insert(
            peer,
            Conn {
                id,
                write,
                tx,
                idle,
                reader,
                writer,
                routed: false,
            },
        );
    }

    /// Whether `conn` is still the live connection of `peer`, and whether
    /// it was routed already.
    pub(crate) fn state(&self, peer: SocketAddr, conn: u64) -> Option<bool> {
        self.conns
            .get(&peer)
            .filter(|c| c.id == conn)
            .map(|c| c.routed)
    }

    /// Marks a connection routed.
    pub(crate) fn set_routed(&mut self, peer: SocketAddr) {
        if let Some(c) = self.conns.get_mut(&peer) {
            c.routed = true;
        }
    }

    /// Closes the connection `conn` of `peer` (if it is still that one).
    pub(crate) fn close(&mut self, peer: SocketAddr, conn: u64) {
        if self.conns.get(&peer).is_some_and(|c| c.id == conn) {
            self.conns.remove(&peer);
        }
    }

    /// Sends a packet toward `peer` without waiting: written at once when
    /// the socket takes it, else queued in the connection's backlog. A
    /// connection whose backlog is full is dropped.
    pub(crate) fn send(&mut self, peer: SocketAddr, packet: Vec<u8>) -> Result<(), SendError> {
        let Some(c) = self.conns.get(&peer) else {
            return Err(SendError::NoConnection);
        };
        // The core never emits a packet over 64 KiB (str0m's MTU is far
        // below); one that did is dropped.
        let Some(header) = frame_header(packet.len()) else {
            return Ok(());
        };
        let mut written = 0;
        if c.idle.load(Ordering::Relaxed) {
            let total = header.len() + packet.len();
            loop {
                let r = if written < header.len() {
                    c.write.try_write_vectored(&[
                        IoSlice::new(&header[written..]),
                        IoSlice::new(&packet),
                    ])
                } else {
                    c.write.try_write(&packet[written - header.len()..])
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        written += n;
                        if written == total {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!(%peer, error = %e, "TCP write failed: connection dropped");
                        self.conns.remove(&peer);
                        return Err(SendError::NoConnection);
                    }
                }
            }
        }
        // The rest, framed, behind whatever waits already.
        let mut rest = Vec::with_capacity(header.len() + packet.len() - written);
        if written < header.len() {
            rest.extend_from_slice(&header[written..]);
            rest.extend_from_slice(&packet);
        } else {
            rest.extend_from_slice(&packet[written - header.len()..]);
        }
        c.idle.store(false, Ordering::Relaxed);
        match c.tx.try_send(rest) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                debug!(%peer, "TCP peer too slow: connection dropped");
                self.conns.remove(&peer);
                Err(SendError::Overflow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.conns.remove(&peer);
                Err(SendError::NoConnection)
            }
        }
    }
}

async fn read_loop(
    mut r: OwnedReadHalf,
    peer: SocketAddr,
    conn: u64,
    tx: mpsc::Sender<TcpIn>,
    idle: Duration,
) {
    let mut deframer = Deframer::default();
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        deframer.extend(&buf[..n]);
        while let Some(bytes) = deframer.next_frame().map(<[u8]>::to_vec) {
            if tx.send(TcpIn::Packet { peer, conn, bytes }).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(TcpIn::Closed { peer, conn }).await;
}

/// Flushes a connection's backlog when the socket is writable, then marks
/// it idle again so that the worker writes directly.
async fn write_loop(
    w: Arc<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    idle: Arc<AtomicBool>,
) {
    let mut chunks = Vec::with_capacity(WRITE_BATCH);
    let mut buf = Vec::new();
    while rx.recv_many(&mut chunks, WRITE_BATCH).await > 0 {
        buf.clear();
        for c in chunks.drain(..) {
            buf.extend_from_slice(&c);
        }
        let mut off = 0;
        while off < buf.len() {
            if w.writable().await.is_err() {
                return;
            }
            match w.try_write(&buf[off..]) {
                Ok(n) => off += n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        if rx.is_empty() {
            idle.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A connected pair: the server side handed to a [`TcpConns`], the
    /// client side returned (and never read unless the test does).
    async fn pair(conns: &mut TcpConns) -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        conns.add(server, peer);
        (client, peer)
    }

    #[tokio::test]
    async fn packets_go_out_framed_and_come_in_whole() {
        let mut conns = TcpConns::new(TcpLimits::default());
        let (mut client, peer) = pair(&mut conns).await;
        conns.send(peer, b"hello".to_vec()).unwrap();
        let mut buf = [0u8; 7];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"\0\x05hello");
        // Two frames, the second cut across two writes.
        client.write_all(b"\0\x02ab\0\x03c").await.unwrap();
        client.write_all(b"de").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match conns.inbound.recv().await.unwrap() {
                TcpIn::Packet { bytes, conn, .. } => {
                    assert_eq!(conns.state(peer, conn), Some(false));
                    got.push(bytes);
                }
                TcpIn::Closed { .. } => panic!("closed early"),
            }
        }
        assert_eq!(got, vec![b"ab".to_vec(), b"cde".to_vec()]);
        // The peer hangs up: the reader says so and the connection goes.
        drop(client);
        let closed = conns.inbound.recv().await.unwrap();
        let TcpIn::Closed { peer: p, conn } = closed else {
            panic!("{closed:?}");
        };
        conns.close(p, conn);
        assert_eq!(conns.len(), 0);
        assert_eq!(
            conns.send(peer, b"late".to_vec()),
            Err(SendError::NoConnection)
        );
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_is_dropped_without_blocking() {
        for backlog in [TcpLimits::default().backlog, 8] {
            let mut conns = TcpConns::new(TcpLimits {
                backlog,
                ..TcpLimits::default()
            });
            let (_client, peer) = pair(&mut conns).await;
            // The worker sends without ever waiting: the socket's buffers
            // fill, then at most `backlog` packets wait, then the
            // connection is dropped.
            let mut sent = 0;
            let result = loop {
                match conns.send(peer, vec![0u8; 1200]) {
                    Ok(()) => sent += 1,
                    Err(e) => break e,
                }
                assert!(sent < 200_000, "the backlog is bounded");
            };
            assert_eq!(result, SendError::Overflow);
            assert!(sent > backlog, "{sent}");
            assert_eq!(conns.len(), 0, "the slow connection is gone");
        }
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_refused_and_idle_ones_closed() {
        let mut conns = TcpConns::new(TcpLimits {
            max_connections: 2,
            idle_timeout: Duration::from_millis(300),
            ..TcpLimits::default()
        });
        let (_a, _) = pair(&mut conns).await;
        let (_b, _) = pair(&mut conns).await;
        let (mut c, _) = pair(&mut conns).await;
        assert_eq!(conns.len(), 2, "the third connection is refused");
        // The refused one is closed: its client reads the end.
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Both others say nothing: each reader reports its end after the
        // idle timeout.
        for _ in 0..2 {
            let closed = tokio::time::timeout(Duration::from_secs(5), conns.inbound.recv())
                .await
                .expect("closed when idle")
                .unwrap();
            let TcpIn::Closed { peer, conn } = closed else {
                panic!("{closed:?}");
            };
            conns.close(peer, conn);
        }
        assert_eq!(conns.len(), 0);
    }
}
