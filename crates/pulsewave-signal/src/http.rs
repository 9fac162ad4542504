//! HTTP routes.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use pulsewave_auth::{AccessToken, AccessTokenOptions, Metadata, VideoGrant};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, info};

use crate::cluster::{self, Route};
use crate::config::TokenEndpointAuth;
use crate::limits::{Limit, Refused, client_ip};
use crate::server::Shared;
use crate::session;

/// Response body type.
pub(crate) type Body = Full<Bytes>;

const MAX_TOKEN_REQUEST: usize = 16 * 1024;

pub(crate) async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/api/token" => {
            // An open token endpoint reachable from the network is not
            // offered to every web page: no `Access-Control-Allow-Origin: *`.
            let exposed = open_on_network(&shared.config);
            let mut res = match *req.method() {
                Method::POST => token_endpoint(req, shared).await,
                Method::OPTIONS => cors_preflight(),
                _ => method_not_allowed("POST, OPTIONS"),
            };
            if exposed {
                res.headers_mut()
                    .remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
            }
            res
        }
        "/metrics" => match *req.method() {
            Method::GET => metrics(&req, &shared).await,
            _ => method_not_allowed("GET"),
        },
        "/healthz" => match *req.method() {
            Method::GET | Method::HEAD => healthz(&shared),
            _ => method_not_allowed("GET, HEAD"),
        },
        "/api/rooms" | "/api/nodes" => match *req.method() {
            Method::GET => {
                let config = &shared.config;
                let authorized = config.token_endpoint == TokenEndpointAuth::Open
                    || basic_auth_matches(&req, &config.api_key, &config.api_secret);
                admin_listing(authorized, &path, &shared).await
            }
            _ => method_not_allowed("GET"),
        },
        p if p.starts_with(crate::twirp::PREFIX) => crate::twirp::handle(req, shared).await,
        "/" | "/rtc" | "/ws" if is_upgrade(&req) => upgrade(req, peer, shared).await,
        "/" if shared.config.web_dir.is_some() && *req.method() == Method::GET => {
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::FOUND;
            res.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/demo/"));
            res
        }
        p if p == "/demo" || p.starts_with("/demo/") => match &shared.config.web_dir {
            Some(dir) if matches!(*req.method(), Method::GET | Method::HEAD) => {
                crate::static_files::serve_demo(dir, p).await
            }
            Some(_) => method_not_allowed("GET, HEAD"),
            None => json_error(
                StatusCode::NOT_FOUND,
                "the demo is disabled (DEMO_ENABLED=false)",
            ),
        },
        "/" | "/rtc" | "/ws" => json_error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: connect with ws://host:port/?token=<access token>",
        ),
        _ => json_error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    }
}

/// Whether the token endpoint is open (`--dev`) on an address other hosts
/// can reach.
pub(crate) fn open_on_network(config: &crate::config::ServerConfig) -> bool {
    config.token_endpoint == TokenEndpointAuth::Open && !config.listen.ip().is_loopback()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

/// A JSON error body: `{"error": "<message>", "status": <code>}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": message, "status": status.as_u16() }),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

fn cors_preflight() -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization"),
    );
    res
}

async fn metrics<B>(req: &Request<B>, shared: &Shared) -> Response<Body> {
    let config = &shared.config;
    if config.token_endpoint != TokenEndpointAuth::Open
        && !basic_auth_matches(req, &config.api_key, &config.api_secret)
    {
        let mut res = json_error(
            StatusCode::UNAUTHORIZED,
            "HTTP Basic authentication with API_KEY:API_SECRET is required",
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pulsewave\""),
        );
        return res;
    }
    let mut text = crate::metrics::render(shared);
    text.push_str(&crate::metrics::room_series(shared).await);
    if let Some(extra) = &config.extra_metrics {
        text.push_str(&extra.render().await);
    }
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

fn healthz(shared: &Shared) -> Response<Body> {
    if shared.is_shutting_down() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting-down"}),
        );
    }
    let cluster = &shared.config.cluster;
    let rooms = shared.rooms.room_names().len();
    if cluster.is_draining() {
        // Load balancers stop sending new clients here.
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "draining", "rooms": rooms, "node": cluster.node_id()}),
        );
    }
    // A server with media workers is not healthy with one of them dead:
    // its rooms are gone and nothing would be placed there.
    if let Some(pool) = shared.rooms.settings().media.as_ref()
        && !pool.is_healthy()
    {
        let alive = pool.workers().iter().filter(|w| w.is_alive()).count();
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "media-workers-down", "workers": pool.workers().len(), "workersAlive": alive, "node": cluster.node_id()}),
        );
    }
    let store = if cluster.is_single_node() {
        "none"
    } else if cluster.is_available() {
        "connected"
    } else {
        "unreachable"
    };
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "rooms": rooms, "node": cluster.node_id(), "clusterStore": store}),
    )
}

