//! Validation and normalization of RTP parameters and capabilities.
//!
//! The checks are mediasoup's (`validateAndNormalize*` in `ortc.ts` and the
//! worker's `RtpParameters` / `Producer` constructors) plus text checks: these
//! values end up in other peers' SDP (fmtp lines, `a=rid`, `a=ssrc ... cname`,
//! `a=extmap`), so anything that could break out of an SDP line is refused.

use std::collections::HashSet;

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtpCapabilities,
    RtpHeaderExtensionDirection, RtpParameters, uri,
};

use super::{OrtcError, is_rtx_mime_type, parse_scalability_mode};

/// Longest accepted `mid` and `rid`.
const MAX_ID_LEN: usize = 32;
/// Longest accepted CNAME (an RTCP SDES item holds at most 255 bytes).
const MAX_CNAME_LEN: usize = 255;
/// Longest accepted codec parameter value and header extension URI.
const MAX_VALUE_LEN: usize = 1024;
/// Longest accepted MIME type.
const MAX_MIME_LEN: usize = 64;
/// Most codecs in parameters or capabilities (Chromium's whole receive list
/// is about 30).
pub const MAX_CODECS: usize = 64;
/// Most header extensions in parameters or capabilities.
pub const MAX_HEADER_EXTENSIONS: usize = 32;
/// Most encodings in RTP parameters (rooms allow fewer per producer).
pub const MAX_ENCODINGS: usize = 16;
/// Most RTCP feedback entries and most parameters of one codec.
pub const MAX_CODEC_ENTRIES: usize = 32;

/// Refuses lists longer than the limits above, before any check whose cost
/// grows with them: the work done per request stays bounded whatever the
/// client declares.
fn check_sizes<'a>(
    codecs: impl ExactSizeIterator<Item = (&'a CodecParameters, &'a [RtcpFeedback])>,
    header_extensions: usize,
    encodings: usize,
) -> Result<(), String> {
    if codecs.len() > MAX_CODECS {
        return Err(format!("codecs: more than {MAX_CODECS}"));
    }
    if header_extensions > MAX_HEADER_EXTENSIONS {
        return Err(format!(
            "headerExtensions: more than {MAX_HEADER_EXTENSIONS}"
        ));
    }
    if encodings > MAX_ENCODINGS {
        return Err(format!("encodings: more than {MAX_ENCODINGS}"));
    }
    for (i, (parameters, feedback)) in codecs.enumerate() {
        if parameters.len() > MAX_CODEC_ENTRIES || feedback.len() > MAX_CODEC_ENTRIES {
            return Err(format!(
                "codecs[{i}]: more than {MAX_CODEC_ENTRIES} parameters or rtcpFeedback entries"
            ));
        }
    }
    Ok(())
}

/// The kind named by a `type/subtype` MIME type (`audio` or `video`, any
/// case), or `None` when it has another form.
pub(crate) fn mime_kind(mime_type: &str) -> Option<MediaKind> {
    let (kind, subtype) = mime_type.split_once('/')?;
    if subtype.is_empty() {
        return None;
    }
    if kind.eq_ignore_ascii_case("audio") {
        Some(MediaKind::Audio)
    } else if kind.eq_ignore_ascii_case("video") {
        Some(MediaKind::Video)
    } else {
        None
    }
}

/// An SDP `token-char` (RFC 4566).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`{|}~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Printable: no control characters and no whitespace.
fn is_printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

fn check_mime(mime_type: &str) -> Result<MediaKind, String> {
    let kind = mime_kind(mime_type).ok_or_else(|| {
        format!("{mime_type:?} is not of the form audio/<subtype> or video/<subtype>")
    })?;
    let subtype = mime_type
        .split_once('/')
        .map(|(_, s)| s)
        .unwrap_or_default();
    if mime_type.len() > MAX_MIME_LEN || !is_token(subtype) {
        return Err(format!("{mime_type:?} has an invalid subtype"));
    }
    Ok(kind)
}

