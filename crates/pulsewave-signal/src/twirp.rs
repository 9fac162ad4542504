//! The server API: LiveKit's `RoomService` over Twirp, so that a backend
//! written against LiveKit's server SDKs drives PulseWave unchanged.
//!
//! `POST /twirp/livekit.RoomService/<Method>` with a JSON body (LiveKit's
//! lowerCamelCase, snake_case accepted too) and `Authorization: Bearer
//! <token>`: a token signed with an API key pair of this server, with
//! LiveKit's grants (`roomCreate`, `roomList`, `roomAdmin` for the room).
//! Server SDK tokens carry no identity (`sub`); they are accepted here.
//! Answers are LiveKit's JSON (snake_case proto names with their defaults,
//! 64-bit integers as strings, enums by name); errors are Twirp's
//! `{"code": "...", "msg": "..."}` with `Content-Type: application/json`.
//!
//! In a cluster, a request for a room that lives on another node is carried
//! there through a tunnel (the one client sessions are relayed through,
//! `crate::cluster`), run by the owner and its answer carried back. See
//! `docs/api.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use pulsewave_auth::{Claims, VideoGrant};
use pulsewave_cluster::{Placement, TunnelEnd, TunnelFrame};
use pulsewave_protocol::{
    DataEncoding, DataKind, MediaKind, ParticipantInfo, PublishSources, RoomInfo, TrackInfo,
    TrackSource,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::error::SignalError;
use crate::handlers::MAX_ATTRIBUTES;
use crate::http::Body;
use crate::room::{AdminOp, AdminReply, PermissionUpdate, validate_room_name};
use crate::server::Shared;

/// The path prefix of the room service.
pub(crate) const PREFIX: &str = "/twirp/livekit.RoomService/";

/// Largest request body, in bytes (`SendData` carries up to this much, in
/// base64).
const MAX_BODY: usize = 256 * 1024;

/// How long a node waits for the room's owner to answer a forwarded call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

/// A Twirp error: its code (which fixes the HTTP status) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TwirpError {
    code: &'static str,
    msg: String,
}

impl TwirpError {
    fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> Value {
        json!({"code": self.code, "msg": self.msg})
    }
}

/// The one place a signaling error becomes a Twirp error.
impl From<SignalError> for TwirpError {
    fn from(e: SignalError) -> Self {
        let code = match &e {
            SignalError::RoomNotFound(_)
            | SignalError::RoomClosed(_)
            | SignalError::ParticipantNotFound(_) => "not_found",
            SignalError::InvalidParameters(_) | SignalError::Media { .. } => "invalid_argument",
            SignalError::RoomFull { .. }
            | SignalError::RoomListingFull { .. }
            | SignalError::LimitReached(_) => "resource_exhausted",
            SignalError::PermissionDenied(_) | SignalError::Hidden(_) => "permission_denied",
            SignalError::Auth(_) | SignalError::TokenExpired { .. } => "unauthenticated",
            SignalError::Unavailable(_) => "unavailable",
            _ => "internal",
        };
        TwirpError::new(code, e.to_string())
    }
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    // Exactly `application/json`: the Node SDK reads the error body only then.
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error_response(e: &TwirpError) -> Response<Body> {
    respond(e.status(), &e.body())
}

/// `POST /twirp/livekit.RoomService/<Method>`.
pub(crate) async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    match serve(req, &shared).await {
        Ok(body) => respond(StatusCode::OK, &body),
        Err(e) => error_response(&e),
    }
}

async fn serve(req: Request<Incoming>, shared: &Shared) -> Result<Value, TwirpError> {
    let path = req.uri().path();
    let method = path.strip_prefix(PREFIX).unwrap_or_default().to_owned();
    if req.method() != Method::POST {
        return Err(TwirpError::new(
            "bad_route",
            format!("unsupported method {} (only POST)", req.method()),
        ));
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_body {
        return Err(TwirpError::new(
            "bad_route",
            "unexpected Content-Type: only application/json is supported",
        ));
    }
    let claims = authenticate(&req, shared)?;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(TwirpError::new(
                "invalid_argument",
                format!("request body larger than {MAX_BODY} bytes"),
            ));
        }
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| TwirpError::new("malformed", format!("the body is not JSON: {e}")))?
    };
    let call = Call::parse(&method, body)?;
    authorize(&claims, &call)?;
    execute(shared, call).await
}

