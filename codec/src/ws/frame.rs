//! WebSocket frames: the decoder that splits them off a read buffer
//! (unmasking a client's payload in place), and the headers and control
//! frames a writer puts on the wire.
//!
//! ```text
//!  byte 0: FIN, 3 reserved bits (0), opcode     byte 1: MASK, length 0..=125,
//!  126 (a u16 follows) or 127 (a u64 follows)   then the mask key (4 bytes,
//!  client to server only), then the payload, XORed with the key
//! ```
//!
//! Messages are not fragmented here: a data frame without FIN, or a
//! continuation frame, is refused ([`WsError::Fragmented`]). Browsers send
//! each `send()` as one frame; a peer that fragments gets a clear close
//! code instead of a reassembly buffer per connection.

use bytes::{Buf, BytesMut};

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The rest of a fragmented message (refused by [`Decoder`]).
    Continuation,
    /// A UTF-8 text message.
    Text,
    /// A binary message.
    Binary,
    /// Close, with an optional code and reason.
    Close,
    /// Ping: answered with a pong of the same payload.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A close frame's status code (RFC 6455, section 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The connection did what it was for.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is going away (shutdown).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A kind of data the endpoint does not take (text, here).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// The endpoint's policy ends the connection (a kick).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// A message larger than the endpoint takes.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
}

/// A decoded frame: its opcode and its payload, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The opcode.
    pub opcode: Opcode,
    /// The payload, split off the read buffer without a copy.
    pub payload: BytesMut,
}

/// Why bytes are not an acceptable frame. Each ends the connection with
/// [`WsError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A reserved bit is set (no extension is negotiated).
    #[error("reserved bits set in a WebSocket frame")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("unknown WebSocket opcode {0}")]
    UnknownOpcode(u8),
    /// A client's frame without a mask, or a server's with one.
    #[error("WebSocket frame masking is wrong for its direction")]
    Masking,
    /// A fragmented message (FIN clear, or a continuation frame).
    #[error("fragmented WebSocket messages are not accepted")]
    Fragmented,
    /// A control frame longer than 125 bytes or fragmented.
    #[error("bad WebSocket control frame")]
    BadControl,
    /// A 64-bit length with its top bit set.
    #[error("bad WebSocket frame length")]
    BadLength,
    /// A payload over the limit.
    #[error("WebSocket frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The frame's payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
}

