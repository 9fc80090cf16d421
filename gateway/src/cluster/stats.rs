//! The cluster backend's counters, read by the metrics endpoint.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
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
}

/// What the operator's endpoint reads of a node: its counters, and the
/// state of its NATS connection at the moment of asking.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) stats: Arc<Stats>,
    pub(super) client: async_nats::Client,
}

impl Report {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl crate::metrics::BackendReport for Report {
    fn render(&self, out: &mut String) {
        self.stats.render(out, self.connected());
    }

    fn health(&self) -> Result<(), String> {
        if self.connected() {
            Ok(())
        } else {
            Err("JetStream unreachable: the NATS connection is down".into())
        }
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

    /// The Prometheus text of these counters, and whether the NATS
    /// connection is up.
    pub fn render(&self, out: &mut String, connected: bool) {
        use std::fmt::Write;
        let c = |v: &AtomicU64| v.load(Relaxed);
        let rows: [(&str, &str, &str, u64); 9] = [
            (
                "imgate_cluster_appends_total",
                "counter",
                "Records appended to JetStream.",
                c(&self.appends),
            ),
            (
                "imgate_cluster_append_seconds_total",
                "counter",
                "Time spent appending, retries included.",
                c(&self.append_us),
            ),
            (
                "imgate_cluster_append_max_seconds",
                "gauge",
                "Slowest append since the last scrape.",
                self.append_max_us.swap(0, Relaxed),
            ),
            (
                "imgate_cluster_publish_retries_total",
                "counter",
                "Appends retried after JetStream did not answer.",
                c(&self.retries),
            ),
            (
                "imgate_cluster_election_wait_seconds_total",
                "counter",
                "Time appends waited through retries (elections, reconnects).",
                c(&self.election_wait_us),
            ),
            (
                "imgate_cluster_cas_conflicts_total",
                "counter",
                "Appends refused because another node appended first.",
                c(&self.conflicts),
            ),
            (
                "imgate_cluster_duplicates_total",
                "counter",
                "Appends found to be retransmits.",
                c(&self.duplicates),
            ),
            (
                "imgate_cluster_gap_fills_total",
                "counter",
                "Log reads to fill a gap in the pushes.",
                c(&self.gap_fills),
            ),
            (
                "imgate_cluster_refused_total",
                "counter",
                "Requests refused with overloaded (too many in flight).",
                c(&self.refused),
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if name.contains("seconds") {
                let _ = writeln!(out, "{name} {}", v as f64 / 1e6);
            } else {
                let _ = writeln!(out, "{name} {v}");
            }
        }
        let up = u8::from(connected);
        let _ = writeln!(
            out,
            "# HELP imgate_cluster_connected Whether the NATS connection is up.\n# TYPE imgate_cluster_connected gauge\nimgate_cluster_connected {up}"
        );
    }
}
