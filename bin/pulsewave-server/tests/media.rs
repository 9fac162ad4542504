//! Three Rust clients conference through the server binary on 127.0.0.1:
//! each publishes audio and video and receives the other two, payloads
//! intact, for ten seconds; then mute, unpublish and leave, with the right
//! events to each client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::{
    Client, ClientEvent, LocalTrackHandle, SyntheticPacket, SyntheticSource, parse_synthetic,
};
use pulsewave_protocol::{ConsumerId, MediaKind, ProducerId, ServerMessage};

const BIN: &str = env!("CARGO_BIN_EXE_pulsewave-server");
const ROOM: &str = "conference";

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pw-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(BIN)
            .args(["--dev", "--port", &port.to_string()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // Any free port: tests run in parallel.
            .env("MEDIASOUP_MIN_PORT", "41000")
            .env("MEDIASOUP_MAX_PORT", "48999")
            .env("MEDIASOUP_NUM_WORKERS", "1")
            // Every packet is counted: plain forwarding. On a loaded CI
            // machine the delay-based estimator can take scheduling delays
            // on loopback for congestion and pause a camera (see
            // bin/pulsewave-loadtest/tests/loadtest.rs); adaptive media is
            // tested on the simulated network.
            .env("BANDWIDTH_ESTIMATION", "false")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready means /healthz answers 200, which it does only with every
        // media worker running: a server whose workers did not start fails
        // here, saying so.
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(answer) = healthz(port) {
                if answer.starts_with("HTTP/1.1 200") {
                    break;
                }
                last = answer;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server did not become healthy within 20 s; last /healthz answer:\n{last}"
            );
            // Poll interval of a bounded wait for /healthz (a child process
            // announces nothing).
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

/// `GET /healthz`: the whole answer, or `None` while nothing listens.
fn healthz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(identity: &str) -> String {
    let mut t = AccessToken::new(
        "devkey",
        "secret",
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(ROOM.into()),
        room_join: true,
        ..Default::default()
    });
    t.to_jwt().unwrap()
}

/// What one subscriber saw of one consumer.
#[derive(Default, Debug)]
struct Received {
    producer: Option<ProducerId>,
    packets: u64,
    intact: u64,
    damaged: u64,
    sequences: Vec<u64>,
    /// Arrival times, relative to the start of the phase.
    times: Vec<Duration>,
    ssrc: u32,
    payload_type: u8,
    max_latency: Duration,
}

struct Party {
    name: String,
    client: Client,
    video: LocalTrackHandle,
    audio: LocalTrackHandle,
    video_src: SyntheticSource,
    audio_src: SyntheticSource,
    /// Our consumers: consumer id -> (publisher name, kind).
    consumers: HashMap<ConsumerId, (String, MediaKind)>,
    /// Signals seen during the current phase, in order, with their arrival
    /// times relative to the start of the phase.
    signals: Vec<(Duration, ServerMessage)>,
    /// When the current phase started.
    phase_start: Instant,
    /// When each action of the current phase was done.
    done_actions: Vec<(Instant, Action)>,
    received: HashMap<ConsumerId, Received>,
    /// Sending video/audio at all.
    sending: bool,
    /// Things to do at given times of the next phase.
    actions: Vec<(Duration, Action)>,
}

#[derive(Clone)]
enum Action {
    Mute(ProducerId),
    Unmute(ProducerId),
}

async fn send_all(track: &mut LocalTrackHandle, packets: Vec<SyntheticPacket>) {
    for p in &packets {
        let _ = track.send_synthetic(p).await;
    }
}

impl Party {
    async fn join(url: &str, name: &str) -> Self {
        let mut client = Client::connect(url, &token(name)).await.unwrap();
        client.join(ROOM).await.unwrap();
        let video = client.publish_video("video/VP8").await.unwrap();
        let audio = client.publish_audio().await.unwrap();
        let video_src = video.synthetic_source();
        let audio_src = audio.synthetic_source();
        Party {
            name: name.into(),
            client,
            video,
            audio,
            video_src,
            audio_src,
            consumers: HashMap::new(),
            signals: Vec::new(),
            phase_start: Instant::now(),
            done_actions: Vec::new(),
            received: HashMap::new(),
            sending: true,
            actions: Vec::new(),
        }
    }

    /// Sends media at real-time pacing and records what arrives, for `d`
    /// (a phase about time: media for a given duration, actions at given
    /// times).
    async fn run(&mut self, d: Duration) {
        self.run_until(d, &|_| false, &Finish::new(1)).await;
    }

    /// Sends media at real-time pacing and records what arrives until every
    /// party of `finish` saw what its `done` waits for (this one once its
    /// actions are done too), or for `within` at most: the assertions after
    /// it say what was missing.
    async fn run_until(
        &mut self,
        within: Duration,
        done: &(dyn Fn(&Party) -> bool + Sync),
        finish: &Finish,
    ) {
        self.signals.clear();
        self.received.clear();
        self.done_actions.clear();
        let start = Instant::now();
        self.phase_start = start;
        let t0 = tokio::time::Instant::now();
        let end = t0 + within;
        let mut finished = false;
        let mut actions = std::mem::take(&mut self.actions);
        actions.sort_by_key(|(t, _)| *t);
        let mut actions = actions.into_iter().peekable();
        loop {
            let next_action = actions.peek().map(|(t, _)| t0 + *t).unwrap_or(end);
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                _ = tokio::time::sleep_until(next_action), if next_action < end => {
                    if let Some((_, action)) = actions.next() {
                        self.done_actions.push((Instant::now(), action.clone()));
                        match action {
                            Action::Mute(p) => self.client.mute(&p).await.unwrap(),
                            Action::Unmute(p) => self.client.unmute(&p).await.unwrap(),
                        }
                    }
                }
                p = self.video_src.tick(), if self.sending => send_all(&mut self.video, p).await,
                p = self.audio_src.tick(), if self.sending => send_all(&mut self.audio, p).await,
                e = self.client.next_event() => match e {
                    Some(ClientEvent::Rtp(rtp)) => {
                        let r = self.received.entry(rtp.consumer_id.clone()).or_default();
                        r.producer = Some(rtp.producer_id.clone());
                        r.packets += 1;
                        r.ssrc = rtp.ssrc;
                        r.payload_type = rtp.payload_type;
                        r.sequences.push(rtp.seq_no);
                        r.times.push(start.elapsed());
                        match parse_synthetic(&rtp.payload) {
                            Some(info) if info.intact => {
                                r.intact += 1;
                                r.max_latency = r.max_latency.max(info.latency(SystemTime::now()));
                            }
                            _ => r.damaged += 1,
                        }
                    }
                    Some(ClientEvent::KeyframeRequested { mid, .. }) => {
                        if mid == self.video.local().mid {
                            self.video_src.request_keyframe();
                        }
                    }
                    Some(ClientEvent::Signal(m)) => self.signals.push((start.elapsed(), m)),
                    Some(_) => {}
                    None => break,
                },
            }
            if !finished && actions.peek().is_none() && done(self) {
                finished = true;
                finish
                    .count
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if finish.all() {
                break;
            }
        }
    }

    async fn subscribe_all(&mut self, others: &[(String, ProducerId, MediaKind)]) {
        for (who, producer, kind) in others {
            if *who == self.name {
                continue;
            }
            let sub = self.client.subscribe(producer).await.unwrap();
            self.consumers
                .insert(sub.consumer_id.clone(), (who.clone(), *kind));
        }
    }

    fn consumer_of(&self, who: &str, kind: MediaKind) -> ConsumerId {
        self.consumers
            .iter()
            .find(|(_, (w, k))| w == who && *k == kind)
            .map(|(c, _)| c.clone())
            .unwrap()
    }

    fn signal(&self, f: impl Fn(&ServerMessage) -> bool) -> Option<&ServerMessage> {
        self.signals.iter().map(|(_, m)| m).find(|m| f(m))
    }

    /// When the first signal matching `f` arrived in this phase.
    fn signal_at(&self, f: impl Fn(&ServerMessage) -> bool) -> Option<Duration> {
        self.signals.iter().find(|(_, m)| f(m)).map(|(t, _)| *t)
    }
}

/// How many parties of a phase saw what they wait for.
struct Finish {
    parties: usize,
    count: std::sync::atomic::AtomicUsize,
}

impl Finish {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn all(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::SeqCst) >= self.parties
    }
}

