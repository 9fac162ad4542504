//! ICE over TCP and ICE restart through the real server, over real
//! sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;
use common::call;

use pulsewave_client::{Client, ClientEvent, IceProtocol, RemoteTrack};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{ClientMessage, ServerMessage, TransportId};
use pulsewave_signal::{RunningServer, ServerConfig, WebSocketServer};

const KEY: &str = "icekey";
const SECRET: &str = "icesecret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

async fn server() -> RunningServer {
    WebSocketServer::new(ServerConfig::dev(0, KEY, SECRET))
        .start()
        .await
        .unwrap()
}

fn token(identity: &str, room: &str) -> String {
    common::token(KEY, SECRET, identity, room)
}

async fn joined(s: &RunningServer, identity: &str, room: &str, proto: IceProtocol) -> Client {
    let mut c = Client::builder()
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
async fn transports_offer_a_passive_tcp_candidate_below_udp() {
    let s = server().await;
    let c = joined(&s, "carol", "ice-cands", IceProtocol::Udp).await;
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
    let udp = transport
        .ice_candidates
        .iter()
        .find(|c| c.protocol == "udp")
        .expect("a UDP candidate");
    let tcp = transport
        .ice_candidates
        .iter()
        .find(|c| c.protocol == "tcp")
        .expect("a TCP candidate");
    assert_eq!(tcp.tcp_type.as_deref(), Some("passive"));
    assert_eq!(udp.tcp_type, None);
    assert!(tcp.priority < udp.priority, "UDP is preferred");
    let worker = &s.workers().unwrap().workers()[0];
    assert_eq!(
        Some(tcp.port),
        worker.announced_tcp_addr().map(|a| a.port())
    );
    // The JSON is what mediasoup-client reads.
    let json = serde_json::to_value(tcp).unwrap();
    assert_eq!(json["tcpType"], "passive");
    assert!(serde_json::to_value(udp).unwrap().get("tcpType").is_none());
}

#[tokio::test]
async fn media_flows_over_ice_tcp_only() {
    let s = server().await;
    let alice = joined(&s, "alice", "ice-tcp", IceProtocol::Tcp).await;
    let mut bob = joined(&s, "bob", "ice-tcp", IceProtocol::Tcp).await;
    let (track, sender, _) = call(&alice, &bob).await;
    let got = receive(&mut bob, &track, 60).await;
    assert!(got >= 60, "video packets over TCP: {got}");
    let stats = s.workers().unwrap().workers()[0].stats();
    assert_eq!(
        stats.tcp_connections.load(Ordering::Relaxed),
        2,
        "one TCP connection per transport"
    );
    assert_eq!(stats.tcp_overflows.load(Ordering::Relaxed), 0);
    sender.abort();
}

#[tokio::test]
async fn garbage_on_the_tcp_port_is_dropped_and_the_worker_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server().await;
    let tcp = s.workers().unwrap().workers()[0].tcp_addr().unwrap();
    // A frame that is not STUN: the connection is closed.
    let mut junk = tokio::net::TcpStream::connect(tcp).await.unwrap();
    junk.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, junk.read(&mut buf))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // Media over TCP still works.
    let alice = joined(&s, "alice", "ice-junk", IceProtocol::Tcp).await;
    let mut bob = joined(&s, "bob", "ice-junk", IceProtocol::Udp).await;
    let (track, sender, _) = call(&alice, &bob).await;
    assert!(receive(&mut bob, &track, 30).await >= 30);
    sender.abort();
}

#[tokio::test]
async fn media_flows_again_after_an_ice_restart_with_the_same_ids() {
    for proto in [IceProtocol::Udp, IceProtocol::Tcp] {
        let s = server().await;
        let alice = joined(&s, "alice", "ice-restart", proto).await;
        let mut bob = joined(&s, "bob", "ice-restart", proto).await;
        let (track, sender, producer) = call(&alice, &bob).await;
        assert!(receive(&mut bob, &track, 30).await >= 30);
        let recv: TransportId = bob.recv_transport_id().await.unwrap();
        let send: TransportId = alice.send_transport_id().await.unwrap();

        let p1 = bob.restart_ice(TransportDirection::Recv).await.unwrap();
        let p2 = alice.restart_ice(TransportDirection::Send).await.unwrap();
        assert_ne!(p1.username_fragment, p2.username_fragment);
        // Drain what was received before; new packets come after the
        // restart, on the same consumer and transports.
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(1), bob.next_event()).await
        {}
        let got = receive(&mut bob, &track, 60).await;
        assert!(got >= 60, "{proto:?}: video after the restart: {got}");
        assert_eq!(bob.recv_transport_id().await, Some(recv));
        assert_eq!(alice.send_transport_id().await, Some(send));
        if proto == IceProtocol::Tcp {
            // Each restart opened a new connection; the old ones are gone.
            let stats = s.workers().unwrap().workers()[0].stats();
            let deadline = tokio::time::Instant::now() + WAIT;
            while stats.tcp_connections.load(Ordering::Relaxed) != 2 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} TCP connections",
                    stats.tcp_connections.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let again = bob.subscribe(&producer).await;
        assert!(again.is_ok(), "the producer is still there: {again:?}");
        // Another participant's transport cannot be restarted.
        let err = bob
            .request(ClientMessage::RestartIce {
                transport_id: alice.send_transport_id().await.unwrap(),
            })
            .await;
        assert!(
            matches!(
                err,
                Err(pulsewave_client::ClientError::Server {
                    code: pulsewave_protocol::ErrorCode::TransportNotFound,
                    ..
                })
            ),
            "{err:?}"
        );
        sender.abort();
    }
}

