//! Nodes, rooms and placements: the data every backend shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulsewave_protocol::RoomInfo;
use serde::{Deserialize, Serialize};

/// Who this node is and how others reach it, as configured
/// (`NODE_ID`, `NODE_URL`, `MEDIASOUP_ANNOUNCED_IP`, `NODE_REGION`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique id of this instance (`NODE_ID`; random by default).
    pub id: String,
    /// The signaling URL clients could use to reach this node directly
    /// (`NODE_URL`, default `ws://<announced ip>:<PORT>`).
    pub signaling_url: String,
    /// The IP clients send media to (the announced media IP).
    pub media_ip: String,
    /// A free-form region label (`NODE_REGION`, default `default`).
    pub region: String,
}

impl NodeConfig {
    /// A node with a random id, `ws://127.0.0.1:3000`, media on 127.0.0.1,
    /// region `default`.
    pub fn new() -> Self {
        Self {
            id: random_node_id(),
            signaling_url: "ws://127.0.0.1:3000".into(),
            media_ip: "127.0.0.1".into(),
            region: "default".into(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A random node id: `node-` and 12 hex digits.
pub fn random_node_id() -> String {
    format!("node-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A random id for a tunnel: 16 hex digits.
pub(crate) fn random_tunnel_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What the node registry holds about one node (the JSON value of
/// `pw:node:<id>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Advertised signaling URL.
    pub signaling_url: String,
    /// Advertised media IP.
    pub media_ip: String,
    /// Region label.
    pub region: String,
    /// Rooms open on the node.
    pub rooms: u32,
    /// Participants in those rooms.
    pub participants: u32,
    /// Published tracks in those rooms.
    pub tracks: u32,
    /// CPU used by the server process over the last heartbeat interval, as
    /// a fraction of the machine (0.0 to 1.0).
    pub cpu: f32,
    /// The node is draining: it takes no new rooms.
    pub draining: bool,
    /// Unix time the node started, in milliseconds.
    pub started_at: u64,
    /// Unix time of this record, in milliseconds.
    pub updated_at: u64,
}

/// Load figures of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Open rooms.
    pub rooms: u32,
    /// Participants in them (hidden participants excepted).
    pub participants: u32,
    /// Published tracks in them.
    pub tracks: u32,
}

/// Where a room runs, as decided when a client connects.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// On this node: run the session here.
    Local,
    /// On another, live node: relay the session to it.
    Remote(NodeInfo),
}

/// A room as the admin listing shows it: the room and the node that owns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoom {
    /// Id of the node the room lives on.
    pub node: String,
    /// The room with its participants and their tracks.
    #[serde(flatten)]
    pub room: RoomInfo,
}

/// A webhook event read back from the journal of a dead node (see
/// [`ClusterBackend::webhook_journal_claim_orphans`](crate::ClusterBackend::webhook_journal_claim_orphans)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournaledWebhook {
    /// The room of the event.
    pub room: String,
    /// The event's id (`EV_…`), as in its body.
    pub id: String,
    /// The event's JSON body, byte for byte as the dead node queued it.
    pub body: String,
    /// When the event was queued, Unix milliseconds.
    pub created_at_ms: u64,
}

/// What one look for orphaned webhook journals found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrphanedWebhooks {
    /// Events to deliver, each journal's in its order (journals one after
    /// the other). They now belong to this node: remove each with
    /// [`ClusterBackend::webhook_journal_remove`](crate::ClusterBackend::webhook_journal_remove)
    /// once delivered or dropped.
    pub events: Vec<JournaledWebhook>,
    /// Entries dropped because they were older than the maximum age (or
    /// beyond the most read from one journal).
    pub dropped: u64,
}

/// Timings of the Redis backend. The defaults are the documented ones;
/// tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTimings {
    /// How often a node refreshes its registry entry (1 s).
    pub heartbeat: Duration,
    /// Lifetime of a registry entry without refresh (5 s): a dead node
    /// disappears after this.
    pub node_ttl: Duration,
    /// Lifetime of a room claim and room record without refresh (10 s).
    pub room_ttl: Duration,
    /// How often the owner refreshes its claims and room records (3 s).
    pub room_refresh: Duration,
    /// How often each end of a tunnel says it is alive (2 s).
    pub tunnel_keepalive: Duration,
    /// Silence after which a tunnel is declared lost (8 s).
    pub tunnel_timeout: Duration,
    /// How long opening a tunnel waits for the owner's answer (3 s).
    pub tunnel_open_timeout: Duration,
    /// Timeout of one Redis command (2 s).
    pub command_timeout: Duration,
    /// After the connection to Redis comes back (a Redis restart loses
    /// every key), how long this node claims no room it does not hold (4 s):
    /// the other nodes reconnect within the reconnect backoff (at most 2 s)
    /// and re-assert the rooms they run first, so a client relayed to a
    /// running room is not given a second, empty copy of it here. Joins of
    /// unplaced rooms get `Unavailable` (HTTP 503) meanwhile; clients retry.
    pub resync_grace: Duration,
    /// How far from this node's clock the timestamp of a signed message may
    /// be (30 s): tunnel messages older or further ahead than this are
    /// refused, and records older than their own lifetime plus this. Bounds
    /// replays; the nodes' clocks must agree within it (NTP).
    pub message_window: Duration,
}

impl Default for ClusterTimings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            room_ttl: Duration::from_secs(10),
            room_refresh: Duration::from_secs(3),
            tunnel_keepalive: Duration::from_secs(2),
            tunnel_timeout: Duration::from_secs(8),
            tunnel_open_timeout: Duration::from_secs(3),
            command_timeout: Duration::from_secs(2),
            resync_grace: Duration::from_secs(4),
            message_window: Duration::from_secs(30),
        }
    }
}

impl ClusterTimings {
    /// Every timing five times shorter than the default (the message window
    /// kept): a dead node is noticed within a second. For tests of a
    /// cluster on one machine, where a whole failover must fit in seconds.
    pub fn fast() -> Self {
        Self {
            heartbeat: Duration::from_millis(200),
            node_ttl: Duration::from_millis(1000),
            room_ttl: Duration::from_millis(2000),
            room_refresh: Duration::from_millis(500),
            tunnel_keepalive: Duration::from_millis(300),
            tunnel_timeout: Duration::from_millis(1500),
            tunnel_open_timeout: Duration::from_millis(1500),
            command_timeout: Duration::from_millis(1000),
            resync_grace: Duration::from_millis(800),
            message_window: Duration::from_secs(30),
        }
    }
}

/// Unix time in milliseconds.
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
