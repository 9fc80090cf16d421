//! `offline`: messages to users who are offline; then they log in and pull
//! their inbox page by page (sync:R). Measures how fast the pulls go and
//! whether every message came. Sender k is connection 2k, its offline
//! receiver 2k+1, as in `chat`.

use std::time::{Duration, Instant};

use imgate_codec::client::Dest;

use super::{Ctx, RunError, period_ns, plan};
use crate::{cli::OfflineArgs, measure::Summary, placement::Layout, report::Report};

pub(crate) fn run(mut ctx: Ctx, a: &OfflineArgs) -> Result<Report, RunError> {
    super::chat::check_rate(a.users, a.rate)?;
    if a.messages == 0 {
        return Err(RunError::Usage("--messages must be at least 1".into()));
    }
    let range: Vec<u32> = ctx.cli.common.shard.range(a.users).collect();
    let senders: Vec<u32> = range.iter().map(|k| 2 * k).collect();
    let specs = senders
        .iter()
        .map(|&id| ctx.spec(id, Layout::Pairs))
        .collect();
    let opened = ctx.open(specs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);

    // Send M messages per receiver while it is offline.
    let period = period_ns(u64::from(a.users), a.rate);
    let start = ctx.soon();
    let end = start + period * u64::from(a.messages);
    let plans = plan(&senders, period, |id| Dest::User(ctx.user(id + 1)));
    ctx.engine.progress.phase("sending");
    let n = ctx.start_traffic(plans, start, period, end, None)?;
    ctx.wait_traffic(
        n,
        Duration::from_nanos(end - start) + Duration::from_secs(60),
    )?;
    ctx.drain(0);
    let acked = ctx.engine.progress.acked();

    // The receivers come online and pull.
    let g0 = ctx.sample("before pull");
    let receivers = range.len() as u64;
    let specs = range
        .iter()
        .map(|k| {
            let mut s = ctx.spec(2 * k + 1, Layout::Pairs);
            s.history = true;
            s
        })
        .collect();
    ctx.engine.progress.phase("pulling");
    let pull_start = Instant::now();
    let got = ctx.open(specs, true)?;
    let deadline = pull_start + a.pull_timeout.0;
    let p = ctx.engine.progress.clone();
    // Until every receiver's pull ended (its last, empty page), or all
    // messages are in and nothing moved for 2 s (a receiver whose inbox
    // was empty at login does not pull at all). The pull time ends at the
    // last change seen: a pull ending or a message arriving.
    let mut done_at = pull_start;
    let mut seen = (0, 0);
    loop {
        let now = Instant::now();
        let cur = (p.syncs(), p.delivered());
        if cur != seen {
            seen = cur;
            done_at = now;
        }
        let quiet = now.duration_since(done_at) > Duration::from_secs(2);
        if cur.0 >= receivers || (cur.1 >= acked && quiet) || now >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        p.tick();
    }
    let pull_secs = done_at.duration_since(pull_start).as_secs_f64();
    let g1 = ctx.sample("after pull");
    let snap = ctx.engine.snapshot()?;
    let k = &snap.counters;
    ctx.report.figure("messages acknowledged", acked);
    ctx.report.figure("receivers logged in", got.0);
    ctx.report.figure("receivers done pulling", k.syncs_done);
    ctx.report.figure("messages pulled", k.pulled);
    ctx.report
        .figure("messages pushed", k.delivered.saturating_sub(k.pulled));
    ctx.report.figure("sync pages asked", k.sync_requests);
    ctx.report.figure("pull time, all receivers (s)", pull_secs);
    ctx.report.figure(
        "pull throughput (msg/s)",
        k.pulled as f64 / pull_secs.max(1e-9),
    );
    ctx.report
        .figure("pull time per receiver", Summary::of(&snap.pull));
    if let (Some(g0), Some(g1)) = (g0, g1) {
        super::chat::gateway_cpu(&mut ctx.report, &g0, &g1, None);
    }
    if p.syncs() < receivers && p.delivered() < acked {
        ctx.report.warnings.push(format!(
            "pulls unfinished after --pull-timeout {:?}: {} of {} receivers done",
            a.pull_timeout.0,
            p.syncs(),
            receivers
        ));
    }
    ctx.finish(&super::chat::peer, (opened.0 + got.0, opened.1 + got.1))
}
