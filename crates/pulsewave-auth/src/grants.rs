//! The token payload: [`Claims`] and the [`VideoGrant`] permissions, laid out
//! exactly as in LiveKit access tokens.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// Room permissions carried under the `video` claim, with LiveKit's field
/// names (camelCase on the wire) and defaults.
///
/// `can_publish`, `can_subscribe` and `can_publish_data` are optional and mean
/// *allowed* when absent; read them with [`VideoGrant::can_publish`] and
/// friends. Every other permission defaults to `false`. When serialized,
/// `false` flags, `None` and an empty source list are left out, and unknown
/// fields (LiveKit has more) are ignored when deserializing. A JSON `null` is
/// read as the field's default.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    /// The room this grant applies to (`room`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// May join `room` (`roomJoin`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_join: bool,
    /// May create rooms through the server API (`roomCreate`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_create: bool,
    /// May list rooms through the server API (`roomList`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_list: bool,
    /// May administer `room`: remove participants, mute tracks… (`roomAdmin`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_admin: bool,
    /// May start recordings and egress (`roomRecord`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_record: bool,
    /// May publish tracks (`canPublish`); `None` means yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// May subscribe to other participants' tracks (`canSubscribe`); `None`
    /// means yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    /// May send data messages (`canPublishData`); `None` means yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// Track sources that may be published (`canPublishSources`), as
    /// LiveKit's lower-case names: `camera`, `microphone`, `screen_share`,
    /// `screen_share_audio`. Empty means every source.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub can_publish_sources: Vec<String>,
    /// May update its own name and metadata (`canUpdateOwnMetadata`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub can_update_own_metadata: bool,
    /// Is invisible to the other participants (`hidden`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub hidden: bool,
    /// Is a recorder (`recorder`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub recorder: bool,
    /// Is an agent (`agent`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub agent: bool,
    /// May manage ingress (`ingressAdmin`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub ingress_admin: bool,
}

impl VideoGrant {
    /// Whether tracks may be published: `can_publish`, or `true` when absent.
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }

    /// Whether tracks may be subscribed to: `can_subscribe`, or `true` when
    /// absent.
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }

    /// Whether data messages may be sent: `can_publish_data`, or `true` when
    /// absent.
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or(true)
    }

    /// Whether a track from `source` (for example `"camera"`) may be
    /// published.
    ///
    /// As in LiveKit, this is `false` whenever [`can_publish`](Self::can_publish)
    /// is `false`; otherwise an empty `can_publish_sources` allows every
    /// source, and a non-empty one allows only the sources it lists. Names
    /// are compared without regard to ASCII case, `-` and `_`, and
    /// LiveKit's names equal PulseWave's: `screen_share` is `screen`,
    /// `screen_share_audio` is `screen-audio`.
    ///
    /// ```
    /// use pulsewave_auth::VideoGrant;
    /// let g = VideoGrant {
    ///     can_publish_sources: vec!["SCREEN_SHARE".into(), "microphone".into()],
    ///     ..Default::default()
    /// };
    /// assert!(g.can_publish_source("screen"));
    /// assert!(g.can_publish_source("microphone"));
    /// assert!(!g.can_publish_source("screen-audio"));
    /// assert!(!g.can_publish_source("camera"));
    /// ```
    pub fn can_publish_source(&self, source: &str) -> bool {
        if !self.can_publish() {
            return false;
        }
        let wanted = canonical_source(source);
        self.can_publish_sources.is_empty()
            || self
                .can_publish_sources
                .iter()
                .any(|allowed| canonical_source(allowed) == wanted)
    }

    fn is_default(&self) -> bool {
        *self == VideoGrant::default()
    }
}

