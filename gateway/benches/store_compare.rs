//! fjall against redb on the message-store workload, to choose the engine
//! of `store` (see `docs/benchmarks.md`).
//!
//! ```text
//! cargo bench -p imgate --bench store_compare      # full run, ~5 min
//! cargo test  -p imgate --bench store_compare      # smoke run, seconds
//! STORE_COMPARE_DIR=/path                          # where the stores go
//! ```
//!
//! Per message: two Log puts (receiver's and sender's inbox; key stream u64
//! BE + seq u64 BE, value from, to, msg_id, time + a 100-byte text body =
//! 132 bytes), one Dedup put (16-byte key, 32-byte value); per batch one
//! Meta put per distinct stream head touched and a Cursor put per 8
//! messages. 10k users, sender and receiver uniform at random.
//!
//! fjall is measured through imgate's own store (`store::FjallStore`, as
//! shipped: its options, its batch conversion), redb through its API
//! directly, one table per [`Table`], 1-phase commit, default 1 GiB cache.
//! A plain file written and `fdatasync`ed per batch gives the disk's floor.
//!
//! 1. Commit latency, per engine and durability, batch sizes 1, 16, 128,
//!    1024 messages per commit, 2 s of commits each, on a store that
//!    already holds 100k messages. Timed: building the engine's batch
//!    from a [`WriteBatch`] and committing it.
//! 2. A store of 1M messages (fsync, 1024 per commit) written by a child
//!    process that is then killed with SIGKILL; the parent times the reopen
//!    (crash recovery), reads 100 consecutive entries of random streams,
//!    closes, times a clean reopen and measures the directory.
//!
//! This is not criterion: each point is one long run with its own
//! percentiles, and part 2 needs a child process. Without `--bench` (as
//! under `cargo test`) it runs a small smoke version of everything.

use std::{
    error::Error,
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use imgate::{
    config::Durability,
    store::{FjallStore, Op, Store, Table, WriteBatch},
};
use redb::{ReadableDatabase, TableDefinition};

// As the gateway binary.
#[global_allocator]
static GLOBAL: imgate::alloc::MiAlloc = imgate::alloc::MiAlloc;

type Res<T> = Result<T, Box<dyn Error>>;

const USERS: u64 = 10_000;
const BODY: usize = 100;
const BATCH_SIZES: [usize; 4] = [1, 16, 128, 1024];
const BUILD_BATCH: usize = 1024;
const CHILD_ENV: &str = "STORE_COMPARE_CHILD";

/// Sizes of a run.
#[derive(Clone, Copy)]
struct Scale {
    /// Messages stored before the commit-latency points.
    preload: usize,
    /// Time per commit-latency point.
    point: Duration,
    /// Messages in the store of part 2.
    build: usize,
    /// Range reads in part 2.
    reads: usize,
    /// Entries per range read.
    read_len: u64,
}

const FULL: Scale = Scale {
    preload: 100_000,
    point: Duration::from_secs(2),
    build: 1_000_000,
    reads: 5_000,
    read_len: 100,
};

const SMOKE: Scale = Scale {
    preload: 2_000,
    point: Duration::from_millis(30),
    build: 20_000,
    reads: 50,
    read_len: 2,
};

/// xorshift64*: the same seed gives the same workload in the child and
/// the parent.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Generates the messages and remembers each inbox's head.
struct Workload {
    rng: Rng,
    heads: Vec<u64>,
    msg_id: u64,
    touched: Vec<u64>,
    value: Vec<u8>,
}

fn log_key(stream: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&stream.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng(seed | 1),
            heads: vec![0; USERS as usize],
            msg_id: 0,
            touched: Vec::new(),
            value: Vec::with_capacity(32 + BODY),
        }
    }

    /// Adds `n` messages to `b`, as the backend would in one commit.
    fn fill(&mut self, b: &mut WriteBatch, n: usize) {
        self.touched.clear();
        for i in 0..n {
            let from = self.rng.below(USERS);
            let to = (from + 1 + self.rng.below(USERS - 1)) % USERS;
            self.msg_id += 1;
            // Text-like body: lowercase letters and spaces.
            self.value.clear();
            for x in [from, to, self.msg_id, 1_700_000_000_000 + self.msg_id] {
                self.value.extend_from_slice(&x.to_be_bytes());
            }
            let mut r = self.rng.next();
            for j in 0..BODY {
                if j % 8 == 0 {
                    r = self.rng.next();
                }
                let c = (r >> ((j % 8) * 8)) as u8 % 27;
                self.value.push(if c == 26 { b' ' } else { b'a' + c });
            }
            for user in [to, from] {
                let head = &mut self.heads[user as usize];
                *head += 1;
                b.put(Table::Log, log_key(user, *head), &self.value);
                self.touched.push(user);
            }
            let mut answer = [0u8; 32];
            answer[8..16].copy_from_slice(&self.heads[to as usize].to_be_bytes());
            answer[16..24].copy_from_slice(&self.heads[from as usize].to_be_bytes());
            b.put(Table::Dedup, log_key(from, self.msg_id), answer);
            if i % 8 == 7 {
                let mut k = [0u8; 20];
                k[..8].copy_from_slice(&to.to_be_bytes());
                k[8..16].copy_from_slice(&to.to_be_bytes());
                k[16..].copy_from_slice(&1u32.to_be_bytes());
                b.put(Table::Cursor, k, self.heads[to as usize].to_be_bytes());
            }
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        for &s in &self.touched {
            let mut k = [b'h'; 9];
            k[1..].copy_from_slice(&s.to_be_bytes());
            b.put(Table::Meta, k, self.heads[s as usize].to_be_bytes());
        }
    }
}

