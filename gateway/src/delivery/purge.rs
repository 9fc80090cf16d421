//! Deleting what no device will ask for again: messages every device
//! acknowledged, and messages older than the retention period.
//!
//! A sweep walks the streams on a thread of its own (`imgate-purge`), a
//! bounded number of deletes per step, written without waiting for the disk
//! in atomic batches of about [`WRITE_CHUNK`] deletes, a stream's deletes
//! always with its new floor (a crash may undo a batch; the next sweep
//! redoes it). It runs beside the backend rather than on it: deleting costs
//! about as much as writing, and on the backend thread every step was a
//! stall that every message behind it waited out (docs/benchmarks.md). It
//! only deletes what every reader acknowledged or what is past retention,
//! which the backend never reads back for anyone, so the two need no
//! coordination beyond the store's own. For each stream it works out the highest
//! seq every reader has acknowledged (the *acked floor*) and deletes from
//! the stream's oldest record up, while a record is at or below the floor or
//! older than the retention cut-off. Records within a stream are in seq
//! order and, near enough, in time order, so the first record that must stay
//! ends the stream's turn.
//!
//! Who counts as a reader:
//! - an inbox: every device of the user that ever logged in or acked (a
//!   device gets a device key at its first login, see `apply::login`, or
//!   its first cursor), at its cursor, or 0 if it has none. An inbox whose
//!   user has no device has no reader for the user's own copies (a system
//!   sender id of the server API that never logs in): they go from the
//!   oldest record up to the first one another user sent, which stays for
//!   the user's first device;
//! - a group: every device of every member, at its group cursor or, if it
//!   has none or a lower one, the member's join point (history before it is
//!   not visible to the member anyway). A group with no members keeps
//!   nothing.
//!
//! A device that never comes back pins its inbox until the retention period
//! ends; that is the cost of never losing a message to a device that is
//! merely offline. The sweep deletes only from the log: heads, cursors and
//! receipt marks stay, so sequence ids continue and a device whose cursor is
//! below the oldest kept message sees where its history starts (protocol
//! section 5.8).

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use crossbeam_channel::{Sender, bounded};

use super::{
    keys::{self, StreamId},
    state::get_u64,
};
use crate::{
    clock::Clock,
    store::{Store, StoreError, Table, WriteBatch},
};

/// Streams looked at per step, whatever they hold.
const STREAMS_PER_STEP: usize = 256;

/// Deletes gathered before a step writes them (a write holds the store
/// against the backend's writes while it lasts).
const WRITE_CHUNK: usize = 1000;

/// Members from which a group's acked floor is worth remembering.
const BIG_GROUP: usize = 1000;

