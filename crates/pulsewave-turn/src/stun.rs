//! A minimal STUN codec (RFC 8489) with the TURN attributes (RFC 8656).
//!
//! [`Message::parse`] borrows a received buffer and never panics: every
//! length is checked, the attribute count is bounded
//! ([`MAX_ATTRIBUTES`]). [`MessageBuilder`] writes a message and closes it
//! with MESSAGE-INTEGRITY and FINGERPRINT. [`ChannelData`] is TURN's
//! 4-byte-header framing. Public so that test clients can speak TURN with
//! the same code the server uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

use crate::Error;

/// The STUN magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of a STUN header.
pub const HEADER_LEN: usize = 20;
/// Most attributes read from one message; more is malformed.
pub const MAX_ATTRIBUTES: usize = 32;

/// STUN/TURN methods this crate knows.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication).
    pub const SEND: u16 = 0x006;
    /// Data (indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types this crate knows.
pub mod attr {
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (seconds).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT (accepted and ignored).
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The class of a STUN message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A request (expects a response).
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }
}

fn encode_type(class: Class, method: u16) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

fn decode_type(t: u16) -> (Class, u16) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (class, method)
}

/// Whether `buf` starts like a STUN message (first two bits zero and the
/// magic cookie), as opposed to ChannelData.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

/// A parsed STUN message borrowing its buffer.
#[derive(Debug)]
pub struct Message<'a> {
    /// The class.
    pub class: Class,
    /// The method (see [`method`]).
    pub method: u16,
    /// The transaction id.
    pub transaction_id: [u8; 12],
    attrs: Vec<(u16, &'a [u8])>,
    raw: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute's header, if present.
    integrity_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses one whole STUN message (the buffer must hold exactly it).
    /// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are
    /// ignored, as RFC 8489 §14.5 says.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if !is_stun(buf) {
            return Err(Error::Malformed("not a STUN message"));
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if !len.is_multiple_of(4) || HEADER_LEN + len != buf.len() {
            return Err(Error::Malformed("STUN length"));
        }
        let (class, method) = decode_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&buf[8..20]);
        let mut attrs = Vec::new();
        let mut integrity_at = None;
        let mut at = HEADER_LEN;
        while at < buf.len() {
            let header = buf
                .get(at..at + 4)
                .ok_or(Error::Malformed("attribute header"))?;
            let ty = u16::from_be_bytes([header[0], header[1]]);
            let alen = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let value = buf
                .get(at + 4..at + 4 + alen)
                .ok_or(Error::Malformed("attribute length"))?;
            let padded = (alen + 3) & !3;
            if integrity_at.is_none() || ty == attr::FINGERPRINT {
                if attrs.len() == MAX_ATTRIBUTES {
                    return Err(Error::Malformed("too many attributes"));
                }
                attrs.push((ty, value));
            }
            if ty == attr::MESSAGE_INTEGRITY && integrity_at.is_none() {
                if alen != 20 {
                    return Err(Error::Malformed("MESSAGE-INTEGRITY length"));
                }
                integrity_at = Some(at);
            }
            at += 4 + padded;
        }
        if at != buf.len() {
            return Err(Error::Malformed("attribute padding"));
        }
        Ok(Self {
            class,
            method,
            transaction_id,
            attrs,
            raw: buf,
            integrity_at,
        })
    }

    /// The value of the first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
    }

    /// Every attribute of type `ty`, in order.
    pub fn get_all(&self, ty: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs
            .iter()
            .filter(move |(t, _)| *t == ty)
            .map(|(_, v)| *v)
    }

    /// Attribute types present, in order.
    pub fn attribute_types(&self) -> impl Iterator<Item = u16> + '_ {
        self.attrs.iter().map(|(t, _)| *t)
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE).
    pub fn get_str(&self, ty: u16) -> Option<&'a str> {
        self.get(ty).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 4-byte attribute as `u32` (LIFETIME).
    pub fn get_u32(&self, ty: u16) -> Option<u32> {
        let v = self.get(ty)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// An XOR-*-ADDRESS attribute.
    pub fn get_xor_addr(&self, ty: u16) -> Option<SocketAddr> {
        decode_xor_addr(self.get(ty)?, &self.transaction_id)
    }

    /// Decodes an XOR-*-ADDRESS value of this message (one of
    /// [`get_all`](Self::get_all)'s).
    pub fn decode_xor_addr(&self, value: &[u8]) -> Option<SocketAddr> {
        decode_xor_addr(value, &self.transaction_id)
    }

    /// ERROR-CODE as `(code, reason)`.
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.get(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x7) * 100 + u16::from(v[3]);
        Some((code, std::str::from_utf8(&v[4..]).unwrap_or("")))
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 with `key`), in constant time.
    /// False when it is absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(expected) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        let mut covered = self.raw[..at].to_vec();
        // The length field counts up to the end of MESSAGE-INTEGRITY.
        let len = (at + 24 - HEADER_LEN) as u16;
        covered[2..4].copy_from_slice(&len.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        hmac::verify(&key, &covered, expected).is_ok()
    }
}

