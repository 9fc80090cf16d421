//! The engine: worker threads that own connections, and the main thread
//! that conducts them.
//!
//! ```text
//!   main thread (scenario script)                 worker thread i (monoio runtime, io_uring or epoll)
//!   ────────────────────────────                 ─────────────────────────────────────────────────
//!   Engine::round(cmds) ──Cmd (mailbox)────────► command task ─ spawns a task per command:
//!        │                                         Open     : connection tasks (connect, login)
//!        │                                         Traffic  : the pacer (scheduled sends)
//!        │                                         Cut/Storm: cut sockets, count re-logins
//!        │                                         Snapshot / Finish: counters, histograms, ledger
//!        ◄──────────────Reply (crossbeam)───────── when the command is done
//!   progress line ◄── per-thread atomics ───────── connection tasks (reader + writer), timer task
//! ```
//!
//! A connection belongs to one thread for its whole life. Its task reads
//! and writes through split halves of one socket (a read is never
//! cancelled, so no data is lost to a dropped future; with `--tls` the
//! halves share one rustls session, see [`stream`]); every input goes
//! through the sans-IO [`imgate_codec::client::Client`], and whatever it
//! queued is encoded with `poll_transmit` into a staging buffer that the
//! writer sends in one write per wake-up. Client deadlines (acks,
//! retransmits, pings) sit in one heap per thread, served by a 1 ms timer
//! task. Threads share nothing on the message path: each keeps its own
//! histograms, counters and ledger, merged by the main thread at the end.

pub(crate) mod conn;
pub(crate) mod pacer;
pub(crate) mod player;
pub(crate) mod stream;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use imgate_codec::client::Dest;

use crate::{
    clock::Clock,
    mailbox::{MailboxRx, MailboxTx, mailbox},
    measure::{Counters, Hist, Seen, SenderBook, Window, WindowStats, new_hist},
    progress::Progress,
};

/// What every thread needs to know about the run.
#[derive(Debug, Clone)]
pub(crate) struct EngineOpts {
    /// The gateways, in `--target` order (never empty).
    pub(crate) targets: Vec<SocketAddr>,
    pub(crate) sources: Vec<IpAddr>,
    pub(crate) threads: usize,
    pub(crate) uring: bool,
    pub(crate) secret: String,
    pub(crate) run: u32,
    pub(crate) body_size: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_retries: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) receipts: bool,
    pub(crate) max_in_flight: usize,
    pub(crate) clock: Clock,
    /// The WebSocket upgrade path; None over plain TCP.
    pub(crate) ws_path: Option<String>,
    /// With `--tls`: the client configuration every connection shares.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the gateway's certificate must carry; None: the address of
    /// the connection's target.
    pub(crate) tls_server_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl EngineOpts {
    /// The address of target `i`.
    pub(crate) fn target(&self, i: usize) -> Option<SocketAddr> {
        self.targets.get(i).copied()
    }

    /// The target after `i` in the list, wrapping.
    pub(crate) fn next_target(&self, i: usize) -> usize {
        (i + 1) % self.targets.len().max(1)
    }
}

/// What happened at one target, counted by one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TargetCounts {
    /// Connections it accepted, TLS handshake done with `--tls`
    /// (reconnections included).
    pub(crate) connects: u64,
    /// login:ok it answered (re-logins included).
    pub(crate) logins: u64,
    /// Connections whose last login was there.
    pub(crate) last: u64,
}

impl TargetCounts {
    fn add(&mut self, o: &TargetCounts) {
        self.connects += o.connects;
        self.logins += o.logins;
        self.last += o.last;
    }
}

/// One connection to open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSpec {
    /// Its id in the scenario (also its sender index).
    pub(crate) id: u32,
    /// The user it logs in as (device 1).
    pub(crate) user: u64,
    /// The thread that owns it.
    pub(crate) thread: usize,
    /// The target it connects to first (an index into the target list).
    pub(crate) target: usize,
    /// Members of its group, when it is a group member (for the
    /// last-member latency); 0 otherwise.
    pub(crate) group_size: u32,
    /// At its first login, pull what the inbox already holds (an offline
    /// receiver). Otherwise what is there is from before the run: it is
    /// skipped (counted as `stale`), not delivered.
    pub(crate) history: bool,
}

