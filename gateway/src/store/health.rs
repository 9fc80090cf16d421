//! The store's health, as the backend finds it and as operators and
//! clients are told: serving, short of disk space, or failing.
//!
//! A full disk is a state, not a storm. Below the free-space floor the
//! backend refuses what would grow the store (new messages, new groups and
//! members) with `storage_full`, and keeps serving acks, read marks and
//! pulls, which write little and free space through the purge; the state
//! ends by itself once free space is back above the floor plus a margin
//! (so that it does not flap). A write that fails anyway (the floor is 0,
//! or something else filled the disk) makes the store *failing*: every
//! request is refused with `storage_full`, and the backend asks the store
//! to recover (fjall: close and reopen, replaying its journal) on every
//! disk check until it works. Either way `/healthz` says so, with the
//! reason, and the failures are logged once per interval with a count.
//!
//! [`Watch`] holds the decisions and takes its inputs (free bytes, write
//! results, the time) from the caller, so it is tested without a disk;
//! [`StoreHealth`] is what it publishes to other threads.

use std::sync::{
    Mutex,
    atomic::{AtomicU8, AtomicU64, Ordering::Relaxed},
};

/// The state the backend is in with its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Serving.
    Ok = 0,
    /// Free space below the floor: sends refused, the rest served.
    LowSpace = 1,
    /// A write failed: everything refused until the store recovers.
    Failing = 2,
}

/// Published health: read by the endpoint (`/healthz`, metrics), written
/// by the backend.
#[derive(Debug, Default)]
pub struct StoreHealth {
    state: AtomicU8,
    free: AtomicU64,
    reason: Mutex<String>,
    /// Writes that failed.
    pub write_failures: AtomicU64,
    /// Requests refused with `storage_full`.
    pub refused: AtomicU64,
    /// Times the store recovered from failing.
    pub recoveries: AtomicU64,
}

impl StoreHealth {
    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Relaxed) {
            1 => State::LowSpace,
            2 => State::Failing,
            _ => State::Ok,
        }
    }

    /// Free bytes at the last check (0 if unknown).
    pub fn free(&self) -> u64 {
        self.free.load(Relaxed)
    }

    /// Ok, or why not.
    pub fn check(&self) -> Result<(), String> {
        match self.state() {
            State::Ok => Ok(()),
            _ => Err(self
                .reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()),
        }
    }

    fn publish(&self, state: State, reason: String) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        self.state.store(state as u8, Relaxed);
    }
}

/// What the backend should do after an input to [`Watch`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new.
    Nothing,
    /// Try to recover the store (then report with [`Watch::recovered`]).
    Recover,
    /// The state changed: log this line.
    Changed(String),
}

/// Free bytes a failing store waits for before it tries to recover (with
/// no floor, the failure was most likely the disk filling up).
const RECOVER_MIN_FREE: u64 = 4 << 20;

/// First wait between recovery tries, ms; it doubles up to
/// [`MAX_RETRY_MS`], and starts again after a minute of serving.
const FIRST_RETRY_MS: u64 = 1000;
const MAX_RETRY_MS: u64 = 30_000;
const STABLE_MS: u64 = 60_000;

/// The decisions: when the state changes and when to try a recovery.
#[derive(Debug)]
pub struct Watch {
    floor: u64,
    margin: u64,
    state: State,
    failure: String,
    /// No recovery before this time, Unix ms.
    retry_at: u64,
    retry_ms: u64,
    recovered_at: u64,
}

