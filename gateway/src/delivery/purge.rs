//! Deleting what no device will ask for again: messages every device
//! acknowledged, and messages older than the retention period.
//!
//! A sweep walks the log one stream at a time, a bounded amount per backend
//! tick, so it never holds the backend thread for long and its deletes ride
//! on an ordinary group commit. For each stream it works out the highest
//! seq every reader has acknowledged (the *acked floor*) and deletes from
//! the stream's oldest record up, while a record is at or below the floor or
//! older than the retention cut-off. Records within a stream are in seq
//! order and, near enough, in time order, so the first record that must stay
//! ends the stream's turn.
//!
//! Who counts as a reader:
//! - an inbox: every device of the user that ever logged in (a device gets a
//!   cursor at its first login, see `apply::login`), at its cursor;
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

use super::keys::{self, StreamId};
use crate::store::{Store, StoreError, Table, WriteBatch};

/// Streams looked at per step, whatever they hold.
const STREAMS_PER_STEP: usize = 256;

/// The end of the whole Log table (longer than any key, all 0xff).
const LOG_END: [u8; 17] = [0xff; 17];

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

/// Where the sweep is.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// The next stream id to look at.
    pos: u64,
    /// Messages deleted since start.
    pub(crate) deleted: u64,
}

impl Sweep {
    /// One bounded step: queues deletes on `batch`; returns how many.
    pub(crate) fn step(
        &mut self,
        r: Retention,
        store: &dyn Store,
        now: u64,
        batch: &mut WriteBatch,
    ) -> Result<usize, StoreError> {
        if !r.purge_acked && r.retention_ms == 0 {
            return Ok(0);
        }
        let cutoff = if r.retention_ms == 0 {
            0
        } else {
            now.saturating_sub(r.retention_ms)
        };
        let mut deleted = 0;
        for _ in 0..STREAMS_PER_STEP {
            let Some(s) = next_stream(store, self.pos)? else {
                // A pass is over; the next step starts the next one.
                self.pos = 0;
                break;
            };
            let floor = if r.purge_acked {
                acked_floor(store, s)?
            } else {
                0
            };
            let budget = r.per_step - deleted;
            let n = purge_stream(store, s, floor, cutoff, budget, batch)?;
            deleted += n;
            if deleted >= r.per_step {
                // This stream may hold more: resume with it.
                self.pos = s.0;
                break;
            }
            match s.0.checked_add(1) {
                Some(p) => self.pos = p,
                None => {
                    self.pos = 0;
                    break;
                }
            }
        }
        self.deleted += deleted as u64;
        Ok(deleted)
    }
}

/// The first stream with a record at or after stream id `pos`.
fn next_stream(store: &dyn Store, pos: u64) -> Result<Option<StreamId>, StoreError> {
    let mut found = None;
    store.scan(
        Table::Log,
        &keys::log_key(StreamId(pos), 0),
        &LOG_END,
        &mut |k, _| {
            found = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(|b| StreamId(u64::from_be_bytes(b)));
            false
        },
    )?;
    Ok(found)
}

/// Deletes the stream's records from the oldest up while they are at or
/// below `floor` or older than `cutoff`, at most `budget` of them.
fn purge_stream(
    store: &dyn Store,
    s: StreamId,
    floor: u64,
    cutoff: u64,
    budget: usize,
    batch: &mut WriteBatch,
) -> Result<usize, StoreError> {
    let mut n = 0;
    store.scan(
        Table::Log,
        &keys::log_key(s, 0),
        &keys::log_key(s, u64::MAX),
        &mut |k, v| {
            let seq = keys::log_key_seq(k).unwrap_or(u64::MAX);
            let time = keys::record_time(v).unwrap_or(u64::MAX);
            if seq > floor && time >= cutoff {
                return false;
            }
            batch.delete(Table::Log, k);
            n += 1;
            n < budget
        },
    )?;
    Ok(n)
}

/// The highest seq of `s` that every reader acknowledged.
fn acked_floor(store: &dyn Store, s: StreamId) -> Result<u64, StoreError> {
    let g = s.wire_group();
    if g == 0 {
        let mut floor: Option<u64> = None;
        cursors(store, s, None, &mut |_, _, c| {
            floor = Some(floor.map_or(c, |f| f.min(c)));
        })?;
        return Ok(floor.unwrap_or(0));
    }
    let mut members = Vec::new();
    store.scan(
        Table::Member,
        &keys::member_key(g, 0),
        &keys::member_key(g.saturating_add(1), 0),
        &mut |k, v| {
            if let (Some(u), Some(join)) = (keys::key_tail_u64(k), keys::u64_value(v)) {
                members.push((u, join));
            }
            true
        },
    )?;
    let mut floor = u64::MAX;
    let mut devices: Vec<(u32, u64)> = Vec::new();
    for (user, join) in members {
        // The member's devices are those with an inbox cursor.
        devices.clear();
        cursors(store, StreamId::inbox(user), Some(user), &mut |_, d, _| {
            devices.push((d, join));
        })?;
        cursors(
            store,
            s,
            Some(user),
            &mut |_, d, c| match devices.iter_mut().find(|e| e.0 == d) {
                Some(e) => e.1 = e.1.max(c),
                None => devices.push((d, join.max(c))),
            },
        )?;
        let member_floor = devices.iter().map(|e| e.1).min().unwrap_or(join);
        floor = floor.min(member_floor);
    }
    Ok(floor)
}

