//! A core: one thread, one monoio runtime, one listener, one slab of
//! connections, one timer wheel.
//!
//! Nothing on a core is shared with another core except through channels:
//! the connection state lives in `Rc`/`Cell`, touched by this thread only.
//! Four kinds of task run on it: the accept loop, one task per connection,
//! the tick task (advances the wheel) and the mailbox task (deliveries and
//! kicks from the backend and the other cores). A fifth, the flusher, hands
//! the frames decoded during one round of the runtime to the backend as one
//! batch.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use crossbeam_channel::{Sender, TrySendError};
use imgate_codec::{
    Body, ErrorCode, KickReason,
    frame::{ErrorFrame, LoginOk},
};
use monoio::net::{TcpListener, TcpStream};
use slab::Slab;

use crate::{
    backend::{CoreMsg, Inbound, Outbound},
    config::Config,
    conn::{Closing, Conn, Phase, serve},
    conn_id::ConnId,
    mailbox::{MailboxRx, MailboxTx},
    metrics::{CoreMetrics, Metrics},
    registry::Registry,
    token::Verifier,
    wake::Wake,
    wheel::Wheel,
};

/// What every core and the backend share.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) registry: Arc<Registry>,
    pub(crate) cores: Vec<MailboxTx<CoreMsg>>,
    pub(crate) backend: Sender<Vec<Inbound>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) verifier: Arc<dyn Verifier>,
    pub(crate) connections: AtomicUsize,
    pub(crate) shutting_down: AtomicBool,
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Login deadline before login, heartbeat deadline after.
    Liveness,
    /// Pushed frames not acknowledged in time.
    Push,
}

/// A timer in the core's wheel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    slot: u32,
    generation: u32,
    kind: TimerKind,
}

const BLOCK: usize = 64 * 1024;
const MIN_READ: usize = 4 * 1024;

/// One core's state.
pub(crate) struct Core {
    pub(crate) id: u16,
    pub(crate) shared: Arc<Shared>,
    conns: RefCell<Slab<Rc<Conn>>>,
    next_generation: Cell<u32>,
    pub(crate) wheel: RefCell<Wheel<Timer>>,
    start: Instant,
    pending: RefCell<Vec<Inbound>>,
    flusher: Wake,
    backlogged: Cell<bool>,
    blocks: RefCell<Vec<BytesMut>>,
    stop: Wake,
    tick_ms: u64,
    pub(crate) heartbeat_timeout_ms: u64,
    login_timeout_ms: u64,
    push_timeout_ms: u64,
}

impl Core {
    pub(crate) fn new(id: u16, shared: Arc<Shared>) -> Core {
        let cfg = &shared.cfg;
        let tick_ms = cfg.tick_ms.max(1);
        let heartbeat_timeout_ms = cfg.heartbeat_ms * u64::from(cfg.heartbeat_timeout_factor);
        let (login_timeout_ms, push_timeout_ms) = (cfg.login_timeout_ms, cfg.push_timeout_ms);
        Core {
            id,
            conns: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            wheel: RefCell::new(Wheel::new(1024)),
            start: Instant::now(),
            pending: RefCell::new(Vec::new()),
            flusher: Wake::default(),
            backlogged: Cell::new(false),
            blocks: RefCell::new(Vec::new()),
            stop: Wake::default(),
            tick_ms,
            heartbeat_timeout_ms,
            login_timeout_ms,
            push_timeout_ms,
            shared,
        }
    }

    pub(crate) fn metrics(&self) -> &CoreMetrics {
        &self.shared.metrics.cores[usize::from(self.id)]
    }

    /// The core's clock: ms since the core started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The wheel tick of a deadline `after_ms` past `at_ms`: the first tick
    /// that starts after it, so a timer never fires early. Tick `t` is
    /// reached when the clock reads `t × tick_ms`; the clock reads whole ms
    /// rounded down, so `at_ms` may be up to 1 ms before the event it
    /// stamps, which the added ms makes up for.
    pub(crate) fn deadline(&self, at_ms: u64, after_ms: u64) -> u64 {
        at_ms
            .saturating_add(after_ms)
            .saturating_add(1)
            .div_ceil(self.tick_ms)
    }

