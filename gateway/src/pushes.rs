//! Pushes a connection has not acknowledged yet (protocol section 5.7): kept
//! until an ack:R (or sync:R) covers them, sent again with the RETRY flag
//! when the re-push timer fires, up to the re-push limit.
//!
//! An idle connection has none, so it keeps one word for them: the frames
//! live in a box that exists only while some are unacknowledged.

use std::{cell::Cell, collections::VecDeque};

use bytes::Bytes;
use imgate_codec::header::{self, FLAG_RETRY};

use crate::{backend::Track, wheel::TimerKey};

#[derive(Debug, Default)]
struct Pending {
    frames: VecDeque<(Track, Bytes)>,
    retries: u32,
    timer: Option<TimerKey>,
}

/// What the re-push timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Repush {
    /// Nothing is unacknowledged any more.
    Nothing,
    /// Send these again (RETRY set) and arm the timer again.
    Send(Vec<Bytes>),
    /// The re-push limit is spent: kick with `push_unacked`.
    GiveUp,
}

/// One connection's unacknowledged pushes: one word (a `Cell`, not a
/// `RefCell`, whose borrow flag would be a second).
#[derive(Default)]
pub(crate) struct Unacked(Cell<Option<Box<Pending>>>);

impl std::fmt::Debug for Unacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|p| f.debug_tuple("Unacked").field(p).finish())
    }
}

impl Unacked {
    /// Runs `f` on the pending pushes, taken out of the cell and put back.
    fn with<R>(&self, f: impl FnOnce(&mut Option<Box<Pending>>) -> R) -> R {
        let mut slot = self.0.take();
        let r = f(&mut slot);
        self.0.set(slot);
        r
    }

    /// Records a tracked push. Returns true when the re-push timer must be
    /// armed (nothing was pending before).
    pub(crate) fn track(&self, track: Track, bytes: Bytes) -> bool {
        self.with(|p| {
            let p = p.get_or_insert_with(Box::default);
            let first = p.frames.is_empty();
            if first {
                p.retries = 0;
            }
            p.frames.push_back((track, bytes));
            first && p.timer.is_none()
        })
    }

    /// Remembers the armed re-push timer.
    pub(crate) fn set_timer(&self, key: Option<TimerKey>) {
        self.with(|p| {
            if let Some(p) = p.as_mut() {
                p.timer = key;
            }
        });
    }

    /// An acknowledgement of `group` up to `seq` settles pushes. Returns
    /// the timer to cancel when nothing is left.
    pub(crate) fn settle(&self, group: u64, seq: u64) -> Option<TimerKey> {
        self.with(|slot| {
            let p = slot.as_mut()?;
            p.frames
                .retain(|(t, _)| !(t.group == group && t.seq <= seq));
            if p.frames.is_empty() {
                let key = p.timer.take();
                *slot = None;
                return key;
            }
            p.retries = 0;
            None
        })
    }

    /// The re-push timer fired (and is no longer armed).
    pub(crate) fn fired(&self, limit: u32) -> Repush {
        self.with(|slot| {
            let Some(p) = slot.as_mut() else {
                return Repush::Nothing;
            };
            p.timer = None;
            if p.frames.is_empty() {
                return Repush::Nothing;
            }
            if p.retries >= limit {
                return Repush::GiveUp;
            }
            p.retries += 1;
            Repush::Send(
                p.frames
                    .iter()
                    .map(|(_, b)| header::with_flags(b, FLAG_RETRY))
                    .collect(),
            )
        })
    }

    /// The armed re-push timer, taken (the connection is going away).
    pub(crate) fn take_timer(&self) -> Option<TimerKey> {
        self.with(|p| p.as_mut().and_then(|p| p.timer.take()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(group: u64, seq: u64) -> (Track, Bytes) {
        let b = Bytes::from(vec![0, 0, 0, 4, 1, 0x12, 0, 0, seq as u8]);
        (Track { group, seq }, b)
    }

    #[test]
    fn pushes_are_resent_with_retry_until_the_limit() {
        let u = Unacked::default();
        let (t, b) = push(0, 1);
        assert!(u.track(t, b), "the first push arms the timer");
        let (t, b) = push(0, 2);
        assert!(!u.track(t, b));
        for _ in 0..2 {
            match u.fired(2) {
                Repush::Send(frames) => {
                    assert_eq!(frames.len(), 2);
                    assert!(frames.iter().all(|f| f[7] & 1 == 1), "RETRY set");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(u.fired(2), Repush::GiveUp);
    }

    #[test]
    fn an_ack_settles_its_stream_up_to_its_seq_and_resets_the_count() {
        let u = Unacked::default();
        for (g, s) in [(0, 1), (0, 2), (7, 1)] {
            let (t, b) = push(g, s);
            u.track(t, b);
        }
        assert!(matches!(u.fired(1), Repush::Send(f) if f.len() == 3));
        assert_eq!(u.settle(0, 1), None, "some left");
        assert!(
            matches!(u.fired(1), Repush::Send(f) if f.len() == 2),
            "count reset"
        );
        assert_eq!(u.settle(0, 5), None);
        assert_eq!(u.settle(7, 1), None, "no timer was armed to cancel");
        assert_eq!(u.fired(1), Repush::Nothing);
    }
}
