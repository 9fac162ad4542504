//! From the router's RTP capabilities to a str0m configuration (payload-type
//! table, header-extension map) and to the producer RTP parameters
//! mediasoup-client would send.

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtensionDirection,
    RtpHeaderExtensionParameters, RtpParameters, RtxParameters, uri,
};
use str0m::RtcConfig;
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::rtp::Extension;

/// One media codec of the router, with its RTX payload type if any.
#[derive(Clone, Debug)]
pub(crate) struct RouterCodec {
    pub(crate) kind: MediaKind,
    pub(crate) mime_type: String,
    pub(crate) codec: Codec,
    pub(crate) payload_type: u8,
    pub(crate) rtx_payload_type: Option<u8>,
    pub(crate) clock_rate: u32,
    pub(crate) channels: Option<u8>,
    pub(crate) parameters: CodecParameters,
    pub(crate) rtcp_feedback: Vec<RtcpFeedback>,
}

/// One header extension of the router that str0m understands.
#[derive(Clone, Debug)]
pub(crate) struct RouterExtension {
    pub(crate) kind: MediaKind,
    pub(crate) uri: String,
    pub(crate) id: u8,
    pub(crate) direction: Option<RtpHeaderExtensionDirection>,
    pub(crate) ext: Extension,
}

/// The router capabilities, reduced to what str0m can carry.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouterTable {
    pub(crate) codecs: Vec<RouterCodec>,
    pub(crate) extensions: Vec<RouterExtension>,
}

/// The str0m codec for a MIME type, if str0m handles it.
fn codec_for_mime(mime_type: &str) -> Option<Codec> {
    let subtype = mime_type.split_once('/')?.1;
    Some(match subtype.to_ascii_lowercase().as_str() {
        "opus" => Codec::Opus,
        "pcmu" => Codec::PCMU,
        "pcma" => Codec::PCMA,
        "g722" => Codec::G722,
        "vp8" => Codec::Vp8,
        "vp9" => Codec::Vp9,
        "h264" => Codec::H264,
        "av1" => Codec::Av1,
        _ => return None,
    })
}

fn is_rtx(mime_type: &str) -> bool {
    mime_type
        .split_once('/')
        .is_some_and(|(_, sub)| sub.eq_ignore_ascii_case("rtx"))
}

/// The str0m extension for a header-extension URI, if str0m handles it.
fn extension_for_uri(u: &str) -> Option<Extension> {
    Some(match u {
        uri::MID => Extension::RtpMid,
        uri::RID => Extension::RtpStreamId,
        uri::REPAIRED_RID => Extension::RepairedRtpStreamId,
        uri::ABS_SEND_TIME => Extension::AbsoluteSendTime,
        uri::TRANSPORT_CC => Extension::TransportSequenceNumber,
        uri::AUDIO_LEVEL => Extension::AudioLevel,
        uri::VIDEO_ORIENTATION => Extension::VideoOrientation,
        uri::TOFFSET => Extension::TransmissionTimeOffset,
        _ => return None,
    })
}

/// Codec parameters as an fmtp line (`k=v;k=v`).
pub(crate) fn fmtp_line(parameters: &CodecParameters) -> String {
    parameters
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_text()))
        .collect::<Vec<_>>()
        .join(";")
}

impl RouterTable {
    /// Reduces router capabilities to the codecs and extensions str0m knows.
    /// Unknown MIME types and URIs are skipped; RTX entries attach to the
    /// codec whose payload type equals their `apt`.
    pub(crate) fn new(caps: &RtpCapabilities) -> Self {
        let mut codecs: Vec<RouterCodec> = caps
            .codecs
            .iter()
            .filter(|c| !is_rtx(&c.mime_type))
            .filter_map(|c| {
                let codec = codec_for_mime(&c.mime_type)?;
                if c.preferred_payload_type > 127 || c.clock_rate == 0 {
                    return None;
                }
                Some(RouterCodec {
                    kind: c.kind,
                    mime_type: c.mime_type.clone(),
                    codec,
                    payload_type: c.preferred_payload_type,
                    rtx_payload_type: None,
                    clock_rate: c.clock_rate,
                    channels: c.channels,
                    parameters: c.parameters.clone(),
                    rtcp_feedback: c.rtcp_feedback.clone(),
                })
            })
            .collect();
        for rtx in caps.codecs.iter().filter(|c| is_rtx(&c.mime_type)) {
            let Some(apt) = rtx.parameters.get("apt").and_then(ParamValue::as_int) else {
                continue;
            };
            if rtx.preferred_payload_type > 127 {
                continue;
            }
            if let Some(c) = codecs
                .iter_mut()
                .find(|c| i64::from(c.payload_type) == apt && c.rtx_payload_type.is_none())
            {
                c.rtx_payload_type = Some(rtx.preferred_payload_type);
            }
        }
        let extensions = caps
            .header_extensions
            .iter()
            .filter_map(|h| {
                Some(RouterExtension {
                    kind: h.kind,
                    uri: h.uri.clone(),
                    id: h.preferred_id,
                    direction: h.direction,
                    ext: extension_for_uri(&h.uri)?,
                })
            })
            .collect();
        Self { codecs, extensions }
    }

