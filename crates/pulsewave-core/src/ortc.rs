//! ORTC: how RTP parameters and capabilities are negotiated, computed the way
//! mediasoup 3.27's server computes them (`node/src/ortc.ts`), so that
//! browsers running an unmodified `mediasoup-client` accept them.
//!
//! The flow:
//!
//! 1. A router has [`RtpCapabilities`]: [`default_router_capabilities`], or
//!    [`router_capabilities_from_codecs`] for a custom codec list. Clients
//!    load them (`device.load({ routerRtpCapabilities })`).
//! 2. When a client produces, its RTP parameters are validated and mapped to
//!    the router's payload types and to fresh SSRCs
//!    ([`get_producer_rtp_parameters_mapping`]); from them and the mapping
//!    come the producer's *consumable* parameters
//!    ([`get_consumable_rtp_parameters`]): what the router forwards, in the
//!    router's payload types, header extension ids and SSRCs.
//! 3. When a client consumes, [`can_consume`] tells whether its capabilities
//!    fit a producer, and [`get_consumer_rtp_parameters`] computes what that
//!    consumer receives (one encoding, fresh SSRCs).
//!
//! ```
//! use pulsewave_core::ortc;
//! use pulsewave_protocol::rtp::{MediaKind, RtpParameters};
//!
//! let caps = ortc::default_router_capabilities();
//! let mut produced: RtpParameters = serde_json::from_str(r#"{
//!     "mid": "0",
//!     "codecs": [{ "mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
//!                  "channels": 2, "parameters": { "minptime": 10, "useinbandfec": 1 } }],
//!     "headerExtensions": [{ "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4 }],
//!     "encodings": [{ "ssrc": 1111 }],
//!     "rtcp": { "cname": "abc" }
//! }"#).unwrap();
//! let mut ssrcs = 500_000_000..;
//! let mut next_ssrc = move || ssrcs.next().unwrap_or(1);
//! let mapping = ortc::get_producer_rtp_parameters_mapping(&mut produced, &caps, &mut next_ssrc)?;
//! assert_eq!(mapping.codecs[0].mapped_payload_type, 100);
//! let consumable =
//!     ortc::get_consumable_rtp_parameters(MediaKind::Audio, &produced, &caps, &mapping)?;
//!
//! // A device whose capabilities are the router's can consume it.
//! assert!(ortc::can_consume(&consumable, &caps)?);
//! let consumer =
//!     ortc::get_consumer_rtp_parameters(&consumable, &caps, false, false, &mut next_ssrc)?;
//! assert_eq!(consumer.codecs[0].payload_type, 100);
//! assert_eq!(consumer.encodings.len(), 1);
//! # Ok::<(), ortc::OrtcError>(())
//! ```

mod h264;
mod supported;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtensionDirection,
    RtpHeaderExtensionParameters, RtpParameters, RtxParameters, uri,
};
use rand::Rng;

pub use validate::{
    MAX_CODEC_ENTRIES, MAX_CODECS, MAX_ENCODINGS, MAX_HEADER_EXTENSIONS, ProducerShape,
    normalize_rtp_capabilities, normalize_rtp_parameters, validate_producer,
    validate_rtp_capabilities, validate_rtp_parameters,
};

use validate::{mime_kind, normalized_channels};

/// `abs-capture-time`: only announced to consumers of producers that send it.
const ABS_CAPTURE_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Why an ORTC computation failed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum OrtcError {
    /// RTP parameters (a producer's, or a router codec list) are malformed.
    /// The message names the offending field.
    #[error("invalid RTP parameters: {0}")]
    InvalidParameters(String),
    /// RTP capabilities (a consuming device's) are malformed. The message
    /// names the offending field.
    #[error("invalid RTP capabilities: {0}")]
    InvalidCapabilities(String),
    /// A codec matches none of the router's (or, for a router codec list,
    /// none that mediasoup supports).
    #[error("unsupported codec {mime_type}/{clock_rate}{}{}",
        .channels.map(|c| format!("/{c}")).unwrap_or_default(),
        .payload_type.map(|pt| format!(" (payload type {pt})")).unwrap_or_default())]
    UnsupportedCodec {
        /// MIME type of the codec.
        mime_type: String,
        /// Its clock rate.
        clock_rate: u32,
        /// Its channels, for audio.
        channels: Option<u8>,
        /// Its payload type, when it has one.
        payload_type: Option<u8>,
    },
    /// A producer sends RTX for a codec whose router codec has no RTX.
    #[error("no RTX codec in the router capabilities for payload type {payload_type}")]
    UnsupportedRtx {
        /// The router payload type of the media codec.
        payload_type: u8,
    },
    /// The same SSRC appears twice (media and RTX SSRCs share one space).
    #[error("duplicated SSRC {0}")]
    DuplicateSsrc(u32),
    /// The same rid appears in two encodings.
    #[error("duplicated rid {0:?}")]
    DuplicateRid(String),
    /// The consumer's capabilities share no media codec with the producer.
    #[error("cannot consume: {0}")]
    CannotConsume(String),
    /// A router codec list needs more dynamic payload types than exist.
    #[error("cannot allocate more dynamic codec payload types")]
    PayloadTypesExhausted,
}

