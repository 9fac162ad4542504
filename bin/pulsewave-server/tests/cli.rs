//! The binary as a user runs it: `--dev`, `token`, bad configuration, signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pulsewave-server");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command with a clean environment (no inherited PulseWave variables) in an
/// empty directory (no `.env`).
fn cmd() -> Command {
    let dir = std::env::temp_dir().join(format!("pw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    c
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_ready(port: u16) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if http_get(port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return;
        }
        // Poll interval of a bounded wait for /healthz (a child process announces nothing).
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on port {port} never became ready");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("process did not exit within {within:?}");
        }
        // Poll interval of a bounded wait for the process to exit.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dev_mode_starts_with_no_configuration_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = cmd()
        .args(["--dev", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port);
    // The dev key and secret are printed at start-up.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    for _ in 0..3 {
        stdout.read_line(&mut banner).unwrap();
    }
    assert!(banner.contains("devkey"), "{banner}");
    assert!(banner.contains("secret"), "{banner}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        http_get(port, "/healthz").is_none(),
        "still listening after exit"
    );
}

#[test]
fn token_subcommand_prints_a_verifiable_jwt() {
    let out = cmd()
        .args([
            "token",
            "--dev",
            "--identity",
            "u1",
            "--room",
            "r1",
            "--name",
            "User One",
            "--metadata",
            r#"{"role":"host"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap();
    let claims = pulsewave_auth::TokenVerifier::new("devkey", "secret")
        .verify(jwt.trim())
        .unwrap();
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.name, "User One");
    assert_eq!(claims.video.room.as_deref(), Some("r1"));
    assert!(claims.video.room_join);
    assert_eq!(claims.metadata, r#"{"role":"host"}"#);
    // 24 h by default (JWT_EXPIRES_IN).
    assert_eq!(claims.exp - claims.nbf, 24 * 3600);

    // With real keys from the environment and a custom lifetime.
    let out = cmd()
        .env("API_KEY", "prodkey")
        .env("API_SECRET", "a-long-production-secret")
        .env("JWT_EXPIRES_IN", "2h")
        .args(["token", "--identity", "u2", "--room", "r2", "--no-publish"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims = pulsewave_auth::TokenVerifier::new("prodkey", "a-long-production-secret")
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(claims.exp - claims.nbf, 2 * 3600);
    assert!(!claims.video.can_publish());
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_variable() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (&[], &[], "API_KEY"),
        (
            &[("API_KEY", "k"), ("API_SECRET", "0123456789abcdef")],
            &["--port", "99999"],
            "PORT",
        ),
        (&[("PORT", "x")], &["--dev"], "PORT"),
        (&[("ICE_SERVERS", "not json")], &["--dev"], "ICE_SERVERS"),
        (
            &[("JWT_EXPIRES_IN", "whenever")],
            &["--dev"],
            "JWT_EXPIRES_IN",
        ),
        (
            &[
                ("MEDIASOUP_MIN_PORT", "50000"),
                ("MEDIASOUP_MAX_PORT", "40000"),
            ],
            &["--dev"],
            "MEDIASOUP_MAX_PORT",
        ),
        (&[("REDIS_ENABLED", "perhaps")], &["--dev"], "REDIS_ENABLED"),
    ];
    for (env, args, var) in cases {
        let mut c = cmd();
        for (k, v) in *env {
            c.env(k, v);
        }
        let out = c.args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "stderr should name {var}: {err}");
    }
}

#[test]
fn env_file_is_read() {
    let dir = std::env::temp_dir().join(format!("pw-envfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("custom.env");
    std::fs::write(
        &path,
        "API_KEY=filekey\nAPI_SECRET=file-secret-0123456789\n",
    )
    .unwrap();
    let out = cmd()
        .args([
            "token",
            "--env-file",
            path.to_str().unwrap(),
            "--identity",
            "u",
            "--room",
            "r",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap();
    assert!(
        pulsewave_auth::TokenVerifier::new("filekey", "file-secret-0123456789")
            .verify(jwt.trim())
            .is_ok()
    );
}
