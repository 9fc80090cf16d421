//! The fixed 8-byte frame header.
//!
//! ```text
//!  0                   4       5       6               8
//!  +-------------------+-------+-------+---------------+-----------------
//!  | len: u32 BE       | ver   | kind  | flags: u16 BE | body (len - 4 bytes)
//!  +-------------------+-------+-------+---------------+-----------------
//! ```
//!
//! `len` counts every byte after the length field itself (the other four
//! header bytes plus the body), so a frame occupies `4 + len` bytes on the
//! wire. The length comes first so that any reader can split the stream
//! without knowing the kinds; the version and kind follow so that a frame is
//! rejected before its body is looked at.

use crate::error::DecodeError;

/// Bytes in the frame header, length field included.
pub const HEADER_LEN: usize = 8;

/// Bytes in the length field.
pub const LEN_FIELD: usize = 4;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Default largest frame, header included, in bytes (64 KiB).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Header flag: this frame repeats an earlier one (a msg:R retransmitted by
/// the sender with the same msg id, or a msg:N pushed again by the server).
/// Informational: receivers de-duplicate by id whether or not it is set.
pub const FLAG_RETRY: u16 = 0x0001;

/// Header flag of unread:A: the summary is incomplete. The server read only
/// part of the inbox (`unread_scan_limit`) or cut the list to fit one frame;
/// the counts cover what it read, and a pull still brings everything.
pub const FLAG_PARTIAL: u16 = 0x0002;

/// Header flag of msg:R: a silent message. The server stores and delivers
/// it as any other, but its event tells the business backend not to send
/// a mobile push to offline recipients.
pub const FLAG_NO_PUSH: u16 = 0x0004;

/// A copy of an encoded frame with `flags` set in its header, the rest
/// unchanged (a push sent again gets [`FLAG_RETRY`] without being decoded
/// and encoded again). A buffer shorter than a header is returned as is.
pub fn with_flags(frame: &[u8], flags: u16) -> bytes::Bytes {
    let mut b = bytes::BytesMut::from(frame);
    if let Some(f) = b.get_mut(6..HEADER_LEN) {
        let set = u16::from_be_bytes([f[0], f[1]]) | flags;
        f.copy_from_slice(&set.to_be_bytes());
    }
    b.freeze()
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $val:literal => $text:literal,)*) => {
        /// Every frame kind on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind {
            $($(#[$doc])* $name = $val,)*
        }

        impl Kind {
            /// Every kind, in wire-value order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            /// The kind for a wire value, if it is one.
            pub fn from_u8(v: u8) -> Option<Kind> {
                match v {
                    $($val => Some(Kind::$name),)*
                    _ => None,
                }
            }

            /// The name used in docs and logs, such as `msg:R`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$name => $text,)*
                }
            }
        }
    };
}

