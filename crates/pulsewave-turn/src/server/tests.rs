//! The TURN core on a virtual clock: each test is a short story between a
//! client, the server and a peer, with time moved by hand.

use super::*;

const REALM: &str = "pulsewave";
const SFU: &str = "10.0.0.5:40000";
const RELAY_IP: &str = "203.0.113.7";

struct Harness {
    server: Server,
    now: Instant,
    /// Unix seconds at `start`.
    unix0: u64,
    start: Instant,
    secret: TurnSecret,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut ServerConfig)) -> Self {
        let secret = TurnSecret::new(b"test secret");
        let mut config = ServerConfig::new(secret.clone());
        config.relay_announced_ip = Some(RELAY_IP.parse().unwrap());
        config.allowed_peers = vec!["10.0.0.0/24".parse().unwrap()];
        f(&mut config);
        let start = Instant::now();
        let unix0 = 1_800_000_000;
        let server = Server::new(config, start, UNIX_EPOCH + Duration::from_secs(unix0));
        Self {
            server,
            now: start,
            unix0,
            start,
            secret,
        }
    }

    fn unix(&self) -> u64 {
        self.unix0 + (self.now - self.start).as_secs()
    }

    /// Moves the clock, firing every timeout on the way (as a driver would).
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(t) = self.server.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.server.handle_timeout(self.now);
        }
        self.now = end;
        self.server.handle_timeout(self.now);
    }

    fn send(&mut self, client: Client, bytes: &[u8]) -> Vec<Transmit> {
        self.server.handle_client(self.now, client, bytes);
        self.transmits()
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// One reply to `client`, parsed into an owned copy.
    fn reply(&mut self, client: Client, bytes: &[u8]) -> Vec<u8> {
        let out = self.send(client, bytes);
        assert_eq!(out.len(), 1, "{out:?}");
        match out.into_iter().next() {
            Some(Transmit::Client { client: c, bytes }) => {
                assert_eq!(c, client);
                bytes
            }
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// Allocates for `client` as `user`; returns the session.
    fn allocate(&mut self, client: Client, user: &str) -> Session {
        let creds = self.secret.issue(user, self.unix() + 300);
        let mut s = Session::new(client, &creds.username, &creds.password);
        let challenge = self.reply(client, &s.allocate_request(None));
        s.learn_nonce(&challenge);
        let req = s.allocate_request(None);
        assert!(self.send(client, &req).is_empty());
        let relay = match self.events().as_slice() {
            [Event::BindRelay { relay, ipv6: false }] => *relay,
            other => panic!("{other:?}"),
        };
        self.server
            .relay_bound(self.now, relay, Some("0.0.0.0:50001".parse().unwrap()));
        let out = self.transmits();
        let [Transmit::Client { bytes, .. }] = out.as_slice() else {
            panic!("{out:?}")
        };
        let m = Message::parse(bytes).unwrap();
        assert_eq!(m.class, Class::Success, "{:?}", m.error_code());
        assert!(m.verify_integrity(&s.key));
        assert_eq!(
            m.get_xor_addr(attr::XOR_RELAYED_ADDRESS),
            Some(format!("{RELAY_IP}:50001").parse().unwrap())
        );
        assert_eq!(
            m.get_xor_addr(attr::XOR_MAPPED_ADDRESS),
            Some(client.remote)
        );
        assert_eq!(m.get_u32(attr::LIFETIME), Some(600));
        s.relay = Some(relay);
        s
    }
}

/// A test client's view of one allocation.
struct Session {
    client: Client,
    username: String,
    key: [u8; 16],
    nonce: Option<String>,
    tid: u8,
    relay: Option<RelayId>,
}

impl Session {
    fn new(client: Client, username: &str, password: &str) -> Self {
        Self {
            client,
            username: username.into(),
            key: auth::long_term_key(username, REALM, password),
            nonce: None,
            tid: 0,
            relay: None,
        }
    }

    fn tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        [self.tid; 12]
    }

    fn learn_nonce(&mut self, challenge: &[u8]) {
        let m = Message::parse(challenge).unwrap();
        assert_eq!(m.class, Class::Error);
        assert!(matches!(m.error_code(), Some((401 | 438, _))));
        assert_eq!(m.get_str(attr::REALM), Some(REALM));
        self.nonce = Some(m.get_str(attr::NONCE).unwrap().to_owned());
    }

    fn request(&mut self, method: u16, add: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let tid = self.tid();
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        add(&mut b);
        match &self.nonce {
            Some(nonce) => {
                b.add(attr::USERNAME, self.username.as_bytes())
                    .add(attr::REALM, REALM.as_bytes())
                    .add(attr::NONCE, nonce.as_bytes());
                b.finish_with_integrity(&self.key)
            }
            None => b.finish(),
        }
    }

    fn allocate_request(&mut self, lifetime: Option<u32>) -> Vec<u8> {
        self.request(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            if let Some(l) = lifetime {
                b.add_u32(attr::LIFETIME, l);
            }
        })
    }

    fn create_permission(&mut self, peer: SocketAddr) -> Vec<u8> {
        self.request(method::CREATE_PERMISSION, |b| {
            b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Vec<u8> {
        self.request(method::CHANNEL_BIND, |b| {
            b.add(
                attr::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            )
            .add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn refresh(&mut self, lifetime: u32) -> Vec<u8> {
        self.request(method::REFRESH, |b| {
            b.add_u32(attr::LIFETIME, lifetime);
        })
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let tid = self.tid();
        let mut b = MessageBuilder::new(Class::Indication, method::SEND, tid);
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)
            .add(attr::DATA, data);
        b.finish()
    }
}

fn udp_client(port: u16) -> Client {
    Client {
        transport: Transport::Udp,
        remote: SocketAddr::new("198.51.100.1".parse().unwrap(), port),
        connection: 0,
    }
}

fn code(bytes: &[u8]) -> Option<u16> {
    Message::parse(bytes).ok()?.error_code().map(|(c, _)| c)
}

fn sfu() -> SocketAddr {
    SFU.parse().unwrap()
}

#[test]
fn allocate_needs_credentials_then_relays_both_ways() {
    let mut h = Harness::new();
    let c = udp_client(1000);
    let mut s = h.allocate(c, "alice");
    let relay = s.relay.unwrap();

    // No permission yet: the client's data is dropped, and so is the peer's.
    assert!(h.send(c, &s.send_indication(sfu(), b"early")).is_empty());
    h.server.handle_peer(h.now, relay, sfu(), b"early");
    assert!(h.transmits().is_empty());

    let ok = h.reply(c, &s.create_permission(sfu()));
    let m = Message::parse(&ok).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity(&s.key));

    // Send indication → the peer.
    assert_eq!(
        h.send(c, &s.send_indication(sfu(), b"ping")),
        vec![Transmit::Peer {
            relay,
            peer: sfu(),
            bytes: b"ping".to_vec()
        }]
    );
    // The peer answers from another port of the same IP: permissions are
    // per IP. It arrives as a Data indication.
    let other_port: SocketAddr = "10.0.0.5:40001".parse().unwrap();
    h.server.handle_peer(h.now, relay, other_port, b"pong");
    let out = h.transmits();
    let [Transmit::Client { client, bytes }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*client, c);
    let m = Message::parse(bytes).unwrap();
    assert_eq!((m.class, m.method), (Class::Indication, method::DATA));
    assert_eq!(m.get_xor_addr(attr::XOR_PEER_ADDRESS), Some(other_port));
    assert_eq!(m.get(attr::DATA), Some(&b"pong"[..]));
    // Another IP has no permission.
    h.server
        .handle_peer(h.now, relay, "10.0.0.6:1".parse().unwrap(), b"x");
    assert!(h.transmits().is_empty());
    assert_eq!(h.server.stats().packets_to_clients, 1);
    assert_eq!(h.server.stats().packets_to_peers, 1);
}

/// The server's unix clock keeps the start's fraction of a second: started
/// at ….9 s, 0.2 s later the wall clock reads the next second, and a
/// credential that expired at the previous one is refused (with the start
/// truncated to whole seconds it passed for up to a second).
#[test]
fn credentials_expire_on_the_wall_clocks_second() {
    let mut h = Harness::new();
    let unix0 = 1_800_000_000;
    h.server = Server::new(
        h.server.config().clone(),
        h.start,
        UNIX_EPOCH + Duration::from_millis(unix0 * 1000 + 900),
    );
    h.advance(Duration::from_millis(200));
    let c = udp_client(1002);
    let expired = h.secret.issue("alice", unix0);
    let mut s = Session::new(c, &expired.username, &expired.password);
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(401));
    let valid = h.secret.issue("alice", unix0 + 1);
    let mut s = Session::new(c, &valid.username, &valid.password);
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    // Accepted: the server asks its driver for a relay (no reply yet).
    let out = h.send(c, &s.allocate_request(None));
    assert!(out.is_empty(), "{out:?}");
    assert!(!h.events().is_empty(), "no relay asked for");
    assert_eq!(h.server.stats().auth_failures, 1);
}

#[test]
fn wrong_and_expired_credentials_are_refused() {
    let mut h = Harness::new();
    let c = udp_client(1001);
    // A password that is not the derived one.
    let creds = h.secret.issue("mallory", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, "guessed");
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    let refused = h.reply(c, &s.allocate_request(None));
    assert_eq!(code(&refused), Some(401));
    assert!(h.events().is_empty());

    // Derived with another secret.
    let other = TurnSecret::new(b"another").issue("mallory", h.unix() + 300);
    let mut s = Session::new(c, &other.username, &other.password);
    s.nonce = Message::parse(&challenge)
        .unwrap()
        .get_str(attr::NONCE)
        .map(str::to_owned);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(401));

    // Valid once, expired now: refused although the password is right.
    let creds = h.secret.issue("alice", h.unix() + 60);
    h.advance(Duration::from_secs(61));
    let mut s = Session::new(c, &creds.username, &creds.password);
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(401));
    // A username without an expiry.
    let mut s = Session::new(c, "alice", &h.secret.password("alice"));
    s.learn_nonce(&challenge);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(401));
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.stats().auth_failures, 4);
}

