//! Turning text frames into messages and back.
//!
//! Decoding is done in two steps so that a request with bad fields still gets
//! its `requestId` echoed on the error: the text is parsed as a JSON object
//! first, `requestId` and `type` are read from it, and only then is the
//! message itself deserialized.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ErrorCode;
use crate::messages::{ClientMessage, RequestId, ServerMessage};

/// A decoded client message with its correlation id.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRequest {
    /// The `requestId` the client sent, if any.
    pub request_id: Option<RequestId>,
    /// The message.
    pub message: ClientMessage,
}

/// Why a text frame is not a valid client message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct DecodeError {
    /// The `requestId`, when it could be read.
    pub request_id: Option<RequestId>,
    /// Which error code applies: [`ErrorCode::MalformedMessage`],
    /// [`ErrorCode::UnknownMessageType`] or [`ErrorCode::InvalidParameters`].
    pub code: ErrorCode,
    /// What is wrong, for the client.
    pub detail: String,
}

/// Decodes one text frame from a client.
pub fn decode_client(text: &str) -> Result<ClientRequest, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
        request_id: None,
        code: ErrorCode::MalformedMessage,
        detail: format!("invalid JSON: {e}"),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(DecodeError {
            request_id: None,
            code: ErrorCode::MalformedMessage,
            detail: "a message must be a JSON object".into(),
        });
    };
    let request_id = take_request_id(&mut obj)?;
    let fail = |code, detail: String| DecodeError {
        request_id: request_id.clone(),
        code,
        detail,
    };
    let type_name = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(fail(
                ErrorCode::MalformedMessage,
                "`type` must be a string".into(),
            ));
        }
        None => return Err(fail(ErrorCode::MalformedMessage, "missing `type`".into())),
    };
    if !ClientMessage::TYPES.contains(&type_name.as_str()) {
        return Err(fail(
            ErrorCode::UnknownMessageType,
            format!("unknown message type `{type_name}`"),
        ));
    }
    let message = ClientMessage::deserialize(Value::Object(obj)).map_err(|e| {
        fail(
            ErrorCode::InvalidParameters,
            format!("invalid `{type_name}` message: {e}"),
        )
    })?;
    Ok(ClientRequest {
        request_id,
        message,
    })
}

fn take_request_id(obj: &mut Map<String, Value>) -> Result<Option<RequestId>, DecodeError> {
    match obj.remove("requestId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 128 => Ok(Some(RequestId::Text(s))),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(RequestId::Number)),
        Some(_) => Err(DecodeError {
            request_id: None,
            code: ErrorCode::InvalidParameters,
            detail:
                "`requestId` must be a non-negative integer or a string of at most 128 characters"
                    .into(),
        }),
    }
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RequestId>,
    #[serde(flatten)]
    message: &'a ServerMessage,
}

/// Encodes a server message, with `requestId` when it answers a request.
pub fn encode_server(message: &ServerMessage, request_id: Option<&RequestId>) -> String {
    let frame = Frame {
        request_id,
        message,
    };
    // Serializing these types cannot fail: every map key is a string and no
    // value is a non-finite float.
    serde_json::to_string(&frame).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","code":500,"message":"encoding failed: {e}"}}"#)
    })
}

/// Encodes a client message (for clients written in Rust).
pub fn encode_client(message: &ClientMessage, request_id: Option<&RequestId>) -> String {
    #[derive(Serialize)]
    struct ClientFrame<'a> {
        #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a RequestId>,
        #[serde(flatten)]
        message: &'a ClientMessage,
    }
    serde_json::to_string(&ClientFrame {
        request_id,
        message,
    })
    .unwrap_or_default()
}

/// A decoded server message with the `requestId` it answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerFrame {
    /// The `requestId` of the request this answers, if any.
    pub request_id: Option<RequestId>,
    /// The message.
    pub message: ServerMessage,
}

/// Decodes one text frame from the server (for clients written in Rust).
pub fn decode_server(text: &str) -> Result<ServerFrame, serde_json::Error> {
    let mut value: Value = serde_json::from_str(text)?;
    let request_id = match value.as_object_mut().and_then(|o| o.remove("requestId")) {
        Some(v) => serde_json::from_value(v)?,
        None => None,
    };
    let message = ServerMessage::deserialize(value)?;
    Ok(ServerFrame {
        request_id,
        message,
    })
}
