//! VP8 temporal layers (RFC 7741): what the forwarding path reads from each
//! packet's payload descriptor, and the per-consumer state that drops the
//! frames of temporal layers a consumer does not get while keeping what it
//! receives a valid stream: picture ids without holes the decoder would wait
//! for, TL0PICIDX continuous across simulcast switches (as mediasoup's and
//! LiveKit's VP8 rewriters do).
//!
//! Decisions are per picture (RTP timestamp), made on the first packet seen
//! of a newer picture; a late packet (reordered, or a retransmission from
//! the publisher) follows the decision of its picture if it is among the
//! last few, and is dropped otherwise.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// What the forwarding path needs from a VP8 payload descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vp8Info {
    /// First packet of the picture (S bit, partition 0).
    pub(crate) start: bool,
    /// Temporal layer id, when the descriptor carries one.
    pub(crate) tid: Option<u8>,
    /// Y: this picture and the next ones of its layer depend on the base
    /// layer only, so a consumer may start forwarding the layer here.
    pub(crate) layer_sync: bool,
    /// Picture id and whether it is 15 bits wide.
    pub(crate) picture_id: Option<(u16, bool)>,
    /// TL0PICIDX.
    pub(crate) tl0_pic_idx: Option<u8>,
    /// str0m's parse, to build a patch without copying the payload.
    pub(crate) descriptor: Option<Vp8Descriptor>,
    /// Where the VP8 payload (frame tag) starts.
    pub(crate) header_offset: usize,
}

impl Vp8Info {
    /// Reads the descriptor of `payload`; `None` when it is malformed.
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let b0 = *payload.first()?;
        let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
        let mut info = Vp8Info {
            start,
            tid: None,
            layer_sync: false,
            picture_id: None,
            tl0_pic_idx: None,
            descriptor: None,
            header_offset: 1,
        };
        if b0 & 0x80 == 0 {
            return Some(info);
        }
        let x = *payload.get(1)?;
        let mut i = 2;
        if x & 0x80 != 0 {
            let m = *payload.get(i)?;
            if m & 0x80 != 0 {
                let low = *payload.get(i + 1)?;
                info.picture_id = Some(((u16::from(m & 0x7f) << 8) | u16::from(low), true));
                i += 2;
            } else {
                info.picture_id = Some((u16::from(m), false));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            info.tl0_pic_idx = Some(*payload.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let t = *payload.get(i)?;
            if x & 0x20 != 0 {
                info.tid = Some(t >> 6);
                info.layer_sync = t & 0x20 != 0;
            }
            i += 1;
        }
        info.header_offset = i;
        // Patching needs str0m's offsets; a descriptor it refuses is
        // forwarded unpatched.
        if info.picture_id.is_some() || info.tl0_pic_idx.is_some() {
            info.descriptor = Vp8Descriptor::parse(payload).ok();
        }
        Some(info)
    }
}

/// The picture size of a keyframe's first packet (RFC 6386 9.1: frame tag,
/// start code, 14-bit width and height), `None` for anything else.
pub(crate) fn keyframe_size(payload: &[u8], info: &Vp8Info) -> Option<(u16, u16)> {
    if !info.start {
        return None;
    }
    let h = payload.get(info.header_offset..info.header_offset + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let height = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((width, height))
}

/// A decision about one picture, kept for its late packets.
#[derive(Debug, Clone, Copy, Default)]
struct Picture {
    timestamp: u32,
    forwarded: bool,
    /// Outgoing picture id and TL0PICIDX.
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
}

/// Pictures remembered for late packets.
const PICTURES: usize = 8;

/// One consumer's temporal layer selection and VP8 rewriting.
#[derive(Debug, Clone)]
pub(crate) struct Vp8Selector {
    /// The temporal layer forwarded now.
    pub(crate) current: u8,
    /// The temporal layer wanted; reached at the next safe picture.
    pub(crate) target: u8,
    /// The last pictures decided, newest at `head`.
    pictures: [Picture; PICTURES],
    head: usize,
    decided: bool,
    /// `in - out` for picture ids (mod 2^15) and TL0PICIDX (mod 2^8).
    picture_offset: u16,
    tl0_offset: u8,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    /// Set when the next forwarded picture starts a new stream (a
    /// simulcast switch or a resume): its ids continue from the last ones
    /// sent.
    rebase: bool,
}

/// The rewritten ids of a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// The patch of its descriptor, if it has ids to rewrite.
    pub(crate) patch: Option<Vp8Patch>,
    /// Its outgoing picture id.
    pub(crate) picture_id: Option<u16>,
    /// Its outgoing TL0PICIDX.
    pub(crate) tl0_pic_idx: Option<u8>,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it, rewritten.
    Forward(Rewrite),
    /// Drop it: its picture is of a temporal layer the consumer does not
    /// get (the sequence numbers close over it).
    Drop,
    /// Drop it: too late to know what its picture became.
    Stale,
}

impl Default for Vp8Selector {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Selector {
    /// Every temporal layer, from the next picture.
    pub(crate) fn new() -> Self {
        Self {
            current: u8::MAX,
            target: u8::MAX,
            pictures: [Picture::default(); PICTURES],
            head: 0,
            decided: false,
            picture_offset: 0,
            tl0_offset: 0,
            last_picture_id: None,
            last_tl0: None,
            rebase: false,
        }
    }