fn check_parameters(field: &str, parameters: &CodecParameters) -> Result<(), String> {
    for (key, value) in parameters {
        if !is_token(key) || key.len() > MAX_ID_LEN * 2 {
            return Err(format!("{field}: invalid parameter name {key:?}"));
        }
        if let ParamValue::Str(s) = value
            && (s.len() > MAX_VALUE_LEN || !is_printable(s) || s.contains(';'))
        {
            return Err(format!("{field}.{key}: invalid value {s:?}"));
        }
        if key == "apt" && !matches!(value, ParamValue::Int(_)) {
            return Err(format!("{field}.apt: must be an integer payload type"));
        }
    }
    Ok(())
}

fn check_feedback(field: &str, feedback: &[RtcpFeedback]) -> Result<(), String> {
    for (i, fb) in feedback.iter().enumerate() {
        if !is_token(&fb.kind) {
            return Err(format!("{field}[{i}].type: invalid {:?}", fb.kind));
        }
        if !fb.parameter.is_empty() && !is_token(&fb.parameter) {
            return Err(format!(
                "{field}[{i}].parameter: invalid {:?}",
                fb.parameter
            ));
        }
    }
    Ok(())
}

/// The fields shared by codec parameters and codec capabilities.
struct CodecFields<'a> {
    mime_type: &'a str,
    payload_type: u8,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &'a CodecParameters,
    rtcp_feedback: &'a [RtcpFeedback],
}

/// Checks a codec list: each codec, payload type uniqueness, RTX `apt`
/// references, and that there is a media codec when `need_media`.
fn check_codecs(
    list: &str,
    pt_field: &str,
    codecs: &[CodecFields<'_>],
    need_media: bool,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, codec) in codecs.iter().enumerate() {
        let field = format!("{list}[{i}]");
        let kind = check_mime(codec.mime_type).map_err(|e| format!("{field}.mimeType: {e}"))?;
        if codec.payload_type > 127 {
            return Err(format!(
                "{field}.{pt_field}: {} is not a 7-bit RTP payload type",
                codec.payload_type
            ));
        }
        if !seen.insert(codec.payload_type) {
            return Err(format!(
                "{field}.{pt_field}: {} is duplicated",
                codec.payload_type
            ));
        }
        if codec.clock_rate == 0 {
            return Err(format!("{field}.clockRate: must be greater than 0"));
        }
        if kind == MediaKind::Audio && codec.channels == Some(0) {
            return Err(format!("{field}.channels: must be at least 1"));
        }
        check_parameters(&format!("{field}.parameters"), codec.parameters)?;
        check_feedback(&format!("{field}.rtcpFeedback"), codec.rtcp_feedback)?;
    }
    for (i, codec) in codecs.iter().enumerate() {
        if !is_rtx_mime_type(codec.mime_type) {
            continue;
        }
        let field = format!("{list}[{i}].parameters.apt");
        let apt = match codec.parameters.get("apt") {
            Some(ParamValue::Int(apt)) => *apt,
            Some(_) => return Err(format!("{field}: must be an integer payload type")),
            None => return Err(format!("{field}: missing in RTX codec")),
        };
        match codecs.iter().find(|c| i64::from(c.payload_type) == apt) {
            None => return Err(format!("{field}: {apt} matches no codec")),
            Some(target) if is_rtx_mime_type(target.mime_type) => {
                return Err(format!("{field}: {apt} is itself an RTX codec"));
            }
            Some(_) => {}
        }
    }
    if need_media && !codecs.iter().any(|c| !is_rtx_mime_type(c.mime_type)) {
        return Err(format!("{list}: no media codec (only RTX)"));
    }
    Ok(())
}

fn check_mid(mid: &str) -> Result<(), String> {
    if mid.len() > MAX_ID_LEN || !is_token(mid) {
        return Err(format!("mid: invalid {mid:?}"));
    }
    Ok(())
}

fn check_rid(field: &str, rid: &str) -> Result<(), String> {
    // RFC 8851: rid-id = 1*(alpha-numeric / "-" / "_").
    let valid = !rid.is_empty()
        && rid.len() <= MAX_ID_LEN
        && rid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("{field}: invalid rid {rid:?}"))
    }
}

fn check_msid(msid: &str) -> Result<(), String> {
    // RFC 8830: msid-id [SP msid-appdata], each 1*64 token-char.
    let parts: Vec<&str> = msid.split(' ').collect();
    let valid = parts.len() <= 2 && parts.iter().all(|p| is_token(p) && p.len() <= 64);
    if valid {
        Ok(())
    } else {
        Err(format!("msid: invalid {msid:?}"))
    }
}