/// The bearer token, verified with the server's API keys; no identity
/// needed.
fn authenticate<B>(req: &Request<B>, shared: &Shared) -> Result<Claims, TwirpError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            TwirpError::new(
                "unauthenticated",
                "missing Authorization: Bearer <token> header",
            )
        })?;
    shared
        .config
        .verifier()
        .with_identity_required(false)
        .verify(token)
        .map_err(|e| TwirpError::new("unauthenticated", format!("invalid token: {e}")))
}

/// LiveKit's grant checks: a missing grant is `unauthenticated`
/// ("permissions denied"), as LiveKit answers.
fn authorize(claims: &Claims, call: &Call) -> Result<(), TwirpError> {
    let video = &claims.video;
    let denied = || TwirpError::new("unauthenticated", "permissions denied");
    match call {
        Call::CreateRoom { .. } | Call::DeleteRoom { .. } => {
            if !video.room_create {
                return Err(denied());
            }
        }
        Call::ListRooms { .. } => {
            if !video.room_list {
                return Err(denied());
            }
        }
        Call::Room { room, .. } => {
            if !video.room_admin || video.room.as_deref() != Some(room.as_str()) {
                return Err(denied());
            }
        }
    }
    Ok(())
}

/// One call of the room service, parsed.
#[derive(Debug)]
enum Call {
    CreateRoom {
        name: String,
        empty_timeout: u32,
        max_participants: u32,
        metadata: String,
    },
    ListRooms {
        names: Vec<String>,
    },
    DeleteRoom {
        room: String,
    },
    /// Everything else acts on one open room.
    Room {
        room: String,
        method: RoomMethod,
        op: AdminOp,
    },
}

/// The room-scoped methods, for the shape of their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomMethod {
    UpdateRoomMetadata,
    ListParticipants,
    GetParticipant,
    RemoveParticipant,
    MutePublishedTrack,
    UpdateParticipant,
    UpdateSubscriptions,
    SendData,
    GetRoomStats,
}

/// A JSON number or string (protobuf JSON writes 64-bit integers as
/// strings, and accepts both).
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads field `camel` (or its snake_case twin) of a request object.
struct Fields<'a>(&'a serde_json::Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, camel: &str) -> Option<&'a Value> {
        if let Some(v) = self.0.get(camel) {
            return Some(v);
        }
        let mut snake = String::with_capacity(camel.len() + 4);
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        self.0.get(&snake)
    }

    fn string(&self, name: &str) -> Result<String, TwirpError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(invalid(name, "a string")),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, TwirpError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(name, "a boolean")),
        }
    }

    fn u32(&self, name: &str) -> Result<u32, TwirpError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => number(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid(name, "an unsigned 32-bit integer")),
        }
    }

    /// A list of strings, at most `max` of them.
    fn strings(&self, name: &str, max: usize) -> Result<Vec<String>, TwirpError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) if a.len() <= max => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(name, "a list of strings")),
            Some(_) => Err(invalid(name, &format!("a list of at most {max} strings"))),
        }
    }

    /// LiveKit track sources (`["CAMERA", "SCREEN_SHARE"]`, or their
    /// protobuf numbers); an empty list allows every source.
    fn sources(&self, name: &str) -> Result<PublishSources, TwirpError> {
        let bad = || {
            invalid(
                name,
                "a list of track sources (CAMERA, MICROPHONE, SCREEN_SHARE, SCREEN_SHARE_AUDIO)",
            )
        };
        match self.get(name) {
            None | Some(Value::Null) => Ok(PublishSources::ALL),
            Some(Value::Array(a)) if a.len() <= 8 => {
                let mut sources = Vec::with_capacity(a.len());
                for v in a {
                    let source = match v {
                        Value::String(s) => TrackSource::from_name(s),
                        v => number(v).and_then(TrackSource::from_livekit_number),
                    };
                    sources.push(source.ok_or_else(bad)?);
                }
                Ok(PublishSources::only(sources))
            }
            Some(_) => Err(bad()),
        }
    }

    /// A map of strings to strings (participant attributes), bounded by
    /// the attributes' limits (checked again, merged, in the room).
    fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, TwirpError> {
        let bad = || {
            invalid(
                name,
                &format!("an object of at most {MAX_ATTRIBUTES} string values"),
            )
        };
        match self.get(name) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) if m.len() <= MAX_ATTRIBUTES => m
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect::<Option<BTreeMap<_, _>>>()
                .ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    /// The room name, required and valid.
    fn room(&self, name: &str) -> Result<String, TwirpError> {
        let room = self.string(name)?;
        validate_room_name(&room).map_err(|_| {
            TwirpError::new(
                "invalid_argument",
                format!("`{name}`: a room name of 1 to 256 characters is required"),
            )
        })?;
        Ok(room)
    }

    fn identity(&self) -> Result<String, TwirpError> {
        let identity = self.string("identity")?;
        if identity.is_empty() {
            return Err(TwirpError::new(
                "invalid_argument",
                "`identity` is required",
            ));
        }
        Ok(identity)
    }
}

