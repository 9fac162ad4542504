//! PulseWave's multi-node state: several server instances behind a load
//! balancer, synchronized through Redis, or one node on its own.
//!
//! The signaling server talks to a [`Cluster`], a handle on a
//! [`ClusterBackend`]:
//!
//! - [`LocalCluster`] (the default, `REDIS_ENABLED=false` and `--dev`):
//!   one node, every room placed here, no Redis.
//! - [`RedisCluster`] (`REDIS_ENABLED=true`): connected through
//!   [`RedisManager`] (the seed's `RedisManager`), it keeps
//!   - a **node registry**: each node writes `pw:node:<id>` (id, signaling
//!     URL, media IP, region, rooms, participants, tracks, CPU, draining)
//!     every second with a 5 s TTL, so a dead node disappears within 5 s;
//!   - **room placement**: a room lives on one node at a time. The first
//!     client to connect claims it atomically (`pw:room:<name>:owner`, 10 s
//!     TTL refreshed every 3 s by the owner while the room is open); a
//!     client connecting anywhere else is relayed to the owner through a
//!     **tunnel** over Redis pub/sub, so its session runs where its room is;
//!   - **room records** (`pw:room:<name>:info`): participants and tracks of
//!     every room, for the admin listing on any node;
//!   - **webhook journals** (`pw:webhooks:<node>:<incarnation>:<room>`):
//!     the webhook events a node queued and has not delivered yet, so that
//!     a survivor claims and delivers them if the node dies
//!     ([`ClusterBackend::webhook_journal_claim_orphans`]).
//!
//! Everything a node writes for the others (registry records, claims, room
//! records, tunnel messages, webhook journal entries) is signed with a key shared by the cluster
//! ([`ClusterKey`], HMAC-SHA256), and everything read from Redis is verified
//! before use, so that write access to Redis alone does not let anyone
//! impersonate a node, inject signaling or redirect clients. Clients' access
//! tokens never go through Redis: the relaying node verifies them and
//! forwards their claims.
//!
//! When the owner dies, its claims expire and the next client to connect
//! places the room on a live node. When Redis is unreachable, rooms already
//! open keep running (media never touches Redis), and the node re-registers
//! and re-asserts its rooms as soon as Redis is back. `docs/cluster.md`
//! describes keys, TTLs, messages and failure handling in full.
//!
//! ```no_run
//! # async fn run() -> Result<(), pulsewave_cluster::ClusterError> {
//! use pulsewave_cluster::{
//!     Cluster, ClusterBackend, ClusterKey, ClusterTimings, NodeConfig, Placement, RedisCluster,
//!     RedisManager, RedisOptions,
//! };
//!
//! let redis = RedisManager::new(RedisOptions { host: "localhost".into(), port: 6379, ..Default::default() });
//! let node = NodeConfig {
//!     id: "node-a".into(),
//!     signaling_url: "ws://10.0.0.1:3000".into(),
//!     media_ip: "10.0.0.1".into(),
//!     region: "eu-west".into(),
//! };
//! // CLUSTER_SECRET, or API_SECRET: the same on every node.
//! let key = ClusterKey::derive("a long random cluster secret")?;
//! let cluster = Cluster::new(RedisCluster::start(redis.connect().await?, node, key, ClusterTimings::default())?);
//! match cluster.place_room("my-room", true).await? {
//!     Placement::Local => println!("the room runs here"),
//!     Placement::Remote(owner) => println!("the room runs on {}", owner.id),
//! }
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

mod backend;
mod cpu;
mod error;
mod local;
mod redis;
mod trust;
mod tunnel;
mod types;

#[doc(hidden)]
pub mod fuzzing;

pub use backend::{BoxFuture, Cluster, ClusterBackend};
pub use error::ClusterError;
pub use local::LocalCluster;
pub use redis::{RedisCluster, RedisConnection, RedisManager, RedisOptions, redact_url};
pub use trust::{ClusterKey, EVERY_NODE, Header, Kind, RejectedMessages, Rejection, SignedMessage};
pub use tunnel::{IncomingTunnel, TunnelEnd, TunnelFrame};
pub use types::{
    ClusterRoom, ClusterTimings, JournaledWebhook, NodeConfig, NodeInfo, NodeLoad,
    OrphanedWebhooks, Placement, random_node_id,
};

/// The Redis client crate, re-exported for callers of
/// [`RedisConnection::client`].
pub use fred;
