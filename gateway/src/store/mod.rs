//! Storage behind the default backend: an ordered key-value store with a
//! few tables and atomic, durable batches.
//!
//! The delivery logic (sequence ids, de-duplication, cursors, fan-out) lives
//! in the backend and speaks to storage only through [`Store`]: write a
//! batch atomically and durably, get a key, scan a key range in order. That
//! is all an append-only message log with cursors needs, and what a
//! distributed engine (a Raft-replicated KV, a wide-column store) offers
//! too, so one can replace the embedded store without touching the logic.
//!
//! Keys are big-endian so that byte order is numeric order: a stream's
//! messages are one contiguous, ordered key range.
//!
//! ```text
//!  backend thread                              reader threads (optional)
//!   WriteBatch (one arena, reused) ──write()──►  Store  ◄──get()/scan()──
//!                                              │
//!        durability fsync / os ──► FjallStore (journal + LSM tree per table)
//!        durability memory     ──► MemoryStore (a BTreeMap per table)
//! ```
//!
//! [`open`] picks the implementation; why fjall, and the figures, are in
//! `docs/benchmarks.md` (the `store_compare` bench).
//!
//! A [`WriteBatch`] keeps every key and value in one byte buffer, so a
//! backend that reuses its batch (`clear` keeps the allocation) allocates
//! nothing per message to build it; the engine copies what it must.
//! [`Store`] is `Sync` and every method takes `&self`: reads may run on
//! other threads while a batch is being written, and see each batch whole
//! or not at all.

use std::path::Path;

use crate::config::Durability;

mod fjall;
pub mod health;
mod memory;
mod reaper;
mod reopen;
pub mod salvage;

pub use self::{
    fjall::FjallStore,
    memory::MemoryStore,
    reopen::{Reopening, free_space},
};

/// The tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Messages: (stream, seq) -> record.
    Log,
    /// Device and member cursors: (stream, user, device) -> seq.
    Cursor,
    /// Recent sends: (sender, msg id) -> the answer given.
    Dedup,
    /// Stream heads and other counters: key -> value.
    Meta,
    /// Group membership: (group, user) -> join seq; (user, group) -> ().
    Member,
    /// Events for the business backend not yet taken: seq -> JSON
    /// (`crate::events::outbox`).
    Event,
}

impl Table {
    /// Every table, in the order of [`Table::index`].
    pub const ALL: [Table; 6] = [
        Table::Log,
        Table::Cursor,
        Table::Dedup,
        Table::Meta,
        Table::Member,
        Table::Event,
    ];

    /// The table's name in the engine.
    pub fn name(self) -> &'static str {
        match self {
            Table::Log => "log",
            Table::Cursor => "cursor",
            Table::Dedup => "dedup",
            Table::Meta => "meta",
            Table::Member => "member",
            Table::Event => "event",
        }
    }

    /// The table's position in [`Table::ALL`], for per-table arrays.
    pub fn index(self) -> usize {
        match self {
            Table::Log => 0,
            Table::Cursor => 1,
            Table::Dedup => 2,
            Table::Meta => 3,
            Table::Member => 4,
            Table::Event => 5,
        }
    }
}

/// One change in a batch, borrowed from the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Insert or overwrite.
    Put(Table, &'a [u8], &'a [u8]),
    /// Delete one key.
    Delete(Table, &'a [u8]),
}

/// Where one op's bytes are in [`WriteBatch`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct OpPos {
    table: Table,
    /// `None` for a delete.
    value_len: Option<u32>,
    start: usize,
    key_len: u32,
}

/// Changes applied together or not at all.
///
/// Keys and values are copied into one buffer: reuse the batch (`clear`
/// keeps its allocations) and building it allocates nothing once it has
/// grown to the size of a typical batch.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    bytes: Vec<u8>,
    ops: Vec<OpPos>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    ///
    /// # Panics
    ///
    /// If the key or the value is 4 GiB or longer.
    pub fn put(&mut self, t: Table, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        let (k, v) = (k.as_ref(), v.as_ref());
        let start = self.bytes.len();
        self.bytes.extend_from_slice(k);
        self.bytes.extend_from_slice(v);
        self.ops.push(OpPos {
            table: t,
            value_len: Some(len_u32(v)),
            start,
            key_len: len_u32(k),
        });
    }

    /// Adds a delete.
    ///
    /// # Panics
    ///
    /// If the key is 4 GiB or longer.
    pub fn delete(&mut self, t: Table, k: impl AsRef<[u8]>) {
        let k = k.as_ref();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(k);
        self.ops.push(OpPos {
            table: t,
            value_len: None,
            start,
            key_len: len_u32(k),
        });
    }

    /// The changes, in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Op<'_>> + '_ {
        self.ops.iter().map(|p| {
            let key_end = p.start + p.key_len as usize;
            let key = &self.bytes[p.start..key_end];
            match p.value_len {
                Some(n) => Op::Put(p.table, key, &self.bytes[key_end..key_end + n as usize]),
                None => Op::Delete(p.table, key),
            }
        })
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is in the batch.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
    }
}

