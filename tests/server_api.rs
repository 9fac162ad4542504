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
    assert!(d.get("encoding").is_none(), "{d}");

    // Bytes that are neither JSON nor UTF-8 arrive as base64, flagged.
    let bytes = [0u8, 0xff, 0x10, 0x80, 0xfe];
    let (status, v) = call(
        &server,
        &admin,
        "SendData",
        json!({"room": "api-room", "data": base64_encode(&bytes), "kind": "LOSSY",
               "destinationIdentities": ["bob"]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let d = bob.wait_for("data").await;
    assert_eq!(d["encoding"], "base64", "{d}");
    assert_eq!(d["kind"], "lossy");
    assert_eq!(d["data"], base64_encode(&bytes));

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

fn vp8_params(ssrc: u32, mid: &str) -> Value {
    json!({
        "mid": mid,
        "codecs": [
            {"mimeType":"video/VP8","payloadType":101,"clockRate":90000,
             "rtcpFeedback":[{"type":"nack"},{"type":"nack","parameter":"pli"}]},
            {"mimeType":"video/rtx","payloadType":102,"clockRate":90000,"parameters":{"apt":101}}
        ],
        "headerExtensions": [{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1}],
        "encodings": [{"ssrc": ssrc, "rtx": {"ssrc": ssrc + 1}}],
        "rtcp": {"cname": "test"}
    })
}

const FINGERPRINT: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

/// A transport of `direction`, connected (DTLS parameters given).
async fn transport(c: &mut Client, direction: &str) -> Value {
    c.send(json!({"type":"create-transport","direction":direction,"requestId":direction}))
        .await;
    let t = c.wait_for("transport-created").await["transport"].clone();
    c.send(json!({"type":"connect-transport","transportId":t["id"],"requestId":"ct",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":FINGERPRINT}]}}))
        .await;
    assert_eq!(c.wait_for("transport-connected").await["requestId"], "ct");
    t
}

/// Publishes a VP8 track from `source`; its `published` answer, or the
/// error.
async fn publish(c: &mut Client, source: &str, ssrc: u32, mid: &str) -> Value {
    c.send(json!({"type":"publish","kind":"video","source":source,
        "rtpParameters":vp8_params(ssrc, mid),"requestId":source}))
        .await;
    loop {
        let m = c.next().await.expect("an answer to publish");
        if m["requestId"] == source && (m["type"] == "published" || m["type"] == "error") {
            return m;
        }
    }
}

/// The claims of a JWT (not verified: the server verifies it on use).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn attributes_are_merged_bounded_and_seen_by_everyone() {
    let server = TestServer::start().await;
    let room = "attr-room";
    let (mut alice, _) = server.join("alice", room).await;
    let (mut bob, _) = server.join("bob", room).await;
    alice.wait_for("participant-joined").await;
    let admin = admin(room);

    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "attributes": {"role": "host", "seat": "1"}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["attributes"], json!({"role": "host", "seat": "1"}));
    for c in [&mut alice, &mut bob] {
        let u = c.wait_for("participant-updated").await;
        assert_eq!(u["participant"]["attributes"]["role"], "host", "{u}");
    }

    // Merged as LiveKit does: an empty value deletes its key.
    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "attributes": {"seat": "", "lang": "fr"}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["attributes"], json!({"role": "host", "lang": "fr"}));
    assert_eq!(
        bob.wait_for("participant-updated").await["participant"]["attributes"],
        json!({"role": "host", "lang": "fr"})
    );
    let (_, p) = call(
        &server,
        &admin,
        "GetParticipant",
        json!({"room": room, "identity": "alice"}),
    )
    .await;
    assert_eq!(p["attributes"], json!({"role": "host", "lang": "fr"}));
    let (_, list) = call(&server, &admin, "ListParticipants", json!({"room": room})).await;
    let listed = list["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(listed["attributes"]["lang"], "fr");
    // A newcomer sees them in `joined`.
    let (_, joined) = server.join("carol", room).await;
    let seen = joined["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(seen["attributes"]["role"], "host");

    // Bounded, with a clear error; nothing changes.
    let (status, e) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "metadata": "not-applied",
               "attributes": {"big": "x".repeat(5000)}}),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_argument")),
        "{e}"
    );
    assert!(e["msg"].as_str().unwrap().contains("attributes"), "{e}");
    let (status, e) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "attributes": {"n": 1}}),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_argument")),
        "{e}"
    );
    let (_, p) = call(
        &server,
        &admin,
        "GetParticipant",
        json!({"room": room, "identity": "alice"}),
    )
    .await;
    assert_eq!(p["metadata"], "");
    assert_eq!(p["attributes"], json!({"role": "host", "lang": "fr"}));
    server.shutdown().await;
}

