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

use std::{
    collections::VecDeque, os::fd::AsRawFd, rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration,
};

use bytes::{Buf, BytesMut};
use imgate_codec::{
    Body, Decoder, KickReason,
    frame::{ErrorFrame, Kick, MAX_LOGIN_FRAME},
    ws,
};
use monoio::net::TcpStream;

use crate::{
    conn::{Closing, Conn, Phase, SIG_CLOSE, SIG_FLUSH},
    core::Core,
    dispatch, sock, tls,
};

/// A TLS connection's state; `None` on a clear-text listener.
type Tls = Option<Box<tls::TlsConn>>;

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
pub(crate) async fn serve(core: Rc<Core>, conn: Rc<Conn>, mut stream: TcpStream, mut tls: Tls) {
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
        if conn.queued_bytes() > 0 || tls.as_ref().is_some_and(|t| t.wants_write()) {
            let done = match send_now(&core, &conn, &stream, &mut tls) {
                Ok(done) => done,
                Err(()) => {
                    tracing::debug!(conn = %conn.id, "write failed; closing");
                    conn.close(Closing::Now);
                    break;
                }
            };
            if !done && !Box::pin(flush(&core, &conn, &mut stream, &mut tls, true)).await {
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
                let end = if conn.is_websocket() {
                    read_once_ws(&core, &conn, &stream, &mut tls, &mut partial)
                } else {
                    read_once(&core, &conn, &stream, &mut tls, &mut partial)
                };
                if let ReadEnd::Gone = end {
                    tracing::debug!(conn = %conn.id, "peer gone; closing");
                    conn.close(Closing::Now);
                    break;
                }
            }
        }
    }
    if conn.closing() != Some(Closing::Now) {
        Box::pin(finish(&core, &conn, &mut stream, &mut tls)).await;
    }
    core.remove(&conn);
}

/// Sends what a closing connection still owes (a kick, an error), briefly.
async fn finish(core: &Rc<Core>, conn: &Rc<Conn>, stream: &mut TcpStream, tls: &mut Tls) {
    let how = conn.closing().unwrap_or(Closing::Now);
    let (user, device) = conn.user();
    tracing::debug!(conn = %conn.id, user, device, how = ?how, "closing");
    // A client that never finished its TLS or WebSocket handshake gets no
    // frame.
    let frames = (!conn.is_websocket() || conn.is_upgraded())
        && !tls.as_ref().is_some_and(|t| t.is_handshaking());
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
            if let Some(t) = core.metrics().transports.get(conn.transport_index()) {
                t.kicks.fetch_add(1, Relaxed);
            }
            if !frames {
                return;
            }
            conn.queue(Kick::new(reason, reason.as_str()).to_bytes());
            if conn.is_websocket() {
                let code = if reason == KickReason::ServerShutdown {
                    ws::CloseCode::GOING_AWAY
                } else {
                    ws::CloseCode::POLICY
                };
                conn.queue_raw(ws_close(code, reason.as_str()));
            }
        }
    }
    let grace = Duration::from_millis(core.shared.cfg.shutdown_timeout_ms.clamp(10, 2000));
    let _ = monoio::time::timeout(grace, async {
        if !flush(core, conn, stream, tls, false).await {
            return;
        }
        // The TLS stream ends with close_notify, so that the client can
        // tell the end from a truncation.
        if let Some(t) = tls.as_mut().filter(|t| !t.is_handshaking()) {
            t.close_notify();
            flush(core, conn, stream, tls, false).await;
        }
    })
    .await;
}

/// Sends what the socket takes now. Ok(true): the queue is empty (and its
/// storage freed); Ok(false): the socket buffer is full.
fn send_now(core: &Core, conn: &Conn, stream: &TcpStream, tls: &mut Tls) -> Result<bool, ()> {
    if let Some(t) = tls {
        return send_now_tls(core, conn, stream, t);
    }
    let (n, partial) = sock::send_queued(stream.as_raw_fd(), &mut conn.out()).map_err(|_| ())?;
    conn.sent(n, partial);
    count_bytes(core, conn, 0, n);
    finish_send(core, conn)
}

