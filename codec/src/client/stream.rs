//! Receive state of one stream (the inbox or a group's log): de-duplication,
//! gap detection, in-order delivery and what the acks have covered.
//!
//! Sequence ids of a stream are contiguous from 1, so the whole dedup state
//! is one number, `contiguous` (everything at or below it was received and
//! delivered), plus the few messages that arrived above a gap. Those wait in
//! a `BTreeMap` by seq (ordered, so draining the next ones and dropping the
//! highest on overflow are both O(log n)); the map is bounded because a
//! server, a bug or a long outage can open a gap of any size, and the
//! messages dropped on overflow come again through sync.
//!
//! The cumulative ack needs no counter of its own: the messages delivered
//! but not yet acknowledged are exactly `acked + 1 ..= contiguous`. One flag
//! covers the other reason to ack: the server pushed again a message the
//! device already holds, so it missed the ack, and the protocol asks for the
//! contiguous mark to be acknowledged once more.
//!
//! This module only decides; the [`Client`](super::Client) turns its
//! answers into timers and frames.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;

use super::{event::Event, pull::Pull};
use crate::frame::SyncR;

/// A message of the stream, as pushed or pulled.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) msg_id: u64,
    pub(crate) server_time: u64,
    pub(crate) body: Bytes,
    pub(crate) pulled: bool,
}

/// Something received at a sequence id.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A message to hand to the application.
    Msg(Incoming),
    /// A message this device sent itself (msg:A named its seq): it counts
    /// as received but is not delivered again.
    Own,
}

/// What became of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// At or below the contiguous mark, or already held.
    Duplicate,
    /// It was next; it and the held successors it uncovered went to the
    /// application (`delivered` messages, own copies not counted).
    InOrder { delivered: u64 },
    /// Held above a gap.
    Held,
    /// Above a gap with the buffer full: the highest held message (maybe
    /// this one) was dropped.
    Overflow,
}

/// Receive state of one stream.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// Everything up to here was received and delivered.
    pub(crate) contiguous: u64,
    /// Highest seq acknowledged to the server (ack:R, sync:R or login).
    pub(crate) acked: u64,
    /// Highest seq the server confirmed with ack:A.
    pub(crate) confirmed: u64,
    /// Messages above a gap, by seq.
    held: BTreeMap<u64, Item>,
    /// A re-pushed duplicate arrived: ack the mark again even if nothing
    /// new was delivered.
    pub(crate) reack: bool,
    /// When the current gap turns into a sync, if one is open.
    pub(crate) gap_deadline: Option<Instant>,
    /// When the pending ack goes out, if one is pending.
    pub(crate) ack_deadline: Option<Instant>,
    /// The pull in progress, if any.
    pub(crate) pull: Option<Pull>,
}

impl Stream {
    /// Takes in what arrived at `seq`, delivering (as [`Event::Message`]
    /// into `out`) everything that became contiguous.
    pub(crate) fn accept(
        &mut self,
        group: u64,
        seq: u64,
        item: Item,
        max_held: usize,
        out: &mut VecDeque<Event>,
    ) -> Arrival {
        if seq <= self.contiguous || self.held.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        // seq > contiguous, so contiguous + 1 cannot overflow.
        if seq == self.contiguous + 1 {
            let mut delivered = self.deliver(group, seq, item, out);
            while let Some(next) = self.contiguous.checked_add(1)
                && let Some(item) = self.held.remove(&next)
            {
                delivered += self.deliver(group, next, item, out);
            }
            return Arrival::InOrder { delivered };
        }
        if self.held.len() >= max_held {
            match self.held.last_key_value() {
                Some((&top, _)) if top > seq => {
                    self.held.pop_last();
                    self.held.insert(seq, item);
                }
                // This one is the highest: drop it.
                _ => {}
            }
            return Arrival::Overflow;
        }
        self.held.insert(seq, item);
        Arrival::Held
    }

    /// Raises the contiguous mark to `seq` without delivering anything (the
    /// application already holds the stream up to there, or the server has
    /// nothing there for this device), then delivers what that uncovered.
    pub(crate) fn raise_mark(&mut self, group: u64, seq: u64, out: &mut VecDeque<Event>) -> u64 {
        if seq <= self.contiguous {
            return 0;
        }
        self.contiguous = seq;
        // Anything held at or below the new mark is already there.
        let above = self.held.split_off(&seq.saturating_add(1));
        self.held = above;
        let mut delivered = 0;
        while let Some(next) = self.contiguous.checked_add(1)
            && let Some(item) = self.held.remove(&next)
        {
            delivered += self.deliver(group, next, item, out);
        }
        delivered
    }

    /// Lowers the contiguous mark to `seq` (the server's stream is behind
    /// the device: restored from an older state). Held messages belong to
    /// the lost future and go.
    pub(crate) fn lower_mark(&mut self, seq: u64) {
        if seq >= self.contiguous {
            return;
        }
        self.contiguous = seq;
        self.acked = self.acked.min(seq);
        self.confirmed = self.confirmed.min(seq);
        self.held.clear();
        self.gap_deadline = None;
        self.ack_deadline = None;
        self.reack = false;
    }

