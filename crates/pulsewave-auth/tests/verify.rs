//! Minting and verifying tokens as a service using the crate would.

// Test helpers outside `#[test]` functions unwrap too; a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pulsewave_auth::{
    AccessToken, AccessTokenOptions, AuthError, Claims, DEFAULT_LEEWAY, DEFAULT_TTL, Metadata,
    TokenVerifier, VideoGrant,
};
use serde_json::{Value, json};

const KEY: &str = "APIkey";
const SECRET: &str = "a-long-enough-test-secret-0123456789";
const NOW: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(KEY, SECRET)
}

fn host_token() -> AccessToken {
    let mut token = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: "user-123".into(),
            name: Some("John Doe".into()),
            metadata: Some(Metadata::from(json!({"role": "host"}))),
            ttl: None,
        },
    );
    token.add_grant(VideoGrant {
        room: Some("room-name".into()),
        room_join: true,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..VideoGrant::default()
    });
    token
}

/// Signs arbitrary claims (any JSON) with HS256, bypassing `AccessToken`.
fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

fn payload_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn is_malformed(result: Result<Claims, AuthError>) -> bool {
    matches!(result, Err(AuthError::Malformed(_)))
}

#[test]
fn round_trip_keeps_every_claim() {
    let jwt = host_token().to_jwt_at(at(NOW)).unwrap();
    let claims = verifier().verify_at(&jwt, at(NOW + 5)).unwrap();
    assert_eq!(
        claims,
        Claims {
            iss: KEY.into(),
            sub: "user-123".into(),
            name: "John Doe".into(),
            metadata: r#"{"role":"host"}"#.into(),
            nbf: NOW,
            exp: NOW + DEFAULT_TTL.as_secs(),
            jti: "user-123".into(),
            video: VideoGrant {
                room: Some("room-name".into()),
                room_join: true,
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..VideoGrant::default()
            },
            attributes: Default::default(),
        }
    );
    assert_eq!(claims.identity(), "user-123");
    assert_eq!(claims.require_room_join("room-name"), Ok(()));
    assert!(matches!(
        claims.require_room_join("elsewhere"),
        Err(AuthError::RoomMismatch { .. })
    ));
}

#[test]
fn round_trip_with_every_grant_set() {
    let grant = VideoGrant {
        room: Some("r".into()),
        room_join: true,
        room_create: true,
        room_list: true,
        room_admin: true,
        room_record: true,
        can_publish: Some(false),
        can_subscribe: Some(false),
        can_publish_data: Some(false),
        can_publish_sources: vec!["camera".into(), "screen_share".into()],
        can_update_own_metadata: true,
        hidden: true,
        recorder: true,
        agent: true,
        ingress_admin: true,
    };
    let mut token = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: "bot".into(),
            ttl: Some(Duration::from_secs(90)),
            ..AccessTokenOptions::default()
        },
    );
    token.add_grant(grant.clone());
    let claims = verifier()
        .verify_at(&token.to_jwt_at(at(NOW)).unwrap(), at(NOW))
        .unwrap();
    assert_eq!(claims.video, grant);
    assert_eq!(claims.exp, NOW + 90);
    assert_eq!(claims.name, "");
    assert_eq!(claims.metadata, "");
}

#[test]
fn to_jwt_uses_the_current_time() {
    let jwt = host_token().to_jwt().unwrap();
    let claims = verifier().verify(&jwt).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims.nbf <= now && now - claims.nbf < 60);
    assert_eq!(claims.exp - claims.nbf, DEFAULT_TTL.as_secs());
}

