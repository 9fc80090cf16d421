//! What a run measures: latency histograms per measurement window, counters,
//! and the ledger that proves (or disproves) that every message arrived once.
//!
//! Each thread keeps its own copy of everything (no sharing, no locks on the
//! message path) and hands it to the main thread when asked; the main thread
//! merges them. Latencies are recorded in microseconds in hdrhistogram
//! (3 significant digits, up to an hour).
//!
//! The ledger is the application-level check the brief asks for, on top of
//! the client's own de-duplication by sequence id: each sender numbers its
//! messages 0, 1, 2, ... (the counter in the body), records which of them
//! the server acknowledged, and each receiver records which numbers of each
//! sender it got, in bitsets. A message is **lost** when it was acknowledged
//! and some receiver it was meant for never got it; a **duplicate** when a
//! receiver got the same number twice.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram, microseconds.
pub type Hist = Histogram<u64>;

/// An empty latency histogram: 1 µs to 1 h, 3 significant digits.
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Records `ns` nanoseconds as microseconds (at least 1).
pub(crate) fn record_ns(h: &mut Hist, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

/// A span of scheduled send times whose messages are measured together
/// (one chat run after its warm-up, one capacity step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First scheduled time measured, ns on the run's clock.
    pub from_ns: u64,
    /// End of the window (exclusive).
    pub until_ns: u64,
}

impl Window {
    /// The window that opens `lead` after `start_ns` (a warm-up or a
    /// settling time, not measured) and stays open for `len`.
    pub fn after(start_ns: u64, lead: std::time::Duration, len: std::time::Duration) -> Window {
        let from_ns = start_ns + lead.as_nanos() as u64;
        Window {
            from_ns,
            until_ns: from_ns + len.as_nanos() as u64,
        }
    }

    /// Whether a message scheduled at `ns` belongs to this window.
    pub fn contains(&self, ns: u64) -> bool {
        (self.from_ns..self.until_ns).contains(&ns)
    }
}

/// The latencies and counts of one window.
#[derive(Debug, Clone)]
pub struct WindowStats {
    /// Scheduled send -> msg:A.
    pub ack: Hist,
    /// Scheduled send -> msg:N at a receiver (every receiver).
    pub delivery: Hist,
    /// Scheduled send -> the last receiver of a group message.
    pub group_last: Hist,
    /// Scheduled send -> ack:N (delivered receipt) at the sender.
    pub receipt: Hist,
    /// How late the send itself was: actual send time - scheduled time.
    pub lag: Hist,
    /// Messages sent in the window.
    pub sent: u64,
    /// Of those, acknowledged so far.
    pub acked: u64,
    /// Deliveries (message x receiver) of its messages so far.
    pub delivered: u64,
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            ack: new_hist(),
            delivery: new_hist(),
            group_last: new_hist(),
            receipt: new_hist(),
            lag: new_hist(),
            sent: 0,
            acked: 0,
            delivered: 0,
        }
    }
}

impl WindowStats {
    /// Adds another thread's figures.
    pub fn merge(&mut self, o: &WindowStats) {
        let _ = self.ack.add(&o.ack);
        let _ = self.delivery.add(&o.delivery);
        let _ = self.group_last.add(&o.group_last);
        let _ = self.receipt.add(&o.receipt);
        let _ = self.lag.add(&o.lag);
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counts of a run (summed over threads).
        #[derive(Debug, Clone, Default, Serialize)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: u64,)*
            /// Kicks received, by reason.
            pub kicks: BTreeMap<String, u64>,
            /// Error frames received, by code, frame and text (at most 32 kinds).
            pub server_errors: BTreeMap<String, u64>,
            /// Connection failures, by cause (at most 32 kinds).
            pub connect_errors: BTreeMap<String, u64>,
        }

        impl Counters {
            /// Adds another thread's counts.
            pub fn merge(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
                for (m, om) in [
                    (&mut self.kicks, &o.kicks),
                    (&mut self.server_errors, &o.server_errors),
                    (&mut self.connect_errors, &o.connect_errors),
                ] {
                    for (k, v) in om {
                        *m.entry(k.clone()).or_default() += v;
                    }
                }
            }
        }
    };
}

