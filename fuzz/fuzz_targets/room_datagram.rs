//! Any datagram from any source, at any time, never panics an endpoint or
//! its room, and the room keeps its transport.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pulsewave_core::{Datagram, Endpoint, EndpointConfig, Owner, Protocol, RoomConfig};
use pulsewave_protocol::transport::TransportDirection;

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut endpoint = Endpoint::new(
        EndpointConfig {
            room: RoomConfig {
                local_addr: SERVER,
                ..RoomConfig::default()
            },
            seed: Some(7),
        },
        start,
    );
    let room = endpoint.open_room(start);
    let options = endpoint
        .room_mut(start, room)
        .expect("the room")
        .create_transport(start, Owner::new(1), TransportDirection::Send)
        .expect("a transport");
    let ufrag = options.ice_parameters.username_fragment.clone();
    // Datagrams are separated by 0xFE; the first byte of each picks the
    // source port and how far time moves (only forward, as a driver's
    // `Instant::now()` does).
    let mut now = start;
    for chunk in data.split(|b| *b == 0xFE) {
        let (head, body) = chunk.split_first().unwrap_or((&0, &[]));
        let source = SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(*head % 4)));
        now += Duration::from_millis(u64::from(*head));
        // Half the time, make it look like a STUN request for our transport.
        let mut d = body.to_vec();
        if head % 2 == 0 && d.len() >= 20 {
            d[0] = 0;
            d[1] = 1;
            d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            let user = format!("{ufrag}:x");
            let mut attr = vec![0, 6, 0, user.len() as u8];
            attr.extend_from_slice(user.as_bytes());
            d.splice(20..20, attr);
        }
        let _ = endpoint.handle_datagram(
            now,
            Datagram {
                proto: Protocol::Udp,
                source,
                destination: SERVER,
                contents: &d,
            },
        );
        endpoint.handle_timeout(now);
        while endpoint.poll_transmit().is_some() {}
        while endpoint.poll_event().is_some() {}
    }
    assert_eq!(endpoint.stats().rooms_failed, 0);
    assert_eq!(endpoint.room(room).expect("the room").stats().transports, 1);
});