fn decode_xor_addr(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match v[1] {
        0x01 if v.len() == 8 => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 if v.len() == 20 => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(tid);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn encode_xor_addr(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut out = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            for (i, b) in ip.octets().iter().enumerate() {
                out.push(b ^ cookie[i]);
            }
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(tid);
            for (i, b) in ip.octets().iter().enumerate() {
                out.push(b ^ mask[i]);
            }
        }
    }
    out
}

/// Writes a STUN message.
///
/// ```
/// use pulsewave_turn::stun::{attr, method, Class, Message, MessageBuilder};
///
/// let mut b = MessageBuilder::new(Class::Request, method::ALLOCATE, [7; 12]);
/// b.add_u32(attr::LIFETIME, 600);
/// let bytes = b.finish_with_integrity(b"key");
/// let m = Message::parse(&bytes).unwrap();
/// assert_eq!(m.get_u32(attr::LIFETIME), Some(600));
/// assert!(m.verify_integrity(b"key"));
/// ```
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl MessageBuilder {
    /// Starts a message.
    pub fn new(class: Class, method: u16, transaction_id: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&encode_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        Self {
            buf,
            tid: transaction_id,
        }
    }

    /// Adds an attribute (padded to 4 bytes). Values longer than 65535
    /// bytes are cut.
    pub fn add(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_len();
        self
    }

    /// Adds a 4-byte attribute.
    pub fn add_u32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.add(ty, &value.to_be_bytes())
    }

    /// Adds an XOR-*-ADDRESS attribute.
    pub fn add_xor_addr(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let v = encode_xor_addr(addr, &self.tid);
        self.add(ty, &v)
    }

    /// Adds ERROR-CODE.
    pub fn add_error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &v)
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) and FINGERPRINT.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        // The length covers MESSAGE-INTEGRITY while it is computed.
        let len = (self.buf.len() + 24 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = hmac::sign(&key, &self.buf);
        self.add(attr::MESSAGE_INTEGRITY, tag.as_ref());
        self.finish()
    }

    /// Adds FINGERPRINT and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() + 8 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&self.buf) ^ 0x5354_554E;
        self.add_u32(attr::FINGERPRINT, crc);
        self.buf
    }

    /// Returns the bytes without FINGERPRINT (indications towards clients).
    pub fn finish_plain(self) -> Vec<u8> {
        self.buf
    }
}

/// A TURN ChannelData message (RFC 8656 §12.4).
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number (0x4000..=0x7FFF).
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses ChannelData; trailing padding is allowed.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < 4 || buf[0] & 0xC0 != 0x40 {
            return Err(Error::Malformed("not ChannelData"));
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf
            .get(4..4 + len)
            .ok_or(Error::Malformed("ChannelData length"))?;
        Ok(Self { channel, data })
    }

    /// Encodes ChannelData, padded to 4 bytes when `pad` (stream transports).
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let len = data.len().min(usize::from(u16::MAX));
        let mut out = Vec::with_capacity(4 + len + 3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&data[..len]);
        if pad {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
        out
    }
}

/// Splits a TURN byte stream (TCP or TLS) into messages: STUN messages
/// and ChannelData (padded to 4 bytes), with no other framing
/// (RFC 8656 §12.5).
///
/// Returns the length of the first whole message in `buf`, `Ok(None)` if
/// more bytes are needed, or an error if the stream is not TURN (the
/// connection should be closed). A message is at most 65555 bytes, so a
/// reader's buffer is bounded.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = match buf[0] >> 6 {
        0 => {
            if buf.len() >= 8
                && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE
            {
                return Err(Error::Malformed("STUN without the magic cookie"));
            }
            HEADER_LEN + len
        }
        1 => 4 + ((len + 3) & !3),
        _ => return Err(Error::Malformed("not STUN or ChannelData on a stream")),
    };
    Ok((buf.len() >= total).then_some(total))
}

