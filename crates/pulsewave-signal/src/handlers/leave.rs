use pulsewave_protocol::{RequestId, ServerMessage};

use super::Flow;
use crate::error::SignalError;
use crate::session::Session;

/// Handles `leave`: leaves the room, replies `left`, closes the socket.
pub(crate) struct LeaveHandler;

impl LeaveHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        session.joined()?;
        session.leave_room().await;
        session.reply(&ServerMessage::Left, request_id.as_ref());
        Ok(Flow::Close)
    }
}
