//! One connection: its state on the thread and the task that runs it.
//!
//! ```text
//!   connect (bound to a source address) ─► TLS handshake (--tls) ─► WebSocket upgrade (ws)
//!        ▲                                                                │
//!        │                      Client::connect ─► reader ─┐ join ◄───────┘
//!        │                                         writer ─┘   │
//!        └──── delay (cut: as told; lost: backoff) ◄── handle_disconnect
//! ```
//!
//! A connection that cannot reach its target (refused, timed out) moves to
//! the next one in `--target`, wrapping, and counts a failover: a
//! connection that was logged in before after one failed attempt, a first
//! connection after its `--connect-retries` (it gives up only when every
//! target failed it). Users are not tied
//! to a node, so the ledger's per-user checks hold wherever it lands. A
//! failed TLS handshake counts as a failed connect (its reason among the
//! connect errors), since the gateway cannot be used.
//!
//! The reader owns the read half and never has its read cancelled: it ends
//! when the socket does (the peer closed, or the writer cut it). The writer
//! sleeps on the connection's [`Wake`]; whoever queues frames in the
//! client stages them with `poll_transmit` into `out` and raises `FLUSH`;
//! the writer swaps `out` with its own buffer and writes it whole, so many
//! frames cost one write. `CUT` makes the writer shut the socket down (the
//! reader then sees the end), `CLOSE` makes it flush first (and, with TLS,
//! send a close_notify). Both halves are [`stream`]'s, which puts TLS
//! between them and the socket when asked.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    os::fd::{AsRawFd, RawFd},
    rc::Rc,
    time::{Duration, Instant},
};

use ahash::AHashMap;
use bytes::BytesMut;
use imgate_codec::{
    client::{Client, Dest},
    ws,
};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::{
    ConnSpec,
    player::Player,
    stream::{self, READ_MAX, READ_MIN, ReadHalf, WriteHalf},
};
use crate::{
    measure::{Seen, SenderBook, bump, record_ns},
    net,
    wake::{CLOSE, CUT, FLUSH, Wake},
};

/// One span of a sender's schedule: message `k0 + i` was scheduled at
/// `t0 + i * period`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub(crate) k0: u64,
    pub(crate) t0: u64,
    pub(crate) period: u64,
}

/// A connection's life as a sender. A message's number (its counter) is
/// its slot in the schedule, so its scheduled time is computed, not
/// stored: sends the client refuses for a while wait in `backlog`, in
/// order, with their times.
#[derive(Debug)]
pub(crate) struct Sender {
    pub(crate) book: SenderBook,
    pub(crate) segments: Vec<Segment>,
    pub(crate) backlog: VecDeque<u64>,
    pub(crate) dest: Dest,
}

impl Sender {
    /// When message `k` was scheduled (ns), if it was sent.
    pub(crate) fn scheduled(&self, k: u64) -> Option<u64> {
        if k >= self.book.sent {
            return None;
        }
        let s = self.segments.iter().rev().find(|s| s.k0 <= k)?;
        Some(s.t0 + (k - s.k0) * s.period)
    }

    /// The counter the next scheduled message will get.
    pub(crate) fn next_counter(&self) -> u64 {
        self.book.sent + self.backlog.len() as u64
    }
}

/// A connection's state, shared by its task, the thread's pacer and timers.
pub(crate) struct Conn {
    pub(crate) id: u32,
    pub(crate) local: u32,
    pub(crate) group_size: u32,
    pub(crate) history: bool,
    pub(crate) first_msg_id: u64,
    /// The target it connects to (an index into the target list).
    pub(crate) target: Cell<usize>,
    /// The target of its last login.
    pub(crate) logged_in_at: Cell<Option<usize>>,
    pub(crate) client: RefCell<Client>,
    /// Encoded frames waiting for the writer.
    pub(crate) out: RefCell<BytesMut>,
    pub(crate) signal: Wake,
    /// The socket while the task owns one.
    fd: Cell<Option<RawFd>>,
    /// The deadline the timer heap holds for this connection.
    pub(crate) armed: Cell<Option<Instant>>,
    pub(crate) logged_in: Cell<bool>,
    pub(crate) ever_logged_in: Cell<bool>,
    pub(crate) reconnect: Cell<bool>,
    pub(crate) done: Cell<bool>,
    pub(crate) attempt_started: Cell<Instant>,
    pub(crate) cut_at: Cell<Option<Instant>>,
    pub(crate) storm: Cell<bool>,
    pub(crate) next_delay: Cell<Option<Duration>>,
    pub(crate) pull_started: Cell<Option<Instant>>,
    pub(crate) sender: RefCell<Option<Box<Sender>>>,
    pub(crate) seen: RefCell<AHashMap<u32, Seen>>,
    pub(crate) group_rest: RefCell<Option<Vec<u64>>>,
}

