//! Minting access tokens: [`AccessToken`], its options and participant
//! [`Metadata`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::grants::{Claims, VideoGrant};
use crate::ttl::DEFAULT_TTL;

/// Latest `exp` we write: JavaScript's `Number.MAX_SAFE_INTEGER`, so that
/// every JWT library (Go's int64, JS numbers) reads it exactly.
const MAX_EXP: u64 = (1 << 53) - 1;

/// Who a token is for, as given to [`AccessToken::new`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AccessTokenOptions {
    /// The participant identity, written to `sub` (and `jti`, as LiveKit
    /// does). Required for tokens that grant `roomJoin`.
    pub identity: String,
    /// Display name, written to `name`.
    pub name: Option<String>,
    /// Participant metadata, written to `metadata` as a string.
    pub metadata: Option<Metadata>,
    /// Lifetime of minted tokens; `None` means [`DEFAULT_TTL`] (6 hours).
    pub ttl: Option<Duration>,
}

/// Participant metadata: a string kept as is, or a JSON value that is
/// JSON-encoded into the token's `metadata` string claim.
///
/// This mirrors the Node server, whose `AccessToken` accepted
/// `metadata: { role: 'host' }` as well as a string. Deserializes from either
/// a JSON string ([`Metadata::Text`]) or any other JSON value
/// ([`Metadata::Json`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metadata {
    /// A string, used as the claim unchanged.
    Text(String),
    /// A JSON value, encoded into the claim (see
    /// [`into_claim_string`](Metadata::into_claim_string)).
    Json(serde_json::Value),
}

impl Metadata {
    /// The string written to the `metadata` claim.
    ///
    /// [`Text`](Metadata::Text) and a JSON string are kept as they are, JSON
    /// `null` becomes `""` (no metadata), and objects, arrays, numbers and
    /// booleans are JSON-encoded: `{"role":"host"}`.
    pub fn into_claim_string(self) -> String {
        match self {
            Metadata::Text(text) | Metadata::Json(serde_json::Value::String(text)) => text,
            Metadata::Json(serde_json::Value::Null) => String::new(),
            Metadata::Json(value) => value.to_string(),
        }
    }
}

impl From<String> for Metadata {
    fn from(text: String) -> Self {
        Metadata::Text(text)
    }
}

impl From<&str> for Metadata {
    fn from(text: &str) -> Self {
        Metadata::Text(text.to_owned())
    }
}

impl From<serde_json::Value> for Metadata {
    fn from(value: serde_json::Value) -> Self {
        Metadata::Json(value)
    }
}

/// A builder for signed access tokens (HS256 JWTs in LiveKit's layout).
///
/// Create it with the API key and secret and the participant's options, set
/// the permissions with [`add_grant`](AccessToken::add_grant), then call
/// [`to_jwt`](AccessToken::to_jwt). Each call to `to_jwt` mints a fresh token
/// valid from now for the configured lifetime.
///
/// Its `Debug` output never shows the API secret.
///
/// ```
/// use pulsewave_auth::{AccessToken, AccessTokenOptions, VideoGrant};
///
/// let mut token = AccessToken::new("APIkey", "secret", AccessTokenOptions {
///     identity: "user-123".into(),
///     name: Some("John Doe".into()),
///     metadata: Some(serde_json::json!({ "role": "host" }).into()),
///     ..Default::default()
/// });
/// token.add_grant(VideoGrant {
///     room: Some("room-name".into()),
///     room_join: true,
///     can_publish: Some(true),
///     ..Default::default()
/// });
/// let jwt = token.to_jwt()?;
/// assert_eq!(jwt.split('.').count(), 3);
/// # Ok::<(), pulsewave_auth::AuthError>(())
/// ```
#[derive(Clone)]
pub struct AccessToken {
    api_key: String,
    api_secret: String,
    identity: String,
    name: String,
    metadata: String,
    ttl: Duration,
    grant: VideoGrant,
    attributes: std::collections::BTreeMap<String, String>,
}

impl AccessToken {
    /// Starts a token signed with `api_secret` and issued by `api_key`.
    ///
    /// An empty secret is accepted here and reported by
    /// [`to_jwt`](AccessToken::to_jwt) as [`AuthError::EmptySecret`].
    pub fn new(
        api_key: impl Into<String>,
        api_secret: impl Into<String>,
        options: AccessTokenOptions,
    ) -> Self {
        AccessToken {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            identity: options.identity,
            name: options.name.unwrap_or_default(),
            metadata: options
                .metadata
                .map(Metadata::into_claim_string)
                .unwrap_or_default(),
            ttl: options.ttl.unwrap_or(DEFAULT_TTL),
            grant: VideoGrant::default(),
            attributes: Default::default(),
        }
    }

