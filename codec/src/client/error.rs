//! Errors the client returns to its caller.
//!
//! Nothing the server sends is an error here: a bad or unexpected frame is
//! counted or reported as an [`Event`](super::Event), because the caller's
//! only sensible reaction (close, reconnect) is the same for all of them.
//! These are the caller's own mistakes and back-pressure.

/// Why [`Client::send`](super::Client::send) refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The wait-ack queue is full: wait for msg:A (or failures) and retry.
    #[error("{max} messages already await their msg:A")]
    Full {
        /// The configured `max_in_flight`.
        max: usize,
    },
    /// The user or group id is 0, which names nobody.
    #[error("destination id 0")]
    NoDestination,
    /// The body is larger than the server accepts: every message must fit
    /// in a one-entry sync page, so the limit is the frame limit (from
    /// login:ok, else the configured one) less 78 bytes.
    #[error("message body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes of the body.
        len: usize,
        /// The largest body.
        max: usize,
    },
}

/// Why a request other than a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Requests are only sent on a logged-in connection (messages are the
    /// exception: they wait in the queue for the next login).
    #[error("not logged in")]
    NotConnected,
    /// An unread:R is already outstanding; its answer carries no id, so
    /// only one may be.
    #[error("an unread:R is already outstanding")]
    Pending,
}

/// A [`Config`](super::Config) value the client cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The token must be 1 to 1024 bytes.
    #[error("token of {0} bytes (must be 1 to 1024)")]
    TokenLength(usize),
    /// This field must not be zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// `rto_backoff` must be a finite number of at least 1.
    #[error("rto_backoff must be finite and at least 1")]
    Backoff,
    /// `max_rto` must not be below `rto`.
    #[error("max_rto is below rto")]
    MaxRtoBelowRto,
    /// `max_frame` is smaller than a frame header.
    #[error("max_frame of {0} bytes is smaller than a header")]
    MaxFrame(usize),
}
