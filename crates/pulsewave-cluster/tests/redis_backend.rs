//! The Redis backend against a real `redis-server` (started on a free
//! loopback port, stopped after): registry, placement, room records,
//! tunnels, and what happens when a node or Redis goes away. Timings are
//! shortened so that every test ends in a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/redis.rs"]
#[macro_use]
mod redis;

use std::time::Duration;

use pulsewave_auth::{Claims, VideoGrant};
use pulsewave_cluster::fred::prelude::*;
use pulsewave_cluster::{
    Cluster, ClusterError, ClusterKey, ClusterTimings, Header, Kind, NodeConfig, Placement,
    RedisCluster, RedisManager, RedisOptions, SignedMessage, TunnelFrame,
};
use pulsewave_protocol::{RoomInfo, RoomSid};
use redis::RedisServer;
use serde_json::json;

const SECRET: &str = "the cluster secret of these tests";

fn key() -> ClusterKey {
    ClusterKey::derive(SECRET).unwrap()
}

/// Verified claims of a client of `room`, as the relay forwards them.
fn claims(identity: &str, room: &str) -> Claims {
    Claims {
        iss: "key".into(),
        sub: identity.into(),
        name: format!("{identity}'s name"),
        metadata: r#"{"team":"blue"}"#.into(),
        nbf: 0,
        exp: 4_000_000_000,
        jti: identity.into(),
        video: VideoGrant {
            room: Some(room.into()),
            room_join: true,
            can_publish: Some(false),
            ..VideoGrant::default()
        },
        attributes: Default::default(),
    }
}

fn options(redis: &RedisServer) -> RedisOptions {
    RedisOptions {
        url: Some(redis.url()),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    }
}

async fn node(redis: &RedisServer, id: &str) -> (Cluster, RedisCluster) {
    node_with(options(redis), id, key()).await
}