/// A codec a router is configured with (mediasoup's
/// `RouterRtpCodecCapability`, an entry of `mediaCodecs`).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterCodec {
    /// Audio or video; must agree with the MIME type.
    pub kind: MediaKind,
    /// `audio/opus`, `video/VP8`, ... (any case).
    pub mime_type: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (1 when unset); ignored for video.
    pub channels: Option<u8>,
    /// Codec parameters, merged over the supported codec's.
    pub parameters: CodecParameters,
    /// A fixed payload type; a dynamic one is assigned when unset.
    pub preferred_payload_type: Option<u8>,
}

impl RouterCodec {
    /// A codec of `kind` with `mime_type` and `clock_rate`, no channels, no
    /// parameters and a dynamic payload type.
    pub fn new(kind: MediaKind, mime_type: &str, clock_rate: u32) -> Self {
        Self {
            kind,
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels: None,
            parameters: CodecParameters::new(),
            preferred_payload_type: None,
        }
    }

    /// With `channels` audio channels.
    pub fn with_channels(mut self, channels: u8) -> Self {
        self.channels = Some(channels);
        self
    }

    /// With codec parameter `key` set to `value`.
    pub fn with_parameter(mut self, key: &str, value: impl Into<ParamValue>) -> Self {
        self.parameters.insert(key.to_owned(), value.into());
        self
    }

    /// With the fixed payload type `payload_type`.
    pub fn with_preferred_payload_type(mut self, payload_type: u8) -> Self {
        self.preferred_payload_type = Some(payload_type);
        self
    }
}

/// How a producer's payload types and encodings map to the router's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtpMapping {
    /// Media codecs first (in the producer's order), then RTX codecs.
    pub codecs: Vec<CodecMapping>,
    /// One entry per producer encoding, in order.
    pub encodings: Vec<EncodingMapping>,
}

/// A producer payload type and the router payload type it maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecMapping {
    /// Payload type the producer sends.
    pub payload_type: u8,
    /// The router's payload type for the same codec.
    pub mapped_payload_type: u8,
}

/// A producer encoding and the SSRC the router uses for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodingMapping {
    /// The producer's SSRC for the encoding, if it gave one.
    pub ssrc: Option<u32>,
    /// The producer's rid for the encoding, if it gave one.
    pub rid: Option<String>,
    /// The encoding's scalability mode, if any.
    pub scalability_mode: Option<String>,
    /// The SSRC the router uses for this encoding in consumable parameters.
    pub mapped_ssrc: u32,
}

/// Spatial and temporal layers of a scalability mode such as `L1T3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalabilityMode {
    /// Spatial layers (1 to 99).
    pub spatial_layers: u8,
    /// Temporal layers (1 to 99).
    pub temporal_layers: u8,
    /// Whether it is a K-SVC mode (`_KEY` suffix).
    pub ksvc: bool,
}

/// Parses a scalability mode as mediasoup does: `L` or `S`, 1–99 spatial
/// layers, `T`, 1–99 temporal layers, optionally `_KEY`; anything after that
/// is ignored. Anything else gives one spatial and one temporal layer.
pub fn parse_scalability_mode(mode: &str) -> ScalabilityMode {
    fn layers(s: &str) -> Option<(u8, &str)> {
        let digits = s.bytes().take(2).take_while(|b| b.is_ascii_digit()).count();
        let (number, rest) = s.split_at(digits);
        if number.starts_with('0') {
            return None;
        }
        number.parse().ok().map(|n| (n, rest))
    }
    let parsed = (|| {
        let rest = mode.strip_prefix(['L', 'S'])?;
        let (spatial_layers, rest) = layers(rest)?;
        let (temporal_layers, rest) = layers(rest.strip_prefix('T')?)?;
        Some(ScalabilityMode {
            spatial_layers,
            temporal_layers,
            ksvc: rest.starts_with("_KEY"),
        })
    })();
    parsed.unwrap_or(ScalabilityMode {
        spatial_layers: 1,
        temporal_layers: 1,
        ksvc: false,
    })
}

/// Whether a MIME type is RTX (`<type>/rtx`, any case).
pub fn is_rtx_mime_type(mime_type: &str) -> bool {
    mime_type.len() > 4
        && mime_type
            .get(mime_type.len() - 4..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("/rtx"))
}

