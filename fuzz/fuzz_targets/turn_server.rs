//! The embedded TURN server's sans-IO core driven by arbitrary operations:
//! raw client messages, requests the harness signs with valid long-term
//! credentials (so the fuzzer reaches Allocate, Refresh, CreatePermission
//! and ChannelBind past authentication), peer datagrams, relay binds,
//! closed connections and time jumps. Checks: no panic, the allocation
//! limits hold, and nothing is ever relayed to a peer outside the allowed
//! network.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pulsewave_turn::stun::{Class, Message, MessageBuilder, attr, method};
use pulsewave_turn::{
    Client, Event, IpNet, RelayId, Server, ServerConfig, Transmit, Transport, TurnSecret,
    long_term_key,
};

const UNIX0: u64 = 1_800_000_000;
const MAX_ALLOCATIONS: usize = 4;

fn clients() -> [Client; 3] {
    let c = |transport, port, connection| Client {
        transport,
        remote: SocketAddr::from(([198, 51, 100, 1], port)),
        connection,
    };
    [
        c(Transport::Udp, 1000, 0),
        c(Transport::Tcp, 1001, 1),
        c(Transport::Tls, 1002, 2),
    ]
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.byte()?).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

fuzz_target!(|data: &[u8]| {
    let secret = TurnSecret::new(b"fuzz secret");
    let allowed: IpNet = "10.0.0.0/24".parse().unwrap();
    let mut config = ServerConfig::new(secret.clone());
    config.allowed_peers = vec![allowed];
    config.max_allocations = MAX_ALLOCATIONS;
    config.max_allocations_per_user = 3;
    config.max_permissions = 4;
    config.max_channels = 4;
    config.max_bytes_per_second = 10_000;
    let mut now = Instant::now();
    let mut server = Server::new(config, now, UNIX_EPOCH + Duration::from_secs(UNIX0));
    let creds = secret.issue("fuzz", UNIX0 + 3600);
    let realm = server.config().realm.clone();
    let key = long_term_key(&creds.username, &realm, &creds.password);
    let clients = clients();

    // A nonce for the one client IP.
    let challenge = MessageBuilder::new(Class::Request, method::ALLOCATE, [0; 12]).finish();
    server.handle_client(now, clients[0], &challenge);
    let nonce = match server.poll_transmit() {
        Some(Transmit::Client { bytes, .. }) => Message::parse(&bytes)
            .ok()
            .and_then(|m| m.get_str(attr::NONCE).map(str::to_owned))
            .unwrap(),
        other => panic!("no challenge: {other:?}"),
    };

    let mut pending: Vec<RelayId> = Vec::new();
    let mut relays: Vec<RelayId> = Vec::new();
    let mut tid = 1u32;
    let mut cur = Cursor(data);
    while let Some(op) = cur.byte() {
        match op % 7 {
            0 => {
                let Some(c) = cur.byte() else { break };
                let Some(bytes) = cur.bytes() else { break };
                server.handle_client(now, clients[usize::from(c) % 3], bytes);
            }
            1 => {
                let Some(c) = cur.byte() else { break };
                let Some(m) = cur.byte() else { break };
                let m = [
                    method::ALLOCATE,
                    method::REFRESH,
                    method::CREATE_PERMISSION,
                    method::CHANNEL_BIND,
                    method::SEND,
                ][usize::from(m) % 5];
                tid += 1;
                let mut id = [0u8; 12];
                id[..4].copy_from_slice(&tid.to_be_bytes());
                let class = if m == method::SEND {
                    Class::Indication
                } else {
                    Class::Request
                };
                let mut b = MessageBuilder::new(class, m, id);
                // Attributes chosen by the fuzzer: a type byte, a value.
                for _ in 0..cur.byte().unwrap_or(0) % 6 {
                    let Some(t) = cur.byte() else { break };
                    let ty = [
                        attr::REQUESTED_TRANSPORT,
                        attr::LIFETIME,
                        attr::XOR_PEER_ADDRESS,
                        attr::CHANNEL_NUMBER,
                        attr::DATA,
                        attr::REQUESTED_ADDRESS_FAMILY,
                        attr::DONT_FRAGMENT,
                        0x0018,
                    ][usize::from(t) % 8];
                    let Some(v) = cur.bytes() else { break };
                    if ty == attr::XOR_PEER_ADDRESS && v.len() >= 3 {
                        // Mostly well-formed peer addresses, some allowed.
                        let peer = SocketAddr::from(([10, 0, v[0] % 2, v[1]], u16::from(v[2])));
                        b.add_xor_addr(ty, peer);
                    } else {
                        b.add(ty, v);
                    }
                }
                b.add(attr::USERNAME, creds.username.as_bytes())
                    .add(attr::REALM, realm.as_bytes())
                    .add(attr::NONCE, nonce.as_bytes());
                let bytes = b.finish_with_integrity(&key);
                server.handle_client(now, clients[usize::from(c) % 3], &bytes);
            }
            2 => {
                let Some(i) = cur.byte() else { break };
                let Some(ip) = cur.byte() else { break };
                let Some(bytes) = cur.bytes() else { break };
                if let Some(relay) = relays.get(usize::from(i) % relays.len().max(1)) {
                    let from = SocketAddr::from(([10, 0, ip % 2, ip], 40000));
                    server.handle_peer(now, *relay, from, bytes);
                }
            }
            3 => {
                let Some(s) = cur.byte() else { break };
                now += Duration::from_millis(u64::from(s) * 5000);
                server.handle_timeout(now);
            }
            4 => {
                let Some(c) = cur.byte() else { break };
                server.connection_closed(clients[usize::from(c) % 3]);
            }
            5 => {
                let Some(ok) = cur.byte() else { break };
                if let Some(relay) = pending.pop() {
                    let bound = (ok % 4 != 0).then(|| SocketAddr::from(([0, 0, 0, 0], 50000)));
                    server.relay_bound(now, relay, bound);
                    if bound.is_some() {
                        relays.push(relay);
                    }
                }
            }
            _ => {
                if let Some(t) = server.poll_timeout() {
                    now = now.max(t);
                    server.handle_timeout(now);
                }
            }
        }
        while let Some(t) = server.poll_transmit() {
            if let Transmit::Peer { peer, .. } = t {
                assert!(allowed.contains(peer.ip()), "relayed to {peer}");
            }
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::BindRelay { relay, .. } => pending.push(relay),
                Event::RelayClosed { relay } => relays.retain(|r| *r != relay),
            }
        }
        assert!(server.stats().allocations <= MAX_ALLOCATIONS);
    }
});
