//! Splitting a byte stream into frames.
//!
//! The decoder holds no buffer of its own: the caller reads into a `BytesMut`
//! and hands it over; each complete frame is split off the front and frozen,
//! so its payload is a reference-counted slice of that read, not a copy.
//! A length field is checked against the limit before anything waits on it,
//! so a peer cannot make the caller reserve memory by claiming a large frame.

use bytes::{Buf, BytesMut};

use crate::{
    error::DecodeError,
    frame::{Body, Frame, MsgN, MsgR},
    header::{DEFAULT_MAX_FRAME, HEADER_LEN, Header, Kind, LEN_FIELD, check_len},
};

/// Frame decoder with a size limit.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_frame: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder accepting frames of up to `max_frame` bytes, header
    /// included (never less than a header).
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            max_frame: max_frame.max(HEADER_LEN),
        }
    }

    /// The frame limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decodes the next frame from the front of `buf`.
    ///
    /// `Ok(None)`: `buf` holds no complete frame yet (nothing is consumed).
    /// `Ok(Some(frame))`: the frame's bytes were split off `buf`.
    /// `Err(_)`: the stream is broken; close the connection. On an error
    /// about a complete frame, that frame has been consumed.
    #[inline]
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < HEADER_LEN {
            // Reject an oversized length as soon as the length is there.
            if let Some(len) = Header::peek_len(buf) {
                check_len(len, self.max_frame)?;
            }
            return Ok(None);
        }
        let head = Header::parse(buf, self.max_frame)?;
        let n = head.frame_len();
        if buf.len() < n {
            return Ok(None);
        }
        let mut body = buf.split_to(n).freeze();
        body.advance(HEADER_LEN);
        // The message frames are most of the traffic: build them in place
        // rather than through the generic dispatch, which moves the whole
        // `Frame` through several `Result`s (about 100 instructions a frame,
        // measured with callgrind; docs/benchmarks.md).
        match head.kind {
            Kind::MsgR => Ok(Some(Frame::MsgR(MsgR::load(head.flags, body)?))),
            Kind::MsgN => Ok(Some(Frame::MsgN(MsgN::load(head.flags, body)?))),
            _ => Frame::load(head, body).map(Some),
        }
    }

    /// How many more bytes `buf` needs before [`Decoder::decode`] can make
    /// progress: at least 1 for an incomplete header, else the rest of the
    /// frame. 0 when a frame (or an error) is ready.
    pub fn needed(&self, buf: &[u8]) -> usize {
        match Header::peek_len(buf) {
            None => HEADER_LEN - buf.len(),
            Some(len) if check_len(len, self.max_frame).is_err() => 0,
            // A whole header with a bad version or kind: decode fails now.
            Some(_) if buf.len() >= HEADER_LEN && Header::parse(buf, self.max_frame).is_err() => 0,
            Some(len) => (LEN_FIELD + len as usize).saturating_sub(buf.len()),
        }
    }
}