impl Conn {
    pub(crate) fn new(spec: ConnSpec, local: u32, client: Client, reconnect: bool) -> Conn {
        let first_msg_id = client.config().first_msg_id;
        Conn {
            id: spec.id,
            local,
            group_size: spec.group_size,
            history: spec.history,
            first_msg_id,
            target: Cell::new(spec.target),
            logged_in_at: Cell::new(None),
            client: RefCell::new(client),
            out: RefCell::new(BytesMut::new()),
            signal: Wake::default(),
            fd: Cell::new(None),
            armed: Cell::new(None),
            logged_in: Cell::new(false),
            ever_logged_in: Cell::new(false),
            reconnect: Cell::new(reconnect),
            done: Cell::new(false),
            attempt_started: Cell::new(Instant::now()),
            cut_at: Cell::new(None),
            storm: Cell::new(false),
            next_delay: Cell::new(None),
            pull_started: Cell::new(None),
            sender: RefCell::new(None),
            seen: RefCell::new(AHashMap::new()),
            group_rest: RefCell::new(None),
        }
    }

    /// Stages what the client queued; wakes the writer if there was any.
    pub(crate) fn pump_out(&self) {
        let n = self
            .client
            .borrow_mut()
            .poll_transmit(&mut self.out.borrow_mut());
        if n > 0 {
            self.signal.raise(FLUSH);
        }
    }
}

/// Runs a connection until the run ends or it gives up.
pub(crate) async fn run(p: Rc<Player>, c: Rc<Conn>) {
    p.live.set(p.live.get() + 1);
    let mut failures: u32 = 0;
    // Targets a first connection has tried its retries on and left.
    let mut left_behind: usize = 0;
    loop {
        if p.stopping.get() {
            break;
        }
        c.attempt_started.set(Instant::now());
        let source = net::source_for(&p.opts.sources, c.id as usize);
        let target = c.target.get();
        let r = match p.opts.target(target) {
            Some(addr) => {
                monoio::time::timeout(p.opts.connect_timeout, net::connect(addr, source)).await
            }
            None => Ok(Err(std::io::Error::other("no such target"))),
        };
        let (ok, unreachable) = match r {
            Ok(Ok(stream)) => {
                let connected = Instant::now();
                let fd = stream.as_raw_fd();
                match secure(&p, target, stream).await {
                    Ok((rd, wr)) => {
                        connected_at(&p, &c, target, connected);
                        (session(&p, &c, rd, wr, fd).await, false)
                    }
                    Err(why) => {
                        connect_failed(&p, why);
                        (false, true)
                    }
                }
            }
            Ok(Err(e)) => {
                connect_failed(&p, describe(&e));
                (false, true)
            }
            Err(_) => {
                connect_failed(&p, "connect timed out".to_string());
                (false, true)
            }
        };
        let several = p.opts.targets.len() > 1;
        if ok {
            failures = 0;
        } else {
            failures += 1;
            if !c.ever_logged_in.get() && failures > p.opts.connect_retries {
                if unreachable && left_behind + 1 < p.opts.targets.len() {
                    // This target is down: the next one, with fresh retries.
                    left_behind += 1;
                    failures = 0;
                    fail_over(&p, &c);
                    continue;
                }
                // A first connection that never made it: give up.
                p.open_failed.set(p.open_failed.get() + 1);
                p.opening.set(p.opening.get().saturating_sub(1));
                super::ThreadProgress::add(&p.progress.threads[p.index].failures, 1);
                break;
            }
        }
        let first_try = !c.ever_logged_in.get();
        if p.stopping.get() || (!c.reconnect.get() && !first_try) {
            break;
        }
        if unreachable && several && !first_try {
            fail_over(&p, &c);
        }
        let delay = c
            .next_delay
            .take()
            .unwrap_or_else(|| backoff(failures, c.id));
        let until = Instant::now() + delay;
        while Instant::now() < until && !p.stopping.get() {
            monoio::time::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            )
            .await;
        }
        if p.stopping.get() {
            break;
        }
        p.rec.borrow_mut().counters.reconnects += 1;
    }
    c.done.set(true);
    p.live.set(p.live.get().saturating_sub(1));
}