counters! {
    /// TCP connections established.
    connects,
    /// Connection attempts that failed (refused, timed out, no port, ...).
    connect_failures,
    /// login:ok received (first logins and re-logins).
    logins,
    /// Connections that ended before or instead of login:ok.
    login_failures,
    /// Re-connections after a cut, a kick or a lost connection.
    reconnects,
    /// Moves of a connection to the next target in `--target`, because its
    /// own could not be reached.
    failovers,
    /// Connections cut on purpose (storm, chaos).
    cuts,
    /// Messages handed to the client (each counter once).
    sent,
    /// Sends refused for a while because the wait-ack queue was full.
    send_blocked,
    /// msg:A events (first answer per message).
    acked,
    /// Sends the client gave up (refused by the server or timed out).
    failed,
    /// Distinct messages delivered to receivers (message x receiver).
    delivered,
    /// Of those, delivered through a sync page rather than a push.
    pulled,
    /// Messages delivered again to the application, after the client's
    /// de-duplication (same sender and counter): a correctness failure.
    duplicates_app,
    /// Messages delivered after a later message of the same sender.
    out_of_order_app,
    /// Messages from another run or not from the load generator.
    foreign,
    /// Messages already in an inbox at its first login (earlier runs for
    /// the same users), skipped without pulling.
    stale,
    /// msg:A or receipts for messages this run cannot place.
    unmatched,
    /// Delivered receipts (ack:N) matched to a sent message.
    receipts,
    /// Pulls finished (sync done events).
    syncs_done,
    /// Client: msg:R retransmitted.
    retransmitted,
    /// Client: msg:A for a message no longer waiting.
    late_acks,
    /// Client: messages received, duplicates included.
    received,
    /// Client: received messages dropped as duplicates (by seq).
    duplicates_client,
    /// Client: messages that arrived above a gap.
    out_of_order_client,
    /// Client: held messages dropped on buffer overflow.
    overflow_dropped,
    /// Client: gap syncs started.
    gaps_synced,
    /// Client: seqs the server said are not available (sync skipped them).
    history_skipped,
    /// Client: sync:R sent.
    sync_requests,
    /// Client: ack:R sent.
    acks_sent,
    /// Client: pings sent.
    pings_sent,
    /// Connections the server declared dead or that went silent.
    dead,
}

/// Keys kept in the error maps before new kinds are lumped together.
const MAX_KINDS: usize = 32;

/// Counts `key` in `map`, bounded to [`MAX_KINDS`] kinds.
pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    if map.len() >= MAX_KINDS && !map.contains_key(&key) {
        *map.entry("(other)".to_string()).or_default() += 1;
    } else {
        *map.entry(key).or_default() += 1;
    }
}

/// A growable bitset of message counters.
#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    /// Sets bit `i`; returns whether it was already set.
    pub fn set(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize((w + 1).next_power_of_two(), 0);
        }
        let m = 1u64 << (i % 64);
        let old = self.words[w] & m != 0;
        self.words[w] |= m;
        old
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Bits set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bits set here and not in `other`, below `limit`, with up to `max`
    /// examples of them.
    pub fn missing_from(&self, other: &Bits, limit: u64, max: usize, out: &mut Vec<u64>) -> u64 {
        let mut n = 0;
        for (wi, &w) in self.words.iter().enumerate() {
            let o = other.words.get(wi).copied().unwrap_or(0);
            let mut d = w & !o;
            while d != 0 {
                let b = u64::from(d.trailing_zeros());
                let i = wi as u64 * 64 + b;
                if i < limit {
                    n += 1;
                    if out.len() < max {
                        out.push(i);
                    }
                }
                d &= d - 1;
            }
        }
        n
    }
}

/// What one sender did.
#[derive(Debug, Clone, Default)]
pub struct SenderBook {
    /// Messages sent: counters 0 .. sent.
    pub sent: u64,
    /// Counters acknowledged with msg:A.
    pub acked: Bits,
}

/// What one receiver got from one sender.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Counters received.
    pub bits: Bits,
    /// 1 + the highest counter received (0: none).
    pub top: u64,
}

impl Seen {
    /// Takes in `counter`: returns (duplicate, out of order).
    pub fn take(&mut self, counter: u64) -> (bool, bool) {
        if self.bits.set(counter) {
            return (true, false);
        }
        let ooo = counter + 1 < self.top;
        self.top = self.top.max(counter + 1);
        (false, ooo)
    }
}

