//! The multi-node topology with processes, as `deploy/docker-compose.yml`
//! runs it: a real `redis-server` (started on a free loopback port, stopped
//! after) and two `pulsewave-server` processes with `REDIS_ENABLED=true`.
//! Clients are the Rust client with reconnection on; a tiny TCP balancer
//! stands in for the load balancer where a client must land on another node
//! after a failure.
//!
//! Every wait is bounded; every process is stopped by PID when its guard
//! drops.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../crates/pulsewave-cluster/tests/support/redis.rs"]
mod redis;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{
    Client, ClientError, ClientEvent, LocalTrackHandle, ReconnectPolicy, parse_synthetic,
};
use pulsewave_protocol::{DataKind, DisconnectReason, ProducerId, ServerMessage};
use redis::RedisServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_pulsewave-server");
const KEY: &str = "clusterkey";
const SECRET: &str = "clustersecret-0123456789";
/// Longest wait for one expected thing in a healthy cluster.
const WAIT: Duration = Duration::from_secs(10);
/// Longest wait for a room to come back after a failure.
const RECOVERY: Duration = Duration::from_secs(30);

/// A free loopback port for a node's HTTP listener, never one this process
/// handed out before (tests run in parallel), and below the kernel's
/// ephemeral range (32768 and up on Linux) and the media ranges (20000 and
/// up): an outgoing connection (a node's Redis client, a test's client)
/// never takes it between this check and the node's bind.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((u64::from(rand_u16()) + n * 7919) % 10_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

// ----------------------------------------------------------------------
// Server processes

