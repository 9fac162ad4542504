//! The worker pool: one worker per `MEDIASOUP_NUM_WORKERS`, rooms placed on
//! the least-loaded live one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pulsewave_core::{Event, RoomConfig};
use socket2::{Domain, Socket, Type};
use tokio::sync::mpsc;
use tracing::info;

use crate::room::MediaRoom;
use crate::tcp::TcpLimits;
use crate::worker::{MediaWorker, Sockets, WorkerGone};

/// Where and how many media workers run (`MEDIASOUP_*`).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Worker threads (`MEDIASOUP_NUM_WORKERS`), one UDP socket each.
    pub num_workers: usize,
    /// IP the sockets bind (`MEDIASOUP_LISTEN_IP`).
    pub listen_ip: IpAddr,
    /// IP announced to clients (`MEDIASOUP_ANNOUNCED_IP`); defaults to
    /// `listen_ip` when that is not a wildcard.
    pub announced_ip: Option<IpAddr>,
    /// Lowest port (`MEDIASOUP_MIN_PORT`); 0 with `max_port` 0 means any free port.
    pub min_port: u16,
    /// Highest port (`MEDIASOUP_MAX_PORT`).
    pub max_port: u16,
    /// Whether every worker also listens for ICE-TCP and every transport
    /// offers a passive TCP candidate beside the UDP one
    /// (`RTC_TCP_ENABLED`).
    pub enable_tcp: bool,
    /// The first worker's ICE-TCP port (`RTC_TCP_PORT`); worker `i` listens
    /// on `tcp_port + i`. `None`: each worker's TCP port is the port number
    /// of its UDP socket (any free port when the UDP range is `0-0`).
    pub tcp_port: Option<u16>,
    /// Bounds of each worker's ICE-TCP connections (`RTC_TCP_*`).
    pub tcp_limits: TcpLimits,
    /// Dual stack: the IPv6 address every worker also binds
    /// (`MEDIASOUP_LISTEN_IP6`), beside the IPv4 `listen_ip`. Each worker
    /// then has an IPv6 UDP socket (and TCP listener with ICE-TCP) on the
    /// same port numbers as its IPv4 ones, and every transport offers IPv6
    /// host candidates beside the IPv4 ones. `None`: IPv4 only (or IPv6
    /// only, with an IPv6 `listen_ip`).
    pub listen_ip6: Option<Ipv6Addr>,
    /// The IPv6 address announced to clients (`MEDIASOUP_ANNOUNCED_IP6`);
    /// defaults to `listen_ip6` when that is not `::`.
    pub announced_ip6: Option<Ipv6Addr>,
    /// Template for every room's configuration.
    pub room: RoomConfig,
}

impl MediaConfig {
    /// One worker on 127.0.0.1 with an ephemeral port: for tests and `--dev`.
    pub fn loopback() -> Self {
        Self {
            num_workers: 1,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announced_ip: None,
            min_port: 0,
            max_port: 0,
            enable_tcp: true,
            tcp_port: None,
            tcp_limits: TcpLimits::default(),
            listen_ip6: None,
            announced_ip6: None,
            room: RoomConfig::default(),
        }
    }
}

/// The media workers of a server. New rooms go to the least-loaded one.
#[derive(Debug)]
pub struct WorkerPool {
    workers: Vec<MediaWorker>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    room: RoomConfig,
}

fn bind_in_range(ip: IpAddr, min: u16, max: u16, skip: &[u16]) -> io::Result<UdpSocket> {
    if min == 0 && max == 0 {
        return bind_udp(SocketAddr::new(ip, 0));
    }
    let mut last_err = None;
    for port in min..=max {
        if skip.contains(&port) {
            continue;
        }
        match bind_udp(SocketAddr::new(ip, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free UDP port in {min}-{max}"),
        )
    }))
}

