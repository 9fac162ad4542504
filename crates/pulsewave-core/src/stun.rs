//! Just enough STUN parsing to demultiplex: is a datagram STUN, and whose
//! ICE username fragment does it carry.

/// The STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute type.
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// Whether `datagram` is a STUN message: the first two bits are zero and the
/// magic cookie is in place (RFC 7983 demultiplexing).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 2 && datagram[4..8] == MAGIC_COOKIE
}

/// The `(local, remote)` ICE username fragments of a STUN binding request:
/// its USERNAME attribute is `local:remote` from the receiver's side. `None`
/// for anything else, including truncated or malformed messages.
pub fn stun_username(datagram: &[u8]) -> Option<(&str, &str)> {
    if !is_stun(datagram) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = HEADER_LEN.checked_add(declared)?.min(datagram.len());
    let mut pos = HEADER_LEN;
    while pos + 4 <= end {
        let kind = u16::from_be_bytes([datagram[pos], datagram[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[pos + 2], datagram[pos + 3]]));
        let value_start = pos + 4;
        let value_end = value_start.checked_add(len)?;
        if value_end > end {
            return None;
        }
        if kind == ATTR_USERNAME {
            let text = std::str::from_utf8(&datagram[value_start..value_end]).ok()?;
            return text.split_once(':');
        }
        // Values are padded to a multiple of four bytes.
        pos = value_start + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A second attribute after USERNAME (PRIORITY) to check the walk.
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attr);
        d
    }

    #[test]
    fn reads_username_fragments() {
        let d = binding_request("serverufrag:browser");
        assert!(is_stun(&d));
        assert_eq!(stun_username(&d), Some(("serverufrag", "browser")));
        // Odd length, padded.
        let d = binding_request("abcde:xyz");
        assert_eq!(stun_username(&d), Some(("abcde", "xyz")));
    }

    #[test]
    fn rejects_non_stun_and_garbage() {
        assert!(!is_stun(&[0x80, 0x60, 0, 1]));
        assert_eq!(stun_username(&[]), None);
        let mut d = binding_request("a:b");
        // Truncated attribute.
        d.truncate(25);
        assert_eq!(stun_username(&d), None);
        // Length field larger than the datagram.
        let mut d = binding_request("a:b");
        d[2] = 0xff;
        assert_eq!(stun_username(&d), Some(("a", "b")));
        let mut d = binding_request("a:b");
        d[22] = 0xff; // attribute length beyond the end
        assert_eq!(stun_username(&d), None);
        // No colon.
        assert_eq!(stun_username(&binding_request("nocolon")), None);
        // Random bytes never panic.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = stun_username(&bytes);
            let mut s = binding_request("q:r");
            s.extend_from_slice(&bytes);
            let _ = stun_username(&s);
        }
    }
}
