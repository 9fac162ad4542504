//! mediasoup-client compatibility: each `produce` brings the sender's own
//! payload types and header extension ids, whatever the publish order, and
//! the server learns them on the live transport.

use pulsewave_client::SYNTHETIC_AUDIO_LEVEL;
use pulsewave_core::Error;
use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpHeaderExtension, RtpHeaderExtensionDirection, RtpParameters, uri,
};
use pulsewave_test::{Direction, PacketKind, Sim, SimulcastOptions, TrackOptions};

use crate::{SECOND, assert_contiguous, is_vp8_keyframe_start};

fn codec(
    kind: MediaKind,
    mime: &str,
    pt: u8,
    clock_rate: u32,
    params: &[(&str, ParamValue)],
) -> RtpCodecCapability {
    let video_fb = vec![
        RtcpFeedback::new("goog-remb", ""),
        RtcpFeedback::new("transport-cc", ""),
        RtcpFeedback::new("ccm", "fir"),
        RtcpFeedback::new("nack", ""),
        RtcpFeedback::new("nack", "pli"),
    ];
    let rtx = mime.ends_with("/rtx");
    RtpCodecCapability {
        kind,
        mime_type: mime.into(),
        preferred_payload_type: pt,
        clock_rate,
        channels: (kind == MediaKind::Audio).then_some(2),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<CodecParameters>(),
        rtcp_feedback: match kind {
            MediaKind::Video if !rtx => video_fb,
            MediaKind::Audio => vec![RtcpFeedback::new("transport-cc", "")],
            MediaKind::Video => Vec::new(),
        },
    }
}

fn ext(kind: MediaKind, uri: &str, id: u8) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind,
        uri: uri.into(),
        preferred_id: id,
        preferred_encrypt: false,
        direction: Some(RtpHeaderExtensionDirection::Sendrecv),
    }
}

/// The payload types and extension ids Chromium 156 uses on a send
/// transport whose first track is video (seen through mediasoup-client's
/// `produce`): `mid` 9, rid 10, repaired-rid 11, abs-send-time 2,
/// transport-cc 4, video-orientation 3, toffset 1; the audio added second
/// gets audio-level 14 (docs/compat.md). The router's are mid 1, rid 2,
/// repaired-rid 3, abs-send-time 4, transport-cc 5, audio-level 6.
fn chrome_video_first() -> RtpCapabilities {
    use MediaKind::{Audio, Video};
    RtpCapabilities {
        codecs: vec![
            codec(
                Audio,
                "audio/opus",
                111,
                48_000,
                &[
                    ("minptime", ParamValue::Int(10)),
                    ("useinbandfec", ParamValue::Int(1)),
                ],
            ),
            codec(Video, "video/VP8", 96, 90_000, &[]),
            codec(
                Video,
                "video/rtx",
                97,
                90_000,
                &[("apt", ParamValue::Int(96))],
            ),
            codec(
                Video,
                "video/VP9",
                98,
                90_000,
                &[("profile-id", ParamValue::Int(0))],
            ),
            codec(
                Video,
                "video/rtx",
                99,
                90_000,
                &[("apt", ParamValue::Int(98))],
            ),
            codec(
                Video,
                "video/H264",
                106,
                90_000,
                &[
                    ("level-asymmetry-allowed", ParamValue::Int(1)),
                    ("packetization-mode", ParamValue::Int(1)),
                    ("profile-level-id", ParamValue::from("42e01f")),
                ],
            ),
            codec(
                Video,
                "video/rtx",
                107,
                90_000,
                &[("apt", ParamValue::Int(106))],
            ),
            codec(Video, "video/AV1", 45, 90_000, &[]),
            codec(
                Video,
                "video/rtx",
                46,
                90_000,
                &[("apt", ParamValue::Int(45))],
            ),
        ],
        header_extensions: vec![
            ext(Video, uri::TOFFSET, 1),
            ext(Video, uri::ABS_SEND_TIME, 2),
            ext(Video, uri::VIDEO_ORIENTATION, 3),
            ext(Video, uri::TRANSPORT_CC, 4),
            ext(Video, uri::MID, 9),
            ext(Video, uri::RID, 10),
            ext(Video, uri::REPAIRED_RID, 11),
            ext(Audio, uri::ABS_SEND_TIME, 2),
            ext(Audio, uri::TRANSPORT_CC, 4),
            ext(Audio, uri::MID, 9),
            ext(Audio, uri::AUDIO_LEVEL, 14),
        ],
    }
}