/// How an engine is opened and committed to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    /// fjall, through imgate's own store ([`FjallStore`]), as shipped:
    /// `fsync` = `PersistMode::SyncData` per batch, `os` =
    /// `PersistMode::Buffer` per batch.
    Fjall(Durability),
    /// redb, durability per transaction.
    Redb(RedbDurability),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RedbDurability {
    Immediate,
    None,
}

impl Config {
    fn engine(self) -> &'static str {
        match self {
            Config::Fjall(_) => "fjall 3.1.13",
            Config::Redb(_) => "redb 4.6.0",
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Config::Fjall(Durability::Fsync) => "fsync (SyncData)",
            Config::Fjall(_) => "os (Buffer)",
            Config::Redb(RedbDurability::Immediate) => "fsync (Immediate)",
            Config::Redb(RedbDurability::None) => "none (Durability::None)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Config::Fjall(_) => "fjall",
            Config::Redb(_) => "redb",
        }
    }

    fn from_name(name: &str) -> Option<Config> {
        match name {
            "fjall" => Some(Config::Fjall(Durability::Fsync)),
            "redb" => Some(Config::Redb(RedbDurability::Immediate)),
            _ => None,
        }
    }
}

enum Engine {
    Fjall(FjallStore),
    Redb {
        db: redb::Database,
        durability: RedbDurability,
    },
}

const REDB_TABLES: [TableDefinition<'static, &'static [u8], &'static [u8]>; 5] = [
    TableDefinition::new("log"),
    TableDefinition::new("cursor"),
    TableDefinition::new("dedup"),
    TableDefinition::new("meta"),
    TableDefinition::new("member"),
];

impl Engine {
    fn open(config: Config, dir: &Path) -> Res<Engine> {
        std::fs::create_dir_all(dir)?;
        Ok(match config {
            Config::Fjall(d) => Engine::Fjall(FjallStore::open(dir, d)?),
            Config::Redb(durability) => {
                let db = redb::Database::builder().create(dir.join("redb.db"))?;
                let tx = db.begin_write()?;
                for def in REDB_TABLES {
                    tx.open_table(def)?;
                }
                tx.commit()?;
                Engine::Redb { db, durability }
            }
        })
    }

    fn write(&self, batch: &WriteBatch) -> Res<()> {
        match self {
            Engine::Fjall(s) => s.write(batch)?,
            Engine::Redb { db, durability } => {
                let mut tx = db.begin_write()?;
                tx.set_durability(match durability {
                    RedbDurability::Immediate => redb::Durability::Immediate,
                    RedbDurability::None => redb::Durability::None,
                })?;
                {
                    let mut open: [Option<redb::Table<'_, &[u8], &[u8]>>; 5] =
                        [None, None, None, None, None];
                    for op in batch.iter() {
                        let (t, k, v) = match op {
                            Op::Put(t, k, v) => (t, k, Some(v)),
                            Op::Delete(t, k) => (t, k, None),
                        };
                        let slot = &mut open[t.index()];
                        if slot.is_none() {
                            *slot = Some(tx.open_table(REDB_TABLES[t.index()])?);
                        }
                        let table = slot.as_mut().ok_or("table not open")?;
                        match v {
                            Some(v) => {
                                table.insert(k, v)?;
                            }
                            None => {
                                table.remove(k)?;
                            }
                        }
                    }
                }
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Reads Log `[from, to)`; returns entries and bytes seen.
    fn read_range(&self, from: &[u8], to: &[u8]) -> Res<(usize, usize)> {
        let (mut n, mut bytes) = (0, 0);
        match self {
            Engine::Fjall(s) => s.scan(Table::Log, from, to, &mut |k, v| {
                n += 1;
                bytes += k.len() + v.len();
                true
            })?,
            Engine::Redb { db, .. } => {
                let tx = db.begin_read()?;
                let t = tx.open_table(REDB_TABLES[Table::Log.index()])?;
                for item in t.range::<&[u8]>(from..to)? {
                    let (k, v) = item?;
                    n += 1;
                    bytes += k.value().len() + v.value().len();
                }
            }
        }
        Ok((n, bytes))
    }
}

struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut v: Vec<Duration>) -> Stats {
        v.sort_unstable();
        Stats { sorted: v }
    }

    fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.sorted.len() - 1) as f64 * p).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)]
    }

    fn total(&self) -> Duration {
        self.sorted.iter().sum()
    }
}

