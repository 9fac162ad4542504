//! Verifying access tokens: [`TokenVerifier`].

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::error::AuthError;
use crate::grants::Claims;
use crate::token::unix_seconds;
use crate::ttl::DEFAULT_LEEWAY;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Checks access tokens against one or more API key / secret pairs.
///
/// A token is accepted when it is an HS256 JWT whose `iss` names a known API
/// key, whose signature matches that key's secret, whose `exp` (required) and
/// `nbf` (optional) hold at the current time give or take the leeway, and
/// whose `sub` (identity) is not empty. Tokens minted by LiveKit's server
/// SDKs are accepted like our own.
///
/// Several key pairs can be configured at once ([`from_keys`]) to rotate
/// secrets without downtime. Cloning is cheap enough to do per listener; its
/// `Debug` output lists the API keys but never the secrets.
///
/// [`from_keys`]: TokenVerifier::from_keys
///
/// ```
/// use pulsewave_auth::{AccessToken, AccessTokenOptions, AuthError, TokenVerifier};
///
/// let jwt = AccessToken::new("key", "secret", AccessTokenOptions {
///     identity: "alice".into(),
///     ..Default::default()
/// })
/// .to_jwt()?;
///
/// let verifier = TokenVerifier::new("key", "secret");
/// assert_eq!(verifier.verify(&jwt)?.identity(), "alice");
///
/// let other = TokenVerifier::new("key", "another secret");
/// assert_eq!(other.verify(&jwt), Err(AuthError::BadSignature));
/// # Ok::<(), AuthError>(())
/// ```
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, String>,
    leeway: Duration,
    identity_required: bool,
}

impl TokenVerifier {
    /// A verifier for tokens issued by `api_key` and signed with `api_secret`.
    pub fn new(api_key: impl Into<String>, api_secret: impl Into<String>) -> Self {
        Self::from_keys([(api_key.into(), api_secret.into())])
    }

    /// A verifier accepting tokens from any of several `(api_key, api_secret)`
    /// pairs, for key rotation. If a key appears twice, the last secret wins.
    pub fn from_keys(keys: impl IntoIterator<Item = (String, String)>) -> Self {
        TokenVerifier {
            keys: keys.into_iter().collect(),
            leeway: DEFAULT_LEEWAY,
            identity_required: true,
        }
    }

    /// Sets the clock skew tolerated on `exp` and `nbf` (whole seconds are
    /// used); the default is [`DEFAULT_LEEWAY`], 10 seconds.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets whether tokens must carry an identity (`sub`); the default is
    /// `true`, which suits participant tokens.
    ///
    /// LiveKit's server SDKs mint tokens without `sub` for server API calls
    /// (room creation, listing…); a verifier for such calls passes `false`.
    pub fn with_identity_required(mut self, required: bool) -> Self {
        self.identity_required = required;
        self
    }

    /// The secret configured for `api_key`, if any.
    pub fn secret_for(&self, api_key: &str) -> Option<&str> {
        self.keys.get(api_key).map(String::as_str)
    }