/// The acceptance case of the compatibility work: on one send transport,
/// video then audio, with the browser's own ids; the subscriber gets both,
/// and the audio-level extension, read by the server at the browser's id,
/// reaches the subscriber at the router's.
#[test]
fn video_then_audio_on_one_transport_with_the_browsers_ids() {
    let mut sim = Sim::new(90);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let tid = sim.send_transport_with_caps(alice, &chrome_video_first());
    sim.recv_transport(bob);
    let (video, vmid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let video_track = sim.track(alice, &vmid).local().clone();
    assert_eq!(video_track.payload_type, 96);
    let mid_ext = video_track
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == uri::MID)
        .unwrap();
    assert_eq!(mid_ext.id, 9, "the browser's id, not the router's 1");
    // Video flows before any audio producer exists.
    let bob_video = sim.subscribe(bob, &video);
    sim.advance(SECOND);
    assert!(sim.received(bob, &bob_video).len() > 30);

    let (audio, amid) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let audio_track = sim.track(alice, &amid).local().clone();
    assert_eq!(audio_track.payload_type, 111);
    let bob_audio = sim.subscribe(bob, &audio);
    sim.advance(2 * SECOND);

    // Alice really sent the browser's payload types.
    let up_pts: Vec<(u32, u8)> = sim
        .link()
        .log()
        .iter()
        .filter(|e| e.direction == Direction::Up && e.transport.as_ref() == Some(&tid))
        .filter_map(|e| match e.kind {
            PacketKind::Rtp { ssrc, pt, .. } => Some((ssrc, pt)),
            _ => None,
        })
        .collect();
    assert!(up_pts.contains(&(video_track.ssrc, 96)));
    assert!(up_pts.contains(&(audio_track.ssrc, 111)));

    let video_got = sim.received(bob, &bob_video);
    assert!(video_got.len() > 100, "video: {}", video_got.len());
    assert!(is_vp8_keyframe_start(&video_got[0].payload));
    assert!(video_got.iter().all(|r| r.payload_type == 101));
    assert_contiguous(&video_got);

    let audio_got = sim.received(bob, &bob_audio);
    assert!(audio_got.len() > 80, "audio: {}", audio_got.len());
    assert!(audio_got.iter().all(|r| r.payload_type == 100));
    assert_contiguous(&audio_got);
    assert!(
        audio_got
            .iter()
            .all(|r| r.audio_level == Some(SYNTHETIC_AUDIO_LEVEL)),
        "the server read the audio level at id 14 and forwarded it: {:?}",
        audio_got
            .iter()
            .map(|r| r.audio_level)
            .take(5)
            .collect::<Vec<_>>()
    );
}

#[test]
fn audio_first_then_video_with_the_browsers_ids() {
    let mut sim = Sim::new(91);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    // Audio first: Chromium uses audio-level 1, abs-send-time 2,
    // transport-cc 3, mid 4 (device.sendRtpCapabilities happens to match).
    let mut caps = chrome_video_first();
    for e in &mut caps.header_extensions {
        e.preferred_id = match e.uri.as_str() {
            uri::AUDIO_LEVEL => 1,
            uri::ABS_SEND_TIME => 2,
            uri::TRANSPORT_CC => 3,
            uri::MID => 4,
            uri::RID => 10,
            uri::REPAIRED_RID => 11,
            uri::VIDEO_ORIENTATION => 13,
            uri::TOFFSET => 14,
            _ => e.preferred_id,
        };
    }
    sim.send_transport_with_caps(alice, &caps);
    sim.recv_transport(bob);
    let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let (video, _) = sim.publish(alice, MediaKind::Video, "video/VP9");
    let bob_audio = sim.subscribe(bob, &audio);
    let bob_video = sim.subscribe(bob, &video);
    sim.advance(2 * SECOND);
    let a = sim.received(bob, &bob_audio);
    let v = sim.received(bob, &bob_video);
    assert!(
        a.len() > 80 && v.len() > 80,
        "audio {} video {}",
        a.len(),
        v.len()
    );
    assert!(
        a.iter()
            .all(|r| r.audio_level == Some(SYNTHETIC_AUDIO_LEVEL))
    );
    assert_contiguous(&v);
}