/// CPU time of the whole process (every thread, background work included).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes only the struct we pass; all-zero is a valid
    // rusage.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / (1024.0 * 1024.0))
}

/// (allocated, apparent) bytes under `p`.
fn dir_size(p: &Path) -> Res<(u64, u64)> {
    let m = std::fs::symlink_metadata(p)?;
    if !m.is_dir() {
        return Ok((m.blocks() * 512, m.len()));
    }
    let (mut alloc, mut len) = (0, 0);
    for e in std::fs::read_dir(p)? {
        let (a, l) = dir_size(&e?.path())?;
        alloc += a;
        len += l;
    }
    Ok((alloc, len))
}

/// Part 1: one engine and durability, every batch size.
fn commit_points(config: Config, dir: &Path, scale: Scale) -> Res<()> {
    let engine = Engine::open(config, dir)?;
    let mut w = Workload::new(7);
    let mut b = WriteBatch::new();
    let mut left = scale.preload;
    while left > 0 {
        let n = left.min(BUILD_BATCH);
        b.clear();
        w.fill(&mut b, n);
        engine.write(&b)?;
        left -= n;
    }
    for size in BATCH_SIZES {
        let mut lat = Vec::new();
        let mut msgs = 0usize;
        let start = Instant::now();
        let cpu = cpu_time();
        while start.elapsed() < scale.point || lat.len() < 20 {
            b.clear();
            w.fill(&mut b, size);
            let t = Instant::now();
            engine.write(&b)?;
            lat.push(t.elapsed());
            msgs += size;
        }
        let cpu = cpu_time().saturating_sub(cpu);
        let s = Stats::new(lat);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} |",
            config.engine(),
            config.mode(),
            size,
            s.sorted.len(),
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
            ms(s.pct(1.0)),
            msgs as f64 / s.total().as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / msgs as f64,
        );
    }
    Ok(())
}

/// The floor of part 1: append a batch's bytes (keys and values, no
/// framing) to a plain file and `fdatasync` it, as a write-ahead log at its
/// simplest would.
fn floor_points(path: &Path, scale: Scale) -> Res<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut w = Workload::new(7);
    let mut b = WriteBatch::new();
    let mut buf = Vec::new();
    for size in BATCH_SIZES {
        let mut lat = Vec::new();
        let mut msgs = 0usize;
        let start = Instant::now();
        let cpu = cpu_time();
        while start.elapsed() < scale.point || lat.len() < 20 {
            b.clear();
            w.fill(&mut b, size);
            let t = Instant::now();
            buf.clear();
            for op in b.iter() {
                if let Op::Put(_, k, v) = op {
                    buf.extend_from_slice(k);
                    buf.extend_from_slice(v);
                }
            }
            f.write_all(&buf)?;
            f.sync_data()?;
            lat.push(t.elapsed());
            msgs += size;
        }
        let cpu = cpu_time().saturating_sub(cpu);
        let s = Stats::new(lat);
        println!(
            "| plain file (floor) | write + fdatasync | {} | {} | {} | {} | {} | {:.0} | {:.1} |",
            size,
            s.sorted.len(),
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
            ms(s.pct(1.0)),
            msgs as f64 / s.total().as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / msgs as f64,
        );
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(())
}

