//! The imgate wire format and the client side of its protocol, sans-IO.
//!
//! Nothing here opens a socket or reads a clock: bytes and the current time
//! go in, frames, bytes to send and the next deadline come out. That keeps
//! the protocol testable with a fake clock and fuzzable, and lets the
//! gateway, the load generator and any Rust client share one implementation.
//!
//! ```text
//!   socket bytes ──► BytesMut ──► Decoder::decode ──► Frame (payload: Bytes slice of the read)
//!   Frame ──► Frame::encode ──► BytesMut ──► socket      (Frame::to_bytes: encode once, send to many)
//!   Frame + now ──► client::Client ──► frames to send, events, next deadline
//! ```
//!
//! The byte layout of every frame is in `docs/protocol.md`; the header is in
//! [`header`], one module per frame family in [`frame`], the login token of
//! the default verifier in [`token`].

pub mod client;
mod codes;
mod decoder;
mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod token;
mod wire;
pub mod ws;

pub use codes::{ErrorCode, KickReason};
pub use decoder::Decoder;
pub use error::DecodeError;
pub use frame::{Body, Frame};
pub use header::{DEFAULT_MAX_FRAME, HEADER_LEN, Header, Kind, VERSION};