#[test]
fn stale_nonce_gets_438_and_a_new_nonce() {
    let mut h = Harness::with(|c| c.nonce_lifetime = Duration::from_secs(30));
    let c = udp_client(1002);
    let creds = h.secret.issue("alice", h.unix() + 3600);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    h.advance(Duration::from_secs(31));
    let stale = h.reply(c, &s.allocate_request(None));
    assert_eq!(code(&stale), Some(438));
    s.learn_nonce(&stale);
    assert!(h.send(c, &s.allocate_request(None)).is_empty());
    assert!(matches!(h.events().as_slice(), [Event::BindRelay { .. }]));
    // A nonce given to another client address is refused.
    let other = udp_client(1003);
    let mut o = Session::new(other, &creds.username, &creds.password);
    o.nonce = s.nonce.clone();
    let mut other_ip = o.client;
    other_ip.remote = "192.0.2.99:5".parse().unwrap();
    o.client = other_ip;
    assert_eq!(
        code(&h.reply(other_ip, &o.allocate_request(None))),
        Some(401)
    );
}

#[test]
fn peers_outside_the_policy_are_forbidden() {
    let mut h = Harness::new();
    let c = udp_client(1004);
    let mut s = h.allocate(c, "alice");
    for peer in ["127.0.0.1:22", "10.0.1.1:80", "8.8.8.8:53"] {
        let r = h.reply(c, &s.create_permission(peer.parse().unwrap()));
        assert_eq!(code(&r), Some(403), "{peer}");
        assert!(Message::parse(&r).unwrap().verify_integrity(&s.key));
    }
    let r = h.reply(c, &s.channel_bind(0x4000, "127.0.0.1:22".parse().unwrap()));
    assert_eq!(code(&r), Some(403));
    let r = h.reply(c, &s.create_permission("[::1]:5".parse().unwrap()));
    assert_eq!(code(&r), Some(443));
}

