//! The sans-IO `PeerTransport` against a minimal str0m stand-in for a
//! PulseWave server transport (ICE-lite, DTLS server, SCTP server, RTP
//! mode, the router's payload types), with a fake clock and in-memory
//! packet passing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pulsewave_client::peer::LocalLayer;
use pulsewave_client::{ClientError, PeerEvent, PeerTransport};
use pulsewave_protocol::rtp::{
    MediaKind, RtpCapabilities, RtpCodecParameters, RtpEncodingParameters, RtpParameters,
    RtxParameters, uri,
};
use pulsewave_protocol::transport::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceParameters, SctpParameters,
    SctpStreamParameters, TransportDirection, TransportOptions,
};
use pulsewave_protocol::{ConsumerId, TransportId};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::config::Fingerprint;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, KeyframeRequestKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:44444";

fn router_caps() -> RtpCapabilities {
    serde_json::from_str(include_str!("data/router_caps.json")).unwrap()
}

fn pt_of(caps: &RtpCapabilities, mime: &str) -> u8 {
    caps.codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime))
        .unwrap()
        .preferred_payload_type
}

fn rtx_of(caps: &RtpCapabilities, apt: u8) -> u8 {
    caps.codecs
        .iter()
        .find(|c| {
            c.mime_type.ends_with("/rtx")
                && c.parameters.get("apt").and_then(|v| v.as_int()) == Some(i64::from(apt))
        })
        .unwrap()
        .preferred_payload_type
}

fn ext_id(caps: &RtpCapabilities, u: &str) -> u8 {
    caps.header_extensions
        .iter()
        .find(|h| h.uri == u)
        .unwrap()
        .preferred_id
}

/// The stand-in: a str0m `Rtc` configured like a PulseWave server
/// transport, plus the packets and events it produced.
struct Server {
    rtc: Rtc,
    addr: SocketAddr,
    events: Vec<Event>,
    to_client: VecDeque<Vec<u8>>,
    timeout: Instant,
}

impl Server {
    fn new(now: Instant, caps: &RtpCapabilities) -> (Self, TransportOptions) {
        let opus = pt_of(caps, "audio/opus");
        let vp8 = pt_of(caps, "video/VP8");
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs();
        config.codec_config().add_config(
            opus.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams::default(),
        );
        config.codec_config().add_config(
            vp8.into(),
            Some(rtx_of(caps, vp8).into()),
            Codec::Vp8,
            Frequency::NINETY_KHZ,
            None,
            FormatParams::default(),
        );
        let mut config = config.clear_extension_map();
        for (u, e) in [
            (uri::MID, Extension::RtpMid),
            (uri::RID, Extension::RtpStreamId),
            (uri::ABS_SEND_TIME, Extension::AbsoluteSendTime),
            (uri::TRANSPORT_CC, Extension::TransportSequenceNumber),
            (uri::AUDIO_LEVEL, Extension::AudioLevel),
            (uri::VIDEO_ORIENTATION, Extension::VideoOrientation),
            (uri::TOFFSET, Extension::TransmissionTimeOffset),
        ] {
            config = config.set_extension(ext_id(caps, u), e);
        }
        let mut rtc = config.build(now);
        let addr: SocketAddr = SERVER.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let creds = rtc.direct_api().local_ice_credentials();
        let fp = rtc.direct_api().local_dtls_fingerprint().clone();
        let value = fp
            .bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let options = TransportOptions {
            id: TransportId::new("TP_standin"),
            ice_parameters: IceParameters {
                username_fragment: creds.ufrag,
                password: creds.pass,
                ice_lite: true,
            },
            ice_candidates: vec![IceCandidate {
                foundation: "udpcandidate".into(),
                priority: 1_076_302_079,
                address: addr.ip().to_string(),
                ip: addr.ip().to_string(),
                port: addr.port(),
                kind: "host".into(),
                protocol: "udp".into(),
                tcp_type: None,
            }],
            dtls_parameters: DtlsParameters {
                role: Some(DtlsRole::Auto),
                fingerprints: vec![DtlsFingerprint {
                    algorithm: "sha-256".into(),
                    value,
                }],
            },
            sctp_parameters: Some(SctpParameters {
                port: 5000,
                os: 1024,
                mis: 1024,
                max_message_size: 262_144,
            }),
            ice_servers: vec![],
        };
        let server = Server {
            rtc,
            addr,
            events: Vec::new(),
            to_client: VecDeque::new(),
            timeout: now,
        };
        (server, options)
    }

