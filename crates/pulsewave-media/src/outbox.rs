//! The worker's outgoing datagrams, sent in batches.
//!
//! On Linux a batch leaves in one `sendmmsg(2)` call (through `nix`'s safe
//! wrapper): on the reference machine that is 2.40 µs per datagram instead
//! of 2.97 µs with one `sendto` each (`cargo bench -p pulsewave-core
//! --bench floor`, see docs/benchmarks.md). Elsewhere each datagram is one
//! `send_to`.

use std::io;

use pulsewave_core::Transmit;
use tokio::net::UdpSocket;
use tracing::debug;

/// Most datagrams in one `sendmmsg` call.
pub(crate) const BATCH: usize = 32;

/// The longest [`Outbox::send`] waits for room in a full socket send
/// buffer before it drops the rest of its queue. Room comes back within
/// microseconds when the buffer is full because the link is busy; when it
/// is full of datagrams the kernel holds for seconds (see
/// `pool::SOCKET_BUFFER`), waiting would stall every room of the worker.
pub(crate) const WRITABLE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Datagrams waiting to be sent, and the buffers the system call needs,
/// kept between batches so a batch allocates nothing.
pub(crate) struct Outbox {
    queue: Vec<Transmit>,
    /// Datagrams dropped since the last [`Outbox::take_dropped`]: refused
    /// by the kernel, or left when the send buffer stayed full.
    dropped: u64,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self {
            queue: Vec::with_capacity(BATCH),
            dropped: 0,
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Queues `t`; true when the batch is full and must be sent.
    pub(crate) fn push(&mut self, t: Transmit) -> bool {
        self.queue.push(t);
        self.queue.len() >= BATCH
    }

    /// Datagrams dropped since the last call (see `WorkerStats::send_dropped`).
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Sends every queued datagram, waiting for the socket when its buffer
    /// is full. A datagram the kernel refuses (an unreachable destination)
    /// is dropped and logged at debug. Returns how many were sent.
    pub(crate) async fn send(&mut self, socket: &UdpSocket, worker: usize) -> u64 {
        let mut sent = 0u64;
        let mut next = 0;
        while next < self.queue.len() {
            match self.try_send(socket, next) {
                Ok(0) => {
                    // Not expected from the kernel; never spin on it.
                    next += 1;
                }
                Ok(n) => {
                    next += n;
                    sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A full send buffer: wait for room, but only so long.
                    // Datagrams can sit in the kernel for seconds (waiting
                    // for a neighbour's address that never resolves), and
                    // this worker serves every other room meanwhile: what
                    // does not fit in time is dropped, as a full network
                    // queue would.
                    match tokio::time::timeout(WRITABLE_WAIT, socket.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            let dropped = self.queue.len() - next;
                            debug!(worker, dropped, "send buffer full: datagrams dropped");
                            self.dropped += dropped as u64;
                            break;
                        }
                    }
                }
                Err(e) => {
                    // The call failed on its first datagram: skip that one.
                    let to = self.queue[next].destination;
                    debug!(worker, %to, error = %e, "send failed");
                    self.dropped += 1;
                    next += 1;
                }
            }
        }
        self.queue.clear();
        sent
    }

    /// One system call for the queued datagrams from `from` on; returns
    /// how many the kernel took (at least one).
    #[cfg(target_os = "linux")]
    fn try_send(&mut self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmmsg};

        let pending = &self.queue[from..];
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(
                pending.get(i).map_or(&[][..], |t| t.contents.as_slice()),
            )]
        });
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| pending.get(i).map(|t| t.destination.into()));
        let n = pending.len().min(BATCH);
        let fd = socket.as_raw_fd();
        let headers = &mut self.headers;
        socket.try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(
                fd,
                headers,
                slices[..n].iter(),
                &addrs[..n],
                [],
                MsgFlags::empty(),
            )
            .map(|results| results.count())
            .map_err(io::Error::from)
        })
    }

    /// One `send_to` for the datagram at `from`.
    #[cfg(not(target_os = "linux"))]
    fn try_send(&mut self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        let t = &self.queue[from];
        socket.try_send_to(&t.contents, t.destination).map(|_| 1)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::net::SocketAddr;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use pulsewave_core::Transmit;

    use super::{Outbox, WRITABLE_WAIT};
    use crate::pool::bind_udp;

    /// Runs `ip ARGS` in the calling thread's network namespace.
    fn ip(args: &str) {
        let status = Command::new("ip")
            .args(args.split(' '))
            .status()
            .expect("ip (iproute2) runs");
        assert!(status.success(), "ip {args} failed");
    }

    /// Runs `f` on a thread of its own inside a new network namespace with
    /// loopback up and a veth pair `pw0` (10.199.0.1/24) / `pw1` (no
    /// address: nothing on the link answers ARP). Needs root, as the
    /// network tests do.
    fn in_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                assert!(
                    std::env::var("PULSEWAVE_ALLOW_SKIP").as_deref() == Ok("1"),
                    "unshare(CLONE_NEWNET) failed ({e}): run as root, or set PULSEWAVE_ALLOW_SKIP=1"
                );
                eprintln!("SKIPPED: no network namespace ({e})");
                return None;
            }
            for args in [
                "link set lo up",
                "link add pw0 type veth peer name pw1",
                "addr add 10.199.0.1/24 dev pw0",
                "link set pw0 up",
                "link set pw1 up",
            ] {
                ip(args);
            }
            Some(f())
        })
        .join()
        .expect("the namespace thread ran")
        .unwrap_or_else(|| panic!("skipped"))
    }

    fn transmit(to: SocketAddr, size: usize) -> Transmit {
        Transmit {
            proto: pulsewave_core::Protocol::Udp,
            source: "10.199.0.1:1".parse().expect("address"),
            destination: to,
            contents: vec![0x80; size],
        }
    }

    /// A send buffer held full for seconds (datagrams queued for a
    /// neighbour whose address never resolves: ARP gives up after about
    /// 3 s) costs the worker at most `WRITABLE_WAIT` per batch, not the
    /// seconds every other room on it would freeze (it waited for as long
    /// as the kernel held the buffer before). A 32 KiB buffer stands for a
    /// host whose `net.core.wmem_max` keeps `pool::SOCKET_BUFFER` from
    /// being granted.
    #[test]
    fn a_send_buffer_held_full_costs_a_bounded_wait_not_seconds() {
        let (took, dropped) = in_namespace(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let std_socket = bind_udp("10.199.0.1:0".parse().expect("address")).expect("bind");
                nix::sys::socket::setsockopt(
                    &std_socket,
                    nix::sys::socket::sockopt::SndBuf,
                    &(32 * 1024),
                )
                .expect("SO_SNDBUF");
                std_socket.set_nonblocking(true).expect("nonblocking");
                let socket = tokio::net::UdpSocket::from_std(std_socket).expect("tokio socket");
                let unresolved: SocketAddr = "10.199.0.2:9".parse().expect("address");
                let mut outbox = Outbox::new();
                let start = Instant::now();
                for _ in 0..2000 {
                    if outbox.push(transmit(unresolved, 1200)) {
                        outbox.send(&socket, 0).await;
                    }
                }
                outbox.send(&socket, 0).await;
                (start.elapsed(), outbox.take_dropped())
            })
        });
        assert!(dropped > 0, "what did not fit was dropped (and counted)");
        let batches = 2000u32.div_ceil(super::BATCH as u32);
        assert!(
            took < WRITABLE_WAIT * batches + Duration::from_millis(500),
            "took {took:?} for {batches} batches (ARP gives up after ~3 s)"
        );
    }
}
