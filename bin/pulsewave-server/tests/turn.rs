//! The binary with `TURN_ENABLED=true`: `joined` hands out the embedded
//! TURN server's URLs with credentials derived for the participant, after
//! the external `ICE_SERVERS`; those credentials allocate a relay, which
//! reaches this node's media address and nothing else; `/metrics` counts
//! the allocations, refused credentials and relayed packets and bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdp};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
use pulsewave_client::Client;
use pulsewave_protocol::transport::IceUrls;
use pulsewave_turn::long_term_key;
use pulsewave_turn::stun::{Class, Message, MessageBuilder, attr, method};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_pulsewave-server");
const WAIT: Duration = Duration::from_secs(5);

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(port: u16) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        // Poll interval of a bounded wait for the listener (a child
        // process announces nothing).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} never became ready");
}

fn token(identity: &str, room: &str) -> String {
    let mut t = AccessToken::new(
        "devkey",
        "secret",
        AccessTokenOptions {
            identity: identity.into(),
            ..Default::default()
        },
    );
    t.add_grant(VideoGrant {
        room: Some(room.into()),
        room_join: true,
        ..Default::default()
    });
    t.to_jwt().unwrap()
}

/// `GET /metrics` over a plain HTTP/1.0 connection.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(WAIT, s.read_to_string(&mut body))
        .await
        .expect("/metrics answers")
        .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    body
}

