//! The embedded store as the backend holds it: fjall, which it can close
//! and open again inside the process, and the free space of its disk.
//!
//! fjall refuses every write after one failed (it is *poisoned*) until it
//! is opened again, which replays its journal: everything acknowledged
//! before the failure is back, and nothing after it was acknowledged. So a
//! full disk need not end in a restart of the gateway: once space is back,
//! [`Store::recover`] swaps in a freshly opened store. Calls hold a read
//! lock for their duration, and the swap the write lock, so the old store
//! is closed (and its directory lock released) before the new one opens.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::RwLock,
};

use super::{FjallStore, Store, StoreError, Table, WriteBatch};
use crate::config::Durability;

/// fjall behind a lock that lets it be reopened.
#[derive(Debug)]
pub struct Reopening {
    dir: PathBuf,
    durability: Durability,
    /// None between a failed reopen and the next try.
    cur: RwLock<Option<FjallStore>>,
}

impl Reopening {
    /// Opens the store in `dir` (see [`FjallStore::open`]).
    pub fn open(dir: &Path, durability: Durability) -> Result<Reopening, StoreError> {
        Ok(Reopening {
            dir: dir.to_path_buf(),
            durability,
            cur: RwLock::new(Some(FjallStore::open(dir, durability)?)),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&FjallStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let g = self.cur.read().unwrap_or_else(|e| e.into_inner());
        match &*g {
            Some(s) => f(s),
            None => Err(StoreError::Engine(format!(
                "the store in {} is closed until it reopens",
                self.dir.display()
            ))),
        }
    }
}

impl Store for Reopening {
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.with(|s| s.write(batch))
    }

    fn write_lazy(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.with(|s| s.write_lazy(batch))
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| s.get(table, key))
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.with(|s| s.scan(table, from, to, f))
    }

    fn free_space(&self) -> Option<u64> {
        free_space(&self.dir)
    }

    fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        self.with(|s| s.backup(to))
    }

    fn recover(&self) -> Result<(), StoreError> {
        let mut g = self.cur.write().unwrap_or_else(|e| e.into_inner());
        // Closed first: fjall locks its directory.
        drop(g.take());
        *g = Some(FjallStore::open(&self.dir, self.durability)?);
        Ok(())
    }
}

/// Bytes free to unprivileged writers on the file system holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `buf` a struct the call fills;
    // nothing is kept after it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut buf) };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // c_ulong / fsblkcnt_t differ by target
    let (avail, size) = (u64::from(buf.f_bavail), u64::from(buf.f_frsize));
    Some(avail.saturating_mul(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_store_has_everything_written_before() {
        let dir = std::env::temp_dir().join(format!("imgate-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Reopening::open(&dir, Durability::Fsync).expect("open");
        let mut b = WriteBatch::default();
        b.put(Table::Meta, b"k", b"v");
        s.write(&b).expect("write");
        s.recover().expect("reopen");
        assert_eq!(s.get(Table::Meta, b"k").expect("get"), Some(b"v".to_vec()));
        assert!(s.free_space().is_some_and(|f| f > 0));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
