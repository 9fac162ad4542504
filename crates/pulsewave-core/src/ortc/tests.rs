//! Tests of the ortc module: mediasoup's own test cases, ported as data
//! (`testdata/*.json`), mediasoup-client shapes, malformed inputs.

use pulsewave_protocol::rtp::{
    CodecParameters, MediaKind, ParamValue, RtcpParameters, RtpCapabilities, RtpCodecCapability,
    RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtension, RtpHeaderExtensionParameters,
    RtpParameters, RtxParameters,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

const TEST_ORTC: &str = include_str!("testdata/mediasoup_test_ortc.json");
const TEST_PRODUCER: &str = include_str!("testdata/mediasoup_test_producer.json");
const TEST_CONSUMER: &str = include_str!("testdata/mediasoup_test_consumer.json");
const CLIENT_SHAPES: &str = include_str!("testdata/mediasoup_client_shapes.json");
const MALFORMED: &str = include_str!("testdata/malformed.json");

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("test data is valid JSON")
}

fn from<T: DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("test data does not decode: {e}: {value}"))
}

/// SSRC generator: `start`, `start + 1000`, `start + 2000`, ...
fn ssrcs(start: u32) -> impl FnMut() -> u32 {
    let mut next = start;
    move || {
        let value = next;
        next += 1000;
        value
    }
}

fn router_codec(value: &Value) -> RouterCodec {
    RouterCodec {
        kind: from(&value["kind"]),
        mime_type: from(&value["mimeType"]),
        clock_rate: from(&value["clockRate"]),
        channels: value.get("channels").map(from),
        parameters: value.get("parameters").map(from).unwrap_or_default(),
        preferred_payload_type: value.get("preferredPayloadType").map(from),
    }
}

fn router_codecs(value: &Value) -> Vec<RouterCodec> {
    value
        .as_array()
        .expect("mediaCodecs is an array")
        .iter()
        .map(router_codec)
        .collect()
}

fn router_caps(media_codecs: &Value) -> RtpCapabilities {
    router_capabilities_from_codecs(&router_codecs(media_codecs)).expect("router codecs are valid")
}

fn error_name(err: &OrtcError) -> &'static str {
    match err {
        OrtcError::InvalidParameters(_) => "InvalidParameters",
        OrtcError::InvalidCapabilities(_) => "InvalidCapabilities",
        OrtcError::UnsupportedCodec { .. } => "UnsupportedCodec",
        OrtcError::UnsupportedRtx { .. } => "UnsupportedRtx",
        OrtcError::DuplicateSsrc(_) => "DuplicateSsrc",
        OrtcError::DuplicateRid(_) => "DuplicateRid",
        OrtcError::CannotConsume(_) => "CannotConsume",
        OrtcError::PayloadTypesExhausted => "PayloadTypesExhausted",
    }
}

fn assert_error<T: std::fmt::Debug>(name: &str, result: Result<T, OrtcError>, expected: &Value) {
    let err = match result {
        Ok(v) => panic!("{name}: expected {expected}, got {v:?}"),
        Err(err) => err,
    };
    assert_eq!(error_name(&err), expected, "{name}: {err}");
}

