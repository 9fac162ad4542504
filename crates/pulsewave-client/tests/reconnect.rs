//! Reconnection ([`ClientBuilder::reconnect`]) against the real server:
//! the server goes away and comes back on the same port; the clients
//! rejoin, republish, resubscribe, and media flows again. Final reasons end
//! the client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

mod common;

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};

use pulsewave_client::{Client, ClientEvent, ReconnectPolicy, parse_synthetic};
use pulsewave_protocol::{DisconnectReason, ServerMessage};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};

const KEY: &str = "reconnkey";
const SECRET: &str = "reconnsecret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

fn token(identity: &str, room: &str) -> String {
    common::token(KEY, SECRET, identity, room)
}

/// A server on `port` (0: any); retries while the port is still taken.
async fn server(port: u16) -> RunningServer {
    for _ in 0..50 {
        if let Ok(s) = WebSocketServer::new(ServerConfig::dev(port, KEY, SECRET))
            .start()
            .await
        {
            return s;
        }
        // Retry interval of a bounded wait for the port to be free again
        // (the OS gives no event for that).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot listen on port {port}");
}

async fn client(s: &RunningServer, identity: &str, room: &str) -> Client {
    let mut c = Client::builder()
        .reconnect(ReconnectPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            give_up_after: Duration::from_secs(20),
        })
        .connect(&format!("ws://{}", s.local_addr()), &token(identity, room))
        .await
        .unwrap();
    c.join(room).await.unwrap();
    c
}

async fn intact_rtp(c: &mut Client, n: usize) {
    for _ in 0..n {
        c.wait_for(WAIT, |e| match e {
            ClientEvent::Rtp(p) => parse_synthetic(&p.payload)
                .is_some_and(|i| i.intact)
                .then_some(()),
            _ => None,
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_republishes_and_resubscribes() {
    let s = server(0).await;
    let port = s.local_addr().port();
    let mut alice = client(&s, "alice", "again").await;
    let mut bob = client(&s, "bob", "again").await;
    let mut video = alice.publish_video("video/VP8").await.unwrap();
    let sender = tokio::spawn(async move {
        let mut source = video.synthetic_source();
        loop {
            for p in source.tick().await {
                // Packets sent while reconnecting are dropped, not errors;
                // afterwards they go to the republished track.
                video.send_synthetic(&p).await.unwrap();
            }
        }
    });
    let pid = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::TrackPublished { track }) => Some(track.producer_id),
            _ => None,
        })
        .await
        .unwrap();
    bob.subscribe(&pid).await.unwrap();
    intact_rtp(&mut bob, 20).await;

    // The server goes away (telling everyone `server-shutdown`) and comes
    // back on the same port.
    s.shutdown(WAIT).await;
    let s = server(port).await;

    let reason = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Reconnecting { reason, .. } => Some(reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "server-shutdown");
    alice
        .wait_for(WAIT, |e| {
            matches!(e, ClientEvent::Reconnected { .. }).then_some(())
        })
        .await
        .unwrap();
    let (old, new) = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Republished {
                old_producer_id,
                producer_id,
            } => Some((old_producer_id, producer_id)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(old, pid);
    assert_ne!(new, pid);

    let who = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Resubscribed {
                participant_identity,
                producer_id,
                ..
            } => Some((participant_identity, producer_id)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(who, ("alice".to_owned(), new));
    intact_rtp(&mut bob, 20).await;
    assert_eq!(bob.joined().unwrap().participant.identity, "bob");

    // `leave` is final: no reconnection, the client closes.
    bob.leave().await.unwrap();
    bob.wait_for(WAIT, |e| match e {
        ClientEvent::Reconnecting { .. } => panic!("reconnected after leave"),
        ClientEvent::Closed { .. } => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    sender.abort();
    s.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_duplicate_identity_is_final() {
    let s = server(0).await;
    let mut first = client(&s, "carol", "dup").await;
    let _second = client(&s, "carol", "dup").await;
    let reason = first
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::Disconnected { reason }) => Some(reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, DisconnectReason::DuplicateIdentity);
    first
        .wait_for(WAIT, |e| match e {
            ClientEvent::Reconnecting { .. } => panic!("reconnected after duplicate-identity"),
            ClientEvent::Closed { .. } => Some(()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(first.is_closed());
    s.shutdown(WAIT).await;
}

/// The server's `token-refresh` replaces the client's token, and the client
/// reconnects with it after the token it started with has expired. Short
/// durations through the configuration: refresh every 2 s (tokens valid 4 s;
/// the first comes at half the first token's lifetime), no leeway on
/// `exp`, a first token valid for 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_with_the_refreshed_token() {
    let config = |port| {
        let mut c = ServerConfig::dev(port, KEY, SECRET);
        c.token_refresh_interval = Duration::from_secs(2);
        c.token_leeway = Duration::ZERO;
        c
    };
    let s = WebSocketServer::new(config(0)).start().await.unwrap();
    let port = s.local_addr().port();
    let mut t = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: "carol".into(),
            ttl: Some(Duration::from_secs(2)),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some("long-call".into()),
        room_join: true,
        ..Default::default()
    });
    let first = t.to_jwt().unwrap();
    let exp = pulsewave_auth::TokenVerifier::new(KEY, SECRET)
        .verify(&first)
        .unwrap()
        .exp;
    let mut carol = Client::builder()
        .reconnect(ReconnectPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            give_up_after: Duration::from_secs(5),
        })
        .connect(&format!("ws://{}", s.local_addr()), &first)
        .await
        .unwrap();
    carol.join("long-call").await.unwrap();
    let fresh = carol
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::TokenRefresh { token }) => Some(token),
            _ => None,
        })
        .await
        .unwrap();
    // The scenario: the first token expires during the call. About time, on
    // the real wall clock (`exp` is whole UNIX seconds compared with the
    // system time) and a short lifetime (2 s): this waits for the clock to
    // pass `exp`, nothing else.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!fresh.is_empty());
    // The latest refresh, which the client keeps, outlives the first token.
    let latest = carol.token();
    assert_ne!(latest, first);
    let claims = pulsewave_auth::TokenVerifier::new(KEY, SECRET)
        .with_leeway(Duration::ZERO)
        .verify(&latest)
        .unwrap();
    assert_eq!(claims.sub, "carol");
    // The server restarts; the first token would now be refused (401).
    s.shutdown(WAIT).await;
    let mut s = None;
    for _ in 0..50 {
        if let Ok(r) = WebSocketServer::new(config(port)).start().await {
            s = Some(r);
            break;
        }
        // Retry interval of a bounded wait for the port to be free again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = s.expect("cannot listen again");
    carol
        .wait_for(WAIT, |e| {
            matches!(e, ClientEvent::Reconnected { .. }).then_some(())
        })
        .await
        .unwrap();
    s.shutdown(WAIT).await;
}
