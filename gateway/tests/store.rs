//! The store through `store::open`, for every durability: round trips,
//! ordering, atomic batches, reopening, and a real crash (a child process
//! killed with SIGKILL while it writes).

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use imgate::{
    config::Durability,
    store::{self, Store, Table, WriteBatch},
};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "imgate-store-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ALL: [Durability; 3] = [Durability::Fsync, Durability::Os, Durability::Memory];

fn open(dir: &Path, d: Durability) -> Box<dyn Store> {
    store::open(dir, d).unwrap_or_else(|e| panic!("open {d:?}: {e}"))
}

fn scan_all(s: &dyn Store, t: Table, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    s.scan(t, from, to, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .expect("scans");
    out
}

fn log_key(stream: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&stream.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[test]
fn round_trips_and_key_order_in_every_table_and_durability() {
    for d in ALL {
        let dir = TempDir::new("roundtrip");
        let s = open(&dir.0, d);
        let mut b = WriteBatch::new();
        // Seqs out of order and across a byte boundary (255 < 256 only in
        // big-endian byte order).
        for seq in [256u64, 3, 255, 1, 70_000] {
            b.put(Table::Log, log_key(7, seq), seq.to_be_bytes());
        }
        b.put(Table::Log, log_key(6, 9), b"other stream below");
        b.put(Table::Log, log_key(8, 0), b"other stream above");
        for t in Table::ALL {
            b.put(t, b"same key", t.name());
        }
        s.write(&b).expect("writes");

        let got = scan_all(&*s, Table::Log, &log_key(7, 0), &log_key(8, 0));
        let seqs: Vec<u64> = got
            .iter()
            .map(|(k, v)| {
                assert_eq!(&k[..8], &7u64.to_be_bytes());
                u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes"))
            })
            .collect();
        assert_eq!(seqs, vec![1, 3, 255, 256, 70_000], "{d:?}");
        for t in Table::ALL {
            assert_eq!(
                s.get(t, b"same key").expect("gets"),
                Some(t.name().as_bytes().to_vec()),
                "{d:?} {t:?}"
            );
        }
        assert_eq!(s.get(Table::Log, &log_key(7, 2)).expect("gets"), None);

        // Half-open bounds, early stop, empty range.
        let got = scan_all(&*s, Table::Log, &log_key(7, 3), &log_key(7, 256));
        assert_eq!(got.len(), 2, "{d:?}");
        let mut n = 0;
        s.scan(Table::Log, &log_key(7, 0), &log_key(9, 0), &mut |_, _| {
            n += 1;
            n < 2
        })
        .expect("scans");
        assert_eq!(n, 2, "{d:?}: stops when f returns false");
        assert!(scan_all(&*s, Table::Log, &log_key(7, 9), &log_key(7, 9)).is_empty());
        assert!(scan_all(&*s, Table::Log, &log_key(9, 0), &log_key(7, 0)).is_empty());

        // Overwrite and delete, in order within one batch.
        b.clear();
        b.put(Table::Meta, b"head", 1u64.to_be_bytes());
        b.put(Table::Meta, b"head", 2u64.to_be_bytes());
        b.delete(Table::Log, log_key(7, 255));
        b.put(Table::Cursor, b"gone", b"x");
        b.delete(Table::Cursor, b"gone");
        s.write(&b).expect("writes");
        assert_eq!(
            s.get(Table::Meta, b"head").expect("gets"),
            Some(2u64.to_be_bytes().to_vec())
        );
        assert_eq!(s.get(Table::Log, &log_key(7, 255)).expect("gets"), None);
        assert_eq!(s.get(Table::Cursor, b"gone").expect("gets"), None);
        s.write(&WriteBatch::new()).expect("an empty batch is fine");
    }
}

#[test]
fn reopen_after_drop_keeps_everything() {
    for d in [Durability::Fsync, Durability::Os] {
        let dir = TempDir::new("reopen");
        let s = open(&dir.0, d);
        let mut b = WriteBatch::new();
        for batch in 0..50u64 {
            b.clear();
            for seq in 0..40u64 {
                b.put(Table::Log, log_key(batch, seq), [batch as u8; 150]);
            }
            b.put(Table::Meta, b"last", batch.to_be_bytes());
            s.write(&b).expect("writes");
        }
        drop(s);
        let s = open(&dir.0, d);
        let all = scan_all(&*s, Table::Log, &log_key(0, 0), &log_key(u64::MAX, 0));
        assert_eq!(all.len(), 50 * 40, "{d:?}");
        for (k, v) in &all {
            assert_eq!(v, &vec![k[7]; 150]);
        }
        assert_eq!(
            s.get(Table::Meta, b"last").expect("gets"),
            Some(49u64.to_be_bytes().to_vec())
        );
        // And it takes new writes after the reopen.
        b.clear();
        b.put(Table::Member, b"after", b"");
        s.write(&b).expect("writes");
        drop(s);
        let s = open(&dir.0, d);
        assert_eq!(
            s.get(Table::Member, b"after").expect("gets"),
            Some(Vec::new())
        );
    }
}

/// A reader on another thread sees each batch whole or not at all: every
/// batch overwrites the same 64 keys (in two tables) with its number.
#[test]
fn readers_on_other_threads_see_whole_batches() {
    for d in ALL {
        let dir = TempDir::new("atomic");
        let s: Arc<dyn Store> = Arc::from(open(&dir.0, d));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checks = 0u32;
                while !done.load(Ordering::Acquire) || checks == 0 {
                    let rows = scan_all(&*s, Table::Log, &log_key(1, 0), &log_key(2, 0));
                    let meta = s.get(Table::Meta, b"n").expect("gets");
                    if let Some((_, first)) = rows.first() {
                        assert_eq!(rows.len(), 64);
                        assert!(rows.iter().all(|(_, v)| v == first), "{d:?}: torn batch");
                    }
                    // Meta was read after Log: it can only be newer.
                    if let (Some((_, v)), Some(m)) = (rows.first(), meta) {
                        assert!(m.as_slice() >= v.as_slice(), "{d:?}: went back");
                    }
                    checks += 1;
                }
                checks
            })
        };
        let mut b = WriteBatch::new();
        for n in 0..300u64 {
            b.clear();
            for seq in 0..64 {
                b.put(Table::Log, log_key(1, seq), n.to_be_bytes());
            }
            b.put(Table::Meta, b"n", n.to_be_bytes());
            s.write(&b).expect("writes");
            if d == Durability::Fsync && n == 20 {
                break; // 4 ms a commit on this disk; 20 are enough
            }
        }
        done.store(true, Ordering::Release);
        let checks = reader.join().expect("reader ok");
        assert!(checks > 0);
    }
}