fn len_u32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).expect("a key or value of 4 GiB or more is a caller bug")
}

/// A storage failure. The backend stops acknowledging when it sees one:
/// nothing is acknowledged that is not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine reported an error; the message names the store's
    /// directory and the operation.
    #[error("store error: {0}")]
    Engine(String),
    /// The data directory could not be used.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
}

/// An ordered key-value store with atomic batches.
///
/// Every method takes `&self`: an implementation synchronises internally,
/// so one thread can write while others read (share it in an `Arc`).
/// Writes from several threads are serialised. A read sees each batch
/// whole or not at all.
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` atomically. When it returns Ok, the batch survives a
    /// process crash (durability `os`) or a machine crash too (`fsync`).
    /// After an Err, nothing more may be acknowledged: the batch may or may
    /// not be stored, and the engine may refuse every later write.
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Applies `batch` atomically without waiting for the disk: for writes
    /// a crash may take back because they are redone after a restart (the
    /// purge sweep's deletes). An engine without the distinction writes as
    /// [`Store::write`] does.
    fn write_lazy(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// The value of `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `f` with each key-value pair in `[from, to)`, in key order,
    /// until it returns false. The slices are valid during the call only;
    /// nothing is allocated per entry for the caller.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Bytes free on the disk that holds the store; None if it has none
    /// or cannot tell.
    fn free_space(&self) -> Option<u64> {
        None
    }

    /// Copies everything, as of one moment, into a new store in `to` (an
    /// empty or missing directory) while the store keeps serving; returns
    /// the entries copied. An engine without it says so.
    fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        Err(StoreError::Engine(format!(
            "this store cannot be backed up (to {})",
            to.display()
        )))
    }

    /// Makes a store that refused a write usable again, if the engine can
    /// (fjall: closed and opened again, replaying its journal). An engine
    /// that cannot says Ok and keeps refusing.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Whether `dir` exists and holds anything: a backup, a restore or a
/// salvage writes only into a directory that does not.
pub fn occupied(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Opens the store for `durability`: the embedded engine in `dir` for
/// `fsync` and `os`, an in-memory map (and `dir` is not touched) for
/// `memory`.
///
/// Opening an existing store recovers it: its cost grows with the journal
/// not yet flushed to tables (at most 128 MiB), see [`FjallStore::open`].
pub fn open(dir: &Path, durability: Durability) -> Result<Box<dyn Store>, StoreError> {
    Ok(match durability {
        Durability::Fsync | Durability::Os => Box::new(Reopening::open(dir, durability)?),
        Durability::Memory => Box::new(MemoryStore::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keeps_ops_in_order_and_clear_keeps_capacity() {
        let mut b = WriteBatch::new();
        b.put(Table::Log, [1u8, 2], b"v1");
        b.delete(Table::Meta, b"k".as_slice());
        b.put(Table::Dedup, vec![3u8], []);
        let ops: Vec<Op<'_>> = b.iter().collect();
        assert_eq!(
            ops,
            vec![
                Op::Put(Table::Log, &[1, 2], b"v1"),
                Op::Delete(Table::Meta, b"k"),
                Op::Put(Table::Dedup, &[3], b""),
            ]
        );
        assert_eq!(b.len(), 3);
        assert_eq!(b.payload_bytes(), 6);
        let cap = (b.bytes.capacity(), b.ops.capacity());
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.iter().count(), 0);
        assert_eq!((b.bytes.capacity(), b.ops.capacity()), cap);
    }

    #[test]
    fn table_index_matches_all() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }

    #[test]
    fn memory_durability_never_touches_the_directory() {
        let dir = std::env::temp_dir().join(format!("imgate-store-mem-{}", std::process::id()));
        let s = open(&dir, Durability::Memory).expect("opens");
        let mut b = WriteBatch::new();
        b.put(Table::Meta, b"a", b"1");
        s.write(&b).expect("writes");
        assert_eq!(s.get(Table::Meta, b"a").expect("gets"), Some(b"1".to_vec()));
        assert!(!dir.exists());
    }
}
