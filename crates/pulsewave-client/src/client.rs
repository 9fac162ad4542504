//! The tokio client: signaling over one WebSocket, media over one
//! [`PeerTransport`] task per transport.
//!
//! # Tasks
//!
//! - **Signaling task**, started by [`Client::connect`]: owns the
//!   WebSocket. Requests from [`Client::request`] reach it through a
//!   bounded channel with a one-shot reply slot; it writes them with an
//!   incrementing numeric `requestId` and completes the slot when the reply
//!   (or an `error`) with that `requestId` arrives. Every other server
//!   message becomes [`ClientEvent::Signal`]; on `transport-closed` it stops
//!   that transport's task (the next publish or subscribe creates a new
//!   transport), on `track-unsubscribed` it removes the consumer from the
//!   receive transport. When the socket closes, pending
//!   requests fail with [`ClientError::Closed`], [`ClientEvent::Closed`] is
//!   queued and every transport task is cancelled.
//! - **Reconnection** ([`ClientBuilder::reconnect`], off by default): when
//!   the socket closes for any reason but a final one, the signaling task
//!   cancels the transports, connects again with backoff and joins the
//!   room, then a resume task creates new transports, republishes the
//!   tracks (their [`LocalTrackHandle`]s follow) and renews the
//!   subscriptions on tracks of the same publisher and kind, at once or
//!   when the publisher is back (`track-published`).
//! - **Transport tasks**, started lazily by the first publish (send
//!   transport) or subscribe (receive transport): each owns one
//!   `PeerTransport` and one UDP socket (see the `driver` module docs in the
//!   source). Media packets arrive as [`ClientEvent::Rtp`].
//!
//! # Events and back-pressure
//!
//! Events go through one bounded channel ([`ClientBuilder::event_capacity`],
//! 4096 by default). Signaling and state events are never dropped: when the
//! channel is full they wait in the producing task and are delivered in
//! order as room frees up. RTP packets are dropped when the channel is full
//! and counted in [`Client::dropped_events`]. Read events promptly (or take
//! the receiver with [`Client::events`] into a task of its own).
//!
//! Dropping the `Client` closes the WebSocket and stops every transport
//! task; [`LocalTrackHandle`]s and [`RemoteTrack`]s then fail with
//! [`ClientError::Closed`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use pulsewave_protocol::rtp::{MediaKind, RtpCapabilities};
use pulsewave_protocol::transport::{
    IceServer, NumSctpStreams, SctpCapabilities, SctpStreamParameters, TransportDirection,
};
use pulsewave_protocol::{
    ClientMessage, ConsumerId, DataKind, DataProducerId, ParticipantInfo, ParticipantSid,
    ProducerId, RequestId, ResumeRequest, RoomInfo, ServerMessage, TrackInfo, TrackSource,
    TransportId, encode_client,
};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::driver::{self, Command, EventSink, LinkState, TransportHandle};
use crate::error::ClientError;
use crate::handles::TrackLink;
use crate::peer::LocalTrack;
use crate::peer::{IceProtocol, PeerTransport, server_candidate};
use crate::signaling::{
    Reconnect, RegisteredTransport, Registry, SignalCommand, signaling_task, ws_url,
};

pub use crate::handles::{DataChannelHandle, DataSubscription, LocalTrackHandle, RemoteTrack};

/// Requests queued to the signaling task.
const SIGNAL_CAPACITY: usize = 256;

/// Something that happened, delivered through [`Client::events`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
// `Signal` carries a whole `ServerMessage` (a `joined` with its room
// listing is the largest); events are moved once through a channel, so
// boxing it would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum ClientEvent {
    /// A server message that is not the reply to one of our requests:
    /// `participant-joined`, `track-published`, `data`, `track-muted`,
    /// `track-unsubscribed`, `transport-closed`, `disconnected`, `error`
    /// without `requestId`, ...
    Signal(ServerMessage),
    /// A transport's ICE and DTLS came up.
    TransportConnected {
        /// Send or receive transport.
        direction: TransportDirection,
        /// The transport.
        transport_id: TransportId,
    },
    /// A transport lost its connection.
    TransportDisconnected {
        /// Send or receive transport.
        direction: TransportDirection,
        /// The transport.
        transport_id: TransportId,
    },
    /// An RTP packet of a subscription.
    Rtp(ReceivedRtp),
    /// The server asks for a keyframe on one of our published tracks.
    KeyframeRequested {
        /// The track's producer, once `published` arrived.
        producer_id: Option<ProducerId>,
        /// The track's mid on the send transport.
        mid: String,
        /// FIR (`true`) or PLI.
        full: bool,
    },
    /// An SCTP data channel opened.
    DataChannelOpen {
        /// Transport it runs on.
        direction: TransportDirection,
        /// SCTP stream id.
        stream_id: u16,
        /// Label.
        label: String,
    },
    /// A data channel message.
    DataChannelMessage {
        /// Transport it arrived on.
        direction: TransportDirection,
        /// SCTP stream id.
        stream_id: u16,
        /// Binary or text.
        binary: bool,
        /// The message.
        data: Vec<u8>,
    },
    /// A data channel closed.
    DataChannelClosed {
        /// Transport it ran on.
        direction: TransportDirection,
        /// SCTP stream id.
        stream_id: u16,
    },
    /// The connection was lost and the client reconnects
    /// ([`ClientBuilder::reconnect`]); one event per attempt.
    Reconnecting {
        /// 1 for the first attempt.
        attempt: u32,
        /// Why: `migration`, `server-shutdown`, or the socket's close.
        reason: String,
    },
    /// The session was resumed after a dropped WebSocket: same participant
    /// sid, transports, producers and consumers; the messages missed while
    /// disconnected follow as [`ClientEvent::Signal`]. Nothing is
    /// republished.
    Resumed {
        /// The participant sid (unchanged).
        participant_sid: ParticipantSid,
        /// How many missed messages the server replays after this event.
        replayed: u64,
    },
    /// Joined the room again after a reconnection. Tracks are republished
    /// and subscriptions renewed next.
    Reconnected {
        /// The new `joined` reply.
        joined: Box<Joined>,
    },
    /// A track was published again after a reconnection; its
    /// [`LocalTrackHandle`] now sends on the new producer.
    Republished {
        /// The producer before the reconnection.
        old_producer_id: ProducerId,
        /// The new producer.
        producer_id: ProducerId,
    },
    /// A subscription ended by a reconnection was renewed, on a track of
    /// the same publisher and kind.
    Resubscribed {
        /// The producer subscribed to.
        producer_id: ProducerId,
        /// The new consumer.
        consumer_id: ConsumerId,
        /// The publisher.
        participant_identity: String,
    },
    /// The signaling connection closed; no more events follow.
    Closed {
        /// The close frame's code and reason, or the error, if any.
        reason: Option<String>,
    },
}

