//! A throwaway `redis-server` for tests: started on a free 127.0.0.1 port,
//! with no persistence, stopped by PID when dropped. Never touches a system
//! Redis.
//!
//! When `redis-server` is missing, [`RedisServer::start`] panics, saying
//! so: a missing dependency is a failure, never a silent pass. Only with
//! `PULSEWAVE_ALLOW_SKIP=1` (which scripts/test.sh never sets) does it
//! return `None`, and the test returns early with a `SKIPPED` line.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// Polls an async condition every 50 ms for up to `limit`: a bounded wait
/// for a state in Redis, which announces nothing.
#[allow(unused_macros)]
macro_rules! eventually {
    ($limit:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + $limit;
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not true within {:?}: {}",
                $limit,
                stringify!($cond)
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Extra arguments (TLS, ACL users); with TLS the plain port is off.
    extra: Vec<String>,
    tls: bool,
    /// Where the server's output goes (shown when it does not start).
    log: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Fails the test because `missing` is not there, unless
/// `PULSEWAVE_ALLOW_SKIP=1` explicitly allows skipping it: then it prints a
/// `SKIPPED` line and returns (the caller returns early).
pub(crate) fn skip_or_panic(missing: &str) {
    if std::env::var("PULSEWAVE_ALLOW_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED (PULSEWAVE_ALLOW_SKIP=1): {missing}");
    } else {
        panic!(
            "{missing}; this test needs it (set PULSEWAVE_ALLOW_SKIP=1 to skip such tests knowingly)"
        );
    }
}

fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// A fresh Redis. Panics if `redis-server` is not installed; `None`
    /// (the test skips) only under `PULSEWAVE_ALLOW_SKIP=1`.
    pub(crate) fn start() -> Option<RedisServer> {
        Self::start_with(Vec::new(), false, None)
    }

    /// A fresh Redis with `extra` arguments. With `tls`, the arguments must
    /// configure `--tls-port {port}` (the placeholder is replaced) and the
    /// plain port is turned off; readiness is then an accepted TCP
    /// connection. The server's output goes to `log`.
    pub(crate) fn start_with(
        extra: Vec<String>,
        tls: bool,
        log: Option<std::path::PathBuf>,
    ) -> Option<RedisServer> {
        if !available() {
            skip_or_panic(
                "redis-server is not installed (apt-get install redis-server; scripts/test.sh installs it)",
            );
            return None;
        }
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                child: None,
                extra: extra.clone(),
                tls,
                log: log.clone(),
            };
            if s.spawn() {
                return Some(s);
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let plain_port = if self.tls {
            "0".to_owned()
        } else {
            port.clone()
        };
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|a| a.replace("{port}", &port))
            .collect();
        let output = || match &self.log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the redis log")),
            None => Stdio::null(),
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &plain_port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(&extra)
            .stdout(output())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return false; // port taken: retry elsewhere
            }
            // Poll interval of a bounded wait for the new process to answer
            // PING (a child process gives no readiness event).
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running (a TLS-less build exits at
    /// once on TLS arguments).
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends one command (RESP) on a fresh plain connection and returns the
    /// first bytes of the answer: for tests that act as a plain Redis client
    /// (an attacker with write access).
    pub(crate) fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    /// A plain `PUBLISH`; the number of receivers.
    pub(crate) fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let answer = self.command(&[b"PUBLISH", channel.as_bytes(), payload]);
        let text = String::from_utf8_lossy(&answer);
        text.trim_start_matches(':').trim().parse().unwrap_or(-1)
    }

    /// Subscribes (plain connection) to `channel`; messages arrive on the
    /// returned receiver, read by a thread until the server goes away.
    pub(crate) fn subscribe(&self, channel: &str) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let req = format!(
            "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
            channel.len(),
            channel
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut r = std::io::BufReader::new(s);
        // Subscribed once Redis confirms.
        let confirm = read_array(&mut r).expect("subscribe confirmation");
        assert_eq!(confirm.first().map(Vec::as_slice), Some(&b"subscribe"[..]));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Each push is `*3 $7 message $<n> <channel> $<n> <payload>`.
            loop {
                let Some(items) = read_array(&mut r) else {
                    return;
                };
                if items.len() == 3 && items[0] == b"message" && tx.send(items[2].clone()).is_err()
                {
                    return;
                }
            }
        });
        rx
    }

    /// Kills the server (SIGKILL, by PID) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub(crate) fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            // Retry interval of a bounded wait for the old port to be free.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }
}

/// Reads one RESP array of bulk strings or integers.
fn read_array(r: &mut impl std::io::BufRead) -> Option<Vec<Vec<u8>>> {
    let line = read_line(r)?;
    let n: usize = line.strip_prefix('*')?.parse().ok()?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let head = read_line(r)?;
        if let Some(len) = head.strip_prefix('$') {
            let len: usize = len.parse().ok()?;
            let mut buf = vec![0u8; len + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(len);
            items.push(buf);
        } else {
            items.push(head.into_bytes());
        }
    }
    Some(items)
}

fn read_line(r: &mut impl std::io::BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
