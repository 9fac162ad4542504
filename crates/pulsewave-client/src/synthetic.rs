//! Synthetic media: paced audio and video packets that describe themselves,
//! so a receiver can check integrity and measure loss and latency.
//!
//! [`SyntheticSource`] produces, in real time, the RTP payloads of one track:
//! opus-sized audio packets every 20 ms, or video frames at a configured
//! frame rate and bitrate, each frame split into packets of at most
//! [`SyntheticConfig::max_packet_size`] bytes with the RTP marker on the
//! frame's last packet and a keyframe every
//! [`SyntheticConfig::keyframe_interval`] (or on request).
//!
//! # Payload layout
//!
//! Every payload carries, after an optional codec prefix, a 29-byte header
//! (big-endian) and a filler:
//!
//! ```text
//! offset size field
//!      0    4 magic            0x50575346 ("PWSF")
//!      4    8 sequence         packet number in this source: 0, 1, 2, ...
//!     12    8 send time        microseconds since the UNIX epoch
//!     20    4 frame number     0, 1, 2, ... (audio: one frame per packet)
//!     24    1 flags            bit 0 keyframe, bit 1 first packet of the
//!                              frame, bit 2 last packet of the frame
//!     25    2 packet index     index of this packet in its frame
//!     27    2 packet count     packets in the frame
//!     29    - filler           byte i = (sequence * 31 + i) mod 256
//! ```
//!
//! Codec prefixes, before the header:
//!
//! - **Opus** and **raw** video: none; the header starts at byte 0.
//! - **VP8**: a one-byte VP8 payload descriptor (RFC 7741): `0x10` (S bit,
//!   partition 0) on a frame's first packet, `0x00` on the others. The
//!   first packet then carries the 3-byte VP8 frame tag: `0x10 0x00 0x00`
//!   for a keyframe (P bit 0, show_frame 1), `0x11 0x00 0x00` for an inter
//!   frame, and a keyframe adds the 7-byte start code and size
//!   `0x9d 0x01 0x2a`, width and height (little-endian 16-bit). So the
//!   header is at offset 11 (keyframe, first packet), 4 (inter frame, first
//!   packet) or 1 (other packets). A server that reads VP8 descriptors sees
//!   keyframes where the header says so.
//!
//!   With [`SyntheticConfig::temporal_layers`] of 2 or 3, the descriptor is
//!   the extended one libwebrtc writes for temporal scalability (6 bytes):
//!   `0x90`/`0x80` (X, S), `0xe0` (I, L, T), a 15-bit picture id (one per
//!   frame), TL0PICIDX (one per base-layer frame) and the TID/Y octet.
//!   Frames follow libwebrtc's patterns: TIDs 0,1 (two layers) or 0,2,1,2
//!   (three), restarting at each keyframe; Y is set on frames that depend
//!   on the base layer only. Base-layer frames are larger, so the layers
//!   carry 60/100% (two) or 40/60/100% (three) of the bitrate, as
//!   libwebrtc allocates it.
//!
//! - **VP9**, **H264** and **AV1**: one byte, enough for a server to find
//!   keyframes. VP9: a payload descriptor with B (`0x08`) on a frame's first
//!   packet, E (`0x04`) on its last, P (`0x40`) on inter frames. H264: a NAL
//!   unit header, IDR (`0x65`) on a keyframe's first packet, else a non-IDR
//!   slice (`0x41`). AV1: an aggregation header with N (`0x08`, a new coded
//!   video sequence) on a keyframe's first packet, else `0x00`. The header
//!   is at offset 1.
//!
//! [`parse_synthetic`] finds the header in either form (and skips a VP8
//! descriptor with extensions, in case a server rewrote picture ids) and
//! checks the filler.
//!
//! # Pacing
//!
//! Frame `k` is due at `start + k / fps` and has RTP timestamp
//! `base + k * clock_rate / fps` (computed from `k`, so there is no drift).
//! Audio uses 50 packets per second (20 ms). The average video frame is
//! `bitrate / 8 / fps` bytes; a keyframe is three times that and inter
//! frames are shrunk so that the average over one keyframe interval matches
//! the bitrate.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulsewave_protocol::rtp::MediaKind;

