//! The tokio task that drives one [`PeerTransport`] and its UDP socket (or
//! its TCP stream, with RFC 4571 framing, for ICE-TCP).
//!
//! The task owns the transport and the socket outright. Its loop: send every
//! pending transmit, forward every event, then wait for one of a datagram, a
//! command from the client, the transport's timer, or room in the event
//! channel for events that did not fit; apply it and repeat. It ends when
//! the client is closed or dropped (cancellation), when every command
//! sender is gone, or when the transport dies.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pulsewave_core::framing::{Deframer, frame_into};
use pulsewave_protocol::rtp::{MediaKind, RtpParameters};
use pulsewave_protocol::transport::{IceParameters, SctpStreamParameters, TransportDirection};
use pulsewave_protocol::{ConsumerId, ProducerId, TransportId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientEvent, ReceivedRtp};
use crate::error::ClientError;
use crate::peer::{LocalTrack, PeerEvent, PeerTransport};

/// Commands queued per transport; senders wait when it is full.
const COMMAND_CAPACITY: usize = 1024;

/// Longest sleep: str0m reports "no timer" as an instant years away.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Largest datagram read from the socket.
const RECV_BUFFER: usize = 4096;

/// Packets read from a TCP stream and not yet taken by the task.
const TCP_INBOUND: usize = 256;

/// How a transport reaches the server.
pub(crate) enum Link {
    /// A UDP socket (the default).
    Udp(UdpSocket),
    /// A TCP stream to the server's passive candidate (ICE-TCP).
    Tcp(TcpLink),
}

/// A TCP stream carrying RFC 4571 frames: a reader task splits what
/// arrives into packets; the transport task writes.
pub(crate) struct TcpLink {
    server: SocketAddr,
    write: OwnedWriteHalf,
    packets: mpsc::Receiver<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
    /// The stream ended: nothing more to read.
    ended: bool,
    buf: Vec<u8>,
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// A link over a TCP stream connected to the server's candidate.
    pub(crate) fn tcp(stream: TcpStream) -> std::io::Result<Self> {
        let server = stream.peer_addr()?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, packets) = mpsc::channel(TCP_INBOUND);
        let reader = tokio::spawn(read_frames(read, tx));
        Ok(Link::Tcp(TcpLink {
            server,
            write,
            packets,
            reader,
            ended: false,
            buf: Vec::new(),
        }))
    }

    async fn send(&mut self, contents: &[u8], destination: SocketAddr) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => s.send_to(contents, destination).await.map(|_| ()),
            Link::Tcp(t) => {
                t.buf.clear();
                if !frame_into(contents, &mut t.buf) {
                    return Err(std::io::Error::other("packet too large for a frame"));
                }
                t.write.write_all(&t.buf).await
            }
        }
    }
}

async fn read_frames(mut read: OwnedReadHalf, tx: mpsc::Sender<Vec<u8>>) {
    let mut deframer = Deframer::default();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        deframer.extend(&buf[..n]);
        while let Some(packet) = deframer.next_frame().map(<[u8]>::to_vec) {
            if tx.send(packet).await.is_err() {
                return;
            }
        }
    }
}

/// The next datagram of the link; never, once a TCP stream ended.
async fn recv(link: &mut Link, buf: &mut [u8]) -> Wake {
    match link {
        Link::Udp(s) => match arrival::recv_from(s, buf).await {
            Ok((n, source, at)) => Wake::Datagram(n, source, at),
            Err(e) => {
                tracing::debug!(error = %e, "socket receive failed");
                Wake::Nothing
            }
        },
        Link::Tcp(t) if t.ended => std::future::pending().await,
        Link::Tcp(t) => match t.packets.recv().await {
            Some(p) => Wake::Packet(p, t.server),
            None => {
                // ICE notices the silence and reports the transport
                // disconnected.
                tracing::debug!(server = %t.server, "TCP stream to the server ended");
                t.ended = true;
                Wake::Nothing
            }
        },
    }
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What the client asks a transport task to do.
pub(crate) enum Command {
    AddTrack {
        kind: MediaKind,
        mime_type: String,
        rtx: bool,
        reply: Reply<LocalTrack>,
    },
    BindProducer {
        mid: String,
        producer_id: ProducerId,
    },
    RemoveProducer {
        producer_id: ProducerId,
    },
    RemoveTrack {
        mid: String,
    },
    WriteRtp {
        mid: String,
        seq_no: u64,
        rtp_time: u32,
        marker: bool,
        payload: Arc<[u8]>,
    },
    AddConsumer {
        consumer_id: ConsumerId,
        producer_id: ProducerId,
        kind: MediaKind,
        rtp_parameters: Box<RtpParameters>,
        reply: Reply<()>,
    },
    RemoveConsumer {
        consumer_id: ConsumerId,
    },
    RequestKeyframe {
        consumer_id: ConsumerId,
        reply: Reply<()>,
    },
    OpenChannel {
        stream_id: u16,
        label: String,
        ordered: bool,
        max_retransmits: Option<u16>,
        reply: Reply<()>,
    },
    AcceptChannel {
        params: SctpStreamParameters,
        label: String,
        reply: Reply<()>,
    },
    CloseChannel {
        stream_id: u16,
    },
    SendData {
        stream_id: u16,
        binary: bool,
        data: Vec<u8>,
        reply: Reply<bool>,
    },
    /// The server restarted ICE (`ice-restarted`): restart with its new
    /// parameters.
    RestartIce {
        parameters: IceParameters,
        /// A new TCP connection (and its local address) replacing the old
        /// one, for an ICE-TCP transport: after a network change the old
        /// connection is dead.
        link: Option<(Link, SocketAddr)>,
        reply: Reply<()>,
    },
}

/// Connection state of a transport, published by its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    Connecting,
    Connected,
    Disconnected,
    Closed,
}

