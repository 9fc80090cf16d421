//! A hashed timing wheel: one per core, for heartbeats, login deadlines and
//! push retransmits.
//!
//! A gateway holds a timer per connection (millions), nearly all of which are
//! pushed back before they fire. A binary heap would pay O(log n) per push
//! back; the wheel pays O(1) to insert, cancel and reschedule, and firing
//! costs one bucket per tick. Timers are entries in a slab, linked into the
//! bucket of `deadline % slots` (scheme 6 of Varghese and Lauck): a bucket may
//! hold timers of later rotations, which are skipped until their tick comes.
//!
//! Liveness does not touch the wheel: a frame only stamps the connection's
//! last-seen tick; when the heartbeat timer fires, the owner re-checks that
//! stamp and reschedules if the connection spoke since. So the hot path never
//! relinks a bucket.
//!
//! The wheel counts ticks and never reads a clock: the owner advances it.

use std::num::NonZeroU32;

use slab::Slab;

/// Identifies a timer for cancel and reschedule. A key whose timer already
/// fired or was cancelled is ignored, even if its slab slot was reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    slot: u32,
    /// Never 0, so that an `Option<TimerKey>` (a connection's liveness
    /// timer) fits in 8 bytes.
    generation: NonZeroU32,
}

/// A slab slot or none, in four bytes (slot + 1 in a `NonZeroU32`): the
/// links are two of the few words every connection's timer costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link(Option<NonZeroU32>);

impl Link {
    const NONE: Link = Link(None);

    fn to(slot: u32) -> Link {
        Link(NonZeroU32::new(slot.wrapping_add(1)))
    }

    fn get(self) -> Option<u32> {
        self.0.map(|n| n.get() - 1)
    }
}

#[derive(Debug)]
struct Entry<T> {
    deadline: u64,
    generation: u32,
    prev: Link,
    next: Link,
    value: T,
}

/// A hashed timing wheel of timers carrying `T`.
#[derive(Debug)]
pub struct Wheel<T> {
    buckets: Box<[Link]>,
    mask: u64,
    entries: Slab<Entry<T>>,
    now: u64,
    next_gen: u32,
    due: Vec<T>,
}

