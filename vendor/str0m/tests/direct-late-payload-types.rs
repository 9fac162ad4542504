//! Direct API: payload types and header extension ids added to a live session.
//!
//! The receiver is built with no codecs and no extensions, connects, and only
//! then learns the sender's payload type and `mid` extension id (as an SFU
//! serving mediasoup-client learns them from each `produce`). Packets sent
//! before that are dropped; packets sent after arrive as `Event::RtpPacket`.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    events: Vec<Event>,
}

fn poll(p: &mut Peer, out: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
    loop {
        match p.rtc.poll_output().expect("poll_output") {
            Output::Timeout(t) => {
                p.timeout = t;
                return;
            }
            Output::Transmit(t) => out.push_back((t.source, t.destination, t.contents.into())),
            Output::Event(e) => p.events.push(e),
        }
    }
}

/// Runs both peers for `d` of virtual time.
fn run(l: &mut Peer, r: &mut Peer, now: &mut Instant, d: Duration) {
    let end = *now + d;
    let mut wire = VecDeque::new();
    while *now < end {
        poll(l, &mut wire);
        poll(r, &mut wire);
        while let Some((source, destination, contents)) = wire.pop_front() {
            let to = if destination == l.addr { &mut *l } else { &mut *r };
            let input = Input::Receive(
                *now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination,
                    contents: contents.as_slice().try_into().expect("datagram"),
                },
            );
            to.rtc.handle_input(input).expect("handle_input");
            poll(to, &mut wire);
        }
        *now = (*now + Duration::from_millis(1)).min(l.timeout.min(r.timeout).max(*now + Duration::from_micros(100)));
        l.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
        r.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
    }
    poll(l, &mut wire);
    poll(r, &mut wire);
}

fn peer(rtc: Rtc, addr: SocketAddr, now: Instant) -> Peer {
    Peer {
        rtc,
        addr,
        timeout: now,
        events: Vec::new(),
    }
}

fn rtp_packets(p: &Peer) -> Vec<&str0m::rtp::RtpPacket> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(pkt) => Some(pkt),
            _ => None,
        })
        .collect()
}

#[test]
fn payload_types_and_extensions_added_after_connect() {
    let mut now = Instant::now();
    let vp8 = Pt::from(96);
    let mid_id = 9;

    // The sender knows its payload type and extension id from the start.
    let mut sender = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .clear_extension_map()
        .set_extension(mid_id, Extension::RtpMid);
    sender.codec_config().add_config(
        vp8,
        None,
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    let sender = sender.build(now);
    // The receiver knows nothing yet.
    let receiver = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .clear_extension_map()
        .build(now);

    let la: SocketAddr = (Ipv4Addr::new(1, 1, 1, 1), 1000).into();
    let ra: SocketAddr = (Ipv4Addr::new(2, 2, 2, 2), 2000).into();
    let mut l = peer(sender, la, now);
    let mut r = peer(receiver, ra, now);
    let lc = Candidate::host(la, "udp").unwrap();
    let rc = Candidate::host(ra, "udp").unwrap();
    l.rtc.add_local_candidate(lc.clone());
    l.rtc.add_remote_candidate(rc.clone());
    r.rtc.add_local_candidate(rc);
    r.rtc.add_remote_candidate(lc);
    let fl = l.rtc.direct_api().local_dtls_fingerprint().clone();
    let fr = r.rtc.direct_api().local_dtls_fingerprint().clone();
    l.rtc.direct_api().set_remote_fingerprint(fr);
    r.rtc.direct_api().set_remote_fingerprint(fl);
    let cl = l.rtc.direct_api().local_ice_credentials();
    let cr = r.rtc.direct_api().local_ice_credentials();
    l.rtc.direct_api().set_remote_ice_credentials(cr);
    r.rtc.direct_api().set_remote_ice_credentials(cl);
    l.rtc.direct_api().set_ice_controlling(true);
    r.rtc.direct_api().set_ice_controlling(false);
    l.rtc.direct_api().start_dtls(true).unwrap();
    r.rtc.direct_api().start_dtls(false).unwrap();
    run(&mut l, &mut r, &mut now, Duration::from_secs(2));
    assert!(l.rtc.is_connected() && r.rtc.is_connected());

    let mid = Mid::from("v");
    let ssrc = Ssrc::from(4242);
    l.rtc.direct_api().declare_media(mid, MediaKind::Video);
    l.rtc.direct_api().declare_stream_tx(ssrc, None, mid, None);

    let mut seq = 100u64;
    let mut send = |l: &mut Peer, now: Instant| {
        let ext = ExtensionValues {
            mid: Some(mid),
            ..Default::default()
        };
        let mut api = l.rtc.direct_api();
        let stream = api.stream_tx(&ssrc).unwrap();
        stream.write_rtp(
            RtpWrite::new(vp8, SeqNo::from(seq), (seq * 3000) as u32, now, vec![0x10, 0, 0, 1])
                .ext_vals(ext),
        );
        seq += 1;
    };

    // Before the receiver knows the payload type and the mid id: dropped.
    for _ in 0..5 {
        send(&mut l, now);
        run(&mut l, &mut r, &mut now, Duration::from_millis(20));
    }
    assert!(rtp_packets(&r).is_empty());

    // The receiver learns them, on a connected session.
    {
        let mut api = r.rtc.direct_api();
        api.codec_config().add_config(
            vp8,
            None,
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            FormatParams::default(),
        );
        // A wrong id first, then the right one: the map keeps one id per extension.
        api.set_extension(3, Extension::RtpMid);
        api.set_extension(mid_id, Extension::RtpMid);
        assert_eq!(api.extension_map().id_of(Extension::RtpMid), Some(mid_id));
        assert_eq!(api.extension_map().lookup(3), None);
        api.declare_media(mid, MediaKind::Video);
        // A media declared earlier is updated too.
        api.set_extension(5, Extension::TransmissionTimeOffset);
    }
    for _ in 0..5 {
        send(&mut l, now);
        run(&mut l, &mut r, &mut now, Duration::from_millis(20));
    }
    let got = rtp_packets(&r);
    assert_eq!(got.len(), 5, "packets after the late configuration arrive");
    assert!(got.iter().all(|p| p.header.ext_vals.mid == Some(mid)));
    assert!(got.iter().all(|p| p.header.payload_type == vp8));
    let media = r.rtc.media(mid).unwrap();
    assert_eq!(media.remote_extmap().id_of(Extension::RtpMid), Some(mid_id));
    assert_eq!(
        media.remote_extmap().id_of(Extension::TransmissionTimeOffset),
        Some(5)
    );
}
