//! Handlers of what a subscriber says about the layers it receives:
//! preferences, priorities, how it shows a track, and the stats of its
//! allocation.

use pulsewave_core::View;
use pulsewave_protocol::{ConsumerId, RequestId};

use super::Flow;
use crate::error::SignalError;
use crate::room::MediaRequest;
use crate::session::Session;

/// Handles `set-preferred-layers`.
pub(crate) struct PreferredLayersHandler;

impl PreferredLayersHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        consumer_id: ConsumerId,
        spatial_layer: Option<u8>,
        temporal_layer: Option<u8>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        let request = MediaRequest::SetPreferredLayers {
            consumer_id,
            spatial_layer,
            temporal_layer,
        };
        room.media(sid.clone(), request, request_id).await?;
        Ok(Flow::Continue)
    }
}

/// Handles `set-consumer-priority`.
pub(crate) struct ConsumerPriorityHandler;

impl ConsumerPriorityHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        consumer_id: ConsumerId,
        priority: Option<u8>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        if priority == Some(0) {
            return Err(SignalError::InvalidParameters(
                "priority is 1 to 255 (or null for the default)".into(),
            ));
        }
        let request = MediaRequest::SetConsumerPriority {
            consumer_id,
            priority,
        };
        room.media(sid.clone(), request, request_id).await?;
        Ok(Flow::Continue)
    }
}

/// Handles `update-track-settings` (adaptive stream).
pub(crate) struct TrackSettingsHandler;

impl TrackSettingsHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        consumer_id: ConsumerId,
        view: View,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        let request = MediaRequest::UpdateTrackSettings { consumer_id, view };
        room.media(sid.clone(), request, request_id).await?;
        Ok(Flow::Continue)
    }
}

/// Handles `get-stats`.
pub(crate) struct StatsHandler;

impl StatsHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(sid.clone(), MediaRequest::GetStats, request_id)
            .await?;
        Ok(Flow::Continue)
    }
}
