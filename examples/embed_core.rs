//! Embedding `pulsewave-core` in another Rust service: many rooms on the
//! service's own UDP socket, through one `Endpoint`, with the service's own
//! loop and clock — no tokio, no PulseWave server.
//!
//! The "service" here is this `main`: it owns a `std::net::UdpSocket` and an
//! `Endpoint` with two rooms on it. In each room a publisher and a
//! subscriber (`pulsewave-client`'s sans-IO `PeerTransport`, each on its own
//! UDP socket) stand in for browsers. Signaling is plain function calls.
//! The endpoint routes every datagram to its room by ICE ufrag and address;
//! each subscriber gets its own room's audio only.
//!
//! ```bash
//! cargo run -p pulsewave-examples --example embed_core
//! ```

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pulsewave_client::{LocalTrack, PeerEvent, PeerTransport};
use pulsewave_core::Owner;
use pulsewave_core::{AppData, Datagram, Endpoint, EndpointConfig, Protocol, RoomConfig, RoomId};
use pulsewave_protocol::MediaKind;
use pulsewave_protocol::transport::TransportDirection;

type Error = Box<dyn std::error::Error>;

/// A socket plus the peer that owns it.
struct Peer {
    socket: UdpSocket,
    transport: PeerTransport,
}

/// One room's publisher, subscriber and counters.
struct Call {
    room: RoomId,
    publisher: Peer,
    subscriber: Peer,
    track: LocalTrack,
    sent: u64,
    received: u64,
    foreign: u64,
}

fn bind() -> Result<UdpSocket, Error> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Creates and connects a transport for `who` in `room`, and its peer.
fn peer(
    endpoint: &mut Endpoint,
    room: RoomId,
    who: Owner,
    direction: TransportDirection,
) -> Result<Peer, Error> {
    let socket = bind()?;
    let caps = endpoint.room_config().rtp_capabilities.clone();
    let options = endpoint.with_room(Instant::now(), room, |r, now| {
        r.create_transport(now, who, direction)
    })??;
    let transport = PeerTransport::new(
        Instant::now(),
        direction,
        socket.local_addr()?,
        &options,
        &caps,
    )?;
    let dtls = transport.dtls_parameters();
    endpoint.with_room(Instant::now(), room, |r, now| {
        r.connect_transport(now, who, &options.id, &dtls)
    })??;
    Ok(Peer { socket, transport })
}

/// A room with Alice publishing audio and Bob subscribed to it.
fn call(endpoint: &mut Endpoint, name: &str) -> Result<Call, Error> {
    let room = endpoint.open_room(Instant::now());
    let caps = endpoint.room_config().rtp_capabilities.clone();
    // Owners are the embedder's own keys; here, 1 and 2 in each room.
    let (alice, bob) = (Owner::new(1), Owner::new(2));
    let mut publisher = peer(endpoint, room, alice, TransportDirection::Send)?;
    let mut subscriber = peer(endpoint, room, bob, TransportDirection::Recv)?;
    let track = publisher
        .transport
        .add_track(MediaKind::Audio, "audio/opus", false)?;
    let params = track.rtp_parameters.clone();
    let produced = endpoint.with_room(Instant::now(), room, |r, now| {
        r.produce(
            now,
            alice,
            None,
            MediaKind::Audio,
            params,
            false,
            AppData::default(),
        )
    })??;
    let consumed = endpoint.with_room(Instant::now(), room, |r, now| {
        r.consume(now, bob, None, &produced.producer_id, &caps)
    })??;
    subscriber.transport.add_consumer(
        consumed.consumer_id.clone(),
        MediaKind::Audio,
        &consumed.rtp_parameters,
    )?;
    endpoint.with_room(Instant::now(), room, |r, now| {
        r.resume_consumer(now, bob, &consumed.consumer_id)
    })??;
    println!(
        "{room} ({name}): alice publishes {} ({}), bob consumes it as {}",
        produced.producer_id, produced.mime_type, consumed.consumer_id
    );
    Ok(Call {
        room,
        publisher,
        subscriber,
        track,
        sent: 0,
        received: 0,
        foreign: 0,
    })
}

