//! `chaos`: chat while, every `--cut-every`, a random `--cut-fraction` of
//! the connections is cut (a reset, no goodbye) and reconnects after a
//! random delay. The client resends what was not acknowledged and pulls
//! what it missed; the ledger must show nothing lost and nothing twice.

use std::time::{Duration, Instant};

use imgate_codec::client::Dest;

use super::{Ctx, RunError, period_ns, plan};
use crate::{
    cli::ChaosArgs,
    engine::{Cmd, Reply},
    measure::Window,
    report::Report,
};

pub(crate) fn run(mut ctx: Ctx, a: &ChaosArgs) -> Result<Report, RunError> {
    super::chat::check_rate(a.pairs, a.traffic.rate)?;
    if !(0.0..=1.0).contains(&a.cut_fraction) {
        return Err(RunError::Usage(
            "--cut-fraction must be within 0..=1".into(),
        ));
    }
    if a.cut_every.0.is_zero() {
        return Err(RunError::Usage("--cut-every must be above 0".into()));
    }
    let (senders, opened) = super::chat::open_pairs(&mut ctx, a.pairs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);
    let t = &a.traffic;
    let period = period_ns(u64::from(a.pairs), t.rate);
    let local_rate = t.rate * senders.len() as f64 / f64::from(a.pairs);
    let start = ctx.soon();
    let window = Window::after(start, t.warmup.0, t.duration.0);
    let plans = plan(&senders, period, |id| Dest::User(ctx.user(id + 1)));
    ctx.engine.progress.phase("chaos");
    let n = ctx.start_traffic(plans, start, period, window.until_ns, Some(window))?;
    let end = ctx.clock.instant(window.until_ns);
    let mut cuts = 0;
    let mut round = 0u64;
    loop {
        let next = Instant::now() + a.cut_every.0;
        if next >= end {
            break;
        }
        ctx.engine.pause(a.cut_every.0);
        round += 1;
        let seed = u64::from(ctx.report.run_id) ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D);
        for (_, r) in ctx.engine.all(
            |_| Cmd::Cut {
                fraction: a.cut_fraction,
                delay_max: a.reconnect_max.0,
                seed,
            },
            Duration::from_secs(10),
            "connections to be cut",
            |r| matches!(r, Reply::Cut(_)),
        )? {
            if let Reply::Cut(k) = r {
                cuts += k;
            }
        }
    }
    ctx.wait_traffic(n, t.warmup.0 + t.duration.0 + Duration::from_secs(60))?;
    // Everyone back, then the usual drain: resends and pulls need a login.
    ctx.engine.progress.phase("reconnecting");
    let all = i64::from(opened.0);
    let back = Instant::now() + Duration::from_secs(30);
    while ctx.engine.progress.logged_in() < all && Instant::now() < back {
        std::thread::sleep(Duration::from_millis(20));
        ctx.engine.progress.tick();
    }
    ctx.drain(1);
    let snap = ctx.engine.snapshot()?;
    ctx.window(
        format!("chaos {:.0}/s", local_rate),
        local_rate,
        t.duration.0.as_secs_f64(),
        &snap,
        0,
    );
    ctx.report.figure("cuts", cuts);
    ctx.report.figure("cut rounds", round);
    ctx.finish(&super::chat::peer, opened)
}
