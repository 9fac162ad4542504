//! Any bytes on the cluster channels or in the cluster keys (what a plain
//! Redis client can publish or write) decode to a signed message that does
//! not verify, or to an error: never a panic. What parses re-signs and
//! parses back to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pulsewave_cluster::fuzzing::cluster_message(data);
});