    /// The next forwarded picture starts a new stream (switch, resume): it
    /// must be a keyframe, so every temporal layer may follow, and its ids
    /// continue from the last ones sent.
    pub(crate) fn restart(&mut self) {
        self.rebase = true;
        self.current = self.target;
        self.decided = false;
    }

    /// Decides a packet of the consumer's current spatial layer.
    pub(crate) fn packet(&mut self, timestamp: u32, info: &Vp8Info) -> Verdict {
        let newer = !self.decided || is_newer(timestamp, self.pictures[self.head].timestamp);
        let picture = if newer {
            self.decide(timestamp, info)
        } else {
            match self.pictures.iter().find(|p| p.timestamp == timestamp) {
                Some(p) => *p,
                None => return Verdict::Stale,
            }
        };
        if !picture.forwarded {
            return Verdict::Drop;
        }
        let patch = info.descriptor.and_then(|d| {
            let mut b = d.patch();
            if let Some(id) = picture.picture_id {
                b = b.picture_id(id);
            }
            if let Some(idx) = picture.tl0_pic_idx {
                b = b.tl0_pic_idx(idx);
            }
            b.build().ok()
        });
        Verdict::Forward(Rewrite {
            patch,
            picture_id: picture.picture_id,
            tl0_pic_idx: picture.tl0_pic_idx,
        })
    }