impl Watch {
    /// A watch with a free-space floor of `floor` bytes (0: none). Leaving
    /// the low state takes the floor plus a tenth of it (at least 1 MiB).
    pub fn new(floor: u64) -> Watch {
        Watch {
            floor,
            margin: if floor == 0 {
                0
            } else {
                (floor / 10).max(1 << 20)
            },
            state: State::Ok,
            failure: String::new(),
            retry_at: 0,
            retry_ms: FIRST_RETRY_MS,
            recovered_at: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether requests that grow the store are refused.
    pub fn refuses_growth(&self) -> bool {
        self.state != State::Ok
    }

    /// Whether every request is refused.
    pub fn refuses_all(&self) -> bool {
        self.state == State::Failing
    }

    /// Free bytes were measured at `now_ms` (None: the store cannot tell).
    /// A failing store is recovered once the floor, its margin and at
    /// least 4 MiB are free, no more often than a backoff that doubles
    /// from 1 s to 30 s (a store that fails again at once is not reopened
    /// in a loop).
    pub fn on_free(&mut self, free: Option<u64>, now_ms: u64, health: &StoreHealth) -> Step {
        if let Some(f) = free {
            health.free.store(f, Relaxed);
        }
        let low = free.is_some_and(|f| f < self.floor);
        let clear = free.is_none_or(|f| f >= self.floor + self.margin);
        let roomy = free.is_none_or(|f| f >= (self.floor + self.margin).max(RECOVER_MIN_FREE));
        if self.state == State::Ok && now_ms >= self.recovered_at.saturating_add(STABLE_MS) {
            self.retry_ms = FIRST_RETRY_MS;
        }
        match self.state {
            State::Failing if roomy && now_ms >= self.retry_at => {
                self.retry_at = now_ms.saturating_add(self.retry_ms);
                self.retry_ms = (self.retry_ms * 2).min(MAX_RETRY_MS);
                Step::Recover
            }
            State::Failing => Step::Nothing,
            State::Ok if low => {
                self.state = State::LowSpace;
                let why = format!(
                    "low disk space: {} bytes free, below the floor of {} (disk_free_min_mb); new messages are refused",
                    free.unwrap_or(0),
                    self.floor
                );
                health.publish(State::LowSpace, why.clone());
                Step::Changed(why)
            }
            State::LowSpace if clear => {
                self.state = State::Ok;
                health.publish(State::Ok, String::new());
                Step::Changed(format!(
                    "disk space back: {} bytes free; serving again",
                    free.unwrap_or(0)
                ))
            }
            State::Ok | State::LowSpace => Step::Nothing,
        }
    }

    /// A write failed with `error`.
    pub fn on_write_failed(&mut self, error: &str, health: &StoreHealth) -> Step {
        health.write_failures.fetch_add(1, Relaxed);
        if self.state == State::Failing {
            return Step::Nothing;
        }
        self.state = State::Failing;
        self.failure = error.to_string();
        let why =
            format!("store write failed: {error}; every request is refused until it recovers");
        health.publish(State::Failing, why.clone());
        Step::Changed(why)
    }

    /// The recovery the watch asked for worked at `now_ms` (the store
    /// writes again).
    pub fn recovered(&mut self, now_ms: u64, health: &StoreHealth) -> Step {
        health.recoveries.fetch_add(1, Relaxed);
        self.recovered_at = now_ms;
        // A store that fails again at once waits the backoff from here.
        self.retry_at = now_ms.saturating_add(self.retry_ms);
        self.state = State::Ok;
        health.publish(State::Ok, String::new());
        Step::Changed(format!(
            "store recovered after a failed write ({}); serving again",
            self.failure
        ))
    }
}

/// Lets one line through per `interval_ms`, and counts the rest.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    next_ms: u64,
    held: u64,
}

impl LogLimiter {
    /// One line per `interval_ms`.
    pub fn new(interval_ms: u64) -> LogLimiter {
        LogLimiter {
            interval_ms,
            next_ms: 0,
            held: 0,
        }
    }

