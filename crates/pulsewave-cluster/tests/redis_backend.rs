//! The Redis backend against a real `redis-server` (started on a free
//! loopback port, stopped after): registry, placement, room records,
//! tunnels, and what happens when a node or Redis goes away. Timings are
//! shortened so that every test ends in a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/redis.rs"]
mod redis;

use std::time::Duration;

use pulsewave_cluster::{
    Cluster, ClusterError, ClusterTimings, NodeConfig, Placement, RedisCluster, RedisManager,
    RedisOptions, TunnelFrame,
};
use pulsewave_protocol::{RoomInfo, RoomSid};
use redis::RedisServer;
use serde_json::json;

fn timings() -> ClusterTimings {
    ClusterTimings {
        heartbeat: Duration::from_millis(200),
        node_ttl: Duration::from_millis(1000),
        room_ttl: Duration::from_millis(2000),
        room_refresh: Duration::from_millis(500),
        tunnel_keepalive: Duration::from_millis(300),
        tunnel_timeout: Duration::from_millis(1500),
        tunnel_open_timeout: Duration::from_millis(1500),
        command_timeout: Duration::from_millis(1000),
        resync_grace: Duration::from_millis(800),
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
    let conn = RedisManager::new(options(redis)).connect().await.unwrap();
    let node = NodeConfig {
        id: id.into(),
        signaling_url: format!("ws://127.0.0.1:1/{id}"),
        media_ip: "127.0.0.1".into(),
        region: "test".into(),
    };
    let rc = RedisCluster::start(conn, node, timings()).unwrap();
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
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls an async condition every 50 ms for up to `limit`.
macro_rules! eventually {
    ($limit:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + $limit;
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not true within {:?}: {}",
                $limit,
                stringify!($cond)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.rooms().await.unwrap().len(),
        1,
        "another instance's close is ignored"
    );
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

    let mut relay = b
        .open_tunnel("node-a", "room-1", "the-token")
        .await
        .unwrap();
    let owner = tokio::time::timeout(Duration::from_secs(2), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.room, "room-1");
    assert_eq!(owner.token, "the-token");
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

    // Keepalives hold an idle tunnel open past the silence timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
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
    let relay = b.open_tunnel("node-a", "room-1", "t2").await.unwrap();
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
    match b.open_tunnel("node-a", "room-1", "t3").await {
        Err(ClusterError::OwnerUnreachable { detail, .. }) => {
            assert!(detail.contains("refused"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(1000));

    // Nobody listens for a node that does not exist: refused at once.
    let started = tokio::time::Instant::now();
    assert!(matches!(
        b.open_tunnel("node-nowhere", "room-1", "t").await,
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
    let mut relay = b.open_tunnel("node-a", "r", "t").await.unwrap();
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
    let mut relay = b.open_tunnel("node-a", "kept", "t").await.unwrap();
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
    let relay = b.open_tunnel("node-a", "kept", "t").await.unwrap();
    let mut owner_end = incoming.recv().await.unwrap().end;
    relay.send(TunnelFrame::Text("again".into())).await.unwrap();
    assert_eq!(
        owner_end.recv().await,
        Some(TunnelFrame::Text("again".into()))
    );
    a.shutdown().await;
    b.shutdown().await;
}