/// Counts a connection to `target` that is ready for its session (TCP
/// connected at `connected`, TLS handshake done with `--tls`); times a
/// first connection's connect and handshake.
fn connected_at(p: &Player, c: &Conn, target: usize, connected: Instant) {
    let now = Instant::now();
    let mut rec = p.rec.borrow_mut();
    rec.counters.connects += 1;
    if let Some(t) = rec.targets.get_mut(target) {
        t.connects += 1;
    }
    if !c.ever_logged_in.get() {
        let started = c.attempt_started.get();
        record_ns(
            &mut rec.connect,
            nanos(connected.saturating_duration_since(started)),
        );
        if p.opts.tls.is_some() {
            record_ns(
                &mut rec.handshake,
                nanos(now.saturating_duration_since(connected)),
            );
        }
    }
}

/// A duration in nanoseconds, saturated.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The connection's halves: as they are over plain TCP, after the TLS
/// handshake (within the connect timeout) with `--tls`.
async fn secure(
    p: &Player,
    target: usize,
    stream: TcpStream,
) -> Result<(ReadHalf, WriteHalf), String> {
    let Some(config) = &p.opts.tls else {
        return Ok(stream::plain(stream));
    };
    let name = match (&p.opts.tls_server_name, p.opts.target(target)) {
        (Some(n), _) => n.clone(),
        (None, Some(addr)) => ServerName::IpAddress(addr.ip().into()),
        (None, None) => return Err("no such target".into()),
    };
    let handshake = stream::handshake(stream, config.clone(), name);
    monoio::time::timeout(p.opts.connect_timeout, handshake)
        .await
        .unwrap_or_else(|_| Err("TLS handshake timed out".into()))
}

/// Points `c` at the next target and counts it.
fn fail_over(p: &Player, c: &Conn) {
    c.target.set(p.opts.next_target(c.target.get()));
    p.rec.borrow_mut().counters.failovers += 1;
}

fn connect_failed(p: &Player, why: String) {
    let mut rec = p.rec.borrow_mut();
    rec.counters.connect_failures += 1;
    bump(&mut rec.counters.connect_errors, why);
}

fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => "no local port left (EADDRNOTAVAIL): add --source-ips".into(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => "open-files limit reached (EMFILE)".into(),
        Some(libc::ECONNREFUSED) => "connection refused".into(),
        _ => format!("{:?}", e.kind()),
    }
}

/// Reconnect delay after `failures` failures in a row: 50 ms doubling to
/// 2 s, with jitter spread by connection id.
fn backoff(failures: u32, id: u32) -> Duration {
    let base = 50u64 << failures.min(5);
    let jitter = u64::from(id.wrapping_mul(2_654_435_761) % 1000) * base / 1000;
    Duration::from_millis((base + jitter).min(2000))
}

/// One session on a connected socket (`fd`, in halves); returns whether
/// it logged in.
async fn session(
    p: &Rc<Player>,
    c: &Rc<Conn>,
    mut rd: ReadHalf,
    mut wr: WriteHalf,
    fd: RawFd,
) -> bool {
    // Over WebSocket, the upgrade first; what follows its answer is frames.
    let (ws, first) = match &p.opts.ws_path {
        None => (false, BytesMut::new()),
        Some(path) => {
            let host = p
                .opts
                .target(c.target.get())
                .map(|a| a.to_string())
                .unwrap_or_default();
            match upgrade(&mut rd, &mut wr, &host, path, c.id).await {
                Ok(rest) => (true, rest),
                Err(why) => {
                    bump(&mut p.rec.borrow_mut().counters.server_errors, why);
                    p.rec.borrow_mut().counters.login_failures += 1;
                    return false;
                }
            }
        }
    };
    c.fd.set(Some(fd));
    c.signal.clear(FLUSH | CLOSE | CUT);
    c.out.borrow_mut().clear();
    c.logged_in.set(false);
    let now = Instant::now();
    c.client.borrow_mut().connect(now);
    p.drain(c, now);
    monoio::join!(reader(p, c, rd, ws, first), writer(c, wr, ws));
    c.fd.set(None);
    let was_in = c.logged_in.replace(false);
    c.client.borrow_mut().handle_disconnect();
    p.drain(c, Instant::now());
    if was_in {
        p.progress.threads[p.index]
            .logged_in
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        p.rec.borrow_mut().counters.login_failures += 1;
    }
    was_in
}

