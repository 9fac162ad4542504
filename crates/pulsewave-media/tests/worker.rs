//! The media driver over real UDP on 127.0.0.1: two rooms on one worker
//! socket, each subscriber receiving its own room's media.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use pulsewave_client::{LocalTrack, PeerEvent, PeerTransport};
use pulsewave_core::Owner;
use pulsewave_media::{MediaConfig, MediaRoom, WorkerPool};
use pulsewave_protocol::MediaKind;
use pulsewave_protocol::transport::TransportDirection;
use tokio::net::UdpSocket;

struct Peer {
    socket: UdpSocket,
    transport: PeerTransport,
}

async fn peer(
    room: &MediaRoom,
    pool: &WorkerPool,
    owner: Owner,
    direction: TransportDirection,
) -> Peer {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let options = room.create_transport(owner, direction).await.unwrap();
    let transport = PeerTransport::new(
        Instant::now(),
        direction,
        socket.local_addr().unwrap(),
        &options,
        pool.rtp_capabilities(),
    )
    .unwrap();
    room.connect_transport(owner, options.id.clone(), transport.dtls_parameters())
        .await
        .unwrap();
    Peer { socket, transport }
}

/// Moves one peer's datagrams and timers; returns RTP payloads received.
async fn pump(p: &mut Peer, out: &mut Vec<Vec<u8>>) {
    let mut buf = vec![0u8; 2048];
    let now = Instant::now();
    while let Ok((n, from)) = p.socket.try_recv_from(&mut buf) {
        let _ = p.transport.handle_receive(now, from, &buf[..n]);
    }
    if p.transport.poll_timeout().is_some_and(|t| t <= now) {
        p.transport.handle_timeout(now);
    }
    while let Some(t) = p.transport.poll_transmit() {
        let _ = p.socket.send_to(&t.contents, t.destination).await;
    }
    while let Some(e) = p.transport.poll_event() {
        if let PeerEvent::RtpPacket { payload, .. } = e {
            out.push(payload.to_vec());
        }
    }
}

struct Call {
    room: MediaRoom,
    publisher: Peer,
    subscriber: Peer,
    track: LocalTrack,
    tag: &'static str,
    received: Vec<Vec<u8>>,
}

async fn call(pool: &WorkerPool, tag: &'static str) -> Call {
    let (room, _events) = pool.open_room().await.unwrap();
    let alice = Owner::new(1);
    let bob = Owner::new(2);
    let mut publisher = peer(&room, pool, alice, TransportDirection::Send).await;
    let mut subscriber = peer(&room, pool, bob, TransportDirection::Recv).await;
    let track = publisher
        .transport
        .add_track(MediaKind::Audio, "audio/opus", false)
        .unwrap();
    let produced = room
        .produce(
            alice,
            None,
            MediaKind::Audio,
            track.rtp_parameters.clone(),
            false,
            pulsewave_core::AppData::default(),
        )
        .await
        .unwrap();
    let consumed = room
        .consume(
            bob,
            None,
            produced.producer_id,
            pool.rtp_capabilities().clone(),
        )
        .await
        .unwrap();
    subscriber
        .transport
        .add_consumer(
            consumed.consumer_id.clone(),
            MediaKind::Audio,
            &consumed.rtp_parameters,
        )
        .unwrap();
    room.resume_consumer(bob, consumed.consumer_id)
        .await
        .unwrap();
    Call {
        room,
        publisher,
        subscriber,
        track,
        tag,
        received: Vec::new(),
    }
}

#[tokio::test]
async fn two_rooms_on_one_worker_socket_each_get_their_own_media() {
    let pool = WorkerPool::start(&MediaConfig::loopback()).unwrap();
    assert_eq!(pool.workers().len(), 1);
    let mut calls = vec![call(&pool, "red").await, call(&pool, "blue").await];
    assert_eq!(calls[0].room.worker(), calls[1].room.worker());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0u64;
    let mut next = Instant::now();
    while calls.iter().any(|c| c.received.len() < 50) {
        assert!(
            Instant::now() < deadline,
            "media did not flow in both rooms"
        );
        for c in &mut calls {
            let mut ignored = Vec::new();
            pump(&mut c.publisher, &mut ignored).await;
            pump(&mut c.subscriber, &mut c.received).await;
        }
        if Instant::now() >= next {
            seq += 1;
            for c in &mut calls {
                if c.publisher.transport.is_connected() {
                    let payload = format!("{} {seq}", c.tag).into_bytes();
                    let _ = c.publisher.transport.write_rtp(
                        &c.track.mid,
                        seq,
                        (seq * 960) as u32,
                        false,
                        payload,
                        Instant::now(),
                    );
                }
            }
            next = Instant::now() + Duration::from_millis(20);
        }
        // Paces this loop, which both drives the transports and sends a
        // packet every 20 ms (a media source, not a wait before an
        // assertion); the loop ends on the packets counted, bounded above.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for c in &calls {
        assert!(
            c.received.iter().all(|p| p.starts_with(c.tag.as_bytes())),
            "{} received another room's media",
            c.tag
        );
        let stats = c.room.stats().await.unwrap();
        assert!(stats.rtp_forwarded >= 50, "{stats:?}");
    }
    pool.stop();
}