fn invalid(field: &str, what: &str) -> TwirpError {
    TwirpError::new("invalid_argument", format!("`{field}` must be {what}"))
}

/// Most entries of a list in a request (track sids, identities, names).
const MAX_LIST: usize = 1000;

impl Call {
    fn parse(method: &str, body: Value) -> Result<Call, TwirpError> {
        let Value::Object(map) = body else {
            return Err(TwirpError::new(
                "malformed",
                "the body must be a JSON object",
            ));
        };
        let f = Fields(&map);
        let room_call = |method: RoomMethod, op: AdminOp| -> Result<Call, TwirpError> {
            Ok(Call::Room {
                room: f.room("room")?,
                method,
                op,
            })
        };
        match method {
            "CreateRoom" => Ok(Call::CreateRoom {
                name: f.room("name")?,
                empty_timeout: f.u32("emptyTimeout")?,
                max_participants: f.u32("maxParticipants")?,
                metadata: f.string("metadata")?,
            }),
            "ListRooms" => Ok(Call::ListRooms {
                names: f.strings("names", MAX_LIST)?,
            }),
            "DeleteRoom" => Ok(Call::DeleteRoom {
                room: f.room("room")?,
            }),
            "UpdateRoomMetadata" => room_call(
                RoomMethod::UpdateRoomMetadata,
                AdminOp::UpdateRoomMetadata {
                    metadata: f.string("metadata")?,
                },
            ),
            "ListParticipants" => room_call(RoomMethod::ListParticipants, AdminOp::Snapshot),
            // A PulseWave extension (not in LiveKit's RoomService).
            "GetRoomStats" => room_call(RoomMethod::GetRoomStats, AdminOp::Stats),
            "GetParticipant" => room_call(
                RoomMethod::GetParticipant,
                AdminOp::GetParticipant {
                    identity: f.identity()?,
                },
            ),
            "RemoveParticipant" => room_call(
                RoomMethod::RemoveParticipant,
                AdminOp::RemoveParticipant {
                    identity: f.identity()?,
                },
            ),
            "MutePublishedTrack" => room_call(
                RoomMethod::MutePublishedTrack,
                AdminOp::MuteTrack {
                    identity: f.identity()?,
                    track_sid: f.string("trackSid")?,
                    muted: f.bool("muted")?,
                },
            ),
            "UpdateParticipant" => {
                let permission = match f.get("permission") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(p)) => {
                        let p = Fields(p);
                        Some(PermissionUpdate {
                            can_publish: p.bool("canPublish")?,
                            can_subscribe: p.bool("canSubscribe")?,
                            can_publish_data: p.bool("canPublishData")?,
                            can_update_metadata: p.bool("canUpdateMetadata")?,
                            hidden: p.bool("hidden")?,
                            can_publish_sources: p.sources("canPublishSources")?,
                        })
                    }
                    Some(_) => return Err(invalid("permission", "an object")),
                };
                room_call(
                    RoomMethod::UpdateParticipant,
                    AdminOp::UpdateParticipant {
                        identity: f.identity()?,
                        metadata: Some(f.string("metadata")?),
                        name: Some(f.string("name")?),
                        permission,
                        attributes: f.string_map("attributes")?,
                    },
                )
            }
            "UpdateSubscriptions" => {
                let mut track_sids = f.strings("trackSids", MAX_LIST)?;
                if let Some(Value::Array(list)) = f.get("participantTracks") {
                    for pt in list.iter().take(MAX_LIST) {
                        if let Value::Object(pt) = pt {
                            track_sids.extend(Fields(pt).strings("trackSids", MAX_LIST)?);
                        }
                    }
                }
                track_sids.truncate(MAX_LIST);
                room_call(
                    RoomMethod::UpdateSubscriptions,
                    AdminOp::UpdateSubscriptions {
                        identity: f.identity()?,
                        track_sids,
                        subscribe: f.bool("subscribe")?,
                    },
                )
            }
            "SendData" => {
                let encoded = f.string("data")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded))
                    .map_err(|_| invalid("data", "base64"))?;
                let kind = match f.get("kind") {
                    None | Some(Value::Null) => DataKind::Reliable,
                    Some(Value::String(s)) if s == "RELIABLE" => DataKind::Reliable,
                    Some(Value::String(s)) if s == "LOSSY" => DataKind::Lossy,
                    Some(v) if number(v) == Some(0) => DataKind::Reliable,
                    Some(v) if number(v) == Some(1) => DataKind::Lossy,
                    Some(_) => return Err(invalid("kind", "RELIABLE or LOSSY")),
                };
                let topic = Some(f.string("topic")?).filter(|t| !t.is_empty());
                room_call(
                    RoomMethod::SendData,
                    AdminOp::SendData {
                        data: bytes,
                        kind,
                        destinations: f.strings("destinationIdentities", MAX_LIST)?,
                        topic,
                    },
                )
            }
            other => Err(TwirpError::new(
                "bad_route",
                format!("no method `{other}` in livekit.RoomService"),
            )),
        }
    }
}

