use pulsewave_protocol::{
    ParticipantPermission, PublishSources, RequestId, ResumeRequest, TrackSource,
};

use super::Flow;
use crate::error::SignalError;
use crate::room::{self, JoinRequest};
use crate::session::{Session, SessionState};

/// Longest identity accepted at `join`, in bytes.
pub(crate) const MAX_IDENTITY_BYTES: usize = 256;
/// Longest display name accepted at `join`, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Longest participant metadata accepted at `join`, in bytes.
pub(crate) const MAX_METADATA_BYTES: usize = 4096;
/// Most participant attributes (keys).
pub(crate) const MAX_ATTRIBUTES: usize = 64;
/// Most bytes of a participant's attributes, keys and values together.
pub(crate) const MAX_ATTRIBUTES_BYTES: usize = 4096;

/// Checks a participant's attributes against [`MAX_ATTRIBUTES`] and
/// [`MAX_ATTRIBUTES_BYTES`] (no empty key).
pub(crate) fn check_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), SignalError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(SignalError::InvalidParameters(format!(
            "{} attributes; at most {MAX_ATTRIBUTES} are accepted",
            attributes.len()
        )));
    }
    if attributes.keys().any(String::is_empty) {
        return Err(SignalError::InvalidParameters(
            "an attribute key is empty".into(),
        ));
    }
    let bytes: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ATTRIBUTES_BYTES {
        return Err(SignalError::InvalidParameters(format!(
            "attributes are {bytes} bytes; at most {MAX_ATTRIBUTES_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// Handles `join`: checks the grant, enters the room, replies `joined`.
pub(crate) struct JoinHandler;

impl JoinHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        room: String,
        resume: Option<ResumeRequest>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        if let SessionState::Joined { room, .. } = &session.state {
            return Err(SignalError::AlreadyJoined(room.name().to_owned()));
        }
        session.claims.require_room_join(&room)?;
        // The token was valid at the upgrade; it must still be at `join`
        // (with the same leeway for clock skew).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let leeway = session.shared.config.token_leeway.as_secs();
        if now.saturating_sub(leeway) > session.claims.exp {
            return Err(SignalError::TokenExpired {
                exp: session.claims.exp,
            });
        }
        // What every other participant is sent about this one is bounded.
        for (field, value, max) in [
            ("identity (`sub`)", &session.claims.sub, MAX_IDENTITY_BYTES),
            ("name", &session.claims.name, MAX_NAME_BYTES),
            ("metadata", &session.claims.metadata, MAX_METADATA_BYTES),
        ] {
            if value.len() > max {
                return Err(SignalError::InvalidParameters(format!(
                    "the token's {field} is {} bytes; at most {max} are accepted",
                    value.len()
                )));
            }
        }
        check_attributes(&session.claims.attributes)?;
        if let Some(resume) = resume {
            return Self::resume(session, room, resume, request_id).await;
        }
        let video = &session.claims.video;
        // A hidden participant is seen by nobody, so it publishes nothing:
        // no tracks, no data channels, no data messages (as in LiveKit).
        let permission = ParticipantPermission {
            can_publish: video.can_publish() && !video.hidden,
            can_subscribe: video.can_subscribe(),
            can_publish_data: video.can_publish_data() && !video.hidden,
            hidden: video.hidden,
            can_update_metadata: video.can_update_own_metadata,
            can_publish_sources: PublishSources::only(
                video
                    .can_publish_sources
                    .iter()
                    .filter_map(|s| TrackSource::from_name(s)),
            ),
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
                attributes: session.claims.attributes.clone(),
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

    /// `join` with `resume`: takes back the session whose socket dropped.
    /// The grant and expiry were checked as for a fresh join; the room
    /// checks that the identity, sid and resume token match.
    async fn resume(
        session: &mut Session,
        room: String,
        resume: ResumeRequest,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let handle = match session.shared.rooms.open_room(&room, false) {
            Ok(h) => h,
            Err(SignalError::RoomNotFound(_)) => {
                return Err(SignalError::ResumeFailed("the room has closed"));
            }
            Err(e) => return Err(e),
        };
        let request = room::ResumeRequest {
            identity: session.claims.sub.clone(),
            sid: resume.participant_sid,
            token: resume.token,
            last_seq: resume.last_seq,
            outbound: session.outbound.clone(),
            request_id,
        };
        let sid = match handle.resume(request).await {
            Ok(sid) => sid,
            Err(SignalError::RoomClosed(_)) => {
                return Err(SignalError::ResumeFailed("the room has closed"));
            }
            Err(e) => return Err(e),
        };
        session.state = SessionState::Joined { room: handle, sid };
        Ok(Flow::Continue)
    }
}
