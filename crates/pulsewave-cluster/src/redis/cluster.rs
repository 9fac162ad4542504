//! [`RedisCluster`]: the node registry, room placement, room records and
//! tunnels, on one [`RedisConnection`].
//!
//! Tasks (all stop on [`ClusterBackend::shutdown`]):
//! - **monitor** (every 200 ms and on every reconnection event): notices
//!   when the connection to Redis drops. A drop loses pub/sub messages, so
//!   every tunnel is declared lost; when the connection is back the node
//!   re-registers and re-asserts its room claims at once.
//! - **heartbeat** (every second): writes `pw:node:<id>` with its load,
//!   refreshes the list of live nodes, refreshes room claims and records
//!   every 3 s, sends tunnel keepalives and declares silent tunnels, or
//!   tunnels to nodes that left the registry, lost.
//! - **flusher**: writes room changes reported by the room actors, so that
//!   an actor never waits for Redis.
//! - **router**: reads this node's two channels and hands each tunnel
//!   message to its tunnel.
//! - one **writer** per tunnel: publishes its frames in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use pulsewave_protocol::{RoomInfo, RoomSid};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::RedisConnection;
use super::keys;
use crate::backend::{BoxFuture, ClusterBackend, LocalRooms};
use crate::cpu::CpuSampler;
use crate::error::ClusterError;
use crate::tunnel::{Envelope, IncomingTunnel, Op, TUNNEL_QUEUE, TunnelEnd, TunnelFrame};
use crate::types::{
    ClusterRoom, ClusterTimings, NodeConfig, NodeInfo, NodeLoad, Placement, random_tunnel_id,
    unix_millis,
};

/// Incoming tunnels waiting for the signaling server to take them.
const INCOMING_QUEUE: usize = 256;

/// The Redis backend. Cheap to clone; every clone is the same node.
///
/// ```no_run
/// # async fn run() -> Result<(), pulsewave_cluster::ClusterError> {
/// use pulsewave_cluster::{
///     Cluster, ClusterBackend, ClusterTimings, NodeConfig, RedisCluster, RedisManager, RedisOptions,
/// };
///
/// let connection = RedisManager::new(RedisOptions::default()).connect().await?;
/// let node = NodeConfig { id: "node-a".into(), ..NodeConfig::default() };
/// let cluster = Cluster::new(RedisCluster::start(connection, node, ClusterTimings::default())?);
/// for node in cluster.nodes().await? {
///     println!("{} at {} ({} rooms)", node.id, node.signaling_url, node.rooms);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

/// Which end of a tunnel this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The client is connected here; the room is elsewhere.
    Relay,
    /// The room (and the session) is here.
    Owner,
}

#[derive(Debug)]
struct Slot {
    peer: String,
    role: Role,
    deliver: mpsc::Sender<TunnelFrame>,
    last_heard: Instant,
    last_keepalive: Instant,
    created: Instant,
    epoch: u64,
}