/// A random SSRC in mediasoup's range (100000000 to 999999998), for the
/// `generate_ssrc` arguments.
pub fn random_ssrc() -> u32 {
    random_ssrc_from(&mut rand::rng())
}

/// [`random_ssrc`] from `rng` (reproducible with a seeded one).
pub fn random_ssrc_from<R: Rng + ?Sized>(rng: &mut R) -> u32 {
    rng.random_range(100_000_000..999_999_999)
}

/// The codec list PulseWave routers use by default, in preference order:
/// opus (in-band FEC), VP8, VP9 profiles 0 and 2, H.264 constrained baseline
/// 3.1 (`42e01f`) and main 5.0 (`4d0032`), both packetization mode 1 with
/// level asymmetry allowed, and AV1 (last, so that a client that does not
/// choose a codec gets VP8).
pub fn default_router_codecs() -> Vec<RouterCodec> {
    use MediaKind::{Audio, Video};
    vec![
        RouterCodec::new(Audio, "audio/opus", 48000)
            .with_channels(2)
            .with_parameter("useinbandfec", 1),
        RouterCodec::new(Video, "video/VP8", 90000),
        RouterCodec::new(Video, "video/VP9", 90000).with_parameter("profile-id", 0),
        RouterCodec::new(Video, "video/VP9", 90000).with_parameter("profile-id", 2),
        RouterCodec::new(Video, "video/H264", 90000)
            .with_parameter("packetization-mode", 1)
            .with_parameter("profile-level-id", "42e01f")
            .with_parameter("level-asymmetry-allowed", 1),
        RouterCodec::new(Video, "video/H264", 90000)
            .with_parameter("packetization-mode", 1)
            .with_parameter("profile-level-id", "4d0032")
            .with_parameter("level-asymmetry-allowed", 1),
        RouterCodec::new(Video, "video/AV1", 90000),
    ]
}

/// The router capabilities for [`default_router_codecs`]: opus 100, VP8 101
/// (RTX 102), VP9 profile 0 103 (104), VP9 profile 2 105 (106), H.264
/// `42e01f` 107 (108), H.264 `4d0032` 109 (110), AV1 111 (112), and the header extensions
/// PulseWave handles, with mediasoup's ids.
pub fn default_router_capabilities() -> RtpCapabilities {
    match router_capabilities_from_codecs(&default_router_codecs()) {
        Ok(caps) => caps,
        Err(err) => {
            // The default list is fixed and tested; this cannot happen.
            tracing::error!(%err, "default router codecs rejected");
            RtpCapabilities::default()
        }
    }
}

