//! Sent one-to-one messages waiting for a delivered or read receipt.
//!
//! Receipts are cumulative over the receiver's inbox ("P holds everything up
//! to seq"), and msg:A told the sender each message's seq in that inbox. So
//! per peer the waiting messages sit in a `BTreeMap` by receiver seq, and a
//! receipt settles a prefix of it with one `split_off`: O(log n + settled).
//!
//! A receipt may also come before the msg:A it covers: after a reconnection
//! the server sends the latest marks at login, and the msg:A of a message
//! retransmitted then comes later. So the tracker keeps the latest mark per
//! peer, and a message tracked at or below it is settled at once.
//!
//! A receiver may never read, so the tracker is bounded: beyond the limit
//! the oldest tracked message is forgotten (no event for it). Insertion
//! order is a FIFO of (peer, seq); settled messages leave stale FIFO slots
//! that are skipped when evicting, and the FIFO is compacted when stale
//! slots outnumber live ones, which keeps it O(1) amortized per message.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Messages waiting for one kind of receipt.
#[derive(Debug)]
pub(crate) struct Tracker {
    by_peer: HashMap<u64, BTreeMap<u64, u64>>,
    /// The highest receipt seen per peer (at most `max` peers remembered).
    marks: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
    len: usize,
    max: usize,
}

impl Tracker {
    /// A tracker remembering at most `max` messages (0: none).
    pub(crate) fn new(max: usize) -> Tracker {
        Tracker {
            by_peer: HashMap::new(),
            marks: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            max,
        }
    }

    /// Messages tracked.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Tracks `msg_id`, stored as `seq` in `peer`'s inbox. Returns true,
    /// tracking nothing, when a receipt already covered that seq.
    pub(crate) fn track(&mut self, peer: u64, seq: u64, msg_id: u64) -> bool {
        if self.max == 0 {
            return false;
        }
        if self.marks.get(&peer).is_some_and(|&m| seq <= m) {
            return true;
        }
        if self
            .by_peer
            .entry(peer)
            .or_default()
            .insert(seq, msg_id)
            .is_none()
        {
            self.len += 1;
        }
        self.order.push_back((peer, seq));
        while self.len > self.max {
            let Some((p, s)) = self.order.pop_front() else {
                break;
            };
            self.forget(p, s);
        }
        if self.order.len() > 2 * self.len + 64 {
            self.compact();
        }
        false
    }

    /// Settles every message to `peer` stored at or below `seq`, in seq
    /// order, returning their msg ids.
    pub(crate) fn settle(&mut self, peer: u64, seq: u64) -> Vec<u64> {
        if self.max > 0 {
            if self.marks.len() >= self.max && !self.marks.contains_key(&peer) {
                // Bounded: forgetting marks only delays an early receipt's
                // effect to the next receipt of that peer.
                self.marks.clear();
            }
            let m = self.marks.entry(peer).or_default();
            *m = (*m).max(seq);
        }
        let Some(map) = self.by_peer.get_mut(&peer) else {
            return Vec::new();
        };
        let rest = match seq.checked_add(1) {
            Some(above) => map.split_off(&above),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(map, rest);
        if map.is_empty() {
            self.by_peer.remove(&peer);
        }
        self.len -= done.len();
        done.into_values().collect()
    }

    fn forget(&mut self, peer: u64, seq: u64) {
        if let Some(map) = self.by_peer.get_mut(&peer) {
            if map.remove(&seq).is_some() {
                self.len -= 1;
            }
            if map.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }

    fn compact(&mut self) {
        let by_peer = &self.by_peer;
        self.order
            .retain(|(p, s)| by_peer.get(p).is_some_and(|m| m.contains_key(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_settles_a_prefix_per_peer() {
        let mut t = Tracker::new(100);
        t.track(7, 10, 1);
        t.track(7, 11, 2);
        t.track(8, 10, 3);
        t.track(7, 12, 4);
        assert_eq!(t.settle(7, 11), vec![1, 2]);
        assert_eq!(t.settle(7, 11), Vec::<u64>::new());
        assert_eq!(t.len(), 2);
        assert_eq!(t.settle(8, u64::MAX), vec![3]);
        assert_eq!(t.settle(7, 12), vec![4]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_oldest_is_forgotten_beyond_the_limit() {
        let mut t = Tracker::new(2);
        t.track(7, 1, 1);
        t.track(8, 1, 2);
        t.track(7, 2, 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.settle(7, 5), vec![3]);
        assert_eq!(t.settle(8, 5), vec![2]);
    }

    #[test]
    fn settled_slots_do_not_pile_up() {
        let mut t = Tracker::new(10);
        // One message never settles and stays at the front.
        t.track(1, 1, 1);
        for i in 0..10_000 {
            t.track(2, i, i);
            t.settle(2, i);
        }
        assert_eq!(t.len(), 1);
        assert!(t.order.len() <= 2 * t.len + 65, "{}", t.order.len());
        assert_eq!(t.settle(1, 1), vec![1]);
    }

    #[test]
    fn a_receipt_before_the_message_settles_it_at_once() {
        let mut t = Tracker::new(10);
        assert_eq!(t.settle(7, 5), Vec::<u64>::new());
        assert!(t.track(7, 5, 1), "covered by the earlier receipt");
        assert!(!t.track(7, 6, 2), "above it: waits");
        assert!(!t.track(8, 1, 3), "another peer: waits");
        assert_eq!(t.len(), 2);
        assert_eq!(t.settle(7, 6), vec![2]);
    }

    #[test]
    fn zero_tracks_nothing() {
        let mut t = Tracker::new(0);
        t.track(7, 1, 1);
        assert_eq!(t.settle(7, 1), Vec::<u64>::new());
    }
}
