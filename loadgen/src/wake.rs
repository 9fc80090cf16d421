//! A wake-up flag for one task on one thread, as the gateway's: the pacer,
//! the timer task and the reader queue frames, the connection's writer
//! sleeps on this. `!Sync` on purpose: a `Cell` is enough and costs no
//! atomic.

/// Frames are waiting in the connection's staging buffer.
pub(crate) const FLUSH: u8 = 1;
/// Flush, then close the transport (the session ended).
pub(crate) const CLOSE: u8 = 2;
/// Cut the transport now, without a goodbye (storm, chaos).
pub(crate) const CUT: u8 = 4;

/// The gateway's wake-up flag: its source file compiled in here, shared
/// rather than written twice, without a dependency on the gateway crate.
#[allow(dead_code, unreachable_pub)]
#[path = "../../gateway/src/wake.rs"]
mod shared;

pub(crate) use shared::Wake;
