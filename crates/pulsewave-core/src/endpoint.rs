//! The endpoint: many rooms behind one socket (or one set of sockets), as
//! quinn-proto's `Endpoint` owns many connections.
//!
//! The endpoint routes each datagram to its room and transport (a STUN
//! request by the ICE username fragment of its USERNAME, anything else by
//! the address an authenticated request came from), runs the rooms' timers
//! from one heap, and isolates a panicking room from the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slab::Slab;
use tracing::{debug, error};

use crate::config::RoomConfig;
use crate::datagram::is_well_formed;
use crate::event::{Event, Transmit};
use crate::room::{DatagramError, Room, RoomStats, Routed};
use crate::stun::stun_username;
use crate::timers::Timers;
use crate::transport::{DemuxChange, TransportKey};

/// How a datagram travelled: UDP, or a TCP connection (RFC 4571 framing is
/// the driver's; the endpoint sees whole packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// UDP.
    Udp,
    /// A TCP connection; its remote address names it.
    Tcp,
}

impl From<Protocol> for str0m::net::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Udp => str0m::net::Protocol::Udp,
            Protocol::Tcp => str0m::net::Protocol::Tcp,
        }
    }
}

impl Protocol {
    /// The protocol of a str0m transmit. str0m emits only what its
    /// candidates use: UDP, or TCP for the passive TCP candidate (TLS and
    /// SSL-TCP candidates are never added).
    pub(crate) fn from_str0m(p: str0m::net::Protocol) -> Self {
        match p {
            str0m::net::Protocol::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        }
    }
}

/// A datagram (or one framed TCP packet) that arrived.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// UDP or TCP.
    pub proto: Protocol,
    /// The sender (for TCP: the connection's remote address).
    pub source: SocketAddr,
    /// The local address it arrived on, as announced to clients (the ICE
    /// candidate address).
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: &'a [u8],
}

/// A room of an [`Endpoint`]: an opaque, copyable key that is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId {
    slot: usize,
    generation: u64,
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "room#{}.{}", self.slot, self.generation)
    }
}

/// The room is not (or no longer) on this endpoint: it was closed, or it
/// panicked and was dropped ([`Event::RoomFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room is gone")]
pub struct RoomGone;

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// The template of every room. Its `local_addr` is the address clients
    /// send media to: the ICE candidate of every transport.
    pub room: RoomConfig,
    /// Seed of the endpoint's random generator, from which every room
    /// draws its ids, ssrcs, ICE credentials and sequence bases: a seeded
    /// endpoint is reproducible. `None`: seeded by the operating system.
    pub seed: Option<u64>,
}

/// Counters of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Open rooms.
    pub rooms: usize,
    /// Rooms dropped because they panicked.
    pub rooms_failed: u64,
    /// Datagrams routed to a room.
    pub datagrams_routed: u64,
    /// Datagrams no room expects (unknown ufrag or address).
    pub datagrams_unknown: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP.
    pub datagrams_malformed: u64,
    /// Entries of the routing table: the ICE username fragments and remote
    /// addresses that lead to a transport. Zero once every room is closed.
    pub routes: usize,
}

/// A key of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Route {
    Ufrag(String),
    /// A remote address, per protocol (a client may use the same port
    /// number for UDP and TCP).
    Addr(Protocol, SocketAddr),
}

struct Slot {
    room: Room,
    generation: u64,
    /// The earliest deadline of this room in the endpoint's timers.
    armed: Option<Instant>,
    /// This room's entries in the routing table.
    routes: HashSet<Route>,
}

/// A room borrowed from its [`Endpoint`] ([`Endpoint::room_mut`]).
pub struct RoomMut<'a> {
    endpoint: &'a mut Endpoint,
    id: RoomId,
}

impl std::ops::Deref for RoomMut<'_> {
    type Target = Room;
    fn deref(&self) -> &Room {
        // The slot exists: `room_mut` checked it and the guard holds the
        // endpoint.
        &self.endpoint.rooms[self.id.slot].room
    }
}

impl std::ops::DerefMut for RoomMut<'_> {
    fn deref_mut(&mut self) -> &mut Room {
        &mut self.endpoint.rooms[self.id.slot].room
    }
}

impl Drop for RoomMut<'_> {
    fn drop(&mut self) {
        self.endpoint.sync(self.id);
    }
}