fn main() -> Result<(), Error> {
    // 1. The service's socket, and the endpoint with two rooms on it.
    let socket = bind()?;
    let local_addr = socket.local_addr()?;
    let start = Instant::now();
    let mut endpoint = Endpoint::new(
        EndpointConfig {
            room: RoomConfig {
                local_addr,
                ..RoomConfig::default()
            },
            seed: None,
        },
        start,
    );
    println!("endpoint listening on udp://{local_addr}");
    let mut calls = vec![call(&mut endpoint, "red")?, call(&mut endpoint, "blue")?];

    // 2. The service's event loop: read datagrams, run the timers the
    //    endpoint asks for, send what it transmits. Bounded: three seconds.
    let mut buf = vec![0u8; 2048];
    let mut next_packet = Instant::now();
    let deadline = start + Duration::from_secs(3);
    while Instant::now() < deadline {
        let now = Instant::now();
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    // Garbage and strangers are counted, never fatal.
                    let _ = endpoint.handle_datagram(
                        now,
                        Datagram {
                            proto: Protocol::Udp,
                            source,
                            destination: local_addr,
                            contents: &buf[..n],
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The contract: handle_timeout at poll_timeout (forwarded packets
        // leave there), then drain.
        if endpoint.poll_timeout().is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
        }
        while let Some(t) = endpoint.poll_transmit() {
            socket.send_to(&t.contents, t.destination)?;
        }
        while let Some((room, event)) = endpoint.poll_event() {
            println!("{room}: {event:?}");
        }
        // The peers: their sockets, timers and outputs.
        let send_now = now >= next_packet;
        for c in &mut calls {
            for p in [&mut c.publisher, &mut c.subscriber] {
                loop {
                    match p.socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let _ = p.transport.handle_receive(now, from, &buf[..n]);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                if p.transport.poll_timeout().is_some_and(|t| t <= now) {
                    p.transport.handle_timeout(now);
                }
            }
            // Each publisher sends a 20 ms frame naming its room.
            if send_now && c.publisher.transport.is_connected() {
                let payload = format!("{} frame {}", c.room, c.sent).into_bytes();
                let rtp_time = (c.sent * 960) as u32;
                if c.publisher
                    .transport
                    .write_rtp(&c.track.mid, c.sent + 1, rtp_time, false, payload, now)
                    .is_ok()
                {
                    c.sent += 1;
                }
            }
            for p in [&mut c.publisher, &mut c.subscriber] {
                while let Some(t) = p.transport.poll_transmit() {
                    p.socket.send_to(&t.contents, t.destination)?;
                }
            }
            let mine = c.room.to_string();
            while let Some(event) = c.subscriber.transport.poll_event() {
                if let PeerEvent::RtpPacket { payload, .. } = event {
                    if payload.starts_with(mine.as_bytes()) {
                        c.received += 1;
                    } else {
                        c.foreign += 1;
                    }
                }
            }
            while c.publisher.transport.poll_event().is_some() {}
        }
        if send_now {
            next_packet = now + Duration::from_millis(20);
        }
        // Sleep until something is due (at most 2 ms, to poll the sockets).
        let wake = calls
            .iter()
            .flat_map(|c| {
                [
                    c.publisher.transport.poll_timeout(),
                    c.subscriber.transport.poll_timeout(),
                ]
            })
            .chain([endpoint.poll_timeout(), Some(next_packet)])
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(2));
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(2)),
        );
    }
    let stats = endpoint.room_stats();
    for c in &calls {
        println!(
            "{}: alice sent {} packets; bob received {} of them and {} from another room",
            c.room, c.sent, c.received, c.foreign
        );
    }
    println!(
        "the endpoint forwarded {} packets in {} rooms (unknown datagrams: {})",
        stats.rtp_forwarded,
        endpoint.stats().rooms,
        endpoint.stats().datagrams_unknown
    );
    if calls.iter().any(|c| c.received == 0 || c.foreign != 0) {
        return Err("each subscriber must receive its own room's media, and only that".into());
    }
    Ok(())
}
