//! Recognizing the first packet of a video keyframe, per codec, so a
//! consumer that starts or resumes can wait for a picture it can decode.

/// Video codecs whose keyframes the room recognizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Anything else: every packet counts as a possible start.
    Other,
}

impl VideoCodec {
    pub(crate) fn from_mime(mime: &str) -> Self {
        if mime.eq_ignore_ascii_case("video/VP8") {
            VideoCodec::Vp8
        } else if mime.eq_ignore_ascii_case("video/VP9") {
            VideoCodec::Vp9
        } else if mime.eq_ignore_ascii_case("video/H264") {
            VideoCodec::H264
        } else if mime.eq_ignore_ascii_case("video/AV1") {
            VideoCodec::Av1
        } else {
            VideoCodec::Other
        }
    }

    /// Whether `payload` (an RTP payload) starts a keyframe.
    pub(crate) fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_keyframe_start(payload),
            VideoCodec::Vp9 => vp9_keyframe_start(payload),
            VideoCodec::H264 => h264_keyframe_start(payload),
            VideoCodec::Av1 => av1_keyframe_start(payload),
            VideoCodec::Other => true,
        }
    }
}

/// RFC 7741: payload descriptor, then the VP8 payload header whose lowest
/// bit is 0 for a key frame.
fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

/// draft-ietf-payload-vp9: not inter-predicted (P=0), beginning of a frame
/// (B=1), spatial layer 0.
fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let has_pid = b0 & 0x80 != 0;
    let inter = b0 & 0x40 != 0;
    let has_layer = b0 & 0x20 != 0;
    let begin = b0 & 0x08 != 0;
    if inter || !begin {
        return false;
    }
    if !has_layer {
        return true;
    }
    let mut i = 1;
    if has_pid {
        let Some(&pid) = p.get(i) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    match p.get(i) {
        Some(layer) => (layer >> 1) & 0x07 == 0,
        None => false,
    }
}

/// AV1 RTP payload (aomediacodec av1-rtp-spec 4.4): the aggregation header's
/// N bit is set on the first packet of a coded video sequence, which starts
/// with a key frame.
fn av1_keyframe_start(p: &[u8]) -> bool {
    matches!(p.first(), Some(h) if h & 0x08 != 0 && h & 0x80 == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184: an IDR slice or SPS, alone, in a STAP-A, or starting a FU-A.
fn h264_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let Some(&nal) = p.get(i + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, NAL_IDR | NAL_SPS) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        NAL_FU_A => {
            matches!(p.get(1), Some(h) if h & 0x80 != 0 && matches!(h & 0x1f, NAL_IDR | NAL_SPS))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8() {
        let c = VideoCodec::Vp8;
        // S=1, PID=0, payload header P=0 (key frame).
        assert!(c.is_keyframe_start(&[0x10, 0x00, 0x9d]));
        // Inter frame.
        assert!(!c.is_keyframe_start(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!c.is_keyframe_start(&[0x00, 0x00]));
        // Extended with a 15-bit picture id, TL0PICIDX and TID.
        assert!(c.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x00]));
        assert!(!c.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x01]));
        // Truncated.
        assert!(!c.is_keyframe_start(&[0x90, 0x80]));
        assert!(!c.is_keyframe_start(&[]));
    }

    #[test]
    fn vp9() {
        let c = VideoCodec::Vp9;
        assert!(c.is_keyframe_start(&[0x08]));
        assert!(!c.is_keyframe_start(&[0x48])); // inter
        assert!(!c.is_keyframe_start(&[0x00])); // not begin
        // I + L, 7-bit picture id, SID 0.
        assert!(c.is_keyframe_start(&[0xa8, 0x05, 0x00]));
        // SID 1.
        assert!(!c.is_keyframe_start(&[0xa8, 0x05, 0x02]));
        assert!(!c.is_keyframe_start(&[0xa8]));
    }

    #[test]
    fn av1() {
        let c = VideoCodec::Av1;
        assert!(c.is_keyframe_start(&[0x18, 0x0a])); // N=1, W=1
        assert!(c.is_keyframe_start(&[0x08]));
        assert!(!c.is_keyframe_start(&[0x10, 0x32])); // N=0
        assert!(!c.is_keyframe_start(&[0x88])); // Z=1: continues an OBU
        assert!(!c.is_keyframe_start(&[]));
    }

    #[test]
    fn h264() {
        let c = VideoCodec::H264;
        assert!(c.is_keyframe_start(&[0x65, 0x88])); // IDR
        assert!(c.is_keyframe_start(&[0x67, 0x42])); // SPS
        assert!(!c.is_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
        // STAP-A with SPS.
        assert!(c.is_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]));
        // STAP-A with only PPS.
        assert!(!c.is_keyframe_start(&[0x78, 0x00, 0x01, 0x68]));
        // FU-A start of IDR; continuation.
        assert!(c.is_keyframe_start(&[0x7c, 0x85, 0x00]));
        assert!(!c.is_keyframe_start(&[0x7c, 0x05, 0x00]));
        // Garbage STAP-A sizes don't panic.
        assert!(!c.is_keyframe_start(&[0x78, 0xff, 0xff]));
    }
}
