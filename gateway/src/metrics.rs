//! The gateway's metrics, and their Prometheus text for the `/metrics`
//! endpoint (served by [`crate::http`]).
//!
//! Counting stays where it is cheapest: each core owns one [`CoreMetrics`]
//! and is its only writer (relaxed atomics on cache lines of their own: no
//! contention, no locks on the data path). The client library,
//! `prometheus-client`, only formats: at scrape time its collectors read
//! those atomics (module `cores`), the process's own figures (module
//! `process`) and the backend's report ([`BackendReport`]), and it writes
//! the text. The backend's latency and batch-size histograms
//! ([`BackendHistograms`]) are observed on the backend's single thread,
//! never on a core.

mod cores;
mod encode;
mod histograms;
mod process;

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
};

use imgate_codec::KickReason;
use prometheus_client::{encoding::prometheus_text, registry::Registry};

pub use encode::{counter, gauge, labelled};
pub use histograms::BackendHistograms;
pub use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

/// The `Content-Type` of [`Metrics::render`]'s text: the Prometheus text
/// format, version 0.0.4 (no OpenMetrics `# EOF`).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Kick reasons with a counter, in label order.
pub const KICK_REASONS: &[KickReason] = KickReason::ALL;

/// Transports, in the order of [`CoreMetrics::transports`] (the
/// `transport` label).
pub const TRANSPORTS: [&str; 4] = ["tcp", "ws", "tls", "wss"];

/// The index into [`TRANSPORTS`] of a connection over WebSocket or not,
/// with TLS or not.
pub fn transport_index(websocket: bool, tls: bool) -> usize {
    usize::from(websocket) + 2 * usize::from(tls)
}

/// One core's counters for one transport.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// Open connections.
    pub connections: AtomicI64,
    /// Connections accepted (refused ones included).
    pub accepted: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Bytes received (on the wire: WebSocket headers and TLS records
    /// included).
    pub bytes_in: AtomicU64,
    /// Bytes written (on the wire).
    pub bytes_out: AtomicU64,
    /// Kicks, any reason.
    pub kicks: AtomicU64,
}

/// One core's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreMetrics {
    /// Open connections.
    pub connections: AtomicI64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub refused: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins (bad or expired token, no login).
    pub login_failures: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Frames queued to clients.
    pub frames_out: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Protocol errors (error frames sent for bad input).
    pub protocol_errors: AtomicU64,
    /// WebSocket upgrades accepted.
    pub ws_upgrades: AtomicU64,
    /// WebSocket upgrades refused (HTTP errors) and WebSocket connections
    /// closed for a bad WebSocket frame or a text message.
    pub ws_refused: AtomicU64,
    /// Demo page and browser client responses (`demo_path`).
    pub demo_served: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS connections ended for bad TLS (a failed handshake, a bad record).
    pub tls_failures: AtomicU64,
    /// Requests refused because the backend queue was full.
    pub overloaded: AtomicU64,
    /// Pushes re-sent because no ack came.
    pub push_retransmits: AtomicU64,
    /// Kicks, indexed by `KickReason` wire value - 1.
    pub kicks: [AtomicU64; 16],
    /// The same by transport, indexed as [`TRANSPORTS`].
    pub transports: [TransportMetrics; 4],
}

impl CoreMetrics {
    /// Counts a kick.
    pub fn kick(&self, reason: KickReason) {
        let i = usize::from(reason.to_wire()).saturating_sub(1);
        if let Some(k) = self.kicks.get(i) {
            k.fetch_add(1, Relaxed);
        }
    }
}

/// Every core's counters, the gateway-wide gauges, the backend's
/// histograms, and the registry that reads them all when scraped.
#[derive(Debug)]
pub struct Metrics {
    /// Per core.
    pub cores: Arc<[CoreMetrics]>,
    /// Batches waiting for the backend.
    pub backend_queue: Arc<AtomicI64>,
    /// What the backend reports of itself, once it started.
    pub backend: Arc<OnceLock<Arc<dyn BackendReport>>>,
    /// Observed by the backend's thread.
    pub histograms: BackendHistograms,
    /// The event sender's, once one runs.
    pub events: Arc<crate::events::Stats>,
    registry: Registry,
}

