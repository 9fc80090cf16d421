//! The property the fuzz target checks, shared with the seed-corpus test.
//!
//! Not part of the API: `codec/fuzz` (target `decode`) and
//! `codec/tests/fuzz_corpus.rs` both call [`check_decode`], so a crash the
//! fuzzer finds is replayed by `cargo test` once its input is added to
//! `codec/fuzz/seeds/`.
//!
//! An input is a 3-byte prefix and a byte stream:
//!
//! ```text
//!  0        1                3
//!  +--------+----------------+----------------------------
//!  | chunk  | max_frame u16  | stream (fed to the decoder)
//!  +--------+----------------+----------------------------
//! ```
//!
//! `chunk` is how many bytes each read appends (0: the whole stream in one
//! read); `max_frame` is the decoder's limit (0: [`DEFAULT_MAX_FRAME`]).
//! An input shorter than the prefix is ignored.

use bytes::BytesMut;

use crate::{
    DecodeError, Decoder, Frame,
    header::{DEFAULT_MAX_FRAME, FLAG_NO_PUSH, FLAG_PARTIAL, FLAG_RETRY, Header, LEN_FIELD},
};

/// Bytes before the stream in a fuzz input.
pub const PREFIX: usize = 3;

/// What a stream decoded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decoder's limit used.
    pub max_frame: usize,
    /// Frames decoded, in order.
    pub frames: Vec<Frame>,
    /// The error that ended the stream, if any.
    pub error: Option<DecodeError>,
    /// Bytes left over in the buffer at the end (a partial frame, or what
    /// followed an error).
    pub left: usize,
}

/// Builds a fuzz input from its parts (the inverse of the prefix split).
pub fn input(chunk: u8, max_frame: u16, stream: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(PREFIX + stream.len());
    v.push(chunk);
    v.extend_from_slice(&max_frame.to_be_bytes());
    v.extend_from_slice(stream);
    v
}

/// Feeds the stream of a fuzz input to a [`Decoder`] read by read, decoding
/// everything available after each read, and panics if any property fails:
///
/// - [`Decoder::needed`] agrees with [`Decoder::decode`]: 0 exactly when
///   decode returns a frame or an error; otherwise decode returns
///   `Ok(None)` and consumes nothing;
/// - a decoded frame consumed exactly [`Frame::encoded_len`] bytes;
/// - re-encoding a decoded frame gives the bytes it came from (apart from
///   header flags this crate does not keep), [`Frame::to_bytes`] gives the
///   same bytes, and decoding them again gives the same frame;
/// - the builders and iterators of the variable parts (page entries, unread
///   entries, member lists) rebuild the same frame.
///
/// Returns what the stream decoded to, so a test can check a seed's outcome.
pub fn check_decode(data: &[u8]) -> Option<Outcome> {
    let [chunk, m0, m1, stream @ ..] = data else {
        return None;
    };
    let max_frame = match u16::from_be_bytes([*m0, *m1]) {
        0 => DEFAULT_MAX_FRAME,
        m => usize::from(m),
    };
    let chunk = match *chunk {
        0 => stream.len().max(1),
        c => usize::from(c),
    };
    let dec = Decoder::new(max_frame);
    let mut out = Outcome {
        max_frame: dec.max_frame(),
        frames: Vec::new(),
        error: None,
        left: 0,
    };
    let mut buf = BytesMut::new();
    'reads: for read in stream.chunks(chunk) {
        buf.extend_from_slice(read);
        loop {
            let before = buf.clone();
            let needed = dec.needed(&buf);
            match dec.decode(&mut buf) {
                Ok(None) => {
                    assert!(needed > 0, "needed is 0 but decode waits for more");
                    assert_eq!(buf, before, "Ok(None) consumed bytes");
                    break;
                }
                Ok(Some(frame)) => {
                    assert_eq!(needed, 0, "needed is {needed} but a frame decoded");
                    let used = before.len() - buf.len();
                    assert_eq!(used, frame.encoded_len(), "{frame:?}");
                    check_frame(&dec, &frame, &before[..used]);
                    out.frames.push(frame);
                }
                Err(e) => {
                    assert_eq!(needed, 0, "needed is {needed} but decode failed: {e}");
                    // Every error maps to a code.
                    let _ = e.code();
                    out.error = Some(e);
                    break 'reads;
                }
            }
        }
    }
    out.left = buf.len();
    Some(out)
}

/// Checks one decoded frame against the bytes it was decoded from.
fn check_frame(dec: &Decoder, frame: &Frame, wire: &[u8]) {
    let mut enc = BytesMut::new();
    frame.encode(&mut enc);
    assert_eq!(enc.len(), frame.encoded_len(), "{frame:?}");
    assert_eq!(frame.to_bytes(), enc, "to_bytes differs from encode");

    // The encoding is canonical: the same bytes, except for flag bits that
    // the frame does not keep (only msg:R and msg:N keep RETRY, msg:R
    // keeps NO_PUSH, and unread:A keeps PARTIAL).
    let flags = u16::from_be_bytes([wire[6], wire[7]]);
    let kept = match frame {
        Frame::MsgR(_) => flags & (FLAG_RETRY | FLAG_NO_PUSH),
        Frame::MsgN(_) => flags & FLAG_RETRY,
        Frame::UnreadA(_) => flags & FLAG_PARTIAL,
        _ => 0,
    };
    let mut expect = wire.to_vec();
    expect[6..8].copy_from_slice(&kept.to_be_bytes());
    assert_eq!(enc[..], expect[..], "re-encoding of {frame:?}");
    assert_eq!(
        Header::peek_len(&enc).map(|l| LEN_FIELD + l as usize),
        Some(enc.len())
    );

    let again = dec.decode(&mut enc);
    assert_eq!(again.as_ref().ok().and_then(Option::as_ref), Some(frame));
    assert!(enc.is_empty(), "re-decoding left {} bytes", enc.len());

    rebuild(frame);
}

/// Rebuilds the variable parts through their public builders.
fn rebuild(frame: &Frame) {
    match frame {
        Frame::SyncPage(p) => {
            let entries: Vec<_> = p.entries().collect();
            assert_eq!(entries.len(), usize::from(p.count));
            let mut q = crate::frame::SyncPage::new(p.group, p.after, p.head);
            let mut b = BytesMut::new();
            for e in &entries {
                q.push(&mut b, e);
            }
            assert_eq!(&q.finish(b), p);
            assert_eq!(p.last_seq(), entries.last().map(|e| e.seq));
        }
        Frame::UnreadA(u) => {
            let entries: Vec<_> = u.iter().collect();
            let mut again = crate::frame::UnreadA::from_entries(&entries);
            again.partial = u.partial;
            assert_eq!(&again, u);
        }
        Frame::GroupR(g) => {
            let ids: Vec<_> = g.members().collect();
            assert_eq!(&g.clone().with_members(&ids), g);
            assert!(g.op().is_some());
        }
        Frame::GroupA(g) => {
            let ids: Vec<_> = g.members().collect();
            assert_eq!(&g.clone().with_members(&ids), g);
            assert!(g.op().is_some());
        }
        _ => {}
    }
}
