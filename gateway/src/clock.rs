//! Where the server's rules get the time. The delivery backend's rules
//! (the de-duplication window, `server_time`, retention) read a [`Clock`]
//! handed to them, as rustls takes its `TimeProvider`: the wall clock in
//! production, a [`ManualClock`] the test moves in tests, so a window or a
//! retention period is crossed without sleeping through it.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The system's wall clock now, ms since the Unix epoch: for what is not
/// a delivery rule (leases, log and metric times, event timestamps).
pub fn unix_ms() -> u64 {
    u64::try_from(crate::unix_time().as_millis()).unwrap_or(u64::MAX)
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        unix_ms()
    }
}

/// A clock that reads what it was set to; clones share the time.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `unix_ms`.
    pub fn at(unix_ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(unix_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::at(1_000);
        let d = c.clone();
        assert_eq!(c.unix_ms(), 1_000);
        d.advance(250);
        assert_eq!(c.unix_ms(), 1_250);
        assert!(SystemClock.unix_ms() > 1_700_000_000_000);
    }
}