#[test]
fn channels_carry_data_both_ways_padded_on_streams() {
    let mut h = Harness::new();
    let c = Client {
        transport: Transport::Tls,
        remote: "198.51.100.2:55555".parse().unwrap(),
        connection: 7,
    };
    let mut s = h.allocate(c, "bob");
    let relay = s.relay.unwrap();
    let ok = h.reply(c, &s.channel_bind(0x4001, sfu()));
    assert_eq!(Message::parse(&ok).unwrap().class, Class::Success);
    // ChannelBind installs the permission too.
    assert_eq!(
        h.send(c, &ChannelData::encode(0x4001, b"rtp", true)),
        vec![Transmit::Peer {
            relay,
            peer: sfu(),
            bytes: b"rtp".to_vec()
        }]
    );
    h.server.handle_peer(h.now, relay, sfu(), b"rtcp!");
    assert_eq!(
        h.transmits(),
        vec![Transmit::Client {
            client: c,
            bytes: vec![0x40, 0x01, 0, 5, b'r', b't', b'c', b'p', b'!', 0, 0, 0]
        }]
    );
    // An unbound channel is dropped; rebinding the channel to another peer
    // or the peer to another channel is refused.
    assert!(
        h.send(c, &ChannelData::encode(0x4002, b"x", true))
            .is_empty()
    );
    let other: SocketAddr = "10.0.0.6:1".parse().unwrap();
    assert_eq!(code(&h.reply(c, &s.channel_bind(0x4001, other))), Some(400));
    assert_eq!(code(&h.reply(c, &s.channel_bind(0x4002, sfu()))), Some(400));
    assert_eq!(code(&h.reply(c, &s.channel_bind(0x3FFF, other))), Some(400));
    // The same binding again refreshes it.
    let ok = h.reply(c, &s.channel_bind(0x4001, sfu()));
    assert_eq!(Message::parse(&ok).unwrap().class, Class::Success);
}

