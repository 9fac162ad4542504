//! The report: what was expected, what arrived, and what it cost the
//! server. Serialised as JSON with `--json`, printed as text otherwise.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pulsewave_protocol::{MediaKind, ProducerId};
use serde::Serialize;

use crate::config::Config;
use crate::probe::Sample;
use crate::run::{PublisherResult, SubscriberResult, TrackCounters, cap_errors};
use crate::stats::{Histogram, Summary};

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was asked for.
    pub config: ConfigSummary,
    /// Length of the measurement window, seconds.
    pub window_seconds: f64,
    /// Seconds from the first join until every participant was ready.
    pub ready_after_seconds: f64,
    /// Participants started, ready, failed.
    pub participants: Participants,
    /// Tracks published, subscriptions expected and made, tracks received.
    pub tracks: Tracks,
    /// Packets over the whole run (from each subscription's first packet).
    pub packets: Packets,
    /// Packets and bitrate inside the measurement window.
    pub window: WindowFigures,
    /// One-way latency, publisher send to subscriber socket read, in ms
    /// (measurement window; same host clock).
    pub latency_ms: Summary,
    /// WebSocket connect to `joined`, in ms.
    pub join_ms: Summary,
    /// Connect to ready (published, or subscribed to every track), in ms.
    pub ready_ms: Summary,
    /// Subscriber connect to its first media packet, in ms.
    pub first_packet_ms: Summary,
    /// Whether the publishers kept their pacing.
    pub pacing: Pacing,
    /// The load tester itself.
    pub client: ClientFigures,
    /// The server, with `--server-pid` or `--metrics`.
    pub server: Option<ServerFigures>,
    /// What the server's bandwidth allocator did for the subscribers.
    pub adaptive: AdaptiveFigures,
    /// Errors counted (failed participants, failed subscriptions, tracks
    /// subscribed that never delivered a packet).
    pub errors: u64,
    /// The first error texts.
    pub error_texts: Vec<String>,
    /// No threshold exceeded.
    pub passed: bool,
    /// The thresholds exceeded.
    pub failures: Vec<String>,
}

/// The configuration, as run.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigSummary {
    /// Server URLs.
    pub urls: Vec<String>,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room.
    pub subscribers: usize,
    /// Video bits per second per publisher.
    pub video_bitrate_bps: u64,
    /// `--subscriber-bitrate-cap` (0: none).
    pub subscriber_bitrate_cap_bps: u64,
    /// Video frames per second.
    pub video_fps: u32,
    /// Audio on.
    pub audio: bool,
    /// How media travelled: `udp` or `tcp` (`--transport`).
    pub transport: &'static str,
    /// Measurement seconds asked for.
    pub duration_seconds: f64,
    /// Joins per second.
    pub ramp: f64,
    /// `--max-loss`.
    pub max_loss_percent: Option<f64>,
    /// `--max-errors`.
    pub max_errors: u64,
}

/// What the server's allocator chose for the subscribers' video.
#[derive(Clone, Debug, Serialize)]
pub struct AdaptiveFigures {
    /// `consumer-layers-changed` messages received.
    pub layer_changes: u64,
    /// Video consumers paused for congestion (`stream-state-changed`).
    pub congestion_pauses: u64,
    /// The layers each video consumer had last, counted by
    /// `s<spatial>t<temporal>` (`none`: no video at the end).
    pub final_layers: std::collections::BTreeMap<String, u64>,
}

/// Participant counts.
#[derive(Clone, Debug, Serialize)]
pub struct Participants {
    /// Started.
    pub total: usize,
    /// Publishers started.
    pub publishers: usize,
    /// Subscribers started.
    pub subscribers: usize,
    /// Ready in time.
    pub ready: usize,
    /// Failed before ready.
    pub failed: usize,
    /// Neither ready nor failed in time.
    pub not_ready: usize,
}

/// Track counts.
#[derive(Clone, Debug, Serialize)]
pub struct Tracks {
    /// Tracks published.
    pub published: usize,
    /// Subscriptions expected: subscribers x publishers x tracks each.
    pub expected_subscriptions: usize,
    /// Subscriptions made.
    pub subscribed: usize,
    /// Subscriptions that delivered at least one packet.
    pub received: usize,
    /// Expected subscriptions that delivered nothing (or were never made).
    pub missing: usize,
}

