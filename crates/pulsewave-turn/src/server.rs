//! The sans-IO TURN server: allocations, permissions, channels, lifetimes
//! and quotas. No sockets, no clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::{self, NonceCheck, TurnSecret};
use crate::stun::{ChannelData, Class, Message, MessageBuilder, attr, method};

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (datagrams).
    Udp,
    /// TCP (a byte stream of STUN messages and padded ChannelData).
    Tcp,
    /// TLS over TCP (as TCP, encrypted).
    Tls,
}

impl Transport {
    fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple as the driver sees it: the transport, the remote
/// address and, for TCP and TLS, the connection (0 for UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// Transport of the client's connection to the server.
    pub transport: Transport,
    /// The client's address (its server-reflexive address).
    pub remote: SocketAddr,
    /// The driver's connection id for TCP and TLS, 0 for UDP.
    pub connection: u64,
}

/// An allocation's relay, named by the server; the driver binds one UDP
/// socket per relay when asked ([`Event::BindRelay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// An IP network (`addr/prefix`) peers may be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network; the prefix is capped at the address length.
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// One address.
    pub fn host(addr: IpAddr) -> Self {
        Self::new(addr, 128)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|e| format!("{s}: {e}"))?;
        let prefix = match prefix {
            Some(p) => p.trim().parse().map_err(|e| format!("{s}: {e}"))?,
            None => 128,
        };
        Ok(Self::new(ip, prefix))
    }
}

/// Limits and lifetimes of the TURN core.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// REALM (RFC 8489); also part of every key.
    pub realm: String,
    /// The secret credentials are derived from.
    pub secret: TurnSecret,
    /// The relay address announced in XOR-RELAYED-ADDRESS (the port is the
    /// bound one); `None` announces the bound address.
    pub relay_announced_ip: Option<IpAddr>,
    /// Address family of relays: IPv4 when false.
    pub relay_ipv6: bool,
    /// Peers clients may relay to. Empty: none. The server relays only to
    /// these (the SFU's own media addresses by default), so it is never an
    /// open relay into the operator's network.
    pub allowed_peers: Vec<IpNet>,
    /// Lifetime of an allocation without a LIFETIME attribute (600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime (3600 s).
    pub max_lifetime: Duration,
    /// Lifetime of a permission (300 s, fixed by RFC 8656).
    pub permission_lifetime: Duration,
    /// Lifetime of a channel binding (600 s, fixed by RFC 8656).
    pub channel_lifetime: Duration,
    /// How long a nonce is valid.
    pub nonce_lifetime: Duration,
    /// Most allocations at once.
    pub max_allocations: usize,
    /// Most allocations of one user (the part after `:` of the username).
    pub max_allocations_per_user: usize,
    /// Most permissions of one allocation.
    pub max_permissions: usize,
    /// Most channels of one allocation.
    pub max_channels: usize,
    /// Relayed bytes per second one allocation may move, each direction
    /// counted together (burst: one second's worth). 0: no limit.
    pub max_bytes_per_second: u64,
    /// How often expired allocations, permissions and channels are swept.
    pub sweep_interval: Duration,
}

impl ServerConfig {
    /// Defaults with `secret`, realm `pulsewave`, no allowed peer.
    pub fn new(secret: TurnSecret) -> Self {
        Self {
            realm: "pulsewave".into(),
            secret,
            relay_announced_ip: None,
            relay_ipv6: false,
            allowed_peers: Vec::new(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(3600),
            max_allocations: 1000,
            max_allocations_per_user: 12,
            max_permissions: 32,
            max_channels: 32,
            max_bytes_per_second: 5_000_000,
            sweep_interval: Duration::from_secs(1),
        }
    }
}

/// Something to send.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Transmit {
    /// To a client on the connection or address it came from.
    Client {
        /// The client.
        client: Client,
        /// A whole STUN message or ChannelData (padded on streams).
        bytes: Vec<u8>,
    },
    /// From a relay's socket to a peer.
    Peer {
        /// The relay whose socket sends.
        relay: RelayId,
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        bytes: Vec<u8>,
    },
}

