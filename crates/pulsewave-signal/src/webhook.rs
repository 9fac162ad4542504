//! Webhooks in LiveKit's format: `room_started`, `room_finished`,
//! `participant_joined`, `participant_left`, `track_published`,
//! `track_unpublished`, POSTed to every URL of `WEBHOOK_URLS`.
//!
//! - The body is LiveKit's `WebhookEvent` as JSON (lowerCamelCase, 64-bit
//!   integers as strings, enums by name): `event`, `room`, `participant`,
//!   `track`, `id` (`EV_…`, fixed when the event happens and the same on
//!   every retry) and `createdAt` (unix seconds).
//! - `Content-Type: application/webhook+json`, `Authorization: <JWT>` signed
//!   with the server's API key pair, whose `sha256` claim is the body's hash
//!   ([`pulsewave_auth::sign_webhook`]), as LiveKit's `WebhookReceiver`
//!   checks.
//! - The room's actor only queues the event (`WebhookNotifier::notify`
//!   never waits). A background task keeps one ordered queue per room (at
//!   most [`ROOM_QUEUE`] events) and a delivery task per room, so a slow
//!   receiver never blocks a room, events of one room arrive in order, and
//!   rooms do not wait for each other. A failed POST (connection error,
//!   timeout, any status but 2xx) is retried with backoff (0.5 s doubling
//!   to 8 s) until it succeeds or the event is older than [`MAX_AGE`]; then
//!   it is dropped, counted and logged. Delivery is at least once: a
//!   receiver that answered too late gets the event again, with the same
//!   `id`.
//! - **Journal (multi-node only).** With a Redis cluster backend
//!   ([`WebhookNotifier::start_with_cluster`]), the dispatch task also
//!   hands every event to [`ClusterBackend::webhook_journal_append`] before
//!   its room's task can deliver it, and to
//!   [`ClusterBackend::webhook_journal_remove`] once it is delivered to
//!   every URL or dropped: the backend keeps it, signed with the cluster
//!   key, in a Redis list per room written by this node, without the room
//!   ever waiting. Every [`JOURNAL_SCAN`] the notifier asks the backend for
//!   the journals of nodes that left the registry
//!   ([`ClusterBackend::webhook_journal_claim_orphans`]: claimed
//!   atomically, so one survivor gets each; entries that do not verify are
//!   never returned) and queues their events like its own: same bodies, so
//!   the same `id`s, each dead node's room in its order, signed with this
//!   node's API key pair. Events of a dead owner may interleave with those
//!   the room's new owner produces; receivers dedupe by `id` (at least
//!   once). A single node ([`Cluster::local`]) keeps its queue in memory
//!   only. docs/cluster.md ("Webhook journal") has the details.
//! - `http://` and `https://` URLs. TLS is rustls on aws-lc-rs; the
//!   receiver's certificate is checked against the system's root
//!   certificates and those of `WEBHOOK_CA_FILE` (PEM), for the URL's host
//!   name.
//!
//! [`ClusterBackend::webhook_journal_append`]: pulsewave_cluster::ClusterBackend::webhook_journal_append
//! [`ClusterBackend::webhook_journal_remove`]: pulsewave_cluster::ClusterBackend::webhook_journal_remove
//! [`ClusterBackend::webhook_journal_claim_orphans`]: pulsewave_cluster::ClusterBackend::webhook_journal_claim_orphans

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use pulsewave_cluster::Cluster;
use pulsewave_protocol::{ParticipantInfo, RoomInfo, TrackInfo};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::twirp::{lk_participant, lk_room, lk_track};

/// Events queued for one room before new ones are dropped.
pub const ROOM_QUEUE: usize = 200;
/// Events queued for all rooms, before the per-room queues.
const NODE_QUEUE: usize = 4096;
/// How long an event is retried before it is dropped.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Timeout of one POST (connect, send, answer).
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// A room's delivery task ends after this long without events.
const IDLE: Duration = Duration::from_secs(30);
/// How often a node of a cluster looks for webhook journals of dead nodes.
pub const JOURNAL_SCAN: Duration = Duration::from_secs(2);

/// What happened, as LiveKit names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookKind {
    /// `room_started`.
    RoomStarted,
    /// `room_finished`.
    RoomFinished,
    /// `participant_joined`.
    ParticipantJoined,
    /// `participant_left`.
    ParticipantLeft,
    /// `participant_connection_aborted`.
    ParticipantConnectionAborted,
    /// `track_published`.
    TrackPublished,
    /// `track_unpublished`.
    TrackUnpublished,
}

