//! The wait-ack queue: sent msg:R frames waiting for their msg:A.
//!
//! The load generator keeps 100k+ messages a second in flight, so every
//! operation is O(1) amortized and finding the next deadline does not scan.
//!
//! Entries live in a `HashMap` by msg id (msg:A and error frames look them
//! up). Deadlines live in one FIFO per *retransmission delay*: every entry
//! pushed onto a FIFO gets `now + that delay`, and `now` does not go
//! backwards, so each FIFO is sorted by construction, and the next deadline
//! is the smallest of a few fronts. A fixed `rto` needs one FIFO; with a
//! backoff there is one per distinct backed-off delay up to `max_rto`
//! (a handful). A binary heap would also work but costs O(log n) per
//! message for an order the FIFOs get for free.
//!
//! A message is resent only within the server's de-duplication window
//! (counted from its first transmission); past it a resend could be stored
//! twice, so it fails instead.
//!
//! Removing an entry (msg:A) leaves its FIFO slot behind; slots carry a
//! generation number and a slot whose entry is gone or re-armed is skipped
//! when it reaches the front. Acks mostly arrive in send order, so stale
//! slots are mostly at the fronts and are dropped as soon as they are.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::frame::MsgR;

/// A slot in a deadline FIFO.
#[derive(Debug, Clone, Copy)]
struct Slot {
    deadline: Instant,
    msg_id: u64,
    generation: u64,
}

/// One waiting message.
#[derive(Debug)]
struct Pending {
    /// The frame as first sent (`retry` false).
    msg: MsgR,
    /// Retransmissions made after timeouts.
    retries: u32,
    /// When it first went out, if it did.
    first_sent: Option<Instant>,
    /// Generation of its live FIFO slot (0: not armed).
    generation: u64,
    /// Insertion order, to resend in send order after a reconnection.
    order: u64,
}

/// What an expired deadline asks for.
#[derive(Debug)]
pub(crate) enum Expired {
    /// Send this again (`retry` set).
    Retransmit(MsgR),
    /// Retries exhausted: the message has been removed.
    GaveUp(MsgR),
    /// Past the de-duplication window: the message has been removed.
    TooOld(MsgR),
}

/// What to do with a waiting message after (re)login.
#[derive(Debug)]
pub(crate) enum Resend {
    /// Send it for the first time.
    First(MsgR),
    /// Send it again (`retry` set).
    Again(MsgR),
    /// Past the de-duplication window: the message has been removed.
    TooOld(MsgR),
}

/// The wait-ack queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: HashMap<u64, Pending>,
    /// Deadline FIFOs; FIFO `i` holds entries after `i` retransmissions
    /// (the last one also everything beyond).
    fifos: Vec<(Duration, VecDeque<Slot>)>,
    max_retries: u32,
    window: Duration,
    next_generation: u64,
    next_order: u64,
}

impl Outbox {
    /// A queue retransmitting after `rto`, multiplied by `backoff` per
    /// retry and capped at `max_rto`, at most `max_retries` times and not
    /// later than `window` after the first transmission.
    pub(crate) fn new(
        rto: Duration,
        backoff: f64,
        max_rto: Duration,
        max_retries: u32,
        window: Duration,
    ) -> Outbox {
        let mut fifos: Vec<(Duration, VecDeque<Slot>)> = Vec::new();
        let mut delay = rto.min(max_rto);
        for _ in 0..=max_retries {
            if fifos.last().is_some_and(|(d, _)| *d == delay) {
                break;
            }
            fifos.push((delay, VecDeque::new()));
            delay = Duration::try_from_secs_f64(delay.as_secs_f64() * backoff)
                .unwrap_or(max_rto)
                .min(max_rto);
        }
        Outbox {
            entries: HashMap::new(),
            fifos,
            max_retries,
            window,
            next_generation: 1,
            next_order: 0,
        }
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `msg_id` is waiting.
    pub(crate) fn contains(&self, msg_id: u64) -> bool {
        self.entries.contains_key(&msg_id)
    }

    /// Adds a message. With `sent_at`, it has just been transmitted and its
    /// timer starts; without, it waits for the next login.
    pub(crate) fn insert(&mut self, msg: MsgR, sent_at: Option<Instant>) {
        let msg_id = msg.msg_id;
        let order = self.next_order;
        self.next_order += 1;
        self.entries.insert(
            msg_id,
            Pending {
                msg,
                retries: 0,
                first_sent: sent_at,
                generation: 0,
                order,
            },
        );
        if let Some(now) = sent_at {
            self.arm(msg_id, now);
        }
    }

    /// Removes a message (msg:A or a refusal), returning its frame.
    pub(crate) fn remove(&mut self, msg_id: u64) -> Option<MsgR> {
        let p = self.entries.remove(&msg_id)?;
        let level = self.level(p.retries);
        self.trim(level);
        Some(p.msg)
    }

    /// The earliest deadline, dropping stale slots on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        (0..self.fifos.len())
            .filter_map(|i| {
                self.trim(i);
                self.fifos.get(i)?.1.front().map(|s| s.deadline)
            })
            .min()
    }