#[test]
fn simulcast_by_rid_and_by_ssrc_with_the_browsers_ids() {
    for by_ssrc in [false, true] {
        let mut sim = Sim::new(92);
        let alice = sim.join("alice");
        let bob = sim.join("bob");
        sim.send_transport_with_caps(alice, &chrome_video_first());
        sim.recv_transport(bob);
        let mut options = SimulcastOptions::new("video/VP8", &["r0", "r1", "r2"]);
        options.by_ssrc = by_ssrc;
        let (video, _) = sim
            .try_publish_simulcast(alice, None, "video/VP8", options)
            .unwrap();
        let consumer = sim.subscribe(bob, &video);
        sim.advance(3 * SECOND);
        let got = sim.received(bob, &consumer);
        assert!(got.len() > 100, "by_ssrc {by_ssrc}: {}", got.len());
        assert!(is_vp8_keyframe_start(&got[0].payload));
        let origins = sim.received_origins(bob, &consumer);
        assert_eq!(
            origins
                .last()
                .and_then(|(_, o)| o.as_ref())
                .and_then(|o| o.rid.as_deref()),
            Some("r2"),
            "by_ssrc {by_ssrc}: the top layer is forwarded"
        );
    }
}

#[test]
fn a_payload_type_clash_is_refused_and_changes_nothing() {
    let mut sim = Sim::new(93);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    let tid = sim.send_transport_with_caps(alice, &chrome_video_first());
    sim.recv_transport(bob);
    let (video, vmid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &video);
    sim.advance(SECOND);

    // A second track that claims the video's payload type for opus.
    let mut params: RtpParameters = sim.track(alice, &vmid).local().rtp_parameters.clone();
    params.mid = Some("7".into());
    params.codecs.truncate(1);
    params.codecs[0].mime_type = "audio/opus".into();
    params.codecs[0].clock_rate = 48_000;
    params.codecs[0].channels = Some(2);
    params.codecs[0].rtcp_feedback.clear();
    params.encodings[0].ssrc = Some(777);
    params.encodings[0].rtx = None;
    let now = sim.now();
    let err = sim
        .room_mut()
        .produce(
            now,
            alice,
            Some(&tid),
            MediaKind::Audio,
            params,
            false,
            pulsewave_core::AppData::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRtpParameters(_)), "{err:?}");
    assert!(matches!(err, Error::InvalidRtpParameters { .. }), "{err:?}");
    assert!(err.to_string().contains("clashes"), "{err}");
    assert_eq!(sim.stats().producers, 1);

    // The video goes on.
    let before = sim.received(bob, &consumer).len();
    sim.advance(SECOND);
    assert!(sim.received(bob, &consumer).len() > before + 30);
}

#[test]
fn a_mid_is_reused_after_unpublish() {
    let mut sim = Sim::new(94);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    sim.send_transport_with_caps(alice, &chrome_video_first());
    sim.recv_transport(bob);
    let (first, mid) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let consumer = sim.subscribe(bob, &first);
    sim.advance(SECOND);
    assert!(!sim.received(bob, &consumer).is_empty());
    sim.unpublish(alice, &mid);
    sim.advance(SECOND / 2);

    let (second, mid2) = sim.publish(alice, MediaKind::Video, "video/VP8");
    assert_eq!(mid2, mid, "the peer reuses the freed mid");
    assert_ne!(second, first);
    let consumer2 = sim.subscribe(bob, &second);
    sim.advance(2 * SECOND);
    let got = sim.received(bob, &consumer2);
    assert!(got.len() > 100, "{}", got.len());
    assert!(is_vp8_keyframe_start(&got[0].payload));
    assert_contiguous(&got);
    // And an audio track on the same transport still works after that.
    let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
    let bob_audio = sim.subscribe(bob, &audio);
    sim.advance(SECOND);
    assert!(sim.received(bob, &bob_audio).len() > 30);
}