/// `SendData`'s payload as the `data` message carries it: the JSON value
/// it holds, else its UTF-8 text, else its bytes in base64 with
/// `encoding: "base64"`.
pub(crate) fn data_value(bytes: Vec<u8>) -> (Value, Option<DataEncoding>) {
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        return (v, None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (Value::String(text), None),
        Err(e) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
            Some(DataEncoding::Base64),
        ),
    }
}

async fn execute(shared: &Shared, call: Call) -> Result<Value, TwirpError> {
    match call {
        Call::CreateRoom {
            name,
            empty_timeout,
            max_participants,
            metadata,
        } => create_room(shared, name, empty_timeout, max_participants, metadata).await,
        Call::ListRooms { names } => {
            let rooms = shared
                .config
                .cluster
                .rooms()
                .await
                .map_err(|e| TwirpError::new("unavailable", e.to_string()))?;
            let rooms: Vec<Value> = rooms
                .iter()
                .filter(|r| names.is_empty() || names.contains(&r.room.name))
                .map(|r| lk_room(&r.room))
                .collect();
            Ok(json!({ "rooms": rooms }))
        }
        Call::DeleteRoom { room } => {
            if shared
                .rooms
                .close_room_with(&room, pulsewave_protocol::DisconnectReason::RoomDeleted)
                .await
            {
                return Ok(json!({}));
            }
            forward(shared, &room, "DeleteRoom", json!({ "room": room })).await
        }
        Call::Room { room, method, op } => {
            if let Some(handle) = shared.rooms.get_room(&room) {
                let reply = handle.admin(op).await?;
                return Ok(answer(method, reply));
            }
            forward(
                shared,
                &room,
                method_name(method),
                op_body(&room, method, &op),
            )
            .await
        }
    }
}

async fn create_room(
    shared: &Shared,
    name: String,
    empty_timeout: u32,
    max_participants: u32,
    metadata: String,
) -> Result<Value, TwirpError> {
    let cluster = &shared.config.cluster;
    if shared.rooms.get_room(&name).is_none() && !cluster.is_single_node() {
        let may_claim = !cluster.is_draining() && !shared.rooms.is_full();
        match cluster.place_room(&name, may_claim).await {
            Ok(Placement::Local) => {}
            Ok(Placement::Remote(owner)) => {
                let body = json!({"name": name, "emptyTimeout": empty_timeout,
                    "maxParticipants": max_participants, "metadata": metadata});
                return call_owner(shared, &owner.id, &name, "CreateRoom", body).await;
            }
            Err(e) => return Err(TwirpError::new("unavailable", e.to_string())),
        }
    }
    create_local(shared, name, empty_timeout, max_participants, metadata).await
}

async fn create_local(
    shared: &Shared,
    name: String,
    empty_timeout: u32,
    max_participants: u32,
    metadata: String,
) -> Result<Value, TwirpError> {
    let handle = shared.rooms.open_room(&name, true)?;
    let reply = handle
        .admin(AdminOp::Configure {
            empty_timeout: Some(empty_timeout).filter(|t| *t > 0),
            max_participants: Some(max_participants).filter(|m| *m > 0),
            metadata: Some(metadata).filter(|m| !m.is_empty()),
        })
        .await?;
    match reply {
        AdminReply::Room(info) => Ok(lk_room(&info)),
        _ => Err(TwirpError::new(
            "internal",
            "unexpected answer from the room",
        )),
    }
}