/// The claims of a PulseWave / LiveKit access token.
///
/// On the wire: `iss` is the API key, `sub` the participant identity, `name`
/// and `metadata` are strings, `nbf` and `exp` are unix seconds, `jti` is set
/// to the identity by LiveKit's SDKs, and `video` holds the [`VideoGrant`].
/// Empty `sub`, `name`, `metadata` and `jti` and an empty grant are left out
/// when serializing; when deserializing they default to empty, `nbf` to 0,
/// `exp` is required, numeric dates may be integers or floats, and unknown
/// claims (`kind`, `sip`, `sha256`, `roomConfig`…) are ignored.
/// `attributes` (LiveKit's participant attributes, a string map) is read
/// and written, left out when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the API key whose secret signed the token.
    #[serde(default, deserialize_with = "null_as_default")]
    pub iss: String,
    /// Subject: the participant identity.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub sub: String,
    /// Display name (`""` when not set).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub name: String,
    /// Participant metadata, an opaque string (often JSON); `""` when not set.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub metadata: String,
    /// Not before, in seconds since the unix epoch (0 when absent).
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: u64,
    /// Expiry, in seconds since the unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Token id; LiveKit's SDKs set it to the identity (`""` when not set).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub jti: String,
    /// Room permissions.
    #[serde(
        default,
        skip_serializing_if = "VideoGrant::is_default",
        deserialize_with = "grant_object"
    )]
    pub video: VideoGrant,
    /// Participant attributes (`attributes`), empty when not set.
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Claims {
    /// The participant identity (the `sub` claim).
    pub fn identity(&self) -> &str {
        &self.sub
    }

    /// Checks that the token lets its holder join `room`.
    ///
    /// # Errors
    ///
    /// [`AuthError::MissingGrant`]`("roomJoin")` if `video.roomJoin` is not
    /// set, and [`AuthError::RoomMismatch`] if `video.room` is absent or names
    /// another room.
    pub fn require_room_join(&self, room: &str) -> Result<(), AuthError> {
        if !self.video.room_join {
            return Err(AuthError::MissingGrant("roomJoin"));
        }
        match self.video.room.as_deref() {
            Some(granted) if granted == room => Ok(()),
            granted => Err(AuthError::RoomMismatch {
                granted: granted.unwrap_or_default().to_owned(),
                requested: room.to_owned(),
            }),
        }
    }
}

/// A track source name in one spelling: lower case, `_` for `-`, and
/// LiveKit's `screen_share` / `screen_share_audio` for PulseWave's `screen` /
/// `screen-audio`.
fn canonical_source(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase().replace('-', "_");
    match name.as_str() {
        "screen" => "screen_share".to_owned(),
        "screen_audio" => "screen_share_audio".to_owned(),
        _ => name,
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Reads a JSON `null` as the type's default, as Go's JSON decoding does.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads the `video` claim, which must be a JSON object (or `null`); serde
/// would otherwise also accept a positional array for a struct.
fn grant_object<'de, D>(deserializer: D) -> Result<VideoGrant, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)? {
        None => Ok(VideoGrant::default()),
        Some(map) => {
            VideoGrant::deserialize(serde_json::Value::Object(map)).map_err(de::Error::custom)
        }
    }
}

