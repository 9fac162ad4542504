//! RTP capability and parameter types, in mediasoup's JSON shapes.
//!
//! These are the objects `mediasoup-client` produces and consumes
//! (`device.load({ routerRtpCapabilities })`, the `produce` event's
//! `rtpParameters`, `transport.consume({ rtpParameters })`). Field names are
//! camelCase on the wire; optional fields are omitted when absent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl MediaKind {
    /// `"audio"` or `"video"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value in a codec's `parameters` map (fmtp). mediasoup allows numbers and
/// strings; booleans are accepted too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// An integer, such as `packetization-mode: 1` or `apt: 101`.
    Int(i64),
    /// A string, such as `profile-level-id: "42e01f"`.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl ParamValue {
    /// The value as an integer, if it is one (strings of digits count).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ParamValue::Int(v) => Some(*v),
            ParamValue::Str(s) => s.trim().parse().ok(),
            ParamValue::Bool(_) => None,
        }
    }

    /// The value as text.
    pub fn to_text(&self) -> String {
        match self {
            ParamValue::Int(v) => v.to_string(),
            ParamValue::Str(s) => s.clone(),
            ParamValue::Bool(b) => b.to_string(),
        }
    }
}

impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_owned())
    }
}

/// Codec-specific parameters (`{ "packetization-mode": 1, ... }`).
pub type CodecParameters = BTreeMap<String, ParamValue>;

/// One RTCP feedback mechanism (`{ "type": "nack", "parameter": "pli" }`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtcpFeedback {
    /// Feedback type: `nack`, `ccm`, `goog-remb`, `transport-cc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Feedback parameter: `pli`, `fir` or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameter: String,
}

impl RtcpFeedback {
    /// Feedback of `kind` with `parameter` (empty for none).
    pub fn new(kind: &str, parameter: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            parameter: parameter.to_owned(),
        }
    }
}

/// A codec that a router or endpoint supports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    /// Audio or video.
    pub kind: MediaKind,
    /// `audio/opus`, `video/VP8`, `video/rtx`, ...
    pub mime_type: String,
    /// The payload type the owner of these capabilities uses.
    pub preferred_payload_type: u8,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (opus: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec parameters (fmtp).
    #[serde(default)]
    pub parameters: CodecParameters,
    /// Supported RTCP feedback.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// Direction of a header extension in capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpHeaderExtensionDirection {
    /// Sent and received.
    Sendrecv,
    /// Only sent by the owner of the capabilities.
    Sendonly,
    /// Only received by the owner of the capabilities.
    Recvonly,
    /// Neither.
    Inactive,
}

/// A header extension that a router or endpoint supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtension {
    /// Audio or video.
    pub kind: MediaKind,
    /// The extension's URI.
    pub uri: String,
    /// The id the owner of these capabilities uses.
    pub preferred_id: u8,
    /// Whether the extension is encrypted (never, here).
    #[serde(default)]
    pub preferred_encrypt: bool,
    /// Direction, from the owner's point of view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<RtpHeaderExtensionDirection>,
}

/// What a router or endpoint can send or receive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    /// Codecs, in order of preference. RTX entries follow their codec.
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    /// Header extensions.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtension>,
}

/// One codec of a producer's or consumer's RTP parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    /// `audio/opus`, `video/VP8`, `video/rtx`, ...
    pub mime_type: String,
    /// Payload type on the wire.
    pub payload_type: u8,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec parameters (fmtp).
    #[serde(default)]
    pub parameters: CodecParameters,
    /// RTCP feedback in use.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// One header extension in use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    /// The extension's URI.
    pub uri: String,
    /// The id on the wire.
    pub id: u8,
    /// Whether encrypted (never, here).
    #[serde(default)]
    pub encrypt: bool,
    /// Extension parameters.
    #[serde(default)]
    pub parameters: CodecParameters,
}

/// The RTX stream of an encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtxParameters {
    /// SSRC of the retransmission stream.
    pub ssrc: u32,
}

/// One encoding (an RTP stream) of a producer or consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    /// Media SSRC. Absent for rid-based simulcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// RTP stream id (simulcast layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Codec payload type this encoding uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_payload_type: Option<u8>,
    /// Retransmission stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtx: Option<RtxParameters>,
    /// Discontinuous transmission (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
    /// Scalability mode, such as `L1T3` or `L3T3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// Maximum bitrate in bps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
    /// Resolution downscale factor (simulcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_resolution_down_by: Option<f64>,
    /// Whether this encoding is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// RTCP parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    /// Canonical name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Reduced-size RTCP (RFC 5506).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduced_size: Option<bool>,
}

/// What a producer sends or a consumer receives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    /// Media section id (the transceiver's mid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Codecs: the media codec first, then RTX.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions in use.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// Encodings.
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    /// RTCP parameters.
    #[serde(default)]
    pub rtcp: RtcpParameters,
    /// MediaStream id, as mediasoup-client sets for consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msid: Option<String>,
}

/// Well-known header extension URIs.
pub mod uri {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    /// Transport-wide congestion control sequence number.
    pub const TRANSPORT_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// `urn:3gpp:video-orientation`
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    /// `urn:ietf:params:rtp-hdrext:toffset`
    pub const TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mediasoup_client_produce_parameters() {
        // As emitted by mediasoup-client's Chrome111 handler for a camera.
        let json = r#"{
            "mid": "0",
            "codecs": [
                {"mimeType":"video/VP8","payloadType":96,"clockRate":90000,"parameters":{},
                 "rtcpFeedback":[{"type":"goog-remb","parameter":""},{"type":"transport-cc","parameter":""},
                                 {"type":"ccm","parameter":"fir"},{"type":"nack","parameter":""},{"type":"nack","parameter":"pli"}]},
                {"mimeType":"video/rtx","payloadType":97,"clockRate":90000,"parameters":{"apt":96},"rtcpFeedback":[]}
            ],
            "headerExtensions": [
                {"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}}
            ],
            "encodings": [{"active":true,"scalabilityMode":"L1T3","ssrc":1111,"rtx":{"ssrc":2222},"dtx":false}],
            "rtcp": {"cname":"abc","reducedSize":true}
        }"#;
        let p: RtpParameters = serde_json::from_str(json).unwrap();
        assert_eq!(p.codecs[1].parameters["apt"].as_int(), Some(96));
        assert_eq!(p.encodings[0].rtx, Some(RtxParameters { ssrc: 2222 }));
        assert_eq!(
            p.codecs[0].rtcp_feedback[4],
            RtcpFeedback::new("nack", "pli")
        );
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["encodings"][0]["scalabilityMode"], "L1T3");
        assert_eq!(back["rtcp"]["reducedSize"], true);
    }

    #[test]
    fn string_parameters_read_as_integers() {
        assert_eq!(ParamValue::from("42").as_int(), Some(42));
        assert_eq!(ParamValue::from("42e01f").as_int(), None);
    }
}