fn method_name(method: RoomMethod) -> &'static str {
    match method {
        RoomMethod::UpdateRoomMetadata => "UpdateRoomMetadata",
        RoomMethod::ListParticipants => "ListParticipants",
        RoomMethod::GetParticipant => "GetParticipant",
        RoomMethod::RemoveParticipant => "RemoveParticipant",
        RoomMethod::MutePublishedTrack => "MutePublishedTrack",
        RoomMethod::UpdateParticipant => "UpdateParticipant",
        RoomMethod::UpdateSubscriptions => "UpdateSubscriptions",
        RoomMethod::SendData => "SendData",
        RoomMethod::GetRoomStats => "GetRoomStats",
    }
}

/// The request body that makes the owner run `op` (for a forwarded call).
fn op_body(room: &str, _method: RoomMethod, op: &AdminOp) -> Value {
    match op {
        AdminOp::Configure { .. } | AdminOp::Snapshot | AdminOp::Stats | AdminOp::Summary => {
            json!({ "room": room })
        }
        AdminOp::UpdateRoomMetadata { metadata } => json!({"room": room, "metadata": metadata}),
        AdminOp::GetParticipant { identity } | AdminOp::RemoveParticipant { identity } => {
            json!({"room": room, "identity": identity})
        }
        AdminOp::MuteTrack {
            identity,
            track_sid,
            muted,
        } => json!({"room": room, "identity": identity, "trackSid": track_sid, "muted": muted}),
        AdminOp::UpdateParticipant {
            identity,
            metadata,
            name,
            permission,
            attributes,
        } => {
            let mut body = json!({"room": room, "identity": identity,
                "metadata": metadata.clone().unwrap_or_default(), "name": name.clone().unwrap_or_default(),
                "attributes": attributes});
            if let Some(p) = permission {
                body["permission"] = json!({"canPublish": p.can_publish, "canSubscribe": p.can_subscribe,
                    "canPublishData": p.can_publish_data, "canUpdateMetadata": p.can_update_metadata,
                    "hidden": p.hidden,
                    "canPublishSources": p.can_publish_sources.listed().map(lk_source).collect::<Vec<_>>()});
            }
            body
        }
        AdminOp::UpdateSubscriptions {
            identity,
            track_sids,
            subscribe,
        } => {
            json!({"room": room, "identity": identity, "trackSids": track_sids, "subscribe": subscribe})
        }
        AdminOp::SendData {
            data,
            kind,
            destinations,
            topic,
        } => {
            json!({"room": room,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "kind": if *kind == DataKind::Lossy { "LOSSY" } else { "RELIABLE" },
                "destinationIdentities": destinations, "topic": topic})
        }
    }
}

/// The LiveKit answer of a room-scoped method.
fn answer(method: RoomMethod, reply: AdminReply) -> Value {
    match (method, reply) {
        (RoomMethod::ListParticipants, AdminReply::Room(room)) => {
            let participants: Vec<Value> = room.participants.iter().map(lk_participant).collect();
            json!({ "participants": participants })
        }
        (_, AdminReply::Room(room)) => lk_room(&room),
        (_, AdminReply::Participant(p)) => lk_participant(&p),
        (RoomMethod::MutePublishedTrack, AdminReply::Track(t)) => json!({"track": lk_track(&t)}),
        (_, AdminReply::Track(t)) => lk_track(&t),
        (_, AdminReply::Stats(v)) => v,
        (_, AdminReply::Summary(_)) | (_, AdminReply::Done) => json!({}),
    }
}

/// Runs a room-scoped call on the node that owns the room.
async fn forward(
    shared: &Shared,
    room: &str,
    method: &str,
    body: Value,
) -> Result<Value, TwirpError> {
    let cluster = &shared.config.cluster;
    let not_found = || TwirpError::new("not_found", format!("room `{room}` not found"));
    if cluster.is_single_node() {
        return Err(not_found());
    }
    let rooms = cluster
        .rooms()
        .await
        .map_err(|e| TwirpError::new("unavailable", e.to_string()))?;
    let Some(owner) = rooms
        .iter()
        .find(|r| r.room.name == room)
        .map(|r| r.node.clone())
    else {
        return Err(not_found());
    };
    if owner == cluster.node_id() {
        // Our own record of a room that just closed.
        return Err(not_found());
    }
    call_owner(shared, &owner, room, method, body).await
}