/// An RTP packet received on a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRtp {
    /// The subscription.
    pub consumer_id: ConsumerId,
    /// The subscribed producer.
    pub producer_id: ProducerId,
    /// The consumer's mid on the receive transport.
    pub mid: String,
    /// The consumer's SSRC.
    pub ssrc: u32,
    /// Payload type (the router's).
    pub payload_type: u8,
    /// Extended sequence number.
    pub seq_no: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// Marker bit.
    pub marker: bool,
    /// The payload.
    pub payload: Arc<[u8]>,
    /// The audio level header extension (RFC 6464, -dBov), if the packet
    /// carried it.
    pub audio_level: Option<i8>,
    /// When the datagram was read from the socket.
    pub received_at: Instant,
}

/// The `joined` reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The room with everyone already in it.
    pub room: RoomInfo,
    /// Ourselves.
    pub participant: ParticipantInfo,
    /// The router's RTP capabilities: what we publish with and receive.
    pub rtp_capabilities: RtpCapabilities,
    /// STUN/TURN servers (unused on loopback).
    pub ice_servers: Vec<IceServer>,
    /// The secret that resumes this session after a dropped WebSocket
    /// (absent when the server has resume off).
    pub resume_token: Option<String>,
}

/// What to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishOptions {
    /// Audio or video.
    pub kind: MediaKind,
    /// A router codec MIME type (`audio/opus`, `video/VP8`, ...).
    pub mime_type: String,
    /// Camera, microphone, ...; the server's default when `None`.
    pub source: Option<TrackSource>,
    /// Optional track name.
    pub name: Option<String>,
    /// Publish muted.
    pub muted: bool,
    /// Declare an RTX stream (video only).
    pub rtx: bool,
}

impl PublishOptions {
    /// Opus from the microphone.
    pub fn audio() -> Self {
        Self {
            kind: MediaKind::Audio,
            mime_type: "audio/opus".into(),
            source: Some(TrackSource::Microphone),
            name: None,
            muted: false,
            rtx: false,
        }
    }

    /// Video with `mime_type` from the camera, with RTX.
    pub fn video(mime_type: &str) -> Self {
        Self {
            kind: MediaKind::Video,
            mime_type: mime_type.to_owned(),
            source: Some(TrackSource::Camera),
            name: None,
            muted: false,
            rtx: true,
        }
    }

    /// With `source`.
    pub fn with_source(mut self, source: TrackSource) -> Self {
        self.source = Some(source);
        self
    }

    /// With a track name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Published muted or not.
    pub fn with_muted(mut self, muted: bool) -> Self {
        self.muted = muted;
        self
    }

    /// With or without RTX.
    pub fn with_rtx(mut self, rtx: bool) -> Self {
        self.rtx = rtx;
        self
    }
}

/// Settings for [`Client`]; [`ClientBuilder::connect`] opens it.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    request_timeout: Duration,
    connect_timeout: Duration,
    event_capacity: usize,
    bind_ip: Option<IpAddr>,
    reconnect: Option<ReconnectPolicy>,
    send_capabilities: Option<RtpCapabilities>,
    receive_bitrate_cap: Option<u64>,
    ice_protocol: IceProtocol,
    restart_ice: bool,
    stall_after: Option<Duration>,
}

/// How a client reconnects ([`ClientBuilder::reconnect`]), as the
/// JavaScript client does. After a plain socket loss it first tries, for up
/// to 15 s (the server's default `RESUME_GRACE`), to resume its session
/// (`join` with `resume`: same sid, transports, producers and consumers,
/// missed messages replayed; [`ClientEvent::Resumed`]; attempts at most
/// 2 s apart, the last 0.5 s before the window closes); if the server
/// refuses, or after a `disconnected`, it rejoins in full: after its connection drops, or the server says
/// `migration` (the room moved to another node) or `server-shutdown`, it
/// connects again to the same URL with backoff, joins the same room,
/// creates new transports, republishes its tracks and renews its
/// subscriptions. `client-leave`, `duplicate-identity` and `room-closed`
/// end the client for good, as do `leave` and `close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay before the second attempt, doubled after each failure (the
    /// first attempt after a `migration` is immediate). Default 250 ms.
    pub min_delay: Duration,
    /// Longest delay between attempts. Default 5 s.
    pub max_delay: Duration,
    /// Give up after this long (then [`ClientEvent::Closed`]). Default 60 s.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
        }
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 4096,
            bind_ip: None,
            receive_bitrate_cap: None,
            reconnect: Some(ReconnectPolicy::default()),
            send_capabilities: None,
            ice_protocol: IceProtocol::Udp,
            restart_ice: true,
            stall_after: Some(crate::peer::DEFAULT_STALL_AFTER),
        }
    }
}