async fn node_with(options: RedisOptions, id: &str, key: ClusterKey) -> (Cluster, RedisCluster) {
    let conn = RedisManager::new(options).connect().await.unwrap();
    let node = NodeConfig {
        id: id.into(),
        signaling_url: format!("ws://127.0.0.1:1/{id}"),
        media_ip: "127.0.0.1".into(),
        region: "test".into(),
    };
    let rc = RedisCluster::start(conn, node, key, ClusterTimings::fast()).unwrap();
    let c = Cluster::new(rc.clone());
    wait_until(Duration::from_secs(3), || c.is_available()).await;
    (c, rc)
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        // Poll interval of a bounded wait for a state no event announces.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn room(name: &str, identities: &[&str]) -> RoomInfo {
    let participants: Vec<_> = identities
        .iter()
        .map(|id| {
            json!({
                "sid": format!("PA_{id}"), "identity": id, "name": id, "metadata": "",
                "joinedAt": 1, "permission": {"canPublish": true, "canSubscribe": true, "canPublishData": true},
                "tracks": [{"sid": format!("TR_{id}"), "producerId": format!("PR_{id}"),
                            "participantIdentity": id, "participantSid": format!("PA_{id}"),
                            "kind": "video", "source": "camera", "muted": false}]
            })
        })
        .collect();
    serde_json::from_value(json!({
        "sid": format!("RM_{name}"), "name": name, "createdAt": 1, "maxParticipants": 0,
        "participants": participants
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_a_dead_node_disappears() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, rb) = node(&redis, "node-b").await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 2);
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes[0].id, "node-a");
    assert_eq!(nodes[1].id, "node-b");
    assert_eq!(nodes[1].signaling_url, "ws://127.0.0.1:1/node-b");
    assert_eq!(nodes[1].region, "test");
    assert!(!nodes[1].draining);

    // Load and draining show up in the registry.
    b.room_updated(&room("loaded", &["x", "y"]));
    b.set_draining(true);
    eventually!(Duration::from_secs(3), {
        let n = a.nodes().await.unwrap();
        n.len() == 2
            && n[1].draining
            && n[1].participants == 2
            && n[1].tracks == 2
            && n[1].rooms == 1
    });

    // B "crashes": its connection goes away without deregistering.
    rb.connection().quit().await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 1);
    // Its room claim expires too, and A can take the room.
    eventually!(
        Duration::from_secs(4),
        a.place_room("loaded", true).await.unwrap() == Placement::Local
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_is_atomic_and_follows_the_owner() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 2);

    // Both nodes race for 20 rooms: each room gets exactly one owner.
    for i in 0..20 {
        let name = format!("race-{i}");
        let (pa, pb) = tokio::join!(a.place_room(&name, true), b.place_room(&name, true));
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        match (&pa, &pb) {
            (Placement::Local, Placement::Remote(n)) => assert_eq!(n.id, "node-a"),
            (Placement::Remote(n), Placement::Local) => assert_eq!(n.id, "node-b"),
            other => panic!("room {name}: {other:?}"),
        }
    }

    // A draining node claims nothing but still finds owners.
    assert!(matches!(
        b.place_room("fresh", false).await,
        Err(ClusterError::Draining)
    ));
    assert_eq!(a.place_room("fresh", true).await.unwrap(), Placement::Local);
    assert!(
        matches!(b.place_room("fresh", false).await.unwrap(), Placement::Remote(n) if n.id == "node-a")
    );

    // Room records are visible everywhere, and go when the room closes.
    let info = room("shown", &["alice", "bob"]);
    a.room_updated(&info);
    eventually!(Duration::from_secs(3), !b.rooms().await.unwrap().is_empty());
    let rooms = b.rooms().await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].node, "node-a");
    assert_eq!(rooms[0].room.participants.len(), 2);
    assert!(
        matches!(b.place_room("shown", true).await.unwrap(), Placement::Remote(n) if n.id == "node-a")
    );
    a.room_closed("shown", &RoomSid::from("RM_other"));
    // Another instance's close is ignored: a later update from the same node
    // shows up, and the room is still listed.
    let marker = room("marker", &["carol"]);
    a.room_updated(&marker);
    eventually!(
        Duration::from_secs(3),
        b.rooms()
            .await
            .unwrap()
            .iter()
            .any(|r| r.room.name == "marker")
    );
    assert!(
        b.rooms()
            .await
            .unwrap()
            .iter()
            .any(|r| r.room.name == "shown"),
        "another instance's close is ignored"
    );
    a.room_closed("marker", &marker.sid);
    a.room_closed("shown", &info.sid);
    eventually!(Duration::from_secs(3), b.rooms().await.unwrap().is_empty());
    assert_eq!(b.place_room("shown", true).await.unwrap(), Placement::Local);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_carry_frames_in_order_and_close_both_ways() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    let mut incoming = a.take_incoming_tunnels().unwrap();
    assert!(a.take_incoming_tunnels().is_none());

    let alice = claims("alice", "room-1");
    let mut relay = b.open_tunnel("node-a", "room-1", &alice).await.unwrap();
    let owner = tokio::time::timeout(Duration::from_secs(2), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.room, "room-1");
    assert_eq!(owner.claims, alice);
    assert_eq!(owner.end.peer_node(), "node-b");
    let mut owner_end = owner.end;

    for i in 0..200 {
        relay
            .send(TunnelFrame::Text(format!("m{i}")))
            .await
            .unwrap();
    }
    relay.send(TunnelFrame::Pong).await.unwrap();
    for i in 0..200 {
        assert_eq!(
            owner_end.recv().await,
            Some(TunnelFrame::Text(format!("m{i}")))
        );
    }
    assert_eq!(owner_end.recv().await, Some(TunnelFrame::Pong));
    owner_end
        .send(TunnelFrame::Text("reply".into()))
        .await
        .unwrap();
    owner_end.send(TunnelFrame::Ping).await.unwrap();
    assert_eq!(relay.recv().await, Some(TunnelFrame::Text("reply".into())));
    assert_eq!(relay.recv().await, Some(TunnelFrame::Ping));

    // Keepalives hold an idle tunnel open past the silence timeout. About
    // time, on short configured durations (`ClusterTimings::fast()`, real clock: the
    // tunnel runs through a real Redis): idle for longer than the timeout.
    tokio::time::sleep(ClusterTimings::fast().tunnel_timeout + Duration::from_secs(1)).await;
    owner_end
        .send(TunnelFrame::Text("still".into()))
        .await
        .unwrap();
    assert_eq!(relay.recv().await, Some(TunnelFrame::Text("still".into())));

    // Dropping one end closes the other.
    drop(owner_end);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(2), relay.recv())
            .await
            .unwrap(),
        Some(TunnelFrame::Close { .. })
    ));

    // A second tunnel, closed from the relay with a close frame.
    let relay = b.open_tunnel("node-a", "room-1", &alice).await.unwrap();
    let mut owner_end = incoming.recv().await.unwrap().end;
    relay
        .send(TunnelFrame::Close {
            code: 1000,
            reason: "bye".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        owner_end.recv().await,
        Some(TunnelFrame::Close {
            code: 1000,
            reason: "bye".into()
        })
    );

    // A node that takes no tunnels (its server is gone) refuses at once.
    drop(incoming);
    let started = tokio::time::Instant::now();
    match b.open_tunnel("node-a", "room-1", &alice).await {
        Err(ClusterError::OwnerUnreachable { detail, .. }) => {
            assert!(detail.contains("refused"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(1000));

    // Nobody listens for a node that does not exist: refused at once.
    let started = tokio::time::Instant::now();
    assert!(matches!(
        b.open_tunnel("node-nowhere", "room-1", &alice).await,
        Err(ClusterError::OwnerUnreachable { .. })
    ));
    assert!(started.elapsed() < Duration::from_millis(1000));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_lost_when_its_owner_dies() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, ra) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    let mut incoming = a.take_incoming_tunnels().unwrap();
    let mut relay = b
        .open_tunnel("node-a", "r", &claims("x", "r"))
        .await
        .unwrap();
    let _owner_end = incoming.recv().await.unwrap().end;
    // A crashes without a word.
    ra.connection().quit().await;
    let frame = tokio::time::timeout(Duration::from_secs(4), relay.recv())
        .await
        .expect("relay told within 4 s");
    assert!(
        matches!(
            frame,
            Some(TunnelFrame::Lost) | Some(TunnelFrame::Close { .. })
        ),
        "{frame:?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_tunnels_and_the_node_comes_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    let mut incoming = a.take_incoming_tunnels().unwrap();
    a.room_updated(&room("kept", &["alice"]));
    eventually!(Duration::from_secs(3), b.rooms().await.unwrap().len() == 1);
    let mut relay = b
        .open_tunnel("node-a", "kept", &claims("x", "kept"))
        .await
        .unwrap();
    let mut owner_end = incoming.recv().await.unwrap().end;

    redis.stop();
    // Both ends hear that their tunnel is gone.
    for end in [&mut relay, &mut owner_end] {
        let f = tokio::time::timeout(Duration::from_secs(3), end.recv())
            .await
            .expect("told within 3 s");
        assert!(matches!(f, Some(TunnelFrame::Lost) | None), "{f:?}");
    }
    wait_until(Duration::from_secs(2), || !a.is_available()).await;
    assert!(matches!(
        a.place_room("other", true).await,
        Err(ClusterError::Unavailable(_))
    ));

    // Redis comes back empty: the nodes re-register and A re-asserts its room.
    redis.restart();
    wait_until(Duration::from_secs(10), || {
        a.is_available() && b.is_available()
    })
    .await;
    eventually!(Duration::from_secs(5), b.nodes().await.unwrap().len() == 2);
    eventually!(Duration::from_secs(5), b.rooms().await.unwrap().len() == 1);
    assert!(
        matches!(b.place_room("kept", true).await.unwrap(), Placement::Remote(n) if n.id == "node-a")
    );
    // Tunnels work again.
    let relay = b
        .open_tunnel("node-a", "kept", &claims("x", "kept"))
        .await
        .unwrap();
    let mut owner_end = incoming.recv().await.unwrap().end;
    relay.send(TunnelFrame::Text("again".into())).await.unwrap();
    assert_eq!(
        owner_end.recv().await,
        Some(TunnelFrame::Text("again".into()))
    );
    a.shutdown().await;
    b.shutdown().await;
}

// ----------------------------------------------------------------------
// Trust: what a plain Redis client (anyone with write access to Redis, but
// without the cluster secret) can and cannot do.

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A message signed with `key` (the attacker's guess of the cluster key).
fn signed(key: &ClusterKey, kind: Kind, from: &str, to: &str, subject: &str, body: &str) -> String {
    let h = Header {
        kind,
        from,
        to,
        subject,
        seq: now_ms() * 1000,
        ts: now_ms(),
    };
    SignedMessage::sign(key, &h, body)
}

fn node_json(id: &str, media_ip: &str) -> String {
    json!({"id": id, "signalingUrl": "ws://attacker:3000", "mediaIp": media_ip, "region": "x",
           "rooms": 0, "participants": 0, "tracks": 0, "cpu": 0.0, "draining": false,
           "startedAt": 0, "updatedAt": now_ms()})
    .to_string()
}

async fn set(c: &Client, key: &str, value: String) {
    c.set::<(), _, _>(key, value, None, None, false)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_node_records_and_claims_are_never_used() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 2);
    let plain = RedisManager::new(options(&redis)).connect().await.unwrap();
    let c = plain.client();
    let attacker = ClusterKey::derive("a guessed secret").unwrap();

    // 1. An unsigned record (the format before signing) and a claim naming
    //    it: the claim is free, this node takes the room.
    set(c, "pw:node:evil", node_json("evil", "6.6.6.6")).await;
    c.sadd::<(), _, _>("pw:nodes", "evil").await.unwrap();
    set(c, "pw:room:r1:owner", "evil".into()).await;
    assert_eq!(a.place_room("r1", true).await.unwrap(), Placement::Local);

    // 2. A record and a claim in the right format, signed with another key.
    set(
        c,
        "pw:node:evil",
        signed(
            &attacker,
            Kind::Node,
            "evil",
            "*",
            "evil",
            &node_json("evil", "6.6.6.6"),
        ),
    )
    .await;
    set(
        c,
        "pw:room:r2:owner",
        signed(&attacker, Kind::Claim, "evil", "*", "r2", ""),
    )
    .await;
    let before = a.rejected_messages();
    assert_eq!(a.place_room("r2", true).await.unwrap(), Placement::Local);
    assert!(a.rejected_messages().bad_signature > before.bad_signature);
    // The record is refused by the listing too.
    assert!(a.nodes().await.unwrap().iter().all(|n| n.id != "evil"));

    // 3. node-b's genuine claim on one room copied onto another: the claim
    //    names the room it was made for, so it is refused.
    assert_eq!(
        b.place_room("b-room", true).await.unwrap(),
        Placement::Local
    );
    let genuine: String = c.get("pw:room:b-room:owner").await.unwrap();
    set(c, "pw:room:r3:owner", genuine).await;
    assert_eq!(a.place_room("r3", true).await.unwrap(), Placement::Local);
    // The genuine claim still sends clients to node-b.
    assert!(
        matches!(a.place_room("b-room", true).await.unwrap(), Placement::Remote(n) if n.id == "node-b")
    );

    // 4. node-b's record overwritten with a forged one (other media IP):
    //    placement never returns the forged address.
    set(
        c,
        "pw:node:node-b",
        signed(
            &attacker,
            Kind::Node,
            "node-b",
            "*",
            "node-b",
            &node_json("node-b", "6.6.6.6"),
        ),
    )
    .await;
    match a.place_room("b-room", false).await {
        Ok(Placement::Remote(n)) => assert_eq!(n.media_ip, "127.0.0.1", "forged record used"),
        Ok(Placement::Local) | Err(ClusterError::Draining) => {}
        other => panic!("{other:?}"),
    }

    // 5. A room open on node-a whose claim an attacker replaced: node-a's
    //    refresh takes it back, and the other nodes follow node-a again.
    let info = room("taken", &["alice"]);
    a.room_updated(&info);
    eventually!(
        Duration::from_secs(3),
        b.rooms()
            .await
            .unwrap()
            .iter()
            .any(|r| r.room.name == "taken")
    );
    set(
        c,
        "pw:room:taken:owner",
        signed(&attacker, Kind::Claim, "evil", "*", "taken", ""),
    )
    .await;
    set(
        c,
        "pw:node:evil",
        signed(
            &attacker,
            Kind::Node,
            "evil",
            "*",
            "evil",
            &node_json("evil", "6.6.6.6"),
        ),
    )
    .await;
    eventually!(
        Duration::from_secs(3),
        matches!(b.place_room("taken", false).await, Ok(Placement::Remote(n)) if n.id == "node-a")
    );

    // 6. Forged room records are not listed.
    set(c, "pw:room:fake:info", json!({"node": "evil", "sid": "RM_x", "name": "fake", "createdAt": 1, "maxParticipants": 0, "participants": []}).to_string()).await;
    c.sadd::<(), _, _>("pw:rooms", "fake").await.unwrap();
    assert!(
        b.rooms()
            .await
            .unwrap()
            .iter()
            .all(|r| r.room.name != "fake")
    );
    assert!(b.rejected_messages().total() > 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_tunnel_messages_are_refused() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let (b, _) = node(&redis, "node-b").await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 2);
    let mut incoming = a.take_incoming_tunnels().unwrap();
    // The attacker reads everything published to node-a's sessions.
    let wire = redis.subscribe("pw:node:node-a:in");
    let next_on_wire =
        || String::from_utf8(wire.recv_timeout(Duration::from_secs(3)).unwrap()).unwrap();

    let alice = claims("alice", "room-1");
    let relay = b.open_tunnel("node-a", "room-1", &alice).await.unwrap();
    let tunnel = relay.id().to_owned();
    let open = loop {
        let m = next_on_wire();
        if m.contains(r#""op":"open""#) {
            break m;
        }
    };
    // The relay forwards verified claims, never a token.
    assert!(open.starts_with("pw1 t-in node-b node-a "), "{open}");
    assert!(
        open.contains(r#""sub":"alice""#) && !open.contains("eyJ"),
        "{open}"
    );
    let mut owner = incoming.recv().await.unwrap();
    assert_eq!(owner.claims, alice);

    relay
        .send(TunnelFrame::Text("legit-1".into()))
        .await
        .unwrap();
    assert_eq!(
        owner.end.recv().await,
        Some(TunnelFrame::Text("legit-1".into()))
    );
    let legit = loop {
        let m = next_on_wire();
        if m.contains("legit-1") {
            break m;
        }
    };
    let before = a.rejected_messages();
    let attacker = ClusterKey::derive("a guessed secret").unwrap();
    let body = json!({"op": "msg", "text": "forged"}).to_string();
    let forged = [
        // The format before signing: JSON naming the tunnel and node-b.
        json!({"tunnel": tunnel, "from": "node-b", "op": "msg", "text": "forged"}).to_string(),
        // A captured frame with its text changed.
        legit.replace("legit-1", "forged!"),
        // Signed with a wrong key.
        signed(&attacker, Kind::ToOwner, "node-b", "node-a", &tunnel, &body),
        // A replay of the captured frame, as is.
        legit.clone(),
        // A new tunnel, signed with a wrong key.
        signed(&attacker, Kind::ToOwner, "node-b", "node-a", "0123456789abcdef",
               &json!({"op": "open", "room": "room-1", "claims": {"sub": "mallory", "exp": 4000000000u64, "video": {"room": "room-1", "roomJoin": true}}}).to_string()),
        // A replay of the captured open.
        open.clone(),
    ];
    for f in &forged {
        // node-a and the attacker's own subscription receive it.
        assert_eq!(redis.publish("pw:node:node-a:in", f.as_bytes()), 2);
    }
    // Frames of one channel arrive in order: once this one is through, the
    // forged ones were handled (and dropped) before it.
    relay
        .send(TunnelFrame::Text("legit-2".into()))
        .await
        .unwrap();
    assert_eq!(
        owner.end.recv().await,
        Some(TunnelFrame::Text("legit-2".into()))
    );
    let after = a.rejected_messages();
    assert_eq!(after.malformed - before.malformed, 1, "{after:?}");
    assert_eq!(after.bad_signature - before.bad_signature, 3, "{after:?}");
    assert_eq!(after.replayed - before.replayed, 2, "{after:?}");
    assert!(
        incoming.try_recv().is_err(),
        "a forged or replayed open was accepted"
    );

    // A frame for the relay, forged the same way, does not reach it either.
    let mut relay = relay;
    let to_relay = signed(&attacker, Kind::ToRelay, "node-a", "node-b", &tunnel, &body);
    assert_eq!(redis.publish("pw:node:node-b:out", to_relay.as_bytes()), 1);
    owner
        .end
        .send(TunnelFrame::Text("reply".into()))
        .await
        .unwrap();
    assert_eq!(relay.recv().await, Some(TunnelFrame::Text("reply".into())));
    assert!(b.rejected_messages().bad_signature >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cluster_secret_is_not_trusted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _) = node(&redis, "node-a").await;
    let mut incoming = a.take_incoming_tunnels().unwrap();
    let other = ClusterKey::derive("another cluster's secret").unwrap();
    let (c, _) = node_with(options(&redis), "node-c", other).await;
    // node-c registers, but node-a does not list it, nor runs its tunnels.
    eventually!(Duration::from_secs(3), c.nodes().await.unwrap().len() == 1);
    assert!(a.nodes().await.unwrap().iter().all(|n| n.id != "node-c"));
    assert!(matches!(
        c.open_tunnel("node-a", "r", &claims("x", "r")).await,
        Err(ClusterError::OwnerUnreachable { .. })
    ));
    assert!(incoming.try_recv().is_err());
    // A room node-c claims is free for node-a.
    assert_eq!(
        c.place_room("c-room", true).await.unwrap(),
        Placement::Local
    );
    assert_eq!(
        a.place_room("c-room", true).await.unwrap(),
        Placement::Local
    );
    // A rotation: a node that also accepts the other secret trusts node-c.
    let rotating = key().also_accept("another cluster's secret").unwrap();
    let (d, _) = node_with(options(&redis), "node-d", rotating).await;
    eventually!(
        Duration::from_secs(3),
        d.nodes().await.unwrap().iter().any(|n| n.id == "node-c")
    );
    a.shutdown().await;
    c.shutdown().await;
    d.shutdown().await;
}

/// A throwaway CA and a certificate for `localhost` it issued, as PEM files
/// in `dir`: (ca, cert, key).
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("redis.pem"),
        dir.join("redis.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_an_acl_user_works_and_a_wrong_password_is_refused() {
    let dir = std::env::temp_dir().join(format!("pw-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key_file) = certificates(&dir);
    let log = dir.join("redis.log");
    let arg = |s: &str| s.to_owned();
    let args = vec![
        arg("--tls-port"),
        arg("{port}"),
        arg("--tls-cert-file"),
        cert.display().to_string(),
        arg("--tls-key-file"),
        key_file.display().to_string(),
        arg("--tls-ca-cert-file"),
        ca.display().to_string(),
        arg("--tls-auth-clients"),
        arg("no"),
        // No anonymous access; one user limited to PulseWave's keys and
        // channels, without the dangerous commands (docs/cluster.md).
        arg("--user"),
        arg("default"),
        arg("off"),
        arg("--user"),
        arg("pulsewave"),
        arg("on"),
        arg(">node-password"),
        arg("~pw:*"),
        arg("&pw:*"),
        arg("+@all"),
        arg("-@dangerous"),
    ];
    let Some(mut redis) = RedisServer::start_with(args, true, Some(log.clone())) else {
        return;
    };
    assert!(
        redis.running(),
        "redis-server did not start with TLS (built without TLS support?); its output:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let url = |user_pw: &str| format!("rediss://{user_pw}@localhost:{}", redis.port());
    let tls = |url: String| RedisOptions {
        url: Some(url),
        tls_ca: Some(ca.clone()),
        connect_timeout: Duration::from_secs(3),
        command_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    };

    // Two nodes over TLS as the ACL user: registry, placement, a tunnel.
    let good = tls(url("pulsewave:node-password"));
    let (a, _) = node_with(good.clone(), "node-a", key()).await;
    // The user name can come apart from the URL too (REDIS_USERNAME).
    let split = RedisOptions {
        username: Some("pulsewave".into()),
        password: Some("node-password".into()),
        ..tls(format!("rediss://localhost:{}", redis.port()))
    };
    let (b, _) = node_with(split, "node-b", key()).await;
    eventually!(Duration::from_secs(3), a.nodes().await.unwrap().len() == 2);
    let mut incoming = a.take_incoming_tunnels().unwrap();
    assert_eq!(
        a.place_room("tls-room", true).await.unwrap(),
        Placement::Local
    );
    assert!(
        matches!(b.place_room("tls-room", true).await.unwrap(), Placement::Remote(n) if n.id == "node-a")
    );
    let relay = b
        .open_tunnel("node-a", "tls-room", &claims("x", "tls-room"))
        .await
        .unwrap();
    let mut owner = incoming.recv().await.unwrap().end;
    relay
        .send(TunnelFrame::Text("over tls".into()))
        .await
        .unwrap();
    assert_eq!(
        owner.recv().await,
        Some(TunnelFrame::Text("over tls".into()))
    );

    // A wrong password is refused at once, and says so.
    let started = tokio::time::Instant::now();
    match RedisManager::new(tls(url("pulsewave:wrong")))
        .connect()
        .await
    {
        Err(ClusterError::Auth(detail)) => {
            assert!(started.elapsed() < Duration::from_secs(3));
            assert!(
                detail.contains("WRONGPASS") || detail.contains("invalid username-password"),
                "{detail}"
            );
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    // Without the CA, the server's certificate is not trusted.
    let untrusted = RedisOptions {
        tls_ca: None,
        connect_timeout: Duration::from_millis(1500),
        ..good.clone()
    };
    assert!(RedisManager::new(untrusted).connect().await.is_err());
    // A CA for a plain redis:// URL is a configuration error.
    let bad = RedisOptions {
        url: Some(redis.url()),
        ..good.clone()
    };
    assert!(matches!(
        RedisManager::new(bad).connect().await,
        Err(ClusterError::Config(_))
    ));
    a.shutdown().await;
    b.shutdown().await;
    redis.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