    /// What the server does on `connect-transport`.
    fn connect(&mut self, client: &PeerTransport, now: Instant) {
        let dtls = client.dtls_parameters();
        let fp = &dtls.fingerprints[0];
        let fp: Fingerprint = format!("{} {}", fp.algorithm, fp.value).parse().unwrap();
        let ice = client.local_ice_parameters();
        let mut api = self.rtc.direct_api();
        api.set_remote_fingerprint(fp);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: ice.username_fragment,
            pass: ice.password,
        });
        api.set_ice_controlling(false);
        api.start_dtls(false).unwrap();
        api.start_sctp(false);
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.timeout = t.max(now);
                    break;
                }
                Output::Transmit(t) => {
                    assert_eq!(t.destination, CLIENT.parse().unwrap());
                    self.to_client.push_back(t.contents.into());
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let r = Receive::new(Protocol::Udp, from, self.addr, data).unwrap();
        self.rtc.handle_input(Input::Receive(now, r)).unwrap();
        self.drain(now);
    }

    fn timeout(&mut self, now: Instant) {
        self.rtc.handle_input(Input::Timeout(now)).unwrap();
        self.drain(now);
    }

    fn rtp(&self) -> Vec<&str0m::rtp::RtpPacket> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

/// Client, server and a fake clock.
struct Pair {
    now: Instant,
    client: PeerTransport,
    server: Server,
    client_events: Vec<PeerEvent>,
    caps: RtpCapabilities,
    /// (ssrc, sequence number) of client RTP packets to lose once.
    lose: Vec<(u32, u16)>,
}

impl Pair {
    fn new(direction: TransportDirection) -> Self {
        let now = Instant::now();
        let caps = router_caps();
        let (mut server, options) = Server::new(now, &caps);
        let client =
            PeerTransport::new(now, direction, CLIENT.parse().unwrap(), &options, &caps).unwrap();
        assert_eq!(client.server_addr(), server.addr);
        server.connect(&client, now);
        Pair {
            now,
            client,
            server,
            client_events: Vec::new(),
            caps,
            lose: Vec::new(),
        }
    }