/// One `pulsewave-server` process, killed by PID when dropped.
struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Node {
    fn start(id: &str, redis: &RedisServer, extra: &[(&str, &str)]) -> Node {
        let port = free_port();
        let media = 20000 + (rand_u16() % 200) * 100;
        let dir =
            std::env::temp_dir().join(format!("pw-cluster-{}-{id}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("API_KEY", KEY)
            .env("API_SECRET", SECRET)
            .env("REDIS_ENABLED", "true")
            .env("REDIS_URL", redis.url())
            .env("NODE_ID", id)
            .env("NODE_REGION", "test")
            .env("MEDIASOUP_NUM_WORKERS", "1")
            .env("MEDIASOUP_MIN_PORT", media.to_string())
            .env("MEDIASOUP_MAX_PORT", (media + 99).to_string())
            .env("ROOM_EMPTY_TIMEOUT", "2s")
            .env(
                "RUST_LOG",
                "info,pulsewave_cluster=debug,pulsewave_signal=debug",
            )
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pulsewave-server");
        Node {
            id: id.to_owned(),
            port,
            child: Some(child),
            log,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until the node answers `/healthz` with Redis connected.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, v)) = http_get(self.addr(), "/healthz", false).await
                && v["clusterStore"] == "connected"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready; log:\n{}",
                self.id,
                self.log_text()
            );
            // Poll interval of a bounded wait for /healthz (a child process announces nothing).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: the node dies without a word.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: graceful drain, then shutdown.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit.
    async fn exited(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait().unwrap()
            {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; log:\n{}",
                self.id,
                self.log_text()
            );
            // Poll interval of a bounded wait for the process to exit.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("---- log of {} ----\n{}", self.id, self.log_text());
        }
        self.kill();
        if !panicking && let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_u16() -> u16 {
    // No extra crate: the clock's nanoseconds and the PID are random enough
    // to spread media port ranges across concurrent tests.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos / 1000) as u16) ^ (std::process::id() as u16)
}

async fn cluster(redis: &RedisServer, extra: &[(&str, &str)]) -> (Node, Node) {
    let a = Node::start("node-a", redis, extra);
    let b = Node::start("node-b", redis, extra);
    a.ready().await;
    b.ready().await;
    (a, b)
}

// ----------------------------------------------------------------------
// HTTP

fn basic() -> String {
    // base64 of "clusterkey:clustersecret-0123456789"
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{KEY}:{SECRET}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// `GET path`; the status and the JSON body.
async fn http_get(addr: SocketAddr, path: &str, auth: bool) -> std::io::Result<(u16, Value)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    let auth = if auth {
        format!("Authorization: {}\r\n", basic())
    } else {
        String::new()
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("read timeout"))??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

async fn rooms(node: &Node) -> Vec<Value> {
    match http_get(node.addr(), "/api/rooms", true).await {
        Ok((200, v)) => v["rooms"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn room_on(node: &Node, name: &str) -> Option<Value> {
    rooms(node).await.into_iter().find(|r| r["name"] == name)
}

// ----------------------------------------------------------------------
// Clients

fn token(identity: &str, room: &str) -> String {
    let mut t = AccessToken::new(
        KEY,
        SECRET,
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

/// A client whose events are read by a task: RTP packets are counted,
/// everything else is queued for the test.
struct Peer {
    name: String,
    client: Arc<Client>,
    rtp: Arc<AtomicU64>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    _reader: AbortOnDrop,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Peer {
    async fn join(url: &str, identity: &str, room: &str) -> Peer {
        let mut client = Client::builder()
            .request_timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5))
            .reconnect(ReconnectPolicy {
                min_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
                give_up_after: Duration::from_secs(60),
            })
            .connect(url, &token(identity, room))
            .await
            .unwrap_or_else(|e| panic!("{identity}: connect to {url}: {e}"));
        client
            .join(room)
            .await
            .unwrap_or_else(|e| panic!("{identity}: join {room}: {e}"));
        let mut rx = client.events().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let rtp = Arc::new(AtomicU64::new(0));
        let counter = rtp.clone();
        let reader = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                match e {
                    ClientEvent::Rtp(p) => {
                        if parse_synthetic(&p.payload).is_some_and(|i| i.intact) {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        let _ = tx.send(other);
                    }
                }
            }
        });
        Peer {
            name: identity.to_owned(),
            client: Arc::new(client),
            rtp,
            events,
            _reader: AbortOnDrop(reader),
        }
    }

    fn rtp(&self) -> u64 {
        self.rtp.load(Ordering::Relaxed)
    }

    /// Waits for an event `f` maps to `Some`, dropping the others.
    async fn wait<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Ok(None) => panic!("{}: client closed", self.name),
                Err(_) => panic!("{}: expected event not seen within {within:?}", self.name),
            }
        }
    }

    async fn track_published(&mut self) -> ProducerId {
        self.wait(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::TrackPublished { track }) => {
                Some(track.producer_id.clone())
            }
            _ => None,
        })
        .await
    }

    async fn data(&mut self, within: Duration) -> (String, Value) {
        self.wait(within, |e| match e {
            ClientEvent::Signal(ServerMessage::Data {
                participant_identity,
                data,
                ..
            }) => Some((participant_identity.clone(), data.clone())),
            _ => None,
        })
        .await
    }

    /// Waits until at least `n` more RTP packets arrived.
    async fn receives(&self, n: u64, within: Duration) {
        let start = self.rtp();
        let deadline = Instant::now() + within;
        while self.rtp() < start + n {
            assert!(
                Instant::now() < deadline,
                "{}: {} packets within {within:?}, wanted {n}",
                self.name,
                self.rtp() - start
            );
            // Poll interval of a bounded wait for a packet count.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a reconnection event is queued.
    fn reconnected_so_far(&mut self) -> bool {
        let mut seen = false;
        while let Ok(e) = self.events.try_recv() {
            seen |= matches!(
                e,
                ClientEvent::Reconnecting { .. } | ClientEvent::Reconnected { .. }
            );
        }
        seen
    }
}

/// Sends synthetic media on `track` until dropped; errors (while
/// reconnecting) are ignored.
fn send_media(mut track: LocalTrackHandle) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut source = track.synthetic_source();
        loop {
            for p in source.tick().await {
                if let Err(ClientError::Closed) = track.send_synthetic(&p).await {
                    // Pacing a sender while its client reconnects (not a wait before an assertion).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

// ----------------------------------------------------------------------
// A tiny load balancer

/// Accepts on a loopback port and forwards each connection to the first
/// backend, in preference order, that accepts a TCP connection.
struct Balancer {
    addr: SocketAddr,
    _task: AbortOnDrop,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for b in backends {
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(b))
                                .await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer {
            addr,
            _task: AbortOnDrop(task),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

// ----------------------------------------------------------------------
// Tests

/// Clients joining the same room through different nodes are in one room:
/// they see each other, exchange media (over the owner's UDP) and data, and
/// every node lists the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_share_a_room() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = cluster(&redis, &[]).await;

    let mut alice = Peer::join(&a.url(), "alice", "shared").await;
    let mut bob = Peer::join(&b.url(), "bob", "shared").await;
    let joined = bob.client.joined().unwrap().clone();
    assert_eq!(
        joined.room.participants.len(),
        1,
        "bob, relayed to node-a, sees alice"
    );
    assert_eq!(joined.room.participants[0].identity, "alice");
    alice
        .wait(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantJoined { participant }) => {
                (participant.identity == "bob").then_some(())
            }
            _ => None,
        })
        .await;

    // Media both ways: alice's video to bob, bob's audio to alice.
    let video = alice.client.publish_video("video/VP8").await.unwrap();
    let _alice_sends = send_media(video);
    let pid = bob.track_published().await;
    bob.client.subscribe(&pid).await.unwrap();
    bob.receives(50, WAIT).await;
    let audio = bob.client.publish_audio().await.unwrap();
    let _bob_sends = send_media(audio);
    let pid = alice.track_published().await;
    alice.client.subscribe(&pid).await.unwrap();
    alice.receives(20, WAIT).await;

    // Data both ways.
    bob.client
        .publish_data(DataKind::Reliable, json!({"from": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        alice.data(WAIT).await,
        ("bob".to_owned(), json!({"from": "bob"}))
    );
    alice
        .client
        .publish_data(DataKind::Reliable, json!({"from": "alice"}))
        .await
        .unwrap();
    assert_eq!(
        bob.data(WAIT).await,
        ("alice".to_owned(), json!({"from": "alice"}))
    );

    // The admin listing, from either node: one room on node-a, two
    // participants, two tracks.
    let deadline = Instant::now() + WAIT;
    let room = loop {
        if let Some(r) = room_on(&b, "shared").await
            && r["participants"].as_array().map(Vec::len) == Some(2)
            && r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["tracks"].as_array().map(Vec::len) == Some(1))
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "room listing never showed both tracks: {:?}",
            rooms(&b).await
        );
        // Poll interval of a bounded wait for the listing (Redis announces nothing).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(room["node"], "node-a");
    assert_eq!(room_on(&a, "shared").await.unwrap()["node"], "node-a");
    let (status, _) = http_get(b.addr(), "/api/rooms", false).await.unwrap();
    assert_eq!(status, 401, "the listing needs API_KEY:API_SECRET");
    let (status, nodes) = http_get(a.addr(), "/api/nodes", true).await.unwrap();
    assert_eq!(status, 200);
    let nodes = nodes["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["id"], "node-a");
    assert_eq!(nodes[0]["rooms"], 1);
    assert_eq!(nodes[0]["participants"], 2);
    assert_eq!(nodes[1]["id"], "node-b");
    assert_eq!(nodes[1]["rooms"], 0);
    assert_eq!(nodes[1]["region"], "test");
}

/// The owning node dies: its claims expire, both clients reconnect (one
/// through a balancer that now finds only node-b), the room is placed on
/// node-b, tracks are republished and resubscribed, and media and data flow
/// again. A room living on node-b all along is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_moves_to_a_live_node_when_its_owner_dies() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (mut a, b) = cluster(&redis, &[]).await;
    let lb_alice = Balancer::start(vec![a.addr(), b.addr()]).await;
    let lb_bob = Balancer::start(vec![b.addr(), a.addr()]).await;

    let mut alice = Peer::join(&lb_alice.url(), "alice", "moving").await;
    let mut bob = Peer::join(&lb_bob.url(), "bob", "moving").await;
    let _alice_sends = send_media(alice.client.publish_video("video/VP8").await.unwrap());
    let pid = bob.track_published().await;
    bob.client.subscribe(&pid).await.unwrap();
    bob.receives(30, WAIT).await;
    assert_eq!(room_on(&b, "moving").await.unwrap()["node"], "node-a");

    // A bystander room on node-b, with its own media.
    let carol = Peer::join(&b.url(), "carol", "bystander").await;
    let mut dave = Peer::join(&b.url(), "dave", "bystander").await;
    let _carol_sends = send_media(carol.client.publish_audio().await.unwrap());
    let pid = dave.track_published().await;
    dave.client.subscribe(&pid).await.unwrap();
    dave.receives(10, WAIT).await;

    let killed = Instant::now();
    a.kill();
    // Bob is told (migration), reconnects, finds the room on node-b and
    // gets alice's republished video.
    bob.wait(RECOVERY, |e| {
        matches!(e, ClientEvent::Reconnected { .. }).then_some(())
    })
    .await;
    bob.wait(RECOVERY, |e| matches!(e, ClientEvent::Resubscribed { participant_identity, .. } if participant_identity == "alice").then_some(()))
        .await;
    bob.receives(30, RECOVERY).await;
    let recovered = killed.elapsed();
    eprintln!("media flowed again {recovered:?} after node-a died");

    let room = room_on(&b, "moving").await.unwrap();
    assert_eq!(room["node"], "node-b");
    assert_eq!(room["participants"].as_array().unwrap().len(), 2);
    // Alice, whose socket died with node-a, came back through her balancer
    // and republished.
    alice
        .wait(WAIT, |e| {
            matches!(e, ClientEvent::Republished { .. }).then_some(())
        })
        .await;
    alice
        .client
        .publish_data(DataKind::Reliable, json!("after"))
        .await
        .unwrap();
    assert_eq!(bob.data(WAIT).await, ("alice".to_owned(), json!("after")));

    // The bystander room never noticed.
    dave.receives(10, WAIT).await;
    assert!(
        !dave.reconnected_so_far(),
        "dave's room on node-b was not affected"
    );
}

/// Redis goes away under a running room and comes back empty: media keeps
/// flowing for clients of the owning node, a WebSocket for a room the node
/// cannot place gets 503, a join into the running room still works, and
/// once Redis is back the nodes re-register, the room is listed again and
/// a client relayed from the other node works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_keeps_flowing_while_redis_restarts() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = cluster(&redis, &[]).await;
    let alice = Peer::join(&a.url(), "alice", "steady").await;
    let mut bob = Peer::join(&a.url(), "bob", "steady").await;
    let mut carol = Peer::join(&b.url(), "carol", "steady").await;
    let _alice_sends = send_media(alice.client.publish_video("video/VP8").await.unwrap());
    let pid = bob.track_published().await;
    bob.client.subscribe(&pid).await.unwrap();
    let pid = carol.track_published().await;
    carol.client.subscribe(&pid).await.unwrap();
    bob.receives(30, WAIT).await;
    carol.receives(30, WAIT).await;

    redis.stop();
    // Media does not touch Redis.
    bob.receives(60, WAIT).await;
    // node-b cannot place a room it does not have: 503 with a JSON reason.
    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        let url = format!("{}/?token={}", b.url(), token("erin", "elsewhere"));
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let body = res
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                break (res.status().as_u16(), body);
            }
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "node-b kept accepting new rooms without Redis"
                );
                // Retry interval of a bounded wait for node-b to notice Redis is gone.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("Redis"), "{body}");
    // The running room still takes joins on its node.
    let frank = Peer::join(&a.url(), "frank", "steady").await;
    let present: Vec<String> = frank
        .client
        .joined()
        .unwrap()
        .room
        .participants
        .iter()
        .map(|p| p.identity.clone())
        .collect();
    // Carol's relayed session ended with the tunnel; alice and bob are there.
    assert!(
        present.contains(&"alice".to_owned()) && present.contains(&"bob".to_owned()),
        "{present:?}"
    );
    bob.receives(30, WAIT).await;

    redis.restart();
    // The nodes come back: registry and room record are rebuilt.
    let deadline = Instant::now() + RECOVERY;
    loop {
        if let Some(r) = room_on(&b, "steady").await
            && r["node"] == "node-a"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "room never listed again after Redis came back"
        );
        // Poll interval of a bounded wait for the listing to come back.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Carol, relayed through node-b, lost her tunnel with Redis; she is back
    // in the room and receives the video again.
    carol
        .wait(RECOVERY, |e| {
            matches!(e, ClientEvent::Resubscribed { .. }).then_some(())
        })
        .await;
    carol.receives(30, RECOVERY).await;
    // Bob, on the owning node, never had to reconnect.
    bob.receives(30, WAIT).await;
    assert!(
        !bob.reconnected_so_far(),
        "bob's session on node-a survived the Redis restart"
    );
}

/// SIGTERM drains: the node says so in the registry and `/healthz`, takes
/// no new room, still serves the rooms it has, and exits once they are
/// empty. With rooms that do not empty, it exits at DRAIN_TIMEOUT, telling
/// participants `server-shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start("node-a", &redis, &[("DRAIN_TIMEOUT", "30s")]);
    let mut b = Node::start("node-b", &redis, &[("DRAIN_TIMEOUT", "2s")]);
    a.ready().await;
    b.ready().await;

    let alice = Peer::join(&a.url(), "alice", "finishing").await;
    a.terminate();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = http_get(a.addr(), "/healthz", false).await.unwrap();
        let (_, nodes) = http_get(b.addr(), "/api/nodes", true).await.unwrap();
        let a_draining = nodes["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["id"] == "node-a" && n["draining"] == true)
        });
        if status == 503 && v["status"] == "draining" && a_draining {
            break;
        }
        assert!(Instant::now() < deadline, "node-a never showed as draining");
        // Poll interval of a bounded wait for the draining state.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No new room on node-a...
    let url = format!("{}/?token={}", a.url(), token("erin", "fresh"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503)
        }
        other => panic!("a draining node took a new room: {:?}", other.map(|_| ())),
    }
    // ...but its rooms still take participants, and new rooms go elsewhere.
    let erin = Peer::join(&a.url(), "erin", "finishing").await;
    let _fresh = Peer::join(&b.url(), "frank", "fresh").await;
    assert_eq!(
        room_on(&b, "fresh").await.map(|r| r["node"].clone()),
        Some(json!("node-b"))
    );

    // The room empties: node-a exits well before its 30 s deadline.
    alice.client.leave().await.unwrap();
    erin.client.leave().await.unwrap();
    let status = a.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");

    // node-b's room does not empty: it exits at its 2 s deadline and tells
    // frank.
    let mut frank = _fresh;
    let started = Instant::now();
    b.terminate();
    frank
        .wait(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::Disconnected { reason }) => {
                (*reason == DisconnectReason::ServerShutdown).then_some(())
            }
            _ => None,
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not drained first"
    );
    let status = b.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}

