//! The core's main future: its loops, and what a timer of its wheel does
//! when it fires.

use std::{rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration};

use imgate_codec::KickReason;

use super::Core;
use crate::{
    backend::CoreMsg,
    conn::Closing,
    conn_id::ConnId,
    mailbox::MailboxRx,
    pushes::Repush,
    timers::{self, Liveness, Timer, TimerKind},
    wheel::Wheel,
};

impl Core {
    /// A timer fired.
    fn fire(&self, w: &mut Wheel<Timer>, t: Timer) {
        let Some(conn) = self.conn(ConnId::new(self.id, t.slot, t.generation)) else {
            return;
        };
        let now = w.now();
        match t.kind {
            TimerKind::Liveness => {
                conn.timer.set(None);
                let timeout = self.heartbeat_timeout_ms;
                match timers::liveness(conn.phase(), conn.last_seen(), timeout, self.tick_ms, now) {
                    Liveness::Kick(reason) => {
                        if reason == KickReason::LoginTimeout {
                            self.metrics().login_failures.fetch_add(1, Relaxed);
                        }
                        conn.close(Closing::Kick(reason));
                    }
                    Liveness::LookAgain(due) => {
                        let key = w.insert(due, t);
                        conn.timer.set(Some(key));
                    }
                }
            }
            TimerKind::Push => match conn.pushes.fired(self.shared.cfg.push_retries) {
                Repush::GiveUp => conn.close(Closing::Kick(KickReason::PushUnacked)),
                Repush::Nothing => {}
                Repush::Send(frames) => {
                    self.metrics()
                        .push_retransmits
                        .fetch_add(frames.len() as u64, Relaxed);
                    for f in frames {
                        self.deliver(&conn, f);
                    }
                    let key = w.insert(self.deadline(self.now_ms(), self.push_timeout_ms), t);
                    conn.pushes.set_timer(Some(key));
                }
            },
        }
    }
}

/// The core's main future: runs until shutdown completes.
///
/// `accept` is the listener's accept loop ([`crate::listener::accept_loop`]),
/// which ends when shutdown begins; the core then waits for every
/// connection to say goodbye. The tick, mailbox and flusher loops run
/// inside this future rather than as spawned tasks, so they end with it: a
/// spawned loop would hold the core (and through it the backend's channel)
/// alive forever.
pub(crate) async fn run(
    core: Rc<Core>,
    mailbox: MailboxRx<CoreMsg>,
    accept: impl std::future::Future<Output = ()>,
) {
    let ticks = async {
        // The wheel follows the clock, not a count of sleeps: a late wake-up
        // catches up on the ticks it missed, and no drift accumulates.
        let tick_ms = core.tick_ms;
        loop {
            let next = (core.now_ms() / tick_ms + 1) * tick_ms;
            monoio::time::sleep_until(
                monoio::time::Instant::from_std(core.start) + Duration::from_millis(next),
            )
            .await;
            let to = core.now_ms() / tick_ms;
            let mut w = core.wheel.borrow_mut();
            if to > w.now() {
                w.advance(to, |w, t| core.fire(w, t));
            }
            drop(w);
            // A backlogged batch is retried every tick too.
            core.flush_backend();
        }
    };
    let mail = async {
        let mut msgs = Vec::new();
        while mailbox.recv_into(&mut msgs).await {
            core.dispatch(&mut msgs);
        }
        std::future::pending::<()>().await;
    };
    let flusher = async {
        loop {
            core.flusher.wait(1).await;
            core.flusher.clear(1);
            core.flush_backend();
        }
    };
    let main = async {
        accept.await;
        // Wait for every connection to say goodbye.
        core.stop.wait(2).await;
        core.flush_backend();
    };
    monoio::select! {
        _ = ticks => {},
        _ = mail => {},
        _ = flusher => {},
        _ = main => {},
    }
}
