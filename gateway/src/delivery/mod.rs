//! The default backend: reliable delivery on an embedded store.
//!
//! Not lost, not duplicated, in order, for one-to-one chat, groups, offline
//! users and several devices per user:
//!
//! - every message gets the next contiguous sequence id of each stream it
//!   lands in (the receiver's inbox and the sender's own inbox, or a group's
//!   log) and is written to the store before anyone hears of it;
//! - writes are group-committed: everything one call of [`Backend::handle`]
//!   gathered is one atomic batch, one commit (one fsync under `fsync`
//!   durability); only then go out the msg:A, msg:N, ack:A and pages of the
//!   batch, so nothing is ever shown that a crash could take back;
//! - (sender, msg id) is remembered, so a retransmitted msg:R gets the first
//!   answer again and no second copy;
//! - a cursor per (stream, user, device) records what each device acked;
//!   pages are read from the store, and asking for the next page moves the
//!   cursor;
//! - a group message is stored once, in the group's log; members have
//!   cursors, not copies.
//!
//! ```text
//!   handle(batch) ─► apply each event ─► WriteBatch + deferred answers
//!                    (seq ids, dedup,       │
//!                     cursors, groups)      ▼
//!                                      store.write (one commit, one fsync)
//!                                           │
//!                                           ▼
//!                    deferred answers go out: msg:A, msg:N, ack:A, pages
//! ```
//!
//! The logic only speaks to [`Store`], an ordered
//! key-value interface, so the embedded engine can be replaced.

mod apply;
mod cache;
pub mod check;
mod emit;
pub mod keys;
mod purge;
pub mod restore;
pub mod roles;
pub mod rules;
mod state;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Instant};

use imgate_codec::{Frame, frame::GroupOp};

use crate::{
    backend::{Backend, Inbound, Router, Start},
    clock::{Clock, SystemClock},
    config::Config,
    events::outbox::Outbox,
    metrics::BackendHistograms,
    revocations::Revocation,
    store::{
        Store, StoreError, Table, WriteBatch,
        health::{LogLimiter, Step, StoreHealth, Watch},
    },
};

pub use purge::Retention;
pub use state::Limits;
use state::State;

/// The reliable-delivery backend.
pub struct Delivery {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    state: State,
    batch: WriteBatch,
    deferred: Vec<emit::Deferred>,
    disk: Disk,
    histograms: BackendHistograms,
    events: crate::config::EventsConfig,
    presence: PresenceChanges,
    // Stopped when the backend is dropped.
    _purger: Option<purge::Purger>,
    _sender: Option<crate::events::Sender>,
}

/// A user's first connection here, or its last gone.
#[derive(Debug, Clone, Copy)]
struct Presence {
    user: u64,
    device: u32,
    online: bool,
    time: u64,
}

/// Presence changes on their way to the store: an event must not be lost
/// because the batch it rode in failed, or because the store refused
/// everything when it happened.
#[derive(Debug, Default)]
struct PresenceChanges {
    /// Written into the current batch.
    in_batch: Vec<Presence>,
    /// Not written yet, oldest first.
    retry: Vec<Presence>,
}

/// The store's disk as the backend watches it (`crate::store::health`).
#[derive(Debug)]
struct Disk {
    watch: Watch,
    health: Arc<StoreHealth>,
    /// Failed writes and recoveries, one line per second at most.
    log: LogLimiter,
    check_ms: u64,
    next_check: u64,
    /// The text of a `storage_full` refusal: the wait, then why.
    refusal: String,
}

impl Disk {
    fn new(cfg: &Config) -> Disk {
        Disk {
            watch: Watch::new(cfg.disk_free_min_mb.saturating_mul(1 << 20)),
            health: Arc::default(),
            log: LogLimiter::new(1000),
            check_ms: cfg.disk_check_ms,
            next_check: 0,
            refusal: format!(
                "retry_ms={} the server's storage is full or failing",
                cfg.storage_retry_ms
            ),
        }
    }