/// Calls `f(user, device, cursor)` for each cursor of `s` (of one user if
/// given).
fn cursors(
    store: &dyn Store,
    s: StreamId,
    user: Option<u64>,
    f: &mut dyn FnMut(u64, u32, u64),
) -> Result<(), StoreError> {
    let (from, to) = match user {
        Some(u) => (keys::cursor_key(s, u, 0), keys::cursor_key(s, u, u32::MAX)),
        None => (
            keys::cursor_key(s, 0, 0),
            keys::cursor_key(s, u64::MAX, u32::MAX),
        ),
    };
    let mut visit = |k: &[u8], v: &[u8]| {
        if let (Some((u, d)), Some(c)) = (keys::cursor_key_owner(k), keys::u64_value(v)) {
            f(u, d, c);
        }
        true
    };
    store.scan(Table::Cursor, &from, &to, &mut visit)?;
    // The end bound is exclusive: the last possible key on its own.
    if let Some(v) = store.get(Table::Cursor, &to)?
        && let (Some((u, d)), Some(c)) = (keys::cursor_key_owner(&to), keys::u64_value(&v))
    {
        f(u, d, c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn put_record(b: &mut WriteBatch, s: StreamId, seq: u64, time: u64) {
        let mut v = Vec::new();
        keys::Record {
            from: 1,
            to: 2,
            msg_id: seq,
            time,
            body: bytes::Bytes::from_static(b"x"),
        }
        .encode_into(&mut v);
        b.put(Table::Log, keys::log_key(s, seq), v);
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
        b.put(
            Table::Cursor,
            keys::cursor_key(inbox, 2, 1),
            7u64.to_be_bytes(),
        );
        b.put(
            Table::Cursor,
            keys::cursor_key(inbox, 2, 2),
            4u64.to_be_bytes(),
        );
        store.write(&b).expect("write");
        // User 3 has no device with a cursor: nothing of its is deleted.
        assert_eq!(sweep_all(&store, ACKED, 2000), 4);
        assert_eq!(seqs(&store, inbox), (5..=10).collect::<Vec<_>>());
        assert_eq!(seqs(&store, other).len(), 10);
    }

    #[test]
    fn a_step_deletes_at_most_its_budget_and_the_next_resumes() {
        let store = MemoryStore::default();
        let inbox = StreamId::inbox(2);
        let mut b = WriteBatch::default();
        for seq in 1..=7 {
            put_record(&mut b, inbox, seq, 1000);
        }
        b.put(Table::Cursor, keys::cursor_key(inbox, 2, 1), 7u64.to_be_bytes());
        store.write(&b).expect("write");
        let mut sw = Sweep::default();
        let mut counts = Vec::new();
        for _ in 0..4 {
            let mut b = WriteBatch::default();
            counts.push(sw.step(ACKED, &store, 2000, &mut b).expect("step"));
            assert_eq!(b.len(), *counts.last().expect("count"));
            store.write(&b).expect("write");
        }
        assert_eq!(counts, vec![3, 3, 1, 0]);
        assert!(seqs(&store, inbox).is_empty());
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
        b.put(
            Table::Cursor,
            keys::cursor_key(StreamId::inbox(1), 1, 1),
            0u64.to_be_bytes(),
        );
        b.put(
            Table::Cursor,
            keys::cursor_key(StreamId::inbox(1), 1, 2),
            0u64.to_be_bytes(),
        );
        b.put(
            Table::Cursor,
            keys::cursor_key(log, 1, 1),
            15u64.to_be_bytes(),
        );
        // Member 2 joined at 12 and never acked: counts at 12.
        b.put(Table::Member, keys::member_key(g, 2), 12u64.to_be_bytes());
        store.write(&b).expect("write");
        assert_eq!(acked_floor(&store, log).expect("floor"), 0);

        let mut b = WriteBatch::default();
        b.put(
            Table::Cursor,
            keys::cursor_key(log, 1, 2),
            18u64.to_be_bytes(),
        );
        store.write(&b).expect("write");
        assert_eq!(acked_floor(&store, log).expect("floor"), 12);
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
}