impl WebhookKind {
    fn as_str(self) -> &'static str {
        match self {
            WebhookKind::RoomStarted => "room_started",
            WebhookKind::RoomFinished => "room_finished",
            WebhookKind::ParticipantJoined => "participant_joined",
            WebhookKind::ParticipantLeft => "participant_left",
            WebhookKind::ParticipantConnectionAborted => "participant_connection_aborted",
            WebhookKind::TrackPublished => "track_published",
            WebhookKind::TrackUnpublished => "track_unpublished",
        }
    }
}

/// One event, ready to send: its room, its id and its body (the id is in
/// it).
#[derive(Debug)]
struct Queued {
    room: String,
    id: String,
    body: Bytes,
    created: Instant,
    /// Whether to write it to the cluster's webhook journal (false for
    /// events read back from the journal of a dead node: already there).
    journal: bool,
}

#[derive(Debug)]
struct Shared {
    urls: Vec<Uri>,
    /// The TLS client of `https://` URLs (`None` when there are none).
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    api_key: String,
    api_secret: String,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Journals events in the cluster store (no-op for a single node).
    cluster: Cluster,
}

/// Sends webhooks for the rooms of this node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WebhookNotifier {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

/// Webhook counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events delivered (a 2xx answer), counted per URL.
    pub delivered: u64,
    /// POSTs that failed (and were retried, or dropped when too old).
    pub failed: u64,
    /// Events dropped: queue full, or too old after retries.
    pub dropped: u64,
}

impl WebhookNotifier {
    /// Starts the background delivery task (needs a tokio runtime) for
    /// `urls` (`http://` or `https://host[:port]/path`), signing with
    /// `api_key` / `api_secret`; `https://` receivers are trusted through
    /// the system's root certificates.
    ///
    /// # Errors
    ///
    /// As [`start_with_ca`](Self::start_with_ca).
    pub fn start(urls: &[String], api_key: &str, api_secret: &str) -> Result<Self, String> {
        Self::start_with_ca(urls, api_key, api_secret, None)
    }

    /// [`start`](Self::start), also trusting the certificates of the PEM
    /// file `ca_file` (`WEBHOOK_CA_FILE`) for `https://` receivers.
    ///
    /// # Errors
    ///
    /// A URL that does not parse or is neither `http://` nor `https://`; a
    /// CA file that cannot be read or holds no certificate; `https://` URLs
    /// with no trusted root certificate at all.
    pub fn start_with_ca(
        urls: &[String],
        api_key: &str,
        api_secret: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        Self::start_with_cluster(urls, api_key, api_secret, ca_file, Cluster::local())
    }

    /// [`start_with_ca`](Self::start_with_ca) for a node of `cluster`. With
    /// a multi-node backend, every queued event is also kept in this
    /// node's webhook journal in the cluster store until it is delivered
    /// or dropped, and every [`JOURNAL_SCAN`] the notifier claims the
    /// journals of nodes that died and delivers their events (same bodies,
    /// same ids, in their order). A single node ([`Cluster::local`]) keeps
    /// its queue in memory only.
    ///
    /// # Errors
    ///
    /// As [`start_with_ca`](Self::start_with_ca).
    pub fn start_with_cluster(
        urls: &[String],
        api_key: &str,
        api_secret: &str,
        ca_file: Option<&std::path::Path>,
        cluster: Cluster,
    ) -> Result<Self, String> {
        let mut parsed = Vec::with_capacity(urls.len());
        for url in urls {
            let uri: Uri = url
                .parse()
                .map_err(|e| format!("webhook URL `{url}`: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "webhook URL `{url}`: only http:// and https://host[:port]/path are supported"
                ));
            }
            parsed.push(uri);
        }
        let tls = if parsed.iter().any(|u| u.scheme_str() == Some("https")) {
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            urls: parsed,
            tls,
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cluster,
        });
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        tokio::spawn(dispatch(rx, shared.clone()));
        if !shared.cluster.is_single_node() {
            tokio::spawn(adopt_orphans(tx.downgrade(), shared.clone()));
        }
        Ok(Self { tx, shared })
    }

    /// The counters so far.
    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// Queues an event of `room` (never waits; dropped and counted if the
    /// node's queue is full).
    pub fn notify(
        &self,
        kind: WebhookKind,
        room: &RoomInfo,
        participant: Option<&ParticipantInfo>,
        track: Option<&TrackInfo>,
    ) {
        let body = event_body(kind, room, participant, track, SystemTime::now());
        let queued = Queued {
            room: room.name.clone(),
            id: body["id"].as_str().unwrap_or_default().to_owned(),
            body: Bytes::from(body.to_string()),
            created: Instant::now(),
            journal: true,
        };
        if self.tx.try_send(queued).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            warn!(room = %room.name, event = kind.as_str(), "webhook queue full; event dropped");
        }
    }
}

