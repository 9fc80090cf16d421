//! The embedded backend's events: an outbox table beside the message log.
//!
//! The delivery thread appends each event to the batch that stores what
//! it reports (table `event`, key: a sequence number, value: the event's
//! JSON), so the event is durable exactly when its message is. The sender
//! thread reads after its cursor (`Meta Events.cursor`), and when the
//! backend took a batch, deletes it and moves the cursor in one write.
//!
//! Ids: a message event's id is `m-<from>-<msg_id>`, which names the
//! message itself (a message stored again after a restore from a backup
//! keeps its id). Any other event's is `<epoch>-<seq>`: the epoch is set
//! when the outbox is first used and again after a restore, so sequence
//! numbers handed out again after a restore never repeat an id.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use super::{Event, Stats, Stored, sender::Source};
use crate::{
    config::EventsConfig,
    store::{Store, StoreError, Table, WriteBatch},
};

/// Meta key: the last event seq written.
pub const HEAD_KEY: &[u8] = b"Events.head";
/// Meta key: the last event seq the backend took.
pub const CURSOR_KEY: &[u8] = b"Events.cursor";
/// Meta key: the id epoch (deleted by a restore).
pub const EPOCH_KEY: &[u8] = b"Events.epoch";

fn event_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn get_u64(store: &dyn Store, k: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(store
        .get(Table::Meta, k)?
        .as_deref()
        .and_then(crate::delivery::keys::u64_value))
}

/// The committed head, shared by the writer and the sender.
#[derive(Debug, Default)]
pub struct Notify {
    head: Mutex<u64>,
    moved: Condvar,
}

impl Notify {
    fn set(&self, head: u64) {
        if let Ok(mut h) = self.head.lock() {
            *h = head;
            self.moved.notify_all();
        }
    }

    fn get(&self) -> u64 {
        self.head.lock().map_or(0, |h| *h)
    }

    /// The head, once past `seen` or after `wait`.
    fn wait_past(&self, seen: u64, wait: Duration) -> u64 {
        let Ok(h) = self.head.lock() else {
            return seen;
        };
        match self.moved.wait_timeout_while(h, wait, |h| *h <= seen) {
            Ok((h, _)) => *h,
            Err(_) => seen,
        }
    }
}

/// The delivery thread's side: appends events to its batches.
#[derive(Debug)]
pub struct Outbox {
    cfg: EventsConfig,
    epoch: u64,
    head: u64,
    /// The head of the last committed batch: below `head` while the
    /// current batch has events.
    committed: u64,
    notify: Arc<Notify>,
}

impl Outbox {
    /// Loads the head; sets the epoch if there is none (a new store, or
    /// one restored from a backup).
    pub fn load(store: &dyn Store, cfg: &EventsConfig, now: u64) -> Result<Outbox, StoreError> {
        let head = get_u64(store, HEAD_KEY)?.unwrap_or(0);
        let epoch = match get_u64(store, EPOCH_KEY)? {
            Some(e) => e,
            None => {
                let mut b = WriteBatch::default();
                b.put(Table::Meta, EPOCH_KEY, now.to_be_bytes());
                store.write(&b)?;
                now
            }
        };
        let notify = Arc::new(Notify::default());
        notify.set(head);
        Ok(Outbox {
            cfg: cfg.clone(),
            epoch,
            head,
            committed: head,
            notify,
        })
    }

    /// Whether events of kind `t` are kept.
    pub fn wants(&self, t: &str) -> bool {
        self.cfg.wants(t)
    }

    /// Appends `ev` to `batch`, if its kind is wanted.
    pub fn push(&mut self, batch: &mut WriteBatch, now: u64, ev: &Event) {
        if !self.wants(ev.kind()) {
            return;
        }
        self.head += 1;
        let id = match ev {
            Event::Message { from, msg_id, .. } => format!("m-{from}-{msg_id}"),
            _ => format!("{}-{}", self.epoch, self.head),
        };
        batch.put(Table::Event, event_key(self.head), ev.to_json(&id, now, ""));
    }