#[test]
fn permissions_channels_and_allocations_expire_on_the_clock() {
    let mut h = Harness::new();
    let c = udp_client(1005);
    let mut s = h.allocate(c, "alice");
    let relay = s.relay.unwrap();
    h.reply(c, &s.channel_bind(0x4000, sfu()));
    h.advance(Duration::from_secs(299));
    h.server.handle_peer(h.now, relay, sfu(), b"a");
    assert_eq!(h.transmits().len(), 1);
    // Permissions last 300 s unless refreshed.
    h.advance(Duration::from_secs(2));
    h.server.handle_peer(h.now, relay, sfu(), b"b");
    assert!(h.transmits().is_empty());
    assert!(
        h.send(c, &ChannelData::encode(0x4000, b"c", false))
            .is_empty()
    );
    // Refresh keeps the allocation past its 600 s.
    let ok = h.reply(c, &s.refresh(600));
    let m = Message::parse(&ok).unwrap();
    assert_eq!(m.get_u32(attr::LIFETIME), Some(600));
    h.advance(Duration::from_secs(400));
    assert_eq!(h.server.stats().allocations, 1);
    assert!(h.events().is_empty());
    // Then it expires: the relay socket is released.
    h.advance(Duration::from_secs(201));
    assert_eq!(h.events(), vec![Event::RelayClosed { relay }]);
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.poll_timeout(), None);
    // Requests on it now get 437.
    assert_eq!(code(&h.reply(c, &s.refresh(600))), Some(437));
}

#[test]
fn refresh_zero_deletes_and_lifetimes_are_clamped() {
    let mut h = Harness::new();
    let c = udp_client(1006);
    let mut s = h.allocate(c, "alice");
    let ok = h.reply(c, &s.refresh(100_000));
    assert_eq!(
        Message::parse(&ok).unwrap().get_u32(attr::LIFETIME),
        Some(3600)
    );
    let ok = h.reply(c, &s.refresh(0));
    assert_eq!(
        Message::parse(&ok).unwrap().get_u32(attr::LIFETIME),
        Some(0)
    );
    assert_eq!(
        h.events(),
        vec![Event::RelayClosed {
            relay: s.relay.unwrap()
        }]
    );
    assert_eq!(h.server.stats().allocations, 0);
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_another_gets_437() {
    let mut h = Harness::new();
    let c = udp_client(1007);
    let creds = h.secret.issue("alice", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let challenge = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&challenge);
    let req = s.allocate_request(None);
    assert!(h.send(c, &req).is_empty());
    // Retransmitted while the socket is being bound: ignored.
    assert!(h.send(c, &req).is_empty());
    let [Event::BindRelay { relay, .. }] = h.events()[..] else {
        panic!()
    };
    h.server
        .relay_bound(h.now, relay, Some("0.0.0.0:50002".parse().unwrap()));
    let first = h.transmits();
    let again = h.send(c, &req);
    assert_eq!(first, again);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(437));
    assert_eq!(h.server.stats().allocations_created, 1);
}

