//! The floor: the least work any SFU must do per forwarded packet on this
//! machine, to express PulseWave's cost as a multiple of it.
//!
//! - `srtp_encrypt/*`: one SRTP encryption of a 1100-byte payload behind a
//!   12-byte RTP header with aws-lc-rs, the backend str0m uses, called
//!   directly with keys prepared once: AEAD_AES_256_GCM (what str0m's DTLS
//!   server picks when the client offers it, as Chrome and our client do),
//!   AEAD_AES_128_GCM, and AES_CM_128 + HMAC-SHA1-80 (the mandatory suite).
//! - `udp_send_to_loopback`: one `send_to` of the resulting 1128-byte
//!   datagram to a socket on 127.0.0.1 (the receiver is drained outside the
//!   timing).
//! - `udp_sendmmsg32_to_loopback`: the same datagrams sent 32 at a time
//!   with `sendmmsg(2)`: what batching the system calls would save.
//! - `encrypt_and_send/*`: both, the floor proper.
//!
//! ```bash
//! cargo bench -p pulsewave-core --bench floor
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::large_enum_variant,
    missing_docs
)]

use std::hint::black_box;
use std::io::{ErrorKind, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};

const HEADER: usize = 12;
const PAYLOAD: usize = 1100;
const TAG: usize = 16;

/// One SRTP cipher, keyed once.
enum Srtp {
    Gcm(LessSafeKey),
    Cm { key: EncryptingKey, auth: hmac::Key },
}

impl Srtp {
    fn gcm256() -> Self {
        Srtp::Gcm(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap(),
        ))
    }

    fn gcm128() -> Self {
        Srtp::Gcm(LessSafeKey::new(
            UnboundKey::new(&AES_128_GCM, &[7u8; 16]).unwrap(),
        ))
    }

    fn cm_sha1_80() -> Self {
        Srtp::Cm {
            key: EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &[7u8; 16]).unwrap()).unwrap(),
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[9u8; 20]),
        }
    }

    /// Encrypts `packet[HEADER..HEADER + PAYLOAD]` in place and writes the
    /// tag after it; returns the datagram length.
    fn protect(&self, seq: u64, packet: &mut [u8]) -> usize {
        packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        let (header, rest) = packet.split_at_mut(HEADER);
        let body = &mut rest[..PAYLOAD];
        match self {
            Srtp::Gcm(key) => {
                let mut iv = [0u8; 12];
                iv[4..12].copy_from_slice(&seq.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&*header),
                        body,
                    )
                    .unwrap();
                rest[PAYLOAD..PAYLOAD + TAG].copy_from_slice(tag.as_ref());
                HEADER + PAYLOAD + TAG
            }
            Srtp::Cm { key, auth } => {
                let mut iv = [0u8; 16];
                iv[6..14].copy_from_slice(&(seq << 16).to_be_bytes());
                let ctx = EncryptionContext::Iv128(FixedLength::from(iv));
                key.less_safe_encrypt(body, ctx).unwrap();
                let mut m = hmac::Context::with_key(auth);
                m.update(header);
                m.update(&rest[..PAYLOAD]);
                m.update(&(seq as u32 >> 16).to_be_bytes());
                let tag = m.sign();
                rest[PAYLOAD..PAYLOAD + 10].copy_from_slice(&tag.as_ref()[..10]);
                HEADER + PAYLOAD + 10
            }
        }
    }
}

fn packet() -> Vec<u8> {
    let mut p = vec![0u8; HEADER + PAYLOAD + TAG];
    p[0] = 0x80;
    p[1] = 96;
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    for (i, b) in p[HEADER..HEADER + PAYLOAD].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

struct Loopback {
    tx: UdpSocket,
    rx: UdpSocket,
    buf: Vec<u8>,
}

/// Datagrams sent between two drains of the receiver (well within the
/// default receive buffer).
const BATCH: u64 = 32;

impl Loopback {
    fn new() -> Self {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        Self {
            tx,
            rx,
            buf: vec![0; 2048],
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            match self.rx.recv(&mut self.buf) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// `iters` times `f` then a `send_to`, timed; the receiver drained
    /// between batches, untimed.
    fn run(&mut self, iters: u64, mut f: impl FnMut(u64) -> usize, data: &[u8]) -> Duration {
        let dest = self.rx.local_addr().unwrap();
        let mut spent = Duration::ZERO;
        let mut i = 0;
        while i < iters {
            let n = (iters - i).min(BATCH);
            let t0 = Instant::now();
            for k in 0..n {
                let len = f(i + k);
                black_box(self.tx.send_to(&data[..len.max(1)], dest)).ok();
            }
            spent += t0.elapsed();
            i += n;
            self.drain();
        }
        spent
    }

    /// As [`Loopback::run`] with no encryption, but the datagrams of a
    /// batch leave in `sendmmsg(2)` calls instead of one `sendto` each.
    fn run_sendmmsg(&mut self, iters: u64, data: &[u8]) -> Duration {
        let SocketAddr::V4(dest) = self.rx.local_addr().unwrap() else {
            unreachable!("bound to 127.0.0.1")
        };
        let dest = SockaddrIn::from(dest);
        let fd = self.tx.as_raw_fd();
        let slices: Vec<[IoSlice<'_>; 1]> = (0..BATCH).map(|_| [IoSlice::new(data)]).collect();
        let addrs: Vec<Option<SockaddrIn>> = vec![Some(dest); BATCH as usize];
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH as usize, None);
        let mut spent = Duration::ZERO;
        let mut i = 0;
        while i < iters {
            let n = (iters - i).min(BATCH) as usize;
            let t0 = Instant::now();
            let mut sent = 0;
            while sent < n {
                let r = sendmmsg(
                    fd,
                    &mut headers,
                    slices[sent..n].iter(),
                    &addrs[sent..n],
                    [],
                    MsgFlags::empty(),
                )
                .expect("sendmmsg");
                sent += r.count();
            }
            spent += t0.elapsed();
            i += n as u64;
            self.drain();
        }
        spent
    }
}

fn bench(c: &mut Criterion) {
    let ciphers = [
        ("aes256gcm", Srtp::gcm256()),
        ("aes128gcm", Srtp::gcm128()),
        ("aes128cm_sha1_80", Srtp::cm_sha1_80()),
    ];
    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(1));
    for (name, cipher) in &ciphers {
        let mut p = packet();
        let mut seq = 0u64;
        g.bench_function(format!("srtp_encrypt/{name}"), |b| {
            b.iter(|| {
                seq += 1;
                cipher.protect(seq, black_box(&mut p))
            })
        });
    }
    let mut lo = Loopback::new();
    let data = packet();
    g.bench_function("udp_send_to_loopback", |b| {
        b.iter_custom(|iters| lo.run(iters, |_| HEADER + PAYLOAD + TAG, &data))
    });
    g.bench_function("udp_sendmmsg32_to_loopback", |b| {
        b.iter_custom(|iters| lo.run_sendmmsg(iters, &data))
    });
    for (name, cipher) in &ciphers {
        let mut p = packet();
        g.bench_function(format!("encrypt_and_send/{name}"), |b| {
            b.iter_custom(|iters| {
                let dest = lo.rx.local_addr().unwrap();
                let mut spent = Duration::ZERO;
                let mut i = 0;
                while i < iters {
                    let n = (iters - i).min(BATCH);
                    let t0 = Instant::now();
                    for k in 0..n {
                        let len = cipher.protect(i + k, &mut p);
                        black_box(lo.tx.send_to(&p[..len], dest)).ok();
                    }
                    spent += t0.elapsed();
                    i += n;
                    lo.drain();
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
