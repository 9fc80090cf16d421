//! The task that pumps one connection's socket: it reads and decodes
//! frames, hands each to the dispatch, and writes the outbound queue.
//!
//! The task sleeps on two things at once: the socket becoming readable and
//! the connection's [`Wake`](crate::wake::Wake) flag (outbound frames
//! queued, or a close asked for). It owns no read buffer while idle: when
//! the socket is readable it borrows a block from the core's read pool,
//! reads, splits complete frames off as `Bytes` (zero copy), and keeps only
//! an unfinished frame's bytes.
//!
//! ```text
//!   wait(readable | wake) ─► read into a pool block ─► decode frames ─► dispatch each
//!          ▲                                                                  │
//!          └──────────── flush the outbound queue (one write per wake) ◄──────┘
//! ```

use std::{collections::VecDeque, os::fd::AsRawFd, rc::Rc, time::Duration};

use bytes::BytesMut;
use imgate_codec::{
    Body, Decoder, KickReason,
    frame::{ErrorFrame, Kick, MAX_LOGIN_FRAME},
};
use monoio::net::TcpStream;

use crate::{
    conn::{Closing, Conn, Phase, SIG_CLOSE, SIG_FLUSH},
    core::Core,
    dispatch, sock,
};

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
    // Everything held here lives as long as the connection, in its task:
    // the decoders are made per read instead (two integers), which keeps
    // the task in mimalloc's 448-byte class rather than the 512-byte one
    // (docs/benchmarks.md, idle connections).
    let mut partial = BytesMut::new();
    loop {
        if conn.wake.is_set(SIG_CLOSE) {
            break;
        }
        // Write what is queued at once; only a full socket buffer needs the
        // waiting path, boxed so that its state does not enlarge the future
        // every idle connection keeps.
        if conn.queued_bytes() > 0 {
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
        conn.wake.clear(SIG_FLUSH);
        let readable = monoio::select! {
            r = stream.readable(false) => Some(r.is_ok()),
            _ = conn.wake.wait(SIG_FLUSH | SIG_CLOSE) => None,
        };
        match readable {
            None => continue,
            Some(false) => {
                tracing::debug!(conn = %conn.id, "socket failed; closing");
                conn.close(Closing::Now);
                break;
            }
            Some(true) => {
                if let ReadEnd::Gone = read_once(&core, &conn, &stream, &mut partial) {
                    tracing::debug!(conn = %conn.id, "peer gone; closing");
                    conn.close(Closing::Now);
                    break;
                }
            }
        }
    }
    if conn.closing() != Some(Closing::Now) {
        Box::pin(finish(&core, &conn, &mut stream)).await;
    }
    core.remove(&conn);
}

/// Sends what a closing connection still owes (a kick, an error), briefly.
async fn finish(core: &Rc<Core>, conn: &Rc<Conn>, stream: &mut TcpStream) {
    let how = conn.closing().unwrap_or(Closing::Now);
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
    let (n, partial) = sock::send_queued(stream.as_raw_fd(), &mut conn.out()).map_err(|_| ())?;
    conn.sent(n, partial);
    core.metrics()
        .bytes_out
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let mut q = conn.out();
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
    if conn.queued_bytes() > core.shared.cfg.max_outbound_bytes {
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
        conn.set_blocked(true);
        let writable = if interruptible {
            // A close request ends the wait: finish() decides what still
            // goes out.
            if conn.wake.is_set(SIG_CLOSE) {
                return true;
            }
            monoio::select! {
                r = stream.writable(false) => r.is_ok(),
                _ = conn.wake.wait(SIG_CLOSE) => true,
            }
        } else {
            stream.writable(false).await.is_ok()
        };
        conn.set_blocked(false);
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
    partial: &mut BytesMut,
) -> ReadEnd {
    let decoders = Decoders::new(core.shared.cfg.max_frame);
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
    let cx = dispatch::Ctx {
        cfg: &core.shared.cfg,
        verifier: &*core.shared.verifier,
        metrics: core.metrics(),
        now_ms: core.now_ms(),
        unix_s: || crate::unix_time().as_secs(),
        backlogged: core.backlogged_flag(),
    };
    let mut actions = Vec::new();
    loop {
        if conn.is_closing() {
            break;
        }
        match decoders.for_conn(conn).decode(&mut data) {
            Ok(Some(frame)) => {
                dispatch::handle(&cx, conn, frame, &mut actions);
                for a in actions.drain(..) {
                    core.apply(conn, a);
                }
            }
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