#[test]
fn quotas_per_user_total_and_bytes() {
    let mut h = Harness::with(|c| {
        c.max_allocations_per_user = 2;
        c.max_allocations = 3;
        c.max_bytes_per_second = 1000;
    });
    let a1 = h.allocate(udp_client(2001), "alice");
    h.allocate(udp_client(2002), "alice");
    // The user part is what counts, whatever the expiry.
    let c = udp_client(2003);
    let creds = h.secret.issue("alice", h.unix() + 999);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(486));
    h.allocate(udp_client(2004), "bob");
    let c = udp_client(2005);
    let creds = h.secret.issue("carol", h.unix() + 999);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    assert_eq!(code(&h.reply(c, &s.allocate_request(None))), Some(486));

    // 1000 bytes per second, burst one second: the third 400-byte packet
    // in the same instant is dropped, and passes half a second later.
    let mut a1 = a1;
    let c1 = a1.client;
    h.reply(c1, &a1.channel_bind(0x4000, sfu()));
    let pkt = ChannelData::encode(0x4000, &[0u8; 400], false);
    assert_eq!(h.send(c1, &pkt).len(), 1);
    assert_eq!(h.send(c1, &pkt).len(), 1);
    assert!(h.send(c1, &pkt).is_empty());
    h.advance(Duration::from_millis(500));
    assert_eq!(h.send(c1, &pkt).len(), 1);
}

#[test]
fn closing_a_stream_ends_its_allocation() {
    let mut h = Harness::new();
    let c = Client {
        transport: Transport::Tcp,
        remote: "198.51.100.3:4000".parse().unwrap(),
        connection: 3,
    };
    let s = h.allocate(c, "alice");
    h.server.connection_closed(c);
    assert_eq!(
        h.events(),
        vec![Event::RelayClosed {
            relay: s.relay.unwrap()
        }]
    );
    assert_eq!(h.server.stats().allocations, 0);
}

#[test]
fn relay_bind_failure_gets_508_and_frees_the_quota() {
    let mut h = Harness::with(|c| c.max_allocations = 1);
    let c = udp_client(3000);
    let creds = h.secret.issue("alice", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    assert!(h.send(c, &s.allocate_request(None)).is_empty());
    let [Event::BindRelay { relay, .. }] = h.events()[..] else {
        panic!()
    };
    h.server.relay_bound(h.now, relay, None);
    let out = h.transmits();
    let [Transmit::Client { bytes, .. }] = out.as_slice() else {
        panic!()
    };
    assert_eq!(code(bytes), Some(508));
    assert_eq!(h.server.stats().allocations, 0);
    h.allocate(udp_client(3001), "alice");
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = Harness::new();
    let c = udp_client(3002);
    let creds = h.secret.issue("alice", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let req = s.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(0x0018, &[0x80]); // EVEN-PORT
    });
    let r = h.reply(c, &req);
    assert_eq!(code(&r), Some(420));
    assert_eq!(
        Message::parse(&r).unwrap().get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x18][..])
    );
    // TCP relays (RFC 6062) are not offered.
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    let req = s.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code(&h.reply(c, &req)), Some(442));
}

#[test]
fn binding_requests_are_answered_without_credentials() {
    let mut h = Harness::new();
    let c = udp_client(3003);
    let req = MessageBuilder::new(Class::Request, method::BINDING, [9; 12]).finish();
    let r = h.reply(c, &req);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.get_xor_addr(attr::XOR_MAPPED_ADDRESS), Some(c.remote));
}

#[test]
fn garbage_is_dropped_without_panic_or_reply() {
    let mut h = Harness::new();
    let c = udp_client(3004);
    let mut s = h.allocate(c, "alice");
    let valid = s.channel_bind(0x4000, sfu());
    // Every truncation and every single-byte corruption of a valid request.
    for cut in 0..valid.len() {
        h.server.handle_client(h.now, c, &valid[..cut]);
    }
    for i in 0..valid.len() {
        let mut v = valid.clone();
        v[i] ^= 0x5A;
        h.server.handle_client(h.now, c, &v);
    }
    // Replies (errors) may come for corrupted requests; never a relay.
    assert!(
        h.transmits()
            .iter()
            .all(|t| matches!(t, Transmit::Client { .. }))
    );
    let mut seed = 0x1234_5678u32;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        h.server.handle_client(h.now, c, &bytes);
        h.server.handle_peer(h.now, s.relay.unwrap(), sfu(), &bytes);
    }
}