impl WsError {
    /// The close code that tells the peer why.
    pub fn close_code(&self) -> CloseCode {
        match self {
            WsError::TooLarge { .. } => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Splits frames off a read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_payload: usize,
    /// Frames must be masked (a server reading a client) or must not be.
    masked: bool,
}

impl Decoder {
    /// A server's decoder of a client's frames (masked), taking payloads
    /// of up to `max_payload` bytes.
    pub fn server(max_payload: usize) -> Decoder {
        Decoder {
            max_payload,
            masked: true,
        }
    }

    /// A client's decoder of a server's frames (unmasked).
    pub fn client(max_payload: usize) -> Decoder {
        Decoder {
            max_payload,
            masked: false,
        }
    }

    /// Takes the first frame off `buf` if it is complete (`Ok(None)`:
    /// read more; [`Decoder::needed`] says how much). A frame is refused as
    /// soon as its header shows it is unacceptable, before its payload
    /// arrives. The payload is unmasked in place and split off without a
    /// copy.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
        let Some(Head {
            opcode,
            header,
            len,
            mask,
        }) = self.header(buf)?
        else {
            return Ok(None);
        };
        let end = header + len;
        if buf.len() < end {
            return Ok(None);
        }
        if let Some(key) = mask {
            mask_in_place(&mut buf[header..end], key);
        }
        buf.advance(header);
        let payload = buf.split_to(len);
        Ok(Some(Frame { opcode, payload }))
    }

    /// Bytes the first frame in `buf` still needs: at least 1 while its
    /// header is incomplete, 0 if it is whole (or refused).
    pub fn needed(&self, buf: &[u8]) -> usize {
        match self.header(buf) {
            Ok(Some(h)) => (h.header + h.len).saturating_sub(buf.len()),
            Ok(None) => 1,
            Err(_) => 0,
        }
    }

    /// The header at the start of `buf`, or None if incomplete.
    fn header(&self, buf: &[u8]) -> Result<Option<Head>, WsError> {
        let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::Reserved);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(WsError::UnknownOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        if masked != self.masked {
            return Err(WsError::Masking);
        }
        if opcode.is_control() {
            if !fin || b1 & 0x7f > 125 {
                return Err(WsError::BadControl);
            }
        } else if !fin || opcode == Opcode::Continuation {
            return Err(WsError::Fragmented);
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let n = u64::from_be_bytes(a);
                if n >> 63 != 0 {
                    return Err(WsError::BadLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let len = match usize::try_from(len) {
            Ok(l) if l <= self.max_payload => l,
            _ => {
                return Err(WsError::TooLarge {
                    len,
                    max: self.max_payload,
                });
            }
        };
        let mask = if masked {
            let Some(k) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        Ok(Some(Head {
            opcode,
            header: at,
            len,
            mask,
        }))
    }
}

/// A frame's header, read.
struct Head {
    opcode: Opcode,
    /// Bytes of header, mask key included.
    header: usize,
    /// Payload bytes.
    len: usize,
    mask: Option<[u8; 4]>,
}

/// XORs `buf` with the mask key, as both unmasking and masking do.
pub fn mask_in_place(buf: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// The header of a final frame of `len` payload bytes: its bytes and its
/// length (2 to 14). With `mask` (a client's frame) the key is in it; the
/// caller masks the payload.
pub fn header(opcode: Opcode, len: usize, mask: Option<[u8; 4]>) -> ([u8; 14], usize) {
    let mut h = [0u8; 14];
    h[0] = 0x80 | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if len <= 125 {
        h[1] = mask_bit | len as u8;
        2
    } else if let Ok(n) = u16::try_from(len) {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&n.to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(k) = mask {
        h[at..at + 4].copy_from_slice(&k);
        at += 4;
    }
    (h, at)
}

/// A whole frame: header and payload in one buffer, the payload masked
/// with `mask` if given.
pub fn encode(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let (h, n) = header(opcode, payload.len(), mask);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        mask_in_place(&mut out[n..], k);
    }
    out
}

/// A close frame's payload: the code, then the reason cut to fit the 125
/// bytes of a control frame (at a character boundary).
pub fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = Vec::with_capacity(2 + cut);
    p.extend_from_slice(&code.0.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Decoder {
        Decoder::server(1 << 20)
    }

    #[test]
    fn the_rfc_masked_hello_decodes() {
        // RFC 6455, section 5.7: a masked text frame "Hello".
        let mut b = BytesMut::from(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        let f = server().decode(&mut b).expect("valid").expect("whole");
        assert_eq!(f.opcode, Opcode::Text);
        assert_eq!(&f.payload[..], b"Hello");
        assert!(b.is_empty());
    }

    #[test]
    fn lengths_in_each_form_round_trip_and_arrive_byte_by_byte() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = encode(Opcode::Binary, &payload, Some([1, 2, 3, 4]));
            let expected_header = match len {
                0..=125 => 6,
                126..=65_535 => 8,
                _ => 14,
            };
            assert_eq!(wire.len(), expected_header + len);
            let mut b = BytesMut::new();
            let mut got = None;
            // Feed in growing pieces: nothing comes out before the end.
            let step = (len / 7).max(1);
            let mut at = 0;
            while at < wire.len() {
                let end = (at + step).min(wire.len());
                b.extend_from_slice(&wire[at..end]);
                at = end;
                assert!(server().needed(&b) > 0 || at == wire.len());
                if let Some(f) = server().decode(&mut b).expect("valid") {
                    assert_eq!(at, wire.len(), "complete only at the end");
                    got = Some(f);
                }
            }
            let f = got.expect("decoded");
            assert_eq!(f.opcode, Opcode::Binary);
            assert_eq!(f.payload.len(), len);
            assert!(f.payload[..] == payload[..], "payload of {len} bytes");
        }
    }

    #[test]
    fn two_frames_in_one_read_come_out_in_order() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&encode(Opcode::Binary, b"one", Some([9, 9, 9, 9])));
        b.extend_from_slice(&encode(Opcode::Ping, b"p", Some([1, 0, 0, 1])));
        b.extend_from_slice(&encode(Opcode::Binary, b"tw", Some([0, 0, 0, 0]))[..6]);
        let d = server();
        assert_eq!(
            &d.decode(&mut b).expect("ok").expect("1").payload[..],
            b"one"
        );
        let p = d.decode(&mut b).expect("ok").expect("2");
        assert_eq!((p.opcode, &p.payload[..]), (Opcode::Ping, &b"p"[..]));
        assert_eq!(d.decode(&mut b).expect("ok"), None);
        assert_eq!(d.needed(&b), 2);
    }

    #[test]
    fn unacceptable_frames_are_refused_from_their_header() {
        let d = Decoder::server(1000);
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x82 | 0x40, 0x80], WsError::Reserved),
            (vec![0x83, 0x80], WsError::UnknownOpcode(3)),
            (vec![0x82, 0x00], WsError::Masking),
            (vec![0x02, 0x80], WsError::Fragmented),
            (vec![0x80, 0x80], WsError::Fragmented),
            (vec![0x09, 0x80], WsError::BadControl),
            (vec![0x89, 0xfe, 0x00, 0x7e], WsError::BadControl),
            (
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                WsError::BadLength,
            ),
            // Only the header of a 1,001-byte frame: refused at once.
            (
                vec![0x82, 0xfe, 0x03, 0xe9],
                WsError::TooLarge {
                    len: 1001,
                    max: 1000,
                },
            ),
        ];
        for (bytes, want) in cases {
            let mut b = BytesMut::from(&bytes[..]);
            assert_eq!(d.decode(&mut b), Err(want.clone()), "{bytes:02x?}");
            assert_eq!(d.needed(&b), 0);
        }
        assert_eq!(
            WsError::TooLarge { len: 1, max: 0 }.close_code(),
            CloseCode::TOO_BIG
        );
        assert_eq!(WsError::Fragmented.close_code(), CloseCode::PROTOCOL_ERROR);
        // A client decoder refuses a masked frame from a server.
        let mut b = BytesMut::from(&[0x82u8, 0x80, 0, 0, 0, 0][..]);
        assert_eq!(Decoder::client(10).decode(&mut b), Err(WsError::Masking));
    }

    #[test]
    fn server_frames_are_unmasked_and_a_client_reads_them() {
        let wire = encode(Opcode::Binary, b"frames", None);
        assert_eq!(&wire[..2], &[0x82, 6]);
        let mut b = BytesMut::from(&wire[..]);
        let f = Decoder::client(100)
            .decode(&mut b)
            .expect("ok")
            .expect("whole");
        assert_eq!(&f.payload[..], b"frames");
    }

    #[test]
    fn a_close_payload_is_cut_to_fit_at_a_character_boundary() {
        let p = close_payload(CloseCode::POLICY, "kicked");
        assert_eq!(&p[..2], &1008u16.to_be_bytes());
        assert_eq!(&p[2..], b"kicked");
        let long = "é".repeat(100);
        let p = close_payload(CloseCode::NORMAL, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn masking_twice_gives_the_bytes_back_at_every_length() {
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut b = orig.clone();
            mask_in_place(&mut b, [0xde, 0xad, 0xbe, 0xef]);
            if len > 0 {
                assert_ne!(b, orig);
                assert_eq!(b[0], orig[0] ^ 0xde);
            }
            mask_in_place(&mut b, [0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(b, orig);
        }
    }
}