impl ClientBuilder {
    /// How long a request waits for its reply (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long the WebSocket handshake, and a new transport's ICE and DTLS,
    /// may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Capacity of the event channel (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Local IP for media sockets; by default the IP the OS routes to the
    /// server's candidate from (127.0.0.1 for a loopback server). Its
    /// family chooses among the server's candidates: an IPv6 `ip` uses the
    /// IPv6 candidates of a dual-stack server.
    pub fn bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = Some(ip);
        self
    }

    /// Emulates a downlink of `bits_per_second` on receive transports over
    /// UDP (a TCP stream is not policed: its losses would be retransmitted): a
    /// datagram past it (with a 100 ms burst) is dropped before it reaches
    /// the transport, as a policed access link would drop it. For load
    /// tests of the server's bandwidth allocation.
    pub fn receive_bitrate_cap(mut self, bits_per_second: u64) -> Self {
        self.receive_bitrate_cap = Some(bits_per_second.max(1));
        self
    }

    /// Reconnects by itself with `policy` when the connection drops
    /// unexpectedly or the server says `disconnected` with `migration` or
    /// `server-shutdown` (on by default, with [`ReconnectPolicy::default`]).
    /// Reconnections show as [`ClientEvent::Reconnecting`],
    /// [`ClientEvent::Reconnected`], [`ClientEvent::Republished`] and
    /// [`ClientEvent::Resubscribed`]. While reconnecting, requests wait (up
    /// to the request timeout) and RTP sent on a [`LocalTrackHandle`] is
    /// dropped; the handle sends on the republished track afterwards.
    /// SCTP data channels are not reopened.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Sends with these payload types and header extension ids instead of
    /// the router's, as a browser sends with its own: each `publish`
    /// carries them and the server learns them from it. The codecs must
    /// still match the router's (by MIME type and parameters). Default: the
    /// router's capabilities from `joined`.
    pub fn send_capabilities(mut self, caps: RtpCapabilities) -> Self {
        self.send_capabilities = Some(caps);
        self
    }

    /// Which of the server's ICE candidates the media transports use:
    /// UDP (the default), or only the passive TCP one (ICE-TCP with RFC
    /// 4571 framing), as a client behind a firewall that drops UDP must.
    pub fn ice_protocol(mut self, proto: IceProtocol) -> Self {
        self.ice_protocol = proto;
        self
    }

    /// Whether a transport whose connection is lost (ICE disconnected)
    /// asks the server for an ICE restart (`restart-ice`) and restarts with
    /// the new parameters, as the JavaScript client does with
    /// mediasoup-client's `restartIce` (on by default). Tracks, consumers
    /// and ids stay.
    pub fn restart_ice_on_loss(mut self, on: bool) -> Self {
        self.restart_ice = on;
        self
    }

    /// How long a connected transport may receive nothing, while a binding
    /// request it sent went unanswered for a second, before it counts as
    /// lost ([`ClientEvent::TransportDisconnected`], then an ICE restart
    /// with [`restart_ice_on_loss`](Self::restart_ice_on_loss)), as the
    /// JavaScript client's `stallRestartMs`; default 2 s, `None` waits for
    /// str0m's ICE agent to give the pair up (about 15 s).
    /// [`PeerTransport::set_stall_after`](crate::peer::PeerTransport::set_stall_after).
    pub fn stall_after(mut self, after: Option<Duration>) -> Self {
        self.stall_after = after;
        self
    }

    /// Never reconnects: the client ends with [`ClientEvent::Closed`] when
    /// its connection drops.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect = None;
        self
    }

    /// Connects to `url` (`ws://host:port/`) with the access `token`
    /// (appended as `?token=`; pass `""` when `url` already carries it).
    pub async fn connect(self, url: &str, token: &str) -> Result<Client, ClientError> {
        let full = ws_url(url, token);
        let full_url = full.clone();
        let (ws, _) =
            tokio::time::timeout(self.connect_timeout, tokio_tungstenite::connect_async(full))
                .await
                .map_err(|_| {
                    ClientError::Timeout(format!("WebSocket connect to {url} timed out"))
                })??;
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let events_weak = events_tx.downgrade();
        let sink = EventSink {
            tx: events_tx,
            dropped: dropped.clone(),
        };
        let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_CAPACITY);
        let cancel = CancellationToken::new();
        // The tasks hold the only strong senders, so the event channel ends
        // when the signaling task and every transport task have ended.
        let registry = Registry::default();
        let inner = Arc::new(Inner {
            signal: signal_tx,
            next_request_id: Arc::new(AtomicU64::new(1)),
            ice_protocol: self.ice_protocol,
            restart_ice: self.restart_ice,
            stall_after: self.stall_after,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            bind_ip: self.bind_ip,
            receive_bitrate_cap: self.receive_bitrate_cap,
            send_capabilities: self.send_capabilities,
            events_tx: events_weak,
            dropped,
            session_cancel: StdMutex::new(cancel.child_token()),
            cancel: cancel.clone(),
            send_transport: Mutex::new(None),
            recv_transport: Mutex::new(None),
            registry: registry.clone(),
            caps: StdMutex::new(None),
            room: StdMutex::new(None),
            leaving: AtomicBool::new(false),
            reconnecting: Arc::new(AtomicBool::new(false)),
            generation: AtomicU64::new(0),
            resume: StdMutex::new(ResumeState::default()),
            session_resume: StdMutex::new(None),
            ice_servers: Arc::new(StdMutex::new(Vec::new())),
            last_seq: AtomicU64::new(0),
            offline: AtomicBool::new(false),
            base_url: strip_token(url),
            token: StdMutex::new(if token.is_empty() {
                token_in(url).unwrap_or_default()
            } else {
                token.to_owned()
            }),
        });
        let reconnect = self.reconnect.map(|policy| Reconnect {
            url: full_url,
            policy,
            connect_timeout: self.connect_timeout,
            inner: Arc::downgrade(&inner),
        });
        tokio::spawn(signaling_task(
            ws, signal_rx, sink, cancel, registry, reconnect,
        ));
        Ok(Client {
            inner,
            events: Some(events_rx),
            joined: None,
        })
    }
}

/// `url` without `token` / `access_token` query parameters.
fn strip_token(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("");
            key != "token" && key != "access_token"
        })
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The `token` / `access_token` query parameter of `url`, if any (as given:
/// percent-encoded tokens are not expected, JWTs need no encoding).
fn token_in(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == "token" || k == "access_token").then(|| v.to_owned())
    })
}

fn unexpected(wanted: &str, got: &ServerMessage) -> ClientError {
    ClientError::Protocol(format!("expected `{wanted}`, got `{}`", got.type_name()))
}

