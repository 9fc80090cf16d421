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
//! unacknowledged, so one batch is in flight cluster-wide. A batch held
//! while the backend fails is kept from redelivery with progress acks;
//! if its node dies, the lease runs out after the consumer's `ack_wait`,
//! another node takes it, and JetStream delivers the batch again to it.
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

/// The webhook's reader of the events stream.
pub(super) struct Webhook {
    rt: tokio::runtime::Handle,
    client: Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    meta: kv::Store,
    token: u64,
    /// How long the lease and an unacknowledged event last.
    ack_wait: Duration,
    /// The lease is ours until then (Unix ms; 0: not ours).
    lease_until: u64,
    next_try: Instant,
    /// Returned to the sender and not committed yet, in stream order.
    held: Vec<jetstream::Message>,
    progress_at: Instant,
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
            next_try: Instant::now(),
            held: Vec::new(),
            progress_at: Instant::now(),
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

    /// Whether this node holds the lease (taken or renewed if due).
    fn hold(&mut self) -> bool {
        let now = crate::unix_time().as_millis() as u64;
        let lease = self.ack_wait.as_millis() as u64;
        if self.lease_until > now.saturating_add(lease / 2) {
            return true;
        }
        let ours = self.lease_until > now;
        if !ours && Instant::now() < self.next_try {
            return false;
        }
        self.next_try = Instant::now() + TRY_LEASE;
        let (meta, me) = (self.meta.clone(), self.token);
        let until = now.saturating_add(lease);
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
            if !may_take(held, me, now) {
                return Ok(false);
            }
            match meta
                .update(Names::EVENTS_LEASE_KEY, lease_value(me, until), rev)
                .await
            {
                Ok(_) => Ok(true),
                // Another node took or renewed it meanwhile.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        });
        match took {
            Ok(true) => {
                if !ours {
                    tracing::info!("this node now sends the events to the webhook");
                }
                self.lease_until = until;
                true
            }
            Ok(false) => {
                self.lease_until = 0;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the events lease");
                ours
            }
        }
    }

    /// Keeps held events from redelivery (a progress ack every third of
    /// `ack_wait`) and the lease renewed while events are held.
    fn keep(&mut self) {
        if self.held.is_empty() || self.progress_at.elapsed() < self.ack_wait / 3 {
            return;
        }
        self.progress_at = Instant::now();
        self.hold();
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
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot extend the events held");
        }
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
            if self.held.is_empty() {
                self.progress_at = Instant::now();
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
