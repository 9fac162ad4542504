//! `--churn`: a bounded soak of participants joining, publishing,
//! subscribing and leaving many rooms, in waves, after which the server must
//! be back to its baseline.
//!
//! Each wave lasts `--churn-wave`. During it, participants join at
//! `--ramp` joins a second while fewer than `--churn-participants` are
//! online; each picks a room of `--rooms`, and by a seeded draw publishes
//! VP8 video and opus audio (or audio only, or nothing), a reliable data
//! channel it writes to four times a second, subscribes to every track and
//! data channel of the room (also those published later), unpublishes or
//! unsubscribes one halfway through, and after `--churn-min-life` to
//! `--churn-max-life` leaves: with `leave`, by closing the WebSocket, or
//! abruptly (its runtime is dropped with the sockets open: no close frame,
//! no DTLS close_notify, as when a browser tab crashes). At the end of the
//! wave everyone still online leaves, and the next wave starts once the
//! server has emptied (at most `--wave-settle` later), so rooms close and
//! open again. Every participant runs on its own thread and current-thread
//! runtime, which is what makes the abrupt exit possible.
//!
//! The server is read from `/proc/<pid>` (resident memory, open files) and
//! `GET /metrics` (rooms, sessions, media rooms, transports, routing
//! entries): before the first join (the baseline), after each wave, every
//! second for the peaks, and at the end, where everything must be back to
//! the baseline within `--settle-timeout`, and the resident memory within
//! `--rss-tolerance-mib` of what it was after the first wave.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{
    Client, ClientError, ClientEvent, LocalTrackHandle, PublishOptions, SyntheticConfig,
    SyntheticSource,
};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{
    ConsumerId, DataKind, DataProducerId, ErrorCode, ProducerId, ServerMessage,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::LoadTestError;
use crate::probe::{http_get, metrics_url_for, proc_memory};
use crate::run::lock;
use crate::stats::{Histogram, Summary};

/// Errors kept verbatim in the report.
const MAX_ERROR_TEXTS: usize = 20;
/// How long a participant may take past its planned leave (joining,
/// publishing and leaving are each bounded by the client's timeouts).
const OVERRUN: Duration = Duration::from_secs(30);
/// How long a participant leaving cleanly waits for its client to finish
/// (the transports send their DTLS close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Period of the peak sampler and of the settle polls.
const SAMPLE_EVERY: Duration = Duration::from_millis(1000);
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Data channel messages a participant writes per second.
const DATA_PERIOD: Duration = Duration::from_millis(250);

/// What the server holds that must return to its baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerState {
    /// Open rooms (`pulsewave_rooms`).
    pub rooms: u64,
    /// Open WebSocket sessions (`pulsewave_sessions`).
    pub sessions: u64,
    /// Rooms on the media workers (`pulsewave_media_rooms`).
    pub media_rooms: u64,
    /// WebRTC transports (`pulsewave_media_transports`).
    pub transports: u64,
    /// Routing entries of the media workers (`pulsewave_media_routes`).
    pub routes: u64,
    /// Open file descriptors (`/proc/<pid>/fd`): sockets, timers, files.
    pub open_files: u64,
    /// Resident memory (`VmRSS`), bytes.
    pub rss_bytes: u64,
}

impl ServerState {
    /// Whether every count (all but memory) equals `base`'s.
    pub fn counts_equal(&self, base: &ServerState) -> bool {
        self.rooms == base.rooms
            && self.sessions == base.sessions
            && self.media_rooms == base.media_rooms
            && self.transports == base.transports
            && self.routes == base.routes
            && self.open_files == base.open_files
    }

    /// The larger of each field.
    fn max(&self, o: &ServerState) -> ServerState {
        ServerState {
            rooms: self.rooms.max(o.rooms),
            sessions: self.sessions.max(o.sessions),
            media_rooms: self.media_rooms.max(o.media_rooms),
            transports: self.transports.max(o.transports),
            routes: self.routes.max(o.routes),
            open_files: self.open_files.max(o.open_files),
            rss_bytes: self.rss_bytes.max(o.rss_bytes),
        }
    }

    /// The counts that differ from `base`, as `name a (baseline b)`.
    fn differences(&self, base: &ServerState) -> Vec<String> {
        let rows = [
            ("rooms", self.rooms, base.rooms),
            ("sessions", self.sessions, base.sessions),
            ("media rooms", self.media_rooms, base.media_rooms),
            ("transports", self.transports, base.transports),
            ("routing entries", self.routes, base.routes),
            ("open files", self.open_files, base.open_files),
        ];
        rows.iter()
            .filter(|(_, now, then)| now != then)
            .map(|(name, now, then)| format!("{name} {now} (baseline {then})"))
            .collect()
    }
}

