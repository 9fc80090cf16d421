//! Checked big-endian field access over a body.
//!
//! Every read checks what remains first and reports `Truncated` instead of
//! panicking: a body is the peer's claim until each field is read.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{error::DecodeError, header::Kind};

/// A cursor over the fixed fields of a body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: Kind,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(kind: Kind, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, kind }
    }

    #[inline]
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                let mut out = [0u8; N];
                out.copy_from_slice(s);
                Ok(out)
            }
            None => Err(DecodeError::Truncated {
                kind: Some(self.kind),
            }),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    /// The byte at `at` from the start of the body (0 if past the end; only
    /// used on offsets the fixed fields already covered).
    #[inline]
    pub(crate) fn peek_at(&self, at: usize) -> u8 {
        self.buf.get(at).copied().unwrap_or(0)
    }

    /// Bytes consumed so far.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed (fixed-size bodies).
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        let extra = self.buf.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                kind: self.kind,
                extra,
            })
        }
    }

    /// An error for an out-of-range field.
    #[inline]
    pub(crate) fn invalid(&self, field: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            kind: self.kind,
            field,
        }
    }
}

/// The rest of a body after `n` bytes of fixed fields, without copying.
#[inline]
pub(crate) fn rest(mut body: Bytes, n: usize) -> Bytes {
    bytes::Buf::advance(&mut body, n);
    body
}

/// Encodes a list of u64 ids as packed big-endian bytes.
pub(crate) fn pack_ids(ids: &[u64]) -> Bytes {
    let mut b = BytesMut::with_capacity(ids.len() * 8);
    for &id in ids {
        b.put_u64(id);
    }
    b.freeze()
}

/// Iterates packed big-endian u64 ids (a length not a multiple of 8 is
/// rejected when the frame is decoded, so the tail is never partial).
pub(crate) fn iter_ids(b: &Bytes) -> impl ExactSizeIterator<Item = u64> + '_ {
    b.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_be_bytes(a)
    })
}