    /// Writes the head into a batch about to be committed.
    pub fn write_head(&self, batch: &mut WriteBatch) {
        if self.head != self.committed {
            batch.put(Table::Meta, HEAD_KEY, self.head.to_be_bytes());
        }
    }

    /// The batch was committed: the sender may read up to the head.
    pub fn committed(&mut self) {
        if self.committed != self.head {
            self.committed = self.head;
            self.notify.set(self.head);
        }
    }

    /// The batch failed: its events were not stored.
    pub fn forget_pending(&mut self) {
        self.head = self.committed;
    }

    /// The sender's side of this outbox.
    pub fn source(
        &self,
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
    ) -> Result<OutboxSource, StoreError> {
        let cursor = get_u64(&*store, CURSOR_KEY)?.unwrap_or(0);
        Ok(OutboxSource {
            store,
            notify: self.notify.clone(),
            stats,
            max_lag: self.cfg.max_lag,
            read: cursor,
            held: std::collections::VecDeque::new(),
            cursor,
        })
    }
}

/// The sender thread's side: reads committed events after its cursor.
pub struct OutboxSource {
    store: Arc<dyn Store>,
    notify: Arc<Notify>,
    stats: Arc<Stats>,
    max_lag: u64,
    /// The last event handed out (or dropped).
    read: u64,
    /// Events handed out and not yet committed, oldest first.
    held: std::collections::VecDeque<u64>,
    /// Everything up to here was taken or dropped.
    cursor: u64,
}

impl std::fmt::Debug for OutboxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxSource")
            .field("read", &self.read)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Deletes per write at most, when a range goes at once.
const DELETE_CHUNK: u64 = 10_000;

impl OutboxSource {
    /// Deletes events `(from, to]`; records `cursor` as taken, if given.
    fn delete(&self, from: u64, to: u64, cursor: Option<u64>) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        let mut at = from;
        loop {
            b.clear();
            let end = to.min(at.saturating_add(DELETE_CHUNK));
            for seq in at + 1..=end {
                b.delete(Table::Event, event_key(seq));
            }
            at = end;
            if at >= to
                && let Some(c) = cursor
            {
                b.put(Table::Meta, CURSOR_KEY, c.to_be_bytes());
            }
            // A cursor lost in a crash only sends those events again.
            self.store.write_lazy(&b)?;
            if at >= to {
                return Ok(());
            }
        }
    }

    /// Past `max_lag` waiting events, drops the oldest not handed out
    /// (a batch being sent stays): counted and logged.
    fn bound(&mut self, head: u64) -> Result<(), StoreError> {
        let waiting = head - self.read + self.held.len() as u64;
        if waiting <= self.max_lag {
            return Ok(());
        }
        let to = head - self.max_lag.saturating_sub(self.held.len() as u64);
        if to <= self.read {
            return Ok(());
        }
        let dropped = to - self.read;
        let cursor = self.held.is_empty().then_some(to);
        self.delete(self.read, to, cursor)?;
        self.read = to;
        if let Some(c) = cursor {
            self.cursor = c;
        }
        self.stats
            .dropped
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            dropped,
            max_lag = self.max_lag,
            "events dropped unsent: more than events.max_lag waited"
        );
        Ok(())
    }
}

impl Source for OutboxSource {
    fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, String> {
        let mut head = self.notify.get();
        if head <= self.read {
            head = self.notify.wait_past(self.read, wait);
        }
        if head <= self.read {
            return Ok(Vec::new());
        }
        self.bound(head).map_err(|e| e.to_string())?;
        // Up to `max` of what is stored in (read, head]: numbers can be
        // missing (dropped past the bound while a batch was held, or a
        // drop cut short by a crash).
        let mut out = Vec::new();
        let from = event_key(self.read + 1);
        let to = event_key(head + 1);
        self.store
            .scan(Table::Event, &from, &to, &mut |k, v| {
                if let Ok(k) = <[u8; 8]>::try_from(k) {
                    out.push(Stored {
                        seq: u64::from_be_bytes(k),
                        json: v.to_vec(),
                    });
                }
                out.len() < max
            })
            .map_err(|e| e.to_string())?;
        self.read = match out.last() {
            Some(last) if out.len() >= max => last.seq,
            // Everything up to the head was read.
            _ => head,
        };
        self.held.extend(out.iter().map(|s| s.seq));
        Ok(out)
    }