/// What the driver must do besides sending.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Bind a UDP socket for this relay (IPv6 if `ipv6`), then call
    /// [`Server::relay_bound`].
    BindRelay {
        /// The relay.
        relay: RelayId,
        /// Address family.
        ipv6: bool,
    },
    /// The allocation is gone: close the relay's socket.
    RelayClosed {
        /// The relay.
        relay: RelayId,
    },
}

/// Counters, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations now (including those waiting for a socket).
    pub allocations: usize,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Requests refused for bad or expired credentials.
    pub auth_failures: u64,
    /// Datagrams relayed client → peer.
    pub packets_to_peers: u64,
    /// Datagrams relayed peer → client.
    pub packets_to_clients: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peers: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_clients: u64,
    /// Datagrams dropped: no permission, no channel, over quota, malformed.
    pub dropped: u64,
}

struct Permission {
    ip: IpAddr,
    expires: Instant,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

enum AllocState {
    /// Waiting for the driver to bind the socket.
    Binding { transaction_id: [u8; 12] },
    /// Relaying.
    Ready {
        relayed: SocketAddr,
        /// The success response, re-sent on a retransmitted Allocate.
        response: (Vec<u8>, [u8; 12]),
    },
}

struct Allocation {
    client: Client,
    user: String,
    username: String,
    key: [u8; 16],
    state: AllocState,
    expires: Instant,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    /// Byte-rate bucket: available bytes and when it was filled.
    tokens: f64,
    filled: Instant,
}

/// The TURN server core (RFC 8656 subset: UDP relays, long-term
/// credentials, Allocate, Refresh, CreatePermission, ChannelBind, Send and
/// Data indications, ChannelData).
///
/// Inputs are [`handle_client`](Self::handle_client) (bytes from a client),
/// [`handle_peer`](Self::handle_peer) (a datagram on a relay socket),
/// [`relay_bound`](Self::relay_bound), [`connection_closed`](Self::connection_closed)
/// and [`handle_timeout`](Self::handle_timeout). After each, drain
/// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event),
/// and call `handle_timeout` at [`poll_timeout`](Self::poll_timeout).
/// Time is an argument and only moves forward; unix time (credential and
/// nonce expiry) is derived from the pair given to [`new`](Self::new).
///
/// Work per input is bounded: a message has at most
/// [`crate::stun::MAX_ATTRIBUTES`] attributes, an allocation at most
/// `max_permissions` permissions and `max_channels` channels, and the
/// sweep runs once per `sweep_interval`.
pub struct Server {
    config: ServerConfig,
    base: Instant,
    base_unix: Duration,
    by_client: HashMap<Client, RelayId>,
    allocations: HashMap<RelayId, Allocation>,
    per_user: HashMap<String, usize>,
    next_relay: u64,
    next_sweep: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("allocations", &self.allocations.len())
            .finish_non_exhaustive()
    }
}

const STUN_METHOD_TRANSPORT_UDP: u8 = 17;

