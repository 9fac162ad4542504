//! The command line.

use std::time::Duration;

use clap::Parser;

/// Load-tests PulseWave servers: rooms of publishers sending synthetic VP8
/// video and opus audio at real-time pacing, and subscribers measuring
/// loss, duplicates, reordering and one-way latency of every packet.
#[derive(Clone, Debug, Parser)]
#[command(name = "pulsewave-loadtest", version)]
pub struct Config {
    /// Server WebSocket URL; repeat to spread participants round-robin over
    /// several servers.
    #[arg(long = "url", default_value = "ws://127.0.0.1:3000")]
    pub urls: Vec<String>,
    /// API key that signs the access tokens.
    #[arg(long, env = "API_KEY", default_value = "devkey")]
    pub api_key: String,
    /// API secret that signs the access tokens.
    #[arg(
        long,
        env = "API_SECRET",
        default_value = "secret",
        hide_env_values = true
    )]
    pub api_secret: String,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers per room (each subscribes to every track of the room).
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Video bitrate per publisher (`1mbps`, `500kbps`, `800000`); `0`
    /// publishes no video.
    #[arg(long, default_value = "1mbps", value_parser = parse_bitrate)]
    pub video_bitrate: u64,
    /// Emulated downlink of every subscriber (`300kbps`, `1mbps`): datagrams
    /// past it are dropped as a policed access link would, and the report
    /// shows the layers and pauses the server's allocator chose. `0`: none.
    #[arg(long, default_value = "0", value_parser = parse_bitrate)]
    pub subscriber_bitrate_cap: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub video_fps: u32,
    /// Time between video keyframes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub keyframe_interval: Duration,
    /// Publish opus-sized audio too (`on` or `off`).
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub audio: bool,
    /// How long to measure once every participant is ready (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Joins per second while starting participants (publishers first).
    #[arg(long, default_value_t = 20.0)]
    pub ramp: f64,
    /// How long every participant may take to get ready after the ramp.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How participants carry media: `udp` (the default) or `tcp` (only
    /// the server's passive ICE-TCP candidate, RFC 4571 framing), to
    /// measure the cost of ICE-TCP beside UDP.
    #[arg(long, default_value = "udp", value_parser = parse_transport)]
    pub transport: pulsewave_client::IceProtocol,
    /// Room names are `<room-prefix>-<n>`.
    #[arg(long, default_value = "loadtest")]
    pub room_prefix: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json_file: Option<std::path::PathBuf>,
    /// Exit non-zero when the loss exceeds this many percent.
    #[arg(long)]
    pub max_loss: Option<f64>,
    /// Exit non-zero when more errors than this occur (participants that
    /// failed, expected tracks never received).
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// PID of the server on this host: CPU time and memory from `/proc`.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Read the server's `GET /metrics` before and after (CPU, memory, RTP
    /// packets forwarded). Without a value: `http://<first url's
    /// host:port>/metrics`.
    #[arg(long, num_args = 0..=1, default_missing_value = "auto")]
    pub metrics: Option<String>,
    /// Worker threads of the load tester's runtime (default: the CPUs this
    /// process may run on).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Churn soak instead of a load test: for `--duration`, participants
    /// join `--rooms` rooms in waves, publish, subscribe, use data channels
    /// and leave (cleanly, by closing the WebSocket, or abruptly); at the
    /// end the server's rooms, sessions, transports, routing entries, open
    /// files and memory must be back to their baseline. Needs
    /// `--server-pid`; reads `/metrics` (`--metrics` is implied).
    #[arg(long)]
    pub churn: bool,
    /// Churn: participants online at once, at most.
    #[arg(long, default_value_t = 24)]
    pub churn_participants: usize,
    /// Churn: length of a wave. At its end every participant still online
    /// leaves, and the next wave starts once the server is empty again (or
    /// after `--wave-settle`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub churn_wave: Duration,
    /// Churn: shortest time a participant stays.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub churn_min_life: Duration,
    /// Churn: longest time a participant stays.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub churn_max_life: Duration,
    /// Churn: how long to wait between waves for the server to empty.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub wave_settle: Duration,
    /// Churn: how long to wait at the end for the server to return to its
    /// baseline before failing.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// Churn: resident memory the server may keep at the end beyond its
    /// memory after the first wave (the warm baseline), in MiB: freed
    /// memory the allocator keeps for reuse. See docs/benchmarks.md.
    #[arg(long, default_value_t = 32.0)]
    pub rss_tolerance_mib: f64,
    /// Churn: seed of the participants' choices (room, role, lifetime,
    /// how they leave).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Config {
    /// Everything on, for one server at `url` (tests).
    pub fn new(url: &str) -> Self {
        Self::parse_from(["pulsewave-loadtest", "--url", url])
    }

    /// Tracks each publisher sends.
    pub fn tracks_per_publisher(&self) -> usize {
        usize::from(self.video_bitrate > 0) + usize::from(self.audio)
    }
}

/// `udp` or `tcp`.
fn parse_transport(s: &str) -> Result<pulsewave_client::IceProtocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(pulsewave_client::IceProtocol::Udp),
        "tcp" => Ok(pulsewave_client::IceProtocol::Tcp),
        _ => Err(format!("`{s}`: expected `udp` or `tcp`")),
    }
}

/// `1mbps`, `1.5Mbps`, `500kbps`, `64000bps`, `800000`: bits per second.
pub fn parse_bitrate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let (num, mult) = if let Some(n) = t.strip_suffix("gbps") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbps") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbps") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bps") {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a bitrate (1mbps, 500kbps, 800000)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e10 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok((v * mult).round() as u64)
}

/// `10s`, `1m30s`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))
}

/// `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates() {
        assert_eq!(parse_bitrate("1mbps"), Ok(1_000_000));
        assert_eq!(parse_bitrate("1.5Mbps"), Ok(1_500_000));
        assert_eq!(parse_bitrate("500kbps"), Ok(500_000));
        assert_eq!(parse_bitrate("64000"), Ok(64_000));
        assert_eq!(parse_bitrate("0"), Ok(0));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("-1mbps").is_err());
    }

    #[test]
    fn durations_and_switches() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_on_off("off"), Ok(false));
        assert_eq!(
            parse_transport("TCP"),
            Ok(pulsewave_client::IceProtocol::Tcp)
        );
        assert_eq!(
            parse_transport("udp"),
            Ok(pulsewave_client::IceProtocol::Udp)
        );
        assert!(parse_transport("quic").is_err());
        assert!(parse_on_off("maybe").is_err());
    }

    #[test]
    fn command_line() {
        let c = Config::parse_from([
            "x",
            "--url",
            "ws://a:1",
            "--url",
            "ws://b:2",
            "--rooms",
            "2",
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--video-bitrate",
            "500kbps",
            "--audio",
            "off",
            "--duration",
            "3s",
            "--max-loss",
            "1",
            "--metrics",
        ]);
        assert_eq!(c.urls, ["ws://a:1", "ws://b:2"]);
        assert_eq!(c.video_bitrate, 500_000);
        assert!(!c.audio);
        assert_eq!(c.tracks_per_publisher(), 1);
        assert_eq!(c.metrics.as_deref(), Some("auto"));
        assert_eq!(c.max_loss, Some(1.0));
        let d = Config::new("ws://127.0.0.1:9");
        assert_eq!(d.tracks_per_publisher(), 2);
    }
}