/// Reads a [`ServerState`].
#[derive(Clone, Debug)]
struct StateProbe {
    pid: u32,
    metrics_url: String,
    credentials: (String, String),
}

impl StateProbe {
    async fn read(&self) -> Result<ServerState, LoadTestError> {
        // Files first: the `/metrics` request's own socket is closed by the
        // time the next reading counts files.
        let open_files = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map_err(|e| LoadTestError::Probe(format!("/proc/{}/fd: {e}", self.pid)))?
            .count() as u64;
        let (rss_bytes, _) = proc_memory(&self.pid.to_string()).ok_or_else(|| {
            LoadTestError::Probe(format!("cannot read /proc/{}/status", self.pid))
        })?;
        let body = http_get(&self.metrics_url, Some(&self.credentials)).await?;
        let gauge = |name: &str| -> Result<u64, LoadTestError> {
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let mut parts = l.split_whitespace();
                    (parts.next() == Some(name))
                        .then(|| parts.next()?.parse::<f64>().ok())
                        .flatten()
                })
                .map(|v| v as u64)
                .ok_or_else(|| {
                    LoadTestError::Probe(format!(
                        "{} has no `{name}` (a server older than the churn soak?)",
                        self.metrics_url
                    ))
                })
        };
        Ok(ServerState {
            rooms: gauge("pulsewave_rooms")?,
            sessions: gauge("pulsewave_sessions")?,
            media_rooms: gauge("pulsewave_media_rooms")?,
            transports: gauge("pulsewave_media_transports")?,
            routes: gauge("pulsewave_media_routes")?,
            open_files,
            rss_bytes,
        })
    }

    /// Polls until every count is back to `base`'s, at most `timeout`.
    /// Returns the last reading and, when it settled, after how long.
    async fn settle(
        &self,
        base: &ServerState,
        timeout: Duration,
    ) -> Result<(ServerState, Option<Duration>), LoadTestError> {
        let start = Instant::now();
        loop {
            let state = self.read().await?;
            if state.counts_equal(base) {
                return Ok((state, Some(start.elapsed())));
            }
            if start.elapsed() >= timeout {
                return Ok((state, None));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// How a participant leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// `leave`, then the client closes.
    Leave,
    /// The WebSocket is closed without `leave`.
    Close,
    /// Every socket is dropped at once, without a word.
    Abrupt,
}

/// What one participant does.
#[derive(Clone, Debug)]
struct Plan {
    url: String,
    room: String,
    identity: String,
    token: String,
    video: bool,
    audio: bool,
    data: bool,
    subscribe: bool,
    unpublish_midway: bool,
    unsubscribe_midway: bool,
    /// When it leaves.
    leave_at: Instant,
    exit: Exit,
    video_fps: u32,
    video_bitrate: u32,
    keyframe_interval: Duration,
}

/// Counters every participant adds to.
#[derive(Debug, Default)]
struct Totals {
    joins_attempted: AtomicU64,
    joined: AtomicU64,
    join_failed: AtomicU64,
    left_with_leave: AtomicU64,
    left_by_close: AtomicU64,
    left_abruptly: AtomicU64,
    transports_connected: AtomicU64,
    tracks_published: AtomicU64,
    tracks_unpublished: AtomicU64,
    subscriptions: AtomicU64,
    unsubscriptions: AtomicU64,
    data_channels: AtomicU64,
    data_subscriptions: AtomicU64,
    data_sent: AtomicU64,
    data_received: AtomicU64,
    rtp_received: AtomicU64,
    races: AtomicU64,
    errors: AtomicU64,
    error_texts: Mutex<Vec<String>>,
    join_us: Mutex<Histogram>,
}

impl Totals {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn error(&self, text: String) {
        Self::add(&self.errors, 1);
        let mut texts = lock(&self.error_texts);
        if texts.len() < MAX_ERROR_TEXTS {
            texts.push(text);
        }
    }

    /// A refusal that only says someone else left first (the producer or
    /// consumer is gone) counts as a race; anything else as an error.
    fn refused(&self, what: &str, e: &ClientError) {
        let race = matches!(
            e.code(),
            Some(
                ErrorCode::ProducerNotFound
                    | ErrorCode::ConsumerNotFound
                    | ErrorCode::DataProducerNotFound
                    | ErrorCode::DataConsumerNotFound
            )
        );
        if race {
            Self::add(&self.races, 1);
        } else {
            self.error(format!("{what}: {e}"));
        }
    }
}

/// Figures of one wave.
#[derive(Clone, Debug, Serialize)]
pub struct WaveFigures {
    /// 1 for the first.
    pub wave: u32,
    /// Participants started in it.
    pub participants: u64,
    /// Seconds from the last participant's exit until the server was
    /// back to its baseline counts; `None`: not within `--wave-settle`.
    pub settled_after_seconds: Option<f64>,
    /// The server then.
    pub after: ServerState,
}

/// What the participants did, over the whole soak.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnCounts {
    /// Connections attempted.
    pub joins_attempted: u64,
    /// Participants that joined.
    pub joined: u64,
    /// Participants that failed to connect or join.
    pub join_failed: u64,
    /// Joins per second of soak.
    pub joins_per_second: f64,
    /// Exits with `leave`.
    pub left_with_leave: u64,
    /// Exits by closing the WebSocket.
    pub left_by_close: u64,
    /// Exits by dropping every socket.
    pub left_abruptly: u64,
    /// WebRTC transports the participants connected (ICE and DTLS up).
    pub transports_connected: u64,
    /// Tracks published.
    pub tracks_published: u64,
    /// Tracks unpublished halfway through a stay.
    pub tracks_unpublished: u64,
    /// Subscriptions made.
    pub subscriptions: u64,
    /// Subscriptions ended halfway through a stay.
    pub unsubscriptions: u64,
    /// Data channels published.
    pub data_channels: u64,
    /// Data channel subscriptions.
    pub data_subscriptions: u64,
    /// Data channel messages written.
    pub data_sent: u64,
    /// Data channel messages received.
    pub data_received: u64,
    /// RTP packets received by subscribers.
    pub rtp_received: u64,
    /// Subscriptions refused because the publisher had just left (expected
    /// with churn; not errors).
    pub races: u64,
    /// Anything else that failed.
    pub errors: u64,
}

/// The churn soak's report.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// Seconds of churn (the waves, without the final settling).
    pub churn_seconds: f64,
    /// Rooms used.
    pub rooms: usize,
    /// Participants online at once, at most (asked for).
    pub max_participants: usize,
    /// Waves run.
    pub waves: u32,
    /// What the participants did.
    pub counts: ChurnCounts,
    /// WebSocket connect to `joined`, ms.
    pub join_ms: Summary,
    /// The server before the first join.
    pub baseline: ServerState,
    /// The server once empty after the first wave (its memory is the
    /// reference for the end).
    pub warm: ServerState,
    /// The largest readings (sampled every second).
    pub peak: ServerState,
    /// The server at the end.
    pub end: ServerState,
    /// Seconds after the last participant's exit until the counts were
    /// back; `None`: not within `--settle-timeout`.
    pub settled_after_seconds: Option<f64>,
    /// Resident memory allowed at the end: the warm reading plus the
    /// tolerance.
    pub rss_limit_bytes: u64,
    /// Every wave.
    pub per_wave: Vec<WaveFigures>,
    /// The first error texts.
    pub error_texts: Vec<String>,
    /// Every check held.
    pub passed: bool,
    /// The checks that failed.
    pub failures: Vec<String>,
}

fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn state_line(s: &ServerState) -> String {
    format!(
        "rooms {:>3}  sessions {:>3}  media rooms {:>3}  transports {:>4}  routes {:>4}  files {:>4}  RSS {:>7.1} MiB",
        s.rooms,
        s.sessions,
        s.media_rooms,
        s.transports,
        s.routes,
        s.open_files,
        mib(s.rss_bytes)
    )
}

impl ChurnReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let c = &self.counts;
        let _ = writeln!(
            o,
            "PulseWave churn soak: {:.0} s, {} waves, {} rooms, up to {} participants online",
            self.churn_seconds, self.waves, self.rooms, self.max_participants
        );
        let _ = writeln!(
            o,
            "joins         {} attempted, {} joined ({:.2}/s), {} failed; join p50 {:.1} ms, p99 {:.1} ms",
            c.joins_attempted,
            c.joined,
            c.joins_per_second,
            c.join_failed,
            self.join_ms.p50,
            self.join_ms.p99
        );
        let _ = writeln!(
            o,
            "exits         {} leave, {} close, {} abrupt",
            c.left_with_leave, c.left_by_close, c.left_abruptly
        );
        let _ = writeln!(
            o,
            "media         {} transports connected, {} tracks published ({} unpublished), {} subscriptions ({} ended early), {} RTP packets received",
            c.transports_connected,
            c.tracks_published,
            c.tracks_unpublished,
            c.subscriptions,
            c.unsubscriptions,
            c.rtp_received
        );
        let _ = writeln!(
            o,
            "data          {} channels, {} subscriptions, {} messages sent, {} received",
            c.data_channels, c.data_subscriptions, c.data_sent, c.data_received
        );
        let _ = writeln!(
            o,
            "races/errors  {} races (publisher already gone), {} errors",
            c.races, c.errors
        );
        let _ = writeln!(o, "server");
        let _ = writeln!(o, "  baseline    {}", state_line(&self.baseline));
        let _ = writeln!(o, "  warm        {}", state_line(&self.warm));
        let _ = writeln!(o, "  peak        {}", state_line(&self.peak));
        let _ = writeln!(o, "  end         {}", state_line(&self.end));
        let _ = writeln!(
            o,
            "  settled     {}; RSS limit {:.1} MiB",
            match self.settled_after_seconds {
                Some(s) => format!("after {s:.1} s"),
                None => "no".to_owned(),
            },
            mib(self.rss_limit_bytes)
        );
        for w in &self.per_wave {
            let _ = writeln!(
                o,
                "  wave {:>3}    {:>3} participants, settled {:>8}; {}",
                w.wave,
                w.participants,
                match w.settled_after_seconds {
                    Some(s) => format!("{s:.1} s"),
                    None => "no".to_owned(),
                },
                state_line(&w.after)
            );
        }
        for e in &self.error_texts {
            let _ = writeln!(o, "error: {e}");
        }
        if self.passed {
            let _ = writeln!(o, "PASSED");
        } else {
            for f in &self.failures {
                let _ = writeln!(o, "FAILED: {f}");
            }
        }
        o
    }
}

