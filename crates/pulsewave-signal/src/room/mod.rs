//! Rooms and their participants.
//!
//! [`RoomManager`] owns the table of open rooms. Each room runs as one task
//! (an actor) that owns its state outright; sessions talk to it through a
//! [`RoomHandle`]. Because one task applies every change and sends every
//! event, each client sees events in the order they happened, and `joined`
//! always comes before anything else from the room.

mod actor;
mod admin;
mod link;
mod manager;
mod media;

pub(crate) use actor::unix_millis;
pub(crate) use admin::{AdminOp, AdminReply, PermissionUpdate};
pub(crate) use manager::{JoinRequest, ResumeRequest, validate_room_name};
pub use manager::{RoomHandle, RoomManager, RoomSettings};
pub(crate) use media::MediaRequest;
