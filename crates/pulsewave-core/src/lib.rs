//! PulseWave media core: a sans-IO selective forwarding unit per room.
//!
//! [`ortc`] computes RTP parameters and capabilities the way mediasoup does.

pub mod ortc;
