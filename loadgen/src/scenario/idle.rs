//! `idle`: N connections log in and stay, heartbeating. Reports how fast
//! they logged in, and from the gateway's `/metrics` its resident memory
//! per connection and its CPU while they idle.

use super::{Ctx, RunError};
use crate::{cli::IdleArgs, placement::Layout, report::Report};

pub(crate) fn run(mut ctx: Ctx, a: &IdleArgs) -> Result<Report, RunError> {
    if a.connections == 0 {
        return Err(RunError::Usage("--connections must be at least 1".into()));
    }
    let g0 = ctx.sample("before");
    let specs = ctx
        .cli
        .common
        .shard
        .range(a.connections)
        .map(|i| ctx.spec(i, Layout::Alone))
        .collect();
    let opened = ctx.open(specs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);
    ctx.engine.progress.phase("settling");
    ctx.engine.pause(a.settle.0);
    let g1 = ctx.sample("logged in");
    ctx.engine.progress.phase("holding");
    ctx.engine.pause(a.hold.0);
    let g2 = ctx.sample("after hold");
    let snap = ctx.engine.snapshot()?;
    let n = f64::from(opened.0.max(1));
    ctx.report
        .figure("loadgen rss per conn (bytes)", snap.rss as f64 / n);
    if let (Some(g0), Some(g1)) = (g0, g1) {
        ctx.report.figure("gateway connections", g1.connections);
        ctx.report.figure(
            "gateway rss per conn (bytes)",
            (g1.rss_bytes - g0.rss_bytes) / n,
        );
    }
    if let (Some(g1), Some(g2)) = (g1, g2)
        && let (Some(a), Some(b)) = (g1.at, g2.at)
    {
        let secs = b.duration_since(a).as_secs_f64().max(1e-9);
        ctx.report.figure(
            "gateway cpu % while idle",
            100.0 * (g2.cpu_seconds - g1.cpu_seconds) / secs,
        );
        ctx.report
            .figure("gateway rss / connections, end (bytes)", g2.rss_bytes / n);
        if g2.connections + 0.5 < f64::from(opened.0) {
            ctx.report.failures.push(format!(
                "the gateway holds {} connections after the hold, {} logged in",
                g2.connections, opened.0
            ));
        }
    }
    let k = &snap.counters;
    if k.reconnects > 0 || !k.kicks.is_empty() {
        ctx.report.warnings.push(format!(
            "{} reconnections during the hold (kicks: {:?})",
            k.reconnects, k.kicks
        ));
    }
    ctx.finish(&|_| Vec::new(), opened)
}
