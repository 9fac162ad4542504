//! The webhook journal against a real `redis-server` and a real HTTP
//! receiver: events queued on a node that dies are delivered by a survivor,
//! with the ids the dead node gave them, in its order, signed; a journal
//! entry that does not verify under the cluster key is never sent; events
//! queued while Redis is away are journaled, in order, when it returns.
//!
//! Node A runs on a runtime of its own, shut down without any goodbye (its
//! tasks and its Redis connections just stop), so its registry entry
//! expires as after a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../pulsewave-cluster/tests/support/redis.rs"]
#[macro_use]
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pulsewave_auth::{TokenVerifier, verify_webhook};
use pulsewave_cluster::fred::prelude::*;
use pulsewave_cluster::{
    Cluster, ClusterKey, ClusterTimings, Header, Kind, NodeConfig, RedisCluster, RedisManager,
    RedisOptions, SignedMessage,
};
use pulsewave_protocol::RoomInfo;
use pulsewave_signal::webhook::{WebhookKind, WebhookNotifier};
use redis::RedisServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SECRET: &str = "the cluster secret of these tests";
/// The API key of node A, and of node B: both with [`API_SECRET`], so
/// that a receiver can tell who signed a POST.
const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";
const API_SECRET: &str = "the api secret of these tests";
const JOURNALS: &str = "pw:webhook-journals";

fn options(redis: &RedisServer) -> RedisOptions {
    RedisOptions {
        url: Some(redis.url()),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    }
}

/// A node of the cluster with its webhook notifier, both started on the
/// current runtime.
async fn node(
    options: RedisOptions,
    id: &str,
    api_key: &str,
    hook: &str,
) -> (Cluster, WebhookNotifier) {
    let conn = RedisManager::new(options).connect().await.unwrap();
    let config = NodeConfig {
        id: id.into(),
        signaling_url: format!("ws://127.0.0.1:1/{id}"),
        media_ip: "127.0.0.1".into(),
        region: "test".into(),
    };
    let key = ClusterKey::derive(SECRET).unwrap();
    let cluster =
        Cluster::new(RedisCluster::start(conn, config, key, ClusterTimings::fast()).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !cluster.is_available() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never connected"
        );
        // Poll interval of a bounded wait for the connection (no event).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let notifier = WebhookNotifier::start_with_cluster(
        &[hook.to_owned()],
        api_key,
        API_SECRET,
        None,
        cluster.clone(),
    )
    .unwrap();
    (cluster, notifier)
}

/// Node A: a cluster node and its notifier on a runtime of their own, so
/// that the test can make it die abruptly.
struct Doomed {
    runtime: tokio::runtime::Runtime,
    notifier: WebhookNotifier,
}

async fn doomed_node(options: RedisOptions, hook: String) -> Doomed {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_cluster, notifier) = runtime
        .spawn(async move { node(options, "node-a", KEY_A, &hook).await })
        .await
        .unwrap();
    Doomed { runtime, notifier }
}

impl Doomed {
    /// Dies: every task of the node stops at once (no deregistration, no
    /// journal cleanup), as if the process were killed.
    async fn kill(self) {
        drop(self.notifier);
        let runtime = self.runtime;
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
    }
}

/// One POST the receiver read (and answered).
#[derive(Debug)]
struct Post {
    authorization: String,
    body: Vec<u8>,
    accepted: bool,
}

/// A tiny HTTP/1.1 webhook receiver: answers 500 until `accept` is set,
/// then 200; every POST it answers arrives on `posts`, in the order they
/// came in.
struct Receiver {
    url: String,
    accept: Arc<AtomicBool>,
    posts: mpsc::UnboundedReceiver<Post>,
}

async fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accept = Arc::new(AtomicBool::new(false));
    let (tx, posts) = mpsc::unbounded_channel();
    let flag = accept.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, flag.clone(), tx.clone()));
        }
    });
    Receiver { url, accept, posts }
}

async fn answer(stream: TcpStream, accept: Arc<AtomicBool>, posts: mpsc::UnboundedSender<Post>) {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).await.is_err() {
        return;
    }
    let accepted = accept.load(Ordering::SeqCst);
    let status = if accepted {
        "200 OK"
    } else {
        "500 Internal Server Error"
    };
    // Recorded before the answer: the sender's next POST (after this
    // answer) is then always recorded after this one.
    let _ = posts.send(Post {
        authorization,
        body,
        accepted,
    });
    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let mut stream = reader.into_inner();
    if stream.write_all(answer.as_bytes()).await.is_ok() {
        let _ = stream.flush().await;
    }
}