/// A connection that sends during a traffic phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SenderPlan {
    /// The connection.
    pub(crate) id: u32,
    /// Where its messages go.
    pub(crate) dest: Dest,
    /// Offset of its first send from the phase's start, below the period.
    pub(crate) phase_ns: u64,
}

/// A group to create.
#[derive(Debug, Clone)]
pub(crate) struct GroupCreate {
    /// Index of the group in the scenario.
    pub(crate) index: u32,
    /// The creating connection (a member).
    pub(crate) creator: u32,
    /// Every member's user id.
    pub(crate) members: Vec<u64>,
}

/// A command to a thread.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Open these connections; reply when each logged in or failed.
    Open {
        specs: Vec<ConnSpec>,
        /// Reconnect after losing the connection.
        reconnect: bool,
    },
    /// Send on a schedule: every sender once per `period_ns`, from
    /// `start_ns + phase` until `end_ns`; measure messages scheduled in
    /// `window`. Reply when the schedule is over.
    Traffic {
        senders: Vec<SenderPlan>,
        start_ns: u64,
        period_ns: u64,
        end_ns: u64,
        window: Option<Window>,
    },
    /// Cut each connection with probability `fraction`; each reconnects
    /// after a random delay up to `delay_max`. Reply at once.
    Cut {
        fraction: f64,
        delay_max: Duration,
        seed: u64,
    },
    /// Cut every connection at once; reply when all logged in again.
    Storm,
    /// Create groups; reply with their ids.
    Groups(Vec<GroupCreate>),
    /// End the running traffic phase early; reply at once.
    StopTraffic,
    /// Reply with the counters and histograms so far.
    Snapshot,
    /// Log out, close, reply with everything including the ledger.
    Finish,
}

/// The figures of one thread.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) counters: Counters,
    pub(crate) windows: Vec<WindowStats>,
    /// TCP connect time (first connections).
    pub(crate) connect: Hist,
    /// TCP connected -> TLS handshake done (first connections, `--tls`).
    pub(crate) handshake: Hist,
    /// Connect start -> login:ok (first logins).
    pub(crate) login: Hist,
    /// Cut -> login:ok again.
    pub(crate) relogin: Hist,
    /// login:ok -> end of the inbox pull (logins that had something to pull).
    pub(crate) pull: Hist,
    /// First connect started -> last first login:ok, if any.
    pub(crate) open_span: Option<(Instant, Instant)>,
    /// Per target, in `--target` order.
    pub(crate) targets: Vec<TargetCounts>,
    /// Resident memory of the whole process when taken, bytes.
    pub(crate) rss: u64,
}

impl Snapshot {
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            counters: Counters::default(),
            windows: Vec::new(),
            connect: new_hist(),
            handshake: new_hist(),
            login: new_hist(),
            relogin: new_hist(),
            pull: new_hist(),
            open_span: None,
            targets: Vec::new(),
            rss: 0,
        }
    }

    /// Adds another thread's snapshot.
    pub(crate) fn merge(&mut self, o: &Snapshot) {
        self.counters.merge(&o.counters);
        if self.windows.len() < o.windows.len() {
            self.windows
                .resize_with(o.windows.len(), WindowStats::default);
        }
        for (w, ow) in self.windows.iter_mut().zip(&o.windows) {
            w.merge(ow);
        }
        let _ = self.connect.add(&o.connect);
        let _ = self.handshake.add(&o.handshake);
        let _ = self.login.add(&o.login);
        let _ = self.relogin.add(&o.relogin);
        let _ = self.pull.add(&o.pull);
        self.open_span = match (self.open_span, o.open_span) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, None) | (None, x) => x,
        };
        if self.targets.len() < o.targets.len() {
            self.targets
                .resize(o.targets.len(), TargetCounts::default());
        }
        for (t, ot) in self.targets.iter_mut().zip(&o.targets) {
            t.add(ot);
        }
        self.rss = self.rss.max(o.rss);
    }
}