/// Checks RTP parameters as a producer sends them (mediasoup-client's
/// `produce` event): codecs, header extensions, encodings and RTCP.
///
/// Refused, with the offending field named in the message:
/// - no codecs, no media codec, a MIME type other than `audio/x` or
///   `video/x`, a payload type above 127 or used twice, a zero clock rate,
///   zero audio channels;
/// - an RTX codec whose `apt` is missing, not an integer, or does not name a
///   media codec of the list;
/// - a header extension with id 0, an id used twice, or an empty URI;
/// - no encodings; an encoding with neither `ssrc` nor `rid` (allowed only for
///   a single encoding when `mid` is set, as mediasoup allows); SSRC 0; an SSRC
///   used twice, RTX SSRCs included ([`OrtcError::DuplicateSsrc`]); a rid used
///   twice; a `codecPayloadType` that is not a media codec of the list; several
///   encodings one of which has several spatial layers;
/// - text that could break an SDP line (control characters, whitespace, `;`)
///   in names and values that peers' SDP will carry;
/// - lists longer than [`MAX_CODECS`], [`MAX_HEADER_EXTENSIONS`],
///   [`MAX_ENCODINGS`] or [`MAX_CODEC_ENTRIES`].
pub fn validate_rtp_parameters(params: &RtpParameters) -> Result<(), OrtcError> {
    let invalid = OrtcError::InvalidParameters;
    check_sizes(
        params
            .codecs
            .iter()
            .map(|c| (&c.parameters, c.rtcp_feedback.as_slice())),
        params.header_extensions.len(),
        params.encodings.len(),
    )
    .map_err(invalid)?;
    if let Some(mid) = &params.mid {
        check_mid(mid).map_err(invalid)?;
    }
    if params.codecs.is_empty() {
        return Err(invalid("codecs: empty".to_owned()));
    }
    let fields: Vec<CodecFields<'_>> = params
        .codecs
        .iter()
        .map(|c| CodecFields {
            mime_type: &c.mime_type,
            payload_type: c.payload_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
            rtcp_feedback: &c.rtcp_feedback,
        })
        .collect();
    check_codecs("codecs", "payloadType", &fields, true).map_err(invalid)?;

    let mut ids = HashSet::new();
    for (i, ext) in params.header_extensions.iter().enumerate() {
        let field = format!("headerExtensions[{i}]");
        if ext.uri.is_empty() || ext.uri.len() > MAX_VALUE_LEN || !is_printable(&ext.uri) {
            return Err(invalid(format!("{field}.uri: invalid {:?}", ext.uri)));
        }
        if ext.id == 0 {
            return Err(invalid(format!("{field}.id: 0 is not a valid id")));
        }
        if !ids.insert(ext.id) {
            return Err(invalid(format!("{field}.id: {} is duplicated", ext.id)));
        }
        check_parameters(&format!("{field}.parameters"), &ext.parameters).map_err(invalid)?;
    }

    if params.encodings.is_empty() {
        return Err(invalid("encodings: empty".to_owned()));
    }
    let single = params.encodings.len() == 1;
    let has_mid = params.mid.as_deref().is_some_and(|m| !m.is_empty());
    let mut ssrcs = HashSet::new();
    let mut rids = HashSet::new();
    for (i, enc) in params.encodings.iter().enumerate() {
        let field = format!("encodings[{i}]");
        if enc.ssrc.is_none() && enc.rid.is_none() && !(single && has_mid) {
            return Err(invalid(format!(
                "{field}: needs an ssrc or a rid{}",
                if single { " (or params.mid)" } else { "" }
            )));
        }
        for (name, ssrc) in [("ssrc", enc.ssrc), ("rtx.ssrc", enc.rtx.map(|r| r.ssrc))] {
            match ssrc {
                Some(0) => return Err(invalid(format!("{field}.{name}: 0 is not a valid SSRC"))),
                Some(ssrc) if !ssrcs.insert(ssrc) => return Err(OrtcError::DuplicateSsrc(ssrc)),
                _ => {}
            }
        }
        if let Some(rid) = &enc.rid {
            check_rid(&format!("{field}.rid"), rid).map_err(invalid)?;
            if !rids.insert(rid.as_str()) {
                return Err(OrtcError::DuplicateRid(rid.clone()));
            }
        }
        if let Some(pt) = enc.codec_payload_type {
            let media = params
                .codecs
                .iter()
                .any(|c| c.payload_type == pt && !is_rtx_mime_type(&c.mime_type));
            if !media {
                return Err(invalid(format!(
                    "{field}.codecPayloadType: {pt} is not a media codec of codecs"
                )));
            }
        }
        if let Some(mode) = &enc.scalability_mode {
            if mode.len() > MAX_ID_LEN || !is_token(mode) {
                return Err(invalid(format!(
                    "{field}.scalabilityMode: invalid {mode:?}"
                )));
            }
            if !single && parse_scalability_mode(mode).spatial_layers > 1 {
                return Err(invalid(format!(
                    "{field}.scalabilityMode: {mode:?} has several spatial layers, \
                     which cannot be combined with simulcast"
                )));
            }
        }
    }

    if let Some(cname) = &params.rtcp.cname
        && (cname.len() > MAX_CNAME_LEN || !is_printable(cname))
    {
        return Err(invalid(format!("rtcp.cname: invalid {cname:?}")));
    }
    if let Some(msid) = &params.msid {
        check_msid(msid).map_err(invalid)?;
    }
    Ok(())
}