// ---- crash test --------------------------------------------------------

const CRASH_DIR: &str = "IMGATE_STORE_CRASH_DIR";
const CRASH_MODE: &str = "IMGATE_STORE_CRASH_MODE";
/// Log entries per batch: 48 × ~170 bytes, more than fjall's 8 KiB journal
/// buffer, so a batch takes several write(2) calls and a kill can tear it.
const CRASH_OPS: u64 = 48;

fn crash_value(batch: u64, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(150);
    v.extend_from_slice(&batch.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(150, (batch % 251) as u8);
    v
}

fn crash_batch(b: &mut WriteBatch, n: u64) {
    b.clear();
    for seq in 0..CRASH_OPS {
        b.put(Table::Log, log_key(n, seq), crash_value(n, seq));
    }
    b.put(Table::Dedup, n.to_be_bytes(), [1u8; 32]);
    b.put(Table::Meta, b"last", n.to_be_bytes());
}

/// How much of batch `n` is stored: `CRASH_OPS + 1` when whole, 0 when
/// absent. Panics on a wrong value.
fn crash_present(s: &dyn Store, n: u64) -> u64 {
    let rows = scan_all(s, Table::Log, &log_key(n, 0), &log_key(n + 1, 0));
    for (k, v) in &rows {
        let seq = u64::from_be_bytes(k[8..].try_into().expect("16-byte key"));
        assert_eq!(v, &crash_value(n, seq), "batch {n} seq {seq}: wrong value");
    }
    let dedup = s.get(Table::Dedup, &n.to_be_bytes()).expect("gets");
    rows.len() as u64 + u64::from(dedup.is_some())
}

/// Not a test on its own: the child process of
/// `kill_9_keeps_every_acknowledged_batch_whole_*`, which run it (ignored
/// otherwise). It writes batches until it is killed and prints each batch
/// number once `write` has returned.
#[test]
#[ignore = "the child process of the kill_9 tests, which run it"]
fn crash_child() {
    let dir =
        std::env::var_os(CRASH_DIR).expect("run by the kill_9 tests, which set the directory");
    let d = match std::env::var(CRASH_MODE).as_deref() {
        Ok("os") => Durability::Os,
        _ => Durability::Fsync,
    };
    let s = open(Path::new(&dir), d);
    let mut n = match s.get(Table::Meta, b"last").expect("gets") {
        Some(v) => u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes")) + 1,
        None => 1,
    };
    let mut b = WriteBatch::new();
    loop {
        crash_batch(&mut b, n);
        s.write(&b).expect("child writes");
        println!("committed {n}");
        n += 1;
    }
}

/// Runs the child until it reported `more` batches, kills it, and returns
/// the highest batch it reported.
fn run_child_and_kill(dir: &Path, mode: &str, more: u64) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, dir)
        .env(CRASH_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawns the child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let (mut first, mut last) = (None, 0);
    for line in lines.by_ref() {
        let line = line.expect("reads");
        if let Some(n) = line.strip_prefix("committed ") {
            last = n.parse().expect("a batch number");
            let f = *first.get_or_insert(last);
            if last - f + 1 >= more {
                break;
            }
        }
    }
    child.kill().expect("kills");
    let status = child.wait().expect("waits");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died on its own: {status}"
    );
    // Lines it printed before the kill landed.
    for line in lines {
        if let Some(n) = line.expect("reads").strip_prefix("committed ") {
            last = n.parse().expect("a batch number");
        }
    }
    last
}

