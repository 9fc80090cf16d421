//! Decoding errors.
//!
//! Every way a peer's bytes can be wrong has its own variant, so the gateway
//! can map each to an error code and a counter. After any of them the stream
//! is no longer trusted: the gateway answers with an error frame and closes.

use crate::{codes::ErrorCode, header::Kind};

/// Why bytes could not be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length field announces a frame larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced size of the whole frame, header included.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The length field is smaller than the rest of the header.
    #[error("length field {len} is shorter than the header")]
    FrameTooShort {
        /// The length field as read.
        len: u32,
    },
    /// The version byte is not one this decoder speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The kind byte names no known frame.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The body ends before its fixed fields do.
    #[error("truncated {} frame", kind.map_or("", |k| k.name()))]
    Truncated {
        /// The frame kind, when the header was read.
        kind: Option<Kind>,
    },
    /// A fixed-size body carries bytes after its last field.
    #[error("{kind} frame has {extra} trailing bytes")]
    TrailingBytes {
        /// The frame kind.
        kind: Kind,
        /// Bytes left over.
        extra: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{kind} frame has an invalid {field}")]
    InvalidField {
        /// The frame kind.
        kind: Kind,
        /// Which field.
        field: &'static str,
    },
}

impl DecodeError {
    /// The kind of the offending frame, when its header could be read (the
    /// body was wrong); None for errors in the header itself.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            DecodeError::Truncated { kind } => *kind,
            DecodeError::TrailingBytes { kind, .. } | DecodeError::InvalidField { kind, .. } => {
                Some(*kind)
            }
            DecodeError::FrameTooLarge { .. }
            | DecodeError::FrameTooShort { .. }
            | DecodeError::UnsupportedVersion(_)
            | DecodeError::UnknownKind(_) => None,
        }
    }

    /// The error code the server sends back for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownKind(_) => ErrorCode::UnknownKind,
            DecodeError::FrameTooShort { .. }
            | DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::InvalidField { .. } => ErrorCode::MalformedFrame,
        }
    }
}