/// A thread's answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Opened {
        ok: u32,
        failed: u32,
    },
    TrafficDone,
    Cut(u32),
    Stopped,
    Relogged {
        ok: u32,
        failed: u32,
    },
    Groups {
        made: Vec<(u32, u64)>,
        errors: Vec<String>,
    },
    Snapshot(Box<Snapshot>),
    Final {
        snap: Box<Snapshot>,
        senders: Vec<(u32, SenderBook)>,
        received: Vec<((u32, u32), Seen)>,
    },
}

/// Why the engine stopped.
#[derive(Debug)]
pub(crate) enum EngineError {
    Thread(std::io::Error),
    Timeout(&'static str),
    Died,
}

impl std::error::Error for EngineError {}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Thread(e) => write!(f, "cannot start a worker thread: {e}"),
            EngineError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            EngineError::Died => f.write_str("a worker thread died"),
        }
    }
}

/// The main thread's handle on the workers.
pub(crate) struct Engine {
    txs: Vec<MailboxTx<Cmd>>,
    replies: Receiver<(usize, Reply)>,
    /// Replies that arrived while another kind was awaited.
    stash: std::cell::RefCell<Vec<(usize, Reply)>>,
    joins: Vec<JoinHandle<()>>,
    pub(crate) progress: Arc<Progress>,
}

