//! What the delivery logic keeps in memory: caches of the store (stream
//! heads, cursors, memberships, receipt marks) and what the
//! current batch has changed but not yet committed.
//!
//! Every cache is filled from the store on first use, so a restart needs no
//! replay: the store is the truth and memory is a copy of the parts in use.
//! If a commit fails, the caches are dropped and refilled from the store.
//! Each cache holds at most `cache_entries` (see [`Cache`]): a gateway that
//! has seen millions of users keeps only those in recent use, and drops the
//! rest right after a commit, when nothing cached is ahead of the store.

mod receipts;

use ahash::{AHashMap, AHashSet};

use super::{
    cache::Cache,
    keys::{self, Answer, StreamId},
};
use crate::{
    config::Config,
    store::{Store, StoreError, Table, WriteBatch},
};

/// The limits the delivery logic enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long (sender, msg id) is remembered, ms.
    pub dedup_window_ms: u64,
    /// Page size when a sync:R asks for 0.
    pub page_default: usize,
    /// Largest page.
    pub page_max: usize,
    /// Largest group.
    pub max_group_size: usize,
    /// Who manages group membership.
    pub group_admin: crate::config::GroupAdmin,
    /// Largest message body.
    pub max_body: usize,
    /// Largest frame the server sends.
    pub max_frame: usize,
    /// Most inbox entries read for one unread summary.
    pub unread_scan_limit: usize,
    /// Whether acknowledged messages are purged (devices then register
    /// at login, to count as readers).
    pub purge_acked: bool,
    /// Most entries per cache.
    pub cache_entries: usize,
}

impl Limits {
    /// The limits of a configuration.
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            dedup_window_ms: cfg.dedup_window_ms,
            page_default: cfg.sync_page_default,
            page_max: cfg.sync_page_max,
            max_group_size: cfg.max_group_size,
            group_admin: cfg.group_admin,
            max_body: super::rules::max_body(cfg.max_frame),
            max_frame: cfg.max_frame,
            unread_scan_limit: cfg.unread_scan_limit,
            purge_acked: cfg.purge_acked,
            cache_entries: cfg.cache_entries,
        }
    }
}

/// A group's members: user -> the group head when they joined.
#[derive(Debug, Default, Clone)]
pub(crate) struct Group {
    pub(crate) members: AHashMap<u64, crate::delivery::roles::Joined>,
}

/// The senders of the newest messages of one inbox: `from[i]` sent seq
/// `first + i`.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    first: u64,
    from: std::collections::VecDeque<u64>,
}

/// Messages per inbox whose senders are remembered.
const RECENT: usize = 16;

/// In-memory state of the delivery logic.
pub(crate) struct State {
    pub(crate) limits: Limits,
    heads: Cache<StreamId, u64>,
    dirty_heads: AHashSet<StreamId>,
    /// Streams whose first message is in this batch.
    new_streams: Vec<StreamId>,
    cursors: Cache<(StreamId, u64, u32), u64>,
    delivered: Cache<u64, u64>,
    /// (sender, peer) -> the receipt marks of the sender's messages to the
    /// peer; None while the sender never wrote to the peer.
    marks: Cache<(u64, u64), Option<(u64, u64)>>,
    group_reads: Cache<(u64, u64), u64>,
    groups: Cache<u64, Option<Group>>,
    /// Who sent the newest messages of each inbox, so that the delivered
    /// receipts of an ack need not read the messages back from the store
    /// (that range read was a seventh of the backend's time in chat).
    recent: Cache<u64, Recent>,
    next_group: u64,
    pending_dedup: AHashMap<(u64, u64), Answer>,
    expired_epoch: u64,
    /// Events for the business backend, when they are on.
    pub(crate) events: Option<crate::events::outbox::Outbox>,
    /// Logged-in connections per user on this gateway (for presence
    /// events and a message event's offline recipients).
    pub(crate) online: AHashMap<u64, u32>,
}

