//! Running a load test: start the participants at the ramp rate, wait until
//! every one is ready, measure for the configured duration, stop, merge.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{
    Client, ClientEvent, LocalTrackHandle, PublishOptions, RemoteTrack, SyntheticConfig,
    SyntheticSource, parse_synthetic,
};
use pulsewave_protocol::{ConsumerId, MediaKind, ProducerId, ServerMessage, StreamState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::LoadTestError;
use crate::probe::{Probe, metrics_url_for, proc_cpu_seconds};
use crate::report::{self, Report};
use crate::stats::{Histogram, SeqTracker};

/// Time subscribers keep receiving after publishers stop, for packets in
/// flight.
const GRACE: Duration = Duration::from_millis(1000);
/// Events buffered per subscriber before RTP packets are dropped.
const SUBSCRIBER_EVENTS: usize = 16_384;
/// Errors kept verbatim in the report.
const MAX_ERROR_TEXTS: usize = 20;

/// What publishers and subscribers share with the coordinator.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    /// `Instant` and wall clock (µs since the epoch) read together, to turn
    /// receive instants into wall-clock times.
    anchor: (Instant, u64),
    /// True during the measurement window (publishers count what they send).
    measuring: AtomicBool,
    /// The window by send time, wall-clock µs (subscribers count packets
    /// stamped inside it); `u64::MAX` until known.
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
    /// Publishers stop sending.
    stop_send: CancellationToken,
    /// Everyone stops.
    stop_all: CancellationToken,
    /// Every published track's counters.
    pub(crate) tracks: Mutex<Vec<Arc<TrackCounters>>>,
}

impl Ctx {
    fn wall_us(&self, at: Instant) -> u64 {
        let (i, w) = self.anchor;
        match at.checked_duration_since(i) {
            Some(d) => w + d.as_micros() as u64,
            None => w.saturating_sub(i.duration_since(at).as_micros() as u64),
        }
    }
}

/// Counters of one published track.
#[derive(Debug)]
pub(crate) struct TrackCounters {
    pub(crate) producer_id: ProducerId,
    pub(crate) kind: MediaKind,
    pub(crate) packets: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Sent during the measurement window.
    pub(crate) window_packets: AtomicU64,
    pub(crate) window_bytes: AtomicU64,
}

impl TrackCounters {
    fn new(producer_id: ProducerId, kind: MediaKind) -> Self {
        Self {
            producer_id,
            kind,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            window_packets: AtomicU64::new(0),
            window_bytes: AtomicU64::new(0),
        }
    }
}

/// One participant to start.
#[derive(Clone, Debug)]
struct Spec {
    url: String,
    room: String,
    identity: String,
    publisher: bool,
}

/// What a publisher measured.
#[derive(Debug, Default)]
pub(crate) struct PublisherResult {
    pub(crate) join: Option<Duration>,
    pub(crate) ready: Option<Duration>,
    pub(crate) tracks: usize,
    pub(crate) send_errors: u64,
    pub(crate) skipped_frames: u64,
    pub(crate) late_frames: u64,
    pub(crate) frames: u64,
    pub(crate) lateness_us: Histogram,
    pub(crate) errors: Vec<String>,
}

/// What a subscriber measured for one subscription.
#[derive(Debug)]
pub(crate) struct SubStats {
    pub(crate) ssrc: u32,
    pub(crate) producer_id: Option<ProducerId>,
    pub(crate) kind: Option<MediaKind>,
    pub(crate) seq: SeqTracker,
    pub(crate) damaged: u64,
    pub(crate) bytes: u64,
    pub(crate) window_packets: u64,
    pub(crate) window_bytes: u64,
}

/// What a subscriber measured.
#[derive(Debug, Default)]
pub(crate) struct SubscriberResult {
    pub(crate) join: Option<Duration>,
    pub(crate) ready: Option<Duration>,
    pub(crate) first_packet: Option<Duration>,
    pub(crate) expected_tracks: usize,
    pub(crate) subs: Vec<SubStats>,
    pub(crate) latency_us: Histogram,
    pub(crate) dropped_events: u64,
    pub(crate) foreign_packets: u64,
    pub(crate) errors: Vec<String>,
    /// `consumer-layers-changed` received.
    pub(crate) layer_changes: u64,
    /// `stream-state-changed` to `paused` received.
    pub(crate) congestion_pauses: u64,
    /// The last layers of each video consumer (`None`: no video).
    pub(crate) layers: Vec<(ConsumerId, Option<(u8, u8)>)>,
}