    /// Verifies `token` at the current time and returns its claims.
    ///
    /// # Errors
    ///
    /// As [`verify_at`](TokenVerifier::verify_at).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, SystemTime::now())
    }

    /// Verifies `token` as of `now` and returns its claims.
    ///
    /// Any string may be passed: nothing panics, and every failure is one of
    /// the errors below, checked in this order.
    ///
    /// # Errors
    ///
    /// * [`AuthError::Malformed`] if the token is not three base64url parts
    ///   of JSON, its algorithm is not HS256 (`none`, `RS256`, `HS512`… are
    ///   refused) or `iss` is not a string;
    /// * [`AuthError::MissingIssuer`] if `iss` is missing or empty;
    /// * [`AuthError::UnknownKey`] if `iss` is not a configured API key;
    /// * [`AuthError::EmptySecret`] if that key's secret is empty;
    /// * [`AuthError::BadSignature`] if the signature does not match;
    /// * [`AuthError::Malformed`] if a claim has the wrong type or `exp` is
    ///   missing;
    /// * [`AuthError::Expired`] if `now` is later than `exp` + leeway;
    /// * [`AuthError::NotYetValid`] if `now` is earlier than `nbf` − leeway;
    /// * [`AuthError::MissingIdentity`] if `sub` is missing or empty (unless
    ///   switched off with
    ///   [`with_identity_required`](TokenVerifier::with_identity_required)).
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        check_shape(token)?;

        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Malformed(format!("invalid header: {}", describe(&e))))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Malformed(format!(
                "signing algorithm {:?} is not accepted, only HS256",
                header.alg
            )));
        }

        // The one claim read before the signature is checked: which key signed
        // it. Reading the payload as a JSON object also rules out arrays.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<JsonObject>(token)
            .map_err(|e| AuthError::Malformed(format!("invalid payload: {}", describe(&e))))?;
        let api_key = match unverified.claims.get("iss") {
            None | Some(serde_json::Value::Null) => "",
            Some(serde_json::Value::String(iss)) => iss.as_str(),
            Some(_) => {
                return Err(AuthError::Malformed(
                    "invalid claims: `iss` is not a string".into(),
                ));
            }
        };
        if api_key.is_empty() {
            return Err(AuthError::MissingIssuer);
        }
        let secret = self
            .secret_for(api_key)
            .ok_or_else(|| AuthError::unknown_key(api_key))?;
        if secret.is_empty() {
            return Err(AuthError::EmptySecret);
        }

        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &signature_only(),
        )
        .map_err(|e| match e.kind() {
            JwtErrorKind::InvalidSignature => AuthError::BadSignature,
            JwtErrorKind::Base64(_) => {
                AuthError::Malformed(format!("invalid signature: {}", describe(&e)))
            }
            _ => AuthError::Malformed(format!("invalid claims: {}", describe(&e))),
        })?
        .claims;

        let now = unix_seconds(now);
        let leeway = self.leeway.as_secs();
        if now.saturating_sub(leeway) > claims.exp {
            return Err(AuthError::Expired { exp: claims.exp });
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(AuthError::NotYetValid { nbf: claims.nbf });
        }
        if self.identity_required && claims.sub.is_empty() {
            return Err(AuthError::MissingIdentity);
        }
        Ok(claims)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut api_keys: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        api_keys.sort_unstable();
        f.debug_struct("TokenVerifier")
            .field("api_keys", &api_keys)
            .field("leeway", &self.leeway)
            .field("identity_required", &self.identity_required)
            .finish_non_exhaustive()
    }
}

/// Requires `header.payload.signature` with three non-empty parts.
fn check_shape(token: &str) -> Result<(), AuthError> {
    let parts: Vec<&str> = token.splitn(4, '.').collect();
    match parts.as_slice() {
        [header, payload, signature] => {
            for (name, part) in [
                ("header", header),
                ("payload", payload),
                ("signature", signature),
            ] {
                if part.is_empty() {
                    return Err(AuthError::Malformed(format!("the {name} part is empty")));
                }
            }
            Ok(())
        }
        _ => Err(AuthError::Malformed(
            "not a JWT: expected three dot-separated parts (header.payload.signature)".into(),
        )),
    }
}

/// Signature and algorithm checks only: times are checked by the caller so
/// that they can be tested at a fixed `now`, and no claim is required here.
fn signature_only() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation
}