/// A backend's own metrics and health, for the operator's endpoint. Its
/// [`Collector::encode`] adds the backend's families to every scrape.
pub trait BackendReport: Collector {
    /// Whether the backend can serve, and if not why.
    fn health(&self) -> Result<(), String>;
    /// A user's sessions on every node, as JSON objects, when the backend
    /// spans several gateways; None when this node's registry is the whole
    /// picture.
    fn sessions(&self, _user: u64, _device: Option<u32>) -> Option<Result<Vec<String>, String>> {
        None
    }
    /// Every node's online counts, one JSON object each (`"node"`,
    /// `"users"`, `"sessions"`, `"by_transport"`), when the backend spans
    /// several gateways; None when this node is the whole picture.
    fn census(&self) -> Option<Result<Vec<String>, String>> {
        None
    }
    /// Keeps a revocation durable, or forgets it (`until` 0), and tells the
    /// other nodes; None when the backend keeps nothing (the revocation then
    /// lasts until the process ends).
    fn revoke(&self, _r: crate::revocations::Revocation) -> Option<Result<(), String>> {
        None
    }
    /// Copies the store, as of one moment, into the new directory `to`
    /// while serving; the entries copied. None when the backend has no
    /// store of its own to copy.
    fn backup(&self, _to: &std::path::Path) -> Option<Result<u64, String>> {
        None
    }
}

/// The backend's report, once there is one.
#[derive(Debug)]
struct BackendCollector(Arc<OnceLock<Arc<dyn BackendReport>>>);

impl Collector for BackendCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(b) => b.encode(encoder),
            None => Ok(()),
        }
    }
}

impl Metrics {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Metrics {
        let cores: Arc<[CoreMetrics]> = (0..cores).map(|_| CoreMetrics::default()).collect();
        let backend_queue = Arc::new(AtomicI64::new(0));
        let backend = Arc::new(OnceLock::new());
        let histograms = BackendHistograms::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(cores::CoreCollector {
            cores: cores.clone(),
            backend_queue: backend_queue.clone(),
        }));
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register_collector(Box::new(histograms.clone()));
        registry.register_collector(Box::new(BackendCollector(backend.clone())));
        let events = Arc::new(crate::events::Stats::default());
        registry.register_collector(Box::new(crate::events::StatsCollector(events.clone())));
        Metrics {
            cores,
            backend_queue,
            backend,
            histograms,
            events,
            registry,
        }
    }

    /// Total open connections.
    pub fn connections(&self) -> i64 {
        self.cores.iter().map(|c| c.connections.load(Relaxed)).sum()
    }

    /// Open connections by transport, summed over cores.
    pub fn connections_by_transport(&self) -> Vec<(&'static str, u64)> {
        cores::by_transport(&self.cores, cores::open_connections).collect()
    }

    /// Total kicks for `reason`.
    pub fn kicks(&self, reason: KickReason) -> u64 {
        cores::kicks(&self.cores, reason)
    }

    /// Whether the backend can serve (see [`BackendReport::health`]).
    pub fn health(&self) -> Result<(), String> {
        self.backend.get().map_or(Ok(()), |b| b.health())
    }

    /// The Prometheus text exposition ([`CONTENT_TYPE`]); empty, and the
    /// failure logged, if a collector failed.
    pub fn render(&self) -> String {
        self.try_render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode the metrics");
            String::new()
        })
    }

    /// The Prometheus text exposition, or why a collector failed.
    pub fn try_render(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut s, &self.registry)?;
        Ok(s)
    }
}