/// Reads a JWT NumericDate: a non-negative integer or float of unix seconds
/// (fractions are dropped).
fn numeric_date<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    struct NumericDate;

    impl Visitor<'_> for NumericDate {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds since the unix epoch")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 as f64; anything at or above it does not fit in u64.
            const LIMIT: f64 = 18_446_744_073_709_551_616.0;
            if (0.0..LIMIT).contains(&v) {
                // In range and non-negative: the cast only drops the fraction.
                Ok(v.trunc() as u64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }

    deserializer.deserialize_any(NumericDate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims_from(value: serde_json::Value) -> Result<Claims, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn optional_permissions_default_to_true() {
        let grant = VideoGrant::default();
        assert!(grant.can_publish());
        assert!(grant.can_subscribe());
        assert!(grant.can_publish_data());
        assert!(grant.can_publish_source("camera"));
        assert!(!grant.room_join && !grant.room_admin && !grant.hidden);

        let denied = VideoGrant {
            can_publish: Some(false),
            can_subscribe: Some(false),
            can_publish_data: Some(false),
            ..VideoGrant::default()
        };
        assert!(!denied.can_publish());
        assert!(!denied.can_subscribe());
        assert!(!denied.can_publish_data());
        assert!(!denied.can_publish_source("camera"));
    }

    #[test]
    fn publish_sources_restrict_when_listed() {
        let grant = VideoGrant {
            can_publish_sources: vec!["camera".into(), "microphone".into()],
            ..VideoGrant::default()
        };
        assert!(grant.can_publish_source("camera"));
        assert!(grant.can_publish_source("MICROPHONE"));
        assert!(!grant.can_publish_source("screen_share"));
    }

    #[test]
    fn grant_serializes_camel_case_without_defaults() {
        let grant = VideoGrant {
            room: Some("r".into()),
            room_join: true,
            can_publish: Some(true),
            can_subscribe: Some(false),
            can_publish_sources: vec!["camera".into()],
            can_update_own_metadata: true,
            ingress_admin: true,
            ..VideoGrant::default()
        };
        assert_eq!(
            serde_json::to_value(&grant).unwrap(),
            json!({
                "room": "r",
                "roomJoin": true,
                "canPublish": true,
                "canSubscribe": false,
                "canPublishSources": ["camera"],
                "canUpdateOwnMetadata": true,
                "ingressAdmin": true
            })
        );
        assert_eq!(serde_json::to_string(&VideoGrant::default()).unwrap(), "{}");
    }

    #[test]
    fn grant_reads_all_livekit_fields_and_ignores_unknown() {
        let grant: VideoGrant = serde_json::from_value(json!({
            "room": "r", "roomJoin": true, "roomCreate": true, "roomList": true,
            "roomAdmin": true, "roomRecord": true, "canPublish": false,
            "canSubscribe": true, "canPublishData": false,
            "canPublishSources": ["camera", "screen_share"],
            "canUpdateOwnMetadata": true, "hidden": true, "recorder": true,
            "agent": true, "ingressAdmin": true,
            "canSubscribeMetrics": true, "destinationRoom": "x"
        }))
        .unwrap();
        assert_eq!(
            grant,
            VideoGrant {
                room: Some("r".into()),
                room_join: true,
                room_create: true,
                room_list: true,
                room_admin: true,
                room_record: true,
                can_publish: Some(false),
                can_subscribe: Some(true),
                can_publish_data: Some(false),
                can_publish_sources: vec!["camera".into(), "screen_share".into()],
                can_update_own_metadata: true,
                hidden: true,
                recorder: true,
                agent: true,
                ingress_admin: true,
            }
        );
    }

    #[test]
    fn nulls_read_as_defaults() {
        let grant: VideoGrant = serde_json::from_value(json!({
            "room": null, "roomJoin": null, "canPublish": null, "canPublishSources": null
        }))
        .unwrap();
        assert_eq!(grant, VideoGrant::default());

        let claims = claims_from(json!({
            "iss": "k", "sub": "id", "exp": 10, "name": null, "metadata": null,
            "jti": null, "video": null
        }))
        .unwrap();
        assert_eq!(claims.name, "");
        assert_eq!(claims.video, VideoGrant::default());
    }

    #[test]
    fn claims_defaults_and_required_exp() {
        let claims = claims_from(json!({"iss": "k", "sub": "id", "exp": 10})).unwrap();
        assert_eq!(claims.identity(), "id");
        assert_eq!(claims.nbf, 0);
        assert_eq!(claims.name, "");
        assert_eq!(claims.metadata, "");
        assert_eq!(claims.jti, "");
        assert!(claims.video.can_publish());

        let err = claims_from(json!({"iss": "k", "sub": "id"})).unwrap_err();
        assert!(err.to_string().contains("missing field `exp`"), "{err}");
    }

    #[test]
    fn numeric_dates_accept_integers_and_floats_only() {
        let claims = claims_from(json!({"iss": "k", "exp": 1.7e9, "nbf": 12.9})).unwrap();
        assert_eq!(claims.exp, 1_700_000_000);
        assert_eq!(claims.nbf, 12);
        for bad in [
            json!(-1),
            json!(-1.5),
            json!("10"),
            json!(true),
            json!(1e30),
        ] {
            assert!(
                claims_from(json!({"iss": "k", "exp": bad})).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn claims_skip_empty_fields() {
        let claims = Claims {
            iss: "k".into(),
            sub: String::new(),
            name: String::new(),
            metadata: String::new(),
            nbf: 1,
            exp: 2,
            jti: String::new(),
            video: VideoGrant::default(),
            attributes: Default::default(),
        };
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            json!({"iss": "k", "nbf": 1, "exp": 2})
        );
    }

    #[test]
    fn require_room_join() {
        let mut claims = claims_from(json!({"iss": "k", "sub": "id", "exp": 10})).unwrap();
        assert_eq!(
            claims.require_room_join("r"),
            Err(AuthError::MissingGrant("roomJoin"))
        );
        claims.video.room_join = true;
        assert_eq!(
            claims.require_room_join("r"),
            Err(AuthError::RoomMismatch {
                granted: String::new(),
                requested: "r".into()
            })
        );
        claims.video.room = Some("other".into());
        assert_eq!(
            claims.require_room_join("r"),
            Err(AuthError::RoomMismatch {
                granted: "other".into(),
                requested: "r".into()
            })
        );
        claims.video.room = Some("r".into());
        assert_eq!(claims.require_room_join("r"), Ok(()));
    }
}