/// A PulseWave client: one WebSocket, at most one send and one receive
/// transport. See the [module documentation](self).
pub struct Client {
    inner: Arc<Inner>,
    events: Option<mpsc::Receiver<ClientEvent>>,
    joined: Option<Joined>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "joined",
                &self.joined.as_ref().map(|j| &j.participant.identity),
            )
            .field("closed", &self.inner.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Client {
    /// Connects with default settings; see [`ClientBuilder::connect`].
    pub async fn connect(url: &str, token: &str) -> Result<Client, ClientError> {
        ClientBuilder::default().connect(url, token).await
    }

    /// Settings for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    // ------------------------------------------------------------------
    // Signaling

    /// Sends `msg` with a fresh `requestId` and waits for the reply with the
    /// same `requestId`. An `error` reply becomes [`ClientError::Server`].
    pub async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        self.inner.request(msg).await
    }

    /// Sends `msg` without a `requestId` and without waiting for anything.
    pub async fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .signal
            .send(SignalCommand::Send {
                text: encode_client(&msg, None),
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Takes the event receiver (once; `None` afterwards). Until it is
    /// taken, [`next_event`](Self::next_event) reads from it.
    pub fn events(&mut self) -> Option<mpsc::Receiver<ClientEvent>> {
        self.events.take()
    }

    /// The next event; `None` when the client is closed and every event was
    /// read, or when the receiver was taken with [`events`](Self::events).
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        let event = self.events.as_mut()?.recv().await;
        if let Some(ClientEvent::Reconnected { joined }) = &event {
            self.joined = Some((**joined).clone());
        }
        event
    }

    /// Waits up to `timeout` for an event that `f` maps to `Some`, dropping
    /// the events before it.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(ClientEvent) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next_event()).await;
            match next {
                Err(_) => {
                    return Err(ClientError::Timeout(format!(
                        "no matching event within {timeout:?}"
                    )));
                }
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some(e)) => {
                    if let Some(t) = f(e) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// RTP packets dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Whether the signaling connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Joins `room` (which must be the token's room).
    pub async fn join(&mut self, room: &str) -> Result<Joined, ClientError> {
        let reply = self
            .request(ClientMessage::Join {
                room: room.into(),
                resume: None,
            })
            .await?;
        let ServerMessage::Joined {
            room,
            participant,
            rtp_capabilities,
            ice_servers,
            resume_token,
        } = reply
        else {
            return Err(unexpected("joined", &reply));
        };
        let joined = Joined {
            room,
            participant,
            rtp_capabilities,
            ice_servers,
            resume_token,
        };
        *lock(&self.inner.room) = Some(joined.room.name.clone());
        self.inner.rejoined(&joined);
        self.joined = Some(joined.clone());
        Ok(joined)
    }

    /// The access token reconnections use: the one given to
    /// [`ClientBuilder::connect`], or the latest the server sent in a
    /// `token-refresh` (same grants, later expiry), so that a long call can
    /// reconnect after its first token expired.
    pub fn token(&self) -> String {
        lock(&self.inner.token).clone()
    }

    /// The `joined` reply, once joined; after a reconnection, the last one
    /// read as [`ClientEvent::Reconnected`] through
    /// [`next_event`](Self::next_event).
    pub fn joined(&self) -> Option<&Joined> {
        self.joined.as_ref()
    }

    /// Leaves the room: the server answers `left` and closes the socket,
    /// which stops the transports. Events can still be read until
    /// [`ClientEvent::Closed`].
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.inner.leaving.store(true, Ordering::Relaxed);
        match self.request(ClientMessage::Leave).await? {
            ServerMessage::Left => Ok(()),
            other => Err(unexpected("left", &other)),
        }
    }

    /// For tests: drops the WebSocket as a network loss would (no close
    /// frame, no `leave`), keeping the transports. With
    /// [reconnection](ClientBuilder::reconnect) on, the client then resumes
    /// its session ([`ClientEvent::Resumed`]) or, if the server refuses,
    /// rejoins ([`ClientEvent::Reconnected`]).
    pub async fn simulate_connection_drop(&self) {
        let _ = self.inner.signal.send(SignalCommand::Drop).await;
    }

    /// For tests: while `offline`, every reconnection attempt fails as if
    /// the network were down (the transports are untouched). With
    /// [`simulate_connection_drop`](Self::simulate_connection_drop) this
    /// holds the client away from the server for as long as a test needs.
    pub fn simulate_offline(&self, offline: bool) {
        self.inner.offline.store(offline, Ordering::Relaxed);
    }

    /// Closes the WebSocket (without `leave`) and stops the transports.
    pub async fn close(&self) {
        self.inner.leaving.store(true, Ordering::Relaxed);
        let _ = self.inner.signal.send(SignalCommand::Close).await;
        self.inner.cancel.cancel();
    }

    /// `ping`; returns the server's timestamp (unix milliseconds).
    pub async fn ping(&self) -> Result<u64, ClientError> {
        match self.request(ClientMessage::Ping).await? {
            ServerMessage::Pong { timestamp } => Ok(timestamp),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// Sends a data message through the signaling server to everyone else
    /// and waits for `data-sent`.
    pub async fn publish_data(&self, kind: DataKind, data: Value) -> Result<(), ClientError> {
        self.publish_data_to(kind, data, Vec::new(), None).await
    }

    /// Sends a data message to some identities only (all others when
    /// empty), with an optional topic.
    pub async fn publish_data_to(
        &self,
        kind: DataKind,
        data: Value,
        destination_identities: Vec<String>,
        topic: Option<String>,
    ) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::PublishData {
                kind,
                data,
                destination_identities,
                topic,
            })
            .await?
        {
            ServerMessage::DataSent => Ok(()),
            other => Err(unexpected("data-sent", &other)),
        }
    }

    /// Mutes one of our tracks.
    pub async fn mute(&self, producer_id: &ProducerId) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::Mute {
                producer_id: producer_id.clone(),
            })
            .await?
        {
            ServerMessage::TrackMuted { .. } => {
                self.inner.set_muted(producer_id, true);
                Ok(())
            }
            other => Err(unexpected("track-muted", &other)),
        }
    }

    /// Unmutes one of our tracks.
    pub async fn unmute(&self, producer_id: &ProducerId) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::Unmute {
                producer_id: producer_id.clone(),
            })
            .await?
        {
            ServerMessage::TrackUnmuted { .. } => {
                self.inner.set_muted(producer_id, false);
                Ok(())
            }
            other => Err(unexpected("track-unmuted", &other)),
        }
    }

    /// Caps the layers one of our subscriptions receives
    /// (`set-preferred-layers`): the best spatial layer the publisher sends
    /// up to `spatial_layer` (0 = the lowest), and temporal layers up to
    /// `temporal_layer`; `None`: the best, the default.
    pub async fn set_preferred_layers(
        &self,
        consumer_id: &ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
    ) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::SetPreferredLayers {
                consumer_id: consumer_id.clone(),
                spatial_layer,
                temporal_layer,
            })
            .await?
        {
            ServerMessage::PreferredLayersSet { .. } => Ok(()),
            other => Err(unexpected("preferred-layers-set", &other)),
        }
    }

    /// Sets one of our subscriptions' share of the bandwidth when it is
    /// short (`set-consumer-priority`, 1 to 255, higher first); `None`
    /// restores the default for its source.
    pub async fn set_consumer_priority(
        &self,
        consumer_id: &ConsumerId,
        priority: Option<u8>,
    ) -> Result<u8, ClientError> {
        match self
            .request(ClientMessage::SetConsumerPriority {
                consumer_id: consumer_id.clone(),
                priority,
            })
            .await?
        {
            ServerMessage::ConsumerPrioritySet { priority, .. } => Ok(priority),
            other => Err(unexpected("consumer-priority-set", &other)),
        }
    }

    /// Tells the server how we show one of our video subscriptions
    /// (`update-track-settings`, LiveKit's adaptive stream hints): its
    /// rendered size in pixels (0: unknown), or `disabled` for none at all.
    pub async fn update_track_settings(
        &self,
        consumer_id: &ConsumerId,
        disabled: bool,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::UpdateTrackSettings {
                consumer_id: consumer_id.clone(),
                disabled,
                width,
                height,
            })
            .await?
        {
            ServerMessage::TrackSettingsUpdated { .. } => Ok(()),
            other => Err(unexpected("track-settings-updated", &other)),
        }
    }

    /// The bandwidth estimate and layer allocation of our receive
    /// transports (`get-stats`).
    pub async fn stats(&self) -> Result<Vec<pulsewave_protocol::TransportStats>, ClientError> {
        match self.request(ClientMessage::GetStats).await? {
            ServerMessage::Stats { transports } => Ok(transports),
            other => Err(unexpected("stats", &other)),
        }
    }

    // ------------------------------------------------------------------
    // Transports

    /// Restarts ICE on the transport of `direction` now (`restart-ice`,
    /// then the transport restarts with the server's new parameters), as
    /// after a network change. The client does this by itself when a
    /// transport loses its connection ([`ClientBuilder::restart_ice_on_loss`]).
    /// Tracks, consumers and ids stay; returns the new parameters.
    pub async fn restart_ice(
        &self,
        direction: TransportDirection,
    ) -> Result<pulsewave_protocol::transport::IceParameters, ClientError> {
        let slot = match direction {
            TransportDirection::Send => &self.inner.send_transport,
            TransportDirection::Recv => &self.inner.recv_transport,
        };
        let handle =
            slot.lock().await.clone().ok_or_else(|| {
                ClientError::InvalidParameters(format!("no {direction:?} transport"))
            })?;
        restart_transport(&handle, &self.inner.requester()).await
    }

    /// The latest STUN/TURN servers the server handed out (in `joined`,
    /// `transport-created`, and refreshed by every `ice-restarted`, as the
    /// embedded TURN server's credentials are short-lived). This client
    /// gathers host candidates only and does not relay through them; an
    /// embedder that does reads them here.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        lock(&self.inner.ice_servers).clone()
    }

    /// The send transport's id, if it exists.
    pub async fn send_transport_id(&self) -> Option<TransportId> {
        self.inner
            .send_transport
            .lock()
            .await
            .as_ref()
            .map(|h| h.id.clone())
    }

    /// The receive transport's id, if it exists.
    pub async fn recv_transport_id(&self) -> Option<TransportId> {
        self.inner
            .recv_transport
            .lock()
            .await
            .as_ref()
            .map(|h| h.id.clone())
    }

    // ------------------------------------------------------------------
    // Publishing

    /// Publishes a track: creates the send transport if needed, declares
    /// the track, sends `publish` and returns a handle to send RTP with.
    /// With [reconnection](ClientBuilder::reconnect) on, the track is
    /// published again after a reconnection and the handle follows it.
    pub async fn publish(&self, options: PublishOptions) -> Result<LocalTrackHandle, ClientError> {
        let p = self.inner.publish_track(&options).await?;
        let link = Arc::new(StdMutex::new(TrackLink {
            commands: p.transport.commands.clone(),
            mid: p.local.mid.clone(),
            producer_id: p.producer_id.clone(),
        }));
        lock(&self.inner.resume).publications.push(Publication {
            options,
            link: link.clone(),
        });
        Ok(LocalTrackHandle {
            producer_id: p.producer_id,
            track: p.track,
            next_seq: u64::from(rand::random::<u16>() & 0x7fff),
            local: p.local,
            link,
            reconnecting: self.inner.reconnecting.clone(),
        })
    }

    /// Publishes opus audio from the "microphone".
    pub async fn publish_audio(&self) -> Result<LocalTrackHandle, ClientError> {
        self.publish(PublishOptions::audio()).await
    }

    /// Publishes camera video with `mime_type` (`video/VP8`, ...) and RTX.
    pub async fn publish_video(&self, mime_type: &str) -> Result<LocalTrackHandle, ClientError> {
        self.publish(PublishOptions::video(mime_type)).await
    }

    /// Stops publishing a track (`unpublish`, then the track is removed
    /// from the send transport).
    pub async fn unpublish(&self, producer_id: &ProducerId) -> Result<(), ClientError> {
        let reply = self
            .request(ClientMessage::Unpublish {
                producer_id: producer_id.clone(),
            })
            .await?;
        if !matches!(reply, ServerMessage::TrackUnpublished { .. }) {
            return Err(unexpected("track-unpublished", &reply));
        }
        lock(&self.inner.resume)
            .publications
            .retain(|p| lock(&p.link).producer_id != *producer_id);
        if let Some(t) = self.inner.send_transport.lock().await.clone() {
            let _ = t
                .send(Command::RemoveProducer {
                    producer_id: producer_id.clone(),
                })
                .await;
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Subscribing

    /// Subscribes to a producer: creates the receive transport if needed,
    /// sends `subscribe` with the router's capabilities as ours, prepares
    /// the transport for the consumer and resumes it. Packets arrive as
    /// [`ClientEvent::Rtp`]. With [reconnection](ClientBuilder::reconnect)
    /// on, a subscription ended by a reconnection is renewed on a track of
    /// the same publisher and kind ([`ClientEvent::Resubscribed`]).
    pub async fn subscribe(&self, producer_id: &ProducerId) -> Result<RemoteTrack, ClientError> {
        let track = self.inner.subscribe_track(producer_id).await?;
        self.inner.record_subscription(&track);
        Ok(track)
    }

    /// Ends a subscription (`unsubscribe`, then the consumer is removed from
    /// the receive transport).
    pub async fn unsubscribe(&self, consumer_id: &ConsumerId) -> Result<(), ClientError> {
        let reply = self
            .request(ClientMessage::Unsubscribe {
                consumer_id: consumer_id.clone(),
            })
            .await?;
        if !matches!(reply, ServerMessage::TrackUnsubscribed { .. }) {
            return Err(unexpected("track-unsubscribed", &reply));
        }
        self.inner.forget_subscription(consumer_id);
        if let Some(t) = self.inner.recv_transport.lock().await.clone() {
            let _ = t
                .send(Command::RemoveConsumer {
                    consumer_id: consumer_id.clone(),
                })
                .await;
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // SCTP data channels

    /// Opens a data channel on the send transport and announces it with
    /// `publish-data-channel`. Reliable channels are ordered with
    /// retransmissions; lossy ones unordered without.
    pub async fn publish_data_channel(
        &self,
        label: &str,
        kind: DataKind,
    ) -> Result<DataChannelHandle, ClientError> {
        let t = self.inner.transport(TransportDirection::Send).await?;
        let stream_id = t.next_stream_id();
        let (ordered, max_retransmits) = match kind {
            DataKind::Reliable => (true, None),
            DataKind::Lossy => (false, Some(0)),
        };
        let label_owned = label.to_owned();
        t.call(|reply| Command::OpenChannel {
            stream_id,
            label: label_owned,
            ordered,
            max_retransmits,
            reply,
        })
        .await?;
        let reply = self
            .request(ClientMessage::PublishDataChannel {
                transport_id: Some(t.id.clone()),
                sctp_stream_parameters: SctpStreamParameters {
                    stream_id,
                    ordered: Some(ordered),
                    max_packet_life_time: None,
                    max_retransmits,
                },
                label: label.to_owned(),
                protocol: String::new(),
            })
            .await;
        match reply {
            Ok(ServerMessage::DataChannelPublished {
                data_producer_id, ..
            }) => Ok(DataChannelHandle {
                data_producer_id,
                stream_id,
                label: label.to_owned(),
                transport: t,
            }),
            other => {
                let _ = t.send(Command::CloseChannel { stream_id }).await;
                Err(match other {
                    Ok(m) => unexpected("data-channel-published", &m),
                    Err(e) => e,
                })
            }
        }
    }

    /// Closes a data channel published with
    /// [`publish_data_channel`](Self::publish_data_channel).
    pub async fn unpublish_data_channel(
        &self,
        channel: &DataChannelHandle,
    ) -> Result<(), ClientError> {
        let reply = self
            .request(ClientMessage::UnpublishDataChannel {
                data_producer_id: channel.data_producer_id.clone(),
            })
            .await?;
        let _ = channel
            .transport
            .send(Command::CloseChannel {
                stream_id: channel.stream_id,
            })
            .await;
        match reply {
            ServerMessage::DataTrackUnpublished { .. } => Ok(()),
            other => Err(unexpected("data-track-unpublished", &other)),
        }
    }

    /// Receives another participant's data channel on the receive
    /// transport. Messages arrive as [`ClientEvent::DataChannelMessage`]
    /// with the returned stream id.
    pub async fn subscribe_data(
        &self,
        data_producer_id: &DataProducerId,
    ) -> Result<DataSubscription, ClientError> {
        let t = self.inner.transport(TransportDirection::Recv).await?;
        let reply = self
            .request(ClientMessage::SubscribeData {
                data_producer_id: data_producer_id.clone(),
                transport_id: Some(t.id.clone()),
            })
            .await?;
        let ServerMessage::DataSubscribed {
            data_consumer_id,
            data_producer_id,
            sctp_stream_parameters,
            label,
            participant_identity,
            ..
        } = reply
        else {
            return Err(unexpected("data-subscribed", &reply));
        };
        let params = sctp_stream_parameters;
        let label_owned = label.clone();
        t.call(|reply| Command::AcceptChannel {
            params,
            label: label_owned,
            reply,
        })
        .await?;
        Ok(DataSubscription {
            data_consumer_id,
            data_producer_id,
            stream_id: params.stream_id,
            label,
            participant_identity,
            transport: t,
        })
    }

    /// Ends a data subscription.
    pub async fn unsubscribe_data(&self, sub: &DataSubscription) -> Result<(), ClientError> {
        let reply = self
            .request(ClientMessage::UnsubscribeData {
                data_consumer_id: sub.data_consumer_id.clone(),
            })
            .await?;
        let _ = sub
            .transport
            .send(Command::CloseChannel {
                stream_id: sub.stream_id,
            })
            .await;
        match reply {
            ServerMessage::DataUnsubscribed { .. } => Ok(()),
            other => Err(unexpected("data-unsubscribed", &other)),
        }
    }
}

/// What a publish made: the transport, the local track, the producer.
struct Published {
    transport: TransportHandle,
    local: LocalTrack,
    producer_id: ProducerId,
    track: TrackInfo,
}

/// A track published through [`Client::publish`], republished after a
/// reconnection.
struct Publication {
    options: PublishOptions,
    link: Arc<StdMutex<TrackLink>>,
}

/// What a reconnection restores.
#[derive(Default)]
struct ResumeState {
    publications: Vec<Publication>,
    /// Live subscriptions: consumer, publisher identity, kind.
    subscriptions: Vec<(ConsumerId, String, MediaKind)>,
    /// Subscriptions a reconnection ended, waiting for a track of the same
    /// publisher and kind.
    pending: Vec<(String, MediaKind)>,
}

pub(crate) fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state a [`Client`] shares with its signaling task, so that a
/// reconnection can create transports, republish and resubscribe by
/// itself.
pub(crate) struct Inner {
    signal: mpsc::Sender<SignalCommand>,
    pub(crate) next_request_id: Arc<AtomicU64>,
    /// UDP or TCP candidates for the media transports.
    ice_protocol: IceProtocol,
    /// Restart ICE when a transport loses its connection.
    restart_ice: bool,
    /// See [`ClientBuilder::stall_after`].
    stall_after: Option<Duration>,
    pub(crate) request_timeout: Duration,
    connect_timeout: Duration,
    bind_ip: Option<IpAddr>,
    /// Emulated downlink of receive transports, bits per second.
    receive_bitrate_cap: Option<u64>,
    /// Payload types and extension ids to send with (else the router's).
    send_capabilities: Option<RtpCapabilities>,
    events_tx: mpsc::WeakSender<ClientEvent>,
    dropped: Arc<AtomicU64>,
    /// Cancelled when the client is closed for good.
    cancel: CancellationToken,
    /// Cancelled when the current signaling session ends (reconnection):
    /// parent of the transport tasks.
    session_cancel: StdMutex<CancellationToken>,
    send_transport: Mutex<Option<TransportHandle>>,
    recv_transport: Mutex<Option<TransportHandle>>,
    registry: Registry,
    /// The router's capabilities, from the last `joined`.
    caps: StdMutex<Option<RtpCapabilities>>,
    /// The room joined, for rejoining.
    pub(crate) room: StdMutex<Option<String>>,
    /// `leave` or `close` was called: never reconnect.
    pub(crate) leaving: AtomicBool,
    /// True from the loss of a connection until the tracks are republished.
    reconnecting: Arc<AtomicBool>,
    /// Incremented by every reconnection.
    generation: AtomicU64,
    resume: StdMutex<ResumeState>,
    /// The participant sid and resume token of the current session.
    session_resume: StdMutex<Option<(ParticipantSid, String)>>,
    /// The latest STUN/TURN servers the server gave (`joined`,
    /// `transport-created`, `ice-restarted`): the embedded TURN server's
    /// credentials are short-lived, so each ICE restart brings fresh ones.
    ice_servers: Arc<StdMutex<Vec<IceServer>>>,
    /// The highest `seq` received from the room in this session.
    last_seq: AtomicU64,
    /// [`Client::simulate_offline`]: reconnection attempts fail.
    pub(crate) offline: AtomicBool,
    /// The server URL without a token, and the token to connect with: the
    /// one given, then the latest `token-refresh`.
    pub(crate) base_url: String,
    pub(crate) token: StdMutex<String>,
}

impl Inner {
    /// Sends `msg` with a fresh `requestId` and waits for the reply with the
    /// same `requestId`. An `error` reply becomes [`ClientError::Server`].
    pub(crate) async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        self.requester().request(msg).await
    }

    /// What a task needs to send requests on its own.
    fn requester(&self) -> Requester {
        Requester {
            signal: self.signal.clone(),
            ids: self.next_request_id.clone(),
            timeout: self.request_timeout,
            ice_servers: self.ice_servers.clone(),
        }
    }

    fn router_caps(&self) -> Result<RtpCapabilities, ClientError> {
        lock(&self.caps).clone().ok_or(ClientError::NotJoined)
    }

    /// The transport for `direction`, created and connected on first use:
    /// `create-transport`, a UDP socket, `connect-transport`, then ICE and
    /// DTLS (waited for up to the connect timeout).
    async fn transport(
        &self,
        direction: TransportDirection,
    ) -> Result<TransportHandle, ClientError> {
        let caps = match (direction, &self.send_capabilities) {
            (TransportDirection::Send, Some(own)) => own.clone(),
            _ => self.router_caps()?,
        };
        let slot = match direction {
            TransportDirection::Send => &self.send_transport,
            TransportDirection::Recv => &self.recv_transport,
        };
        let handle = {
            let mut guard = slot.lock().await;
            match guard.as_ref().filter(|h| !h.is_closed()) {
                Some(h) => h.clone(),
                None => {
                    let h = self.create_transport(direction, &caps).await?;
                    *guard = Some(h.clone());
                    h
                }
            }
        };
        handle.wait_connected(self.connect_timeout).await?;
        Ok(handle)
    }

    async fn create_transport(
        &self,
        direction: TransportDirection,
        caps: &RtpCapabilities,
    ) -> Result<TransportHandle, ClientError> {
        let reply = self
            .request(ClientMessage::CreateTransport {
                direction,
                rtp_capabilities: None,
                sctp_capabilities: Some(SctpCapabilities {
                    num_streams: NumSctpStreams {
                        os: 1024,
                        mis: 1024,
                    },
                }),
            })
            .await?;
        let ServerMessage::TransportCreated { transport, .. } = reply else {
            return Err(unexpected("transport-created", &reply));
        };
        if !transport.ice_servers.is_empty() {
            *lock(&self.ice_servers) = transport.ice_servers.clone();
        }
        let proto = self.ice_protocol;
        // The family of `bind_ip` picks the server's candidate (its IPv6
        // one for an IPv6 `bind_ip` in dual stack).
        let family = self.bind_ip.map(|ip| SocketAddr::new(ip, 0));
        let server = server_candidate(&transport, proto, family).ok_or_else(|| {
            ClientError::InvalidParameters(format!("transport has no usable {proto:?} candidate"))
        })?;
        let ip = match self.bind_ip {
            Some(ip) => ip,
            None => driver::local_ip_for(server)?,
        };
        let (link, local) = match proto {
            IceProtocol::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
                let local = socket.local_addr()?;
                (driver::Link::Udp(socket), local)
            }
            IceProtocol::Tcp => driver::connect_tcp(server, ip, self.connect_timeout).await?,
        };
        let mut peer = PeerTransport::with_protocol(
            Instant::now(),
            direction,
            proto,
            local,
            &transport,
            caps,
        )?;
        peer.set_stall_after(self.stall_after);
        let reply = self
            .request(ClientMessage::ConnectTransport {
                transport_id: transport.id.clone(),
                dtls_parameters: peer.dtls_parameters(),
            })
            .await?;
        if !matches!(reply, ServerMessage::TransportConnected { .. }) {
            return Err(unexpected("transport-connected", &reply));
        }
        tracing::debug!(transport = %transport.id, %local, %server, ?direction, "transport created");
        let sink = EventSink {
            tx: self.events_tx.upgrade().ok_or(ClientError::Closed)?,
            dropped: self.dropped.clone(),
        };
        let cancel = lock(&self.session_cancel).child_token();
        let cap = match direction {
            TransportDirection::Recv => self.receive_bitrate_cap,
            TransportDirection::Send => None,
        };
        let handle = driver::spawn(peer, link, sink, cancel.clone(), cap);
        if self.restart_ice {
            tokio::spawn(restart_on_loss(
                handle.clone(),
                self.requester(),
                cancel.clone(),
            ));
        }
        self.registry.add(RegisteredTransport {
            id: handle.id.clone(),
            cancel,
            commands: handle.commands.clone(),
        });
        Ok(handle)
    }

    /// Publishes a track on the send transport (created if needed):
    /// declares it, sends `publish`, binds the producer.
    async fn publish_track(&self, options: &PublishOptions) -> Result<Published, ClientError> {
        let t = self.transport(TransportDirection::Send).await?;
        let kind = options.kind;
        let mime_type = options.mime_type.clone();
        let rtx = options.rtx;
        let local = t
            .call(|reply| Command::AddTrack {
                kind,
                mime_type,
                rtx,
                reply,
            })
            .await?;
        let reply = self
            .request(ClientMessage::Publish {
                transport_id: Some(t.id.clone()),
                kind: options.kind,
                source: options.source,
                rtp_parameters: local.rtp_parameters.clone(),
                name: options.name.clone(),
                muted: options.muted,
            })
            .await;
        let (producer_id, track) = match reply {
            Ok(ServerMessage::Published { producer_id, track }) => (producer_id, track),
            other => {
                let _ = t
                    .send(Command::RemoveTrack {
                        mid: local.mid.clone(),
                    })
                    .await;
                return Err(match other {
                    Ok(m) => unexpected("published", &m),
                    Err(e) => e,
                });
            }
        };
        t.send(Command::BindProducer {
            mid: local.mid.clone(),
            producer_id: producer_id.clone(),
        })
        .await?;
        Ok(Published {
            transport: t,
            local,
            producer_id,
            track,
        })
    }

    /// Subscribes on the receive transport (created if needed) and resumes
    /// the consumer.
    async fn subscribe_track(&self, producer_id: &ProducerId) -> Result<RemoteTrack, ClientError> {
        let caps = self.router_caps()?;
        let t = self.transport(TransportDirection::Recv).await?;
        let reply = self
            .request(ClientMessage::Subscribe {
                producer_id: producer_id.clone(),
                rtp_capabilities: caps,
                transport_id: Some(t.id.clone()),
            })
            .await?;
        let ServerMessage::TrackSubscribed {
            track_sid,
            consumer_id,
            producer_id,
            kind,
            rtp_parameters,
            participant_identity,
            paused,
        } = reply
        else {
            return Err(unexpected("track-subscribed", &reply));
        };
        let added = t
            .call(|reply| Command::AddConsumer {
                consumer_id: consumer_id.clone(),
                producer_id: producer_id.clone(),
                kind,
                rtp_parameters: Box::new(rtp_parameters.clone()),
                reply,
            })
            .await;
        if let Err(e) = added {
            let _ = self
                .request(ClientMessage::Unsubscribe {
                    consumer_id: consumer_id.clone(),
                })
                .await;
            return Err(e);
        }
        if paused {
            let reply = self
                .request(ClientMessage::ResumeConsumer {
                    consumer_id: consumer_id.clone(),
                })
                .await?;
            if !matches!(reply, ServerMessage::ConsumerResumed { .. }) {
                return Err(unexpected("consumer-resumed", &reply));
            }
        }
        let encoding = rtp_parameters.encodings.first();
        Ok(RemoteTrack {
            mid: rtp_parameters.mid.clone().unwrap_or_default(),
            ssrc: encoding.and_then(|e| e.ssrc).unwrap_or_default(),
            rtx_ssrc: encoding.and_then(|e| e.rtx).map(|r| r.ssrc),
            consumer_id,
            producer_id,
            track_sid,
            kind,
            participant_identity,
            rtp_parameters,
            transport: t,
        })
    }

    async fn emit(&self, event: ClientEvent) {
        if let Some(tx) = self.events_tx.upgrade() {
            let _ = tx.send(event).await;
        }
    }

    fn set_muted(&self, producer_id: &ProducerId, muted: bool) {
        for p in &mut lock(&self.resume).publications {
            if lock(&p.link).producer_id == *producer_id {
                p.options.muted = muted;
            }
        }
    }

    fn record_subscription(&self, track: &RemoteTrack) {
        lock(&self.resume).subscriptions.push((
            track.consumer_id.clone(),
            track.participant_identity.clone(),
            track.kind,
        ));
    }

    /// Forgets a subscription that ended (unsubscribed, or its producer
    /// went away).
    pub(crate) fn forget_subscription(&self, consumer_id: &ConsumerId) {
        lock(&self.resume)
            .subscriptions
            .retain(|(c, _, _)| c != consumer_id);
    }

    /// A connection was lost: stops its transports and turns the
    /// subscriptions into pending ones. Returns the new generation.
    pub(crate) async fn begin_reconnect(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.reconnecting.store(true, Ordering::Relaxed);
        {
            let mut session = lock(&self.session_cancel);
            session.cancel();
            *session = self.cancel.child_token();
        }
        // A publish or subscribe in progress may hold a slot; its transport
        // is cancelled above and counts as closed, so it is not reused
        // even if the slot cannot be cleared now.
        for slot in [&self.send_transport, &self.recv_transport] {
            if let Ok(mut guard) =
                tokio::time::timeout(Duration::from_millis(500), slot.lock()).await
            {
                *guard = None;
            }
        }
        let mut resume = lock(&self.resume);
        let subs = std::mem::take(&mut resume.subscriptions);
        resume
            .pending
            .extend(subs.into_iter().map(|(_, identity, kind)| (identity, kind)));
        generation
    }

    /// Joined again: the router's capabilities for the new transports, and
    /// the new session's resume credentials.
    pub(crate) fn rejoined(&self, joined: &Joined) {
        *lock(&self.caps) = Some(joined.rtp_capabilities.clone());
        *lock(&self.ice_servers) = joined.ice_servers.clone();
        *lock(&self.session_resume) = joined
            .resume_token
            .clone()
            .map(|token| (joined.participant.sid.clone(), token));
        self.last_seq.store(0, Ordering::Relaxed);
    }

    /// The credentials of a resume (`join.resume`), if the server gave any.
    pub(crate) fn resume_request(&self) -> Option<ResumeRequest> {
        lock(&self.session_resume)
            .clone()
            .map(|(participant_sid, token)| ResumeRequest {
                participant_sid,
                token,
                last_seq: self.last_seq.load(Ordering::Relaxed),
            })
    }

    /// A resume succeeded: the rotated token.
    pub(crate) fn resumed(&self, token: String) {
        if let Some((_, t)) = lock(&self.session_resume).as_mut() {
            *t = token;
        }
    }

    /// A resume was refused: only a full rejoin is left.
    pub(crate) fn forget_resume(&self) {
        *lock(&self.session_resume) = None;
    }

    /// A numbered room message arrived.
    pub(crate) fn saw_seq(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Takes one pending subscription for a track of `identity` and `kind`.
    fn take_pending(&self, identity: &str, kind: MediaKind) -> bool {
        let mut resume = lock(&self.resume);
        match resume
            .pending
            .iter()
            .position(|(i, k)| i == identity && *k == kind)
        {
            Some(idx) => {
                resume.pending.remove(idx);
                true
            }
            None => false,
        }
    }

    /// A track was published: renews a pending subscription it matches.
    pub(crate) fn on_track_published(self: &Arc<Self>, track: &TrackInfo) {
        if self.take_pending(&track.participant_identity, track.kind) {
            let this = self.clone();
            let producer_id = track.producer_id.clone();
            tokio::spawn(async move { this.resubscribe(producer_id).await });
        }
    }

    async fn resubscribe(&self, producer_id: ProducerId) {
        match self.subscribe_track(&producer_id).await {
            Ok(track) => {
                self.record_subscription(&track);
                self.emit(ClientEvent::Resubscribed {
                    producer_id: track.producer_id.clone(),
                    consumer_id: track.consumer_id.clone(),
                    participant_identity: track.participant_identity.clone(),
                })
                .await;
            }
            Err(e) => tracing::warn!(producer = %producer_id, error = %e, "resubscription failed"),
        }
    }

    /// After a rejoin: republishes every track (in publishing order) and
    /// renews the subscriptions to tracks already in the room.
    pub(crate) async fn resume(self: Arc<Self>, joined: Joined, generation: u64) {
        let publications: Vec<(PublishOptions, Arc<StdMutex<TrackLink>>)> = lock(&self.resume)
            .publications
            .iter()
            .map(|p| (p.options.clone(), p.link.clone()))
            .collect();
        for (options, link) in publications {
            if self.generation.load(Ordering::Relaxed) != generation {
                return;
            }
            match self.publish_track(&options).await {
                Ok(p) => {
                    let old_producer_id = {
                        let mut l = lock(&link);
                        l.commands = p.transport.commands.clone();
                        l.mid = p.local.mid.clone();
                        std::mem::replace(&mut l.producer_id, p.producer_id.clone())
                    };
                    self.emit(ClientEvent::Republished {
                        old_producer_id,
                        producer_id: p.producer_id,
                    })
                    .await;
                }
                Err(e) => tracing::warn!(error = %e, "republishing a track failed"),
            }
        }
        if self.generation.load(Ordering::Relaxed) == generation {
            self.reconnecting.store(false, Ordering::Relaxed);
        }
        for participant in &joined.room.participants {
            for t in &participant.tracks {
                if self.take_pending(&t.participant_identity, t.kind) {
                    self.resubscribe(t.producer_id.clone()).await;
                }
            }
        }
    }
}

/// Sends requests on the signaling connection from a task of its own.
#[derive(Clone)]
struct Requester {
    signal: mpsc::Sender<SignalCommand>,
    ids: Arc<AtomicU64>,
    timeout: Duration,
    /// [`Inner`]'s latest ICE servers, refreshed by `ice-restarted`.
    ice_servers: Arc<StdMutex<Vec<IceServer>>>,
}

impl Requester {
    /// Sends `msg` with a fresh `requestId` and waits for the reply with the
    /// same `requestId`. An `error` reply becomes [`ClientError::Server`].
    async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let text = encode_client(&msg, Some(&RequestId::Number(id)));
        let (reply, rx) = oneshot::channel();
        self.signal
            .send(SignalCommand::Request { id, text, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(ClientError::Timeout(format!(
                "no reply to `{}` within {:?}",
                msg.type_name(),
                self.timeout
            ))),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok(r)) => r,
        }
    }
}

/// One ICE restart of `handle`'s transport: `restart-ice`, a new TCP
/// connection for an ICE-TCP transport (the old one may be dead after a
/// network change), then the peer restarts with the server's parameters.
async fn restart_transport(
    handle: &TransportHandle,
    req: &Requester,
) -> Result<pulsewave_protocol::transport::IceParameters, ClientError> {
    let reply = req
        .request(ClientMessage::RestartIce {
            transport_id: handle.id.clone(),
        })
        .await?;
    let ServerMessage::IceRestarted {
        ice_parameters,
        ice_servers,
        ..
    } = reply
    else {
        return Err(unexpected("ice-restarted", &reply));
    };
    // Fresh TURN credentials (an older server sends none: keep ours).
    if !ice_servers.is_empty() {
        *lock(&req.ice_servers) = ice_servers;
    }
    let link = match handle.tcp {
        Some((server, ip)) => Some(driver::connect_tcp(server, ip, req.timeout).await?),
        None => None,
    };
    handle
        .call(|reply| Command::RestartIce {
            parameters: ice_parameters.clone(),
            link,
            reply,
        })
        .await?;
    Ok(ice_parameters)
}

/// Shortest time between two ICE restarts of one transport.
const RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// Restarts ICE on `handle`'s transport each time it loses its connection
/// (`restart-ice`, then the peer restarts with the new parameters), at
/// most every [`RESTART_INTERVAL`] while it stays down; ends with the
/// transport.
async fn restart_on_loss(handle: TransportHandle, req: Requester, cancel: CancellationToken) {
    let mut state = handle.state.clone();
    loop {
        let lost = tokio::select! {
            _ = cancel.cancelled() => return,
            s = state.wait_for(|s| matches!(s, LinkState::Disconnected | LinkState::Closed)) => {
                matches!(s.as_deref(), Ok(LinkState::Disconnected))
            }
        };
        if !lost {
            return;
        }
        tracing::debug!(transport = %handle.id, "connection lost: restarting ICE");
        if let Err(e) = restart_transport(&handle, &req).await {
            tracing::debug!(transport = %handle.id, error = %e, "ICE restart failed");
        }
        // Give the new checks time before another restart.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RESTART_INTERVAL) => {}
        }
        if *state.borrow() == LinkState::Closed {
            return;
        }
    }
}
