//! PulseWave media core: a sans-IO selective forwarding unit on
//! [str0m](https://docs.rs/str0m).
//!
//! This crate never reads the clock and never touches a socket. An
//! [`Endpoint`] owns many [`Room`]s behind one socket: it takes the current
//! time and datagrams as arguments, routes each datagram to its room and
//! transport, and hands back [`Transmit`]s to send, [`Event`]s for
//! signaling and the instant it wants to be woken at. Commands from
//! signaling (`create_transport`, `produce`, `consume`, `resume_consumer`,
//! ...) run on a room through [`Endpoint::with_room`]; they are inputs like
//! datagrams, so one rule covers everything: after every input, drain the
//! outputs, then call [`Endpoint::handle_timeout`] at
//! [`Endpoint::poll_timeout`]. The crate has no tokio dependency, so other
//! Rust services can embed it with their own I/O; `pulsewave-media` drives
//! it on worker threads.
//!
//! Parameters follow mediasoup: [`ortc`] computes router capabilities,
//! producer mappings and consumer parameters exactly as mediasoup's
//! `ortc.ts`, so unmodified `mediasoup-client` browsers publish and
//! subscribe.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use pulsewave_core::{Datagram, Endpoint, EndpointConfig, Owner, Protocol, RoomConfig};
//! use pulsewave_protocol::transport::TransportDirection;
//!
//! let start = Instant::now();
//! let config = EndpointConfig {
//!     room: RoomConfig {
//!         local_addr: "127.0.0.1:40000".parse().unwrap(),
//!         ..RoomConfig::default()
//!     },
//!     seed: Some(7),
//! };
//! let mut endpoint = Endpoint::new(config, start);
//! let room = endpoint.open_room(start);
//! let options = endpoint
//!     .with_room(start, room, |room, now| {
//!         room.create_transport(now, Owner::new(1), TransportDirection::Send)
//!     })
//!     .unwrap()
//!     .unwrap();
//! assert_eq!(options.ice_candidates[0].port, 40000);
//!
//! // The driver's loop: datagrams in, transmits out, timers.
//! let garbage = Datagram {
//!     proto: Protocol::Udp,
//!     source: "127.0.0.1:5000".parse().unwrap(),
//!     destination: endpoint.local_addr(),
//!     contents: &[0u8; 4],
//! };
//! assert!(endpoint.handle_datagram(start, garbage).is_err());
//! while let Some(t) = endpoint.poll_transmit() {
//!     let _ = (t.destination, t.contents);
//! }
//! if let Some(at) = endpoint.poll_timeout() {
//!     endpoint.handle_timeout(at.max(start + Duration::from_millis(1)));
//! }
//! ```
//!
//! # Panics, errors and unwraps
//!
//! Bad input from a client or the network (malformed parameters, unknown
//! ids, another participant's ids, garbage datagrams) is an [`Error`] or a
//! [`DatagramError`], never a panic. Panics are reserved for broken internal
//! invariants, and even then they are contained: the [`Endpoint`] drops the
//! room that panicked ([`Event::RoomFailed`]) and its other rooms go on.

mod allocator;
mod bucket;
mod config;
mod data;
mod datagram;
mod endpoint;
mod error;
mod event;
pub mod framing;
pub mod glue;
mod keyframe;
mod media;
pub mod ortc;
mod owners;
mod quality;
mod rate;
mod registry;
mod room;
mod speaker;
mod stun;
mod timers;
mod transport;
mod vp8;

pub use config::RoomConfig;
pub use endpoint::{
    Datagram, Endpoint, EndpointConfig, EndpointStats, Protocol, RoomGone, RoomId, RoomMut,
};
pub use error::Error;
pub use event::{AppData, CloseReason, Event, LayerWanted, StateChange, Transmit};
pub use media::{DEFAULT_PRIORITY, SPEAKER_PRIORITY, View};
pub use owners::Owner;
pub use quality::{
    ConnectionQuality, LOST_AFTER, ProducerStats, QUALITY_INTERVAL, RTT_GOOD, RTT_POOR,
    SHORT_AFTER, STATS_INTERVAL,
};
pub use room::{
    Consumed, ConsumerAllocation, DataConsumed, DatagramError, Produced, Room, RoomStats,
    TransportAllocation,
};
pub use speaker::{ACTIVE_LEVEL, ActiveSpeaker, MIN_ACTIVE_PERCENT, SPEAKER_INTERVAL};
pub use stun::{is_stun, stun_username};
