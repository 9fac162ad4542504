//! Every client and server message of the seed README, as written there,
//! decodes into the typed messages and encodes back with the same names.

use pulsewave_protocol::rtp::RtpParameters;
use pulsewave_protocol::transport::TransportDirection;
use pulsewave_protocol::*;
use serde_json::{Value, json};

fn decode(v: Value) -> ClientMessage {
    decode_client(&v.to_string())
        .unwrap_or_else(|e| panic!("{v} did not decode: {e}"))
        .message
}

fn vp8_params() -> Value {
    json!({
        "codecs": [{"mimeType":"video/VP8","payloadType":96,"clockRate":90000}],
        "encodings": [{"ssrc": 1234}]
    })
}

#[test]
fn seed_client_messages_decode() {
    assert_eq!(
        decode(json!({"type":"join","room":"my-room"})),
        ClientMessage::Join {
            room: "my-room".into(),
            resume: None
        }
    );
    assert_eq!(decode(json!({"type":"leave"})), ClientMessage::Leave);
    for dir in ["send", "recv"] {
        let m = decode(json!({"type":"create-transport","direction":dir}));
        let ClientMessage::CreateTransport { direction, .. } = m else {
            panic!("wrong variant")
        };
        assert_eq!(
            direction,
            if dir == "send" {
                TransportDirection::Send
            } else {
                TransportDirection::Recv
            }
        );
    }
    let m = decode(json!({"type":"connect-transport","transportId":"TP_123",
        "dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":"AB:CD"}]}}));
    assert!(
        matches!(m, ClientMessage::ConnectTransport { transport_id, .. } if transport_id.as_str() == "TP_123")
    );
    for (kind, source) in [
        ("video", "camera"),
        ("audio", "microphone"),
        ("video", "screen"),
    ] {
        let m = decode(
            json!({"type":"publish","kind":kind,"source":source,"rtpParameters":vp8_params()}),
        );
        let ClientMessage::Publish {
            kind: k,
            source: s,
            rtp_parameters,
            ..
        } = m
        else {
            panic!("wrong variant")
        };
        assert_eq!(k.as_str(), kind);
        assert_eq!(s.map(|s| s.as_str()), Some(source));
        assert_eq!(rtp_parameters.encodings[0].ssrc, Some(1234));
    }
    assert!(matches!(
        decode(json!({"type":"unpublish","producerId":"PR_123"})),
        ClientMessage::Unpublish { producer_id } if producer_id.as_str() == "PR_123"
    ));
    assert!(matches!(
        decode(json!({"type":"subscribe","producerId":"PR_123","rtpCapabilities":{"codecs":[],"headerExtensions":[]}})),
        ClientMessage::Subscribe { producer_id, .. } if producer_id.as_str() == "PR_123"
    ));
    assert!(matches!(
        decode(json!({"type":"unsubscribe","consumerId":"CN_123"})),
        ClientMessage::Unsubscribe { consumer_id } if consumer_id.as_str() == "CN_123"
    ));
    assert!(matches!(
        decode(json!({"type":"resume-consumer","consumerId":"CN_123"})),
        ClientMessage::ResumeConsumer { .. }
    ));
    assert!(matches!(
        decode(json!({"type":"mute","producerId":"PR_123"})),
        ClientMessage::Mute { .. }
    ));
    assert!(matches!(
        decode(json!({"type":"unmute","producerId":"PR_123"})),
        ClientMessage::Unmute { .. }
    ));
    for kind in ["reliable", "lossy"] {
        let m = decode(
            json!({"type":"publish-data","kind":kind,"data":{"type":"chat","message":"Hello"}}),
        );
        let ClientMessage::PublishData { data, .. } = m else {
            panic!("wrong variant")
        };
        assert_eq!(data["message"], "Hello");
    }
}

