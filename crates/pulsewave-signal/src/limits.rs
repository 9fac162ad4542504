//! Node-wide limits: WebSocket connections per client IP and per identity,
//! the client IP behind trusted proxies, and the counters of every limit
//! crossed (`pulsewave_limit_hits_total` in `GET /metrics`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderMap;

use crate::config::IpNet;

/// A limit that can be crossed; one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `RATE_LIMIT`: a frame dropped.
    Rate,
    /// `MAX_MESSAGE_SIZE`: a message refused.
    MessageSize,
    /// `MAX_PARTICIPANTS`: a join refused.
    Participants,
    /// `MAX_ROOMS`: a room not created.
    Rooms,
    /// `MAX_CONNECTIONS_PER_IP`: an upgrade refused.
    ConnectionsPerIp,
    /// `MAX_CONNECTIONS_PER_IDENTITY`: an upgrade refused.
    ConnectionsPerIdentity,
    /// `JOIN_TIMEOUT`: a socket closed without joining.
    JoinTimeout,
    /// `OUTBOUND_QUEUE` or `WS_SEND_TIMEOUT`: a slow reader disconnected.
    SlowClient,
    /// `MAX_TRACKS_PER_PARTICIPANT`: a publish refused.
    Tracks,
    /// `MAX_DATA_CHANNELS_PER_PARTICIPANT`: a data channel refused.
    DataChannels,
    /// `MAX_ROOM_LISTING_BYTES`: a join or publish refused.
    RoomListing,
}

impl Limit {
    pub(crate) const ALL: [Limit; 11] = [
        Limit::Rate,
        Limit::MessageSize,
        Limit::Participants,
        Limit::Rooms,
        Limit::ConnectionsPerIp,
        Limit::ConnectionsPerIdentity,
        Limit::JoinTimeout,
        Limit::SlowClient,
        Limit::Tracks,
        Limit::DataChannels,
        Limit::RoomListing,
    ];

    /// The `limit` label in `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::MessageSize => "message_size",
            Limit::Participants => "participants_per_room",
            Limit::Rooms => "rooms_per_node",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::ConnectionsPerIdentity => "connections_per_identity",
            Limit::JoinTimeout => "join_timeout",
            Limit::SlowClient => "slow_client",
            Limit::Tracks => "tracks_per_participant",
            Limit::DataChannels => "data_channels_per_participant",
            Limit::RoomListing => "room_listing_bytes",
        }
    }
}

/// How often each limit was crossed, and the node's participants by
/// connection quality.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: [AtomicU64; Limit::ALL.len()],
    /// Participants whose last `connection-quality` was excellent, good,
    /// poor, lost (indexed by `Quality as usize`, as `RoomSummary`).
    quality: [AtomicI64; 4],
}

impl Counters {
    /// A participant's quality went from `old` to `new` (`None`: not
    /// known yet, or the participant left).
    pub(crate) fn quality_changed(
        &self,
        old: Option<pulsewave_protocol::Quality>,
        new: Option<pulsewave_protocol::Quality>,
    ) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.quality[o as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(n) = new {
            self.quality[n as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The node's participants by quality: excellent, good, poor, lost.
    pub(crate) fn quality(&self) -> [i64; 4] {
        std::array::from_fn(|i| self.quality[i].load(Ordering::Relaxed).max(0))
    }

    pub(crate) fn hit(&self, limit: Limit) {
        self.hits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, limit: Limit) -> u64 {
        self.hits[limit as usize].load(Ordering::Relaxed)
    }
}

/// Open connections per key, with a cap.
#[derive(Debug)]
struct Table<K> {
    max: u32,
    open: Mutex<HashMap<K, u32>>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(max: u32) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(&self, key: &K) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, key: &K) {
        if self.max == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(key);
            }
        }
    }
}

/// Counts the open WebSocket connections per client IP and per identity.
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    per_ip: Table<IpAddr>,
    per_identity: Table<String>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Ip(u32),
    Identity(u32),
}

/// A connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
    identity: String,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.per_ip.release(&self.ip);
        self.limiter.per_identity.release(&self.identity);
    }
}