fn validate(config: &Config) -> Result<(), LoadTestError> {
    let bad = |what, detail: &str| {
        Err(LoadTestError::InvalidArgument {
            what,
            detail: detail.to_owned(),
        })
    };
    if config.server_pid.is_none() {
        return bad(
            "--server-pid",
            "the churn soak reads the server's memory and open files from /proc",
        );
    }
    if config.urls.is_empty() || !config.urls.iter().all(|u| u.starts_with("ws://")) {
        return bad("--url", "give ws:// server URLs");
    }
    if config.rooms == 0 || config.churn_participants == 0 {
        return bad("--rooms/--churn-participants", "nobody to start");
    }
    if config.churn_participants > 2000 {
        return bad("--churn-participants", "at most 2000 (one thread each)");
    }
    if config.churn_min_life.is_zero() || config.churn_min_life > config.churn_max_life {
        return bad(
            "--churn-min-life/--churn-max-life",
            "0 < min-life <= max-life",
        );
    }
    if config.churn_wave <= config.churn_min_life {
        return bad(
            "--churn-wave",
            "a wave must be longer than --churn-min-life",
        );
    }
    if !config.ramp.is_finite() || config.ramp <= 0.0 {
        return bad("--ramp", "joins per second must be above 0");
    }
    if !config.rss_tolerance_mib.is_finite() || config.rss_tolerance_mib < 0.0 {
        return bad("--rss-tolerance-mib", "a size in MiB, 0 or more");
    }
    if config.video_bitrate > u64::from(u32::MAX) {
        return bad("--video-bitrate", "at most 4 Gbit/s");
    }
    Ok(())
}

