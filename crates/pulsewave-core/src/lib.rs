//! PulseWave media core: a sans-IO selective forwarding unit per room, on
//! [str0m](https://docs.rs/str0m).
//!
//! This crate never reads the clock and never touches a socket. A [`Room`]
//! takes the current time and datagrams as arguments; it hands back
//! [`Transmit`]s to send, [`Event`]s for signaling and the instant it wants
//! to be woken at. Commands from signaling (`create_transport`, `produce`,
//! `consume`, `resume_consumer`, ...) are inputs like datagrams, so one rule
//! covers everything: mutate, then drain the outputs (str0m's run-loop rule).
//! The crate has no tokio dependency, so other Rust services can embed it
//! with their own I/O; `pulsewave-signal` drives it on worker threads.
//!
//! Parameters follow mediasoup: [`ortc`] computes router capabilities,
//! producer mappings and consumer parameters exactly as mediasoup's
//! `ortc.ts`, so unmodified `mediasoup-client` browsers publish and
//! subscribe.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use pulsewave_core::{Room, RoomConfig};
//! use pulsewave_protocol::transport::TransportDirection;
//!
//! let start = Instant::now();
//! let config = RoomConfig {
//!     local_addr: "127.0.0.1:40000".parse().unwrap(),
//!     ..RoomConfig::default()
//! };
//! let mut room = Room::new(config, start);
//! let options = room
//!     .create_transport(start, &"PA_alice".into(), TransportDirection::Send)
//!     .unwrap();
//! assert_eq!(options.ice_candidates[0].port, 40000);
//!
//! // The driver's loop: datagrams in, transmits out, timers.
//! let garbage = [0u8; 4];
//! assert!(room.handle_datagram(start, "127.0.0.1:5000".parse().unwrap(), &garbage).is_err());
//! while let Some(t) = room.poll_transmit() {
//!     let _ = (t.destination, t.contents);
//! }
//! if let Some(at) = room.poll_timeout() {
//!     room.handle_timeout(at.max(start + Duration::from_millis(1)));
//! }
//! ```
//!
//! # Panics, errors and unwraps
//!
//! Bad input from a client or the network (malformed parameters, unknown
//! ids, another participant's ids, garbage datagrams) is an [`Error`] or a
//! [`DatagramError`], never a panic. Panics are reserved for broken internal
//! invariants.

mod bucket;
mod config;
mod data;
mod datagram;
mod demux;
mod error;
mod event;
mod keyframe;
mod media;
pub mod ortc;
mod owners;
mod room;
mod stun;
mod transport;

pub use config::RoomConfig;
pub use demux::{Demux, Route};
pub use error::Error;
pub use event::{CloseReason, Event, Transmit};
pub use room::{Consumed, DataConsumed, DatagramError, Produced, Room, RoomStats};
pub use stun::{is_stun, stun_username};