/// The send and receive buffer sizes asked for each worker's UDP socket;
/// the kernel caps them at `net.core.wmem_max` / `net.core.rmem_max`
/// (212,992 bytes by default) and doubles what it grants.
///
/// The send buffer matters most. A datagram to a neighbour on the server's
/// own link whose address is being resolved (a participant whose address
/// just went away: ARP gives up after about 3 s) stays charged to the
/// socket until then, up to `net.ipv4.neigh.*.unres_qlen_bytes` (212,992
/// bytes by default) per neighbour. With the default buffer (also 212,992
/// bytes), one such neighbour filled it, and every room of the worker
/// waited for room in it for seconds.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket on `addr` with [`SOCKET_BUFFER`]-sized buffers; an IPv6
/// one carries IPv6 only (`IPV6_V6ONLY`), so `::` and `0.0.0.0` can share a
/// port number.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = bind(addr, Type::DGRAM)?;
    // Best effort: a smaller buffer still works, with the risk above.
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%addr, error = %e, "SO_SNDBUF not set");
    }
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%addr, error = %e, "SO_RCVBUF not set");
    }
    Ok(socket.into())
}

/// A TCP listener on `addr`, IPv6 only for an IPv6 address (as
/// [`bind_udp`]).
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = bind(addr, Type::STREAM)?;
    // The kernel caps the accept queue at `net.core.somaxconn` (4096 by
    // default): many clients falling back to ICE-TCP at once still fit.
    socket.listen(4096)?;
    Ok(socket.into())
}

/// A socket of type `ty` bound to `addr` (IPv6 only for an IPv6 address;
/// a TCP one with `SO_REUSEADDR`, as the standard library sets it).
fn bind(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    Ok(socket)
}

/// The ICE-TCP port of worker `index`, whose UDP port is `udp_port`.
fn tcp_port_of(config: &MediaConfig, index: usize, udp_port: u16) -> io::Result<u16> {
    match config.tcp_port {
        Some(base) => u16::try_from(index)
            .ok()
            .and_then(|i| base.checked_add(i))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("RTC_TCP_PORT {base} + worker {index} is past 65535"),
                )
            }),
        None if config.min_port == 0 && config.max_port == 0 => Ok(0),
        None => Ok(udp_port),
    }
}