/// mediasoup's `generateRouterRtpCapabilities`: each media codec must match
/// one mediasoup supports (MIME type, clock rate, channels; multiopus stream
/// counts), takes that supported codec's RTCP feedback and parameters
/// (overridden by its own), and gets its preferred payload type, the
/// supported codec's static one, or the next free dynamic one (100–126,
/// then 96–99). Each video codec is followed by an RTX codec on the next free
/// dynamic payload type.
///
/// PT 127 is never assigned: mediasoup-client's bandwidth probator uses it.
/// The result must pass [`validate_rtp_capabilities`] (so, for instance, a
/// parameter value with a line break or `;` is refused).
pub fn router_capabilities_from_codecs(
    media_codecs: &[RouterCodec],
) -> Result<RtpCapabilities, OrtcError> {
    let mut dynamic: VecDeque<u8> = (100..=126).chain(96..=99).collect();
    let mut codecs: Vec<RtpCodecCapability> = Vec::new();
    for (i, media_codec) in media_codecs.iter().enumerate() {
        let field = format!("mediaCodecs[{i}]");
        let invalid = |msg: String| OrtcError::InvalidParameters(format!("{field}.{msg}"));
        let kind = mime_kind(&media_codec.mime_type).ok_or_else(|| {
            invalid(format!(
                "mimeType: {:?} is not of the form audio/<subtype> or video/<subtype>",
                media_codec.mime_type
            ))
        })?;
        if kind != media_codec.kind {
            return Err(invalid(format!(
                "kind: {} does not match mimeType {:?}",
                media_codec.kind, media_codec.mime_type
            )));
        }
        if media_codec.clock_rate == 0 {
            return Err(invalid("clockRate: must be greater than 0".to_owned()));
        }
        if let Some(pt) = media_codec.preferred_payload_type.filter(|pt| *pt > 127) {
            return Err(invalid(format!(
                "preferredPayloadType: {pt} is not a 7-bit RTP payload type"
            )));
        }
        let channels = normalized_channels(&media_codec.mime_type, media_codec.channels);
        let candidate = CodecRef {
            mime_type: &media_codec.mime_type,
            clock_rate: media_codec.clock_rate,
            channels,
            parameters: &media_codec.parameters,
        };
        let supported = supported::SUPPORTED_CODECS
            .iter()
            .find(|s| {
                let parameters = s.parameters();
                let s = CodecRef {
                    mime_type: s.mime_type,
                    clock_rate: s.clock_rate,
                    channels: s.channels,
                    parameters: &parameters,
                };
                match_codecs(candidate, s, false)
            })
            .ok_or_else(|| OrtcError::UnsupportedCodec {
                mime_type: media_codec.mime_type.clone(),
                clock_rate: media_codec.clock_rate,
                channels,
                payload_type: media_codec.preferred_payload_type,
            })?;

        let payload_type = if let Some(pt) = media_codec.preferred_payload_type {
            dynamic.retain(|p| *p != pt);
            pt
        } else if let Some(pt) = supported.preferred_payload_type {
            pt
        } else {
            dynamic
                .pop_front()
                .ok_or(OrtcError::PayloadTypesExhausted)?
        };
        if codecs
            .iter()
            .any(|c| c.preferred_payload_type == payload_type)
        {
            return Err(invalid(format!(
                "preferredPayloadType: {payload_type} is duplicated"
            )));
        }
        let mut parameters = supported.parameters();
        parameters.extend(
            media_codec
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        codecs.push(RtpCodecCapability {
            kind: supported.kind,
            mime_type: supported.mime_type.to_owned(),
            preferred_payload_type: payload_type,
            clock_rate: supported.clock_rate,
            channels: supported.channels,
            parameters,
            rtcp_feedback: supported.rtcp_feedback(),
        });
        if supported.kind == MediaKind::Video {
            let rtx_payload_type = dynamic
                .pop_front()
                .ok_or(OrtcError::PayloadTypesExhausted)?;
            let mut rtx_parameters = CodecParameters::new();
            rtx_parameters.insert("apt".to_owned(), ParamValue::Int(payload_type.into()));
            codecs.push(RtpCodecCapability {
                kind: MediaKind::Video,
                mime_type: "video/rtx".to_owned(),
                preferred_payload_type: rtx_payload_type,
                clock_rate: supported.clock_rate,
                channels: None,
                parameters: rtx_parameters,
                rtcp_feedback: Vec::new(),
            });
        }
    }
    let caps = RtpCapabilities {
        codecs,
        header_extensions: supported::header_extensions(),
    };
    // Catches configured parameters that peers' SDP could not carry.
    validate_rtp_capabilities(&caps).map_err(|err| match err {
        OrtcError::InvalidCapabilities(message) => {
            OrtcError::InvalidParameters(format!("router capabilities: {message}"))
        }
        other => other,
    })?;
    Ok(caps)
}

/// The fields codec matching looks at, with `channels` normalized (audio: 1
/// by default; video: none).
#[derive(Clone, Copy)]
struct CodecRef<'a> {
    mime_type: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &'a CodecParameters,
}

impl<'a> CodecRef<'a> {
    fn of_parameters(codec: &'a RtpCodecParameters) -> Self {
        Self {
            mime_type: &codec.mime_type,
            clock_rate: codec.clock_rate,
            channels: normalized_channels(&codec.mime_type, codec.channels),
            parameters: &codec.parameters,
        }
    }

    fn of_capability(codec: &'a RtpCodecCapability) -> Self {
        Self {
            mime_type: &codec.mime_type,
            clock_rate: codec.clock_rate,
            channels: normalized_channels(&codec.mime_type, codec.channels),
            parameters: &codec.parameters,
        }
    }
}

/// A parameter value for comparisons: numeric strings compare equal to the
/// number.
#[derive(PartialEq)]
enum Norm<'a> {
    Int(i64),
    Text(&'a str),
    Bool(bool),
}

fn norm(value: &ParamValue) -> Norm<'_> {
    match value {
        ParamValue::Int(v) => Norm::Int(*v),
        ParamValue::Str(s) => s.trim().parse().map_or(Norm::Text(s), Norm::Int),
        ParamValue::Bool(b) => Norm::Bool(*b),
    }
}

/// `params[key] || 0`.
fn norm_or_zero<'a>(params: &'a CodecParameters, key: &str) -> Norm<'a> {
    match params.get(key).map(norm) {
        None | Some(Norm::Text("")) | Some(Norm::Bool(false)) => Norm::Int(0),
        Some(v) => v,
    }
}

fn same_param(a: &CodecParameters, b: &CodecParameters, key: &str) -> bool {
    a.get(key).map(norm) == b.get(key).map(norm)
}