/// Claims of a server API call carried to another node: no identity (a
/// session's always has one), `roomAdmin` for the room.
fn tunnel_claims(shared: &Shared, room: &str) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Claims {
        iss: shared.config.api_key.clone(),
        sub: String::new(),
        name: String::new(),
        metadata: String::new(),
        nbf: 0,
        exp: now + 60,
        jti: String::new(),
        video: VideoGrant {
            room: Some(room.to_owned()),
            room_admin: true,
            ..VideoGrant::default()
        },
        attributes: Default::default(),
    }
}

/// Whether tunneled `claims` are a server API call rather than a client
/// session (sessions always have an identity).
pub(crate) fn is_api_tunnel(claims: &Claims) -> bool {
    claims.sub.is_empty() && claims.video.room_admin && !claims.video.room_join
}

async fn call_owner(
    shared: &Shared,
    owner: &str,
    room: &str,
    method: &str,
    body: Value,
) -> Result<Value, TwirpError> {
    let cluster = &shared.config.cluster;
    let claims = tunnel_claims(shared, room);
    let unavailable = |e: &dyn std::fmt::Display| {
        TwirpError::new(
            "unavailable",
            format!("room `{room}` lives on node `{owner}`, which does not answer: {e}"),
        )
    };
    let mut end = cluster
        .open_tunnel(owner, room, &claims)
        .await
        .map_err(|e| unavailable(&e))?;
    let request = json!({"method": method, "body": body}).to_string();
    end.send(TunnelFrame::Text(request))
        .await
        .map_err(|e| unavailable(&e))?;
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, async {
        loop {
            match end.recv().await {
                Some(TunnelFrame::Text(t)) => return Some(t),
                Some(TunnelFrame::Ping | TunnelFrame::Pong | TunnelFrame::Binary) => continue,
                Some(TunnelFrame::Close { .. } | TunnelFrame::Lost) | None => return None,
            }
        }
    })
    .await;
    let _ = end
        .send(TunnelFrame::Close {
            code: 1000,
            reason: String::new(),
        })
        .await;
    let text = match answer {
        Ok(Some(t)) => t,
        Ok(None) => return Err(unavailable(&"the tunnel closed")),
        Err(_) => return Err(unavailable(&"timed out")),
    };
    #[derive(Deserialize)]
    struct Answer {
        ok: Option<Value>,
        code: Option<String>,
        msg: Option<String>,
    }
    let a: Answer = serde_json::from_str(&text).map_err(|e| unavailable(&e))?;
    match (a.ok, a.code) {
        (Some(v), _) => Ok(v),
        (None, Some(code)) => Err(TwirpError::new(
            static_code(&code),
            a.msg.unwrap_or_default(),
        )),
        (None, None) => Err(unavailable(&"malformed answer")),
    }
}

fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "invalid_argument",
        "malformed",
        "out_of_range",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "bad_route",
        "already_exists",
        "aborted",
        "failed_precondition",
        "resource_exhausted",
        "unimplemented",
        "unavailable",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("internal")
}

