//! The cluster's [`Source`] of events for the webhook sender: the durable
//! pull consumer `webhook` on the events stream, shared by every node.
//!
//! ```text
//!  sender thread (blocking) ── next / commit / lag ──► this Source
//!                                                      │ futures spawned on the cluster
//!                                                      │ thread's runtime, answers on a channel
//!                                                      ▼
//!                  lease events.sender (meta bucket) ── held: fetch from `webhook`
//! ```
//!
//! Every node runs a sender, but only the holder of the lease
//! `events.sender` reads the consumer: two readers would each hold part
//! of the stream and could post one user's events out of order. The
//! consumer acks explicitly and lets at most `events.batch` events be
//! unacknowledged, so one batch is in flight cluster-wide.
//!
//! The lease and the events held run on one clock: every [`renew_every`]
//! (a third of `ack_wait`) the holder renews the lease (a compare-and-set
//! on the revision it wrote) and, in the same step, sends progress acks
//! for the events it holds, which keeps them from redelivery while the
//! backend fails. A lease lasts [`lease_for`], twice `ack_wait`: an event
//! is fetched only right after a renewal, so every event the holder holds
//! is due for redelivery (its `ack_wait` since its fetch or last progress
//! ack) before the lease runs out, with a third of `ack_wait` to spare for
//! a POST that delays the next renewal and for the nodes' clocks. If the
//! holder dies, the next one takes the lease only when it has run out, and
//! JetStream hands it the dead holder's batch before any later event: one
//! user's events stay in order.
//!
//! A renewal that fails, or finds the lease written by another node,
//! drops the batch held, unacknowledged (it is delivered again, to
//! whoever holds the lease then): `commit` of a dropped batch is an error,
//! and `next` returns nothing until this node holds the lease again, and
//! not before the dropped events are due for redelivery (so it does not
//! fetch later events ahead of them either).
//!
//! What can still happen: the sender thread does not learn of the loss
//! during a POST; a POST in flight when the lease is lost, and the retries
//! of that batch (the sender keeps a batch until a 2xx), may reach the
//! backend after the new holder sent the same events. These are
//! duplicates, which the backend absorbs by `id`; the first copy of each
//! event still arrives in stream order.
//!
//! The sender thread is a plain thread; the async-nats calls run on the
//! cluster's tokio runtime (a `Handle` to it), each bounded by a timeout
//! so that a stopped runtime cannot hang the sender.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use async_nats::{
    Client,
    jetstream::{self, consumer::pull, kv},
};
use futures_util::StreamExt;

use super::{
    names::Names,
    purge::{lease_of, lease_value, may_take},
};
use crate::events::{Source, Stored};

/// How often a node that does not hold the lease tries to take it.
const TRY_LEASE: Duration = Duration::from_secs(1);
/// How often the lag is read from the consumer at most.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Extra time a call to the runtime may take beyond its own wait.
const SLACK: Duration = Duration::from_secs(5);

/// The consumer's `ack_wait` for a POST timeout of `timeout_ms`: longer
/// than a POST, at least 30 s.
pub(super) fn ack_wait(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms.saturating_mul(2).saturating_add(5_000))
        .max(Duration::from_secs(30))
}

/// How often the holder renews the lease and sends progress acks for the
/// events it holds: a third of `ack_wait`.
pub(super) fn renew_every(ack_wait: Duration) -> Duration {
    ack_wait / 3
}

/// How long the lease lasts from a renewal: twice `ack_wait`. An event is
/// due for redelivery at most `renew_every + ack_wait` after the last
/// renewal, and a POST (at most `ack_wait / 2`) may delay the next one.
pub(super) fn lease_for(ack_wait: Duration) -> Duration {
    ack_wait * 2
}

/// Milliseconds of `d`, saturated.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The webhook's reader of the events stream.
pub(super) struct Webhook {
    rt: tokio::runtime::Handle,
    client: Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    meta: kv::Store,
    token: u64,
    /// How long an unacknowledged event lasts.
    ack_wait: Duration,
    /// The lease is ours until then (Unix ms; 0: not ours).
    lease_until: u64,
    /// The revision of our write of the lease.
    lease_rev: u64,
    /// When the lease was last taken or renewed (just before the write).
    renewed_at: Instant,
    next_try: Instant,
    /// Returned to the sender and not committed yet, in stream order.
    held: Vec<jetstream::Message>,
    /// When the events held last had their `ack_wait` restarted (a fetch
    /// or a progress ack, taken after the answer).
    touched_at: Instant,
    /// A dropped batch is due for redelivery by then: nothing is fetched
    /// before.
    quiet_until: Option<Instant>,
    lag: Option<u64>,
    lag_at: Option<Instant>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("token", &self.token)
            .field("lease_until", &self.lease_until)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub(super) fn new(
        rt: tokio::runtime::Handle,
        client: Client,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        meta: kv::Store,
        ack_wait: Duration,
    ) -> Webhook {
        let token = (crate::unix_time().as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32)
            ^ 0x6a09_e667_f3bc_c908;
        Webhook {
            rt,
            client,
            consumer,
            meta,
            token,
            ack_wait,
            lease_until: 0,
            lease_rev: 0,
            renewed_at: Instant::now(),
            next_try: Instant::now(),
            held: Vec::new(),
            touched_at: Instant::now(),
            quiet_until: None,
            lag: None,
            lag_at: None,
        }
    }

