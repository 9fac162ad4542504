//! The server API (LiveKit's `RoomService` over Twirp) against a real
//! server with real signaling clients in the room. The same operations are
//! driven with LiveKit's own Node SDK and browsers in
//! `web/test/admin-e2e.mjs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_tests::*;
use serde_json::{Value, json};

/// A server SDK token: no identity, the given grants.
fn api_token(f: impl FnOnce(&mut VideoGrant)) -> String {
    let mut t = AccessToken::new(KEY, SECRET, AccessTokenOptions::default());
    let mut grant = VideoGrant::default();
    f(&mut grant);
    t.add_grant(grant);
    t.to_jwt().unwrap()
}

fn admin(room: &str) -> String {
    api_token(|g| {
        g.room_admin = true;
        g.room = Some(room.into());
    })
}

async fn call(server: &TestServer, token: &str, method: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, headers, v) = http(
        server.addr,
        "POST",
        &format!("/twirp/livekit.RoomService/{method}"),
        &[
            ("content-type", "application/json;charset=UTF-8"),
            ("authorization", &auth),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(headers["content-type"], "application/json", "{method}");
    (status, v)
}

#[tokio::test]
async fn create_list_update_and_delete_a_room_with_clients_in_it() {
    let server = TestServer::start().await;
    let create = api_token(|g| g.room_create = true);
    let (status, room) = call(
        &server,
        &create,
        "CreateRoom",
        json!({"name": "api-room", "emptyTimeout": 60, "maxParticipants": 2, "metadata": "m0"}),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["name"], "api-room");
    assert_eq!(room["empty_timeout"], 60);
    assert_eq!(room["max_participants"], 2);
    assert_eq!(room["metadata"], "m0");

    let (mut alice, joined) = server.join("alice", "api-room").await;
    assert_eq!(joined["room"]["metadata"], "m0");
    let (mut bob, _) = server.join("bob", "api-room").await;
    alice.wait_for("participant-joined").await;
    // maxParticipants from CreateRoom applies to this room.
    let mut carol = server.connect("carol", "api-room").await;
    carol
        .send(json!({"type": "join", "room": "api-room", "requestId": 1}))
        .await;
    assert_eq!(carol.recv_type("error").await["code"], 101);

    let list = api_token(|g| g.room_list = true);
    let (status, v) = call(&server, &list, "ListRooms", json!({"names": ["api-room"]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rooms"][0]["num_participants"], 2);
    // A token without the grant: `unauthenticated`, as LiveKit answers.
    let (status, v) = call(
        &server,
        &list,
        "ListParticipants",
        json!({"room": "api-room"}),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
    // roomAdmin of another room does not do either.
    let (status, _) = call(
        &server,
        &admin("other"),
        "ListParticipants",
        json!({"room": "api-room"}),
    )
    .await;
    assert_eq!(status, 401);

    let admin = admin("api-room");
    let (status, v) = call(
        &server,
        &admin,
        "ListParticipants",
        json!({"room": "api-room"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let identities: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["alice", "bob"]);
    assert_eq!(v["participants"][0]["state"], "ACTIVE");

    let (status, v) = call(
        &server,
        &admin,
        "UpdateRoomMetadata",
        json!({"room": "api-room", "metadata": "m1"}),
    )
    .await;
    assert_eq!((status, v["metadata"].as_str()), (200, Some("m1")));
    for c in [&mut alice, &mut bob] {
        let u = c.wait_for("room-updated").await;
        assert_eq!(u["metadata"], "m1");
    }

    // SendData reaches the clients as a `data` message from the server.
    let data = base64_encode(br#"{"hello":"all"}"#);
    let (status, _) = call(
        &server,
        &admin,
        "SendData",
        json!({"room": "api-room", "data": data, "topic": "t", "destinationIdentities": ["bob"]}),
    )
    .await;
    assert_eq!(status, 200);
    let d = bob.wait_for("data").await;
    assert_eq!(d["data"], json!({"hello": "all"}));
    assert_eq!(d["participantIdentity"], "");
    assert_eq!(d["topic"], "t");

    let (status, v) = call(
        &server,
        &admin,
        "GetParticipant",
        json!({"room": "api-room", "identity": "nobody"}),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));

    // DeleteRoom disconnects everyone, with a reason.
    let (status, _) = call(&server, &create, "DeleteRoom", json!({"room": "api-room"})).await;
    assert_eq!(status, 200);
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.wait_for("disconnected").await["reason"], "room-deleted");
    }
    let (status, v) = call(&server, &create, "DeleteRoom", json!({"room": "api-room"})).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));
    server.shutdown().await;
}

#[tokio::test]
async fn participant_updates_permissions_and_removal_are_enforced_at_once() {
    let server = TestServer::start().await;
    let room = "perm-room";
    let (mut alice, _) = server.join("alice", room).await;
    let mut bob = Client::connect(
        &server.ws_url(&token_with("bob", room, |g| {
            g.can_update_own_metadata = true
        })),
        "bob",
    )
    .await;
    bob.send(json!({"type": "join", "room": room})).await;
    bob.recv_type("joined").await;
    alice.wait_for("participant-joined").await;
    let admin = admin(room);

    // Metadata and name: everyone sees `participant-updated`.
    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "metadata": "am", "name": "Alice A."}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["metadata"].as_str(), p["name"].as_str()),
        (Some("am"), Some("Alice A."))
    );
    for c in [&mut alice, &mut bob] {
        let u = c.wait_for("participant-updated").await;
        assert_eq!(u["participant"]["identity"], "alice");
        assert_eq!(u["participant"]["metadata"], "am");
    }

    // Own metadata: bob may (canUpdateOwnMetadata), alice may not.
    bob.send(json!({"type": "update-metadata", "metadata": "bm", "requestId": 5}))
        .await;
    let u = bob.wait_for("participant-updated").await;
    assert_eq!(
        (
            u["requestId"].as_u64(),
            u["participant"]["metadata"].as_str()
        ),
        (Some(5), Some("bm"))
    );
    assert_eq!(
        alice.wait_for("participant-updated").await["participant"]["metadata"],
        "bm"
    );
    alice
        .send(json!({"type": "update-metadata", "metadata": "x", "requestId": 6}))
        .await;
    let e = alice.wait_for("error").await;
    assert_eq!(
        (e["code"].as_u64(), e["requestId"].as_u64()),
        (Some(301), Some(6))
    );

    // Revoking canPublishData: alice's next data message is refused.
    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice",
               "permission": {"canSubscribe": true, "canPublish": true}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["permission"]["can_publish_data"], false);
    let u = alice.wait_for("participant-updated").await;
    assert_eq!(u["participant"]["permission"]["canPublishData"], false);
    alice
        .send(json!({"type": "publish-data", "kind": "reliable", "data": "hi", "requestId": 7}))
        .await;
    assert_eq!(alice.wait_for("error").await["code"], 301);

    // RemoveParticipant: told why, the others see it leave.
    let (status, _) = call(
        &server,
        &admin,
        "RemoveParticipant",
        json!({"room": room, "identity": "bob"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        bob.wait_for("disconnected").await["reason"],
        "participant-removed"
    );
    assert_eq!(
        alice.wait_for("participant-left").await["participant"]["identity"],
        "bob"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn twirp_errors_for_bad_requests() {
    let server = TestServer::start().await;
    let admin = admin("r");
    // Unknown method, bad JSON, bad token, missing token.
    let (status, v) = call(&server, &admin, "Frobnicate", json!({})).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("bad_route")));
    let (status, v) = call(&server, &admin, "GetParticipant", json!({"room": "r"})).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, v) = call(&server, "not-a-token", "ListRooms", json!({})).await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
    let (status, _, v) = http(
        server.addr,
        "POST",
        "/twirp/livekit.RoomService/ListRooms",
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
    // A room that is not open.
    let (status, v) = call(&server, &admin, "ListParticipants", json!({"room": "r"})).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));
    server.shutdown().await;
}

#[tokio::test]
async fn room_stats_and_per_room_metrics_with_a_cap() {
    let server = TestServer::start_with(|c| c.metrics_room_limit = 1).await;
    let (_a, _) = server.join("alice", "room-a").await;
    let (_b, _) = server.join("bob", "room-b").await;
    let (status, v) = call(
        &server,
        &admin("room-a"),
        "GetRoomStats",
        json!({"room": "room-a"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["room"], "room-a");
    assert_eq!(v["participants"][0]["identity"], "alice");
    assert!(
        v["participants"][0]["tracks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Per-room series for the first room only (METRICS_ROOM_LIMIT=1).
    let text = metrics_text(server.addr).await;
    assert!(
        text.contains("pulsewave_room_participants{room=\"room-a\"} 1"),
        "{text}"
    );
    assert!(!text.contains("room=\"room-b\""), "{text}");
    assert!(
        text.contains("pulsewave_room_connection_quality{room=\"room-a\",quality=\"excellent\"}")
    );
    server.shutdown().await;
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