/// `GET /api/rooms` (every room of the cluster with its node, participants
/// and tracks) and `GET /api/nodes` (the node registry). HTTP Basic
/// `API_KEY:API_SECRET`, except in development mode (open token endpoint).
async fn admin_listing(authorized: bool, path: &str, shared: &Shared) -> Response<Body> {
    let config = &shared.config;
    if !authorized {
        let mut res = json_error(
            StatusCode::UNAUTHORIZED,
            "HTTP Basic authentication with API_KEY:API_SECRET is required",
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pulsewave\""),
        );
        return res;
    }
    let cluster = &config.cluster;
    let body = if path == "/api/rooms" {
        cluster
            .rooms()
            .await
            .map(|rooms| json!({"node": cluster.node_id(), "rooms": rooms}))
    } else {
        cluster
            .nodes()
            .await
            .map(|nodes| json!({"node": cluster.node_id(), "nodes": nodes}))
    };
    match body {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Body of `POST /api/token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    identity: String,
    #[serde(default)]
    name: Option<String>,
    room: String,
    #[serde(default)]
    metadata: Option<Value>,
    /// Optional grant overrides; defaults allow join, publish, subscribe, data.
    #[serde(default)]
    grants: Option<GrantOverrides>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GrantOverrides {
    can_publish: Option<bool>,
    can_subscribe: Option<bool>,
    can_publish_data: Option<bool>,
    hidden: Option<bool>,
}

async fn token_endpoint(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let config = &shared.config;
    match config.token_endpoint {
        TokenEndpointAuth::Disabled => {
            return json_error(StatusCode::NOT_FOUND, "the token endpoint is disabled");
        }
        TokenEndpointAuth::ApiKey => {
            if !basic_auth_matches(&req, &config.api_key, &config.api_secret) {
                let mut res = json_error(
                    StatusCode::UNAUTHORIZED,
                    "HTTP Basic authentication with API_KEY:API_SECRET is required",
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pulsewave\""),
                );
                return res;
            }
        }
        TokenEndpointAuth::Open => {}
    }
    let body = match Limited::new(req.into_body(), MAX_TOKEN_REQUEST)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {MAX_TOKEN_REQUEST} bytes"),
            );
        }
    };
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid request: {e}")),
    };
    if request.identity.trim().is_empty() || request.identity.len() > 256 {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`identity` must be 1 to 256 characters",
        );
    }
    if request.room.trim().is_empty() || request.room.len() > 256 {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`room` must be 1 to 256 characters",
        );
    }
    let overrides = request.grants.unwrap_or(GrantOverrides {
        can_publish: None,
        can_subscribe: None,
        can_publish_data: None,
        hidden: None,
    });
    let mut token = AccessToken::new(
        config.api_key.clone(),
        config.api_secret.clone(),
        AccessTokenOptions {
            identity: request.identity.clone(),
            name: request.name,
            metadata: request.metadata.map(Metadata::from),
            ttl: Some(config.token_ttl),
        },
    );
    token.add_grant(VideoGrant {
        room: Some(request.room.clone()),
        room_join: true,
        can_publish: Some(overrides.can_publish.unwrap_or(true)),
        can_subscribe: Some(overrides.can_subscribe.unwrap_or(true)),
        can_publish_data: Some(overrides.can_publish_data.unwrap_or(true)),
        hidden: overrides.hidden.unwrap_or(false),
        ..VideoGrant::default()
    });
    match token.to_jwt() {
        Ok(jwt) => {
            info!(identity = %request.identity, room = %request.room, "token issued");
            json_response(StatusCode::OK, &json!({ "token": jwt }))
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn basic_auth_matches<B>(req: &Request<B>, key: &str, secret: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{key}:{secret}");
    constant_time_eq(&decoded, expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, needle: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(needle)))
    };
    req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
}

/// The access token from `?token=`, `?access_token=` or `Authorization: Bearer`.
fn token_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if (k == "token" || k == "access_token") && !v.is_empty() {
                return Some(percent_decode(v));
            }
        }
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn upgrade(req: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    if shared.is_shutting_down() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    let Some(token) = token_of(&req) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "missing access token: connect with ?token=<access token>",
        );
    };
    let claims = match shared.verifier.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            debug!(%peer, error = %e, "rejected websocket: bad token");
            return json_error(StatusCode::UNAUTHORIZED, &format!("invalid token: {e}"));
        }
    };
    // Node-wide caps on open WebSockets, per client IP and per identity.
    let ip = client_ip(peer, req.headers(), &shared.config.trusted_proxies);
    let permit = match shared.connections.acquire(ip, &claims.sub) {
        Ok(p) => p,
        Err(refused) => {
            let (limit, message) = match refused {
                Refused::Ip(max) => (
                    Limit::ConnectionsPerIp,
                    format!(
                        "too many connections from {ip}: at most {max} (MAX_CONNECTIONS_PER_IP)"
                    ),
                ),
                Refused::Identity(max) => (
                    Limit::ConnectionsPerIdentity,
                    format!(
                        "too many connections for identity `{}`: at most {max} (MAX_CONNECTIONS_PER_IDENTITY)",
                        claims.sub
                    ),
                ),
            };
            shared.rooms.counters().hit(limit);
            debug!(%peer, %ip, identity = %claims.sub, "{message}");
            let mut res = json_error(StatusCode::TOO_MANY_REQUESTS, &message);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return res;
        }
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return json_error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v != "13")
    {
        return json_error(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
    }
    // Where the session runs: here, or on the node that owns the room.
    let route = match cluster::place(&shared, &claims).await {
        Ok(route) => route,
        Err(res) => return res,
    };
    let accept = derive_accept_key(key.as_bytes());
    let limits = &shared.config.limits;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(limits.max_message_size.saturating_mul(4)))
        .max_frame_size(Some(limits.max_message_size.saturating_mul(4)));
    let shared2 = shared.clone();
    let shutdown = shared.shutdown_signal();
    shared.sessions.spawn(async move {
        // Held for as long as the socket is open.
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                match route {
                    Route::Local => {
                        debug!(%peer, identity = %claims.sub, "websocket session started");
                        session::run(ws, claims, shared2, shutdown).await;
                    }
                    Route::Tunnel(end) => {
                        debug!(%peer, identity = %claims.sub, owner = %end.peer_node(), "websocket relayed to the room's node");
                        cluster::relay(ws, end, &shared2, shutdown).await;
                    }
                }
                debug!(%peer, "websocket session ended");
            }
            Err(e) => debug!(%peer, error = %e, "websocket upgrade failed"),
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("abc"), "abc");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