    /// Delivers every packet in flight (zero latency) until both sides are
    /// quiet, then collects the client's events.
    fn deliver(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                assert_eq!(t.destination, self.server.addr);
                let c = &t.contents;
                let is_rtp = c.len() >= 12 && c[0] >> 6 == 2 && !(192..=223).contains(&c[1]);
                if is_rtp {
                    let seq = u16::from_be_bytes([c[2], c[3]]);
                    let ssrc = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
                    if let Some(i) = self.lose.iter().position(|l| *l == (ssrc, seq)) {
                        self.lose.remove(i);
                        continue;
                    }
                }
                self.server
                    .receive(self.now, CLIENT.parse().unwrap(), &t.contents);
                moved = true;
            }
            while let Some(d) = self.server.to_client.pop_front() {
                if let Err(e) = self.client.handle_receive(self.now, self.server.addr, &d) {
                    assert!(!self.client.is_alive(), "{e}");
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    /// Advances the fake clock to the next timer of either side (at most
    /// 10 ms at a time) and delivers.
    fn step(&mut self) {
        self.deliver();
        let next = [self.client.poll_timeout(), Some(self.server.timeout)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.now + Duration::from_millis(10));
        let next = next.clamp(
            self.now + Duration::from_millis(1),
            self.now + Duration::from_millis(10),
        );
        self.now = next;
        self.client.handle_timeout(self.now);
        self.server.timeout(self.now);
        self.deliver();
    }

    /// Steps until `f` holds, failing after `limit` of fake time.
    fn run_until(&mut self, limit: Duration, mut f: impl FnMut(&mut Self) -> bool) {
        let end = self.now + limit;
        while !f(self) {
            assert!(self.now < end, "condition not met within {limit:?}");
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn connect(&mut self) {
        self.run_until(Duration::from_secs(10), |p| {
            p.client.is_connected() && p.server.rtc.is_connected()
        });
    }
}

#[test]
fn ice_and_dtls_connect_to_an_ice_lite_dtls_server() {
    let mut p = Pair::new(TransportDirection::Send);
    assert!(!p.client.is_connected());
    p.connect();
    assert!(p.client_events.contains(&PeerEvent::Connected));
    assert!(
        p.server
            .events
            .iter()
            .any(|e| matches!(e, Event::Connected))
    );
    assert_eq!(p.client.id().as_str(), "TP_standin");
    // Connected within a second of fake time on a zero-latency link.
    assert!(p.client.poll_timeout().is_some());
}

#[test]
fn dtls_parameters_are_role_client_with_a_sha256_fingerprint() {
    let p = Pair::new(TransportDirection::Send);
    let d = p.client.dtls_parameters();
    assert_eq!(d.role, Some(DtlsRole::Client));
    assert_eq!(d.fingerprints.len(), 1);
    assert_eq!(d.fingerprints[0].algorithm, "sha-256");
    let parts: Vec<&str> = d.fingerprints[0].value.split(':').collect();
    assert_eq!(parts.len(), 32);
    assert!(parts.iter().all(|h| {
        h.len() == 2
            && h.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    }));
    // The wire form mediasoup-client sends.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["role"], "client");
}

#[test]
fn published_video_arrives_with_router_payload_type_ssrc_and_payload() {
    let mut p = Pair::new(TransportDirection::Send);
    let track = p
        .client
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap();
    let vp8 = pt_of(&p.caps, "video/VP8");
    assert_eq!(track.mid, "0");
    assert_eq!(track.payload_type, vp8);
    assert_eq!(track.clock_rate, 90_000);
    let rtx = track.rtx_ssrc.expect("video has rtx");

    // rtpParameters as mediasoup-client's produce event gives them.
    let params = &track.rtp_parameters;
    assert_eq!(params.mid.as_deref(), Some("0"));
    assert_eq!(params.codecs[0].mime_type, "video/VP8");
    assert_eq!(params.codecs[0].payload_type, vp8);
    assert!(!params.codecs[0].rtcp_feedback.is_empty());
    assert_eq!(params.codecs[1].mime_type, "video/rtx");
    assert_eq!(params.codecs[1].payload_type, rtx_of(&p.caps, vp8));
    assert_eq!(
        params.codecs[1].parameters["apt"].as_int(),
        Some(i64::from(vp8))
    );
    assert_eq!(params.encodings[0].ssrc, Some(track.ssrc));
    assert_eq!(params.encodings[0].rtx, Some(RtxParameters { ssrc: rtx }));
    let ids: Vec<(&str, u8)> = params
        .header_extensions
        .iter()
        .map(|h| (h.uri.as_str(), h.id))
        .collect();
    assert_eq!(
        ids,
        [
            (uri::MID, ext_id(&p.caps, uri::MID)),
            (uri::ABS_SEND_TIME, ext_id(&p.caps, uri::ABS_SEND_TIME)),
            (uri::TRANSPORT_CC, ext_id(&p.caps, uri::TRANSPORT_CC)),
            (
                uri::VIDEO_ORIENTATION,
                ext_id(&p.caps, uri::VIDEO_ORIENTATION)
            ),
            (uri::TOFFSET, ext_id(&p.caps, uri::TOFFSET)),
        ]
    );
    assert_eq!(params.rtcp.reduced_size, Some(true));
    assert!(params.rtcp.cname.is_some());

    // Writing before the transport is up is refused.
    let err = p
        .client
        .write_rtp("0", 1, 0, true, &b"early"[..], p.now)
        .unwrap_err();
    assert!(matches!(err, ClientError::NotConnected(_)), "{err}");

    // What the server does on `publish`.
    let mid = Mid::from("0");
    p.server
        .rtc
        .direct_api()
        .declare_media(mid, str0m::media::MediaKind::Video);
    p.server
        .rtc
        .direct_api()
        .expect_stream_rx(track.ssrc.into(), Some(rtx.into()), mid, None);
    p.connect();

    for i in 0..10u64 {
        let payload = format!("frame {i}").into_bytes();
        let now = p.now;
        p.client
            .write_rtp("0", 100 + i, 3000 * i as u32, i % 2 == 1, payload, now)
            .unwrap();
        p.step();
    }
    p.run_for(Duration::from_millis(100));
    let got = p.server.rtp();
    assert_eq!(got.len(), 10);
    for (i, pkt) in got.iter().enumerate() {
        assert_eq!(*pkt.header.ssrc, track.ssrc);
        assert_eq!(*pkt.header.payload_type, vp8);
        assert_eq!(&pkt.payload[..], format!("frame {i}").as_bytes());
        assert_eq!(*pkt.seq_no, 100 + i as u64);
        assert_eq!(pkt.header.timestamp, 3000 * i as u32);
        assert_eq!(pkt.header.marker, i % 2 == 1);
    }
}

#[test]
fn published_audio_carries_audio_level() {
    let mut p = Pair::new(TransportDirection::Send);
    p.connect();
    let track = p
        .client
        .add_track(MediaKind::Audio, "audio/OPUS", true)
        .unwrap();
    assert_eq!(track.rtx_ssrc, None, "no RTX for audio");
    assert_eq!(track.rtp_parameters.codecs.len(), 1);
    assert_eq!(track.rtp_parameters.codecs[0].channels, Some(2));
    assert!(
        track
            .rtp_parameters
            .header_extensions
            .iter()
            .any(|h| h.uri == uri::AUDIO_LEVEL)
    );
    let mid = Mid::from(track.mid.as_str());
    p.server
        .rtc
        .direct_api()
        .declare_media(mid, str0m::media::MediaKind::Audio);
    p.server
        .rtc
        .direct_api()
        .expect_stream_rx(track.ssrc.into(), None, mid, None);
    for i in 0..5u64 {
        let now = p.now;
        p.client
            .write_rtp(&track.mid, i, 960 * i as u32, true, vec![0xAB; 120], now)
            .unwrap();
        p.run_for(Duration::from_millis(20));
    }
    let got = p.server.rtp();
    assert_eq!(got.len(), 5);
    assert!(
        got.iter()
            .all(|p| p.header.ext_vals.audio_level == Some(-30))
    );
    assert!(got.iter().all(|p| *p.header.payload_type == 100));
}

/// What the server does on `subscribe`: a consumer on the receive transport
/// with server-chosen mid and SSRCs, in the router's payload types.
fn consumer_params(caps: &RtpCapabilities, mid: &str, ssrc: u32) -> RtpParameters {
    let vp8 = pt_of(caps, "video/VP8");
    let rtx = rtx_of(caps, vp8);
    serde_json::from_value(serde_json::json!({
        "mid": mid,
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": vp8, "clockRate": 90000},
            {"mimeType": "video/rtx", "payloadType": rtx, "clockRate": 90000,
             "parameters": {"apt": vp8}}
        ],
        "headerExtensions": [{"uri": uri::MID, "id": ext_id(caps, uri::MID)}],
        "encodings": [{"ssrc": ssrc, "rtx": {"ssrc": ssrc + 1}}],
        "rtcp": {"cname": "srv", "reducedSize": true}
    }))
    .unwrap()
}

#[test]
fn consumed_video_arrives_as_events_and_keyframes_can_be_requested() {
    let mut p = Pair::new(TransportDirection::Recv);
    p.connect();
    let consumer = ConsumerId::new("CN_1");
    let params = consumer_params(&p.caps, "0", 412_345_678);
    p.client
        .add_consumer(consumer.clone(), MediaKind::Video, &params)
        .unwrap();
    assert_eq!(p.client.consumer_mid(&consumer), Some("0"));
    assert_eq!(p.client.consumer_for_ssrc(412_345_678), Some(&consumer));

    let mid = Mid::from("0");
    let vp8 = pt_of(&p.caps, "video/VP8");
    {
        let mut api = p.server.rtc.direct_api();
        api.declare_media(mid, str0m::media::MediaKind::Video);
        api.declare_stream_tx(412_345_678.into(), Some(412_345_679.into()), mid, None);
    }
    for i in 0..5u64 {
        let now = p.now;
        let mut api = p.server.rtc.direct_api();
        let tx = api.stream_tx(&412_345_678.into()).unwrap();
        tx.write_rtp(
            RtpWrite::new(
                vp8.into(),
                (7 + i).into(),
                90 * i as u32,
                now,
                vec![i as u8; 50],
            )
            .marker(true)
            .nackable(true),
        );
        p.server.drain(now);
        p.run_for(Duration::from_millis(5));
    }
    let got: Vec<&PeerEvent> = p
        .client_events
        .iter()
        .filter(|e| matches!(e, PeerEvent::RtpPacket { .. }))
        .collect();
    assert_eq!(got.len(), 5);
    for (i, e) in got.iter().enumerate() {
        let PeerEvent::RtpPacket {
            mid,
            ssrc,
            payload_type,
            seq_no,
            rtp_time,
            marker,
            payload,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(mid, "0");
        assert_eq!(*ssrc, 412_345_678);
        assert_eq!(*payload_type, vp8);
        assert_eq!(*seq_no, 7 + i as u64);
        assert_eq!(*rtp_time, 90 * i as u32);
        assert!(*marker);
        assert_eq!(&payload[..], &[i as u8; 50][..]);
    }

    p.client.request_keyframe(&consumer).unwrap();
    p.run_until(Duration::from_secs(2), |p| {
        p.server
            .events
            .iter()
            .any(|e| matches!(e, Event::KeyframeRequest(r) if r.mid == mid))
    });

    // Removing the consumer forgets it.
    p.client.remove_consumer(&consumer).unwrap();
    assert_eq!(p.client.consumer_for_ssrc(412_345_678), None);
    assert!(matches!(
        p.client.request_keyframe(&consumer),
        Err(ClientError::NotFound(_))
    ));
}

#[test]
fn server_keyframe_requests_reach_the_publisher() {
    let mut p = Pair::new(TransportDirection::Send);
    p.connect();
    let track = p
        .client
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap();
    let mid = Mid::from(track.mid.as_str());
    {
        let mut api = p.server.rtc.direct_api();
        api.declare_media(mid, str0m::media::MediaKind::Video);
        api.expect_stream_rx(track.ssrc.into(), track.rtx_ssrc.map(Into::into), mid, None);
    }
    // The server needs to have seen the stream before it can ask.
    let now = p.now;
    p.client
        .write_rtp(&track.mid, 1, 0, true, vec![0x10, 0x10, 0, 0], now)
        .unwrap();
    p.run_for(Duration::from_millis(50));
    p.server
        .rtc
        .direct_api()
        .stream_rx(&track.ssrc.into())
        .unwrap()
        .request_keyframe(KeyframeRequestKind::Pli);
    let now = p.now;
    p.server.drain(now);
    p.run_until(Duration::from_secs(2), |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, PeerEvent::KeyframeRequest { mid, rid: None, full: false } if mid == "0"))
    });
}

#[test]
fn data_channels_flow_both_ways() {
    let mut p = Pair::new(TransportDirection::Send);
    // A data producer (client opens stream 0) and a data consumer (server
    // chose stream 1).
    p.client.open_data_channel(0, "chat", true, None).unwrap();
    p.client
        .accept_data_channel(
            &SctpStreamParameters {
                stream_id: 1,
                ordered: Some(false),
                max_packet_life_time: None,
                max_retransmits: Some(0),
            },
            "feed",
        )
        .unwrap();
    assert!(matches!(
        p.client.open_data_channel(0, "again", true, None),
        Err(ClientError::InvalidParameters(_))
    ));
    let server_chat: ChannelId = p
        .server
        .rtc
        .direct_api()
        .create_data_channel(ChannelConfig {
            label: "chat".into(),
            negotiated: Some(0),
            ..Default::default()
        });
    let server_feed: ChannelId = p
        .server
        .rtc
        .direct_api()
        .create_data_channel(ChannelConfig {
            label: "feed".into(),
            ordered: false,
            reliability: str0m::channel::Reliability::MaxRetransmits { retransmits: 0 },
            negotiated: Some(1),
            ..Default::default()
        });
    p.connect();
    p.run_until(Duration::from_secs(5), |p| {
        p.client_events
            .iter()
            .filter(|e| matches!(e, PeerEvent::ChannelOpen { .. }))
            .count()
            == 2
    });
    assert!(p.client_events.contains(&PeerEvent::ChannelOpen {
        stream_id: 0,
        label: "chat".into()
    }));

    assert!(p.client.send_data(0, false, b"hello").unwrap());
    p.run_until(Duration::from_secs(2), |p| {
        p.server.events.iter().any(|e| {
            matches!(e, Event::ChannelData(d) if d.id == server_chat && d.data == b"hello" && !d.binary)
        })
    });

    let now = p.now;
    p.server
        .rtc
        .channel(server_feed)
        .unwrap()
        .write(true, &[1, 2, 3])
        .unwrap();
    p.server.drain(now);
    p.run_until(Duration::from_secs(2), |p| {
        p.client_events.contains(&PeerEvent::ChannelData {
            stream_id: 1,
            binary: true,
            data: vec![1, 2, 3],
        })
    });

    // Sending on an unknown stream is an error, not a panic.
    assert!(matches!(
        p.client.send_data(9, true, b"x"),
        Err(ClientError::NotFound(_))
    ));
    p.client.close_data_channel(0).unwrap();
    assert!(matches!(
        p.client.send_data(0, true, b"x"),
        Err(ClientError::NotFound(_))
    ));
}

#[test]
fn garbage_datagrams_do_not_panic_or_break_the_transport() {
    let mut p = Pair::new(TransportDirection::Send);
    let server = p.server.addr;
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 3],
        vec![0x00, 0x01, 0x00, 0x00],
        vec![22; 13],
        vec![0x80; 12],
        vec![0x80, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 9, 9, 9],
        vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    ];
    let mut x: u32 = 12345;
    for len in [1usize, 5, 12, 20, 64, 200, 1200, 1500] {
        for first in [0u8, 1, 3, 20, 23, 63, 64, 127, 128, 144, 191, 200, 255] {
            let mut v = vec![first];
            for _ in 1..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                v.push((x >> 16) as u8);
            }
            junk.push(v);
        }
    }
    for j in &junk {
        let _ = p.client.handle_receive(p.now, server, j);
    }
    p.connect();
    for j in &junk {
        let _ = p.client.handle_receive(p.now, server, j);
        let _ = p
            .client
            .handle_receive(p.now, "10.9.9.9:9".parse().unwrap(), j);
    }
    p.step();
    assert!(p.client.is_connected());
    assert!(p.client.is_alive());

    // Media still flows after the junk.
    let track = p
        .client
        .add_track(MediaKind::Audio, "audio/opus", false)
        .unwrap();
    let mid = Mid::from(track.mid.as_str());
    p.server
        .rtc
        .direct_api()
        .declare_media(mid, str0m::media::MediaKind::Audio);
    p.server
        .rtc
        .direct_api()
        .expect_stream_rx(track.ssrc.into(), None, mid, None);
    let now = p.now;
    p.client
        .write_rtp(&track.mid, 1, 0, true, vec![1; 100], now)
        .unwrap();
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.server.rtp().len(), 1);
}