    /// The first router codec of `kind` with `mime_type` (case-insensitive).
    pub(crate) fn find_codec(&self, kind: MediaKind, mime_type: &str) -> Option<&RouterCodec> {
        self.codecs
            .iter()
            .find(|c| c.kind == kind && c.mime_type.eq_ignore_ascii_case(mime_type))
    }

    /// The router codec with payload type `pt` (media, not RTX).
    pub(crate) fn codec_by_pt(&self, pt: u8) -> Option<&RouterCodec> {
        self.codecs.iter().find(|c| c.payload_type == pt)
    }

    /// Applies the payload-type table and extension map to a str0m config.
    pub(crate) fn configure(&self, mut config: RtcConfig) -> RtcConfig {
        config = config.clear_codecs();
        for c in &self.codecs {
            let Some(clock_rate) = Frequency::new(c.clock_rate) else {
                continue;
            };
            let channels = match c.kind {
                MediaKind::Audio => Some(c.channels.unwrap_or(1)),
                MediaKind::Video => None,
            };
            config.codec_config().add_config(
                c.payload_type.into(),
                c.rtx_payload_type.map(Into::into),
                c.codec,
                clock_rate,
                channels,
                FormatParams::parse_line(&fmtp_line(&c.parameters)),
            );
        }
        config = config.clear_extension_map();
        let mut used: Vec<(u8, &str)> = Vec::new();
        for e in &self.extensions {
            match used.iter().find(|(id, _)| *id == e.id) {
                Some((_, u)) if *u == e.uri => continue,
                Some((_, u)) => {
                    tracing::warn!(
                        id = e.id,
                        first = %u,
                        second = %e.uri,
                        "header extension id used twice in router capabilities; keeping the first"
                    );
                    continue;
                }
                None => {}
            }
            used.push((e.id, &e.uri));
            config = config.set_extension(e.id, e.ext.clone());
        }
        config
    }

    /// The header extensions a producer of `kind` sends, as mediasoup-client
    /// lists them: the router's extensions of that kind that the router
    /// receives (direction `sendrecv` or `recvonly`), limited to mid,
    /// abs-send-time, transport-cc, and audio-level (audio) or
    /// video-orientation and toffset (video).
    pub(crate) fn producer_extensions(&self, kind: MediaKind) -> Vec<RtpHeaderExtensionParameters> {
        let wanted: &[&str] = match kind {
            MediaKind::Audio => &[
                uri::MID,
                uri::ABS_SEND_TIME,
                uri::TRANSPORT_CC,
                uri::AUDIO_LEVEL,
            ],
            MediaKind::Video => &[
                uri::MID,
                uri::ABS_SEND_TIME,
                uri::TRANSPORT_CC,
                uri::VIDEO_ORIENTATION,
                uri::TOFFSET,
            ],
        };
        self.extensions
            .iter()
            .filter(|e| e.kind == kind && wanted.contains(&e.uri.as_str()))
            .filter(|e| {
                matches!(
                    e.direction,
                    None | Some(RtpHeaderExtensionDirection::Sendrecv)
                        | Some(RtpHeaderExtensionDirection::Recvonly)
                )
            })
            .map(|e| RtpHeaderExtensionParameters {
                uri: e.uri.clone(),
                id: e.id,
                encrypt: false,
                parameters: CodecParameters::new(),
            })
            .collect()
    }

    /// The RTP parameters of a producer, exactly as mediasoup-client's
    /// `produce` event gives them, but with the router's payload types and
    /// extension ids.
    pub(crate) fn producer_parameters(
        &self,
        codec: &RouterCodec,
        mid: &str,
        ssrc: u32,
        rtx_ssrc: Option<u32>,
        cname: &str,
    ) -> RtpParameters {
        let mut codecs = vec![RtpCodecParameters {
            mime_type: codec.mime_type.clone(),
            payload_type: codec.payload_type,
            clock_rate: codec.clock_rate,
            channels: match codec.kind {
                MediaKind::Audio => codec.channels,
                MediaKind::Video => None,
            },
            parameters: codec.parameters.clone(),
            rtcp_feedback: codec.rtcp_feedback.clone(),
        }];
        let rtx = match (codec.rtx_payload_type, rtx_ssrc) {
            (Some(rtx_pt), Some(rtx_ssrc)) => {
                let mut parameters = CodecParameters::new();
                parameters.insert(
                    "apt".to_owned(),
                    ParamValue::Int(i64::from(codec.payload_type)),
                );
                codecs.push(RtpCodecParameters {
                    mime_type: format!("{}/rtx", codec.kind.as_str()),
                    payload_type: rtx_pt,
                    clock_rate: codec.clock_rate,
                    channels: None,
                    parameters,
                    rtcp_feedback: Vec::new(),
                });
                Some(RtxParameters { ssrc: rtx_ssrc })
            }
            _ => None,
        };
        RtpParameters {
            mid: Some(mid.to_owned()),
            codecs,
            header_extensions: self.producer_extensions(codec.kind),
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(ssrc),
                rtx,
                ..Default::default()
            }],
            rtcp: RtcpParameters {
                cname: Some(cname.to_owned()),
                reduced_size: Some(true),
            },
            msid: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsewave_protocol::rtp::{RtpCodecCapability, RtpHeaderExtension};