/// The magic number that starts the synthetic header ("PWSF").
pub const SYNTHETIC_MAGIC: u32 = 0x5057_5346;

/// Length of the synthetic header, in bytes.
pub const SYNTHETIC_HEADER_LEN: usize = 29;

const FLAG_KEYFRAME: u8 = 1;
const FLAG_FIRST: u8 = 2;
const FLAG_LAST: u8 = 4;

/// When a source falls this many frames behind, it skips ahead instead of
/// sending a burst.
const MAX_CATCH_UP_FRAMES: u64 = 5;

/// What codec the payloads imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntheticCodec {
    /// Opus audio: header and filler only.
    Opus,
    /// VP8 video: VP8 payload descriptor and frame header before the header.
    Vp8,
    /// VP9 video: a one-byte VP9 payload descriptor before the header.
    Vp9,
    /// H264 video: a one-byte NAL unit header before the header.
    H264,
    /// AV1 video: a one-byte aggregation header before the header.
    Av1,
    /// Any other video codec: header and filler only.
    Raw,
}

/// Settings of a [`SyntheticSource`].
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Audio or video.
    pub kind: MediaKind,
    /// Which payload prefix to write.
    pub codec: SyntheticCodec,
    /// RTP clock rate (48000 for opus, 90000 for video).
    pub clock_rate: u32,
    /// Frames per second (audio: packets per second).
    pub fps: u32,
    /// Target bitrate of the payloads, in bits per second.
    pub bitrate_bps: u32,
    /// Interval between keyframes (video).
    pub keyframe_interval: Duration,
    /// Largest payload of one packet, in bytes.
    pub max_packet_size: usize,
    /// Width written in VP8 keyframe headers.
    pub width: u16,
    /// Height written in VP8 keyframe headers.
    pub height: u16,
    /// VP8 temporal layers: 1 (none, a one-byte descriptor), 2 or 3.
    pub temporal_layers: u8,
}

impl SyntheticConfig {
    /// Opus-like audio: 20 ms packets at 48 kHz, 48 kbit/s (about 90 to 150
    /// bytes per packet).
    pub fn opus() -> Self {
        Self {
            kind: MediaKind::Audio,
            codec: SyntheticCodec::Opus,
            clock_rate: 48_000,
            fps: 50,
            bitrate_bps: 48_000,
            keyframe_interval: Duration::ZERO,
            max_packet_size: 1100,
            width: 0,
            height: 0,
            temporal_layers: 1,
        }
    }

    /// VP8-like video at `fps` frames per second and `bitrate_bps`, a
    /// keyframe every 2 seconds, 640x360.
    pub fn vp8(fps: u32, bitrate_bps: u32) -> Self {
        Self {
            kind: MediaKind::Video,
            codec: SyntheticCodec::Vp8,
            clock_rate: 90_000,
            fps,
            bitrate_bps,
            keyframe_interval: Duration::from_secs(2),
            max_packet_size: 1100,
            width: 640,
            height: 360,
            temporal_layers: 1,
        }
    }

    /// Video without a codec prefix (for H264 or VP9 tracks).
    pub fn raw_video(fps: u32, bitrate_bps: u32) -> Self {
        Self {
            codec: SyntheticCodec::Raw,
            ..Self::vp8(fps, bitrate_bps)
        }
    }

    /// The usual configuration for a router codec MIME type: opus for
    /// audio, the codec's layout for VP8, VP9, H264 and AV1, raw for other
    /// video (30 fps, 500 kbit/s).
    pub fn for_mime(mime_type: &str) -> Self {
        let mime = mime_type.to_ascii_lowercase();
        if mime.starts_with("audio/") {
            return Self::opus();
        }
        let codec = match mime.as_str() {
            "video/vp8" => SyntheticCodec::Vp8,
            "video/vp9" => SyntheticCodec::Vp9,
            "video/h264" => SyntheticCodec::H264,
            "video/av1" => SyntheticCodec::Av1,
            _ => SyntheticCodec::Raw,
        };
        Self {
            codec,
            ..Self::vp8(30, 500_000)
        }
    }
}