impl Server {
    /// A server whose clock reads `now` at unix time `unix_now`.
    pub fn new(config: ServerConfig, now: Instant, unix_now: SystemTime) -> Self {
        // Kept to the nanosecond: truncated to whole seconds at the start,
        // the server's unix clock lagged the wall clock by up to a second,
        // and credentials that expired a second ago still passed (found by
        // relay.rs `wrong_and_expired_credentials_are_refused` in CI).
        let base_unix = unix_now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            config,
            base: now,
            base_unix,
            by_client: HashMap::new(),
            allocations: HashMap::new(),
            per_user: HashMap::new(),
            next_relay: 1,
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ---- getters ----

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocations.len(),
            ..self.stats.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn unix(&self, now: Instant) -> u64 {
        (self.base_unix + now.saturating_duration_since(self.base)).as_secs()
    }

    // ---- inputs ----

    /// A message from a client: one UDP datagram, or one frame of a
    /// stream (see [`crate::stun::stream_frame_len`]). Malformed input is dropped.
    pub fn handle_client(&mut self, now: Instant, client: Client, bytes: &[u8]) {
        let Some(first) = bytes.first() else {
            return;
        };
        if first & 0xC0 == 0x40 {
            self.handle_channel_data(now, client, bytes);
            return;
        }
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        match msg.class {
            Class::Request => self.handle_request(now, client, &msg),
            Class::Indication if msg.method == method::SEND => self.handle_send(now, client, &msg),
            _ => self.stats.dropped += 1,
        }
    }

    /// A datagram from `peer` on `relay`'s socket.
    pub fn handle_peer(&mut self, now: Instant, relay: RelayId, peer: SocketAddr, bytes: &[u8]) {
        let Some(alloc) = self.allocations.get_mut(&relay) else {
            return;
        };
        if alloc.expires <= now
            || !alloc
                .permissions
                .iter()
                .any(|p| p.ip == peer.ip() && p.expires > now)
            || bytes.len() > usize::from(u16::MAX) - 64
            || !take_tokens(alloc, now, self.config.max_bytes_per_second, bytes.len())
        {
            self.stats.dropped += 1;
            return;
        }
        let client = alloc.client;
        let out = match alloc
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
        {
            Some(c) => ChannelData::encode(c.number, bytes, client.transport.is_stream()),
            None => {
                let mut b = MessageBuilder::new(Class::Indication, method::DATA, random_tid());
                b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)
                    .add(attr::DATA, bytes);
                b.finish_plain()
            }
        };
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += bytes.len() as u64;
        self.transmits
            .push_back(Transmit::Client { client, bytes: out });
    }

    /// The driver bound `relay`'s socket at `bound` (or failed to).
    pub fn relay_bound(&mut self, now: Instant, relay: RelayId, bound: Option<SocketAddr>) {
        let Some(alloc) = self.allocations.get_mut(&relay) else {
            // Gone meanwhile (connection closed): release the socket.
            if bound.is_some() {
                self.events.push_back(Event::RelayClosed { relay });
            }
            return;
        };
        let AllocState::Binding { transaction_id } = alloc.state else {
            return;
        };
        let client = alloc.client;
        let key = alloc.key;
        let Some(bound) = bound else {
            self.remove(relay, false);
            let msg = error_response(
                method::ALLOCATE,
                transaction_id,
                508,
                "Insufficient Capacity",
                None,
                Some(&key),
            );
            self.transmits
                .push_back(Transmit::Client { client, bytes: msg });
            return;
        };
        let relayed = SocketAddr::new(
            self.config.relay_announced_ip.unwrap_or(bound.ip()),
            bound.port(),
        );
        let lifetime = alloc.expires.saturating_duration_since(now).as_secs() as u32;
        let mut b = MessageBuilder::new(Class::Success, method::ALLOCATE, transaction_id);
        b.add_xor_addr(attr::XOR_RELAYED_ADDRESS, relayed)
            .add_u32(attr::LIFETIME, lifetime)
            .add_xor_addr(attr::XOR_MAPPED_ADDRESS, client.remote);
        let bytes = b.finish_with_integrity(&key);
        alloc.state = AllocState::Ready {
            relayed,
            response: (bytes.clone(), transaction_id),
        };
        self.stats.allocations_created += 1;
        tracing::debug!(relay = relay.0, %relayed, user = %alloc.user, "TURN allocation");
        self.transmits.push_back(Transmit::Client { client, bytes });
    }

    /// A TCP or TLS connection closed: its allocation ends (RFC 8656 §3.1).
    pub fn connection_closed(&mut self, client: Client) {
        if let Some(relay) = self.by_client.get(&client).copied() {
            self.remove(relay, true);
        }
    }