/// Runs the churn soak. It stops by itself: waves for `--duration`, each
/// participant bounded by its plan plus `OVERRUN` (30 s), the settling by
/// `--wave-settle` and `--settle-timeout`.
pub async fn churn(config: Config) -> Result<ChurnReport, LoadTestError> {
    validate(&config)?;
    let pid = config.server_pid.unwrap_or_default();
    let metrics_url = match config.metrics.as_deref() {
        None | Some("auto") => {
            metrics_url_for(&config.urls[0]).ok_or_else(|| LoadTestError::InvalidArgument {
                what: "--metrics",
                detail: format!("cannot derive a metrics URL from `{}`", config.urls[0]),
            })?
        }
        Some(url) => url.to_owned(),
    };
    let probe = StateProbe {
        pid,
        metrics_url,
        credentials: (config.api_key.clone(), config.api_secret.clone()),
    };
    let baseline = probe.read().await?;

    // The peaks, sampled every second until the end.
    let peak = Arc::new(Mutex::new(baseline));
    let stop_sampler = CancellationToken::new();
    let sampler = {
        let (probe, peak, stop) = (probe.clone(), peak.clone(), stop_sampler.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
                if let Ok(s) = probe.read().await {
                    let mut p = lock(&peak);
                    *p = p.max(&s);
                }
            }
        })
    };

    let totals = Arc::new(Totals::default());
    let mut rng = StdRng::seed_from_u64(config.seed);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let gap = Duration::from_secs_f64(1.0 / config.ramp);
    let start = Instant::now();
    let end = start + config.duration;
    let mut per_wave = Vec::new();
    let mut warm = None;
    let mut next_index = 0u64;
    let mut wave = 0u32;
    while Instant::now() + config.churn_min_life < end {
        wave += 1;
        let wave_start = Instant::now();
        let wave_end = (wave_start + config.churn_wave).min(end);
        let mut online = 0usize;
        let mut started = 0u64;
        let mut next_launch = wave_start;
        // Joins, while a participant would still stay its shortest time.
        while Instant::now() + config.churn_min_life < wave_end {
            while done_rx.try_recv().is_ok() {
                online = online.saturating_sub(1);
            }
            let now = Instant::now();
            if online < config.churn_participants && now >= next_launch {
                let plan = draw_plan(&config, &mut rng, wave, next_index, now, wave_end)?;
                next_index += 1;
                match spawn_participant(plan, totals.clone(), done_tx.clone()) {
                    Ok(()) => {
                        online += 1;
                        started += 1;
                    }
                    Err(e) => totals.error(format!("cannot start a participant thread: {e}")),
                }
                next_launch = now + gap;
                continue;
            }
            let wake = if online < config.churn_participants {
                next_launch.min(wave_end)
            } else {
                wave_end
            };
            tokio::select! {
                d = done_rx.recv() => if d.is_some() { online = online.saturating_sub(1) },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        }
        // Everyone leaves by `wave_end`; each is done within `OVERRUN`.
        let deadline = tokio::time::Instant::from_std(wave_end + OVERRUN + CLOSE_WAIT);
        while online > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(())) => online -= 1,
                _ => {
                    totals.error(format!(
                        "wave {wave}: {online} participant(s) did not finish in time"
                    ));
                    break;
                }
            }
        }
        let (after, settled) = probe.settle(&baseline, config.wave_settle).await?;
        if warm.is_none() {
            warm = Some(after);
        }
        per_wave.push(WaveFigures {
            wave,
            participants: started,
            settled_after_seconds: settled.map(|d| d.as_secs_f64()),
            after,
        });
    }
    let churn_seconds = start.elapsed().as_secs_f64();
    let (end_state, settled) = probe.settle(&baseline, config.settle_timeout).await?;
    stop_sampler.cancel();
    let _ = sampler.await;
    let peak = *lock(&peak);
    let peak = peak.max(&end_state);
    let warm = warm.unwrap_or(end_state);

    let rss_limit_bytes = warm
        .rss_bytes
        .saturating_add((config.rss_tolerance_mib * 1_048_576.0) as u64);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let t = &*totals;
    let joined = load(&t.joined);
    let counts = ChurnCounts {
        joins_attempted: load(&t.joins_attempted),
        joined,
        join_failed: load(&t.join_failed),
        joins_per_second: joined as f64 / churn_seconds.max(1e-9),
        left_with_leave: load(&t.left_with_leave),
        left_by_close: load(&t.left_by_close),
        left_abruptly: load(&t.left_abruptly),
        transports_connected: load(&t.transports_connected),
        tracks_published: load(&t.tracks_published),
        tracks_unpublished: load(&t.tracks_unpublished),
        subscriptions: load(&t.subscriptions),
        unsubscriptions: load(&t.unsubscriptions),
        data_channels: load(&t.data_channels),
        data_subscriptions: load(&t.data_subscriptions),
        data_sent: load(&t.data_sent),
        data_received: load(&t.data_received),
        rtp_received: load(&t.rtp_received),
        races: load(&t.races),
        errors: load(&t.errors),
    };
    let mut failures = Vec::new();
    if settled.is_none() {
        failures.push(format!(
            "the server did not return to its baseline within {:?}: {}",
            config.settle_timeout,
            end_state.differences(&baseline).join(", ")
        ));
    }
    if end_state.rss_bytes > rss_limit_bytes {
        failures.push(format!(
            "resident memory {:.1} MiB at the end, above {:.1} MiB (after the first wave {:.1} MiB + {:.1} MiB tolerance)",
            mib(end_state.rss_bytes),
            mib(rss_limit_bytes),
            mib(warm.rss_bytes),
            config.rss_tolerance_mib
        ));
    }
    if counts.errors > config.max_errors {
        failures.push(format!(
            "{} errors (at most {} allowed)",
            counts.errors, config.max_errors
        ));
    }
    if counts.joined == 0 || counts.subscriptions == 0 || counts.rtp_received == 0 {
        failures.push(format!(
            "nothing happened: {} joined, {} subscriptions, {} RTP packets received",
            counts.joined, counts.subscriptions, counts.rtp_received
        ));
    }
    if counts.data_channels > 0 && counts.data_received == 0 {
        failures.push("data channels were published but no message arrived".to_owned());
    }
    let error_texts = lock(&t.error_texts).clone();
    let join_ms = lock(&t.join_us).summary(1000.0);
    Ok(ChurnReport {
        churn_seconds,
        rooms: config.rooms,
        max_participants: config.churn_participants,
        waves: wave,
        counts,
        join_ms,
        baseline,
        warm,
        peak,
        end: end_state,
        settled_after_seconds: settled.map(|d| d.as_secs_f64()),
        rss_limit_bytes,
        per_wave,
        error_texts,
        passed: failures.is_empty(),
        failures,
    })
}

