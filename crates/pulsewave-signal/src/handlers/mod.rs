//! One handler per client message type, as the seed's Command pattern.
//!
//! [`HandlerRegistry::dispatch`] is the single place that maps a message
//! `type` to its handler. A handler checks the session state and the token's
//! grants, performs the request, and queues the reply; an `Err` becomes the
//! `error` message for the request.

mod data;
mod join;
mod leave;
mod media;

use pulsewave_protocol::{ClientMessage, ClientRequest, ServerMessage};

pub(crate) use data::DataHandler;
pub(crate) use join::JoinHandler;
pub(crate) use leave::LeaveHandler;
pub(crate) use media::MediaHandler;

use crate::error::SignalError;
use crate::room::unix_millis;
use crate::session::Session;

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
            ClientMessage::Join { room } => JoinHandler::handle(session, room, rid).await,
            ClientMessage::Leave => LeaveHandler::handle(session, rid).await,
            ClientMessage::PublishData {
                kind,
                data,
                destination_identities,
                topic,
            } => DataHandler::handle(session, kind, data, destination_identities, topic, rid).await,
            ClientMessage::Ping => {
                session.reply(
                    &ServerMessage::Pong {
                        timestamp: unix_millis(),
                    },
                    rid.as_ref(),
                );
                Ok(Flow::Continue)
            }
            other => MediaHandler::handle(session, other, rid).await,
        }
    }
}
