//! Any datagram from any source, at any time, never panics a room, and the
//! room keeps its transports.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pulsewave_core::{Room, RoomConfig};
use pulsewave_protocol::transport::TransportDirection;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut room = Room::new(RoomConfig::default(), start);
    let alice = "PA_alice".into();
    let options = room
        .create_transport(start, &alice, TransportDirection::Send)
        .expect("a transport");
    let ufrag = options.ice_parameters.username_fragment.clone();
    // Datagrams are separated by 0xFE; the first byte of each picks the
    // source port and how far time moves.
    // Time only moves forward, as a driver's `Instant::now()` does.
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
        let _ = room.handle_datagram(now, source, &d);
        room.handle_timeout(now);
        while room.poll_transmit().is_some() {}
        while room.poll_event().is_some() {}
    }
    assert_eq!(room.stats().transports, 1);
});