/// Checks RTP capabilities (a router's, or a device's `rtpCapabilities`).
///
/// Refused: a MIME type other than `audio/x` or `video/x`, a preferred
/// payload type above 127 or used twice, a zero clock rate, zero audio
/// channels, an RTX codec whose `apt` is missing, not an integer or names no
/// media codec of the list, a header extension with an empty URI, preferred
/// id 0 or an id used twice for the same kind, text that could break an SDP
/// line, and lists longer than [`MAX_CODECS`], [`MAX_HEADER_EXTENSIONS`] or
/// [`MAX_CODEC_ENTRIES`]. An empty codec list is valid (it just matches
/// nothing).
pub fn validate_rtp_capabilities(caps: &RtpCapabilities) -> Result<(), OrtcError> {
    let invalid = OrtcError::InvalidCapabilities;
    check_sizes(
        caps.codecs
            .iter()
            .map(|c| (&c.parameters, c.rtcp_feedback.as_slice())),
        caps.header_extensions.len(),
        0,
    )
    .map_err(invalid)?;
    let fields: Vec<CodecFields<'_>> = caps
        .codecs
        .iter()
        .map(|c| CodecFields {
            mime_type: &c.mime_type,
            payload_type: c.preferred_payload_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
            rtcp_feedback: &c.rtcp_feedback,
        })
        .collect();
    check_codecs("codecs", "preferredPayloadType", &fields, false).map_err(invalid)?;
    let mut ids = HashSet::new();
    for (i, ext) in caps.header_extensions.iter().enumerate() {
        let field = format!("headerExtensions[{i}]");
        if ext.uri.is_empty() || ext.uri.len() > MAX_VALUE_LEN || !is_printable(&ext.uri) {
            return Err(invalid(format!("{field}.uri: invalid {:?}", ext.uri)));
        }
        if ext.preferred_id == 0 {
            return Err(invalid(format!("{field}.preferredId: 0 is not a valid id")));
        }
        if !ids.insert((ext.kind, ext.preferred_id)) {
            return Err(invalid(format!(
                "{field}.preferredId: {} is duplicated for {}",
                ext.preferred_id, ext.kind
            )));
        }
    }
    Ok(())
}

/// Fills in mediasoup's defaults in a producer's RTP parameters: audio codecs
/// without `channels` get 1, video codecs lose `channels`, encodings without
/// `dtx` get `false`, and `rtcp.reducedSize` becomes `true` (mediasoup sets it
/// unconditionally).
pub fn normalize_rtp_parameters(params: &mut RtpParameters) {
    for codec in &mut params.codecs {
        codec.channels = normalized_channels(&codec.mime_type, codec.channels);
    }
    for enc in &mut params.encodings {
        enc.dtx.get_or_insert(false);
    }
    params.rtcp.reduced_size = Some(true);
}

