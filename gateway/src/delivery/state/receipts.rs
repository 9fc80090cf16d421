//! The receipt marks: a user's delivered mark, the (sender, peer) marks
//! of one-to-one conversations (whose existence says the sender wrote to
//! the peer), and members' read marks in groups.

use super::*;

impl State {
    /// The user's inbox "delivered" mark: the highest cursor of any of its
    /// devices. Returns the old mark if `to` raises it.
    pub(crate) fn raise_delivered(
        &mut self,
        store: &dyn Store,
        user: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        let cur = match self.delivered.get(&user) {
            Some(&d) => d,
            None => {
                let s = StreamId::inbox(user);
                let from = keys::cursor_key(s, user, 0);
                let end = keys::cursor_key(s, user.saturating_add(1), 0);
                let mut best = 0;
                store.scan(Table::Cursor, &from, &end, &mut |_, v| {
                    best = best.max(keys::u64_value(v).unwrap_or(0));
                    true
                })?;
                best
            }
        };
        if to > cur {
            self.delivered.insert(user, to);
            Ok(Some(cur))
        } else {
            self.delivered.insert(user, cur);
            Ok(None)
        }
    }

    /// The receipt marks (delivered, read) of `sender`'s messages to
    /// `peer`; None if `sender` never wrote to `peer`.
    fn mark_entry(
        &mut self,
        store: &dyn Store,
        sender: u64,
        peer: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        if let Some(&m) = self.marks.get(&(sender, peer)) {
            return Ok(m);
        }
        let m = store
            .get(Table::Meta, &keys::receipt_key(sender, peer))?
            .and_then(|v| Some((keys::u64_value(&v)?, keys::u64_value(v.get(8..)?)?)));
        self.marks.insert((sender, peer), m);
        Ok(m)
    }

    /// The receipt marks (delivered, read) of `sender`'s messages to `peer`.
    pub(crate) fn mark(
        &mut self,
        store: &dyn Store,
        sender: u64,
        peer: u64,
    ) -> Result<(u64, u64), StoreError> {
        Ok(self.mark_entry(store, sender, peer)?.unwrap_or((0, 0)))
    }

    /// Whether `sender` ever wrote to `peer`: only then may `peer`'s read
    /// marks reach `sender` as receipts.
    pub(crate) fn has_written(
        &mut self,
        store: &dyn Store,
        sender: u64,
        peer: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.mark_entry(store, sender, peer)?.is_some())
    }

    /// Notes that `sender` wrote to `peer`: the first message of a
    /// conversation stores its (empty) receipt marks.
    pub(crate) fn open_conversation(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
        sender: u64,
        peer: u64,
    ) -> Result<(), StoreError> {
        if self.mark_entry(store, sender, peer)?.is_none() {
            self.put_mark(batch, sender, peer, (0, 0));
        }
        Ok(())
    }

    fn put_mark(&mut self, batch: &mut WriteBatch, sender: u64, peer: u64, m: (u64, u64)) {
        self.marks.insert((sender, peer), Some(m));
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&m.0.to_be_bytes());
        v[8..].copy_from_slice(&m.1.to_be_bytes());
        batch.put(Table::Meta, keys::receipt_key(sender, peer), v);
    }

    /// Raises receipt marks; returns whether anything moved.
    pub(crate) fn raise_mark(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
        sender: u64,
        peer: u64,
        delivered: u64,
        read: u64,
    ) -> Result<bool, StoreError> {
        let (d, r) = self.mark(store, sender, peer)?;
        let (nd, nr) = (d.max(delivered).max(read), r.max(read));
        if (nd, nr) == (d, r) {
            return Ok(false);
        }
        self.put_mark(batch, sender, peer, (nd, nr));
        Ok(true)
    }

    /// A member's read mark in a group.
    pub(crate) fn group_read(
        &mut self,
        store: &dyn Store,
        group: u64,
        user: u64,
    ) -> Result<u64, StoreError> {
        if let Some(&r) = self.group_reads.get(&(group, user)) {
            return Ok(r);
        }
        let r = get_u64(store, Table::Meta, &keys::group_read_key(group, user))?.unwrap_or(0);
        self.group_reads.insert((group, user), r);
        Ok(r)
    }

    /// Raises a member's read mark in a group; returns whether it moved.
    pub(crate) fn raise_group_read(
        &mut self,
        store: &dyn Store,
        batch: &mut WriteBatch,
        group: u64,
        user: u64,
        to: u64,
    ) -> Result<bool, StoreError> {
        if to <= self.group_read(store, group, user)? {
            return Ok(false);
        }
        self.group_reads.insert((group, user), to);
        batch.put(
            Table::Meta,
            keys::group_read_key(group, user),
            to.to_be_bytes(),
        );
        Ok(true)
    }
}