#[test]
fn bad_commands_are_errors() {
    let mut p = Pair::new(TransportDirection::Send);
    assert!(matches!(
        p.client.add_track(MediaKind::Video, "video/AV1", true),
        Err(ClientError::Unsupported(_))
    ));
    assert!(matches!(
        p.client.add_track(MediaKind::Audio, "video/VP8", false),
        Err(ClientError::Unsupported(_))
    ));
    let now = p.now;
    assert!(matches!(
        p.client.write_rtp("7", 1, 0, false, &b"x"[..], now),
        Err(ClientError::NotFound(_))
    ));

    let caps = p.caps.clone();
    let mut no_ssrc = consumer_params(&caps, "5", 1);
    no_ssrc.encodings = vec![RtpEncodingParameters::default()];
    assert!(matches!(
        p.client
            .add_consumer(ConsumerId::new("CN_a"), MediaKind::Video, &no_ssrc),
        Err(ClientError::InvalidParameters(_))
    ));
    let mut no_mid = consumer_params(&caps, "5", 1);
    no_mid.mid = None;
    assert!(
        p.client
            .add_consumer(ConsumerId::new("CN_b"), MediaKind::Video, &no_mid)
            .is_err()
    );
    let bad_mid = consumer_params(&caps, "a-very-long-mid-that-str0m-cannot-hold", 1);
    assert!(
        p.client
            .add_consumer(ConsumerId::new("CN_c"), MediaKind::Video, &bad_mid)
            .is_err()
    );
    let mut bad_pt = consumer_params(&caps, "5", 1);
    bad_pt.codecs = vec![RtpCodecParameters {
        mime_type: "video/VP8".into(),
        payload_type: 77,
        clock_rate: 90000,
        channels: None,
        parameters: Default::default(),
        rtcp_feedback: vec![],
    }];
    assert!(matches!(
        p.client
            .add_consumer(ConsumerId::new("CN_d"), MediaKind::Video, &bad_pt),
        Err(ClientError::Unsupported(_))
    ));
    // Audio consumer with a video payload type.
    assert!(
        p.client
            .add_consumer(
                ConsumerId::new("CN_e"),
                MediaKind::Audio,
                &consumer_params(&caps, "5", 1)
            )
            .is_err()
    );

    // A mid taken by a track cannot be a consumer's.
    let track = p
        .client
        .add_track(MediaKind::Audio, "audio/opus", false)
        .unwrap();
    assert!(
        p.client
            .add_consumer(
                ConsumerId::new("CN_f"),
                MediaKind::Video,
                &consumer_params(&caps, &track.mid, 1)
            )
            .is_err()
    );
    // The next track skips mids in use by consumers.
    p.client
        .add_consumer(
            ConsumerId::new("CN_g"),
            MediaKind::Video,
            &consumer_params(&caps, "1", 10),
        )
        .unwrap();
    let t2 = p
        .client
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap();
    assert_eq!(t2.mid, "2");
    assert!(matches!(
        p.client.request_keyframe(&ConsumerId::new("CN_zz")),
        Err(ClientError::NotFound(_))
    ));
    p.client.remove_track(&t2.mid).unwrap();
    assert!(p.client.remove_track(&t2.mid).is_err());
}

