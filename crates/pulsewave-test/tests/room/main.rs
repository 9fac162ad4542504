//! Deterministic tests of the room on a simulated network: one
//! `pulsewave_core::Room`, str0m peers from `pulsewave-client` and a lossy
//! link, all on the virtual clock of `pulsewave-test`. Each test is a short
//! story told from the user's side: what a subscriber receives, what a
//! publisher is asked for, what signaling is told.
//!
//! Helpers outside `#[test]` functions unwrap too (test code).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod bandwidth;
mod compat;
mod data;
mod endpoint;
mod feedback;
mod lifecycle;
mod limits;
mod media;
mod quality;
mod restart;
mod simulcast;
mod speakers;

use std::time::Duration;

use pulsewave_core::Owner;
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_test::{ReceivedRtp, Sim};

/// RFC 7741: the first packet of a VP8 keyframe (S=1, PID=0, P=0), for the
/// one-byte descriptor the synthetic source writes.
pub(crate) fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    payload.len() > 1 && payload[0] & 0x10 != 0 && payload[0] & 0x07 == 0 && payload[1] & 1 == 0
}

/// Every sequence number follows the previous one, in order of arrival.
#[track_caller]
pub(crate) fn assert_contiguous(rtp: &[ReceivedRtp]) {
    for w in rtp.windows(2) {
        assert_eq!(
            w[1].seq_no,
            w[0].seq_no + 1,
            "gap or reordering after seq {} (arrivals {:?} and {:?})",
            w[0].seq_no,
            w[0].at,
            w[1].at
        );
    }
}

/// The sorted, deduplicated sequence numbers have no hole.
#[track_caller]
pub(crate) fn assert_no_holes(rtp: &[ReceivedRtp]) {
    let mut seqs: Vec<u64> = rtp.iter().map(|r| r.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "sequence number {} never arrived", w[0] + 1);
    }
}

/// Alice with a connected send transport, Bob with a connected receive
/// transport.
pub(crate) fn alice_and_bob(seed: u64) -> (Sim, Owner, Owner) {
    alice_and_bob_in(Sim::new(seed))
}

/// [`alice_and_bob`] in a simulation of one's own.
pub(crate) fn alice_and_bob_in(mut sim: Sim) -> (Sim, Owner, Owner) {
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    sim.send_transport(alice);
    sim.recv_transport(bob);
    (sim, alice, bob)
}

/// The send transport of `who`.
pub(crate) fn send_tid(sim: &Sim, who: Owner) -> pulsewave_protocol::TransportId {
    sim.transport_of(who, TransportDirection::Send)
        .expect("a send transport")
}

/// The receive transport of `who`.
pub(crate) fn recv_tid(sim: &Sim, who: Owner) -> pulsewave_protocol::TransportId {
    sim.transport_of(who, TransportDirection::Recv)
        .expect("a receive transport")
}

pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MS: Duration = Duration::from_millis(1);