/// mediasoup's `matchCodecs`: same MIME type (any case), clock rate and
/// channels; multiopus stream counts equal; and when `strict`, H.264
/// packetization mode and profile equal (with a valid answer level) and VP9
/// profile-id equal.
fn match_codecs(a: CodecRef<'_>, b: CodecRef<'_>, strict: bool) -> bool {
    if !a.mime_type.eq_ignore_ascii_case(b.mime_type)
        || a.clock_rate != b.clock_rate
        || a.channels != b.channels
    {
        return false;
    }
    match a.mime_type.to_ascii_lowercase().as_str() {
        "audio/multiopus" => {
            same_param(a.parameters, b.parameters, "num_streams")
                && same_param(a.parameters, b.parameters, "coupled_streams")
        }
        "video/h264" if strict => {
            norm_or_zero(a.parameters, "packetization-mode")
                == norm_or_zero(b.parameters, "packetization-mode")
                && h264::is_same_profile(a.parameters, b.parameters)
                && h264::profile_level_id_for_answer(a.parameters, b.parameters).is_ok()
        }
        "video/vp9" if strict => {
            norm_or_zero(a.parameters, "profile-id") == norm_or_zero(b.parameters, "profile-id")
        }
        _ => true,
    }
}

fn apt_of(parameters: &CodecParameters) -> Option<i64> {
    match parameters.get("apt") {
        Some(ParamValue::Int(apt)) => Some(*apt),
        _ => None,
    }
}

/// mediasoup's `getProducerRtpParametersMapping`, with the validation and
/// normalization mediasoup's `transport.produce()` does first.
///
/// `params` are the producer's RTP parameters, completed in place as
/// mediasoup completes them. In order:
/// 1. no encodings becomes one empty encoding (then valid only with a `mid`);
/// 2. [`validate_rtp_parameters`];
/// 3. the defaults of [`normalize_rtp_parameters`];
/// 4. each media codec is matched against the router's codecs (first match
///    wins; H.264 packetization mode and profile and VP9 profile must agree),
///    and an H.264 codec's `profile-level-id` is replaced by the level
///    negotiated with the matched router codec (removed when neither side
///    has one);
/// 5. each RTX codec is mapped to the RTX codec of its media codec's router
///    codec.
///
/// The mapped SSRCs are consecutive from one call to `generate_ssrc`
/// ([`random_ssrc`] in production).
///
/// Not done here (it is the transport's business, as in mediasoup): checking
/// that `mid` and SSRCs are not already used by another producer, and
/// replacing `rtcp.cname` with the transport's.
pub fn get_producer_rtp_parameters_mapping(
    params: &mut RtpParameters,
    caps: &RtpCapabilities,
    generate_ssrc: &mut dyn FnMut() -> u32,
) -> Result<RtpMapping, OrtcError> {
    if params.encodings.is_empty() {
        params.encodings.push(RtpEncodingParameters::default());
    }
    validate_rtp_parameters(params)?;
    normalize_rtp_parameters(params);

    // Media codec index in params -> codec index in caps.
    let mut matched: Vec<(usize, usize)> = Vec::new();
    for (index, codec) in params.codecs.iter_mut().enumerate() {
        if is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let cap_index = caps
            .codecs
            .iter()
            .position(|cap| {
                match_codecs(
                    CodecRef::of_parameters(codec),
                    CodecRef::of_capability(cap),
                    true,
                )
            })
            .ok_or_else(|| OrtcError::UnsupportedCodec {
                mime_type: codec.mime_type.clone(),
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                payload_type: Some(codec.payload_type),
            })?;
        if codec.mime_type.eq_ignore_ascii_case("video/h264") {
            let cap = &caps.codecs[cap_index];
            // Matching succeeded, so the answer level exists.
            if let Ok(answer) =
                h264::profile_level_id_for_answer(&codec.parameters, &cap.parameters)
            {
                match answer {
                    Some(id) => {
                        codec
                            .parameters
                            .insert("profile-level-id".to_owned(), ParamValue::Str(id));
                    }
                    None => {
                        codec.parameters.remove("profile-level-id");
                    }
                }
            }
        }
        matched.push((index, cap_index));
    }

    let mut mapping = RtpMapping::default();
    for &(index, cap_index) in &matched {
        mapping.codecs.push(CodecMapping {
            payload_type: params.codecs[index].payload_type,
            mapped_payload_type: caps.codecs[cap_index].preferred_payload_type,
        });
    }
    for codec in params
        .codecs
        .iter()
        .filter(|c| is_rtx_mime_type(&c.mime_type))
    {
        // Validation guarantees an integer apt naming a media codec.
        let apt = apt_of(&codec.parameters);
        let cap_media = matched
            .iter()
            .find(|(index, _)| apt == Some(i64::from(params.codecs[*index].payload_type)))
            .map(|&(_, cap_index)| &caps.codecs[cap_index])
            .ok_or_else(|| {
                OrtcError::InvalidParameters(format!(
                    "codecs: no media codec for RTX payload type {}",
                    codec.payload_type
                ))
            })?;
        let cap_rtx = caps
            .codecs
            .iter()
            .find(|cap| {
                is_rtx_mime_type(&cap.mime_type)
                    && apt_of(&cap.parameters) == Some(i64::from(cap_media.preferred_payload_type))
            })
            .ok_or(OrtcError::UnsupportedRtx {
                payload_type: cap_media.preferred_payload_type,
            })?;
        mapping.codecs.push(CodecMapping {
            payload_type: codec.payload_type,
            mapped_payload_type: cap_rtx.preferred_payload_type,
        });
    }

    let mut mapped_ssrc = generate_ssrc();
    for encoding in &params.encodings {
        mapping.encodings.push(EncodingMapping {
            ssrc: encoding.ssrc,
            rid: encoding.rid.clone(),
            scalability_mode: encoding.scalability_mode.clone(),
            mapped_ssrc,
        });
        mapped_ssrc = mapped_ssrc.wrapping_add(1);
    }
    Ok(mapping)
}