/// A participant's role, room, stay and exit, drawn from the seeded
/// generator.
fn draw_plan(
    config: &Config,
    rng: &mut StdRng,
    wave: u32,
    index: u64,
    now: Instant,
    wave_end: Instant,
) -> Result<Plan, LoadTestError> {
    let room = rng.random_range(0..config.rooms);
    let publishes = rng.random_bool(0.7);
    let video = publishes && config.video_bitrate > 0 && rng.random_bool(0.8);
    let audio = publishes && config.audio;
    let data = rng.random_bool(0.35);
    let subscribe = rng.random_bool(0.85);
    let unpublish_midway = (video || audio) && rng.random_bool(0.15);
    let unsubscribe_midway = subscribe && rng.random_bool(0.15);
    let min = config.churn_min_life.as_secs_f64();
    let max = config.churn_max_life.as_secs_f64();
    let life = Duration::from_secs_f64(rng.random_range(min..=max));
    let exit = match rng.random_range(0..100) {
        0..40 => Exit::Leave,
        40..65 => Exit::Close,
        _ => Exit::Abrupt,
    };
    let identity = format!("churn-{wave}-{index}");
    let room = format!("{}-{room}", config.room_prefix);
    let token = token(config, &identity, &room)?;
    Ok(Plan {
        url: config.urls[index as usize % config.urls.len()].clone(),
        room,
        identity,
        token,
        video,
        audio,
        data,
        subscribe,
        unpublish_midway,
        unsubscribe_midway,
        leave_at: (now + life).min(wave_end),
        exit,
        video_fps: config.video_fps,
        video_bitrate: config.video_bitrate as u32,
        keyframe_interval: config.keyframe_interval,
    })
}

fn token(config: &Config, identity: &str, room: &str) -> Result<String, LoadTestError> {
    let mut t = AccessToken::new(
        &config.api_key,
        &config.api_secret,
        AccessTokenOptions {
            identity: identity.to_owned(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(room.to_owned()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    });
    Ok(t.to_jwt()?)
}

/// Starts a participant on its own thread and runtime; `done` hears when
/// the thread is about to end (its sockets are closed by then).
fn spawn_participant(
    plan: Plan,
    totals: Arc<Totals>,
    done: mpsc::UnboundedSender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(plan.identity.clone())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let leftover = runtime.block_on(participant(&plan, &totals));
                    // An abrupt exit: the runtime goes first, and with it
                    // every task of the client, mid-flight. Their sockets
                    // close without a WebSocket close frame or a DTLS
                    // close_notify; then the client itself is dropped.
                    drop(runtime);
                    drop(leftover);
                }
                Err(e) => totals.error(format!("{}: runtime: {e}", plan.identity)),
            }
            let _ = done.send(());
        })?;
    Ok(())
}

/// One participant, bounded by its plan plus [`OVERRUN`]. Returns the
/// client when it must be dropped abruptly, after its runtime.
async fn participant(plan: &Plan, totals: &Arc<Totals>) -> Option<Arc<Client>> {
    let hard = tokio::time::Instant::from_std(plan.leave_at + OVERRUN);
    match tokio::time::timeout_at(hard, stay(plan, totals)).await {
        Ok(leftover) => leftover,
        Err(_) => {
            totals.error(format!("{}: did not finish in time", plan.identity));
            None
        }
    }
}