// ----------------------------------------------------------------------
// A relayed client that stops reading

type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn raw_join(url: &str, identity: &str, room: &str, small_buffer: bool) -> RawWs {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let full = format!("{url}/?token={}", token(identity, room));
    let mut ws = if small_buffer {
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        tokio_tungstenite::client_async(
            full.as_str(),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap()
        .0
    } else {
        tokio_tungstenite::connect_async(full.as_str())
            .await
            .unwrap()
            .0
    };
    ws.send(Message::text(
        json!({"type":"join","room":room}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no joined")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_ne!(v["type"], "error", "{identity}: {v}");
            if v["type"] == "joined" {
                return ws;
            }
        }
    }
}

/// WS_SEND_TIMEOUT 1 s on both nodes: a client relayed through node-b that
/// stops reading is dropped by the relay (which tells the owner), the
/// others see it leave, and they get every message meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_client_that_stops_reading_is_disconnected() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = [
        ("WS_SEND_TIMEOUT", "1s"),
        ("OUTBOUND_QUEUE", "100000"),
        ("RATE_LIMIT", "10000"),
        ("RATE_LIMIT_BURST", "10000"),
    ];
    let (a, b) = cluster(&redis, &env).await;
    let mut fast = raw_join(&a.url(), "fast", "flood", false).await;
    let mut sender = raw_join(&a.url(), "sender", "flood", false).await;
    // Relayed: the room lives on node-a.
    let _slow = raw_join(&b.url(), "slow", "flood", true).await;
    let payload = "x".repeat(30_000);
    let n = 300;
    let started = Instant::now();
    let flood = async {
        for i in 0..n {
            let m = json!({"type":"publish-data","kind":"reliable","data":{"i":i,"p":payload}});
            sender.send(Message::text(m.to_string())).await.unwrap();
        }
    };
    let receive = async {
        let (mut got, mut left) = (0, None);
        while got < n || left.is_none() {
            let m = tokio::time::timeout(WAIT, fast.next())
                .await
                .expect("fast stalled")
                .unwrap()
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["type"].as_str() {
                Some("data") => {
                    assert_eq!(v["data"]["i"], got);
                    got += 1;
                }
                Some("participant-left") if v["participant"]["identity"] == "slow" => {
                    left = Some(started.elapsed());
                }
                _ => {}
            }
        }
        left.unwrap()
    };
    let ((), left) = tokio::time::timeout(RECOVERY, async { tokio::join!(flood, receive) })
        .await
        .expect("the room stalled behind a relayed slow reader");
    assert!(left < Duration::from_secs(15), "slow left after {left:?}");
}