impl Receiver {
    /// The next POST answered 200, waiting up to `limit`.
    async fn next_accepted(&mut self, limit: Duration) -> Post {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let post = tokio::time::timeout_at(deadline, self.posts.recv())
                .await
                .expect("no webhook delivered in time")
                .expect("receiver gone");
            if post.accepted {
                return post;
            }
        }
    }

    /// The next POST answered (refused or not), waiting up to `limit`.
    async fn next(&mut self, limit: Duration) -> Post {
        tokio::time::timeout(limit, self.posts.recv())
            .await
            .expect("no webhook POST in time")
            .expect("receiver gone")
    }
}

fn room(name: &str) -> RoomInfo {
    serde_json::from_value(json!({
        "sid": format!("RM_{name}"), "name": name, "createdAt": 1_700_000_000_000u64,
        "maxParticipants": 0, "participants": []
    }))
    .unwrap()
}

fn participant(identity: &str) -> pulsewave_protocol::ParticipantInfo {
    serde_json::from_value(json!({
        "sid": format!("PA_{identity}"), "identity": identity, "name": identity, "metadata": "",
        "joinedAt": 1, "permission": {"canPublish": true, "canSubscribe": true, "canPublishData": true},
        "tracks": []
    }))
    .unwrap()
}

/// A plain client of the test's Redis, to look at (and tamper with) the
/// journals.
async fn plain_client(redis: &RedisServer) -> Client {
    RedisManager::new(options(redis))
        .connect()
        .await
        .unwrap()
        .client()
        .clone()
}

/// The journal keys of `node` (from the set of journals).
async fn journals_of(client: &Client, node: &str) -> Vec<String> {
    let keys: Vec<String> = client.smembers(JOURNALS).await.unwrap();
    let prefix = format!("pw:webhooks:{node}:");
    let mut keys: Vec<String> = keys
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect();
    keys.sort();
    keys
}

/// The journal of `node` for `room`, if any.
async fn journal(client: &Client, node: &str, room: &str) -> Option<String> {
    journals_of(client, node)
        .await
        .into_iter()
        .find(|k| k.ends_with(&format!(":{room}")))
}

/// The entries of a journal, oldest first.
async fn entries(client: &Client, key: &str) -> Vec<String> {
    client.lrange(key, 0, -1).await.unwrap()
}

/// The body of a journal entry (signed message).
fn body_of(entry: &str) -> String {
    SignedMessage::parse(entry).unwrap().body
}

fn id_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The `event` field of each body, as JSON text (`"\"room_started\""`).
fn event_names(bodies: &[String]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap()["event"].to_string())
        .collect()
}

fn room_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["room"]["name"].as_str().unwrap().to_owned()
}

/// The bodies journaled by node A for `room` once there are `n`, in order
/// (waiting up to 15 s: long enough for a reconnection to a restarted
/// Redis).
async fn journaled(client: &Client, room: &str, n: usize) -> (String, Vec<String>) {
    let mut key = String::new();
    eventually!(Duration::from_secs(15), {
        match journal(client, "node-a", room).await {
            Some(k) => {
                let len = entries(client, &k).await.len();
                key = k;
                len == n
            }
            None => false,
        }
    });
    let bodies = entries(client, &key)
        .await
        .iter()
        .map(|e| body_of(e))
        .collect();
    (key, bodies)
}

/// What both tests start with: Redis, a receiver (refusing for now), a
/// plain Redis client to look at the journals, node A (to be killed) and
/// node B (the survivor) with its notifier.
type TwoNodes = (
    RedisServer,
    Receiver,
    Client,
    Doomed,
    (Cluster, WebhookNotifier),
);