    /// Expires allocations, permissions and channels whose time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if t <= now => {}
            _ => return,
        }
        let expired: Vec<RelayId> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(r, _)| *r)
            .collect();
        for relay in expired {
            tracing::debug!(relay = relay.0, "TURN allocation expired");
            self.remove(relay, true);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|p| p.expires > now);
            a.channels.retain(|c| c.expires > now);
        }
        self.next_sweep = (!self.allocations.is_empty()).then(|| now + self.config.sweep_interval);
    }

    // ---- outputs ----

    /// The next datagram or frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the driver must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    // ---- internals ----

    fn remove(&mut self, relay: RelayId, notify: bool) {
        let Some(a) = self.allocations.remove(&relay) else {
            return;
        };
        self.by_client.remove(&a.client);
        if let Some(n) = self.per_user.get_mut(&a.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&a.user);
            }
        }
        if notify {
            self.events.push_back(Event::RelayClosed { relay });
        }
    }

    fn reply(&mut self, client: Client, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit::Client { client, bytes });
    }

    fn nonce(&self, now: Instant, client: Client) -> String {
        let expires = self.unix(now) + self.config.nonce_lifetime.as_secs();
        self.config
            .secret
            .nonce(client.remote.ip().to_string().as_bytes(), expires)
    }

    fn challenge(&mut self, now: Instant, client: Client, msg: &Message<'_>, code: u16) {
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        let nonce = self.nonce(now, client);
        let realm = self.config.realm.clone();
        let bytes = error_response(
            msg.method,
            msg.transaction_id,
            code,
            reason,
            Some((&realm, &nonce)),
            None,
        );
        self.reply(client, bytes);
    }

    fn error(
        &mut self,
        client: Client,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        key: Option<&[u8]>,
    ) {
        let bytes = error_response(msg.method, msg.transaction_id, code, reason, None, key);
        self.reply(client, bytes);
    }

    fn handle_request(&mut self, now: Instant, client: Client, msg: &Message<'_>) {
        if msg.method == method::BINDING {
            let mut b = MessageBuilder::new(Class::Success, method::BINDING, msg.transaction_id);
            b.add_xor_addr(attr::XOR_MAPPED_ADDRESS, client.remote);
            let bytes = b.finish();
            self.reply(client, bytes);
            return;
        }
        if !matches!(
            msg.method,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND
        ) {
            self.error(client, msg, 400, "Bad Request", None);
            return;
        }
        // Comprehension-required attributes we do not understand (EVEN-PORT,
        // RESERVATION-TOKEN, ...) are refused with 420.
        let unknown: Vec<u16> = msg
            .attribute_types()
            .filter(|t| *t < 0x8000 && !KNOWN.contains(t))
            .take(8)
            .collect();
        if !unknown.is_empty() {
            let mut b = MessageBuilder::new(Class::Error, msg.method, msg.transaction_id);
            b.add_error(420, "Unknown Attribute");
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            b.add(attr::UNKNOWN_ATTRIBUTES, &list);
            let bytes = b.finish();
            self.reply(client, bytes);
            return;
        }
        // Long-term credentials (RFC 8489 §9.2).
        if !msg.has_integrity() {
            self.challenge(now, client, msg, 401);
            return;
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get_str(attr::USERNAME),
            msg.get_str(attr::REALM),
            msg.get_str(attr::NONCE),
        ) else {
            self.error(client, msg, 400, "Bad Request", None);
            return;
        };
        match self.config.secret.check_nonce(
            nonce,
            client.remote.ip().to_string().as_bytes(),
            self.unix(now),
        ) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.challenge(now, client, msg, 438);
                return;
            }
            NonceCheck::Invalid => {
                self.stats.auth_failures += 1;
                self.challenge(now, client, msg, 401);
                return;
            }
        }
        if realm != self.config.realm {
            self.stats.auth_failures += 1;
            self.challenge(now, client, msg, 401);
            return;
        }
        let existing = self.by_client.get(&client).copied();
        if msg.method == method::ALLOCATE {
            self.handle_allocate(now, client, msg, username, existing);
            return;
        }
        // Refresh, CreatePermission, ChannelBind: on the client's allocation,
        // with the key it was created with (credentials are checked for
        // expiry at Allocate only, as LiveKit does: a call outlives them).
        let Some(relay) = existing else {
            self.error(client, msg, 437, "Allocation Mismatch", None);
            return;
        };
        let Some(alloc) = self.allocations.get(&relay) else {
            self.error(client, msg, 437, "Allocation Mismatch", None);
            return;
        };
        if alloc.username != username {
            self.stats.auth_failures += 1;
            self.error(client, msg, 441, "Wrong Credentials", None);
            return;
        }
        let key = alloc.key;
        if !msg.verify_integrity(&key) {
            self.stats.auth_failures += 1;
            self.challenge(now, client, msg, 401);
            return;
        }
        if matches!(alloc.state, AllocState::Binding { .. }) {
            self.error(client, msg, 437, "Allocation Mismatch", Some(&key));
            return;
        }
        match msg.method {
            method::REFRESH => self.handle_refresh(now, client, msg, relay, key),
            method::CREATE_PERMISSION => {
                self.handle_create_permission(now, client, msg, relay, key)
            }
            _ => self.handle_channel_bind(now, client, msg, relay, key),
        }
    }

    fn handle_allocate(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        username: &str,
        existing: Option<RelayId>,
    ) {
        let user = match self.config.secret.check_username(username, self.unix(now)) {
            Ok(user) => user.to_owned(),
            Err(e) => {
                self.stats.auth_failures += 1;
                tracing::debug!(?e, remote = %client.remote, "TURN credentials refused");
                self.challenge(now, client, msg, 401);
                return;
            }
        };
        let password = self.config.secret.password(username);
        let key = auth::long_term_key(username, &self.config.realm, &password);
        if !msg.verify_integrity(&key) {
            self.stats.auth_failures += 1;
            self.challenge(now, client, msg, 401);
            return;
        }
        if let Some(relay) = existing {
            // A retransmission gets the same answer; anything else 437.
            if let Some(a) = self.allocations.get(&relay) {
                match &a.state {
                    AllocState::Ready { response, .. } if response.1 == msg.transaction_id => {
                        let bytes = response.0.clone();
                        self.reply(client, bytes);
                    }
                    AllocState::Binding { transaction_id }
                        if *transaction_id == msg.transaction_id => {}
                    _ => self.error(client, msg, 437, "Allocation Mismatch", Some(&key)),
                }
            }
            return;
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            Some(v) if v.first() == Some(&STUN_METHOD_TRANSPORT_UDP) => {}
            Some(_) => {
                self.error(
                    client,
                    msg,
                    442,
                    "Unsupported Transport Protocol",
                    Some(&key),
                );
                return;
            }
            None => {
                self.error(client, msg, 400, "Bad Request", Some(&key));
                return;
            }
        }
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let ipv6 = match v.first() {
                Some(0x01) => false,
                Some(0x02) => true,
                _ => {
                    self.error(client, msg, 440, "Address Family not Supported", Some(&key));
                    return;
                }
            };
            if ipv6 != self.config.relay_ipv6 {
                self.error(client, msg, 440, "Address Family not Supported", Some(&key));
                return;
            }
        }
        if self.allocations.len() >= self.config.max_allocations
            || self.per_user.get(&user).copied().unwrap_or(0)
                >= self.config.max_allocations_per_user
        {
            self.error(client, msg, 486, "Allocation Quota Reached", Some(&key));
            return;
        }
        let requested = msg
            .get_u32(attr::LIFETIME)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.config.default_lifetime);
        let lifetime = requested
            .max(self.config.default_lifetime)
            .min(self.config.max_lifetime);
        let relay = RelayId(self.next_relay);
        self.next_relay += 1;
        *self.per_user.entry(user.clone()).or_insert(0) += 1;
        self.by_client.insert(client, relay);
        self.allocations.insert(
            relay,
            Allocation {
                client,
                user,
                username: username.to_owned(),
                key,
                state: AllocState::Binding {
                    transaction_id: msg.transaction_id,
                },
                expires: now + lifetime,
                permissions: Vec::new(),
                channels: Vec::new(),
                tokens: self.config.max_bytes_per_second as f64,
                filled: now,
            },
        );
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_interval);
        }
        self.events.push_back(Event::BindRelay {
            relay,
            ipv6: self.config.relay_ipv6,
        });
    }

    fn handle_refresh(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        relay: RelayId,
        key: [u8; 16],
    ) {
        let requested = msg
            .get_u32(attr::LIFETIME)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.config.default_lifetime);
        let lifetime = requested.min(self.config.max_lifetime);
        if lifetime.is_zero() {
            self.remove(relay, true);
        } else if let Some(a) = self.allocations.get_mut(&relay) {
            a.expires = now + lifetime;
        }
        let mut b = MessageBuilder::new(Class::Success, method::REFRESH, msg.transaction_id);
        b.add_u32(attr::LIFETIME, lifetime.as_secs() as u32);
        let bytes = b.finish_with_integrity(&key);
        self.reply(client, bytes);
    }

    /// Checks a peer address against the policy and the relay family.
    fn check_peer(&self, relay: RelayId, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
        let relay_v6 = match self.allocations.get(&relay).map(|a| &a.state) {
            Some(AllocState::Ready { relayed, .. }) => relayed.is_ipv6(),
            _ => self.config.relay_ipv6,
        };
        if peer.is_ipv6() != relay_v6 {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if !self
            .config
            .allowed_peers
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            return Err((403, "Forbidden"));
        }
        Ok(())
    }

    fn handle_create_permission(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        relay: RelayId,
        key: [u8; 16],
    ) {
        let peers: Vec<SocketAddr> = msg
            .get_all(attr::XOR_PEER_ADDRESS)
            .filter_map(|v| msg.decode_xor_addr(v))
            .collect();
        if peers.is_empty() || peers.len() != msg.get_all(attr::XOR_PEER_ADDRESS).count() {
            self.error(client, msg, 400, "Bad Request", Some(&key));
            return;
        }
        for peer in &peers {
            if let Err((code, reason)) = self.check_peer(relay, *peer) {
                self.error(client, msg, code, reason, Some(&key));
                return;
            }
        }
        let expires = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let Some(a) = self.allocations.get_mut(&relay) else {
            return;
        };
        let new = peers
            .iter()
            .filter(|p| !a.permissions.iter().any(|x| x.ip == p.ip()))
            .count();
        if a.permissions.len() + new > max {
            self.error(client, msg, 508, "Insufficient Capacity", Some(&key));
            return;
        }
        for peer in peers {
            install_permission(a, peer.ip(), expires);
        }
        let bytes = MessageBuilder::new(
            Class::Success,
            method::CREATE_PERMISSION,
            msg.transaction_id,
        )
        .finish_with_integrity(&key);
        self.reply(client, bytes);
    }

    fn handle_channel_bind(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        relay: RelayId,
        key: [u8; 16],
    ) {
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = msg.get_xor_addr(attr::XOR_PEER_ADDRESS);
        let (Some(number), Some(peer)) = (number, peer) else {
            self.error(client, msg, 400, "Bad Request", Some(&key));
            return;
        };
        if !(0x4000..=0x7FFF).contains(&number) {
            self.error(client, msg, 400, "Bad Request", Some(&key));
            return;
        }
        if let Err((code, reason)) = self.check_peer(relay, peer) {
            self.error(client, msg, code, reason, Some(&key));
            return;
        }
        let max_channels = self.config.max_channels;
        let max_permissions = self.config.max_permissions;
        let channel_expires = now + self.config.channel_lifetime;
        let permission_expires = now + self.config.permission_lifetime;
        let Some(a) = self.allocations.get_mut(&relay) else {
            return;
        };
        // A channel is bound to one peer and a peer to one channel.
        let conflict = a
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        let refresh = a
            .channels
            .iter()
            .position(|c| c.number == number && c.peer == peer);
        let needs_permission = !a.permissions.iter().any(|p| p.ip == peer.ip());
        if conflict
            || (refresh.is_none() && a.channels.len() >= max_channels)
            || (needs_permission && a.permissions.len() >= max_permissions)
        {
            let (code, reason) = if conflict {
                (400, "Bad Request")
            } else {
                (508, "Insufficient Capacity")
            };
            self.error(client, msg, code, reason, Some(&key));
            return;
        }
        match refresh {
            Some(i) => a.channels[i].expires = channel_expires,
            None => a.channels.push(Channel {
                number,
                peer,
                expires: channel_expires,
            }),
        }
        install_permission(a, peer.ip(), permission_expires);
        let bytes = MessageBuilder::new(Class::Success, method::CHANNEL_BIND, msg.transaction_id)
            .finish_with_integrity(&key);
        self.reply(client, bytes);
    }

    fn handle_send(&mut self, now: Instant, client: Client, msg: &Message<'_>) {
        let (Some(peer), Some(data)) = (
            msg.get_xor_addr(attr::XOR_PEER_ADDRESS),
            msg.get(attr::DATA),
        ) else {
            self.stats.dropped += 1;
            return;
        };
        self.relay_to_peer(
            now,
            client,
            |a| {
                a.permissions
                    .iter()
                    .any(|p| p.ip == peer.ip() && p.expires > now)
                    .then_some(peer)
            },
            data,
        );
    }

    fn handle_channel_data(&mut self, now: Instant, client: Client, bytes: &[u8]) {
        let Ok(cd) = ChannelData::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        self.relay_to_peer(
            now,
            client,
            |a| {
                // A channel relays only while its peer has a permission too
                // (permissions last 300 s, channels 600 s: clients refresh both).
                a.channels
                    .iter()
                    .find(|c| c.number == cd.channel && c.expires > now)
                    .map(|c| c.peer)
                    .filter(|peer| {
                        a.permissions
                            .iter()
                            .any(|p| p.ip == peer.ip() && p.expires > now)
                    })
            },
            cd.data,
        );
    }

    fn relay_to_peer(
        &mut self,
        now: Instant,
        client: Client,
        peer_of: impl FnOnce(&Allocation) -> Option<SocketAddr>,
        data: &[u8],
    ) {
        let rate = self.config.max_bytes_per_second;
        let Some(relay) = self.by_client.get(&client).copied() else {
            self.stats.dropped += 1;
            return;
        };
        let Some(a) = self.allocations.get_mut(&relay) else {
            self.stats.dropped += 1;
            return;
        };
        let peer = match a.state {
            AllocState::Ready { .. } if a.expires > now => peer_of(a),
            _ => None,
        };
        let Some(peer) = peer else {
            self.stats.dropped += 1;
            return;
        };
        if !take_tokens(a, now, rate, data.len()) {
            self.stats.dropped += 1;
            return;
        }
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += data.len() as u64;
        self.transmits.push_back(Transmit::Peer {
            relay,
            peer,
            bytes: data.to_vec(),
        });
    }
}

