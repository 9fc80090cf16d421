//! A bare monoio server that holds idle connections, to measure what one
//! idle connection costs in resident memory under a given allocator.
//!
//! ```text
//!   main thread: bind check, VmRSS "before", waits for N connections,
//!                settles, VmRSS "after", prints one REPORT line, exits
//!                when every connection has closed again
//!   worker 0..T: monoio runtime (io_uring or legacy/epoll), own listener
//!                on the same address (SO_REUSEPORT), accept loop
//!                  └─ per connection: one task, parked in readable();
//!                     when woken it drains the socket into the thread's
//!                     one read buffer (non-blocking recv, no await)
//! ```
//!
//! What a connection owns is what the gateway's connection would own at
//! the least: the socket, its task, and the driver's bookkeeping for one
//! outstanding readiness wait (an io_uring `PollAdd`, or an epoll
//! registration). There is no per-connection read buffer: each thread has
//! one, used only inside a synchronous `recv`, so the figure measures the
//! runtime and the allocator, not a buffer size choice.

use std::{
    cell::RefCell,
    error::Error,
    io::ErrorKind,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use monoio::{
    IoUringDriver, LegacyDriver, RuntimeBuilder,
    net::{ListenerOpts, TcpListener, TcpStream},
};

use crate::sys;

/// Bytes in the per-thread read buffer.
const READ_BUF: usize = 4096;

/// Open connections, all threads.
static CONNS: AtomicUsize = AtomicUsize::new(0);
/// Connections accepted since start, all threads.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
/// Bytes read from all connections.
static BYTES_READ: AtomicU64 = AtomicU64::new(0);
/// Accept errors (such as EMFILE).
static ACCEPT_ERRORS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The thread's read buffer, shared by all its connections.
    static BUF: RefCell<[u8; READ_BUF]> = const { RefCell::new([0; READ_BUF]) };
}

/// Which monoio driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring (`monoio::IoUringDriver`).
    Uring,
    /// epoll (`monoio::LegacyDriver`).
    Legacy,
}

impl Driver {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Legacy => "legacy",
        }
    }
}

/// Server settings, from the command line.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// Address every worker listens on.
    pub addr: SocketAddr,
    /// Worker threads, one runtime and one listener each.
    pub threads: usize,
    /// The monoio driver.
    pub driver: Driver,
    /// Connections to wait for before the "after" measurement.
    pub expect: usize,
    /// How long the connection count must stay put before measuring.
    pub settle: Duration,
    /// Give up (exit) after this long, whatever happened.
    pub max_time: Duration,
}

/// Usage text of the server binaries.
pub const SERVER_USAGE: &str = "\
usage: idle_server[_mimalloc|_mimalloc_tuned] [options]
  --addr ADDR        listen address (default 127.0.0.1:7700)
  --threads T        worker threads, SO_REUSEPORT listeners (default 1)
  --driver D         uring | legacy (epoll)            (default uring)
  --expect N         connections to wait for            (default 19000)
  --settle-ms MS     count must be stable this long before measuring (default 2000)
  --max-secs S       exit after S seconds in any case   (default 600)";

impl ServerOpts {
    /// Parses `--flag value` pairs (the program name already skipped).
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<ServerOpts, String> {
        let mut o = ServerOpts {
            addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            threads: 1,
            driver: Driver::Uring,
            expect: 19_000,
            settle: Duration::from_millis(2000),
            max_time: Duration::from_secs(600),
        };
        while let Some(flag) = args.next() {
            let val = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {val}: {e}");
            match flag.as_str() {
                "--addr" => o.addr = val.parse().map_err(|e| bad(&e))?,
                "--threads" => o.threads = val.parse().map_err(|e| bad(&e))?,
                "--driver" => {
                    o.driver = match val.as_str() {
                        "uring" | "io_uring" => Driver::Uring,
                        "legacy" | "epoll" => Driver::Legacy,
                        _ => return Err(bad(&"expected uring or legacy")),
                    }
                }
                "--expect" => o.expect = val.parse().map_err(|e| bad(&e))?,
                "--settle-ms" => {
                    o.settle = Duration::from_millis(val.parse().map_err(|e| bad(&e))?)
                }
                "--max-secs" => o.max_time = Duration::from_secs(val.parse().map_err(|e| bad(&e))?),
                _ => return Err(format!("unknown flag {flag}\n{SERVER_USAGE}")),
            }
        }
        if o.threads == 0 || o.expect == 0 {
            return Err("--threads and --expect must be at least 1".into());
        }
        Ok(o)
    }
}