#[test]
fn every_client_type_is_listed() {
    // A minimal valid example of each type; TYPES must cover them all.
    let examples = [
        json!({"type":"join","room":"r"}),
        json!({"type":"leave"}),
        json!({"type":"create-transport","direction":"send"}),
        json!({"type":"connect-transport","transportId":"TP_1","dtlsParameters":{"fingerprints":[]}}),
        json!({"type":"restart-ice","transportId":"TP_1"}),
        json!({"type":"publish","kind":"audio","rtpParameters":{"codecs":[]}}),
        json!({"type":"unpublish","producerId":"PR_1"}),
        json!({"type":"subscribe","producerId":"PR_1","rtpCapabilities":{}}),
        json!({"type":"unsubscribe","consumerId":"CN_1"}),
        json!({"type":"resume-consumer","consumerId":"CN_1"}),
        json!({"type":"pause-consumer","consumerId":"CN_1"}),
        json!({"type":"set-preferred-layers","consumerId":"CN_1","spatialLayer":0}),
        json!({"type":"mute","producerId":"PR_1"}),
        json!({"type":"unmute","producerId":"PR_1"}),
        json!({"type":"publish-data","kind":"lossy","data":1}),
        json!({"type":"publish-data-channel","sctpStreamParameters":{"streamId":1}}),
        json!({"type":"unpublish-data-channel","dataProducerId":"DP_1"}),
        json!({"type":"subscribe-data","dataProducerId":"DP_1"}),
        json!({"type":"unsubscribe-data","dataConsumerId":"DC_1"}),
        json!({"type":"ping"}),
        json!({"type":"set-consumer-priority","consumerId":"CN_1","priority":2}),
        json!({"type":"update-track-settings","consumerId":"CN_1","disabled":false}),
        json!({"type":"get-stats"}),
        json!({"type":"update-metadata","metadata":"m"}),
    ];
    assert_eq!(examples.len(), ClientMessage::TYPES.len());
    for e in examples {
        let m = decode(e.clone());
        assert_eq!(m.type_name(), e["type"].as_str().unwrap());
        // Encoding a client message and decoding it again gives the same message.
        let again = decode_client(&encode_client(&m, None)).unwrap().message;
        assert_eq!(again, m);
    }
}

#[test]
fn seed_server_messages_encode_with_seed_names() {
    let track_unpub = ServerMessage::TrackUnpublished {
        producer_id: "PR_123".into(),
        track_sid: "TR_123".into(),
        participant_identity: "user-123".into(),
    };
    let v: Value = serde_json::from_str(&encode_server(&track_unpub, None)).unwrap();
    assert_eq!(v["type"], "track-unpublished");
    assert_eq!(v["producerId"], "PR_123");

    let sub = ServerMessage::TrackSubscribed {
        track_sid: "TR_123".into(),
        consumer_id: "CN_123".into(),
        producer_id: "PR_123".into(),
        kind: MediaKind::Video,
        rtp_parameters: RtpParameters::default(),
        participant_identity: "u".into(),
        paused: true,
    };
    let v: Value =
        serde_json::from_str(&encode_server(&sub, Some(&RequestId::Text("a".into())))).unwrap();
    assert_eq!(v["type"], "track-subscribed");
    assert_eq!(v["trackSid"], "TR_123");
    assert_eq!(v["consumerId"], "CN_123");
    assert_eq!(v["producerId"], "PR_123");
    assert_eq!(v["requestId"], "a");
    assert!(v["rtpParameters"]["codecs"].is_array());

    let data = ServerMessage::Data {
        participant_identity: "user-123".into(),
        kind: DataKind::Reliable,
        data: json!({"type":"chat"}),
        topic: None,
        encoding: None,
    };
    let v: Value = serde_json::from_str(&encode_server(&data, None)).unwrap();
    assert_eq!(
        v,
        json!({"type":"data","participantIdentity":"user-123","kind":"reliable","data":{"type":"chat"}})
    );

    let err = ServerMessage::error(ErrorCode::RoomNotFound, "Room not found");
    assert_eq!(
        serde_json::from_str::<Value>(&encode_server(&err, None)).unwrap(),
        json!({"type":"error","code":100,"message":"Room not found"})
    );

    for (m, name) in [
        (
            ServerMessage::TrackMuted {
                producer_id: "PR_1".into(),
                track_sid: "TR_1".into(),
                participant_identity: "u".into(),
            },
            "track-muted",
        ),
        (
            ServerMessage::TrackUnmuted {
                producer_id: "PR_1".into(),
                track_sid: "TR_1".into(),
                participant_identity: "u".into(),
            },
            "track-unmuted",
        ),
        (
            ServerMessage::TrackUnsubscribed {
                consumer_id: "CN_1".into(),
                producer_id: "PR_1".into(),
            },
            "track-unsubscribed",
        ),
    ] {
        let text = encode_server(&m, None);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], name);
        assert_eq!(m.type_name(), name);
        assert_eq!(decode_server(&text).unwrap().message, m);
    }
}

