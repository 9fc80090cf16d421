//! Damaged data directories: finding where fjall's journal stops being
//! readable, and keeping everything before that point.
//!
//! fjall replays its journal when it opens: a batch cut short by a crash
//! at the end (a *torn tail*) is dropped, as it was never acknowledged, but
//! a damaged batch anywhere else (a flipped byte, a bad sector) stops the
//! open with `ChecksumMismatch`, and nothing is served. Its journal format
//! is its own, so the point of damage is found with fjall itself: a copy of
//! the directory whose journal is cut at byte x opens exactly when x lies
//! before the end of the damaged batch (the cut turns that batch into a
//! torn tail). The largest such x is found by bisection, each try on a
//! scratch copy (tables hard-linked, as fjall never rewrites a table file;
//! the rest copied), so the data directory itself is never written.
//!
//! Everything in the journal before the damaged batch is kept; the damaged
//! batch, everything after it and every later journal file are lost, and
//! [`Salvage`] says how many bytes that was. What those bytes held cannot
//! be read, so the caller moves every stream's sequence ids on
//! (`crate::delivery::restore`) so that none is used twice.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{FjallStore, StoreError};
use crate::config::Durability;

/// A journal file: `N.jnl` in the data directory, in replay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Its path.
    pub path: PathBuf,
    /// Its length (fjall preallocates: zeros follow the data).
    pub len: u64,
    /// One past the last non-zero byte: where its data ends.
    pub data_end: u64,
}

/// The journal files of `dir`, in order.
pub fn journals(dir: &Path) -> io::Result<Vec<Journal>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let path = e?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            found.push((n, path));
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|(_, path)| {
            let len = fs::metadata(&path)?.len();
            let data_end = data_end(&path, len)?;
            Ok(Journal {
                path,
                len,
                data_end,
            })
        })
        .collect()
}

/// One past the last non-zero byte of the file: read backwards from the
/// end of its last data extent. fjall preallocates a journal by setting
/// its length, so the zeros after the data are a hole the file system
/// skips (SEEK_DATA/SEEK_HOLE) rather than megabytes read at every open;
/// where it cannot tell, the whole file counts as data.
fn data_end(path: &Path, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 1 << 20;
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = last_extent_end(&f, len);
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The end of the file's last data extent (`len` if the file system
/// cannot tell).
fn last_extent_end(f: &fs::File, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let seek = |from: u64, whence| -> Result<u64, Option<i32>> {
        let from = libc::off_t::try_from(from).map_err(|_| None)?;
        // SAFETY: lseek on a descriptor `f` owns; it only moves the offset.
        let at = unsafe { libc::lseek(f.as_raw_fd(), from, whence) };
        u64::try_from(at).map_err(|_| io::Error::last_os_error().raw_os_error())
    };
    let (mut at, mut end) = (0, 0);
    loop {
        match seek(at, libc::SEEK_DATA) {
            Ok(data) => match seek(data, libc::SEEK_HOLE) {
                Ok(hole) if hole < len => (at, end) = (hole, hole),
                _ => return len,
            },
            // No data from `at` on: `end` closed the last extent.
            Err(Some(libc::ENXIO)) => return end.min(len),
            Err(_) => return len,
        }
    }
}

/// Journals whose data fjall cut while it opened (a torn tail): for each,
/// the bytes dropped, comparing the journals as they were before the open
/// with the files after it.
pub fn torn_tails(before: &[Journal]) -> Vec<(PathBuf, u64)> {
    before
        .iter()
        .filter_map(|j| {
            let now = fs::metadata(&j.path).map_or(0, |m| m.len());
            (now < j.data_end).then(|| (j.path.clone(), j.data_end - now))
        })
        .collect()
}

/// What a salvage kept and lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// The journal file the damage is in, and the bytes of it kept; None
    /// if every journal opened whole (nothing was lost).
    pub damaged: Option<(PathBuf, u64)>,
    /// Bytes of journal data dropped: the damaged file's from the cut on,
    /// and every later file's.
    pub dropped_bytes: u64,
    /// Later journal files left out.
    pub later: Vec<PathBuf>,
    /// Tries of the bisection (opens of a scratch copy).
    pub tries: u32,
}

/// Copies `from` into `to` (which must not exist), hard-linking table
/// files, with `js[..k]` whole, `js[k]` cut to `cut` bytes (0: left out)
/// and no later journal.
fn copy_cut(from: &Path, to: &Path, js: &[Journal], k: usize, cut: u64) -> io::Result<()> {
    fs::create_dir_all(to)?;
    copy_tree(from, to, &|p| p.extension().is_some_and(|e| e == "jnl"))?;
    for (i, j) in js.iter().enumerate().take(k + 1) {
        let keep = if i < k { j.len } else { cut };
        if keep == 0 {
            continue;
        }
        let Some(name) = j.path.file_name() else {
            continue;
        };
        let mut src = fs::File::open(&j.path)?;
        let mut dst = fs::File::create(to.join(name))?;
        io::copy(&mut (&mut src).take(keep), &mut dst)?;
        dst.sync_all()?;
    }
    Ok(())
}

