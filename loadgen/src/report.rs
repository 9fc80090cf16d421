//! The run's result: every figure, how to print it as a table, and the
//! verdict that decides the exit status.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    gwmetrics::GatewaySample,
    measure::{Counters, Hist, Summary, Verdict, WindowStats},
};

/// Figures about opening connections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnFigures {
    /// Connections that logged in.
    pub opened: u64,
    /// Connections that never logged in.
    pub failed: u64,
    /// First connect started -> last first login, seconds.
    pub open_seconds: f64,
    /// Logins per second over that span.
    pub login_rate: f64,
    /// TCP connect time.
    pub connect: Summary,
    /// TCP connected -> TLS handshake done (`--tls`; empty without).
    pub handshake: Summary,
    /// Connect start -> login:ok.
    pub login: Summary,
    /// Cut -> logged in again (storm, chaos).
    pub relogin: Summary,
}

/// Figures of one measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowFigures {
    /// What the window was.
    pub label: String,
    /// Scheduled rate, messages per second.
    pub target_rate: f64,
    /// Length, seconds.
    pub seconds: f64,
    /// Messages sent.
    pub sent: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Deliveries (message x receiver).
    pub delivered: u64,
    /// Sent per second.
    pub send_rate: f64,
    /// Delivered per second.
    pub delivery_rate: f64,
    /// Scheduled send -> msg:A.
    pub ack: Summary,
    /// Scheduled send -> msg:N, every receiver.
    pub delivery: Summary,
    /// Scheduled send -> last member of a group message.
    pub group_last: Summary,
    /// Scheduled send -> ack:N (delivered receipt).
    pub receipt: Summary,
    /// Actual send - scheduled send.
    pub lag: Summary,
}

impl WindowFigures {
    /// Figures of `w`, scheduled at `rate` for `seconds`.
    pub fn of(label: String, rate: f64, seconds: f64, w: &WindowStats) -> WindowFigures {
        let per_s = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        WindowFigures {
            label,
            target_rate: rate,
            seconds,
            sent: w.sent,
            acked: w.acked,
            delivered: w.delivered,
            send_rate: per_s(w.sent),
            delivery_rate: per_s(w.delivered),
            ack: Summary::of(&w.ack),
            delivery: Summary::of(&w.delivery),
            group_last: Summary::of(&w.group_last),
            receipt: Summary::of(&w.receipt),
            lag: Summary::of(&w.lag),
        }
    }
}

/// Memory and CPU of the load generator itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadgenFigures {
    /// Resident memory at the end, bytes.
    pub rss_bytes: u64,
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
}

/// One reading of the gateway's metrics: every endpoint at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayReading {
    /// When in the run it was taken.
    pub label: String,
    /// The figures, summed over the endpoints (one gateway: its own).
    #[serde(flatten)]
    pub sample: GatewaySample,
    /// Each endpoint's own figures, in `--metrics` order.
    pub endpoints: Vec<EndpointReading>,
}

/// One endpoint's part of a reading.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReading {
    /// The metrics endpoint, host:port.
    pub endpoint: String,
    /// Its figures.
    #[serde(flatten)]
    pub sample: GatewaySample,
}

/// What one target (`--target` entry) got.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TargetFigures {
    /// The gateway, host:port.
    pub address: String,
    /// Connections the placement gave it.
    pub placed: u64,
    /// TCP connections it accepted (reconnections and failovers included).
    pub connects: u64,
    /// Logins it answered (re-logins included).
    pub logins: u64,
    /// Connections whose last login was on it.
    pub last: u64,
}

fn as_map<S: serde::Serializer>(
    v: &[(String, serde_json::Value)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        m.serialize_entry(k, val)?;
    }
    m.end()
}

/// Everything a run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// The command line, as parsed (secret left out).
    pub params: serde_json::Value,
    /// This run's id (in every message body).
    pub run_id: u32,
    /// Worker threads.
    pub threads: usize,
    /// io_uring or epoll.
    pub driver: String,
    /// This process's shard.
    pub shard: String,
    /// How connections were placed on the targets.
    pub placement: String,
    /// Per target, in `--target` order.
    pub targets: Vec<TargetFigures>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// Opening connections.
    pub connections: ConnFigures,
    /// Measured windows (one for chat, one per step for capacity).
    pub windows: Vec<WindowFigures>,
    /// The ledger's verdict, for scenarios that send messages.
    pub verdict: Option<Verdict>,
    /// Every counter.
    pub counters: Counters,
    /// Gateway readings, labelled, in order.
    pub gateway: Vec<GatewayReading>,
    /// The load generator's own use.
    pub loadgen: LoadgenFigures,
    /// Scenario-specific figures, in order (an object in JSON).
    #[serde(serialize_with = "as_map")]
    pub figures: Vec<(String, serde_json::Value)>,
    /// Things to know that are not failures.
    pub warnings: Vec<String>,
    /// Why the run failed (non-empty: exit status 1).
    pub failures: Vec<String>,
    /// Latency distributions for `--hgrm` and `--plot`: (window, metric, histogram).
    #[serde(skip)]
    pub hists: Vec<(String, &'static str, Hist)>,
}

impl Report {
    /// Adds a scenario-specific figure.
    pub fn figure(&mut self, name: &str, v: impl Serialize) {
        let v = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        self.figures.push((name.to_string(), v));
    }

