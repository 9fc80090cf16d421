//! The open-loop pacer: sends on a fixed schedule, whatever the gateway
//! does.
//!
//! Every sender sends once per `period`; their first sends are spread
//! evenly over the first period (`phase`), so the thread's aggregate is a
//! steady stream. The pacer walks the senders in phase order, round after
//! round, sending each message whose scheduled time has come and sleeping
//! (1 ms timer resolution) when the next one is in the future: one wake-up
//! sends everything that became due, and each connection's frames of that
//! wake-up go out in one write. A late pacer does not skip or compress
//! sends: it sends what is overdue at once, and the latency of those
//! messages counts from their scheduled time, so falling behind shows in
//! the figures (and in the schedule lag) instead of hiding.

use std::{rc::Rc, time::Instant};

use super::{
    SenderPlan,
    conn::{Conn, Segment},
    player::{Player, ensure_sender},
};

struct Slot {
    conn: Rc<Conn>,
    t0: u64,
}

/// Runs one traffic phase of this thread's senders.
pub(crate) async fn run(p: &Rc<Player>, plans: Vec<SenderPlan>, start: u64, period: u64, end: u64) {
    let period = period.max(1);
    let mut slots: Vec<Slot> = Vec::with_capacity(plans.len());
    for plan in plans {
        let Some(c) = p.conn(plan.id) else {
            continue;
        };
        let t0 = start + plan.phase_ns % period;
        {
            let mut s = ensure_sender(&c, plan.dest);
            if let Some(s) = s.as_mut() {
                s.dest = plan.dest;
                let k0 = s.next_counter();
                s.segments.push(Segment { k0, t0, period });
            }
        }
        slots.push(Slot { conn: c, t0 });
    }
    slots.sort_by_key(|s| s.t0);
    if slots.is_empty() {
        wait_until(p, end).await;
        return;
    }
    let clock = p.opts.clock;
    let mut round: u64 = 0;
    let mut j = 0;
    loop {
        if j == slots.len() {
            j = 0;
            round += 1;
        }
        let due = slots[j].t0.saturating_add(round.saturating_mul(period));
        if due >= end || p.stopping.get() || p.traffic_stop.get() {
            break;
        }
        let now = Instant::now();
        if due > clock.ns(now) {
            monoio::time::sleep_until(monoio::time::Instant::from_std(clock.instant(due))).await;
            continue;
        }
        p.send_scheduled(&slots[j].conn, due, now);
        j += 1;
    }
    wait_until(p, end).await;
}

async fn wait_until(p: &Rc<Player>, end: u64) {
    let at = p.opts.clock.instant(end);
    while at > Instant::now() && !p.stopping.get() && !p.traffic_stop.get() {
        let step = at
            .saturating_duration_since(Instant::now())
            .min(std::time::Duration::from_millis(20));
        monoio::time::sleep(step).await;
    }
}
