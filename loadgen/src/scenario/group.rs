//! `group`: G groups of S members, created with group:R; every member sends
//! to its group on a schedule. Measures latency to every member and to the
//! last member of each message. A group's members share a thread, so the
//! last-member time is known without crossing threads.

use std::time::Duration;

use imgate_codec::client::Dest;

use super::{Ctx, RunError, period_ns, plan};
use crate::{
    cli::GroupArgs,
    engine::{Cmd, GroupCreate, Reply},
    measure::Window,
    placement::Layout,
    report::Report,
};

pub(crate) fn run(mut ctx: Ctx, a: &GroupArgs) -> Result<Report, RunError> {
    super::chat::check_rate(a.groups, a.traffic.rate)?;
    if a.members < 2 {
        return Err(RunError::Usage("--members must be at least 2".into()));
    }
    let s = a.members;
    let threads = ctx.engine.threads();
    let groups: Vec<u32> = ctx.cli.common.shard.range(a.groups).collect();
    let mut specs = Vec::new();
    for &g in &groups {
        for m in 0..s {
            let mut spec = ctx.spec(g * s + m, Layout::Groups { members: s });
            spec.thread = g as usize % threads;
            spec.group_size = s;
            specs.push(spec);
        }
    }
    let opened = ctx.open(specs, true)?;
    let snap = ctx.engine.snapshot()?;
    ctx.conn_figures(&snap, opened.0, opened.1);

    ctx.engine.progress.phase("groups");
    let mut cmds: Vec<Option<Cmd>> = (0..threads).map(|_| None).collect();
    for &g in &groups {
        let members = (0..s).map(|m| ctx.user(g * s + m)).collect();
        let create = GroupCreate {
            index: g,
            creator: g * s,
            members,
        };
        match &mut cmds[g as usize % threads] {
            Some(Cmd::Groups(v)) => v.push(create),
            slot => *slot = Some(Cmd::Groups(vec![create])),
        }
    }
    let mut ids = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for (_, r) in ctx
        .engine
        .round(cmds, Duration::from_secs(60), "groups to be created", |r| {
            matches!(r, Reply::Groups { .. })
        })?
    {
        if let Reply::Groups { made, errors: e } = r {
            ids.extend(made);
            errors.extend(e);
        }
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        let _ = ctx.engine.finish();
        return Err(RunError::Failed(format!(
            "the gateway's backend refused to create groups ({}): the group scenario needs a backend with groups (not the relay backend)",
            errors.join("; ")
        )));
    }
    let t = &a.traffic;
    let senders: Vec<u32> = groups
        .iter()
        .flat_map(|&g| (0..s).map(move |m| g * s + m))
        .collect();
    let period = period_ns(u64::from(a.groups) * u64::from(s), t.rate);
    let local_rate = t.rate * groups.len() as f64 / f64::from(a.groups);
    let g0 = ctx.sample("before");
    let start = ctx.soon();
    let window = Window::after(start, t.warmup.0, t.duration.0);
    let plans = plan(&senders, period, |id| {
        Dest::Group(ids.get(&(id / s)).copied().unwrap_or(0))
    });
    ctx.engine.progress.phase("group");
    let n = ctx.start_traffic(plans, start, period, window.until_ns, Some(window))?;
    ctx.wait_traffic(n, t.warmup.0 + t.duration.0 + Duration::from_secs(60))?;
    ctx.drain(u64::from(s - 1));
    let g1 = ctx.sample("after");
    let snap = ctx.engine.snapshot()?;
    ctx.window(
        format!("group {:.0}/s x {}", local_rate, s - 1),
        local_rate,
        t.duration.0.as_secs_f64(),
        &snap,
        0,
    );
    let deliveries = local_rate * f64::from(s - 1);
    if let (Some(g0), Some(g1)) = (g0, g1) {
        super::chat::gateway_cpu(
            &mut ctx.report,
            &g0,
            &g1,
            Some((deliveries, "deliveries/s")),
        );
    }
    ctx.report.figure("group fan-out deliveries/s", deliveries);
    let audience = move |id: u32| {
        let g = id / s;
        (0..s).map(|m| g * s + m).filter(|&m| m != id).collect()
    };
    ctx.finish(&audience, opened)
}
