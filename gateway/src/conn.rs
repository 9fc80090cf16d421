//! One connection: its state on the core and the task that pumps it.
//!
//! The task sleeps on two things at once: the socket becoming readable and
//! the connection's [`Wake`] (outbound frames queued, or a close asked
//! for). It owns no read buffer while idle: when the socket is readable it
//! borrows a block from the core's read pool, reads, splits complete frames
//! off as `Bytes` (zero copy), and keeps only an unfinished frame's bytes.
//!
//! ```text
//!   wait(readable | signal) ─► read into a pool block ─► decode frames ─► handle each
//!          ▲                                                                │
//!          └──────────── flush the outbound queue (one write per wake) ◄────┘
//! ```

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Body, Decoder, ErrorCode, Frame, KickReason, Kind,
    frame::{ErrorFrame, Kick, LoginOk, MAX_LOGIN_FRAME, Pong},
    header::{self, FLAG_RETRY},
};
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use crate::{
    backend::{Inbound, Track},
    conn_id::ConnId,
    sock,
    token::TokenError,
    wake::Wake,
    wheel::TimerKey,
    worker::Core,
};

/// Outbound frames are queued.
pub(crate) const SIG_FLUSH: u8 = 1;
/// The connection must close.
pub(crate) const SIG_CLOSE: u8 = 2;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the login frame.
    Login,
    /// The token checked out; waiting for the backend's login:ok.
    /// Deliveries that arrive now are dropped: the backend's login:ok
    /// reports an inbox head that covers them, and the client syncs.
    Pending,
    /// Logged in.
    Active,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Send a kick frame with this reason, then close.
    Kick(KickReason),
    /// Flush what is queued (an error frame, say), then close.
    Flush,
    /// Close at once (peer went away, logout).
    Now,
}

/// Pushed frames not yet acknowledged, kept only while there are some.
#[derive(Debug, Default)]
pub(crate) struct Pushes {
    frames: VecDeque<(Track, Bytes)>,
    retries: u32,
    timer: Option<TimerKey>,
}

/// A connection's state, shared between its task and the core.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    phase: Cell<Phase>,
    user: Cell<u64>,
    device: Cell<u32>,
    /// When the last frame arrived, ms on the core's clock.
    last_seen: Cell<u64>,
    pub(crate) timer: Cell<Option<TimerKey>>,
    out: RefCell<VecDeque<Bytes>>,
    out_bytes: Cell<usize>,
    /// The front of `out` was partly sent.
    front_started: Cell<bool>,
    /// The socket buffer is full: the task waits for writability.
    blocked: Cell<bool>,
    pub(crate) signal: Wake,
    closing: Cell<Option<Closing>>,
    tokens: Cell<f32>,
    refill_ms: Cell<u64>,
    strikes: Cell<u32>,
    pushes: RefCell<Option<Box<Pushes>>>,
}

