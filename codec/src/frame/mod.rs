//! Typed frames, one module per family, each frame with `load` and `encode`.
//!
//! A frame's variable part (message body, token, text, member list, page
//! entries) is a `Bytes` slice of the buffer the frame was decoded from: no
//! copy between the socket and whoever consumes it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    error::DecodeError,
    header::{HEADER_LEN, Header, Kind, VERSION},
    wire::Reader,
};

mod ack;
mod group;
mod login;
mod msg;
mod ping;
mod receipt;
mod session;
mod sync;

pub use ack::{AckA, AckR};
pub use group::{GroupA, GroupOp, GroupR, ReceiptsA, ReceiptsR};
pub use login::{Login, LoginOk, MAX_LOGIN_FRAME, MAX_TOKEN};
pub use msg::{MsgA, MsgN, MsgR};
pub use ping::{Ping, Pong};
pub use receipt::{AckN, ReadA, ReadN, ReadR};
pub use session::{ErrorFrame, Kick, Logout, MAX_TEXT};
pub use sync::{
    ENTRY_FIXED, Entries, Entry, SyncPage, SyncR, UNREAD_ENTRY, UnreadA, UnreadEntry, UnreadR,
};

/// A frame body: how one kind is read from and written to the wire.
pub trait Body: Sized {
    /// The kind byte of this frame.
    const KIND: Kind;

    /// Reads the body that follows a header with these flags.
    fn load(flags: u16, body: Bytes) -> Result<Self, DecodeError>;

    /// Header flags this frame sets.
    fn flags(&self) -> u16 {
        0
    }

    /// Encoded body length in bytes.
    fn body_len(&self) -> usize;

    /// Writes the body: fixed fields, then the variable tail if any.
    fn put_body(&self, dst: &mut BytesMut);

    /// Writes the whole frame, header included.
    fn encode(&self, dst: &mut BytesMut) {
        put_header(dst, Self::KIND, self.flags(), self.body_len());
        self.put_body(dst);
    }

    /// Encodes the frame once into its own buffer, ready to queue on one or
    /// many connections (a clone is a reference-count increment).
    fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.body_len() + SPARE);
        self.encode(&mut b);
        b.freeze()
    }
}

/// One spare byte in a buffer frozen for sharing: `freeze` then keeps the
/// buffer in a shared representation at once, so clones never allocate
/// (bytes promotes an exactly-full vector lazily, on its first clone).
const SPARE: usize = 1;

/// Writes a header for a body of `body_len` bytes.
#[inline]
pub(crate) fn put_header(dst: &mut BytesMut, kind: Kind, flags: u16, body_len: usize) {
    dst.reserve(HEADER_LEN + body_len);
    // A frame larger than u32 cannot be built from a body under the frame
    // limit; saturating keeps a misuse from wrapping into a small frame.
    let len = u32::try_from(HEADER_LEN - 4 + body_len).unwrap_or(u32::MAX);
    dst.put_u32(len);
    dst.put_u8(VERSION);
    dst.put_u8(kind as u8);
    dst.put_u16(flags);
}

/// A fixed-width integer field.
pub(crate) trait Field: Sized + Copy {
    const SIZE: usize;
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    fn put(self, dst: &mut BytesMut);
}

macro_rules! field {
    ($t:ty, $read:ident, $put:ident) => {
        impl Field for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                r.$read()
            }
            #[inline]
            fn put(self, dst: &mut BytesMut) {
                dst.$put(self)
            }
        }
    };
}
field!(u8, u8, put_u8);
field!(u16, u16, put_u16);
field!(u32, u32, put_u32);
field!(u64, u64, put_u64);

