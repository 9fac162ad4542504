use pulsewave_protocol::{ParticipantPermission, RequestId};

use super::Flow;
use crate::error::SignalError;
use crate::room::JoinRequest;
use crate::session::{Session, SessionState};

/// Handles `join`: checks the grant, enters the room, replies `joined`.
pub(crate) struct JoinHandler;

impl JoinHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        room: String,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        if let SessionState::Joined { room, .. } = &session.state {
            return Err(SignalError::AlreadyJoined(room.name().to_owned()));
        }
        session.claims.require_room_join(&room)?;
        let video = &session.claims.video;
        let permission = ParticipantPermission {
            can_publish: video.can_publish(),
            can_subscribe: video.can_subscribe(),
            can_publish_data: video.can_publish_data(),
            hidden: video.hidden,
        };
        let create = session.shared.config.auto_create_rooms || video.room_create;
        // A room may close between lookup and join; then a fresh one is made.
        let mut attempts = 0;
        let (handle, sid) = loop {
            attempts += 1;
            let handle = session.shared.rooms.open_room(&room, create)?;
            let request = JoinRequest {
                identity: session.claims.sub.clone(),
                name: session.claims.name.clone(),
                metadata: session.claims.metadata.clone(),
                permission,
                outbound: session.outbound.clone(),
                request_id: request_id.clone(),
            };
            match handle.join(request).await {
                Ok(sid) => break (handle, sid),
                Err(SignalError::RoomClosed(_)) if attempts < 3 => continue,
                Err(e) => return Err(e),
            }
        };
        session.state = SessionState::Joined { room: handle, sid };
        Ok(Flow::Continue)
    }
}
