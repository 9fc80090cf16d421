//! The scenarios, and what they share: turning the command line into an
//! engine, opening connections, running a traffic phase, draining, and
//! turning the threads' figures into a [`Report`].
//!
//! Users: connection `i` of a scenario logs in as `--user-base + i`,
//! device one. A scenario numbers its connections over all shards;
//! `--shard I/N` takes a contiguous share of its pairs (or groups, or users), so shards
//! never share a user, and a sender and everyone it sends to are always in
//! the same process. That is why one monotonic clock per process is enough
//! for latencies and the ledger closes in each process on its own.
//!
//! Targets: with several `--target`s, each scenario says how it lays out
//! its connections (alone, in pairs, in groups) and [`crate::placement`]
//! picks each connection's target from its index, the same in every shard.

mod capacity;
mod chaos;
mod chat;
mod group;
mod idle;
mod offline;
mod storm;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use imgate_codec::client::Dest;

use crate::{
    cli::{Cli, Driver, Scenario},
    clock::Clock,
    engine::{Cmd, ConnSpec, Engine, EngineError, EngineOpts, Reply, SenderPlan, Snapshot},
    gwmetrics::{self, GatewaySample},
    measure::{Ledger, Summary, Window},
    net,
    placement::{self, Layout},
    progress::Progress,
    report::{
        ConnFigures, EndpointReading, GatewayReading, LoadgenFigures, Report, TargetFigures,
        WindowFigures,
    },
};

/// Why a run could not produce a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// A flag value that cannot work (exit status 2).
    Usage(String),
    /// The run could not be carried out (exit status 3).
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(s) | RunError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for RunError {}

impl From<EngineError> for RunError {
    fn from(e: EngineError) -> Self {
        RunError::Failed(e.to_string())
    }
}

fn usage(s: impl Into<String>) -> RunError {
    RunError::Usage(s.into())
}

/// A running scenario: the engine and what the report collects.
pub(crate) struct Ctx {
    pub(crate) cli: Cli,
    pub(crate) engine: Engine,
    pub(crate) clock: Clock,
    /// Metrics endpoints still read (all of them, until one fails).
    pub(crate) metrics: Vec<SocketAddr>,
    pub(crate) report: Report,
    /// Opened connections, by id, with their thread and target.
    pub(crate) placed: Vec<ConnSpec>,
}

impl Ctx {
    fn progress(&self) -> &Progress {
        &self.engine.progress
    }

    /// The user of connection `id`.
    pub(crate) fn user(&self, id: u32) -> u64 {
        self.cli.common.user_base + u64::from(id)
    }

    /// A spec for connection `id` of a scenario laid out as `layout`, on
    /// the default thread (id mod threads) and the target the placement
    /// gives it.
    pub(crate) fn spec(&self, id: u32, layout: Layout) -> ConnSpec {
        let c = &self.cli.common;
        ConnSpec {
            id,
            user: self.user(id),
            thread: id as usize % self.engine.threads(),
            target: placement::target_of(c.placement, layout, c.target.len(), id),
            group_size: 0,
            history: false,
        }
    }

