//! Authentication of everything nodes write to Redis for one another: the
//! cluster key, the signed message format, and the counters of what was
//! refused.
//!
//! Every node record, room claim, room record and tunnel message is a
//! [`SignedMessage`]: a one-line header, the subject and the body, with an
//! HMAC-SHA256 (aws-lc-rs) under the cluster key over a canonical encoding
//! of every field. `docs/cluster.md` ("Trust model") describes the format
//! and what it protects.
//!
//! ```text
//! pw1 <kind> <from> <to> <seq> <ts> <mac>\n<subject>\n<body>
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::{hkdf, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ClusterError;

/// Version tag of the format, first word of every message.
const VERSION: &str = "pw1";
/// Domain separation of the MAC input.
const MAC_CONTEXT: &[u8] = b"pulsewave-cluster/1";
/// HKDF salt and info: the cluster key is `HKDF-SHA256(secret)` with these.
const HKDF_SALT: &[u8] = b"pulsewave-cluster-key";
const HKDF_INFO: &[u8] = b"pulsewave cluster message hmac v1";
/// Longest header line, subject and body accepted.
const MAX_HEADER: usize = 256;
const MAX_SUBJECT: usize = 256;
/// Larger than any signaling message (`MAX_MESSAGE_SIZE` is at most 16 MiB,
/// and a frame is carried once, with its JSON escaping).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Length of an HMAC-SHA256 in unpadded base64url.
const MAC_LEN: usize = 43;

/// The cluster key: the HMAC key every node signs with, and the keys it
/// also accepts during a rotation. Derived with HKDF-SHA256 from a secret
/// (`CLUSTER_SECRET`, else `API_SECRET`), so that the secret itself is never
/// used as a MAC key and a key derived from `API_SECRET` cannot sign access
/// tokens.
#[derive(Clone)]
pub struct ClusterKey {
    sign: hmac::Key,
    accept: Vec<hmac::Key>,
    fingerprint: String,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("fingerprint", &self.fingerprint)
            .field("also_accepted", &self.accept.len())
            .finish()
    }
}

fn derive(secret: &str) -> Result<hmac::Key, ClusterError> {
    if secret.is_empty() {
        return Err(ClusterError::Config("the cluster secret is empty".into()));
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret.as_bytes());
    let info = [HKDF_INFO];
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .map_err(|_| ClusterError::Config("cannot derive the cluster key".into()))?;
    Ok(hmac::Key::from(okm))
}

impl ClusterKey {
    /// The key derived from `secret` (HKDF-SHA256, salt
    /// `pulsewave-cluster-key`, info `pulsewave cluster message hmac v1`).
    /// Every node of a cluster must use the same secret.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] if `secret` is empty.
    pub fn derive(secret: &str) -> Result<Self, ClusterError> {
        let sign = derive(secret)?;
        let fingerprint = hex(&hmac::sign(&sign, b"fingerprint").as_ref()[..6]);
        Ok(Self {
            sign,
            accept: Vec::new(),
            fingerprint,
        })
    }

    /// Also accepts messages signed with the key derived from `secret`
    /// (never signs with it): the first step of a rotation, see
    /// `docs/cluster.md`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] if `secret` is empty.
    pub fn also_accept(mut self, secret: &str) -> Result<Self, ClusterError> {
        self.accept.push(derive(secret)?);
        Ok(self)
    }

    /// 12 hex digits that identify the signing key without revealing it
    /// (logged at start, so that operators can compare nodes).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn mac(&self, fields: &Fields<'_>) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.sign, &fields.canonical()))
    }

    fn verifies(&self, fields: &Fields<'_>, mac: &[u8]) -> bool {
        let data = fields.canonical();
        std::iter::once(&self.sign)
            .chain(&self.accept)
            .any(|k| hmac::verify(k, &data, mac).is_ok())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a signed message is. Part of the MAC input, so that a message of
/// one kind is never accepted as another (a node record as a claim, a
/// frame for a relay as a frame for an owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A node registry record (`pw:node:<id>`); subject: the node id.
    Node,
    /// A room ownership claim (`pw:room:<name>:owner`); subject: the room.
    Claim,
    /// A room record (`pw:room:<name>:info`); subject: the room.
    Room,
    /// A tunnel message from a relay to the room's owner
    /// (`pw:node:<owner>:in`); subject: the tunnel id.
    ToOwner,
    /// A tunnel message from the room's owner to a relay
    /// (`pw:node:<relay>:out`); subject: the tunnel id.
    ToRelay,
    /// A webhook event waiting for delivery, in a webhook journal
    /// (`pw:webhooks:<node>:<incarnation>:<room>`); subject: the room, body:
    /// the event's JSON body, timestamp: when the event was queued.
    Webhook,
}