#[test]
fn options_without_candidates_or_fingerprints_are_refused() {
    let now = Instant::now();
    let caps = router_caps();
    let (_server, options) = Server::new(now, &caps);
    let mut no_cand = options.clone();
    no_cand.ice_candidates.clear();
    assert!(matches!(
        PeerTransport::new(
            now,
            TransportDirection::Send,
            CLIENT.parse().unwrap(),
            &no_cand,
            &caps
        ),
        Err(ClientError::InvalidParameters(_))
    ));
    let mut no_fp = options.clone();
    no_fp.dtls_parameters.fingerprints.clear();
    assert!(
        PeerTransport::new(
            now,
            TransportDirection::Send,
            CLIENT.parse().unwrap(),
            &no_fp,
            &caps
        )
        .is_err()
    );
    let mut bad_fp = options.clone();
    bad_fp.dtls_parameters.fingerprints[0].value = "zz:top".into();
    assert!(
        PeerTransport::new(
            now,
            TransportDirection::Send,
            CLIENT.parse().unwrap(),
            &bad_fp,
            &caps
        )
        .is_err()
    );
    assert!(
        PeerTransport::new(
            now,
            TransportDirection::Send,
            "0.0.0.0:5000".parse().unwrap(),
            &options,
            &caps
        )
        .is_err()
    );
}

