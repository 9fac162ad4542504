//! PulseWave test support: a deterministic simulation of one media room.
//!
//! [`Sim`] holds one sans-IO [`pulsewave_core::Room`], any number of
//! participants each with sans-IO [`pulsewave_client::PeerTransport`]s (the
//! browser side of a send or receive transport), a [`Link`] between them and
//! a **virtual clock**. It is modelled on quinn-proto's test `Pair` and
//! str0m's `netem`:
//!
//! - the clock is an [`Instant`](std::time::Instant) taken once at
//!   construction plus an offset; it jumps straight to the next wakeup (a
//!   datagram's delivery, a room or peer timer, a frame of a published
//!   track), so seconds of media take milliseconds of wall time. The OS clock
//!   is never read again.
//! - the [`Link`] has one-way latency, jitter, seeded random loss
//!   ([`rand::rngs::StdRng`]), an optional MTU and filters that drop chosen
//!   datagrams ("the 10th RTP packet from the publisher"); datagrams in
//!   flight wait in a priority queue by delivery time. Every datagram is
//!   classified (STUN, DTLS, RTP with ssrc/pt/seq, RTCP) and logged with its
//!   fate.
//! - [`Sim::drive`] runs until no datagram is in flight and
//!   [`Sim::drive_bounded`] panics when that takes too many steps; every
//!   step also panics on a livelock (something asking to be woken at the
//!   current instant forever).
//!
//! Helpers do what signaling would: [`Sim::join`],
//! [`Sim::send_transport`] / [`Sim::recv_transport`] (create the server
//! transport, build the peer, `connect_transport` with the peer's DTLS
//! parameters, run until both sides are connected), [`Sim::publish`]
//! (`add_track` + `produce` + a paced [`SyntheticSource`](pulsewave_client::SyntheticSource)),
//! [`Sim::publish_simulcast`] (`add_simulcast_track` + `produce`, one paced
//! source per layer, [`Sim::set_layer_sending`] to stop a layer),
//! [`Sim::subscribe`] (`consume` with the router's capabilities,
//! `add_consumer`, `resume_consumer`), data channels, and accessors for
//! what each peer received.
//!
//! Randomness that the harness does not own (ids, ssrcs, ICE credentials,
//! DTLS keys in the room and the client) is not seeded, so runs differ in
//! those values; what happens on the network (losses, delays, filters) is
//! reproducible for a seed.
//!
//! ```
//! use std::time::Duration;
//! use pulsewave_protocol::MediaKind;
//! use pulsewave_test::Sim;
//!
//! let mut sim = Sim::new(1);
//! let alice = sim.join("alice");
//! let bob = sim.join("bob");
//! sim.send_transport(alice);
//! sim.recv_transport(bob);
//! let (producer, _mid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
//! let consumer = sim.subscribe(bob, &producer);
//! sim.advance(Duration::from_secs(1));
//! let got = sim.received(bob, &consumer);
//! assert!(got.len() > 40, "about 50 packets per second");
//! assert_eq!(got[0].ssrc, sim.subscription(bob, &consumer).ssrc);
//! ```
//!
//! This crate is test-only (`publish = false`): helpers panic with a
//! message instead of returning errors where a test could not go on, so
//! `clippy::unwrap_used` and `clippy::expect_used` are allowed crate-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod link;
mod sim;

pub use link::{
    Bottleneck, Datagram, Direction, Fate, Filter, FilterId, Link, LinkConfig, LogEntry,
    PacketKind, classify,
};
pub use sim::{
    Origin, Peer, ReceivedRtp, SERVER_ADDR, SentRtp, Sim, SimConfig, SimulcastOptions,
    Subscription, Track, TrackLayer, TrackOptions,
};