/// Where transport and signaling tasks put events for the client.
#[derive(Clone, Debug)]
pub(crate) struct EventSink {
    pub(crate) tx: mpsc::Sender<ClientEvent>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Queues an event that must not be lost: straight into the channel if
    /// it has room and nothing is waiting before it, else into `overflow`.
    pub(crate) fn push(&self, overflow: &mut VecDeque<ClientEvent>, event: ClientEvent) {
        if overflow.is_empty() {
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => overflow.push_back(e),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        } else {
            overflow.push_back(event);
        }
    }

    /// Queues an event that may be dropped (media packets) when the
    /// channel is full; counts the drops.
    pub(crate) fn push_lossy(&self, event: ClientEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The client's handle on a running transport task.
#[derive(Clone, Debug)]
pub(crate) struct TransportHandle {
    pub(crate) id: TransportId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) state: watch::Receiver<LinkState>,
    next_stream_id: Arc<AtomicU16>,
    /// For an ICE-TCP transport: the server's TCP candidate and the local
    /// IP, to open a new connection at an ICE restart.
    pub(crate) tcp: Option<(SocketAddr, IpAddr)>,
}

impl TransportHandle {
    pub(crate) fn is_closed(&self) -> bool {
        self.commands.is_closed() || *self.state.borrow() == LinkState::Closed
    }

