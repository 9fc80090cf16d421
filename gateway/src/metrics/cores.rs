//! The cores' counters as metric families, read from every core's atomics
//! when scraped: one series per core (`core` label), the kicks by reason
//! summed over cores, and the same counters by transport summed over cores
//! (`transport` label). Nothing here runs on a core.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering::Relaxed},
    },
};

use imgate_codec::KickReason;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    CoreMetrics, KICK_REASONS, TRANSPORTS, TransportMetrics,
    encode::{gauge, labelled},
};

/// A family read per core: name as exposed, help, reader.
type PerCore = (&'static str, &'static str, fn(&CoreMetrics) -> u64);

/// A family read per transport and summed over cores.
type PerTransport = (&'static str, &'static str, fn(&TransportMetrics) -> u64);

const PER_CORE: &[PerCore] = &[
    ("imgate_connections", "Open connections.", |c| {
        c.connections.load(Relaxed).max(0).unsigned_abs()
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

const PER_TRANSPORT: &[PerTransport] = &[
    (
        "imgate_transport_connections",
        "Open connections, by transport.",
        open_connections,
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

/// Reads the cores' counters at scrape time.
#[derive(Debug)]
pub(super) struct CoreCollector {
    pub(super) cores: Arc<[CoreMetrics]>,
    pub(super) backend_queue: Arc<AtomicI64>,
}

impl Collector for CoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        for &(name, help, get) in PER_CORE {
            let series = self.cores.iter().enumerate().map(|(i, c)| (i, get(c)));
            labelled(&mut enc, name, help, "core", series)?;
        }
        labelled(
            &mut enc,
            "imgate_kicks_total",
            "Connections kicked, by reason.",
            "reason",
            KICK_REASONS
                .iter()
                .map(|&r| (r.as_str(), kicks(&self.cores, r))),
        )?;
        for &(name, help, get) in PER_TRANSPORT {
            labelled(
                &mut enc,
                name,
                help,
                "transport",
                by_transport(&self.cores, get),
            )?;
        }
        gauge(
            &mut enc,
            "imgate_backend_queue_batches",
            "Batches waiting for the backend.",
            self.backend_queue.load(Relaxed).max(0),
        )
    }
}

/// Open connections of one core and transport (never below 0 when read
/// between a close and its open on another core).
pub(super) fn open_connections(t: &TransportMetrics) -> u64 {
    t.connections.load(Relaxed).max(0).unsigned_abs()
}

/// `get` of every transport, summed over cores, with the transport's name.
pub(super) fn by_transport(
    cores: &[CoreMetrics],
    get: fn(&TransportMetrics) -> u64,
) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    TRANSPORTS.iter().enumerate().map(move |(i, &t)| {
        let sum = cores
            .iter()
            .filter_map(|c| c.transports.get(i))
            .map(get)
            .sum::<u64>();
        (t, sum)
    })
}

/// Kicks for `reason`, summed over cores.
pub(super) fn kicks(cores: &[CoreMetrics], reason: KickReason) -> u64 {
    let i = usize::from(reason.to_wire()).saturating_sub(1);
    cores
        .iter()
        .filter_map(|c| c.kicks.get(i))
        .map(|k| k.load(Relaxed))
        .sum()
}