/// Most plaintext encrypted in one go: the ciphertext a TLS connection
/// holds waiting for the socket is at most about this much.
const TLS_BATCH: usize = 64 * 1024;

/// [`send_now`] over TLS: writes the pending ciphertext (handshake
/// flights, the last batch), then encrypts the next batch of the queue and
/// writes that, until the queue is empty or the socket full. Nothing is
/// encrypted before the handshake is done.
fn send_now_tls(
    core: &Core,
    conn: &Conn,
    stream: &TcpStream,
    t: &mut tls::TlsConn,
) -> Result<bool, ()> {
    let fd = stream.as_raw_fd();
    loop {
        let (n, all) = t.send(fd).map_err(|_| ())?;
        count_bytes(core, conn, 0, n);
        if !all || t.is_handshaking() {
            break;
        }
        let batch = {
            let mut q = conn.out();
            t.encrypt(TLS_BATCH, || q.pop_front())
        };
        let batch = match batch {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(conn = %conn.id, error = %e, "cannot encrypt");
                return Err(());
            }
        };
        if batch == 0 && !t.wants_write() {
            break;
        }
        conn.sent(batch, false);
    }
    if t.wants_write() {
        // The socket is full: the queue is the backlog, as over TCP.
        finish_send(core, conn)?;
        return Ok(false);
    }
    if t.is_handshaking() {
        // Nothing can go out until the client answers.
        return Ok(true);
    }
    finish_send(core, conn)
}