    pub(crate) fn backlogged(&self) -> bool {
        self.backlogged.get()
    }

    fn conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conns
            .borrow()
            .get(id.slot as usize)
            .filter(|c| c.id.generation == id.generation)
            .cloned()
    }

    /// A block of the read pool with room for at least one read.
    pub(crate) fn take_read_block(&self) -> BytesMut {
        self.blocks
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(BLOCK))
    }

    /// Returns what is left of a block, if it can still take a read.
    pub(crate) fn give_read_block(&self, block: BytesMut) {
        let mut blocks = self.blocks.borrow_mut();
        // Reads are synchronous, so one block is in use at a time; a few
        // spare ones cover a block retired mid-frame.
        if block.capacity() - block.len() >= MIN_READ && blocks.len() < 4 {
            blocks.push(block);
        }
    }

    /// Queues an event for the backend; the flusher sends the batch.
    pub(crate) fn to_backend(&self, ev: Inbound) {
        let full = {
            let mut p = self.pending.borrow_mut();
            p.push(ev);
            p.len() >= self.shared.cfg.backend_batch
        };
        if full {
            self.flush_backend();
        }
    }

    /// Wakes the flusher: it runs after the tasks already woken this round,
    /// so everything they decode travels in one batch.
    pub(crate) fn flush_backend_soon(&self) {
        if !self.pending.borrow().is_empty() {
            self.flusher.raise(1);
        }
    }

    fn flush_backend(&self) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            self.backlogged.set(false);
            return;
        }
        match self.shared.backend.try_send(batch) {
            Ok(()) => {
                self.backlogged.set(false);
                self.shared
                    .metrics
                    .backend_queue
                    .store(self.shared.backend.len() as i64, Relaxed);
            }
            Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => {
                // Keep it (logins and closes must arrive) and refuse new
                // requests until the backend catches up.
                self.backlogged.set(true);
                let mut p = self.pending.borrow_mut();
                let mut batch = batch;
                batch.append(&mut p);
                *p = batch;
            }
        }
    }

    /// Queues bytes on a connection, kicking it if its queue is over limit.
    /// The connection's task writes it and judges the backlog after
    /// writing: a batch of answers may arrive at once, and only what the
    /// socket does not take counts against `max_outbound_bytes`.
    fn deliver(&self, conn: &Conn, bytes: bytes::Bytes) {
        if conn.is_closing() {
            return;
        }
        self.metrics().frames_out.fetch_add(1, Relaxed);
        // While the socket is full, whatever arrives is backlog.
        if conn.queue(bytes) > self.shared.cfg.max_outbound_bytes && conn.is_blocked() {
            conn.close(Closing::Kick(KickReason::SlowConsumer));
        }
    }

    /// Kicks a connection on whichever core owns it.
    pub(crate) fn kick_anywhere(&self, id: ConnId, reason: KickReason) {
        if id.core == self.id {
            if let Some(c) = self.conn(id) {
                c.close(Closing::Kick(reason));
            }
        } else if let Some(tx) = self.shared.cores.get(usize::from(id.core)) {
            tx.send(CoreMsg::Out(vec![Outbound::Kick { conn: id, reason }]));
        }
    }

    /// Sets the connection's liveness timer to fire at `tick`.
    pub(crate) fn arm_liveness(&self, conn: &Conn, tick: u64) {
        let mut w = self.wheel.borrow_mut();
        match conn.timer.get() {
            Some(key) if w.reschedule(key, tick) => {}
            _ => {
                let key = w.insert(
                    tick,
                    Timer {
                        slot: conn.id.slot,
                        generation: conn.id.generation,
                        kind: TimerKind::Liveness,
                    },
                );
                conn.timer.set(Some(key));
            }
        }
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, conn: &Rc<Conn>) {
        {
            let mut w = self.wheel.borrow_mut();
            if let Some(k) = conn.timer.take() {
                w.cancel(k);
            }
            if let Some(k) = conn.take_push_timer() {
                w.cancel(k);
            }
        }
        {
            let mut conns = self.conns.borrow_mut();
            if conns
                .get(conn.id.slot as usize)
                .is_some_and(|c| Rc::ptr_eq(c, conn))
            {
                conns.remove(conn.id.slot as usize);
            }
        }
        if conn.phase() != Phase::Login {
            let (user, device) = conn.user();
            self.shared.registry.logout(user, device, conn.id);
            self.to_backend(Inbound::Closed {
                conn: conn.id,
                user,
                device,
            });
            self.flush_backend_soon();
        }
        self.shared.connections.fetch_sub(1, Relaxed);
        self.metrics().connections.fetch_sub(1, Relaxed);
        if self.stop.is_set(1) && self.conns.borrow().is_empty() {
            self.stop.raise(2);
        }
    }

    /// A timer fired.
    fn fire(&self, w: &mut Wheel<Timer>, t: Timer) {
        let Some(conn) = self.conn(ConnId::new(self.id, t.slot, t.generation)) else {
            return;
        };
        let now = w.now();
        match t.kind {
            TimerKind::Liveness => {
                conn.timer.set(None);
                match conn.phase() {
                    Phase::Login => {
                        self.metrics().login_failures.fetch_add(1, Relaxed);
                        conn.close(Closing::Kick(KickReason::LoginTimeout));
                    }
                    Phase::Pending | Phase::Active => {
                        let due = self.deadline(conn.last_seen(), self.heartbeat_timeout_ms);
                        if due <= now {
                            conn.close(Closing::Kick(KickReason::HeartbeatTimeout));
                        } else {
                            // It spoke since: look again when it could
                            // next be late.
                            let key = w.insert(due, t);
                            conn.timer.set(Some(key));
                        }
                    }
                }
            }
            TimerKind::Push => match conn.repush(self.shared.cfg.push_retries) {
                None => conn.close(Closing::Kick(KickReason::PushUnacked)),
                Some(frames) if frames.is_empty() => {}
                Some(frames) => {
                    self.metrics()
                        .push_retransmits
                        .fetch_add(frames.len() as u64, Relaxed);
                    for f in frames {
                        self.deliver(&conn, f);
                    }
                    let key = w.insert(self.deadline(self.now_ms(), self.push_timeout_ms), t);
                    conn.set_push_timer(Some(key));
                }
            },
        }
    }

    /// Handles a batch from the mailbox.
    fn dispatch(&self, msgs: &mut Vec<CoreMsg>) {
        for msg in msgs.drain(..) {
            match msg {
                CoreMsg::Out(outs) => {
                    for o in outs {
                        match o {
                            Outbound::Send { conn, bytes, track } => {
                                let Some(c) = self.conn(conn) else { continue };
                                if c.phase() != Phase::Active {
                                    continue;
                                }
                                if let Some(track) = track
                                    && c.track_push(track, bytes.clone())
                                {
                                    let key = self.wheel.borrow_mut().insert(
                                        self.deadline(self.now_ms(), self.push_timeout_ms),
                                        Timer {
                                            slot: conn.slot,
                                            generation: conn.generation,
                                            kind: TimerKind::Push,
                                        },
                                    );
                                    c.set_push_timer(Some(key));
                                }
                                self.deliver(&c, bytes);
                            }
                            Outbound::LoginOk { conn, inbox_head } => {
                                let Some(c) = self.conn(conn) else { continue };
                                let cfg = &self.shared.cfg;
                                let (user, device) = c.user();
                                c.logged_in(&LoginOk {
                                    user,
                                    device,
                                    heartbeat_ms: u32::try_from(cfg.heartbeat_ms)
                                        .unwrap_or(u32::MAX),
                                    server_time: crate::unix_time().as_millis() as u64,
                                    inbox_head,
                                    max_frame: u32::try_from(cfg.max_frame).unwrap_or(u32::MAX),
                                    session: conn.to_u64(),
                                    frame_rate: cfg.max_frames_per_sec,
                                    frame_burst: cfg.frame_burst,
                                    rate_strikes: cfg.rate_limit_strikes,
                                });
                            }
                            Outbound::Kick { conn, reason } => {
                                if let Some(c) = self.conn(conn) {
                                    c.close(Closing::Kick(reason));
                                }
                            }
                        }
                    }
                }
                CoreMsg::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&self) {
        self.stop.raise(1);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in conns {
            c.close(Closing::Kick(KickReason::ServerShutdown));
        }
        if self.conns.borrow().is_empty() {
            self.stop.raise(2);
        }
    }

    /// Takes a new connection.
    fn accept(self: &Rc<Self>, stream: TcpStream) {
        let m = self.metrics();
        m.accepted.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        let total = self.shared.connections.fetch_add(1, Relaxed) + 1;
        if total > self.shared.cfg.max_connections || self.stop.is_set(1) {
            self.shared.connections.fetch_sub(1, Relaxed);
            m.refused.fetch_add(1, Relaxed);
            let code = if self.stop.is_set(1) {
                ErrorCode::ShuttingDown
            } else {
                ErrorCode::TooManyConnections
            };
            monoio::spawn(refuse(stream, code));
            return;
        }
        m.connections.fetch_add(1, Relaxed);
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let conn = {
            let mut conns = self.conns.borrow_mut();
            let entry = conns.vacant_entry();
            let id = ConnId::new(self.id, entry.key() as u32, generation);
            let conn = Rc::new(Conn::new(id, self.shared.cfg.frame_burst, self.now_ms()));
            entry.insert(conn.clone());
            conn
        };
        self.arm_liveness(&conn, self.deadline(self.now_ms(), self.login_timeout_ms));
        monoio::spawn(serve(self.clone(), conn, stream));
    }
}

/// Refuses a connection with an error frame.
async fn refuse(mut stream: TcpStream, code: ErrorCode) {
    use monoio::io::AsyncWriteRentExt;
    let frame = ErrorFrame::new(code, None, 0, code.as_str()).to_bytes();
    let _ = monoio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(frame)).await;
}