/// The JSON body of one event, as LiveKit's `WebhookEvent`.
fn event_body(
    kind: WebhookKind,
    room: &RoomInfo,
    participant: Option<&ParticipantInfo>,
    track: Option<&TrackInfo>,
    now: SystemTime,
) -> Value {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut body = json!({
        "event": kind.as_str(),
        "room": camel(lk_room(room)),
        "id": format!("EV_{}", pulsewave_protocol::random_string(12)),
        "createdAt": secs.to_string(),
    });
    if let Some(p) = participant {
        let mut p = camel(lk_participant(p));
        if matches!(
            kind,
            WebhookKind::ParticipantLeft | WebhookKind::ParticipantConnectionAborted
        ) {
            p["state"] = json!("DISCONNECTED");
        }
        body["participant"] = p;
    }
    if let Some(t) = track {
        body["track"] = camel(lk_track(t));
    }
    body
}

/// Protobuf JSON's lowerCamelCase field names, from the proto names.
fn camel(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut out = String::with_capacity(k.len());
                    let mut upper = false;
                    for c in k.chars() {
                        if c == '_' {
                            upper = true;
                        } else if upper {
                            out.push(c.to_ascii_uppercase());
                            upper = false;
                        } else {
                            out.push(c);
                        }
                    }
                    (out, camel(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(camel).collect()),
        other => other,
    }
}

/// Hands each event to its room's delivery task, starting one when needed.
async fn dispatch(mut rx: mpsc::Receiver<Queued>, shared: Arc<Shared>) {
    let mut rooms: HashMap<String, mpsc::Sender<Queued>> = HashMap::new();
    while let Some(event) = rx.recv().await {
        if event.journal {
            // Before the room's task can deliver (and remove) it.
            if let Ok(body) = std::str::from_utf8(&event.body) {
                shared
                    .cluster
                    .webhook_journal_append(&event.room, &event.id, body);
            }
        }
        let mut event = Some(event);
        for _ in 0..2 {
            let Some(e) = event.take() else { break };
            let room = e.room.clone();
            let tx = rooms.entry(room.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                tokio::spawn(deliver_room(rx, shared.clone()));
                tx
            });
            match tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    shared.cluster.webhook_journal_remove(&e.room, &e.id);
                    warn!(room = %e.room, "webhook queue of the room full; event dropped");
                }
                Err(mpsc::error::TrySendError::Closed(e)) => {
                    // Its task ended (idle): start another, in order.
                    rooms.remove(&room);
                    event = Some(e);
                }
            }
        }
        if let Some(e) = event {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.cluster.webhook_journal_remove(&e.room, &e.id);
            warn!(room = %e.room, "no delivery task for the room; event dropped");
        }
        if rooms.len() > 64 {
            rooms.retain(|_, tx| !tx.is_closed());
        }
    }
}

/// Every [`JOURNAL_SCAN`], claims the webhook journals of dead nodes and
/// queues their events (each journal in order) like this node's own. Ends
/// with the notifier.
async fn adopt_orphans(tx: mpsc::WeakSender<Queued>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(JOURNAL_SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        let found = match shared.cluster.webhook_journal_claim_orphans(MAX_AGE).await {
            Ok(found) => found,
            Err(e) => {
                debug!(error = %e, "looking for webhook journals of dead nodes failed");
                continue;
            }
        };
        if found.dropped > 0 {
            shared.dropped.fetch_add(found.dropped, Ordering::Relaxed);
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for e in found.events {
            let age = Duration::from_millis(now_ms.saturating_sub(e.created_at_ms));
            let now = Instant::now();
            let queued = Queued {
                room: e.room,
                id: e.id,
                body: Bytes::from(e.body),
                created: now.checked_sub(age).unwrap_or(now),
                journal: false,
            };
            if tx.send(queued).await.is_err() {
                return;
            }
        }
    }
}

/// Delivers one room's events in order, each to every URL, with retries.
async fn deliver_room(mut rx: mpsc::Receiver<Queued>, shared: Arc<Shared>) {
    loop {
        let event = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(_) => {
                // Idle: stop taking events, deliver what slipped in, end.
                rx.close();
                while let Ok(e) = rx.try_recv() {
                    deliver(&shared, &e).await;
                }
                return;
            }
        };
        deliver(&shared, &event).await;
    }
}