pub use crate::process::{cpu_seconds, process_stats};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every `# HELP` and `# TYPE` line's family name and type.
    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_family_has_help_and_type() {
        let m = Metrics::new(2);
        let text = m.render();
        let expected = [
            ("imgate_connections", "gauge"),
            ("imgate_accepted_total", "counter"),
            ("imgate_refused_total", "counter"),
            ("imgate_logins_total", "counter"),
            ("imgate_login_failures_total", "counter"),
            ("imgate_frames_in_total", "counter"),
            ("imgate_bytes_in_total", "counter"),
            ("imgate_frames_out_total", "counter"),
            ("imgate_bytes_out_total", "counter"),
            ("imgate_protocol_errors_total", "counter"),
            ("imgate_ws_upgrades_total", "counter"),
            ("imgate_ws_refused_total", "counter"),
            ("imgate_demo_served_total", "counter"),
            ("imgate_tls_handshakes_total", "counter"),
            ("imgate_tls_failures_total", "counter"),
            ("imgate_overloaded_total", "counter"),
            ("imgate_push_retransmits_total", "counter"),
            ("imgate_kicks_total", "counter"),
            ("imgate_transport_connections", "gauge"),
            ("imgate_transport_accepted_total", "counter"),
            ("imgate_transport_logins_total", "counter"),
            ("imgate_transport_bytes_in_total", "counter"),
            ("imgate_transport_bytes_out_total", "counter"),
            ("imgate_transport_kicks_total", "counter"),
            ("imgate_backend_queue_batches", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_cpu_seconds_total", "counter"),
            ("imgate_msg_ack_seconds", "histogram"),
            ("imgate_store_commit_seconds", "histogram"),
            ("imgate_backend_batch_events", "histogram"),
        ];
        let found = families(&text);
        assert_eq!(found.len(), expected.len(), "{text}");
        for (name, kind) in expected {
            assert!(
                found.iter().any(|(n, k)| n == name && k == kind),
                "{name} {kind}: {text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn per_core_and_per_transport_series() {
        let m = Metrics::new(2);
        m.cores[0].connections.store(3, Relaxed);
        m.cores[1].connections.store(4, Relaxed);
        m.cores[1].logins.store(5, Relaxed);
        m.cores[0].transports[2].logins.store(1, Relaxed);
        m.cores[1].transports[2].logins.store(2, Relaxed);
        m.cores[1].transports[3].connections.store(-1, Relaxed);
        m.cores[0].kick(KickReason::Replaced);
        m.cores[1].kick(KickReason::Replaced);
        m.backend_queue.store(7, Relaxed);
        let text = m.render();
        let v = |s: &str| value(&text, s);
        assert_eq!(v("imgate_connections{core=\"0\"}"), Some(3.0), "{text}");
        assert_eq!(v("imgate_connections{core=\"1\"}"), Some(4.0), "{text}");
        assert_eq!(v("imgate_logins_total{core=\"0\"}"), Some(0.0), "{text}");
        assert_eq!(v("imgate_logins_total{core=\"1\"}"), Some(5.0), "{text}");
        for t in TRANSPORTS {
            let series = format!("imgate_transport_logins_total{{transport=\"{t}\"}}");
            let want = if t == "tls" { 3.0 } else { 0.0 };
            assert_eq!(v(&series), Some(want), "{series}: {text}");
        }
        assert_eq!(
            v("imgate_transport_connections{transport=\"wss\"}"),
            Some(0.0),
            "a negative count reads as none: {text}"
        );
        assert_eq!(v("imgate_kicks_total{reason=\"replaced\"}"), Some(2.0));
        assert_eq!(m.kicks(KickReason::Replaced), 2);
        assert_eq!(m.connections(), 7);
        assert_eq!(v("imgate_backend_queue_batches"), Some(7.0), "{text}");
        assert!(v("process_resident_memory_bytes").is_some_and(|b| b > 0.0));
        assert!(v("process_cpu_seconds_total").is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn histograms_have_buckets_sum_and_count() {
        let m = Metrics::new(1);
        m.histograms.msg_acks(2, Duration::from_millis(3));
        m.histograms.commit(Duration::from_micros(200));
        m.histograms.batch(3);
        let text = m.render();
        let v = |s: &str| value(&text, s);
        assert_eq!(v("imgate_msg_ack_seconds_bucket{le=\"0.0025\"}"), Some(0.0));
        assert_eq!(v("imgate_msg_ack_seconds_bucket{le=\"0.005\"}"), Some(2.0));
        assert_eq!(v("imgate_msg_ack_seconds_bucket{le=\"+Inf\"}"), Some(2.0));
        assert_eq!(v("imgate_msg_ack_seconds_count"), Some(2.0), "{text}");
        assert!(v("imgate_msg_ack_seconds_sum").is_some_and(|s| (s - 0.006).abs() < 1e-9));
        assert_eq!(
            v("imgate_store_commit_seconds_bucket{le=\"0.0001\"}"),
            Some(0.0)
        );
        assert_eq!(
            v("imgate_store_commit_seconds_bucket{le=\"0.00025\"}"),
            Some(1.0)
        );
        assert_eq!(v("imgate_store_commit_seconds_count"), Some(1.0));
        assert_eq!(v("imgate_backend_batch_events_bucket{le=\"2\"}"), Some(0.0));
        assert_eq!(v("imgate_backend_batch_events_bucket{le=\"4\"}"), Some(1.0));
        assert_eq!(v("imgate_backend_batch_events_sum"), Some(3.0), "{text}");
    }

    #[derive(Debug)]
    struct Report;

    impl Collector for Report {
        fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            counter(&mut enc, "imgate_test_things_total", "Things.", 4u64)?;
            gauge(&mut enc, "imgate_test_up", "Up.", 1u64)
        }
    }

    impl BackendReport for Report {
        fn health(&self) -> Result<(), String> {
            Err("down".into())
        }
    }

    #[test]
    fn the_backend_report_joins_the_exposition() {
        let m = Metrics::new(1);
        assert!(m.health().is_ok());
        assert!(!m.render().contains("imgate_test_"));
        let _ = m.backend.set(Arc::new(Report));
        let text = m.render();
        assert_eq!(
            value(&text, "imgate_test_things_total"),
            Some(4.0),
            "{text}"
        );
        assert_eq!(value(&text, "imgate_test_up"), Some(1.0), "{text}");
        assert!(text.contains("# TYPE imgate_test_things_total counter"));
        assert_eq!(m.health(), Err("down".to_string()));
    }
}