    /// The next free SCTP stream id for a data channel we open.
    pub(crate) fn next_stream_id(&self) -> u16 {
        self.next_stream_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until ICE and DTLS are up.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| matches!(s, LinkState::Connected | LinkState::Closed));
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(ClientError::Timeout(format!(
                "transport {} did not connect (ICE/DTLS) within {timeout:?}",
                self.id
            ))),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok(s)) if *s == LinkState::Closed => Err(ClientError::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Sends a command, waiting for room in the queue.
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a command that has a reply and waits for the reply.
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

/// The local IP the OS would use to reach `server` (no packet is sent).
pub(crate) fn local_ip_for(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// A new TCP connection to the server's candidate `server` from `ip`, as
/// a link, with its local address.
pub(crate) async fn connect_tcp(
    server: SocketAddr,
    ip: IpAddr,
    timeout: Duration,
) -> Result<(Link, SocketAddr), ClientError> {
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    let stream = tokio::time::timeout(timeout, socket.connect(server))
        .await
        .map_err(|_| ClientError::Timeout(format!("TCP connect to {server} timed out")))??;
    let local = stream.local_addr()?;
    Ok((Link::tcp(stream)?, local))
}

/// When the kernel received a datagram (`SO_TIMESTAMPNS`), read with it.
#[cfg(target_os = "linux")]
mod arrival {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// Older than this, a timestamp is not trusted (the wall clock
    /// stepped): the datagram counts as received when read.
    const MAX_AGE: Duration = Duration::from_secs(1);

    /// Room for one `SCM_TIMESTAMPNS` control message, aligned as a
    /// `cmsghdr` must be.
    #[repr(C, align(8))]
    struct ControlBuffer([u8; 64]);

    /// Asks the kernel to timestamp what `socket` receives; without it
    /// datagrams count as received when read.
    pub(super) fn enable(socket: &UdpSocket) {
        if let Err(e) = setsockopt(socket, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(error = %e, "no receive timestamps");
        }
    }

    /// The next datagram: its length, source and arrival time.
    pub(super) async fn recv_from(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<Instant>)> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || read(socket, buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn read(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<Instant>)> {
        let mut control = ControlBuffer([0; 64]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control.0),
            MsgFlags::empty(),
        )?;
        let source = msg
            .address
            .as_ref()
            .and_then(to_socket_addr)
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        let mut at = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                let received = u64::try_from(ts.tv_sec())
                    .ok()
                    .zip(u32::try_from(ts.tv_nsec()).ok())
                    .map(|(s, ns)| UNIX_EPOCH + Duration::new(s, ns));
                at = received.and_then(arrived_at);
            }
        }
        Ok((msg.bytes, source, at))
    }

    /// `received` (wall clock) on the monotonic clock.
    fn arrived_at(received: SystemTime) -> Option<Instant> {
        let age = SystemTime::now().duration_since(received).ok()?;
        if age > MAX_AGE {
            return None;
        }
        Instant::now().checked_sub(age)
    }

    fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A datagram left unread for 50 ms counts as received when it
        /// arrived, not when it was read.
        #[tokio::test]
        async fn a_late_read_reports_the_arrival_time() {
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            enable(&rx);
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            // The kernel turns receive timestamping on a moment after the
            // first socket asks for it (a deferred static key switch):
            // until then a datagram is stamped when read. Wait for it.
            let mut buf = [0u8; 64];
            for _ in 0..40 {
                let sent = Instant::now();
                tx.send_to(b"hello", rx.local_addr().unwrap())
                    .await
                    .unwrap();
                std::thread::sleep(Duration::from_millis(50));
                let (n, source, at) = recv_from(&rx, &mut buf).await.unwrap();
                let read = Instant::now();
                assert_eq!(&buf[..n], b"hello");
                assert_eq!(source, tx.local_addr().unwrap());
                let at = at.expect("the kernel timestamps the datagram");
                assert!(at <= read, "arrival after the read");
                if read - at >= Duration::from_millis(45) {
                    assert!(
                        at + Duration::from_millis(5) >= sent,
                        "{:?} before the send",
                        sent - at
                    );
                    return;
                }
            }
            panic!("every datagram was stamped when read, not when it arrived");
        }
    }
}

/// Without kernel timestamps: a datagram counts as received when read.
#[cfg(not(target_os = "linux"))]
mod arrival {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::net::UdpSocket;

    pub(super) fn enable(_: &UdpSocket) {}

    pub(super) async fn recv_from(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<Instant>)> {
        let (n, source) = socket.recv_from(buf).await?;
        Ok((n, source, None))
    }
}

/// Starts the task for `peer` on `link`.
pub(crate) fn spawn(
    peer: PeerTransport,
    link: Link,
    sink: EventSink,
    cancel: CancellationToken,
    receive_cap: Option<u64>,
) -> TransportHandle {
    if let Link::Udp(socket) = &link {
        arrival::enable(socket);
    }
    let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    let handle = TransportHandle {
        id: peer.id().clone(),
        commands,
        state,
        next_stream_id: Arc::new(AtomicU16::new(0)),
        tcp: match &link {
            Link::Tcp(t) => Some((t.server, peer.local_addr().ip())),
            Link::Udp(_) => None,
        },
    };
    let task = Task {
        direction: peer.direction(),
        peer,
        link,
        sink,
        state: state_tx,
        overflow: VecDeque::new(),
        producers: HashMap::new(),
        consumers: HashMap::new(),
        write_errors: 0,
        receive_cap: receive_cap.map(|rate| Policer {
            rate_bytes: rate as f64 / 8.0,
            tokens: rate as f64 / 8.0 / 10.0,
            at: Instant::now(),
        }),
        clock: Instant::now(),
    };
    tokio::spawn(task.run(rx, cancel));
    handle
}

/// Why the task's loop woke up.
enum Wake {
    Stop,
    Nothing,
    /// Its length, source and when the kernel received it (if known).
    Datagram(usize, SocketAddr, Option<Instant>),
    Packet(Vec<u8>, SocketAddr),
    Command(Command),
    Timeout,
}