/// The u64 value of a key, if it has one.
pub(super) fn get_u64(store: &dyn Store, t: Table, k: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(store.get(t, k)?.as_deref().and_then(keys::u64_value))
}

/// Writes the stream and device keys (see `keys`) of a store written
/// before they existed: one pass over the heads and the cursors, once.
fn index_for_purge(store: &dyn Store) -> Result<(), StoreError> {
    if store.get(Table::Meta, keys::PURGE_INDEX_KEY)?.is_some() {
        return Ok(());
    }
    let mut found: Vec<Vec<u8>> = Vec::new();
    store.scan(
        Table::Meta,
        &keys::head_key(StreamId(0)),
        keys::HEAD_KEYS_END,
        &mut |k, _| {
            found.extend(keys::head_key_stream(k).map(|s| keys::stream_key(s).to_vec()));
            true
        },
    )?;
    store.scan(Table::Cursor, &[], &[0xff; 21], &mut |k, _| {
        found.extend(keys::cursor_key_owner(k).map(|(u, d)| keys::device_key(u, d).to_vec()));
        true
    })?;
    let mut b = WriteBatch::new();
    for chunk in found.chunks(10_000) {
        b.clear();
        for k in chunk {
            b.put(Table::Meta, k, []);
        }
        store.write(&b)?;
    }
    // Last: a crash before it redoes the pass, which only rewrites keys.
    b.clear();
    b.put(Table::Meta, keys::PURGE_INDEX_KEY, []);
    store.write(&b)
}

impl State {
    /// Loads what must be known before the first event.
    pub(crate) fn load(store: &dyn Store, limits: Limits) -> Result<State, StoreError> {
        let next_group = get_u64(store, Table::Meta, keys::NEXT_GROUP_KEY)?.unwrap_or(1);
        index_for_purge(store)?;
        let n = limits.cache_entries;
        Ok(State {
            heads: Cache::new(n),
            dirty_heads: AHashSet::new(),
            new_streams: Vec::new(),
            cursors: Cache::new(n),
            delivered: Cache::new(n),
            marks: Cache::new(n),
            group_reads: Cache::new(n),
            groups: Cache::weighted(n, |g| 1 + g.as_ref().map_or(0, |g| g.members.len())),
            recent: Cache::new(n),
            limits,
            next_group,
            pending_dedup: AHashMap::new(),
            expired_epoch: 0,
            events: None,
            online: AHashMap::new(),
        })
    }

    /// Drops every cache after a failed commit.
    pub(crate) fn reload(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        let limits = self.limits.clone();
        let (events, online) = (self.events.take(), std::mem::take(&mut self.online));
        *self = State::load(store, limits)?;
        self.events = events;
        self.online = online;
        Ok(())
    }

    /// Forgets what the failed batch changed.
    pub(crate) fn forget_pending(&mut self) {
        self.pending_dedup.clear();
        self.dirty_heads.clear();
        self.new_streams.clear();
        if let Some(e) = &mut self.events {
            e.forget_pending();
        }
    }

    /// The batch is on disk: every cached entry is also in the store, so
    /// the caches may drop their least used half.
    pub(crate) fn committed(&mut self) {
        self.pending_dedup.clear();
        if let Some(e) = &mut self.events {
            e.committed();
        }
        self.heads.rotate_if_full();
        self.cursors.rotate_if_full();
        self.delivered.rotate_if_full();
        self.marks.rotate_if_full();
        self.group_reads.rotate_if_full();
        self.groups.rotate_if_full();
        self.recent.rotate_if_full();
    }

    /// Appends an event to the batch, if events are on and want its kind.
    pub(crate) fn event(
        &mut self,
        batch: &mut WriteBatch,
        now: u64,
        ev: impl FnOnce() -> crate::events::Event,
    ) {
        if let Some(e) = &mut self.events {
            e.push(batch, now, &ev());
        }
    }

    /// Whether events of kind `t` are kept.
    pub(crate) fn wants_event(&self, t: &str) -> bool {
        self.events.as_ref().is_some_and(|e| e.wants(t))
    }