    /// A token for the same identity, name, metadata and grant as `claims`,
    /// signed with `api_secret` and issued by `claims.iss`: what a server
    /// sends a participant to refresh its token (LiveKit's `refresh_token`).
    /// The lifetime is [`DEFAULT_TTL`] until [`set_ttl`](AccessToken::set_ttl).
    ///
    /// ```
    /// use pulsewave_auth::{AccessToken, AccessTokenOptions, TokenVerifier, VideoGrant};
    /// use std::time::Duration;
    ///
    /// let mut t = AccessToken::new("key", "secret", AccessTokenOptions {
    ///     identity: "alice".into(), ..Default::default() });
    /// t.add_grant(VideoGrant { room: Some("r".into()), room_join: true, ..Default::default() });
    /// let claims = TokenVerifier::new("key", "secret").verify(&t.to_jwt()?)?;
    /// let mut again = AccessToken::from_claims(&claims, "secret");
    /// again.set_ttl(Duration::from_secs(600));
    /// let renewed = TokenVerifier::new("key", "secret").verify(&again.to_jwt()?)?;
    /// assert_eq!((renewed.sub.as_str(), &renewed.video), ("alice", &claims.video));
    /// # Ok::<(), pulsewave_auth::AuthError>(())
    /// ```
    pub fn from_claims(claims: &Claims, api_secret: impl Into<String>) -> Self {
        AccessToken {
            api_key: claims.iss.clone(),
            api_secret: api_secret.into(),
            identity: claims.sub.clone(),
            name: claims.name.clone(),
            metadata: claims.metadata.clone(),
            ttl: DEFAULT_TTL,
            grant: claims.video.clone(),
            attributes: claims.attributes.clone(),
        }
    }

    /// Sets the participant attributes the token carries.
    pub fn set_attributes(
        &mut self,
        attributes: std::collections::BTreeMap<String, String>,
    ) -> &mut Self {
        self.attributes = attributes;
        self
    }

    /// Sets the token's room permissions, replacing any set before.
    pub fn add_grant(&mut self, grant: VideoGrant) -> &mut Self {
        self.grant = grant;
        self
    }

    /// Sets how long minted tokens stay valid (whole seconds are used).
    pub fn set_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.ttl = ttl;
        self
    }

    /// The participant identity the token is for.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The room permissions the token will carry.
    pub fn grant(&self) -> &VideoGrant {
        &self.grant
    }

    /// How long minted tokens stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The claims a token minted at `now` carries: `nbf` = `now` and
    /// `exp` = `now` + TTL, in unix seconds (times before the epoch count as
    /// 0, and `exp` saturates rather than overflowing).
    pub fn claims_at(&self, now: SystemTime) -> Claims {
        let nbf = unix_seconds(now);
        Claims {
            iss: self.api_key.clone(),
            sub: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            nbf,
            exp: nbf.saturating_add(self.ttl.as_secs()),
            jti: self.identity.clone(),
            video: self.grant.clone(),
            attributes: self.attributes.clone(),
        }
    }

    /// Mints a signed token valid from now for the configured lifetime.
    ///
    /// # Errors
    ///
    /// As [`to_jwt_at`](AccessToken::to_jwt_at).
    pub fn to_jwt(&self) -> Result<String, AuthError> {
        self.to_jwt_at(SystemTime::now())
    }

    /// Mints a signed token as of `now`: `nbf` = `now`, `exp` = `now` + TTL.
    ///
    /// # Errors
    ///
    /// * [`AuthError::EmptySecret`] if the API secret is empty;
    /// * [`AuthError::MissingIssuer`] if the API key is empty;
    /// * [`AuthError::MissingIdentity`] if the grant has `room_join` but the
    ///   identity is empty (LiveKit's SDKs refuse this too);
    /// * [`AuthError::InvalidTtl`] if the lifetime is under one second or
    ///   `exp` would be absurdly far in the future;
    /// * [`AuthError::Encoding`] if signing fails.
    pub fn to_jwt_at(&self, now: SystemTime) -> Result<String, AuthError> {
        if self.api_secret.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        if self.api_key.is_empty() {
            return Err(AuthError::MissingIssuer);
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(AuthError::InvalidTtl(format!(
                "{:?} is shorter than one second",
                self.ttl
            )));
        }
        if self.grant.room_join && self.identity.is_empty() {
            return Err(AuthError::MissingIdentity);
        }
        let claims = self.claims_at(now);
        if claims.exp > MAX_EXP {
            return Err(AuthError::InvalidTtl(format!(
                "a lifetime of {} seconds puts the expiry beyond {MAX_EXP}",
                self.ttl.as_secs()
            )));
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.api_secret.as_bytes()),
        )
        .map_err(|e| AuthError::Encoding(e.to_string()))
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .field("ttl", &self.ttl)
            .field("grant", &self.grant)
            .finish()
    }
}

