//! H.264 `profile-level-id` handling (RFC 6184 section 8.1), with the
//! semantics of the `h264-profile-level-id` npm package that mediasoup and
//! mediasoup-client use to match H.264 codecs.

use pulsewave_protocol::rtp::{CodecParameters, ParamValue};

/// H.264 profiles this module recognizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// Level 1b, which shares `level_idc` 11 with level 1.1 and is told apart by
/// the constraint-set-3 flag. Every other level is its `level_idc` (10 × the
/// level number).
pub(crate) const LEVEL_1B: u8 = 0;
const LEVEL_1: u8 = 10;
const LEVEL_1_1: u8 = 11;
const LEVEL_3_1: u8 = 31;

/// The level_idc values defined by H.264 (besides 1b).
const KNOWN_LEVELS: [u8; 16] = [
    10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52,
];

/// A parsed `profile-level-id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProfileLevelId {
    pub(crate) profile: Profile,
    pub(crate) level: u8,
}

/// What an absent `profile-level-id` means: WebRTC's historical default,
/// Constrained Baseline level 3.1 (not the RFC's Baseline level 1).
const DEFAULT_PROFILE_LEVEL_ID: ProfileLevelId = ProfileLevelId {
    profile: Profile::ConstrainedBaseline,
    level: LEVEL_3_1,
};

/// `profile_idc`, then a `profile_iop` pattern (`x` = either bit), then the
/// profile. Checked in order; the first hit wins.
const PROFILE_PATTERNS: [(u8, &str, Profile); 9] = [
    (0x42, "x1xx0000", Profile::ConstrainedBaseline),
    (0x4d, "1xxx0000", Profile::ConstrainedBaseline),
    (0x58, "11xx0000", Profile::ConstrainedBaseline),
    (0x42, "x0xx0000", Profile::Baseline),
    (0x58, "10xx0000", Profile::Baseline),
    (0x4d, "0x0x0000", Profile::Main),
    (0x64, "00000000", Profile::High),
    (0x64, "00001100", Profile::ConstrainedHigh),
    (0xf4, "00000000", Profile::PredictiveHigh444),
];

fn iop_matches(pattern: &str, iop: u8) -> bool {
    pattern.bytes().enumerate().all(|(i, c)| {
        let bit = (iop >> (7 - i)) & 1;
        match c {
            b'1' => bit == 1,
            b'0' => bit == 0,
            _ => true,
        }
    })
}

/// Parses a 6-hex-digit `profile-level-id`. `None` for anything that is not
/// a known profile at a known level.
pub(crate) fn parse_profile_level_id(text: &str) -> Option<ProfileLevelId> {
    const CONSTRAINT_SET3_FLAG: u8 = 0x10;
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let numeric = u32::from_str_radix(text, 16).ok()?;
    if numeric == 0 {
        return None;
    }
    let [_, profile_idc, profile_iop, level_idc] = numeric.to_be_bytes();
    let level = if level_idc == LEVEL_1_1 {
        if profile_iop & CONSTRAINT_SET3_FLAG != 0 {
            LEVEL_1B
        } else {
            LEVEL_1_1
        }
    } else if KNOWN_LEVELS.contains(&level_idc) {
        level_idc
    } else {
        return None;
    };
    PROFILE_PATTERNS
        .iter()
        .find(|(idc, iop, _)| *idc == profile_idc && iop_matches(iop, profile_iop))
        .map(|&(_, _, profile)| ProfileLevelId { profile, level })
}

/// The canonical lower-case text of a profile and level; `None` for level 1b
/// with a profile that does not allow it.
pub(crate) fn profile_level_id_to_string(id: ProfileLevelId) -> Option<String> {
    if id.level == LEVEL_1B {
        return match id.profile {
            Profile::ConstrainedBaseline => Some("42f00b".to_owned()),
            Profile::Baseline => Some("42100b".to_owned()),
            Profile::Main => Some("4d100b".to_owned()),
            _ => None,
        };
    }
    let prefix = match id.profile {
        Profile::ConstrainedBaseline => "42e0",
        Profile::Baseline => "4200",
        Profile::Main => "4d00",
        Profile::ConstrainedHigh => "640c",
        Profile::High => "6400",
        Profile::PredictiveHigh444 => "f400",
    };
    Some(format!("{prefix}{:02x}", id.level))
}