    /// Opens connections; returns (logged in, failed).
    pub(crate) fn open(
        &mut self,
        specs: Vec<ConnSpec>,
        reconnect: bool,
    ) -> Result<(u32, u32), RunError> {
        let threads = self.engine.threads();
        let mut per: Vec<Vec<ConnSpec>> = vec![Vec::new(); threads];
        for s in &specs {
            per[s.thread % threads].push(*s);
        }
        self.placed.extend(specs.iter().copied());
        self.progress()
            .expected
            .fetch_add(specs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.progress().phase("connecting");
        let cmds = per
            .into_iter()
            .map(|specs| (!specs.is_empty()).then_some(Cmd::Open { specs, reconnect }))
            .collect();
        let timeout = Duration::from_secs(600);
        let mut ok = 0;
        let mut failed = 0;
        for (_, r) in self
            .engine
            .round(cmds, timeout, "connections to log in", |r| {
                matches!(r, Reply::Opened { .. })
            })?
        {
            if let Reply::Opened { ok: o, failed: f } = r {
                ok += o;
                failed += f;
            }
        }
        if ok == 0 && !specs.is_empty() {
            let snap = self.engine.snapshot()?;
            let why: Vec<String> = snap
                .counters
                .connect_errors
                .iter()
                .chain(snap.counters.server_errors.iter())
                .chain(snap.counters.kicks.iter())
                .map(|(k, n)| format!("{k} (x{n})"))
                .collect();
            let targets: Vec<String> = self
                .cli
                .common
                .target
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(RunError::Failed(format!(
                "no connection to {} logged in: {}",
                targets.join(", "),
                if why.is_empty() {
                    "no answer".to_string()
                } else {
                    why.join("; ")
                }
            )));
        }
        Ok((ok, failed))
    }

    /// Starts a traffic phase on every thread (senders on their threads)
    /// without waiting for it.
    pub(crate) fn start_traffic(
        &mut self,
        senders: Vec<SenderPlan>,
        start_ns: u64,
        period_ns: u64,
        end_ns: u64,
        window: Option<Window>,
    ) -> Result<usize, RunError> {
        let threads = self.engine.threads();
        let mut per: Vec<Vec<SenderPlan>> = vec![Vec::new(); threads];
        let where_: std::collections::HashMap<u32, usize> =
            self.placed.iter().map(|s| (s.id, s.thread)).collect();
        for p in senders {
            let t = where_
                .get(&p.id)
                .copied()
                .unwrap_or(p.id as usize % threads);
            per[t].push(p);
        }
        let cmds = per
            .into_iter()
            .map(|senders| {
                Some(Cmd::Traffic {
                    senders,
                    start_ns,
                    period_ns,
                    end_ns,
                    window,
                })
            })
            .collect();
        Ok(self.engine.send(cmds)?)
    }

    /// Waits for `n` traffic phases to end.
    pub(crate) fn wait_traffic(&self, n: usize, timeout: Duration) -> Result<(), RunError> {
        self.engine.wait(n, timeout, "the traffic phase", |r| {
            matches!(r, Reply::TrafficDone)
        })?;
        Ok(())
    }

    /// Waits until every sent message is acknowledged and `expected`
    /// deliveries happened, or `--drain` passed.
    pub(crate) fn drain(&self, fanout: u64) {
        self.progress().phase("draining");
        let end = Instant::now() + self.cli.common.drain.0;
        while Instant::now() < end {
            let p = self.progress();
            let sent = p.sent();
            if p.acked() >= sent && p.delivered() >= sent * fanout {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            p.tick();
        }
    }

    /// A reading of every gateway metrics endpoint, kept in the report
    /// (each, and their sum); returns the sum.
    pub(crate) fn sample(&mut self, label: &str) -> Option<GatewaySample> {
        if self.metrics.is_empty() {
            return None;
        }
        let mut each = Vec::with_capacity(self.metrics.len());
        for &addr in &self.metrics {
            match gwmetrics::scrape(addr) {
                Ok(sample) => each.push(EndpointReading {
                    endpoint: addr.to_string(),
                    sample,
                }),
                Err(e) => {
                    // A sum over fewer processes than before would not
                    // compare with the earlier readings: stop reading.
                    self.report.warnings.push(format!(
                        "no gateway reading ({label}): {e}; no more readings this run (use --metrics none to skip, or list only live endpoints)"
                    ));
                    self.metrics.clear();
                    return None;
                }
            }
        }
        let samples: Vec<GatewaySample> = each.iter().map(|r| r.sample).collect();
        let total = gwmetrics::sum(&samples);
        self.report.gateway.push(GatewayReading {
            label: label.to_string(),
            sample: total,
            endpoints: each,
        });
        Some(total)
    }

    /// Time on the run's clock a moment from now, for a phase start.
    pub(crate) fn soon(&self) -> u64 {
        self.clock.now_ns() + 200_000_000
    }

    /// Fills the report's connection figures from a snapshot.
    pub(crate) fn conn_figures(&mut self, snap: &Snapshot, opened: u32, failed: u32) {
        let open_seconds = snap
            .open_span
            .map_or(0.0, |(a, b)| b.saturating_duration_since(a).as_secs_f64());
        self.report.connections = ConnFigures {
            opened: u64::from(opened),
            failed: u64::from(failed),
            open_seconds,
            login_rate: if open_seconds > 0.0 {
                f64::from(opened) / open_seconds
            } else {
                0.0
            },
            connect: Summary::of(&snap.connect),
            handshake: Summary::of(&snap.handshake),
            login: Summary::of(&snap.login),
            relogin: Summary::of(&snap.relogin),
        };
    }

    /// Adds a window's figures and histograms to the report.
    pub(crate) fn window(
        &mut self,
        label: String,
        rate: f64,
        seconds: f64,
        snap: &Snapshot,
        i: usize,
    ) {
        if let Some(w) = snap.windows.get(i) {
            self.report
                .windows
                .push(WindowFigures::of(label.clone(), rate, seconds, w));
            self.report.keep_hists(&label, w);
        }
    }

    /// Logs out, merges everything, judges the ledger against `audience`.
    pub(crate) fn finish(
        self,
        audience: &dyn Fn(u32) -> Vec<u32>,
        opened: (u32, u32),
    ) -> Result<Report, RunError> {
        let Ctx {
            engine,
            mut report,
            cli,
            placed,
            ..
        } = self;
        engine.progress.phase("closing");
        let (snap, ledger): (Snapshot, Ledger) = engine.finish()?;
        if report.connections.opened == 0 {
            let mut c = Ctx::conn_figures_of(&snap, opened.0, opened.1);
            c.relogin = Summary::of(&snap.relogin);
            report.connections = c;
        } else {
            report.connections.relogin = Summary::of(&snap.relogin);
        }
        report.counters = snap.counters.clone();
        report.targets = cli
            .common
            .target
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let t = snap.targets.get(i).copied().unwrap_or_default();
                TargetFigures {
                    address: addr.to_string(),
                    placed: placed.iter().filter(|s| s.target == i).count() as u64,
                    connects: t.connects,
                    logins: t.logins,
                    last: t.last,
                }
            })
            .collect();
        report.loadgen = LoadgenFigures {
            rss_bytes: snap.rss,
            cpu_seconds: crate::process::cpu_seconds(),
        };
        if !ledger.senders.is_empty() {
            let v = ledger.verdict(audience);
            if v.lost > 0 {
                report.failures.push(format!(
                    "{} deliveries of messages the server acknowledged never arrived (after a {:?} drain)",
                    v.lost, cli.common.drain.0
                ));
            }
            if v.unacked > 0 {
                report.warnings.push(format!(
                    "{} messages were never acknowledged (failed, or still waiting at the end)",
                    v.unacked
                ));
            }
            report.verdict = Some(v);
        }
        let k = &report.counters;
        if k.duplicates_app > 0 {
            report.failures.push(format!(
                "{} messages reached the application twice (same sender and number, after the client's de-duplication)",
                k.duplicates_app
            ));
        }
        if k.history_skipped > 0 {
            report.warnings.push(format!(
                "the server answered sync for {} messages with nothing (history skipped): a backend that does not store messages (the relay backend) cannot deliver to users who were offline or dropped a push",
                k.history_skipped
            ));
        }
        if k.stale > 0 {
            report.warnings.push(format!(
                "inboxes held {} messages from before this run at the first login; they were skipped (a fresh --user-base avoids them)",
                k.stale
            ));
        }
        if k.foreign > 0 {
            report.warnings.push(format!(
                "{} messages from other runs or other clients were ignored (use a fresh --user-base)",
                k.foreign
            ));
        }
        if k.unmatched > 0 {
            report.warnings.push(format!(
                "{} answers could not be matched to a sent message",
                k.unmatched
            ));
        }
        if report.connections.failed > 0 {
            report.warnings.push(format!(
                "{} connections never logged in",
                report.connections.failed
            ));
        }
        let lag_warn = cli.common.lag_warn.0.as_secs_f64() * 1000.0;
        for w in &report.windows {
            if w.lag.count > 0 && w.lag.p99_ms > lag_warn {
                report.warnings.push(format!(
                    "the load generator fell behind its schedule in {}: send lag p99 {:.3} ms, max {:.3} ms (above --lag-warn {:.1} ms); latencies still count from the scheduled times",
                    w.label, w.lag.p99_ms, w.lag.max_ms, lag_warn
                ));
            }
        }
        Ok(report)
    }

