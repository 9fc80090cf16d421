//! Histograms of the backend's work: how long a msg:R waits for its
//! msg:A, how long a group commit takes, how many events a batch brings.
//!
//! They are observed on the backend's thread only, so the library's
//! histogram (a short lock per observation, which nothing but a scrape
//! ever contends) is what they use; nothing here is observed on a core,
//! whose counters stay per-core atomics.

use std::{fmt, time::Duration};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        histogram::{Histogram, exponential_buckets},
    },
};

/// Latency bounds, seconds: 100 µs to 5 s in 1-2.5-5 steps.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Batch size bounds: 1 to 131072 events, doubling.
const BATCH_BUCKETS: u16 = 18;

/// The backend's histograms. Clones share their observations: the
/// backend keeps one, the registry another.
#[derive(Debug, Clone)]
pub struct BackendHistograms {
    msg_ack: Histogram,
    commit: Histogram,
    batch_events: Histogram,
}

impl Default for BackendHistograms {
    fn default() -> BackendHistograms {
        BackendHistograms {
            msg_ack: Histogram::new(LATENCY_BUCKETS),
            commit: Histogram::new(LATENCY_BUCKETS),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, BATCH_BUCKETS)),
        }
    }
}

impl BackendHistograms {
    /// The backend took a batch of `events` events.
    pub fn batch(&self, events: usize) {
        self.batch_events.observe(events as f64);
    }

    /// A group commit (one store write) took `took`.
    pub fn commit(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// `acks` msg:A answers were queued `took` after their batch was taken.
    pub fn msg_acks(&self, acks: usize, took: Duration) {
        let s = took.as_secs_f64();
        for _ in 0..acks {
            self.msg_ack.observe(s);
        }
    }

    /// Name, help and histogram of each family, in exposition order.
    fn families(&self) -> [(&'static str, &'static str, &Histogram); 3] {
        [
            (
                "imgate_msg_ack_seconds",
                "Embedded backend: from taking the batch that holds a msg:R off the backend queue to queuing its msg:A for the connection's core (apply, group commit, emit); excludes the wait on the core and in the queue.",
                &self.msg_ack,
            ),
            (
                "imgate_store_commit_seconds",
                "Embedded backend: one group commit, the store write of a batch (with its fsync under fsync durability).",
                &self.commit,
            ),
            (
                "imgate_backend_batch_events",
                "Events per batch the backend took (the core batches waiting together; one batch is one group commit in the embedded backend).",
                &self.batch_events,
            ),
        ]
    }
}

impl Collector for BackendHistograms {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        for (name, help, h) in self.families() {
            h.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
        }
        Ok(())
    }
}