/// What an attacker with write access to Redis (a plain client, without the
/// cluster secret) sees and can do to a relayed session: the wire carries
/// no token; a forged frame and a replayed valid frame published on the
/// owner's channel never reach the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_frames_never_reach_the_room() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = cluster(&redis, &[]).await;
    let mut alice = Peer::join(&a.url(), "alice", "guarded").await;
    // The attacker listens to node-a's tunnel channel before bob connects.
    let wire = redis.subscribe("pw:node:node-a:in");
    let bob = Peer::join(&b.url(), "bob", "guarded").await;
    let mut seen = Vec::new();
    let mut captured = |marker: &str| -> String {
        loop {
            let m = String::from_utf8(wire.recv_timeout(WAIT).expect("tunnel traffic")).unwrap();
            seen.push(m.clone());
            if m.contains(marker) {
                return m;
            }
        }
    };
    let open = captured(r#""op":"open""#);
    assert!(open.contains(r#""sub":"bob""#), "{open}");

    bob.client
        .publish_data(DataKind::Reliable, json!({"m": "legit-1"}))
        .await
        .unwrap();
    assert_eq!(
        alice.data(WAIT).await,
        ("bob".to_owned(), json!({"m": "legit-1"}))
    );
    let legit = captured("legit-1");
    // The frame: header line, tunnel id, body {"op":"msg","text":"<signaling>"}.
    let mut lines = legit.splitn(3, '\n');
    let (_header, tunnel, body) = (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    );
    let text = serde_json::from_str::<Value>(body).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged_text = text.replace("legit-1", "forged");
    let forged = [
        // Unsigned, as the cluster spoke before it signed.
        json!({"tunnel": tunnel, "from": "node-b", "op": "msg", "text": forged_text}).to_string(),
        // The captured frame, altered.
        legit.replace("legit-1", "forged"),
        // The captured frame, replayed as is.
        legit.clone(),
    ];
    for f in &forged {
        assert!(redis.publish("pw:node:node-a:in", f.as_bytes()) >= 1);
    }
    // The channel is ordered: the next data alice gets is bob's next one.
    bob.client
        .publish_data(DataKind::Reliable, json!({"m": "legit-2"}))
        .await
        .unwrap();
    assert_eq!(
        alice.data(WAIT).await,
        ("bob".to_owned(), json!({"m": "legit-2"})),
        "a forged or replayed frame reached the room"
    );
    captured("legit-2");
    assert!(
        seen.iter().all(|m| !m.contains("eyJ")),
        "an access token went through Redis"
    );
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("refused a cluster message that does not verify"),
        "{}",
        a.log_text()
    );
}

// ----------------------------------------------------------------------
// Session resume through the relay

/// Reads `ws` until a text message `pred` accepts; fails on one `fail` does.
async fn raw_until(
    ws: &mut RawWs,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
    mut fail: impl FnMut(&Value) -> bool,
) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {what}"))
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert!(!fail(&v), "while waiting for {what}: {v}");
            if pred(&v) {
                return v;
            }
        }
    }
}