/// One RTP payload made by a [`SyntheticSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticPacket {
    /// The RTP payload.
    pub payload: Vec<u8>,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// RTP marker: last packet of a video frame (always set for audio).
    pub marker: bool,
    /// Whether the frame is a keyframe.
    pub keyframe: bool,
    /// The packet's sequence in the source (as in the header).
    pub sequence: u64,
    /// The frame number (as in the header).
    pub frame_number: u32,
}

/// What [`parse_synthetic`] read from a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticInfo {
    /// Packet number in the source.
    pub sequence: u64,
    /// Send time, microseconds since the UNIX epoch.
    pub send_time_us: u64,
    /// Frame number.
    pub frame_number: u32,
    /// Keyframe flag of the header.
    pub keyframe: bool,
    /// First packet of its frame.
    pub first_in_frame: bool,
    /// Last packet of its frame.
    pub last_in_frame: bool,
    /// Index of the packet in its frame.
    pub packet_index: u16,
    /// Packets in the frame.
    pub packet_count: u16,
    /// Offset of the header in the payload (0 without a codec prefix).
    pub header_offset: usize,
    /// For VP8 first packets: the keyframe bit of the VP8 frame tag.
    pub vp8_keyframe: Option<bool>,
    /// For VP8 with temporal layers: the TID of the descriptor.
    pub temporal_layer: Option<u8>,
    /// The filler matches the sequence and, for VP8 first packets, the VP8
    /// keyframe bit matches the header's flag.
    pub intact: bool,
}

impl SyntheticInfo {
    /// The send time.
    pub fn send_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.send_time_us)
    }

    /// Time from sending to `now` (zero if the clocks disagree).
    pub fn latency(&self, now: SystemTime) -> Duration {
        now.duration_since(self.send_time()).unwrap_or_default()
    }
}

fn filler_byte(sequence: u64, i: usize) -> u8 {
    (sequence.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Skips a VP8 payload descriptor; returns `(S bit, partition id, length,
/// TID)`.
fn vp8_descriptor(p: &[u8]) -> Option<(bool, u8, usize, Option<u8>)> {
    let b0 = *p.first()?;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    let mut off = 1;
    let mut tid = None;
    if b0 & 0x80 != 0 {
        let x = *p.get(off)?;
        off += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            let m = *p.get(off)?;
            off += if m & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            off += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            if x & 0x20 != 0 {
                tid = Some(*p.get(off)? >> 6);
            }
            off += 1; // TID / KEYIDX
        }
    }
    (off <= p.len()).then_some((s, pid, off, tid))
}

fn read_header(p: &[u8], off: usize) -> Option<(u64, u64, u32, u8, u16, u16)> {
    let h = p.get(off..off + SYNTHETIC_HEADER_LEN)?;
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if u32_at(0) != SYNTHETIC_MAGIC {
        return None;
    }
    Some((
        u64_at(4),
        u64_at(12),
        u32_at(20),
        h[24],
        u16_at(25),
        u16_at(27),
    ))
}

/// Reads the synthetic header of a payload made by [`SyntheticSource`]
/// (with or without a VP8 prefix) and checks its filler. `None` when the
/// payload carries no synthetic header.
pub fn parse_synthetic(payload: &[u8]) -> Option<SyntheticInfo> {
    let mut temporal_layer = None;
    let (offset, vp8_keyframe) = if read_header(payload, 0).is_some() {
        (0, None)
    } else if read_header(payload, 1).is_some() {
        // A one-byte prefix (VP9, H264, AV1), or a VP8 packet after the
        // first of its frame.
        (1, None)
    } else {
        let (s, pid, mut off, tid) = vp8_descriptor(payload)?;
        temporal_layer = tid;
        let mut key = None;
        if s && pid == 0 {
            let tag = *payload.get(off)?;
            let is_key = tag & 0x01 == 0;
            off += 3;
            if is_key {
                if payload.get(off..off + 3)? != [0x9d, 0x01, 0x2a] {
                    return None;
                }
                off += 7;
            }
            key = Some(is_key);
        }
        (off, key)
    };
    let (sequence, send_time_us, frame_number, flags, packet_index, packet_count) =
        read_header(payload, offset)?;
    let filler = payload.get(offset + SYNTHETIC_HEADER_LEN..)?;
    let filler_ok = filler
        .iter()
        .enumerate()
        .all(|(i, b)| *b == filler_byte(sequence, i));
    let keyframe = flags & FLAG_KEYFRAME != 0;
    let vp8_ok = vp8_keyframe.is_none_or(|k| k == keyframe);
    Some(SyntheticInfo {
        sequence,
        send_time_us,
        frame_number,
        keyframe,
        first_in_frame: flags & FLAG_FIRST != 0,
        last_in_frame: flags & FLAG_LAST != 0,
        packet_index,
        packet_count,
        header_offset: offset,
        vp8_keyframe,
        temporal_layer,
        intact: filler_ok && vp8_ok,
    })
}

/// A paced source of synthetic RTP payloads for one track. See the [module
/// documentation](self) for the layout and pacing.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    config: SyntheticConfig,
    start: Option<Instant>,
    next_frame: u64,
    sequence: u64,
    rtp_base: u32,
    force_keyframe: bool,
    skipped_frames: u64,
    /// VP8 temporal layering: picture id of the next frame, TL0PICIDX of
    /// the last base-layer frame, frames since the last keyframe.
    picture_id: u16,
    tl0_pic_idx: u8,
    since_keyframe: u64,
}

