//! CPU use of this process, from `/proc/self/stat` (Linux). Elsewhere the
//! figure is 0.

use std::time::Instant;

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on every Linux
/// architecture PulseWave targets).
const TICKS_PER_SECOND: f64 = 100.0;

/// Samples process CPU time and turns deltas into a load fraction.
#[derive(Debug)]
pub(crate) struct CpuSampler {
    last: Option<(Instant, u64)>,
    cores: f64,
}

impl CpuSampler {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let mut s = Self { last: None, cores };
        s.last = process_ticks().map(|t| (Instant::now(), t));
        s
    }

    /// CPU used since the previous call, as a fraction of the machine
    /// (0.0 to 1.0).
    pub(crate) fn sample(&mut self) -> f32 {
        let Some(ticks) = process_ticks() else {
            return 0.0;
        };
        let now = Instant::now();
        let load = match self.last {
            Some((then, before)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs <= 0.0 {
                    0.0
                } else {
                    let used = ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND;
                    (used / secs / self.cores).clamp(0.0, 1.0)
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        load as f32
    }
}

/// utime + stime of this process, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_ticks(&stat)
}

/// Fields 14 (utime) and 15 (stime) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces, so fields
/// are counted after the last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let line =
            "1234 (pulse wave) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0";
        assert_eq!(parse_ticks(line), Some(300));
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    fn sample_is_a_fraction() {
        let mut s = CpuSampler::new();
        let x = s.sample();
        assert!((0.0..=1.0).contains(&x));
    }
}