fn token(
    config: &Config,
    identity: &str,
    room: &str,
    publisher: bool,
) -> Result<String, LoadTestError> {
    let mut t = AccessToken::new(
        &config.api_key,
        &config.api_secret,
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(room.into()),
        room_join: true,
        can_publish: Some(publisher),
        can_subscribe: Some(true),
        can_publish_data: Some(false),
        ..Default::default()
    });
    Ok(t.to_jwt()?)
}

fn specs(config: &Config) -> Vec<Spec> {
    let room = |r: usize| format!("{}-{r}", config.room_prefix);
    let mut out = Vec::new();
    // Publishers first, so that subscribers find tracks when they join.
    for r in 0..config.rooms {
        for p in 0..config.publishers {
            out.push((room(r), format!("pub-{r}-{p}"), true));
        }
    }
    for r in 0..config.rooms {
        for s in 0..config.subscribers {
            out.push((room(r), format!("sub-{r}-{s}"), false));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, (room, identity, publisher))| Spec {
            url: config.urls[i % config.urls.len()].clone(),
            room,
            identity,
            publisher,
        })
        .collect()
}

/// Runs a load test and returns its report. Everything stops by itself:
/// after the ramp, at most `ready_timeout` of waiting, `duration` of
/// measuring and a second of grace.
pub async fn run(config: Config) -> Result<Report, LoadTestError> {
    validate(&config)?;
    let probe = Probe {
        pid: config.server_pid,
        metrics_url: match config.metrics.as_deref() {
            None => None,
            Some("auto") => Some(metrics_url_for(&config.urls[0]).ok_or_else(|| {
                LoadTestError::InvalidArgument {
                    what: "--metrics",
                    detail: format!("cannot derive a metrics URL from `{}`", config.urls[0]),
                }
            })?),
            Some(url) => Some(url.to_owned()),
        },
        credentials: Some((config.api_key.clone(), config.api_secret.clone())),
    };
    let baseline = if probe.is_enabled() {
        Some(probe.sample().await?)
    } else {
        None
    };
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        anchor: (Instant::now(), wall_now),
        measuring: AtomicBool::new(false),
        window_start_us: AtomicU64::new(u64::MAX),
        window_end_us: AtomicU64::new(u64::MAX),
        stop_send: CancellationToken::new(),
        stop_all: CancellationToken::new(),
        tracks: Mutex::new(Vec::new()),
    });
    let specs = specs(&config);
    let total = specs.len();
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(total.max(1));
    let started = Instant::now();
    let gap = if config.ramp > 0.0 {
        Duration::from_secs_f64(1.0 / config.ramp)
    } else {
        Duration::ZERO
    };
    // The launcher: one participant every `gap`, in the background, so that
    // ready participants are counted while the ramp goes on.
    let launch_ctx = ctx.clone();
    let launcher = tokio::spawn(async move {
        let mut pubs = Vec::new();
        let mut subs = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + gap * i as u32))
                    .await;
            }
            if launch_ctx.stop_all.is_cancelled() {
                break;
            }
            let ctx = launch_ctx.clone();
            let ready = ready_tx.clone();
            if spec.publisher {
                pubs.push(tokio::spawn(publisher(ctx, spec, ready)));
            } else {
                subs.push(tokio::spawn(subscriber(ctx, spec, ready)));
            }
        }
        (pubs, subs)
    });

    // Wait for every participant to say ready (or fail), within the ramp
    // time plus the ready timeout.
    let ramp_time = gap * total as u32;
    let deadline = tokio::time::Instant::now() + ramp_time + config.ready_timeout;
    let mut ready = 0usize;
    let mut failed = 0usize;
    while ready + failed < total {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(true)) => ready += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let ready_after = started.elapsed();
    let not_ready = total - ready - failed;

    // The measurement window.
    let window_start_sample = if probe.is_enabled() {
        Some(probe.sample().await?)
    } else {
        None
    };
    let own_cpu_start = proc_cpu_seconds("self");
    let window_start = Instant::now();
    ctx.window_start_us
        .store(ctx.wall_us(window_start), Ordering::Relaxed);
    ctx.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(config.duration).await;
    ctx.measuring.store(false, Ordering::Relaxed);
    let window_end = Instant::now();
    ctx.window_end_us
        .store(ctx.wall_us(window_end), Ordering::Relaxed);
    let window = window_end - window_start;
    let own_cpu_end = proc_cpu_seconds("self");
    let window_end_sample = if probe.is_enabled() {
        Some(probe.sample().await?)
    } else {
        None
    };
    ctx.stop_send.cancel();
    tokio::time::sleep(GRACE).await;
    ctx.stop_all.cancel();

    let (pub_handles, sub_handles) = launcher.await.unwrap_or_default();
    let mut pub_results = Vec::new();
    let mut sub_results = Vec::new();
    let mut panicked = 0;
    for h in pub_handles {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(Ok(r)) => pub_results.push(r),
            _ => panicked += 1,
        }
    }
    for h in sub_handles {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(Ok(r)) => sub_results.push(r),
            _ => panicked += 1,
        }
    }
    let tracks: Vec<Arc<TrackCounters>> = lock(&ctx.tracks).clone();
    let server = match (baseline, window_start_sample, window_end_sample) {
        (Some(b), Some(s), Some(e)) => {
            Some(report::server_figures(b, s, e, window, ready, &sub_results))
        }
        _ => None,
    };
    let own_cpu = match (own_cpu_start, own_cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(report::build(report::Inputs {
        config: &config,
        total,
        ready,
        failed,
        not_ready,
        panicked,
        ready_after,
        window,
        tracks: &tracks,
        publishers: &pub_results,
        subscribers: &sub_results,
        server,
        own_cpu_seconds: own_cpu,
        threads: runtime_threads(),
    }))
}

