//! Webhook signatures as LiveKit makes them: the `Authorization` header of
//! a webhook POST is a bare JWT (no `Bearer`), HS256 with an API key pair
//! (`iss` = the key), whose `sha256` claim is the standard base64 of the
//! SHA-256 of the exact body. LiveKit's `WebhookReceiver` checks both.

use std::time::{Duration, SystemTime};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::AuthError;
use crate::verifier::TokenVerifier;

/// How long a webhook signature is valid (LiveKit: 5 minutes).
pub const WEBHOOK_TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct WebhookClaims<'a> {
    iss: &'a str,
    nbf: u64,
    exp: u64,
    sha256: String,
}

/// The standard base64 of the SHA-256 of `body`.
pub fn body_sha256(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `Authorization` header value for a webhook carrying `body`, signed
/// with `api_key` / `api_secret`, valid from `now` for
/// [`WEBHOOK_TOKEN_TTL`].
///
/// # Errors
///
/// [`AuthError::Malformed`] if the token cannot be encoded.
pub fn sign_webhook(
    api_key: &str,
    api_secret: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<String, AuthError> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = WebhookClaims {
        iss: api_key,
        nbf: now,
        exp: now + WEBHOOK_TOKEN_TTL.as_secs(),
        sha256: body_sha256(body),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(api_secret.as_bytes()),
    )
    .map_err(|e| AuthError::Malformed(e.to_string()))
}

/// Checks a webhook's `Authorization` header against its `body`, as
/// LiveKit's `WebhookReceiver` does: a valid token of a known key whose
/// `sha256` claim matches the body.
///
/// # Errors
///
/// The token's [`TokenVerifier::verify`] errors, or
/// [`AuthError::Malformed`] when the `sha256` claim is missing or does not
/// match the body.
pub fn verify_webhook(
    verifier: &TokenVerifier,
    authorization: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    let token = authorization.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    let verifier = verifier.clone().with_identity_required(false);
    verifier.verify(token)?;
    // The signature is good: read the claim it covers.
    let payload = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .map_err(|e| AuthError::Malformed(e.to_string()))?;
    match payload.claims.get("sha256").and_then(|v| v.as_str()) {
        Some(hash) if hash == body_sha256(body) => Ok(()),
        Some(_) => Err(AuthError::Malformed(
            "the `sha256` claim does not match the body".into(),
        )),
        None => Err(AuthError::Malformed("no `sha256` claim".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_the_body() {
        let body = br#"{"event":"room_started"}"#;
        let auth = sign_webhook("k", "s", body, SystemTime::now()).unwrap_or_default();
        let verifier = TokenVerifier::new("k", "s");
        assert!(verify_webhook(&verifier, &auth, body).is_ok());
        assert!(verify_webhook(&verifier, &auth, b"{}").is_err());
        assert!(verify_webhook(&TokenVerifier::new("k", "other"), &auth, body).is_err());
        // The hash of the empty body, as any sha256 tool gives it.
        assert_eq!(
            body_sha256(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
