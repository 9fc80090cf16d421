//! Events out to the business backend: a message stored (with whom to
//! send a mobile push), a user's first device online and last device
//! offline, a group's membership changing. See `docs/events.md`.
//!
//! ```text
//!  delivery thread ──event, in the same batch as what it reports──► outbox (store)
//!                                                                     │
//!  sender thread ◄── next(max, wait) ─────────────────────────────────┘
//!     │ POST {"events":[...]}, HMAC-signed, retried with backoff
//!     ▼
//!  business backend ── 2xx ──► sender commits: the outbox cursor moves
//! ```
//!
//! An event is written with what it reports, in one atomic batch, so a
//! stored message always has its event and a crash loses none; the
//! sender reads them from the store after the commit. The cluster
//! backend stores its events in a JetStream stream instead and reads
//! them through a durable consumer; both encode with [`Event::to_json`],
//! so the backend sees one format.

mod backoff;
pub mod event;
pub mod outbox;
pub mod sender;
pub mod sign;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

pub use backoff::Backoff;
pub use event::Event;
use prometheus_client::{
    encoding::EncodeMetric,
    metrics::{MetricType, histogram::Histogram},
};
pub use sender::{Sender, Source, Stored};

/// POST latency bounds, seconds: 1 ms to 10 s.
const POST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The sender's counters, read by the metrics endpoint.
#[derive(Debug)]
pub struct Stats {
    /// Whether a sender runs (nothing is exposed otherwise).
    pub enabled: AtomicBool,
    /// Events the backend took.
    pub sent: AtomicU64,
    /// POSTs tried.
    pub posts: AtomicU64,
    /// POSTs that failed (error, timeout, non-2xx).
    pub failures: AtomicU64,
    /// Events dropped unsent because more than `max_lag` waited.
    pub dropped: AtomicU64,
    /// Events stored and not yet taken by the backend.
    pub lag: AtomicU64,
    /// When the backend last took a batch, Unix ms (0: never).
    pub last_sent_ms: AtomicU64,
    /// Time per POST.
    pub post_seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            enabled: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            posts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
            post_seconds: Histogram::new(POST_BUCKETS),
        }
    }
}

/// The metrics endpoint's view of [`Stats`].
#[derive(Debug)]
pub(crate) struct StatsCollector(pub(crate) Arc<Stats>);

impl crate::metrics::Collector for StatsCollector {
    fn encode(
        &self,
        mut enc: crate::metrics::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, gauge};
        let s = &self.0;
        if !s.enabled.load(Relaxed) {
            return Ok(());
        }
        gauge(
            &mut enc,
            "imgate_events_lag",
            "Events stored and not yet taken by the webhook.",
            s.lag.load(Relaxed),
        )?;
        gauge(
            &mut enc,
            "imgate_events_last_sent_ms",
            "When the webhook last took a batch, Unix ms (0: never).",
            s.last_sent_ms.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_events_sent_total",
            "Events the webhook took (2xx).",
            s.sent.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_events_posts_total",
            "POSTs to the webhook tried.",
            s.posts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_events_post_failures_total",
            "POSTs to the webhook that failed (error, timeout or non-2xx), each retried.",
            s.failures.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "imgate_events_dropped_total",
            "Events dropped unsent because more than events.max_lag waited.",
            s.dropped.load(Relaxed),
        )?;
        s.post_seconds.encode(enc.encode_descriptor(
            "imgate_events_post_seconds",
            "Time per POST to the webhook, answer read.",
            None,
            MetricType::Histogram,
        )?)
    }
}