fn assert_mapping(name: &str, mapping: &RtpMapping, expected: &Value) {
    let codecs: Vec<(u8, u8)> = expected["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .map(|c| (from(&c["payloadType"]), from(&c["mappedPayloadType"])))
        .collect();
    let actual: Vec<(u8, u8)> = mapping
        .codecs
        .iter()
        .map(|c| (c.payload_type, c.mapped_payload_type))
        .collect();
    assert_eq!(actual, codecs, "{name}: mapping codecs");
    let encodings = expected["encodings"].as_array().expect("encodings");
    assert_eq!(
        mapping.encodings.len(),
        encodings.len(),
        "{name}: mapping encodings"
    );
    for (i, (actual, expected)) in mapping.encodings.iter().zip(encodings).enumerate() {
        assert_eq!(
            actual.ssrc,
            expected.get("ssrc").map(from),
            "{name}: [{i}].ssrc"
        );
        assert_eq!(
            actual.rid,
            expected.get("rid").map(from),
            "{name}: [{i}].rid"
        );
        assert_eq!(
            actual.scalability_mode,
            expected.get("scalabilityMode").map(from::<String>),
            "{name}: [{i}].scalabilityMode"
        );
        if let Some(mapped) = expected.get("mappedSsrc") {
            assert_eq!(
                actual.mapped_ssrc,
                from::<u32>(mapped),
                "{name}: [{i}].mappedSsrc"
            );
        }
    }
}

/// Compares RTP parameters field by field against an expected JSON object
/// (absent fields take their defaults).
fn assert_params(name: &str, actual: &RtpParameters, expected: &Value) {
    let expected: RtpParameters = from(expected);
    assert_eq!(actual.mid, expected.mid, "{name}: mid");
    assert_eq!(actual.codecs.len(), expected.codecs.len(), "{name}: codecs");
    for (i, (a, e)) in actual.codecs.iter().zip(&expected.codecs).enumerate() {
        assert_eq!(a, e, "{name}: codecs[{i}]");
    }
    assert_eq!(
        actual.header_extensions, expected.header_extensions,
        "{name}: headerExtensions"
    );
    assert_eq!(actual.encodings, expected.encodings, "{name}: encodings");
    assert_eq!(actual.rtcp, expected.rtcp, "{name}: rtcp");
    assert_eq!(actual.msid, expected.msid, "{name}: msid");
}

// ---------------------------------------------------------------------------
// mediasoup test-ortc.js
// ---------------------------------------------------------------------------

#[test]
fn mediasoup_generate_router_rtp_capabilities_succeeds() {
    let data = load(TEST_ORTC);
    let case = &data["generateRouterRtpCapabilitiesSucceeds"];
    let caps = router_caps(&case["mediaCodecs"]);
    let expected: Vec<RtpCodecCapability> = from(&case["expectedCodecs"]);
    assert_eq!(caps.codecs.len(), 5);
    for (i, (actual, expected)) in caps.codecs.iter().zip(&expected).enumerate() {
        assert_eq!(actual, expected, "codecs[{i}]");
    }
    let expected: Vec<RtpHeaderExtension> = from(&case["expectedHeaderExtensions"]);
    assert_eq!(caps.header_extensions, expected);
    validate_rtp_capabilities(&caps).unwrap();
}

#[test]
fn mediasoup_generate_router_rtp_capabilities_with_unsupported_codecs() {
    let data = load(TEST_ORTC);
    for (i, case) in data["generateRouterRtpCapabilitiesUnsupported"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let result = router_capabilities_from_codecs(&router_codecs(&case["mediaCodecs"]));
        assert_error(&format!("case {i}"), result, &case["error"]);
    }
}

#[test]
fn mediasoup_generate_router_rtp_capabilities_with_too_many_codecs() {
    let data = load(TEST_ORTC);
    let case = &data["generateRouterRtpCapabilitiesTooMany"];
    let codec = router_codec(&case["mediaCodec"]);
    let count: usize = from(&case["count"]);
    let result = router_capabilities_from_codecs(&vec![codec.clone(); count]);
    assert_error("too many", result, &case["error"]);
    // 31 dynamic payload types (100-126, 96-99): the 31st still fits.
    let caps = router_capabilities_from_codecs(&vec![codec.clone(); 31]).unwrap();
    let pts: Vec<u8> = caps
        .codecs
        .iter()
        .map(|c| c.preferred_payload_type)
        .collect();
    let expected: Vec<u8> = (100..=126).chain(96..=99).collect();
    assert_eq!(pts, expected);
    assert_eq!(
        router_capabilities_from_codecs(&vec![codec; 32]),
        Err(OrtcError::PayloadTypesExhausted)
    );
}

#[test]
fn mediasoup_mapping_consumable_consumer_and_pipe_consumer() {
    let data = load(TEST_ORTC);
    let case = &data["mappingConsumableConsumer"];
    let caps = router_caps(&case["mediaCodecs"]);
    let mut params: RtpParameters = from(&case["rtpParameters"]);
    let mut next = ssrcs(500_000_000);

    let mapping = get_producer_rtp_parameters_mapping(&mut params, &caps, &mut next).unwrap();
    let expected_codecs: Vec<(u8, u8)> = case["expectedMappingCodecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (from(&c["payloadType"]), from(&c["mappedPayloadType"])))
        .collect();
    let actual: Vec<(u8, u8)> = mapping
        .codecs
        .iter()
        .map(|c| (c.payload_type, c.mapped_payload_type))
        .collect();
    assert_eq!(actual, expected_codecs);
    let expected_encodings = case["expectedMappingEncodings"].as_array().unwrap();
    assert_eq!(mapping.encodings.len(), 3);
    for (actual, expected) in mapping.encodings.iter().zip(expected_encodings) {
        assert_eq!(actual.ssrc, expected.get("ssrc").map(from));
        assert_eq!(actual.rid, expected.get("rid").map(from));
    }
    // Consecutive mapped SSRCs from one generator call.
    let mapped: Vec<u32> = mapping.encodings.iter().map(|e| e.mapped_ssrc).collect();
    assert_eq!(mapped, [500_000_000, 500_000_001, 500_000_002]);

    let consumable =
        get_consumable_rtp_parameters(MediaKind::Video, &params, &caps, &mapping).unwrap();
    let codecs: Vec<RtpCodecParameters> = from(&case["expectedConsumableCodecs"]);
    assert_eq!(consumable.codecs, codecs);
    let exts: Vec<RtpHeaderExtensionParameters> = from(&case["expectedConsumableHeaderExtensions"]);
    assert_eq!(consumable.header_extensions, exts);
    let mut encodings: Vec<RtpEncodingParameters> = from(&case["expectedConsumableEncodings"]);
    for (encoding, mapped) in encodings.iter_mut().zip(&mapping.encodings) {
        encoding.ssrc = Some(mapped.mapped_ssrc);
    }
    assert_eq!(consumable.encodings, encodings);
    let rtcp: RtcpParameters = from(&case["expectedConsumableRtcp"]);
    assert_eq!(consumable.rtcp, rtcp);
    assert_eq!(consumable.mid, None);

    let remote: RtpCapabilities = from(&case["remoteRtpCapabilities"]);
    assert!(can_consume(&consumable, &remote).unwrap());
    let consumer =
        get_consumer_rtp_parameters(&consumable, &remote, false, true, &mut next).unwrap();
    let codecs: Vec<RtpCodecParameters> = from(&case["expectedConsumerCodecs"]);
    assert_eq!(consumer.codecs.len(), 2);
    assert_eq!(consumer.codecs, codecs);
    assert_eq!(consumer.encodings.len(), 1);
    let encoding = &consumer.encodings[0];
    let ssrc = encoding.ssrc.expect("consumer ssrc");
    assert_eq!(ssrc, 500_001_000);
    assert_eq!(encoding.rtx, Some(RtxParameters { ssrc: ssrc + 1 }));
    let expected = &case["expectedConsumerEncoding"];
    assert!(from::<bool>(&expected["hasRtx"]));
    assert_eq!(
        encoding.scalability_mode,
        Some(from::<String>(&expected["scalabilityMode"]))
    );
    assert_eq!(encoding.max_bitrate, Some(from(&expected["maxBitrate"])));
    let exts: Vec<RtpHeaderExtensionParameters> = from(&case["expectedConsumerHeaderExtensions"]);
    assert_eq!(consumer.header_extensions, exts);
    let rtcp: RtcpParameters = from(&case["expectedConsumerRtcp"]);
    assert_eq!(consumer.rtcp, rtcp);

    let pipe = get_pipe_consumer_rtp_parameters(&consumable, false, &mut next);
    let codecs: Vec<RtpCodecParameters> = from(&case["expectedPipeConsumerCodecs"]);
    assert_eq!(pipe.codecs, codecs);
    let expected = case["expectedPipeConsumerEncodings"].as_array().unwrap();
    assert_eq!(pipe.encodings.len(), 3);
    for (i, (actual, expected)) in pipe.encodings.iter().zip(expected).enumerate() {
        assert_eq!(actual.ssrc, Some(500_002_000 + i as u32));
        assert_eq!(actual.rtx, None);
        assert_eq!(actual.max_bitrate, Some(from(&expected["maxBitrate"])));
        assert_eq!(
            actual.scalability_mode,
            Some(from::<String>(&expected["scalabilityMode"]))
        );
    }
    let rtcp: RtcpParameters = from(&case["expectedPipeConsumerRtcp"]);
    assert_eq!(pipe.rtcp, rtcp);
    // The pipe consumer drops the transport's mid and BWE extensions.
    let uris: Vec<&str> = pipe
        .header_extensions
        .iter()
        .map(|e| e.uri.as_str())
        .collect();
    assert_eq!(uris, [uri::VIDEO_ORIENTATION, uri::TOFFSET]);

    // With RTX enabled the pipe consumer keeps RTX and plain NACK.
    let pipe = get_pipe_consumer_rtp_parameters(&consumable, true, &mut next);
    assert_eq!(pipe.codecs.len(), 2);
    assert_eq!(
        pipe.codecs[0].rtcp_feedback,
        [
            RtcpFeedback::new("nack", ""),
            RtcpFeedback::new("nack", "pli"),
            RtcpFeedback::new("ccm", "fir"),
        ]
    );
    for (i, encoding) in pipe.encodings.iter().enumerate() {
        assert_eq!(
            encoding.rtx,
            Some(RtxParameters {
                ssrc: 500_005_000 + i as u32
            })
        );
    }
}

#[test]
fn mediasoup_mapping_with_incompatible_params() {
    let data = load(TEST_ORTC);
    let case = &data["mappingIncompatible"];
    let caps = router_caps(&case["mediaCodecs"]);
    let mut params: RtpParameters = from(&case["rtpParameters"]);
    let result = get_producer_rtp_parameters_mapping(&mut params, &caps, &mut ssrcs(1));
    assert_error("incompatible", result, &case["error"]);
}

// ---------------------------------------------------------------------------
// mediasoup test-Producer.js
// ---------------------------------------------------------------------------

#[test]
fn mediasoup_producer_cases() {
    let data = load(TEST_PRODUCER);
    let caps = router_caps(&data["mediaCodecs"]);
    let cases = data["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name: String = from(&case["name"]);
        let mut params: RtpParameters = from(&case["rtpParameters"]);
        let result =
            get_producer_rtp_parameters_mapping(&mut params, &caps, &mut ssrcs(500_000_000));
        if let Some(error) = case.get("error") {
            assert_error(&name, result, error);
            continue;
        }
        let mapping = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_mapping(&name, &mapping, &case["expectedMapping"]);
        let kind: MediaKind = from(&case["kind"]);
        let consumable = get_consumable_rtp_parameters(kind, &params, &caps, &mapping)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(expected) = case.get("expectedConsumable") {
            assert_params(&name, &consumable, expected);
        }
    }
}

#[test]
fn mediasoup_producer_shapes_that_do_not_decode() {
    // produce() with `rtpParameters: {}` and with `ssrc: '1111'`: refused by
    // the types before ORTC runs.
    assert!(serde_json::from_value::<RtpParameters>(json!({})).is_err());
    assert!(
        serde_json::from_value::<RtpParameters>(json!({
            "codecs": [], "headerExtensions": [], "encodings": [{ "ssrc": "1111" }],
            "rtcp": { "cname": "qwerty" }
        }))
        .is_err()
    );
}

// ---------------------------------------------------------------------------
// mediasoup test-Consumer.js
// ---------------------------------------------------------------------------

#[test]
fn mediasoup_consumer_cases() {
    let data = load(TEST_CONSUMER);
    let cases = data["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let name: String = from(&case["name"]);
        let producer = &data["producers"][case["producer"].as_str().unwrap()];
        let caps = router_caps(&data["routers"][producer["router"].as_str().unwrap()]);
        let kind: MediaKind = from(&producer["kind"]);
        let mut params: RtpParameters = from(&producer["rtpParameters"]);
        let mapping =
            get_producer_rtp_parameters_mapping(&mut params, &caps, &mut ssrcs(500_000_000))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let consumable = get_consumable_rtp_parameters(kind, &params, &caps, &mapping).unwrap();

        let device: RtpCapabilities =
            from(&data["capabilities"][case["capabilities"].as_str().unwrap()]);
        assert_eq!(
            can_consume(&consumable, &device).unwrap(),
            from::<bool>(&case["canConsume"]),
            "{name}: canConsume"
        );
        let result = get_consumer_rtp_parameters(
            &consumable,
            &device,
            from(&case["pipe"]),
            from(&case["enableRtx"]),
            &mut ssrcs(600_000_000),
        );
        if let Some(error) = case.get("error") {
            assert_error(&name, result, error);
            continue;
        }
        let consumer = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(expected) = case.get("expected") {
            assert_params(&name, &consumer, expected);
        }
        if let Some(expected) = case.get("expectedEncodings") {
            let expected: Vec<RtpEncodingParameters> = from(expected);
            assert_eq!(consumer.encodings, expected, "{name}: encodings");
        }
    }
}

// ---------------------------------------------------------------------------
// mediasoup-client shapes against PulseWave's default router
// ---------------------------------------------------------------------------

#[test]
fn default_router_capabilities_wire_shape() {
    let data = load(CLIENT_SHAPES);
    let caps = default_router_capabilities();
    let wire = serde_json::to_value(&caps).unwrap();
    assert_eq!(wire, data["expectedDefaultRouterCapabilities"]);
    validate_rtp_capabilities(&caps).unwrap();
    assert!(caps.codecs.iter().all(|c| c.preferred_payload_type != 127));
    assert_eq!(
        router_capabilities_from_codecs(&default_router_codecs()),
        Ok(caps)
    );
}

#[test]
fn mediasoup_client_chrome_flows() {
    let data = load(CLIENT_SHAPES);
    let router = default_router_capabilities();
    let device: RtpCapabilities = from(&data["chromeDeviceRtpCapabilities"]);
    validate_rtp_capabilities(&device).unwrap();
    for flow in data["flows"].as_array().unwrap() {
        let name: String = from(&flow["name"]);
        let kind: MediaKind = from(&flow["kind"]);
        let mut params: RtpParameters = from(&flow["rtpParameters"]);
        let original = params.clone();
        let mapping =
            get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(500_000_000))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Nothing to normalize in what mediasoup-client sends.
        assert_eq!(params, original, "{name}: parameters changed");
        assert_mapping(&name, &mapping, &flow["expectedMapping"]);

        let consumable = get_consumable_rtp_parameters(kind, &params, &router, &mapping).unwrap();
        if let Some(expected) = flow.get("expectedConsumable") {
            assert_params(&name, &consumable, expected);
        }
        if let Some(expected) = flow.get("expectedConsumableEncodings") {
            let expected: Vec<RtpEncodingParameters> = from(expected);
            assert_eq!(
                consumable.encodings, expected,
                "{name}: consumable encodings"
            );
        }

        assert!(can_consume(&consumable, &device).unwrap(), "{name}");
        let consumer = get_consumer_rtp_parameters(
            &consumable,
            &device,
            false,
            from(&flow["enableRtx"]),
            &mut ssrcs(600_000_000),
        )
        .unwrap();
        if let Some(expected) = flow.get("expectedConsumer") {
            assert_params(&name, &consumer, expected);
        }
        if let Some(expected) = flow.get("expectedConsumerEncodings") {
            let expected: Vec<RtpEncodingParameters> = from(expected);
            assert_eq!(consumer.encodings, expected, "{name}: consumer encodings");
        }
        // mediasoup-client's canReceive(): the first codec's payload type is
        // one of the device's.
        assert!(
            device
                .codecs
                .iter()
                .any(|c| c.preferred_payload_type == consumer.codecs[0].payload_type),
            "{name}: canReceive"
        );
        // And the consumer parameters are valid parameters themselves.
        validate_rtp_parameters(&consumer).unwrap();
    }
}

#[test]
fn codec_matching_against_the_default_router() {
    let data = load(CLIENT_SHAPES);
    let router = default_router_capabilities();
    let cases = data["codecMatching"].as_array().unwrap();
    for case in cases {
        let name: String = from(&case["name"]);
        let codec: RtpCodecParameters = from(&case["codec"]);
        let mut params = RtpParameters {
            codecs: vec![codec],
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(1111),
                ..Default::default()
            }],
            ..Default::default()
        };
        let result = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(1));
        if let Some(error) = case.get("error") {
            assert_error(&name, result, error);
            continue;
        }
        let mapping = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            mapping.codecs[0].mapped_payload_type,
            from::<u8>(&case["mappedPayloadType"]),
            "{name}"
        );
        let expected: CodecParameters = from(&case["expectedParameters"]);
        assert_eq!(params.codecs[0].parameters, expected, "{name}: parameters");
    }
}