impl Kind {
    /// The word in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Claim => "claim",
            Kind::Room => "room",
            Kind::ToOwner => "t-in",
            Kind::ToRelay => "t-out",
            Kind::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "node" => Kind::Node,
            "claim" => Kind::Claim,
            "room" => Kind::Room,
            "t-in" => Kind::ToOwner,
            "t-out" => Kind::ToRelay,
            "webhook" => Kind::Webhook,
            _ => return None,
        })
    }
}

/// The recipient of records that every node reads.
pub const EVERY_NODE: &str = "*";

/// Whether `id` is a valid node id: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub(crate) fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The header fields of a message to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// What it is.
    pub kind: Kind,
    /// The signing node.
    pub from: &'a str,
    /// The node it is for, or [`EVERY_NODE`].
    pub to: &'a str,
    /// The tunnel id, room name or node id it is about.
    pub subject: &'a str,
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's clock, Unix milliseconds.
    pub ts: u64,
}

/// The signed fields, borrowed.
struct Fields<'a> {
    header: Header<'a>,
    body: &'a str,
}

impl Fields<'_> {
    /// The MAC input: a context string, then each field with its length
    /// (strings as u32 big-endian length and bytes, numbers as u64
    /// big-endian, the body with a u64 length), so that no two different
    /// messages share an encoding.
    fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.header.subject.len() + self.body.len());
        let mut string = |s: &[u8]| {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        };
        let h = &self.header;
        string(MAC_CONTEXT);
        string(h.kind.as_str().as_bytes());
        string(h.from.as_bytes());
        string(h.to.as_bytes());
        string(h.subject.as_bytes());
        out.extend_from_slice(&h.seq.to_be_bytes());
        out.extend_from_slice(&h.ts.to_be_bytes());
        out.extend_from_slice(&(self.body.len() as u64).to_be_bytes());
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// Why a message from Redis was refused. Each is counted in
/// [`RejectedMessages`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a message of this format (garbage, truncated, an old node's
    /// unsigned JSON).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The MAC does not verify under the cluster key: forged, altered, or
    /// signed with another cluster secret.
    #[error("bad signature")]
    BadSignature,
    /// Signed, but its timestamp is outside the accepted window (a replay,
    /// or clocks too far apart).
    #[error("stale or future timestamp")]
    Stale,
    /// Signed and recent, but already seen (a replay).
    #[error("replayed")]
    Replayed,
    /// Signed, but from a node that is not registered, for another node, or
    /// of the wrong kind or subject for where it was found.
    #[error("unexpected sender, recipient or subject")]
    Unexpected,
}

/// A message in the signed format, parsed but not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedMessage {
    /// What it is.
    pub kind: Kind,
    /// The node that signed it.
    pub from: String,
    /// The node it is for, or [`EVERY_NODE`].
    pub to: String,
    /// The tunnel id, room name or node id it is about.
    pub subject: String,
    /// The sender's sequence number (increasing for each message it sends).
    pub seq: u64,
    /// The sender's clock when it signed, in Unix milliseconds.
    pub ts: u64,
    /// The payload (JSON).
    pub body: String,
    mac: String,
}

impl SignedMessage {
    /// Signs a message: the text to publish or store.
    pub fn sign(key: &ClusterKey, header: &Header<'_>, body: &str) -> String {
        let mac = key.mac(&Fields {
            header: *header,
            body,
        });
        let Header {
            kind,
            from,
            to,
            subject,
            seq,
            ts,
        } = header;
        format!(
            "{VERSION} {} {from} {to} {seq} {ts} {mac}\n{subject}\n{body}",
            kind.as_str()
        )
    }

    /// Parses `text`; never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`Rejection::Malformed`] if `text` is not in the format.
    pub fn parse(text: &str) -> Result<SignedMessage, Rejection> {
        let (header, rest) = text
            .split_once('\n')
            .ok_or(Rejection::Malformed("no header line"))?;
        if header.len() > MAX_HEADER {
            return Err(Rejection::Malformed("header too long"));
        }
        let (subject, body) = rest
            .split_once('\n')
            .ok_or(Rejection::Malformed("no subject line"))?;
        if subject.len() > MAX_SUBJECT || subject.chars().any(char::is_control) {
            return Err(Rejection::Malformed("bad subject"));
        }
        if body.len() > MAX_BODY {
            return Err(Rejection::Malformed("body too long"));
        }
        let mut words = header.split(' ');
        let mut word = || words.next().ok_or(Rejection::Malformed("short header"));
        if word()? != VERSION {
            return Err(Rejection::Malformed("unknown version"));
        }
        let kind = Kind::parse(word()?).ok_or(Rejection::Malformed("unknown kind"))?;
        let from = word()?;
        let to = word()?;
        let seq = number(word()?)?;
        let ts = number(word()?)?;
        let mac = word()?;
        if words.next().is_some() {
            return Err(Rejection::Malformed("long header"));
        }
        if !valid_node_id(from) || !(to == EVERY_NODE || valid_node_id(to)) {
            return Err(Rejection::Malformed("bad node id"));
        }
        if mac.len() != MAC_LEN {
            return Err(Rejection::Malformed("bad mac"));
        }
        Ok(SignedMessage {
            kind,
            from: from.to_owned(),
            to: to.to_owned(),
            subject: subject.to_owned(),
            seq,
            ts,
            body: body.to_owned(),
            mac: mac.to_owned(),
        })
    }

