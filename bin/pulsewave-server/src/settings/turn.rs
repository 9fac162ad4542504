//! `TURN_*`: the embedded TURN server (`pulsewave-turn`), off by default.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use pulsewave_protocol::transport::{IceServer, IceUrls};
use pulsewave_signal::ParticipantIceServers;
use pulsewave_turn::{IpNet, ServerConfig, TlsListener, TurnConfig, TurnSecret};

use super::{ConfigError, Source, err, parse_bool, parse_duration, parse_num};

/// Embedded TURN server options. Each flag also reads the variable named
/// in its help.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TurnArgs {
    /// Run the embedded TURN server [env: TURN_ENABLED] (default false).
    #[arg(long, value_name = "BOOL")]
    pub(crate) turn_enabled: Option<String>,
    /// TURN over UDP port, 0: off [env: TURN_UDP_PORT] (default 3478).
    #[arg(long)]
    pub(crate) turn_udp_port: Option<String>,
    /// TURN over TCP port, 0: off [env: TURN_TCP_PORT] (default 3478).
    #[arg(long)]
    pub(crate) turn_tcp_port: Option<String>,
    /// TURN over TLS port, 0: off [env: TURN_TLS_PORT] (default 5349 when
    /// a certificate is given).
    #[arg(long)]
    pub(crate) turn_tls_port: Option<String>,
    /// PEM certificate chain of the TLS listener [env: TURN_CERT_FILE].
    #[arg(long, value_name = "PATH")]
    pub(crate) turn_cert_file: Option<String>,
    /// PEM private key of the TLS listener [env: TURN_KEY_FILE].
    #[arg(long, value_name = "PATH")]
    pub(crate) turn_key_file: Option<String>,
    /// Host name in `turns:` URLs, matching the certificate [env: TURN_DOMAIN].
    #[arg(long)]
    pub(crate) turn_domain: Option<String>,
}

/// The embedded TURN server's configuration and what clients are told.
#[derive(Debug, Clone)]
pub(crate) struct TurnSettings {
    pub(crate) config: TurnConfig,
    pub(crate) secret: TurnSecret,
    /// Lifetime of the credentials handed out.
    pub(crate) ttl: Duration,
    /// `turn:`/`turns:` URLs handed to clients.
    pub(crate) urls: Vec<String>,
}

impl TurnSettings {
    /// Per-participant `iceServers`: the URLs with credentials for the
    /// participant's identity, valid for `ttl` from now.
    pub(crate) fn participant_ice_servers(&self) -> ParticipantIceServers {
        let secret = self.secret.clone();
        let ttl = self.ttl.as_secs();
        let urls = self.urls.clone();
        ParticipantIceServers::new(move |identity| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let creds = secret.issue(identity, now + ttl);
            vec![IceServer {
                urls: IceUrls::Many(urls.clone()),
                username: Some(creds.username),
                credential: Some(creds.password),
            }]
        })
    }
}

fn port(
    src: &Source<'_>,
    flag: &Option<String>,
    var: &'static str,
    default: u16,
) -> Result<Option<u16>, ConfigError> {
    let p: u16 = match src.get(flag, var) {
        Some(v) => parse_num(var, &v, "a port number (0: off)")?,
        None => default,
    };
    Ok((p != 0).then_some(p))
}

fn count(src: &Source<'_>, var: &'static str, default: usize) -> Result<usize, ConfigError> {
    match src.get(&None, var) {
        Some(v) => {
            let n: usize = parse_num(var, &v, "a positive number")?;
            if n == 0 {
                return Err(err(var, "must be at least 1"));
            }
            Ok(n)
        }
        None => Ok(default),
    }
}

