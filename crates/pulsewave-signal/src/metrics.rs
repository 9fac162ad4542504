//! `GET /metrics`: Prometheus text exposition of the server's counters, and
//! the process's CPU time and memory (Linux `/proc`), so load tests can
//! compute the CPU cost per forwarded packet.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::server::Shared;

/// CPU seconds (user + system) of this process, from `/proc/self/stat`.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parens.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Rust supports.
    Some((utime + stime) / 100.0)
}

/// Resident and peak resident memory in bytes, from `/proc/self/status`.
pub fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// The per-room series, for at most `METRICS_ROOM_LIMIT` rooms of this
/// node (the first by name), so that the number of series stays bounded
/// whatever the number of rooms: participants, tracks, and participants
/// by connection quality. Empty when the limit is 0 (the default).
pub(crate) async fn room_series(shared: &Shared) -> String {
    let limit = shared.config.metrics_room_limit;
    if limit == 0 {
        return String::new();
    }
    let mut out = String::new();
    let names = shared.rooms.room_names();
    let mut rows = Vec::new();
    for name in names.into_iter().take(limit) {
        let Some(handle) = shared.rooms.get_room(&name) else {
            continue;
        };
        if let Ok(crate::room::AdminReply::Summary(s)) =
            handle.admin(crate::room::AdminOp::Summary).await
        {
            rows.push((name, s));
        }
    }
    let label = |name: &str| {
        name.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP pulsewave_room_participants Participants in the room (METRICS_ROOM_LIMIT rooms at most)."
    );
    let _ = writeln!(out, "# TYPE pulsewave_room_participants gauge");
    for (name, s) in &rows {
        let _ = writeln!(
            out,
            "pulsewave_room_participants{{room=\"{}\"}} {}",
            label(name),
            s.participants
        );
    }
    let _ = writeln!(
        out,
        "# HELP pulsewave_room_tracks Published tracks in the room."
    );
    let _ = writeln!(out, "# TYPE pulsewave_room_tracks gauge");
    for (name, s) in &rows {
        let _ = writeln!(
            out,
            "pulsewave_room_tracks{{room=\"{}\"}} {}",
            label(name),
            s.tracks
        );
    }
    let _ = writeln!(
        out,
        "# HELP pulsewave_room_connection_quality Participants of the room by connection quality."
    );
    let _ = writeln!(out, "# TYPE pulsewave_room_connection_quality gauge");
    for (name, s) in &rows {
        for (i, q) in ["excellent", "good", "poor", "lost"].iter().enumerate() {
            let _ = writeln!(
                out,
                "pulsewave_room_connection_quality{{room=\"{}\",quality=\"{q}\"}} {}",
                label(name),
                s.quality[i]
            );
        }
    }
    out
}

pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "pulsewave_rooms",
        "gauge",
        "Open rooms on this node.",
        shared.rooms.room_names().len().to_string(),
    );
    metric(
        "pulsewave_sessions",
        "gauge",
        "Open WebSocket sessions (joined or not).",
        shared.sessions.len().to_string(),
    );
    if let Some(webhooks) = &shared.rooms.settings().webhooks {
        let s = webhooks.stats();
        metric(
            "pulsewave_webhooks_delivered_total",
            "counter",
            "Webhook events delivered (2xx), counted per URL.",
            s.delivered.to_string(),
        );
        metric(
            "pulsewave_webhooks_failed_total",
            "counter",
            "Webhook POSTs that failed (retried, or dropped when too old).",
            s.failed.to_string(),
        );
        metric(
            "pulsewave_webhooks_dropped_total",
            "counter",
            "Webhook events dropped: queue full, or still failing after the retry window.",
            s.dropped.to_string(),
        );
    }
    if let Some(cpu) = process_cpu_seconds() {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the server process.",
            format!("{cpu:.2}"),
        );
    }
    if let Some((rss, peak)) = process_memory() {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
            rss.to_string(),
        );
        metric(
            "process_resident_memory_peak_bytes",
            "gauge",
            "Peak resident memory.",
            peak.to_string(),
        );
    }
    if let Some(pool) = shared.rooms.settings().media.as_ref() {
        let sum = |f: &dyn Fn(&crate::media::WorkerStats) -> u64| -> u64 {
            pool.workers().iter().map(|w| f(w.stats())).sum()
        };
        let rows: [(&str, &str, &str, u64); 15] = [
            (
                "pulsewave_media_rooms",
                "gauge",
                "Rooms open on the media workers.",
                sum(&|s| s.rooms.load(Ordering::Relaxed) as u64),
            ),
            (
                "pulsewave_media_routes",
                "gauge",
                "Entries of the media workers' routing tables (ICE username fragments and remote addresses of open transports).",
                sum(&|s| s.routes.load(Ordering::Relaxed) as u64),
            ),
            (
                "pulsewave_media_transports",
                "gauge",
                "Open WebRTC transports.",
                sum(&|s| s.transports.load(Ordering::Relaxed) as u64),
            ),
            (
                "pulsewave_media_tcp_connections",
                "gauge",
                "Open ICE-TCP connections to the media workers.",
                sum(&|s| s.tcp_connections.load(Ordering::Relaxed) as u64),
            ),
            (
                "pulsewave_media_tcp_overflows_total",
                "counter",
                "ICE-TCP connections dropped because their peer fell too far behind.",
                sum(&|s| s.tcp_overflows.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_send_dropped_total",
                "counter",
                "Outgoing UDP datagrams the media workers dropped: refused by the kernel, or the socket's send buffer stayed full.",
                sum(&|s| s.send_dropped.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_datagrams_received_total",
                "counter",
                "Datagrams (UDP, or framed ICE-TCP packets) received by the media workers.",
                sum(&|s| s.datagrams_in.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_datagrams_sent_total",
                "counter",
                "Datagrams (UDP, or framed ICE-TCP packets) sent by the media workers.",
                sum(&|s| s.datagrams_out.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_datagrams_dropped_total",
                "counter",
                "Datagrams dropped: garbage, unknown source or rejected.",
                sum(&|s| s.datagrams_dropped.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_rtp_forwarded_total",
                "counter",
                "RTP packets written to consumers.",
                sum(&|s| s.rtp_forwarded.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_layer_switches_total",
                "counter",
                "Changes of the simulcast or temporal layer a consumer forwards.",
                sum(&|s| s.layer_switches.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_congestion_pauses_total",
                "counter",
                "Video consumers paused because their subscriber's bandwidth estimate did not carry even the lowest layer.",
                sum(&|s| s.congestion_pauses.load(Ordering::Relaxed)),
            ),
            (
                "pulsewave_media_workers",
                "gauge",
                "Media worker threads.",
                pool.workers().len() as u64,
            ),
            (
                "pulsewave_media_workers_alive",
                "gauge",
                "Media worker threads running (below pulsewave_media_workers: /healthz fails).",
                pool.workers().iter().filter(|w| w.is_alive()).count() as u64,
            ),
            (
                "pulsewave_media_rooms_failed_total",
                "counter",
                "Rooms dropped by their worker because they panicked (their participants were disconnected; the worker went on).",
                sum(&|s| s.rooms_failed.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in rows {
            metric(name, kind, help, value.to_string());
        }
    }
    {
        let counters = shared.rooms.counters();
        let _ = writeln!(
            out,
            "# HELP pulsewave_participants_by_quality Participants on this node by their last connection quality (all rooms)."
        );
        let _ = writeln!(out, "# TYPE pulsewave_participants_by_quality gauge");
        for (q, n) in ["excellent", "good", "poor", "lost"]
            .iter()
            .zip(counters.quality())
        {
            let _ = writeln!(
                out,
                "pulsewave_participants_by_quality{{quality=\"{q}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pulsewave_limit_hits_total Times a limit was crossed: a frame, message, connection, room, join or track refused, or a client disconnected."
        );
        let _ = writeln!(out, "# TYPE pulsewave_limit_hits_total counter");
        for limit in crate::limits::Limit::ALL {
            let _ = writeln!(
                out,
                "pulsewave_limit_hits_total{{limit=\"{}\"}} {}",
                limit.label(),
                counters.get(limit)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        if cfg!(target_os = "linux") {
            let cpu = process_cpu_seconds().unwrap();
            assert!(cpu >= 0.0);
            let (rss, peak) = process_memory().unwrap();
            assert!(rss > 0 && peak >= rss);
        }
    }
}
