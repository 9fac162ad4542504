//! Dual stack through the real server over real sockets: a server with an
//! IPv6 listen address beside its IPv4 one offers IPv6 host candidates
//! beside the IPv4 ones, and clients on `::1` (UDP and ICE-TCP) exchange
//! media with a client on 127.0.0.1 in one room.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use pulsewave_client::{Client, IceProtocol, RemoteTrack};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{ClientMessage, ServerMessage};
use pulsewave_signal::media::MediaConfig;
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};

const KEY: &str = "v6key";
const SECRET: &str = "v6secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A single-node server whose workers bind 127.0.0.1 and ::1.
async fn dual_stack_server() -> RunningServer {
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.media = Some(MediaConfig {
        num_workers: 1,
        listen_ip6: Some(Ipv6Addr::LOCALHOST),
        ..MediaConfig::loopback()
    });
    WebSocketServer::new(config).start().await.unwrap()
}

fn token(identity: &str, room: &str) -> String {
    common::token(KEY, SECRET, identity, room)
}

async fn joined(
    s: &RunningServer,
    identity: &str,
    room: &str,
    ip: IpAddr,
    proto: IceProtocol,
) -> Client {
    let mut c = Client::builder()
        .bind_ip(ip)
        .ice_protocol(proto)
        .connect(&format!("ws://{}", s.local_addr()), &token(identity, room))
        .await
        .unwrap();
    c.join(room).await.unwrap();
    c
}

async fn receive(c: &mut Client, track: &RemoteTrack, n: usize) -> usize {
    common::receive(c, track, n, WAIT).await
}

#[tokio::test]
async fn transports_offer_ipv6_candidates_beside_ipv4_ones() {
    let s = dual_stack_server().await;
    let worker = &s.workers().unwrap().workers()[0];
    let v6 = worker.announced_addr6().expect("an IPv6 UDP socket");
    let v6_tcp = worker.announced_tcp_addr6().expect("an IPv6 TCP listener");
    assert_eq!(v6.ip(), V6);
    assert_eq!(
        v6.port(),
        worker.announced_addr().port(),
        "same port number"
    );
    assert_eq!(
        Some(v6_tcp.port()),
        worker.announced_tcp_addr().map(|a| a.port())
    );
    let c = joined(&s, "carol", "v6-cands", V4, IceProtocol::Udp).await;
    let reply = c
        .request(ClientMessage::CreateTransport {
            direction: TransportDirection::Recv,
            rtp_capabilities: None,
            sctp_capabilities: None,
        })
        .await
        .unwrap();
    let ServerMessage::TransportCreated { transport, .. } = reply else {
        panic!("{reply:?}");
    };
    let addrs: Vec<(String, SocketAddr)> = transport
        .ice_candidates
        .iter()
        .map(|c| {
            (
                c.protocol.clone(),
                SocketAddr::new(c.ip.parse().unwrap(), c.port),
            )
        })
        .collect();
    assert_eq!(addrs.len(), 4, "UDP and TCP in each family: {addrs:?}");
    for (proto, addr) in [
        ("udp", worker.announced_addr()),
        ("tcp", worker.announced_tcp_addr().unwrap()),
        ("udp", v6),
        ("tcp", v6_tcp),
    ] {
        assert!(
            addrs.contains(&(proto.to_owned(), addr)),
            "{proto} {addr} in {addrs:?}"
        );
    }
    // Foundations differ per family, and UDP stays above TCP in both.
    let mut foundations: Vec<&str> = transport
        .ice_candidates
        .iter()
        .map(|c| c.foundation.as_str())
        .collect();
    foundations.sort_unstable();
    foundations.dedup();
    assert_eq!(foundations.len(), 4);
    let prio = |proto: &str, v6: bool| {
        transport
            .ice_candidates
            .iter()
            .find(|c| c.protocol == proto && c.ip.contains(':') == v6)
            .unwrap()
            .priority
    };
    for v6 in [false, true] {
        assert!(prio("udp", v6) > prio("tcp", v6));
    }
}

#[tokio::test]
async fn media_flows_between_ipv6_and_ipv4_clients() {
    let s = dual_stack_server().await;
    // Alice publishes over IPv6 UDP; Bob subscribes over IPv6 ICE-TCP,
    // Carol over IPv4 UDP.
    let alice = joined(&s, "alice", "v6-call", V6, IceProtocol::Udp).await;
    let mut bob = joined(&s, "bob", "v6-call", V6, IceProtocol::Tcp).await;
    let mut carol = joined(&s, "carol", "v6-call", V4, IceProtocol::Udp).await;
    let mut video = alice.publish_video("video/VP8").await.unwrap();
    let producer = video.producer_id().clone();
    let bob_track = bob.subscribe(&producer).await.unwrap();
    let carol_track = carol.subscribe(&producer).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut source = video.synthetic_source();
        loop {
            for p in source.tick().await {
                let _ = video.send_synthetic(&p).await;
            }
        }
    });
    let got = receive(&mut bob, &bob_track, 60).await;
    assert!(got >= 60, "video over IPv6 (UDP in, TCP out): {got}");
    let got = receive(&mut carol, &carol_track, 60).await;
    assert!(got >= 60, "video from IPv6 to IPv4: {got}");
    // Carol publishes over IPv4; Bob (IPv6 TCP) receives it.
    let mut audio = carol.publish_audio().await.unwrap();
    let audio_producer = audio.producer_id().clone();
    let bob_audio = bob.subscribe(&audio_producer).await.unwrap();
    let audio_sender = tokio::spawn(async move {
        let mut source = audio.synthetic_source();
        loop {
            for p in source.tick().await {
                let _ = audio.send_synthetic(&p).await;
            }
        }
    });
    let got = receive(&mut bob, &bob_audio, 40).await;
    assert!(got >= 40, "audio from IPv4 to IPv6: {got}");
    // The IPv6 TCP connection is the worker's only one.
    let stats = s.workers().unwrap().workers()[0].stats();
    assert_eq!(stats.tcp_connections.load(Ordering::Relaxed), 1);
    sender.abort();
    audio_sender.abort();
}