/// The WebSocket upgrade: sends the request, reads the answer; returns the
/// bytes that came after it.
async fn upgrade(
    rd: &mut ReadHalf,
    wr: &mut WriteHalf,
    host: &str,
    path: &str,
    id: u32,
) -> Result<BytesMut, String> {
    // The key need not be secret here, only well formed.
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&id.to_be_bytes());
    let (req, key) = ws::client_request(host, path, key);
    let (res, _) = wr.write_all(BytesMut::from(&req[..])).await;
    res.map_err(|e| format!("WebSocket upgrade not sent: {e}"))?;
    let mut buf = BytesMut::with_capacity(READ_MIN);
    loop {
        match ws::client_response(&buf, &key) {
            Ok(Some(n)) => {
                let _ = buf.split_to(n);
                return Ok(buf);
            }
            Ok(None) if buf.len() < READ_MAX => {}
            Ok(None) => return Err("WebSocket upgrade answer too long".into()),
            Err(e) => return Err(e.to_string()),
        }
        if !matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {
            return Err("closed during the WebSocket upgrade".into());
        }
    }
}

/// Moves the payloads of the WebSocket messages complete in `raw` to
/// `plain` (without a copy when `plain` is empty). Ok(true) once the server
/// sent its close frame (what came before it is in `plain`); Err on a bad
/// frame.
fn unwrap_ws(raw: &mut BytesMut, plain: &mut BytesMut) -> Result<bool, String> {
    let d = ws::Decoder::client(READ_MAX * 1024);
    loop {
        match d.decode(raw) {
            Ok(Some(f)) => match f.opcode {
                ws::Opcode::Binary if plain.is_empty() => *plain = f.payload,
                ws::Opcode::Binary => plain.extend_from_slice(&f.payload),
                ws::Opcode::Close => return Ok(true),
                _ => {}
            },
            Ok(None) => return Ok(false),
            Err(e) => return Err(format!("bad WebSocket frame from the server: {e}")),
        }
    }
}

async fn reader(p: &Rc<Player>, c: &Rc<Conn>, mut rd: ReadHalf, ws: bool, first: BytesMut) {
    // Over WebSocket, `buf` holds the raw frames and `plain` the imgate
    // frames their payloads carry.
    let mut buf = first;
    let mut plain = BytesMut::new();
    let mut pending = ws && !buf.is_empty();
    loop {
        if pending {
            pending = false;
        } else {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        bump(
                            &mut p.rec.borrow_mut().counters.server_errors,
                            format!("TLS: {e}"),
                        );
                    }
                    break;
                }
            }
            if rd.wants_write() {
                // A TLS record to answer (an alert, a key update).
                c.signal.raise(FLUSH);
            }
        }
        let now = Instant::now();
        let mut closed = false;
        let input = if ws {
            match unwrap_ws(&mut buf, &mut plain) {
                Ok(c) => closed = c,
                Err(why) => {
                    bump(&mut p.rec.borrow_mut().counters.server_errors, why);
                    break;
                }
            }
            &mut plain
        } else {
            &mut buf
        };
        let r = c.client.borrow_mut().handle_input(input, now);
        p.drain(c, now);
        if let Err(e) = r {
            bump(
                &mut p.rec.borrow_mut().counters.server_errors,
                format!("undecodable frame from the server: {e}"),
            );
            break;
        }
        if closed {
            break;
        }
    }
    c.signal.raise(CUT);
}

async fn writer(c: &Rc<Conn>, mut wr: WriteHalf, ws: bool) {
    let mut buf = BytesMut::new();
    // Over WebSocket, the message being built: header, then the frames,
    // masked in place (one copy of them, this buffer reused).
    let mut wire = BytesMut::new();
    let mut messages = 0u32;
    loop {
        let bits = c.signal.wait(FLUSH | CLOSE | CUT).await;
        if bits & CUT != 0 {
            if let Some(fd) = c.fd.get() {
                net::cut(fd);
            }
            break;
        }
        c.signal.clear(FLUSH);
        std::mem::swap(&mut buf, &mut *c.out.borrow_mut());
        if ws && !buf.is_empty() {
            // One masked binary message per write; the frames in it whole.
            messages = messages.wrapping_add(1);
            let mask = (c.id ^ messages.wrapping_mul(0x9E37_79B9)).to_be_bytes();
            let (h, n) = ws::header(ws::Opcode::Binary, buf.len(), Some(mask));
            wire.clear();
            wire.extend_from_slice(&h[..n]);
            wire.extend_from_slice(&buf);
            ws::mask_in_place(&mut wire[n..], mask);
            std::mem::swap(&mut buf, &mut wire);
        }
        if !buf.is_empty() || wr.wants_write() {
            let (res, b) = wr.write_all(buf).await;
            buf = b;
            buf.clear();
            if res.is_err() {
                if let Some(fd) = c.fd.get() {
                    net::cut(fd);
                }
                break;
            }
            continue;
        }
        if bits & CLOSE != 0 {
            wr.close_notify().await;
            if let Some(fd) = c.fd.get() {
                net::close_write(fd);
            }
            break;
        }
    }
}