/// mediasoup's `getConsumableRtpParameters`: what the router forwards for a
/// producer of `kind` with (mapped, normalized) `params`.
///
/// - codecs: each media codec with the router's MIME type, payload type,
///   clock rate, channels and RTCP feedback but the producer's parameters,
///   followed by the router's RTX codec for it, if any;
/// - header extensions: the router's of this kind whose direction is
///   `sendrecv` or `sendonly`, with the router's ids (`abs-capture-time` only
///   if the producer sends it);
/// - encodings: the producer's, with the mapped SSRCs and without `rid`,
///   `rtx` and `codecPayloadType`;
/// - `rtcp`: the producer's CNAME, reduced size; `msid`: the producer's.
///
/// Fails if `mapping` does not belong to `params` and `caps`, or if a codec
/// is not of `kind`.
pub fn get_consumable_rtp_parameters(
    kind: MediaKind,
    params: &RtpParameters,
    caps: &RtpCapabilities,
    mapping: &RtpMapping,
) -> Result<RtpParameters, OrtcError> {
    let mismatch = |what: String| OrtcError::InvalidParameters(what);
    let mut consumable = RtpParameters::default();
    for codec in &params.codecs {
        if mime_kind(&codec.mime_type) != Some(kind) {
            return Err(mismatch(format!(
                "codecs: {} is not a {kind} codec",
                codec.mime_type
            )));
        }
        if is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let mapped_payload_type = mapping
            .codecs
            .iter()
            .find(|m| m.payload_type == codec.payload_type)
            .map(|m| m.mapped_payload_type)
            .ok_or_else(|| {
                mismatch(format!(
                    "codecs: payload type {} is not in the mapping",
                    codec.payload_type
                ))
            })?;
        let cap = caps
            .codecs
            .iter()
            .find(|c| c.preferred_payload_type == mapped_payload_type)
            .ok_or_else(|| {
                mismatch(format!(
                    "codecs: mapped payload type {mapped_payload_type} is not a router codec"
                ))
            })?;
        consumable.codecs.push(RtpCodecParameters {
            mime_type: cap.mime_type.clone(),
            payload_type: cap.preferred_payload_type,
            clock_rate: cap.clock_rate,
            channels: normalized_channels(&cap.mime_type, cap.channels),
            parameters: codec.parameters.clone(),
            rtcp_feedback: cap.rtcp_feedback.clone(),
        });
        let cap_rtx = caps.codecs.iter().find(|c| {
            is_rtx_mime_type(&c.mime_type)
                && apt_of(&c.parameters) == Some(i64::from(cap.preferred_payload_type))
        });
        if let Some(cap_rtx) = cap_rtx {
            consumable.codecs.push(RtpCodecParameters {
                mime_type: cap_rtx.mime_type.clone(),
                payload_type: cap_rtx.preferred_payload_type,
                clock_rate: cap_rtx.clock_rate,
                channels: None,
                parameters: cap_rtx.parameters.clone(),
                rtcp_feedback: cap_rtx.rtcp_feedback.clone(),
            });
        }
    }

    for ext in &caps.header_extensions {
        let direction = ext
            .direction
            .unwrap_or(RtpHeaderExtensionDirection::Sendrecv);
        if ext.kind != kind
            || !matches!(
                direction,
                RtpHeaderExtensionDirection::Sendrecv | RtpHeaderExtensionDirection::Sendonly
            )
        {
            continue;
        }
        if ext.uri == ABS_CAPTURE_TIME_URI
            && !params.header_extensions.iter().any(|e| e.uri == ext.uri)
        {
            continue;
        }
        consumable
            .header_extensions
            .push(RtpHeaderExtensionParameters {
                uri: ext.uri.clone(),
                id: ext.preferred_id,
                encrypt: ext.preferred_encrypt,
                parameters: CodecParameters::new(),
            });
    }

    if mapping.encodings.len() != params.encodings.len() {
        return Err(mismatch(format!(
            "encodings: {} in the parameters but {} in the mapping",
            params.encodings.len(),
            mapping.encodings.len()
        )));
    }
    for (encoding, mapped) in params.encodings.iter().zip(&mapping.encodings) {
        consumable.encodings.push(RtpEncodingParameters {
            ssrc: Some(mapped.mapped_ssrc),
            rid: None,
            rtx: None,
            codec_payload_type: None,
            ..encoding.clone()
        });
    }

    consumable.rtcp = RtcpParameters {
        cname: params.rtcp.cname.clone(),
        reduced_size: Some(true),
    };
    consumable.msid = params.msid.clone();
    Ok(consumable)
}

