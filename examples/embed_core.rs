//! Embedding `pulsewave-core` in another Rust service: one room driven over
//! the service's own UDP socket, with its own loop and clock — no tokio, no
//! PulseWave server.
//!
//! The "service" here is this `main`: it owns a `std::net::UdpSocket`, a
//! `Room`, and two in-process WebRTC peers (a publisher and a subscriber,
//! from `pulsewave-client`'s sans-IO `PeerTransport`, each on its own UDP
//! socket) standing in for browsers. Signaling is plain function calls.
//!
//! ```bash
//! cargo run -p pulsewave-examples --example embed_core
//! ```

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pulsewave_client::{PeerEvent, PeerTransport};
use pulsewave_core::{Room, RoomConfig};
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::{MediaKind, ParticipantSid};

type Error = Box<dyn std::error::Error>;

/// A socket plus the peer that owns it.
struct Peer {
    socket: UdpSocket,
    transport: PeerTransport,
}

fn bind() -> Result<UdpSocket, Error> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn main() -> Result<(), Error> {
    // 1. The service's socket and the room on it.
    let room_socket = bind()?;
    let room_addr = room_socket.local_addr()?;
    let start = Instant::now();
    let mut room = Room::new(
        RoomConfig {
            local_addr: room_addr,
            ..RoomConfig::default()
        },
        start,
    );
    let caps = room.rtp_capabilities().clone();
    println!("room listening on udp://{room_addr}");

    // 2. "Signaling": create transports for two participants and connect
    //    them, exactly what the WebSocket handlers do.
    let alice: ParticipantSid = "PA_alice".into();
    let bob: ParticipantSid = "PA_bob".into();
    let mut peer = |who: &ParticipantSid, direction| -> Result<Peer, Error> {
        let socket = bind()?;
        let options = room.create_transport(Instant::now(), who, direction)?;
        let transport = PeerTransport::new(
            Instant::now(),
            direction,
            socket.local_addr()?,
            &options,
            &caps,
        )?;
        room.connect_transport(
            Instant::now(),
            who,
            &options.id,
            &transport.dtls_parameters(),
        )?;
        Ok(Peer { socket, transport })
    };
    let mut publisher = peer(&alice, TransportDirection::Send)?;
    let mut subscriber = peer(&bob, TransportDirection::Recv)?;

    // 3. Alice publishes opus; Bob subscribes and resumes.
    let track = publisher
        .transport
        .add_track(MediaKind::Audio, "audio/opus", false)?;
    let produced = room.produce(
        Instant::now(),
        &alice,
        None,
        MediaKind::Audio,
        track.rtp_parameters.clone(),
        false,
    )?;
    let consumed = room.consume(Instant::now(), &bob, None, &produced.producer_id, &caps)?;
    subscriber.transport.add_consumer(
        consumed.consumer_id.clone(),
        MediaKind::Audio,
        &consumed.rtp_parameters,
    )?;
    room.resume_consumer(Instant::now(), &bob, &consumed.consumer_id)?;
    println!(
        "alice publishes {} ({}), bob consumes it as {}",
        produced.producer_id, produced.mime_type, consumed.consumer_id
    );

    // 4. The service's event loop: read datagrams, run timers, send what
    //    the room and the peers transmit. Bounded: three seconds.
    let mut buf = vec![0u8; 2048];
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut next_packet = Instant::now();
    let deadline = start + Duration::from_secs(3);
    while Instant::now() < deadline {
        let now = Instant::now();
        // The room's socket.
        loop {
            match room_socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    // Garbage and strangers are counted, never fatal.
                    let _ = room.handle_datagram(now, from, &buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The peers' sockets.
        for p in [&mut publisher, &mut subscriber] {
            loop {
                match p.socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = p.transport.handle_receive(now, from, &buf[..n]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Timers.
        if room.poll_timeout().is_some_and(|t| t <= now) {
            room.handle_timeout(now);
        }
        for p in [&mut publisher, &mut subscriber] {
            if p.transport.poll_timeout().is_some_and(|t| t <= now) {
                p.transport.handle_timeout(now);
            }
        }
        // Alice sends a 20 ms audio frame once connected.
        if publisher.transport.is_connected() && now >= next_packet {
            let payload = format!("frame {sent}").into_bytes();
            let rtp_time = (sent * 960) as u32;
            if publisher
                .transport
                .write_rtp(&track.mid, sent + 1, rtp_time, false, payload, now)
                .is_ok()
            {
                sent += 1;
            }
            next_packet = now + Duration::from_millis(20);
        }
        // Outputs: the run-loop rule — drain after every input.
        while let Some(t) = room.poll_transmit() {
            room_socket.send_to(&t.contents, t.destination)?;
        }
        while let Some(event) = room.poll_event() {
            println!("room event: {event:?}");
        }
        for p in [&mut publisher, &mut subscriber] {
            while let Some(t) = p.transport.poll_transmit() {
                p.socket.send_to(&t.contents, t.destination)?;
            }
        }
        while let Some(event) = subscriber.transport.poll_event() {
            if let PeerEvent::RtpPacket { payload, .. } = event {
                received += 1;
                if received == 1 {
                    println!("bob received: {:?}", String::from_utf8_lossy(&payload));
                }
            }
        }
        while publisher.transport.poll_event().is_some() {}
        // Sleep until something is due (at most 2 ms, to poll the sockets).
        let wake = [
            room.poll_timeout(),
            publisher.transport.poll_timeout(),
            subscriber.transport.poll_timeout(),
            Some(next_packet),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_millis(2));
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(2)),
        );
    }
    let stats = room.stats();
    println!(
        "alice sent {sent} packets; bob received {received}; room forwarded {} (dropped datagrams: {})",
        stats.rtp_forwarded, stats.datagrams_dropped
    );
    if received == 0 {
        return Err("no media arrived".into());
    }
    Ok(())
}
