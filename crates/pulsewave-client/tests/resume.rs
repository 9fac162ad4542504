//! Session resume against the real server over real sockets: a client
//! whose WebSocket drops takes its session back within `RESUME_GRACE`
//! (same sid, producers and consumers; media keeps flowing; nobody sees it
//! leave; what it missed is replayed), is removed after the grace time and
//! rejoins in full, and nobody else can use its resume token.
//!
//! Every wait is for an event. The client's network outage is simulated
//! with `simulate_connection_drop` + `simulate_offline` (reconnection
//! attempts fail until the test lets them through). The grace-expiry test
//! configures a short grace (300 ms) instead of waiting 15 s.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{Client, ClientEvent, ReconnectPolicy};
use pulsewave_protocol::{ErrorCode, ParticipantSid, ServerMessage, decode_server};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "resumekey";
const SECRET: &str = "resumesecret-0123456789";
const WAIT: Duration = Duration::from_secs(10);
const ROOM: &str = "resume";

fn token(identity: &str) -> String {
    let mut t = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(ROOM.into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    });
    t.to_jwt().unwrap()
}

async fn server(grace: Duration) -> RunningServer {
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.resume_grace = grace;
    WebSocketServer::new(config).start().await.unwrap()
}

async fn client(s: &RunningServer, identity: &str) -> Client {
    let mut c = Client::builder()
        .reconnect(ReconnectPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            give_up_after: Duration::from_secs(20),
        })
        .connect(&format!("ws://{}", s.local_addr()), &token(identity))
        .await
        .unwrap();
    c.join(ROOM).await.unwrap();
    c
}

fn sid(c: &Client) -> ParticipantSid {
    c.joined().unwrap().participant.sid.clone()
}

/// `c`'s network goes down: its socket drops, reconnection attempts fail
/// until `simulate_offline(false)`; returns once it tries to come back.
async fn go_offline(c: &mut Client) {
    c.simulate_offline(true);
    c.simulate_connection_drop().await;
    c.wait_for(WAIT, |e| {
        matches!(e, ClientEvent::Reconnecting { .. }).then_some(())
    })
    .await
    .unwrap();
}

