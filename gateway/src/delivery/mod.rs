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
mod emit;
pub mod keys;
mod purge;
pub mod roles;
pub mod rules;
mod state;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Instant};

use crate::{
    backend::{Backend, Inbound, Router, Start},
    clock::{Clock, SystemClock},
    config::Config,
    metrics::BackendHistograms,
    revocations::Revocation,
    store::{Store, StoreError, Table, WriteBatch},
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
    failed: Option<String>,
    histograms: BackendHistograms,
    // Stopped when the backend is dropped.
    _purger: Option<purge::Purger>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("failed", &self.failed)
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
        let state = State::load(&*store, Limits::from_config(cfg))?;
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
            failed: None,
            histograms: BackendHistograms::default(),
            _purger: purger,
        })
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
                // retransmit, and the state is reloaded from the store,
                // which holds everything before this batch.
                tracing::error!(error = %e, "store write failed; refusing this batch");
                self.batch.clear();
                self.state.forget_pending();
                emit::refuse_all(&mut self.deferred, out);
                if let Err(e) = self.state.reload(&*self.store) {
                    tracing::error!(error = %e, "store unusable");
                    self.failed = Some(e.to_string());
                }
                return false;
            }
            self.batch.clear();
        }
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
        });
        let _ = start.metrics.backend.set(report);
        Ok(())
    }

    fn handle(&mut self, events: &mut Vec<Inbound>, out: &mut Router) {
        let taken = Instant::now();
        self.histograms.batch(events.len());
        let now = self.clock.unix_ms();
        for ev in events.drain(..) {
            if out.control(&ev) {
                continue;
            }
            if self.failed.is_some() {
                emit::refuse_event(ev, out);
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
        // Writes that emitting produced (receipt marks) and expiry of old
        // dedup entries ride on the next commit; make sure one happens.
        if self.failed.is_none() {
            let now = self.clock.unix_ms();
            self.state.expire_dedup(&*self.store, now, &mut self.batch);
            if !self.batch.is_empty() {
                self.commit(out);
            }
        }
    }

    fn shutdown(&mut self, out: &mut Router) {
        if self.failed.is_none() && !self.batch.is_empty() {
            self.commit(out);
        }
    }
}

/// What the operator's endpoint asks of the embedded backend: the store
/// keeps revocations (written beside the backend's batches; the store
/// orders them).
struct Report {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report").finish_non_exhaustive()
    }
}

impl crate::metrics::Collector for Report {
    fn encode(&self, _: crate::metrics::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

impl crate::metrics::BackendReport for Report {
    fn health(&self) -> Result<(), String> {
        Ok(())
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