/// Sends one event to every URL (retrying each until delivered or too
/// old), then removes it from the journal.
async fn deliver(shared: &Shared, event: &Queued) {
    deliver_to_all(shared, event).await;
    shared
        .cluster
        .webhook_journal_remove(&event.room, &event.id);
}

async fn deliver_to_all(shared: &Shared, event: &Queued) {
    for url in &shared.urls {
        let mut backoff = Duration::from_millis(500);
        loop {
            match post(shared, url, &event.body).await {
                Ok(()) => {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    if event.created.elapsed() + backoff > MAX_AGE {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        warn!(room = %event.room, %url, error = %e, "webhook not delivered; dropped after retries");
                        break;
                    }
                    debug!(room = %event.room, %url, error = %e, retry_in = ?backoff, "webhook failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
}

/// The TLS client of `https://` webhooks: rustls on aws-lc-rs, trusting
/// the system's roots and those of `ca_file`.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (_, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        debug!(ignored, "system root certificates rustls cannot use");
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("WEBHOOK_CA_FILE `{}`: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "WEBHOOK_CA_FILE `{}`: no certificate in the file",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("WEBHOOK_CA_FILE `{}`: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "https:// webhook URLs, but no trusted root certificate: install the system's \
             CA certificates or set WEBHOOK_CA_FILE"
                .to_owned(),
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends `request` over `io` (HTTP/1.1); `Ok` on a 2xx answer.
async fn exchange<IO>(io: IO, request: http::Request<Full<Bytes>>) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let res = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    // Read (and drop) the answer so the connection ends cleanly.
    let _ = res.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// One signed POST; `Ok` on a 2xx answer.
async fn post(shared: &Shared, url: &Uri, body: &Bytes) -> Result<(), String> {
    let auth =
        pulsewave_auth::sign_webhook(&shared.api_key, &shared.api_secret, body, SystemTime::now())
            .map_err(|e| e.to_string())?;
    let host = url.host().unwrap_or("localhost");
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = url
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.to_owned());
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/webhook+json")
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::USER_AGENT, "PulseWave")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let host = host.trim_matches(['[', ']']);
    let attempt = async {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if !https {
            return exchange(stream, request).await;
        }
        let tls = shared
            .tls
            .as_ref()
            .ok_or_else(|| "no TLS client for an https:// URL".to_owned())?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("TLS server name `{host}`: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(stream, request).await
    };
    tokio::time::timeout(POST_TIMEOUT, attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsewave_protocol::RoomSid;

    #[test]
    fn bodies_are_livekit_webhook_events() {
        let room = RoomInfo {
            sid: RoomSid::new("RM_1"),
            name: "r".into(),
            created_at: 1_700_000_000_123,
            max_participants: 0,
            metadata: String::new(),
            empty_timeout: 10,
            participants: Vec::new(),
        };
        let body = event_body(
            WebhookKind::RoomStarted,
            &room,
            None,
            None,
            SystemTime::now(),
        );
        assert_eq!(body["event"], "room_started");
        assert_eq!(body["room"]["name"], "r");
        assert_eq!(body["room"]["creationTime"], "1700000000");
        assert_eq!(body["room"]["emptyTimeout"], 10);
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with("EV_")));
        assert!(body.get("participant").is_none());
    }

    #[test]
    fn http_and_https_urls_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(rt) = rt else { return };
        rt.block_on(async {
            assert!(WebhookNotifier::start(&["ftp://x/".into()], "k", "s").is_err());
            let missing = std::path::Path::new("/nonexistent/ca.pem");
            assert!(
                WebhookNotifier::start_with_ca(&["https://x/".into()], "k", "s", Some(missing))
                    .is_err()
            );
            assert!(WebhookNotifier::start(&["not a url".into()], "k", "s").is_err());
            assert!(WebhookNotifier::start(&["http://127.0.0.1:9/hook".into()], "k", "s").is_ok());
        });
    }
}
