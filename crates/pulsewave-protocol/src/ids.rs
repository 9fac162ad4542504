//! Identifiers used on the wire.
//!
//! Every server-generated id is a short prefix naming what it identifies (as
//! the seed's `TP_123`, `PR_123`, `CN_123`, `TR_123`) followed by twelve
//! random base-62 characters. Ids are opaque to clients: they are compared,
//! never parsed.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a generated id.
pub const RANDOM_ID_LEN: usize = 12;

/// Returns `len` random base-62 characters.
pub fn random_string(len: usize) -> String {
    random_string_from(&mut rand::rng(), len)
}

/// Returns `len` base-62 characters drawn from `rng` (a seeded generator
/// makes them reproducible, as a simulation needs).
pub fn random_string_from<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of ids of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// Generates a fresh random id.
            pub fn generate() -> Self {
                Self::generate_from(&mut rand::rng())
            }

            /// Generates an id from `rng` (reproducible with a seeded one).
            pub fn generate_from<R: Rng + ?Sized>(rng: &mut R) -> Self {
                let mut s = String::with_capacity(Self::PREFIX.len() + RANDOM_ID_LEN);
                s.push_str(Self::PREFIX);
                s.push_str(&random_string_from(rng, RANDOM_ID_LEN));
                Self(s)
            }

            /// Wraps an id received from a peer. No validation: an unknown id
            /// simply matches nothing.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

define_id!(
    /// A room instance (`RM_…`). A room name can be reused after the room
    /// closed; the sid changes each time.
    RoomSid,
    "RM_"
);
define_id!(
    /// One session of a participant in a room (`PA_…`). A reconnect with the
    /// same identity gets a new sid.
    ParticipantSid,
    "PA_"
);
define_id!(
    /// A WebRTC transport (`TP_…`).
    TransportId,
    "TP_"
);
define_id!(
    /// A producer: one published media track on a send transport (`PR_…`).
    ProducerId,
    "PR_"
);
define_id!(
    /// A consumer: one subscription of a producer on a receive transport (`CN_…`).
    ConsumerId,
    "CN_"
);
define_id!(
    /// The room-wide sid of a published track (`TR_…`).
    TrackSid,
    "TR_"
);
define_id!(
    /// A data producer: an SCTP data channel a participant sends on (`DP_…`).
    DataProducerId,
    "DP_"
);
define_id!(
    /// A data consumer: an SCTP data channel a participant receives on (`DC_…`).
    DataConsumerId,
    "DC_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_prefix_and_are_distinct() {
        let a = ProducerId::generate();
        let b = ProducerId::generate();
        assert!(a.as_str().starts_with("PR_"));
        assert_eq!(a.as_str().len(), 3 + RANDOM_ID_LEN);
        assert_ne!(a, b);
        assert!(a.as_str()[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = TransportId::new("TP_123");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"TP_123\"");
        let back: TransportId = serde_json::from_str("\"TP_123\"").unwrap();
        assert_eq!(back, id);
    }
}