/// Fills in mediasoup's defaults in RTP capabilities: each codec's `kind`
/// follows its MIME type, audio codecs without `channels` get 1, video codecs
/// lose `channels`, and header extensions without a direction get
/// `sendrecv`. Codecs whose MIME type names no kind are left as they are
/// (validation refuses them).
pub fn normalize_rtp_capabilities(caps: &mut RtpCapabilities) {
    for codec in &mut caps.codecs {
        if let Some(kind) = mime_kind(&codec.mime_type) {
            codec.kind = kind;
        }
        codec.channels = normalized_channels(&codec.mime_type, codec.channels);
    }
    for ext in &mut caps.header_extensions {
        ext.direction
            .get_or_insert(RtpHeaderExtensionDirection::Sendrecv);
    }
}

/// `channels` as mediasoup normalizes it: 1 by default for audio, none for
/// video.
pub(crate) fn normalized_channels(mime_type: &str, channels: Option<u8>) -> Option<u8> {
    match mime_kind(mime_type) {
        Some(MediaKind::Audio) => Some(channels.unwrap_or(1)),
        _ => None,
    }
}

/// How a producer's encodings reach the server, from its RTP parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerShape {
    /// The media codec's MIME type (the first codec that is not RTX).
    pub mime_type: String,
    /// Each encoding's rid and ssrc, in order (lowest layer first).
    pub layers: Vec<(Option<String>, Option<u32>)>,
    /// The ssrcs given in the parameters, each with its RTX ssrc.
    pub declared: Vec<(u32, Option<u32>)>,
}

/// Checks that a producer's RTP parameters can be received: the media codec
/// is of `kind`; each encoding is found by ssrc (with an optional RTX ssrc),
/// by rid (1 to 8 letters or digits, str0m's limit) or, for a single
/// encoding, by mid alone; encodings without an ssrc need the `mid` (and,
/// for simulcast, `rid`) header extension on a one-byte id (1 to 14); the
/// `mid` is 1 to 16 letters or digits (str0m's limit). Run after
/// [`validate_rtp_parameters`], which the mapping does first.
pub fn validate_producer(
    kind: MediaKind,
    params: &RtpParameters,
) -> Result<ProducerShape, OrtcError> {
    let invalid = OrtcError::InvalidParameters;
    let media_codec = params
        .codecs
        .iter()
        .find(|c| !is_rtx_mime_type(&c.mime_type))
        .ok_or_else(|| invalid("no media codec".into()))?;
    let codec_kind = mime_kind(&media_codec.mime_type)
        .ok_or_else(|| invalid(format!("{} is not audio/ or video/", media_codec.mime_type)))?;
    if codec_kind != kind {
        return Err(invalid(format!(
            "kind is {kind} but the codec {} is {codec_kind}",
            media_codec.mime_type
        )));
    }
    if let Some(mid) = &params.mid
        && (mid.is_empty() || mid.len() > 16 || !mid.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(invalid(format!(
            "mid `{mid}` must be 1 to 16 letters or digits"
        )));
    }
    let mut layers = Vec::with_capacity(params.encodings.len());
    let mut declared = Vec::new();
    for e in &params.encodings {
        if let Some(rid) = &e.rid
            && (rid.is_empty() || rid.len() > 8 || !rid.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(invalid(format!(
                "rid `{rid}` must be 1 to 8 letters or digits"
            )));
        }
        if let Some(ssrc) = e.ssrc {
            declared.push((ssrc, e.rtx.map(|r| r.ssrc)));
        }
        layers.push((e.rid.clone(), e.ssrc));
    }
    if layers.is_empty() {
        return Err(invalid("no encoding".into()));
    }
    let by_rid = layers.iter().any(|(_, ssrc)| ssrc.is_none());
    let has_extension = |u: &str| {
        params
            .header_extensions
            .iter()
            .any(|e| e.uri == u && (1..=14).contains(&e.id))
    };
    if by_rid && (!has_extension(uri::MID) || (layers.len() > 1 && !has_extension(uri::RID))) {
        return Err(invalid(
            "encodings without ssrc need the mid (and, for simulcast, rid) header \
             extensions on one-byte ids"
                .into(),
        ));
    }
    Ok(ProducerShape {
        mime_type: media_codec.mime_type.clone(),
        layers,
        declared,
    })
}