struct Task {
    peer: PeerTransport,
    direction: TransportDirection,
    link: Link,
    sink: EventSink,
    state: watch::Sender<LinkState>,
    overflow: VecDeque<ClientEvent>,
    /// mid -> producer, for keyframe requests.
    producers: HashMap<String, ProducerId>,
    /// consumer -> producer, for received packets.
    consumers: HashMap<ConsumerId, ProducerId>,
    write_errors: u64,
    /// The emulated downlink ([`crate::ClientBuilder::receive_bitrate_cap`]).
    receive_cap: Option<Policer>,
    /// The latest instant handed to the transport: str0m's clock must not
    /// go back, and a datagram's arrival time can be older.
    clock: Instant,
}

/// A token bucket that drops what exceeds a rate (100 ms of burst).
struct Policer {
    rate_bytes: f64,
    tokens: f64,
    at: Instant,
}

impl Policer {
    /// Whether `bytes` pass at `now`.
    fn pass(&mut self, now: Instant, bytes: usize) -> bool {
        let burst = self.rate_bytes / 10.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate_bytes).min(burst);
        // Headers on the wire: IPv4 and UDP.
        let cost = (bytes + 28) as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            self.flush().await;
            if !self.peer.is_alive() {
                break;
            }
            let now = Instant::now();
            let deadline = self
                .peer
                .poll_timeout()
                .map_or(now + MAX_WAIT, |t| t.min(now + MAX_WAIT));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            let wake = tokio::select! {
                _ = cancel.cancelled() => Wake::Stop,
                w = recv(&mut self.link, &mut buf) => w,
                cmd = commands.recv() => match cmd {
                    None => Wake::Stop,
                    Some(cmd) => Wake::Command(cmd),
                },
                permit = self.sink.tx.reserve(), if !self.overflow.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(e) = self.overflow.pop_front() {
                            permit.send(e);
                        }
                        Wake::Nothing
                    }
                    Err(_) => {
                        self.overflow.clear();
                        Wake::Nothing
                    }
                },
                _ = sleep => Wake::Timeout,
            };
            match wake {
                Wake::Stop => break,
                Wake::Nothing => {}
                Wake::Datagram(n, source, at) => {
                    // The time the network delivered it, not the time this
                    // task got round to reading it (libwebrtc reads kernel
                    // timestamps too): a late read must not look like
                    // queueing to the sender's delay-based estimator.
                    let now = self.tick(at);
                    if let Some(cap) = self.receive_cap.as_mut()
                        && !cap.pass(now, n)
                    {
                        continue;
                    }
                    let contents = buf.get(..n).unwrap_or_default();
                    if let Err(e) = self.peer.handle_receive(now, source, contents) {
                        tracing::debug!(transport = %self.peer.id(), %source, error = %e, "datagram rejected");
                    }
                }
                Wake::Packet(contents, source) => {
                    let now = self.tick(None);
                    if let Err(e) = self.peer.handle_receive(now, source, &contents) {
                        tracing::debug!(transport = %self.peer.id(), %source, error = %e, "packet rejected");
                    }
                }
                Wake::Command(cmd) => self.apply(cmd),
                Wake::Timeout => {
                    let now = self.tick(None);
                    self.peer.handle_timeout(now);
                }
            }
        }
        let now = self.tick(None);
        self.peer.close(now);
        self.flush().await;
        if self.write_errors > 0 {
            tracing::debug!(transport = %self.peer.id(), errors = self.write_errors, "RTP writes refused");
        }
        self.state.send_replace(LinkState::Closed);
        // Release the transport and its socket, then deliver what is left
        // (this waits for the reader, or ends when it is gone).
        let Task { overflow, sink, .. } = self;
        for e in overflow {
            if sink.tx.send(e).await.is_err() {
                break;
            }
        }
    }

    /// The instant to hand the transport: `at` (or now), never before
    /// one handed already.
    fn tick(&mut self, at: Option<Instant>) -> Instant {
        let now = at.unwrap_or_else(Instant::now).max(self.clock);
        self.clock = now;
        now
    }

    fn apply(&mut self, cmd: Command) {
        let now = self.tick(None);
        match cmd {
            Command::AddTrack {
                kind,
                mime_type,
                rtx,
                reply,
            } => {
                let _ = reply.send(self.peer.add_track(kind, &mime_type, rtx));
            }
            Command::BindProducer { mid, producer_id } => {
                self.producers.insert(mid, producer_id);
            }
            Command::RemoveProducer { producer_id } => {
                let mids: Vec<String> = self
                    .producers
                    .iter()
                    .filter(|(_, p)| **p == producer_id)
                    .map(|(m, _)| m.clone())
                    .collect();
                for mid in mids {
                    self.producers.remove(&mid);
                    let _ = self.peer.remove_track(&mid);
                }
            }
            Command::RemoveTrack { mid } => {
                self.producers.remove(&mid);
                let _ = self.peer.remove_track(&mid);
            }
            Command::WriteRtp {
                mid,
                seq_no,
                rtp_time,
                marker,
                payload,
            } => {
                if let Err(e) = self
                    .peer
                    .write_rtp(&mid, seq_no, rtp_time, marker, payload, now)
                {
                    self.write_errors += 1;
                    tracing::trace!(transport = %self.peer.id(), error = %e, "RTP write refused");
                }
            }
            Command::AddConsumer {
                consumer_id,
                producer_id,
                kind,
                rtp_parameters,
                reply,
            } => {
                let r = self
                    .peer
                    .add_consumer(consumer_id.clone(), kind, &rtp_parameters);
                if r.is_ok() {
                    self.consumers.insert(consumer_id, producer_id);
                }
                let _ = reply.send(r);
            }
            Command::RemoveConsumer { consumer_id } => {
                self.consumers.remove(&consumer_id);
                let _ = self.peer.remove_consumer(&consumer_id);
            }
            Command::RequestKeyframe { consumer_id, reply } => {
                let _ = reply.send(self.peer.request_keyframe(&consumer_id));
            }
            Command::OpenChannel {
                stream_id,
                label,
                ordered,
                max_retransmits,
                reply,
            } => {
                let _ = reply.send(self.peer.open_data_channel(
                    stream_id,
                    &label,
                    ordered,
                    max_retransmits,
                ));
            }
            Command::AcceptChannel {
                params,
                label,
                reply,
            } => {
                let _ = reply.send(self.peer.accept_data_channel(&params, &label));
            }
            Command::RestartIce {
                parameters,
                link,
                reply,
            } => {
                let local = link.map(|(link, local)| {
                    self.link = link;
                    local
                });
                let _ = reply.send(self.peer.restart_ice_from(now, &parameters, local));
            }
            Command::CloseChannel { stream_id } => {
                let _ = self.peer.close_data_channel(stream_id);
            }
            Command::SendData {
                stream_id,
                binary,
                data,
                reply,
            } => {
                let _ = reply.send(self.peer.send_data(stream_id, binary, &data));
            }
        }
    }

    /// Sends every pending datagram and forwards every pending event.
    async fn flush(&mut self) {
        while let Some(t) = self.peer.poll_transmit() {
            if let Err(e) = self.link.send(&t.contents, t.destination).await {
                tracing::debug!(transport = %self.peer.id(), error = %e, "socket send failed");
            }
        }
        while let Some(e) = self.peer.poll_event() {
            self.forward(e);
        }
    }

    fn forward(&mut self, e: PeerEvent) {
        let transport_id = self.peer.id().clone();
        let direction = self.direction;
        let event = match e {
            PeerEvent::Connected => {
                self.state.send_replace(LinkState::Connected);
                ClientEvent::TransportConnected {
                    direction,
                    transport_id,
                }
            }
            PeerEvent::Disconnected => {
                self.state.send_replace(LinkState::Disconnected);
                ClientEvent::TransportDisconnected {
                    direction,
                    transport_id,
                }
            }
            PeerEvent::RtpPacket {
                mid,
                ssrc,
                payload_type,
                seq_no,
                rtp_time,
                marker,
                payload,
                audio_level,
                received_at,
            } => {
                let Some(consumer_id) = self.peer.consumer_for_ssrc(ssrc).cloned() else {
                    return;
                };
                let Some(producer_id) = self.consumers.get(&consumer_id).cloned() else {
                    return;
                };
                self.sink.push_lossy(ClientEvent::Rtp(ReceivedRtp {
                    consumer_id,
                    producer_id,
                    mid,
                    ssrc,
                    payload_type,
                    seq_no,
                    rtp_time,
                    marker,
                    payload,
                    audio_level,
                    received_at,
                }));
                return;
            }
            PeerEvent::KeyframeRequest { mid, full, .. } => ClientEvent::KeyframeRequested {
                producer_id: self.producers.get(&mid).cloned(),
                mid,
                full,
            },
            PeerEvent::ChannelOpen { stream_id, label } => ClientEvent::DataChannelOpen {
                direction,
                stream_id,
                label,
            },
            PeerEvent::ChannelData {
                stream_id,
                binary,
                data,
            } => ClientEvent::DataChannelMessage {
                direction,
                stream_id,
                binary,
                data,
            },
            PeerEvent::ChannelClose { stream_id } => ClientEvent::DataChannelClosed {
                direction,
                stream_id,
            },
        };
        self.sink.push(&mut self.overflow, event);
    }
}
