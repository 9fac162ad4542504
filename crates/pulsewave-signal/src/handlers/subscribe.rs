use pulsewave_protocol::rtp::RtpCapabilities;
use pulsewave_protocol::{ConsumerId, ProducerId, RequestId, TransportId};

use super::Flow;
use crate::error::SignalError;
use crate::room::MediaRequest;
use crate::session::Session;

/// Handles `subscribe`: a consumer of another participant's track.
pub(crate) struct SubscribeHandler;

impl SubscribeHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        producer_id: ProducerId,
        rtp_capabilities: RtpCapabilities,
        transport_id: Option<TransportId>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        // `canSubscribe` is checked by the room, against the participant's
        // permissions now (the server API may change them).
        room.media(
            sid.clone(),
            MediaRequest::Subscribe {
                producer_id,
                rtp_capabilities,
                transport_id,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `unsubscribe`.
pub(crate) struct UnsubscribeHandler;

impl UnsubscribeHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        consumer_id: ConsumerId,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::Unsubscribe { consumer_id },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `resume-consumer` and `pause-consumer`.
pub(crate) struct ResumeConsumerHandler;

impl ResumeConsumerHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        consumer_id: ConsumerId,
        resume: bool,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        let request = if resume {
            MediaRequest::ResumeConsumer { consumer_id }
        } else {
            MediaRequest::PauseConsumer { consumer_id }
        };
        room.media(sid.clone(), request, request_id).await?;
        Ok(Flow::Continue)
    }
}
