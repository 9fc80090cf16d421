//! A bounded map for the delivery state's caches (stream heads, cursors,
//! receipt marks, group memberships).
//!
//! Two generations: the newer one takes every insert and every entry the
//! older one is asked for; once the newer one weighs half the bound, the
//! older one is dropped and the newer one becomes it. What was not used for
//! a whole generation goes, in one go.
//!
//! Why not an LRU list: these caches hold millions of small entries, and a
//! list would add two links per entry and a relink per hit; this keeps
//! nothing per entry and costs at most two hash lookups. Entries are copies
//! of the store, so dropping one only costs a read when it is next needed;
//! the owner rotates right after a commit, when nothing cached is ahead of
//! the store.

use std::hash::Hash;

use ahash::AHashMap;

/// A map of at most about `bound` weight (entries, unless weighed).
pub(crate) struct Cache<K, V> {
    new: AHashMap<K, V>,
    old: AHashMap<K, V>,
    /// Weight of `new` at which it becomes `old`.
    half: usize,
    /// Weight of `new`, as weighed when entries came in.
    weight: usize,
    weigh: fn(&V) -> usize,
}

impl<K: Hash + Eq + Copy, V> Cache<K, V> {
    /// A cache of at most about `bound` entries.
    pub(crate) fn new(bound: usize) -> Cache<K, V> {
        Cache::weighted(bound, |_| 1)
    }

    /// A cache of at most about `bound` weight, an entry weighing `weigh`
    /// of its value when it comes in (a value that grows later is not
    /// weighed again).
    pub(crate) fn weighted(bound: usize, weigh: fn(&V) -> usize) -> Cache<K, V> {
        Cache {
            new: AHashMap::new(),
            old: AHashMap::new(),
            half: (bound / 2).max(1),
            weight: 0,
            weigh,
        }
    }

    /// Moves `k` from the older generation to the newer, if it is there.
    fn promote(&mut self, k: &K) {
        if !self.new.contains_key(k)
            && let Some(v) = self.old.remove(k)
        {
            self.weight += (self.weigh)(&v);
            self.new.insert(*k, v);
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<&V> {
        self.promote(k);
        self.new.get(k)
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.promote(k);
        self.new.get_mut(k)
    }

    pub(crate) fn contains_key(&mut self, k: &K) -> bool {
        self.get(k).is_some()
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        self.old.remove(&k);
        self.weight += (self.weigh)(&v);
        self.new.insert(k, v);
    }

    pub(crate) fn remove(&mut self, k: &K) {
        self.new.remove(k);
        self.old.remove(k);
    }

    /// Entries in both generations.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    /// Drops the older generation if the newer one is full. Call it only
    /// when every entry is also in the store.
    pub(crate) fn rotate_if_full(&mut self) {
        if self.weight >= self.half {
            self.old = std::mem::take(&mut self.new);
            self.weight = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cache;

    #[test]
    fn stays_within_its_bound_and_keeps_what_is_used() {
        let mut c: Cache<u64, u64> = Cache::new(10);
        for k in 0..1000 {
            c.insert(k, k * 2);
            // Key 7 is used all the time.
            if k >= 7 {
                assert_eq!(c.get(&7), Some(&14));
            }
            c.rotate_if_full();
            assert!(c.len() <= 10, "{} entries after {k}", c.len());
        }
        assert_eq!(c.get(&7), Some(&14));
        assert_eq!(c.get(&999), Some(&1998));
        // An entry not used for two generations is gone.
        assert_eq!(c.get(&500), None);
    }

    #[test]
    fn a_hit_in_the_older_generation_survives_the_next_rotation() {
        let mut c: Cache<u64, u64> = Cache::new(4);
        c.insert(1, 10);
        c.insert(2, 20);
        c.rotate_if_full(); // {1, 2} become the older generation
        assert_eq!(c.get_mut(&1).map(|v| *v), Some(10)); // 1 moves to the newer
        c.insert(3, 30);
        c.rotate_if_full(); // 2 is dropped
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(&10));
        assert_eq!(c.get(&3), Some(&30));
        assert!(c.contains_key(&3));
    }

    #[test]
    fn weighed_entries_count_by_weight() {
        let mut c: Cache<u64, Vec<u8>> = Cache::weighted(100, |v| v.len());
        c.insert(1, vec![0; 60]);
        c.rotate_if_full(); // 60 >= 50: rotates
        c.insert(2, vec![0; 10]);
        c.rotate_if_full(); // 10 < 50: stays
        assert_eq!(c.len(), 2);
        c.insert(3, vec![0; 45]);
        c.rotate_if_full(); // 55 >= 50: 1 is dropped
        assert_eq!(c.get(&1), None);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_value_replaced_in_the_newer_generation_is_not_resurrected() {
        let mut c: Cache<u64, u64> = Cache::new(4);
        c.insert(1, 10);
        c.insert(2, 20);
        c.rotate_if_full();
        c.insert(1, 11); // replaces the older copy
        assert_eq!(c.get(&1), Some(&11));
        c.insert(3, 30);
        c.rotate_if_full(); // 2 is dropped; the older copy of 1 is gone
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(&11));
        assert_eq!(c.len(), 2);
    }
}
