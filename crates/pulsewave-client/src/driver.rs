//! The tokio task that drives one [`PeerTransport`] and its UDP socket.
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

use pulsewave_protocol::rtp::{MediaKind, RtpParameters};
use pulsewave_protocol::transport::{SctpStreamParameters, TransportDirection};
use pulsewave_protocol::{ConsumerId, ProducerId, TransportId};
use tokio::net::UdpSocket;
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

/// Starts the task for `peer` on `socket`.
pub(crate) fn spawn(
    peer: PeerTransport,
    socket: UdpSocket,
    sink: EventSink,
    cancel: CancellationToken,
    receive_cap: Option<u64>,
) -> TransportHandle {
    let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    let handle = TransportHandle {
        id: peer.id().clone(),
        commands,
        state,
        next_stream_id: Arc::new(AtomicU16::new(0)),
    };
    let task = Task {
        direction: peer.direction(),
        peer,
        socket,
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
    };
    tokio::spawn(task.run(rx, cancel));
    handle
}

/// Why the task's loop woke up.
enum Wake {
    Stop,
    Nothing,
    Datagram(usize, SocketAddr),
    Command(Command),
    Timeout,
}

struct Task {
    peer: PeerTransport,
    direction: TransportDirection,
    socket: UdpSocket,
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
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => Wake::Datagram(n, source),
                    Err(e) => {
                        tracing::debug!(error = %e, "socket receive failed");
                        Wake::Nothing
                    }
                },
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
                Wake::Datagram(n, source) => {
                    if let Some(cap) = self.receive_cap.as_mut()
                        && !cap.pass(Instant::now(), n)
                    {
                        continue;
                    }
                    let contents = buf.get(..n).unwrap_or_default();
                    if let Err(e) = self.peer.handle_receive(Instant::now(), source, contents) {
                        tracing::debug!(transport = %self.peer.id(), %source, error = %e, "datagram rejected");
                    }
                }
                Wake::Command(cmd) => self.apply(cmd),
                Wake::Timeout => self.peer.handle_timeout(Instant::now()),
            }
        }
        self.peer.close(Instant::now());
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

    fn apply(&mut self, cmd: Command) {
        let now = Instant::now();
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
            if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
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
