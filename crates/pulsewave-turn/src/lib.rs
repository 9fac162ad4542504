//! PulseWave's embedded TURN server, for participants whose network lets
//! only TLS on 443 (or only TCP) out.
//!
//! Two layers, as the rest of PulseWave (quinn-proto's split):
//!
//! - [`Server`]: a sans-IO TURN core (the RFC 8656 subset a relay needs:
//!   Allocate with long-term credentials, REALM/NONCE and
//!   MESSAGE-INTEGRITY, Refresh, CreatePermission, ChannelBind, Send and
//!   Data indications, ChannelData, lifetimes, per-user and total
//!   allocation limits, a byte-rate quota per allocation). It never reads
//!   a clock and owns no socket: time is an argument, datagrams go out
//!   through [`Server::poll_transmit`], and a relay socket is requested
//!   with [`Event::BindRelay`]. Unit-tested on a virtual clock.
//! - [`TurnServer`]: a small tokio driver with UDP, TCP and TLS
//!   (tokio-rustls, aws-lc-rs) listeners and one UDP socket per
//!   allocation, in a port range.
//!
//! Credentials are short-lived and derived, never stored
//! ([`TurnSecret`], the "TURN REST API" scheme): the signaling server
//! hands each participant `username = "<expiry>:<identity>"` and
//! `password = base64(HMAC-SHA1(secret, username))` in `iceServers`, and
//! the TURN server recomputes the password from the username.
//!
//! Relays reach only the peers in [`ServerConfig::allowed_peers`] (the
//! SFU's media addresses when embedded in `pulsewave-server`), so the
//! server is not an open relay.
//!
//! # Example
//!
//! ```
//! use std::time::{SystemTime, UNIX_EPOCH};
//! use pulsewave_turn::{IpNet, ServerConfig, TurnConfig, TurnSecret, TurnServer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), pulsewave_turn::Error> {
//! let secret = TurnSecret::derive_from_api_secret("my-api-secret");
//! let mut core = ServerConfig::new(secret.clone());
//! core.allowed_peers = vec!["127.0.0.1".parse::<IpNet>().unwrap()];
//! let mut config = TurnConfig::new(core, "127.0.0.1".parse().unwrap());
//! config.udp = Some("127.0.0.1:0".parse().unwrap());
//! let server = TurnServer::start(config).await?;
//!
//! // What the signaling server hands to participant "alice" for 5 minutes.
//! let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
//! let creds = secret.issue("alice", now + 300);
//! let urls = pulsewave_turn::client_urls("127.0.0.1", server.udp_addr().map(|a| a.port()), None, None);
//! assert_eq!(urls, vec![format!("turn:127.0.0.1:{}?transport=udp", server.udp_addr().unwrap().port())]);
//! assert!(creds.username.ends_with(":alice"));
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod driver;
mod server;
pub mod stun;

pub use auth::{Credentials, MAX_USER_LEN, MAX_USERNAME_LEN, TurnSecret, long_term_key};
pub use driver::{StatsHandle, TlsListener, TurnConfig, TurnServer, tls_config_from_pem};
pub use server::{Client, Event, IpNet, RelayId, Server, ServerConfig, Stats, Transmit, Transport};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message that is not valid STUN, TURN or ChannelData.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A listener could not be bound.
    #[error("cannot bind the TURN {what} listener on {addr}: {source}")]
    Bind {
        /// `udp`, `tcp` or `tls`.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read or used.
    #[error("TURN TLS: {0}")]
    Tls(String),
    /// Another I/O error.
    #[error("TURN I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The `turn:`/`turns:` URLs of an embedded server reachable at `host`
/// (a name, or an IP; IPv6 gets brackets), for `iceServers`: UDP, TCP and
/// TLS in that order, each only if its port is given.
pub fn client_urls(
    host: &str,
    udp: Option<u16>,
    tcp: Option<u16>,
    tls: Option<u16>,
) -> Vec<String> {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut urls = Vec::new();
    if let Some(p) = udp {
        urls.push(format!("turn:{host}:{p}?transport=udp"));
    }
    if let Some(p) = tcp {
        urls.push(format!("turn:{host}:{p}?transport=tcp"));
    }
    if let Some(p) = tls {
        urls.push(format!("turns:{host}:{p}?transport=tcp"));
    }
    urls
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(
            super::client_urls("turn.example.com", Some(3478), Some(3478), Some(443)),
            vec![
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp",
            ]
        );
        assert_eq!(
            super::client_urls("::1", Some(3478), None, None),
            vec!["turn:[::1]:3478?transport=udp"]
        );
    }
}
