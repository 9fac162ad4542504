//! From mediasoup-shaped RTP parameters and capabilities to str0m's
//! configuration: codecs, header extensions, format parameters and RTX
//! pairing. The server's transports and `pulsewave-client`'s peers both use
//! this module, so their payload-type tables and extension maps are built
//! by the same rules.

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, RtcpFeedback, RtpCapabilities, RtpHeaderExtensionDirection, uri,
};
use str0m::RtcConfig;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};
use str0m::rtp::Extension;

use crate::ortc::is_rtx_mime_type;

/// The str0m codec of a MIME type (`audio/opus`, `video/VP8`, ...), if
/// str0m handles it (case-insensitive).
pub fn codec(mime_type: &str) -> Option<Codec> {
    let (_, sub) = mime_type.split_once('/')?;
    Some(match sub.to_ascii_lowercase().as_str() {
        "opus" => Codec::Opus,
        "vp8" => Codec::Vp8,
        "vp9" => Codec::Vp9,
        "h264" => Codec::H264,
        "av1" => Codec::Av1,
        "pcmu" => Codec::PCMU,
        "pcma" => Codec::PCMA,
        "g722" => Codec::G722,
        _ => return None,
    })
}

/// The str0m extension of a header extension URI, if str0m parses it.
pub fn extension(uri_text: &str) -> Option<Extension> {
    Some(match uri_text {
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

/// Codec parameters as an SDP fmtp line (`k=v;k=v`).
pub fn fmtp_line(parameters: &CodecParameters) -> String {
    parameters
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_text()))
        .collect::<Vec<_>>()
        .join(";")
}

/// Codec parameters as str0m's format parameters (parsed by str0m from the
/// fmtp line, as the SDP path would).
pub fn format_params(parameters: &CodecParameters) -> FormatParams {
    FormatParams::parse_line(&fmtp_line(parameters))
}

/// One media codec of a payload-type table, with its RTX payload type.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadType {
    /// Audio or video.
    pub kind: MediaKind,
    /// `audio/opus`, `video/VP8`, ...
    pub mime_type: String,
    /// str0m's codec.
    pub codec: Codec,
    /// The payload type.
    pub pt: u8,
    /// The RTX payload type whose `apt` names this one.
    pub rtx: Option<u8>,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (1 when not given, for audio).
    pub channels: Option<u8>,
    /// Codec parameters.
    pub parameters: CodecParameters,
    /// RTCP feedback.
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// One header extension of an extension map.
#[derive(Debug, Clone)]
pub struct HeaderExtension {
    /// Audio or video.
    pub kind: MediaKind,
    /// The URI.
    pub uri: String,
    /// The id (1 to 14).
    pub id: u8,
    /// Direction from the capabilities' owner's side.
    pub direction: Option<RtpHeaderExtensionDirection>,
    /// str0m's extension.
    pub ext: Extension,
}

/// The payload-type table of capabilities: the media codecs str0m knows
/// (in order; a payload type used twice keeps its first codec), each with
/// the first RTX codec whose `apt` names it.
pub fn payload_types(caps: &RtpCapabilities) -> Vec<PayloadType> {
    let mut table: Vec<PayloadType> = Vec::new();
    for c in &caps.codecs {
        if is_rtx_mime_type(&c.mime_type) || table.iter().any(|p| p.pt == c.preferred_payload_type)
        {
            continue;
        }
        let Some(codec) = codec(&c.mime_type) else {
            continue;
        };
        if c.preferred_payload_type > 127 || c.clock_rate == 0 {
            continue;
        }
        let rtx = caps
            .codecs
            .iter()
            .find(|r| {
                is_rtx_mime_type(&r.mime_type)
                    && r.preferred_payload_type <= 127
                    && r.parameters.get("apt").and_then(|v| v.as_int())
                        == Some(i64::from(c.preferred_payload_type))
            })
            .map(|r| r.preferred_payload_type);
        table.push(PayloadType {
            kind: c.kind,
            mime_type: c.mime_type.clone(),
            codec,
            pt: c.preferred_payload_type,
            rtx,
            clock_rate: c.clock_rate,
            channels: match c.kind {
                MediaKind::Audio => Some(c.channels.unwrap_or(1)),
                MediaKind::Video => None,
            },
            parameters: c.parameters.clone(),
            rtcp_feedback: c.rtcp_feedback.clone(),
        });
    }
    table
}

/// The extension map of capabilities: the URIs str0m parses, on one-byte
/// ids (1 to 14). One id per URI and one URI per id, across kinds as
/// BUNDLE requires: a later conflicting entry is skipped (and logged).
pub fn header_extensions(caps: &RtpCapabilities) -> Vec<HeaderExtension> {
    let mut map: Vec<HeaderExtension> = Vec::new();
    for h in &caps.header_extensions {
        let Some(ext) = extension(&h.uri) else {
            continue;
        };
        if !(1..=14).contains(&h.preferred_id) {
            continue;
        }
        let clash = map
            .iter()
            .find(|e| (e.id == h.preferred_id) != (e.uri == h.uri));
        if let Some(e) = clash {
            tracing::debug!(
                id = h.preferred_id,
                uri = %h.uri,
                kept_id = e.id,
                kept_uri = %e.uri,
                "conflicting header extension id skipped; keeping the first"
            );
            continue;
        }
        map.push(HeaderExtension {
            kind: h.kind,
            uri: h.uri.clone(),
            id: h.preferred_id,
            direction: h.direction,
            ext,
        });
    }
    map
}

/// Sets a str0m configuration's payload-type table and extension map to
/// these (clearing str0m's defaults).
pub fn configure(
    mut config: RtcConfig,
    payload_types: &[PayloadType],
    extensions: &[HeaderExtension],
) -> RtcConfig {
    config = config.clear_codecs();
    for p in payload_types {
        let Some(clock) = Frequency::new(p.clock_rate) else {
            continue;
        };
        config.codec_config().add_config(
            Pt::from(p.pt),
            p.rtx.map(Pt::from),
            p.codec,
            clock,
            p.channels,
            format_params(&p.parameters),
        );
    }
    config = config.clear_extension_map();
    let mut done: Vec<u8> = Vec::new();
    for e in extensions {
        if !done.contains(&e.id) {
            done.push(e.id);
            config = config.set_extension(e.id, e.ext.clone());
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsewave_protocol::rtp::{ParamValue, RtpCodecCapability, RtpHeaderExtension};

    fn cap(
        kind: MediaKind,
        mime: &str,
        pt: u8,
        params: &[(&str, ParamValue)],
    ) -> RtpCodecCapability {
        RtpCodecCapability {
            kind,
            mime_type: mime.into(),
            preferred_payload_type: pt,
            clock_rate: if kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            },
            channels: None,
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
            rtcp_feedback: Vec::new(),
        }
    }

    fn ext(kind: MediaKind, u: &str, id: u8) -> RtpHeaderExtension {
        RtpHeaderExtension {
            kind,
            uri: u.into(),
            preferred_id: id,
            preferred_encrypt: false,
            direction: None,
        }
    }

    #[test]
    fn tables_skip_unknowns_and_pair_rtx() {
        use MediaKind::{Audio, Video};
        let caps = RtpCapabilities {
            codecs: vec![
                cap(Audio, "audio/opus", 100, &[]),
                cap(Video, "video/VP8", 101, &[]),
                cap(Video, "video/rtx", 102, &[("apt", ParamValue::Int(101))]),
                cap(Video, "video/H265", 103, &[]),
                cap(Video, "video/AV1", 104, &[]),
                cap(Video, "video/rtx", 105, &[("apt", ParamValue::Int(104))]),
            ],
            header_extensions: vec![
                ext(Audio, uri::MID, 1),
                ext(Video, uri::MID, 1),
                ext(Video, uri::TRANSPORT_CC, 1),
                ext(Video, "urn:unknown", 2),
                ext(Video, uri::RID, 15),
            ],
        };
        let pts = payload_types(&caps);
        let summary: Vec<(u8, Option<u8>, Option<u8>)> =
            pts.iter().map(|p| (p.pt, p.rtx, p.channels)).collect();
        assert_eq!(
            summary,
            vec![
                (100, None, Some(1)),
                (101, Some(102), None),
                (104, Some(105), None)
            ]
        );
        let exts = header_extensions(&caps);
        assert_eq!(
            exts.len(),
            2,
            "one mid per kind; the clash and id 15 skipped"
        );
        assert!(exts.iter().all(|e| e.uri == uri::MID && e.id == 1));
    }

    #[test]
    fn format_params_come_from_str0ms_fmtp_parser() {
        let mut p = CodecParameters::new();
        p.insert("profile-level-id".into(), ParamValue::from("42e01f"));
        p.insert("packetization-mode".into(), ParamValue::Int(1));
        p.insert("level-asymmetry-allowed".into(), ParamValue::Int(1));
        let f = format_params(&p);
        assert_eq!(f.profile_level_id, Some(0x42e01f));
        assert_eq!(f.packetization_mode, Some(1));
        assert_eq!(f.level_asymmetry_allowed, Some(true));
        assert_eq!(
            fmtp_line(&p),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
    }
}