    fn decide(&mut self, timestamp: u32, info: &Vp8Info) -> Picture {
        let tid = info.tid.unwrap_or(0);
        if info.tid.is_some() {
            if self.target < self.current {
                // Down at once: nothing below refers to higher layers.
                self.current = self.target;
            } else if self.target > self.current && info.start {
                // Up where the stream allows: after a base-layer picture
                // everything that follows is decodable (libwebrtc starts
                // each layer with a sync picture after it); at a sync
                // picture of the next layer up, that layer is.
                if tid == 0 {
                    self.current = self.target;
                } else if info.layer_sync && tid == self.current.saturating_add(1) {
                    self.current = tid;
                }
            }
        }
        let forwarded = info.tid.is_none() || tid <= self.current;
        let mut picture = Picture {
            timestamp,
            forwarded,
            picture_id: None,
            tl0_pic_idx: None,
        };
        if forwarded {
            if let Some((id, wide)) = info.picture_id {
                let mask = if wide { 0x7fff } else { 0x7f };
                if self.rebase
                    && let Some(last) = self.last_picture_id
                {
                    self.picture_offset = id.wrapping_sub(last.wrapping_add(1)) & 0x7fff;
                }
                let out = id.wrapping_sub(self.picture_offset) & mask;
                self.last_picture_id = Some(out);
                picture.picture_id = Some(out);
            }
            if let Some(idx) = info.tl0_pic_idx {
                if self.rebase
                    && let Some(last) = self.last_tl0
                {
                    let next = if tid == 0 { last.wrapping_add(1) } else { last };
                    self.tl0_offset = idx.wrapping_sub(next);
                }
                let out = idx.wrapping_sub(self.tl0_offset);
                self.last_tl0 = Some(out);
                picture.tl0_pic_idx = Some(out);
            }
            self.rebase = false;
        } else if info.picture_id.is_some() {
            // One picture id fewer from here on.
            self.picture_offset = self.picture_offset.wrapping_add(1) & 0x7fff;
        }
        self.head = (self.head + 1) % PICTURES;
        self.pictures[self.head] = picture;
        self.decided = true;
        picture
    }
}

/// Whether RTP timestamp `a` is after `b` (modulo 2^32).
fn is_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first packet with picture id `pid` (15 bits), `tl0`, `tid`, `y`.
    fn pkt(pid: u16, tl0: u8, tid: u8, y: bool) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            (tid << 6) | if y { 0x20 } else { 0 },
            0x11,
            0,
            0,
        ]
    }

    fn ids(_payload: &[u8], verdict: Verdict) -> Option<(u16, u8)> {
        let Verdict::Forward(r) = verdict else {
            return None;
        };
        assert!(r.patch.is_some(), "a patch for every rewritten packet");
        Some((r.picture_id.unwrap(), r.tl0_pic_idx.unwrap()))
    }

    /// The libwebrtc three-layer pattern from picture `pid`, TL0PICIDX
    /// `tl0`: (payload, timestamp, tid).
    fn stream(pid: u16, tl0: u8, frames: usize) -> Vec<(Vec<u8>, u32, u8)> {
        let mut tl0 = tl0;
        (0..frames)
            .map(|i| {
                let (tid, y) = [(0, false), (2, true), (1, true), (2, false)][i % 4];
                if tid == 0 && i > 0 {
                    tl0 = tl0.wrapping_add(1);
                }
                let p = pid.wrapping_add(i as u16) & 0x7fff;
                (pkt(p, tl0, tid, y), 3000 * i as u32, tid)
            })
            .collect()
    }

    #[test]
    fn parses_the_extended_descriptor() {
        let info = Vp8Info::parse(&pkt(0x1234, 7, 2, true)).unwrap();
        assert!(info.start);
        assert_eq!(info.tid, Some(2));
        assert!(info.layer_sync);
        assert_eq!(info.picture_id, Some((0x1234, true)));
        assert_eq!(info.tl0_pic_idx, Some(7));
        assert!(info.descriptor.is_some());
        // One-byte descriptor: nothing but S.
        let plain = Vp8Info::parse(&[0x10, 0x11, 0, 0]).unwrap();
        assert!(plain.start && plain.tid.is_none() && plain.picture_id.is_none());
        assert_eq!(info.header_offset, 6);
        let mut key = vec![0x90, 0x80, 0x85, 0x10, 0, 0, 0, 0x9d, 0x01, 0x2a];
        key.extend_from_slice(&640u16.to_le_bytes());
        key.extend_from_slice(&360u16.to_le_bytes());
        let k = Vp8Info::parse(&key).unwrap();
        assert_eq!(k.header_offset, 4);
        assert_eq!(keyframe_size(&key, &k), Some((640, 360)));
        assert_eq!(
            keyframe_size(&pkt(1, 1, 0, false), &info),
            None,
            "inter frame"
        );
        // Truncated extensions are refused, not read past.
        assert!(Vp8Info::parse(&[0x90, 0xe0, 0x80]).is_none());
        assert!(Vp8Info::parse(&[]).is_none());
    }

    #[test]
    fn dropping_layers_keeps_picture_ids_contiguous() {
        let mut s = Vp8Selector::new();
        s.target = 0;
        s.restart();
        let mut out = Vec::new();
        for (payload, ts, tid) in stream(100, 5, 12) {
            let info = Vp8Info::parse(&payload).unwrap();
            let v = s.packet(ts, &info);
            assert_eq!(v == Verdict::Drop, tid > 0, "tid {tid}");
            if let Some(ids) = ids(&payload, v) {
                out.push(ids);
            }
        }
        // Base layer only: pictures 100, 104, 108 become 100, 101, 102;
        // TL0PICIDX counts on.
        assert_eq!(out, vec![(100, 5), (101, 6), (102, 7)]);
    }

    #[test]
    fn going_up_waits_for_a_safe_picture_and_down_is_immediate() {
        let mut s = Vp8Selector::new();
        s.target = 0;
        s.restart();
        let frames = stream(0, 0, 16);
        let mut forwarded = Vec::new();
        for (i, (payload, ts, _)) in frames.iter().enumerate() {
            if i == 5 {
                s.target = 2;
            }
            if i == 11 {
                s.target = 1;
            }
            let info = Vp8Info::parse(payload).unwrap();
            if matches!(s.packet(*ts, &info), Verdict::Forward(_)) {
                forwarded.push(i);
            }
        }
        // 0 and 4 (base); 5 is a TL2 sync picture, but layer 1 is not
        // forwarded yet; 6 is TL1 with Y: layer 1 starts; 8 (base): every
        // layer up to 10; from 11 on, layers 0 and 1: 12, 14.
        assert_eq!(forwarded, vec![0, 4, 6, 8, 9, 10, 12, 14]);
    }

    #[test]
    fn a_switch_continues_the_ids_of_the_previous_stream() {
        let mut s = Vp8Selector::new();
        s.restart();
        for (payload, ts, _) in stream(500, 40, 4) {
            let info = Vp8Info::parse(&payload).unwrap();
            s.packet(ts, &info);
        }
        // Last sent: picture 503, TL0PICIDX 40. A keyframe of another
        // simulcast stream: picture 9000, TL0PICIDX 200.
        s.restart();
        let key = pkt(9000, 200, 0, false);
        let v = s.packet(100_000, &Vp8Info::parse(&key).unwrap());
        assert_eq!(ids(&key, v), Some((504, 41)));
        let next = pkt(9001, 200, 2, true);
        let v = s.packet(103_000, &Vp8Info::parse(&next).unwrap());
        assert_eq!(ids(&next, v), Some((505, 41)));
    }

    #[test]
    fn late_packets_follow_their_picture_and_very_late_ones_are_stale() {
        let mut s = Vp8Selector::new();
        s.target = 0;
        s.restart();
        let frames = stream(10, 1, 12);
        for (payload, ts, _) in &frames {
            s.packet(*ts, &Vp8Info::parse(payload).unwrap());
        }
        // A late packet of picture 8 (base, forwarded as 12) and of 9
        // (dropped).
        let (p8, t8, _) = &frames[8];
        let v = s.packet(*t8, &Vp8Info::parse(p8).unwrap());
        assert_eq!(ids(p8, v), Some((12, 3)));
        let (p9, t9, _) = &frames[9];
        assert_eq!(s.packet(*t9, &Vp8Info::parse(p9).unwrap()), Verdict::Drop);
        // Picture 0 is long forgotten.
        let (p0, t0, _) = &frames[0];
        assert_eq!(s.packet(*t0, &Vp8Info::parse(p0).unwrap()), Verdict::Stale);
    }
}