    /// Runs `f` on the cluster's runtime; its answer, or an error after
    /// `limit`.
    fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err("JetStream did not answer in time".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the cluster thread stopped".into()),
        }
    }

    /// Whether this node holds the lease, taking it if it is free (tried
    /// at most every [`TRY_LEASE`]). Renewals are [`Webhook::keep`]'s.
    fn hold(&mut self) -> bool {
        if self.lease_until != 0 {
            return true;
        }
        let now = Instant::now();
        if now < self.next_try || self.quiet_until.is_some_and(|q| now < q) {
            return false;
        }
        self.quiet_until = None;
        self.next_try = now + TRY_LEASE;
        let (meta, me) = (self.meta.clone(), self.token);
        let (at, now_ms) = (Instant::now(), crate::clock::unix_ms());
        let until = now_ms.saturating_add(ms(lease_for(self.ack_wait)));
        let took = self.run(SLACK, async move {
            let e = meta
                .entry(Names::EVENTS_LEASE_KEY)
                .await
                .map_err(|e| e.to_string())?;
            let (held, rev) = match &e {
                Some(e) if e.operation == kv::Operation::Put => (lease_of(&e.value), e.revision),
                Some(e) => (None, e.revision),
                None => (None, 0),
            };
            if !may_take(held, me, now_ms) {
                return Ok(None);
            }
            write_lease(&meta, me, until, rev).await
        });
        match took {
            Ok(Some(rev)) => {
                tracing::info!("this node now sends the events to the webhook");
                self.lease_until = until;
                self.lease_rev = rev;
                self.renewed_at = at;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the events lease");
                false
            }
        }
    }

    /// The one schedule of the lease and the events held: every
    /// [`renew_every`] the lease is renewed and, if that worked, the
    /// events held get progress acks; if it did not, they are dropped.
    fn keep(&mut self) {
        if self.lease_until == 0 || self.renewed_at.elapsed() < renew_every(self.ack_wait) {
            return;
        }
        let (meta, me, rev) = (self.meta.clone(), self.token, self.lease_rev);
        let at = Instant::now();
        let until = crate::clock::unix_ms().saturating_add(ms(lease_for(self.ack_wait)));
        let renewed = self.run(
            SLACK,
            async move { write_lease(&meta, me, until, rev).await },
        );
        match renewed {
            Ok(Some(rev)) => {
                self.lease_until = until;
                self.lease_rev = rev;
                self.renewed_at = at;
            }
            Ok(None) => return self.lost("another node took the events lease"),
            Err(e) => return self.lost(&format!("cannot renew the events lease: {e}")),
        }
        if self.held.is_empty() {
            return;
        }
        let msgs = self.held.clone();
        let client = self.client.clone();
        let r = self.run(SLACK, async move {
            for m in &msgs {
                m.ack_with(jetstream::AckKind::Progress)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            client.flush().await.map_err(|e| e.to_string())
        });
        self.touched_at = Instant::now();
        if let Err(e) = r {
            // Redelivered to this node if they ran out: skipped as held.
            tracing::warn!(error = %e, "cannot extend the events held");
        }
    }

    /// The lease is no longer ours: the events held are dropped without
    /// an ack, and nothing is fetched before they are due again.
    fn lost(&mut self, why: &str) {
        self.lease_until = 0;
        self.next_try = Instant::now();
        if self.held.is_empty() {
            tracing::info!(why, "this node no longer sends the events");
            return;
        }
        tracing::warn!(
            why,
            dropped = self.held.len(),
            "events lease lost while holding events: they are dropped unacknowledged \
             and sent again by the holder of the lease"
        );
        self.held.clear();
        // A progress ack still on its way (past SLACK) restarts them later.
        self.quiet_until = Some(self.touched_at + self.ack_wait + SLACK);
    }
}