/// Starts [`TwoNodes`]; `None` only when Redis is missing and
/// `PULSEWAVE_ALLOW_SKIP=1` (otherwise that panics).
async fn two_nodes() -> Option<TwoNodes> {
    let redis = RedisServer::start()?;
    let hook = receiver().await;
    let client = plain_client(&redis).await;
    let a = doomed_node(options(&redis), hook.url.clone()).await;
    let b = node(options(&redis), "node-b", KEY_B, &hook.url).await;
    Some((redis, hook, client, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_delivers_the_events_of_a_dead_node_with_their_ids_in_order() {
    let Some((_redis, mut hook, client, a, (b, b_hooks))) = two_nodes().await else {
        return;
    };

    // A's events, in two rooms; the receiver refuses them all.
    let (r1, r2) = (room("r1"), room("r2"));
    let (alice, bob) = (participant("alice"), participant("bob"));
    a.notifier.notify(WebhookKind::RoomStarted, &r1, None, None);
    a.notifier
        .notify(WebhookKind::ParticipantJoined, &r1, Some(&alice), None);
    a.notifier.notify(WebhookKind::RoomStarted, &r2, None, None);
    a.notifier
        .notify(WebhookKind::ParticipantJoined, &r1, Some(&bob), None);
    a.notifier
        .notify(WebhookKind::ParticipantLeft, &r1, Some(&alice), None);
    let (_, a_r1) = journaled(&client, "r1", 4).await;
    let (_, a_r2) = journaled(&client, "r2", 1).await;
    let events = event_names(&a_r1);
    assert_eq!(
        events,
        [
            "\"room_started\"",
            "\"participant_joined\"",
            "\"participant_joined\"",
            "\"participant_left\""
        ]
    );
    // A tries r1's first event, and is refused, 4 times (0.5 s, 1 s, 2 s
    // apart): meanwhile B looked for orphaned journals (every 2 s) but A
    // is alive, so every POST so far is A's (signed with A's key) and A's
    // journals are still A's.
    let a_verifier = TokenVerifier::new(KEY_A, API_SECRET);
    let mut r1_attempts = 0;
    while r1_attempts < 4 {
        let refused = hook.next(Duration::from_secs(10)).await;
        assert!(!refused.accepted);
        verify_webhook(&a_verifier, &refused.authorization, &refused.body)
            .unwrap_or_else(|e| panic!("a POST not from A while A is alive: {e}"));
        if room_of(&refused.body) == "r1" {
            assert_eq!(String::from_utf8(refused.body).unwrap(), a_r1[0]);
            r1_attempts += 1;
        }
    }
    assert!(journal(&client, "node-a", "r1").await.is_some());
    assert!(journal(&client, "node-a", "r2").await.is_some());
    assert!(journals_of(&client, "node-b").await.is_empty());

    // A dies; then the receiver comes back.
    a.kill().await;
    hook.accept.store(true, Ordering::SeqCst);

    // B delivers A's five events: the same bodies (so the same ids), in
    // A's order in each room, signed with B's key.
    let verifier = TokenVerifier::new(KEY_B, API_SECRET);
    let mut got_r1 = Vec::new();
    let mut got_r2 = Vec::new();
    for _ in 0..5 {
        let post = hook.next_accepted(Duration::from_secs(20)).await;
        verify_webhook(&verifier, &post.authorization, &post.body)
            .unwrap_or_else(|e| panic!("bad webhook signature: {e}"));
        let body = String::from_utf8(post.body).unwrap();
        match room_of(body.as_bytes()).as_str() {
            "r1" => got_r1.push(body),
            "r2" => got_r2.push(body),
            other => panic!("event of unexpected room {other}"),
        }
    }
    assert_eq!(got_r1, a_r1);
    assert_eq!(got_r2, a_r2);
    let ids: Vec<String> = got_r1.iter().map(|b| id_of(b.as_bytes())).collect();
    assert!(ids.iter().all(|id| id.starts_with("EV_")), "{ids:?}");

    // Delivered events leave the journal, and nothing is sent twice.
    eventually!(
        Duration::from_secs(5),
        client
            .smembers::<Vec<String>, _>(JOURNALS)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(b_hooks.stats().delivered, 5);
    while let Ok(post) = hook.posts.try_recv() {
        assert!(!post.accepted, "delivered twice: {post:?}");
    }
    assert_eq!(b.rejected_messages().total(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_forged_journal_entries_are_never_sent() {
    let Some((_redis, mut hook, client, a, (b, b_hooks))) = two_nodes().await else {
        return;
    };

    let t = room("t");
    let (alice, bob) = (participant("alice"), participant("bob"));
    a.notifier.notify(WebhookKind::RoomStarted, &t, None, None);
    a.notifier
        .notify(WebhookKind::ParticipantJoined, &t, Some(&alice), None);
    a.notifier
        .notify(WebhookKind::ParticipantJoined, &t, Some(&bob), None);
    let (key, bodies) = journaled(&client, "t", 3).await;

    // Someone with write access to Redis alters the second entry (alice
    // becomes mallory) and plants a journal of a node that never existed,
    // signed with another key.
    let original = entries(&client, &key).await;
    let altered = original[1].replace("\"alice\"", "\"mallory\"");
    assert_ne!(altered, original[1]);
    client
        .lset::<(), _, _>(key.as_str(), 1, altered.clone())
        .await
        .unwrap();
    let other = ClusterKey::derive("not the cluster secret").unwrap();
    let forged_body = bodies[0].replace("room_started", "room_finished");
    let forged = SignedMessage::sign(
        &other,
        &Header {
            kind: Kind::Webhook,
            from: "ghost",
            to: "*",
            subject: "t",
            seq: 1,
            ts: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        },
        &forged_body,
    );
    let ghost = "pw:webhooks:ghost:1:t";
    client
        .rpush::<(), _, _>(ghost, forged.clone())
        .await
        .unwrap();
    client.sadd::<(), _, _>(JOURNALS, ghost).await.unwrap();

    a.kill().await;
    hook.accept.store(true, Ordering::SeqCst);

    // The two entries that verify arrive, in order; the other two are
    // refused and counted, never sent.
    let verifier = TokenVerifier::new(KEY_B, API_SECRET);
    let mut got = Vec::new();
    for _ in 0..2 {
        let post = hook.next_accepted(Duration::from_secs(20)).await;
        verify_webhook(&verifier, &post.authorization, &post.body).unwrap();
        got.push(String::from_utf8(post.body).unwrap());
    }
    assert_eq!(got, [bodies[0].clone(), bodies[2].clone()]);
    eventually!(
        Duration::from_secs(8),
        client
            .smembers::<Vec<String>, _>(JOURNALS)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.rejected_messages().bad_signature, 2);
    assert_eq!(b_hooks.stats().delivered, 2);
    while let Ok(post) = hook.posts.try_recv() {
        assert!(!post.accepted, "unexpected delivery: {post:?}");
        let body = String::from_utf8_lossy(&post.body);
        assert!(!body.contains("mallory") && !body.contains("room_finished"));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_while_redis_is_away_are_journaled_when_it_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut hook = receiver().await;
    let (a, a_hooks) = node(options(&redis), "node-a", KEY_A, &hook.url).await;
    redis.stop();
    eventually!(Duration::from_secs(10), !a.is_available());

    // An event delivered while Redis is away: nothing left to journal.
    hook.accept.store(true, Ordering::SeqCst);
    a_hooks.notify(WebhookKind::RoomStarted, &room("d"), None, None);
    let delivered = hook.next_accepted(Duration::from_secs(10)).await;
    assert_eq!(room_of(&delivered.body), "d");
    hook.accept.store(false, Ordering::SeqCst);

    // Three events the receiver refuses, queued while Redis is away.
    let (u, alice) = (room("u"), participant("alice"));
    a_hooks.notify(WebhookKind::RoomStarted, &u, None, None);
    a_hooks.notify(WebhookKind::ParticipantJoined, &u, Some(&alice), None);
    a_hooks.notify(WebhookKind::ParticipantLeft, &u, Some(&alice), None);
    let refused = hook.next(Duration::from_secs(10)).await;
    assert!(!refused.accepted);
    assert_eq!(room_of(&refused.body), "u");
    assert!(!a.is_available(), "Redis came back too early for this test");

    // Redis returns (empty): the three are journaled, in order, the
    // delivered one is not.
    redis.restart();
    let client = plain_client(&redis).await;
    let (_, bodies) = journaled(&client, "u", 3).await;
    let events = event_names(&bodies);
    assert_eq!(
        events,
        [
            "\"room_started\"",
            "\"participant_joined\"",
            "\"participant_left\""
        ]
    );
    assert_eq!(bodies[0], String::from_utf8(refused.body).unwrap());
    assert!(journal(&client, "node-a", "d").await.is_none());

    // Delivered at last: the journal empties.
    hook.accept.store(true, Ordering::SeqCst);
    for body in &bodies {
        let post = hook.next_accepted(Duration::from_secs(20)).await;
        assert_eq!(&String::from_utf8(post.body).unwrap(), body);
    }
    eventually!(
        Duration::from_secs(5),
        client
            .smembers::<Vec<String>, _>(JOURNALS)
            .await
            .unwrap()
            .is_empty()
    );
    a.shutdown().await;
}
