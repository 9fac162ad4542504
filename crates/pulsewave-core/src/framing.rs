//! RFC 4571 framing for ICE-TCP: each packet (STUN, DTLS, SRTP, SRTCP) is
//! preceded by its length as a 16-bit big-endian number, in both
//! directions (RFC 6544 §3).
//!
//! Sans-IO, like the rest of the crate: a driver feeds the bytes a TCP
//! connection gave into a [`Deframer`] and takes whole packets out, and
//! writes each outgoing packet behind [`frame_header`]. Empty frames are
//! skipped (Chromium ignores them too).

/// Largest packet a frame can carry.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// The 2-byte length prefix of `len` bytes, or `None` if `len` does not
/// fit in a frame.
pub fn frame_header(len: usize) -> Option<[u8; 2]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// Appends `packet`, framed, to `out`. Returns false (and appends nothing)
/// when the packet is larger than [`MAX_FRAME`].
pub fn frame_into(packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(header) = frame_header(packet.len()) else {
        return false;
    };
    out.extend_from_slice(&header);
    out.extend_from_slice(packet);
    true
}

/// Splits a TCP byte stream into packets. It buffers at most one partial
/// frame plus what one [`Deframer::extend`] brought, so its memory is
/// bounded by [`MAX_FRAME`] plus the caller's read size.
///
/// ```
/// use pulsewave_core::framing::{Deframer, frame_into};
///
/// let mut wire = Vec::new();
/// frame_into(b"hello", &mut wire);
/// frame_into(b"world", &mut wire);
/// let mut d = Deframer::default();
/// d.extend(&wire[..4]); // a frame cut in the middle
/// assert!(d.next_frame().is_none());
/// d.extend(&wire[4..]);
/// assert_eq!(d.next_frame(), Some(&b"hello"[..]));
/// assert_eq!(d.next_frame(), Some(&b"world"[..]));
/// assert!(d.next_frame().is_none());
/// ```
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl Deframer {
    /// Adds bytes read from the connection. What was already returned by
    /// [`Deframer::next_frame`] is discarded first.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if one is buffered. Empty frames are skipped.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        loop {
            let rest = &self.buf[self.start..];
            let [a, b, ..] = *rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([a, b]));
            if rest.len() < 2 + len {
                return None;
            }
            let from = self.start + 2;
            self.start = from + len;
            if len > 0 {
                return Some(&self.buf[from..from + len]);
            }
        }
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            assert!(frame_into(p, &mut out));
        }
        out
    }

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(frame_header(0), Some([0, 0]));
        assert_eq!(frame_header(300), Some([1, 44]));
        assert_eq!(frame_header(MAX_FRAME), Some([0xff, 0xff]));
        assert_eq!(frame_header(MAX_FRAME + 1), None);
        let mut out = vec![9];
        assert!(!frame_into(&vec![0; MAX_FRAME + 1], &mut out));
        assert_eq!(out, vec![9], "an oversized packet appends nothing");
    }

    #[test]
    fn frames_survive_any_split() {
        let big = vec![7u8; 1500];
        let packets: [&[u8]; 4] = [b"stun", &big, b"", b"x"];
        let wire = framed(&packets);
        // Every way of cutting the stream into two reads, and one byte at
        // a time, yields the same packets (the empty one skipped).
        let want: Vec<Vec<u8>> = vec![b"stun".to_vec(), big.clone(), b"x".to_vec()];
        for cut in 0..=wire.len() {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.extend(part);
                while let Some(f) = d.next_frame() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
        let mut d = Deframer::default();
        let mut got = Vec::new();
        for b in &wire {
            d.extend(std::slice::from_ref(b));
            while let Some(f) = d.next_frame() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_partial_frame_waits_and_memory_stays_bounded() {
        let mut d = Deframer::default();
        // A header announcing the largest frame, then a little of it.
        d.extend(&[0xff, 0xff, 1, 2, 3]);
        assert!(d.next_frame().is_none());
        assert_eq!(d.buffered(), 5);
        d.extend(&vec![0; MAX_FRAME - 3]);
        assert_eq!(d.next_frame().map(<[u8]>::len), Some(MAX_FRAME));
        assert!(d.next_frame().is_none());
        // The consumed frame is dropped on the next read.
        d.extend(&[0, 1]);
        assert_eq!(d.buffered(), 2);
        assert!(d.buf.len() <= 2);
    }
}
