//! PulseWave access tokens: mint them, read their grants, verify them.
//!
//! Tokens are HS256 JWTs laid out exactly like LiveKit access tokens, in both
//! directions: tokens minted by LiveKit's server SDKs verify here, and tokens
//! minted here verify in LiveKit. The API key is the issuer (`iss`), the
//! participant identity the subject (`sub`), and room permissions live under
//! `video` as a [`VideoGrant`]. See [`Claims`] for the full layout.
//!
//! * [`AccessToken`] mints tokens (any service can use this crate alone);
//! * [`TokenVerifier`] checks them against one or more API key pairs;
//! * [`parse_ttl`] reads lifetimes such as `JWT_EXPIRES_IN=24h`;
//! * [`sign_webhook`] / [`verify_webhook`] sign and check webhook bodies as
//!   LiveKit does.
//!
//! ```
//! use pulsewave_auth::{AccessToken, AccessTokenOptions, TokenVerifier, VideoGrant};
//!
//! // Mint, as the Node server's `new AccessToken(...)` / `addGrant` / `toJwt` did.
//! let mut token = AccessToken::new("APIkey", "my-secret", AccessTokenOptions {
//!     identity: "user-123".into(),
//!     name: Some("John Doe".into()),
//!     metadata: Some(serde_json::json!({ "role": "host" }).into()),
//!     ..Default::default()
//! });
//! token.add_grant(VideoGrant {
//!     room: Some("room-name".into()),
//!     room_join: true,
//!     can_publish: Some(true),
//!     can_subscribe: Some(true),
//!     can_publish_data: Some(true),
//!     ..Default::default()
//! });
//! let jwt = token.to_jwt()?;
//!
//! // Verify, on the server.
//! let verifier = TokenVerifier::new("APIkey", "my-secret");
//! let claims = verifier.verify(&jwt)?;
//! assert_eq!(claims.identity(), "user-123");
//! assert_eq!(claims.metadata, r#"{"role":"host"}"#);
//! claims.require_room_join("room-name")?;
//! assert!(claims.video.can_publish());
//! # Ok::<(), pulsewave_auth::AuthError>(())
//! ```

mod error;
mod grants;
mod token;
mod ttl;
mod verifier;
mod webhook;

pub use error::AuthError;
pub use grants::{Claims, VideoGrant};
pub use token::{AccessToken, AccessTokenOptions, Metadata};
pub use ttl::{DEFAULT_LEEWAY, DEFAULT_TTL, parse_ttl};
pub use verifier::TokenVerifier;
pub use webhook::{WEBHOOK_TOKEN_TTL, body_sha256, sign_webhook, verify_webhook};
