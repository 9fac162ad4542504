//! Rooms and participants over real WebSockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pulsewave_tests::*;
use serde_json::json;

#[tokio::test]
async fn two_clients_join_see_each_other_and_leave() {
    let server = TestServer::start().await;
    let (mut alice, joined_a) = server.join("alice", "room1").await;
    assert_eq!(joined_a["room"]["name"], "room1");
    assert_eq!(joined_a["participant"]["identity"], "alice");
    assert_eq!(joined_a["participant"]["name"], "alice name");
    assert!(
        joined_a["room"]["participants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        joined_a["participant"]["sid"]
            .as_str()
            .unwrap()
            .starts_with("PA_")
    );

    let (mut bob, joined_b) = server.join("bob", "room1").await;
    let others = joined_b["room"]["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["identity"], "alice");
    assert_eq!(joined_b["room"]["sid"], joined_a["room"]["sid"]);

    let ev = alice.recv_type("participant-joined").await;
    assert_eq!(ev["participant"]["identity"], "bob");
    assert_eq!(ev["participant"]["sid"], joined_b["participant"]["sid"]);

    bob.send(json!({"type":"leave","requestId":1})).await;
    let left = bob.recv_type("left").await;
    assert_eq!(left["requestId"], 1);
    assert_eq!(bob.closed().await, Some(1000));

    let ev = alice.recv_type("participant-left").await;
    assert_eq!(ev["participant"]["identity"], "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn three_clients_in_join_order_and_data_delivery() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    let (mut b, jb) = server.join("b", "r").await;
    let (mut c, jc) = server.join("c", "r").await;
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["room"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["identity"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&jb), vec!["a"]);
    assert_eq!(ids(&jc), vec!["a", "b"]);
    // a sees b then c; b sees c.
    assert_eq!(
        a.recv_type("participant-joined").await["participant"]["identity"],
        "b"
    );
    assert_eq!(
        a.recv_type("participant-joined").await["participant"]["identity"],
        "c"
    );
    assert_eq!(
        b.recv_type("participant-joined").await["participant"]["identity"],
        "c"
    );

    // Broadcast: everyone else receives it, the sender does not.
    a.send(
        json!({"type":"publish-data","kind":"reliable","data":{"type":"chat","message":"Hello"}}),
    )
    .await;
    for x in [&mut b, &mut c] {
        let d = x.recv_type("data").await;
        assert_eq!(d["participantIdentity"], "a");
        assert_eq!(d["kind"], "reliable");
        assert_eq!(d["data"], json!({"type":"chat","message":"Hello"}));
    }
    // The sender does not get its own message back: the next thing a gets
    // is what b sends it after b received the broadcast.
    b.send(
        json!({"type":"publish-data","kind":"reliable","data":"marker-1",
        "destinationIdentities":["a"]}),
    )
    .await;
    assert_eq!(a.recv_type("data").await["data"], "marker-1");

    // Directed: only c receives it; with a requestId the sender gets data-sent.
    b.send(json!({"type":"publish-data","kind":"lossy","data":[1,2,3],
        "destinationIdentities":["c"],"topic":"t","requestId":"d1"}))
        .await;
    let ack = b.recv_type("data-sent").await;
    assert_eq!(ack["requestId"], "d1");
    let d = c.recv_type("data").await;
    assert_eq!(d["participantIdentity"], "b");
    assert_eq!(d["kind"], "lossy");
    assert_eq!(d["topic"], "t");
    assert_eq!(d["data"], json!([1, 2, 3]));
    // a did not get it: the next thing a gets is what c sends it after c
    // received the directed message.
    c.send(
        json!({"type":"publish-data","kind":"reliable","data":"marker-2",
        "destinationIdentities":["a"]}),
    )
    .await;
    assert_eq!(a.recv_type("data").await["data"], "marker-2");

    // A closed socket removes the participant (after the resume grace
    // time, 200 ms in these tests).
    c.close().await;
    assert_eq!(
        a.recv_type("participant-left").await["participant"]["identity"],
        "c"
    );
    assert_eq!(
        b.recv_type("participant-left").await["participant"]["identity"],
        "c"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reconnect_with_same_identity_replaces_the_first_session() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    let (mut b1, j1) = server.join("b", "r").await;
    a.recv_type("participant-joined").await;

    let (mut b2, j2) = server.join("b", "r").await;
    assert_ne!(j1["participant"]["sid"], j2["participant"]["sid"]);
    // The old session is told why and closed.
    let d = b1.recv_type("disconnected").await;
    assert_eq!(d["reason"], "duplicate-identity");
    assert_eq!(b1.closed().await, Some(1000));
    // The new session sees only a, not its own old self.
    let others = j2["room"]["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["identity"], "a");
    // a sees the old session leave and the new one join.
    let left = a.recv_type("participant-left").await;
    assert_eq!(left["participant"]["sid"], j1["participant"]["sid"]);
    let joined = a.recv_type("participant-joined").await;
    assert_eq!(joined["participant"]["sid"], j2["participant"]["sid"]);

    // Data still flows to the new session.
    a.send(json!({"type":"publish-data","kind":"reliable","data":"hi"}))
        .await;
    assert_eq!(b2.recv_type("data").await["data"], "hi");
    server.shutdown().await;
}

/// About time, on a short configured duration: the grace time is 300 ms
/// (`TestServer`), on the real clock (the room runs over real sockets with
/// a media worker thread, which tokio's paused clock does not drive).
#[tokio::test]
async fn empty_room_closes_after_grace_time_and_reopens_fresh() {
    let grace = Duration::from_millis(300);
    let server = TestServer::start_with(|c| c.empty_room_timeout = grace).await;
    let rooms = server.running.as_ref().unwrap().rooms().clone();
    let (a, j1) = server.join("a", "r").await;
    assert_eq!(rooms.room_names(), vec!["r"]);
    // The grace time starts when the server sees a leave, which is after
    // this instant: the room must outlive it by the whole grace time.
    let left = tokio::time::Instant::now();
    a.close().await;
    eventually("the empty room closes", EVENTUALLY, async || {
        rooms.room_names().is_empty().then_some(())
    })
    .await;
    assert!(
        left.elapsed() >= grace,
        "closed {:?} after the leave, before the grace time",
        left.elapsed()
    );
    let (_a, j2) = server.join("a", "r").await;
    assert_ne!(j1["room"]["sid"], j2["room"]["sid"]);
    server.shutdown().await;
}

#[tokio::test]
async fn room_manager_works_without_websockets() {
    let server = TestServer::start().await;
    let rooms = server.running.as_ref().unwrap().rooms().clone();
    let room = rooms.get_or_create_room("made-in-rust").await.unwrap();
    let same = rooms.get_or_create_room("made-in-rust").await.unwrap();
    assert_eq!(room.sid(), same.sid());
    let (mut a, joined) = server.join("a", "made-in-rust").await;
    assert_eq!(joined["room"]["sid"].as_str().unwrap(), room.sid().as_str());
    let listed = rooms.list_rooms().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].participants.len(), 1);
    assert!(rooms.close_room("made-in-rust").await);
    let d = a.recv_type("disconnected").await;
    assert_eq!(d["reason"], "room-closed");
    assert!(!rooms.close_room("made-in-rust").await);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_participants() {
    let server = TestServer::start().await;
    let (mut a, _) = server.join("a", "r").await;
    let mut idle = server.connect("idle", "r").await;
    let addr = server.addr;
    server.shutdown().await;
    assert_eq!(
        a.recv_type("disconnected").await["reason"],
        "server-shutdown"
    );
    assert_eq!(
        idle.recv_type("disconnected").await["reason"],
        "server-shutdown"
    );
    // The port no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn ping_pong_and_request_ids() {
    let server = TestServer::start().await;
    let mut c = server.connect("a", "r").await;
    c.send(json!({"type":"ping","requestId":42})).await;
    let p = c.recv_type("pong").await;
    assert_eq!(p["requestId"], 42);
    assert!(p["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    server.shutdown().await;
}