/// The TID of the `i`th frame after a keyframe, and whether it depends on
/// the base layer only (the Y bit), in libwebrtc's patterns.
fn temporal_pattern(layers: u8, i: u64) -> (u8, bool) {
    match layers {
        2 => match i % 2 {
            0 => (0, false),
            _ => (1, true),
        },
        3 => match i % 4 {
            0 => (0, false),
            1 => (2, true),
            2 => (1, true),
            _ => (2, false),
        },
        _ => (0, false),
    }
}

impl SyntheticSource {
    /// A source with `config`; the RTP timestamp starts at a random value.
    pub fn new(config: SyntheticConfig) -> Self {
        Self {
            config,
            start: None,
            next_frame: 0,
            sequence: 0,
            rtp_base: rand::random(),
            force_keyframe: false,
            skipped_frames: 0,
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0_pic_idx: rand::random(),
            since_keyframe: 0,
        }
    }

    /// Opus-like audio ([`SyntheticConfig::opus`]).
    pub fn audio() -> Self {
        Self::new(SyntheticConfig::opus())
    }

    /// VP8-like video ([`SyntheticConfig::vp8`]).
    pub fn vp8(fps: u32, bitrate_bps: u32) -> Self {
        Self::new(SyntheticConfig::vp8(fps, bitrate_bps))
    }

    /// With the RTP timestamp of frame 0 set to `base` (for reproducible
    /// tests).
    pub fn with_rtp_base(mut self, base: u32) -> Self {
        self.rtp_base = base;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    fn fps(&self) -> u64 {
        u64::from(self.config.fps.max(1))
    }

    /// Time between frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / self.fps())
    }

    /// When frame `k` is due after the start.
    pub fn frame_offset(&self, k: u64) -> Duration {
        let nanos = u128::from(k) * 1_000_000_000 / u128::from(self.fps());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The RTP timestamp of frame `k`.
    pub fn rtp_time_of(&self, k: u64) -> u32 {
        let ticks = u128::from(k) * u128::from(self.config.clock_rate) / u128::from(self.fps());
        self.rtp_base.wrapping_add(ticks as u32)
    }

    /// When the next frame is due; `None` before the first
    /// [`poll`](Self::poll).
    pub fn next_frame_at(&self) -> Option<Instant> {
        self.start.map(|s| s + self.frame_offset(self.next_frame))
    }

    /// Frames skipped because the caller fell behind.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// Packets made so far.
    pub fn packets_sent(&self) -> u64 {
        self.sequence
    }

    /// Makes the next frame a keyframe (after a keyframe request).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    fn keyframe_every(&self) -> u64 {
        let frames = self.config.keyframe_interval.as_secs_f64() * self.config.fps as f64;
        (frames.round() as u64).max(1)
    }