impl Conn {
    pub(crate) fn new(id: ConnId, burst: u32, now_ms: u64) -> Conn {
        Conn {
            id,
            phase: Cell::new(Phase::Login),
            user: Cell::new(0),
            device: Cell::new(0),
            last_seen: Cell::new(now_ms),
            timer: Cell::new(None),
            out: RefCell::new(VecDeque::new()),
            out_bytes: Cell::new(0),
            front_started: Cell::new(false),
            blocked: Cell::new(false),
            signal: Wake::default(),
            closing: Cell::new(None),
            tokens: Cell::new(burst as f32),
            refill_ms: Cell::new(now_ms),
            strikes: Cell::new(0),
            pushes: RefCell::new(None),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// Queues the login:ok the backend answered with; the connection is
    /// now fully logged in.
    pub(crate) fn logged_in(&self, ok: &LoginOk) {
        if self.phase.get() == Phase::Pending && !self.is_closing() {
            self.queue(ok.clone().to_bytes());
            self.phase.set(Phase::Active);
        }
    }

    pub(crate) fn user(&self) -> (u64, u32) {
        (self.user.get(), self.device.get())
    }

    pub(crate) fn last_seen(&self) -> u64 {
        self.last_seen.get()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// Asks the task to close. The first reason wins.
    pub(crate) fn close(&self, how: Closing) {
        if self.closing.get().is_none() {
            self.closing.set(Some(how));
        }
        self.signal.raise(SIG_CLOSE);
    }

    /// Whether the socket buffer is full and the task waits to write.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.get()
    }

    /// Queues encoded frames. Returns the queued byte count after.
    pub(crate) fn queue(&self, bytes: Bytes) -> usize {
        let n = self.out_bytes.get() + bytes.len();
        self.out_bytes.set(n);
        self.out.borrow_mut().push_back(bytes);
        self.signal.raise(SIG_FLUSH);
        n
    }

    /// Drops the backlog, except the rest of a frame already partly on
    /// the wire: the stream must stay whole for the kick that follows.
    fn drop_queue(&self) {
        let mut q = self.out.borrow_mut();
        let keep = if self.front_started.get() {
            q.pop_front()
        } else {
            None
        };
        q.clear();
        self.out_bytes.set(keep.as_ref().map_or(0, |b| b.len()));
        q.extend(keep);
    }

    /// Token bucket: takes one frame's token, refilling by elapsed time.
    fn take_token(&self, now_ms: u64, per_sec: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.refill_ms.get());
        let mut t = self.tokens.get();
        if elapsed > 0 {
            t = (t + elapsed as f32 * per_sec as f32 / 1000.0).min(burst as f32);
            self.refill_ms.set(now_ms);
        }
        if t >= 1.0 {
            self.tokens.set(t - 1.0);
            true
        } else {
            self.tokens.set(t);
            false
        }
    }

    /// Records a tracked push. Returns true when the push timer must be
    /// armed (nothing was pending before).
    pub(crate) fn track_push(&self, track: Track, bytes: Bytes) -> bool {
        let mut p = self.pushes.borrow_mut();
        let p = p.get_or_insert_with(Box::default);
        let first = p.frames.is_empty();
        if first {
            p.retries = 0;
        }
        p.frames.push_back((track, bytes));
        first && p.timer.is_none()
    }

    pub(crate) fn set_push_timer(&self, key: Option<TimerKey>) {
        if let Some(p) = self.pushes.borrow_mut().as_mut() {
            p.timer = key;
        }
    }

    /// An ack:R for `group` up to `seq` settles tracked pushes. Returns the
    /// push timer to cancel when nothing is left.
    fn settle_pushes(&self, group: u64, seq: u64) -> Option<TimerKey> {
        let mut slot = self.pushes.borrow_mut();
        let p = slot.as_mut()?;
        p.frames
            .retain(|(t, _)| !(t.group == group && t.seq <= seq));
        if p.frames.is_empty() {
            let key = p.timer.take();
            *slot = None;
            return key;
        }
        p.retries = 0;
        None
    }

    /// The push timer fired: the frames to send again (flag RETRY set), or
    /// None when the retry limit is spent (the caller kicks).
    pub(crate) fn repush(&self, limit: u32) -> Option<Vec<Bytes>> {
        let mut slot = self.pushes.borrow_mut();
        let p = slot.as_mut()?;
        p.timer = None;
        if p.frames.is_empty() {
            return Some(Vec::new());
        }
        if p.retries >= limit {
            return None;
        }
        p.retries += 1;
        Some(
            p.frames
                .iter()
                .map(|(_, b)| header::with_flags(b, FLAG_RETRY))
                .collect(),
        )
    }

    pub(crate) fn take_push_timer(&self) -> Option<TimerKey> {
        self.pushes
            .borrow_mut()
            .as_mut()
            .and_then(|p| p.timer.take())
    }
}

/// The frame decoders of one connection: before login, the first frame can
/// only be a login, so a length above the largest login frame is refused as
/// soon as it arrives, not waited on for the whole login deadline.
struct Decoders {
    first: Decoder,
    session: Decoder,
}

impl Decoders {
    fn new(max_frame: usize) -> Decoders {
        Decoders {
            first: Decoder::new(max_frame.min(MAX_LOGIN_FRAME)),
            session: Decoder::new(max_frame),
        }
    }

