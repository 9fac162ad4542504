//! The codecs and header extensions a router may offer: mediasoup 3.27's
//! `supportedRtpCapabilities`, with header extensions reduced to those
//! PulseWave's media core handles.

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpFeedback, RtpHeaderExtension,
    RtpHeaderExtensionDirection, uri,
};

/// A parameter value in the static tables.
#[derive(Clone, Copy)]
enum P {
    I(i64),
    S(&'static str),
}

/// One supported codec. `preferred_payload_type` is set only for codecs with
/// a static payload type (PCMU, PCMA, G722, CN).
pub(crate) struct SupportedCodec {
    pub(crate) kind: MediaKind,
    pub(crate) mime_type: &'static str,
    pub(crate) preferred_payload_type: Option<u8>,
    pub(crate) clock_rate: u32,
    pub(crate) channels: Option<u8>,
    parameters: &'static [(&'static str, P)],
    rtcp_feedback: &'static [(&'static str, &'static str)],
}

impl SupportedCodec {
    pub(crate) fn parameters(&self) -> CodecParameters {
        self.parameters
            .iter()
            .map(|&(k, v)| {
                let v = match v {
                    P::I(i) => ParamValue::Int(i),
                    P::S(s) => ParamValue::Str(s.to_owned()),
                };
                (k.to_owned(), v)
            })
            .collect()
    }

    pub(crate) fn rtcp_feedback(&self) -> Vec<RtcpFeedback> {
        self.rtcp_feedback
            .iter()
            .map(|&(kind, parameter)| RtcpFeedback::new(kind, parameter))
            .collect()
    }
}

const AUDIO_FB: &[(&str, &str)] = &[("nack", ""), ("transport-cc", "")];
const TCC_FB: &[(&str, &str)] = &[("transport-cc", "")];
const VIDEO_FB: &[(&str, &str)] = &[
    ("nack", ""),
    ("nack", "pli"),
    ("ccm", "fir"),
    ("goog-remb", ""),
    ("transport-cc", ""),
];

const fn audio(
    mime_type: &'static str,
    preferred_payload_type: Option<u8>,
    clock_rate: u32,
    channels: u8,
    parameters: &'static [(&'static str, P)],
    rtcp_feedback: &'static [(&'static str, &'static str)],
) -> SupportedCodec {
    SupportedCodec {
        kind: MediaKind::Audio,
        mime_type,
        preferred_payload_type,
        clock_rate,
        channels: Some(channels),
        parameters,
        rtcp_feedback,
    }
}

const fn video(
    mime_type: &'static str,
    parameters: &'static [(&'static str, P)],
) -> SupportedCodec {
    SupportedCodec {
        kind: MediaKind::Video,
        mime_type,
        preferred_payload_type: None,
        clock_rate: 90000,
        channels: None,
        parameters,
        rtcp_feedback: VIDEO_FB,
    }
}

/// mediasoup's supported codecs, in its order (audio channels normalized to
/// 1 where mediasoup leaves them unset).
pub(crate) const SUPPORTED_CODECS: &[SupportedCodec] = &[
    audio("audio/opus", None, 48000, 2, &[], AUDIO_FB),
    audio(
        "audio/multiopus",
        None,
        48000,
        4,
        &[
            ("channel_mapping", P::S("0,1,2,3")),
            ("num_streams", P::I(2)),
            ("coupled_streams", P::I(2)),
        ],
        AUDIO_FB,
    ),
    audio(
        "audio/multiopus",
        None,
        48000,
        6,
        &[
            ("channel_mapping", P::S("0,4,1,2,3,5")),
            ("num_streams", P::I(4)),
            ("coupled_streams", P::I(2)),
        ],
        AUDIO_FB,
    ),
    audio(
        "audio/multiopus",
        None,
        48000,
        8,
        &[
            ("channel_mapping", P::S("0,6,1,2,3,4,5,7")),
            ("num_streams", P::I(5)),
            ("coupled_streams", P::I(3)),
        ],
        AUDIO_FB,
    ),
    audio("audio/PCMU", Some(0), 8000, 1, &[], TCC_FB),
    audio("audio/PCMA", Some(8), 8000, 1, &[], TCC_FB),
    audio("audio/ISAC", None, 32000, 1, &[], TCC_FB),
    audio("audio/ISAC", None, 16000, 1, &[], TCC_FB),
    audio("audio/G722", Some(9), 8000, 1, &[], TCC_FB),
    audio("audio/iLBC", None, 8000, 1, &[], TCC_FB),
    audio("audio/SILK", None, 24000, 1, &[], TCC_FB),
    audio("audio/SILK", None, 16000, 1, &[], TCC_FB),
    audio("audio/SILK", None, 12000, 1, &[], TCC_FB),
    audio("audio/SILK", None, 8000, 1, &[], TCC_FB),
    audio("audio/CN", Some(13), 32000, 1, &[], &[]),
    audio("audio/CN", Some(13), 16000, 1, &[], &[]),
    audio("audio/CN", Some(13), 8000, 1, &[], &[]),
    audio("audio/telephone-event", None, 48000, 1, &[], &[]),
    audio("audio/telephone-event", None, 32000, 1, &[], &[]),
    audio("audio/telephone-event", None, 16000, 1, &[], &[]),
    audio("audio/telephone-event", None, 8000, 1, &[], &[]),
    video("video/VP8", &[]),
    video("video/VP9", &[]),
    video("video/H264", &[("level-asymmetry-allowed", P::I(1))]),
    video("video/AV1", &[]),
];

/// Header extensions the router offers: mediasoup's ids, kinds and
/// directions, limited to mid, rid, repaired-rid, abs-send-time,
/// transport-cc, audio level, video orientation and toffset. (mediasoup also
/// lists dependency-descriptor, abs-capture-time, playout-delay and its own
/// packet-id, which PulseWave does not process.)
pub(crate) fn header_extensions() -> Vec<RtpHeaderExtension> {
    use MediaKind::{Audio, Video};
    use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};
    [
        (Audio, uri::MID, 1, Sendrecv),
        (Video, uri::MID, 1, Sendrecv),
        (Video, uri::RID, 2, Recvonly),
        (Video, uri::REPAIRED_RID, 3, Recvonly),
        (Audio, uri::ABS_SEND_TIME, 4, Sendrecv),
        (Video, uri::ABS_SEND_TIME, 4, Sendrecv),
        // Audio only takes transport-cc when receiving, as in mediasoup.
        (Audio, uri::TRANSPORT_CC, 5, Recvonly),
        (Video, uri::TRANSPORT_CC, 5, Sendrecv),
        (Audio, uri::AUDIO_LEVEL, 6, Sendrecv),
        (Video, uri::VIDEO_ORIENTATION, 8, Sendrecv),
        (Video, uri::TOFFSET, 9, Sendrecv),
    ]
    .into_iter()
    .map(|(kind, uri, preferred_id, direction)| RtpHeaderExtension {
        kind,
        uri: uri.to_owned(),
        preferred_id,
        preferred_encrypt: false,
        direction: Some(direction),
    })
    .collect()
}