    fn is_keyframe(&self, k: u64) -> bool {
        self.config.kind == MediaKind::Video
            && (self.force_keyframe
                || self.config.keyframe_interval.is_zero()
                || k.is_multiple_of(self.keyframe_every()))
    }

    /// The VP8 temporal layers in use (1 for other codecs).
    fn temporal_layers(&self) -> u8 {
        if self.config.codec == SyntheticCodec::Vp8 && self.config.kind == MediaKind::Video {
            self.config.temporal_layers.clamp(1, 3)
        } else {
            1
        }
    }

    /// Total payload bytes of frame `k`, with temporal layer `tid`.
    fn frame_size(&self, k: u64, keyframe: bool, tid: u8) -> usize {
        let avg = (u64::from(self.config.bitrate_bps) / 8 / self.fps()).max(1) as usize;
        // Base-layer frames are larger: 1.2x / 0.8x (two layers), 1.6x /
        // 0.8x / 0.8x (three).
        let avg = match (self.temporal_layers(), tid) {
            (2, 0) => avg * 6 / 5,
            (3, 0) => avg * 8 / 5,
            (1, _) => avg,
            _ => avg * 4 / 5,
        };
        match self.config.kind {
            MediaKind::Audio => {
                // Vary by +-25% deterministically, as opus does with content.
                let spread = avg / 2 + 1;
                avg * 3 / 4 + (k.wrapping_mul(37) as usize) % spread
            }
            MediaKind::Video => {
                let n = self.keyframe_every() as usize;
                if keyframe {
                    avg * 3
                } else if n > 3 {
                    avg * (n - 3) / (n - 1)
                } else {
                    avg
                }
            }
        }
    }