fn kill_9_rounds(mode: &str, d: Durability, rounds: u32, per_round: u64) {
    let dir = TempDir::new("crash");
    let mut acked = 0;
    for round in 0..rounds {
        let last = run_child_and_kill(&dir.0, mode, per_round);
        assert!(last > acked, "round {round}: no progress");
        acked = last;
        let s = open(&dir.0, d);
        for n in 1..=acked {
            assert_eq!(
                crash_present(&*s, n),
                CRASH_OPS + 1,
                "acked batch {n} not whole"
            );
        }
        // Written but not yet reported when the kill came: whole or absent.
        let in_flight = crash_present(&*s, acked + 1);
        assert!(
            in_flight == 0 || in_flight == CRASH_OPS + 1,
            "batch {} torn: {in_flight} of {} keys",
            acked + 1,
            CRASH_OPS + 1
        );
        assert_eq!(crash_present(&*s, acked + 2), 0);
        let meta = s.get(Table::Meta, b"last").expect("gets").expect("present");
        let want = if in_flight > 0 { acked + 1 } else { acked };
        assert_eq!(
            meta,
            want.to_be_bytes().to_vec(),
            "Meta is in the same batch"
        );
        // The next child continues after whatever is stored.
        acked = want;
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_batch_whole_fsync() {
    kill_9_rounds("fsync", Durability::Fsync, 3, 60);
}

#[test]
fn kill_9_keeps_every_acknowledged_batch_whole_os() {
    kill_9_rounds("os", Durability::Os, 3, 1500);
}