    fn for_conn(&self, conn: &Conn) -> &Decoder {
        match conn.phase() {
            Phase::Login => &self.first,
            Phase::Pending | Phase::Active => &self.session,
        }
    }
}

/// Why the read side stopped.
enum ReadEnd {
    /// Keep going.
    More,
    /// The peer closed or the socket failed.
    Gone,
}

/// Runs a connection until it closes, then unregisters it.
pub(crate) async fn serve(core: Rc<Core>, conn: Rc<Conn>, mut stream: TcpStream) {
    let decoders = Decoders::new(core.shared.cfg.max_frame);
    let mut partial = BytesMut::new();
    loop {
        if conn.signal.is_set(SIG_CLOSE) {
            break;
        }
        // Write what is queued at once; only a full socket buffer needs the
        // waiting path, boxed so that its state does not enlarge the future
        // every idle connection keeps.
        if conn.out_bytes.get() > 0 {
            let done = match send_now(&core, &conn, &stream) {
                Ok(done) => done,
                Err(()) => {
                    tracing::debug!(conn = %conn.id, "write failed; closing");
                    conn.close(Closing::Now);
                    break;
                }
            };
            if !done && !Box::pin(flush(&core, &conn, &mut stream, true)).await {
                tracing::debug!(conn = %conn.id, "write failed; closing");
                conn.close(Closing::Now);
                break;
            }
        }
        conn.signal.clear(SIG_FLUSH);
        let readable = monoio::select! {
            r = stream.readable(false) => Some(r.is_ok()),
            _ = conn.signal.wait(SIG_FLUSH | SIG_CLOSE) => None,
        };
        match readable {
            None => continue,
            Some(false) => {
                tracing::debug!(conn = %conn.id, "socket failed; closing");
                conn.close(Closing::Now);
                break;
            }
            Some(true) => {
                if let ReadEnd::Gone = read_once(&core, &conn, &stream, &decoders, &mut partial) {
                    tracing::debug!(conn = %conn.id, "peer gone; closing");
                    conn.close(Closing::Now);
                    break;
                }
            }
        }
    }
    if conn.closing.get() != Some(Closing::Now) {
        Box::pin(finish(&core, &conn, &mut stream)).await;
    }
    core.remove(&conn);
}

/// Sends what a closing connection still owes (a kick, an error), briefly.
async fn finish(core: &Rc<Core>, conn: &Rc<Conn>, stream: &mut TcpStream) {
    let how = conn.closing.get().unwrap_or(Closing::Now);
    let (user, device) = conn.user();
    tracing::debug!(conn = %conn.id, user, device, how = ?how, "closing");
    match how {
        Closing::Now => return,
        Closing::Flush => {}
        Closing::Kick(reason) => {
            // A slow consumer's backlog is dropped (it stays in the store
            // for sync); anything else queued (an error frame, the last
            // deliveries) still goes out before the kick.
            if reason == KickReason::SlowConsumer {
                conn.drop_queue();
            }
            core.metrics().kick(reason);
            conn.queue(Kick::new(reason, reason.as_str()).to_bytes());
        }
    }
    let grace = Duration::from_millis(core.shared.cfg.shutdown_timeout_ms.clamp(10, 2000));
    let _ = monoio::time::timeout(grace, flush(core, conn, stream, false)).await;
}

/// Sends what the socket takes now. Ok(true): the queue is empty (and its
/// storage freed); Ok(false): the socket buffer is full.
fn send_now(core: &Core, conn: &Conn, stream: &TcpStream) -> Result<bool, ()> {
    let (n, partial) =
        sock::send_queued(stream.as_raw_fd(), &mut conn.out.borrow_mut()).map_err(|_| ())?;
    if n > 0 {
        // Nothing sent leaves the front as it was.
        conn.front_started.set(partial);
    }
    conn.out_bytes.set(conn.out_bytes.get().saturating_sub(n));
    core.metrics()
        .bytes_out
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let mut q = conn.out.borrow_mut();
    if q.is_empty() {
        // An idle connection keeps no queue storage.
        if q.capacity() > 0 {
            *q = VecDeque::new();
        }
        return Ok(true);
    }
    drop(q);
    // What the socket did not take is the backlog: over the limit, the
    // client reads too slowly. Its messages stay stored; it syncs later.
    if conn.out_bytes.get() > core.shared.cfg.max_outbound_bytes {
        conn.close(Closing::Kick(KickReason::SlowConsumer));
    }
    Ok(false)
}

/// Writes the outbound queue with `sendmsg` straight from the queued
/// `Bytes` (no copy, no buffer lent to the kernel), waiting for
/// writability whenever the socket buffer is full.
async fn flush(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    stream: &mut TcpStream,
    interruptible: bool,
) -> bool {
    loop {
        match send_now(core, conn, stream) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(()) => return false,
        }
        conn.blocked.set(true);
        let writable = if interruptible {
            // A close request ends the wait: finish() decides what still
            // goes out.
            if conn.signal.is_set(SIG_CLOSE) {
                return true;
            }
            monoio::select! {
                r = stream.writable(false) => r.is_ok(),
                _ = conn.signal.wait(SIG_CLOSE) => true,
            }
        } else {
            stream.writable(false).await.is_ok()
        };
        conn.blocked.set(false);
        if !writable {
            return false;
        }
    }
}