/// mediasoup's `canConsume`: whether a device with `caps` can receive a
/// producer with `consumable` parameters, i.e. some consumable codec matches
/// one of `caps` and the first that does is a media codec (not RTX).
///
/// Fails only if `caps` are invalid ([`validate_rtp_capabilities`]).
pub fn can_consume(consumable: &RtpParameters, caps: &RtpCapabilities) -> Result<bool, OrtcError> {
    validate_rtp_capabilities(caps)?;
    let first_match = consumable.codecs.iter().find(|codec| {
        caps.codecs.iter().any(|cap| {
            match_codecs(
                CodecRef::of_capability(cap),
                CodecRef::of_parameters(codec),
                true,
            )
        })
    });
    Ok(first_match.is_some_and(|codec| !is_rtx_mime_type(&codec.mime_type)))
}

/// mediasoup's `getConsumerRtpParameters`: what a consumer with device
/// capabilities `caps` receives from a producer with `consumable`
/// parameters.
///
/// - codecs: the consumable codecs that match one of `caps` (in consumable
///   order, router payload types and producer parameters), each with the
///   matching capability's RTCP feedback; RTX codecs only when `enable_rtx`
///   (mediasoup's default: video yes, audio no) and only when their media
///   codec stays; plain `nack` feedback only when `enable_rtx`;
/// - header extensions: the consumable ones whose URI and id `caps` list;
/// - RTCP feedback then reduced: with transport-cc in the header extensions,
///   no `goog-remb`; else with abs-send-time, no `transport-cc`; else neither;
/// - encodings: unless `pipe`, exactly one, with SSRC `generate_ssrc()`, RTX
///   SSRC + 1 when an RTX codec stays, the scalability mode (`L{n}T{t}` for
///   `n` simulcast encodings, `t` their temporal layers) and the highest
///   `maxBitrate` of the consumable encodings. With `pipe`, one per
///   consumable encoding, SSRCs consecutive from one `generate_ssrc()` call
///   and RTX SSRCs from another;
/// - `rtcp` and `msid`: the consumable's. `mid` is left unset: the transport
///   assigns it.
///
/// Fails if `caps` are invalid, or share no media codec with `consumable`
/// ([`OrtcError::CannotConsume`]).
pub fn get_consumer_rtp_parameters(
    consumable: &RtpParameters,
    caps: &RtpCapabilities,
    pipe: bool,
    enable_rtx: bool,
    generate_ssrc: &mut dyn FnMut() -> u32,
) -> Result<RtpParameters, OrtcError> {
    validate_rtp_capabilities(caps)?;
    let mut consumer = RtpParameters {
        rtcp: consumable.rtcp.clone(),
        msid: consumable.msid.clone(),
        ..RtpParameters::default()
    };

    for codec in &consumable.codecs {
        if !enable_rtx && is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let Some(cap) = caps.codecs.iter().find(|cap| {
            match_codecs(
                CodecRef::of_capability(cap),
                CodecRef::of_parameters(codec),
                true,
            )
        }) else {
            continue;
        };
        let rtcp_feedback = cap
            .rtcp_feedback
            .iter()
            .filter(|fb| enable_rtx || fb.kind != "nack" || !fb.parameter.is_empty())
            .cloned()
            .collect();
        consumer.codecs.push(RtpCodecParameters {
            rtcp_feedback,
            ..codec.clone()
        });
    }

    // Drop RTX codecs whose media codec did not stay.
    let payload_types: Vec<u8> = consumer.codecs.iter().map(|c| c.payload_type).collect();
    consumer.codecs.retain(|codec| {
        !is_rtx_mime_type(&codec.mime_type)
            || apt_of(&codec.parameters)
                .is_some_and(|apt| payload_types.iter().any(|pt| i64::from(*pt) == apt))
    });
    let rtx_supported = consumer
        .codecs
        .iter()
        .any(|c| is_rtx_mime_type(&c.mime_type));

    match consumer.codecs.first() {
        Some(first) if !is_rtx_mime_type(&first.mime_type) => {}
        _ => {
            return Err(OrtcError::CannotConsume(
                "no compatible media codecs".to_owned(),
            ));
        }
    }

    consumer.header_extensions = consumable
        .header_extensions
        .iter()
        .filter(|ext| {
            caps.header_extensions
                .iter()
                .any(|cap| cap.preferred_id == ext.id && cap.uri == ext.uri)
        })
        .cloned()
        .collect();

    let has_extension = |uri: &str| consumer.header_extensions.iter().any(|e| e.uri == uri);
    let dropped: &[&str] = if has_extension(uri::TRANSPORT_CC) {
        &["goog-remb"]
    } else if has_extension(uri::ABS_SEND_TIME) {
        &["transport-cc"]
    } else {
        &["transport-cc", "goog-remb"]
    };
    for codec in &mut consumer.codecs {
        codec
            .rtcp_feedback
            .retain(|fb: &RtcpFeedback| !dropped.contains(&fb.kind.as_str()));
    }

    if pipe {
        consumer.encodings = pipe_encodings(&consumable.encodings, rtx_supported, generate_ssrc);
        return Ok(consumer);
    }

    let ssrc = generate_ssrc();
    let mut scalability_mode = consumable
        .encodings
        .iter()
        .find_map(|e| e.scalability_mode.clone().filter(|m| !m.is_empty()));
    if consumable.encodings.len() > 1 {
        let temporal_layers =
            parse_scalability_mode(scalability_mode.as_deref().unwrap_or_default()).temporal_layers;
        scalability_mode = Some(format!("L{}T{temporal_layers}", consumable.encodings.len()));
    }
    let max_bitrate = consumable
        .encodings
        .iter()
        .filter_map(|e| e.max_bitrate)
        .max()
        .filter(|b| *b > 0);
    consumer.encodings.push(RtpEncodingParameters {
        ssrc: Some(ssrc),
        rtx: rtx_supported.then(|| RtxParameters {
            ssrc: next_ssrc(ssrc),
        }),
        scalability_mode,
        max_bitrate,
        ..RtpEncodingParameters::default()
    });
    Ok(consumer)
}

