//! PulseWave media driver: worker threads that run
//! [`pulsewave_core::Endpoint`]s over UDP sockets and ICE-TCP connections.
//!
//! Each worker is one thread with a current-thread tokio runtime, one UDP
//! socket (a port of `MEDIASOUP_MIN_PORT..=MEDIASOUP_MAX_PORT`), one TCP
//! listener for ICE-TCP (RFC 4571 framing; [`MediaConfig::enable_tcp`]) and
//! one endpoint holding the rooms placed on it. The worker reads datagrams in
//! bursts, runs the endpoint's timers, and sends with `sendmmsg(2)` (Linux)
//! in batches. [`WorkerPool`] starts the workers and places each new room on
//! the least-loaded live one; a [`MediaRoom`] runs the room's commands on
//! its worker thread and receives its events on a channel.
//!
//! This crate depends on the core and tokio only: a service that wants the
//! media plane without PulseWave's signaling uses it directly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pulsewave_media::{MediaConfig, Owner, WorkerPool};
//! use pulsewave_protocol::transport::TransportDirection;
//!
//! let pool = WorkerPool::start(&MediaConfig::loopback())?;
//! let (room, mut events) = pool.open_room().await?;
//! let options = room
//!     .create_transport(Owner::new(1), TransportDirection::Recv)
//!     .await?;
//! println!("give these to mediasoup-client: {options:?}");
//! while let Some(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! pool.stop();
//! # Ok(())
//! # }
//! ```

mod command;
mod outbox;
mod pool;
mod room;
mod tcp;
mod worker;

pub use pool::{MediaConfig, WorkerPool};
/// The core types a media room's methods take and report (re-exported so
/// an embedder needs no direct dependency on the core for them).
pub use pulsewave_core::{
    AppData, ConsumerAllocation, Event, Owner, StateChange, TransportAllocation, View,
};
pub use room::{MediaError, MediaRoom};
pub use tcp::TcpLimits;
pub use worker::{MediaWorker, WorkerGone, WorkerStats};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pulsewave_core::Event;
    use pulsewave_core::Owner;
    use pulsewave_protocol::transport::TransportDirection;

    use super::*;

    /// A room that panics on purpose (a test-only hook) is dropped and
    /// reported; the worker and its other rooms go on, and the worker still
    /// takes new rooms.
    #[tokio::test]
    async fn a_panicking_room_is_contained_to_itself() {
        let pool = WorkerPool::start(&MediaConfig::loopback()).unwrap();
        let (doomed, mut doomed_events) = pool.open_room().await.unwrap();
        let (survivor, _events) = pool.open_room().await.unwrap();
        let alice = Owner::new(1);
        survivor
            .create_transport(alice, TransportDirection::Recv)
            .await
            .unwrap();
        doomed.panic_for_test();
        assert_eq!(doomed_events.recv().await, Some(Event::RoomFailed));
        assert_eq!(
            doomed
                .create_transport(alice, TransportDirection::Recv)
                .await,
            Err(MediaError::Gone)
        );
        // The survivor and the worker are fine.
        survivor
            .create_transport(alice, TransportDirection::Send)
            .await
            .unwrap();
        assert_eq!(survivor.stats().await.unwrap().transports, 2);
        let worker = &pool.workers()[0];
        assert!(worker.is_alive());
        assert!(pool.is_healthy());
        assert_eq!(
            worker
                .stats()
                .rooms_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let (fresh, _) = pool.open_room().await.unwrap();
        fresh
            .create_transport(alice, TransportDirection::Recv)
            .await
            .unwrap();
        pool.stop();
        assert!(!worker.is_alive(), "a stopped worker reports it");
        assert!(!pool.is_healthy());
        assert!(
            pool.open_room().await.is_err(),
            "a dead worker is never chosen"
        );
    }
}