#[tokio::test]
async fn a_transport_that_loses_its_connection_restarts_ice_by_itself() {
    let s = server().await;
    let alice = joined(&s, "alice", "ice-auto", IceProtocol::Udp).await;
    let mut bob = joined(&s, "bob", "ice-auto", IceProtocol::Udp).await;
    let (track, sender, _) = call(&alice, &bob).await;
    assert!(receive(&mut bob, &track, 30).await >= 30);
    let recv = bob.recv_transport_id().await.unwrap();
    // The server restarts ICE behind the client's back (a raw request the
    // client does not act on): its checks with the old credentials are
    // refused from now on, so its transport goes disconnected, and the
    // client must restart ICE by itself.
    let reply = bob
        .request(ClientMessage::RestartIce {
            transport_id: recv.clone(),
        })
        .await
        .unwrap();
    assert!(
        matches!(reply, ServerMessage::IceRestarted { .. }),
        "{reply:?}"
    );
    let lost = bob
        .wait_for(Duration::from_secs(30), |e| match e {
            ClientEvent::TransportDisconnected { transport_id, .. } => Some(transport_id.clone()),
            _ => None,
        })
        .await
        .expect("the transport goes disconnected");
    assert_eq!(lost, recv);
    let back = bob
        .wait_for(Duration::from_secs(30), |e| match e {
            ClientEvent::TransportConnected { transport_id, .. } => Some(transport_id.clone()),
            _ => None,
        })
        .await
        .expect("the transport connects again by itself");
    assert_eq!(back, recv);
    assert!(
        receive(&mut bob, &track, 30).await >= 30,
        "media flows again"
    );
    assert_eq!(bob.recv_transport_id().await, Some(recv));
    sender.abort();
}

/// `ice-restarted` carries fresh `iceServers` (the embedded TURN server's
/// credentials are short-lived), with the same servers as
/// `transport-created`; the client keeps the latest.
#[tokio::test]
async fn an_ice_restart_brings_fresh_ice_servers() {
    use pulsewave_protocol::transport::{IceServer, IceUrls};
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    let issued = Arc::new(AtomicU64::new(0));
    let counter = issued.clone();
    let mut config = ServerConfig::dev(0, KEY, SECRET);
    config.ice_servers = vec![IceServer {
        urls: IceUrls::One("stun:stun.example.com:3478".into()),
        username: None,
        credential: None,
    }];
    // Each call issues new credentials, as the embedded TURN server's do
    // as time passes.
    config.participant_ice_servers = Some(pulsewave_signal::ParticipantIceServers::new(
        move |identity| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            vec![IceServer {
                urls: IceUrls::Many(vec!["turn:127.0.0.1:3478?transport=udp".into()]),
                username: Some(format!("{n}:{identity}")),
                credential: Some(format!("secret-{n}")),
            }]
        },
    ));
    let s = WebSocketServer::new(config).start().await.unwrap();
    let alice = joined(&s, "alice", "ice-servers", IceProtocol::Udp).await;
    let mut video = alice.publish_video("video/VP8").await.unwrap();
    let created = alice.ice_servers();
    assert_eq!(created.len(), 2, "{created:?}");
    let send = alice.send_transport_id().await.unwrap();
    let reply = alice
        .request(ClientMessage::RestartIce {
            transport_id: send.clone(),
        })
        .await
        .unwrap();
    let ServerMessage::IceRestarted {
        transport_id,
        ice_servers,
        ..
    } = reply
    else {
        panic!("{reply:?}");
    };
    assert_eq!(transport_id, send);
    assert_eq!(ice_servers.len(), 2, "{ice_servers:?}");
    assert_eq!(ice_servers[0], created[0], "ICE_SERVERS as they are");
    assert_eq!(ice_servers[1].urls, created[1].urls, "the same TURN server");
    assert_ne!(
        ice_servers[1].username, created[1].username,
        "with fresh credentials"
    );
    assert!(
        ice_servers[1]
            .username
            .as_deref()
            .is_some_and(|u| u.ends_with(":alice"))
    );
    // The client's own restart keeps what the reply brought.
    alice.restart_ice(TransportDirection::Send).await.unwrap();
    let latest = alice.ice_servers();
    assert_eq!(latest.len(), 2);
    let n = issued.load(Ordering::Relaxed);
    assert_eq!(latest[1].username, Some(format!("{n}:alice")));
    // Media still flows on the restarted transport.
    let mut bob = joined(&s, "bob", "ice-servers", IceProtocol::Udp).await;
    let track = bob.subscribe(video.producer_id()).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut source = video.synthetic_source();
        loop {
            for p in source.tick().await {
                let _ = video.send_synthetic(&p).await;
            }
        }
    });
    assert!(receive(&mut bob, &track, 30).await >= 30);
    sender.abort();
}
