//! kick, error and logout: how a session ends or reports a problem.

use super::fixed_frame;
use crate::{
    codes::{ErrorCode, KickReason},
    error::DecodeError,
    header::Kind,
    wire::Reader,
};

/// Largest human-readable text in a kick or error frame, in bytes.
pub const MAX_TEXT: usize = 1024;

fn check_text(r: &Reader<'_>, len: usize) -> Result<(), DecodeError> {
    if len > MAX_TEXT {
        return Err(r.invalid("text length"));
    }
    Ok(())
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fixed_frame! {
    /// kick: `reason u8, text [..]`. The server closes after sending it.
    Kick: Kick {
        /// A [`KickReason`] wire value.
        reason: u8,
    }
    tail
    /// Human-readable detail, UTF-8, at most 1024 bytes (may be empty).
    text, check check_text
}

impl Kick {
    /// A kick with a reason and text.
    pub fn new(reason: KickReason, text: &str) -> Kick {
        Kick {
            reason: reason.to_wire(),
            text: truncated_text(text),
        }
    }

    /// The reason.
    pub fn reason(&self) -> KickReason {
        KickReason::from_wire(self.reason)
    }

    /// The text, invalid UTF-8 replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        lossy(&self.text)
    }
}

fixed_frame! {
    /// error: `code u16, ref_kind u8, ref_id u64, text [..]`.
    ErrorFrame: Error {
        /// An [`ErrorCode`] wire value.
        code: u16,
        /// Kind of the frame this answers, 0 if none.
        ref_kind: u8,
        /// The msg id or request id this answers, 0 if none.
        ref_id: u64,
    }
    tail
    /// Human-readable detail, UTF-8, at most 1024 bytes (may be empty).
    text, check check_text
}

impl ErrorFrame {
    /// An error answering a frame of `ref_kind` with id `ref_id`.
    pub fn new(code: ErrorCode, ref_kind: Option<Kind>, ref_id: u64, text: &str) -> Self {
        ErrorFrame {
            code: code.to_wire(),
            ref_kind: ref_kind.map_or(0, |k| k as u8),
            ref_id,
            text: truncated_text(text),
        }
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from_wire(self.code)
    }

    /// The kind of the frame this answers.
    pub fn ref_kind(&self) -> Option<Kind> {
        Kind::from_u8(self.ref_kind)
    }

    /// The text, invalid UTF-8 replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        lossy(&self.text)
    }
}

fixed_frame! {
    /// logout: no body. The server closes without a kick.
    Logout: Logout {}
}

/// Text cut to [`MAX_TEXT`] bytes on a character boundary.
fn truncated_text(text: &str) -> bytes::Bytes {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    bytes::Bytes::copy_from_slice(&text.as_bytes()[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_TEXT);
        let k = Kick::new(KickReason::Admin, &s);
        assert!(k.text.len() <= MAX_TEXT);
        assert!(std::str::from_utf8(&k.text).is_ok());
    }
}
