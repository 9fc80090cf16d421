//! The store for durability `memory`: one `BTreeMap` per table behind one
//! lock. Nothing reaches the disk; a restart starts empty. For experiments
//! and for tests of the logic above the store.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{PoisonError, RwLock},
};

use super::{Op, Store, StoreError, Table, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`Store`].
///
/// A batch is applied under the write lock, so readers see it whole or not
/// at all (and wait while it is applied; a scan holds the read lock for its
/// whole length). An overwrite reuses the stored value's allocation; a new
/// key allocates its key and value.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<[Map; 5]>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Applying cannot fail half-way (no step returns an error), and a
        // panic aborts the process (release profile), so a poisoned lock
        // never holds half a batch that matters.
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        for op in batch.iter() {
            match op {
                Op::Put(t, k, v) => {
                    let map = &mut tables[t.index()];
                    if let Some(old) = map.get_mut(k) {
                        old.clear();
                        old.extend_from_slice(v);
                    } else {
                        map.insert(k.to_vec(), v.to_vec());
                    }
                }
                Op::Delete(t, k) => {
                    tables[t.index()].remove(k);
                }
            }
        }
        Ok(())
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables[table.index()].get(key).cloned())
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let range = (Bound::Included(from), Bound::Excluded(to));
        for (k, v) in tables[table.index()].range::<[u8], _>(range) {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_separate_and_scans_are_ordered_and_half_open() {
        let s = MemoryStore::new();
        let mut b = WriteBatch::new();
        for i in [3u8, 1, 2, 9] {
            b.put(Table::Log, [0, i], [i]);
        }
        b.put(Table::Meta, [0, 1], b"meta");
        s.write(&b).expect("writes");
        let mut seen = Vec::new();
        s.scan(Table::Log, &[0, 1], &[0, 9], &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scans");
        assert_eq!(
            seen,
            vec![
                (vec![0, 1], vec![1]),
                (vec![0, 2], vec![2]),
                (vec![0, 3], vec![3])
            ]
        );
        assert_eq!(
            s.get(Table::Meta, &[0, 1]).expect("gets"),
            Some(b"meta".to_vec())
        );
        assert_eq!(s.get(Table::Cursor, &[0, 1]).expect("gets"), None);
        // An empty or inverted range is no range (BTreeMap would panic).
        s.scan(Table::Log, &[0, 9], &[0, 1], &mut |_, _| panic!("nothing"))
            .expect("scans");
    }

    #[test]
    fn overwrite_and_delete_in_one_batch_apply_in_order() {
        let s = MemoryStore::new();
        let mut b = WriteBatch::new();
        b.put(Table::Cursor, b"c", b"1");
        b.put(Table::Cursor, b"c", b"22");
        b.put(Table::Cursor, b"d", b"x");
        b.delete(Table::Cursor, b"d");
        s.write(&b).expect("writes");
        assert_eq!(
            s.get(Table::Cursor, b"c").expect("gets"),
            Some(b"22".to_vec())
        );
        assert_eq!(s.get(Table::Cursor, b"d").expect("gets"), None);
    }
}
