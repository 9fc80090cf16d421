//! The live progress line: once a second on stderr, from per-thread
//! counters the workers bump with relaxed atomics.

use std::{
    io::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::engine::ThreadProgress;

/// Progress counters of every thread and the printing state.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) threads: Vec<ThreadProgress>,
    quiet: bool,
    start: Instant,
    /// What the run is doing now, for the line.
    phase: Mutex<&'static str>,
    last: Mutex<(Instant, [u64; 3])>,
    /// Connections the current phase expects.
    pub(crate) expected: AtomicU64,
}

impl Progress {
    pub(crate) fn new(threads: usize, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            threads: (0..threads).map(|_| ThreadProgress::default()).collect(),
            quiet,
            start: now,
            phase: Mutex::new("starting"),
            last: Mutex::new((now, [0; 3])),
            expected: AtomicU64::new(0),
        }
    }

    /// Names the current phase.
    pub(crate) fn phase(&self, p: &'static str) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p;
        }
    }

    fn sum(&self, f: impl Fn(&ThreadProgress) -> u64) -> u64 {
        self.threads.iter().map(f).sum()
    }

    /// Connections logged in now.
    pub(crate) fn logged_in(&self) -> i64 {
        self.threads.iter().map(|t| t.logged_in.load(Relaxed)).sum()
    }

    /// Messages delivered so far (distinct).
    pub(crate) fn delivered(&self) -> u64 {
        self.sum(|t| t.delivered.load(Relaxed))
    }

    /// Messages acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.sum(|t| t.acked.load(Relaxed))
    }

    /// Messages sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sum(|t| t.sent.load(Relaxed))
    }

    /// Pulls finished so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.sum(|t| t.syncs.load(Relaxed))
    }

    /// Prints the line if a second has passed since the last one.
    pub(crate) fn tick(&self) {
        if self.quiet {
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        let dt = now.duration_since(last.0);
        if dt < Duration::from_secs(1) {
            return;
        }
        let cur = [self.sent(), self.acked(), self.delivered()];
        let rate = |i: usize| cur[i].saturating_sub(last.1[i]) as f64 / dt.as_secs_f64();
        let phase = self.phase.lock().map(|p| *p).unwrap_or("");
        let failures = self.sum(|t| t.failures.load(Relaxed));
        let line = format!(
            "[{:>6.1}s] {phase:<12} logged in {}/{}  sent {:.0}/s  acked {:.0}/s  delivered {:.0}/s  (total sent {} delivered {}){}",
            now.duration_since(self.start).as_secs_f64(),
            self.logged_in(),
            self.expected.load(Relaxed),
            rate(0),
            rate(1),
            rate(2),
            cur[0],
            cur[2],
            if failures > 0 {
                format!("  connect failures {failures}")
            } else {
                String::new()
            }
        );
        *last = (now, cur);
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{line}");
    }
}

/// Adds one to a progress counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