/// The core's main future: runs until shutdown completes.
///
/// The tick, mailbox and flusher loops run inside this future rather than
/// as spawned tasks, so they end with it: a spawned loop would hold the core
/// (and through it the backend's channel) alive forever.
pub(crate) async fn run(core: Rc<Core>, listener: TcpListener, mailbox: MailboxRx<CoreMsg>) {
    let ticks = async {
        // The wheel follows the clock, not a count of sleeps: a late wake-up
        // catches up on the ticks it missed, and no drift accumulates.
        let tick_ms = core.tick_ms;
        loop {
            let next = (core.now_ms() / tick_ms + 1) * tick_ms;
            monoio::time::sleep_until(
                monoio::time::Instant::from_std(core.start) + Duration::from_millis(next),
            )
            .await;
            let to = core.now_ms() / tick_ms;
            let mut w = core.wheel.borrow_mut();
            if to > w.now() {
                w.advance(to, |w, t| core.fire(w, t));
            }
            drop(w);
            // A backlogged batch is retried every tick too.
            core.flush_backend();
        }
    };
    let mail = async {
        let mut msgs = Vec::new();
        while mailbox.recv_into(&mut msgs).await {
            core.dispatch(&mut msgs);
        }
        std::future::pending::<()>().await;
    };
    let flusher = async {
        loop {
            core.flusher.wait(1).await;
            core.flusher.clear(1);
            core.flush_backend();
        }
    };
    let main = async {
        loop {
            let accepted = monoio::select! {
                r = listener.accept() => Some(r),
                _ = core.stop.wait(1) => None,
            };
            match accepted {
                Some(Ok((stream, _))) => core.accept(stream),
                Some(Err(e)) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(core = core.id, error = %e, "accept failed");
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                None => break,
            }
        }
        drop(listener);
        // Wait for every connection to say goodbye.
        core.stop.wait(2).await;
        core.flush_backend();
    };
    monoio::select! {
        _ = ticks => {},
        _ = mail => {},
        _ = flusher => {},
        _ = main => {},
    }
}