#[test]
fn requests_on_an_allocation_need_its_username_and_key() {
    let mut h = Harness::new();
    let c = udp_client(3005);
    let mut s = h.allocate(c, "alice");
    // Another valid username (bob's credentials) on alice's 5-tuple: 441.
    let bob = h.secret.issue("bob", h.unix() + 300);
    let mut b = Session::new(c, &bob.username, &bob.password);
    b.nonce = s.nonce.clone();
    b.tid = 100;
    assert_eq!(code(&h.reply(c, &b.refresh(600))), Some(441));
    // Alice's username with a wrong key: 401 with a fresh challenge.
    let mut forged = Session::new(c, &s.username, "not the password");
    forged.nonce = s.nonce.clone();
    forged.tid = 200;
    let r = h.reply(c, &forged.refresh(600));
    assert_eq!(code(&r), Some(401));
    assert!(Message::parse(&r).unwrap().get(attr::NONCE).is_some());
    // Without MESSAGE-INTEGRITY at all: 401.
    let nonce = s.nonce.take();
    assert_eq!(code(&h.reply(c, &s.refresh(600))), Some(401));
    s.nonce = nonce;
    // A request on a 5-tuple with no allocation: 437.
    let mut other = Session::new(udp_client(3006), &s.username, "x");
    other.key = s.key;
    other.nonce = s.nonce.clone();
    assert_eq!(code(&h.reply(other.client, &other.refresh(600))), Some(437));
    // The allocation is untouched.
    assert_eq!(h.server.stats().allocations, 1);
    let ok = h.reply(c, &s.refresh(600));
    assert_eq!(Message::parse(&ok).unwrap().class, Class::Success);
}

#[test]
fn address_families_must_match_the_relay() {
    let mut h = Harness::new();
    let c = udp_client(3007);
    let creds = h.secret.issue("alice", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    // IPv6 relays are not offered by an IPv4 server: 440.
    let req = s.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
    });
    assert_eq!(code(&h.reply(c, &req)), Some(440));
    let req = s.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(attr::REQUESTED_ADDRESS_FAMILY, &[0x01, 0, 0, 0]);
    });
    assert!(h.send(c, &req).is_empty());
    assert!(matches!(
        h.events().as_slice(),
        [Event::BindRelay { ipv6: false, .. }]
    ));
}

#[test]
fn ipv6_relays_reach_ipv6_peers() {
    let mut h = Harness::with(|c| {
        c.relay_ipv6 = true;
        c.relay_announced_ip = None;
        c.allowed_peers = vec!["2001:db8::/64".parse().unwrap()];
    });
    let c = Client {
        transport: Transport::Udp,
        remote: "[2001:db8:1::1]:5000".parse().unwrap(),
        connection: 0,
    };
    let creds = h.secret.issue("alice", h.unix() + 300);
    let mut s = Session::new(c, &creds.username, &creds.password);
    let ch = h.reply(c, &s.allocate_request(None));
    s.learn_nonce(&ch);
    let req = s.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
    });
    assert!(h.send(c, &req).is_empty());
    let [Event::BindRelay { relay, ipv6: true }] = h.events()[..] else {
        panic!()
    };
    h.server
        .relay_bound(h.now, relay, Some("[2001:db8::7]:50000".parse().unwrap()));
    let out = h.transmits();
    let [Transmit::Client { bytes, .. }] = out.as_slice() else {
        panic!()
    };
    let m = Message::parse(bytes).unwrap();
    assert_eq!(
        m.get_xor_addr(attr::XOR_RELAYED_ADDRESS),
        Some("[2001:db8::7]:50000".parse().unwrap())
    );
    let peer: SocketAddr = "[2001:db8::5]:40000".parse().unwrap();
    let ok = h.reply(c, &s.create_permission(peer));
    assert_eq!(Message::parse(&ok).unwrap().class, Class::Success);
    assert_eq!(code(&h.reply(c, &s.create_permission(sfu()))), Some(443));
    assert_eq!(h.send(c, &s.send_indication(peer, b"v6")).len(), 1);
}