/// Runs the server until every expected connection has arrived, been
/// measured and closed again (or `max_time` passes). `alloc` names the
/// global allocator of the calling binary, for the report.
pub fn run_server(alloc: &str, opts: &ServerOpts) -> Result<(), Box<dyn Error>> {
    let nofile = sys::raise_nofile_limit()?;
    let start = Instant::now();
    let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
    for i in 0..opts.threads {
        let (addr, driver, tx) = (opts.addr, opts.driver, bound_tx.clone());
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(addr, driver, &tx))?;
    }
    drop(bound_tx);
    for _ in 0..opts.threads {
        bound_rx.recv()??;
    }

    // The "before" point: runtimes built, listeners bound, nothing accepted.
    thread::sleep(Duration::from_millis(500));
    let rss_before = sys::vm_rss_kib()?;
    let slab_before = sys::slab_kib()?;
    let sock_before = sys::sockstat_tcp()?;
    println!(
        "READY alloc={alloc} driver={} threads={} addr={} nofile={nofile} rss_kib={rss_before}",
        opts.driver.name(),
        opts.threads,
        opts.addr
    );

    let tick = Duration::from_millis(100);
    let mut last = (0, Instant::now());
    let mut last_print = Instant::now();
    let mut measured = false;
    while start.elapsed() < opts.max_time {
        thread::sleep(tick);
        let n = CONNS.load(Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!(
                "  t={:.1}s conns={n} rss_kib={}",
                start.elapsed().as_secs_f64(),
                sys::vm_rss_kib()?
            );
            last_print = Instant::now();
        }
        let stable = last.1.elapsed() >= opts.settle;
        if !measured && n >= opts.expect && stable {
            let rss_after = sys::vm_rss_kib()?;
            let slab_after = sys::slab_kib()?;
            let sock_after = sys::sockstat_tcp()?;
            let per_conn = (rss_after.saturating_sub(rss_before) * 1024) as f64 / n as f64;
            println!(
                "REPORT alloc={alloc} driver={} threads={} conns={n} rss_before_kib={rss_before} \
                 rss_after_kib={rss_after} per_conn_bytes={per_conn:.0} slab_before_kib={slab_before} \
                 slab_after_kib={slab_after} sockstat_before=\"{sock_before}\" sockstat_after=\"{sock_after}\"",
                opts.driver.name(),
                opts.threads,
            );
            measured = true;
        }
        if measured && n == 0 && stable {
            println!(
                "CLOSED alloc={alloc} driver={} accepted={} bytes_read={} accept_errors={} rss_kib={}",
                opts.driver.name(),
                ACCEPTED.load(Relaxed),
                BYTES_READ.load(Relaxed),
                ACCEPT_ERRORS.load(Relaxed),
                sys::vm_rss_kib()?
            );
            return Ok(());
        }
    }
    Err(format!(
        "gave up after {:?}: {} of {} connections open, measured: {measured}",
        opts.max_time,
        CONNS.load(Relaxed),
        opts.expect
    )
    .into())
}

/// One worker thread: builds its runtime, binds, reports the bind, serves.
fn worker(addr: SocketAddr, driver: Driver, bound: &mpsc::Sender<Result<(), String>>) {
    let fail = |what: &str, e: std::io::Error| {
        // The receiver only goes away when main has already failed.
        let _ = bound.send(Err(format!("{what}: {e}")));
    };
    // Listeners are bound inside the runtime: monoio registers fds with the
    // driver of the thread that creates them.
    match driver {
        Driver::Uring => match RuntimeBuilder::<IoUringDriver>::new().build() {
            Ok(mut rt) => rt.block_on(bind_and_serve(addr, bound)),
            Err(e) => fail("io_uring runtime", e),
        },
        Driver::Legacy => match RuntimeBuilder::<LegacyDriver>::new().build() {
            Ok(mut rt) => rt.block_on(bind_and_serve(addr, bound)),
            Err(e) => fail("legacy runtime", e),
        },
    }
}

