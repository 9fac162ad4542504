//! Signaling timers on tokio's paused clock: the room's timers are tokio
//! timers, so a signaling-only `RoomManager` (no socket, no media worker)
//! runs them on virtual time, exactly and without waiting.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use pulsewave_signal::{RoomManager, RoomSettings};
use tokio::time::Instant;

/// About time, on the paused clock: a room nobody is in closes at its grace
/// time (the default 10 s), not a moment before.
#[tokio::test(start_paused = true)]
async fn an_empty_room_closes_at_its_grace_time() {
    let grace = RoomSettings::default().empty_timeout;
    assert_eq!(grace, Duration::from_secs(10));
    let rooms = RoomManager::new(RoomSettings::default());
    let created = Instant::now();
    let room = rooms.get_or_create_room("quiet").await.unwrap();

    // A millisecond before the grace time it is still open.
    tokio::time::advance(grace - Duration::from_millis(1)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(rooms.room_names(), vec!["quiet"], "closed before {grace:?}");
    assert!(!room.is_closed());

    // At the grace time it closes: waiting for it (the clock moves only
    // when nothing else can run) takes no more virtual time than that.
    tokio::time::advance(Duration::from_millis(1)).await;
    while !rooms.room_names().is_empty() {
        assert!(
            created.elapsed() < grace + Duration::from_millis(50),
            "still open {:?} after it was created",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(room.is_closed());
    assert!(
        created.elapsed() <= grace + Duration::from_millis(5),
        "closed {:?} after it was created",
        created.elapsed()
    );
}