/// Packet counts over every subscription, from its first packet on.
#[derive(Clone, Debug, Serialize)]
pub struct Packets {
    /// Packets the publishers sent.
    pub sent: u64,
    /// Packets the subscribers should have received.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Expected but not received.
    pub lost: u64,
    /// `lost / expected`, percent.
    pub loss_percent: f64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a later packet of the same stream.
    pub reordered: u64,
    /// Payload not intact.
    pub damaged: u64,
    /// Dropped by the load tester itself (its event queue was full):
    /// included in `lost`.
    pub dropped_by_client: u64,
    /// Expected, by kind: video.
    pub video_expected: u64,
    /// Received, by kind: video.
    pub video_received: u64,
    /// Expected, by kind: audio.
    pub audio_expected: u64,
    /// Received, by kind: audio.
    pub audio_received: u64,
}

/// Figures inside the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowFigures {
    /// Packets sent by publishers x their subscribers.
    pub packets_expected: u64,
    /// Packets received by subscribers.
    pub packets_received: u64,
    /// Bits per second the subscribers should receive, all together.
    pub bitrate_expected_bps: f64,
    /// Bits per second received, all together.
    pub bitrate_received_bps: f64,
    /// Bits per second sent by all publishers together.
    pub bitrate_sent_bps: f64,
}

/// Pacing of the publishers.
#[derive(Clone, Debug, Serialize)]
pub struct Pacing {
    /// Frames sent.
    pub frames: u64,
    /// Frames sent more than one frame interval late.
    pub late_frames: u64,
    /// Frames skipped because a source fell more than five frames behind.
    pub skipped_frames: u64,
    /// Lateness of frames, ms.
    pub lateness_ms: Summary,
    /// More than 1% of frames late, or any skipped: the load tester was
    /// itself a bottleneck.
    pub fell_behind: bool,
    /// Packets the client refused to send.
    pub send_errors: u64,
}

/// The load tester's own figures.
#[derive(Clone, Debug, Serialize)]
pub struct ClientFigures {
    /// Tokio worker threads.
    pub threads: usize,
    /// Its CPU seconds in the window.
    pub cpu_seconds: Option<f64>,
    /// Its CPU use in the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// RTP packets without a synthetic header.
    pub foreign_packets: u64,
}

/// The server's figures over the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct ServerFigures {
    /// CPU seconds used in the window.
    pub cpu_seconds: Option<f64>,
    /// CPU use in the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// RTP packets forwarded in the window.
    pub rtp_forwarded: u64,
    /// `metrics` (the server's counter) or `client` (packets the
    /// subscribers received in the window).
    pub forwarded_source: String,
    /// Forwarded packets per second.
    pub forwarded_per_second: f64,
    /// CPU microseconds per forwarded packet.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// Datagrams sent in the window (from metrics).
    pub datagrams_sent: Option<u64>,
    /// Peak resident memory at the end, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory before the first join, bytes.
    pub rss_before_bytes: Option<u64>,
    /// Resident memory once everyone was ready, bytes.
    pub rss_ready_bytes: Option<u64>,
    /// `(rss_ready - rss_before) / ready participants`, bytes.
    pub memory_per_participant_bytes: Option<f64>,
}

pub(crate) fn server_figures(
    before: Sample,
    start: Sample,
    end: Sample,
    window: Duration,
    ready: usize,
    subscribers: &[SubscriberResult],
) -> ServerFigures {
    let secs = window.as_secs_f64().max(1e-9);
    let cpu = match (start.cpu_seconds, end.cpu_seconds) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let (forwarded, source) = match (start.rtp_forwarded, end.rtp_forwarded) {
        (Some(a), Some(b)) => (b.saturating_sub(a), "metrics"),
        _ => (
            subscribers
                .iter()
                .flat_map(|s| s.subs.iter())
                .map(|s| s.window_packets)
                .sum(),
            "client",
        ),
    };
    let per_participant = match (before.rss_bytes, start.rss_bytes) {
        (Some(b), Some(r)) if ready > 0 => Some((r as f64 - b as f64) / ready as f64),
        _ => None,
    };
    ServerFigures {
        cpu_seconds: cpu,
        cpu_percent: cpu.map(|c| c / secs * 100.0),
        rtp_forwarded: forwarded,
        forwarded_source: source.into(),
        forwarded_per_second: forwarded as f64 / secs,
        cpu_us_per_forwarded_packet: cpu
            .filter(|_| forwarded > 0)
            .map(|c| c * 1e6 / forwarded as f64),
        datagrams_sent: match (start.datagrams_sent, end.datagrams_sent) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        peak_rss_bytes: end.peak_rss_bytes,
        rss_before_bytes: before.rss_bytes,
        rss_ready_bytes: start.rss_bytes,
        memory_per_participant_bytes: per_participant,
    }
}