/// One read: into the connection's unfinished frame if it has one, else
/// into the core's read block; then decode and handle every frame.
///
/// The read is a non-blocking `recv` right after readiness, not an
/// asynchronous read: no buffer is lent to the kernel across an await, so a
/// core needs one read block however many connections are readable at once.
fn read_once(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    stream: &TcpStream,
    decoders: &Decoders,
    partial: &mut BytesMut,
) -> ReadEnd {
    let own = !partial.is_empty();
    let mut buf = if own {
        let want = decoders.for_conn(conn).needed(partial).max(4096);
        partial.reserve(want);
        std::mem::take(partial)
    } else {
        core.take_read_block()
    };
    let start = buf.len();
    let n = match sock::recv(stream.as_raw_fd(), &mut buf) {
        Ok(0) => {
            if !own {
                core.give_read_block(buf);
            }
            return ReadEnd::Gone;
        }
        Ok(n) => n,
        Err(e) => {
            let again = matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            );
            if own {
                *partial = buf;
            } else {
                core.give_read_block(buf);
            }
            return if again { ReadEnd::More } else { ReadEnd::Gone };
        }
    };
    core.metrics()
        .bytes_in
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let mut data = if own {
        buf
    } else {
        // Split the bytes read off the block; the rest of the block serves
        // the next read on this core.
        let data = buf.split_to(start + n);
        core.give_read_block(buf);
        data
    };
    let now_ms = core.now_ms();
    loop {
        if conn.is_closing() {
            break;
        }
        match decoders.for_conn(conn).decode(&mut data) {
            Ok(Some(frame)) => handle(core, conn, frame, now_ms),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = %conn.id, error = %e, "bad frame");
                core.metrics()
                    .protocol_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conn.queue(ErrorFrame::new(e.code(), e.kind(), 0, &e.to_string()).to_bytes());
                conn.close(Closing::Kick(KickReason::ProtocolError));
                data.clear();
                break;
            }
        }
    }
    core.flush_backend_soon();
    if !data.is_empty() {
        // An unfinished frame: keep its bytes (copied out of a pool block,
        // so the block is not pinned by one slow connection).
        *partial = if own {
            data
        } else {
            let needed = decoders.for_conn(conn).needed(&data);
            let mut p = BytesMut::with_capacity(needed + data.len());
            p.extend_from_slice(&data);
            p
        };
    }
    ReadEnd::More
}

/// Handles one decoded frame.
fn handle(core: &Rc<Core>, conn: &Rc<Conn>, frame: Frame, now_ms: u64) {
    let cfg = &core.shared.cfg;
    let m = core.metrics();
    m.frames_in
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    conn.last_seen.set(now_ms);
    if !conn.take_token(now_ms, cfg.max_frames_per_sec, cfg.frame_burst) {
        // Dropped, and said so; a client that keeps going is kicked.
        let strikes = conn.strikes.get().saturating_add(1);
        conn.strikes.set(strikes);
        if strikes > cfg.rate_limit_strikes {
            conn.close(Closing::Kick(KickReason::RateLimited));
        } else {
            let id = frame.request_id();
            refuse(
                conn,
                ErrorCode::RateLimited,
                Some(frame.kind()),
                id,
                "frame rate limit",
            );
        }
        return;
    }
    conn.strikes.set(0);
    match conn.phase() {
        Phase::Login => login(core, conn, frame, now_ms),
        Phase::Pending | Phase::Active => active(core, conn, frame),
    }
}

