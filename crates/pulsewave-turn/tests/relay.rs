//! The TURN server over real sockets on 127.0.0.1: a minimal TURN client
//! (written here with the crate's STUN codec) allocates over UDP, TCP and
//! TLS (a test CA made with rcgen), gets a relayed address, and exchanges
//! datagrams with a UDP peer through Send/Data indications and channels.
//! Wrong and expired credentials are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulsewave_turn::stun::{self, ChannelData, Class, Message, MessageBuilder, attr, method};
use pulsewave_turn::{
    IpNet, ServerConfig, TlsListener, TurnConfig, TurnSecret, TurnServer, long_term_key,
    tls_config_from_pem,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::rustls;

/// Bounds a failure only; every wait is for a message.
const WAIT: Duration = Duration::from_secs(5);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn Stream>, Vec<u8>),
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Conn::Stream(s, _) => s.write_all(bytes).await.unwrap(),
        }
    }

    /// The next STUN message or ChannelData from the server.
    async fn recv(&mut self) -> Vec<u8> {
        match self {
            Conn::Udp(s, _) => {
                let mut buf = vec![0u8; 65536];
                let (n, _) = timeout(WAIT, s.recv_from(&mut buf))
                    .await
                    .expect("no datagram from the TURN server")
                    .unwrap();
                buf.truncate(n);
                buf
            }
            Conn::Stream(s, buf) => loop {
                if let Some(n) = stun::stream_frame_len(buf).unwrap() {
                    return buf.drain(..n).collect();
                }
                let mut chunk = [0u8; 4096];
                let n = timeout(WAIT, s.read(&mut chunk))
                    .await
                    .expect("nothing from the TURN server")
                    .unwrap();
                assert!(n > 0, "the TURN server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

struct TurnClient {
    conn: Conn,
    username: String,
    key: [u8; 16],
    nonce: String,
    realm: String,
    tid: u8,
}

impl TurnClient {
    fn tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        [self.tid; 12]
    }

    async fn request(&mut self, method: u16, add: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let tid = self.tid();
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        add(&mut b);
        if !self.nonce.is_empty() {
            b.add(attr::USERNAME, self.username.as_bytes())
                .add(attr::REALM, self.realm.as_bytes())
                .add(attr::NONCE, self.nonce.as_bytes());
        }
        let bytes = if self.nonce.is_empty() {
            b.finish()
        } else {
            b.finish_with_integrity(&self.key)
        };
        self.conn.send(&bytes).await;
        loop {
            let r = self.conn.recv().await;
            if let Ok(m) = Message::parse(&r)
                && m.transaction_id == tid
            {
                return r;
            }
        }
    }

    /// Allocate: first unauthenticated (401 gives realm and nonce), then
    /// with credentials. Returns the relayed address or the error code.
    async fn allocate(
        conn: Conn,
        username: &str,
        password: &str,
    ) -> (Self, Result<SocketAddr, u16>) {
        let mut c = Self {
            conn,
            username: username.into(),
            key: [0; 16],
            nonce: String::new(),
            realm: String::new(),
            tid: 0,
        };
        let transport = |b: &mut MessageBuilder| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        };
        let r = c.request(method::ALLOCATE, transport).await;
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.error_code().map(|e| e.0), Some(401));
        c.realm = m.get_str(attr::REALM).unwrap().into();
        c.nonce = m.get_str(attr::NONCE).unwrap().into();
        c.key = long_term_key(username, &c.realm, password);
        let r = c.request(method::ALLOCATE, transport).await;
        let m = Message::parse(&r).unwrap();
        let result = match m.class {
            Class::Success => {
                assert!(m.verify_integrity(&c.key), "response integrity");
                Ok(m.get_xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap())
            }
            _ => Err(m.error_code().unwrap().0),
        };
        (c, result)
    }

    async fn expect_success(&mut self, method: u16, add: impl FnOnce(&mut MessageBuilder)) {
        let r = self.request(method, add).await;
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class, Class::Success, "{:?}", m.error_code());
        assert!(m.verify_integrity(&self.key));
    }

    /// The next Data indication or ChannelData: (peer or channel, data).
    async fn recv_data(&mut self) -> (Result<SocketAddr, u16>, Vec<u8>) {
        loop {
            let r = self.conn.recv().await;
            if let Ok(cd) = ChannelData::parse(&r) {
                return (Err(cd.channel), cd.data.to_vec());
            }
            let m = Message::parse(&r).unwrap();
            if m.method == method::DATA && m.class == Class::Indication {
                return (
                    Ok(m.get_xor_addr(attr::XOR_PEER_ADDRESS).unwrap()),
                    m.get(attr::DATA).unwrap().to_vec(),
                );
            }
        }
    }
}