/// The purge thread; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Purger {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Purger {
    /// Starts sweeping `store` every `interval`, or back to back while
    /// steps come back full; None if the settings delete nothing.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        r: Retention,
        interval: Duration,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Option<Purger>> {
        if r.keeps_everything() {
            return Ok(None);
        }
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("imgate-purge".into())
            .spawn(move || {
                let mut sweep = Sweep::default();
                let mut batch = WriteBatch::default();
                let mut wait = interval;
                let mut log = crate::store::health::LogLimiter::new(60_000);
                // Both a stop message and a dropped sender end the loop.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(wait)
                {
                    batch.clear();
                    let now = clock.unix_ms();
                    let n = match sweep
                        .step(r, &*store, now, &mut batch)
                        .and_then(|n| store.write_lazy(&batch).map(|()| n))
                    {
                        Ok(n) => n,
                        Err(e) => {
                            // A failing store fails every step: one line
                            // a minute.
                            if let Some(held) = log.allow(now) {
                                tracing::error!(error = %e, earlier_failures_not_logged = held, "purge step failed");
                            }
                            0
                        }
                    };
                    if n > 0 {
                        tracing::debug!(deleted = n, total = sweep.deleted, "purged");
                    }
                    wait = if n >= r.per_step {
                        Duration::ZERO
                    } else {
                        interval
                    };
                }
            })?;
        Ok(Some(Purger {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The retention settings.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Delete messages every reader acknowledged.
    pub purge_acked: bool,
    /// Delete messages older than this, ms; 0 keeps them whatever their
    /// age.
    pub retention_ms: u64,
    /// Most messages deleted per step.
    pub per_step: usize,
}

impl Retention {
    /// The settings of a configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Retention {
        Retention {
            purge_acked: cfg.purge_acked,
            retention_ms: cfg.retention_ms,
            per_step: cfg.purge_per_tick,
        }
    }

    /// True if these settings delete nothing.
    pub fn keeps_everything(&self) -> bool {
        !self.purge_acked && self.retention_ms == 0
    }
}

/// Where the sweep is.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// The next stream id to look at.
    pos: u64,
    /// Streams of the current step (kept to reuse the allocation).
    streams: Vec<(StreamId, u64)>,
    /// Acked floors of big groups: (floor, unix ms until which it is used
    /// instead of being worked out again).
    ///
    /// Working out a group's floor reads one cursor range per member, so a
    /// group of 9,000 members visited on every pass (every 100 ms while
    /// its members keep acking) kept this thread at a quarter of a core. A
    /// group of n members is worked out at most every n ms (1,000 members:
    /// every second), so the cost stays near one read per millisecond per
    /// big group. A remembered floor is never too high: cursors only rise,
    /// and a device that appears later reads from where history starts, as
    /// it would after any purge.
    floors: ahash::AHashMap<StreamId, (u64, u64)>,
    /// Messages deleted since start.
    pub(crate) deleted: u64,
}

impl Sweep {
    /// One bounded step: queues deletes on `batch`; returns how many.
    ///
    /// Streams are found through their stream keys in Meta (written once,
    /// never deleted), rather than through the log, whose deleted records
    /// linger as tombstones until compaction, or the heads, which are
    /// rewritten on every message; each stream is read from its purge
    /// floor up for the same reason.
    pub(crate) fn step(
        &mut self,
        r: Retention,
        store: &dyn Store,
        now: u64,
        batch: &mut WriteBatch,
    ) -> Result<usize, StoreError> {
        if r.keeps_everything() {
            return Ok(0);
        }
        let cutoff = if r.retention_ms == 0 {
            0
        } else {
            now.saturating_sub(r.retention_ms)
        };
        self.streams.clear();
        let streams = &mut self.streams;
        store.scan(
            Table::Meta,
            &keys::stream_key(StreamId(self.pos)),
            keys::STREAM_KEYS_END,
            &mut |k, _| {
                streams.extend(keys::stream_key_stream(k).map(|s| (s, 0)));
                streams.len() < STREAMS_PER_STEP
            },
        )?;
        for (s, head) in &mut self.streams {
            *head = get_u64(store, Table::Meta, &keys::head_key(*s))?.unwrap_or(0);
        }
        // Fewer than asked for: this step ends the pass.
        let mut next_pos = if self.streams.len() < STREAMS_PER_STEP {
            0
        } else {
            self.streams
                .last()
                .map_or(0, |(s, _)| s.0.saturating_add(1))
        };
        let mut deleted = 0;
        for &(s, head) in &self.streams {
            if deleted >= r.per_step {
                // Resume with this stream next time.
                next_pos = s.0;
                break;
            }
            let from = get_u64(store, Table::Meta, &keys::floor_key(s))?.unwrap_or(1);
            if from > head {
                continue;
            }
            let (acked, sender_only) = if r.purge_acked {
                remembered_floor(&mut self.floors, store, s, now)?
            } else {
                (0, None)
            };
            if acked < from && cutoff == 0 && sender_only.is_none() {
                continue;
            }
            let budget = r.per_step - deleted;
            let floor = Floor {
                acked,
                cutoff,
                sender_only,
            };
            let (n, new_from) = purge_stream(store, s, from, floor, budget, batch)?;
            if n > 0 {
                batch.put(Table::Meta, keys::floor_key(s), new_from.to_be_bytes());
                deleted += n;
            }
            // A stream's deletes and its floor go in one write; a step
            // writes as it goes, so that no one write holds the store
            // for long.
            if batch.len() >= WRITE_CHUNK {
                store.write_lazy(batch)?;
                batch.clear();
            }
        }
        self.pos = next_pos;
        self.deleted += deleted as u64;
        if next_pos == 0 {
            // A pass ended: forget the floors that are due anyway.
            self.floors.retain(|_, &mut (_, until)| until > now);
        }
        Ok(deleted)
    }
}

/// What may go from a stream: records at or below `acked`, records older
/// than `cutoff`, and in an inbox whose user has no device, that user's
/// own copies (`sender_only`): nobody will ever read them.
#[derive(Debug, Clone, Copy)]
struct Floor {
    acked: u64,
    cutoff: u64,
    sender_only: Option<u64>,
}

/// The acked floor of `s`, remembered in `floors` for a while if `s` is a
/// big group (see [`Sweep::floors`]), and the inbox's user if it has no
/// device.
fn remembered_floor(
    floors: &mut ahash::AHashMap<StreamId, (u64, u64)>,
    store: &dyn Store,
    s: StreamId,
    now: u64,
) -> Result<(u64, Option<u64>), StoreError> {
    if let Some(&(floor, until)) = floors.get(&s)
        && now < until
    {
        return Ok((floor, None));
    }
    let (floor, members, readerless) = acked_floor(store, s)?;
    if members >= BIG_GROUP {
        floors.insert(s, (floor, now.saturating_add(members as u64)));
    } else {
        floors.remove(&s);
    }
    Ok((floor, readerless.then_some(s.0)))
}

/// Deletes the stream's records from seq `from` up while `floor` lets
/// them go, at most `budget` of them. Returns how many, and the seq above
/// the last one deleted.
fn purge_stream(
    store: &dyn Store,
    s: StreamId,
    from: u64,
    floor: Floor,
    budget: usize,
    batch: &mut WriteBatch,
) -> Result<(usize, u64), StoreError> {
    let (mut n, mut next) = (0, from);
    store.scan(
        Table::Log,
        &keys::log_key(s, from),
        &keys::log_key(s, u64::MAX),
        &mut |k, v| {
            let seq = keys::log_key_seq(k).unwrap_or(u64::MAX);
            let time = keys::record_time(v).unwrap_or(u64::MAX);
            let own = floor.sender_only.is_some() && floor.sender_only == keys::u64_value(v);
            if seq > floor.acked && time >= floor.cutoff && !own {
                return false;
            }
            batch.delete(Table::Log, k);
            n += 1;
            next = seq.saturating_add(1);
            n < budget
        },
    )?;
    Ok((n, next))
}

/// The highest seq of `s` that every reader acknowledged, the members
/// read to work it out (0 for an inbox), and whether `s` is an inbox whose
/// user has no device.
///
/// Devices come from their device keys and cursors are read one by one:
/// cursors are rewritten on every ack, so a range over them walks every
/// version the store keeps (that range was a third of this thread's time).
fn acked_floor(store: &dyn Store, s: StreamId) -> Result<(u64, usize, bool), StoreError> {
    let g = s.wire_group();
    if g == 0 {
        let user = s.0;
        let mut floor: Option<u64> = None;
        for device in devices(store, user)? {
            let c = get_u64(store, Table::Cursor, &keys::cursor_key(s, user, device))?;
            let c = c.unwrap_or(0);
            floor = Some(floor.map_or(c, |f| f.min(c)));
        }
        return Ok((floor.unwrap_or(0), 0, floor.is_none()));
    }
    let mut members = Vec::new();
    let member_prefix = keys::member_key(g, 0);
    scan_prefix(store, Table::Member, &member_prefix[..9], &mut |k, v| {
        if let (Some(u), Some(join)) = (keys::key_tail_u64(k), keys::u64_value(v)) {
            members.push((u, super::roles::Joined::from_u64(join).seq()));
        }
    })?;
    let mut floor = u64::MAX;
    let n = members.len();
    for (user, join) in members {
        // Each of the member's devices counts at its group cursor, or at
        // the join point if it has none (or a lower one: nothing before the
        // join is visible to it); a member with no device, at the join.
        let mut member_floor = join;
        for (i, device) in devices(store, user)?.into_iter().enumerate() {
            let c = get_u64(store, Table::Cursor, &keys::cursor_key(s, user, device))?;
            let c = c.map_or(join, |c| c.max(join));
            member_floor = if i == 0 { c } else { member_floor.min(c) };
        }
        floor = floor.min(member_floor);
    }
    Ok((floor, n, false))
}

/// The devices of `user` that have a cursor somewhere.
fn devices(store: &dyn Store, user: u64) -> Result<Vec<u32>, StoreError> {
    let mut out = Vec::new();
    let prefix = keys::device_key(user, 0);
    scan_prefix(store, Table::Meta, &prefix[..9], &mut |k, _| {
        out.extend(keys::device_key_device(k));
    })?;
    Ok(out)
}

/// Calls `f` with every entry of `t` whose key starts with `prefix`.
fn scan_prefix(
    store: &dyn Store,
    t: Table,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &[u8]),
) -> Result<(), StoreError> {
    let end = keys::prefix_end(prefix);
    // An all-0xff prefix has no end key: scan to the end of the table.
    let end = end.as_deref().unwrap_or(&[0xff; 32]);
    store.scan(t, prefix, end, &mut |k, v| {
        if k.starts_with(prefix) {
            f(k, v);
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn put_record(b: &mut WriteBatch, s: StreamId, seq: u64, time: u64) {
        put_record_from(b, s, seq, time, 1);
    }

    fn put_record_from(b: &mut WriteBatch, s: StreamId, seq: u64, time: u64, from: u64) {
        let mut v = Vec::new();
        keys::Record {
            from,
            to: 2,
            msg_id: seq,
            time,
            body: bytes::Bytes::from_static(b"x"),
        }
        .encode_into(&mut v);
        b.put(Table::Log, keys::log_key(s, seq), v);
        b.put(Table::Meta, keys::head_key(s), seq.to_be_bytes());
        b.put(Table::Meta, keys::stream_key(s), []);
    }

    /// A cursor, and its device key, as the backend writes them.
    fn put_cursor(b: &mut WriteBatch, s: StreamId, user: u64, device: u32, seq: u64) {
        b.put(
            Table::Cursor,
            keys::cursor_key(s, user, device),
            seq.to_be_bytes(),
        );
        b.put(Table::Meta, keys::device_key(user, device), []);
    }

    fn seqs(store: &dyn Store, s: StreamId) -> Vec<u64> {
        let mut out = Vec::new();
        store
            .scan(
                Table::Log,
                &keys::log_key(s, 0),
                &keys::log_key(s, u64::MAX),
                &mut |k, _| {
                    out.extend(keys::log_key_seq(k));
                    true
                },
            )
            .expect("scan");
        out
    }

    fn sweep_all(store: &dyn Store, r: Retention, now: u64) -> u64 {
        let mut sw = Sweep::default();
        let mut b = WriteBatch::default();
        // Enough steps for a whole pass at any budget used here.
        for _ in 0..100 {
            b.clear();
            sw.step(r, store, now, &mut b).expect("step");
            store.write(&b).expect("write");
        }
        sw.deleted
    }

    const ACKED: Retention = Retention {
        purge_acked: true,
        retention_ms: 0,
        per_step: 3,
    };

    #[test]
    fn an_inbox_keeps_what_any_device_has_not_acked() {
        let store = MemoryStore::default();
        let inbox = StreamId::inbox(2);
        let other = StreamId::inbox(3);
        let mut b = WriteBatch::default();
        for seq in 1..=10 {
            put_record(&mut b, inbox, seq, 1000);
            put_record(&mut b, other, seq, 1000);
        }
        put_cursor(&mut b, inbox, 2, 1, 7);
        put_cursor(&mut b, inbox, 2, 2, 4);
        store.write(&b).expect("write");
        // User 3 has no device with a cursor: nothing of its is deleted.
        assert_eq!(sweep_all(&store, ACKED, 2000), 4);
        assert_eq!(seqs(&store, inbox), (5..=10).collect::<Vec<_>>());
        assert_eq!(seqs(&store, other).len(), 10);
    }

    #[test]
    fn a_user_without_devices_keeps_no_own_copies_but_keeps_what_others_sent() {
        let store = MemoryStore::default();
        let notices = StreamId::inbox(9);
        let mut b = WriteBatch::default();
        for (seq, from) in [(1, 9), (2, 9), (3, 9), (4, 5), (5, 9)] {
            put_record_from(&mut b, notices, seq, 1000, from);
        }
        store.write(&b).expect("write");
        assert_eq!(sweep_all(&store, ACKED, 2000), 3);
        assert_eq!(seqs(&store, notices), vec![4, 5], "user 5's message waits");
        // Once the user has a device, its own copies wait for it too.
        let mut b = WriteBatch::default();
        put_record_from(&mut b, StreamId::inbox(8), 1, 1000, 8);
        put_cursor(&mut b, StreamId::inbox(8), 8, 1, 0);
        store.write(&b).expect("write");
        assert_eq!(sweep_all(&store, ACKED, 2000), 0);
    }

    #[test]
    fn a_big_step_writes_as_it_goes_each_stream_with_its_floor() {
        // Three inboxes of 600 acked records: a step of 2,000 writes the
        // first two streams itself (over 1,000 deletes gathered) and
        // leaves the third, with its floor, in the caller's batch.
        let store = MemoryStore::default();
        let inboxes: Vec<StreamId> = (2..=4).map(StreamId::inbox).collect();
        let mut b = WriteBatch::default();
        for &s in &inboxes {
            for seq in 1..=600 {
                put_record(&mut b, s, seq, 1000);
            }
            let user = s.0;
            put_cursor(&mut b, s, user, 1, 600);
        }
        store.write(&b).expect("write");
        let big = Retention {
            per_step: 2000,
            ..ACKED
        };
        let mut sw = Sweep::default();
        let mut b = WriteBatch::default();
        assert_eq!(sw.step(big, &store, 2000, &mut b).expect("step"), 1800);
        let written: Vec<usize> = inboxes.iter().map(|&s| seqs(&store, s).len()).collect();
        assert_eq!(written, vec![0, 0, 600], "two streams written by the step");
        assert_eq!(b.len(), 601, "the third stream's deletes and its floor");
        store.write(&b).expect("write");
        for &s in &inboxes {
            assert!(seqs(&store, s).is_empty());
            let floor = store.get(Table::Meta, &keys::floor_key(s)).expect("get");
            assert_eq!(floor.as_deref().and_then(keys::u64_value), Some(601));
        }
    }

    #[test]
    fn a_step_deletes_at_most_its_budget_and_the_next_resumes() {
        let store = MemoryStore::default();
        let inbox = StreamId::inbox(2);
        let mut b = WriteBatch::default();
        for seq in 1..=7 {
            put_record(&mut b, inbox, seq, 1000);
        }
        put_cursor(&mut b, inbox, 2, 1, 7);
        store.write(&b).expect("write");
        let mut sw = Sweep::default();
        let mut counts = Vec::new();
        for _ in 0..4 {
            let mut b = WriteBatch::default();
            counts.push(sw.step(ACKED, &store, 2000, &mut b).expect("step"));
            // The deletes, and the stream's new floor with them.
            let n = *counts.last().expect("count");
            assert_eq!(b.len(), n + usize::from(n > 0));
            store.write(&b).expect("write");
        }
        assert_eq!(counts, vec![3, 3, 1, 0]);
        assert!(seqs(&store, inbox).is_empty());
        let floor = store
            .get(Table::Meta, &keys::floor_key(inbox))
            .expect("get");
        assert_eq!(floor.as_deref().and_then(keys::u64_value), Some(8));
    }

    #[test]
    fn retention_deletes_old_messages_acked_or_not() {
        let store = MemoryStore::default();
        let inbox = StreamId::inbox(2);
        let mut b = WriteBatch::default();
        for seq in 1..=6 {
            put_record(&mut b, inbox, seq, seq * 100);
        }
        store.write(&b).expect("write");
        let r = Retention {
            purge_acked: false,
            retention_ms: 250,
            per_step: 100,
        };
        // Cut-off 650 - 250 = 400: seqs 1..=3 are older.
        assert_eq!(sweep_all(&store, r, 650), 3);
        assert_eq!(seqs(&store, inbox), vec![4, 5, 6]);
        let off = Retention {
            purge_acked: false,
            retention_ms: 0,
            per_step: 100,
        };
        assert_eq!(sweep_all(&store, off, 1_000_000), 0);
    }

    #[test]
    fn a_group_keeps_what_any_device_of_any_member_has_not_acked() {
        let store = MemoryStore::default();
        let g = 9;
        let log = StreamId::group(g);
        let mut b = WriteBatch::default();
        for seq in 1..=20 {
            put_record(&mut b, log, seq, 1000);
        }
        // Member 1 joined at 0 with two devices: group cursors 15 and none
        // (device 2 only has an inbox cursor, so it counts at its join, 0).
        b.put(Table::Member, keys::member_key(g, 1), 0u64.to_be_bytes());
        put_cursor(&mut b, StreamId::inbox(1), 1, 1, 0);
        put_cursor(&mut b, StreamId::inbox(1), 1, 2, 0);
        put_cursor(&mut b, log, 1, 1, 15);
        // Member 2 joined at 12 and never acked: counts at 12.
        b.put(Table::Member, keys::member_key(g, 2), 12u64.to_be_bytes());
        store.write(&b).expect("write");
        assert_eq!(acked_floor(&store, log).expect("floor"), (0, 2, false));

        let mut b = WriteBatch::default();
        put_cursor(&mut b, log, 1, 2, 18);
        store.write(&b).expect("write");
        assert_eq!(acked_floor(&store, log).expect("floor"), (12, 2, false));
        assert_eq!(sweep_all(&store, ACKED, 2000), 12);
        assert_eq!(seqs(&store, log), (13..=20).collect::<Vec<_>>());

        // Once every member left, nothing is kept.
        let mut b = WriteBatch::default();
        b.delete(Table::Member, keys::member_key(g, 1));
        b.delete(Table::Member, keys::member_key(g, 2));
        store.write(&b).expect("write");
        assert_eq!(sweep_all(&store, ACKED, 2000), 8);
        assert!(seqs(&store, log).is_empty());
    }

    /// A group of `members` users (1..=members, joined at 0, one device
    /// each) whose group cursors are all at `acked`, with records 1..=10.
    fn big_group(store: &dyn Store, g: u64, members: u64, acked: u64) {
        let log = StreamId::group(g);
        let mut b = WriteBatch::default();
        for seq in 1..=10 {
            put_record(&mut b, log, seq, 1000);
        }
        for u in 1..=members {
            b.put(Table::Member, keys::member_key(g, u), 0u64.to_be_bytes());
            put_cursor(&mut b, StreamId::inbox(u), u, 1, 0);
        }
        store.write(&b).expect("write");
        ack_all(store, g, members, acked);
    }

    fn ack_all(store: &dyn Store, g: u64, members: u64, to: u64) {
        let mut b = WriteBatch::default();
        for u in 1..=members {
            put_cursor(&mut b, StreamId::group(g), u, 1, to);
        }
        store.write(&b).expect("write");
    }

    fn step_at(sw: &mut Sweep, store: &dyn Store, now: u64) -> usize {
        let r = Retention {
            purge_acked: true,
            retention_ms: 0,
            per_step: 100,
        };
        let mut b = WriteBatch::default();
        let n = sw.step(r, store, now, &mut b).expect("step");
        store.write(&b).expect("write");
        n
    }

    #[test]
    fn a_big_groups_floor_is_worked_out_at_most_every_member_count_ms() {
        let store = MemoryStore::default();
        let (g, members) = (9, BIG_GROUP as u64);
        big_group(&store, g, members, 3);
        let mut sw = Sweep::default();
        assert_eq!(step_at(&mut sw, &store, 10_000), 3);
        // Everyone acks everything; within 1,000 ms (one per member) the
        // remembered floor, 3, still holds.
        ack_all(&store, g, members, 10);
        assert_eq!(step_at(&mut sw, &store, 10_500), 0);
        assert_eq!(step_at(&mut sw, &store, 10_999), 0);
        assert_eq!(seqs(&store, StreamId::group(g)).len(), 7);
        // Then it is worked out again.
        assert_eq!(step_at(&mut sw, &store, 11_000), 7);
        assert!(seqs(&store, StreamId::group(g)).is_empty());
    }

    #[test]
    fn a_small_groups_floor_is_worked_out_on_every_visit() {
        let store = MemoryStore::default();
        let (g, members) = (9, BIG_GROUP as u64 - 1);
        big_group(&store, g, members, 3);
        let mut sw = Sweep::default();
        assert_eq!(step_at(&mut sw, &store, 10_000), 3);
        ack_all(&store, g, members, 10);
        assert_eq!(step_at(&mut sw, &store, 10_001), 7);
    }
}