    /// Whether an ack:R is owed: new deliveries, or a re-push to answer.
    pub(crate) fn owes_ack(&self) -> bool {
        self.unacked() > 0 || self.reack
    }

    /// Whether messages wait above a gap.
    pub(crate) fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    /// Messages held above a gap.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Delivered messages not yet acknowledged.
    pub(crate) fn unacked(&self) -> u64 {
        self.contiguous.saturating_sub(self.acked)
    }

    /// The next page request of the pull in progress, if any. The request
    /// acknowledges everything up to the contiguous mark, so the pending
    /// ack is dropped.
    pub(crate) fn request_page(&mut self, group: u64, limit: u16) -> Option<SyncR> {
        let req = self.pull.as_mut()?.request(group, self.contiguous, limit);
        self.acked = self.acked.max(self.contiguous);
        self.ack_deadline = None;
        self.reack = false;
        Some(req)
    }

    fn deliver(&mut self, group: u64, seq: u64, item: Item, out: &mut VecDeque<Event>) -> u64 {
        self.contiguous = seq;
        match item {
            Item::Own => 0,
            Item::Msg(m) => {
                out.push_back(Event::Message {
                    group,
                    seq,
                    from: m.from,
                    to: m.to,
                    msg_id: m.msg_id,
                    server_time: m.server_time,
                    body: m.body,
                    pulled: m.pulled,
                });
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Item {
        Item::Msg(Incoming {
            from: 9,
            to: 1,
            msg_id: 100 + seq,
            server_time: 0,
            body: Bytes::new(),
            pulled: false,
        })
    }

    fn seqs(out: &mut VecDeque<Event>) -> Vec<u64> {
        out.drain(..)
            .filter_map(|e| match e {
                Event::Message { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_held_and_duplicates() {
        let mut s = Stream::default();
        let mut out = VecDeque::new();
        assert_eq!(
            s.accept(0, 1, msg(1), 8, &mut out),
            Arrival::InOrder { delivered: 1 }
        );
        assert_eq!(s.accept(0, 3, msg(3), 8, &mut out), Arrival::Held);
        assert_eq!(s.accept(0, 4, msg(4), 8, &mut out), Arrival::Held);
        assert_eq!(s.accept(0, 3, msg(3), 8, &mut out), Arrival::Duplicate);
        assert_eq!(s.accept(0, 1, msg(1), 8, &mut out), Arrival::Duplicate);
        assert_eq!(
            s.accept(0, 2, msg(2), 8, &mut out),
            Arrival::InOrder { delivered: 3 }
        );
        assert_eq!(seqs(&mut out), vec![1, 2, 3, 4]);
        assert_eq!(s.contiguous, 4);
        assert!(!s.has_gap());
        assert_eq!(s.unacked(), 4);
    }

    #[test]
    fn own_copies_fill_the_sequence_silently() {
        let mut s = Stream::default();
        let mut out = VecDeque::new();
        assert_eq!(s.accept(0, 2, Item::Own, 8, &mut out), Arrival::Held);
        assert_eq!(
            s.accept(0, 1, msg(1), 8, &mut out),
            Arrival::InOrder { delivered: 1 }
        );
        assert_eq!(s.contiguous, 2);
        assert_eq!(seqs(&mut out), vec![1]);
    }

    #[test]
    fn overflow_drops_the_highest() {
        let mut s = Stream::default();
        let mut out = VecDeque::new();
        assert_eq!(s.accept(0, 5, msg(5), 2, &mut out), Arrival::Held);
        assert_eq!(s.accept(0, 7, msg(7), 2, &mut out), Arrival::Held);
        // Full: 9 is the highest, it goes.
        assert_eq!(s.accept(0, 9, msg(9), 2, &mut out), Arrival::Overflow);
        // Full: 6 replaces 7.
        assert_eq!(s.accept(0, 6, msg(6), 2, &mut out), Arrival::Overflow);
        assert_eq!(s.held.keys().copied().collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(s.held(), 2);
    }

    #[test]
    fn raising_the_mark_drops_what_it_covers() {
        let mut s = Stream::default();
        let mut out = VecDeque::new();
        s.accept(0, 3, msg(3), 8, &mut out);
        s.accept(0, 6, msg(6), 8, &mut out);
        assert_eq!(s.raise_mark(0, 5, &mut out), 1);
        assert_eq!(s.contiguous, 6);
        assert_eq!(s.unacked(), 6);
        assert_eq!(seqs(&mut out), vec![6]);
        assert_eq!(s.raise_mark(0, 2, &mut out), 0);
        assert_eq!(s.contiguous, 6);
    }

    #[test]
    fn lowering_the_mark_forgets_the_future() {
        let mut s = Stream::default();
        let mut out = VecDeque::new();
        for seq in 1..=5 {
            s.accept(0, seq, msg(seq), 8, &mut out);
        }
        s.accept(0, 8, msg(8), 8, &mut out);
        s.acked = 5;
        s.confirmed = 4;
        s.lower_mark(3);
        assert_eq!((s.contiguous, s.acked, s.confirmed, s.held()), (3, 3, 3, 0));
        // Seq 4 is new again.
        assert_eq!(
            s.accept(0, 4, msg(4), 8, &mut out),
            Arrival::InOrder { delivered: 1 }
        );
    }
}
