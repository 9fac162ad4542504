//! Wire compatibility with LiveKit access tokens, in both directions.

// Test helpers outside `#[test]` functions unwrap too; a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pulsewave_auth::{
    AccessToken, AccessTokenOptions, AuthError, Claims, TokenVerifier, VideoGrant,
};
use serde_json::{Value, json};

const NOW: u64 = 1_700_000_000;
const LIVEKIT_KEY: &str = "APIkey";
const LIVEKIT_SECRET: &str = "livekit-secret-0123456789abcdef0123";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Byte for byte what LiveKit's Go server SDK (go-jose) emits: header
/// `{"alg":"HS256","typ":"JWT"}`, claims with sorted keys, `nbf` = now,
/// `jti` = identity, `attributes`, plus a claim we do not model (`kind`).
/// Signed with Python's `hmac`, independently of this crate.
const GO_SDK_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdHRyaWJ1dGVzIjp7ImEiOiJiIn0sImV4cCI6MTcwMDAyMTYwMCwiaXNzIjoiQVBJa2V5IiwianRpIjoiaWQiLCJraW5kIjoic3RhbmRhcmQiLCJtZXRhZGF0YSI6Im0iLCJuYW1lIjoibiIsIm5iZiI6MTcwMDAwMDAwMCwic3ViIjoiaWQiLCJ2aWRlbyI6eyJjYW5QdWJsaXNoIjp0cnVlLCJjYW5TdWJzY3JpYmUiOnRydWUsInJvb20iOiJyIiwicm9vbUpvaW4iOnRydWV9fQ.PJqhU_nnFOc44jb9obRsAoeOPDLqECVIIbafpxTVxUE";

/// What LiveKit's JS server SDK (`jose`) emits: header `{"alg":"HS256"}`
/// without `typ`, grants first, `nbf` = 0, and more unmodelled claims
/// (`sha256`, `roomConfig`, `sip`). Signed with Python's `hmac`.
const JS_SDK_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoibiIsInZpZGVvIjp7InJvb20iOiJyIiwicm9vbUpvaW4iOnRydWUsImNhblB1Ymxpc2giOnRydWUsImNhblB1Ymxpc2hTb3VyY2VzIjpbImNhbWVyYSIsIm1pY3JvcGhvbmUiXSwiY2FuUHVibGlzaERhdGEiOmZhbHNlfSwibWV0YWRhdGEiOiJ7XCJyb2xlXCI6XCJob3N0XCJ9Iiwia2luZCI6InN0YW5kYXJkIiwiYXR0cmlidXRlcyI6eyJhIjoiYiJ9LCJzaGEyNTYiOiIiLCJyb29tQ29uZmlnIjp7Im5hbWUiOiJyIiwiYWdlbnRzIjpbeyJhZ2VudE5hbWUiOiJ4In1dfSwic2lwIjp7ImFkbWluIjpmYWxzZX0sImlzcyI6IkFQSWtleSIsImV4cCI6MTcwMDAyMTYwMCwibmJmIjowLCJzdWIiOiJpZCIsImp0aSI6ImlkIn0.4GIVL80EaTqoOdexaJ0NrGcrkdohlqaADAna5XXF2PQ";

