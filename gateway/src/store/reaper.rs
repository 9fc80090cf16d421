//! Frees fjall's flushed memtables on a thread of their own, so that no
//! writer waits while one is freed.
//!
//! A memtable is a skiplist of every version written since it opened (64
//! MiB by default: at 10,000 msg/s, about a million nodes). Once it is
//! flushed to a table, fjall forgets it when it collects old versions of
//! the tree, under the tree's version lock, and the last reference going
//! away frees the skiplist there: 100–360 ms of freeing nodes one by one,
//! while every write to that keyspace waits for the lock (measured with the
//! `store_pace` example; `docs/benchmarks.md` §5, "A stall in the store").
//!
//! The reaper holds a second reference to each memtable from the time it is
//! the active one (it looks every [`POLL`], far less than a memtable takes
//! to fill and flush), so fjall's collection only drops a count; when the
//! reaper's reference is the last one, it frees the memtable here, away
//! from the lock. It never holds a memtable longer than one poll after
//! fjall lets go of it, so memory stays what fjall would use.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use ::fjall::{AbstractTree, Keyspace};

/// How often the reaper looks for new memtables and released ones.
pub(super) const POLL: Duration = Duration::from_millis(10);

/// The reaper thread; stopped and joined when dropped.
pub(super) struct Reaper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The memtables held (fjall does not name their type).
pub(super) type Held = Vec<Arc<dyn Send + Sync>>;

impl Reaper {
    /// Starts the reaper over `keyspaces`.
    pub(super) fn start(keyspaces: Vec<Keyspace>) -> std::io::Result<Reaper> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("imgate-reaper".into())
            .spawn(move || run(&keyspaces, &flag))?;
        Ok(Reaper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(keyspaces: &[Keyspace], stop: &AtomicBool) {
    let mut held: Held = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        step(keyspaces, &mut held);
        std::thread::sleep(POLL);
    }
    // Whatever is still held is fjall's too, or freed here.
}

/// Takes each keyspace's active memtable if it is new, and frees every
/// held memtable nobody else refers to. Returns how many it freed.
pub(super) fn step(keyspaces: &[Keyspace], held: &mut Held) -> usize {
    for ks in keyspaces {
        let m: Arc<dyn Send + Sync> = ks.tree.active_memtable();
        if !held
            .iter()
            .any(|h| std::ptr::addr_eq(Arc::as_ptr(h), Arc::as_ptr(&m)))
        {
            held.push(m);
        }
    }
    let before = held.len();
    held.retain(|m| Arc::strong_count(m) > 1);
    before - held.len()
}

#[cfg(test)]
mod tests {
    use ::fjall::{Database, KeyspaceCreateOptions};

    use super::*;

    #[test]
    fn a_flushed_memtable_is_freed_by_the_reaper_not_by_fjall() {
        let dir = std::env::temp_dir().join(format!("imgate-reaper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = Database::builder(&dir).open().expect("opens");
        let ks = db
            .keyspace("t", KeyspaceCreateOptions::default)
            .expect("keyspace");
        let mut held = Held::new();
        assert_eq!(step(std::slice::from_ref(&ks), &mut held), 0);
        assert_eq!(held.len(), 1, "the active memtable is held");
        for i in 0u32..1000 {
            ks.insert(i.to_be_bytes(), b"value").expect("inserts");
        }
        // Sealed, flushed to a table, and collected by fjall: the reaper's
        // reference is then the last one.
        ks.rotate_memtable_and_wait().expect("flushes");
        for i in 0u32..10 {
            ks.insert(i.to_be_bytes(), b"again").expect("inserts");
        }
        ks.rotate_memtable_and_wait().expect("flushes");
        let freed = step(std::slice::from_ref(&ks), &mut held);
        assert!(freed >= 1, "freed {freed}, held {}", held.len());
        assert_eq!(
            ks.get(0u32.to_be_bytes()).expect("reads").as_deref(),
            Some(&b"again"[..])
        );
        drop(ks);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