/// Waits for `f`, failing on any `participant-left` on the way.
async fn wait_no_left<T>(c: &mut Client, mut f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
    c.wait_for(WAIT, |e| {
        if let ClientEvent::Signal(ServerMessage::ParticipantLeft { participant }) = &e {
            panic!("saw participant-left of {}", participant.identity);
        }
        f(&e)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_with_the_same_ids_and_the_missed_events() {
    let s = server(Duration::from_secs(15)).await;
    let mut alice = client(&s, "alice").await;
    let mut bob = client(&s, "bob").await;
    let carol = client(&s, "carol").await;
    let bob_sid = sid(&bob);
    assert!(bob.joined().unwrap().resume_token.is_some());

    let mut video = alice.publish_video("video/VP8").await.unwrap();
    let sender = tokio::spawn(async move {
        let mut source = video.synthetic_source();
        loop {
            for p in source.tick().await {
                video.send_synthetic(&p).await.unwrap();
            }
        }
    });
    let pid = wait_no_left(&mut bob, |e| match e {
        ClientEvent::Signal(ServerMessage::TrackPublished { track }) => {
            Some(track.producer_id.clone())
        }
        _ => None,
    })
    .await;
    let consumer = bob.subscribe(&pid).await.unwrap().consumer_id;
    wait_no_left(&mut bob, |e| match e {
        ClientEvent::Rtp(p) => (p.consumer_id == consumer).then_some(()),
        _ => None,
    })
    .await;

    // Bob's network goes down: his socket drops and he cannot reconnect.
    bob.simulate_offline(true);
    bob.simulate_connection_drop().await;
    wait_no_left(&mut bob, |e| {
        matches!(e, ClientEvent::Reconnecting { .. }).then_some(())
    })
    .await;

    // Meanwhile Carol publishes; Alice sees it, Bob is away.
    let _carol_audio = carol.publish_audio().await.unwrap();
    let carol_track = wait_no_left(&mut alice, |e| match e {
        ClientEvent::Signal(ServerMessage::TrackPublished { track })
            if track.participant_identity == "carol" =>
        {
            Some(track.sid.clone())
        }
        _ => None,
    })
    .await;

    // The network is back: Bob resumes, same sid, and gets Carol's track.
    bob.simulate_offline(false);
    let resumed_sid = wait_no_left(&mut bob, |e| match e {
        ClientEvent::Resumed {
            participant_sid, ..
        } => Some(participant_sid.clone()),
        ClientEvent::Reconnected { .. } => panic!("full rejoin instead of a resume"),
        _ => None,
    })
    .await;
    assert_eq!(resumed_sid, bob_sid);
    let missed = wait_no_left(&mut bob, |e| match e {
        ClientEvent::Signal(ServerMessage::TrackPublished { track })
            if track.participant_identity == "carol" =>
        {
            Some(track.sid.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(missed, carol_track);

    // Media still flows on the same consumer, nothing republished.
    wait_no_left(&mut bob, |e| match e {
        ClientEvent::Rtp(p) => (p.consumer_id == consumer).then_some(()),
        ClientEvent::Republished { .. } | ClientEvent::Resubscribed { .. } => {
            panic!("resume must not republish or resubscribe")
        }
        _ => None,
    })
    .await;

    // Bob can still make requests, and Alice never saw him leave: his data
    // message comes after anything the room told her about him.
    bob.publish_data(pulsewave_protocol::DataKind::Reliable, "back".into())
        .await
        .unwrap();
    wait_no_left(&mut alice, |e| match e {
        ClientEvent::Signal(ServerMessage::Data {
            participant_identity,
            ..
        }) if participant_identity == "bob" => Some(()),
        ClientEvent::Signal(ServerMessage::ParticipantJoined { participant })
            if participant.identity == "bob" =>
        {
            panic!("bob was announced again")
        }
        _ => None,
    })
    .await;
    sender.abort();
    s.shutdown(WAIT).await;
}

/// A network back late in the resume window still gets the session back:
/// resume attempts are at most 2 s apart, whatever the reconnect policy's
/// longest delay (with this policy's doubling delays, 1 s up to 10 s, the
/// attempts would be at 0, 1, 3 and 7 s and the next past the 15 s window,
/// so an outage of 8.5 s would end in a full rejoin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_back_late_in_the_resume_window_still_resumes() {
    let s = server(Duration::from_secs(15)).await;
    let mut bob = Client::builder()
        .reconnect(ReconnectPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            give_up_after: Duration::from_secs(30),
        })
        .connect(&format!("ws://{}", s.local_addr()), &token("bob"))
        .await
        .unwrap();
    bob.join(ROOM).await.unwrap();
    let bob_sid = sid(&bob);
    go_offline(&mut bob).await;
    // The outage itself: 8.5 s without a network.
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    bob.simulate_offline(false);
    let resumed = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Resumed {
                participant_sid, ..
            } => Some(participant_sid),
            ClientEvent::Reconnected { .. } => panic!("full rejoin instead of a resume"),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(resumed, bob_sid);
    s.shutdown(WAIT).await;
}

/// With a grace of 300 ms (configured short for the test), a client away
/// longer is removed (the others see `participant-left`), its resume is
/// refused, and it rejoins in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_time_the_participant_is_removed_and_rejoins() {
    let s = server(Duration::from_millis(300)).await;
    let mut alice = client(&s, "alice").await;
    let mut bob = client(&s, "bob").await;
    let bob_sid = sid(&bob);
    bob.simulate_offline(true);
    bob.simulate_connection_drop().await;
    let left = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantLeft { participant }) => {
                Some(participant.sid)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left, bob_sid);

    bob.simulate_offline(false);
    let joined = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Resumed { .. } => panic!("resumed past the grace time"),
            ClientEvent::Reconnected { joined } => Some(joined),
            _ => None,
        })
        .await
        .unwrap();
    assert_ne!(joined.participant.sid, bob_sid);
    let again = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantJoined { participant }) => {
                Some(participant.sid)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(again, joined.participant.sid);
    s.shutdown(WAIT).await;
}

/// Sends `join` with `resume` on a raw socket holding `identity`'s token;
/// the reply.
async fn raw_resume(
    s: &RunningServer,
    identity: &str,
    sid: &ParticipantSid,
    resume_token: &str,
) -> ServerMessage {
    let url = format!("ws://{}/?token={}", s.local_addr(), token(identity));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let join = serde_json::json!({
        "type": "join", "room": ROOM, "requestId": 1,
        "resume": {"participantSid": sid.as_str(), "token": resume_token, "lastSeq": 0},
    });
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let frame = decode_server(&t).unwrap();
            if frame.request_id.is_some() {
                return frame.message;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_is_useless_to_anybody_else() {
    let s = server(Duration::from_secs(15)).await;
    let mut alice = client(&s, "alice").await;
    let bob = client(&s, "bob").await;
    let bob_sid = sid(&bob);
    let bob_token = bob.joined().unwrap().resume_token.clone().unwrap();

    // Mallory has her own valid token for the room and Bob's credentials.
    let reply = raw_resume(&s, "mallory", &bob_sid, &bob_token).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                ..
            }
        ),
        "{reply:?}"
    );
    // Bob's identity with a wrong token is refused too.
    let reply = raw_resume(&s, "bob", &bob_sid, "not-the-token").await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                ..
            }
        ),
        "{reply:?}"
    );
    // The right identity and token get the session (the live one is
    // replaced), with the same sid and a rotated token.
    let reply = raw_resume(&s, "bob", &bob_sid, &bob_token).await;
    let ServerMessage::Resumed {
        participant,
        resume_token,
        ..
    } = reply
    else {
        panic!("expected resumed, got {reply:?}")
    };
    assert_eq!(participant.sid, bob_sid);
    assert_ne!(resume_token, bob_token);
    // The old token is spent.
    let reply = raw_resume(&s, "bob", &bob_sid, &bob_token).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                ..
            }
        ),
        "{reply:?}"
    );
    // Through all of it, Alice never saw Bob leave: a fresh participant's
    // arrival is the next thing she hears about.
    let _dave = client(&s, "dave").await;
    wait_no_left(&mut alice, |e| match e {
        ClientEvent::Signal(ServerMessage::ParticipantJoined { participant })
            if participant.identity == "dave" =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    drop(bob);
    s.shutdown(WAIT).await;
}

/// A plain `join` with the identity of a participant waiting for a resume
/// replaces it, as any duplicate identity: the others see the old session
/// leave and the new one join, and the old credentials no longer work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_join_during_the_grace_time_replaces_the_waiting_session() {
    let s = server(Duration::from_secs(15)).await;
    let mut alice = client(&s, "alice").await;
    let old = client(&s, "bob").await;
    let old_sid = sid(&old);
    let old_token = old.joined().unwrap().resume_token.clone().unwrap();
    old.simulate_offline(true);
    old.simulate_connection_drop().await;

    let new = client(&s, "bob").await;
    assert_ne!(sid(&new), old_sid);
    let left = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantLeft { participant }) => {
                Some(participant.sid)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left, old_sid);
    let joined = alice
        .wait_for(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantJoined { participant }) => {
                Some(participant.sid)
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(joined, sid(&new));
    let reply = raw_resume(&s, "bob", &old_sid, &old_token).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                ..
            }
        ),
        "{reply:?}"
    );
    old.close().await;
    s.shutdown(WAIT).await;
}

/// With a replay buffer of 2 messages (configured small for the test), a
/// client that missed more is refused and rejoins in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_more_than_the_buffer_means_a_full_rejoin() {
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.resume_buffer = 2;
    let s = WebSocketServer::new(config).start().await.unwrap();
    let alice = client(&s, "alice").await;
    let mut bob = client(&s, "bob").await;
    let bob_sid = sid(&bob);
    go_offline(&mut bob).await;
    for i in 0..5 {
        alice
            .publish_data(pulsewave_protocol::DataKind::Reliable, i.into())
            .await
            .unwrap();
    }
    bob.simulate_offline(false);
    let joined = bob
        .wait_for(WAIT, |e| match e {
            ClientEvent::Resumed { .. } => panic!("resumed past the buffer"),
            ClientEvent::Reconnected { joined } => Some(joined),
            _ => None,
        })
        .await
        .unwrap();
    assert_ne!(joined.participant.sid, bob_sid);
    s.shutdown(WAIT).await;
}