    /// Whether `user` has no connection logged in here.
    pub(crate) fn is_offline(&self, user: u64) -> bool {
        !self.online.contains_key(&user)
    }

    /// Remembers that `from` sent seq `seq` of `user`'s inbox.
    pub(crate) fn note_sender(&mut self, user: u64, seq: u64, from: u64) {
        if let Some(r) = self.recent.get_mut(&user)
            && r.first + r.from.len() as u64 == seq
        {
            r.from.push_back(from);
            if r.from.len() > RECENT {
                r.from.pop_front();
                r.first += 1;
            }
            return;
        }
        let mut r = Recent {
            first: seq,
            from: std::collections::VecDeque::with_capacity(4),
        };
        r.from.push_back(from);
        self.recent.insert(user, r);
    }

    /// The senders, other than `user`, of seqs `after + 1 ..= to` of
    /// `user`'s inbox, if they are remembered; those seqs are then
    /// forgotten (they are delivered, and the delivered mark only rises).
    pub(crate) fn delivered_senders(&mut self, user: u64, after: u64, to: u64) -> Option<Vec<u64>> {
        let r = self.recent.get_mut(&user)?;
        let end = r.first + r.from.len() as u64; // first seq not remembered
        if to >= end || to <= after || to < r.first {
            return None;
        }
        // Remembered seqs up to `to`.
        let hi = (to + 1 - r.first) as usize;
        if after.saturating_add(1) < r.first {
            // The oldest of them were not remembered; the ones that were
            // are delivered all the same.
            r.from.drain(..hi);
            r.first = to + 1;
            return None;
        }
        let lo = (after + 1 - r.first) as usize;
        let mut senders: Vec<u64> = r
            .from
            .range(lo..hi)
            .copied()
            .filter(|&f| f != user)
            .collect();
        senders.sort_unstable();
        senders.dedup();
        r.from.drain(..hi);
        r.first = to + 1;
        if r.from.is_empty() {
            self.recent.remove(&user);
        }
        Some(senders)
    }