#[test]
fn a_second_send_transport_learns_its_own_ids() {
    let mut sim = Sim::new(95);
    let alice = sim.join("alice");
    let bob = sim.join("bob");
    sim.send_transport_with_caps(alice, &chrome_video_first());
    // A second connection: audio first there, other ids.
    let mut caps = chrome_video_first();
    for e in &mut caps.header_extensions {
        e.preferred_id = match e.uri.as_str() {
            uri::MID => 4,
            uri::TRANSPORT_CC => 3,
            uri::VIDEO_ORIENTATION => 13,
            _ => e.preferred_id,
        };
    }
    let second = sim
        .open_transport(
            alice,
            pulsewave_protocol::transport::TransportDirection::Send,
            Some(&caps),
        )
        .unwrap();
    sim.connect(&second).unwrap();
    sim.recv_transport(bob);
    let (camera, _) = sim.publish(alice, MediaKind::Video, "video/VP8");
    let (screen, _) = sim
        .try_publish(
            alice,
            Some(&second),
            MediaKind::Video,
            "video/VP8",
            TrackOptions::default(),
        )
        .unwrap();
    let c1 = sim.subscribe(bob, &camera);
    let c2 = sim.subscribe(bob, &screen);
    sim.advance(2 * SECOND);
    assert!(sim.received(bob, &c1).len() > 100);
    assert!(sim.received(bob, &c2).len() > 100);
}

/// Every video codec of the router, each on its own transport with the
/// browser's payload types: the subscriber's stream starts at a keyframe
/// the server recognized and arrives on the router's payload type.
#[test]
fn every_router_video_codec_is_forwarded_from_a_keyframe() {
    for (seed, mime, router_pt) in [
        (96, "video/VP8", 101),
        (97, "video/VP9", 103),
        (98, "video/H264", 107),
        (99, "video/AV1", 111),
    ] {
        let mut sim = Sim::new(seed);
        let alice = sim.join("alice");
        let bob = sim.join("bob");
        sim.send_transport_with_caps(alice, &chrome_video_first());
        sim.recv_transport(bob);
        let (video, mid) = sim.publish(alice, MediaKind::Video, mime);
        sim.advance(SECOND / 2);
        let consumer = sim.subscribe(bob, &video);
        sim.advance(2 * SECOND);
        let got = sim.received(bob, &consumer);
        assert!(got.len() > 100, "{mime}: {}", got.len());
        assert!(got.iter().all(|r| r.payload_type == router_pt), "{mime}");
        let first = pulsewave_client::parse_synthetic(&got[0].payload).unwrap();
        assert!(first.keyframe && first.first_in_frame, "{mime}: {first:?}");
        assert_contiguous(&got);
        let sent = sim.track(alice, &mid).sent();
        assert!(sent.iter().any(|s| s.payload == got[0].payload));
    }
}

/// A recorded `produce` of another browser (tests/room/data/*.json).
struct Recorded {
    kind: MediaKind,
    rtp_parameters: RtpParameters,
}

fn recorded(browser: &str) -> Vec<(String, Recorded)> {
    let text = match browser {
        "firefox" => include_str!("data/firefox.json"),
        "safari" => include_str!("data/safari.json"),
        other => panic!("no fixture {other}"),
    };
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(name, v)| {
            (
                name.clone(),
                Recorded {
                    kind: serde_json::from_value(v["kind"].clone()).unwrap(),
                    rtp_parameters: serde_json::from_value(v["rtpParameters"].clone()).unwrap(),
                },
            )
        })
        .collect()
}