async fn raw_send(ws: &mut RawWs, v: Value) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Bob joins on node-a (the room's owner), his socket drops, and he comes
/// back through node-b (relayed to node-a) with his resume token: the same
/// sid, the data message sent while he was away replayed, and alice never
/// sees him leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_through_another_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = cluster(&redis, &[]).await;
    let mut alice = raw_join(&a.url(), "alice", "hop", false).await;
    let (mut bob, _) =
        tokio_tungstenite::connect_async(format!("{}/?token={}", a.url(), token("bob", "hop")))
            .await
            .unwrap();
    raw_send(&mut bob, json!({"type":"join","room":"hop","requestId":1})).await;
    let joined = raw_until(&mut bob, "joined", |v| v["type"] == "joined", |_| false).await;
    let sid = joined["participant"]["sid"].as_str().unwrap().to_owned();
    let resume_token = joined["resumeToken"].as_str().unwrap().to_owned();
    let left = |v: &Value| v["type"] == "participant-left";
    raw_until(
        &mut alice,
        "bob's arrival",
        |v| v["type"] == "participant-joined",
        left,
    )
    .await;

    drop(bob);
    raw_send(
        &mut alice,
        json!({"type":"publish-data","kind":"reliable","data":"while-away"}),
    )
    .await;

    let (mut bob, _) =
        tokio_tungstenite::connect_async(format!("{}/?token={}", b.url(), token("bob", "hop")))
            .await
            .unwrap();
    raw_send(
        &mut bob,
        json!({"type":"join","room":"hop","requestId":2,
               "resume":{"participantSid": sid, "token": resume_token, "lastSeq": 0}}),
    )
    .await;
    let resumed = raw_until(
        &mut bob,
        "resumed",
        |v| v["type"] == "resumed",
        |v| v["type"] == "error",
    )
    .await;
    assert_eq!(resumed["participant"]["sid"], sid.as_str());
    assert_ne!(resumed["resumeToken"], resume_token.as_str());
    let missed = raw_until(
        &mut bob,
        "the missed data",
        |v| v["type"] == "data",
        |_| false,
    )
    .await;
    assert_eq!(missed["data"], "while-away");
    assert!(missed["seq"].as_u64().is_some(), "{missed}");

    raw_send(
        &mut bob,
        json!({"type":"publish-data","kind":"reliable","data":"back"}),
    )
    .await;
    raw_until(
        &mut alice,
        "bob's data after the resume",
        |v| v["type"] == "data" && v["data"] == "back",
        left,
    )
    .await;
}

