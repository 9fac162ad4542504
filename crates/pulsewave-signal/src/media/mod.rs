//! Media workers: the threads that run `pulsewave-core` rooms over UDP.

mod outbox;
mod pool;
mod worker;

pub use pool::{MediaConfig, WorkerPool};
pub use worker::{MediaRoom, MediaWorker, WorkerGone, WorkerStats};
