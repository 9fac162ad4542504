//! The single-node backend: no Redis, every room lives here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use pulsewave_protocol::{RoomInfo, RoomSid};
use tokio::sync::mpsc;

use crate::backend::{BoxFuture, ClusterBackend, LocalRooms};
use crate::cpu::CpuSampler;
use crate::error::ClusterError;
use crate::tunnel::{IncomingTunnel, TunnelEnd};
use crate::types::{ClusterRoom, NodeConfig, NodeInfo, NodeLoad, Placement, unix_millis};

/// One node on its own (`REDIS_ENABLED=false`, `--dev`): places every room
/// here, lists this node's rooms, and is the only node of its cluster.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pulsewave_cluster::{Cluster, ClusterBackend, LocalCluster, NodeConfig, Placement};
///
/// let cluster = Cluster::new(LocalCluster::new(NodeConfig::default()));
/// assert!(cluster.is_single_node());
/// assert_eq!(cluster.place_room("my-room", true).await.unwrap(), Placement::Local);
/// assert_eq!(cluster.nodes().await.unwrap().len(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    node: NodeConfig,
    started_at: u64,
    rooms: LocalRooms,
    draining: AtomicBool,
    cpu: Mutex<CpuSampler>,
}

impl LocalCluster {
    /// A single node described by `node`.
    pub fn new(node: NodeConfig) -> Self {
        Self {
            node,
            started_at: unix_millis(),
            rooms: LocalRooms::default(),
            draining: AtomicBool::new(false),
            cpu: Mutex::new(CpuSampler::new()),
        }
    }

    fn info(&self) -> NodeInfo {
        let load = self.rooms.load();
        let cpu = self.cpu.lock().unwrap_or_else(|p| p.into_inner()).sample();
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
}

impl Default for LocalCluster {
    fn default() -> Self {
        Self::new(NodeConfig::default())
    }
}

impl ClusterBackend for LocalCluster {
    fn node_id(&self) -> &str {
        &self.node.id
    }

    fn is_single_node(&self) -> bool {
        true
    }

    fn is_available(&self) -> bool {
        true
    }

    fn place_room<'a>(
        &'a self,
        _room: &'a str,
        may_claim: bool,
    ) -> BoxFuture<'a, Result<Placement, ClusterError>> {
        Box::pin(async move {
            if may_claim {
                Ok(Placement::Local)
            } else {
                Err(ClusterError::Draining)
            }
        })
    }

    fn room_updated(&self, info: &RoomInfo) {
        self.rooms.update(info);
    }

    fn room_closed(&self, name: &str, sid: &RoomSid) {
        self.rooms.remove(name, sid);
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move { Ok(vec![self.info()]) })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<ClusterRoom>, ClusterError>> {
        Box::pin(async move {
            Ok(self
                .rooms
                .snapshot()
                .into_iter()
                .map(|room| ClusterRoom {
                    node: self.node.id.clone(),
                    room,
                })
                .collect())
        })
    }

    fn open_tunnel<'a>(
        &'a self,
        owner: &'a str,
        _room: &'a str,
        _claims: &'a pulsewave_auth::Claims,
    ) -> BoxFuture<'a, Result<TunnelEnd, ClusterError>> {
        Box::pin(async move {
            Err(ClusterError::OwnerUnreachable {
                node: owner.to_owned(),
                detail: "a single node opens no tunnels".into(),
            })
        })
    }

    fn take_incoming_tunnels(&self) -> Option<mpsc::Receiver<IncomingTunnel>> {
        None
    }

    fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn local_load(&self) -> NodeLoad {
        self.rooms.load()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
