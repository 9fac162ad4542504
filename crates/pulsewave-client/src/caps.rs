//! From the router's RTP capabilities to a str0m configuration (payload-type
//! table, header-extension map) and to the producer RTP parameters
//! mediasoup-client would send.

use pulsewave_core::glue;
use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpParameters, RtpCapabilities, RtpCodecParameters,
    RtpEncodingParameters, RtpHeaderExtensionDirection, RtpHeaderExtensionParameters,
    RtpParameters, RtxParameters, uri,
};
use str0m::RtcConfig;

/// One media codec of the router, with its RTX payload type if any.
pub(crate) type RouterCodec = glue::PayloadType;

/// One header extension of the router that str0m understands.
pub(crate) type RouterExtension = glue::HeaderExtension;

/// The router capabilities, reduced to what str0m can carry.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouterTable {
    pub(crate) codecs: Vec<RouterCodec>,
    pub(crate) extensions: Vec<RouterExtension>,
}

impl RouterTable {
    /// Reduces router capabilities to the codecs and extensions str0m knows.
    /// Unknown MIME types and URIs are skipped; RTX entries attach to the
    /// codec whose payload type equals their `apt`.
    pub(crate) fn new(caps: &RtpCapabilities) -> Self {
        Self {
            codecs: glue::payload_types(caps),
            extensions: glue::header_extensions(caps),
        }
    }

    /// The first router codec of `kind` with `mime_type` (case-insensitive).
    pub(crate) fn find_codec(&self, kind: MediaKind, mime_type: &str) -> Option<&RouterCodec> {
        self.codecs
            .iter()
            .find(|c| c.kind == kind && c.mime_type.eq_ignore_ascii_case(mime_type))
    }

    /// The router codec with payload type `pt` (media, not RTX).
    pub(crate) fn codec_by_pt(&self, pt: u8) -> Option<&RouterCodec> {
        self.codecs.iter().find(|c| c.pt == pt)
    }

    /// Applies the payload-type table and extension map to a str0m config
    /// (the same rules as the server's transports: `pulsewave_core::glue`).
    pub(crate) fn configure(&self, config: RtcConfig) -> RtcConfig {
        glue::configure(config, &self.codecs, &self.extensions)
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
            payload_type: codec.pt,
            clock_rate: codec.clock_rate,
            channels: match codec.kind {
                MediaKind::Audio => codec.channels,
                MediaKind::Video => None,
            },
            parameters: codec.parameters.clone(),
            rtcp_feedback: codec.rtcp_feedback.clone(),
        }];
        let rtx = match (codec.rtx, rtx_ssrc) {
            (Some(rtx_pt), Some(rtx_ssrc)) => {
                let mut parameters = CodecParameters::new();
                parameters.insert("apt".to_owned(), ParamValue::Int(i64::from(codec.pt)));
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
    use pulsewave_protocol::rtp::{RtcpFeedback, RtpCodecCapability, RtpHeaderExtension};

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
        assert_eq!(vp8.pt, 101);
        assert_eq!(vp8.rtx, Some(102));
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
}