/// The live nodes as last read from the registry, and when.
#[derive(Debug, Default, Clone)]
struct LiveNodes {
    nodes: HashMap<String, NodeInfo>,
    read_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    node: NodeConfig,
    timings: ClusterTimings,
    conn: RedisConnection,
    started_at: u64,
    in_channel: String,
    out_channel: String,
    rooms: LocalRooms,
    /// Rooms whose claim and record must be written.
    dirty: Mutex<HashSet<String>>,
    /// Rooms whose claim and record must be released.
    released: Mutex<HashSet<String>>,
    flush: Notify,
    /// Wakes the heartbeat early (reconnected, draining changed).
    resync: Notify,
    draining: AtomicBool,
    /// Whether the connection is up, as last seen by the monitor.
    connected: AtomicBool,
    /// Until when (after a reconnect) this node claims no new room; see
    /// [`ClusterTimings::resync_grace`].
    resync_until: Mutex<Option<Instant>>,
    /// Incremented on every loss of the connection.
    epoch: AtomicU64,
    live: Mutex<LiveNodes>,
    tunnels: Mutex<HashMap<String, Slot>>,
    pending_opens: Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>,
    incoming_tx: mpsc::Sender<IncomingTunnel>,
    incoming_rx: Mutex<Option<mpsc::Receiver<IncomingTunnel>>>,
    cpu: Mutex<CpuSampler>,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl RedisCluster {
    /// Joins the cluster as `node` over `connection` and starts the
    /// background tasks. Must be called within a tokio runtime. Works while
    /// Redis is still unreachable: the node registers as soon as it is
    /// reachable.
    pub fn start(
        connection: RedisConnection,
        node: NodeConfig,
        timings: ClusterTimings,
    ) -> Result<Self, ClusterError> {
        if !valid_node_id(&node.id) {
            return Err(ClusterError::Config(format!(
                "node id `{}` must be 1 to 64 characters among A-Z a-z 0-9 - _ .",
                node.id
            )));
        }
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            in_channel: keys::node_in(&node.id),
            out_channel: keys::node_out(&node.id),
            node,
            timings,
            conn: connection,
            started_at: unix_millis(),
            rooms: LocalRooms::default(),
            dirty: Mutex::new(HashSet::new()),
            released: Mutex::new(HashSet::new()),
            flush: Notify::new(),
            resync: Notify::new(),
            draining: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            resync_until: Mutex::new(None),
            epoch: AtomicU64::new(0),
            live: Mutex::new(LiveNodes::default()),
            tunnels: Mutex::new(HashMap::new()),
            pending_opens: Mutex::new(HashMap::new()),
            incoming_tx,
            incoming_rx: Mutex::new(Some(incoming_rx)),
            cpu: Mutex::new(CpuSampler::new()),
            stop,
        });
        info!(node = %inner.node.id, url = %inner.node.signaling_url, region = %inner.node.region, "joining the cluster (Redis)");
        tokio::spawn(inner.clone().router());
        tokio::spawn(inner.clone().monitor());
        tokio::spawn(inner.clone().heartbeat());
        tokio::spawn(inner.clone().flusher());
        tokio::spawn(inner.clone().subscribe());
        Ok(Self { inner })
    }

    /// The connection this node uses.
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.conn
    }

    /// The timings in force.
    pub fn timings(&self) -> &ClusterTimings {
        &self.inner.timings
    }
}

impl Inner {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn wait_stop(stop: &mut watch::Receiver<bool>) {
        let _ = stop.wait_for(|s| *s).await;
    }

    fn available(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.conn.is_connected()
    }

    fn node_info(&self, cpu: f32) -> NodeInfo {
        let load = self.rooms.load();
        NodeInfo {
            id: self.node.id.clone(),
            signaling_url: self.node.signaling_url.clone(),
            media_ip: self.node.media_ip.clone(),
            region: self.node.region.clone(),
            rooms: load.rooms,
            participants: load.participants,
            tracks: load.tracks,
            cpu,
            draining: self.draining.load(Ordering::Relaxed),
            started_at: self.started_at,
            updated_at: unix_millis(),
        }
    }

    // ------------------------------------------------------------------
    // Tasks