/// Many rooms behind one socket: a sans-IO state machine.
///
/// # Methods
///
/// - Rooms: [`Endpoint::open_room`], [`Endpoint::close_room`],
///   [`Endpoint::room`] (read) and [`Endpoint::with_room`] (commands).
/// - Inputs: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`].
/// - Outputs: [`Endpoint::poll_transmit`], [`Endpoint::poll_event`],
///   [`Endpoint::poll_timeout`].
///
/// # The contract
///
/// After every input (a datagram, a timeout, a command through
/// [`Endpoint::with_room`], opening or closing a room): send every
/// [`Endpoint::poll_transmit`], handle every [`Endpoint::poll_event`], then
/// call [`Endpoint::handle_timeout`] at [`Endpoint::poll_timeout`]. That is
/// all: there is no other deadline. In particular, a forwarded RTP packet
/// leaves on a `handle_timeout`, which `poll_timeout` asks for at once (so
/// a driver may take a burst of datagrams first and send everything they
/// caused with one `handle_timeout`). Time is an argument and only moves
/// forward (an earlier `now` counts as the latest one seen).
///
/// ```
/// use std::time::Instant;
/// use pulsewave_core::{Datagram, Endpoint, EndpointConfig, Owner, Protocol};
/// use pulsewave_protocol::transport::TransportDirection;
///
/// let now = Instant::now();
/// let mut endpoint = Endpoint::new(EndpointConfig::default(), now);
/// let room = endpoint.open_room(now);
/// let options = endpoint
///     .with_room(now, room, |room, now| {
///         room.create_transport(now, Owner::new(1), TransportDirection::Recv)
///     })
///     .unwrap()
///     .unwrap();
/// assert!(options.ice_parameters.ice_lite);
///
/// // The driver's loop: datagrams in, transmits out, timers.
/// let datagram = Datagram {
///     proto: Protocol::Udp,
///     source: "127.0.0.1:5000".parse().unwrap(),
///     destination: endpoint.local_addr(),
///     contents: &[0u8; 4],
/// };
/// assert!(endpoint.handle_datagram(now, datagram).is_err()); // garbage
/// while let Some(transmit) = endpoint.poll_transmit() {
///     let _ = (transmit.destination, transmit.contents); // send on the socket
/// }
/// while let Some((room, event)) = endpoint.poll_event() {
///     println!("{room}: {event:?}");
/// }
/// if let Some(at) = endpoint.poll_timeout() {
///     endpoint.handle_timeout(at.max(now));
/// }
/// ```
pub struct Endpoint {
    config: EndpointConfig,
    rooms: Slab<Slot>,
    next_generation: u64,
    routes: HashMap<Route, (usize, TransportKey)>,
    timers: Timers<usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(RoomId, Event)>,
    rng: StdRng,
    now: Instant,
    stats: EndpointStats,
    /// Reused buffer of routing changes.
    demux_buf: Vec<DemuxChange>,
    /// The counters of rooms that closed, so totals never go down.
    retired: RoomStats,
    /// Reused buffer of the rooms due in one `handle_timeout`.
    due_rooms: Vec<(Instant, usize)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.config.room.local_addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no room, at time `now`.
    pub fn new(config: EndpointConfig, now: Instant) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            config,
            rooms: Slab::new(),
            next_generation: 1,
            routes: HashMap::new(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            now,
            stats: EndpointStats::default(),
            demux_buf: Vec::new(),
            retired: RoomStats::default(),
            due_rooms: Vec::new(),
        }
    }

    // ------------------------------------------------------------ getters

    /// The address announced to clients as every transport's candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.config.room.local_addr
    }

    /// The address announced as every transport's passive TCP candidate,
    /// if the endpoint's driver listens on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.config.room.tcp_addr
    }

    /// The second (dual-stack, usually IPv6) UDP candidate address, if the
    /// endpoint's driver has a socket of the other family.
    pub fn local_addr6(&self) -> Option<SocketAddr> {
        self.config.room.local_addr6
    }

    /// The second family's passive TCP candidate address, if any.
    pub fn tcp_addr6(&self) -> Option<SocketAddr> {
        self.config.room.tcp_addr6
    }

    /// The room template.
    pub fn room_config(&self) -> &RoomConfig {
        &self.config.room
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            rooms: self.rooms.len(),
            routes: self.routes.len(),
            ..self.stats
        }
    }

    /// A room, to read (its stats, owners of producers, ...).
    pub fn room(&self, id: RoomId) -> Option<&Room> {
        self.slot(id).map(|s| &s.room)
    }

    /// Every open room.
    pub fn rooms(&self) -> impl Iterator<Item = (RoomId, &Room)> + '_ {
        self.rooms.iter().map(|(slot, s)| {
            (
                RoomId {
                    slot,
                    generation: s.generation,
                },
                &s.room,
            )
        })
    }

    /// The sum of the counters of every room, open or closed since the
    /// endpoint started (the gauges, `transports`, `producers` and
    /// `consumers`, count open rooms only). O(rooms).
    pub fn room_stats(&self) -> RoomStats {
        let mut total = RoomStats {
            transports: 0,
            producers: 0,
            consumers: 0,
            ..self.retired
        };
        for (_, s) in &self.rooms {
            total.add(&s.room.stats());
        }
        total
    }

    fn slot(&self, id: RoomId) -> Option<&Slot> {
        self.rooms
            .get(id.slot)
            .filter(|s| s.generation == id.generation)
    }

    // -------------------------------------------------------------- rooms

    /// Opens a room with the endpoint's room template.
    pub fn open_room(&mut self, now: Instant) -> RoomId {
        let config = self.config.room.clone();
        self.open_room_with(now, config)
    }

    /// Opens a room with its own configuration (its candidate addresses,
    /// `local_addr`, `tcp_addr`, `local_addr6` and `tcp_addr6`, are the
    /// endpoint's).
    pub fn open_room_with(&mut self, now: Instant, mut config: RoomConfig) -> RoomId {
        let now = self.advance(now);
        config.local_addr = self.config.room.local_addr;
        config.tcp_addr = self.config.room.tcp_addr;
        config.local_addr6 = self.config.room.local_addr6;
        config.tcp_addr6 = self.config.room.tcp_addr6;
        let rng = StdRng::seed_from_u64(self.rng.random());
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = self.rooms.insert(Slot {
            room: Room::new(config, rng, now),
            generation,
            armed: None,
            routes: HashSet::new(),
        });
        RoomId { slot, generation }
    }

    /// Closes a room: everything in it is dropped (clients see their DTLS
    /// closed). Returns whether it was open.
    pub fn close_room(&mut self, now: Instant, id: RoomId) -> bool {
        self.advance(now);
        if self.slot(id).is_none() {
            return false;
        }
        let slot = self.rooms.remove(id.slot);
        self.retired.add(&slot.room.stats());
        for route in slot.routes {
            self.routes.remove(&route);
        }
        true
    }

    /// Runs a command on a room (`create_transport`, `produce`, `consume`,
    /// ...) with the current time, then collects what it transmits and
    /// reports. A room that panics is dropped (its other clients see their
    /// transports close, [`Event::RoomFailed`] is reported) and the others
    /// go on; the call then returns [`RoomGone`].
    pub fn with_room<R>(
        &mut self,
        now: Instant,
        id: RoomId,
        f: impl FnOnce(&mut Room, Instant) -> R,
    ) -> Result<R, RoomGone> {
        let now = self.advance(now);
        self.slot(id).ok_or(RoomGone)?;
        self.guarded(id, |room| f(room, now))
    }

    /// A room to run commands on directly: the guard derefs to the
    /// [`Room`], and when it is dropped the endpoint collects what the room
    /// transmits and reports, as after [`Endpoint::with_room`]. A panic
    /// inside is not contained here (it unwinds into the caller): a driver
    /// serving many rooms uses [`Endpoint::with_room`].
    pub fn room_mut(&mut self, now: Instant, id: RoomId) -> Option<RoomMut<'_>> {
        self.advance(now);
        self.slot(id)?;
        Some(RoomMut { endpoint: self, id })
    }

    // ------------------------------------------------------------- inputs

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Takes a datagram: routes it to its room and transport, which handles
    /// it. Errors only count; the caller drops the datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        d: Datagram<'_>,
    ) -> Result<RoomId, DatagramError> {
        let now = self.advance(now);
        // Check the framing first, so that a malformed datagram changes
        // nothing and is counted: str0m silently ignores truncated DTLS
        // records and RTP headers.
        if !is_well_formed(d.contents) {
            self.stats.datagrams_malformed += 1;
            return Err(DatagramError::Malformed);
        }
        let username = stun_username(d.contents);
        let found = username
            .and_then(|(local, remote)| {
                self.routes
                    .get(&Route::Ufrag(local.to_owned()))
                    .map(|r| (*r, Some(remote)))
            })
            .or_else(|| {
                self.routes
                    .get(&Route::Addr(d.proto, d.source))
                    .map(|r| (*r, None))
            });
        let Some(((slot, transport), remote_ufrag)) = found else {
            self.stats.datagrams_unknown += 1;
            return Err(DatagramError::UnknownSource);
        };
        let Some(generation) = self.rooms.get(slot).map(|s| s.generation) else {
            self.stats.datagrams_unknown += 1;
            return Err(DatagramError::UnknownSource);
        };
        let id = RoomId { slot, generation };
        self.stats.datagrams_routed += 1;
        let routed = Routed {
            transport,
            proto: d.proto.into(),
            source: d.source,
            destination: d.destination,
            contents: d.contents,
            remote_ufrag,
        };
        match self.guarded(id, |room| room.handle_datagram(now, routed)) {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(e),
            Err(RoomGone) => Err(DatagramError::UnknownSource),
        }
    }

    /// Runs the rooms whose timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        // The rooms due now, taken before any runs: a room that re-arms at
        // `now` waits for the next call instead of looping here.
        let mut due = std::mem::take(&mut self.due_rooms);
        while let Some(entry) = self.timers.pop_due(now) {
            due.push(entry);
        }
        for (at, slot) in due.drain(..) {
            let Some(s) = self.rooms.get_mut(slot) else {
                continue;
            };
            if s.armed == Some(at) {
                s.armed = None;
            }
            let id = RoomId {
                slot,
                generation: s.generation,
            };
            if s.room.poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.guarded(id, |room| room.handle_timeout(now));
            } else {
                self.sync(id);
            }
        }
        self.due_rooms = due;
    }

    // ------------------------------------------------------------ outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, with the room it concerns.
    pub fn poll_event(&mut self) -> Option<(RoomId, Event)> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next (O(1)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----------------------------------------------------------- internal

    /// Runs `f` on a room, catching a panic: the room is then dropped and
    /// reported, the endpoint and its other rooms go on.
    fn guarded<R>(&mut self, id: RoomId, f: impl FnOnce(&mut Room) -> R) -> Result<R, RoomGone> {
        let slot = self.rooms.get_mut(id.slot).ok_or(RoomGone)?;
        let room = &mut slot.room;
        match catch_unwind(AssertUnwindSafe(|| f(room))) {
            Ok(r) => {
                self.sync(id);
                Ok(r)
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(room = %id, panic = %message, "room panicked; it is closed, the others go on");
                let slot = self.rooms.remove(id.slot);
                for route in slot.routes {
                    self.routes.remove(&route);
                }
                // Its counters may be inconsistent after a panic: they are
                // not added to the totals.
                self.stats.rooms_failed += 1;
                self.events.push_back((id, Event::RoomFailed));
                Err(RoomGone)
            }
        }
    }

    /// Collects a room's outputs and re-arms its timer.
    fn sync(&mut self, id: RoomId) {
        let Some(slot) = self.rooms.get_mut(id.slot) else {
            return;
        };
        let mut changes = std::mem::take(&mut self.demux_buf);
        while let Some(change) = slot.room.poll_demux() {
            changes.push(change);
        }
        for change in changes.drain(..) {
            self.apply(id.slot, change);
        }
        self.demux_buf = changes;
        let Some(slot) = self.rooms.get_mut(id.slot) else {
            return;
        };
        while let Some(t) = slot.room.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(e) = slot.room.poll_event() {
            self.events.push_back((id, e));
        }
        if let Some(at) = slot.room.poll_timeout()
            && slot.armed.is_none_or(|a| at < a)
        {
            slot.armed = Some(at);
            self.timers.push(at, id.slot);
        }
    }

    /// Applies one routing change of the room in `slot`.
    fn apply(&mut self, slot: usize, change: DemuxChange) {
        let (route, target) = match change {
            DemuxChange::Ufrag(ufrag, t) => {
                let route = Route::Ufrag(ufrag);
                if self.routes.get(&route).is_some_and(|(s, _)| *s != slot) {
                    // A 144-bit random ufrag does not collide; if it ever
                    // did, the newer transport is not reachable.
                    debug!("ICE ufrag already routed to another room");
                    return;
                }
                (route, Some(t))
            }
            DemuxChange::Bind(proto, addr, t) => (Route::Addr(proto, addr), Some(t)),
            DemuxChange::Unbind(proto, addr) => (Route::Addr(proto, addr), None),
            DemuxChange::ForgetUfrag(ufrag) => (Route::Ufrag(ufrag), None),
        };
        match target {
            Some(t) => {
                // An address moves to the room that authenticated it last.
                if let Some((other, _)) = self.routes.insert(route.clone(), (slot, t))
                    && other != slot
                    && let Some(o) = self.rooms.get_mut(other)
                {
                    o.routes.remove(&route);
                }
                if let Some(s) = self.rooms.get_mut(slot) {
                    s.routes.insert(route);
                }
            }
            None => {
                if self.routes.get(&route).is_some_and(|(s, _)| *s == slot) {
                    self.routes.remove(&route);
                }
                if let Some(s) = self.rooms.get_mut(slot) {
                    s.routes.remove(&route);
                }
            }
        }
    }
}
