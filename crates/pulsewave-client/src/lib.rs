//! PulseWave's Rust client: what end-to-end tests, the load tester and the
//! examples use to talk to a PulseWave server the way a browser running
//! mediasoup-client does.
//!
//! Two layers:
//!
//! - [`PeerTransport`] (module [`peer`]): one WebRTC transport to the
//!   server, sans-IO (no clock, no socket), on str0m: full ICE agent in the
//!   controlling role against the ICE-lite server, DTLS and SCTP client, RTP
//!   mode, the router's payload types and header-extension ids. Time is
//!   passed in; datagrams, events and timeouts are polled out. The server's
//!   media tests drive it with a fake clock.
//! - [`Client`] (module [`client`]): the tokio client. One task owns the
//!   WebSocket and correlates requests and replies by `requestId`; one task
//!   per transport owns a `PeerTransport` and its UDP socket (or, with
//!   [`ClientBuilder::ice_protocol`]`(IceProtocol::Tcp)`, a TCP connection
//!   to the server's ICE-TCP candidate). Publishing and subscribing create
//!   the transports on first use. A transport that loses its connection
//!   restarts ICE by itself (`restart-ice`), keeping its tracks and ids.
//!
//! [`SyntheticSource`] (module [`synthetic`]) produces paced audio and
//! video payloads that carry a sequence number, a send time and a checkable
//! filler; [`parse_synthetic`] reads them back.
//!
//! Only `ws://` URLs are supported (no TLS).
//!
//! ```no_run
//! use pulsewave_client::{Client, ClientError, ClientEvent, parse_synthetic};
//! use pulsewave_protocol::ServerMessage;
//!
//! # async fn run(token_alice: &str, token_bob: &str) -> Result<(), ClientError> {
//! // Alice publishes VP8 video.
//! let mut alice = Client::connect("ws://127.0.0.1:3000", token_alice).await?;
//! alice.join("my-room").await?;
//! let mut track = alice.publish_video("video/VP8").await?;
//! let mut source = track.synthetic_source();
//! tokio::spawn(async move {
//!     loop {
//!         for packet in source.tick().await {
//!             if track.send_synthetic(&packet).await.is_err() {
//!                 return;
//!             }
//!         }
//!     }
//! });
//!
//! // Bob subscribes to every track published, and checks the payloads.
//! let mut bob = Client::connect("ws://127.0.0.1:3000", token_bob).await?;
//! let joined = bob.join("my-room").await?;
//! for participant in &joined.room.participants {
//!     for t in &participant.tracks {
//!         bob.subscribe(&t.producer_id).await?;
//!     }
//! }
//! while let Some(event) = bob.next_event().await {
//!     match event {
//!         ClientEvent::Signal(ServerMessage::TrackPublished { track }) => {
//!             bob.subscribe(&track.producer_id).await?;
//!         }
//!         ClientEvent::Rtp(packet) => {
//!             if let Some(info) = parse_synthetic(&packet.payload) {
//!                 assert!(info.intact);
//!                 println!("packet {} after {:?}", info.sequence,
//!                          info.latency(std::time::SystemTime::now()));
//!             }
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod caps;
pub mod client;
mod driver;
mod error;
mod handles;
pub mod peer;
mod signaling;
pub mod synthetic;

pub use client::{
    Client, ClientBuilder, ClientEvent, DataChannelHandle, DataSubscription, Joined,
    LocalTrackHandle, PublishOptions, ReceivedRtp, ReconnectPolicy, RemoteTrack,
};
pub use error::ClientError;
pub use peer::{
    IceProtocol, LocalLayer, LocalTrack, PeerEvent, PeerTransport, SYNTHETIC_AUDIO_LEVEL, Transmit,
    server_candidate,
};
pub use synthetic::{
    SYNTHETIC_HEADER_LEN, SYNTHETIC_MAGIC, SyntheticCodec, SyntheticConfig, SyntheticInfo,
    SyntheticPacket, SyntheticSource, parse_synthetic,
};