fn refuse(conn: &Conn, code: ErrorCode, kind: Option<Kind>, id: u64, text: &str) {
    conn.queue(ErrorFrame::new(code, kind, id, text).to_bytes());
}

fn login(core: &Rc<Core>, conn: &Rc<Conn>, frame: Frame, now_ms: u64) {
    let m = core.metrics();
    let Frame::Login(login) = frame else {
        m.login_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        refuse(
            conn,
            ErrorCode::NotLoggedIn,
            Some(frame.kind()),
            frame.request_id(),
            "log in first",
        );
        conn.close(Closing::Kick(KickReason::ProtocolError));
        return;
    };
    let now = crate::unix_time().as_secs();
    // User ids are never 0 (0 means "none" in the fields that hold users),
    // whatever a verifier would say of the token.
    let verdict = if login.user == 0 {
        Err(TokenError::NoUser)
    } else {
        core.shared
            .verifier
            .verify(login.user, login.device, &login.token, now)
    };
    if let Err(e) = verdict {
        m.login_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::BadToken,
        };
        refuse(conn, code, Some(Kind::Login), 0, &e.to_string());
        conn.close(Closing::Flush);
        return;
    }
    conn.user.set(login.user);
    conn.device.set(login.device);
    conn.phase.set(Phase::Pending);
    m.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(old) = core
        .shared
        .registry
        .login(login.user, login.device, conn.id)
    {
        core.kick_anywhere(old, KickReason::Replaced);
    }
    core.arm_liveness(conn, core.deadline(now_ms, core.heartbeat_timeout_ms));
    core.to_backend(Inbound::Login {
        conn: conn.id,
        user: login.user,
        device: login.device,
        resume: login.resume,
    });
}

fn active(core: &Rc<Core>, conn: &Rc<Conn>, frame: Frame) {
    let (user, device) = conn.user();
    let (kind, id) = (frame.kind(), frame.request_id());
    match frame {
        Frame::Ping(p) => {
            conn.queue(Pong { nonce: p.nonce }.to_bytes());
        }
        Frame::Pong(_) => {}
        Frame::Logout(_) => conn.close(Closing::Now),
        Frame::Login(_) => refuse(
            conn,
            ErrorCode::AlreadyLoggedIn,
            Some(kind),
            id,
            "already logged in",
        ),
        Frame::MsgR(_)
        | Frame::AckR(_)
        | Frame::ReadR(_)
        | Frame::SyncR(_)
        | Frame::UnreadR(_)
        | Frame::GroupR(_)
        | Frame::ReceiptsR(_) => {
            if let Frame::AckR(a) = &frame
                && let Some(key) = conn.settle_pushes(a.group, a.seq)
            {
                core.wheel.borrow_mut().cancel(key);
            }
            if core.backlogged() {
                core.metrics()
                    .overloaded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                refuse(conn, ErrorCode::Overloaded, Some(kind), id, "try again");
                return;
            }
            core.to_backend(Inbound::Frame {
                conn: conn.id,
                user,
                device,
                frame,
            });
        }
        // Frames only a server sends.
        Frame::LoginOk(_)
        | Frame::Kick(_)
        | Frame::Error(_)
        | Frame::MsgA(_)
        | Frame::MsgN(_)
        | Frame::AckA(_)
        | Frame::AckN(_)
        | Frame::ReadA(_)
        | Frame::ReadN(_)
        | Frame::SyncPage(_)
        | Frame::UnreadA(_)
        | Frame::GroupA(_)
        | Frame::ReceiptsA(_) => {
            core.metrics()
                .protocol_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            refuse(
                conn,
                ErrorCode::InvalidRequest,
                Some(kind),
                0,
                "a server-to-client frame",
            );
        }
    }
}
