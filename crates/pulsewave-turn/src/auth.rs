//! Short-lived TURN credentials (the "TURN REST API" scheme, as coturn's
//! `use-auth-secret`): username `<expiry unix seconds>:<user>`, password
//! `base64(HMAC-SHA1(secret, username))`. The server keeps no password
//! list: it recomputes the password from the username and refuses an
//! expired one.

use aws_lc_rs::hmac;
use base64::Engine as _;
use md5::{Digest as _, Md5};

/// Longest username accepted (RFC 8489: under 509 bytes).
pub const MAX_USERNAME_LEN: usize = 508;

/// Longest user part [`TurnSecret::issue`] puts in a username as is.
pub const MAX_USER_LEN: usize = 128;

/// The secret TURN credentials are derived from.
#[derive(Clone)]
pub struct TurnSecret {
    key: hmac::Key,
    nonce_key: hmac::Key,
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

impl TurnSecret {
    /// A secret from raw bytes (for example a `static-auth-secret` shared
    /// with an external coturn).
    pub fn new(secret: &[u8]) -> Self {
        let nonce_seed = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            b"pulsewave-turn nonce v1",
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, nonce_seed.as_ref()),
        }
    }

    /// The TURN secret of a server whose token secret is `api_secret`:
    /// HMAC-SHA256(api_secret, "pulsewave-turn v1"), so the token secret
    /// itself never signs TURN credentials and a leaked TURN password says
    /// nothing about it.
    pub fn derive_from_api_secret(api_secret: &str) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, api_secret.as_bytes()),
            b"pulsewave-turn v1",
        );
        Self::new(derived.as_ref())
    }

    /// Credentials for `user` valid until `expires_unix` (seconds). A
    /// user longer than [`MAX_USER_LEN`] bytes is replaced by a hash of
    /// it (`h:<base64url of 16 bytes of SHA-256>`), so the username stays
    /// within STUN's limit and still counts per user.
    pub fn issue(&self, user: &str, expires_unix: u64) -> Credentials {
        let hashed;
        let user = if user.len() > MAX_USER_LEN {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
            hashed = format!(
                "h:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
            );
            hashed.as_str()
        } else {
            user
        };
        let username = format!("{expires_unix}:{user}");
        let password = self.password(&username);
        Credentials { username, password }
    }

    /// The password of a username.
    pub fn password(&self, username: &str) -> String {
        let tag = hmac::sign(&self.key, username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// Checks a username's form and expiry; returns the user part.
    pub(crate) fn check_username<'a>(
        &self,
        username: &'a str,
        now_unix: u64,
    ) -> Result<&'a str, CredentialError> {
        if username.len() > MAX_USERNAME_LEN {
            return Err(CredentialError::Malformed);
        }
        let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
        if user.is_empty() {
            return Err(CredentialError::Malformed);
        }
        if expiry < now_unix {
            return Err(CredentialError::Expired);
        }
        Ok(user)
    }

    /// A nonce bound to `client` and valid until `expires_unix`:
    /// `<expiry hex>.<tag>`, stateless.
    pub(crate) fn nonce(&self, client: &[u8], expires_unix: u64) -> String {
        let tag = self.nonce_tag(client, expires_unix);
        format!("{expires_unix:x}.{tag}")
    }

    fn nonce_tag(&self, client: &[u8], expires_unix: u64) -> String {
        let mut ctx = hmac::Context::with_key(&self.nonce_key);
        ctx.update(&expires_unix.to_be_bytes());
        ctx.update(client);
        let tag = ctx.sign();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12])
    }

    /// Whether a nonce is ours, for `client`, and not stale.
    pub(crate) fn check_nonce(&self, nonce: &str, client: &[u8], now_unix: u64) -> NonceCheck {
        let Some((expiry, tag)) = nonce.split_once('.') else {
            return NonceCheck::Invalid;
        };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return NonceCheck::Invalid;
        };
        let expected = self.nonce_tag(client, expiry);
        // Both are public-length base64; compare in constant time anyway.
        if expected.len() != tag.len()
            || expected
                .bytes()
                .zip(tag.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return NonceCheck::Invalid;
        }
        if expiry < now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

/// Nonce check outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    Stale,
    Invalid,
}

/// Why a username is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CredentialError {
    Malformed,
    Expired,
}

/// A TURN username and password, as handed to a client in `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `<expiry unix seconds>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
}

/// The long-term credential key: MD5(username ":" realm ":" password)
/// (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials() {
        let s = TurnSecret::new(b"north");
        let c = s.issue("alice", 1000);
        assert_eq!(c.username, "1000:alice");
        assert_eq!(s.password(&c.username), c.password);
        // coturn's documented example shape: base64 of a 20-byte HMAC.
        assert_eq!(c.password.len(), 28);
        assert_eq!(s.check_username(&c.username, 999), Ok("alice"));
        assert_eq!(s.check_username(&c.username, 1000), Ok("alice"));
        assert_eq!(
            s.check_username(&c.username, 1001),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            s.check_username("alice", 0),
            Err(CredentialError::Malformed)
        );
        // Another secret gives another password.
        assert_ne!(TurnSecret::new(b"south").password(&c.username), c.password);
        // A long identity is hashed, and the result is still accepted.
        let long = s.issue(&"x".repeat(1000), 1000);
        assert!(long.username.len() < 64, "{}", long.username);
        assert!(s.check_username(&long.username, 0).is_ok());
        assert_eq!(long, s.issue(&"x".repeat(1000), 1000));
        // A user part may contain colons (identities are free text).
        assert_eq!(s.check_username("5:a:b", 0), Ok("a:b"));
    }

    #[test]
    fn derived_secret_differs_from_api_secret() {
        let d = TurnSecret::derive_from_api_secret("secret");
        assert_ne!(
            d.password("1:a"),
            TurnSecret::new(b"secret").password("1:a")
        );
    }

    #[test]
    fn nonces() {
        let s = TurnSecret::new(b"k");
        let n = s.nonce(b"1.2.3.4", 100);
        assert_eq!(s.check_nonce(&n, b"1.2.3.4", 50), NonceCheck::Valid);
        assert_eq!(s.check_nonce(&n, b"1.2.3.4", 101), NonceCheck::Stale);
        assert_eq!(s.check_nonce(&n, b"5.6.7.8", 50), NonceCheck::Invalid);
        assert_eq!(s.check_nonce("zz", b"1.2.3.4", 50), NonceCheck::Invalid);
        assert_eq!(
            s.check_nonce("64.AAAA", b"1.2.3.4", 50),
            NonceCheck::Invalid
        );
    }

    /// RFC 5769 §2.4 gives the long-term key inputs; the key is MD5 of
    /// "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>:example.org:TheMatrIX"
    /// after SASLprep; here a plain ASCII check against a known MD5.
    #[test]
    fn long_term_key_is_md5() {
        // md5("user:realm:pass")
        let k = long_term_key("user", "realm", "pass");
        assert_eq!(
            k.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "8493fbc53ba582fb4c044c456bdc40eb"
        );
    }
}