/// Whether a parameter value is "falsy" in JavaScript terms (absent, 0, "",
/// false): such a `profile-level-id` counts as absent.
fn is_falsy(value: Option<&ParamValue>) -> bool {
    match value {
        None => true,
        Some(ParamValue::Int(0)) | Some(ParamValue::Bool(false)) => true,
        Some(ParamValue::Str(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// The profile and level a codec's fmtp parameters describe: the default when
/// `profile-level-id` is absent, `None` when it is present but invalid.
///
/// A numeric value is read as its decimal digits (`640032` → `"640032"`), as
/// it was written in the SDP.
pub(crate) fn parse_sdp_profile_level_id(params: &CodecParameters) -> Option<ProfileLevelId> {
    let value = params.get("profile-level-id");
    if is_falsy(value) {
        return Some(DEFAULT_PROFILE_LEVEL_ID);
    }
    match value {
        Some(ParamValue::Str(s)) => parse_profile_level_id(s),
        Some(ParamValue::Int(n)) => parse_profile_level_id(&n.to_string()),
        _ => None,
    }
}

/// Whether both parameter sets name the same (valid) H.264 profile; levels
/// are not compared.
pub(crate) fn is_same_profile(a: &CodecParameters, b: &CodecParameters) -> bool {
    match (parse_sdp_profile_level_id(a), parse_sdp_profile_level_id(b)) {
        (Some(a), Some(b)) => a.profile == b.profile,
        _ => false,
    }
}

fn level_asymmetry_allowed(params: &CodecParameters) -> bool {
    match params.get("level-asymmetry-allowed") {
        Some(ParamValue::Bool(b)) => *b,
        Some(ParamValue::Int(n)) => *n == 1,
        Some(ParamValue::Str(s)) => s == "1",
        None => false,
    }
}

/// `a < b` for levels, with 1b handled as the npm package does. Note that
/// for `b` = 1b it answers "every level except 1 is lower", which differs
/// from libwebrtc; mediasoup's answer levels follow the package.
fn is_less_level(a: u8, b: u8) -> bool {
    if a == LEVEL_1B {
        return b != LEVEL_1 && b != LEVEL_1B;
    }
    if b == LEVEL_1B {
        return a != LEVEL_1;
    }
    a < b
}

fn min_level(a: u8, b: u8) -> u8 {
    if is_less_level(a, b) { a } else { b }
}

/// Why no answer `profile-level-id` could be produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AnswerError;

/// The `profile-level-id` an answerer with `local` parameters puts in its
/// answer to an offer with `remote` parameters.
///
/// `Ok(None)`: neither side has one (or level 1b has no text for the
/// profile), so the answer carries none. `Err`: either is invalid or the
/// profiles differ.
pub(crate) fn profile_level_id_for_answer(
    local: &CodecParameters,
    remote: &CodecParameters,
) -> Result<Option<String>, AnswerError> {
    if is_falsy(local.get("profile-level-id")) && is_falsy(remote.get("profile-level-id")) {
        return Ok(None);
    }
    let local_id = parse_sdp_profile_level_id(local).ok_or(AnswerError)?;
    let remote_id = parse_sdp_profile_level_id(remote).ok_or(AnswerError)?;
    if local_id.profile != remote_id.profile {
        return Err(AnswerError);
    }
    let level = if level_asymmetry_allowed(local) && level_asymmetry_allowed(remote) {
        local_id.level
    } else {
        min_level(local_id.level, remote_id.level)
    };
    Ok(profile_level_id_to_string(ProfileLevelId {
        profile: local_id.profile,
        level,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> CodecParameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ParamValue::from(*v)))
            .collect()
    }

    fn profile(text: &str) -> Option<Profile> {
        parse_profile_level_id(text).map(|p| p.profile)
    }

    fn level(text: &str) -> Option<u8> {
        parse_profile_level_id(text).map(|p| p.level)
    }

    #[test]
    fn parses_levels() {
        assert_eq!(level("42e01f"), Some(31));
        assert_eq!(level("42e00b"), Some(11));
        assert_eq!(level("42f00b"), Some(LEVEL_1B));
        assert_eq!(level("42C02A"), Some(42));
        assert_eq!(level("640c34"), Some(52));
    }

    #[test]
    fn parses_profiles() {
        use Profile::*;
        for (text, expected) in [
            ("42e01f", ConstrainedBaseline),
            ("42C02A", ConstrainedBaseline),
            ("4de01f", ConstrainedBaseline),
            ("58f01f", ConstrainedBaseline),
            ("42a01f", Baseline),
            ("58A01F", Baseline),
            ("4D401f", Main),
            ("4d0032", Main),
            ("64001f", High),
            ("640c1f", ConstrainedHigh),
            ("f4001f", PredictiveHigh444),
        ] {
            assert_eq!(profile(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_values() {
        for text in [
            "", " 42e01f", "4242e01f", "e01f", "gggggg", "42e000", "42e00f", "42e0ff", "42e11f",
            "58601f", "64e01f", "000000", "CHICKEN", "42e0+f",
        ] {
            assert_eq!(parse_profile_level_id(text), None, "{text:?}");
        }
    }

    #[test]
    fn formats_profile_level_ids() {
        use Profile::*;
        let s = |profile, level| profile_level_id_to_string(ProfileLevelId { profile, level });
        assert_eq!(s(ConstrainedBaseline, 31).as_deref(), Some("42e01f"));
        assert_eq!(s(Baseline, 10).as_deref(), Some("42000a"));
        assert_eq!(s(Main, 31).as_deref(), Some("4d001f"));
        assert_eq!(s(ConstrainedHigh, 42).as_deref(), Some("640c2a"));
        assert_eq!(s(High, 42).as_deref(), Some("64002a"));
        assert_eq!(s(ConstrainedBaseline, LEVEL_1B).as_deref(), Some("42f00b"));
        assert_eq!(s(Baseline, LEVEL_1B).as_deref(), Some("42100b"));
        assert_eq!(s(Main, LEVEL_1B).as_deref(), Some("4d100b"));
        assert_eq!(s(High, LEVEL_1B), None);
        assert_eq!(s(ConstrainedHigh, LEVEL_1B), None);
        for (input, canonical) in [
            ("42e01f", "42e01f"),
            ("42E01F", "42e01f"),
            ("4d100b", "4d100b"),
            ("4D100B", "4d100b"),
            ("640c2a", "640c2a"),
            ("640C2A", "640c2a"),
        ] {
            let parsed = parse_profile_level_id(input).unwrap();
            assert_eq!(
                profile_level_id_to_string(parsed).as_deref(),
                Some(canonical)
            );
        }
    }

    #[test]
    fn sdp_default_and_invalid() {
        assert_eq!(
            parse_sdp_profile_level_id(&CodecParameters::new()),
            Some(DEFAULT_PROFILE_LEVEL_ID)
        );
        assert_eq!(
            parse_sdp_profile_level_id(&params(&[("profile-level-id", "640c2a")])),
            Some(ProfileLevelId {
                profile: Profile::ConstrainedHigh,
                level: 42
            })
        );
        assert_eq!(
            parse_sdp_profile_level_id(&params(&[("profile-level-id", "foobar")])),
            None
        );
        let mut numeric = CodecParameters::new();
        numeric.insert("profile-level-id".into(), ParamValue::Int(640032));
        assert_eq!(
            parse_sdp_profile_level_id(&numeric).map(|p| p.profile),
            Some(Profile::High)
        );
    }

    #[test]
    fn same_profile() {
        let p = |v: &str| params(&[("profile-level-id", v)]);
        assert!(is_same_profile(
            &params(&[("foo", "foo")]),
            &params(&[("bar", "bar")])
        ));
        assert!(is_same_profile(&p("42e01f"), &p("42C02A")));
        assert!(is_same_profile(&p("42a01f"), &p("58A01F")));
        assert!(is_same_profile(&p("42e01f"), &CodecParameters::new()));
        assert!(!is_same_profile(&CodecParameters::new(), &p("4d001f")));
        assert!(!is_same_profile(&p("42a01f"), &p("640c1f")));
        assert!(!is_same_profile(&p("42000a"), &p("64002a")));
        assert!(!is_same_profile(&p("CHICKEN"), &p("42e01f")));
    }

    #[test]
    fn answer_levels() {
        let none = CodecParameters::new();
        assert_eq!(profile_level_id_for_answer(&none, &none), Ok(None));
        let low = params(&[("profile-level-id", "42e015")]);
        let high = params(&[("profile-level-id", "42e01f")]);
        assert_eq!(
            profile_level_id_for_answer(&low, &high),
            Ok(Some("42e015".into()))
        );
        assert_eq!(
            profile_level_id_for_answer(&high, &low),
            Ok(Some("42e015".into()))
        );
        let local = params(&[
            ("profile-level-id", "42e01f"),
            ("level-asymmetry-allowed", "1"),
        ]);
        let remote = params(&[
            ("profile-level-id", "42e015"),
            ("level-asymmetry-allowed", "1"),
        ]);
        assert_eq!(
            profile_level_id_for_answer(&local, &remote),
            Ok(Some("42e01f".into()))
        );
        // Profiles differ, or one side is invalid.
        let main = params(&[("profile-level-id", "4d001f")]);
        assert_eq!(profile_level_id_for_answer(&high, &main), Err(AnswerError));
        let bad = params(&[("profile-level-id", "zzzzzz")]);
        assert_eq!(profile_level_id_for_answer(&bad, &high), Err(AnswerError));
        // Level 1b against others, as the npm package compares them.
        assert!(is_less_level(LEVEL_1B, 11));
        assert!(!is_less_level(LEVEL_1B, 10));
        assert!(!is_less_level(10, LEVEL_1B));
        assert!(is_less_level(31, LEVEL_1B));
        assert_eq!(min_level(LEVEL_1B, 31), LEVEL_1B);
    }
}
