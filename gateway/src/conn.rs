//! One connection's state on its core: where it is in its life, who it is,
//! its outbound queue, how it ends, its rate limit and its unacknowledged
//! pushes. Plain data in `Cell`s, touched by the owning core only: the
//! socket pump ([`crate::pump`]), the dispatch ([`crate::dispatch`]) and
//! the core ([`crate::core`]) read and change it; nothing here does I/O.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
};

use bytes::Bytes;
use imgate_codec::{Body, KickReason, frame::LoginOk};

use crate::{conn_id::ConnId, pushes::Unacked, rate::TokenBucket, wake::Wake, wheel::TimerKey};

/// Outbound frames are queued.
pub(crate) const SIG_FLUSH: u8 = 1;
/// The connection must close.
pub(crate) const SIG_CLOSE: u8 = 2;

/// `write_state`: the front of the outbound queue was partly sent.
const FRONT_STARTED: u8 = 1;
/// `write_state`: the socket buffer is full; the task waits for
/// writability.
const BLOCKED: u8 = 2;
/// `write_state`: a WebSocket connection: frames go out in binary messages.
const WEBSOCKET: u8 = 4;
/// `write_state`: the WebSocket handshake is done.
const UPGRADED: u8 = 8;
/// The connection speaks TLS.
const TLS: u8 = 16;

/// Headers of binary WebSocket messages of 0 to 125 bytes, shared.
static SMALL_WS_HEADERS: [[u8; 2]; 126] = {
    let mut t = [[0x82u8, 0]; 126];
    let mut i = 0;
    while i < 126 {
        t[i][1] = i as u8;
        i += 1;
    }
    t
};

/// The header of a binary WebSocket message of `len` bytes from the
/// server: shared for short ones, else allocated.
fn ws_header(len: usize) -> Bytes {
    match SMALL_WS_HEADERS.get(len) {
        Some(h) => Bytes::from_static(h),
        None => {
            let (h, n) = imgate_codec::ws::header(imgate_codec::ws::Opcode::Binary, len, None);
            Bytes::copy_from_slice(&h[..n])
        }
    }
}

/// How a connection carries frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Frames straight on TCP.
    Tcp,
    /// Frames in binary WebSocket messages, after an HTTP upgrade.
    Ws,
}

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

/// A connection's state, shared between its task and the core.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    phase: Cell<Phase>,
    user: Cell<u64>,
    device: Cell<u32>,
    /// When the last frame arrived, ms on the core's clock.
    last_seen: Cell<u64>,
    /// The liveness timer: login deadline, then heartbeat.
    pub(crate) timer: Cell<Option<TimerKey>>,
    out: RefCell<VecDeque<Bytes>>,
    out_bytes: Cell<usize>,
    /// [`FRONT_STARTED`] and [`BLOCKED`], one byte for both.
    write_state: Cell<u8>,
    pub(crate) wake: Wake,
    closing: Cell<Option<Closing>>,
    pub(crate) rate: TokenBucket,
    /// Frames refused in a row by the rate limit.
    strikes: Cell<u32>,
    pub(crate) pushes: Unacked,
}

impl Conn {
    /// Marks a WebSocket connection (before its handshake).
    pub(crate) fn set_websocket(&self) {
        self.set_write_bit(WEBSOCKET, true);
    }

    /// Whether frames go out in WebSocket messages.
    pub(crate) fn is_websocket(&self) -> bool {
        self.write_state.get() & WEBSOCKET != 0
    }

    /// Whether the WebSocket handshake is done (always false over TCP).
    pub(crate) fn is_upgraded(&self) -> bool {
        self.write_state.get() & UPGRADED != 0
    }

    /// The WebSocket handshake is done.
    pub(crate) fn set_upgraded(&self) {
        self.set_write_bit(UPGRADED, true);
    }

    /// Marks a TLS connection.
    pub(crate) fn set_tls(&self) {
        self.set_write_bit(TLS, true);
    }

    /// The connection's transport, an index into
    /// [`crate::metrics::TRANSPORTS`]: tcp, ws, tls, wss.
    pub(crate) fn transport_index(&self) -> usize {
        let s = self.write_state.get();
        crate::metrics::transport_index(s & WEBSOCKET != 0, s & TLS != 0)
    }