impl<T> Wheel<T> {
    /// A wheel with at least `slots` buckets (rounded up to a power of two),
    /// starting at tick 0.
    pub fn new(slots: usize) -> Wheel<T> {
        let n = slots.max(1).next_power_of_two();
        Wheel {
            buckets: vec![Link::NONE; n].into_boxed_slice(),
            mask: n as u64 - 1,
            entries: Slab::new(),
            now: 0,
            next_gen: 0,
            due: Vec::new(),
        }
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Timers pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Schedules `value` to fire at tick `deadline` (at the next tick if that
    /// is already past).
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let deadline = deadline.max(self.now + 1);
        let generation = NonZeroU32::new(self.next_gen.wrapping_add(1)).unwrap_or(NonZeroU32::MIN);
        self.next_gen = generation.get();
        let slot = self.entries.insert(Entry {
            deadline,
            generation: generation.get(),
            prev: Link::NONE,
            next: Link::NONE,
            value,
        });
        let slot = slot as u32;
        self.link(slot, deadline);
        TimerKey { slot, generation }
    }

    /// Cancels a timer, returning its value if it was pending.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.is_live(key) {
            return None;
        }
        self.unlink(key.slot);
        Some(self.entries.remove(key.slot as usize).value)
    }

    /// Moves a pending timer to a new deadline. Returns false if the key is
    /// no longer pending.
    pub fn reschedule(&mut self, key: TimerKey, deadline: u64) -> bool {
        if !self.is_live(key) {
            return false;
        }
        let deadline = deadline.max(self.now + 1);
        self.unlink(key.slot);
        if let Some(e) = self.entries.get_mut(key.slot as usize) {
            e.deadline = deadline;
        }
        self.link(key.slot, deadline);
        true
    }

    /// The deadline of a pending timer.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.entries
            .get(key.slot as usize)
            .filter(|e| e.generation == key.generation.get())
            .map(|e| e.deadline)
    }

    /// Advances to tick `to`, calling `fire` with every timer whose deadline
    /// is at or before it, in tick order. Timers inserted by `fire` are not
    /// fired in the same call unless due by then.
    pub fn advance(&mut self, to: u64, mut fire: impl FnMut(&mut Self, T)) {
        // Tick by tick: the owner advances once per tick, so a long jump only
        // follows a stall, and visiting its empty buckets costs little.
        let mut due = std::mem::take(&mut self.due);
        while self.now < to {
            self.now += 1;
            let tick = self.now;
            // Detach the due timers first, so `fire` may insert or cancel
            // freely without disturbing the walk.
            let mut cur = self.buckets[(tick & self.mask) as usize].get();
            while let Some(i) = cur {
                let Some(e) = self.entries.get(i as usize) else {
                    break;
                };
                cur = e.next.get();
                if e.deadline <= tick {
                    self.unlink(i);
                    due.push(self.entries.remove(i as usize).value);
                }
            }
            for value in due.drain(..) {
                fire(self, value);
            }
        }
        self.due = due;
    }

    fn is_live(&self, key: TimerKey) -> bool {
        self.entries
            .get(key.slot as usize)
            .is_some_and(|e| e.generation == key.generation.get())
    }

    fn link(&mut self, slot: u32, deadline: u64) {
        let b = (deadline & self.mask) as usize;
        let head = self.buckets[b];
        if let Some(h) = head.get()
            && let Some(e) = self.entries.get_mut(h as usize)
        {
            e.prev = Link::to(slot);
        }
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.prev = Link::NONE;
            e.next = head;
        }
        self.buckets[b] = Link::to(slot);
    }

    fn unlink(&mut self, slot: u32) {
        let Some(e) = self.entries.get(slot as usize) else {
            return;
        };
        let (prev, next, b) = (e.prev, e.next, (e.deadline & self.mask) as usize);
        match prev.get() {
            Some(p) => {
                if let Some(pe) = self.entries.get_mut(p as usize) {
                    pe.next = next;
                }
            }
            None => self.buckets[b] = next,
        }
        if let Some(n) = next.get()
            && let Some(ne) = self.entries.get_mut(n as usize)
        {
            ne.prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut Wheel<u32>, to: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        w.advance(to, |w, v| out.push((w.now(), v)));
        out
    }

    #[test]
    fn fires_at_the_deadline_tick_in_order() {
        let mut w = Wheel::new(8);
        w.insert(3, 30);
        w.insert(1, 10);
        w.insert(2, 20);
        assert_eq!(fired(&mut w, 2), vec![(1, 10), (2, 20)]);
        assert_eq!(fired(&mut w, 5), vec![(3, 30)]);
        assert!(w.is_empty());
    }

    #[test]
    fn later_rotations_wait_for_their_tick() {
        let mut w = Wheel::new(4);
        w.insert(2, 1);
        w.insert(6, 2); // same bucket as 2, one rotation later
        w.insert(10, 3);
        assert_eq!(fired(&mut w, 5), vec![(2, 1)]);
        assert_eq!(fired(&mut w, 9), vec![(6, 2)]);
        assert_eq!(fired(&mut w, 10), vec![(10, 3)]);
    }

    #[test]
    fn cancel_and_reschedule() {
        let mut w = Wheel::new(8);
        let a = w.insert(2, 1);
        let b = w.insert(2, 2);
        let c = w.insert(3, 3);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None, "a second cancel is a no-op");
        assert!(w.reschedule(c, 7));
        assert_eq!(w.deadline(c), Some(7));
        assert_eq!(fired(&mut w, 6), vec![(2, 2)]);
        assert_eq!(fired(&mut w, 7), vec![(7, 3)]);
        assert!(!w.reschedule(b, 9), "fired timers cannot be rescheduled");
    }

    #[test]
    fn stale_keys_do_not_touch_a_reused_slot() {
        let mut w = Wheel::new(8);
        let a = w.insert(1, 1);
        assert_eq!(fired(&mut w, 1), vec![(1, 1)]);
        let b = w.insert(5, 2); // reuses a's slab slot
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(a, 3));
        assert_eq!(w.deadline(b), Some(5));
        assert_eq!(fired(&mut w, 5), vec![(5, 2)]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let mut w = Wheel::new(8);
        fired(&mut w, 10);
        w.insert(3, 1);
        assert_eq!(fired(&mut w, 11), vec![(11, 1)]);
    }

    #[test]
    fn a_long_jump_fires_everything_due_once() {
        let mut w = Wheel::new(4);
        for d in 1..=20 {
            w.insert(d, d as u32);
        }
        w.insert(1000, 99);
        let got = fired(&mut w, 500);
        assert_eq!(got.len(), 20);
        let mut vals: Vec<u32> = got.iter().map(|g| g.1).collect();
        vals.sort_unstable();
        assert_eq!(vals, (1..=20).collect::<Vec<_>>());
        assert_eq!(w.now(), 500);
        assert_eq!(fired(&mut w, 1000), vec![(1000, 99)]);
    }

    #[test]
    fn fire_may_insert_new_timers() {
        let mut w = Wheel::new(8);
        w.insert(1, 0u32);
        let mut seen = Vec::new();
        w.advance(4, |w, v| {
            seen.push((w.now(), v));
            if v < 3 {
                let t = w.now() + 1;
                w.insert(t, v + 1);
            }
        });
        assert_eq!(seen, vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
    }
}
