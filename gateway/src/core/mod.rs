//! A core: one thread, one monoio runtime, one slab of connections, one
//! timer wheel, one read pool, and the batches to the backend.
//!
//! Nothing on a core is shared with another core except through channels:
//! the connection state lives in `Rc`/`Cell`, touched by this thread only.
//! Its main future ([`run`]) runs the accept loop ([`crate::listener`]),
//! the tick loop (advances the wheel), the mailbox loop (deliveries and
//! kicks from the backend and the other cores) and the flusher (hands the
//! frames decoded during one round of the runtime to the backend as one
//! batch); each connection is a task of its own ([`crate::pump`]).

mod outbound;
mod run;

pub(crate) use run::run;

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Instant,
};

use bytes::BytesMut;
use crossbeam_channel::{Sender, TrySendError};
use imgate_codec::KickReason;
use slab::Slab;

use crate::{
    backend::{CoreMsg, Inbound},
    config::Config,
    conn::{Closing, Conn, Phase},
    conn_id::ConnId,
    dispatch::Action,
    mailbox::MailboxTx,
    metrics::{CoreMetrics, Metrics},
    registry::Registry,
    timers::{self, Timer, TimerKind},
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
    /// Both listeners' TLS configuration, when `tls_cert` is set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

const BLOCK: usize = 64 * 1024;
const MIN_READ: usize = 4 * 1024;

/// One core's state.
pub(crate) struct Core {
    pub(crate) id: u16,
    pub(crate) shared: Arc<Shared>,
    conns: RefCell<Slab<Rc<Conn>>>,
    next_generation: Cell<u32>,
    wheel: RefCell<Wheel<Timer>>,
    start: Instant,
    pending: RefCell<Vec<Inbound>>,
    flusher: Wake,
    backlogged: Cell<bool>,
    blocks: RefCell<Vec<BytesMut>>,
    stop: Wake,
    tick_ms: u64,
    heartbeat_timeout_ms: u64,
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

    /// The wheel tick of a deadline `after_ms` past `at_ms`
    /// ([`timers::deadline`]).
    pub(crate) fn deadline(&self, at_ms: u64, after_ms: u64) -> u64 {
        timers::deadline(at_ms, after_ms, self.tick_ms)
    }

    /// Whether the queue to the backend is full (requests are refused with
    /// `overloaded` until it drains).
    pub(crate) fn backlogged_flag(&self) -> &Cell<bool> {
        &self.backlogged
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

    /// Does what the dispatch asked for a frame of `conn`.
    pub(crate) fn apply(&self, conn: &Conn, action: Action) {
        match action {
            Action::Backend(ev) => self.to_backend(ev),
            Action::LoggedIn {
                user,
                device,
                resume,
            } => {
                // The older connection of this device goes, through the
                // backend, which may have others on other nodes.
                let info = crate::registry::SessionInfo {
                    since: u32::try_from(crate::unix_time().as_secs()).unwrap_or(u32::MAX),
                    transport: u8::try_from(conn.transport_index()).unwrap_or(0),
                };
                if let Some(old) = self.shared.registry.login_with(user, device, conn.id, info) {
                    self.to_backend(Inbound::Replaced { old, user, device });
                }
                self.arm_liveness(
                    conn,
                    self.deadline(conn.last_seen(), self.heartbeat_timeout_ms),
                );
                self.to_backend(Inbound::Login {
                    conn: conn.id,
                    user,
                    device,
                    resume,
                });
            }
            Action::CancelTimer(key) => {
                self.wheel.borrow_mut().cancel(key);
            }
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
            if let Some(k) = conn.pushes.take_timer() {
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
        if let Some(t) = self.metrics().transports.get(conn.transport_index()) {
            t.connections.fetch_sub(1, Relaxed);
        }
        if self.stop.is_set(1) && self.conns.borrow().is_empty() {
            self.stop.raise(2);
        }
    }

    /// Takes a connection the listener admitted: a slot in the slab and its
    /// login deadline.
    pub(crate) fn insert(&self) -> Rc<Conn> {
        self.metrics().connections.fetch_add(1, Relaxed);
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
        conn
    }

    /// Whether the core is shutting down (it takes no new connection).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_set(1)
    }

    /// Waits for shutdown to begin.
    pub(crate) async fn stopped(&self) {
        self.stop.wait(1).await;
    }
}
