//! A media worker kept busy by a flood of garbage on its UDP socket still
//! serves its other sources (here ICE-TCP) and still refreshes the counters
//! the metrics read. With the worker loop's `select!` biased toward its
//! UDP socket (as it was), the ICE-TCP transport never connected under this
//! flood. Its own test binary: the flood takes the machine's cores, which
//! would slow the tests of another file running beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use pulsewave_client::{Client, IceProtocol};
use pulsewave_signal::{ServerConfig, WebSocketServer};

const KEY: &str = "floodkey";
const SECRET: &str = "floodsecret-0123456789";
const WAIT: Duration = Duration::from_secs(20);
/// The flood stops by itself after this long, whatever the test does.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);

/// Sends garbage datagrams (first byte 0xff: neither STUN, DTLS nor RTP)
/// to `to` from [`FLOOD_THREADS`] threads, in `sendmmsg(2)` batches, as
/// fast as they can (faster than one worker reads them one by one), until
/// dropped or [`FLOOD_LIMIT`] passed; counts them.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Threads sending the flood.
const FLOOD_THREADS: usize = 4;
/// Datagrams per `sendmmsg` call.
const FLOOD_BATCH: usize = 64;

impl Flood {
    fn start(to: SocketAddr) -> Self {
        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..FLOOD_THREADS)
            .map(|_| {
                let (stop, sent) = (stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    let junk = [0xffu8; 200];
                    let slices = [[IoSlice::new(&junk)]; FLOOD_BATCH];
                    let addrs = [Some(SockaddrStorage::from(to)); FLOOD_BATCH];
                    let mut headers =
                        MultiHeaders::<SockaddrStorage>::preallocate(FLOOD_BATCH, None);
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_LIMIT {
                        if let Ok(r) = sendmmsg(
                            socket.as_raw_fd(),
                            &mut headers,
                            slices.iter(),
                            addrs,
                            [],
                            MsgFlags::empty(),
                        ) {
                            sent.fetch_add(r.count() as u64, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            threads,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn joined(url: &str, identity: &str, room: &str) -> Client {
    let mut c = Client::builder()
        .ice_protocol(IceProtocol::Tcp)
        .connect(url, &common::token(KEY, SECRET, identity, room))
        .await
        .unwrap();
    c.join(room).await.unwrap();
    c
}

#[tokio::test]
async fn a_worker_flooded_over_udp_still_serves_ice_tcp_and_its_metrics() {
    let s = WebSocketServer::new(ServerConfig::dev(0, KEY, SECRET))
        .start()
        .await
        .unwrap();
    let url = format!("ws://{}", s.local_addr());
    let worker = &s.workers().unwrap().workers()[0];
    let stats = worker.stats();
    let flood = Flood::start(worker.local_addr());
    // The flood reaches the worker before anyone joins.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.datagrams_dropped.load(Ordering::Relaxed) < 10_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two participants over ICE-TCP only: their packets wait beside a UDP
    // socket that always has a datagram ready.
    let alice = joined(&url, "alice", "flood").await;
    let mut bob = joined(&url, "bob", "flood").await;
    let (track, sender, _) = common::call(&alice, &bob).await;
    let got = common::receive(&mut bob, &track, 60, WAIT).await;
    assert!(
        got >= 60,
        "video over ICE-TCP during the flood: {got} packets"
    );

    // What was forwarded shows in the counters while the flood goes on
    // (they are refreshed on the worker's clock, not when it is idle).
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.rtp_forwarded.load(Ordering::Relaxed) < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rtp_forwarded stuck at {} during the flood",
            stats.rtp_forwarded.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = flood.sent.load(Ordering::Relaxed);
    let dropped = stats.datagrams_dropped.load(Ordering::Relaxed);
    assert!(
        flood.threads.iter().all(|t| !t.is_finished()),
        "the flood lasted the whole test"
    );
    eprintln!("flood: {sent} datagrams sent, {dropped} dropped by the worker");
    drop(flood);
    sender.abort();
}
