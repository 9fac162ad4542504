use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_protocol::{MediaKind, ProducerId, RequestId, TrackSource, TransportId};

use super::Flow;
use crate::error::SignalError;
use crate::room::MediaRequest;
use crate::session::Session;

/// What `publish` carries.
pub(crate) struct PublishRequest {
    pub(crate) transport_id: Option<TransportId>,
    pub(crate) kind: MediaKind,
    pub(crate) source: Option<TrackSource>,
    pub(crate) rtp_parameters: RtpParameters,
    pub(crate) name: Option<String>,
    pub(crate) muted: bool,
}

/// Handles `publish`: a producer for the client's track.
pub(crate) struct PublishHandler;

impl PublishHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        request: PublishRequest,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        let video = &session.claims.video;
        if video.hidden {
            return Err(SignalError::Hidden("publish tracks"));
        }
        // `canPublish` is checked by the room, against the participant's
        // permissions now (the server API may change them).
        let source = request.source.unwrap_or(match request.kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video => TrackSource::Camera,
        });
        if !video.can_publish_source(source.as_str()) {
            return Err(SignalError::PermissionDenied("canPublishSources"));
        }
        if request.name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(SignalError::InvalidParameters(
                "`name` is at most 256 bytes".into(),
            ));
        }
        room.media(
            sid.clone(),
            MediaRequest::Publish {
                transport_id: request.transport_id,
                kind: request.kind,
                source,
                rtp_parameters: request.rtp_parameters,
                name: request.name,
                muted: request.muted,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `unpublish`.
pub(crate) struct UnpublishHandler;

impl UnpublishHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        producer_id: ProducerId,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::Unpublish { producer_id },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `mute` and `unmute` of the participant's own tracks.
pub(crate) struct MuteHandler;

impl MuteHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        producer_id: ProducerId,
        muted: bool,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::Mute { producer_id, muted },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}