impl Engine {
    /// Starts `opts.threads` workers.
    pub(crate) fn start(opts: EngineOpts, progress: Arc<Progress>) -> Result<Engine, EngineError> {
        let opts = Arc::new(opts);
        let (reply_tx, replies) = crossbeam_channel::unbounded();
        let mut txs = Vec::new();
        let mut joins = Vec::new();
        for i in 0..opts.threads {
            let (tx, rx) = mailbox();
            let o = opts.clone();
            let p = progress.clone();
            let rtx = reply_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || run_thread(i, o, p, rx, rtx))
                .map_err(EngineError::Thread)?;
            txs.push(tx);
            joins.push(h);
        }
        Ok(Engine {
            txs,
            replies,
            stash: std::cell::RefCell::new(Vec::new()),
            joins,
            progress,
        })
    }

    /// Threads.
    pub(crate) fn threads(&self) -> usize {
        self.txs.len()
    }

    /// Sends `cmds[i]` to thread i (None: nothing); returns how many went.
    pub(crate) fn send(&self, cmds: Vec<Option<Cmd>>) -> Result<usize, EngineError> {
        let mut n = 0;
        for (tx, c) in self.txs.iter().zip(cmds) {
            if let Some(c) = c {
                if !tx.send(c) {
                    return Err(EngineError::Died);
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sends `cmds[i]` to thread i (None: nothing) and waits for every
    /// reply, printing progress once a second; replies in thread order.
    pub(crate) fn round(
        &self,
        cmds: Vec<Option<Cmd>>,
        timeout: Duration,
        what: &'static str,
        is: fn(&Reply) -> bool,
    ) -> Result<Vec<(usize, Reply)>, EngineError> {
        let n = self.send(cmds)?;
        self.wait(n, timeout, what, is)
    }

    /// Sends every thread the command `make` builds for it and waits.
    pub(crate) fn all(
        &self,
        make: impl Fn(usize) -> Cmd,
        timeout: Duration,
        what: &'static str,
        is: fn(&Reply) -> bool,
    ) -> Result<Vec<(usize, Reply)>, EngineError> {
        let cmds = (0..self.threads()).map(|i| Some(make(i))).collect();
        self.round(cmds, timeout, what, is)
    }

    /// Waits for `n` replies that `is` accepts; others are kept for later.
    pub(crate) fn wait(
        &self,
        n: usize,
        timeout: Duration,
        what: &'static str,
        is: fn(&Reply) -> bool,
    ) -> Result<Vec<(usize, Reply)>, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        {
            let mut stash = self.stash.borrow_mut();
            let mut i = 0;
            while i < stash.len() && out.len() < n {
                if is(&stash[i].1) {
                    out.push(stash.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Timeout(what));
            }
            match self
                .replies
                .recv_timeout(left.min(Duration::from_millis(250)))
            {
                Ok(r) if is(&r.1) => out.push(r),
                Ok(r) => self.stash.borrow_mut().push(r),
                Err(RecvTimeoutError::Timeout) => {
                    let finished: Vec<bool> =
                        self.joins.iter().map(JoinHandle::is_finished).collect();
                    if died(&finished, &out) {
                        return Err(EngineError::Died);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(EngineError::Died),
            }
            self.progress.tick();
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// Sleeps `d`, printing progress.
    pub(crate) fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
            self.progress.tick();
        }
    }

    /// Merged snapshot of every thread.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, EngineError> {
        let mut total = Snapshot::empty();
        let is = |r: &Reply| matches!(r, Reply::Snapshot(_));
        for (_, r) in self.all(|_| Cmd::Snapshot, Duration::from_secs(30), "a snapshot", is)? {
            if let Reply::Snapshot(s) = r {
                total.merge(&s);
            }
        }
        Ok(total)
    }

    /// Logs everyone out and stops the threads; returns the merged
    /// snapshot and ledger.
    pub(crate) fn finish(mut self) -> Result<(Snapshot, crate::measure::Ledger), EngineError> {
        let mut total = Snapshot::empty();
        let mut ledger = crate::measure::Ledger::default();
        let is = |r: &Reply| matches!(r, Reply::Final { .. });
        for (_, r) in self.all(
            |_| Cmd::Finish,
            Duration::from_secs(60),
            "the connections to close",
            is,
        )? {
            if let Reply::Final {
                snap,
                senders,
                received,
            } = r
            {
                total.merge(&snap);
                ledger.merge(senders, received);
            }
        }
        self.txs.clear();
        for h in self.joins.drain(..) {
            let _ = h.join();
        }
        Ok((total, ledger))
    }
}

/// Whether a thread ended without answering: a thread ends normally only
/// after its answer to `Finish`, so one that finished and is not among the
/// answers so far died. (Checked when the reply channel is empty, and a
/// thread sends its answer before it ends, so its answer is in `answers`.)
fn died(finished: &[bool], answers: &[(usize, Reply)]) -> bool {
    finished
        .iter()
        .enumerate()
        .any(|(i, &f)| f && !answers.iter().any(|(t, _)| *t == i))
}

fn run_thread(
    index: usize,
    opts: Arc<EngineOpts>,
    progress: Arc<Progress>,
    rx: MailboxRx<Cmd>,
    tx: Sender<(usize, Reply)>,
) {
    let uring = opts.uring;
    let fut = player::run(index, opts, progress, rx, tx);
    if let Err(e) = crate::runtime::block_on(uring, 4096, fut) {
        tracing::error!(thread = index, error = %e, "cannot start the runtime");
    }
}

/// Per-thread progress counters, on a cache line of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ThreadProgress {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) logged_in: AtomicI64,
    pub(crate) failures: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

impl ThreadProgress {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Reply, died};

    #[test]
    fn a_thread_that_answered_and_ended_is_not_dead() {
        // Finish: thread 0 answered and ended, thread 1 is still closing
        // its connections.
        assert!(!died(&[true, false], &[(0, Reply::Stopped)]));
        // Nobody ended.
        assert!(!died(&[false, false], &[]));
    }

    #[test]
    fn a_thread_that_ended_without_answering_is_dead() {
        assert!(died(&[false, true], &[(0, Reply::Stopped)]));
        assert!(died(&[true, false], &[]));
    }
}