    /// The header fields.
    pub fn header(&self) -> Header<'_> {
        Header {
            kind: self.kind,
            from: &self.from,
            to: &self.to,
            subject: &self.subject,
            seq: self.seq,
            ts: self.ts,
        }
    }

    /// Checks the MAC under `key` (or a key it also accepts).
    ///
    /// # Errors
    ///
    /// [`Rejection::BadSignature`] if it does not verify.
    pub fn verify(&self, key: &ClusterKey) -> Result<(), Rejection> {
        let mac = URL_SAFE_NO_PAD
            .decode(&self.mac)
            .map_err(|_| Rejection::BadSignature)?;
        let fields = Fields {
            header: self.header(),
            body: &self.body,
        };
        if key.verifies(&fields, &mac) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Parses and verifies `text`, and checks its kind, its recipient and
    /// that its timestamp is at most `max_age_ms` old and at most
    /// `max_ahead_ms` ahead of `now_ms`.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] of the first check that fails.
    pub fn open(
        text: &str,
        key: &ClusterKey,
        kind: Kind,
        to: &str,
        now_ms: u64,
        max_age_ms: u64,
        max_ahead_ms: u64,
    ) -> Result<SignedMessage, Rejection> {
        let m = SignedMessage::parse(text)?;
        m.verify(key)?;
        if m.kind != kind || m.to != to {
            return Err(Rejection::Unexpected);
        }
        if now_ms.saturating_sub(m.ts) > max_age_ms || m.ts.saturating_sub(now_ms) > max_ahead_ms {
            return Err(Rejection::Stale);
        }
        Ok(m)
    }
}

fn number(s: &str) -> Result<u64, Rejection> {
    // Canonical decimal only (no sign, no leading zero): one text per message.
    if s.is_empty()
        || s.len() > 20
        || (s.len() > 1 && s.starts_with('0'))
        || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Rejection::Malformed("bad number"));
    }
    s.parse().map_err(|_| Rejection::Malformed("bad number"))
}

/// How many messages and records read from Redis were refused, by reason,
/// since the node started. Each refusal is also logged (at `warn` for a bad
/// signature or an unknown sender, `debug` otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectedMessages {
    /// Not in the signed format.
    pub malformed: u64,
    /// Signature missing or wrong: forged, or another cluster secret.
    pub bad_signature: u64,
    /// Timestamp outside the window.
    pub stale: u64,
    /// Replayed (sequence number or tunnel id already seen).
    pub replayed: u64,
    /// From an unregistered node, for another node, or out of place.
    pub unexpected: u64,
}

impl RejectedMessages {
    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.malformed + self.bad_signature + self.stale + self.replayed + self.unexpected
    }
}

/// The live counters behind [`RejectedMessages`].
#[derive(Debug, Default)]
pub(crate) struct RejectCounters {
    malformed: AtomicU64,
    bad_signature: AtomicU64,
    stale: AtomicU64,
    replayed: AtomicU64,
    unexpected: AtomicU64,
}

