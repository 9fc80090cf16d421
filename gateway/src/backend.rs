//! The bridge between the cores and a routing backend.
//!
//! ```text
//!  core 0 ──Vec<Inbound>──┐                          ┌──Vec<Outbound>──► core 0 (mailbox, wakes it)
//!  core 1 ──Vec<Inbound>──┼─► bounded channel ─► backend thread ─► Router ─┼──Vec<Outbound>──► core 1
//!  core N ──Vec<Inbound>──┘     (try_send: a core never blocks)          └── ...
//! ```
//!
//! Cores decode frames and send what the backend must see in batches over a
//! bounded `crossbeam-channel`; when it is full the core answers requests
//! with `overloaded` instead of waiting. The backend runs on its own thread,
//! answers through a [`Router`], which groups deliveries per core and sends
//! each core one batch per flush, waking it through its mailbox. Deliveries
//! can name a connection or a user; the router resolves users through the
//! shared [`Registry`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use imgate_codec::{Frame, KickReason};

use crate::{conn_id::ConnId, mailbox::MailboxTx, registry::Registry};

/// What a core tells the backend.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A connection logged in.
    Login {
        /// The connection.
        conn: ConnId,
        /// Its user.
        user: u64,
        /// Its device.
        device: u32,
        /// The inbox sequence id the device says it holds.
        resume: u64,
    },
    /// A request from a logged-in connection (msg:R, ack:R, read:R, sync:R,
    /// unread:R, group:R, receipts:R). Pings and logouts stay in the core.
    Frame {
        /// The connection.
        conn: ConnId,
        /// Its user: the sender of everything it sends.
        user: u64,
        /// Its device.
        device: u32,
        /// The frame; payloads are slices of the read buffer.
        frame: Frame,
    },
    /// A login replaced an older connection of the same device on this
    /// node: it must go (`replaced`). Sent before the new connection's
    /// `Login`. A backend of several nodes also has the device's
    /// connections on the other nodes kicked.
    Replaced {
        /// The older connection.
        old: ConnId,
        /// Its user.
        user: u64,
        /// Its device.
        device: u32,
    },
    /// An operator kicks a user's connections (`admin`), or one device's.
    /// A backend of several nodes kicks them on every node.
    Kick {
        /// The user.
        user: u64,
        /// Only this device, if set.
        device: Option<u32>,
        /// The reason the connections are told (`admin`, `revoked`).
        reason: KickReason,
    },
    /// A logged-in connection closed (for any reason).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Its user.
        user: u64,
        /// Its device.
        device: u32,
    },
}

/// A pushed frame the core should re-send until the connection acks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// The stream (0 = inbox).
    pub group: u64,
    /// The sequence id an ack:R must reach.
    pub seq: u64,
}

/// What the backend tells a core.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Queue encoded frame bytes on a connection.
    Send {
        /// The connection; ignored if it closed.
        conn: ConnId,
        /// One or more encoded frames.
        bytes: Bytes,
        /// Re-send until acked, if set.
        track: Option<Track>,
    },
    /// Complete a login: the core sends login:ok with its own settings
    /// and this inbox head, and starts delivering to the connection.
    LoginOk {
        /// The connection.
        conn: ConnId,
        /// Highest sequence id in the user's inbox.
        inbox_head: u64,
    },
    /// Kick a connection.
    Kick {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: KickReason,
    },
}

/// A message to a core's mailbox.
#[derive(Debug)]
pub enum CoreMsg {
    /// Deliveries and kicks.
    Out(Vec<Outbound>),
    /// An operator's kick, for the backend (see [`Inbound::Kick`]).
    Kick {
        /// The user.
        user: u64,
        /// Only this device, if set.
        device: Option<u32>,
        /// The reason the connections are told.
        reason: KickReason,
    },
    /// A request the server API makes on a user's behalf, for the
    /// backend (its answer comes back through `crate::replies`).
    Request(Box<Inbound>),
    /// Start the graceful shutdown.
    Shutdown,
}

/// A routing backend: gets every login, request and close, answers through
/// the router. Runs on its own thread; it may block on its own I/O (a disk
/// write), never on a core.
pub trait Backend: Send + 'static {
    /// Called once before the backend's thread starts, with what a backend
    /// needs to run threads of its own (a consumer of another node's
    /// events, say): routers to the cores, the registry, the metrics. An
    /// error stops the start.
    fn start(&mut self, _start: &Start) -> std::io::Result<()> {
        Ok(())
    }

    /// Handles a batch of events (in arrival order per connection). The
    /// batch may be drained; what is left is dropped.
    fn handle(&mut self, batch: &mut Vec<Inbound>, out: &mut Router);

    /// Called about every `tick` whether or not events arrive.
    fn tick(&mut self, _now: Instant, _out: &mut Router) {}

    /// Called once after every core has stopped: finish durable writes.
    fn shutdown(&mut self, _out: &mut Router) {}
}