    /// Subscribes to this node's channels, retrying until it works; the
    /// subscriber client restores the subscription after reconnections.
    async fn subscribe(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let channels = vec![self.in_channel.clone(), self.out_channel.clone()];
        loop {
            match self.conn.subscriber.subscribe(channels.clone()).await {
                Ok(()) => {
                    debug!(node = %self.node.id, "subscribed to the node channels");
                    return;
                }
                Err(e) => debug!(error = %e, "subscribe failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = Self::wait_stop(&mut stop) => return,
            }
        }
    }

    async fn monitor(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut client_reconnects = Some(self.conn.client.reconnect_rx());
        let mut sub_reconnects = Some(self.conn.subscriber.reconnect_rx());
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut was_up = false;
        // The first connection has no earlier state to wait for.
        let mut ever_up = false;
        loop {
            let reconnected = tokio::select! {
                _ = tick.tick() => false,
                r = next_event(&mut client_reconnects) => r,
                r = next_event(&mut sub_reconnects) => r,
                _ = Self::wait_stop(&mut stop) => return,
            };
            let up = self.conn.is_connected();
            if was_up && (!up || reconnected) {
                // Messages published while a connection was down are lost:
                // no tunnel survives that.
                self.epoch.fetch_add(1, Ordering::Relaxed);
                let lost = self.lose_all_tunnels();
                warn!(node = %self.node.id, tunnels_lost = lost, "connection to Redis lost; rooms on this node keep running");
            }
            if up && (!was_up || reconnected) {
                info!(node = %self.node.id, "connected to Redis; registering and re-asserting room claims");
                if ever_up {
                    *lock(&self.resync_until) = Some(Instant::now() + self.timings.resync_grace);
                }
                ever_up = true;
                self.connected.store(true, Ordering::Relaxed);
                self.resync.notify_one();
            }
            if !up {
                self.connected.store(false, Ordering::Relaxed);
            }
            was_up = up;
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(self.timings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_room_refresh: Option<Instant> = None;
        loop {
            let resync = tokio::select! {
                _ = tick.tick() => false,
                _ = self.resync.notified() => true,
                _ = Self::wait_stop(&mut stop) => return,
            };
            if self.available() {
                if let Err(e) = self.register().await {
                    debug!(error = %e, "heartbeat failed");
                }
                if let Err(e) = self.read_live_nodes().await {
                    debug!(error = %e, "reading the registry failed");
                }
                if resync
                    || last_room_refresh.is_none_or(|t| t.elapsed() >= self.timings.room_refresh)
                {
                    last_room_refresh = Some(Instant::now());
                    {
                        let mut dirty = lock(&self.dirty);
                        for r in self.rooms.snapshot() {
                            dirty.insert(r.name);
                        }
                    }
                    self.flush.notify_one();
                }
            }
            self.maintain_tunnels().await;
        }
    }

    async fn register(&self) -> Result<(), ClusterError> {
        let cpu = lock(&self.cpu).sample();
        let info = self.node_info(cpu);
        let json = serde_json::to_string(&info).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let client = &self.conn.client;
        client
            .set::<(), _, _>(
                keys::node(&self.node.id),
                json,
                Some(Expiration::PX(self.timings.node_ttl.as_millis() as i64)),
                None,
                false,
            )
            .await?;
        client
            .sadd::<(), _, _>(keys::NODES, self.node.id.clone())
            .await?;
        Ok(())
    }

    async fn read_live_nodes(&self) -> Result<(), ClusterError> {
        let nodes = read_nodes(&self.conn.client).await?;
        let mut live = lock(&self.live);
        live.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        live.read_at = Some(Instant::now());
        Ok(())
    }

    async fn flusher(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = self.flush.notified() => {}
                _ = Self::wait_stop(&mut stop) => return,
            }
            if !self.available() {
                // Everything is re-asserted on reconnection.
                continue;
            }
            let released: Vec<String> = lock(&self.released).drain().collect();
            for name in released {
                if self.rooms.get(&name).is_some() {
                    continue; // reopened since
                }
                if let Err(e) = self.release(&name).await {
                    debug!(room = %name, error = %e, "release failed; the claim expires by itself");
                }
            }
            let dirty: Vec<String> = lock(&self.dirty).drain().collect();
            for name in dirty {
                let Some(room) = self.rooms.get(&name) else {
                    continue;
                };
                if let Err(e) = self.assert_room(room).await {
                    debug!(room = %name, error = %e, "writing the room failed; retried on the next refresh");
                }
            }
        }
    }

    async fn assert_room(&self, room: RoomInfo) -> Result<(), ClusterError> {
        let name = room.name.clone();
        let record = ClusterRoom {
            node: self.node.id.clone(),
            room,
        };
        let json =
            serde_json::to_string(&record).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let other: String = self
            .conn
            .client
            .eval(
                keys::ASSERT,
                vec![
                    keys::room_owner(&name),
                    keys::room_info(&name),
                    keys::ROOMS.to_owned(),
                ],
                vec![
                    self.node.id.clone(),
                    ms(self.timings.room_ttl),
                    keys::NODE_PREFIX.to_owned(),
                    json,
                    name.clone(),
                ],
            )
            .await?;
        if !other.is_empty() {
            warn!(room = %name, owner = %other, "room is open here but claimed by another live node; it keeps running here");
        }
        Ok(())
    }

    async fn release(&self, name: &str) -> Result<(), ClusterError> {
        self.conn
            .client
            .eval::<i64, _, _, _>(
                keys::RELEASE,
                vec![
                    keys::room_owner(name),
                    keys::room_info(name),
                    keys::ROOMS.to_owned(),
                ],
                vec![self.node.id.clone(), name.to_owned()],
            )
            .await?;
        Ok(())
    }

    async fn router(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut messages = self.conn.subscriber.message_rx();
        loop {
            let msg = tokio::select! {
                m = messages.recv() => m,
                _ = Self::wait_stop(&mut stop) => return,
            };
            match msg {
                Ok(m) => {
                    let channel = m.channel.to_string();
                    let Some(payload) = m.value.as_string() else {
                        continue;
                    };
                    self.on_message(&channel, &payload);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lost = self.lose_all_tunnels();
                    warn!(
                        skipped = n,
                        tunnels_lost = lost,
                        "tunnel messages were dropped; tunnels closed"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    // ------------------------------------------------------------------
    // Tunnels

    fn on_message(self: &Arc<Self>, channel: &str, payload: &str) {
        let env: Envelope = match serde_json::from_str(payload) {
            Ok(e) => e,
            Err(e) => {
                debug!(%channel, error = %e, "undecodable tunnel message ignored");
                return;
            }
        };
        let role = if channel == self.in_channel {
            Role::Owner
        } else if channel == self.out_channel {
            Role::Relay
        } else {
            return;
        };
        match (role, env.op) {
            (Role::Owner, Op::Open { room, token }) => {
                self.accept(env.tunnel, env.from, room, token)
            }
            (Role::Relay, Op::Opened) => {
                if let Some(tx) = lock(&self.pending_opens).remove(&env.tunnel) {
                    let _ = tx.send(Ok(()));
                }
            }
            (Role::Relay, Op::Close { code, reason }) => {
                // A refusal of a tunnel still opening, or a close of an open one.
                let pending = lock(&self.pending_opens).remove(&env.tunnel);
                match pending {
                    Some(tx) => {
                        let _ = tx.send(Err(format!("refused ({code} {reason})")));
                        lock(&self.tunnels).remove(&env.tunnel);
                    }
                    None => self.deliver(
                        Role::Relay,
                        &env.tunnel,
                        &env.from,
                        Op::Close { code, reason },
                    ),
                }
            }
            (role, op) => self.deliver(role, &env.tunnel, &env.from, op),
        }
    }

    /// Hands a frame to its tunnel end.
    fn deliver(self: &Arc<Self>, role: Role, id: &str, from: &str, op: Op) {
        let is_close = matches!(op, Op::Close { .. });
        let mut tunnels = lock(&self.tunnels);
        let Some(slot) = tunnels
            .get_mut(id)
            .filter(|s| s.peer == from && s.role == role)
        else {
            drop(tunnels);
            if !is_close {
                // The sender thinks this tunnel is alive; tell it otherwise.
                let channel = match role {
                    Role::Owner => keys::node_out(from),
                    Role::Relay => keys::node_in(from),
                };
                self.spawn_publish(
                    channel,
                    Envelope {
                        tunnel: id.to_owned(),
                        from: self.node.id.clone(),
                        op: Op::Close {
                            code: 1001,
                            reason: "unknown tunnel".into(),
                        },
                    },
                );
            }
            return;
        };
        slot.last_heard = Instant::now();
        let Some(frame) = op.into_frame() else {
            return; // keepalive
        };
        match slot.deliver.try_send(frame) {
            Ok(()) => {
                if is_close {
                    tunnels.remove(id);
                }
            }
            Err(_) => {
                // The local end is gone or too slow to keep up.
                let slot = tunnels.remove(id);
                drop(tunnels);
                if let Some(slot) = slot {
                    let _ = slot.deliver.try_send(TunnelFrame::Lost);
                    if !is_close {
                        self.spawn_publish(
                            self.channel_to(&slot),
                            Envelope {
                                tunnel: id.to_owned(),
                                from: self.node.id.clone(),
                                op: Op::Close {
                                    code: 1008,
                                    reason: "tunnel too slow".into(),
                                },
                            },
                        );
                    }
                }
            }
        }
    }

    fn channel_to(&self, slot: &Slot) -> String {
        match slot.role {
            Role::Relay => keys::node_in(&slot.peer),
            Role::Owner => keys::node_out(&slot.peer),
        }
    }

    fn spawn_publish(self: &Arc<Self>, channel: String, env: Envelope) {
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.publish(&channel, &env).await;
        });
    }

    /// Publishes one envelope; the number of subscribers that got it.
    async fn publish(&self, channel: &str, env: &Envelope) -> Result<i64, ClusterError> {
        let json = serde_json::to_string(env).map_err(|e| ClusterError::Decode(e.to_string()))?;
        Ok(self
            .conn
            .client
            .publish::<i64, _, _>(channel.to_owned(), json)
            .await?)
    }

    /// Owner side: a relay opened a tunnel.
    fn accept(self: &Arc<Self>, id: String, from: String, room: String, token: String) {
        if lock(&self.tunnels).contains_key(&id) {
            return;
        }
        let refuse = |reason: &str| {
            self.spawn_publish(
                keys::node_out(&from),
                Envelope {
                    tunnel: id.clone(),
                    from: self.node.id.clone(),
                    op: Op::Close {
                        code: 1013,
                        reason: reason.to_owned(),
                    },
                },
            );
        };
        if self.stopped() {
            refuse("node shutting down");
            return;
        }
        let (deliver_tx, deliver_rx) = mpsc::channel(TUNNEL_QUEUE);
        let (send_tx, send_rx) = mpsc::channel(TUNNEL_QUEUE);
        let end = TunnelEnd::new(id.clone(), from.clone(), send_tx, deliver_rx);
        let now = Instant::now();
        lock(&self.tunnels).insert(
            id.clone(),
            Slot {
                peer: from.clone(),
                role: Role::Owner,
                deliver: deliver_tx,
                last_heard: now,
                last_keepalive: now,
                created: now,
                epoch: self.epoch.load(Ordering::Relaxed),
            },
        );
        if self
            .incoming_tx
            .try_send(IncomingTunnel {
                room: room.clone(),
                token,
                end,
            })
            .is_err()
        {
            lock(&self.tunnels).remove(&id);
            refuse("node not accepting tunnels");
            return;
        }
        debug!(tunnel = %id, relay = %from, %room, "tunnel opened by a relay");
        tokio::spawn(self.clone().writer(
            id.clone(),
            keys::node_out(&from),
            Some(Op::Opened),
            send_rx,
        ));
    }

    /// Publishes a tunnel's frames in order; on the end of its queue, says
    /// `close` unless a close was sent or the tunnel is already gone.
    async fn writer(
        self: Arc<Self>,
        id: String,
        channel: String,
        first: Option<Op>,
        mut frames: mpsc::Receiver<TunnelFrame>,
    ) {
        let envelope = |op: Op| Envelope {
            tunnel: id.clone(),
            from: self.node.id.clone(),
            op,
        };
        if let Some(op) = first {
            match self.publish(&channel, &envelope(op)).await {
                Ok(0) => self.lose_tunnel(&id, "peer not listening"),
                Ok(_) => {}
                Err(e) => self.lose_tunnel(&id, &e.to_string()),
            }
        }
        let mut closed = false;
        while let Some(frame) = frames.recv().await {
            let Some(op) = Op::from_frame(frame) else {
                continue;
            };
            closed = matches!(op, Op::Close { .. });
            match self.publish(&channel, &envelope(op)).await {
                Ok(0) => {
                    self.lose_tunnel(&id, "peer not listening");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.lose_tunnel(&id, &e.to_string());
                    break;
                }
            }
            if closed {
                break;
            }
        }
        let still_open = lock(&self.tunnels).remove(&id).is_some();
        if still_open && !closed {
            let _ = self
                .publish(
                    &channel,
                    &envelope(Op::Close {
                        code: 1001,
                        reason: "tunnel closed".into(),
                    }),
                )
                .await;
        }
    }

    fn lose_tunnel(&self, id: &str, why: &str) {
        if let Some(tx) = lock(&self.pending_opens).remove(id) {
            let _ = tx.send(Err(why.to_owned()));
        }
        if let Some(slot) = lock(&self.tunnels).remove(id) {
            debug!(tunnel = %id, peer = %slot.peer, why, "tunnel lost");
            let _ = slot.deliver.try_send(TunnelFrame::Lost);
        }
    }

    fn lose_all_tunnels(&self) -> usize {
        let slots: Vec<Slot> = lock(&self.tunnels).drain().map(|(_, s)| s).collect();
        for s in &slots {
            let _ = s.deliver.try_send(TunnelFrame::Lost);
        }
        for (_, tx) in lock(&self.pending_opens).drain() {
            let _ = tx.send(Err("connection to Redis lost".into()));
        }
        slots.len()
    }

    /// Declares lost the tunnels whose peer is silent, left the registry,
    /// or that predate a connection loss; sends keepalives on the others.
    async fn maintain_tunnels(self: &Arc<Self>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let live = lock(&self.live).clone();
        let now = Instant::now();
        let mut lost = Vec::new();
        let mut keepalives = Vec::new();
        {
            let mut tunnels = lock(&self.tunnels);
            for (id, slot) in tunnels.iter_mut() {
                let peer_gone = live
                    .read_at
                    .is_some_and(|t| t > slot.created + self.timings.heartbeat)
                    && !live.nodes.contains_key(&slot.peer);
                if slot.epoch != epoch
                    || now.duration_since(slot.last_heard) > self.timings.tunnel_timeout
                    || peer_gone
                {
                    lost.push(id.clone());
                } else if now.duration_since(slot.last_keepalive) >= self.timings.tunnel_keepalive {
                    slot.last_keepalive = now;
                    keepalives.push((
                        self.channel_to(slot),
                        Envelope {
                            tunnel: id.clone(),
                            from: self.node.id.clone(),
                            op: Op::Ka,
                        },
                    ));
                }
            }
        }
        for id in lost {
            self.lose_tunnel(&id, "peer silent or gone");
        }
        if !self.available() {
            return;
        }
        for (channel, env) in keepalives {
            if let Ok(0) = self.publish(&channel, &env).await {
                self.lose_tunnel(&env.tunnel, "peer not listening");
            }
        }
    }
}

/// Whether a reconnection event arrived (a lag counts as one); waits
/// forever once the channel is closed.
async fn next_event<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> bool {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    match r.recv().await {
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
        Err(broadcast::error::RecvError::Closed) => {
            *rx = None;
            false
        }
    }
}

async fn read_nodes(client: &Client) -> Result<Vec<NodeInfo>, ClusterError> {
    let ids: Vec<String> = client.smembers(keys::NODES).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| keys::node(id)).collect();
    let values: Vec<Option<String>> = client.mget(keys).await?;
    let mut nodes = Vec::with_capacity(ids.len());
    let mut gone = Vec::new();
    for (id, value) in ids.into_iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
            Some(n) => nodes.push(n),
            None => gone.push(id),
        }
    }
    if !gone.is_empty() {
        let _ = client.srem::<(), _, _>(keys::NODES, gone).await;
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

async fn read_rooms(client: &Client) -> Result<Vec<ClusterRoom>, ClusterError> {
    let names: Vec<String> = client.smembers(keys::ROOMS).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = names.iter().map(|n| keys::room_info(n)).collect();
    let values: Vec<Option<String>> = client.mget(keys).await?;
    let mut rooms = Vec::with_capacity(names.len());
    let mut gone = Vec::new();
    for (name, value) in names.into_iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<ClusterRoom>(&v).ok()) {
            Some(r) => rooms.push(r),
            None => gone.push(name),
        }
    }
    if !gone.is_empty() {
        let _ = client.srem::<(), _, _>(keys::ROOMS, gone).await;
    }
    rooms.sort_by(|a, b| a.room.name.cmp(&b.room.name));
    Ok(rooms)
}

fn not_connected() -> ClusterError {
    ClusterError::Unavailable("not connected".into())
}

impl ClusterBackend for RedisCluster {
    fn node_id(&self) -> &str {
        &self.inner.node.id
    }