    /// Every packet due at `now`: starts the clock on the first call (which
    /// returns frame 0), then returns the frames whose time has come. A
    /// caller more than five frames late skips the missed frames.
    pub fn poll(&mut self, now: Instant) -> Vec<SyntheticPacket> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        // Frames 0..=due are due.
        let due = (elapsed.as_nanos() * u128::from(self.fps()) / 1_000_000_000) as u64;
        if due >= self.next_frame + MAX_CATCH_UP_FRAMES {
            self.skipped_frames += due - self.next_frame;
            self.next_frame = due;
        }
        let mut out = Vec::new();
        let wall = SystemTime::now();
        while self.next_frame <= due {
            out.extend(self.next_frame_at_wall(wall));
        }
        out
    }

    /// Waits (tokio) until the next frame is due and returns its packets.
    pub async fn tick(&mut self) -> Vec<SyntheticPacket> {
        if let Some(at) = self.next_frame_at() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        self.poll(Instant::now())
    }

    /// Makes the next frame now, ignoring pacing, stamped with `send_time`.
    pub fn next_frame_at_wall(&mut self, send_time: SystemTime) -> Vec<SyntheticPacket> {
        let k = self.next_frame;
        self.next_frame += 1;
        let keyframe = self.is_keyframe(k);
        self.force_keyframe = false;
        let rtp_time = self.rtp_time_of(k);
        let send_us = unix_micros(send_time);
        let layers = self.temporal_layers();
        if keyframe {
            self.since_keyframe = 0;
        }
        let (tid, layer_sync) = temporal_pattern(layers, self.since_keyframe);
        self.since_keyframe += 1;
        let picture_id = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        if tid == 0 {
            self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        }
        let size = self.frame_size(k, keyframe, tid);
        let codec = self.config.codec;
        let vp8 = codec == SyntheticCodec::Vp8;
        // The VP8 payload descriptor, after its first byte.
        let extension: &[u8] = &if layers > 1 {
            [
                0xe0,
                0x80 | (picture_id >> 8) as u8,
                picture_id as u8,
                self.tl0_pic_idx,
                (tid << 6) | if layer_sync { 0x20 } else { 0 },
            ]
        } else {
            [0; 5]
        };
        let extension = if layers > 1 { extension } else { &[] };
        let descriptor_len = 1 + extension.len();
        let one_byte = matches!(
            codec,
            SyntheticCodec::Vp9 | SyntheticCodec::H264 | SyntheticCodec::Av1
        );
        let first_prefix = if vp8 {
            descriptor_len + 3 + if keyframe { 7 } else { 0 }
        } else {
            usize::from(one_byte)
        };
        let other_prefix = if vp8 {
            descriptor_len
        } else {
            usize::from(one_byte)
        };
        let max = self
            .config
            .max_packet_size
            .max(first_prefix + SYNTHETIC_HEADER_LEN + 1);
        let count = size.div_ceil(max).max(1);
        let count16 = u16::try_from(count).unwrap_or(u16::MAX);
        let per = size / count;
        let mut packets = Vec::with_capacity(count);
        for i in 0..count {
            let first = i == 0;
            let last = i + 1 == count;
            let prefix = if first { first_prefix } else { other_prefix };
            let target = if last { size - per * (count - 1) } else { per };
            let len = target.clamp(prefix + SYNTHETIC_HEADER_LEN, max);
            let sequence = self.sequence;
            self.sequence += 1;
            let mut p = Vec::with_capacity(len);
            if vp8 {
                let x = if extension.is_empty() { 0 } else { 0x80 };
                if first {
                    p.push(x | 0x10);
                    p.extend_from_slice(extension);
                    p.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0, 0]);
                    if keyframe {
                        p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                        p.extend_from_slice(&self.config.width.to_le_bytes());
                        p.extend_from_slice(&self.config.height.to_le_bytes());
                    }
                } else {
                    p.push(x);
                    p.extend_from_slice(extension);
                }
            }
            match codec {
                SyntheticCodec::Vp9 => p.push(
                    if first { 0x08 } else { 0 }
                        | if last { 0x04 } else { 0 }
                        | if keyframe { 0 } else { 0x40 },
                ),
                SyntheticCodec::H264 => p.push(if first && keyframe { 0x65 } else { 0x41 }),
                SyntheticCodec::Av1 => p.push(if first && keyframe { 0x08 } else { 0x00 }),
                SyntheticCodec::Opus | SyntheticCodec::Vp8 | SyntheticCodec::Raw => {}
            }
            let mut flags = 0;
            if keyframe {
                flags |= FLAG_KEYFRAME;
            }
            if first {
                flags |= FLAG_FIRST;
            }
            if last {
                flags |= FLAG_LAST;
            }
            p.extend_from_slice(&SYNTHETIC_MAGIC.to_be_bytes());
            p.extend_from_slice(&sequence.to_be_bytes());
            p.extend_from_slice(&send_us.to_be_bytes());
            p.extend_from_slice(&(k as u32).to_be_bytes());
            p.push(flags);
            p.extend_from_slice(&u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes());
            p.extend_from_slice(&count16.to_be_bytes());
            let filler = len - p.len();
            p.extend((0..filler).map(|j| filler_byte(sequence, j)));
            packets.push(SyntheticPacket {
                payload: p,
                rtp_time,
                marker: last,
                keyframe,
                sequence,
                frame_number: k as u32,
            });
        }
        packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_packets_are_opus_sized_and_paced() {
        let mut s = SyntheticSource::audio().with_rtp_base(1000);
        let t0 = Instant::now();
        let first = s.poll(t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].rtp_time, 1000);
        assert!(first[0].marker);
        assert_eq!(s.next_frame_at(), Some(t0 + Duration::from_millis(20)));
        // Nothing before 20 ms, one packet at 20 ms, 960 ticks later.
        assert!(s.poll(t0 + Duration::from_millis(19)).is_empty());
        let p = s.poll(t0 + Duration::from_millis(20));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].rtp_time, 1960);
        // One second: 50 packets in total.
        let rest = s.poll(t0 + Duration::from_millis(1000));
        assert!(rest.len() <= 5, "skips instead of bursting");
        let mut s = SyntheticSource::audio();
        let mut n = 0;
        let mut sizes = Vec::new();
        for ms in (0..1000).step_by(20) {
            for p in s.poll(t0 + Duration::from_millis(ms)) {
                sizes.push(p.payload.len());
                n += 1;
            }
        }
        assert_eq!(n, 50);
        assert!(sizes.iter().all(|l| (80..=160).contains(l)), "{sizes:?}");
    }

    #[test]
    fn vp8_temporal_layers_follow_libwebrtc_patterns() {
        let config = SyntheticConfig {
            temporal_layers: 3,
            keyframe_interval: Duration::from_secs(100),
            ..SyntheticConfig::vp8(30, 900_000)
        };
        let mut s = SyntheticSource::new(config);
        let wall = SystemTime::now();
        let mut bytes = [0usize; 3];
        let mut last: Option<(u16, u8)> = None;
        for k in 0..121u64 {
            let frame = s.next_frame_at_wall(wall);
            let first = &frame[0].payload;
            assert_eq!(first[0], 0x90, "X and S on the first packet");
            assert_eq!(first[1], 0xe0, "I, L, T");
            let pid = (u16::from(first[2] & 0x7f) << 8) | u16::from(first[3]);
            let tl0 = first[4];
            let tid = first[5] >> 6;
            let y = first[5] & 0x20 != 0;
            assert_eq!((tid, y), temporal_pattern(3, k), "frame {k}");
            if let Some((p, t)) = last {
                assert_eq!(pid, (p + 1) & 0x7fff, "one picture id per frame");
                let want = if tid == 0 { t.wrapping_add(1) } else { t };
                assert_eq!(tl0, want, "TL0PICIDX counts base-layer frames");
            }
            last = Some((pid, tl0));
            for p in &frame {
                assert_eq!(p.payload[0] & 0x80, 0x80);
                let info = parse_synthetic(&p.payload).expect("synthetic");
                assert!(info.intact);
                assert_eq!(info.temporal_layer, Some(tid));
                if k > 0 {
                    bytes[usize::from(tid)] += p.payload.len();
                }
            }
        }
        // 120 frames after the keyframe: the layers carry 40/60/100%.
        let total: usize = bytes.iter().sum();
        let share = |n: usize| bytes[..n].iter().sum::<usize>() as f64 / total as f64;
        assert!((share(1) - 0.4).abs() < 0.03, "TL0 {}", share(1));
        assert!((share(2) - 0.6).abs() < 0.03, "TL0+1 {}", share(2));
        // A keyframe restarts the pattern on the base layer.
        s.request_keyframe();
        let key = s.next_frame_at_wall(wall);
        assert!(key[0].keyframe);
        assert_eq!(key[0].payload[5] >> 6, 0);
        let next = s.next_frame_at_wall(wall);
        assert_eq!(next[0].payload[5] >> 6, 2);
    }

    #[test]
    fn video_frames_split_and_mark() {
        let mut s = SyntheticSource::vp8(30, 1_200_000).with_rtp_base(0);
        let t0 = Instant::now();
        let key = s.poll(t0);
        // 1.2 Mbit/s / 30 fps = 5000 bytes; keyframe 15000 bytes.
        let total: usize = key.iter().map(|p| p.payload.len()).sum();
        assert!((14_900..=15_100).contains(&total), "{total}");
        assert!(key.iter().all(|p| p.payload.len() <= 1100));
        assert!(key.iter().all(|p| p.keyframe));
        assert_eq!(key.iter().filter(|p| p.marker).count(), 1);
        assert!(key.last().unwrap().marker);
        // The server's keyframe test: S bit, PID 0, P bit 0.
        assert_eq!(key[0].payload[0], 0x10);
        assert_eq!(key[0].payload[1] & 1, 0);
        assert_eq!(key[1].payload[0], 0x00);

        let next = s.poll(t0 + Duration::from_nanos(33_333_334));
        assert!(!next.is_empty());
        assert!(!next[0].keyframe);
        assert_eq!(next[0].payload[1] & 1, 1);
        assert_eq!(next[0].rtp_time, 3000);

        // Average over one keyframe interval matches the bitrate.
        let mut s = SyntheticSource::vp8(30, 1_200_000);
        let mut bytes = 0;
        for _ in 0..60 {
            bytes += s
                .next_frame_at_wall(SystemTime::now())
                .iter()
                .map(|p| p.payload.len())
                .sum::<usize>();
        }
        let bps = bytes * 8 / 2;
        assert!((1_150_000..=1_250_000).contains(&bps), "{bps}");
    }

    #[test]
    fn keyframes_every_interval_and_on_request() {
        let mut s = SyntheticSource::vp8(10, 100_000);
        let keys: Vec<bool> = (0..41)
            .map(|_| s.next_frame_at_wall(SystemTime::now())[0].keyframe)
            .collect();
        let idx: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(idx, [0, 20, 40]);
        s.request_keyframe();
        assert!(s.next_frame_at_wall(SystemTime::now())[0].keyframe);
        assert!(!s.next_frame_at_wall(SystemTime::now())[0].keyframe);
    }

    #[test]
    fn parse_round_trip() {
        let sent = SystemTime::now();
        for mut s in [
            SyntheticSource::audio(),
            SyntheticSource::vp8(30, 2_000_000),
            SyntheticSource::new(SyntheticConfig::raw_video(30, 2_000_000)),
        ] {
            let mut seq = 0;
            for f in 0..3u32 {
                let pkts = s.next_frame_at_wall(sent);
                let n = pkts.len();
                for (i, p) in pkts.iter().enumerate() {
                    let info = parse_synthetic(&p.payload).unwrap();
                    assert!(info.intact, "{info:?}");
                    assert_eq!(info.sequence, seq);
                    assert_eq!(info.frame_number, f);
                    assert_eq!(info.keyframe, p.keyframe);
                    assert_eq!(info.first_in_frame, i == 0);
                    assert_eq!(info.last_in_frame, i + 1 == n);
                    assert_eq!(usize::from(info.packet_count), n);
                    assert_eq!(usize::from(info.packet_index), i);
                    assert_eq!(info.send_time_us, unix_micros(sent));
                    assert!(
                        info.latency(sent + Duration::from_millis(5)) >= Duration::from_millis(5)
                    );
                    seq += 1;
                }
            }
        }
    }

    #[test]
    fn parse_detects_damage_and_foreign_payloads() {
        let mut s = SyntheticSource::vp8(30, 500_000);
        let mut p = s.next_frame_at_wall(SystemTime::now())[0].payload.clone();
        assert_eq!(parse_synthetic(&p).unwrap().vp8_keyframe, Some(true));
        let last = p.len() - 1;
        p[last] ^= 0xff;
        assert!(!parse_synthetic(&p).unwrap().intact);
        assert!(parse_synthetic(&[]).is_none());
        assert!(parse_synthetic(&[0x10, 0x10, 0, 0]).is_none());
        assert!(parse_synthetic(&[0x90, 0x80]).is_none());
        assert!(parse_synthetic(&[0u8; 100]).is_none());
    }

    #[test]
    fn parse_skips_extended_vp8_descriptor() {
        let mut s = SyntheticSource::vp8(30, 500_000);
        let p = s.next_frame_at_wall(SystemTime::now())[0].payload.clone();
        // Rewrite the descriptor as X=1, I=1 with a 15-bit picture id, as a
        // server might.
        let mut q = vec![0x90, 0x80, 0x81, 0x23];
        q.extend_from_slice(&p[1..]);
        let info = parse_synthetic(&q).unwrap();
        assert!(info.intact);
        assert_eq!(info.header_offset, 4 + 3 + 7);
    }
}