    fn caps() -> RtpCapabilities {
        let codec =
            |kind, mime: &str, pt, clock, params: &[(&str, ParamValue)]| RtpCodecCapability {
                kind,
                mime_type: mime.to_owned(),
                preferred_payload_type: pt,
                clock_rate: clock,
                channels: (kind == MediaKind::Audio).then_some(2),
                parameters: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                rtcp_feedback: vec![RtcpFeedback::new("nack", "")],
            };
        let ext = |kind, u: &str, id, dir| RtpHeaderExtension {
            kind,
            uri: u.to_owned(),
            preferred_id: id,
            preferred_encrypt: false,
            direction: Some(dir),
        };
        use MediaKind::{Audio, Video};
        use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};
        RtpCapabilities {
            codecs: vec![
                codec(Audio, "audio/opus", 100, 48000, &[]),
                codec(Video, "video/VP8", 101, 90000, &[]),
                codec(
                    Video,
                    "video/rtx",
                    102,
                    90000,
                    &[("apt", ParamValue::Int(101))],
                ),
                codec(Video, "video/H265", 103, 90000, &[]),
                codec(
                    Video,
                    "video/rtx",
                    104,
                    90000,
                    &[("apt", ParamValue::Int(103))],
                ),
            ],
            header_extensions: vec![
                ext(Audio, uri::MID, 1, Sendrecv),
                ext(Video, uri::MID, 1, Sendrecv),
                ext(Video, uri::RID, 2, Recvonly),
                ext(Audio, uri::TRANSPORT_CC, 5, Recvonly),
                ext(Audio, uri::AUDIO_LEVEL, 6, Sendrecv),
                ext(Video, uri::VIDEO_ORIENTATION, 8, Sendrecv),
                ext(Video, "urn:unknown", 12, Sendrecv),
            ],
        }
    }

    #[test]
    fn table_skips_unknown_and_pairs_rtx() {
        let t = RouterTable::new(&caps());
        assert_eq!(t.codecs.len(), 2, "H265 is skipped");
        let vp8 = t.find_codec(MediaKind::Video, "video/vp8").unwrap();
        assert_eq!(vp8.payload_type, 101);
        assert_eq!(vp8.rtx_payload_type, Some(102));
        assert!(t.find_codec(MediaKind::Audio, "video/VP8").is_none());
        assert_eq!(t.extensions.len(), 6, "unknown URI skipped");
    }

    #[test]
    fn producer_parameters_look_like_mediasoup_client() {
        let t = RouterTable::new(&caps());
        let vp8 = t.find_codec(MediaKind::Video, "video/VP8").unwrap().clone();
        let p = t.producer_parameters(&vp8, "0", 1111, Some(2222), "cn");
        assert_eq!(p.mid.as_deref(), Some("0"));
        assert_eq!(p.codecs.len(), 2);
        assert_eq!(p.codecs[1].mime_type, "video/rtx");
        assert_eq!(p.codecs[1].parameters["apt"], ParamValue::Int(101));
        assert_eq!(p.encodings[0].rtx, Some(RtxParameters { ssrc: 2222 }));
        let uris: Vec<_> = p.header_extensions.iter().map(|h| h.uri.as_str()).collect();
        assert_eq!(uris, [uri::MID, uri::VIDEO_ORIENTATION]);

        let opus = t
            .find_codec(MediaKind::Audio, "audio/opus")
            .unwrap()
            .clone();
        let p = t.producer_parameters(&opus, "1", 3333, None, "cn");
        assert_eq!(p.codecs.len(), 1);
        assert_eq!(p.codecs[0].channels, Some(2));
        assert_eq!(p.encodings[0].rtx, None);
        let uris: Vec<_> = p.header_extensions.iter().map(|h| h.uri.as_str()).collect();
        assert_eq!(uris, [uri::MID, uri::TRANSPORT_CC, uri::AUDIO_LEVEL]);
        assert_eq!(p.rtcp.reduced_size, Some(true));
    }

    #[test]
    fn fmtp_lines_parse_in_str0m() {
        let mut params = CodecParameters::new();
        params.insert("packetization-mode".into(), ParamValue::Int(1));
        params.insert("profile-level-id".into(), ParamValue::Str("42e01f".into()));
        let f = FormatParams::parse_line(&fmtp_line(&params));
        assert_eq!(f.packetization_mode, Some(1));
        assert_eq!(f.profile_level_id, Some(0x42e01f));
    }
}