/// mediasoup's `getPipeConsumerRtpParameters`: what a pipe consumer (a
/// router-to-router link) receives: every consumable codec (RTX only when
/// `enable_rtx`) with RTCP feedback reduced to `nack pli`, `ccm fir` and,
/// with `enable_rtx`, `nack`; the header extensions minus mid, abs-send-time
/// and transport-cc; every encoding, SSRCs consecutive from one
/// `generate_ssrc()` call and, with `enable_rtx`, RTX SSRCs from another.
pub fn get_pipe_consumer_rtp_parameters(
    consumable: &RtpParameters,
    enable_rtx: bool,
    generate_ssrc: &mut dyn FnMut() -> u32,
) -> RtpParameters {
    let codecs = consumable
        .codecs
        .iter()
        .filter(|c| enable_rtx || !is_rtx_mime_type(&c.mime_type))
        .map(|codec| RtpCodecParameters {
            rtcp_feedback: codec
                .rtcp_feedback
                .iter()
                .filter(|fb| {
                    (fb.kind == "nack" && fb.parameter == "pli")
                        || (fb.kind == "ccm" && fb.parameter == "fir")
                        || (enable_rtx && fb.kind == "nack" && fb.parameter.is_empty())
                })
                .cloned()
                .collect(),
            ..codec.clone()
        })
        .collect();
    let header_extensions = consumable
        .header_extensions
        .iter()
        .filter(|e| e.uri != uri::MID && e.uri != uri::ABS_SEND_TIME && e.uri != uri::TRANSPORT_CC)
        .cloned()
        .collect();
    RtpParameters {
        mid: None,
        codecs,
        header_extensions,
        encodings: pipe_encodings(&consumable.encodings, enable_rtx, generate_ssrc),
        rtcp: consumable.rtcp.clone(),
        msid: consumable.msid.clone(),
    }
}

/// Every consumable encoding with SSRCs `base + i` and, when `rtx`, RTX SSRCs
/// `rtx_base + i` (both bases drawn from `generate_ssrc`).
fn pipe_encodings(
    encodings: &[RtpEncodingParameters],
    rtx: bool,
    generate_ssrc: &mut dyn FnMut() -> u32,
) -> Vec<RtpEncodingParameters> {
    let base = generate_ssrc();
    let rtx_base = generate_ssrc();
    encodings
        .iter()
        .zip(0u32..)
        .map(|(encoding, i)| RtpEncodingParameters {
            ssrc: Some(base.wrapping_add(i)),
            rtx: rtx.then(|| RtxParameters {
                ssrc: rtx_base.wrapping_add(i),
            }),
            ..encoding.clone()
        })
        .collect()
}

/// The SSRC after `ssrc`, skipping 0 (which mediasoup reads as "no SSRC").
fn next_ssrc(ssrc: u32) -> u32 {
    ssrc.checked_add(1).unwrap_or(1)
}