#[test]
fn device_without_vp9_profile_2_cannot_consume_it() {
    let data = load(CLIENT_SHAPES);
    let router = default_router_capabilities();
    let mut params: RtpParameters = from(&json!({
        "mid": "3",
        "codecs": [
            { "mimeType": "video/VP9", "payloadType": 100, "clockRate": 90000, "parameters": { "profile-id": 2 } },
            { "mimeType": "video/rtx", "payloadType": 101, "clockRate": 90000, "parameters": { "apt": 100 } }
        ],
        "encodings": [ { "ssrc": 77, "rtx": { "ssrc": 78 }, "scalabilityMode": "L3T3_KEY" } ]
    }));
    let mapping = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(5)).unwrap();
    assert_eq!(mapping.codecs[0].mapped_payload_type, 105);
    assert_eq!(mapping.codecs[1].mapped_payload_type, 106);
    let consumable =
        get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &mapping).unwrap();

    let full: RtpCapabilities = from(&data["chromeDeviceRtpCapabilities"]);
    assert!(can_consume(&consumable, &full).unwrap());
    let consumer =
        get_consumer_rtp_parameters(&consumable, &full, false, true, &mut ssrcs(9)).unwrap();
    assert_eq!(
        consumer.encodings[0].scalability_mode.as_deref(),
        Some("L3T3_KEY")
    );

    // Without VP9 profile 2 (and its RTX): only the RTX codec would match,
    // which is not enough.
    let mut device = full.clone();
    device.codecs.retain(|c| {
        !(c.parameters.get("profile-id") == Some(&ParamValue::Int(2))
            || c.parameters.get("apt") == Some(&ParamValue::Int(105)))
    });
    assert!(!can_consume(&consumable, &device).unwrap());
    assert_eq!(
        get_consumer_rtp_parameters(&consumable, &device, false, true, &mut ssrcs(9)),
        Err(OrtcError::CannotConsume(
            "no compatible media codecs".into()
        ))
    );
}