/// What [`Backend::start`] hands a backend.
#[derive(Debug, Clone)]
pub struct Start {
    /// Each core's mailbox.
    pub cores: Vec<MailboxTx<CoreMsg>>,
    /// Who is online on this node.
    pub registry: Arc<Registry>,
    /// The gateway's counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Start {
    /// A router of its own, for a thread of the backend's.
    pub fn router(&self) -> Router {
        Router::new(self.cores.clone(), self.registry.clone())
    }
}

/// Routes the backend's answers to the owning cores, in batches.
#[derive(Debug)]
pub struct Router {
    cores: Vec<MailboxTx<CoreMsg>>,
    registry: Arc<Registry>,
    pending: Vec<Vec<Outbound>>,
    scratch: Vec<ConnId>,
}

impl Router {
    /// A router over the cores' mailboxes.
    pub fn new(cores: Vec<MailboxTx<CoreMsg>>, registry: Arc<Registry>) -> Router {
        let pending = cores.iter().map(|_| Vec::new()).collect();
        Router {
            cores,
            registry,
            pending,
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, core: u16, o: Outbound) {
        if core == crate::replies::API_CORE {
            // The answer to a server API request (see `crate::replies`).
            if let Outbound::Send { conn, bytes, .. } = o {
                self.registry.replies.answer(conn, bytes);
            }
            return;
        }
        if let Some(p) = self.pending.get_mut(usize::from(core)) {
            p.push(o);
        }
    }

    /// Queues encoded frames for one connection.
    pub fn to_conn(&mut self, conn: ConnId, bytes: Bytes, track: Option<Track>) {
        self.push(conn.core, Outbound::Send { conn, bytes, track });
    }

    /// Queues encoded frames for every online connection of `user` except
    /// `except`; returns how many connections that was.
    pub fn to_user(
        &mut self,
        user: u64,
        except: Option<ConnId>,
        bytes: &Bytes,
        track: Option<Track>,
    ) -> usize {
        let mut conns = std::mem::take(&mut self.scratch);
        conns.clear();
        self.registry.conns_of(user, &mut conns);
        let mut n = 0;
        for &c in conns.iter().filter(|&&c| Some(c) != except) {
            self.to_conn(c, bytes.clone(), track);
            n += 1;
        }
        self.scratch = conns;
        n
    }

    /// Completes a login (send login:ok) with the user's inbox head.
    pub fn login_ok(&mut self, conn: ConnId, inbox_head: u64) {
        self.push(conn.core, Outbound::LoginOk { conn, inbox_head });
    }

    /// Kicks a connection.
    pub fn kick(&mut self, conn: ConnId, reason: KickReason) {
        self.push(conn.core, Outbound::Kick { conn, reason });
    }

    /// Kicks every connection of `user` on this node (only `device`'s, if
    /// set); returns how many.
    pub fn kick_user(&mut self, user: u64, device: Option<u32>, reason: KickReason) -> usize {
        let sessions = self.registry.kick_targets(user, device, reason);
        for &(_, conn) in &sessions {
            self.kick(conn, reason);
        }
        sessions.len()
    }

    /// Acts on the events every backend treats alike on one node: a
    /// replaced connection and an operator's kick. Returns false for the
    /// other events, which are the backend's own.
    pub fn control(&mut self, ev: &Inbound) -> bool {
        match *ev {
            Inbound::Replaced { old, .. } => self.kick(old, KickReason::Replaced),
            Inbound::Kick {
                user,
                device,
                reason,
            } => {
                self.kick_user(user, device, reason);
            }
            Inbound::Login { .. } | Inbound::Frame { .. } | Inbound::Closed { .. } => return false,
        }
        true
    }

    /// The session registry (who is online where).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sends every core its batch and wakes it.
    pub fn flush(&mut self) {
        for (core, p) in self.cores.iter().zip(self.pending.iter_mut()) {
            if !p.is_empty() {
                core.send(CoreMsg::Out(std::mem::take(p)));
            }
        }
    }
}

/// Events gathered into one [`Backend::handle`] call at most (a core batch
/// is taken whole). A bound on events rather than on core batches: on a
/// slow disk every commit must take all that waited, and cores flush small
/// batches often (docs/benchmarks.md, "A slow disk").
const MAX_GATHER_EVENTS: usize = 65_536;

/// The backend thread's loop: until every core has dropped its sender.
pub(crate) fn run(
    mut backend: Box<dyn Backend>,
    rx: Receiver<Vec<Inbound>>,
    mut router: Router,
    tick: Duration,
) {
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(tick) {
            Ok(mut batch) => {
                // Whatever else is already queued joins this call, in
                // arrival order: one `handle` is one group commit, so a busy
                // backend pays one commit (one fsync) for everything that
                // waited, instead of one per core batch.
                while batch.len() < MAX_GATHER_EVENTS {
                    match rx.try_recv() {
                        Ok(mut more) => batch.append(&mut more),
                        Err(_) => break,
                    }
                }
                backend.handle(&mut batch, &mut router);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= tick {
            last_tick = now;
            backend.tick(now, &mut router);
        }
        router.flush();
    }
    backend.shutdown(&mut router);
    router.flush();
}