#[test]
fn close_disconnects() {
    let mut p = Pair::new(TransportDirection::Send);
    p.connect();
    let now = p.now;
    p.client.close(now);
    p.deliver();
    assert!(!p.client.is_connected());
    assert!(p.client_events.last() == Some(&PeerEvent::Disconnected));
    p.run_for(Duration::from_millis(100));
    assert!(!p.client.is_alive());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn lost_video_packets_are_retransmitted_over_rtx() {
    let mut p = Pair::new(TransportDirection::Send);
    let track = p
        .client
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap();
    let mid = Mid::from(track.mid.as_str());
    {
        let mut api = p.server.rtc.direct_api();
        api.declare_media(mid, str0m::media::MediaKind::Video);
        api.expect_stream_rx(track.ssrc.into(), track.rtx_ssrc.map(Into::into), mid, None);
    }
    p.connect();
    p.lose.push((track.ssrc, 13));
    for i in 10..20u64 {
        let now = p.now;
        p.client
            .write_rtp(
                &track.mid,
                i,
                3000 * i as u32,
                true,
                vec![i as u8; 200],
                now,
            )
            .unwrap();
        p.run_for(Duration::from_millis(10));
    }
    p.run_until(Duration::from_secs(2), |p| p.server.rtp().len() == 10);
    assert!(p.lose.is_empty(), "the packet was lost once");
    let resent = p
        .server
        .rtp()
        .into_iter()
        .find(|r| *r.seq_no == 13)
        .unwrap();
    assert_eq!(&resent.payload[..], &[13u8; 200][..]);
    assert_eq!(
        *resent.header.ssrc, track.ssrc,
        "RTX unwrapped to the media ssrc"
    );
}

#[test]
fn simulcast_layers_carry_mid_and_rid_and_keyframe_requests_name_the_layer() {
    let mut p = Pair::new(TransportDirection::Send);
    let track = p
        .client
        .add_simulcast_track(MediaKind::Video, "video/VP8", &["r0", "r1", "r2"])
        .unwrap();
    let vp8 = pt_of(&p.caps, "video/VP8");
    assert_eq!(track.mid, "0");
    assert_eq!(track.payload_type, vp8);
    assert_eq!(track.rtx_ssrc, None, "simulcast layers have no RTX");
    let rids: Vec<&str> = track.layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(rids, ["r0", "r1", "r2"]);
    assert_eq!(track.ssrc, track.layers[0].ssrc);
    let ssrcs: Vec<u32> = track.layers.iter().map(|l| l.ssrc).collect();
    assert!(ssrcs[0] != ssrcs[1] && ssrcs[1] != ssrcs[2] && ssrcs[0] != ssrcs[2]);

    // mediasoup-client's shape: encodings by rid, no ssrc, no RTX; the rid
    // extension right after the mid's.
    let params = &track.rtp_parameters;
    assert_eq!(params.mid.as_deref(), Some("0"));
    assert_eq!(params.codecs.len(), 1);
    assert_eq!(params.codecs[0].mime_type, "video/VP8");
    let json = serde_json::to_value(&params.encodings).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"rid": "r0"}, {"rid": "r1"}, {"rid": "r2"}])
    );
    let uris: Vec<&str> = params
        .header_extensions
        .iter()
        .map(|h| h.uri.as_str())
        .collect();
    assert_eq!(&uris[..2], [uri::MID, uri::RID]);
    assert_eq!(params.header_extensions[1].id, ext_id(&p.caps, uri::RID));
    assert_eq!(p.client.local_track("0"), Some(&track));

    // What the server does on `publish` with rids: expect them on the mid.
    let mid = Mid::from("0");
    {
        let mut api = p.server.rtc.direct_api();
        let media = api.declare_media(mid, str0m::media::MediaKind::Video);
        for rid in ["r0", "r1", "r2"] {
            media.expect_rid_rx(Rid::from(rid));
        }
    }
    p.connect();

    // Which layer? `write_rtp` cannot tell.
    let now = p.now;
    let err = p
        .client
        .write_rtp("0", 1, 0, true, &b"x"[..], now)
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidParameters(_)), "{err}");
    let err = p
        .client
        .write_rtp_layer("0", "r9", 1, 0, true, &b"x"[..], now)
        .unwrap_err();
    assert!(matches!(err, ClientError::NotFound(_)), "{err}");

    for i in 0..4u64 {
        for (n, rid) in ["r0", "r1", "r2"].iter().enumerate() {
            let now = p.now;
            let payload = format!("{rid} frame {i}").into_bytes();
            p.client
                .write_rtp_layer(
                    "0",
                    rid,
                    1000 * n as u64 + i,
                    3000 * i as u32,
                    true,
                    payload,
                    now,
                )
                .unwrap();
        }
        p.run_for(Duration::from_millis(20));
    }
    let got = p.server.rtp();
    assert_eq!(got.len(), 12);
    for layer in &track.layers {
        let LocalLayer { rid, ssrc } = layer;
        let mine: Vec<_> = got.iter().filter(|r| *r.header.ssrc == *ssrc).collect();
        assert_eq!(mine.len(), 4, "layer {rid}");
        for (i, pkt) in mine.iter().enumerate() {
            assert_eq!(&pkt.payload[..], format!("{rid} frame {i}").as_bytes());
            assert_eq!(*pkt.header.payload_type, vp8);
            assert_eq!(pkt.header.timestamp, 3000 * i as u32);
        }
        // The first packets announce the layer (until a receiver report
        // acknowledges the ssrc).
        assert_eq!(mine[0].header.ext_vals.mid, Some(mid));
        assert_eq!(mine[0].header.ext_vals.rid, Some(Rid::from(rid.as_str())));
    }

    // The server asks for a keyframe on r1 only: the event names it.
    p.server
        .rtc
        .direct_api()
        .stream_rx(&track.layers[1].ssrc.into())
        .unwrap()
        .request_keyframe(KeyframeRequestKind::Pli);
    let now = p.now;
    p.server.drain(now);
    p.run_until(Duration::from_secs(2), |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, PeerEvent::KeyframeRequest { .. }))
    });
    let requests: Vec<&PeerEvent> = p
        .client_events
        .iter()
        .filter(|e| matches!(e, PeerEvent::KeyframeRequest { .. }))
        .collect();
    assert_eq!(
        requests,
        [&PeerEvent::KeyframeRequest {
            mid: "0".into(),
            rid: Some("r1".into()),
            full: false
        }]
    );

    // Removing the track removes every layer.
    p.client.remove_track("0").unwrap();
    let now = p.now;
    assert!(matches!(
        p.client
            .write_rtp_layer("0", "r0", 9, 0, true, &b"x"[..], now),
        Err(ClientError::NotFound(_))
    ));
}