    /// At `now_ms`: Some(lines held back since the last one let through)
    /// if this line may be logged, None if it is held back.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms < self.next_ms {
            self.held += 1;
            return None;
        }
        self.next_ms = now_ms.saturating_add(self.interval_ms);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn below_the_floor_refuses_growth_until_the_floor_and_a_margin_are_free() {
        let h = StoreHealth::default();
        let mut w = Watch::new(100 * MIB);
        assert_eq!(w.on_free(Some(200 * MIB), 0, &h), Step::Nothing);
        assert!(matches!(w.on_free(Some(99 * MIB), 0, &h), Step::Changed(_)));
        assert!(w.refuses_growth() && !w.refuses_all());
        assert_eq!(h.state(), State::LowSpace);
        assert!(h.check().is_err_and(|why| why.contains("low disk space")));
        assert_eq!(h.free(), 99 * MIB);
        assert_eq!(
            w.on_free(Some(105 * MIB), 0, &h),
            Step::Nothing,
            "no flapping"
        );
        assert!(matches!(
            w.on_free(Some(110 * MIB), 0, &h),
            Step::Changed(_)
        ));
        assert_eq!((w.state(), h.check()), (State::Ok, Ok(())));
        assert_eq!(
            Watch::new(0).on_free(Some(0), 0, &h),
            Step::Nothing,
            "no floor"
        );
    }

    #[test]
    fn a_failed_write_refuses_everything_and_recovery_waits_for_space() {
        let h = StoreHealth::default();
        let mut w = Watch::new(10 * MIB);
        assert!(matches!(
            w.on_write_failed("No space left", &h),
            Step::Changed(_)
        ));
        assert_eq!(w.on_write_failed("again", &h), Step::Nothing);
        assert_eq!(h.write_failures.load(Relaxed), 2);
        assert!(w.refuses_all());
        assert!(h.check().is_err_and(|why| why.contains("No space left")));
        assert_eq!(w.on_free(Some(MIB), 0, &h), Step::Nothing, "still full");
        assert_eq!(w.on_free(Some(20 * MIB), 0, &h), Step::Recover);
        assert_eq!(
            w.on_free(Some(20 * MIB), 999, &h),
            Step::Nothing,
            "1 s apart"
        );
        assert_eq!(w.on_free(None, 1000, &h), Step::Recover, "unknown: try");
        assert_eq!(w.on_free(None, 2999, &h), Step::Nothing, "then 2 s apart");
        assert!(matches!(w.recovered(3000, &h), Step::Changed(_)));
        assert_eq!((w.state(), h.check()), (State::Ok, Ok(())));
        assert_eq!(h.recoveries.load(Relaxed), 1);
        // Failing again at once: the backoff goes on (4 s).
        w.on_write_failed("again", &h);
        assert_eq!(w.on_free(None, 3500, &h), Step::Nothing);
        assert_eq!(w.on_free(None, 3000 + 4000, &h), Step::Recover);
        // A minute of serving starts it again at 1 s.
        w.recovered(7000, &h);
        assert_eq!(w.on_free(None, 67_000, &h), Step::Nothing);
        w.on_write_failed("later", &h);
        assert_eq!(w.on_free(None, 67_001, &h), Step::Recover);
        assert_eq!(w.on_free(None, 67_001 + 999, &h), Step::Nothing);
        assert_eq!(w.on_free(None, 67_001 + 1000, &h), Step::Recover);
        // No floor: recovery waits for a few MiB all the same.
        let mut w = Watch::new(0);
        w.on_write_failed("No space left", &h);
        assert_eq!(w.on_free(Some(MIB), 0, &h), Step::Nothing);
        assert_eq!(w.on_free(Some(4 * MIB), 0, &h), Step::Recover);
    }

    #[test]
    fn the_limiter_lets_one_line_through_per_interval_with_the_count_held() {
        let mut l = LogLimiter::new(1000);
        assert_eq!(l.allow(5000), Some(0));
        assert_eq!(l.allow(5001), None);
        assert_eq!(l.allow(5999), None);
        assert_eq!(l.allow(6000), Some(2));
        assert_eq!(l.allow(6000), None);
    }
}