/// Copies `from` into `to` with every journal of `js` whole.
fn copy_whole(from: &Path, to: &Path, js: &[Journal]) -> io::Result<()> {
    let last = js.len().saturating_sub(1);
    let cut = js.last().map_or(0, |j| j.len);
    copy_cut(from, to, js, last, cut)
}

/// Copies a directory tree, hard-linking files under a `tables` directory
/// and leaving out what `skip` names.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    for e in fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if skip(&src) {
            continue;
        }
        if e.file_type()?.is_dir() {
            fs::create_dir_all(&dst)?;
            copy_tree(&src, &dst, skip)?;
        } else if src
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "tables")
        {
            fs::hard_link(&src, &dst)?;
        } else {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Copies `from` into `to` (which must not exist) with every journal
/// whole, tables hard-linked: a scratch copy to open without writing to
/// `from`.
pub fn scratch_copy(from: &Path, to: &Path) -> io::Result<()> {
    copy_whole(from, to, &journals(from)?)
}

/// Whether a copy of `from` with the journals cut at (`k`, `cut`) opens.
fn opens(
    from: &Path,
    scratch: &Path,
    js: &[Journal],
    k: usize,
    cut: u64,
) -> Result<bool, StoreError> {
    let _ = fs::remove_dir_all(scratch);
    let io_err = |e: io::Error| StoreError::Open {
        path: scratch.display().to_string(),
        message: format!("cannot make a scratch copy: {e}"),
    };
    copy_cut(from, scratch, js, k, cut).map_err(io_err)?;
    let ok = FjallStore::open(scratch, Durability::Os).is_ok();
    let _ = fs::remove_dir_all(scratch);
    Ok(ok)
}

/// Copies what can be read of the data directory `from` into `to` (which
/// must not exist yet): every journal up to the first damaged batch. `from`
/// is only read.
pub fn salvage(from: &Path, to: &Path) -> Result<Salvage, StoreError> {
    let open_err = |path: &Path, e: io::Error| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if to.exists() {
        return Err(StoreError::Open {
            path: to.display().to_string(),
            message: "the salvage directory exists; name a new one".into(),
        });
    }
    let js = journals(from).map_err(|e| open_err(from, e))?;
    let scratch = to.with_extension("try");
    let mut tries = 0u32;
    let mut tried = |k: usize, cut: u64| {
        tries += 1;
        opens(from, &scratch, &js, k, cut)
    };
    // The first journal that does not open whole (with all before it).
    let mut damaged = None;
    for (k, j) in js.iter().enumerate() {
        if !tried(k, j.len)? {
            damaged = Some(k);
            break;
        }
    }
    let Some(k) = damaged else {
        copy_whole(from, to, &js).map_err(|e| open_err(to, e))?;
        return Ok(Salvage {
            damaged: None,
            dropped_bytes: 0,
            later: Vec::new(),
            tries,
        });
    };
    // Largest cut of journal k that opens: ok(0) holds (the files before
    // it opened whole), ok(data_end) does not.
    let (mut lo, mut hi) = (0u64, js[k].data_end.max(1));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if tried(k, mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    copy_cut(from, to, &js, k, lo).map_err(|e| open_err(to, e))?;
    let later: Vec<PathBuf> = js[k + 1..].iter().map(|j| j.path.clone()).collect();
    let dropped =
        js[k].data_end.saturating_sub(lo) + js[k + 1..].iter().map(|j| j.data_end).sum::<u64>();
    Ok(Salvage {
        damaged: Some((js[k].path.clone(), lo)),
        dropped_bytes: dropped,
        later,
        tries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journals_data_ends_at_its_last_non_zero_byte_whatever_follows() {
        let dir = std::env::temp_dir().join(format!("imgate-salvage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        // Data, then a preallocated (sparse) tail, as fjall leaves it.
        let f = fs::File::create(dir.join("0.jnl")).expect("journal");
        let mut data = vec![7u8; 10_000];
        data.extend([0u8; 5]);
        std::io::Write::write_all(&mut &f, &data).expect("write");
        f.set_len(64 << 20).expect("preallocate");
        // An empty preallocated journal, and a file that is not a journal.
        fs::File::create(dir.join("1.jnl"))
            .and_then(|f| f.set_len(1 << 20))
            .expect("journal");
        fs::write(dir.join("version"), b"x").expect("other file");
        let js = journals(&dir).expect("journals");
        let got: Vec<(u64, u64)> = js.iter().map(|j| (j.len, j.data_end)).collect();
        assert_eq!(got, vec![(64 << 20, 10_000), (1 << 20, 0)]);
        let _ = fs::remove_dir_all(&dir);
    }
}