    fn commit(&mut self, last: &Stored) -> Result<(), String> {
        while self.held.front().is_some_and(|&s| s <= last.seq) {
            self.held.pop_front();
        }
        // With nothing held, what was dropped past the batch is behind
        // the cursor too.
        let to = self
            .held
            .front()
            .map_or(self.read, |&s| s - 1)
            .max(last.seq);
        if to > self.cursor {
            self.delete(self.cursor, to, Some(to))
                .map_err(|e| e.to_string())?;
            self.cursor = to;
        }
        Ok(())
    }

    fn lag(&mut self) -> Option<u64> {
        let head = self.notify.get();
        if let Err(e) = self.bound(head) {
            tracing::error!(error = %e, "cannot drop events past events.max_lag");
        }
        Some(head.saturating_sub(self.read) + self.held.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn cfg(max_lag: u64) -> EventsConfig {
        EventsConfig {
            url: "http://127.0.0.1:1/".into(),
            secret: "s".into(),
            max_lag,
            ..EventsConfig::default()
        }
    }

    fn online(user: u64) -> Event {
        Event::Online { user, device: 1 }
    }

    fn commit(o: &mut Outbox, store: &dyn Store, b: &mut WriteBatch) {
        o.write_head(b);
        store.write(b).expect("write");
        b.clear();
        o.committed();
    }

    #[test]
    fn events_are_read_after_the_commit_in_order_and_taken_ones_are_gone() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(1000), 7).expect("load");
        let mut src = o.source(store.clone(), Arc::default()).expect("source");
        let mut b = WriteBatch::default();
        for u in 1..=5 {
            o.push(&mut b, 10, &online(u));
        }
        // Not committed: nothing to read.
        assert!(src.next(10, Duration::ZERO).expect("next").is_empty());
        commit(&mut o, &*store, &mut b);
        let got = src.next(3, Duration::ZERO).expect("next");
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let v: serde_json::Value = serde_json::from_slice(&got[0].json).expect("json");
        assert_eq!(v["id"], "7-1");
        assert_eq!(src.lag(), Some(5));
        src.commit(&got[2]).expect("commit");
        assert_eq!(src.lag(), Some(2));
        assert!(
            store
                .get(Table::Event, &event_key(1))
                .expect("get")
                .is_none()
        );
        let rest = src.next(10, Duration::ZERO).expect("next");
        assert_eq!(rest.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5]);
        // A new source (a restart) starts after the cursor.
        let mut again = o.source(store.clone(), Arc::default()).expect("source");
        let got = again.next(10, Duration::ZERO).expect("next");
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5]);
        // The head survives a reload.
        let o2 = Outbox::load(&*store, &cfg(1000), 99).expect("load");
        assert_eq!((o2.head, o2.epoch), (5, 7));
    }

    #[test]
    fn a_failed_batch_hands_its_numbers_out_again() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(1000), 1).expect("load");
        let mut b = WriteBatch::default();
        o.push(&mut b, 1, &online(1));
        o.forget_pending();
        b.clear();
        o.push(&mut b, 1, &online(2));
        commit(&mut o, &*store, &mut b);
        let mut src = o.source(store.clone(), Arc::default()).expect("source");
        let got = src.next(10, Duration::ZERO).expect("next");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 1);
    }

    #[test]
    fn past_max_lag_the_oldest_are_dropped_and_counted() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(3), 1).expect("load");
        let stats = Arc::new(Stats::default());
        let mut src = o.source(store.clone(), stats.clone()).expect("source");
        let mut b = WriteBatch::default();
        for u in 1..=10 {
            o.push(&mut b, 1, &online(u));
        }
        commit(&mut o, &*store, &mut b);
        let got = src.next(100, Duration::ZERO).expect("next");
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 7);
    }

    #[test]
    fn the_bound_holds_while_a_batch_is_being_sent() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(5), 1).expect("load");
        let stats = Arc::new(Stats::default());
        let mut src = o.source(store.clone(), stats.clone()).expect("source");
        let mut b = WriteBatch::default();
        for u in 1..=3 {
            o.push(&mut b, 1, &online(u));
        }
        commit(&mut o, &*store, &mut b);
        // A batch of 3 held (its POSTs failing) while 20 more arrive.
        let held = src.next(3, Duration::ZERO).expect("next");
        for u in 4..=23 {
            o.push(&mut b, 1, &online(u));
        }
        commit(&mut o, &*store, &mut b);
        assert_eq!(src.lag(), Some(5), "3 held + the newest 2");
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 18);
        src.commit(&held[2]).expect("commit");
        let rest = src.next(10, Duration::ZERO).expect("next");
        assert_eq!(rest.iter().map(|s| s.seq).collect::<Vec<_>>(), [22, 23]);
        src.commit(&rest[1]).expect("commit");
        assert_eq!(src.lag(), Some(0));
        let mut left = 0;
        store
            .scan(Table::Event, &[], &[0xff; 9], &mut |_, _| {
                left += 1;
                true
            })
            .expect("scan");
        assert_eq!(left, 0, "sent and dropped events are deleted");
    }

    #[test]
    fn missing_numbers_are_skipped_without_spinning() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(1000), 1).expect("load");
        let mut b = WriteBatch::default();
        for u in 1..=20 {
            o.push(&mut b, 1, &online(u));
        }
        commit(&mut o, &*store, &mut b);
        // 1..=15 gone without the cursor moving (a drop a crash cut short).
        for seq in 1..=15 {
            b.delete(Table::Event, event_key(seq));
        }
        store.write(&b).expect("write");
        let mut src = o.source(store.clone(), Arc::default()).expect("source");
        let got = src.next(3, Duration::ZERO).expect("next");
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [16, 17, 18]);
        let got = src.next(10, Duration::ZERO).expect("next");
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [19, 20]);
        // Nothing new: it waits instead of returning at once.
        let t = std::time::Instant::now();
        assert!(
            src.next(10, Duration::from_millis(50))
                .expect("next")
                .is_empty()
        );
        assert!(t.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn unwanted_kinds_are_not_stored() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut c = cfg(10);
        c.types = vec!["message".into()];
        let mut o = Outbox::load(&*store, &c, 1).expect("load");
        let mut b = WriteBatch::default();
        o.push(&mut b, 1, &online(1));
        assert!(b.is_empty());
        o.push(
            &mut b,
            1,
            &Event::message(1, 2, 0, 9, 1, 1, b"x", true, vec![]),
        );
        commit(&mut o, &*store, &mut b);
        let mut src = o.source(store.clone(), Arc::default()).expect("source");
        let got = src.next(10, Duration::ZERO).expect("next");
        let v: serde_json::Value = serde_json::from_slice(&got[0].json).expect("json");
        assert_eq!(v["id"], "m-1-9");
    }

    #[test]
    fn a_waiting_reader_wakes_on_the_commit() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut o = Outbox::load(&*store, &cfg(10), 1).expect("load");
        let mut src = o.source(store.clone(), Arc::default()).expect("source");
        let t = std::thread::spawn(move || src.next(10, Duration::from_secs(30)).expect("next"));
        let mut b = WriteBatch::default();
        o.push(&mut b, 1, &online(1));
        commit(&mut o, &*store, &mut b);
        assert_eq!(t.join().expect("join").len(), 1);
    }
}
