//! The run's time base.
//!
//! Every thread of one process shares one monotonic origin, so a time
//! written in a body by the sender's thread means the same thing to the
//! receiver's thread. Times are `u64` nanoseconds since that origin. With
//! `--shard`, each process measures only its own users, whose senders and
//! receivers are all in the process (see [`crate::scenario`]), so no clock
//! is shared between processes.

use std::time::{Duration, Instant};

/// A monotonic origin shared by the threads of a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the origin, now.
    pub fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    /// Nanoseconds since the origin at `t`.
    pub fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` nanoseconds after the origin.
    pub fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
