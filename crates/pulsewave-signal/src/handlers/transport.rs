use pulsewave_protocol::rtp::RtpCapabilities;
use pulsewave_protocol::transport::{DtlsParameters, TransportDirection};
use pulsewave_protocol::{RequestId, TransportId};

use super::Flow;
use crate::error::SignalError;
use crate::room::MediaRequest;
use crate::session::Session;

/// Handles `create-transport`: a WebRTC transport on the room's worker.
pub(crate) struct CreateWebRtcTransportHandler;

impl CreateWebRtcTransportHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        direction: TransportDirection,
        rtp_capabilities: Option<RtpCapabilities>,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let video = &session.claims.video;
        match direction {
            TransportDirection::Send if video.hidden => {
                return Err(SignalError::Hidden("publish (no send transport)"));
            }
            // `canPublish` / `canPublishData` for a send transport: checked
            // by the room, against the participant's permissions now.
            // Every participant may receive: data channels need no grant
            // beyond joining (as data messages); `subscribe` checks
            // `canSubscribe` for media.
            _ => {}
        }
        if direction == TransportDirection::Recv && rtp_capabilities.is_some() {
            return Err(SignalError::InvalidParameters(
                "`rtpCapabilities` are only for send transports".into(),
            ));
        }
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::CreateTransport {
                direction,
                rtp_capabilities,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `connect-transport`: the client's DTLS parameters.
pub(crate) struct ConnectTransportHandler;

impl ConnectTransportHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        transport_id: TransportId,
        dtls_parameters: DtlsParameters,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::ConnectTransport {
                transport_id,
                dtls_parameters,
            },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}

/// Handles `restart-ice`: new ICE credentials for one of the participant's
/// transports, answered with `ice-restarted`.
pub(crate) struct RestartIceHandler;

impl RestartIceHandler {
    pub(crate) async fn handle(
        session: &mut Session,
        transport_id: TransportId,
        request_id: Option<RequestId>,
    ) -> Result<Flow, SignalError> {
        let (room, sid) = session.joined()?;
        room.media(
            sid.clone(),
            MediaRequest::RestartIce { transport_id },
            request_id,
        )
        .await?;
        Ok(Flow::Continue)
    }
}