    fn is_single_node(&self) -> bool {
        false
    }

    fn is_available(&self) -> bool {
        self.inner.available()
    }

    fn place_room<'a>(
        &'a self,
        room: &'a str,
        may_claim: bool,
    ) -> BoxFuture<'a, Result<Placement, ClusterError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if !inner.available() {
                return Err(not_connected());
            }
            // Right after a reconnect, look up the room but claim it only
            // once the other nodes had time to re-assert theirs.
            let resyncing = lock(&inner.resync_until).is_some_and(|t| Instant::now() < t);
            let claim = may_claim && !resyncing;
            let answer: String = inner
                .conn
                .client
                .eval(
                    keys::PLACE,
                    vec![keys::room_owner(room)],
                    vec![
                        inner.node.id.clone(),
                        ms(inner.timings.room_ttl),
                        keys::NODE_PREFIX.to_owned(),
                        if claim { "1" } else { "0" }.to_owned(),
                    ],
                )
                .await?;
            match answer.split_at_checked(1) {
                Some(("L", _)) => Ok(Placement::Local),
                Some(("D", _)) if may_claim && resyncing => Err(ClusterError::Unavailable(
                    "re-synchronizing with Redis after a reconnect; retry in a few seconds"
                        .to_owned(),
                )),
                Some(("D", _)) => Err(ClusterError::Draining),
                Some(("R", json)) => serde_json::from_str::<NodeInfo>(json)
                    .map(Placement::Remote)
                    .map_err(|e| ClusterError::Decode(format!("node record: {e}"))),
                _ => Err(ClusterError::Decode(format!(
                    "unexpected placement answer `{answer}`"
                ))),
            }
        })
    }

    fn room_updated(&self, info: &RoomInfo) {
        let inner = &self.inner;
        inner.rooms.update(info);
        lock(&inner.released).remove(&info.name);
        lock(&inner.dirty).insert(info.name.clone());
        inner.flush.notify_one();
    }

    fn room_closed(&self, name: &str, sid: &RoomSid) {
        let inner = &self.inner;
        if inner.rooms.remove(name, sid) {
            lock(&inner.dirty).remove(name);
            lock(&inner.released).insert(name.to_owned());
            inner.flush.notify_one();
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move {
            if !self.inner.available() {
                return Err(not_connected());
            }
            read_nodes(&self.inner.conn.client).await
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<ClusterRoom>, ClusterError>> {
        Box::pin(async move {
            if !self.inner.available() {
                return Err(not_connected());
            }
            read_rooms(&self.inner.conn.client).await
        })
    }

    fn open_tunnel<'a>(
        &'a self,
        owner: &'a str,
        room: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TunnelEnd, ClusterError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let unreachable = |detail: String| ClusterError::OwnerUnreachable {
                node: owner.to_owned(),
                detail,
            };
            if !inner.available() {
                return Err(not_connected());
            }
            let id = random_tunnel_id();
            let (deliver_tx, deliver_rx) = mpsc::channel(TUNNEL_QUEUE);
            let (send_tx, send_rx) = mpsc::channel(TUNNEL_QUEUE);
            let (opened_tx, opened_rx) = oneshot::channel();
            let now = Instant::now();
            lock(&inner.pending_opens).insert(id.clone(), opened_tx);
            lock(&inner.tunnels).insert(
                id.clone(),
                Slot {
                    peer: owner.to_owned(),
                    role: Role::Relay,
                    deliver: deliver_tx,
                    last_heard: now,
                    last_keepalive: now,
                    created: now,
                    epoch: inner.epoch.load(Ordering::Relaxed),
                },
            );
            tokio::spawn(inner.clone().writer(
                id.clone(),
                keys::node_in(owner),
                Some(Op::Open {
                    room: room.to_owned(),
                    token: token.to_owned(),
                }),
                send_rx,
            ));
            let end = TunnelEnd::new(id.clone(), owner.to_owned(), send_tx, deliver_rx);
            let result = tokio::time::timeout(inner.timings.tunnel_open_timeout, opened_rx).await;
            lock(&inner.pending_opens).remove(&id);
            let failure = match result {
                Ok(Ok(Ok(()))) => {
                    debug!(tunnel = %id, %owner, %room, "tunnel open");
                    return Ok(end);
                }
                Ok(Ok(Err(detail))) => detail,
                Ok(Err(_)) => "tunnel lost while opening".to_owned(),
                Err(_) => format!("no answer within {:?}", inner.timings.tunnel_open_timeout),
            };
            inner.lose_tunnel(&id, &failure);
            drop(end);
            Err(unreachable(failure))
        })
    }

    fn take_incoming_tunnels(&self) -> Option<mpsc::Receiver<IncomingTunnel>> {
        lock(&self.inner.incoming_rx).take()
    }

    fn set_draining(&self, draining: bool) {
        let was = self.inner.draining.swap(draining, Ordering::Relaxed);
        if was != draining {
            info!(node = %self.inner.node.id, draining, "draining state changed");
            self.inner.resync.notify_one();
        }
    }

    fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    fn local_load(&self) -> NodeLoad {
        self.inner.rooms.load()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.stop.send_replace(true) {
                return;
            }
            inner.lose_all_tunnels();
            let leave = async {
                for room in inner.rooms.snapshot() {
                    let _ = inner.release(&room.name).await;
                }
                let released: Vec<String> = lock(&inner.released).drain().collect();
                for name in released {
                    let _ = inner.release(&name).await;
                }
                let client = &inner.conn.client;
                let _ = client.del::<(), _>(keys::node(&inner.node.id)).await;
                let _ = client
                    .srem::<(), _, _>(keys::NODES, inner.node.id.clone())
                    .await;
            };
            if inner.available() {
                let _ = tokio::time::timeout(Duration::from_secs(3), leave).await;
            }
            inner.conn.quit().await;
            info!(node = %inner.node.id, "left the cluster");
        })
    }
}
