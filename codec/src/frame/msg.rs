//! msg:R, msg:A and msg:N: the three message packets of the six-packet flow.
//!
//! ```text
//! sender                 server                  receiver devices
//!   | msg:R(msg_id) ------> |                          |
//!   |                       |-- append, fsync          |
//!   | <------ msg:A(seq) -- |                          |
//!   |                       | -- msg:N(seq) ---------> |
//! ```
//!
//! These are the hot frames, written out by hand: the fixed fields are read
//! with one bounds check and the body stays a slice of the read buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::Body;
use crate::{
    error::DecodeError,
    header::{FLAG_NO_PUSH, FLAG_RETRY, Kind},
};

#[inline]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

#[inline]
fn fixed(kind: Kind, body: &Bytes, n: usize) -> Result<&[u8], DecodeError> {
    body.get(..n)
        .ok_or(DecodeError::Truncated { kind: Some(kind) })
}

/// msg:R: `msg_id u64, group u64, to u64, body [..]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsgR {
    /// Chosen by the sender, unique per sending user; the same on every
    /// retransmission, which is how the server de-duplicates.
    pub msg_id: u64,
    /// 0 for a one-to-one message, else the group sent to.
    pub group: u64,
    /// The receiving user of a one-to-one message (0 for a group).
    pub to: u64,
    /// Set on retransmissions (header flag `RETRY`).
    pub retry: bool,
    /// No mobile push for offline recipients (header flag `NO_PUSH`).
    pub no_push: bool,
    /// The message content, opaque to the server.
    pub body: Bytes,
}

impl MsgR {
    const FIXED: usize = 24;
}

impl Body for MsgR {
    const KIND: Kind = Kind::MsgR;

    #[inline]
    fn load(flags: u16, mut body: Bytes) -> Result<Self, DecodeError> {
        let f = fixed(Self::KIND, &body, Self::FIXED)?;
        let (msg_id, group, to) = (be64(f, 0), be64(f, 8), be64(f, 16));
        if (group == 0) == (to == 0) {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "group/to (exactly one must be set)",
            });
        }
        bytes::Buf::advance(&mut body, Self::FIXED);
        Ok(MsgR {
            msg_id,
            group,
            to,
            retry: flags & FLAG_RETRY != 0,
            no_push: flags & FLAG_NO_PUSH != 0,
            body,
        })
    }

    fn flags(&self) -> u16 {
        let mut f = 0;
        if self.retry {
            f |= FLAG_RETRY;
        }
        if self.no_push {
            f |= FLAG_NO_PUSH;
        }
        f
    }

    #[inline]
    fn body_len(&self) -> usize {
        Self::FIXED + self.body.len()
    }

    #[inline]
    fn put_body(&self, dst: &mut BytesMut) {
        dst.put_u64(self.msg_id);
        dst.put_u64(self.group);
        dst.put_u64(self.to);
        dst.extend_from_slice(&self.body);
    }
}

/// msg:A: `msg_id u64, group u64, seq u64, own_seq u64, server_time u64`.
/// Sent only once the message is durable (as the server's durability setting
/// defines it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsgA {
    /// The sender's msg id.
    pub msg_id: u64,
    /// 0 for one-to-one, else the group.
    pub group: u64,
    /// Receiver-side sequence id: in the receiver's inbox (one-to-one) or
    /// in the group's log (group).
    pub seq: u64,
    /// The sequence id of the copy in the sender's own inbox, which the
    /// sender's other devices receive (0 for group messages, which the
    /// sender's devices see through the group's log).
    pub own_seq: u64,
    /// When the server stored it, ms since the Unix epoch.
    pub server_time: u64,
}

impl Body for MsgA {
    const KIND: Kind = Kind::MsgA;

    #[inline]
    fn load(_flags: u16, body: Bytes) -> Result<Self, DecodeError> {
        let f = fixed(Self::KIND, &body, 40)?;
        if body.len() != 40 {
            return Err(DecodeError::TrailingBytes {
                kind: Self::KIND,
                extra: body.len() - 40,
            });
        }
        Ok(MsgA {
            msg_id: be64(f, 0),
            group: be64(f, 8),
            seq: be64(f, 16),
            own_seq: be64(f, 24),
            server_time: be64(f, 32),
        })
    }

    fn body_len(&self) -> usize {
        40
    }

    fn put_body(&self, dst: &mut BytesMut) {
        dst.put_u64(self.msg_id);
        dst.put_u64(self.group);
        dst.put_u64(self.seq);
        dst.put_u64(self.own_seq);
        dst.put_u64(self.server_time);
    }
}

/// msg:N: `group u64, seq u64, from u64, to u64, msg_id u64, server_time
/// u64, body [..]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsgN {
    /// 0 when this is in the receiving user's inbox, else the group's log.
    pub group: u64,
    /// The contiguous sequence id in that stream.
    pub seq: u64,
    /// The sending user.
    pub from: u64,
    /// The receiving user (one-to-one; in a sender's own copy, the peer) or 0.
    pub to: u64,
    /// The sender's msg id.
    pub msg_id: u64,
    /// When the server stored it, ms since the Unix epoch.
    pub server_time: u64,
    /// Set when the server pushes it again (header flag `RETRY`).
    pub retry: bool,
    /// The message content.
    pub body: Bytes,
}

impl MsgN {
    const FIXED: usize = 48;
}

impl Body for MsgN {
    const KIND: Kind = Kind::MsgN;

    #[inline]
    fn load(flags: u16, mut body: Bytes) -> Result<Self, DecodeError> {
        let f = fixed(Self::KIND, &body, Self::FIXED)?;
        let m = MsgN {
            group: be64(f, 0),
            seq: be64(f, 8),
            from: be64(f, 16),
            to: be64(f, 24),
            msg_id: be64(f, 32),
            server_time: be64(f, 40),
            retry: flags & FLAG_RETRY != 0,
            body: Bytes::new(),
        };
        if m.seq == 0 {
            return Err(DecodeError::InvalidField {
                kind: Self::KIND,
                field: "seq",
            });
        }
        bytes::Buf::advance(&mut body, Self::FIXED);
        Ok(MsgN { body, ..m })
    }

    fn flags(&self) -> u16 {
        if self.retry { FLAG_RETRY } else { 0 }
    }

    #[inline]
    fn body_len(&self) -> usize {
        Self::FIXED + self.body.len()
    }

    #[inline]
    fn put_body(&self, dst: &mut BytesMut) {
        dst.put_u64(self.group);
        dst.put_u64(self.seq);
        dst.put_u64(self.from);
        dst.put_u64(self.to);
        dst.put_u64(self.msg_id);
        dst.put_u64(self.server_time);
        dst.extend_from_slice(&self.body);
    }
}