#[test]
fn metadata_object_becomes_its_json_string() {
    let jwt = host_token().to_jwt_at(at(NOW)).unwrap();
    assert_eq!(payload_of(&jwt)["metadata"], json!(r#"{"role":"host"}"#));
    let claims = verifier().verify_at(&jwt, at(NOW)).unwrap();
    assert_eq!(claims.metadata, r#"{"role":"host"}"#);
    let back: Value = serde_json::from_str(&claims.metadata).unwrap();
    assert_eq!(back, json!({"role": "host"}));
}

#[test]
fn metadata_string_is_kept_verbatim() {
    let token = AccessToken::new(
        KEY,
        SECRET,
        AccessTokenOptions {
            identity: "id".into(),
            metadata: Some("plain text, not JSON".into()),
            ..AccessTokenOptions::default()
        },
    );
    let claims = verifier()
        .verify_at(&token.to_jwt_at(at(NOW)).unwrap(), at(NOW))
        .unwrap();
    assert_eq!(claims.metadata, "plain text, not JSON");
}

#[test]
fn expired_token_is_rejected_beyond_leeway_only() {
    let mut token = host_token();
    token.set_ttl(Duration::from_secs(60));
    let jwt = token.to_jwt_at(at(NOW)).unwrap();
    let exp = NOW + 60;
    let leeway = DEFAULT_LEEWAY.as_secs();

    assert!(verifier().verify_at(&jwt, at(exp)).is_ok());
    assert!(verifier().verify_at(&jwt, at(exp + leeway)).is_ok());
    let err = verifier()
        .verify_at(&jwt, at(exp + leeway + 1))
        .unwrap_err();
    assert_eq!(err, AuthError::Expired { exp });
    assert_eq!(err.to_string(), format!("token expired at {exp}"));
    assert_eq!(
        verifier().verify_at(&jwt, at(exp + 86_400)),
        Err(AuthError::Expired { exp })
    );

    let lenient = verifier().with_leeway(Duration::from_secs(3600));
    assert!(lenient.verify_at(&jwt, at(exp + 3600)).is_ok());
}

#[test]
fn token_from_the_future_is_not_yet_valid() {
    let jwt = host_token().to_jwt_at(at(NOW + 3600)).unwrap();
    assert_eq!(
        verifier().verify_at(&jwt, at(NOW)),
        Err(AuthError::NotYetValid { nbf: NOW + 3600 })
    );
    // A few seconds of clock skew is tolerated.
    let jwt = host_token().to_jwt_at(at(NOW + 5)).unwrap();
    assert!(verifier().verify_at(&jwt, at(NOW)).is_ok());
}

#[test]
fn token_signed_with_another_secret_is_forged() {
    let mut forged = AccessToken::new(
        KEY,
        "some-other-secret",
        AccessTokenOptions {
            identity: "user-123".into(),
            ..AccessTokenOptions::default()
        },
    );
    forged.add_grant(host_token().grant().clone());
    let jwt = forged.to_jwt_at(at(NOW)).unwrap();
    let err = verifier().verify_at(&jwt, at(NOW)).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(err.to_string(), "signature does not match");
}

#[test]
fn tampered_payload_fails_signature() {
    let jwt = host_token().to_jwt_at(at(NOW)).unwrap();
    let mut parts = jwt.split('.');
    let (header, _, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut payload = payload_of(&jwt);
    payload["video"]["roomAdmin"] = json!(true);
    let tampered = format!("{header}.{}.{signature}", b64(&payload.to_string()));
    assert_eq!(
        verifier().verify_at(&tampered, at(NOW)),
        Err(AuthError::BadSignature)
    );

    // Same claims, re-serialized: still not the signed bytes.
    let mut identity_swap = payload_of(&jwt);
    identity_swap["sub"] = json!("admin");
    let tampered = format!("{header}.{}.{signature}", b64(&identity_swap.to_string()));
    assert_eq!(
        verifier().verify_at(&tampered, at(NOW)),
        Err(AuthError::BadSignature)
    );

    // Flipping a signature character.
    let mut bytes = jwt.clone().into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).unwrap();
    assert_eq!(
        verifier().verify_at(&flipped, at(NOW)),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn unknown_api_key() {
    let token = AccessToken::new(
        "stranger",
        SECRET,
        AccessTokenOptions {
            identity: "id".into(),
            ..AccessTokenOptions::default()
        },
    );
    let err = verifier()
        .verify_at(&token.to_jwt_at(at(NOW)).unwrap(), at(NOW))
        .unwrap_err();
    assert_eq!(err, AuthError::UnknownKey("stranger".into()));
    assert_eq!(err.to_string(), "unknown API key `stranger`");
    assert!(!err.to_string().contains(SECRET));
}

#[test]
fn missing_or_empty_issuer() {
    for claims in [
        json!({"sub": "id", "exp": NOW + 60}),
        json!({"iss": "", "sub": "id", "exp": NOW + 60}),
        json!({"iss": null, "sub": "id", "exp": NOW + 60}),
    ] {
        assert_eq!(
            verifier().verify_at(&sign(&claims, SECRET), at(NOW)),
            Err(AuthError::MissingIssuer),
            "{claims}"
        );
    }
}

#[test]
fn missing_or_empty_subject() {
    for claims in [
        json!({"iss": KEY, "exp": NOW + 60}),
        json!({"iss": KEY, "sub": "", "exp": NOW + 60}),
    ] {
        assert_eq!(
            verifier().verify_at(&sign(&claims, SECRET), at(NOW)),
            Err(AuthError::MissingIdentity),
            "{claims}"
        );
    }
}

#[test]
fn exp_is_required() {
    let jwt = sign(&json!({"iss": KEY, "sub": "id", "nbf": NOW}), SECRET);
    let err = verifier().verify_at(&jwt, at(NOW)).unwrap_err();
    assert!(
        matches!(&err, AuthError::Malformed(m) if m.contains("exp")),
        "{err}"
    );
}

#[test]
fn wrong_claim_types_are_malformed() {
    for claims in [
        json!({"iss": 5, "sub": "id", "exp": NOW + 60}),
        json!({"iss": KEY, "sub": 5, "exp": NOW + 60}),
        json!({"iss": KEY, "sub": "id", "exp": "tomorrow"}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "nbf": "now"}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "metadata": {"role": "host"}}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "video": {"roomJoin": "yes"}}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "video": []}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "video": ["r", true]}),
        json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "video": "r"}),
        json!(["not", "an", "object"]),
        json!([KEY, "id", "n", "m", 0, NOW + 60]),
        json!("just a string"),
    ] {
        let result = verifier().verify_at(&sign(&claims, SECRET), at(NOW));
        assert!(is_malformed(result.clone()), "{claims}: {result:?}");
    }
}