// ----------------------------------------------------------------------
// ICE restart through the relay, and resume on a draining node

/// Bob's WebSocket is on node-b, the room on node-a: his `restart-ice`
/// requests travel the relay to node-a, which restarts his transports
/// there; media flows again on the same transports and consumer, and
/// alice notices nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_travels_the_relay_to_the_rooms_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = cluster(&redis, &[]).await;
    let mut alice = Peer::join(&a.url(), "alice", "restart-hop").await;
    let mut bob = Peer::join(&b.url(), "bob", "restart-hop").await;
    alice
        .wait(WAIT, |e| match e {
            ClientEvent::Signal(ServerMessage::ParticipantJoined { participant }) => {
                (participant.identity == "bob").then_some(())
            }
            _ => None,
        })
        .await;
    let _alice_sends = send_media(alice.client.publish_video("video/VP8").await.unwrap());
    let pid = bob.track_published().await;
    bob.client.subscribe(&pid).await.unwrap();
    bob.receives(30, WAIT).await;
    let _bob_sends = send_media(bob.client.publish_audio().await.unwrap());
    let bob_pid = alice.track_published().await;
    alice.client.subscribe(&bob_pid).await.unwrap();
    alice.receives(20, WAIT).await;
    let recv = bob.client.recv_transport_id().await.unwrap();
    let send = bob.client.send_transport_id().await.unwrap();

    // Both of bob's transports, through node-b to node-a.
    use pulsewave_protocol::transport::TransportDirection;
    let r1 = bob.client.restart_ice(TransportDirection::Recv).await;
    let r1 = r1.unwrap_or_else(|e| panic!("restart-ice (recv) over the relay: {e}"));
    let r2 = bob.client.restart_ice(TransportDirection::Send).await;
    let r2 = r2.unwrap_or_else(|e| panic!("restart-ice (send) over the relay: {e}"));
    assert_ne!(r1.username_fragment, r2.username_fragment);
    // Media after the restart, both ways, on the same transports and consumer.
    bob.receives(60, WAIT).await;
    alice.receives(40, WAIT).await;
    assert_eq!(bob.client.recv_transport_id().await, Some(recv.clone()));
    assert_eq!(bob.client.send_transport_id().await, Some(send));
    // The restarted transport is the owner's: a `restart-ice` for it by
    // raw request answers with new parameters again, and for another
    // participant's transport with an error, both through the relay.
    // (The events of the restarts above are dropped first: the next
    // disconnection must be the one this raw restart causes.)
    while bob.events.try_recv().is_ok() {}
    let reply = bob
        .client
        .request(pulsewave_protocol::ClientMessage::RestartIce {
            transport_id: recv.clone(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&reply, ServerMessage::IceRestarted { transport_id, .. } if *transport_id == recv),
        "{reply:?}"
    );
    let alice_send = alice.client.send_transport_id().await.unwrap();
    let err = bob
        .client
        .request(pulsewave_protocol::ClientMessage::RestartIce {
            transport_id: alice_send,
        })
        .await;
    assert!(
        matches!(err, Err(ClientError::Server { .. })),
        "another participant's transport: {err:?}"
    );
    // The raw restart left bob's client on old credentials: its receive
    // transport goes disconnected, it restarts ICE by itself (through the
    // relay again) and media comes back on the same transport.
    let lost = bob
        .wait(RECOVERY, |e| match e {
            ClientEvent::TransportDisconnected { transport_id, .. } => Some(transport_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(lost, recv);
    let back = bob
        .wait(RECOVERY, |e| match e {
            ClientEvent::TransportConnected { transport_id, .. } => Some(transport_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(back, recv);
    bob.receives(60, WAIT).await;
    assert_eq!(bob.client.recv_transport_id().await, Some(recv));
    assert!(
        bob.client.subscribe(&pid).await.is_ok(),
        "the producer is still there"
    );
    // Alice was not disturbed: no reconnection, nobody left.
    while let Ok(e) = alice.events.try_recv() {
        assert!(
            !matches!(
                e,
                ClientEvent::Signal(ServerMessage::ParticipantLeft { .. })
                    | ClientEvent::Reconnecting { .. }
                    | ClientEvent::Reconnected { .. }
            ),
            "alice: {e:?}"
        );
    }
}

/// A node that drains (SIGTERM) keeps its rooms until they finish: a
/// participant of one of its rooms whose WebSocket drops resumes there;
/// and a participant of a room on the other node whose new WebSocket lands
/// on the draining node resumes through it (relayed). Both get the
/// missed message, and nobody sees them leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_on_a_draining_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Node::start("node-a", &redis, &[("DRAIN_TIMEOUT", "30s")]);
    let b = Node::start("node-b", &redis, &[]);
    a.ready().await;
    b.ready().await;

    /// Joins with a raw socket; returns it with the sid and resume token.
    async fn join_for_resume(url: &str, identity: &str, room: &str) -> (RawWs, String, String) {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("{url}/?token={}", token(identity, room)))
                .await
                .unwrap();
        raw_send(&mut ws, json!({"type":"join","room":room,"requestId":1})).await;
        let joined = raw_until(
            &mut ws,
            "joined",
            |v| v["type"] == "joined",
            |v| v["type"] == "error",
        )
        .await;
        let sid = joined["participant"]["sid"].as_str().unwrap().to_owned();
        let resume = joined["resumeToken"].as_str().unwrap().to_owned();
        (ws, sid, resume)
    }

    /// Drops `who`'s socket, has `other` send data, and resumes `who`
    /// through `url`: the same sid, the missed data replayed.
    async fn drop_and_resume(
        url: &str,
        who: (RawWs, String, String),
        identity: &str,
        room: &str,
        other: &mut RawWs,
    ) -> RawWs {
        let (ws, sid, resume) = who;
        drop(ws);
        let text = format!("while {identity} was away");
        raw_send(
            other,
            json!({"type":"publish-data","kind":"reliable","data": text}),
        )
        .await;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("{url}/?token={}", token(identity, room)))
                .await
                .unwrap_or_else(|e| panic!("{identity}: a draining node refused the resume: {e}"));
        raw_send(
            &mut ws,
            json!({"type":"join","room":room,"requestId":2,
                   "resume":{"participantSid": sid, "token": resume, "lastSeq": 0}}),
        )
        .await;
        let resumed = raw_until(
            &mut ws,
            "resumed",
            |v| v["type"] == "resumed",
            |v| v["type"] == "error",
        )
        .await;
        assert_eq!(resumed["participant"]["sid"], sid.as_str());
        let missed = raw_until(
            &mut ws,
            "the missed data",
            |v| v["type"] == "data",
            |_| false,
        )
        .await;
        assert_eq!(missed["data"], text.as_str());
        ws
    }

    // "stay" lives on node-a, "elsewhere" on node-b.
    let mut alice = raw_join(&a.url(), "alice", "stay", false).await;
    let bob = join_for_resume(&a.url(), "bob", "stay").await;
    let mut carol = raw_join(&b.url(), "carol", "elsewhere", false).await;
    let dave = join_for_resume(&b.url(), "dave", "elsewhere").await;
    assert_eq!(
        room_on(&b, "stay").await.map(|r| r["node"].clone()),
        Some(json!("node-a"))
    );
    assert_eq!(
        room_on(&a, "elsewhere").await.map(|r| r["node"].clone()),
        Some(json!("node-b"))
    );

    a.terminate();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = http_get(a.addr(), "/healthz", false).await.unwrap();
        if status == 503 && v["status"] == "draining" {
            break;
        }
        assert!(Instant::now() < deadline, "node-a never showed as draining");
        // Poll interval of a bounded wait for the draining state.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let left = |v: &Value| v["type"] == "participant-left";
    // Bob's room is on the draining node: he resumes there.
    let mut bob = drop_and_resume(&a.url(), bob, "bob", "stay", &mut alice).await;
    // Dave's room is on node-b; his new socket lands on the draining node,
    // which relays it.
    let mut dave = drop_and_resume(&a.url(), dave, "dave", "elsewhere", &mut carol).await;

    // Both sessions work, and the others never saw them leave.
    raw_send(
        &mut bob,
        json!({"type":"publish-data","kind":"reliable","data":"bob is back"}),
    )
    .await;
    raw_until(
        &mut alice,
        "bob's data after the resume",
        |v| v["type"] == "data" && v["data"] == "bob is back",
        left,
    )
    .await;
    raw_send(
        &mut dave,
        json!({"type":"publish-data","kind":"reliable","data":"dave is back"}),
    )
    .await;
    raw_until(
        &mut carol,
        "dave's data after the resume",
        |v| v["type"] == "data" && v["data"] == "dave is back",
        left,
    )
    .await;
    // The draining node still refuses new rooms.
    let url = format!("{}/?token={}", a.url(), token("erin", "brand-new"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503)
        }
        other => panic!("a draining node took a new room: {:?}", other.map(|_| ())),
    }
}