/// The value of the series `series` (name and labels) in `text`.
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Waits until `/metrics` shows `series` at `want` (the TURN counters are
/// read from the server's task: a packet just sent may not be counted yet).
async fn metric_reaches(port: u16, series: &str, want: u64) {
    let start = Instant::now();
    loop {
        let text = scrape(port).await;
        let v = value(&text, series);
        if v == want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{series} is {v}, expected {want}:\n{text}"
        );
        // Poll interval of a bounded wait (a scrape has no event to wait on).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request/response with the TURN server over UDP.
async fn request(sock: &UdpSocket, to: SocketAddr, bytes: &[u8], tid: [u8; 12]) -> Vec<u8> {
    sock.send_to(bytes, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("no answer from the embedded TURN server")
            .unwrap();
        if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id == tid) {
            return buf[..n].to_vec();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_hands_out_embedded_turn_credentials_that_allocate() {
    let port = free_tcp_port();
    let turn_udp = free_udp_port();
    let turn_tcp = free_tcp_port();
    let relay = free_udp_port();
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .args(["--dev", "--port", &port.to_string()])
        .args(["--turn-enabled", "true"])
        .args(["--turn-udp-port", &turn_udp.to_string()])
        .env("TURN_TCP_PORT", turn_tcp.to_string())
        .env("TURN_RELAY_MIN_PORT", relay.to_string())
        .env("TURN_RELAY_MAX_PORT", relay.saturating_add(20).to_string())
        .env("MEDIASOUP_NUM_WORKERS", "1")
        .env(
            "ICE_SERVERS",
            r#"[{"urls":["stun:stun.example.org:3478"]}]"#,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    wait_ready(port).await;

    let url = format!("ws://127.0.0.1:{port}");
    let mut client = Client::connect(&url, &token("alice", "turn-room"))
        .await
        .unwrap();
    let joined = client.join("turn-room").await.unwrap();
    let servers = joined.ice_servers;
    assert_eq!(servers.len(), 2, "{servers:?}");
    // External ICE_SERVERS first, unchanged.
    assert_eq!(
        servers[0].urls,
        IceUrls::Many(vec!["stun:stun.example.org:3478".into()])
    );
    assert_eq!(servers[0].username, None);
    // Then the embedded server, with credentials for this participant.
    let turn = &servers[1];
    assert_eq!(
        turn.urls,
        IceUrls::Many(vec![
            format!("turn:127.0.0.1:{turn_udp}?transport=udp"),
            format!("turn:127.0.0.1:{turn_tcp}?transport=tcp"),
        ])
    );
    let username = turn.username.clone().unwrap();
    let password = turn.credential.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Short-lived: TURN_CREDENTIAL_TTL (10 minutes by default).
    assert!(expiry > now && expiry <= now + 601, "{expiry} vs {now}");

    // The credentials allocate on the embedded server.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to: SocketAddr = format!("127.0.0.1:{turn_udp}").parse().unwrap();
    let mut b = MessageBuilder::new(Class::Request, method::ALLOCATE, [1; 12]);
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    let challenge = request(&sock, to, &b.finish(), [1; 12]).await;
    let challenge = Message::parse(&challenge).unwrap();
    assert_eq!(challenge.error_code().map(|e| e.0), Some(401));
    let realm = challenge.get_str(attr::REALM).unwrap().to_owned();
    let nonce = challenge.get_str(attr::NONCE).unwrap().to_owned();
    let key = long_term_key(&username, &realm, &password);
    let authed = |method: u16, tid: [u8; 12], add: &dyn Fn(&mut MessageBuilder)| {
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        add(&mut b);
        b.add(attr::USERNAME, username.as_bytes())
            .add(attr::REALM, realm.as_bytes())
            .add(attr::NONCE, nonce.as_bytes());
        b.finish_with_integrity(&key)
    };
    let req = authed(method::ALLOCATE, [2; 12], &|b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let ok = request(&sock, to, &req, [2; 12]).await;
    let ok = Message::parse(&ok).unwrap();
    assert_eq!(ok.class, Class::Success, "{:?}", ok.error_code());
    let relayed = ok.get_xor_addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((relay..=relay + 20).contains(&relayed.port()), "{relayed}");

    // The relay reaches this node's media address (127.0.0.1 in --dev)...
    let req = authed(method::CREATE_PERMISSION, [3; 12], &|b| {
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, "127.0.0.1:40000".parse().unwrap());
    });
    let r = Message::parse(&request(&sock, to, &req, [3; 12]).await)
        .unwrap()
        .class;
    assert_eq!(r, Class::Success);
    // ...and nothing else: not an open relay.
    let req = authed(method::CREATE_PERMISSION, [4; 12], &|b| {
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, "192.0.2.1:53".parse().unwrap());
    });
    let r = request(&sock, to, &req, [4; 12]).await;
    assert_eq!(
        Message::parse(&r).unwrap().error_code().map(|e| e.0),
        Some(403)
    );

    // The counters, through /metrics: one allocation, none refused yet.
    let text = scrape(port).await;
    assert_eq!(value(&text, "pulsewave_turn_allocations"), 1);
    assert_eq!(value(&text, "pulsewave_turn_allocations_total"), 1);
    assert_eq!(value(&text, "pulsewave_turn_auth_failures_total"), 0);
    assert!(text.contains("# TYPE pulsewave_turn_relayed_bytes_total counter"));
    // Relayed both ways: 100 bytes to the media address, 40 back from it.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = authed(method::CREATE_PERMISSION, [5; 12], &|b| {
        b.add_xor_addr(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap());
    });
    let r = Message::parse(&request(&sock, to, &req, [5; 12]).await)
        .unwrap()
        .class;
    assert_eq!(r, Class::Success);
    let mut send = MessageBuilder::new(Class::Indication, method::SEND, [6; 12]);
    send.add_xor_addr(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap())
        .add(attr::DATA, &[7u8; 100]);
    sock.send_to(&send.finish_plain(), to).await.unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("relayed to the peer")
        .unwrap();
    assert_eq!((n, from), (100, relayed));
    peer.send_to(&[8u8; 40], relayed).await.unwrap();
    timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("relayed back to the client")
        .unwrap();
    metric_reaches(
        port,
        "pulsewave_turn_relayed_packets_total{direction=\"to_peer\"}",
        1,
    )
    .await;
    metric_reaches(
        port,
        "pulsewave_turn_relayed_bytes_total{direction=\"to_peer\"}",
        100,
    )
    .await;
    metric_reaches(
        port,
        "pulsewave_turn_relayed_packets_total{direction=\"to_client\"}",
        1,
    )
    .await;
    metric_reaches(
        port,
        "pulsewave_turn_relayed_bytes_total{direction=\"to_client\"}",
        40,
    )
    .await;
    // A wrong password is refused and counted.
    let bad_key = long_term_key(&username, &realm, "not-the-password");
    let mut b = MessageBuilder::new(Class::Request, method::ALLOCATE, [9; 12]);
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .add(attr::USERNAME, username.as_bytes())
        .add(attr::REALM, realm.as_bytes())
        .add(attr::NONCE, nonce.as_bytes());
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let refused = request(&other, to, &b.finish_with_integrity(&bad_key), [9; 12]).await;
    assert_eq!(
        Message::parse(&refused).unwrap().error_code().map(|e| e.0),
        Some(401)
    );
    metric_reaches(port, "pulsewave_turn_auth_failures_total", 1).await;
    assert_eq!(value(&scrape(port).await, "pulsewave_turn_allocations"), 1);

    // Another participant gets other credentials; alice's password does
    // not work for bob's username.
    let mut bob = Client::connect(&url, &token("bob", "turn-room"))
        .await
        .unwrap();
    let bob_turn = bob.join("turn-room").await.unwrap().ice_servers[1].clone();
    assert!(bob_turn.username.as_deref().unwrap().ends_with(":bob"));
    assert_ne!(bob_turn.credential.as_deref(), Some(password.as_str()));
}
