use pulsewave_protocol::{ClientMessage, RequestId};

use super::Flow;
use crate::error::SignalError;
use crate::session::Session;

/// Media messages (transports, tracks, data channels).
pub(crate) struct MediaHandler;

impl MediaHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        message: ClientMessage,
        _request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        session.joined()?;
        Err(SignalError::Unavailable(format!(
            "`{}` needs the media core, which this build does not have yet",
            message.type_name()
        )))
    }
}