/// Reads `TURN_*`. `None` when the server is off.
pub(crate) fn load(
    args: &TurnArgs,
    src: &Source<'_>,
    api_secret: &str,
    media_listen_ip: IpAddr,
    media_announced_ip: IpAddr,
) -> Result<Option<TurnSettings>, ConfigError> {
    let enabled = match src.get(&args.turn_enabled, "TURN_ENABLED") {
        Some(v) => parse_bool("TURN_ENABLED", &v)?,
        None => false,
    };
    if !enabled {
        return Ok(None);
    }
    let listen_ip: IpAddr = match src.get(&None, "TURN_LISTEN_IP") {
        Some(v) => parse_num("TURN_LISTEN_IP", &v, "an IP address")?,
        None => media_listen_ip,
    };
    let announced_ip: IpAddr = match src.get(&None, "TURN_ANNOUNCED_IP") {
        Some(v) => parse_num("TURN_ANNOUNCED_IP", &v, "an IP address")?,
        None => media_announced_ip,
    };
    if announced_ip.is_ipv6() != listen_ip.is_ipv6() {
        return Err(err(
            "TURN_ANNOUNCED_IP",
            format!(
                "{announced_ip} and TURN_LISTEN_IP {listen_ip} are not the same address \
                 family (relays are IPv4 or IPv6, not both: set TURN_LISTEN_IP, e.g. 0.0.0.0)"
            ),
        ));
    }
    let udp = port(src, &args.turn_udp_port, "TURN_UDP_PORT", 3478)?;
    let tcp = port(src, &args.turn_tcp_port, "TURN_TCP_PORT", 3478)?;
    let cert = src
        .get(&args.turn_cert_file, "TURN_CERT_FILE")
        .map(PathBuf::from);
    let key = src
        .get(&args.turn_key_file, "TURN_KEY_FILE")
        .map(PathBuf::from);
    let tls_port = port(
        src,
        &args.turn_tls_port,
        "TURN_TLS_PORT",
        if cert.is_some() { 5349 } else { 0 },
    )?;
    let tls = match (tls_port, cert, key) {
        (None, _, _) => None,
        (Some(p), Some(cert), Some(key)) => {
            let config = pulsewave_turn::tls_config_from_pem(&cert, &key)
                .map_err(|e| err("TURN_CERT_FILE", e.to_string()))?;
            Some(TlsListener {
                listen: SocketAddr::new(listen_ip, p),
                config,
            })
        }
        (Some(_), None, _) => return Err(err("TURN_CERT_FILE", "required for TURN_TLS_PORT")),
        (Some(_), _, None) => return Err(err("TURN_KEY_FILE", "required for TURN_CERT_FILE")),
    };
    // The port in `turns:` URLs: 443 when a load balancer or an SNI router
    // forwards 443 to TURN_TLS_PORT (docs/decisions.md).
    let tls_announced_port = match src.get(&None, "TURN_TLS_ANNOUNCED_PORT") {
        Some(v) => Some(parse_num::<u16>(
            "TURN_TLS_ANNOUNCED_PORT",
            &v,
            "a port number",
        )?),
        None => tls_port,
    };
    if udp.is_none() && tcp.is_none() && tls.is_none() {
        return Err(err(
            "TURN_ENABLED",
            "every TURN listener is off (TURN_UDP_PORT, TURN_TCP_PORT, TURN_TLS_PORT)",
        ));
    }
    let domain = src.get(&args.turn_domain, "TURN_DOMAIN");
    let relay_min: u16 = match src.get(&None, "TURN_RELAY_MIN_PORT") {
        Some(v) => parse_num("TURN_RELAY_MIN_PORT", &v, "a port number")?,
        None => 51000,
    };
    let relay_max: u16 = match src.get(&None, "TURN_RELAY_MAX_PORT") {
        Some(v) => parse_num("TURN_RELAY_MAX_PORT", &v, "a port number")?,
        None => 51999,
    };
    if relay_min == 0 || relay_min > relay_max {
        return Err(err(
            "TURN_RELAY_MAX_PORT",
            format!("{relay_min}-{relay_max} is not a port range"),
        ));
    }
    let secret = match src.get(&None, "TURN_SECRET") {
        Some(s) if s.len() < 16 => {
            return Err(err("TURN_SECRET", "must be at least 16 characters"));
        }
        Some(s) => TurnSecret::new(s.as_bytes()),
        None => TurnSecret::derive_from_api_secret(api_secret),
    };
    let ttl = match src.get(&None, "TURN_CREDENTIAL_TTL") {
        Some(v) => parse_duration("TURN_CREDENTIAL_TTL", &v)?,
        None => Duration::from_secs(600),
    };
    let allowed_peers = match src.get(&None, "TURN_ALLOWED_PEERS") {
        Some(v) => v
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.parse::<IpNet>().map_err(|e| err("TURN_ALLOWED_PEERS", e)))
            .collect::<Result<Vec<_>, _>>()?,
        // Only this node's media addresses: not an open relay.
        None => {
            let mut peers = vec![IpNet::host(media_announced_ip)];
            if !media_listen_ip.is_unspecified() && media_listen_ip != media_announced_ip {
                peers.push(IpNet::host(media_listen_ip));
            }
            peers
        }
    };
    let mut core = ServerConfig::new(secret.clone());
    if let Some(realm) = src.get(&None, "TURN_REALM") {
        core.realm = realm;
    }
    core.relay_announced_ip = Some(announced_ip);
    core.relay_ipv6 = listen_ip.is_ipv6();
    core.allowed_peers = allowed_peers;
    core.max_allocations = count(src, "TURN_MAX_ALLOCATIONS", 1000)?;
    core.max_allocations_per_user = count(src, "TURN_MAX_ALLOCATIONS_PER_USER", 12)?;
    core.max_bytes_per_second = match src.get(&None, "TURN_MAX_BITRATE") {
        Some(v) => parse_num::<u64>("TURN_MAX_BITRATE", &v, "bits per second (0: no limit)")? / 8,
        None => 50_000_000 / 8,
    };
    let mut config = TurnConfig::new(core, listen_ip);
    config.udp = udp.map(|p| SocketAddr::new(listen_ip, p));
    config.tcp = tcp.map(|p| SocketAddr::new(listen_ip, p));
    config.tls = tls;
    config.relay_ports = Some((relay_min, relay_max));
    let ip = announced_ip.to_string();
    let mut urls = pulsewave_turn::client_urls(&ip, udp, tcp, None);
    urls.extend(pulsewave_turn::client_urls(
        domain.as_deref().unwrap_or(&ip),
        None,
        None,
        tls_announced_port.filter(|_| config.tls.is_some()),
    ));
    Ok(Some(TurnSettings {
        config,
        secret,
        ttl,
        urls,
    }))
}