#[tokio::test]
async fn publish_sources_are_enforced_and_revoking_one_unpublishes_it() {
    let server = TestServer::start().await;
    let room = "src-room";
    let (mut alice, _) = server.join("alice", room).await;
    let (mut bob, _) = server.join("bob", room).await;
    transport(&mut alice, "send").await;
    let camera = publish(&mut alice, "camera", 1000, "0").await;
    assert_eq!(camera["type"], "published", "{camera}");
    let screen = publish(&mut alice, "screen", 2000, "1").await;
    assert_eq!(screen["type"], "published", "{screen}");
    let admin = admin(room);

    // Only screen sharing from now on: the camera is unpublished at once.
    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "permission": {
            "canPublish": true, "canSubscribe": true, "canPublishData": true,
            "canPublishSources": ["SCREEN_SHARE"]}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["permission"]["can_publish_sources"],
        json!(["SCREEN_SHARE"])
    );
    let gone = bob.wait_for("track-unpublished").await;
    assert_eq!(gone["producerId"], camera["track"]["producerId"], "{gone}");
    let u = alice.wait_for("participant-updated").await;
    assert_eq!(
        u["participant"]["permission"]["canPublishSources"],
        json!(["screen"])
    );
    let tracks = u["participant"]["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 1, "{u}");
    assert_eq!(tracks[0]["source"], "screen");

    // Publishing the camera again is refused; the screen is still fine.
    let again = publish(&mut alice, "camera", 3000, "2").await;
    assert_eq!(
        (again["type"].as_str(), again["code"].as_u64()),
        (Some("error"), Some(301)),
        "{again}"
    );
    // An unknown source name is a Twirp error.
    let (status, e) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "permission": {"canPublishSources": ["TELEPATHY"]}}),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_argument")),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_participant_hidden_through_the_api_leaves_the_others_view_and_comes_back() {
    let server = TestServer::start().await;
    let room = "hide-room";
    let (mut alice, _) = server.join("alice", room).await;
    let (mut bob, _) = server.join("bob", room).await;
    alice.wait_for("participant-joined").await;
    let admin = admin(room);
    let hide = |hidden: bool| {
        json!({"room": room, "identity": "alice", "permission": {
            "canPublish": true, "canSubscribe": true, "canPublishData": true, "hidden": hidden}})
    };
    let (status, p) = call(&server, &admin, "UpdateParticipant", hide(true)).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["permission"]["hidden"], true);
    // A hidden participant publishes nothing.
    assert_eq!(p["permission"]["can_publish"], false);
    assert_eq!(
        bob.wait_for("participant-left").await["participant"]["identity"],
        "alice"
    );
    assert_eq!(
        alice.wait_for("participant-updated").await["participant"]["permission"]["hidden"],
        true
    );
    // Newcomers do not see it; its own updates reach nobody else.
    let (mut carol, joined) = server.join("carol", room).await;
    let names: Vec<&str> = joined["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert_eq!(names, ["bob"], "{joined}");
    assert_eq!(
        bob.wait_for("participant-joined").await["participant"]["identity"],
        "carol"
    );
    let (status, _) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "metadata": "secret"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        alice.wait_for("participant-updated").await["participant"]["metadata"],
        "secret"
    );
    // Visible again: the others see it join.
    let (status, p) = call(&server, &admin, "UpdateParticipant", hide(false)).await;
    assert_eq!(status, 200, "{p}");
    for c in [&mut bob, &mut carol] {
        let j = c.wait_for("participant-joined").await;
        assert_eq!(j["participant"]["identity"], "alice");
        assert_eq!(j["participant"]["metadata"], "secret");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_refreshed_token_carries_what_the_api_changed() {
    let server = TestServer::start().await;
    let room = "refresh-room";
    let (mut alice, _) = server.join("alice", room).await;
    let admin = admin(room);
    let (status, p) = call(
        &server,
        &admin,
        "UpdateParticipant",
        json!({"room": room, "identity": "alice", "name": "Alice B.", "metadata": "m2",
               "attributes": {"role": "guest"},
               "permission": {"canSubscribe": true, "canPublishData": true, "canPublish": false}}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    // At once, not at the next refresh interval.
    let refreshed = alice.wait_for("token-refresh").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = jwt_claims(&refreshed);
    assert_eq!(claims["name"], "Alice B.", "{claims}");
    assert_eq!(claims["metadata"], "m2");
    assert_eq!(claims["attributes"], json!({"role": "guest"}));
    assert_eq!(claims["video"]["canPublish"], false, "{claims}");
    assert_eq!(claims["video"]["canSubscribe"], true);

    // A reconnection with the refreshed token keeps the revocation.
    alice.close().await;
    let mut again = Client::connect(&server.ws_url(&refreshed), "alice").await;
    again
        .send(json!({"type": "join", "room": room, "requestId": "j"}))
        .await;
    let joined = again.recv_type("joined").await;
    assert_eq!(
        joined["participant"]["permission"]["canPublish"], false,
        "{joined}"
    );
    assert_eq!(joined["participant"]["name"], "Alice B.");
    assert_eq!(joined["participant"]["attributes"]["role"], "guest");
    // (A send transport is allowed for data, which it may still send.)
    transport(&mut again, "send").await;
    let e = publish(&mut again, "camera", 1000, "0").await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_u64()),
        (Some("error"), Some(301)),
        "{e}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn update_subscriptions_closes_the_consumers_on_the_server() {
    let server = TestServer::start().await;
    let room = "subs-room";
    let (mut alice, _) = server.join("alice", room).await;
    let (mut bob, bob_joined) = server.join("bob", room).await;
    transport(&mut alice, "send").await;
    let published = publish(&mut alice, "camera", 1000, "0").await;
    let producer = published["track"]["producerId"].clone();
    let track_sid = published["track"]["sid"].as_str().unwrap().to_owned();
    transport(&mut bob, "recv").await;
    let subscribe = json!({"type":"subscribe","producerId":producer,
        "rtpCapabilities":bob_joined["rtpCapabilities"],"requestId":"s"});
    bob.send(subscribe.clone()).await;
    let sub = bob.wait_for("track-subscribed").await;
    let consumer = sub["consumerId"].clone();

    let (status, v) = call(
        &server,
        &admin(room),
        "UpdateSubscriptions",
        json!({"room": room, "identity": "bob", "trackSids": [track_sid], "subscribe": false}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Closed by the server, whatever the client does.
    let gone = bob.wait_for("track-unsubscribed").await;
    assert_eq!(gone["consumerId"], consumer, "{gone}");
    let told = bob.wait_for("update-subscriptions").await;
    assert_eq!(told["subscribe"], false);
    bob.send(json!({"type":"resume-consumer","consumerId":consumer,"requestId":"r"}))
        .await;
    let e = bob.wait_for("error").await;
    assert_eq!(e["requestId"], "r", "{e}");
    let (_, stats) = call(&server, &admin(room), "GetRoomStats", json!({"room": room})).await;
    let bob_stats = stats["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "bob")
        .unwrap()
        .clone();
    let consumers: usize = bob_stats["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["consumers"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(consumers, 0, "{bob_stats}");
    // As in LiveKit, the participant may subscribe again itself.
    bob.send(subscribe).await;
    assert_eq!(bob.wait_for("track-subscribed").await["requestId"], "s");
    server.shutdown().await;
}
