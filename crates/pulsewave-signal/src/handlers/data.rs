use pulsewave_protocol::{DataKind, RequestId, ServerMessage};
use serde_json::Value;

use super::Flow;
use crate::error::SignalError;
use crate::session::Session;

/// Handles `publish-data`: relays the value to the others as `data`.
pub(crate) struct DataHandler;

impl DataHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        kind: DataKind,
        data: Value,
        destinations: Vec<String>,
        topic: Option<String>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        if session.claims.video.hidden {
            return Err(SignalError::Hidden("send data"));
        }
        // `canPublishData` is checked by the room (live permissions).
        room.publish_data(sid.clone(), kind, data, destinations, topic)
            .await?;
        if request_id.is_some() {
            session.reply(&ServerMessage::DataSent, request_id.as_ref());
        }
        Ok(Flow::Continue)
    }
}
