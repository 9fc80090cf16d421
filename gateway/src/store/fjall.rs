//! The embedded store for durability `fsync` and `os`: fjall, an LSM tree
//! with one journal shared by every table.
//!
//! ```text
//!  write(batch) ─► journal append (start marker, items, end marker with a
//!                  checksum) ─► fdatasync (fsync) or flush to the OS (os)
//!               ─► memtables (one per table), visible to readers at once
//!  background  ─► memtables flushed to sorted tables; compaction; a journal
//!                 is deleted once every table it covers is flushed
//!  open        ─► replays the journals not yet flushed; a batch whose end
//!                 marker or checksum is missing (torn by a crash) is dropped
//!  reaper      ─► frees flushed memtables on a thread of its own (see
//!                 `reaper`): fjall would free them under a lock writers wait on
//! ```
//!
//! Each [`Table`] is one fjall keyspace; one fjall write batch spans them,
//! so a [`WriteBatch`] is atomic across tables, on disk and to readers:
//! every read goes through a snapshot (the sequence number of the last
//! batch applied whole), never the keyspace's own `get`/`range`, which read
//! a batch being applied half-way. The durability maps as:
//!
//! | ours    | fjall, per batch         | survives                        |
//! |---------|--------------------------|---------------------------------|
//! | `fsync` | `PersistMode::SyncData`  | process and machine crash       |
//! | `os`    | `PersistMode::Buffer`    | process crash (in the OS cache) |
//!
//! `SyncData` (fdatasync) is enough: it also writes the metadata needed to
//! read the data back (block allocation, file size), and recovery reads
//! markers and checksums, not times. A new journal file is synced with its
//! directory by fjall when it is created.
//!
//! Why fjall and not redb, with the figures: `docs/benchmarks.md`
//! (`cargo bench -p imgate --bench store_compare`).

use std::path::{Path, PathBuf};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{Op, Store, StoreError, Table, WriteBatch, reaper::Reaper};
use crate::config::Durability;

/// Journal kept before every table's memtable is flushed: it bounds the
/// replay after a crash (about 4.5 s per 1M messages here, and a message is
/// ~370 journal bytes, so about 1.6 s at most), at the cost of smaller
/// first-level tables. fjall's default is 512 MiB, its minimum 64 MiB.
const MAX_JOURNAL_BYTES: u64 = 128 << 20;

