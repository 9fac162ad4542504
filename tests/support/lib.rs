//! Helpers for PulseWave's end-to-end tests: a server started on
//! 127.0.0.1:0, token minting, a WebSocket signaling client that waits for
//! typed messages, and a minimal HTTP client.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "testkey";
pub const SECRET: &str = "testsecret-0123456789";

/// How long a test waits for one expected message.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a test waits for a state it expects (a room closing, a counter
/// reaching a value); generous, it only bounds a failure.
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// Waits until `check` returns `Some`, and returns it; panics naming `what`
/// after `within`. For a state that no message announces (server
/// internals, counters): it is checked every 10 ms, the one sleep of these
/// tests that is not about time itself.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub running: Option<RunningServer>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig::dev(0, KEY, SECRET);
        config.empty_room_timeout = Duration::from_millis(300);
        // A socket closed without `leave` keeps its participant for the
        // resume grace time (15 s by default); 200 ms here, so that tests
        // closing sockets see `participant-left` promptly.
        config.resume_grace = Duration::from_millis(200);
        f(&mut config);
        let running = WebSocketServer::new(config).start().await.unwrap();
        let addr = running.local_addr();
        Self {
            running: Some(running),
            addr,
        }
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/?token={}", self.addr, token)
    }

    pub async fn connect(&self, identity: &str, room: &str) -> Client {
        Client::connect(&self.ws_url(&token(identity, room)), identity).await
    }

    /// Connects and joins; returns the client and its `joined` message.
    pub async fn join(&self, identity: &str, room: &str) -> (Client, Value) {
        let mut c = self.connect(identity, room).await;
        c.send(serde_json::json!({"type":"join","room":room,"requestId":"join"}))
            .await;
        let joined = c.recv_type("joined").await;
        assert_eq!(joined["requestId"], "join");
        (c, joined)
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A token for `identity` in `room` with every grant.
pub fn token(identity: &str, room: &str) -> String {
    token_with(identity, room, |_| {})
}

pub fn token_with(identity: &str, room: &str, f: impl FnOnce(&mut VideoGrant)) -> String {
    let mut t = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: identity.into(),
            name: Some(format!("{identity} name")),
            ..Default::default()
        },
    );
    let mut grant = VideoGrant {
        room: Some(room.into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    };
    f(&mut grant);
    t.add_grant(grant);
    t.to_jwt().unwrap()
}

/// A WebSocket signaling client.
pub struct Client {
    pub identity: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str, identity: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            identity: identity.into(),
            ws,
        }
    }

    /// Connects, or returns the HTTP status the upgrade was refused with.
    /// `headers` are added to the upgrade request.
    pub async fn try_connect(
        url: &str,
        identity: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Self {
                identity: identity.into(),
                ws,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("{identity}: connect failed: {e}"),
        }
    }

    /// Connects over a socket with a small receive buffer, so that a client
    /// that stops reading fills its TCP window quickly.
    pub async fn connect_small_buffer(url: &str, addr: SocketAddr, identity: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        Self {
            identity: identity.into(),
            ws,
        }
    }

    /// Waits up to `within` for the server to close the socket, skipping
    /// (and not reading into memory) what arrives before; returns whether it
    /// closed.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text message, or None if the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("{}: no message within {WAIT:?}", self.identity),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for a message of type `ty`, failing on anything else.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        let v = self
            .next()
            .await
            .unwrap_or_else(|| panic!("{}: socket closed waiting for {ty}", self.identity));
        assert_eq!(v["type"], ty, "{}: expected {ty}, got {v}", self.identity);
        v
    }

    /// Waits for a message of type `ty`, skipping others.
    pub async fn wait_for(&mut self, ty: &str) -> Value {
        loop {
            let v = self
                .next()
                .await
                .unwrap_or_else(|| panic!("{}: socket closed waiting for {ty}", self.identity));
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Asserts nothing arrives for `d`. Prefer a positive signal: a later
    /// message that must arrive next, after anything that must not (see
    /// the markers in signaling.rs and bad_input.rs).
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("{}: expected silence, got {m:?}", self.identity);
        }
    }

    /// Waits until the server closes the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("{}: socket not closed within {WAIT:?}", self.identity),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A minimal HTTP/1.1 request; returns status, headers and the body as JSON
/// (or `Value::Null` when the body is empty or not JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

/// `Authorization: Basic` header value for key:secret.
pub fn basic(key: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

/// The text of `GET /metrics`.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("GET")
        .uri("/metrics")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A counter from `GET /metrics`: `pulsewave_limit_hits_total` for `limit`.
pub async fn limit_hits(addr: SocketAddr, limit: &str) -> u64 {
    let text = metrics_text(addr).await;
    let prefix = format!("pulsewave_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