#[test]
fn bad_input_gives_the_documented_codes() {
    let cases: [(&str, ErrorCode); 8] = [
        ("not json", ErrorCode::MalformedMessage),
        ("[1,2]", ErrorCode::MalformedMessage),
        (r#"{"room":"x"}"#, ErrorCode::MalformedMessage),
        (r#"{"type":5}"#, ErrorCode::MalformedMessage),
        (r#"{"type":"fly"}"#, ErrorCode::UnknownMessageType),
        (r#"{"type":"join"}"#, ErrorCode::InvalidParameters),
        (r#"{"type":"join","room":5}"#, ErrorCode::InvalidParameters),
        (
            r#"{"type":"publish","kind":"smell","rtpParameters":{"codecs":[]}}"#,
            ErrorCode::InvalidParameters,
        ),
    ];
    for (text, code) in cases {
        let err = decode_client(text).unwrap_err();
        assert_eq!(err.code, code, "{text}: {}", err.detail);
        assert!(!err.detail.is_empty());
    }
}

#[test]
fn request_id_is_echoed_even_when_fields_are_bad() {
    let err = decode_client(r#"{"type":"join","requestId":"r-1"}"#).unwrap_err();
    assert_eq!(err.request_id, Some(RequestId::Text("r-1".into())));
    assert!(err.detail.contains("room"), "{}", err.detail);
    let err = decode_client(r#"{"type":"nope","requestId":9}"#).unwrap_err();
    assert_eq!(err.request_id, Some(RequestId::Number(9)));
    let err = decode_client(r#"{"type":"join","room":"r","requestId":{"a":1}}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameters);
}

#[test]
fn ice_restarted_carries_mediasoup_ice_parameters_and_ice_servers() {
    let m = ServerMessage::IceRestarted {
        transport_id: TransportId::from("TP_1"),
        ice_parameters: pulsewave_protocol::transport::IceParameters {
            username_fragment: "uf".into(),
            password: "pw".into(),
            ice_lite: true,
        },
        ice_servers: vec![pulsewave_protocol::transport::IceServer {
            urls: pulsewave_protocol::transport::IceUrls::Many(vec![
                "turn:203.0.113.7:3478?transport=udp".into(),
            ]),
            username: Some("1767261600:alice".into()),
            credential: Some("c".into()),
        }],
    };
    let v: Value = serde_json::from_str(&encode_server(&m, Some(&RequestId::Number(7)))).unwrap();
    assert_eq!(
        v,
        json!({"type":"ice-restarted","requestId":7,"transportId":"TP_1",
               "iceParameters":{"usernameFragment":"uf","password":"pw","iceLite":true},
               "iceServers":[{"urls":["turn:203.0.113.7:3478?transport=udp"],
                              "username":"1767261600:alice","credential":"c"}]})
    );
    // From an older server, without `iceServers`: an empty list.
    let old = r#"{"type":"ice-restarted","requestId":7,"transportId":"TP_1",
                  "iceParameters":{"usernameFragment":"uf","password":"pw","iceLite":true}}"#;
    let decoded = decode_server(old).unwrap().message;
    assert!(
        matches!(&decoded, ServerMessage::IceRestarted { ice_servers, .. } if ice_servers.is_empty()),
        "{decoded:?}"
    );
}