/// Every sender's book and every receiver's record, merged from all threads.
#[derive(Debug, Default)]
pub struct Ledger {
    /// By sender (connection id).
    pub senders: HashMap<u32, SenderBook>,
    /// By (receiver, sender) connection ids.
    pub received: HashMap<(u32, u32), Seen>,
}

/// The verdict of a ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Messages sent.
    pub sent: u64,
    /// Messages acknowledged by the server.
    pub acked: u64,
    /// Sent, never acknowledged (failed or still waiting).
    pub unacked: u64,
    /// Deliveries expected (acknowledged message x intended receiver).
    pub expected: u64,
    /// Deliveries that happened (distinct).
    pub delivered: u64,
    /// Acknowledged, meant for a receiver, never delivered to it.
    pub lost: u64,
    /// Delivered without an acknowledgement (msg:A lost with a connection:
    /// fine, the message made it).
    pub delivered_unacked: u64,
    /// Some lost messages: "sender -> receiver #counter".
    pub lost_examples: Vec<String>,
}

impl Ledger {
    /// Adds a thread's books.
    pub fn merge(&mut self, senders: Vec<(u32, SenderBook)>, received: Vec<((u32, u32), Seen)>) {
        self.senders.extend(senders);
        self.received.extend(received);
    }

    /// Checks every sender's messages against the receivers `audience`
    /// names for it.
    pub fn verdict(&self, audience: &dyn Fn(u32) -> Vec<u32>) -> Verdict {
        let mut v = Verdict::default();
        let empty = Seen::default();
        let mut ids: Vec<u32> = self.senders.keys().copied().collect();
        ids.sort_unstable();
        for s in ids {
            let Some(book) = self.senders.get(&s) else {
                continue;
            };
            let acked = book.acked.count();
            v.sent += book.sent;
            v.acked += acked;
            v.unacked += book.sent.saturating_sub(acked);
            for r in audience(s) {
                let seen = self.received.get(&(r, s)).unwrap_or(&empty);
                v.expected += acked;
                let mut ex = Vec::new();
                let lost = book.acked.missing_from(&seen.bits, book.sent, 3, &mut ex);
                v.lost += lost;
                for c in ex {
                    if v.lost_examples.len() < 10 {
                        v.lost_examples.push(format!("{s} -> {r} #{c}"));
                    }
                }
                let mut none = Vec::new();
                v.delivered_unacked += seen.bits.missing_from(&book.acked, u64::MAX, 0, &mut none);
            }
        }
        v.delivered = self.received.values().map(|s| s.bits.count()).sum();
        v
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Summary {
    /// The summary of `h` (µs samples).
    pub fn of(h: &Hist) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_seen() {
        let mut b = Bits::default();
        assert!(!b.set(3));
        assert!(b.set(3));
        assert!(!b.set(1000));
        assert!(b.get(1000) && b.get(3) && !b.get(4));
        assert_eq!(b.count(), 2);
        let mut s = Seen::default();
        assert_eq!(s.take(1), (false, false));
        assert_eq!(s.take(0), (false, true));
        assert_eq!(s.take(0), (true, false));
        assert_eq!(s.take(2), (false, false));
    }

    #[test]
    fn ledger_finds_losses_and_unacked_deliveries() {
        let mut acked = Bits::default();
        for i in 0..10 {
            if i != 7 {
                acked.set(i);
            }
        }
        let mut seen = Seen::default();
        for i in 0..10 {
            if i != 4 {
                seen.take(i);
            }
        }
        let mut l = Ledger::default();
        l.merge(
            vec![(1, SenderBook { sent: 10, acked })],
            vec![((2, 1), seen)],
        );
        let v = l.verdict(&|s| if s == 1 { vec![2] } else { vec![] });
        assert_eq!(v.sent, 10);
        assert_eq!(v.acked, 9);
        assert_eq!(v.unacked, 1);
        assert_eq!(v.lost, 1);
        assert_eq!(v.lost_examples, vec!["1 -> 2 #4".to_string()]);
        assert_eq!(v.delivered, 9);
        assert_eq!(v.delivered_unacked, 1);
    }

    #[test]
    fn summary_in_ms() {
        let mut h = new_hist();
        for us in 1..=1000 {
            h.record(us).expect("in range");
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.01, "{s:?}");
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }
}