#[test]
fn video_consumer_without_rtx() {
    let router = default_router_capabilities();
    let data = load(CLIENT_SHAPES);
    let flow = &data["flows"][0];
    let mut params: RtpParameters = from(&flow["rtpParameters"]);
    let mapping = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(5)).unwrap();
    let consumable =
        get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &mapping).unwrap();
    let device: RtpCapabilities = from(&data["chromeDeviceRtpCapabilities"]);
    let consumer =
        get_consumer_rtp_parameters(&consumable, &device, false, false, &mut ssrcs(9)).unwrap();
    assert_eq!(consumer.codecs.len(), 1);
    assert_eq!(consumer.codecs[0].mime_type, "video/VP8");
    assert_eq!(
        consumer.codecs[0].rtcp_feedback,
        [
            RtcpFeedback::new("transport-cc", ""),
            RtcpFeedback::new("ccm", "fir"),
            RtcpFeedback::new("nack", "pli"),
        ]
    );
    assert_eq!(consumer.encodings[0].rtx, None);

    // A device whose only match is an RTX codec (it has VP9 and RTX for
    // VP9, not VP8) cannot consume.
    let rtx_only: RtpCapabilities = from(&json!({
        "codecs": [
            { "kind": "video", "mimeType": "video/VP9", "preferredPayloadType": 103, "clockRate": 90000 },
            { "kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 104, "clockRate": 90000,
              "parameters": { "apt": 103 } }
        ]
    }));
    assert!(!can_consume(&consumable, &rtx_only).unwrap());
}