#[test]
fn can_publish_absent_means_allowed() {
    let jwt = sign(
        &json!({"iss": KEY, "sub": "id", "exp": NOW + 60, "video": {"room": "r", "roomJoin": true}}),
        SECRET,
    );
    let claims = verifier().verify_at(&jwt, at(NOW)).unwrap();
    assert_eq!(claims.video.can_publish, None);
    assert!(claims.video.can_publish());
    assert!(claims.video.can_subscribe());
    assert!(claims.video.can_publish_data());
    assert!(claims.video.can_publish_source("camera"));
    assert!(!claims.video.room_admin);
    assert!(!claims.video.hidden);

    let jwt = sign(&json!({"iss": KEY, "sub": "id", "exp": NOW + 60}), SECRET);
    let claims = verifier().verify_at(&jwt, at(NOW)).unwrap();
    assert_eq!(claims.video, VideoGrant::default());
    assert!(claims.video.can_publish());
    assert_eq!(
        claims.require_room_join("r"),
        Err(AuthError::MissingGrant("roomJoin"))
    );
}

#[test]
fn unknown_claims_and_grant_fields_are_ignored() {
    let jwt = sign(
        &json!({
            "iss": KEY, "sub": "id", "exp": NOW + 60, "nbf": NOW,
            "aud": "somebody", "iat": NOW, "kind": "standard",
            "attributes": {"a": "b"}, "sip": {"admin": true}, "sha256": "abc",
            "roomConfig": {"name": "r"}, "roomPreset": "p",
            "video": {"room": "r", "roomJoin": true, "canSubscribeMetrics": true,
                      "destinationRoom": "d", "futureFlag": [1, 2, 3]}
        }),
        SECRET,
    );
    let claims = verifier().verify_at(&jwt, at(NOW)).unwrap();
    assert_eq!(claims.identity(), "id");
    assert_eq!(claims.video.room.as_deref(), Some("r"));
    assert!(claims.video.room_join);
}

