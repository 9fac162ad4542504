//! Token lifetimes: the defaults and the `JWT_EXPIRES_IN` parser.

use std::time::Duration;

use crate::error::AuthError;

/// Lifetime of a token when none is given: 6 hours, as in LiveKit's SDKs.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// Clock skew tolerated by [`TokenVerifier`](crate::TokenVerifier) on `exp`
/// and `nbf` unless changed with
/// [`with_leeway`](crate::TokenVerifier::with_leeway): 10 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);

/// Parses a token lifetime as written in a `JWT_EXPIRES_IN` setting.
///
/// Accepted forms, as with the `expiresIn` option of the Node `jsonwebtoken`
/// package:
///
/// * a number with a unit: `"90s"`, `"30m"`, `"24h"`, `"7d"`, `"2w"`,
///   `"1y"`, with or without a space (`"2 days"`, `"5 minutes"`, `"1.5h"`);
/// * several of those in a row: `"1h30m"`, `"1h 30m"`;
/// * a bare whole number, meaning seconds: `"3600"`.
///
/// Units are those of the [`humantime`] crate and are matched without regard
/// to case (`"24H"` is 24 hours, `"1M"` is one minute as in Node's `ms`).
/// Surrounding whitespace is ignored.
///
/// # Errors
///
/// [`AuthError::InvalidTtl`] for empty or unparseable text, and for
/// lifetimes shorter than one second (including zero), since token times are
/// whole seconds.
///
/// ```
/// use std::time::Duration;
/// use pulsewave_auth::parse_ttl;
///
/// assert_eq!(parse_ttl("24h")?, Duration::from_secs(86_400));
/// assert_eq!(parse_ttl("1h30m")?, Duration::from_secs(5_400));
/// assert_eq!(parse_ttl("3600")?, Duration::from_secs(3_600));
/// assert!(parse_ttl("soon").is_err());
/// # Ok::<(), pulsewave_auth::AuthError>(())
/// ```
pub fn parse_ttl(text: &str) -> Result<Duration, AuthError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(AuthError::InvalidTtl("the lifetime is empty".into()));
    }
    let ttl = if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = trimmed.parse().map_err(|_| {
            AuthError::InvalidTtl(format!("`{}` is too many seconds", shorten(trimmed)))
        })?;
        Duration::from_secs(seconds)
    } else {
        humantime::parse_duration(&trimmed.to_ascii_lowercase()).map_err(|e| {
            AuthError::InvalidTtl(format!(
                "`{}` is not a duration such as \"24h\", \"30m\", \"7d\" or \"3600\" ({e})",
                shorten(trimmed)
            ))
        })?
    };
    if ttl < Duration::from_secs(1) {
        return Err(AuthError::InvalidTtl(format!(
            "`{}` is shorter than one second",
            shorten(trimmed)
        )));
    }
    Ok(ttl)
}

/// Keeps error messages short when the input is long.
fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Result<Duration, AuthError> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn units() {
        assert_eq!(parse_ttl("90s"), secs(90));
        assert_eq!(parse_ttl("30m"), secs(30 * 60));
        assert_eq!(parse_ttl("24h"), secs(24 * 3600));
        assert_eq!(parse_ttl("7d"), secs(7 * 86_400));
        assert_eq!(parse_ttl("2w"), secs(14 * 86_400));
    }

    #[test]
    fn compound_and_spelled_out() {
        assert_eq!(parse_ttl("1h30m"), secs(5_400));
        assert_eq!(parse_ttl("1h 30m"), secs(5_400));
        assert_eq!(parse_ttl("2 days"), secs(2 * 86_400));
        assert_eq!(parse_ttl("1 day"), secs(86_400));
        assert_eq!(parse_ttl("5 minutes"), secs(300));
        assert_eq!(parse_ttl("2 hours"), secs(7_200));
        assert_eq!(parse_ttl("1.5h"), secs(5_400));
    }

    #[test]
    fn bare_number_is_seconds() {
        assert_eq!(parse_ttl("3600"), secs(3_600));
        assert_eq!(parse_ttl("1"), secs(1));
        assert_eq!(parse_ttl(" 60 "), secs(60));
    }

    #[test]
    fn case_and_whitespace() {
        assert_eq!(parse_ttl("24H"), secs(24 * 3600));
        assert_eq!(parse_ttl("  7d\n"), secs(7 * 86_400));
    }

    #[test]
    fn rejects_zero_empty_and_garbage() {
        for bad in [
            "",
            "   ",
            "0",
            "0s",
            "0h",
            "500ms",
            "abc",
            "h",
            "-1h",
            "1x",
            "24 hours later",
            "1e3",
            "99999999999999999999999",
            "99999999999999999999y",
        ] {
            assert!(
                matches!(parse_ttl(bad), Err(AuthError::InvalidTtl(_))),
                "{bad:?} should be rejected, got {:?}",
                parse_ttl(bad)
            );
        }
    }

    #[test]
    fn error_message_quotes_input() {
        let err = parse_ttl("soon").unwrap_err();
        assert!(err.to_string().contains("`soon`"), "{err}");
        let err = parse_ttl(&"x".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