/// A plain description of a `jsonwebtoken` decoding error.
fn describe(error: &JwtError) -> String {
    match error.kind() {
        JwtErrorKind::InvalidToken => {
            "not a JWT: expected three dot-separated parts (header.payload.signature)".into()
        }
        JwtErrorKind::Base64(e) => format!("not valid base64url ({e})"),
        JwtErrorKind::Json(e) => format!("not valid JSON for a token ({e})"),
        JwtErrorKind::Utf8(e) => format!("not valid UTF-8 ({e})"),
        JwtErrorKind::InvalidAlgorithm => "the signing algorithm is not accepted".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessToken, AccessTokenOptions, VideoGrant};
    use std::time::UNIX_EPOCH;

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mint(key: &str, secret: &str, identity: &str, ttl: u64) -> String {
        AccessToken::new(
            key,
            secret,
            AccessTokenOptions {
                identity: identity.into(),
                ttl: Some(Duration::from_secs(ttl)),
                ..AccessTokenOptions::default()
            },
        )
        .to_jwt_at(at(NOW))
        .unwrap()
    }

    #[test]
    fn accepts_own_tokens() {
        let jwt = mint("key", "secret", "alice", 60);
        let claims = TokenVerifier::new("key", "secret")
            .verify_at(&jwt, at(NOW + 1))
            .unwrap();
        assert_eq!(claims.identity(), "alice");
        assert_eq!(claims.iss, "key");
        assert_eq!((claims.nbf, claims.exp), (NOW, NOW + 60));
    }

    #[test]
    fn leeway_applies_to_both_ends() {
        let jwt = mint("key", "secret", "alice", 60);
        let verifier = TokenVerifier::new("key", "secret");
        assert!(verifier.verify_at(&jwt, at(NOW + 60 + 10)).is_ok());
        assert_eq!(
            verifier.verify_at(&jwt, at(NOW + 60 + 11)),
            Err(AuthError::Expired { exp: NOW + 60 })
        );
        assert!(verifier.verify_at(&jwt, at(NOW - 10)).is_ok());
        assert_eq!(
            verifier.verify_at(&jwt, at(NOW - 11)),
            Err(AuthError::NotYetValid { nbf: NOW })
        );

        let strict = verifier.clone().with_leeway(Duration::ZERO);
        assert!(strict.verify_at(&jwt, at(NOW + 60)).is_ok());
        assert!(strict.verify_at(&jwt, at(NOW + 61)).is_err());
        assert!(strict.verify_at(&jwt, at(NOW - 1)).is_err());
    }

    #[test]
    fn key_rotation() {
        let verifier = TokenVerifier::from_keys([
            ("old".to_owned(), "old-secret".to_owned()),
            ("new".to_owned(), "new-secret".to_owned()),
        ]);
        for (key, secret) in [("old", "old-secret"), ("new", "new-secret")] {
            let jwt = mint(key, secret, "alice", 60);
            assert!(verifier.verify_at(&jwt, at(NOW)).is_ok());
        }
        assert_eq!(verifier.secret_for("new"), Some("new-secret"));
        assert_eq!(verifier.secret_for("gone"), None);
        let crossed = mint("old", "new-secret", "alice", 60);
        assert_eq!(
            verifier.verify_at(&crossed, at(NOW)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn empty_configured_secret_never_verifies() {
        let verifier = TokenVerifier::new("key", "");
        let jwt = mint("key", "secret", "alice", 60);
        assert_eq!(
            verifier.verify_at(&jwt, at(NOW)),
            Err(AuthError::EmptySecret)
        );
    }

    #[test]
    fn identity_requirement_can_be_lifted() {
        let mut token = AccessToken::new("key", "secret", AccessTokenOptions::default());
        token.add_grant(VideoGrant {
            room_list: true,
            ..VideoGrant::default()
        });
        let jwt = token.to_jwt_at(at(NOW)).unwrap();
        let verifier = TokenVerifier::new("key", "secret");
        assert_eq!(
            verifier.verify_at(&jwt, at(NOW)),
            Err(AuthError::MissingIdentity)
        );
        let claims = verifier
            .with_identity_required(false)
            .verify_at(&jwt, at(NOW))
            .unwrap();
        assert!(claims.video.room_list);
    }

    #[test]
    fn shape_errors() {
        for bad in ["", ".", "..", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b."] {
            assert!(
                matches!(
                    TokenVerifier::new("k", "s").verify_at(bad, at(NOW)),
                    Err(AuthError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_lists_keys_not_secrets() {
        let verifier = TokenVerifier::from_keys([
            ("k2".to_owned(), "hidden-2".to_owned()),
            ("k1".to_owned(), "hidden-1".to_owned()),
        ]);
        let shown = format!("{verifier:?}");
        assert!(shown.contains(r#"["k1", "k2"]"#), "{shown}");
        assert!(!shown.contains("hidden"), "{shown}");
    }
}