kinds! {
    /// Client logs in with a token (first frame on a connection).
    Login = 0x01 => "login",
    /// Server accepts a login.
    LoginOk = 0x02 => "login:ok",
    /// Liveness probe, either direction.
    Ping = 0x03 => "ping",
    /// Answer to a ping, either direction.
    Pong = 0x04 => "pong",
    /// Server closes the connection with a reason.
    Kick = 0x05 => "kick",
    /// Server reports an error with a code.
    Error = 0x06 => "error",
    /// Client says goodbye; the server closes without a kick.
    Logout = 0x07 => "logout",
    /// msg:R, a client sends a message.
    MsgR = 0x10 => "msg:R",
    /// msg:A, the server has the message on disk.
    MsgA = 0x11 => "msg:A",
    /// msg:N, the server pushes a message to a receiving device.
    MsgN = 0x12 => "msg:N",
    /// ack:R, a receiving device acknowledges up to a sequence id.
    AckR = 0x13 => "ack:R",
    /// ack:A, the server recorded the acknowledgement.
    AckA = 0x14 => "ack:A",
    /// ack:N, delivered receipt pushed to the sender's devices.
    AckN = 0x15 => "ack:N",
    /// read:R, a device marks a conversation read up to a sequence id.
    ReadR = 0x16 => "read:R",
    /// read:A, the server recorded the read mark.
    ReadA = 0x17 => "read:A",
    /// read:N, read receipt pushed to the peer (and the reader's other devices).
    ReadN = 0x18 => "read:N",
    /// sync:R, ask for a page of a stream after a sequence id.
    SyncR = 0x20 => "sync:R",
    /// sync page, the answer to sync:R.
    SyncPage = 0x21 => "sync:page",
    /// unread:R, ask for the unread summary per conversation.
    UnreadR = 0x22 => "unread:R",
    /// unread:A, the unread summary.
    UnreadA = 0x23 => "unread:A",
    /// group:R, create a group or change or list its members.
    GroupR = 0x30 => "group:R",
    /// group:A, the answer to group:R.
    GroupA = 0x31 => "group:A",
    /// receipts:R, ask how many members received and read a group message.
    ReceiptsR = 0x32 => "receipts:R",
    /// receipts:A, the answer to receipts:R.
    ReceiptsA = 0x33 => "receipts:A",
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes after the length field: `4 + body length`.
    pub len: u32,
    /// Frame kind.
    pub kind: Kind,
    /// Flag bits; unknown bits are ignored.
    pub flags: u16,
}

impl Header {
    /// Reads the length field alone, if four bytes are there.
    #[inline]
    pub fn peek_len(buf: &[u8]) -> Option<u32> {
        let b: [u8; 4] = buf.get(..LEN_FIELD)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// Parses the header at the start of `buf`, which must hold a whole
    /// header. The length is checked against `max_frame` (whole frame, header
    /// included) before anything else.
    #[inline]
    pub fn parse(buf: &[u8], max_frame: usize) -> Result<Header, DecodeError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated { kind: None });
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        check_len(len, max_frame)?;
        if head[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion(head[4]));
        }
        let kind = Kind::from_u8(head[5]).ok_or(DecodeError::UnknownKind(head[5]))?;
        let flags = u16::from_be_bytes([head[6], head[7]]);
        Ok(Header { len, kind, flags })
    }

    /// Bytes of the whole frame on the wire.
    #[inline]
    pub fn frame_len(&self) -> usize {
        LEN_FIELD + self.len as usize
    }

    /// Bytes of the body.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.len as usize - (HEADER_LEN - LEN_FIELD)
    }
}

/// Checks a length field against the header size and the frame limit.
#[inline]
pub(crate) fn check_len(len: u32, max_frame: usize) -> Result<(), DecodeError> {
    let total = LEN_FIELD as u64 + u64::from(len);
    if total > max_frame as u64 {
        return Err(DecodeError::FrameTooLarge {
            len: total,
            max: max_frame,
        });
    }
    if (len as usize) < HEADER_LEN - LEN_FIELD {
        return Err(DecodeError::FrameTooShort { len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_wire_value() {
        for &k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(0xff), None);
    }

    #[test]
    fn with_flags_sets_bits_and_keeps_the_rest() {
        let frame = [0, 0, 0, 6, 1, 0x12, 0, 2, 0xaa, 0xbb];
        let out = with_flags(&frame, FLAG_RETRY);
        assert_eq!(&out[..], &[0, 0, 0, 6, 1, 0x12, 0, 3, 0xaa, 0xbb]);
        assert_eq!(&with_flags(&frame[..5], FLAG_RETRY)[..], &frame[..5]);
    }

    #[test]
    fn oversized_length_is_rejected_before_the_rest() {
        // Version and kind are garbage, but the length is checked first.
        let buf = [0xff, 0xff, 0xff, 0xff, 9, 0xee, 0, 0];
        assert!(matches!(
            Header::parse(&buf, DEFAULT_MAX_FRAME),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn short_length_is_rejected() {
        let buf = [0, 0, 0, 3, 1, 3, 0, 0];
        assert_eq!(
            Header::parse(&buf, DEFAULT_MAX_FRAME),
            Err(DecodeError::FrameTooShort { len: 3 })
        );
    }
}