/// Longest wait of a phase that ends on events: it only bounds a failure.
const WAIT: Duration = Duration::from_secs(20);

fn packets_between(r: &Received, from: Duration, to: Duration) -> usize {
    r.times.iter().filter(|t| **t >= from && **t < to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_conference_for_ten_seconds_then_mute_unpublish_leave() {
    let server = Server::start();
    let url = server.url();
    let mut parties = Vec::new();
    for name in ["alice", "bob", "carol"] {
        parties.push(Party::join(&url, name).await);
    }
    let tracks: Vec<(String, ProducerId, MediaKind)> = parties
        .iter()
        .flat_map(|p| {
            [
                (
                    p.name.clone(),
                    p.video.producer_id().clone(),
                    MediaKind::Video,
                ),
                (
                    p.name.clone(),
                    p.audio.producer_id().clone(),
                    MediaKind::Audio,
                ),
            ]
        })
        .collect();
    for p in &mut parties {
        p.subscribe_all(&tracks).await;
        assert_eq!(p.consumers.len(), 4, "{} subscribes to 4 tracks", p.name);
    }

    // Phase 1: ten seconds of everyone sending to everyone.
    let phase = Duration::from_secs(10);
    futures_join(&mut parties, |p| Box::pin(p.run(phase))).await;
    for p in &parties {
        assert_eq!(p.received.len(), 4, "{} received from 4 consumers", p.name);
        for (consumer, r) in &p.received {
            let (who, kind) = &p.consumers[consumer];
            assert_eq!(
                r.damaged, 0,
                "{} <- {who} {kind:?}: damaged payloads",
                p.name
            );
            // Audio: 50 packets/s. Video at 30 fps: at least one packet per
            // frame. The first keyframe may take a moment.
            let minimum = match kind {
                MediaKind::Audio => 450,
                MediaKind::Video => 250,
            };
            assert!(
                r.intact >= minimum,
                "{} <- {who} {kind:?}: only {} intact packets in 10 s",
                p.name,
                r.intact
            );
            // Sequence numbers are the consumer's own: contiguous, no loss.
            let mut seqs = r.sequences.clone();
            seqs.sort_unstable();
            seqs.dedup();
            let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
            let loss = 1.0 - seqs.len() as f64 / span as f64;
            assert!(loss < 0.01, "{} <- {who} {kind:?}: loss {loss}", p.name);
            // Media flowed until the end.
            assert!(
                *r.times.last().unwrap() > Duration::from_secs(9),
                "{} <- {who} {kind:?}: stopped early",
                p.name
            );
            // Router payload types (opus 100, VP8 101), consumer ssrc.
            assert_eq!(
                r.payload_type,
                if *kind == MediaKind::Audio { 100 } else { 101 }
            );
            assert!(r.max_latency < Duration::from_millis(500));
        }
        let ssrcs: std::collections::HashSet<u32> = p.received.values().map(|r| r.ssrc).collect();
        assert_eq!(ssrcs.len(), 4, "each consumer has its own ssrc");
    }

    // Phase 2: alice mutes her camera at 1 s and unmutes it at 3 s; the
    // phase ends once bob and carol got both signals and alice's video
    // again. The windows checked are measured from the events: from 300 ms
    // after track-muted arrived (frames already in flight) until alice asked
    // to unmute, nothing; after track-unmuted, video again.
    let alice_video = parties[0].video.producer_id().clone();
    parties[0].actions = vec![
        (Duration::from_secs(1), Action::Mute(alice_video.clone())),
        (Duration::from_secs(3), Action::Unmute(alice_video.clone())),
    ];
    let is_muted = |m: &ServerMessage| matches!(m, ServerMessage::TrackMuted { producer_id, .. } if *producer_id == alice_video);
    let is_unmuted = |m: &ServerMessage| matches!(m, ServerMessage::TrackUnmuted { producer_id, .. } if *producer_id == alice_video);
    let resumed = |p: &Party| -> bool {
        let Some(t) = p.signal_at(is_unmuted) else {
            return false;
        };
        p.received
            .get(&p.consumer_of("alice", MediaKind::Video))
            .is_some_and(|r| packets_between(r, t, Duration::MAX) > 20)
    };
    let done = |p: &Party| p.name == "alice" || resumed(p);
    let finish = Finish::new(parties.len());
    futures_join(&mut parties, |p| {
        Box::pin(p.run_until(WAIT, &done, &finish))
    })
    .await;
    let unmute_asked = parties[0]
        .done_actions
        .iter()
        .find(|(_, a)| matches!(a, Action::Unmute(_)))
        .map(|(t, _)| *t)
        .expect("alice unmuted");
    for p in &parties[1..] {
        let muted = p.signal(is_muted).expect("track-muted");
        assert!(
            matches!(muted, ServerMessage::TrackMuted { participant_identity, .. } if participant_identity == "alice")
        );
        assert!(
            p.signal(is_unmuted).is_some(),
            "{} got track-unmuted",
            p.name
        );
        let from = p.signal_at(is_muted).unwrap() + Duration::from_millis(300);
        let to = unmute_asked.duration_since(p.phase_start);
        // Not an empty check: alice stayed muted for a while after bob and
        // carol were told.
        assert!(
            to >= from + Duration::from_millis(500),
            "{}: track-muted came late, muted only {from:?}..{to:?}",
            p.name
        );
        let r = &p.received[&p.consumer_of("alice", MediaKind::Video)];
        assert_eq!(
            packets_between(r, from, to),
            0,
            "{}: alice's video flowed while muted ({from:?}..{to:?})",
            p.name
        );
        assert!(
            resumed(p),
            "{}: alice's video did not resume after unmute",
            p.name
        );
        // Audio (50 packets/s) kept flowing through the video mute.
        let a = &p.received[&p.consumer_of("alice", MediaKind::Audio)];
        let audio = packets_between(a, from, to);
        assert!(
            audio as f64 > (to - from).as_secs_f64() * 50.0 * 0.6,
            "{}: {audio} audio packets in {:?} while the video was muted",
            p.name,
            to - from
        );
    }

    // Phase 3: alice unpublishes her audio; the phase ends once bob and
    // carol were told.
    let alice_audio = parties[0].audio.producer_id().clone();
    parties[0].client.unpublish(&alice_audio).await.unwrap();
    let told = |p: &Party| -> bool {
        p.name == "alice"
            || (p.signal(|m| matches!(m, ServerMessage::TrackUnpublished { producer_id, .. } if *producer_id == alice_audio)).is_some()
                && {
                    let consumer = p.consumer_of("alice", MediaKind::Audio);
                    p.signal(|m| matches!(m, ServerMessage::TrackUnsubscribed { consumer_id, .. } if *consumer_id == consumer)).is_some()
                })
    };
    let finish = Finish::new(parties.len());
    futures_join(&mut parties, |p| {
        Box::pin(p.run_until(WAIT, &told, &finish))
    })
    .await;
    for p in &parties[1..] {
        assert!(
            p.signal(|m| matches!(m, ServerMessage::TrackUnpublished { producer_id, .. } if *producer_id == alice_audio))
                .is_some(),
            "{} got track-unpublished",
            p.name
        );
        let consumer = p.consumer_of("alice", MediaKind::Audio);
        assert!(
            p.signal(|m| matches!(m, ServerMessage::TrackUnsubscribed { consumer_id, .. } if *consumer_id == consumer))
                .is_some(),
            "{} got track-unsubscribed for its consumer",
            p.name
        );
    }

    // Phase 4: carol leaves.
    let carol = parties.pop().unwrap();
    let carol_tracks = [
        carol.video.producer_id().clone(),
        carol.audio.producer_id().clone(),
    ];
    carol.client.leave().await.unwrap();
    // The phase ends once alice and bob were told and receive each other.
    let seen_leaving = |p: &Party| -> bool {
        let other = if p.name == "alice" { "bob" } else { "alice" };
        p.signal(|m| matches!(m, ServerMessage::ParticipantLeft { participant } if participant.identity == "carol")).is_some()
            && carol_tracks.iter().all(|t| {
                p.signal(|m| matches!(m, ServerMessage::TrackUnpublished { producer_id, .. } if producer_id == t)).is_some()
            })
            && [MediaKind::Video, MediaKind::Audio].iter().all(|kind| {
                let consumer = p.consumer_of("carol", *kind);
                p.signal(|m| matches!(m, ServerMessage::TrackUnsubscribed { consumer_id, .. } if *consumer_id == consumer)).is_some()
            })
            && p
                .received
                .get(&p.consumer_of(other, MediaKind::Video))
                .is_some_and(|r| r.packets > 10)
    };
    let finish = Finish::new(parties.len());
    futures_join(&mut parties, |p| {
        Box::pin(p.run_until(WAIT, &seen_leaving, &finish))
    })
    .await;
    for p in &parties {
        assert!(
            p.signal(|m| matches!(m, ServerMessage::ParticipantLeft { participant } if participant.identity == "carol"))
                .is_some(),
            "{} got participant-left",
            p.name
        );
        for t in &carol_tracks {
            assert!(
                p.signal(|m| matches!(m, ServerMessage::TrackUnpublished { producer_id, .. } if producer_id == t))
                    .is_some(),
                "{} got track-unpublished for carol's {t}",
                p.name
            );
        }
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let consumer = p.consumer_of("carol", kind);
            assert!(
                p.signal(|m| matches!(m, ServerMessage::TrackUnsubscribed { consumer_id, .. } if *consumer_id == consumer))
                    .is_some(),
                "{} got track-unsubscribed for carol's {kind:?}",
                p.name
            );
        }
        // Alice and bob still receive each other's video.
        let other = if p.name == "alice" { "bob" } else { "alice" };
        let r = &p.received[&p.consumer_of(other, MediaKind::Video)];
        assert!(r.packets > 10, "{} still receives {other}", p.name);
    }
}

type PhaseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Runs `f` on every party concurrently.
async fn futures_join<'a>(parties: &'a mut [Party], f: impl Fn(&'a mut Party) -> PhaseFuture<'a>) {
    let futures: Vec<PhaseFuture<'a>> = parties.iter_mut().map(f).collect();
    futures_util::future::join_all(futures).await;
}
