//! The check, shortened: a `--dev` server (in this process), the
//! load tester binary with 1 room x (2 publishers + 3 subscribers) for 3 s,
//! and its `--json` report: every expected track received, loss under 1%,
//! and the figures the report promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use pulsewave_signal::{ServerConfig, WebSocketServer};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_binary_against_a_dev_server() {
    // This test checks the load tester's report against plain forwarding
    // (2 x 1 Mbit/s to each subscriber, loss under 1%). With debug builds
    // of server and tester on a loaded 2-core machine, scheduling delays
    // look like queueing to the delay-based estimator (measured: estimates
    // on loopback fall from 4 to 1.2-1.8 Mbit/s) and the allocator rightly
    // pauses a camera; adaptive media is tested on the simulated network
    // (crates/pulsewave-test/tests/room/bandwidth.rs).
    let server = dev_server(false).await;
    let url = format!("ws://{}", server.local_addr());
    let pid = std::process::id().to_string();
    let run = loadtest(&[
        "--url",
        &url,
        "--rooms",
        "1",
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--duration",
        "3s",
        "--json",
        "--max-loss",
        "1",
        "--metrics",
        "--server-pid",
        &pid,
    ])
    .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the load test ends by itself")
        .unwrap();
    let report = report_of(&out);
    let show = || serde_json::to_string_pretty(&report).unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, show());
    assert_eq!(report["passed"], true, "{}", show());

    // Every expected track: 2 publishers x (video + audio) x 3 subscribers.
    assert_eq!(report["participants"]["ready"], 5, "{}", show());
    assert_eq!(report["tracks"]["published"], 4, "{}", show());
    assert_eq!(report["tracks"]["expected_subscriptions"], 12);
    assert_eq!(report["tracks"]["received"], 12, "{}", show());
    assert_eq!(report["tracks"]["missing"], 0);
    assert_eq!(report["errors"], 0, "{}", show());

    let packets = &report["packets"];
    assert!(
        packets["loss_percent"].as_f64().unwrap() < 1.0,
        "{}",
        show()
    );
    assert!(packets["expected"].as_u64().unwrap() > 1000, "{}", show());
    assert!(packets["video_received"].as_u64().unwrap() > 0);
    assert!(packets["audio_received"].as_u64().unwrap() > 0);
    assert_eq!(packets["damaged"], 0);

    // Bitrate expected vs received: 3 subscribers x 2 x (1 Mbit/s + audio).
    let w = &report["window"];
    let expected = w["bitrate_expected_bps"].as_f64().unwrap();
    let received = w["bitrate_received_bps"].as_f64().unwrap();
    assert!(expected > 5.0e6, "{}", show());
    assert!(received > expected * 0.9, "{}", show());

    for key in ["latency_ms", "join_ms", "ready_ms", "first_packet_ms"] {
        let s = &report[key];
        for q in ["p50", "p99", "max"] {
            assert!(s[q].as_f64().is_some(), "{key}.{q}: {}", show());
        }
    }
    assert!(report["latency_ms"]["count"].as_u64().unwrap() > 1000);
    assert!(report["join_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(report["pacing"]["frames"].as_u64().unwrap() > 0);
    assert!(report["pacing"]["fell_behind"].is_boolean());

    // The server's figures: /proc of this process and its /metrics.
    let s = &report["server"];
    assert_eq!(s["forwarded_source"], "metrics", "{}", show());
    assert!(s["rtp_forwarded"].as_u64().unwrap() > 1000, "{}", show());
    assert!(s["cpu_seconds"].as_f64().is_some());
    assert!(
        s["cpu_us_per_forwarded_packet"].as_f64().is_some(),
        "{}",
        show()
    );
    assert!(s["peak_rss_bytes"].as_u64().unwrap() > 0);

    server.shutdown(Duration::from_secs(5)).await;
}

/// `--transport tcp`: every participant uses only the server's passive TCP
/// candidate (RFC 4571 framing); every track arrives intact and the server
/// counted TCP media connections while the run lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_over_ice_tcp() {
    // As above: plain forwarding, not the estimator, is checked here.
    let server = dev_server(false).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}");
    let run = loadtest(&[
        "--url",
        &url,
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--duration",
        "3s",
        "--transport",
        "tcp",
        "--json",
        "--max-loss",
        "1",
    ])
    .spawn()
    .unwrap();
    // While it runs, the server's TCP media connections show in /metrics.
    let mut most_tcp = 0u64;
    let output = run.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let out = loop {
        tokio::select! {
            out = &mut output => break out.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                assert!(tokio::time::Instant::now() < deadline, "the load test ends by itself");
                let text = pulsewave_loadtest::http_get(&format!("http://{addr}/metrics"), None)
                    .await
                    .unwrap();
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("pulsewave_media_tcp_connections "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0) as u64;
                most_tcp = most_tcp.max(n);
            }
        }
    };
    let report = report_of(&out);
    let show = || serde_json::to_string_pretty(&report).unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, show());
    assert_eq!(report["passed"], true, "{}", show());
    assert_eq!(report["tracks"]["expected_subscriptions"], 4, "{}", show());
    assert_eq!(report["tracks"]["received"], 4, "{}", show());
    assert!(
        report["packets"]["loss_percent"].as_f64().unwrap() < 1.0,
        "{}",
        show()
    );
    assert_eq!(report["packets"]["damaged"], 0, "{}", show());
    // A send transport for the publisher, a receive transport for each
    // subscriber (and for the publisher if it subscribes): at least three.
    assert!(
        most_tcp >= 3,
        "at most {most_tcp} TCP media connections seen"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn bad_arguments_exit_with_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pulsewave-loadtest"))
        .args(["--url", "http://127.0.0.1:1", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws://"));
}

/// `--subscriber-bitrate-cap`: subscribers behind 600 kbit/s cannot take
/// a 1 Mbit/s camera; the server's allocator pauses it for congestion (the
/// report says so) and the audio keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_subscriber_gets_its_video_paused_and_keeps_the_audio() {
    let server = dev_server(true).await;
    let url = format!("ws://{}", server.local_addr());
    let run = loadtest(&[
        "--url",
        &url,
        "--rooms",
        "1",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--duration",
        "4s",
        "--subscriber-bitrate-cap",
        "600kbps",
        "--max-loss",
        "100",
        "--json",
    ])
    .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the load test ends by itself")
        .unwrap();
    let report = report_of(&out);
    let show = || serde_json::to_string_pretty(&report).unwrap();
    assert!(out.status.success(), "{}", show());
    assert_eq!(report["config"]["subscriber_bitrate_cap_bps"], 600_000);
    let a = &report["adaptive"];
    assert!(
        a["congestion_pauses"].as_u64().unwrap() >= 2,
        "each subscriber's camera is paused for congestion: {}",
        show()
    );
    assert_eq!(a["final_layers"]["none"], 2, "{}", show());
    assert!(
        report["packets"]["audio_received"].as_u64().unwrap() > 200,
        "the audio keeps flowing: {}",
        show()
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// A `--dev` server in this process; without the bandwidth estimator when
/// `estimator` is false (plain forwarding: see the first test).
async fn dev_server(estimator: bool) -> pulsewave_signal::RunningServer {
    let mut config = ServerConfig::dev(0, "devkey", "secret");
    if let Some(media) = config.media.as_mut() {
        media.room.bandwidth_estimation = estimator;
    }
    WebSocketServer::new(config).start().await.unwrap()
}

/// The load tester binary with `args`, its output captured, killed if
/// the test drops it.
fn loadtest(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsewave-loadtest"));
    c.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// The `--json` report on stdout (a panic with both outputs if it is not).
fn report_of(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "JSON report: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