    /// The next message whose deadline is at or before `now`, if any.
    pub(crate) fn poll_expired(&mut self, now: Instant) -> Option<Expired> {
        // The earliest due front across the FIFOs, so retransmissions go out
        // in deadline order.
        let mut best: Option<(usize, Instant)> = None;
        for i in 0..self.fifos.len() {
            self.trim(i);
            if let Some(s) = self.fifos.get(i).and_then(|(_, q)| q.front())
                && s.deadline <= now
                && best.is_none_or(|(_, d)| s.deadline < d)
            {
                best = Some((i, s.deadline));
            }
        }
        let (i, _) = best?;
        let slot = self.fifos.get_mut(i)?.1.pop_front()?;
        let p = self.entries.get_mut(&slot.msg_id)?;
        if p.retries >= self.max_retries {
            return self
                .entries
                .remove(&slot.msg_id)
                .map(|p| Expired::GaveUp(p.msg));
        }
        if is_too_old(p.first_sent, self.window, now) {
            return self
                .entries
                .remove(&slot.msg_id)
                .map(|p| Expired::TooOld(p.msg));
        }
        p.retries += 1;
        let msg = MsgR {
            retry: true,
            ..p.msg.clone()
        };
        self.arm(slot.msg_id, now);
        Some(Expired::Retransmit(msg))
    }

    /// The messages not sent yet, in send order, now sent at `now` with
    /// their timers started.
    pub(crate) fn send_unsent(&mut self, now: Instant) -> Vec<MsgR> {
        let mut ids: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, p)| p.first_sent.is_none())
            .map(|(&id, p)| (p.order, id))
            .collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            if let Some(p) = self.entries.get_mut(&id) {
                p.first_sent = Some(now);
                out.push(p.msg.clone());
                self.arm(id, now);
            }
        }
        out
    }

    /// Stops every timer (the connection is gone); entries stay.
    pub(crate) fn disarm(&mut self) {
        for (_, q) in &mut self.fifos {
            q.clear();
        }
        for p in self.entries.values_mut() {
            p.generation = 0;
        }
    }

    /// Every waiting message in send order, timers restarted from `now`:
    /// what to put on a fresh connection right after login:ok.
    /// Retransmissions on a new connection do not count against the retry
    /// limit (the old connection, not the server, lost them).
    pub(crate) fn resend_all(&mut self, now: Instant) -> Vec<Resend> {
        let mut ids: Vec<(u64, u64)> = self.entries.iter().map(|(&id, p)| (p.order, id)).collect();
        ids.sort_unstable();
        self.disarm();
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            let Some(p) = self.entries.get_mut(&id) else {
                continue;
            };
            match p.first_sent {
                Some(_) if is_too_old(p.first_sent, self.window, now) => {
                    if let Some(p) = self.entries.remove(&id) {
                        out.push(Resend::TooOld(p.msg));
                    }
                    continue;
                }
                Some(_) => out.push(Resend::Again(MsgR {
                    retry: true,
                    ..p.msg.clone()
                })),
                None => {
                    p.first_sent = Some(now);
                    out.push(Resend::First(p.msg.clone()));
                }
            }
            self.arm(id, now);
        }
        out
    }

    /// The FIFO for an entry after `retries` retransmissions.
    fn level(&self, retries: u32) -> usize {
        (retries as usize).min(self.fifos.len().saturating_sub(1))
    }

    /// Starts the timer of `msg_id` from `now` at its retry level.
    fn arm(&mut self, msg_id: u64, now: Instant) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(p) = self.entries.get_mut(&msg_id) else {
            return;
        };
        p.generation = generation;
        let level = (p.retries as usize).min(self.fifos.len().saturating_sub(1));
        if let Some((delay, q)) = self.fifos.get_mut(level) {
            q.push_back(Slot {
                deadline: now + *delay,
                msg_id,
                generation,
            });
        }
    }

    /// Drops stale slots from the front of FIFO `i`.
    fn trim(&mut self, i: usize) {
        let Some((_, q)) = self.fifos.get_mut(i) else {
            return;
        };
        while let Some(s) = q.front() {
            match self.entries.get(&s.msg_id) {
                Some(p) if p.generation == s.generation => break,
                _ => {
                    q.pop_front();
                }
            }
        }
    }

    /// Slots held across the FIFOs, live or stale (for tests).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.fifos.iter().map(|(_, q)| q.len()).sum()
    }
}

