//! What a restored store needs before it serves: sequence ids that are
//! never used twice.
//!
//! A backup is one moment of the store. Messages acknowledged after it are
//! not in it, but devices saw their sequence ids, so a restored store that
//! went on from its own heads would give those ids to other messages, and
//! a device would drop them as duplicates. Restoring therefore raises every
//! stream's head (and the group id counter) by a margin larger than what
//! the lost interval can have used: the ids in between are never given
//! out, and a device that pulls across them sees a page that starts above
//! its mark, which the protocol already treats as history it cannot have
//! (protocol.md 5.8), so it moves on. The same holds for a store cut back
//! to before damaged data.

use super::keys::{self, StreamId};
use crate::store::{Store, StoreError, Table, WriteBatch};

/// The margin `imgate restore` raises heads by unless told otherwise: far
/// more messages than one stream gets between two backups, and nothing
/// against the 2^56 a stream can count to.
pub const DEFAULT_SKIP: u64 = 1_000_000_000;

/// Raises every stream's head and the group id counter of `store` by
/// `skip`, and drops the event id epoch (the next start sets a new one,
/// so events numbered again never repeat an id), in one batch; returns each stream with the head it had (the
/// last id it kept; ids from there to the new head are never given out).
pub fn skip_sequences(store: &dyn Store, skip: u64) -> Result<Vec<(StreamId, u64)>, StoreError> {
    let mut batch = WriteBatch::default();
    let mut raised = Vec::new();
    store.scan(
        Table::Meta,
        &keys::head_key(StreamId(0)),
        keys::HEAD_KEYS_END,
        &mut |k, v| {
            if let (Some(s), Some(head)) = (keys::head_key_stream(k), keys::u64_value(v)) {
                batch.put(Table::Meta, k, head.saturating_add(skip).to_be_bytes());
                raised.push((s, head));
            }
            true
        },
    )?;
    if let Some(next) = store
        .get(Table::Meta, keys::NEXT_GROUP_KEY)?
        .as_deref()
        .and_then(keys::u64_value)
    {
        batch.put(
            Table::Meta,
            keys::NEXT_GROUP_KEY,
            next.saturating_add(skip).to_be_bytes(),
        );
    }
    batch.delete(Table::Meta, crate::events::outbox::EPOCH_KEY);
    store.write(&batch)?;
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn every_head_and_the_group_counter_move_up_by_the_skip() {
        let store = MemoryStore::default();
        let mut b = WriteBatch::default();
        b.put(
            Table::Meta,
            keys::head_key(StreamId::inbox(3)),
            7u64.to_be_bytes(),
        );
        b.put(
            Table::Meta,
            keys::head_key(StreamId::group(9)),
            2u64.to_be_bytes(),
        );
        b.put(Table::Meta, keys::NEXT_GROUP_KEY, 10u64.to_be_bytes());
        b.put(
            Table::Meta,
            keys::floor_key(StreamId::inbox(3)),
            4u64.to_be_bytes(),
        );
        store.write(&b).expect("write");
        let raised = skip_sequences(&store, 1000).expect("skip");
        assert_eq!(
            raised,
            vec![(StreamId::inbox(3), 7), (StreamId::group(9), 2)]
        );
        let get = |k: &[u8]| {
            store
                .get(Table::Meta, k)
                .expect("get")
                .as_deref()
                .and_then(keys::u64_value)
        };
        assert_eq!(get(&keys::head_key(StreamId::inbox(3))), Some(1007));
        assert_eq!(get(&keys::head_key(StreamId::group(9))), Some(1002));
        assert_eq!(get(keys::NEXT_GROUP_KEY), Some(1010));
        assert_eq!(
            get(&keys::floor_key(StreamId::inbox(3))),
            Some(4),
            "floors stay"
        );
    }
}