/// Owner side: runs one server API call another node forwarded through
/// `end` (already authorized there), answers, and closes.
pub(crate) async fn serve_tunnel(shared: Arc<Shared>, room: String, mut end: TunnelEnd) {
    let first = tokio::time::timeout(FORWARD_TIMEOUT, async {
        loop {
            match end.recv().await {
                Some(TunnelFrame::Text(t)) => return Some(t),
                Some(TunnelFrame::Ping | TunnelFrame::Pong | TunnelFrame::Binary) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(text)) = first else {
        debug!(%room, "forwarded server API call: no request");
        return;
    };
    #[derive(Deserialize)]
    struct Forwarded {
        method: String,
        body: Value,
    }
    let result = match serde_json::from_str::<Forwarded>(&text) {
        Ok(f) => run_forwarded(&shared, &room, &f.method, f.body).await,
        Err(e) => Err(TwirpError::new("malformed", e.to_string())),
    };
    let answer = match result {
        Ok(v) => json!({ "ok": v }),
        Err(e) => e.body(),
    };
    if end
        .send(TunnelFrame::Text(answer.to_string()))
        .await
        .is_err()
    {
        warn!(%room, "cannot answer a forwarded server API call");
    }
    // The caller closes; wait (bounded) so the answer goes out first.
    let _ = tokio::time::timeout(FORWARD_TIMEOUT, end.recv()).await;
}

async fn run_forwarded(
    shared: &Shared,
    room: &str,
    method: &str,
    body: Value,
) -> Result<Value, TwirpError> {
    let call = Call::parse(method, body)?;
    match call {
        Call::CreateRoom {
            name,
            empty_timeout,
            max_participants,
            metadata,
        } if name == room => {
            create_local(shared, name, empty_timeout, max_participants, metadata).await
        }
        Call::DeleteRoom { room: r } if r == room => {
            if shared
                .rooms
                .close_room_with(room, pulsewave_protocol::DisconnectReason::RoomDeleted)
                .await
            {
                Ok(json!({}))
            } else {
                Err(TwirpError::new(
                    "not_found",
                    format!("room `{room}` not found"),
                ))
            }
        }
        Call::Room {
            room: r,
            method,
            op,
        } if r == room => {
            let handle = shared
                .rooms
                .get_room(room)
                .ok_or_else(|| TwirpError::new("not_found", format!("room `{room}` not found")))?;
            Ok(answer(method, handle.admin(op).await?))
        }
        _ => Err(TwirpError::new(
            "permission_denied",
            "the forwarded call is not for the tunnel's room",
        )),
    }
}

// ---------------------------------------------------------------------------
// LiveKit's JSON shapes (protojson with proto names and defaults, as the
// LiveKit server writes them; SDKs read both namings).

pub(crate) fn lk_room(room: &RoomInfo) -> Value {
    let publishers = room
        .participants
        .iter()
        .filter(|p| !p.tracks.is_empty())
        .count();
    json!({
        "sid": room.sid.as_str(),
        "name": room.name,
        "empty_timeout": room.empty_timeout,
        "departure_timeout": 0,
        "max_participants": room.max_participants,
        "creation_time": (room.created_at / 1000).to_string(),
        "creation_time_ms": room.created_at.to_string(),
        "turn_password": "",
        "enabled_codecs": [],
        "metadata": room.metadata,
        "num_participants": room.participants.iter().filter(|p| !p.permission.hidden).count(),
        "num_publishers": publishers,
        "active_recording": false,
    })
}

pub(crate) fn lk_participant(p: &ParticipantInfo) -> Value {
    let tracks: Vec<Value> = p.tracks.iter().map(lk_track).collect();
    json!({
        "sid": p.sid.as_str(),
        "identity": p.identity,
        "state": "ACTIVE",
        "tracks": tracks,
        "metadata": p.metadata,
        "joined_at": (p.joined_at / 1000).to_string(),
        "joined_at_ms": p.joined_at.to_string(),
        "name": p.name,
        "version": 0,
        "permission": {
            "can_subscribe": p.permission.can_subscribe,
            "can_publish": p.permission.can_publish,
            "can_publish_data": p.permission.can_publish_data,
            "can_publish_sources": p.permission.can_publish_sources.listed().map(lk_source).collect::<Vec<_>>(),
            "hidden": p.permission.hidden,
            "recorder": false,
            "can_update_metadata": p.permission.can_update_metadata,
            "agent": false,
        },
        "region": "",
        "is_publisher": !p.tracks.is_empty(),
        "attributes": p.attributes,
    })
}

/// LiveKit's name of a track source.
fn lk_source(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Camera => "CAMERA",
        TrackSource::Microphone => "MICROPHONE",
        TrackSource::Screen => "SCREEN_SHARE",
        TrackSource::ScreenAudio => "SCREEN_SHARE_AUDIO",
    }
}

pub(crate) fn lk_track(t: &TrackInfo) -> Value {
    json!({
        "sid": t.sid.as_str(),
        "type": match t.kind { MediaKind::Audio => "AUDIO", MediaKind::Video => "VIDEO" },
        "name": t.name.clone().unwrap_or_default(),
        "muted": t.muted,
        "width": 0,
        "height": 0,
        "simulcast": t.simulcast,
        "disable_dtx": false,
        "source": lk_source(t.source),
        "layers": [],
        "mime_type": t.mime_type,
        "mid": "",
        "codecs": [],
        "stereo": false,
        "disable_red": false,
        "stream": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accept_both_namings_and_defaults() {
        let call = Call::parse(
            "CreateRoom",
            json!({"name": "r", "emptyTimeout": 30, "max_participants": "5"}),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(
            call,
            Call::CreateRoom { ref name, empty_timeout: 30, max_participants: 5, ref metadata }
                if name == "r" && metadata.is_empty()
        ));
        let call = Call::parse(
            "MutePublishedTrack",
            json!({"room": "r", "identity": "a", "track_sid": "TR_1"}),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(
            call,
            Call::Room {
                op: AdminOp::MuteTrack { muted: false, .. },
                ..
            }
        ));
    }

    #[test]
    fn bad_requests_are_twirp_errors() {
        let e = Call::parse("Nope", json!({})).err();
        assert_eq!(e.map(|e| e.code), Some("bad_route"));
        let e = Call::parse("GetParticipant", json!({"room": "r"})).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_argument"));
        let e = Call::parse("ListRooms", json!({"names": [1]})).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_argument"));
        let e = Call::parse("ListRooms", json!([])).err();
        assert_eq!(e.map(|e| e.code), Some("malformed"));
        let e = Call::parse("SendData", json!({"room": "r", "data": "%%%"})).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_argument"));
        assert_eq!(
            TwirpError::new("unauthenticated", "x").status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn grants_are_checked_per_method() {
        let claims = |video: VideoGrant| Claims {
            iss: "k".into(),
            sub: String::new(),
            name: String::new(),
            metadata: String::new(),
            nbf: 0,
            exp: 0,
            jti: String::new(),
            video,
            attributes: Default::default(),
        };
        let list = Call::ListRooms { names: vec![] };
        let admin = Call::parse("ListParticipants", json!({"room": "r"}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let lister = claims(VideoGrant {
            room_list: true,
            ..Default::default()
        });
        assert!(authorize(&lister, &list).is_ok());
        assert_eq!(
            authorize(&lister, &admin).err().map(|e| e.code),
            Some("unauthenticated")
        );
        let other_room = claims(VideoGrant {
            room_admin: true,
            room: Some("other".into()),
            ..Default::default()
        });
        assert!(authorize(&other_room, &admin).is_err());
        let this_room = claims(VideoGrant {
            room_admin: true,
            room: Some("r".into()),
            ..Default::default()
        });
        assert!(authorize(&this_room, &admin).is_ok());
        assert!(is_api_tunnel(&this_room));
    }

    #[test]
    fn forwarded_bodies_parse_back_to_the_same_call() {
        let ops = [
            (
                "UpdateParticipant",
                RoomMethod::UpdateParticipant,
                AdminOp::UpdateParticipant {
                    identity: "a".into(),
                    metadata: Some("m".into()),
                    name: Some("n".into()),
                    permission: Some(PermissionUpdate {
                        can_publish: true,
                        can_subscribe: false,
                        can_publish_data: true,
                        can_update_metadata: false,
                        hidden: true,
                        can_publish_sources: PublishSources::only([
                            TrackSource::Microphone,
                            TrackSource::Screen,
                        ]),
                    }),
                    attributes: [
                        ("k".to_owned(), "v".to_owned()),
                        ("gone".to_owned(), String::new()),
                    ]
                    .into(),
                },
            ),
            (
                "SendData",
                RoomMethod::SendData,
                AdminOp::SendData {
                    data: vec![0, 0xff, 0x10],
                    kind: DataKind::Lossy,
                    destinations: vec!["b".into()],
                    topic: Some("t".into()),
                },
            ),
        ];
        for (name, method, op) in ops {
            let body = op_body("r", method, &op);
            let back = Call::parse(name, body.clone()).unwrap_or_else(|e| panic!("{e:?}"));
            let Call::Room { op: back, .. } = back else {
                panic!("{name}: not a room call");
            };
            assert_eq!(op_body("r", method, &back), body, "{name}");
        }
    }

    #[test]
    fn data_payloads() {
        assert_eq!(data_value(b"{\"a\":1}".to_vec()), (json!({"a": 1}), None));
        assert_eq!(data_value(b"hello".to_vec()), (json!("hello"), None));
        assert_eq!(
            data_value(vec![0xff, 0xfe, 0]),
            (json!("//4A"), Some(DataEncoding::Base64))
        );
    }
}