/// The sending capabilities behind recorded parameters: the same payload
/// types, codec parameters and extension ids, so a simulated peer sends
/// what that browser sends.
fn caps_of(tracks: &[(String, Recorded)]) -> RtpCapabilities {
    let mut caps = RtpCapabilities::default();
    for (_, t) in tracks {
        for c in &t.rtp_parameters.codecs {
            if caps
                .codecs
                .iter()
                .any(|k| k.preferred_payload_type == c.payload_type)
            {
                continue;
            }
            caps.codecs.push(RtpCodecCapability {
                kind: t.kind,
                mime_type: c.mime_type.clone(),
                preferred_payload_type: c.payload_type,
                clock_rate: c.clock_rate,
                channels: c.channels,
                parameters: c.parameters.clone(),
                rtcp_feedback: c.rtcp_feedback.clone(),
            });
        }
        for e in &t.rtp_parameters.header_extensions {
            if !caps
                .header_extensions
                .iter()
                .any(|h| h.kind == t.kind && h.uri == e.uri)
            {
                caps.header_extensions.push(ext(t.kind, &e.uri, e.id));
            }
        }
    }
    caps
}

/// Firefox and Safari `produce` parameters, as recorded: the server takes
/// them exactly as sent (each on a fresh transport, so their declared
/// ssrcs cannot collide), and a peer sending with the same payload types
/// and extension ids reaches a subscriber, simulcast included.
#[test]
fn recorded_firefox_and_safari_parameters_publish_and_forward() {
    for browser in ["firefox", "safari"] {
        let tracks = recorded(browser);
        let caps = caps_of(&tracks);
        let mut sim = Sim::new(100);
        let alice = sim.join("alice");
        let bob = sim.join("bob");
        sim.recv_transport(bob);

        // Exactly as recorded, on a transport of its own.
        let carol = sim.join("carol");
        let tid = sim.send_transport_with_caps(carol, &caps);
        for (name, t) in &tracks {
            let now = sim.now();
            let produced = sim
                .room_mut()
                .produce(
                    now,
                    carol,
                    Some(&tid),
                    t.kind,
                    t.rtp_parameters.clone(),
                    false,
                    pulsewave_core::AppData::default(),
                )
                .unwrap_or_else(|e| panic!("{browser} {name}: {e}"));
            assert_eq!(
                produced.simulcast,
                t.rtp_parameters.encodings.len() > 1,
                "{browser} {name}"
            );
            let now = sim.now();
            let router_caps = sim.router_caps().clone();
            let consumed = sim
                .room_mut()
                .consume(now, bob, None, &produced.producer_id, &router_caps)
                .unwrap_or_else(|e| panic!("{browser} {name}: consume: {e}"));
            let router_pt = sim
                .router_caps()
                .codecs
                .iter()
                .find(|c| {
                    c.mime_type
                        .eq_ignore_ascii_case(&t.rtp_parameters.codecs[0].mime_type)
                })
                .unwrap()
                .preferred_payload_type;
            assert_eq!(
                consumed.rtp_parameters.codecs[0].payload_type, router_pt,
                "{browser} {name}: consumers get the router's payload type"
            );
        }

        // Media from a peer with the same tables.
        sim.send_transport_with_caps(alice, &caps);
        let (audio, _) = sim.publish(alice, MediaKind::Audio, "audio/opus");
        let video = match browser {
            "firefox" => {
                sim.publish_simulcast(alice, "video/VP8", &["r0", "r1", "r2"])
                    .0
            }
            _ => {
                let mut options = SimulcastOptions::new("video/VP8", &["r0", "r1", "r2"]);
                options.by_ssrc = true;
                sim.try_publish_simulcast(alice, None, "video/VP8", options)
                    .unwrap()
                    .0
            }
        };
        let bob_audio = sim.subscribe(bob, &audio);
        let bob_video = sim.subscribe(bob, &video);
        sim.advance(3 * SECOND);
        let a = sim.received(bob, &bob_audio);
        let v = sim.received(bob, &bob_video);
        assert!(a.len() > 100, "{browser} audio: {}", a.len());
        assert!(
            a.iter()
                .all(|r| r.audio_level == Some(SYNTHETIC_AUDIO_LEVEL)),
            "{browser}: audio level read at the browser's id"
        );
        assert!(v.len() > 100, "{browser} video: {}", v.len());
        assert!(is_vp8_keyframe_start(&v[0].payload), "{browser}");
    }
}