    /// Whether `ev` is refused in the current state: everything while the
    /// store fails; what grows it (a message, a new group or member) while
    /// space is short.
    fn refuses(&self, ev: &Inbound) -> bool {
        if self.watch.refuses_all() {
            return true;
        }
        self.watch.refuses_growth()
            && match ev {
                Inbound::Frame { frame, .. } => match frame {
                    Frame::MsgR(_) => true,
                    Frame::GroupR(g) => matches!(g.op(), Some(GroupOp::Create | GroupOp::Add)),
                    _ => false,
                },
                _ => false,
            }
    }

    fn log(step: Step) {
        if let Step::Changed(line) = step {
            tracing::warn!("{line}");
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("disk", &self.disk.watch.state())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A backend over `store` with the limits of `cfg`, on the system clock.
    pub fn new(store: Box<dyn Store>, cfg: &Config) -> Result<Delivery, StoreError> {
        Delivery::with_clock(store, cfg, Arc::new(SystemClock))
    }

    /// A backend whose rules (de-duplication window, `server_time`,
    /// retention) read `clock`.
    pub fn with_clock(
        store: Box<dyn Store>,
        cfg: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Delivery, StoreError> {
        let mut state = State::load(&*store, Limits::from_config(cfg))?;
        if cfg.events.enabled() {
            let now = clock.unix_ms();
            state.events = Some(Outbox::load(&*store, &cfg.events, now)?);
            went_offline_in_a_restart(&mut state, &*store, now)?;
        }
        let store: Arc<dyn Store> = Arc::from(store);
        let interval = std::time::Duration::from_millis(cfg.purge_interval_ms);
        let purger = purge::Purger::start(
            store.clone(),
            Retention::from_config(cfg),
            interval,
            clock.clone(),
        )
        .map_err(|e| StoreError::Engine(format!("cannot start the purge thread: {e}")))?;
        Ok(Delivery {
            store,
            clock,
            state,
            batch: WriteBatch::default(),
            deferred: Vec::new(),
            disk: Disk::new(cfg),
            histograms: BackendHistograms::default(),
            events: cfg.events.clone(),
            presence: PresenceChanges::default(),
            _purger: purger,
            _sender: None,
        })
    }

    /// Counts a user's connections here; its first and last make
    /// presence events, and a record of who is online (see
    /// [`went_offline_in_a_restart`]).
    fn presence(&mut self, ev: &Inbound, now: u64) {
        let (user, device, online) = match *ev {
            Inbound::Login { user, device, .. } => {
                let n = self.state.online.entry(user).or_insert(0);
                *n += 1;
                if *n > 1 {
                    return;
                }
                (user, device, true)
            }
            Inbound::Closed { user, device, .. } => match self.state.online.get_mut(&user) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return;
                }
                Some(_) => {
                    self.state.online.remove(&user);
                    (user, device, false)
                }
                None => return,
            },
            _ => return,
        };
        if self.state.events.is_none() {
            return;
        }
        self.presence.retry.push(Presence {
            user,
            device,
            online,
            time: now,
        });
        self.write_presence();
    }

    /// Writes the presence changes not yet in a batch into this one,
    /// unless the store refuses everything (they wait for its recovery).
    fn write_presence(&mut self) {
        if self.disk.watch.refuses_all() {
            return;
        }
        for p in std::mem::take(&mut self.presence.retry) {
            if self.state.wants_event("offline") {
                if p.online {
                    self.batch.put(
                        Table::Meta,
                        keys::online_key(p.user),
                        p.device.to_be_bytes(),
                    );
                } else {
                    self.batch.delete(Table::Meta, keys::online_key(p.user));
                }
            }
            let (user, device) = (p.user, p.device);
            self.state.event(&mut self.batch, p.time, || {
                if p.online {
                    crate::events::Event::Online { user, device }
                } else {
                    crate::events::Event::Offline {
                        user,
                        device,
                        reason: "closed",
                    }
                }
            });
            self.presence.in_batch.push(p);
        }
    }

    /// Checks the disk if `disk_check_ms` passed since the last check.
    fn maybe_check_disk(&mut self, now: u64) {
        if now >= self.disk.next_check {
            self.disk.next_check = now.saturating_add(self.disk.check_ms);
            self.check_disk(now);
        }
    }

    /// Measures the disk's free space, and while the store fails, tries to
    /// recover it (once there is space): reopened and its state reloaded.
    fn check_disk(&mut self, now: u64) {
        let free = self.store.free_space();
        match self.disk.watch.on_free(free, now, &self.disk.health) {
            Step::Recover => {
                let recovered = self
                    .store
                    .recover()
                    .and_then(|()| self.state.reload(&*self.store));
                match recovered {
                    Ok(()) => Disk::log(self.disk.watch.recovered(now, &self.disk.health)),
                    Err(e) => {
                        if let Some(held) = self.disk.log.allow(now) {
                            tracing::error!(error = %e, earlier_failures_not_logged = held, "store recovery failed; trying again");
                        }
                    }
                }
            }
            step => Disk::log(step),
        }
    }

    /// Writes the batch and sends what waited on it; false if the write
    /// failed and the answers were refusals.
    fn commit(&mut self, out: &mut Router) -> bool {
        self.state.write_heads(&mut self.batch);
        if !self.batch.is_empty() {
            let started = Instant::now();
            let written = self.store.write(&self.batch);
            self.histograms.commit(started.elapsed());
            if let Err(e) = written {
                // Nothing of this batch is acknowledged: the senders
                // retransmit once the store recovers, and the state is
                // reloaded from it then (it holds everything before this
                // batch).
                let now = self.clock.unix_ms();
                if let Some(held) = self.disk.log.allow(now) {
                    tracing::error!(error = %e, earlier_failures_not_logged = held, "store write failed; refusing this batch");
                }
                self.batch.clear();
                self.state.forget_pending();
                let mut again = std::mem::take(&mut self.presence.in_batch);
                again.append(&mut self.presence.retry);
                self.presence.retry = again;
                emit::refuse_all(&mut self.deferred, &self.disk.refusal, out);
                Disk::log(
                    self.disk
                        .watch
                        .on_write_failed(&e.to_string(), &self.disk.health),
                );
                return false;
            }
            self.batch.clear();
        }
        self.presence.in_batch.clear();
        self.state.committed();
        emit::emit_all(
            &mut self.deferred,
            &mut self.state,
            &*self.store,
            &mut self.batch,
            out,
        );
        true
    }
}

impl Backend for Delivery {
    fn start(&mut self, start: &Start) -> std::io::Result<()> {
        self.histograms = start.metrics.histograms.clone();
        let now = self.clock.unix_ms();
        let revocations = &start.registry.revocations;
        self.store
            .scan(Table::Meta, b"x", b"y", &mut |k, v| {
                if let (Some((user, device)), Some(until)) =
                    (keys::revocation_key_owner(k), keys::u64_value(v))
                    && until > now
                {
                    revocations.set(Revocation {
                        user,
                        device,
                        until,
                    });
                }
                true
            })
            .map_err(std::io::Error::other)?;
        let report = Arc::new(Report {
            store: self.store.clone(),
            health: self.disk.health.clone(),
        });
        let _ = start.metrics.backend.set(report);
        if let Some(outbox) = &self.state.events {
            let stats = start.metrics.events.clone();
            let source = outbox
                .source(self.store.clone(), stats.clone())
                .map_err(std::io::Error::other)?;
            self._sender = Some(crate::events::Sender::start(
                &self.events,
                Box::new(source),
                stats,
            )?);
        }
        Ok(())
    }

