//! `storm`: every connection is cut at the same moment and reconnects at
//! once (no backoff), as after a gateway restart or a network blip. Reports
//! the time until all are logged in again and the re-login latencies; with
//! `--rate`, chat runs through the storm and the ledger shows whether
//! anything was lost.

use std::time::{Duration, Instant};

use imgate_codec::client::Dest;

use super::{Ctx, RunError, period_ns, plan};
use crate::{
    cli::StormArgs,
    engine::{Cmd, Reply},
    report::Report,
};

pub(crate) fn run(mut ctx: Ctx, a: &StormArgs) -> Result<Report, RunError> {
    let pairs = a.connections.div_ceil(2);
    if pairs == 0 {
        return Err(RunError::Usage("--connections must be at least 2".into()));
    }
    let (senders, opened) = super::chat::open_pairs(&mut ctx, pairs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);
    let traffic = if a.rate > 0.0 {
        let period = period_ns(u64::from(pairs), a.rate);
        let start = ctx.soon();
        let plans = plan(&senders, period, |id| Dest::User(ctx.user(id + 1)));
        Some(ctx.start_traffic(plans, start, period, u64::MAX, None)?)
    } else {
        None
    };
    let mut times = Vec::new();
    let mut lost_conns = 0;
    for round in 0..a.rounds {
        ctx.engine.progress.phase("steady");
        ctx.engine.pause(a.pause.0);
        ctx.engine.progress.phase("storm");
        let t = Instant::now();
        let replies = ctx.engine.all(
            |_| Cmd::Storm,
            Duration::from_secs(400),
            "connections to log in again",
            |r| matches!(r, Reply::Relogged { .. }),
        )?;
        let secs = t.elapsed().as_secs_f64();
        let mut ok = 0;
        for (_, r) in replies {
            if let Reply::Relogged { ok: o, failed } = r {
                ok += o;
                lost_conns += failed;
            }
        }
        times.push(secs);
        ctx.report
            .figure(&format!("storm {}: re-logged in", round + 1), ok);
        ctx.report.figure(
            &format!("storm {}: time to all logged in (s)", round + 1),
            secs,
        );
        ctx.report.figure(
            &format!("storm {}: re-logins/s", round + 1),
            f64::from(ok) / secs.max(1e-9),
        );
    }
    ctx.engine.pause(a.pause.0);
    if let Some(n) = traffic {
        ctx.engine.all(
            |_| Cmd::StopTraffic,
            Duration::from_secs(10),
            "traffic to stop",
            |r| matches!(r, Reply::Stopped),
        )?;
        ctx.wait_traffic(n, Duration::from_secs(30))?;
        ctx.drain(1);
    }
    if lost_conns > 0 {
        ctx.report.failures.push(format!(
            "{lost_conns} connections did not log in again within 300 s"
        ));
    }
    ctx.report.figure("storm times (s)", times);
    ctx.finish(&super::chat::peer, opened)
}