impl WorkerPool {
    /// Binds one UDP socket per worker in the port range and starts the
    /// worker threads.
    pub fn start(config: &MediaConfig) -> io::Result<Arc<Self>> {
        let announced = match (config.announced_ip, config.listen_ip) {
            (Some(ip), _) => ip,
            (None, ip) if !ip.is_unspecified() => ip,
            (None, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "MEDIASOUP_LISTEN_IP is a wildcard address: set MEDIASOUP_ANNOUNCED_IP to the IP clients reach",
                ));
            }
        };
        let announced6 = match (config.listen_ip6, config.announced_ip6) {
            (None, _) => None,
            (Some(_), _) if config.listen_ip.is_ipv6() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "MEDIASOUP_LISTEN_IP6 needs an IPv4 MEDIASOUP_LISTEN_IP beside it (for IPv6 only, set MEDIASOUP_LISTEN_IP to the IPv6 address)",
                ));
            }
            (Some(_), Some(ip)) => Some(ip),
            (Some(ip), None) if !ip.is_unspecified() => Some(ip),
            (Some(_), None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "MEDIASOUP_LISTEN_IP6 is `::`: set MEDIASOUP_ANNOUNCED_IP6 to the IPv6 address clients reach",
                ));
            }
        };
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        let mut used = Vec::new();
        for index in 0..config.num_workers.max(1) {
            let socket = bind_in_range(config.listen_ip, config.min_port, config.max_port, &used)?;
            let port = socket.local_addr()?.port();
            used.push(port);
            let tcp = if config.enable_tcp {
                let tcp_port = tcp_port_of(config, index, port)?;
                let listener = bind_tcp(SocketAddr::new(config.listen_ip, tcp_port))?;
                let tcp_port = listener.local_addr()?.port();
                Some((listener, SocketAddr::new(announced, tcp_port)))
            } else {
                None
            };
            // Dual stack: the same port numbers on the IPv6 address, so
            // one firewall rule (per protocol) covers both families.
            let (udp6, tcp6) = match (config.listen_ip6, announced6) {
                (Some(ip6), Some(announced6)) => {
                    let udp6 = bind_udp(SocketAddr::new(IpAddr::V6(ip6), port))?;
                    let tcp6 = match &tcp {
                        Some((_, tcp_announced)) => {
                            let port = tcp_announced.port();
                            let listener = bind_tcp(SocketAddr::new(IpAddr::V6(ip6), port))?;
                            Some((listener, SocketAddr::new(IpAddr::V6(announced6), port)))
                        }
                        None => None,
                    };
                    (
                        Some((udp6, SocketAddr::new(IpAddr::V6(announced6), port))),
                        tcp6,
                    )
                }
                _ => (None, None),
            };
            let (worker, thread) = MediaWorker::spawn(
                index,
                Sockets {
                    udp: (socket, SocketAddr::new(announced, port)),
                    tcp,
                    udp6,
                    tcp6,
                    tcp_limits: config.tcp_limits,
                },
                config.room.clone(),
            )?;
            workers.push(worker);
            threads.push(thread);
        }
        info!(workers = workers.len(), "media workers running");
        Ok(Arc::new(Self {
            workers,
            threads: Mutex::new(threads),
            room: config.room.clone(),
        }))
    }

    /// The workers.
    pub fn workers(&self) -> &[MediaWorker] {
        &self.workers
    }

    /// The router capabilities every room has.
    pub fn rtp_capabilities(&self) -> &pulsewave_protocol::rtp::RtpCapabilities {
        &self.room.rtp_capabilities
    }

    /// Opens a room on the least-loaded live worker (a dead one is never
    /// chosen).
    pub async fn open_room(
        &self,
    ) -> Result<(MediaRoom, mpsc::UnboundedReceiver<Event>), WorkerGone> {
        let worker = self
            .workers
            .iter()
            .filter(|w| w.is_alive())
            .min_by_key(|w| w.load())
            .ok_or(WorkerGone)?;
        worker.open_room(self.room.clone()).await
    }

    /// Whether every worker is running.
    pub fn is_healthy(&self) -> bool {
        !self.workers.is_empty() && self.workers.iter().all(MediaWorker::is_alive)
    }

    /// Stops every worker and waits for the threads.
    pub fn stop(&self) {
        for w in &self.workers {
            w.stop();
        }
        let threads: Vec<JoinHandle<()>> = {
            let mut t = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            t.drain(..).collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_worker_has_its_tcp_port() {
        let mut c = MediaConfig::loopback();
        // Ephemeral UDP ports: an ephemeral TCP port too.
        assert_eq!(tcp_port_of(&c, 3, 41234).unwrap(), 0);
        // A UDP range: the same number as the worker's UDP port.
        c.min_port = 40000;
        c.max_port = 40010;
        assert_eq!(tcp_port_of(&c, 3, 40003).unwrap(), 40003);
        // RTC_TCP_PORT: the base plus the worker's index.
        c.tcp_port = Some(7881);
        assert_eq!(tcp_port_of(&c, 0, 40000).unwrap(), 7881);
        assert_eq!(tcp_port_of(&c, 3, 40003).unwrap(), 7884);
        c.tcp_port = Some(u16::MAX);
        assert!(tcp_port_of(&c, 1, 40001).is_err());
    }

    #[tokio::test]
    async fn workers_listen_on_tcp_beside_udp_unless_disabled() {
        let pool = WorkerPool::start(&MediaConfig::loopback()).unwrap();
        let w = &pool.workers()[0];
        let tcp = w.tcp_addr().unwrap();
        assert_eq!(w.announced_tcp_addr().map(|a| a.port()), Some(tcp.port()));
        assert!(std::net::TcpStream::connect(tcp).is_ok());
        pool.stop();
        let pool = WorkerPool::start(&MediaConfig {
            enable_tcp: false,
            ..MediaConfig::loopback()
        })
        .unwrap();
        assert_eq!(pool.workers()[0].tcp_addr(), None);
        pool.stop();
    }
}