/// Child of part 2: writes the store, reports, and waits to be killed.
fn child(config: Config, dir: &Path, messages: usize) -> Res<()> {
    let engine = Engine::open(config, dir)?;
    let mut w = Workload::new(11);
    let mut b = WriteBatch::new();
    let start = Instant::now();
    let mut left = messages;
    while left > 0 {
        let n = left.min(BUILD_BATCH);
        b.clear();
        w.fill(&mut b, n);
        engine.write(&b)?;
        left -= n;
    }
    println!("built {:.3}", start.elapsed().as_secs_f64());
    // Keep the engine open (background work included) until SIGKILL.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Part 2 for one engine.
fn store_point(config: Config, dir: &Path, scale: Scale) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe)
        .env(
            CHILD_ENV,
            format!("{}|{}|{}", config.name(), scale.build, dir.display()),
        )
        .stdout(Stdio::piped())
        .spawn()?;
    let out = c.stdout.take().ok_or("no child stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    c.kill()?;
    c.wait()?;
    let build: f64 = line
        .strip_prefix("built ")
        .ok_or_else(|| format!("child said {line:?}"))?
        .trim()
        .parse()?;

    let t = Instant::now();
    let engine = Engine::open(config, dir)?;
    let crash_open = t.elapsed();

    // The heads, from the same workload.
    let mut w = Workload::new(11);
    let mut b = WriteBatch::new();
    let mut left = scale.build;
    while left > 0 {
        let n = left.min(BUILD_BATCH);
        b.clear();
        w.fill(&mut b, n);
        left -= n;
    }
    let streams: Vec<(u64, u64)> = (0..USERS)
        .map(|u| (u, w.heads[u as usize]))
        .filter(|&(_, h)| h >= scale.read_len)
        .collect();
    let mut rng = Rng(99);
    let mut lat = Vec::with_capacity(scale.reads);
    for _ in 0..scale.reads {
        let (s, head) = streams[rng.below(streams.len() as u64) as usize];
        let first = 1 + rng.below(head - scale.read_len + 1);
        let (from, to) = (log_key(s, first), log_key(s, first + scale.read_len));
        let t = Instant::now();
        let (n, _) = engine.read_range(&from, &to)?;
        lat.push(t.elapsed());
        if n as u64 != scale.read_len {
            return Err(format!("{}: read {n} entries of stream {s}", config.name()).into());
        }
    }
    let reads = Stats::new(lat);

    let t = Instant::now();
    drop(engine);
    let close = t.elapsed();
    let t = Instant::now();
    let engine = Engine::open(config, dir)?;
    let clean_open = t.elapsed();
    drop(engine);
    let (alloc, len) = dir_size(dir)?;
    println!(
        "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
        config.engine(),
        build,
        ms(crash_open),
        ms(close),
        ms(clean_open),
        us(reads.pct(0.5)),
        us(reads.pct(0.99)),
        mib(alloc),
        mib(len),
    );
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}

fn main() -> Res<()> {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let mut parts = arg.splitn(3, '|');
        let (Some(name), Some(n), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("bad {CHILD_ENV}: {arg}").into());
        };
        let config = Config::from_name(name).ok_or("unknown engine")?;
        return child(config, Path::new(dir), n.parse()?);
    }
    let full = std::env::args().any(|a| a == "--bench");
    // `cargo bench --bench store_compare -- fjall` runs only fjall's rows
    // (and `floor`, `redb` likewise).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let scale = if full { FULL } else { SMOKE };
    let root = std::env::var_os("STORE_COMPARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("imgate-store-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "store_compare ({}): {}; stores under {}\n",
        if full { "full" } else { "smoke" },
        machine(),
        root.display()
    );

    println!(
        "Commit latency, {} messages stored first, {:?} per point.\n",
        scale.preload, scale.point
    );
    println!(
        "| engine | durability | msgs/commit | commits | p50 ms | p99 ms | max ms | msgs/s | CPU µs/msg |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let configs = [
        Config::Fjall(Durability::Fsync),
        Config::Redb(RedbDurability::Immediate),
        Config::Fjall(Durability::Os),
        Config::Redb(RedbDurability::None),
    ];
    std::fs::create_dir_all(&root)?;
    if wanted("floor") {
        floor_points(&root.join("floor"), scale)?;
    }
    for (i, config) in configs.into_iter().enumerate() {
        if !wanted(config.name()) {
            continue;
        }
        let dir = root.join(format!("commit-{i}"));
        commit_points(config, &dir, scale)?;
        std::fs::remove_dir_all(&dir)?;
    }

    println!(
        "\nA store of {} messages over {USERS} inboxes ({} Log entries), written \
         with fsync at {BUILD_BATCH} per commit by a child process killed with \
         SIGKILL; then reopened (crash recovery), {} reads of {} \
         consecutive entries of a random inbox, closed, reopened.\n",
        scale.build,
        2 * scale.build,
        scale.reads,
        scale.read_len,
    );
    println!(
        "| engine | write s | reopen after kill ms | close ms | clean reopen ms | \
         read {n} p50 µs | read {n} p99 µs | disk MiB (allocated) | disk MiB (apparent) |",
        n = scale.read_len
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for config in [
        Config::Fjall(Durability::Fsync),
        Config::Redb(RedbDurability::Immediate),
    ] {
        if !wanted(config.name()) {
            continue;
        }
        let dir = root.join(format!("store-{}", config.name()));
        store_point(config, &dir, scale)?;
        std::fs::remove_dir_all(&dir)?;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