/// A published track: its producer, the flag its sender checks for
/// keyframe requests, and what stops its sender.
struct Published {
    producer_id: ProducerId,
    keyframe: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// Publishes a track and starts its paced sender.
async fn publish(
    client: &Client,
    options: PublishOptions,
    mut media: SyntheticConfig,
    leaving: &CancellationToken,
    totals: &Totals,
) -> Option<Published> {
    match client.publish(options).await {
        Ok(handle) => {
            Totals::add(&totals.tracks_published, 1);
            media.clock_rate = handle.local().clock_rate;
            let published = Published {
                producer_id: handle.producer_id().clone(),
                keyframe: Arc::new(AtomicBool::new(false)),
                stop: leaving.child_token(),
            };
            tokio::spawn(send_media(
                handle,
                SyntheticSource::new(media),
                published.keyframe.clone(),
                published.stop.clone(),
            ));
            Some(published)
        }
        Err(e) => {
            if !leaving.is_cancelled() {
                totals.refused("publish", &e);
            }
            None
        }
    }
}

async fn send_media(
    mut handle: LocalTrackHandle,
    mut source: SyntheticSource,
    keyframe: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        if keyframe.swap(false, Ordering::Relaxed) {
            source.request_keyframe();
        }
        let packets = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = source.tick() => p,
        };
        for p in packets {
            if handle
                .send_rtp(p.payload, p.rtp_time, p.marker)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Subscribes to a track in the background.
fn subscribe_track(
    client: &Arc<Client>,
    producer_id: ProducerId,
    consumers: &Arc<Mutex<Vec<ConsumerId>>>,
    leaving: &CancellationToken,
    totals: &Arc<Totals>,
) {
    let (client, consumers, leaving, totals) = (
        client.clone(),
        consumers.clone(),
        leaving.clone(),
        totals.clone(),
    );
    tokio::spawn(async move {
        match client.subscribe(&producer_id).await {
            Ok(track) => {
                Totals::add(&totals.subscriptions, 1);
                lock(&consumers).push(track.consumer_id);
            }
            Err(e) => {
                if !leaving.is_cancelled() {
                    totals.refused("subscribe", &e);
                }
            }
        }
    });
}

/// Subscribes to a data channel in the background.
fn subscribe_data(
    client: &Arc<Client>,
    data_producer_id: DataProducerId,
    leaving: &CancellationToken,
    totals: &Arc<Totals>,
) {
    let (client, leaving, totals) = (client.clone(), leaving.clone(), totals.clone());
    tokio::spawn(async move {
        match client.subscribe_data(&data_producer_id).await {
            Ok(_) => Totals::add(&totals.data_subscriptions, 1),
            Err(e) => {
                if !leaving.is_cancelled() {
                    totals.refused("subscribe to a data channel", &e);
                }
            }
        }
    });
}

/// Join, publish, subscribe, stay, leave.
async fn stay(plan: &Plan, totals: &Arc<Totals>) -> Option<Arc<Client>> {
    Totals::add(&totals.joins_attempted, 1);
    let t0 = Instant::now();
    let connected = async {
        let mut client = Client::builder()
            .no_reconnect()
            .event_capacity(2048)
            .connect(&plan.url, &plan.token)
            .await?;
        let joined = client.join(&plan.room).await?;
        Ok::<_, ClientError>((client, joined))
    }
    .await;
    let (mut client, joined) = match connected {
        Ok(x) => x,
        Err(e) => {
            Totals::add(&totals.join_failed, 1);
            totals.error(format!("{}: join: {e}", plan.identity));
            return None;
        }
    };
    Totals::add(&totals.joined, 1);
    lock(&totals.join_us).record(t0.elapsed().as_micros() as u64);
    let Some(mut events) = client.events() else {
        totals.error(format!("{}: no event receiver", plan.identity));
        return None;
    };
    let client = Arc::new(client);
    let leaving = CancellationToken::new();

    let mut tracks: Vec<Published> = Vec::new();
    if plan.video {
        let mut media = SyntheticConfig::vp8(plan.video_fps, plan.video_bitrate);
        media.keyframe_interval = plan.keyframe_interval;
        let options = PublishOptions::video("video/VP8");
        tracks.extend(publish(&client, options, media, &leaving, totals).await);
    }
    if plan.audio {
        let media = SyntheticConfig::opus();
        let options = PublishOptions::audio();
        tracks.extend(publish(&client, options, media, &leaving, totals).await);
    }
    let mut channel = None;
    if plan.data {
        match client
            .publish_data_channel("churn", DataKind::Reliable)
            .await
        {
            Ok(h) => {
                Totals::add(&totals.data_channels, 1);
                channel = Some(h);
            }
            Err(e) => totals.refused("publish a data channel", &e),
        }
    }
    let consumers: Arc<Mutex<Vec<ConsumerId>>> = Arc::default();
    if plan.subscribe {
        for p in &joined.room.participants {
            for t in &p.tracks {
                subscribe_track(&client, t.producer_id.clone(), &consumers, &leaving, totals);
            }
            for d in &p.data_channels {
                subscribe_data(&client, d.data_producer_id.clone(), &leaving, totals);
            }
        }
    }

    let leave_at = tokio::time::Instant::from_std(plan.leave_at);
    let midway =
        tokio::time::Instant::from_std(t0 + plan.leave_at.saturating_duration_since(t0) / 2);
    let mut midway_done = !(plan.unpublish_midway || plan.unsubscribe_midway);
    let mut data_tick = tokio::time::interval(DATA_PERIOD);
    let mut rtp = 0u64;
    let mut ended = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(leave_at) => break,
            _ = tokio::time::sleep_until(midway), if !midway_done => {
                midway_done = true;
                if plan.unpublish_midway && !tracks.is_empty() {
                    let t = tracks.remove(0);
                    t.stop.cancel();
                    match client.unpublish(&t.producer_id).await {
                        Ok(()) => Totals::add(&totals.tracks_unpublished, 1),
                        Err(e) => totals.refused("unpublish", &e),
                    }
                }
                let first = lock(&consumers).first().cloned();
                if plan.unsubscribe_midway && let Some(c) = first {
                    match client.unsubscribe(&c).await {
                        Ok(()) => Totals::add(&totals.unsubscriptions, 1),
                        Err(e) => totals.refused("unsubscribe", &e),
                    }
                }
            }
            _ = data_tick.tick(), if channel.is_some() => {
                if let Some(ch) = &channel
                    && let Ok(true) = ch.send_text("churn").await
                {
                    Totals::add(&totals.data_sent, 1);
                }
            }
            e = events.recv() => match e {
                Some(ClientEvent::Rtp(_)) => rtp += 1,
                Some(ClientEvent::TransportConnected { .. }) => {
                    Totals::add(&totals.transports_connected, 1);
                }
                Some(ClientEvent::DataChannelMessage { direction: TransportDirection::Recv, .. }) => {
                    Totals::add(&totals.data_received, 1);
                }
                Some(ClientEvent::KeyframeRequested { producer_id: Some(p), .. }) => {
                    if let Some(t) = tracks.iter().find(|t| t.producer_id == p) {
                        t.keyframe.store(true, Ordering::Relaxed);
                    }
                }
                Some(ClientEvent::Signal(ServerMessage::TrackPublished { track })) => {
                    if plan.subscribe && track.participant_identity != plan.identity {
                        subscribe_track(&client, track.producer_id, &consumers, &leaving, totals);
                    }
                }
                Some(ClientEvent::Signal(ServerMessage::DataTrackPublished { data_channel })) => {
                    if plan.subscribe && data_channel.participant_identity != plan.identity {
                        subscribe_data(&client, data_channel.data_producer_id, &leaving, totals);
                    }
                }
                Some(ClientEvent::Closed { reason }) => {
                    totals.error(format!(
                        "{}: the server closed the connection: {}",
                        plan.identity,
                        reason.unwrap_or_default()
                    ));
                    ended = true;
                    break;
                }
                Some(_) => {}
                None => {
                    ended = true;
                    break;
                }
            }
        }
    }
    Totals::add(&totals.rtp_received, rtp);
    leaving.cancel();
    if ended {
        return None;
    }
    match plan.exit {
        Exit::Abrupt => {
            Totals::add(&totals.left_abruptly, 1);
            return Some(client);
        }
        Exit::Leave => {
            if let Err(e) = client.leave().await {
                totals.error(format!("{}: leave: {e}", plan.identity));
            }
            Totals::add(&totals.left_with_leave, 1);
        }
        Exit::Close => Totals::add(&totals.left_by_close, 1),
    }
    client.close().await;
    // Until every task of the client ended (the event channel closes
    // then): the transports have sent their DTLS close_notify.
    let wait = tokio::time::Instant::now() + CLOSE_WAIT;
    while let Ok(Some(_)) = tokio::time::timeout_at(wait, events.recv()).await {}
    None
}