pub(crate) struct Inputs<'a> {
    pub(crate) config: &'a Config,
    pub(crate) total: usize,
    pub(crate) ready: usize,
    pub(crate) failed: usize,
    pub(crate) not_ready: usize,
    pub(crate) panicked: usize,
    pub(crate) ready_after: Duration,
    pub(crate) window: Duration,
    pub(crate) tracks: &'a [Arc<TrackCounters>],
    pub(crate) publishers: &'a [PublisherResult],
    pub(crate) subscribers: &'a [SubscriberResult],
    pub(crate) server: Option<ServerFigures>,
    pub(crate) own_cpu_seconds: Option<f64>,
    pub(crate) threads: usize,
}

fn ms_summary(values: impl Iterator<Item = Duration>) -> Summary {
    let mut h = Histogram::default();
    for d in values {
        h.record(d.as_micros() as u64);
    }
    h.summary(1000.0)
}

pub(crate) fn build(i: Inputs<'_>) -> Report {
    let c = i.config;
    let secs = i.window.as_secs_f64().max(1e-9);
    let by_producer: HashMap<&ProducerId, &TrackCounters> =
        i.tracks.iter().map(|t| (&t.producer_id, &**t)).collect();
    let tpp = c.tracks_per_publisher();
    let expected_subscriptions = c.rooms * c.subscribers * c.publishers * tpp;

    let mut p = Packets {
        sent: i
            .tracks
            .iter()
            .map(|t| t.packets.load(Ordering::Relaxed))
            .sum(),
        expected: 0,
        received: 0,
        lost: 0,
        loss_percent: 0.0,
        duplicates: 0,
        reordered: 0,
        damaged: 0,
        dropped_by_client: i.subscribers.iter().map(|s| s.dropped_events).sum(),
        video_expected: 0,
        video_received: 0,
        audio_expected: 0,
        audio_received: 0,
    };
    let mut w = WindowFigures {
        packets_expected: 0,
        packets_received: 0,
        bitrate_expected_bps: 0.0,
        bitrate_received_bps: 0.0,
        bitrate_sent_bps: i
            .tracks
            .iter()
            .map(|t| t.window_bytes.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            * 8.0
            / secs,
    };
    let mut subscribed = 0;
    let mut received = 0;
    let mut silent = 0u64;
    let mut latency = Histogram::default();
    for s in i.subscribers {
        latency.merge(&s.latency_us);
        for sub in &s.subs {
            let Some(t) = sub.producer_id.as_ref().and_then(|id| by_producer.get(id)) else {
                continue;
            };
            subscribed += 1;
            let sent = t.packets.load(Ordering::Relaxed);
            let window_sent = t.window_packets.load(Ordering::Relaxed);
            let expected = match sub.seq.first() {
                Some(first) => sent.saturating_sub(first) + sub.seq.before_first,
                None => window_sent,
            };
            if sub.seq.unique > 0 {
                received += 1;
            } else {
                silent += 1;
            }
            p.expected += expected;
            p.received += sub.seq.unique;
            p.duplicates += sub.seq.duplicates;
            p.reordered += sub.seq.reordered;
            p.damaged += sub.damaged;
            match t.kind {
                MediaKind::Video => {
                    p.video_expected += expected;
                    p.video_received += sub.seq.unique;
                }
                MediaKind::Audio => {
                    p.audio_expected += expected;
                    p.audio_received += sub.seq.unique;
                }
            }
            w.packets_expected += window_sent;
            w.packets_received += sub.window_packets;
            w.bitrate_expected_bps += t.window_bytes.load(Ordering::Relaxed) as f64 * 8.0 / secs;
            w.bitrate_received_bps += sub.window_bytes as f64 * 8.0 / secs;
        }
    }
    p.lost = p.expected.saturating_sub(p.received);
    p.loss_percent = if p.expected > 0 {
        p.lost as f64 * 100.0 / p.expected as f64
    } else {
        0.0
    };
    let missing = expected_subscriptions.saturating_sub(received);

    let mut lateness = Histogram::default();
    let mut pacing = Pacing {
        frames: 0,
        late_frames: 0,
        skipped_frames: 0,
        lateness_ms: Summary::default(),
        fell_behind: false,
        send_errors: 0,
    };
    for r in i.publishers {
        lateness.merge(&r.lateness_us);
        pacing.frames += r.frames;
        pacing.late_frames += r.late_frames;
        pacing.skipped_frames += r.skipped_frames;
        pacing.send_errors += r.send_errors;
    }
    pacing.lateness_ms = lateness.summary(1000.0);
    pacing.fell_behind = pacing.skipped_frames > 0 || pacing.late_frames * 100 > pacing.frames;

    let texts = i
        .publishers
        .iter()
        .flat_map(|r| r.errors.iter().cloned())
        .chain(i.subscribers.iter().flat_map(|r| r.errors.iter().cloned()));
    let (text_count, mut error_texts) = cap_errors(texts);
    if silent > 0 && error_texts.len() < 20 {
        error_texts.push(format!("{silent} subscriptions delivered no packet"));
    }
    let errors = text_count + i.panicked as u64 + silent;

    let mut failures = Vec::new();
    if let Some(max) = c.max_loss
        && p.loss_percent > max
    {
        failures.push(format!("loss {:.3}% > --max-loss {max}%", p.loss_percent));
    }
    if errors > c.max_errors {
        failures.push(format!("{errors} errors > --max-errors {}", c.max_errors));
    }

    let join = i
        .publishers
        .iter()
        .filter_map(|r| r.join)
        .chain(i.subscribers.iter().filter_map(|r| r.join));
    let ready = i
        .publishers
        .iter()
        .filter_map(|r| r.ready)
        .chain(i.subscribers.iter().filter_map(|r| r.ready));
    Report {
        config: ConfigSummary {
            urls: c.urls.clone(),
            rooms: c.rooms,
            publishers: c.publishers,
            subscribers: c.subscribers,
            video_bitrate_bps: c.video_bitrate,
            subscriber_bitrate_cap_bps: c.subscriber_bitrate_cap,
            video_fps: c.video_fps,
            audio: c.audio,
            transport: match c.transport {
                pulsewave_client::IceProtocol::Tcp => "tcp",
                _ => "udp",
            },
            duration_seconds: c.duration.as_secs_f64(),
            ramp: c.ramp,
            max_loss_percent: c.max_loss,
            max_errors: c.max_errors,
        },
        window_seconds: secs,
        ready_after_seconds: i.ready_after.as_secs_f64(),
        participants: Participants {
            total: i.total,
            publishers: c.rooms * c.publishers,
            subscribers: c.rooms * c.subscribers,
            ready: i.ready,
            failed: i.failed,
            not_ready: i.not_ready,
        },
        tracks: Tracks {
            published: i.tracks.len(),
            expected_subscriptions,
            subscribed,
            received,
            missing,
        },
        packets: p,
        window: w,
        latency_ms: latency.summary(1000.0),
        join_ms: ms_summary(join),
        ready_ms: ms_summary(ready),
        first_packet_ms: ms_summary(i.subscribers.iter().filter_map(|r| r.first_packet)),
        pacing,
        client: ClientFigures {
            threads: i.threads,
            cpu_seconds: i.own_cpu_seconds,
            cpu_percent: i.own_cpu_seconds.map(|c| c / secs * 100.0),
            foreign_packets: i.subscribers.iter().map(|s| s.foreign_packets).sum(),
        },
        server: i.server,
        adaptive: {
            let mut final_layers = std::collections::BTreeMap::new();
            for (_, l) in i.subscribers.iter().flat_map(|r| r.layers.iter()) {
                let key = l.map_or_else(|| "none".to_owned(), |(s, t)| format!("s{s}t{t}"));
                *final_layers.entry(key).or_insert(0) += 1;
            }
            AdaptiveFigures {
                layer_changes: i.subscribers.iter().map(|r| r.layer_changes).sum(),
                congestion_pauses: i.subscribers.iter().map(|r| r.congestion_pauses).sum(),
                final_layers,
            }
        },
        errors,
        error_texts,
        passed: failures.is_empty(),
        failures,
    }
}

fn mbps(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Report {
    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let c = &self.config;
        let _ = writeln!(
            o,
            "PulseWave load test: {} room(s) x ({} publishers + {} subscribers), video {} @ {} fps, audio {}, over {}, {:.1} s",
            c.rooms,
            c.publishers,
            c.subscribers,
            mbps(c.video_bitrate_bps as f64),
            c.video_fps,
            if c.audio { "on" } else { "off" },
            c.transport.to_uppercase(),
            self.window_seconds
        );
        let pa = &self.participants;
        let _ = writeln!(
            o,
            "participants  {} started, {} ready, {} failed, {} not ready (ready after {:.1} s)",
            pa.total, pa.ready, pa.failed, pa.not_ready, self.ready_after_seconds
        );
        let t = &self.tracks;
        let _ = writeln!(
            o,
            "tracks        {} published, {}/{} subscriptions made, {} received, {} missing",
            t.published, t.subscribed, t.expected_subscriptions, t.received, t.missing
        );
        let p = &self.packets;
        let _ = writeln!(
            o,
            "packets       {} expected, {} received, {} lost ({:.3}%), {} duplicates, {} reordered, {} damaged, {} dropped by the client",
            p.expected,
            p.received,
            p.lost,
            p.loss_percent,
            p.duplicates,
            p.reordered,
            p.damaged,
            p.dropped_by_client
        );
        let w = &self.window;
        let _ = writeln!(
            o,
            "bitrate       sent {}, expected {}, received {} ({} / {} packets in the window)",
            mbps(w.bitrate_sent_bps),
            mbps(w.bitrate_expected_bps),
            mbps(w.bitrate_received_bps),
            w.packets_received,
            w.packets_expected
        );
        let a = &self.adaptive;
        let _ = writeln!(
            o,
            "allocator     {} layer changes, {} congestion pauses, final layers {:?}{}",
            a.layer_changes,
            a.congestion_pauses,
            a.final_layers,
            if c.subscriber_bitrate_cap_bps > 0 {
                format!(
                    " (subscribers capped at {})",
                    mbps(c.subscriber_bitrate_cap_bps as f64)
                )
            } else {
                String::new()
            }
        );
        let s = |x: &Summary| format!("p50 {:.2} p99 {:.2} max {:.2}", x.p50, x.p99, x.max);
        let _ = writeln!(o, "latency ms    {}", s(&self.latency_ms));
        let _ = writeln!(o, "join ms       {}", s(&self.join_ms));
        let _ = writeln!(o, "ready ms      {}", s(&self.ready_ms));
        let _ = writeln!(o, "first pkt ms  {}", s(&self.first_packet_ms));
        let pc = &self.pacing;
        let _ = writeln!(
            o,
            "pacing        {} frames, {} late, {} skipped, lateness {}{}",
            pc.frames,
            pc.late_frames,
            pc.skipped_frames,
            s(&pc.lateness_ms),
            if pc.fell_behind {
                "  WARNING: the load tester fell behind its pacing"
            } else {
                ""
            }
        );
        let cl = &self.client;
        let _ = writeln!(
            o,
            "load tester   {} threads, CPU {}%",
            cl.threads,
            opt(cl.cpu_percent.map(|v| format!("{v:.0}")))
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                o,
                "server        CPU {} s ({}%), {} packets forwarded ({:.0}/s, from {}), {} µs CPU per forwarded packet",
                opt(sv.cpu_seconds.map(|v| format!("{v:.2}"))),
                opt(sv.cpu_percent.map(|v| format!("{v:.0}"))),
                sv.rtp_forwarded,
                sv.forwarded_per_second,
                sv.forwarded_source,
                opt(sv.cpu_us_per_forwarded_packet.map(|v| format!("{v:.2}")))
            );
            let _ = writeln!(
                o,
                "server memory peak RSS {} MiB, {} KiB per participant",
                opt(sv
                    .peak_rss_bytes
                    .map(|v| format!("{:.1}", v as f64 / 1048576.0))),
                opt(sv
                    .memory_per_participant_bytes
                    .map(|v| format!("{:.0}", v / 1024.0)))
            );
        }
        let _ = writeln!(o, "errors        {}", self.errors);
        for e in &self.error_texts {
            let _ = writeln!(o, "  {e}");
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