#[test]
fn transport_cc_and_remb_reduction() {
    let router = default_router_capabilities();
    let data = load(CLIENT_SHAPES);
    let mut params: RtpParameters = from(&data["flows"][0]["rtpParameters"]);
    let mapping = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(5)).unwrap();
    let consumable =
        get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &mapping).unwrap();
    let feedback_with = |uris: &[&str]| {
        let mut device: RtpCapabilities = from(&data["chromeDeviceRtpCapabilities"]);
        device
            .header_extensions
            .retain(|e| uris.contains(&e.uri.as_str()));
        let consumer =
            get_consumer_rtp_parameters(&consumable, &device, false, true, &mut ssrcs(9)).unwrap();
        consumer.codecs[0]
            .rtcp_feedback
            .iter()
            .map(|fb| format!("{} {}", fb.kind, fb.parameter).trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        feedback_with(&[uri::TRANSPORT_CC, uri::ABS_SEND_TIME]),
        ["transport-cc", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!(
        feedback_with(&[uri::ABS_SEND_TIME]),
        ["goog-remb", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!(feedback_with(&[]), ["ccm fir", "nack", "nack pli"]);
}

// ---------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------

#[test]
fn malformed_parameters_are_refused() {
    let data = load(MALFORMED);
    let router = default_router_capabilities();
    for case in data["parameters"].as_array().unwrap() {
        let name: String = from(&case["name"]);
        let mut params: RtpParameters = from(&case["rtpParameters"]);
        let result = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(1));
        let err = match result {
            Ok(m) => panic!("{name}: accepted: {m:?}"),
            Err(err) => err,
        };
        assert_eq!(error_name(&err), case["error"], "{name}: {err}");
        if let Some(contains) = case.get("contains").and_then(Value::as_str) {
            assert!(err.to_string().contains(contains), "{name}: {err}");
        }
    }
}

#[test]
fn malformed_capabilities_are_refused() {
    let data = load(MALFORMED);
    let router = default_router_capabilities();
    let client = load(CLIENT_SHAPES);
    let mut params: RtpParameters = from(&client["flows"][0]["rtpParameters"]);
    let mapping = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(5)).unwrap();
    let consumable =
        get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &mapping).unwrap();
    for case in data["capabilities"].as_array().unwrap() {
        let name: String = from(&case["name"]);
        let caps: RtpCapabilities = from(&case["capabilities"]);
        let contains = case["contains"].as_str().unwrap();
        for err in [
            validate_rtp_capabilities(&caps).err(),
            can_consume(&consumable, &caps).err(),
            get_consumer_rtp_parameters(&consumable, &caps, false, true, &mut ssrcs(1)).err(),
        ] {
            let err = err.unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(
                matches!(&err, OrtcError::InvalidCapabilities(m) if m.contains(contains)),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn consumable_refuses_a_foreign_mapping_or_kind() {
    let router = default_router_capabilities();
    let client = load(CLIENT_SHAPES);
    let mut params: RtpParameters = from(&client["flows"][0]["rtpParameters"]);
    let mapping = get_producer_rtp_parameters_mapping(&mut params, &router, &mut ssrcs(5)).unwrap();
    // Wrong kind.
    assert!(matches!(
        get_consumable_rtp_parameters(MediaKind::Audio, &params, &router, &mapping),
        Err(OrtcError::InvalidParameters(_))
    ));
    // Mapping of other parameters.
    let mut other = mapping.clone();
    other.codecs[0].payload_type = 50;
    assert!(get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &other).is_err());
    let mut other = mapping.clone();
    other.codecs[0].mapped_payload_type = 1;
    assert!(get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &other).is_err());
    let mut other = mapping;
    other.encodings.clear();
    assert!(get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &other).is_err());
}

/// Randomly mutated parameters and capabilities never panic, whether they
/// are accepted or refused.
#[test]
fn random_inputs_never_panic() {
    let data = load(CLIENT_SHAPES);
    let router = default_router_capabilities();
    let bases: Vec<(MediaKind, RtpParameters)> = data["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (from(&f["kind"]), from(&f["rtpParameters"])))
        .collect();
    let device: RtpCapabilities = from(&data["chromeDeviceRtpCapabilities"]);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mimes = [
        "audio/opus",
        "video/VP8",
        "video/vp9",
        "video/H264",
        "video/rtx",
        "audio/rtx",
        "audio/PCMU",
        "video/AV1",
        "/rtx",
        "rtx",
        "video/",
        "audio/multiopus",
        "text/plain",
    ];
    let keys = [
        "apt",
        "profile-id",
        "packetization-mode",
        "profile-level-id",
        "level-asymmetry-allowed",
        "num_streams",
        "x-google-start-bitrate",
    ];
    let values = [
        ParamValue::Int(0),
        ParamValue::Int(1),
        ParamValue::Int(2),
        ParamValue::Int(96),
        ParamValue::Int(97),
        ParamValue::Int(101),
        ParamValue::Int(-1),
        ParamValue::Int(i64::MAX),
        ParamValue::Str("42e01f".into()),
        ParamValue::Str("4d0032".into()),
        ParamValue::Str("640c1f".into()),
        ParamValue::Str(String::new()),
        ParamValue::Str("zz".into()),
        ParamValue::Bool(true),
    ];
    let pts = [0u8, 96, 97, 100, 101, 102, 111, 127, 200];
    let u32s = [0u32, 1, 2, 3_000_000_001, 3_000_000_002, u32::MAX];
    let uris = [
        uri::MID,
        uri::RID,
        uri::TRANSPORT_CC,
        uri::ABS_SEND_TIME,
        "x",
        "",
    ];
    let (mut accepted, mut consumed) = (0, 0);
    for _ in 0..4000 {
        let (kind, mut params) = bases[rng.random_range(0..bases.len())].clone();
        let mut caps = device.clone();
        for _ in 0..rng.random_range(0..4) {
            let c = rng.random_range(0..params.codecs.len().max(1));
            let e = rng.random_range(0..params.encodings.len().max(1));
            let cc = rng.random_range(0..caps.codecs.len().max(1));
            match rng.random_range(0..16) {
                0 => params
                    .codecs
                    .get_mut(c)
                    .into_iter()
                    .for_each(|x| x.payload_type = pts[rng.random_range(0..pts.len())]),
                1 => params
                    .codecs
                    .get_mut(c)
                    .into_iter()
                    .for_each(|x| x.mime_type = mimes[rng.random_range(0..mimes.len())].into()),
                2 => {
                    params.codecs.get_mut(c).into_iter().for_each(|x| {
                        x.clock_rate = [0, 8000, 48000, 90000][rng.random_range(0..4)]
                    })
                }
                3 => params.codecs.get_mut(c).into_iter().for_each(|x| {
                    x.channels = [None, Some(0), Some(1), Some(2)][rng.random_range(0..4)]
                }),
                4 => {
                    let (k, v) = (
                        keys[rng.random_range(0..keys.len())],
                        values[rng.random_range(0..values.len())].clone(),
                    );
                    params.codecs.get_mut(c).into_iter().for_each(|x| {
                        x.parameters.insert(k.into(), v.clone());
                    });
                }
                5 => {
                    if c < params.codecs.len() {
                        params.codecs.remove(c);
                    }
                }
                6 => {
                    if let Some(x) = params.codecs.get(c).cloned() {
                        params.codecs.push(x);
                    }
                }
                7 => params.encodings.get_mut(e).into_iter().for_each(|x| {
                    x.ssrc =
                        [None, Some(u32s[rng.random_range(0..u32s.len())])][rng.random_range(0..2)]
                }),
                8 => params.encodings.get_mut(e).into_iter().for_each(|x| {
                    x.rid = [None, Some("r0"), Some("r1"), Some("")][rng.random_range(0..4)]
                        .map(str::to_owned)
                }),
                9 => params.encodings.get_mut(e).into_iter().for_each(|x| {
                    x.rtx = [
                        None,
                        Some(RtxParameters {
                            ssrc: u32s[rng.random_range(0..u32s.len())],
                        }),
                    ][rng.random_range(0..2)]
                }),
                10 => params.encodings.get_mut(e).into_iter().for_each(|x| {
                    x.scalability_mode =
                        [None, Some("L1T3"), Some("L3T3"), Some("x"), Some("L99T99")]
                            [rng.random_range(0..5)]
                        .map(str::to_owned)
                }),
                11 => {
                    if rng.random_bool(0.5) && e < params.encodings.len() {
                        params.encodings.remove(e);
                    } else {
                        params.encodings.push(RtpEncodingParameters {
                            codec_payload_type: Some(pts[rng.random_range(0..pts.len())]),
                            ..Default::default()
                        });
                    }
                }
                12 => params.header_extensions.push(RtpHeaderExtensionParameters {
                    uri: uris[rng.random_range(0..uris.len())].into(),
                    id: [0, 1, 4, 15, 255][rng.random_range(0..5)],
                    encrypt: false,
                    parameters: CodecParameters::new(),
                }),
                13 => {
                    params.mid =
                        [None, Some("0"), Some("")][rng.random_range(0..3)].map(str::to_owned)
                }
                14 => {
                    caps.codecs.get_mut(cc).into_iter().for_each(|x| {
                        x.preferred_payload_type = pts[rng.random_range(0..pts.len())]
                    })
                }
                _ => {
                    let (k, v) = (
                        keys[rng.random_range(0..keys.len())],
                        values[rng.random_range(0..values.len())].clone(),
                    );
                    caps.codecs.get_mut(cc).into_iter().for_each(|x| {
                        x.parameters.insert(k.into(), v.clone());
                    });
                }
            }
        }
        let _ = validate_rtp_parameters(&params);
        let mut generator = ssrcs(u32::MAX - 5000);
        let Ok(mapping) = get_producer_rtp_parameters_mapping(&mut params, &router, &mut generator)
        else {
            continue;
        };
        accepted += 1;
        for kind in [kind, MediaKind::Audio, MediaKind::Video] {
            let Ok(consumable) = get_consumable_rtp_parameters(kind, &params, &router, &mapping)
            else {
                continue;
            };
            let mut max = || u32::MAX;
            if can_consume(&consumable, &caps) == Ok(true) {
                consumed += 1;
                let consumer =
                    get_consumer_rtp_parameters(&consumable, &caps, false, true, &mut max)
                        .expect("consumable when can_consume says so");
                assert_eq!(consumer.encodings.len(), 1);
            }
            let _ = get_consumer_rtp_parameters(&consumable, &caps, true, false, &mut max);
            let _ = get_pipe_consumer_rtp_parameters(&consumable, true, &mut max);
        }
    }
    assert!(
        accepted > 500 && consumed > 300,
        "too few got through: {accepted}, {consumed}"
    );
}

// ---------------------------------------------------------------------------
// Router codec lists
// ---------------------------------------------------------------------------

#[test]
fn router_codec_lists() {
    use MediaKind::{Audio, Video};
    // Static payload types and preferred ones; preferred ones leave the
    // dynamic pool.
    let caps = router_capabilities_from_codecs(&[
        RouterCodec::new(Audio, "audio/PCMU", 8000),
        RouterCodec::new(Audio, "audio/opus", 48000)
            .with_channels(2)
            .with_preferred_payload_type(101),
        RouterCodec::new(Video, "video/vp8", 90000),
        RouterCodec::new(Audio, "audio/multiopus", 48000)
            .with_channels(6)
            .with_parameter("num_streams", 4)
            .with_parameter("coupled_streams", 2),
    ])
    .unwrap();
    let summary: Vec<(String, u8)> = caps
        .codecs
        .iter()
        .map(|c| (c.mime_type.clone(), c.preferred_payload_type))
        .collect();
    assert_eq!(
        summary,
        [
            ("audio/PCMU".to_owned(), 0),
            ("audio/opus".to_owned(), 101),
            ("video/VP8".to_owned(), 100),
            ("video/rtx".to_owned(), 102),
            ("audio/multiopus".to_owned(), 103),
        ]
    );
    assert_eq!(caps.codecs[0].channels, Some(1));
    assert_eq!(caps.codecs[2].channels, None);
    assert_eq!(
        caps.codecs[4].parameters.get("channel_mapping"),
        Some(&ParamValue::Str("0,4,1,2,3,5".into()))
    );

    // multiopus stream counts must match a supported layout.
    assert!(matches!(
        router_capabilities_from_codecs(&[RouterCodec::new(Audio, "audio/multiopus", 48000)
            .with_channels(6)
            .with_parameter("num_streams", 3)
            .with_parameter("coupled_streams", 2)]),
        Err(OrtcError::UnsupportedCodec { .. })
    ));
    // RTX is not a media codec.
    assert!(matches!(
        router_capabilities_from_codecs(&[RouterCodec::new(Video, "video/rtx", 90000)]),
        Err(OrtcError::UnsupportedCodec { .. })
    ));
    // Configuration errors.
    for (codecs, field) in [
        (
            vec![RouterCodec::new(Video, "audio/opus", 48000).with_channels(2)],
            "mediaCodecs[0].kind",
        ),
        (
            vec![RouterCodec::new(Video, "VP8", 90000)],
            "mediaCodecs[0].mimeType",
        ),
        (
            vec![RouterCodec::new(Video, "video/VP8", 0)],
            "mediaCodecs[0].clockRate",
        ),
        (
            vec![RouterCodec::new(Video, "video/VP8", 90000).with_preferred_payload_type(128)],
            "mediaCodecs[0].preferredPayloadType",
        ),
        (
            vec![
                RouterCodec::new(Video, "video/VP8", 90000),
                RouterCodec::new(Video, "video/VP9", 90000).with_preferred_payload_type(101),
            ],
            "mediaCodecs[1].preferredPayloadType: 101 is duplicated",
        ),
        (
            vec![RouterCodec::new(Video, "video/VP8", 90000).with_parameter("x-foo", "1;a=b")],
            "router capabilities: codecs[0].parameters.x-foo",
        ),
    ] {
        match router_capabilities_from_codecs(&codecs) {
            Err(OrtcError::InvalidParameters(message)) => {
                assert!(message.contains(field), "{message}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

#[test]
fn scalability_modes() {
    let mode = |s| {
        let m = parse_scalability_mode(s);
        (m.spatial_layers, m.temporal_layers, m.ksvc)
    };
    assert_eq!(mode("L1T3"), (1, 3, false));
    assert_eq!(mode("L3T3"), (3, 3, false));
    assert_eq!(mode("S3T3"), (3, 3, false));
    assert_eq!(mode("L3T3_KEY"), (3, 3, true));
    assert_eq!(mode("L3T3_KEY_SHIFT"), (3, 3, true));
    assert_eq!(mode("L2T2h"), (2, 2, false));
    assert_eq!(mode("L12T34"), (12, 34, false));
    assert_eq!(mode("L1T123"), (1, 12, false));
    assert_eq!(mode("L123T3"), (1, 1, false));
    assert_eq!(mode("L0T3"), (1, 1, false));
    assert_eq!(mode("L1T0"), (1, 1, false));
    assert_eq!(mode("X1T3"), (1, 1, false));
    assert_eq!(mode(""), (1, 1, false));
    assert_eq!(mode("L"), (1, 1, false));
    assert_eq!(mode("L1"), (1, 1, false));
    assert_eq!(mode("L1T"), (1, 1, false));
    assert_eq!(mode("é1T3"), (1, 1, false));
}

#[test]
fn rtx_mime_types() {
    assert!(is_rtx_mime_type("video/rtx"));
    assert!(is_rtx_mime_type("audio/RTX"));
    assert!(is_rtx_mime_type("x/rtx"));
    assert!(!is_rtx_mime_type("/rtx"));
    assert!(!is_rtx_mime_type("rtx"));
    assert!(!is_rtx_mime_type("video/rtxx"));
    assert!(!is_rtx_mime_type("video/VP8"));
    assert!(is_rtx_mime_type("é/rtx"));
    // Multi-byte text whose last four bytes split a character.
    assert!(!is_rtx_mime_type("ééa"));
    assert!(!is_rtx_mime_type("éé"));
}

#[test]
fn random_ssrcs_are_in_mediasoups_range() {
    for _ in 0..1000 {
        let ssrc = random_ssrc();
        assert!((100_000_000..999_999_999).contains(&ssrc));
    }
}

#[test]
fn normalization() {
    let mut params: RtpParameters = from(&json!({
        "codecs": [
            { "mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000 },
            { "mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "channels": 2 }
        ],
        "encodings": [ { "ssrc": 1 }, { "ssrc": 2, "dtx": true } ],
        "rtcp": { "reducedSize": false }
    }));
    normalize_rtp_parameters(&mut params);
    assert_eq!(params.codecs[0].channels, Some(1));
    assert_eq!(params.codecs[1].channels, None);
    assert_eq!(params.encodings[0].dtx, Some(false));
    assert_eq!(params.encodings[1].dtx, Some(true));
    assert_eq!(params.rtcp.reduced_size, Some(true));

    let mut caps: RtpCapabilities = from(&json!({
        "codecs": [ { "kind": "video", "mimeType": "audio/opus", "preferredPayloadType": 100, "clockRate": 48000 } ],
        "headerExtensions": [ { "kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1 } ]
    }));
    normalize_rtp_capabilities(&mut caps);
    assert_eq!(caps.codecs[0].kind, MediaKind::Audio);
    assert_eq!(caps.codecs[0].channels, Some(1));
    assert_eq!(
        caps.header_extensions[0].direction,
        Some(pulsewave_protocol::rtp::RtpHeaderExtensionDirection::Sendrecv)
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        OrtcError::UnsupportedCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48000,
            channels: Some(1),
            payload_type: Some(111),
        }
        .to_string(),
        "unsupported codec audio/opus/48000/1 (payload type 111)"
    );
    assert_eq!(
        OrtcError::UnsupportedCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90000,
            channels: None,
            payload_type: None,
        }
        .to_string(),
        "unsupported codec video/VP8/90000"
    );
    assert_eq!(OrtcError::DuplicateSsrc(7).to_string(), "duplicated SSRC 7");
    assert_eq!(
        OrtcError::CannotConsume("no compatible media codecs".into()).to_string(),
        "cannot consume: no compatible media codecs"
    );
}
