//! Helpers the client's integration tests share.
#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{Client, ClientEvent, RemoteTrack, parse_synthetic};

/// A token for `identity` in `room` (publish, subscribe, data), signed
/// with the test server's key.
pub(crate) fn token(key: &str, secret: &str, identity: &str, room: &str) -> String {
    let mut t = AccessToken::new(
        key,
        secret,
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(room.into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    });
    t.to_jwt().unwrap()
}

/// Waits up to `wait` for `n` intact packets of `track` on `c`; returns
/// how many came (each asserted intact).
pub(crate) async fn receive(
    c: &mut Client,
    track: &RemoteTrack,
    n: usize,
    wait: Duration,
) -> usize {
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while got < n {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, c.next_event()).await else {
            break;
        };
        if let ClientEvent::Rtp(p) = e
            && p.consumer_id == track.consumer_id
        {
            assert!(parse_synthetic(&p.payload).expect("synthetic").intact);
            got += 1;
        }
    }
    got
}

/// Alice publishes video and sends it until the returned sender is
/// aborted; Bob subscribes.
pub(crate) async fn call(
    alice: &Client,
    bob: &Client,
) -> (
    RemoteTrack,
    tokio::task::JoinHandle<()>,
    pulsewave_protocol::ProducerId,
) {
    let mut video = alice.publish_video("video/VP8").await.expect("publish");
    let producer = video.producer_id().clone();
    let track = bob.subscribe(&producer).await.expect("subscribe");
    let sender = tokio::spawn(async move {
        let mut source = video.synthetic_source();
        loop {
            for p in source.tick().await {
                let _ = video.send_synthetic(&p).await;
            }
        }
    });
    (track, sender, producer)
}