    /// Whether the run held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Keeps a window's histograms for the files.
    pub fn keep_hists(&mut self, label: &str, w: &WindowStats) {
        for (name, h) in [
            ("ack", &w.ack),
            ("delivery", &w.delivery),
            ("group_last", &w.group_last),
            ("receipt", &w.receipt),
            ("lag", &w.lag),
        ] {
            if !h.is_empty() {
                self.hists.push((label.to_string(), name, h.clone()));
            }
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== imgate-loadgen {}  run {}  threads {} ({})  shard {}  {:.1} s",
            self.scenario, self.run_id, self.threads, self.driver, self.shard, self.elapsed_s
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "target       {}  placed {}  connects {}  logins {}  last login here {}{}",
                t.address,
                t.placed,
                t.connects,
                t.logins,
                t.last,
                if self.targets.len() > 1 {
                    format!("  ({})", self.placement)
                } else {
                    String::new()
                }
            );
        }
        let c = &self.connections;
        let _ = writeln!(
            s,
            "connections  {} logged in, {} failed, in {:.2} s ({:.0} logins/s)",
            c.opened, c.failed, c.open_seconds, c.login_rate
        );
        let mut lat = vec![("connect", c.connect)];
        if c.handshake.count > 0 {
            lat.push(("tls handshake", c.handshake));
        }
        lat.push(("login", c.login));
        if c.relogin.count > 0 {
            lat.push(("re-login", c.relogin));
        }
        latency_table(&mut s, &lat);
        for w in &self.windows {
            let _ = writeln!(
                s,
                "\nwindow {}: {:.1} s at {:.0} msg/s scheduled\n  sent {} ({:.0}/s)  acked {}  delivered {} ({:.0}/s)",
                w.label,
                w.seconds,
                w.target_rate,
                w.sent,
                w.send_rate,
                w.acked,
                w.delivered,
                w.delivery_rate
            );
            let mut rows = vec![("ack", w.ack), ("delivery", w.delivery)];
            if w.group_last.count > 0 {
                rows.push(("last member", w.group_last));
            }
            rows.push(("receipt", w.receipt));
            rows.push(("schedule lag", w.lag));
            latency_table(&mut s, &rows);
        }
        if let Some(v) = &self.verdict {
            let k = &self.counters;
            let _ = writeln!(
                s,
                "\nmessages     sent {}  acked {}  unacked {}  failed {}  retransmitted {}",
                v.sent, v.acked, v.unacked, k.failed, k.retransmitted
            );
            let _ = writeln!(
                s,
                "deliveries   expected {}  delivered {}  LOST {}  pulled {}  delivered-unacked {}",
                v.expected, v.delivered, v.lost, k.pulled, v.delivered_unacked
            );
            let _ = writeln!(
                s,
                "duplicates   before client de-dup {} (of {} received)  after (application) {}",
                k.duplicates_client, k.received, k.duplicates_app
            );
            let _ = writeln!(
                s,
                "order        out-of-order at client {}  at application {}  gap syncs {}  history skipped {}",
                k.out_of_order_client, k.out_of_order_app, k.gaps_synced, k.history_skipped
            );
            if !v.lost_examples.is_empty() {
                let _ = writeln!(s, "lost, e.g.   {}", v.lost_examples.join(", "));
            }
        }
        if !self.gateway.is_empty() {
            let _ = writeln!(
                s,
                "\ngateway      {:>12} {:>12} {:>12}",
                "rss MiB", "cpu s", "conns"
            );
            for GatewayReading {
                label,
                sample: g,
                endpoints,
            } in &self.gateway
            {
                let _ = writeln!(
                    s,
                    "  {:<10} {:>12.1} {:>12.2} {:>12.0}{}",
                    label,
                    g.rss_bytes / 1048576.0,
                    g.cpu_seconds,
                    g.connections,
                    if endpoints.len() > 1 { "  (sum)" } else { "" }
                );
                if endpoints.len() > 1 {
                    for EndpointReading {
                        endpoint,
                        sample: e,
                    } in endpoints
                    {
                        let _ = writeln!(
                            s,
                            "    {:<8} {:>12.1} {:>12.2} {:>12.0}  {}",
                            "",
                            e.rss_bytes / 1048576.0,
                            e.cpu_seconds,
                            e.connections,
                            endpoint
                        );
                    }
                }
            }
        }
        for (name, v) in &self.figures {
            let _ = writeln!(s, "{name:<28} {}", compact(v));
        }
        let k = &self.counters;
        let _ = writeln!(
            s,
            "loadgen      rss {:.1} MiB  cpu {:.2} s  reconnects {}  cuts {}  connect failures {}  failovers {}",
            self.loadgen.rss_bytes as f64 / 1048576.0,
            self.loadgen.cpu_seconds,
            k.reconnects,
            k.cuts,
            k.connect_failures,
            k.failovers
        );
        for (title, m) in [
            ("connect errors", &k.connect_errors),
            ("kicks", &k.kicks),
            ("server errors", &k.server_errors),
        ] {
            for (what, n) in m {
                let _ = writeln!(s, "{title:<14} {n:>8}  {what}");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(s, "RESULT: PASS");
        } else {
            for f in &self.failures {
                let _ = writeln!(s, "FAILED: {f}");
            }
            let _ = writeln!(s, "RESULT: FAIL");
        }
        s
    }
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn latency_table(s: &mut String, rows: &[(&str, Summary)]) {
    let _ = writeln!(
        s,
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, m) in rows {
        if m.count == 0 {
            let _ = writeln!(s, "  {name:<14} {:>9}", "-");
            continue;
        }
        let _ = writeln!(
            s,
            "  {name:<14} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            m.count, m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms, m.max_ms
        );
    }
}
