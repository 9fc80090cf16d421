//! The cluster backend's counters, read by the metrics endpoint: atomics
//! the cluster's tasks bump, written as metric families when scraped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::{
    metrics::{Collector, DescriptorEncoder, counter, gauge},
    revocations::Revocation,
};

/// Counters of one node's work with JetStream.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records appended.
    pub appends: AtomicU64,
    /// Total time of those appends, µs (with their retries).
    pub append_us: AtomicU64,
    /// The slowest append since the last scrape, µs.
    pub append_max_us: AtomicU64,
    /// Appends that were retried after JetStream did not answer (an
    /// election, a lost connection).
    pub retries: AtomicU64,
    /// Time appends spent waiting through such retries, µs.
    pub election_wait_us: AtomicU64,
    /// Appends refused because another node appended to the subject first.
    pub conflicts: AtomicU64,
    /// Appends JetStream recognised as retransmits.
    pub duplicates: AtomicU64,
    /// Reads of the log to fill a gap in the pushes.
    pub gap_fills: AtomicU64,
    /// Requests refused with `overloaded` (too many in flight).
    pub refused: AtomicU64,
    /// Records the purge deleted.
    pub purged: AtomicU64,
    /// Sweeps of a partition this node made (holding its lease).
    pub purge_sweeps: AtomicU64,
}

/// How long a session or census query waits for the nodes' answers (it
/// cannot know how many nodes there are).
const WHO_WAIT: Duration = Duration::from_millis(250);

/// What the operator's endpoint reads of a node: its counters, the state
/// of its NATS connection at the moment of asking, and a user's sessions
/// on every node.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) stats: Arc<Stats>,
    pub(super) client: async_nats::Client,
    pub(super) names: super::names::Names,
    pub(super) meta: async_nats::jetstream::kv::Store,
}

/// A revocation from its key in the meta bucket and its value.
pub(super) fn parse_revocation(key: &str, value: &[u8]) -> Option<Revocation> {
    let mut parts = key.strip_prefix("revoked.")?.split('.');
    let user = parts.next()?.parse().ok()?;
    let device = parts.next()?.parse().ok()?;
    let until = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some(Revocation {
        user,
        device,
        until,
    })
}

/// A revocation as the nodes tell each other: user, device, until (0: it
/// ended), big-endian.
pub(super) fn encode_revocation(r: &Revocation) -> bytes::Bytes {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&r.user.to_be_bytes());
    b.extend_from_slice(&r.device.to_be_bytes());
    b.extend_from_slice(&r.until.to_be_bytes());
    b.into()
}

pub(super) fn decode_revocation(b: &[u8]) -> Option<Revocation> {
    if b.len() != 20 {
        return None;
    }
    Some(Revocation {
        user: u64::from_be_bytes(b[..8].try_into().ok()?),
        device: u32::from_be_bytes(b[8..12].try_into().ok()?),
        until: u64::from_be_bytes(b[12..].try_into().ok()?),
    })
}

impl Report {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Runs `work` on a small runtime of its own (the endpoint's thread has
    /// none), within `limit`: a connection that drops meanwhile would hold
    /// it, and the endpoint's thread, until it is back. `what` names the
    /// work in errors.
    fn block_on<T>(
        &self,
        what: &str,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        if !self.connected() {
            return Err(format!("{what}: the NATS connection is down"));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // (The timer needs the runtime: made inside it.)
        rt.block_on(async { tokio::time::timeout(limit, work).await })
            .unwrap_or_else(|_| Err(format!("{what}: NATS did not answer in time")))
    }

    /// Asks `subject` (with `ask` as the payload) and gathers the answers'
    /// lines for [`WHO_WAIT`].
    fn gather(&self, subject: String, ask: bytes::Bytes) -> Result<Vec<String>, String> {
        self.block_on("cannot ask the nodes", WHO_WAIT * 4, self.ask(subject, ask))
    }

    /// Writes (or deletes) the revocation's key, then tells every node.
    fn store_revocation(&self, r: Revocation) -> Result<(), String> {
        let key = super::names::Names::revocation_key(r.user, r.device);
        let write = async {
            if r.until == 0 {
                self.meta.delete(&key).await.map_err(|e| e.to_string())?;
            } else {
                let v = bytes::Bytes::copy_from_slice(&r.value());
                self.meta.put(&key, v).await.map_err(|e| e.to_string())?;
            }
            self.client
                .publish(self.names.revoked(), encode_revocation(&r))
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        self.block_on("cannot store the revocation", WHO_WAIT * 8, write)
    }

    /// Publishes the question and gathers the answers of [`WHO_WAIT`].
    async fn ask(&self, subject: String, ask: bytes::Bytes) -> Result<Vec<String>, String> {
        use futures_util::StreamExt;
        let fail = |e: &dyn std::fmt::Display| format!("cannot ask the nodes: {e}");
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| fail(&e))?;
        self.client
            .publish_with_reply(subject, inbox, ask)
            .await
            .map_err(|e| fail(&e))?;
        self.client.flush().await.map_err(|e| fail(&e))?;
        let deadline = tokio::time::Instant::now() + WHO_WAIT;
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
            let text = String::from_utf8_lossy(&m.payload);
            out.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        Ok(out)
    }
}

impl Collector for Report {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.stats.encode(encoder, self.connected())
    }
}

impl crate::metrics::BackendReport for Report {
    fn health(&self) -> Result<(), String> {
        if self.connected() {
            Ok(())
        } else {
            Err("JetStream unreachable: the NATS connection is down".into())
        }
    }