/// Whole seconds since the unix epoch; 0 for earlier times.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn options(identity: &str) -> AccessTokenOptions {
        AccessTokenOptions {
            identity: identity.into(),
            ..AccessTokenOptions::default()
        }
    }

    #[test]
    fn metadata_conversions() {
        assert_eq!(Metadata::from("plain").into_claim_string(), "plain");
        assert_eq!(
            Metadata::from(String::from("{\"a\":1}")).into_claim_string(),
            "{\"a\":1}"
        );
        assert_eq!(
            Metadata::from(json!({"role": "host"})).into_claim_string(),
            r#"{"role":"host"}"#
        );
        assert_eq!(Metadata::from(json!([1, 2])).into_claim_string(), "[1,2]");
        assert_eq!(Metadata::from(json!(42)).into_claim_string(), "42");
        assert_eq!(Metadata::from(json!(true)).into_claim_string(), "true");
        assert_eq!(Metadata::from(json!("text")).into_claim_string(), "text");
        assert_eq!(Metadata::from(json!(null)).into_claim_string(), "");
    }

    #[test]
    fn metadata_deserializes_from_string_or_json() {
        let text: Metadata = serde_json::from_value(json!("hi")).unwrap();
        assert_eq!(text, Metadata::Text("hi".into()));
        let object: Metadata = serde_json::from_value(json!({"role": "host"})).unwrap();
        assert_eq!(object, Metadata::Json(json!({"role": "host"})));
    }

    #[test]
    fn claims_at_fills_every_claim() {
        let mut token = AccessToken::new(
            "key",
            "secret",
            AccessTokenOptions {
                identity: "user-123".into(),
                name: Some("John Doe".into()),
                metadata: Some(json!({"role": "host"}).into()),
                ttl: Some(Duration::from_secs(60)),
            },
        );
        let grant = VideoGrant {
            room: Some("room-name".into()),
            room_join: true,
            ..VideoGrant::default()
        };
        token.add_grant(grant.clone());
        let claims = token.claims_at(at(NOW));
        assert_eq!(
            claims,
            Claims {
                iss: "key".into(),
                sub: "user-123".into(),
                name: "John Doe".into(),
                metadata: r#"{"role":"host"}"#.into(),
                nbf: NOW,
                exp: NOW + 60,
                jti: "user-123".into(),
                video: grant,
                attributes: Default::default(),
            }
        );
    }

    #[test]
    fn default_ttl_is_six_hours_and_set_ttl_overrides() {
        let mut token = AccessToken::new("key", "secret", options("id"));
        assert_eq!(token.ttl(), DEFAULT_TTL);
        assert_eq!(token.claims_at(at(NOW)).exp, NOW + 6 * 3600);
        token.set_ttl(Duration::from_secs(30));
        assert_eq!(token.claims_at(at(NOW)).exp, NOW + 30);
    }

    #[test]
    fn add_grant_replaces() {
        let mut token = AccessToken::new("key", "secret", options("id"));
        token
            .add_grant(VideoGrant {
                room_admin: true,
                ..VideoGrant::default()
            })
            .add_grant(VideoGrant {
                room_list: true,
                ..VideoGrant::default()
            });
        assert!(!token.grant().room_admin);
        assert!(token.grant().room_list);
    }

    #[test]
    fn refuses_to_mint_unusable_tokens() {
        let token = AccessToken::new("key", "", options("id"));
        assert_eq!(token.to_jwt(), Err(AuthError::EmptySecret));

        let token = AccessToken::new("", "secret", options("id"));
        assert_eq!(token.to_jwt(), Err(AuthError::MissingIssuer));

        let mut token = AccessToken::new("key", "secret", options(""));
        token.add_grant(VideoGrant {
            room_join: true,
            ..VideoGrant::default()
        });
        assert_eq!(token.to_jwt(), Err(AuthError::MissingIdentity));

        let mut token = AccessToken::new("key", "secret", options("id"));
        token.set_ttl(Duration::from_millis(500));
        assert!(matches!(token.to_jwt(), Err(AuthError::InvalidTtl(_))));
        token.set_ttl(Duration::from_secs(u64::MAX));
        assert!(matches!(token.to_jwt(), Err(AuthError::InvalidTtl(_))));
        assert_eq!(token.claims_at(at(NOW)).exp, u64::MAX);
    }

    #[test]
    fn identityless_admin_tokens_can_be_minted() {
        let mut token = AccessToken::new("key", "secret", options(""));
        token.add_grant(VideoGrant {
            room_create: true,
            ..VideoGrant::default()
        });
        assert!(token.to_jwt().is_ok());
    }

    #[test]
    fn times_before_epoch_count_as_zero() {
        let token = AccessToken::new("key", "secret", options("id"));
        let claims = token.claims_at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(claims.nbf, 0);
        assert_eq!(claims.exp, DEFAULT_TTL.as_secs());
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = AccessToken::new("key", "super-secret-value", options("id"));
        let shown = format!("{token:?}");
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(shown.contains("key"), "{shown}");
    }
}