    fn conn_figures_of(snap: &Snapshot, opened: u32, failed: u32) -> ConnFigures {
        let open_seconds = snap
            .open_span
            .map_or(0.0, |(a, b)| b.saturating_duration_since(a).as_secs_f64());
        ConnFigures {
            opened: u64::from(opened),
            failed: u64::from(failed),
            open_seconds,
            login_rate: if open_seconds > 0.0 {
                f64::from(opened) / open_seconds
            } else {
                0.0
            },
            connect: Summary::of(&snap.connect),
            handshake: Summary::of(&snap.handshake),
            login: Summary::of(&snap.login),
            relogin: Summary::of(&snap.relogin),
        }
    }
}

/// Plans senders `ids` (in order) to send once per `period` to `dest(id)`,
/// their first sends spread evenly over the first period.
pub(crate) fn plan(ids: &[u32], period: u64, dest: impl Fn(u32) -> Dest) -> Vec<SenderPlan> {
    let n = ids.len().max(1) as u64;
    ids.iter()
        .enumerate()
        .map(|(i, &id)| SenderPlan {
            id,
            dest: dest(id),
            phase_ns: (u128::from(period) * i as u128 / u128::from(n)) as u64,
        })
        .collect()
}

/// The period between one sender's messages so that `senders` senders
/// make `rate` messages per second together.
pub(crate) fn period_ns(senders: u64, rate: f64) -> u64 {
    ((senders as f64) * 1e9 / rate).max(1.0) as u64
}