#[test]
fn simulcast_tracks_refuse_bad_rids_and_audio() {
    let mut p = Pair::new(TransportDirection::Send);
    let bad: [&[&str]; 6] = [
        &[],
        &[""],
        &["r0", "toolongrid"],
        &["r-0"],
        &["r0", "r1", "r0"],
        &["ŕ0"],
    ];
    for rids in bad {
        let err = p
            .client
            .add_simulcast_track(MediaKind::Video, "video/VP8", rids)
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidParameters(_)),
            "{rids:?}: {err}"
        );
    }
    assert!(matches!(
        p.client
            .add_simulcast_track(MediaKind::Audio, "audio/opus", &["a", "b"]),
        Err(ClientError::Unsupported(_))
    ));
    assert!(matches!(
        p.client
            .add_simulcast_track(MediaKind::Video, "video/AV2", &["a", "b"]),
        Err(ClientError::Unsupported(_))
    ));
    // Nothing was declared: the next track still gets mid 0, and a single
    // track has no layers.
    let single = p
        .client
        .add_track(MediaKind::Video, "video/VP8", true)
        .unwrap();
    assert_eq!(single.mid, "0");
    assert!(single.layers.is_empty());
    let eight = p
        .client
        .add_simulcast_track(MediaKind::Video, "video/VP8", &["abcdefgh", "Z9"])
        .unwrap();
    assert_eq!(eight.mid, "1");
    assert_eq!(eight.layers.len(), 2);
}
