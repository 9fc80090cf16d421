//! Counters, and their Prometheus text for the `/metrics` endpoint
//! (served by [`crate::http`]).
//!
//! Each core owns one [`CoreMetrics`] and is its only writer (relaxed
//! atomics on a cache line of their own: no contention, no locks); the HTTP
//! thread reads them all when scraped.

use std::{
    fmt::Write as _,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
};

use imgate_codec::KickReason;

/// Kick reasons with a counter, in label order.
pub const KICK_REASONS: &[KickReason] = KickReason::ALL;

/// Transports, in the order of [`CoreMetrics::transports`] (the
/// `transport` label).
pub const TRANSPORTS: [&str; 4] = ["tcp", "ws", "tls", "wss"];

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

/// A per-core metric: name, help, reader.
type PerCore = (&'static str, &'static str, fn(&CoreMetrics) -> u64);

/// Every core's counters plus gateway-wide gauges.
#[derive(Debug)]
pub struct Metrics {
    /// Per core.
    pub cores: Vec<CoreMetrics>,
    /// Batches waiting for the backend.
    pub backend_queue: AtomicI64,
    /// What the backend reports of itself, once it started.
    pub backend: OnceLock<Arc<dyn BackendReport>>,
}

/// A backend's own metrics and health, for the operator's endpoint.
pub trait BackendReport: Send + Sync + std::fmt::Debug {
    /// Appends the backend's metrics in the Prometheus text format.
    fn render(&self, out: &mut String);
    /// Whether the backend can serve, and if not why.
    fn health(&self) -> Result<(), String>;
    /// A user's sessions on every node, as JSON objects, when the backend
    /// spans several gateways; None when this node's registry is the whole
    /// picture.
    fn sessions(&self, _user: u64, _device: Option<u32>) -> Option<Result<Vec<String>, String>> {
        None
    }
}

impl Metrics {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Metrics {
        Metrics {
            cores: (0..cores).map(|_| CoreMetrics::default()).collect(),
            backend_queue: AtomicI64::new(0),
            backend: OnceLock::new(),
        }
    }

    /// Total open connections.
    pub fn connections(&self) -> i64 {
        self.cores.iter().map(|c| c.connections.load(Relaxed)).sum()
    }

    /// Total kicks for `reason`.
    pub fn kicks(&self, reason: KickReason) -> u64 {
        let i = usize::from(reason.to_wire()).saturating_sub(1);
        self.cores
            .iter()
            .filter_map(|c| c.kicks.get(i))
            .map(|k| k.load(Relaxed))
            .sum()
    }