/// Checks `--target`: at least one address, none twice (a second entry of
/// the same gateway would put a "spread" pair on one node).
fn check_targets(targets: &[SocketAddr]) -> Result<(), RunError> {
    if targets.is_empty() {
        return Err(usage("--target: at least one address"));
    }
    for (i, a) in targets.iter().enumerate() {
        if targets[..i].contains(a) {
            return Err(usage(format!("--target: {a} is listed twice")));
        }
    }
    Ok(())
}

/// Runs the scenario `cli` names and returns its report (with the files
/// asked for written). The report's `failures` decide the verdict.
pub fn run(cli: Cli) -> Result<Report, RunError> {
    let started = Instant::now();
    let c = &cli.common;
    if c.size < crate::body::HEADER {
        return Err(usage(format!(
            "--size {}: at least {} bytes",
            c.size,
            crate::body::HEADER
        )));
    }
    if c.max_in_flight == 0 {
        return Err(usage("--max-in-flight must be at least 1"));
    }
    check_targets(&c.target)?;
    let sources = net::parse_sources(&c.source_ips).map_err(usage)?;
    let metrics = gwmetrics::parse_endpoints(&c.metrics).map_err(usage)?;
    let tls = crate::tls::settings(c).map_err(usage)?;
    let threads = if c.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        c.threads
    };
    let uring = match c.driver {
        Driver::Auto => monoio::utils::detect_uring(),
        Driver::Uring => {
            if !monoio::utils::detect_uring() {
                return Err(usage(
                    "--driver uring: io_uring is not available on this kernel",
                ));
            }
            true
        }
        Driver::Epoll => false,
    };
    let _ = crate::process::raise_fd_limit();
    let clock = Clock::new();
    let run_id = (crate::process::unix_time().as_millis() as u32) ^ (std::process::id() << 16);
    let progress = Arc::new(Progress::new(threads, c.quiet));
    let opts = EngineOpts {
        targets: c.target.clone(),
        sources,
        threads,
        uring,
        secret: c.secret.clone(),
        run: run_id,
        body_size: c.size,
        connect_concurrency: c.connect_concurrency,
        connect_retries: c.connect_retries,
        connect_timeout: Duration::from_secs(10),
        receipts: !c.no_receipts,
        max_in_flight: c.max_in_flight,
        clock,
        ws_path: (c.transport == crate::cli::Transport::Ws).then(|| c.ws_path.clone()),
        tls: tls.as_ref().map(|t| t.config.clone()),
        tls_server_name: tls.and_then(|t| t.server_name),
    };
    let engine = Engine::start(opts, progress)?;
    let report = Report {
        scenario: cli.scenario.name().to_string(),
        params: serde_json::to_value(&cli).unwrap_or(serde_json::Value::Null),
        run_id,
        threads,
        driver: if uring { "io_uring" } else { "epoll" }.to_string(),
        shard: c.shard.to_string(),
        placement: c.placement.name().to_string(),
        ..Report::default()
    };
    let ctx = Ctx {
        cli: cli.clone(),
        engine,
        clock,
        metrics,
        report,
        placed: Vec::new(),
    };
    let mut report = match &cli.scenario {
        Scenario::Idle(a) => idle::run(ctx, a)?,
        Scenario::Chat(a) => chat::run(ctx, a)?,
        Scenario::Group(a) => group::run(ctx, a)?,
        Scenario::Offline(a) => offline::run(ctx, a)?,
        Scenario::Storm(a) => storm::run(ctx, a)?,
        Scenario::Chaos(a) => chaos::run(ctx, a)?,
        Scenario::Capacity(a) => capacity::run(ctx, a)?,
    };
    report.elapsed_s = started.elapsed().as_secs_f64();
    let c = &cli.common;
    if let Some(p) = &c.json {
        crate::output::write_json(&report, p).map_err(RunError::Failed)?;
    }
    if let Some(d) = &c.hgrm {
        crate::output::write_hgrm(&report, d).map_err(RunError::Failed)?;
    }
    if let Some(p) = &c.plot {
        crate::output::write_plot(&report, p).map_err(RunError::Failed)?;
    }
    Ok(report)
}