#[cfg(test)]
mod tests {
    use crate::settings::tests::load;

    const PROD: [(&str, &str); 3] = [
        ("API_KEY", "key"),
        ("API_SECRET", "a-secret-of-sixteen-plus"),
        ("MEDIASOUP_ANNOUNCED_IP", "203.0.113.10"),
    ];

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = PROD.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn off_by_default_in_production_and_dev() {
        assert!(load(&PROD, false).unwrap().turn.is_none());
        assert!(load(&[], true).unwrap().turn.is_none());
        assert!(
            load(&PROD, false)
                .unwrap()
                .server
                .participant_ice_servers
                .is_none()
        );
    }

    #[test]
    fn enabled_defaults_relay_only_to_this_node() {
        let s = load(&with(&[("TURN_ENABLED", "true")]), false).unwrap();
        let t = s.turn.unwrap();
        assert_eq!(
            t.urls,
            vec![
                "turn:203.0.113.10:3478?transport=udp",
                "turn:203.0.113.10:3478?transport=tcp"
            ]
        );
        assert_eq!(t.config.udp.unwrap().port(), 3478);
        assert!(t.config.tls.is_none());
        assert_eq!(t.config.relay_ports, Some((51000, 51999)));
        assert_eq!(t.ttl.as_secs(), 600);
        let core = &t.config.core;
        assert_eq!(
            core.relay_announced_ip,
            Some("203.0.113.10".parse().unwrap())
        );
        assert!(
            core.allowed_peers
                .iter()
                .any(|n| n.contains("203.0.113.10".parse().unwrap()))
        );
        assert!(
            !core
                .allowed_peers
                .iter()
                .any(|n| n.contains("10.0.0.1".parse().unwrap()))
        );
        // The iceServers entry carries the participant's credentials.
        let ice = s
            .server
            .participant_ice_servers
            .unwrap()
            .for_identity("alice");
        assert_eq!(ice.len(), 1);
        let username = ice[0].username.clone().unwrap();
        assert!(username.ends_with(":alice"));
        assert_eq!(
            ice[0].credential.as_deref(),
            Some(t.secret.password(&username).as_str())
        );
    }

    #[test]
    fn tls_with_a_domain_announced_on_443() {
        let dir = std::env::temp_dir().join(format!("pw-turn-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["turn.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.join("turn.pem");
        let key_file = dir.join("turn.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let (c, k) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
        let s = load(
            &with(&[
                ("TURN_ENABLED", "1"),
                ("TURN_UDP_PORT", "0"),
                ("TURN_CERT_FILE", c),
                ("TURN_KEY_FILE", k),
                ("TURN_DOMAIN", "turn.example.com"),
                ("TURN_TLS_ANNOUNCED_PORT", "443"),
            ]),
            false,
        )
        .unwrap();
        let t = s.turn.unwrap();
        assert_eq!(t.config.tls.as_ref().unwrap().listen.port(), 5349);
        assert!(t.config.udp.is_none());
        assert_eq!(
            t.urls,
            vec![
                "turn:203.0.113.10:3478?transport=tcp",
                "turns:turn.example.com:443?transport=tcp"
            ]
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, var) in [
            (&[("TURN_ENABLED", "maybe")][..], "TURN_ENABLED"),
            (
                &[("TURN_ENABLED", "true"), ("TURN_TLS_PORT", "5349")][..],
                "TURN_CERT_FILE",
            ),
            (
                &[
                    ("TURN_ENABLED", "true"),
                    ("TURN_CERT_FILE", "/nonexistent.pem"),
                    ("TURN_KEY_FILE", "/nonexistent.key"),
                ][..],
                "TURN_CERT_FILE",
            ),
            (
                &[
                    ("TURN_ENABLED", "true"),
                    ("TURN_UDP_PORT", "0"),
                    ("TURN_TCP_PORT", "0"),
                ][..],
                "TURN_ENABLED",
            ),
            (
                &[("TURN_ENABLED", "true"), ("TURN_RELAY_MIN_PORT", "60000")][..],
                "TURN_RELAY_MAX_PORT",
            ),
            (
                &[("TURN_ENABLED", "true"), ("TURN_SECRET", "short")][..],
                "TURN_SECRET",
            ),
            (
                &[("TURN_ENABLED", "true"), ("TURN_ALLOWED_PEERS", "nope")][..],
                "TURN_ALLOWED_PEERS",
            ),
            (
                &[("TURN_ENABLED", "true"), ("TURN_ANNOUNCED_IP", "::1")][..],
                "TURN_ANNOUNCED_IP",
            ),
        ] {
            let e = load(&with(vars), false)
                .err()
                .unwrap_or_else(|| panic!("{vars:?} accepted"));
            assert_eq!(e.var, var, "{vars:?}: {e}");
        }
    }
}