    /// Whether the backend can serve (see [`BackendReport::health`]).
    pub fn health(&self) -> Result<(), String> {
        self.backend.get().map_or(Ok(()), |b| b.health())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let per_core: &[PerCore] = &[
            ("imgate_connections", "Open connections.", |c| {
                c.connections.load(Relaxed).max(0) as u64
            }),
            ("imgate_accepted_total", "Connections accepted.", |c| {
                c.accepted.load(Relaxed)
            }),
            (
                "imgate_refused_total",
                "Connections refused at the limit.",
                |c| c.refused.load(Relaxed),
            ),
            ("imgate_logins_total", "Successful logins.", |c| {
                c.logins.load(Relaxed)
            }),
            ("imgate_login_failures_total", "Failed logins.", |c| {
                c.login_failures.load(Relaxed)
            }),
            ("imgate_frames_in_total", "Frames received.", |c| {
                c.frames_in.load(Relaxed)
            }),
            ("imgate_bytes_in_total", "Bytes received.", |c| {
                c.bytes_in.load(Relaxed)
            }),
            (
                "imgate_frames_out_total",
                "Frames queued to clients.",
                |c| c.frames_out.load(Relaxed),
            ),
            ("imgate_bytes_out_total", "Bytes written to clients.", |c| {
                c.bytes_out.load(Relaxed)
            }),
            ("imgate_protocol_errors_total", "Protocol errors.", |c| {
                c.protocol_errors.load(Relaxed)
            }),
            (
                "imgate_ws_upgrades_total",
                "WebSocket upgrades accepted.",
                |c| c.ws_upgrades.load(Relaxed),
            ),
            (
                "imgate_ws_refused_total",
                "WebSocket upgrades refused, and WebSocket connections closed for a bad frame or a text message.",
                |c| c.ws_refused.load(Relaxed),
            ),
            (
                "imgate_demo_served_total",
                "Demo page and browser client responses.",
                |c| c.demo_served.load(Relaxed),
            ),
            (
                "imgate_tls_handshakes_total",
                "TLS handshakes completed.",
                |c| c.tls_handshakes.load(Relaxed),
            ),
            (
                "imgate_tls_failures_total",
                "TLS connections ended for bad TLS (failed handshake, bad record).",
                |c| c.tls_failures.load(Relaxed),
            ),
            (
                "imgate_overloaded_total",
                "Requests refused: backend queue full.",
                |c| c.overloaded.load(Relaxed),
            ),
            ("imgate_push_retransmits_total", "Pushes re-sent.", |c| {
                c.push_retransmits.load(Relaxed)
            }),
        ];
        for (name, help, get) in per_core {
            family_header(&mut s, name, help);
            for (i, c) in self.cores.iter().enumerate() {
                let _ = writeln!(s, "{name}{{core=\"{i}\"}} {}", get(c));
            }
        }
        let _ = writeln!(
            s,
            "# HELP imgate_kicks_total Connections kicked, by reason.\n# TYPE imgate_kicks_total counter"
        );
        for &r in KICK_REASONS {
            let _ = writeln!(s, "imgate_kicks_total{{reason=\"{r}\"}} {}", self.kicks(r));
        }
        let _ = writeln!(
            s,
            "# HELP imgate_backend_queue_batches Batches waiting for the backend.\n# TYPE imgate_backend_queue_batches gauge\nimgate_backend_queue_batches {}",
            self.backend_queue.load(Relaxed).max(0)
        );
        let (rss, fds) = process_stats();
        let _ = writeln!(
            s,
            "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
        let _ = writeln!(
            s,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {fds}"
        );
        let _ = writeln!(
            s,
            "# HELP process_cpu_seconds_total CPU time used.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.3}",
            cpu_seconds()
        );
        self.render_transports(&mut s);
        if let Some(b) = self.backend.get() {
            b.render(&mut s);
        }
        s
    }

    /// The per-transport counters, summed over cores.
    fn render_transports(&self, s: &mut String) {
        type Get = fn(&TransportMetrics) -> u64;
        let families: [(&str, &str, Get); 6] = [
            (
                "imgate_transport_connections",
                "Open connections, by transport.",
                |t| t.connections.load(Relaxed).max(0) as u64,
            ),
            (
                "imgate_transport_accepted_total",
                "Connections accepted, by transport.",
                |t| t.accepted.load(Relaxed),
            ),
            (
                "imgate_transport_logins_total",
                "Successful logins, by transport.",
                |t| t.logins.load(Relaxed),
            ),
            (
                "imgate_transport_bytes_in_total",
                "Bytes received on the wire, by transport.",
                |t| t.bytes_in.load(Relaxed),
            ),
            (
                "imgate_transport_bytes_out_total",
                "Bytes written on the wire, by transport.",
                |t| t.bytes_out.load(Relaxed),
            ),
            (
                "imgate_transport_kicks_total",
                "Connections kicked, by transport.",
                |t| t.kicks.load(Relaxed),
            ),
        ];
        for (name, help, get) in families {
            family_header(s, name, help);
            for (i, t) in TRANSPORTS.iter().enumerate() {
                let v: u64 = self
                    .cores
                    .iter()
                    .filter_map(|c| c.transports.get(i))
                    .map(get)
                    .sum();
                let _ = writeln!(s, "{name}{{transport=\"{t}\"}} {v}");
            }
        }
    }
}

/// A metric family's HELP and TYPE lines; a name ending in `_total` is a
/// counter, any other a gauge.
fn family_header(s: &mut String, name: &str, help: &str) {
    let kind = if name.ends_with("_total") {
        "counter"
    } else {
        "gauge"
    };
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub use crate::process::{cpu_seconds, process_stats};