impl RejectCounters {
    pub(crate) fn count(&self, r: &Rejection) {
        let c = match r {
            Rejection::Malformed(_) => &self.malformed,
            Rejection::BadSignature => &self.bad_signature,
            Rejection::Stale => &self.stale,
            Rejection::Replayed => &self.replayed,
            Rejection::Unexpected => &self.unexpected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RejectedMessages {
        RejectedMessages {
            malformed: self.malformed.load(Ordering::Relaxed),
            bad_signature: self.bad_signature.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            unexpected: self.unexpected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::derive(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sign(
        k: &ClusterKey,
        kind: Kind,
        from: &str,
        to: &str,
        subject: &str,
        seq: u64,
        ts: u64,
        body: &str,
    ) -> String {
        let h = Header {
            kind,
            from,
            to,
            subject,
            seq,
            ts,
        };
        SignedMessage::sign(k, &h, body)
    }

    #[test]
    fn signed_messages_round_trip_and_verify() {
        let k = key("cluster secret");
        let text = sign(&k, Kind::ToOwner, "node-b", "node-a", "t1", 7, 1000, "{}");
        assert!(text.starts_with("pw1 t-in node-b node-a 7 1000 "), "{text}");
        let m = SignedMessage::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.kind, m.from.as_str(), m.to.as_str(), m.subject.as_str()),
            (Kind::ToOwner, "node-b", "node-a", "t1")
        );
        assert_eq!((m.seq, m.ts, m.body.as_str()), (7, 1000, "{}"));
        assert_eq!(m.verify(&k), Ok(()));
        // Another secret does not verify, unless accepted for a rotation.
        let other = key("another secret");
        assert_eq!(m.verify(&other), Err(Rejection::BadSignature));
        let rotating = other
            .also_accept("cluster secret")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.verify(&rotating), Ok(()));
        // Room names with spaces and a body with newlines are carried as is.
        let text = sign(&k, Kind::Claim, "n", "*", "my room", 0, 5, "a\nb");
        let m = SignedMessage::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.subject.as_str(), m.body.as_str()), ("my room", "a\nb"));
        assert_eq!(m.verify(&k), Ok(()));
    }

    #[test]
    fn every_field_is_covered() {
        let k = key("s");
        let text = sign(&k, Kind::ToOwner, "node-b", "node-a", "t1", 7, 1000, "x");
        let m = SignedMessage::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut changed = Vec::new();
        let mut c = m.clone();
        c.kind = Kind::ToRelay;
        changed.push(c);
        let mut c = m.clone();
        c.from = "node-c".into();
        changed.push(c);
        let mut c = m.clone();
        c.to = "node-c".into();
        changed.push(c);
        let mut c = m.clone();
        c.subject = "t2".into();
        changed.push(c);
        let mut c = m.clone();
        c.seq = 8;
        changed.push(c);
        let mut c = m.clone();
        c.ts = 1001;
        changed.push(c);
        let mut c = m.clone();
        c.body = "y".into();
        changed.push(c);
        for c in changed {
            assert_eq!(c.verify(&k), Err(Rejection::BadSignature), "{c:?}");
        }
    }

    #[test]
    fn open_checks_kind_recipient_and_time() {
        let k = key("s");
        let text = sign(&k, Kind::ToOwner, "b", "a", "t", 1, 10_000, "");
        let open = |kind, to, now| SignedMessage::open(&text, &k, kind, to, now, 1000, 500);
        assert!(open(Kind::ToOwner, "a", 10_500).is_ok());
        assert_eq!(
            open(Kind::ToRelay, "a", 10_000).err(),
            Some(Rejection::Unexpected)
        );
        assert_eq!(
            open(Kind::ToOwner, "c", 10_000).err(),
            Some(Rejection::Unexpected)
        );
        assert_eq!(
            open(Kind::ToOwner, "a", 11_001).err(),
            Some(Rejection::Stale)
        );
        assert_eq!(
            open(Kind::ToOwner, "a", 9_499).err(),
            Some(Rejection::Stale)
        );
    }

    #[test]
    fn unsigned_and_garbage_input_is_malformed() {
        let k = key("s");
        for text in [
            "",
            "\n\n",
            r#"{"tunnel":"t","from":"node-b","op":"open","room":"r","token":"eyJ"}"#,
            "pw1 t-in b a 1 2 short\nt\n{}",
            "pw2 t-in b a 1 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}",
            "pw1 t-in b a x 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}",
            "pw1 t-in b a 01 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}",
            "pw1 t-in b a 1 99999999999999999999 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n",
            "pw1 t-in b a 1 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA extra\nt\n{}",
            "pw1 t-in b\ta 1 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}",
            "pw1 nope b a 1 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}",
        ] {
            assert!(
                matches!(SignedMessage::parse(text), Err(Rejection::Malformed(_))),
                "{text:?}"
            );
        }
        // Well formed, wrong MAC.
        let forged = "pw1 t-in b a 1 2 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nt\n{}";
        assert_eq!(
            SignedMessage::open(forged, &k, Kind::ToOwner, "a", 2, 10, 10).err(),
            Some(Rejection::BadSignature)
        );
        assert!(ClusterKey::derive("").is_err());
    }

    #[test]
    fn fingerprints_tell_keys_apart_without_the_secret() {
        let a = key("secret one");
        assert_eq!(a.fingerprint().len(), 12);
        assert_eq!(a.fingerprint(), key("secret one").fingerprint());
        assert_ne!(a.fingerprint(), key("secret two").fingerprint());
        assert!(!format!("{a:?}").contains("secret one"));
    }
}