    fn sessions(&self, user: u64, device: Option<u32>) -> Option<Result<Vec<String>, String>> {
        let ask = super::wire::NodeMsg::Who { device }.encode();
        Some(self.gather(self.names.push(user), ask))
    }

    fn census(&self) -> Option<Result<Vec<String>, String>> {
        Some(self.gather(self.names.census(), bytes::Bytes::new()))
    }

    fn revoke(&self, r: Revocation) -> Option<Result<(), String>> {
        Some(self.store_revocation(r))
    }
}

impl Stats {
    pub(super) fn appended(&self, took: Duration, waited: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.appends.fetch_add(1, Relaxed);
        self.append_us.fetch_add(us, Relaxed);
        self.append_max_us.fetch_max(us, Relaxed);
        if waited {
            self.election_wait_us.fetch_add(us, Relaxed);
        }
    }

    /// Writes these counters, and whether the NATS connection is up, as
    /// metric families (the slowest append is reset by the reading).
    pub fn encode(&self, mut enc: DescriptorEncoder<'_>, connected: bool) -> std::fmt::Result {
        let counts: [(&str, &str, &AtomicU64); 8] = [
            (
                "imgate_cluster_appends_total",
                "Records appended to JetStream.",
                &self.appends,
            ),
            (
                "imgate_cluster_publish_retries_total",
                "Appends retried after JetStream did not answer.",
                &self.retries,
            ),
            (
                "imgate_cluster_cas_conflicts_total",
                "Appends refused because another node appended first.",
                &self.conflicts,
            ),
            (
                "imgate_cluster_duplicates_total",
                "Appends found to be retransmits.",
                &self.duplicates,
            ),
            (
                "imgate_cluster_gap_fills_total",
                "Log reads to fill a gap in the pushes.",
                &self.gap_fills,
            ),
            (
                "imgate_cluster_refused_total",
                "Requests refused with overloaded (too many in flight).",
                &self.refused,
            ),
            (
                "imgate_cluster_purged_total",
                "Records deleted by the purge (acknowledged or past retention).",
                &self.purged,
            ),
            (
                "imgate_cluster_purge_sweeps_total",
                "Partition sweeps of the purge made by this node.",
                &self.purge_sweeps,
            ),
        ];
        for (name, help, v) in counts {
            counter(&mut enc, name, help, v.load(Relaxed))?;
        }
        let seconds = |us: u64| us as f64 / 1e6;
        let times: [(&str, &str, &AtomicU64); 2] = [
            (
                "imgate_cluster_append_seconds_total",
                "Time spent appending, retries included.",
                &self.append_us,
            ),
            (
                "imgate_cluster_election_wait_seconds_total",
                "Time appends waited through retries (elections, reconnects).",
                &self.election_wait_us,
            ),
        ];
        for (name, help, us) in times {
            counter(&mut enc, name, help, seconds(us.load(Relaxed)))?;
        }
        gauge(
            &mut enc,
            "imgate_cluster_append_max_seconds",
            "Slowest append since the last scrape.",
            seconds(self.append_max_us.swap(0, Relaxed)),
        )?;
        gauge(
            &mut enc,
            "imgate_cluster_connected",
            "Whether the NATS connection is up.",
            u64::from(connected),
        )
    }
}