fn validate(config: &Config) -> Result<(), LoadTestError> {
    let bad = |what, detail: &str| {
        Err(LoadTestError::InvalidArgument {
            what,
            detail: detail.to_owned(),
        })
    };
    if config.urls.is_empty() {
        return bad("--url", "give at least one server URL");
    }
    if let Some(u) = config.urls.iter().find(|u| !u.starts_with("ws://")) {
        return Err(LoadTestError::InvalidArgument {
            what: "--url",
            detail: format!("`{u}`: only ws:// URLs are supported"),
        });
    }
    if config.rooms == 0 || config.publishers + config.subscribers == 0 {
        return bad("--rooms/--publishers/--subscribers", "nobody to start");
    }
    if config.rooms * (config.publishers + config.subscribers) > 100_000 {
        return bad(
            "--rooms/--publishers/--subscribers",
            "at most 100000 participants",
        );
    }
    if config.publishers > 0 && config.tracks_per_publisher() == 0 {
        return bad("--video-bitrate/--audio", "publishers need video or audio");
    }
    if config.video_bitrate > u64::from(u32::MAX) {
        return bad("--video-bitrate", "at most 4 Gbit/s");
    }
    if !config.ramp.is_finite() || config.ramp < 0.0 {
        return bad("--ramp", "joins per second must be 0 (all at once) or more");
    }
    if let Some(l) = config.max_loss
        && !(0.0..=100.0).contains(&l)
    {
        return bad("--max-loss", "a percentage from 0 to 100");
    }
    Ok(())
}

/// The worker threads of the current runtime.
fn runtime_threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- publisher