#[test]
fn go_sdk_token_verifies() {
    let verifier = TokenVerifier::new(LIVEKIT_KEY, LIVEKIT_SECRET);
    let claims = verifier.verify_at(GO_SDK_TOKEN, at(NOW + 60)).unwrap();
    assert_eq!(
        claims,
        Claims {
            iss: "APIkey".into(),
            sub: "id".into(),
            name: "n".into(),
            metadata: "m".into(),
            nbf: NOW,
            exp: NOW + 21_600,
            jti: "id".into(),
            video: VideoGrant {
                room: Some("r".into()),
                room_join: true,
                can_publish: Some(true),
                can_subscribe: Some(true),
                ..VideoGrant::default()
            },
            attributes: [("a".to_owned(), "b".to_owned())].into(),
        }
    );
    assert!(claims.video.can_publish_data());
    assert_eq!(claims.require_room_join("r"), Ok(()));

    assert_eq!(
        verifier.verify_at(GO_SDK_TOKEN, at(NOW + 21_600 + 3600)),
        Err(AuthError::Expired { exp: NOW + 21_600 })
    );
    assert_eq!(
        TokenVerifier::new(LIVEKIT_KEY, "wrong").verify_at(GO_SDK_TOKEN, at(NOW)),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn js_sdk_token_verifies() {
    let verifier = TokenVerifier::new(LIVEKIT_KEY, LIVEKIT_SECRET);
    let claims = verifier.verify_at(JS_SDK_TOKEN, at(NOW)).unwrap();
    assert_eq!(claims.identity(), "id");
    assert_eq!(claims.jti, "id");
    assert_eq!(claims.nbf, 0);
    assert_eq!(claims.metadata, r#"{"role":"host"}"#);
    assert_eq!(
        claims.video,
        VideoGrant {
            room: Some("r".into()),
            room_join: true,
            can_publish: Some(true),
            can_publish_data: Some(false),
            can_publish_sources: vec!["camera".into(), "microphone".into()],
            ..VideoGrant::default()
        }
    );
    assert!(claims.video.can_subscribe());
    assert!(!claims.video.can_publish_data());
    assert!(claims.video.can_publish_source("microphone"));
    assert!(!claims.video.can_publish_source("screen_share"));
}

#[test]
fn livekit_shaped_token_built_with_jsonwebtoken_verifies() {
    let payload = json!({
        "exp": NOW + 3600, "iss": LIVEKIT_KEY, "name": "n", "nbf": NOW, "sub": "id",
        "video": {"room": "r", "roomJoin": true, "canPublish": true, "canSubscribe": true},
        "metadata": "m", "jti": "id", "kind": "standard", "attributes": {"a": "b"}
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &EncodingKey::from_secret(LIVEKIT_SECRET.as_bytes()),
    )
    .unwrap();
    let claims = TokenVerifier::new(LIVEKIT_KEY, LIVEKIT_SECRET)
        .verify_at(&token, at(NOW))
        .unwrap();
    assert_eq!(claims.identity(), "id");
    assert_eq!(claims.name, "n");
    assert_eq!(claims.metadata, "m");
    assert_eq!(claims.video.room.as_deref(), Some("r"));
    assert!(claims.video.room_join && claims.video.can_publish());
}

#[test]
fn livekit_server_api_token_without_identity() {
    // LiveKit's RoomServiceClient signs admin calls without `sub`.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": LIVEKIT_KEY, "nbf": NOW, "exp": NOW + 600,
                "video": {"roomCreate": true, "roomList": true}}),
        &EncodingKey::from_secret(LIVEKIT_SECRET.as_bytes()),
    )
    .unwrap();
    let verifier = TokenVerifier::new(LIVEKIT_KEY, LIVEKIT_SECRET);
    assert_eq!(
        verifier.verify_at(&token, at(NOW)),
        Err(AuthError::MissingIdentity)
    );
    let claims = verifier
        .with_identity_required(false)
        .verify_at(&token, at(NOW))
        .unwrap();
    assert!(claims.video.room_create && claims.video.room_list);
}

fn our_token() -> String {
    let mut token = AccessToken::new(
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
        AccessTokenOptions {
            identity: "user-123".into(),
            name: Some("John Doe".into()),
            metadata: Some(json!({"role": "host"}).into()),
            ttl: Some(Duration::from_secs(3600)),
        },
    );
    token.add_grant(VideoGrant {
        room: Some("room-name".into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(false),
        can_publish_sources: vec!["camera".into(), "microphone".into()],
        can_update_own_metadata: true,
        ..VideoGrant::default()
    });
    token.to_jwt_at(at(NOW)).unwrap()
}

#[test]
fn our_token_has_livekit_layout() {
    let jwt = our_token();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);

    assert_eq!(decode_part(parts[0]), json!({"typ": "JWT", "alg": "HS256"}));

    let payload = decode_part(parts[1]);
    assert_eq!(
        payload,
        json!({
            "iss": "APIkey",
            "sub": "user-123",
            "name": "John Doe",
            "metadata": "{\"role\":\"host\"}",
            "nbf": NOW,
            "exp": NOW + 3600,
            "jti": "user-123",
            "video": {
                "room": "room-name",
                "roomJoin": true,
                "canPublish": true,
                "canSubscribe": true,
                "canPublishData": false,
                "canPublishSources": ["camera", "microphone"],
                "canUpdateOwnMetadata": true
            }
        })
    );
    // Types LiveKit's Go decoder expects.
    assert!(payload["metadata"].is_string());
    assert!(payload["nbf"].is_u64() && payload["exp"].is_u64());
    assert!(payload["iss"].is_string() && payload["sub"].is_string());
    assert!(payload["video"]["roomJoin"].is_boolean());
    assert!(payload["video"]["canPublishSources"].is_array());
}

#[test]
fn our_token_never_contains_null_or_snake_case() {
    fn walk(value: &Value, path: &str) {
        match value {
            Value::Null => panic!("null at {path}"),
            Value::Object(map) => {
                for (key, inner) in map {
                    assert!(!key.contains('_'), "snake_case key {path}.{key}");
                    walk(inner, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path)),
            _ => {}
        }
    }

    // Minimal token: nothing optional set, so nothing optional written.
    let minimal = AccessToken::new(
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
        AccessTokenOptions {
            identity: "id".into(),
            ..AccessTokenOptions::default()
        },
    )
    .to_jwt_at(at(NOW))
    .unwrap();
    let payload = decode_part(minimal.split('.').nth(1).unwrap());
    walk(&payload, "$");
    assert_eq!(
        payload,
        json!({"iss": "APIkey", "sub": "id", "nbf": NOW, "exp": NOW + 6 * 3600, "jti": "id"})
    );

    walk(&decode_part(our_token().split('.').nth(1).unwrap()), "$");
}

#[test]
fn our_token_verifies_with_a_generic_hs256_verifier() {
    // What LiveKit does: HS256 signature with the API secret, then exp/nbf.
    let jwt = our_token();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    validation.set_issuer(&[LIVEKIT_KEY]);
    let data = jsonwebtoken::decode::<Value>(
        &jwt,
        &DecodingKey::from_secret(LIVEKIT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], json!("user-123"));
    assert_eq!(data.claims["video"]["room"], json!("room-name"));
}