struct Setup {
    server: TurnServer,
    secret: TurnSecret,
    tls_client: tokio_rustls::TlsConnector,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A CA and a certificate for `localhost` and 127.0.0.1, written as PEM
/// files (the server reads files, as in production).
fn certificates() -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls::RootCertStore,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    // One folder per call: the tests of this file run in parallel.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pw-turn-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let cert_file = dir.join("turn.pem");
    let key_file = dir.join("turn.key");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    (cert_file, key_file, roots)
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(f: impl FnOnce(&mut TurnConfig)) -> Setup {
    let (cert_file, key_file, roots) = certificates();
    let secret = TurnSecret::derive_from_api_secret("integration secret");
    let mut core = ServerConfig::new(secret.clone());
    core.allowed_peers = vec![IpNet::host("127.0.0.1".parse().unwrap())];
    let mut config = TurnConfig::new(core, "127.0.0.1".parse().unwrap());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.udp = Some(any);
    config.tcp = Some(any);
    config.tls = Some(TlsListener {
        listen: any,
        config: tls_config_from_pem(&cert_file, &key_file).unwrap(),
    });
    f(&mut config);
    let server = TurnServer::start(config).await.unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Setup {
        server,
        secret,
        tls_client: tokio_rustls::TlsConnector::from(Arc::new(client)),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Udp,
    Tcp,
    Tls,
}

async fn connect(s: &Setup, kind: Kind) -> Conn {
    match kind {
        Kind::Udp => {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            Conn::Udp(sock, s.server.udp_addr().unwrap())
        }
        Kind::Tcp => {
            let t = TcpStream::connect(s.server.tcp_addr().unwrap())
                .await
                .unwrap();
            Conn::Stream(Box::new(t), Vec::new())
        }
        Kind::Tls => {
            let t = TcpStream::connect(s.server.tls_addr().unwrap())
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = s.tls_client.connect(name, t).await.unwrap();
            Conn::Stream(Box::new(tls), Vec::new())
        }
    }
}

async fn relay_roundtrip(s: &Setup, kind: Kind) {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let creds = s.secret.issue(&format!("alice-{kind:?}"), now_unix() + 300);
    let (mut c, relayed) =
        TurnClient::allocate(connect(s, kind).await, &creds.username, &creds.password).await;
    let relayed = relayed.unwrap_or_else(|code| panic!("{kind:?}: allocate refused: {code}"));
    assert_eq!(relayed.ip(), peer_addr.ip());

    // Send indication → the peer sees the datagram from the relayed address.
    c.expect_success(method::CREATE_PERMISSION, |b| {
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    })
    .await;
    let tid = c.tid();
    let mut b = MessageBuilder::new(Class::Indication, method::SEND, tid);
    b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr)
        .add(attr::DATA, b"hello peer");
    c.conn.send(&b.finish_plain()).await;
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed), "{kind:?}");

    // The peer answers → a Data indication.
    peer.send_to(b"hello client", relayed).await.unwrap();
    assert_eq!(
        c.recv_data().await,
        (Ok(peer_addr), b"hello client".to_vec())
    );

    // A channel, both ways.
    c.expect_success(method::CHANNEL_BIND, |b| {
        b.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
            .add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    })
    .await;
    let pad = !matches!(kind, Kind::Udp);
    c.conn
        .send(&ChannelData::encode(0x4000, b"over the channel", pad))
        .await;
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"over the channel"[..], relayed));
    peer.send_to(b"back", relayed).await.unwrap();
    assert_eq!(c.recv_data().await, (Err(0x4000), b"back".to_vec()));

    // Refresh to 0 releases the relay.
    c.expect_success(method::REFRESH, |b| {
        b.add_u32(attr::LIFETIME, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_and_relay_over_udp_tcp_and_tls() {
    let s = setup().await;
    for kind in [Kind::Udp, Kind::Tcp, Kind::Tls] {
        relay_roundtrip(&s, kind).await;
    }
    let stats = s.server.stats().await;
    assert_eq!(stats.allocations_created, 3);
    assert_eq!(stats.allocations, 0);
    assert_eq!(stats.packets_to_peers, 6);
    assert_eq!(stats.packets_to_clients, 6);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_credentials_are_refused() {
    let s = setup().await;
    for kind in [Kind::Udp, Kind::Tls] {
        let creds = s.secret.issue("mallory", now_unix() + 300);
        let (_, r) = TurnClient::allocate(connect(&s, kind).await, &creds.username, "guess").await;
        assert_eq!(r, Err(401), "{kind:?} wrong password");

        let other =
            TurnSecret::derive_from_api_secret("another server").issue("mallory", now_unix() + 300);
        let (_, r) =
            TurnClient::allocate(connect(&s, kind).await, &other.username, &other.password).await;
        assert_eq!(r, Err(401), "{kind:?} another secret");

        let expired = s.secret.issue("alice", now_unix() - 1);
        let (_, r) = TurnClient::allocate(
            connect(&s, kind).await,
            &expired.username,
            &expired.password,
        )
        .await;
        assert_eq!(r, Err(401), "{kind:?} expired");
    }
    let stats = s.server.stats().await;
    assert_eq!(stats.allocations_created, 0);
    assert_eq!(stats.auth_failures, 6);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_tcp_connection_releases_its_allocation_and_non_turn_bytes_close_it() {
    let s = setup().await;
    let creds = s.secret.issue("alice", now_unix() + 300);
    let (c, r) = TurnClient::allocate(
        connect(&s, Kind::Tcp).await,
        &creds.username,
        &creds.password,
    )
    .await;
    r.unwrap();
    assert_eq!(s.server.stats().await.allocations, 1);
    drop(c);
    // Poll the state until the connection task has told the core (bounded).
    timeout(WAIT, async {
        while s.server.stats().await.allocations != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("allocation not released when its connection closed");

    // An HTTP request, or a TLS ClientHello, on the TURN TCP port: the
    // server closes the connection at once.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[
            0x16, 0x03, 0x01, 0x00, 0xC0, 0x01, 0x00, 0x00, 0xBC, 0x03, 0x03,
        ][..],
    ] {
        let mut t = TcpStream::connect(s.server.tcp_addr().unwrap())
            .await
            .unwrap();
        t.write_all(junk).await.unwrap();
        let mut buf = [0u8; 16];
        let n = timeout(WAIT, t.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
    }
    s.server.shutdown().await;
}

/// Reads until the server closes the connection (bounded by `WAIT`).
async fn closed_by_server(t: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match timeout(WAIT, t.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_excess_tcp_connections_are_closed() {
    let s = setup_with(|c| {
        c.max_connections_per_ip = 2;
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = s.server.tcp_addr().unwrap();
    let binding = MessageBuilder::new(Class::Request, method::BINDING, [5; 12]).finish();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    for t in [&mut a, &mut b] {
        t.write_all(&binding).await.unwrap();
        let mut buf = [0u8; 256];
        let n = timeout(WAIT, t.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(Message::parse(&buf[..n]).unwrap().class, Class::Success);
    }
    // A third connection from the same IP is closed at once.
    let mut c = TcpStream::connect(addr).await.unwrap();
    closed_by_server(&mut c).await;
    // The first two go quiet and are closed after the idle timeout; then
    // the IP may connect again.
    closed_by_server(&mut a).await;
    closed_by_server(&mut b).await;
    drop((a, b));
    // The server frees the IP's slots just after closing the sockets:
    // retry (bounded) until a connection is served.
    let served = timeout(WAIT, async {
        loop {
            let mut d = TcpStream::connect(addr).await.unwrap();
            d.write_all(&binding).await.unwrap();
            let mut buf = [0u8; 256];
            if let Ok(n @ 1..) = d.read(&mut buf).await {
                return Message::parse(&buf[..n]).unwrap().class;
            }
        }
    })
    .await
    .expect("the IP could not connect again after its connections closed");
    assert_eq!(served, Class::Success);
    s.server.shutdown().await;
}