#[test]
fn alg_none_is_rejected() {
    let payload = b64(&json!({"iss": KEY, "sub": "admin", "exp": NOW + 60}).to_string());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{}.{payload}.{signature}", b64(header));
            let result = verifier().verify_at(&token, at(NOW));
            assert!(is_malformed(result.clone()), "{header}: {result:?}");
        }
    }
}

#[test]
fn asymmetric_and_other_hmac_algorithms_are_rejected() {
    let claims = json!({"iss": KEY, "sub": "id", "exp": NOW + 60});
    let payload = b64(&claims.to_string());

    // An RS256 header over an HMAC signature (the classic key-confusion attack).
    for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
        let header = b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let hs256 = sign(&claims, SECRET);
        let signature = hs256.rsplit('.').next().unwrap();
        let token = format!("{header}.{payload}.{signature}");
        let result = verifier().verify_at(&token, at(NOW));
        assert!(
            matches!(&result, Err(AuthError::Malformed(m)) if m.contains("HS256")),
            "{alg}: {result:?}"
        );
    }

    // HS384/HS512 are validly signed but not what LiveKit SDKs emit.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(
            is_malformed(verifier().verify_at(&token, at(NOW))),
            "{alg:?}"
        );
    }
}

#[test]
fn garbage_is_malformed_and_never_panics() {
    let mut inputs: Vec<String> = [
        "",
        " ",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "Bearer a.b.c",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJBUElrZXkifQ.@@@",
        "e30=.e30=.e30=",
        "\u{0}.\u{0}.\u{0}",
        "ðŸ˜€.ðŸ˜€.ðŸ˜€",
        "😀.😀.😀",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    inputs.push("a".repeat(10 * 1024));
    inputs.push(format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(4000)
    ));
    inputs.push(".".repeat(10 * 1024));

    // Deterministic pseudo-random bytes (xorshift), with and without dots.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        let len = (round * 37) % 600;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push((state >> 24) as u8);
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if round % 2 == 0 {
            text = text.replacen(char::is_alphanumeric, ".", 2);
            let middle = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(text.len(), |(index, _)| index);
            text.insert(middle, '.');
            text.insert(0, '.');
        }
        inputs.push(text);
    }

    for input in &inputs {
        let result = verifier().verify_at(input, at(NOW));
        assert!(
            is_malformed(result.clone()),
            "{:?}: {result:?}",
            input.chars().take(40).collect::<String>()
        );
    }
}

#[test]
fn valid_looking_header_and_payload_with_garbage_signature() {
    let jwt = host_token().to_jwt_at(at(NOW)).unwrap();
    let (message, _) = jwt.rsplit_once('.').unwrap();
    // Valid base64url, wrong bytes.
    assert_eq!(
        verifier().verify_at(&format!("{message}.AAAA"), at(NOW)),
        Err(AuthError::BadSignature)
    );
    // Not base64url at all.
    assert!(is_malformed(
        verifier().verify_at(&format!("{message}.%%%"), at(NOW))
    ));
}

#[test]
fn token_secret_never_appears_in_errors_or_debug() {
    let verifier = verifier();
    assert!(!format!("{verifier:?}").contains(SECRET));
    assert!(!format!("{:?}", host_token()).contains(SECRET));
    let bad = sign(&json!({"iss": KEY, "sub": "id", "exp": 1}), SECRET);
    let err = verifier.verify_at(&bad, at(NOW)).unwrap_err();
    assert!(!err.to_string().contains(SECRET));
    assert!(!format!("{err:?}").contains(SECRET));
}
