//! Routing datagrams to their owner: by ICE username fragment for STUN, then
//! by the remote address learned from it — as mediasoup's WebRtcServer and
//! LiveKit's single-port mode do.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use crate::stun::stun_username;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a, K> {
    /// The owner.
    pub key: K,
    /// For a STUN binding request: the sender's ICE username fragment.
    pub remote_ufrag: Option<&'a str>,
}

/// A table from ICE username fragments and remote addresses to keys (a room,
/// a transport). Sans-IO: it only looks at bytes.
#[derive(Debug, Clone)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, K>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes STUN requests whose USERNAME starts with `ufrag` to `key`.
    pub fn insert_ufrag(&mut self, ufrag: impl Into<String>, key: K) {
        self.by_ufrag.insert(ufrag.into(), key);
    }

    /// Forgets every ufrag and address of `key`.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
    }

    /// The owner of a datagram from `source`. A STUN request naming a known
    /// ufrag routes by it and (re)binds `source` to its owner; anything else
    /// routes by `source`. The request is not authenticated here: a forged
    /// one rebinds its source address (see [`Demux::lookup`]).
    pub fn route<'a>(&mut self, source: SocketAddr, datagram: &'a [u8]) -> Option<Route<'a, K>> {
        if let Some((local, remote)) = stun_username(datagram)
            && let Some(&key) = self.by_ufrag.get(local)
        {
            if self.by_addr.get(&source) != Some(&key) {
                self.by_addr.insert(source, key);
            }
            return Some(Route {
                key,
                remote_ufrag: Some(remote),
            });
        }
        self.by_addr.get(&source).map(|&key| Route {
            key,
            remote_ufrag: None,
        })
    }

    /// Like [`Demux::route`], without binding anything: for a caller that
    /// authenticates a STUN request first and then calls [`Demux::bind`].
    pub fn lookup<'a>(&self, source: SocketAddr, datagram: &'a [u8]) -> Option<Route<'a, K>> {
        if let Some((local, remote)) = stun_username(datagram)
            && let Some(&key) = self.by_ufrag.get(local)
        {
            return Some(Route {
                key,
                remote_ufrag: Some(remote),
            });
        }
        self.by_addr.get(&source).map(|&key| Route {
            key,
            remote_ufrag: None,
        })
    }

    /// Routes traffic from `source` to `key` from now on.
    pub fn bind(&mut self, source: SocketAddr, key: K) {
        if self.by_addr.get(&source) != Some(&key) {
            self.by_addr.insert(source, key);
        }
    }

    /// The owner of traffic from `source`, without looking at the payload.
    pub fn by_address(&self, source: &SocketAddr) -> Option<K> {
        self.by_addr.get(source).copied()
    }

    /// Remote addresses bound to `key`.
    pub fn addresses_of(&self, key: K) -> impl Iterator<Item = &SocketAddr> {
        self.by_addr
            .iter()
            .filter(move |(_, k)| **k == key)
            .map(|(a, _)| a)
    }

    /// Number of ufrags known.
    pub fn len(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
    }
}
