//! `chat`: P sender/receiver pairs; every sender sends to its receiver on
//! a fixed schedule so that all together send `--rate` messages per second.
//! Pair k is connections 2k (sender) and 2k+1 (receiver).

use std::time::Duration;

use imgate_codec::client::Dest;

use super::{Ctx, RunError, period_ns, plan};
use crate::{cli::ChatArgs, measure::Window, placement::Layout, report::Report};

/// The receiver of sender `id` in a pair layout.
pub(crate) fn peer(id: u32) -> Vec<u32> {
    if id.is_multiple_of(2) {
        vec![id + 1]
    } else {
        Vec::new()
    }
}

/// Opens the shard's pairs; returns (sender ids, opened, failed).
pub(crate) fn open_pairs(
    ctx: &mut Ctx,
    pairs: u32,
    reconnect: bool,
) -> Result<(Vec<u32>, (u32, u32)), RunError> {
    let range = ctx.cli.common.shard.range(pairs);
    let mut specs = Vec::new();
    let mut senders = Vec::new();
    for k in range {
        specs.push(ctx.spec(2 * k, Layout::Pairs));
        specs.push(ctx.spec(2 * k + 1, Layout::Pairs));
        senders.push(2 * k);
    }
    let opened = ctx.open(specs, reconnect)?;
    Ok((senders, opened))
}

/// Checks the rate flags.
pub(crate) fn check_rate(pairs: u32, rate: f64) -> Result<(), RunError> {
    if pairs == 0 {
        return Err(RunError::Usage("--pairs must be at least 1".into()));
    }
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(RunError::Usage("--rate must be above 0".into()));
    }
    Ok(())
}

pub(crate) fn run(mut ctx: Ctx, a: &ChatArgs) -> Result<Report, RunError> {
    check_rate(a.pairs, a.traffic.rate)?;
    let (senders, opened) = open_pairs(&mut ctx, a.pairs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);
    let t = &a.traffic;
    let period = period_ns(u64::from(a.pairs), t.rate);
    let local_rate = t.rate * senders.len() as f64 / f64::from(a.pairs);
    if local_rate / senders.len().max(1) as f64 > 900.0 {
        ctx.report.warnings.push(format!(
            "{:.0} messages/s per sender is near the gateway's default frame-rate limit (1000/s per connection): use more --pairs",
            local_rate / senders.len() as f64
        ));
    }
    let g0 = ctx.sample("before");
    let start = ctx.soon();
    let window = Window::after(start, t.warmup.0, t.duration.0);
    let plans = plan(&senders, period, |id| Dest::User(ctx.user(id + 1)));
    ctx.engine.progress.phase("chat");
    let n = ctx.start_traffic(plans, start, period, window.until_ns, Some(window))?;
    ctx.wait_traffic(n, t.warmup.0 + t.duration.0 + Duration::from_secs(60))?;
    ctx.drain(1);
    let g1 = ctx.sample("after");
    let snap = ctx.engine.snapshot()?;
    ctx.window(
        format!("chat {:.0}/s", local_rate),
        local_rate,
        t.duration.0.as_secs_f64(),
        &snap,
        0,
    );
    if let (Some(g0), Some(g1)) = (g0, g1) {
        gateway_cpu(&mut ctx.report, &g0, &g1, Some((local_rate, "msg/s")));
    }
    ctx.finish(&peer, opened)
}

/// Gateway CPU over a traffic phase, and per 1,000 of `per` (a rate and
/// its unit: messages/s for chat, deliveries/s for groups).
pub(crate) fn gateway_cpu(
    r: &mut Report,
    g0: &crate::gwmetrics::GatewaySample,
    g1: &crate::gwmetrics::GatewaySample,
    per: Option<(f64, &str)>,
) {
    let (Some(a), Some(b)) = (g0.at, g1.at) else {
        return;
    };
    let secs = b.duration_since(a).as_secs_f64();
    if secs <= 0.0 {
        return;
    }
    let pct = 100.0 * (g1.cpu_seconds - g0.cpu_seconds) / secs;
    r.figure("gateway cpu % (phase)", pct);
    if let Some((rate, unit)) = per
        && rate > 0.0
    {
        r.figure(
            &format!("gateway cpu % per 1k {unit}"),
            pct / (rate / 1000.0),
        );
    }
    r.figure("gateway rss MiB (after)", g1.rss_bytes / 1048576.0);
}
