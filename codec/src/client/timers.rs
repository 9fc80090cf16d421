//! Per-stream timers (gap and ack batching) in one min-heap.
//!
//! A client may follow many groups, so the next stream deadline must not be
//! found by scanning the streams. Each stream keeps its current deadlines;
//! the heap holds (deadline, stream, kind) and an entry whose stream no
//! longer has that deadline is stale and skipped when it reaches the top.
//! Deadlines are only ever set, never moved earlier in place, so a stream
//! has at most one live entry per kind and stale ones are bounded by the
//! number of times a timer was set within its own delay.

use std::{cmp::Reverse, collections::BinaryHeap, time::Instant};

/// Which timer of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// A gap has been open too long: sync.
    Gap,
    /// An ack batch is due.
    Ack,
}

/// A due or pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Instant,
    pub(crate) group: u64,
    pub(crate) kind: Kind,
}

/// Stream timers, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// Adds a timer.
    pub(crate) fn push(&mut self, at: Instant, group: u64, kind: Kind) {
        self.heap.push(Reverse(Timer { at, group, kind }));
    }

    /// The earliest live timer's deadline, dropping stale ones on top.
    pub(crate) fn next(&mut self, live: impl Fn(&Timer) -> bool) -> Option<Instant> {
        while let Some(Reverse(t)) = self.heap.peek() {
            if live(t) {
                return Some(t.at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns the earliest timer if it is due at `now` (live or
    /// not: the caller checks).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_live_first() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        t.push(t0 + ms(30), 1, Kind::Ack);
        t.push(t0 + ms(10), 2, Kind::Gap);
        t.push(t0 + ms(20), 3, Kind::Gap);
        assert_eq!(t.next(|t| t.group != 2), Some(t0 + ms(20)));
        assert_eq!(t.pop_due(t0 + ms(19)), None);
        assert_eq!(
            t.pop_due(t0 + ms(25)),
            Some(Timer {
                at: t0 + ms(20),
                group: 3,
                kind: Kind::Gap
            })
        );
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(t.next(|_| true), Some(t0 + ms(30)));
    }
}