impl Drop for Webhook {
    /// A clean stop hands the lease back, so that another node sends at
    /// once instead of after the lease runs out (a rolling restart would
    /// otherwise stop the events for up to twice `ack_wait` at each
    /// holder). The batch it holds is given back first (a nak: due for
    /// redelivery at once, and JetStream redelivers before it delivers
    /// later events), so the next holder sends it before anything newer.
    fn drop(&mut self) {
        if self.lease_until == 0 {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let (meta, client, me, rev) = (
            self.meta.clone(),
            self.client.clone(),
            self.token,
            self.lease_rev,
        );
        let handed = self.run(RELEASE_WAIT, async move {
            for m in &held {
                m.ack_with(jetstream::AckKind::Nak(None))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            client.flush().await.map_err(|e| e.to_string())?;
            write_lease(&meta, me, 0, rev).await
        });
        match handed {
            Ok(Some(_)) => tracing::info!("events lease handed back at stop"),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot hand the events lease back"),
        }
    }
}

/// How long a stop tries to hand the lease back.
const RELEASE_WAIT: Duration = Duration::from_millis(500);

/// Writes the lease as `me`'s until `until` over revision `rev`: its new
/// revision, or None if another node wrote it since.
async fn write_lease(
    meta: &kv::Store,
    me: u64,
    until: u64,
    rev: u64,
) -> Result<Option<u64>, String> {
    match meta
        .update(Names::EVENTS_LEASE_KEY, lease_value(me, until), rev)
        .await
    {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl Source for Webhook {
    fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, String> {
        self.keep();
        if max == 0 || !self.hold() {
            std::thread::sleep(wait);
            return Ok(Vec::new());
        }
        let consumer = self.consumer.clone();
        let got = self.run(wait + SLACK, async move {
            let batch = if wait < Duration::from_millis(10) {
                consumer.fetch().max_messages(max).messages().await
            } else {
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
            };
            let mut batch = batch.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => out.push(m),
                    // What came before the error is kept.
                    Err(e) if out.is_empty() => return Err(e.to_string()),
                    Err(_) => break,
                }
            }
            Ok(out)
        })?;
        if !got.is_empty() {
            self.touched_at = Instant::now();
        }
        let mut stored = Vec::with_capacity(got.len());
        for m in got {
            let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                tracing::warn!("an event without delivery info skipped");
                continue;
            };
            // Delivered again (a progress ack came late): already held.
            if self
                .held
                .iter()
                .any(|h| h.info().is_ok_and(|i| i.stream_sequence == seq))
            {
                continue;
            }
            stored.push(Stored {
                seq,
                json: m.payload.to_vec(),
            });
            self.held.push(m);
        }
        Ok(stored)
    }

    fn commit(&mut self, last: &Stored) -> Result<(), String> {
        self.keep();
        if !self
            .held
            .iter()
            .any(|m| m.info().is_ok_and(|i| i.stream_sequence == last.seq))
        {
            return Err(format!(
                "event {} is no longer held (the events lease was lost): not acknowledged, \
                 the holder of the lease sends it again",
                last.seq
            ));
        }
        let (done, kept): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|m| m.info().is_ok_and(|i| i.stream_sequence <= last.seq));
        self.held = kept;
        let client = self.client.clone();
        self.run(SLACK, async move {
            for m in &done {
                m.ack().await.map_err(|e| e.to_string())?;
            }
            client.flush().await.map_err(|e| e.to_string())
        })
    }

    fn lag(&mut self) -> Option<u64> {
        self.keep();
        if self.lag_at.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
            self.lag_at = Some(Instant::now());
            let consumer = self.consumer.clone();
            let info = self.run(SLACK, async move {
                consumer.get_info().await.map_err(|e| e.to_string())
            });
            match info {
                Ok(i) => self.lag = Some(i.num_pending + i.num_ack_pending as u64),
                Err(e) => tracing::debug!(error = %e, "cannot read the events lag"),
            }
        }
        self.lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_holders_batch_is_due_before_its_lease_runs_out() {
        for timeout_ms in [1, 2_000, 5_000, 60_000, 600_000] {
            let wait = ack_wait(timeout_ms);
            let post = Duration::from_millis(timeout_ms);
            // Events are fetched less than a renewal period after the last
            // renewal, and due an ack_wait after; a POST may delay the next
            // renewal past the period. The lease outlasts both.
            let due = renew_every(wait) + post + wait;
            assert!(
                lease_for(wait) >= due + SLACK,
                "timeout_ms {timeout_ms}: lease {:?}, last redelivery due {due:?}",
                lease_for(wait)
            );
            // Progress acks come before the events held run out.
            assert!(
                renew_every(wait) + post + SLACK <= wait,
                "timeout_ms {timeout_ms}"
            );
        }
    }
}
