//! Entry points for the fuzz targets in `fuzz/` (not a stable API).

use crate::trust::{ClusterKey, Kind, SignedMessage};
use crate::tunnel::Op;
use crate::types::{ClusterRoom, NodeInfo};

/// Decodes `data` as everything a node reads from the cluster channels and
/// keys: a signed message, then its body as a tunnel op, a node record and
/// a room record. Never panics; checks that what parses round-trips and
/// that a message signed with one key does not verify under another.
pub fn cluster_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = ClusterKey::derive("fuzz cluster secret").ok();
    let other = ClusterKey::derive("another secret").ok();
    if let Ok(m) = SignedMessage::parse(text) {
        if let Some(key) = &key {
            // Whatever arrived does not verify (no one else has the key), and
            // the same fields signed with the key do, and parse back the same.
            let _ = m.verify(key);
            let signed = SignedMessage::sign(key, &m.header(), &m.body);
            match SignedMessage::parse(&signed) {
                Ok(again) => {
                    assert_eq!(again.header(), m.header());
                    assert_eq!(again.body, m.body);
                    assert!(again.verify(key).is_ok());
                    if let Some(other) = &other {
                        assert!(again.verify(other).is_err());
                    }
                }
                Err(e) => panic!("a re-signed message does not parse: {e}"),
            }
            let _ = SignedMessage::open(text, key, Kind::ToOwner, "node-a", 0, u64::MAX, 0);
        }
        body(&m.body);
    }
    body(text);
}

fn body(text: &str) {
    if let Ok(op) = serde_json::from_str::<Op>(text) {
        let _ = op.into_frame();
    }
    let _ = serde_json::from_str::<NodeInfo>(text);
    let _ = serde_json::from_str::<ClusterRoom>(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Header;
    use rand::{Rng, SeedableRng};

    /// Valid messages of every kind, then random mutations of them (bytes
    /// flipped, inserted, removed, truncated, spliced) and random bytes:
    /// decoding never panics, and only the untouched ones verify.
    #[test]
    fn garbage_on_the_cluster_channels_never_panics() {
        let key = ClusterKey::derive("s").unwrap_or_else(|e| panic!("{e}"));
        let bodies = [
            r#"{"op":"open","room":"r","claims":{"sub":"a","exp":1,"video":{"room":"r","roomJoin":true}}}"#,
            r#"{"op":"msg","text":"{\"type\":\"ping\"}"}"#,
            r#"{"op":"close","code":1000,"reason":"bye"}"#,
            r#"{"op":"ka"}"#,
            r#"{"id":"n","signalingUrl":"ws://x","mediaIp":"1.2.3.4","region":"r","rooms":0,"participants":0,"tracks":0,"cpu":0.0,"draining":false,"startedAt":0,"updatedAt":0}"#,
            "",
        ];
        let kinds = [
            Kind::Node,
            Kind::Claim,
            Kind::Room,
            Kind::ToOwner,
            Kind::ToRelay,
        ];
        let mut seeds = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let h = Header {
                kind: kinds[i % kinds.len()],
                from: "node-b",
                to: "node-a",
                subject: "tunnel or room",
                seq: i as u64,
                ts: 1_764_000_000_000,
            };
            let text = SignedMessage::sign(&key, &h, b);
            let m = SignedMessage::parse(&text).unwrap_or_else(|e| panic!("{e}"));
            assert!(m.verify(&key).is_ok());
            seeds.push(text.into_bytes());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for round in 0..20_000 {
            let mut data = seeds[round % seeds.len()].clone();
            let original = data.clone();
            for _ in 0..rng.random_range(1..4) {
                let len = data.len();
                match rng.random_range(0..6) {
                    0 if len > 0 => {
                        let i = rng.random_range(0..len);
                        data[i] ^= 1 << rng.random_range(0..8);
                    }
                    1 => {
                        let i = rng.random_range(0..=len);
                        data.insert(i, rng.random());
                    }
                    2 if len > 0 => {
                        data.remove(rng.random_range(0..len));
                    }
                    3 => data.truncate(rng.random_range(0..=len)),
                    4 => {
                        let other = &seeds[rng.random_range(0..seeds.len())];
                        let cut = rng.random_range(0..=other.len());
                        data.extend_from_slice(&other[cut..]);
                    }
                    _ => {
                        data = (0..rng.random_range(0..200))
                            .map(|_| rng.random())
                            .collect();
                    }
                }
            }
            cluster_message(&data);
            if data != original
                && let Ok(text) = std::str::from_utf8(&data)
                && let Ok(m) = SignedMessage::parse(text)
            {
                assert!(
                    m.verify(&key).is_err(),
                    "a mutated message verified: {text:?}"
                );
            }
        }
    }
}