async fn publisher(ctx: Arc<Ctx>, spec: Spec, ready: mpsc::Sender<bool>) -> PublisherResult {
    let mut result = PublisherResult::default();
    let t0 = Instant::now();
    let client = match connect_and_join(&ctx, &spec, 1024, &ready).await {
        Ok(c) => c,
        Err(e) => {
            result.errors.push(e);
            return result;
        }
    };
    result.join = Some(t0.elapsed());
    let mut client = client;
    let mut events = client.events();
    let config = &ctx.config;
    let mut handles: Vec<(LocalTrackHandle, SyntheticConfig)> = Vec::new();
    if config.video_bitrate > 0 {
        let mut media = SyntheticConfig::vp8(config.video_fps, config.video_bitrate as u32);
        media.keyframe_interval = config.keyframe_interval;
        match client.publish(PublishOptions::video("video/VP8")).await {
            Ok(h) => {
                media.clock_rate = h.local().clock_rate;
                handles.push((h, media));
            }
            Err(e) => result
                .errors
                .push(format!("{}: publishing video failed: {e}", spec.identity)),
        }
    }
    if config.audio {
        match client.publish(PublishOptions::audio()).await {
            Ok(h) => {
                let mut media = SyntheticConfig::opus();
                media.clock_rate = h.local().clock_rate;
                handles.push((h, media));
            }
            Err(e) => result
                .errors
                .push(format!("{}: publishing audio failed: {e}", spec.identity)),
        }
    }
    result.tracks = handles.len();
    let ok = result.errors.is_empty();
    result.ready = Some(t0.elapsed());
    let _ = ready.send(ok).await;

    // One task per track, paced by its synthetic source.
    let mut senders = Vec::new();
    let mut keyframe_flags: Vec<(ProducerId, Arc<AtomicBool>)> = Vec::new();
    for (handle, media) in handles {
        let counters = Arc::new(TrackCounters::new(handle.producer_id().clone(), media.kind));
        lock(&ctx.tracks).push(counters.clone());
        let flag = Arc::new(AtomicBool::new(false));
        keyframe_flags.push((handle.producer_id().clone(), flag.clone()));
        senders.push(tokio::spawn(send_track(
            ctx.clone(),
            handle,
            SyntheticSource::new(media),
            counters,
            flag,
        )));
    }
    // Answer keyframe requests until everyone stops.
    if let Some(events) = events.as_mut() {
        loop {
            let event = tokio::select! {
                _ = ctx.stop_all.cancelled() => break,
                e = events.recv() => e,
            };
            match event {
                Some(ClientEvent::KeyframeRequested {
                    producer_id: Some(p),
                    ..
                }) => {
                    if let Some((_, f)) = keyframe_flags.iter().find(|(id, _)| *id == p) {
                        f.store(true, Ordering::Relaxed);
                    }
                }
                Some(ClientEvent::Closed { reason }) => {
                    result.errors.extend(unexpected_close(&ctx, &spec, reason));
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    ctx.stop_all.cancelled().await;
    for s in senders {
        if let Ok(r) = s.await {
            result.send_errors += r.send_errors;
            result.skipped_frames += r.skipped_frames;
            result.late_frames += r.late_frames;
            result.frames += r.frames;
            result.lateness_us.merge(&r.lateness_us);
        }
    }
    client.close().await;
    result
}

#[derive(Default)]
struct SendResult {
    send_errors: u64,
    skipped_frames: u64,
    late_frames: u64,
    frames: u64,
    lateness_us: Histogram,
}

async fn send_track(
    ctx: Arc<Ctx>,
    mut handle: LocalTrackHandle,
    mut source: SyntheticSource,
    counters: Arc<TrackCounters>,
    keyframe: Arc<AtomicBool>,
) -> SendResult {
    let mut r = SendResult::default();
    let interval = source.frame_interval();
    loop {
        if keyframe.swap(false, Ordering::Relaxed) {
            source.request_keyframe();
        }
        let due = source.next_frame_at();
        let packets = tokio::select! {
            biased;
            _ = ctx.stop_send.cancelled() => break,
            p = source.tick() => p,
        };
        if let Some(due) = due {
            let late = Instant::now().saturating_duration_since(due);
            r.lateness_us.record(late.as_micros() as u64);
            if late > interval {
                r.late_frames += 1;
            }
        }
        r.frames += 1;
        // Stamped now: the subscribers count these in the window too.
        let measuring = ctx.measuring.load(Ordering::Relaxed);
        for p in packets {
            let len = p.payload.len() as u64;
            match handle.send_rtp(p.payload, p.rtp_time, p.marker).await {
                Ok(_) => {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(len, Ordering::Relaxed);
                    if measuring {
                        counters.window_packets.fetch_add(1, Ordering::Relaxed);
                        counters.window_bytes.fetch_add(len, Ordering::Relaxed);
                    }
                }
                Err(_) => r.send_errors += 1,
            }
        }
    }
    r.skipped_frames = source.skipped_frames();
    r
}

/// The error of a connection the server closed before the run ended
/// (`None` once the run is stopping: then closing is expected).
fn unexpected_close(ctx: &Ctx, spec: &Spec, reason: Option<String>) -> Option<String> {
    (!ctx.stop_send.is_cancelled()).then(|| {
        format!(
            "{}: connection closed: {}",
            spec.identity,
            reason.unwrap_or_default()
        )
    })
}

/// Connects and joins `spec`'s room. On failure, tells the launcher this
/// participant will not be ready and returns the error line for its result.
async fn connect_and_join(
    ctx: &Ctx,
    spec: &Spec,
    event_capacity: usize,
    ready: &mpsc::Sender<bool>,
) -> Result<Client, String> {
    let joined = async {
        let token = token(&ctx.config, &spec.identity, &spec.room, spec.publisher)?;
        let mut builder = Client::builder()
            .event_capacity(event_capacity)
            .ice_protocol(ctx.config.transport);
        if !spec.publisher && ctx.config.subscriber_bitrate_cap > 0 {
            builder = builder.receive_bitrate_cap(ctx.config.subscriber_bitrate_cap);
        }
        let mut client = builder.connect(&spec.url, &token).await?;
        client.join(&spec.room).await?;
        Ok::<_, LoadTestError>(client)
    }
    .await;
    match joined {
        Ok(client) => Ok(client),
        Err(e) => {
            let _ = ready.send(false).await;
            Err(format!("{}: join failed: {e}", spec.identity))
        }
    }
}

// --------------------------------------------------------------- subscriber

async fn subscriber(ctx: Arc<Ctx>, spec: Spec, ready: mpsc::Sender<bool>) -> SubscriberResult {
    let mut result = SubscriberResult {
        expected_tracks: ctx.config.publishers * ctx.config.tracks_per_publisher(),
        ..SubscriberResult::default()
    };
    let t0 = Instant::now();
    let mut client = match connect_and_join(&ctx, &spec, SUBSCRIBER_EVENTS, &ready).await {
        Ok(c) => c,
        Err(e) => {
            result.errors.push(e);
            return result;
        }
    };
    result.join = Some(t0.elapsed());
    let Some(mut events) = client.events() else {
        let _ = ready.send(false).await;
        return result;
    };
    let initial: Vec<ProducerId> = client
        .joined()
        .map(|j| {
            j.room
                .participants
                .iter()
                .filter(|p| p.identity != spec.identity)
                .flat_map(|p| p.tracks.iter().map(|t| t.producer_id.clone()))
                .collect()
        })
        .unwrap_or_default();
    let client = Arc::new(client);
    let (subs_tx, mut subs_rx) = mpsc::channel::<Result<RemoteTrack, String>>(64);
    let subscribe = |producer_id: ProducerId| {
        let client = client.clone();
        let tx = subs_tx.clone();
        tokio::spawn(async move {
            let r = client
                .subscribe(&producer_id)
                .await
                .map_err(|e| format!("subscribing to {producer_id} failed: {e}"));
            let _ = tx.send(r).await;
        });
    };
    let mut requested: Vec<ProducerId> = Vec::new();
    for p in initial {
        requested.push(p.clone());
        subscribe(p);
    }
    let expected_packets = (ctx.config.duration.as_secs_f64().max(1.0)
        * (ctx.config.video_bitrate as f64 / 8000.0 + 60.0)) as usize;
    let mut subscribed = 0usize;
    let mut ready_sent = false;
    if result.expected_tracks == 0 {
        result.ready = Some(t0.elapsed());
        let _ = ready.send(true).await;
        ready_sent = true;
    }
    loop {
        tokio::select! {
            biased;
            _ = ctx.stop_all.cancelled() => break,
            r = subs_rx.recv() => match r {
                Some(Ok(track)) => {
                    subscribed += 1;
                    let s = sub_entry(&mut result.subs, track.ssrc, expected_packets);
                    s.producer_id = Some(track.producer_id.clone());
                    s.kind = Some(track.kind);
                    if !ready_sent && subscribed >= result.expected_tracks {
                        result.ready = Some(t0.elapsed());
                        let _ = ready.send(true).await;
                        ready_sent = true;
                    }
                }
                Some(Err(e)) => result.errors.push(format!("{}: {e}", spec.identity)),
                None => {}
            },
            e = events.recv() => match e {
                Some(ClientEvent::Rtp(pkt)) => {
                    let Some(info) = parse_synthetic(&pkt.payload) else {
                        result.foreign_packets += 1;
                        continue;
                    };
                    if result.first_packet.is_none() {
                        result.first_packet = Some(pkt.received_at.saturating_duration_since(t0));
                    }
                    let s = sub_entry(&mut result.subs, pkt.ssrc, expected_packets);
                    if !info.intact {
                        s.damaged += 1;
                    }
                    s.seq.record(info.sequence);
                    let len = pkt.payload.len() as u64;
                    s.bytes += len;
                    // In the window by send time, as the publishers count.
                    if info.send_time_us >= ctx.window_start_us.load(Ordering::Relaxed)
                        && info.send_time_us < ctx.window_end_us.load(Ordering::Relaxed)
                    {
                        s.window_packets += 1;
                        s.window_bytes += len;
                        let recv_us = ctx.wall_us(pkt.received_at);
                        result.latency_us.record(recv_us.saturating_sub(info.send_time_us));
                    }
                }
                Some(ClientEvent::Signal(ServerMessage::TrackPublished { track })) => {
                    if track.participant_identity != spec.identity
                        && !requested.contains(&track.producer_id)
                    {
                        requested.push(track.producer_id.clone());
                        subscribe(track.producer_id);
                    }
                }
                Some(ClientEvent::Signal(ServerMessage::ConsumerLayersChanged {
                    consumer_id,
                    spatial_layer,
                    temporal_layer,
                })) => {
                    result.layer_changes += 1;
                    let layers = spatial_layer.zip(temporal_layer);
                    match result.layers.iter_mut().find(|(c, _)| *c == consumer_id) {
                        Some(entry) => entry.1 = layers,
                        None => result.layers.push((consumer_id, layers)),
                    }
                }
                Some(ClientEvent::Signal(ServerMessage::StreamStateChanged { state, .. })) => {
                    if state == StreamState::Paused {
                        result.congestion_pauses += 1;
                    }
                }
                Some(ClientEvent::Closed { reason }) => {
                    result.errors.extend(unexpected_close(&ctx, &spec, reason));
                    break;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    if !ready_sent {
        let _ = ready.send(false).await;
        if result.errors.is_empty() {
            result.errors.push(format!(
                "{}: subscribed to {subscribed} of {} tracks",
                spec.identity, result.expected_tracks
            ));
        }
    }
    result.dropped_events = client.dropped_events();
    client.close().await;
    result
}

fn sub_entry(subs: &mut Vec<SubStats>, ssrc: u32, expected_packets: usize) -> &mut SubStats {
    let i = match subs.iter().position(|s| s.ssrc == ssrc) {
        Some(i) => i,
        None => {
            subs.push(SubStats {
                ssrc,
                producer_id: None,
                kind: None,
                seq: SeqTracker::with_capacity(expected_packets),
                damaged: 0,
                bytes: 0,
                window_packets: 0,
                window_bytes: 0,
            });
            subs.len() - 1
        }
    };
    &mut subs[i]
}

/// Caps a list of error texts for the report.
pub(crate) fn cap_errors(all: impl Iterator<Item = String>) -> (u64, Vec<String>) {
    let mut n = 0;
    let mut kept = Vec::new();
    for e in all {
        n += 1;
        if kept.len() < MAX_ERROR_TEXTS {
            kept.push(e);
        }
    }
    (n, kept)
}