impl ConnectionLimiter {
    pub(crate) fn new(per_ip: u32, per_identity: u32) -> Arc<Self> {
        Arc::new(Self {
            per_ip: Table::new(per_ip),
            per_identity: Table::new(per_identity),
        })
    }

    /// Takes a place for one more connection from `ip` as `identity`.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        identity: &str,
    ) -> Result<ConnectionPermit, Refused> {
        if !self.per_ip.acquire(&ip) {
            return Err(Refused::Ip(self.per_ip.max));
        }
        let identity = identity.to_owned();
        if !self.per_identity.acquire(&identity) {
            self.per_ip.release(&ip);
            return Err(Refused::Identity(self.per_identity.max));
        }
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
            identity,
        })
    }
}

/// The client's IP: the TCP peer's, unless the peer is a trusted proxy; then
/// the right-most `X-Forwarded-For` address that is not itself a trusted
/// proxy (what the proxy nearest the client saw). An unparsable header
/// falls back to the peer. Without trusted proxies the header is ignored, so
/// a client cannot pick the IP it is counted under.
pub(crate) fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !trusted.iter().any(|n| n.contains(peer_ip)) {
        return peer_ip;
    }
    // Every X-Forwarded-For header, in order, is one list.
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer_ip;
        };
        // A bounded walk: a header is at most hyper's header size anyway.
        hops.extend(value.split(',').map(str::trim).take(64));
    }
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return peer_ip;
        };
        let ip = canonical(ip);
        if !trusted.iter().any(|n| n.contains(ip)) {
            return ip;
        }
    }
    peer_ip
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_by_quality_follow_changes_and_departures() {
        use pulsewave_protocol::Quality;
        let c = Counters::default();
        c.quality_changed(None, Some(Quality::Excellent));
        c.quality_changed(None, Some(Quality::Excellent));
        c.quality_changed(Some(Quality::Excellent), Some(Quality::Poor));
        assert_eq!(c.quality(), [1, 0, 1, 0]);
        c.quality_changed(Some(Quality::Poor), Some(Quality::Poor));
        assert_eq!(c.quality(), [1, 0, 1, 0], "no change, no count");
        c.quality_changed(Some(Quality::Poor), None);
        c.quality_changed(None, None);
        assert_eq!(c.quality(), [1, 0, 0, 0], "a departure leaves the gauge");
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // No trusted proxy: the header is ignored.
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), &[]), ip("10.0.0.5"));
        let trusted = [net("10.0.0.0/8")];
        // From the proxy: its view of the client.
        assert_eq!(
            client_ip(peer, &headers(&["1.2.3.4"]), &trusted),
            ip("1.2.3.4")
        );
        // A client-supplied left part does not help: the proxy appended the real peer.
        assert_eq!(
            client_ip(peer, &headers(&["6.6.6.6, 1.2.3.4"]), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(peer, &headers(&["6.6.6.6", "1.2.3.4, 10.1.1.1"]), &trusted),
            ip("1.2.3.4")
        );
        // Garbage or nothing: the peer.
        assert_eq!(
            client_ip(peer, &headers(&["nope"]), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(peer, &headers(&[]), &trusted), ip("10.0.0.5"));
        assert_eq!(
            client_ip(peer, &headers(&["[2001:db8::1]:443"]), &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ip_networks() {
        let n = net("192.168.0.0/16");
        assert!(n.contains("192.168.3.4".parse().unwrap()));
        assert!(!n.contains("192.169.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(net("::1").contains("::1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("ten".parse::<IpNet>().is_err());
    }

    #[test]
    fn permits_are_given_back() {
        let l = ConnectionLimiter::new(2, 1);
        let ip: IpAddr = "1.1.1.1".parse().unwrap();
        let a = l.acquire(ip, "a").ok();
        assert!(a.is_some());
        assert_eq!(l.acquire(ip, "a").err(), Some(Refused::Identity(1)));
        let b = l.acquire(ip, "b").ok();
        assert!(b.is_some());
        assert_eq!(l.acquire(ip, "c").err(), Some(Refused::Ip(2)));
        drop(a);
        assert!(l.acquire(ip, "a").is_ok());
    }
}
