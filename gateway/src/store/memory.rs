//! The store for durability `memory`: one `BTreeMap` per table behind one
//! lock. Nothing reaches the disk; a restart starts empty. For experiments
//! and for tests of the logic above the store.
//!
//! Keys up to [`INLINE`] bytes (every key the backend writes) are kept
//! inside the tree's nodes: a search compares bytes next to each other
//! instead of following one pointer per key compared, which made the map's
//! searches a fifth of the gateway's CPU at 100,000 msg/s
//! (docs/benchmarks.md).

use std::{
    borrow::Borrow,
    cmp::Ordering,
    collections::BTreeMap,
    ops::Bound,
    sync::{PoisonError, RwLock},
};

use super::{Op, Store, StoreError, Table, WriteBatch};

type Map = BTreeMap<Key, Vec<u8>>;

/// Longest key kept inline.
const INLINE: usize = 30;

/// A key: inline up to [`INLINE`] bytes, else on the heap. Ordered, equal
/// and borrowed as its bytes, so maps of it are searched with `&[u8]`.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(k: &[u8]) -> Key {
        if k.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..k.len()].copy_from_slice(k);
            // INLINE < 256.
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

/// An in-memory [`Store`].
///
/// A batch is applied under the write lock, so readers see it whole or not
/// at all (and wait while it is applied; a scan holds the read lock for its
/// whole length). An overwrite reuses the stored value's allocation; a new
/// key allocates its key and value.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<[Map; 6]>,
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
                        map.insert(Key::new(k), v.to_vec());
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
            if !f(k.as_slice(), v) {
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
    fn inline_and_heap_keys_order_as_their_bytes() {
        let short = [1u8, 2, 3];
        let long = [1u8; 31];
        let exact = [2u8; INLINE];
        assert!(matches!(Key::new(&short), Key::Inline { len: 3, .. }));
        assert!(matches!(Key::new(&exact), Key::Inline { .. }));
        assert!(matches!(Key::new(&long), Key::Heap(_)));
        let mut keys: Vec<Key> = [&exact[..], &long, &short, &[], &[1, 2]]
            .iter()
            .map(|k| Key::new(k))
            .collect();
        keys.sort();
        let got: Vec<&[u8]> = keys.iter().map(Key::as_slice).collect();
        let want: Vec<&[u8]> = vec![&[], &long, &[1, 2], &short, &exact];
        assert_eq!(got, want);
        let s = MemoryStore::new();
        let mut b = WriteBatch::new();
        b.put(Table::Meta, long, b"long");
        b.put(Table::Meta, short, b"short");
        s.write(&b).expect("writes");
        assert_eq!(
            s.get(Table::Meta, &long).expect("gets"),
            Some(b"long".to_vec())
        );
        assert_eq!(
            s.get(Table::Meta, &short).expect("gets"),
            Some(b"short".to_vec())
        );
    }

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
