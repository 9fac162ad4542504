use pulsewave_protocol::transport::SctpStreamParameters;
use pulsewave_protocol::{DataConsumerId, DataProducerId, RequestId, TransportId};

use super::Flow;
use crate::error::SignalError;
use crate::room::MediaRequest;
use crate::session::Session;

/// Handles the SCTP data channel messages: `publish-data-channel`,
/// `unpublish-data-channel`, `subscribe-data`, `unsubscribe-data`.
pub(crate) struct DataChannelHandler;

impl DataChannelHandler {
    pub(crate) async fn publish(
        session: &mut Session,
        transport_id: Option<TransportId>,
        params: SctpStreamParameters,
        label: String,
        protocol: String,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        if session.claims.video.hidden {
            return Err(SignalError::Hidden("publish data channels"));
        }
        // `canPublishData` is checked by the room (live permissions).
        room.media(
            sid.clone(),
            MediaRequest::PublishDataChannel {
                transport_id,
                params,
                label,
                protocol,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }

    pub(crate) async fn unpublish(
        session: &mut Session,
        data_producer_id: DataProducerId,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::UnpublishDataChannel { data_producer_id },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }

    pub(crate) async fn subscribe(
        session: &mut Session,
        data_producer_id: DataProducerId,
        transport_id: Option<TransportId>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::SubscribeData {
                data_producer_id,
                transport_id,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }

    pub(crate) async fn unsubscribe(
        session: &mut Session,
        data_consumer_id: DataConsumerId,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::UnsubscribeData { data_consumer_id },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}
