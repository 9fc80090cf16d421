//! login and login:ok.
//!
//! The first frame of every connection is a login carrying who the client
//! claims to be and a token that proves it. The user and device in the frame
//! must match the token; from then on the connection's user is the sender of
//! everything it sends.

use super::fixed_frame;
use crate::{error::DecodeError, wire::Reader};

/// Largest token, in bytes.
pub const MAX_TOKEN: usize = 1024;

/// Largest login frame, header included: the header, the fixed fields and
/// the longest token. A server refuses a longer first frame at once.
pub const MAX_LOGIN_FRAME: usize = crate::header::HEADER_LEN + 20 + MAX_TOKEN;

fn check_token(r: &Reader<'_>, len: usize) -> Result<(), DecodeError> {
    if len == 0 || len > MAX_TOKEN {
        return Err(r.invalid("token length"));
    }
    Ok(())
}

fixed_frame! {
    /// login: `user u64, device u32, resume u64, token [..]`.
    Login: Login {
        /// The user logging in.
        user: u64,
        /// The device of that user; one connection per (user, device).
        device: u32,
        /// The highest inbox sequence id this device holds contiguously
        /// (0 = none). The server pushes nothing at or below it.
        resume: u64,
    }
    tail
    /// The login token, 1 to 1024 bytes (the rest of the frame).
    token, check check_token
}

fixed_frame! {
    /// login:ok: `user u64, device u32, heartbeat_ms u32, server_time u64,
    /// inbox_head u64, max_frame u32, session u64, frame_rate u32,
    /// frame_burst u32, rate_strikes u32`.
    LoginOk: LoginOk {
        /// The authenticated user.
        user: u64,
        /// The authenticated device.
        device: u32,
        /// How often the client should send something (a ping if idle), ms.
        heartbeat_ms: u32,
        /// Server clock, ms since the Unix epoch.
        server_time: u64,
        /// Highest sequence id in the user's inbox; above `resume`, sync.
        inbox_head: u64,
        /// Largest frame the server accepts, header included.
        max_frame: u32,
        /// An id of this connection, for logs on both sides.
        session: u64,
        /// Frames per second the connection may send on average (every
        /// frame counts).
        frame_rate: u32,
        /// Frames the connection may send at once after a quiet spell.
        frame_burst: u32,
        /// Frames refused in a row (`rate_limited`) before the server kicks.
        rate_strikes: u32,
    }
}
