//! PulseWave signaling: the HTTP API and the WebSocket protocol on one port.
//!
//! - `POST /api/token` mints access tokens (HTTP Basic `API_KEY:API_SECRET`
//!   outside development mode), `GET /healthz` reports liveness.
//! - `ws://host:port/?token=…` upgrades to a signaling session. The token is
//!   verified before the upgrade: a bad token gets HTTP 401, never a
//!   half-open session.
//! - `GET /api/rooms` and `GET /api/nodes` list the rooms and nodes of the
//!   cluster (HTTP Basic `API_KEY:API_SECRET` outside development mode).
//! - With several nodes ([`ServerConfig::cluster`], `docs/cluster.md`), a
//!   WebSocket for a room that lives on another node is relayed there over
//!   Redis; the client does not notice.
//! - Each client message type has one handler (the seed's `HandlerRegistry`
//!   of `JoinHandler`, `LeaveHandler`, `DataHandler`, ...); rooms are
//!   actors owned by the [`RoomManager`].
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use pulsewave_signal::{ServerConfig, WebSocketServer};
//!
//! let running = WebSocketServer::new(ServerConfig::dev(0, "devkey", "devsecret"))
//!     .start()
//!     .await?;
//! println!("ws://{}/?token=...", running.local_addr());
//! running.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod cluster;
mod config;
mod error;
mod handlers;
mod http;
mod limits;
/// The media workers (the `pulsewave-media` crate).
pub use pulsewave_media as media;
pub mod metrics;
mod outbound;
mod rate;
mod room;
mod server;
mod session;
mod static_files;
mod twirp;
pub mod webhook;

pub use config::{
    DEFAULT_RESUME_BUFFER, DEFAULT_RESUME_GRACE, IpNet, Limits, MetricsSource,
    ParticipantIceServers, ServerConfig, TokenEndpointAuth,
};
pub use error::SignalError;
pub use pulsewave_cluster::Cluster;
pub use room::{RoomHandle, RoomManager, RoomSettings};
pub use server::{RunningServer, WebSocketServer, shutdown_signal};