/// Whether a message first sent at `first_sent` is past the window.
fn is_too_old(first_sent: Option<Instant>, window: Duration, now: Instant) -> bool {
    first_sent.is_some_and(|t| now.saturating_duration_since(t) >= window)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(id: u64) -> MsgR {
        MsgR {
            no_push: false,
            msg_id: id,
            group: 0,
            to: 7,
            retry: false,
            body: Bytes::from_static(b"x"),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_makes_one_fifo_per_distinct_delay() {
        let ob = Outbox::new(ms(100), 2.0, ms(500), 10, HOUR);
        let delays: Vec<Duration> = ob.fifos.iter().map(|(d, _)| *d).collect();
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(500)]);
        let fixed = Outbox::new(ms(100), 1.0, ms(500), 10, HOUR);
        assert_eq!(fixed.fifos.len(), 1);
    }

    #[test]
    fn retransmits_back_off_then_give_up() {
        let t0 = Instant::now();
        let mut ob = Outbox::new(ms(100), 2.0, ms(300), 3, HOUR);
        ob.insert(msg(1), Some(t0));
        assert_eq!(ob.next_deadline(), Some(t0 + ms(100)));
        assert!(ob.poll_expired(t0 + ms(99)).is_none());
        let mut at = Vec::new();
        let mut now = t0;
        while let Some(d) = ob.next_deadline() {
            now = d;
            match ob.poll_expired(now) {
                Some(Expired::Retransmit(m)) => {
                    assert!(m.retry);
                    assert_eq!(m.msg_id, 1);
                    at.push(now - t0);
                }
                Some(Expired::GaveUp(m)) => {
                    assert_eq!(m.msg_id, 1);
                    break;
                }
                Some(Expired::TooOld(_)) => panic!("window of an hour"),
                None => panic!("deadline without expiry"),
            }
        }
        assert_eq!(at, vec![ms(100), ms(300), ms(600)]);
        assert_eq!(now - t0, ms(900));
        assert_eq!(ob.len(), 0);
    }

    #[test]
    fn acked_entries_leave_no_deadline_behind() {
        let t0 = Instant::now();
        let mut ob = Outbox::new(ms(100), 1.0, ms(100), 5, HOUR);
        for id in 1..=1000 {
            ob.insert(msg(id), Some(t0 + ms(id)));
        }
        for id in 1..=999 {
            assert!(ob.remove(id).is_some());
        }
        // In-order acks trim the FIFO as they go.
        assert_eq!(ob.slots(), 1);
        assert_eq!(ob.next_deadline(), Some(t0 + ms(1100)));
        assert!(ob.remove(1000).is_some());
        assert_eq!(ob.next_deadline(), None);
        assert_eq!(ob.slots(), 0);
    }

    #[test]
    fn out_of_order_removal_is_skipped_lazily() {
        let t0 = Instant::now();
        let mut ob = Outbox::new(ms(100), 1.0, ms(100), 5, HOUR);
        ob.insert(msg(1), Some(t0));
        ob.insert(msg(2), Some(t0 + ms(10)));
        ob.remove(2);
        assert!(
            matches!(ob.poll_expired(t0 + ms(100)), Some(Expired::Retransmit(m)) if m.msg_id == 1)
        );
        // 2's slot is stale and never expires.
        assert!(ob.poll_expired(t0 + ms(150)).is_none());
        assert_eq!(ob.next_deadline(), Some(t0 + ms(200)));
    }

    #[test]
    fn resend_all_keeps_send_order_and_marks_retries() {
        let t0 = Instant::now();
        let mut ob = Outbox::new(ms(100), 1.0, ms(100), 5, HOUR);
        ob.insert(msg(30), Some(t0));
        ob.insert(msg(10), None);
        ob.insert(msg(20), Some(t0));
        ob.disarm();
        assert_eq!(ob.next_deadline(), None);
        let r = ob.resend_all(t0 + ms(500));
        let got: Vec<(u64, bool, &str)> = r
            .iter()
            .map(|r| match r {
                Resend::First(m) => (m.msg_id, m.retry, "first"),
                Resend::Again(m) => (m.msg_id, m.retry, "again"),
                Resend::TooOld(m) => (m.msg_id, m.retry, "too old"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (30, true, "again"),
                (10, false, "first"),
                (20, true, "again")
            ]
        );
        assert_eq!(ob.next_deadline(), Some(t0 + ms(600)));
        assert_eq!(ob.slots(), 3);
    }
}

#[cfg(test)]
mod window_tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn nothing_is_resent_past_the_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ob = Outbox::new(s(2), 1.0, s(2), 1000, s(60));
        let msg = |id| MsgR {
            no_push: false,
            msg_id: id,
            group: 0,
            to: 7,
            retry: false,
            body: Bytes::new(),
        };
        ob.insert(msg(1), Some(t0));
        ob.insert(msg(2), Some(t0 + s(30)));
        ob.insert(msg(3), None);
        ob.disarm();
        // Reconnected 70 s later: 1 is too old, 2 is not yet, 3 never went out.
        let r = ob.resend_all(t0 + s(70));
        assert!(
            matches!(r.as_slice(), [Resend::TooOld(a), Resend::Again(b), Resend::First(c)]
            if a.msg_id == 1 && b.msg_id == 2 && c.msg_id == 3)
        );
        assert!(!ob.contains(1));
        // Timer retransmissions stop at the window too: 2 was first sent at 30 s.
        let mut last = None;
        while let Some(now) = ob.next_deadline() {
            match ob.poll_expired(now) {
                Some(Expired::TooOld(m)) => {
                    last = Some((m.msg_id, now - t0));
                    break;
                }
                Some(_) => {}
                None => panic!("deadline without expiry"),
            }
        }
        assert_eq!(last, Some((2, s(90))));
    }
}