async fn bind_and_serve(addr: SocketAddr, bound: &mpsc::Sender<Result<(), String>>) {
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    let listener = match TcpListener::bind_with_config(addr, &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(format!("bind {addr}: {e}")));
            return;
        }
    };
    let _ = bound.send(Ok(()));
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // An idle IM connection still sends small frames now and then.
                let _ = stream.set_nodelay(true);
                CONNS.fetch_add(1, Relaxed);
                ACCEPTED.fetch_add(1, Relaxed);
                monoio::spawn(hold(stream));
            }
            Err(e) => {
                if ACCEPT_ERRORS.fetch_add(1, Relaxed) < 10 {
                    eprintln!("accept: {e}");
                }
                // No timer driver here; a short blocking pause keeps an
                // EMFILE storm from spinning the core.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Holds one connection: waits for readability with no buffer attached,
/// then drains the socket into the thread's buffer without awaiting.
async fn hold(stream: TcpStream) {
    let fd = stream.as_raw_fd();
    while stream.readable(false).await.is_ok() {
        if !drain(fd) {
            break;
        }
    }
    CONNS.fetch_sub(1, Relaxed);
}

/// Reads what `fd` has into the per-thread buffer with non-blocking
/// `recv` calls. False when the peer has closed or the socket failed.
///
/// A monoio read would be the safe way, but under io_uring an in-flight
/// read owns its buffer until it completes: when many connections become
/// readable at once (a mass disconnect), every one of them holds a buffer.
/// A synchronous `recv` after readiness keeps it to one buffer per thread.
fn drain(fd: RawFd) -> bool {
    BUF.with_borrow_mut(|buf| {
        loop {
            // SAFETY: `buf` is a live, exclusively borrowed buffer of
            // `buf.len()` writable bytes for the duration of the call, and
            // `fd` belongs to a `TcpStream` the caller holds open.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            match n {
                0 => return false,
                n if n > 0 => {
                    BYTES_READ.fetch_add(n as u64, Relaxed);
                }
                _ => {
                    let err = std::io::Error::last_os_error();
                    return match err.kind() {
                        ErrorKind::WouldBlock => true,
                        ErrorKind::Interrupted => continue,
                        _ => false,
                    };
                }
            }
        }
    })
}

/// Client settings, from the command line.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections to open and hold.
    pub conns: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// Bytes to send on each connection once all are open (0: none).
    pub send: usize,
    /// Connections opened per second at most (0: as fast as possible). A
    /// burst faster than the server accepts overflows the listen backlog,
    /// and the dropped handshakes come back only after a 1 s retransmit.
    pub rate: u64,
}

/// Usage text of the client binary.
pub const CLIENT_USAGE: &str = "\
usage: idle_client [options]
  --addr ADDR        server address (default 127.0.0.1:7700)
  -n N               connections to open and hold (default 19000)
  --hold-secs S      hold them this long, then close all (default 30)
  --send BYTES       bytes to send on each once all are open (default 0)
  --rate R           connections opened per second at most, 0 = no limit (default 5000)";

impl ClientOpts {
    /// Parses `--flag value` pairs (the program name already skipped).
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<ClientOpts, String> {
        let mut o = ClientOpts {
            addr: SocketAddr::from(([127, 0, 0, 1], 7700)),
            conns: 19_000,
            hold: Duration::from_secs(30),
            send: 0,
            rate: 5000,
        };
        while let Some(flag) = args.next() {
            let val = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {val}: {e}");
            match flag.as_str() {
                "--addr" => o.addr = val.parse().map_err(|e| bad(&e))?,
                "-n" | "--conns" => o.conns = val.parse().map_err(|e| bad(&e))?,
                "--hold-secs" => o.hold = Duration::from_secs(val.parse().map_err(|e| bad(&e))?),
                "--send" => o.send = val.parse().map_err(|e| bad(&e))?,
                "--rate" => o.rate = val.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown flag {flag}\n{CLIENT_USAGE}")),
            }
        }
        Ok(o)
    }
}