/// After a write: frees an empty queue's storage, or checks the backlog.
fn finish_send(core: &Core, conn: &Conn) -> Result<bool, ()> {
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
    tls: &mut Tls,
    interruptible: bool,
) -> bool {
    loop {
        match send_now(core, conn, stream, tls) {
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

/// A WebSocket close frame from the server.
fn ws_close(code: ws::CloseCode, reason: &str) -> bytes::Bytes {
    ws::encode(ws::Opcode::Close, &ws::close_payload(code, reason), None).into()
}

/// One read of a WebSocket connection: the upgrade request until it is
/// whole, then WebSocket frames, whose binary payloads carry whole imgate
/// frames (handled as over TCP). Pings are answered, a close is echoed, a
/// text message or a bad WebSocket frame ends the connection with a close
/// code. Reads go into the core's block like TCP's; only an unfinished
/// request or WebSocket frame is kept per connection.
fn read_once_ws(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    stream: &TcpStream,
    tls: &mut Tls,
    partial: &mut BytesMut,
) -> ReadEnd {
    let cfg = &core.shared.cfg;
    let wsd = ws::Decoder::server(cfg.max_frame);
    let want = if conn.is_upgraded() {
        wsd.needed(partial)
    } else {
        1
    };
    let (mut data, own) = match recv_once(core, conn, stream, tls, partial, want) {
        Ok(read) => read,
        Err(end) => return end,
    };
    if !conn.is_upgraded() {
        if let Some(page) = cfg
            .demo_path
            .as_deref()
            .and_then(|p| crate::web::respond(&data, p))
        {
            core.metrics().demo_served.fetch_add(1, Relaxed);
            conn.queue_raw(page.into());
            conn.close(Closing::Flush);
            return ReadEnd::More;
        }
        match ws::accept(&data, &cfg.ws_path, cfg.ws_handshake_max) {
            ws::Handshake::Partial => {}
            ws::Handshake::Accept { consumed, response } => {
                core.metrics().ws_upgrades.fetch_add(1, Relaxed);
                conn.queue_raw(response.into());
                conn.set_upgraded();
                data.advance(consumed);
            }
            ws::Handshake::Refuse(r) => {
                tracing::debug!(conn = %conn.id, status = r.status, code = r.code, "upgrade refused");
                core.metrics().ws_refused.fetch_add(1, Relaxed);
                conn.queue_raw(r.response().into());
                conn.close(Closing::Flush);
                return ReadEnd::More;
            }
        }
    }
    if conn.is_upgraded() {
        let decoders = Decoders::new(cfg.max_frame);
        loop {
            if conn.is_closing() {
                data.clear();
                break;
            }
            match wsd.decode(&mut data) {
                Ok(Some(f)) => match f.opcode {
                    ws::Opcode::Binary => {
                        let mut payload = f.payload;
                        dispatch_frames(core, conn, &decoders, &mut payload);
                        if !payload.is_empty() && !conn.is_closing() {
                            protocol_error(
                                core,
                                conn,
                                imgate_codec::ErrorCode::MalformedFrame,
                                None,
                                "a WebSocket message must carry whole frames",
                            );
                        }
                    }
                    ws::Opcode::Ping => {
                        conn.queue_raw(ws::encode(ws::Opcode::Pong, &f.payload, None).into());
                    }
                    ws::Opcode::Pong => {}
                    ws::Opcode::Close => {
                        conn.queue_raw(ws_close(ws::CloseCode::NORMAL, ""));
                        conn.close(Closing::Flush);
                    }
                    ws::Opcode::Text | ws::Opcode::Continuation => {
                        core.metrics().ws_refused.fetch_add(1, Relaxed);
                        conn.queue_raw(ws_close(
                            ws::CloseCode::UNSUPPORTED_DATA,
                            "only binary messages are accepted",
                        ));
                        conn.close(Closing::Flush);
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(conn = %conn.id, error = %e, "bad WebSocket frame");
                    core.metrics().ws_refused.fetch_add(1, Relaxed);
                    conn.queue_raw(ws_close(e.close_code(), &e.to_string()));
                    conn.close(Closing::Flush);
                    data.clear();
                    break;
                }
            }
        }
        core.flush_backend_soon();
    }
    let needed = if conn.is_upgraded() {
        wsd.needed(&data)
    } else {
        0
    };
    keep_unfinished(partial, data, own, needed);
    ReadEnd::More
}

/// Decodes and handles every whole frame at the front of `data`; leaves an
/// unfinished frame's bytes in it. A bad frame gets an error frame and a
/// `protocol_error` kick, and `data` is cleared.
fn dispatch_frames(core: &Rc<Core>, conn: &Rc<Conn>, decoders: &Decoders, data: &mut BytesMut) {
    let cx = dispatch::Ctx {
        cfg: &core.shared.cfg,
        verifier: &*core.shared.verifier,
        metrics: core.metrics(),
        now_ms: core.now_ms(),
        unix_s: || crate::unix_time().as_secs(),
        backlogged: core.backlogged_flag(),
        revocations: &core.shared.registry.revocations,
    };
    let mut actions = Vec::new();
    loop {
        if conn.is_closing() {
            break;
        }
        match decoders.for_conn(conn).decode(data) {
            Ok(Some(frame)) => {
                dispatch::handle(&cx, conn, frame, &mut actions);
                for a in actions.drain(..) {
                    core.apply(conn, a);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = %conn.id, error = %e, "bad frame");
                protocol_error(core, conn, e.code(), e.kind(), &e.to_string());
                data.clear();
                break;
            }
        }
    }
}

/// Answers a protocol error with an error frame and a kick.
fn protocol_error(
    core: &Core,
    conn: &Conn,
    code: imgate_codec::ErrorCode,
    kind: Option<imgate_codec::Kind>,
    text: &str,
) {
    core.metrics().protocol_errors.fetch_add(1, Relaxed);
    conn.queue(ErrorFrame::new(code, kind, 0, text).to_bytes());
    conn.close(Closing::Kick(KickReason::ProtocolError));
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
    tls: &mut Tls,
    partial: &mut BytesMut,
) -> ReadEnd {
    let decoders = Decoders::new(core.shared.cfg.max_frame);
    let want = decoders.for_conn(conn).needed(partial);
    let (mut data, own) = match recv_once(core, conn, stream, tls, partial, want) {
        Ok(read) => read,
        Err(end) => return end,
    };
    dispatch_frames(core, conn, &decoders, &mut data);
    core.flush_backend_soon();
    let needed = decoders.for_conn(conn).needed(&data);
    keep_unfinished(partial, data, own, needed);
    ReadEnd::More
}

/// Reads once: into `partial` if it holds unfinished bytes (with room for
/// `want` more, at least 4 KiB), else into the core's read block. Returns
/// the bytes to decode (the unfinished ones first) and whether they are
/// the connection's own buffer, or how the read ended.
fn recv_once(
    core: &Core,
    conn: &Conn,
    stream: &TcpStream,
    tls: &mut Tls,
    partial: &mut BytesMut,
    want: usize,
) -> Result<(BytesMut, bool), ReadEnd> {
    let own = !partial.is_empty();
    let mut buf = if own {
        partial.reserve(want.max(4096));
        std::mem::take(partial)
    } else {
        core.take_read_block()
    };
    let start = buf.len();
    let read = match tls {
        Some(t) => recv_tls(core, conn, stream, t, &mut buf, start),
        None => sock::recv(stream.as_raw_fd(), &mut buf),
    };
    let n = match read {
        Ok(0) => {
            if !own {
                core.give_read_block(buf);
            }
            return Err(ReadEnd::Gone);
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
            return Err(if again { ReadEnd::More } else { ReadEnd::Gone });
        }
    };
    if tls.is_none() {
        count_bytes(core, conn, n, 0);
    }
    if own {
        return Ok((buf, true));
    }
    // Split the bytes read off the block; the rest of the block serves the
    // next read on this core.
    let data = buf.split_to(start + n);
    core.give_read_block(buf);
    Ok((data, false))
}

/// [`sock::recv`] over TLS: reads ciphertext into the core's block and
/// appends the plaintext of its whole records to `buf`, with `recv`'s
/// results (0: the peer closed;
/// `WouldBlock`: no plaintext this time, perhaps only handshake records).
/// A client that does not speak TLS gets rustls's alert, then the end.
fn recv_tls(
    core: &Core,
    conn: &Conn,
    stream: &TcpStream,
    t: &mut tls::TlsConn,
    buf: &mut BytesMut,
    start: usize,
) -> std::io::Result<usize> {
    let fd = stream.as_raw_fd();
    let mut wire = 0;
    let handshaking = t.is_handshaking();
    let mut scratch = core.take_read_block();
    let end = t.read(fd, &mut scratch, buf, &mut wire);
    core.give_read_block(scratch);
    count_bytes(core, conn, wire, 0);
    if handshaking && !t.is_handshaking() {
        core.metrics().tls_handshakes.fetch_add(1, Relaxed);
    }
    match end {
        tls::ReadTls::Read if buf.len() > start => Ok(buf.len() - start),
        tls::ReadTls::Read | tls::ReadTls::Empty => Err(std::io::ErrorKind::WouldBlock.into()),
        tls::ReadTls::Closed => Ok(0),
        tls::ReadTls::Failed(e) => Err(e),
        tls::ReadTls::Refused(e) => {
            tracing::debug!(error = %e, "TLS refused");
            core.metrics().tls_failures.fetch_add(1, Relaxed);
            // The alert, if the socket takes it now.
            let _ = t.send(fd);
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }
    }
}

/// Counts bytes on the wire, in total and for the connection's transport.
fn count_bytes(core: &Core, conn: &Conn, read: usize, written: usize) {
    let m = core.metrics();
    let t = m.transports.get(conn.transport_index());
    if read > 0 {
        m.bytes_in.fetch_add(read as u64, Relaxed);
        if let Some(t) = t {
            t.bytes_in.fetch_add(read as u64, Relaxed);
        }
    }
    if written > 0 {
        m.bytes_out.fetch_add(written as u64, Relaxed);
        if let Some(t) = t {
            t.bytes_out.fetch_add(written as u64, Relaxed);
        }
    }
}

/// Keeps what is left of `data` (an unfinished frame or request) as the
/// connection's own bytes: copied out of a pool block, with room for
/// `needed` more, so that the block is not pinned by one slow connection.
fn keep_unfinished(partial: &mut BytesMut, data: BytesMut, own: bool, needed: usize) {
    if data.is_empty() {
        return;
    }
    *partial = if own {
        data
    } else {
        let mut p = BytesMut::with_capacity(needed + data.len());
        p.extend_from_slice(&data);
        p
    };
}
