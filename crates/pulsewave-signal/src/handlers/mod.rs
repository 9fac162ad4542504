//! One handler per client message type, as the seed's Command pattern.
//!
//! [`HandlerRegistry::dispatch`] is the single place that maps a message
//! `type` to its handler. A handler checks the session state and the token's
//! grants, performs the request, and queues the reply; an `Err` becomes the
//! `error` message for the request.

mod data;
mod data_channel;
mod join;
mod layers;
mod leave;
mod publish;
mod subscribe;
mod transport;

use pulsewave_protocol::{ClientMessage, ClientRequest, ServerMessage};

pub(crate) use data::DataHandler;
pub(crate) use data_channel::DataChannelHandler;
pub(crate) use join::{
    JoinHandler, MAX_ATTRIBUTES, MAX_METADATA_BYTES, MAX_NAME_BYTES, check_attributes,
};
pub(crate) use layers::{
    ConsumerPriorityHandler, PreferredLayersHandler, StatsHandler, TrackSettingsHandler,
};
pub(crate) use leave::LeaveHandler;
pub(crate) use publish::{MuteHandler, PublishHandler, PublishRequest, UnpublishHandler};
pub(crate) use subscribe::{ResumeConsumerHandler, SubscribeHandler, UnsubscribeHandler};
pub(crate) use transport::{
    ConnectTransportHandler, CreateWebRtcTransportHandler, RestartIceHandler,
};

use crate::error::SignalError;
use crate::room::unix_millis;
use crate::session::Session;
use pulsewave_core::View;

/// What the session does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// Close the connection (after `leave`).
    Close,
}

/// Maps each message type to its handler.
pub(crate) struct HandlerRegistry;

impl HandlerRegistry {
    pub(crate) async fn dispatch(
        session: &mut Session,
        request: ClientRequest,
    ) -> Result<Flow, SignalError> {
        let rid = request.request_id;
        match request.message {
            ClientMessage::Join { room, resume } => {
                JoinHandler::handle(session, room, resume, rid).await
            }
            ClientMessage::Leave => LeaveHandler::handle(session, rid).await,
            ClientMessage::PublishData {
                kind,
                data,
                destination_identities,
                topic,
            } => DataHandler::handle(session, kind, data, destination_identities, topic, rid).await,
            ClientMessage::UpdateMetadata { metadata, name } => {
                let (room, sid) = session.joined()?;
                room.update_own(sid.clone(), metadata, name, rid).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Ping => {
                session.reply(
                    &ServerMessage::Pong {
                        timestamp: unix_millis(),
                    },
                    rid.as_ref(),
                );
                Ok(Flow::Continue)
            }
            ClientMessage::CreateTransport {
                direction,
                rtp_capabilities,
                sctp_capabilities: _,
            } => {
                CreateWebRtcTransportHandler::handle(session, direction, rtp_capabilities, rid)
                    .await
            }
            ClientMessage::ConnectTransport {
                transport_id,
                dtls_parameters,
            } => ConnectTransportHandler::handle(session, transport_id, dtls_parameters, rid).await,
            ClientMessage::RestartIce { transport_id } => {
                RestartIceHandler::handle(session, transport_id, rid).await
            }
            ClientMessage::Publish {
                transport_id,
                kind,
                source,
                rtp_parameters,
                name,
                muted,
            } => {
                let request = PublishRequest {
                    transport_id,
                    kind,
                    source,
                    rtp_parameters,
                    name,
                    muted,
                };
                PublishHandler::handle(session, request, rid).await
            }
            ClientMessage::Unpublish { producer_id } => {
                UnpublishHandler::handle(session, producer_id, rid).await
            }
            ClientMessage::Subscribe {
                producer_id,
                rtp_capabilities,
                transport_id,
            } => {
                SubscribeHandler::handle(session, producer_id, rtp_capabilities, transport_id, rid)
                    .await
            }
            ClientMessage::Unsubscribe { consumer_id } => {
                UnsubscribeHandler::handle(session, consumer_id, rid).await
            }
            ClientMessage::ResumeConsumer { consumer_id } => {
                ResumeConsumerHandler::handle(session, consumer_id, true, rid).await
            }
            ClientMessage::PauseConsumer { consumer_id } => {
                ResumeConsumerHandler::handle(session, consumer_id, false, rid).await
            }
            ClientMessage::SetPreferredLayers {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } => {
                PreferredLayersHandler::handle(
                    session,
                    consumer_id,
                    spatial_layer,
                    temporal_layer,
                    rid,
                )
                .await
            }
            ClientMessage::SetConsumerPriority {
                consumer_id,
                priority,
            } => ConsumerPriorityHandler::handle(session, consumer_id, priority, rid).await,
            ClientMessage::UpdateTrackSettings {
                consumer_id,
                disabled,
                width,
                height,
            } => {
                let view = View {
                    disabled,
                    width,
                    height,
                };
                TrackSettingsHandler::handle(session, consumer_id, view, rid).await
            }
            ClientMessage::GetStats => StatsHandler::handle(session, rid).await,
            ClientMessage::Mute { producer_id } => {
                MuteHandler::handle(session, producer_id, true, rid).await
            }
            ClientMessage::Unmute { producer_id } => {
                MuteHandler::handle(session, producer_id, false, rid).await
            }
            ClientMessage::PublishDataChannel {
                transport_id,
                sctp_stream_parameters,
                label,
                protocol,
            } => {
                DataChannelHandler::publish(
                    session,
                    transport_id,
                    sctp_stream_parameters,
                    label,
                    protocol,
                    rid,
                )
                .await
            }
            ClientMessage::UnpublishDataChannel { data_producer_id } => {
                DataChannelHandler::unpublish(session, data_producer_id, rid).await
            }
            ClientMessage::SubscribeData {
                data_producer_id,
                transport_id,
            } => DataChannelHandler::subscribe(session, data_producer_id, transport_id, rid).await,
            ClientMessage::UnsubscribeData { data_consumer_id } => {
                DataChannelHandler::unsubscribe(session, data_consumer_id, rid).await
            }
        }
    }
}
