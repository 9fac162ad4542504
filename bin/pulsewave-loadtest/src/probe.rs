//! Reading the server's CPU time, memory and forwarded-packet counter:
//! from `/proc/<pid>` (same host) and from its `GET /metrics`.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::LoadTestError;

/// One reading of the server.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// `pulsewave_media_rtp_forwarded_total`.
    pub rtp_forwarded: Option<u64>,
    /// `pulsewave_media_datagrams_sent_total`.
    pub datagrams_sent: Option<u64>,
    /// `pulsewave_media_datagrams_received_total`.
    pub datagrams_received: Option<u64>,
}

impl Sample {
    /// Fills what `self` lacks from `other`.
    fn or(self, other: Sample) -> Sample {
        Sample {
            cpu_seconds: self.cpu_seconds.or(other.cpu_seconds),
            rss_bytes: self.rss_bytes.or(other.rss_bytes),
            peak_rss_bytes: self.peak_rss_bytes.or(other.peak_rss_bytes),
            rtp_forwarded: self.rtp_forwarded.or(other.rtp_forwarded),
            datagrams_sent: self.datagrams_sent.or(other.datagrams_sent),
            datagrams_received: self.datagrams_received.or(other.datagrams_received),
        }
    }
}

/// CPU seconds of process `pid` from `/proc/<pid>/stat` (`self` for this
/// process).
pub fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parens.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux platform Rust supports.
    Some((utime + stime) / 100.0)
}

/// `(VmRSS, VmHWM)` of process `pid` in bytes, from `/proc/<pid>/status`.
pub fn proc_memory(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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

/// Where the server's figures come from.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// A PID on this host.
    pub pid: Option<u32>,
    /// `http://host:port/metrics`.
    pub metrics_url: Option<String>,
    /// Basic credentials for `/metrics` (outside `--dev`).
    pub credentials: Option<(String, String)>,
}

impl Probe {
    /// Whether there is anything to read.
    pub fn is_enabled(&self) -> bool {
        self.pid.is_some() || self.metrics_url.is_some()
    }

    /// Reads everything available. `/proc` wins over `/metrics` for CPU and
    /// memory (it is exact); the RTP counter only comes from `/metrics`.
    pub async fn sample(&self) -> Result<Sample, LoadTestError> {
        let mut from_proc = Sample::default();
        if let Some(pid) = self.pid {
            let pid = pid.to_string();
            from_proc.cpu_seconds = proc_cpu_seconds(&pid);
            if let Some((rss, peak)) = proc_memory(&pid) {
                from_proc.rss_bytes = Some(rss);
                from_proc.peak_rss_bytes = Some(peak);
            }
            if from_proc.cpu_seconds.is_none() {
                return Err(LoadTestError::Probe(format!(
                    "cannot read /proc/{pid}/stat (is the server running on this host?)"
                )));
            }
        }
        let mut from_metrics = Sample::default();
        if let Some(url) = &self.metrics_url {
            let body = http_get(url, self.credentials.as_ref()).await?;
            from_metrics = parse_metrics(&body);
        }
        Ok(from_proc.or(from_metrics))
    }
}

/// Reads the figures PulseWave exposes from a Prometheus text body.
pub fn parse_metrics(body: &str) -> Sample {
    let mut s = Sample::default();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "process_cpu_seconds_total" => s.cpu_seconds = Some(v),
            "process_resident_memory_bytes" => s.rss_bytes = Some(v as u64),
            "process_resident_memory_peak_bytes" => s.peak_rss_bytes = Some(v as u64),
            "pulsewave_media_rtp_forwarded_total" => s.rtp_forwarded = Some(v as u64),
            "pulsewave_media_datagrams_sent_total" => s.datagrams_sent = Some(v as u64),
            "pulsewave_media_datagrams_received_total" => s.datagrams_received = Some(v as u64),
            _ => {}
        }
    }
    s
}

/// The `/metrics` URL of the server behind a `ws://host:port/...` URL.
pub fn metrics_url_for(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let authority = rest.split(['/', '?']).next()?;
    (!authority.is_empty()).then(|| format!("http://{authority}/metrics"))
}

/// Largest `/metrics` response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// A minimal HTTP/1.1 GET (`http://` only) returning the body of a 200.
pub async fn http_get(
    url: &str,
    credentials: Option<&(String, String)>,
) -> Result<String, LoadTestError> {
    let bad = || {
        LoadTestError::Probe(format!(
            "unsupported metrics URL `{url}` (http://host:port/path)"
        ))
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some((user, pass)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let fetch = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| LoadTestError::Probe(format!("GET {url} timed out")))?
        .map_err(|e| LoadTestError::Probe(format!("GET {url}: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| LoadTestError::Probe(format!("GET {url}: malformed response")))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        return Err(LoadTestError::Probe(format!("GET {url}: {status}")));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let body = "# HELP x y\n# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.34\n\
                    process_resident_memory_peak_bytes 1048576\n\
                    pulsewave_media_rtp_forwarded_total 999\n\
                    garbage\nother_metric 1\n";
        let s = parse_metrics(body);
        assert_eq!(s.cpu_seconds, Some(12.34));
        assert_eq!(s.peak_rss_bytes, Some(1_048_576));
        assert_eq!(s.rtp_forwarded, Some(999));
        assert_eq!(s.rss_bytes, None);
    }

    #[test]
    fn metrics_url_from_ws_url() {
        assert_eq!(
            metrics_url_for("ws://127.0.0.1:3000").as_deref(),
            Some("http://127.0.0.1:3000/metrics")
        );
        assert_eq!(
            metrics_url_for("ws://localhost:7880/?token=x").as_deref(),
            Some("http://localhost:7880/metrics")
        );
        assert_eq!(metrics_url_for("wss://x"), None);
    }

    #[test]
    fn reads_own_proc() {
        if cfg!(target_os = "linux") {
            assert!(proc_cpu_seconds("self").is_some());
            let (rss, peak) = proc_memory("self").unwrap_or_default();
            assert!(rss > 0 && peak >= rss);
        }
    }
}
