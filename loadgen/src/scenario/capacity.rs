//! `capacity`: chat in steps of increasing rate on the same connections,
//! until a step misses the objective (by default p99 delivery latency at
//! most 10 ms, every message of the step delivered by the time it is
//! judged, and at least 95 % of the scheduled messages sent). Reports the
//! highest rate that held. The load generator's own lag is recorded per
//! step: it is part of the latencies (they count from the scheduled time),
//! and a step where it is high says the load generator, not the gateway,
//! may be the limit.

use std::time::Duration;

use imgate_codec::client::Dest;
use serde::Serialize;

use super::{Ctx, RunError, period_ns, plan};
use crate::{cli::CapacityArgs, measure::Window, report::Report};

#[derive(Serialize)]
struct Step {
    rate: f64,
    held: bool,
    why: String,
    delivery_ms_at_percentile: f64,
    loadgen_lag_p99_ms: f64,
}

pub(crate) fn run(mut ctx: Ctx, a: &CapacityArgs) -> Result<Report, RunError> {
    super::chat::check_rate(a.pairs, a.start)?;
    if a.step.is_nan() || a.step <= 0.0 || a.max < a.start {
        return Err(RunError::Usage(
            "--step must be above 0 and --max at least --start".into(),
        ));
    }
    if !(0.0..100.0).contains(&a.percentile) {
        return Err(RunError::Usage("--percentile must be within 0..100".into()));
    }
    let (senders, opened) = super::chat::open_pairs(&mut ctx, a.pairs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);
    let share = senders.len() as f64 / f64::from(a.pairs);
    let objective_ms = a.objective.0.as_secs_f64() * 1000.0;
    let mut rate = a.start;
    let mut best: Option<f64> = None;
    let mut steps = Vec::new();
    let mut i = 0;
    loop {
        let period = period_ns(u64::from(a.pairs), rate);
        let start = ctx.soon();
        let window = Window::after(start, a.settle.0, a.step_duration.0);
        let plans = plan(&senders, period, |id| Dest::User(ctx.user(id + 1)));
        ctx.engine.progress.phase("capacity");
        let n = ctx.start_traffic(plans, start, period, window.until_ns, Some(window))?;
        ctx.wait_traffic(n, a.settle.0 + a.step_duration.0 + Duration::from_secs(60))?;
        // Judge after a short drain: long enough for anything within the
        // objective, short enough not to let a backlog hide.
        ctx.engine
            .pause((a.objective.0 * 20).clamp(Duration::from_millis(200), Duration::from_secs(2)));
        let snap = ctx.engine.snapshot()?;
        let local = rate * share;
        let Some(w) = snap.windows.get(i) else {
            break;
        };
        let lat = w.delivery.value_at_quantile(a.percentile / 100.0) as f64 / 1000.0;
        let lag99 = w.lag.value_at_quantile(0.99) as f64 / 1000.0;
        let achieved = w.sent as f64 / a.step_duration.0.as_secs_f64();
        let mut why = Vec::new();
        if lat > objective_ms {
            why.push(format!(
                "p{} delivery {lat:.3} ms > {objective_ms} ms",
                a.percentile
            ));
        }
        if w.delivered < w.sent {
            why.push(format!(
                "{} of {} messages undelivered when judged",
                w.sent - w.delivered,
                w.sent
            ));
        }
        if achieved < 0.95 * local {
            why.push(format!("sent {achieved:.0}/s of {local:.0}/s scheduled"));
        }
        let held = why.is_empty();
        ctx.window(
            format!("step {} {:.0}/s", i + 1, local),
            local,
            a.step_duration.0.as_secs_f64(),
            &snap,
            i,
        );
        steps.push(Step {
            rate: local,
            held,
            why: why.join("; "),
            delivery_ms_at_percentile: lat,
            loadgen_lag_p99_ms: lag99,
        });
        i += 1;
        if !held {
            break;
        }
        best = Some(local);
        rate += a.step;
        if rate > a.max {
            ctx.report.warnings.push(format!(
                "--max {} reached with the objective still held",
                a.max
            ));
            break;
        }
    }
    ctx.drain(1);
    match best {
        Some(b) => ctx.report.figure("highest rate that held (msg/s)", b),
        None => ctx.report.failures.push(format!(
            "the objective (p{} delivery <= {objective_ms} ms) did not hold even at {:.0} msg/s",
            a.percentile,
            a.start * share
        )),
    }
    if let Some(last) = steps.last().filter(|s| !s.held) {
        ctx.report
            .figure("first rate that broke (msg/s)", last.rate);
        ctx.report.figure("why it broke", last.why.clone());
    }
    ctx.report.figure("steps", steps);
    ctx.finish(&super::chat::peer, opened)
}