/// The fjall [`Store`].
///
/// Thread-safe: reads run concurrently with a write (each sees a batch
/// whole or not at all); writes from several threads serialise on the
/// journal. Dropping it flushes and syncs the journal; fjall's background
/// threads (flush, compaction: at most 4, `min(cores, 4)`) stop with it.
pub struct FjallStore {
    /// Frees flushed memtables away from fjall's locks. First, so that it
    /// stops (and lets go of its keyspaces) before the database closes.
    _reaper: Reaper,
    db: Database,
    /// Indexed by [`Table::index`].
    tables: [Keyspace; 6],
    persist: PersistMode,
    path: PathBuf,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .field("persist", &self.persist)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens or creates the store in `dir` (created if missing).
    ///
    /// `durability` is `fsync` or `os`; `memory` is treated as `os` (use
    /// [`MemoryStore`](super::MemoryStore) for it). Opening recovers: it
    /// replays the journal not yet flushed to tables (at most 128 MiB, about
    /// 1.6 s here; a clean reopen takes about 0.3 s) and starts the
    /// background threads. Only one process may open a directory: a second
    /// open fails with "locked".
    pub fn open(dir: &Path, durability: Durability) -> Result<FjallStore, StoreError> {
        let open_err = |e: ::fjall::Error| StoreError::Open {
            path: dir.display().to_string(),
            message: describe(&e),
        };
        // The journals as they are, to tell a torn tail fjall drops.
        let before = super::salvage::journals(dir).unwrap_or_default();
        let db = Database::builder(dir)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(open_err)?;
        for (path, bytes) in super::salvage::torn_tails(&before) {
            tracing::warn!(
                journal = %path.display(),
                bytes,
                "dropped a torn journal tail: a write a crash cut short, never acknowledged"
            );
        }
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for t in Table::ALL {
            tables.push(
                db.keyspace(t.name(), KeyspaceCreateOptions::default)
                    .map_err(open_err)?,
            );
        }
        let tables: [Keyspace; 6] = tables.try_into().map_err(|_| StoreError::Open {
            path: dir.display().to_string(),
            message: "table count".into(),
        })?;
        let persist = match durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Os | Durability::Memory => PersistMode::Buffer,
        };
        let reaper = Reaper::start(tables.to_vec()).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            message: format!("cannot start the memtable reaper thread: {e}"),
        })?;
        Ok(FjallStore {
            db,
            tables,
            persist,
            path: dir.to_path_buf(),
            _reaper: reaper,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk (tables and journals), as fjall counts them.
    pub fn disk_space(&self) -> Result<u64, StoreError> {
        self.db.disk_space().map_err(|e| self.err("disk space", &e))
    }

    fn table(&self, t: Table) -> &Keyspace {
        &self.tables[t.index()]
    }

    fn err(&self, what: &str, e: &::fjall::Error) -> StoreError {
        StoreError::Engine(format!(
            "{what} in {}: {}",
            self.path.display(),
            describe(e)
        ))
    }

    /// Commits `batch`, persisted as `persist` says (None: left to the
    /// journal's buffer and the OS).
    fn commit(&self, batch: &WriteBatch, persist: Option<PersistMode>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // fjall copies each key and value into its own slice (the memtable
        // keeps them): up to 20 bytes inline, longer ones one allocation
        // each (a message's two records and its dedup answer). Besides that,
        // one vector of items per batch; nothing per op on our side.
        let mut b = ::fjall::OwnedWriteBatch::with_capacity(self.db.clone(), batch.len())
            .durability(persist);
        for op in batch.iter() {
            match op {
                Op::Put(t, k, v) => b.insert(self.table(t), k, v),
                Op::Delete(t, k) => b.remove(self.table(t), k),
            }
        }
        b.commit().map_err(|e| self.err("write", &e))
    }
}

/// fjall's Display is its Debug; say what the common cases mean.
fn describe(e: &::fjall::Error) -> String {
    match e {
        ::fjall::Error::Io(io) => format!("I/O error: {io}"),
        ::fjall::Error::Locked => "locked: another process has this store open".into(),
        ::fjall::Error::Poisoned => {
            "an earlier write or flush failed; restart to recover from the journal".into()
        }
        other => format!("{other:?}"),
    }
}

impl Store for FjallStore {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.commit(batch, Some(self.persist))
    }

    fn write_lazy(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.commit(batch, None)
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Through a snapshot: `Keyspace::get` and `range` read at the
        // newest sequence number, which shows a batch still being applied
        // to the memtables half-way (the readers test caught it).
        self.db
            .snapshot()
            .get(self.table(table), key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err("get", &e))
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
        for item in self.db.snapshot().range(self.table(table), from..to) {
            let (k, v) = item.into_inner().map_err(|e| self.err("scan", &e))?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Every table read through one snapshot (one moment, across tables,
    /// while writers go on) and written to a new store in `to`, in batches
    /// without waiting for the disk, then synced once with the last batch.
    fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        if super::occupied(to) {
            return Err(StoreError::Open {
                path: to.display().to_string(),
                message: "the backup directory is not empty".into(),
            });
        }
        let copy = FjallStore::open(to, Durability::Fsync)?;
        let snapshot = self.db.snapshot();
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for t in Table::ALL {
            for item in snapshot.iter(self.table(t)) {
                let (k, v) = item.into_inner().map_err(|e| self.err("backup", &e))?;
                batch.put(t, &k, &v);
                n += 1;
                if batch.len() >= BACKUP_BATCH {
                    copy.write_lazy(&batch)?;
                    batch.clear();
                }
            }
        }
        copy.write_lazy(&batch)?;
        copy.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| copy.err("backup sync", &e))?;
        Ok(n)
    }
}

/// Entries per write while a backup copies.
const BACKUP_BATCH: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("imgate-fjall-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_with_its_path() {
        let dir = temp_dir("locked");
        let s = FjallStore::open(&dir, Durability::Os).expect("opens");
        let e = FjallStore::open(&dir, Durability::Os).expect_err("locked");
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("locked"), "{msg}");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_directory_is_an_open_error_naming_it() {
        let dir = temp_dir("file");
        std::fs::write(&dir, b"not a directory").expect("writes");
        match FjallStore::open(&dir, Durability::Fsync) {
            Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.display().to_string()),
            other => panic!("expected an open error, got {other:?}"),
        }
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn durability_selects_the_persist_mode() {
        let dir = temp_dir("modes");
        let s = FjallStore::open(&dir, Durability::Fsync).expect("opens");
        assert_eq!(s.persist, PersistMode::SyncData);
        drop(s);
        let s = FjallStore::open(&dir, Durability::Os).expect("opens");
        assert_eq!(s.persist, PersistMode::Buffer);
        let mut b = WriteBatch::new();
        b.put(Table::Member, b"m", b"");
        s.write(&b).expect("writes");
        assert_eq!(s.get(Table::Member, b"m").expect("gets"), Some(Vec::new()));
        assert!(s.disk_space().expect("sizes") > 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