/// Attribute types a request may carry (comprehension-required ones
/// outside this list get 420).
const KNOWN: &[u16] = &[
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
];

fn install_permission(a: &mut Allocation, ip: IpAddr, expires: Instant) {
    match a.permissions.iter_mut().find(|p| p.ip == ip) {
        Some(p) => p.expires = expires,
        None => a.permissions.push(Permission { ip, expires }),
    }
}

/// Token bucket: `rate` bytes per second, burst one second. 0: unlimited.
fn take_tokens(a: &mut Allocation, now: Instant, rate: u64, len: usize) -> bool {
    if rate == 0 {
        return true;
    }
    let elapsed = now.saturating_duration_since(a.filled).as_secs_f64();
    a.filled = now.max(a.filled);
    a.tokens = (a.tokens + elapsed * rate as f64).min(rate as f64);
    if a.tokens >= len as f64 {
        a.tokens -= len as f64;
        true
    } else {
        false
    }
}

fn error_response(
    method: u16,
    tid: [u8; 12],
    code: u16,
    reason: &str,
    challenge: Option<(&str, &str)>,
    key: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = MessageBuilder::new(Class::Error, method, tid);
    b.add_error(code, reason);
    if let Some((realm, nonce)) = challenge {
        b.add(attr::REALM, realm.as_bytes())
            .add(attr::NONCE, nonce.as_bytes());
    }
    match key {
        Some(key) => b.finish_with_integrity(key),
        None => b.finish(),
    }
}

fn random_tid() -> [u8; 12] {
    rand::random()
}

#[cfg(test)]
mod tests;