/// Defines a frame of fixed integer fields, optionally followed by a tail
/// (`Bytes`, the rest of the frame) checked by a validation function.
macro_rules! fixed_frame {
    (
        $(#[$m:meta])*
        $name:ident : $kind:ident {
            $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)?
        }
        $(tail $(#[$tm:meta])* $tail:ident, check $check:path)?
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            $($(#[$tm])* pub $tail: bytes::Bytes,)?
        }

        impl $name {
            const FIXED: usize = 0 $(+ <$t as $crate::frame::Field>::SIZE)*;
        }

        impl $crate::frame::Body for $name {
            const KIND: $crate::header::Kind = $crate::header::Kind::$kind;

            #[inline]
            #[allow(unused_mut, unused_variables)]
            fn load(_flags: u16, body: bytes::Bytes) -> Result<Self, $crate::error::DecodeError> {
                let mut r = $crate::wire::Reader::new(Self::KIND, &body);
                $(let $f = <$t as $crate::frame::Field>::read(&mut r)?;)*
                fixed_frame!(@tail r body $($tail $check)?);
                Ok($name { $($f,)* $($tail,)? })
            }

            #[inline]
            fn body_len(&self) -> usize {
                Self::FIXED $(+ self.$tail.len())?
            }

            #[inline]
            #[allow(unused_variables)]
            fn put_body(&self, dst: &mut bytes::BytesMut) {
                $($crate::frame::Field::put(self.$f, dst);)*
                $(dst.extend_from_slice(&self.$tail);)?
            }
        }
    };
    (@tail $r:ident $body:ident) => {
        $r.finish()?;
    };
    (@tail $r:ident $body:ident $tail:ident $check:path) => {
        let n = $r.pos();
        $check(&$r, $body.len() - n)?;
        let $tail = $crate::wire::rest($body, n);
    };
}
pub(crate) use fixed_frame;

macro_rules! frames {
    ($($(#[$doc:meta])* $var:ident($ty:ty),)*) => {
        /// Any frame.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Frame {
            $($(#[$doc])* $var($ty),)*
        }

        impl Frame {
            /// The frame's kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Frame::$var(_) => <$ty as Body>::KIND,)*
                }
            }

            /// Decodes the body that follows `head`. `body` holds exactly
            /// the body (`head.body_len()` bytes).
            #[inline]
            pub fn load(head: Header, body: Bytes) -> Result<Frame, DecodeError> {
                match head.kind {
                    $(Kind::$var => <$ty as Body>::load(head.flags, body).map(Frame::$var),)*
                }
            }

            /// Appends the whole encoded frame to `dst`.
            #[inline]
            pub fn encode(&self, dst: &mut BytesMut) {
                match self {
                    $(Frame::$var(f) => f.encode(dst),)*
                }
            }

            /// Bytes of the whole encoded frame.
            pub fn encoded_len(&self) -> usize {
                HEADER_LEN + match self {
                    $(Frame::$var(f) => f.body_len(),)*
                }
            }
        }

        $(impl From<$ty> for Frame {
            fn from(f: $ty) -> Frame {
                Frame::$var(f)
            }
        })*
    };
}

frames! {
    /// Client logs in.
    Login(Login),
    /// Server accepts the login.
    LoginOk(LoginOk),
    /// Liveness probe.
    Ping(Ping),
    /// Answer to a ping.
    Pong(Pong),
    /// Server closes the connection with a reason.
    Kick(Kick),
    /// Server reports an error.
    Error(ErrorFrame),
    /// Client says goodbye.
    Logout(Logout),
    /// msg:R.
    MsgR(MsgR),
    /// msg:A.
    MsgA(MsgA),
    /// msg:N.
    MsgN(MsgN),
    /// ack:R.
    AckR(AckR),
    /// ack:A.
    AckA(AckA),
    /// ack:N.
    AckN(AckN),
    /// read:R.
    ReadR(ReadR),
    /// read:A.
    ReadA(ReadA),
    /// read:N.
    ReadN(ReadN),
    /// sync:R.
    SyncR(SyncR),
    /// A sync page.
    SyncPage(SyncPage),
    /// unread:R.
    UnreadR(UnreadR),
    /// unread:A.
    UnreadA(UnreadA),
    /// group:R.
    GroupR(GroupR),
    /// group:A.
    GroupA(GroupA),
    /// receipts:R.
    ReceiptsR(ReceiptsR),
    /// receipts:A.
    ReceiptsA(ReceiptsA),
}

impl Frame {
    /// Encodes the frame once into its own buffer. Cloning the result is a
    /// reference-count increment, so one encoding can be queued on many
    /// connections (group fan-out).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len() + SPARE);
        self.encode(&mut b);
        b.freeze()
    }

    /// The id an error frame answering this frame quotes in `ref_id`
    /// (protocol section 3.3): a msg:R's msg id, a group:R's or receipts:R's
    /// req, the stream of an ack:R, read:R or sync:R, a ping's nonce; 0 for
    /// any other kind.
    pub fn request_id(&self) -> u64 {
        match self {
            Frame::MsgR(m) => m.msg_id,
            Frame::AckR(a) => a.group,
            Frame::ReadR(r) => r.group,
            Frame::SyncR(s) => s.group,
            Frame::GroupR(g) => g.req,
            Frame::ReceiptsR(r) => r.req,
            Frame::Ping(p) => p.nonce,
            _ => 0,
        }
    }
}