/// Largest message [`stream_frame_len`] can return.
pub const MAX_STREAM_FRAME: usize = HEADER_LEN + u16::MAX as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_roundtrip() {
        for m in [
            method::BINDING,
            method::ALLOCATE,
            method::CHANNEL_BIND,
            method::DATA,
        ] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(decode_type(encode_type(c, m)), (c, m));
            }
        }
        // Known values: Allocate request 0x0003, success 0x0103, error 0x0113.
        assert_eq!(encode_type(Class::Request, method::ALLOCATE), 0x0003);
        assert_eq!(encode_type(Class::Success, method::ALLOCATE), 0x0103);
        assert_eq!(encode_type(Class::Error, method::ALLOCATE), 0x0113);
        assert_eq!(encode_type(Class::Indication, method::SEND), 0x0016);
    }

    #[test]
    fn xor_addresses_roundtrip() {
        let tid = [3u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:443"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(decode_xor_addr(&encode_xor_addr(a, &tid), &tid), Some(a));
        }
    }

    /// RFC 5769 §2.1, the sample request: MESSAGE-INTEGRITY with the
    /// password "VOkJxbRl1RmTxUk/WvJxBt" and FINGERPRINT.
    #[test]
    fn rfc5769_sample_request() {
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae\
                   802200105354554e207465737420636c69656e74\
                   002400046e0001ff80290008932ff9b151263b36\
                   000600096576746a3a683676592020200008001\
                   49aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
                   80280004e57a3bcf";
        let hex: String = hex.split_whitespace().collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.method, method::BINDING);
        assert_eq!(m.get_str(attr::USERNAME), Some("evtj:h6vY"));
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        let fp_at = bytes.len() - 8;
        let crc =
            crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes[..fp_at]) ^ 0x5354_554E;
        assert_eq!(m.get_u32(attr::FINGERPRINT), Some(crc));
    }

    #[test]
    fn builder_integrity_and_fingerprint() {
        let mut b = MessageBuilder::new(Class::Request, method::ALLOCATE, [1; 12]);
        b.add(attr::USERNAME, b"user")
            .add_u32(attr::REQUESTED_TRANSPORT, 17 << 24);
        let bytes = b.finish_with_integrity(b"k");
        let m = Message::parse(&bytes).unwrap();
        assert!(m.verify_integrity(b"k"));
        assert!(!m.verify_integrity(b"x"));
        assert!(m.get(attr::FINGERPRINT).is_some());
        // A flipped bit before MESSAGE-INTEGRITY breaks it.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 5] ^= 1;
        assert!(!Message::parse(&bad).unwrap().verify_integrity(b"k"));
    }

    #[test]
    fn malformed_never_panics() {
        let mut b = MessageBuilder::new(Class::Request, method::ALLOCATE, [1; 12]);
        b.add(attr::USERNAME, b"user");
        let bytes = b.finish_with_integrity(b"k");
        for cut in 0..bytes.len() {
            let _ = Message::parse(&bytes[..cut]);
            let _ = ChannelData::parse(&bytes[..cut]);
            let _ = stream_frame_len(&bytes[..cut]);
        }
        let mut lying = bytes.clone();
        lying[HEADER_LEN + 3] = 200; // attribute longer than the message
        assert!(Message::parse(&lying).is_err());
    }

    #[test]
    fn channel_data_and_stream_framing() {
        let cd = ChannelData::encode(0x4001, b"hello", true);
        assert_eq!(cd.len(), 12);
        assert_eq!(
            ChannelData::parse(&cd).unwrap(),
            ChannelData {
                channel: 0x4001,
                data: b"hello"
            }
        );
        assert_eq!(stream_frame_len(&cd).unwrap(), Some(12));
        assert_eq!(stream_frame_len(&cd[..11]).unwrap(), None);
        let stun = MessageBuilder::new(Class::Request, method::BINDING, [0; 12]).finish();
        let mut both = stun.clone();
        both.extend_from_slice(&cd);
        assert_eq!(stream_frame_len(&both).unwrap(), Some(stun.len()));
        assert!(stream_frame_len(&[0x80, 0, 0, 0]).is_err());
        // A TLS ClientHello is not STUN.
        assert!(stream_frame_len(&[0x16, 3, 1, 0, 0xC0, 1, 0, 0]).is_err());
    }
}