    /// Entries in the caches.
    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.heads.len()
            + self.cursors.len()
            + self.delivered.len()
            + self.marks.len()
            + self.group_reads.len()
            + self.groups.len()
            + self.recent.len()
    }

    /// The head of a stream (0 if empty).
    pub(crate) fn head(&mut self, store: &dyn Store, s: StreamId) -> Result<u64, StoreError> {
        if let Some(&h) = self.heads.get(&s) {
            return Ok(h);
        }
        let h = get_u64(store, Table::Meta, &keys::head_key(s))?.unwrap_or(0);
        // An empty stream (most users who only log in) is not cached: a
        // miss costs one bloom-filtered lookup, a cached zero a map entry
        // per connected user.
        if h > 0 {
            self.heads.insert(s, h);
        }
        Ok(h)
    }

    /// Takes the next sequence id of a stream.
    pub(crate) fn next_seq(&mut self, store: &dyn Store, s: StreamId) -> Result<u64, StoreError> {
        let h = self.head(store, s)? + 1;
        self.heads.insert(s, h);
        self.dirty_heads.insert(s);
        if h == 1 {
            self.new_streams.push(s);
        }
        Ok(h)
    }

    /// Adds the new heads of the streams this batch appended to, and the
    /// stream keys of streams new in it.
    pub(crate) fn write_heads(&mut self, batch: &mut WriteBatch) {
        if let Some(e) = &mut self.events {
            e.write_head(batch);
        }
        for s in self.new_streams.drain(..) {
            batch.put(Table::Meta, keys::stream_key(s), []);
        }
        for s in self.dirty_heads.drain() {
            if let Some(h) = self.heads.get(&s) {
                batch.put(Table::Meta, keys::head_key(s), h.to_be_bytes());
            }
        }
    }

    /// A device's cursor in a stream.
    pub(crate) fn cursor(
        &mut self,
        store: &dyn Store,
        s: StreamId,
        user: u64,
        device: u32,
    ) -> Result<u64, StoreError> {
        if let Some(&c) = self.cursors.get(&(s, user, device)) {
            return Ok(c);
        }
        let c = get_u64(store, Table::Cursor, &keys::cursor_key(s, user, device))?.unwrap_or(0);
        self.cursors.insert((s, user, device), c);
        Ok(c)
    }

    /// Makes sure the device has a device key, so that the purge sweep
    /// counts it as a reader of its user's inbox and groups.
    ///
    /// Nothing is cached: most logins are of known devices (one lookup),
    /// and a cache entry per idle connection would cost more memory than
    /// the lookup costs time.
    pub(crate) fn register_device(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
        user: u64,
        device: u32,
    ) -> Result<(), StoreError> {
        // The device key alone: the purge counts a device without a cursor
        // in a stream as a reader at 0 there.
        let key = keys::device_key(user, device);
        if store.get(Table::Meta, &key)?.is_none() {
            batch.put(Table::Meta, key, []);
        }
        Ok(())
    }

    /// Moves a device's cursor forward; returns the old value if it moved.
    pub(crate) fn advance_cursor(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
        s: StreamId,
        user: u64,
        device: u32,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        let old = self.cursor(store, s, user, device)?;
        if to <= old {
            return Ok(None);
        }
        self.cursors.insert((s, user, device), to);
        batch.put(
            Table::Cursor,
            keys::cursor_key(s, user, device),
            to.to_be_bytes(),
        );
        if old == 0 {
            // Perhaps the device's first cursor (it logged in while the
            // purge was off): the purge must see it.
            batch.put(Table::Meta, keys::device_key(user, device), []);
        }
        Ok(Some(old))
    }

    /// A group's members, or None if the group does not exist.
    pub(crate) fn group(
        &mut self,
        store: &dyn Store,
        group: u64,
    ) -> Result<Option<&mut Group>, StoreError> {
        if !self.groups.contains_key(&group) {
            let from = keys::member_key(group, 0);
            let end = keys::member_key(group.saturating_add(1), 0);
            let mut g = Group::default();
            store.scan(Table::Member, &from, &end, &mut |k, v| {
                if let Some(user) = keys::key_tail_u64(k) {
                    g.members.insert(
                        user,
                        crate::delivery::roles::Joined::from_u64(keys::u64_value(v).unwrap_or(0)),
                    );
                }
                true
            })?;
            let g = (!g.members.is_empty()).then_some(g);
            self.groups.insert(group, g);
        }
        Ok(self.groups.get_mut(&group).and_then(|g| g.as_mut()))
    }

    /// Records a group (new or changed) in the cache.
    pub(crate) fn set_group(&mut self, group: u64, g: Option<Group>) {
        self.groups.insert(group, g);
    }

    /// Allocates a group id.
    pub(crate) fn alloc_group(&mut self, batch: &mut WriteBatch) -> u64 {
        let id = self.next_group;
        self.next_group += 1;
        batch.put(
            Table::Meta,
            keys::NEXT_GROUP_KEY,
            self.next_group.to_be_bytes(),
        );
        id
    }

    /// Keeps the group id counter above an id chosen by a client.
    pub(crate) fn reserve_group(&mut self, id: u64, batch: &mut WriteBatch) {
        if id >= self.next_group {
            self.next_group = id + 1;
            batch.put(
                Table::Meta,
                keys::NEXT_GROUP_KEY,
                self.next_group.to_be_bytes(),
            );
        }
    }

    fn epoch(&self, now: u64) -> u64 {
        now / self.limits.dedup_window_ms.max(1)
    }

    /// The answer given to (sender, msg id) within the window, if any.
    pub(crate) fn dedup(
        &self,
        store: &dyn Store,
        sender: u64,
        msg_id: u64,
        now: u64,
    ) -> Result<Option<Answer>, StoreError> {
        if let Some(a) = self.pending_dedup.get(&(sender, msg_id)) {
            return Ok(Some(*a));
        }
        let e = self.epoch(now);
        for epoch in [e, e.saturating_sub(1)] {
            if let Some(v) = store.get(Table::Dedup, &keys::dedup_key(epoch, sender, msg_id))?
                && let Some(a) = Answer::decode(&v)
                && now.saturating_sub(a.time) <= self.limits.dedup_window_ms
            {
                return Ok(Some(a));
            }
            if e == 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Remembers the answer to (sender, msg id).
    pub(crate) fn remember(&mut self, batch: &mut WriteBatch, sender: u64, msg_id: u64, a: Answer) {
        self.pending_dedup.insert((sender, msg_id), a);
        batch.put(
            Table::Dedup,
            keys::dedup_key(self.epoch(a.time), sender, msg_id),
            a.encode(),
        );
    }

    /// Deletes dedup entries of epochs older than the window (a bounded
    /// number per call).
    pub(crate) fn expire_dedup(&mut self, store: &dyn Store, now: u64, batch: &mut WriteBatch) {
        let keep_from = self.epoch(now).saturating_sub(1);
        if self.expired_epoch >= keep_from {
            return;
        }
        let from = keys::dedup_key(self.expired_epoch, 0, 0);
        let end = keys::dedup_key(keep_from, 0, 0);
        let mut n = 0;
        let r = store.scan(Table::Dedup, &from, &end, &mut |k, _| {
            batch.delete(Table::Dedup, k);
            n += 1;
            n < 10_000
        });
        if r.is_ok() && n < 10_000 {
            self.expired_epoch = keep_from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Op};

    fn meta_keys(store: &dyn Store, prefix: u8) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        store
            .scan(Table::Meta, &[prefix], &[prefix + 1], &mut |k, _| {
                out.push(k.to_vec());
                true
            })
            .expect("scan");
        out
    }

    #[test]
    fn a_streams_first_message_and_a_devices_first_cursor_write_their_keys_once() {
        let store = MemoryStore::default();
        let limits = Limits::from_config(&Config::default());
        let mut st = State::load(&store, limits).expect("load");
        let s = StreamId::inbox(5);
        for round in 0..2 {
            let mut b = WriteBatch::default();
            st.next_seq(&store, s).expect("seq");
            st.write_heads(&mut b);
            st.register_device(&store, &mut b, 5, 7).expect("register");
            let stream_keys = b
                .iter()
                .filter(|op| *op == Op::Put(Table::Meta, &keys::stream_key(s), &[]))
                .count();
            let device_keys = b
                .iter()
                .filter(|op| *op == Op::Put(Table::Meta, &keys::device_key(5, 7), &[]))
                .count();
            assert_eq!(
                (stream_keys, device_keys),
                if round == 0 { (1, 1) } else { (0, 0) }
            );
            store.write(&b).expect("write");
        }
        // A cursor first advanced without a login (the purge was off then)
        // writes its device key too.
        let mut b = WriteBatch::default();
        st.advance_cursor(&store, &mut b, s, 5, 8, 1)
            .expect("advance");
        store.write(&b).expect("write");
        assert_eq!(
            meta_keys(&store, b'd'),
            vec![
                keys::device_key(5, 7).to_vec(),
                keys::device_key(5, 8).to_vec()
            ]
        );
        assert_eq!(meta_keys(&store, b'e'), vec![keys::stream_key(s).to_vec()]);
    }

    #[test]
    fn a_store_written_before_the_purge_index_gets_it_at_load_once() {
        let store = MemoryStore::default();
        let mut b = WriteBatch::default();
        let (inbox, group) = (StreamId::inbox(3), StreamId::group(9));
        b.put(Table::Meta, keys::head_key(inbox), 4u64.to_be_bytes());
        b.put(Table::Meta, keys::head_key(group), 2u64.to_be_bytes());
        b.put(
            Table::Cursor,
            keys::cursor_key(inbox, 3, 1),
            4u64.to_be_bytes(),
        );
        b.put(
            Table::Cursor,
            keys::cursor_key(group, 4, 2),
            1u64.to_be_bytes(),
        );
        store.write(&b).expect("write");
        let limits = Limits::from_config(&Config::default());
        State::load(&store, limits.clone()).expect("load");
        assert_eq!(
            meta_keys(&store, b'e'),
            vec![
                keys::stream_key(inbox).to_vec(),
                keys::stream_key(group).to_vec()
            ]
        );
        assert_eq!(
            meta_keys(&store, b'd'),
            vec![
                keys::device_key(3, 1).to_vec(),
                keys::device_key(4, 2).to_vec()
            ]
        );
        assert!(
            store
                .get(Table::Meta, keys::PURGE_INDEX_KEY)
                .expect("get")
                .is_some()
        );
        // Once: a head written behind the index's back is not picked up.
        let mut b = WriteBatch::default();
        b.put(
            Table::Meta,
            keys::head_key(StreamId::inbox(6)),
            1u64.to_be_bytes(),
        );
        store.write(&b).expect("write");
        State::load(&store, limits).expect("load");
        assert_eq!(meta_keys(&store, b'e').len(), 2);
    }

    #[test]
    fn the_caches_stay_within_cache_entries_and_refill_from_the_store() {
        let store = MemoryStore::default();
        let mut limits = Limits::from_config(&Config::default());
        limits.cache_entries = 8;
        let mut st = State::load(&store, limits).expect("load");
        for u in 1..=200u64 {
            let s = StreamId::inbox(u);
            let mut b = WriteBatch::default();
            assert_eq!(st.next_seq(&store, s).expect("seq"), 1);
            st.write_heads(&mut b);
            st.advance_cursor(&store, &mut b, s, u, 1, 1)
                .expect("cursor");
            st.raise_mark(&store, &mut b, u, u + 1, 1, 0).expect("mark");
            st.raise_group_read(&store, &mut b, 7, u, 1).expect("read");
            st.note_sender(u, 1, u + 1);
            store.write(&b).expect("write");
            st.committed();
            // Seven caches of at most about 8 entries each.
            assert!(
                st.cached() <= 7 * 8,
                "{} cached after user {u}",
                st.cached()
            );
        }
        // What was dropped comes back from the store.
        let s = StreamId::inbox(1);
        assert_eq!(st.head(&store, s).expect("head"), 1);
        assert_eq!(st.next_seq(&store, s).expect("seq"), 2);
        assert_eq!(st.cursor(&store, s, 1, 1).expect("cursor"), 1);
        assert_eq!(st.mark(&store, 1, 2).expect("mark"), (1, 0));
        assert!(
            !st.raise_group_read(&store, &mut WriteBatch::default(), 7, 1, 1)
                .expect("read")
        );
    }
    #[test]
    fn delivered_senders_come_from_memory_while_they_are_remembered() {
        let store = MemoryStore::default();
        let limits = Limits::from_config(&Config::default());
        let mut st = State::load(&store, limits).expect("load");
        // User 1's inbox: 1 from 5, 2 its own copy, 3 from 6, 4 from 5.
        for (seq, from) in [(1, 5), (2, 1), (3, 6), (4, 5)] {
            st.note_sender(1, seq, from);
        }
        assert_eq!(st.delivered_senders(1, 0, 2), Some(vec![5]));
        assert_eq!(st.delivered_senders(1, 2, 4), Some(vec![5, 6]));
        // Nothing left for user 1; a gap in the seqs starts afresh.
        assert_eq!(st.delivered_senders(1, 4, 5), None);
        st.note_sender(2, 10, 7);
        st.note_sender(2, 12, 8);
        assert_eq!(st.delivered_senders(2, 9, 10), None);
        assert_eq!(st.delivered_senders(2, 11, 12), Some(vec![8]));
        // Only the newest RECENT are kept; older ones are read back.
        for seq in 1..=(RECENT as u64 + 4) {
            st.note_sender(3, seq, 100 + seq);
        }
        assert_eq!(st.delivered_senders(3, 0, 10), None);
        assert_eq!(st.delivered_senders(3, 10, 12), Some(vec![111, 112]));
    }
}