    fn handle(&mut self, events: &mut Vec<Inbound>, out: &mut Router) {
        let taken = Instant::now();
        self.histograms.batch(events.len());
        let now = self.clock.unix_ms();
        // A busy backend checks its disk between batches too.
        self.maybe_check_disk(now);
        for ev in events.drain(..) {
            if out.control(&ev) {
                continue;
            }
            self.presence(&ev, now);
            if self.disk.refuses(&ev) {
                self.disk
                    .health
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                emit::refuse_event(ev, &self.disk.refusal, out);
                continue;
            }
            apply::apply(
                ev,
                now,
                &mut self.state,
                &*self.store,
                &mut self.batch,
                &mut self.deferred,
            );
        }
        let acks = self
            .deferred
            .iter()
            .filter(|d| matches!(d, emit::Deferred::Msg { .. } | emit::Deferred::Again { .. }))
            .count();
        if self.commit(out) {
            self.histograms.msg_acks(acks, taken.elapsed());
        }
    }

    fn tick(&mut self, _now: Instant, out: &mut Router) {
        let now = self.clock.unix_ms();
        self.maybe_check_disk(now);
        // Writes that emitting produced (receipt marks) and expiry of old
        // dedup entries ride on the next commit; make sure one happens.
        if !self.disk.watch.refuses_all() {
            self.write_presence();
            self.state.expire_dedup(&*self.store, now, &mut self.batch);
            if !self.batch.is_empty() {
                self.commit(out);
            }
        }
    }