    fn set_write_bit(&self, bit: u8, on: bool) {
        let s = self.write_state.get();
        self.write_state.set(if on { s | bit } else { s & !bit });
    }

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
            write_state: Cell::new(0),
            wake: Wake::default(),
            closing: Cell::new(None),
            rate: TokenBucket::full(burst, now_ms),
            strikes: Cell::new(0),
            pushes: Unacked::default(),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// The token checked out for `user` on `device`: waiting for the
    /// backend's login:ok.
    pub(crate) fn authenticated(&self, user: u64, device: u32) {
        self.user.set(user);
        self.device.set(device);
        self.phase.set(Phase::Pending);
    }

    /// Queues the login:ok the backend answered with; the connection is
    /// now fully logged in.
    pub(crate) fn logged_in(&self, ok: &LoginOk) {
        if self.phase.get() == Phase::Pending && !self.is_closing() {
            self.queue(ok.to_bytes());
            self.phase.set(Phase::Active);
        }
    }

    pub(crate) fn user(&self) -> (u64, u32) {
        (self.user.get(), self.device.get())
    }

    pub(crate) fn last_seen(&self) -> u64 {
        self.last_seen.get()
    }

    /// A frame arrived at `now_ms`.
    pub(crate) fn seen(&self, now_ms: u64) {
        self.last_seen.set(now_ms);
    }

    /// Counts a frame refused by the rate limit; returns the refusals in a
    /// row.
    pub(crate) fn strike(&self) -> u32 {
        let s = self.strikes.get().saturating_add(1);
        self.strikes.set(s);
        s
    }

    /// A frame passed the rate limit.
    pub(crate) fn clear_strikes(&self) {
        self.strikes.set(0);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// How the connection is closing, if it is.
    pub(crate) fn closing(&self) -> Option<Closing> {
        self.closing.get()
    }

    /// Asks the task to close. The first reason wins.
    pub(crate) fn close(&self, how: Closing) {
        if self.closing.get().is_none() {
            self.closing.set(Some(how));
        }
        self.wake.raise(SIG_CLOSE);
    }

    /// Whether the socket buffer is full and the task waits to write.
    pub(crate) fn is_blocked(&self) -> bool {
        self.write_state.get() & BLOCKED != 0
    }

    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.set_write_bit(BLOCKED, blocked);
    }

    /// Queues encoded frames. Returns the queued byte count after.
    pub(crate) fn queue(&self, bytes: Bytes) -> usize {
        if self.is_websocket() {
            // One binary message per queued chunk of frames: a header in
            // front, the frames themselves not copied.
            self.queue_raw(ws_header(bytes.len()));
        }
        self.queue_raw(bytes)
    }

    /// Queues bytes as they are: the WebSocket handshake's answer and
    /// WebSocket control frames.
    pub(crate) fn queue_raw(&self, bytes: Bytes) -> usize {
        let n = self.out_bytes.get() + bytes.len();
        self.out_bytes.set(n);
        self.out.borrow_mut().push_back(bytes);
        self.wake.raise(SIG_FLUSH);
        n
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out_bytes.get()
    }

    /// The outbound queue, for the pump to write from.
    pub(crate) fn out(&self) -> std::cell::RefMut<'_, VecDeque<Bytes>> {
        self.out.borrow_mut()
    }

    /// `n` bytes were written; `partial`: the front frame is now partly
    /// on the wire.
    pub(crate) fn sent(&self, n: usize, partial: bool) {
        if n > 0 {
            // Nothing sent leaves the front as it was.
            self.set_write_bit(FRONT_STARTED, partial);
        }
        self.out_bytes.set(self.out_bytes.get().saturating_sub(n));
    }

    /// Drops the backlog, except the rest of a frame already partly on
    /// the wire: the stream must stay whole for the kick that follows.
    pub(crate) fn drop_queue(&self) {
        let mut q = self.out.borrow_mut();
        let keep = if self.write_state.get() & FRONT_STARTED != 0 {
            q.pop_front()
        } else {
            None
        };
        q.clear();
        self.out_bytes.set(keep.as_ref().map_or(0, |b| b.len()));
        q.extend(keep);
    }
}

#[cfg(test)]
mod tests {
    /// Every logged-in connection holds one `Conn` in an `Rc` (16 bytes
    /// more): at 144 bytes that is mimalloc's 160-byte class, at 152 its
    /// 192-byte one (docs/benchmarks.md §8, idle connections). A field
    /// added here costs every idle connection 32 bytes unless another
    /// gives way.
    #[test]
    fn a_conn_stays_within_its_memory_budget() {
        assert!(std::mem::size_of::<super::Conn>() <= 144);
        assert_eq!(
            std::mem::size_of::<Option<crate::wheel::TimerKey>>(),
            8,
            "the generation's niche"
        );
    }
}
