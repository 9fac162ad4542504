//! A structural check of incoming datagrams before they reach str0m.
//!
//! str0m demultiplexes on the first byte only (RFC 7983) and silently
//! ignores much of what it cannot use: a truncated DTLS record, an RTP
//! header cut short. Such datagrams would count as taken. Checking the
//! length rules of each protocol first lets the room refuse them as
//! [`DatagramError::Malformed`](crate::DatagramError::Malformed) (and count
//! them in `datagrams_dropped`) before they touch any state: a malformed
//! STUN message no longer rebinds an address or a remote ufrag.
//!
//! What passes can still be garbage that only cryptography reveals (an SRTP
//! packet whose authentication tag is wrong); str0m drops those silently.

/// STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Smallest SRTP/SRTCP authentication tag (AES_CM_128_HMAC_SHA1_80 has 10
/// bytes, AEAD_AES_128_GCM 16).
const MIN_AUTH_TAG: usize = 10;
/// DTLS 1.2 record header (and DTLSPlaintext in DTLS 1.3).
const DTLS_HEADER: usize = 13;

/// Whether `d` follows the framing rules of STUN, DTLS, SRTP or SRTCP, as
/// its first byte says it should (RFC 7983).
pub(crate) fn is_well_formed(d: &[u8]) -> bool {
    match d.first() {
        Some(0..=3) => stun(d),
        Some(20..=63) => dtls(d),
        Some(128..=191) => rtp_or_rtcp(d),
        _ => false,
    }
}

/// RFC 5389: 20-byte header with the magic cookie, attributes filling the
/// declared length exactly, in 4-byte units.
fn stun(d: &[u8]) -> bool {
    if d.len() < 20 || d[4..8] != MAGIC_COOKIE {
        return false;
    }
    let declared = usize::from(u16::from_be_bytes([d[2], d[3]]));
    declared % 4 == 0 && 20 + declared == d.len()
}

/// A chain of DTLS records filling the datagram exactly. A DTLS 1.3 unified
/// header (first byte `001xxxxx`) has a variable layout; the rest of the
/// datagram is left to the stack from there.
fn dtls(d: &[u8]) -> bool {
    let mut pos = 0;
    while pos < d.len() {
        match d[pos] {
            // change_cipher_spec, alert, handshake, application_data,
            // heartbeat, tls12_cid.
            20..=25 => {
                let Some(header) = d.get(pos..pos + DTLS_HEADER) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
                pos += DTLS_HEADER + len;
            }
            32..=63 => return true,
            _ => return false,
        }
    }
    pos == d.len()
}

/// RFC 3550 with RFC 5761 demultiplexing: the fixed header, CSRCs and
/// header extension must fit, with room for an authentication tag; SRTCP
/// also carries its 4-byte index.
fn rtp_or_rtcp(d: &[u8]) -> bool {
    let Some(&b1) = d.get(1) else { return false };
    if (192..=223).contains(&b1) {
        return d.len() >= 8 + 4 + MIN_AUTH_TAG;
    }
    let csrcs = usize::from(d[0] & 0x0f);
    let mut header = 12 + 4 * csrcs;
    if d[0] & 0x10 != 0 {
        let Some(ext) = d.get(header..header + 4) else {
            return false;
        };
        header += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    d.len() >= header + MIN_AUTH_TAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_lengths() {
        let mut m = vec![0x00, 0x01, 0x00, 0x08];
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(is_well_formed(&m));
        assert!(!is_well_formed(&m[..m.len() - 1]));
        assert!(!is_well_formed(&m[..20]));
        let mut bad = m.clone();
        bad[4] = 0;
        assert!(!is_well_formed(&bad));
    }

    #[test]
    fn dtls_record_chains() {
        let record = |ty: u8, len: u16| {
            let mut r = vec![ty, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(0xaa, usize::from(len)));
            r
        };
        let mut two = record(22, 40);
        two.extend(record(20, 1));
        assert!(is_well_formed(&two));
        assert!(!is_well_formed(&two[..two.len() - 1]));
        assert!(!is_well_formed(&two[..12]));
        let mut extra = two.clone();
        extra.push(0);
        assert!(!is_well_formed(&extra));
        // A plaintext record followed by a DTLS 1.3 unified-header record.
        let mut mixed = record(22, 10);
        mixed.extend_from_slice(&[0x2c, 1, 2, 3]);
        assert!(is_well_formed(&mixed));
        assert!(!is_well_formed(&[26, 0xfe, 0xfd]));
    }

    #[test]
    fn rtp_and_rtcp_lengths() {
        // V=2, X=1, CC=1; one extension word; payload; 10-byte tag.
        let mut p = vec![0x91, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
        p.extend_from_slice(&[0; 10]);
        assert!(is_well_formed(&p));
        assert!(!is_well_formed(&p[..p.len() - 1]));
        assert!(!is_well_formed(&p[..14]));
        assert!(!is_well_formed(&[0x80, 96, 0]));
        let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 5];
        rr.extend_from_slice(&[0; 14]);
        assert!(is_well_formed(&rr));
        assert!(!is_well_formed(&rr[..21]));
        assert!(!is_well_formed(&[]));
        assert!(!is_well_formed(&[64, 0, 0, 0]));
    }
}
