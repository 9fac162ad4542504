//! The error type shared by minting, verification and TTL parsing.

/// Longest API key (in characters) quoted back in an [`AuthError::UnknownKey`].
const MAX_QUOTED_KEY_CHARS: usize = 64;

/// Everything that can go wrong when minting, verifying or checking a token.
///
/// Messages never contain an API secret. Values quoted from a token (such as
/// an unknown API key) are shortened and have control characters escaped, so
/// the messages are safe to log.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The token is not a usable JWT: wrong shape, bad base64url, bad JSON,
    /// claims of the wrong type, a missing `exp`, or a signing algorithm
    /// other than HS256 (`none` and asymmetric algorithms are rejected).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's `iss` claim names an API key this verifier does not know.
    #[error("unknown API key `{0}`")]
    UnknownKey(String),
    /// The HMAC signature does not match the secret of the token's API key:
    /// the token was signed with another secret or altered after signing.
    #[error("signature does not match")]
    BadSignature,
    /// The token's `exp` (unix seconds) is in the past, beyond the leeway.
    #[error("token expired at {exp}")]
    Expired {
        /// The token's `exp` claim, in seconds since the unix epoch.
        exp: u64,
    },
    /// The token's `nbf` (unix seconds) is in the future, beyond the leeway.
    #[error("token is not valid before {nbf}")]
    NotYetValid {
        /// The token's `nbf` claim, in seconds since the unix epoch.
        nbf: u64,
    },
    /// The token has no identity: its `sub` claim is missing or empty (or,
    /// when minting, a token granting `roomJoin` was given no identity).
    #[error("token has no identity (`sub` claim is missing or empty)")]
    MissingIdentity,
    /// The token has no issuer: its `iss` claim (the API key) is missing or
    /// empty (or, when minting, the API key is empty).
    #[error("token has no issuer (`iss` claim with the API key is missing or empty)")]
    MissingIssuer,
    /// The token does not carry a grant the caller requires, named by its
    /// LiveKit field name, for example `MissingGrant("roomJoin")`.
    #[error("token does not grant `{0}`")]
    MissingGrant(&'static str),
    /// The token grants joining a different room than the one requested.
    #[error("{}", room_mismatch_message(granted, requested))]
    RoomMismatch {
        /// The room named in the token's `video.room` grant (empty if none).
        granted: String,
        /// The room the caller asked to join.
        requested: String,
    },
    /// A token lifetime could not be parsed or is out of range.
    #[error("invalid token lifetime: {0}")]
    InvalidTtl(String),
    /// The token could not be encoded or signed.
    #[error("could not encode token: {0}")]
    Encoding(String),
    /// The API secret is empty, so nothing can be signed or verified with it.
    #[error("API secret is empty")]
    EmptySecret,
}

impl AuthError {
    /// Builds an [`AuthError::UnknownKey`] that is safe to display: long keys
    /// are shortened and control characters escaped.
    pub(crate) fn unknown_key(key: &str) -> Self {
        let mut quoted = String::new();
        for (index, c) in key.chars().enumerate() {
            if index == MAX_QUOTED_KEY_CHARS {
                quoted.push('…');
                break;
            }
            if c.is_control() {
                quoted.extend(c.escape_default());
            } else {
                quoted.push(c);
            }
        }
        AuthError::UnknownKey(quoted)
    }
}

fn room_mismatch_message(granted: &str, requested: &str) -> String {
    if granted.is_empty() {
        format!("token does not name a room, but room `{requested}` was requested")
    } else {
        format!("token grants room `{granted}`, but room `{requested}` was requested")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_is_wrong() {
        assert_eq!(
            AuthError::Expired { exp: 1_700_000_000 }.to_string(),
            "token expired at 1700000000"
        );
        assert_eq!(
            AuthError::BadSignature.to_string(),
            "signature does not match"
        );
        assert_eq!(
            AuthError::unknown_key("x").to_string(),
            "unknown API key `x`"
        );
        assert_eq!(
            AuthError::MissingGrant("roomJoin").to_string(),
            "token does not grant `roomJoin`"
        );
        assert_eq!(
            AuthError::RoomMismatch {
                granted: "a".into(),
                requested: "b".into()
            }
            .to_string(),
            "token grants room `a`, but room `b` was requested"
        );
        assert_eq!(
            AuthError::RoomMismatch {
                granted: String::new(),
                requested: "b".into()
            }
            .to_string(),
            "token does not name a room, but room `b` was requested"
        );
    }

    #[test]
    fn unknown_key_is_shortened_and_escaped() {
        let long = "k".repeat(1000);
        let AuthError::UnknownKey(shown) = AuthError::unknown_key(&long) else {
            panic!("wrong variant");
        };
        assert_eq!(shown.chars().count(), MAX_QUOTED_KEY_CHARS + 1);

        let AuthError::UnknownKey(shown) = AuthError::unknown_key("a\nb") else {
            panic!("wrong variant");
        };
        assert_eq!(shown, "a\\nb");
    }
}