    fn shutdown(&mut self, out: &mut Router) {
        self.write_presence();
        if !self.disk.watch.refuses_all() && !self.batch.is_empty() {
            self.commit(out);
        }
    }
}

/// Users recorded online when the gateway last stopped went offline
/// without a word (a crash, a kill): their offline events, with reason
/// `restart`, are stored before the first login.
fn went_offline_in_a_restart(
    state: &mut State,
    store: &dyn Store,
    now: u64,
) -> Result<(), StoreError> {
    let mut gone = Vec::new();
    let end = keys::online_key(u64::MAX);
    store.scan(Table::Meta, &keys::online_key(0), &end, &mut |k, v| {
        if let Some(user) = keys::online_key_user(k) {
            let device = v
                .get(..4)
                .and_then(|d| d.try_into().ok())
                .map_or(0, u32::from_be_bytes);
            gone.push((user, device));
        }
        true
    })?;
    if let Some(v) = store.get(Table::Meta, &end)?
        && let Some(d) = v.get(..4).and_then(|d| d.try_into().ok())
    {
        gone.push((u64::MAX, u32::from_be_bytes(d)));
    }
    if gone.is_empty() {
        return Ok(());
    }
    let mut b = WriteBatch::default();
    for &(user, device) in &gone {
        b.delete(Table::Meta, keys::online_key(user));
        state.event(&mut b, now, || crate::events::Event::Offline {
            user,
            device,
            reason: "restart",
        });
    }
    state.write_heads(&mut b);
    store.write(&b)?;
    state.committed();
    tracing::info!(
        users = gone.len(),
        "offline events for the users online when the gateway stopped"
    );
    Ok(())
}

/// What the operator's endpoint asks of the embedded backend: the store
/// keeps revocations (written beside the backend's batches; the store
/// orders them).
struct Report {
    store: Arc<dyn Store>,
    health: Arc<StoreHealth>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report").finish_non_exhaustive()
    }
}

impl crate::metrics::Collector for Report {
    fn encode(
        &self,
        mut enc: crate::metrics::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;

        use crate::metrics::{counter, gauge};
        let h = &self.health;
        gauge(
            &mut enc,
            "imgate_store_state",
            "The store: 0 serving, 1 short of disk space (sends refused), 2 failing (all refused).",
            h.state() as u64,
        )?;
        gauge(
            &mut enc,
            "imgate_store_free_bytes",
            "Free bytes on the store's disk at the last check.",
            h.free(),
        )?;
        counter(
            &mut enc,
            "imgate_store_write_failures_total",
            "Store writes that failed.",
            h.write_failures.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_store_refused_total",
            "Requests refused with storage_full.",
            h.refused.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_store_recoveries_total",
            "Times the store was reopened after failing.",
            h.recoveries.load(Relaxed),
        )
    }
}

impl crate::metrics::BackendReport for Report {
    fn health(&self) -> Result<(), String> {
        self.health.check()
    }

    fn backup(&self, to: &std::path::Path) -> Option<Result<u64, String>> {
        Some(self.store.backup(to).map_err(|e| e.to_string()))
    }

    fn revoke(&self, r: Revocation) -> Option<Result<(), String>> {
        let mut b = WriteBatch::default();
        let key = keys::revocation_key(r.user, r.device);
        if r.until == 0 {
            b.delete(Table::Meta, key);
        } else {
            b.put(Table::Meta, key, r.value());
        }
        Some(self.store.write(&b).map_err(|e| e.to_string()))
    }
}
