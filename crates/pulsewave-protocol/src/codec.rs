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

/// Reads the top-level `requestId` of a message without parsing the message:
/// a scan of at most `limit` bytes from the start that skips every other
/// value (nested objects and arrays included) without allocating. For
/// messages too large to decode, so that their `error` 203 still answers the
/// request. `None` when the text is not a JSON object, `requestId` is not
/// within the first `limit` bytes, or it is not a valid `requestId` (a
/// non-negative integer or a string of at most 128 characters).
///
/// ```
/// use pulsewave_protocol::{RequestId, peek_request_id};
/// let text = r#"{"requestId":7,"type":"publish-data","data":"...huge..."}"#;
/// assert_eq!(peek_request_id(text, 1024), Some(RequestId::Number(7)));
/// let late = r#"{"type":"x","data":[1,{"requestId":2}],"requestId":"r"}"#;
/// assert_eq!(peek_request_id(late, 1024), Some(RequestId::Text("r".into())));
/// assert_eq!(peek_request_id(late, 20), None);
/// ```
pub fn peek_request_id(text: &str, limit: usize) -> Option<RequestId> {
    let bytes = &text.as_bytes()[..text.len().min(limit)];
    let mut s = Scanner { bytes, pos: 0 };
    s.ws();
    s.eat(b'{')?;
    loop {
        s.ws();
        if s.peek()? == b'}' {
            return None;
        }
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        if key == b"\"requestId\"" {
            return s.request_id();
        }
        s.skip_value()?;
        s.ws();
        match s.next()? {
            b',' => continue,
            _ => return None,
        }
    }
}

/// A byte cursor for [`peek_request_id`]; every method returns `None` at the
/// end of the scanned prefix.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A string token, quotes included, escapes left as they are.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'\\' => {
                    self.next()?;
                }
                b'"' => return Some(&self.bytes[start..self.pos]),
                _ => {}
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                while !matches!(
                    self.peek()?,
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                ) {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }

    fn request_id(&mut self) -> Option<RequestId> {
        let start = self.pos;
        if self.peek()? == b'"' {
            let token = self.string()?;
            // An escaped string of 128 characters is at most 128 * 12 bytes.
            if token.len() > 128 * 12 + 2 {
                return None;
            }
            let s: String = serde_json::from_slice(token).ok()?;
            return (s.len() <= 128).then_some(RequestId::Text(s));
        }
        self.skip_value()?;
        let n: u64 = std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()?
            .parse()
            .ok()?;
        Some(RequestId::Number(n))
    }
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
    /// The message's number among those the room sent this participant
    /// (for `join.resume`'s `lastSeq`); absent on messages the room did not
    /// number (replies made by the connection itself, lossy data).
    pub seq: Option<u64>,
}

/// Decodes one text frame from the server (for clients written in Rust).
pub fn decode_server(text: &str) -> Result<ServerFrame, serde_json::Error> {
    let mut value: Value = serde_json::from_str(text)?;
    let request_id = match value.as_object_mut().and_then(|o| o.remove("requestId")) {
        Some(v) => serde_json::from_value(v)?,
        None => None,
    };
    let seq = value
        .as_object_mut()
        .and_then(|o| o.remove("seq"))
        .and_then(|v| v.as_u64());
    let message = ServerMessage::deserialize(value)?;
    Ok(ServerFrame {
        request_id,
        message,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_request_id_reads_only_the_envelope() {
        let big = "x".repeat(100_000);
        let text =
            format!(r#"{{ "type" : "publish-data", "requestId" : "r-1", "data": "{big}" }}"#);
        assert_eq!(
            peek_request_id(&text, 4096),
            Some(RequestId::Text("r-1".into()))
        );
        // After a value longer than the scanned prefix: not found.
        let text = format!(r#"{{"type":"publish-data","data":"{big}","requestId":3}}"#);
        assert_eq!(peek_request_id(&text, 4096), None);
        assert_eq!(
            peek_request_id(&text, text.len()),
            Some(RequestId::Number(3))
        );
        // Nested objects, arrays, escaped quotes and scalars are skipped.
        let text =
            r#"{"a":{"requestId":1,"b":[1,"]\"}"]},"c":true,"d":null,"e":-1.5e3,"requestId":42}"#;
        assert_eq!(peek_request_id(text, 1000), Some(RequestId::Number(42)));
        // Not an object, no requestId, invalid requestId.
        for text in [
            "[1]",
            "\"requestId\"",
            r#"{"type":"x"}"#,
            r#"{"requestId":-1}"#,
            r#"{"requestId":1.5}"#,
            r#"{"requestId":{}}"#,
            r#"{"requestId":12"#,
            "",
            "{",
        ] {
            assert_eq!(peek_request_id(text, 1000), None, "{text}");
        }
        let long = format!(r#"{{"requestId":"{}"}}"#, "a".repeat(129));
        assert_eq!(peek_request_id(&long, 1000), None);
    }
}
