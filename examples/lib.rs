//! Examples of embedding PulseWave; see `embed_core.rs`:
//! `cargo run -p pulsewave-examples --example embed_core`.
