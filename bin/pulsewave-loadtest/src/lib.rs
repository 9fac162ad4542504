//! PulseWave's load tester, like LiveKit's `lk load-test`, built on
//! [`pulsewave_client`].
//!
//! It starts rooms of publishers and subscribers against one or more
//! servers. Publishers send synthetic VP8 video (frames split into
//! packets of at most 1100 bytes, a keyframe every `--keyframe-interval`,
//! keyframes on request) and opus-sized audio, paced in real time by
//! [`pulsewave_client::SyntheticSource`]. Every payload carries its
//! sequence number and send time, so subscribers count loss, duplicates
//! and reordering per subscription and measure one-way latency (publishers
//! and subscribers share this host's clock).
//!
//! The [`Report`] says what was expected and what arrived, the join times,
//! whether the load tester kept its own pacing, and, with `--server-pid`
//! (`/proc`) or `--metrics` (`GET /metrics`), the server's CPU seconds,
//! CPU microseconds per forwarded RTP packet and peak memory over the
//! measurement window.
//!
//! ```no_run
//! # async fn f() -> Result<(), pulsewave_loadtest::LoadTestError> {
//! let mut config = pulsewave_loadtest::Config::new("ws://127.0.0.1:3000");
//! config.subscribers = 3;
//! config.duration = std::time::Duration::from_secs(5);
//! let report = pulsewave_loadtest::run(config).await?;
//! println!("{}", report.to_text());
//! assert!(report.packets.loss_percent < 1.0);
//! # Ok(()) }
//! ```
//!
//! With `--churn` it runs a churn soak instead ([`churn()`]): participants
//! joining, publishing, subscribing and leaving many rooms in waves, after
//! which the server's rooms, sessions, transports, routing entries, open
//! files and memory must be back to their baseline ([`ChurnReport`]).
//!
//! # Costs on the receive path
//!
//! The load tester itself allocates nothing per received packet: counters
//! are fixed histograms and a bitmap per subscription. The client
//! underneath does: str0m allocates each decrypted payload, and
//! [`pulsewave_client`] clones the consumer id, producer id and mid
//! (`String`s) into every [`pulsewave_client::ClientEvent::Rtp`].

mod churn;
mod config;
mod error;
mod probe;
mod report;
mod run;
mod stats;

pub use churn::{ChurnCounts, ChurnReport, ServerState, WaveFigures, churn};
pub use config::{Config, parse_bitrate, parse_duration, parse_on_off};
pub use error::LoadTestError;
pub use probe::{
    Probe, Sample, http_get, metrics_url_for, parse_metrics, proc_cpu_seconds, proc_memory,
};
pub use report::{
    ClientFigures, ConfigSummary, Pacing, Packets, Participants, Report, ServerFigures, Tracks,
    WindowFigures,
};
pub use run::run;
pub use stats::{Histogram, SeqTracker, Summary};
