//! What the backend and the other cores send a core, through its mailbox:
//! frames for its connections (pushes tracked for re-push), login:ok,
//! kicks, and shutdown.

use std::rc::Rc;

use imgate_codec::{KickReason, frame::LoginOk};

use super::Core;
use crate::{
    backend::{CoreMsg, Inbound, Outbound},
    conn::{Closing, Conn, Phase},
    timers::{Timer, TimerKind},
};

impl Core {
    /// Handles a batch from the mailbox.
    pub(super) fn dispatch(&self, msgs: &mut Vec<CoreMsg>) {
        for msg in msgs.drain(..) {
            match msg {
                CoreMsg::Out(outs) => {
                    for o in outs {
                        match o {
                            Outbound::Send { conn, bytes, track } => {
                                let Some(c) = self.conn(conn) else { continue };
                                if c.phase() != Phase::Active {
                                    continue;
                                }
                                if let Some(track) = track
                                    && c.pushes.track(track, bytes.clone())
                                {
                                    let key = self.wheel.borrow_mut().insert(
                                        self.deadline(self.now_ms(), self.push_timeout_ms),
                                        Timer {
                                            slot: conn.slot,
                                            generation: conn.generation,
                                            kind: TimerKind::Push,
                                        },
                                    );
                                    c.pushes.set_timer(Some(key));
                                }
                                self.deliver(&c, bytes);
                            }
                            Outbound::LoginOk { conn, inbox_head } => {
                                let Some(c) = self.conn(conn) else { continue };
                                let cfg = &self.shared.cfg;
                                let (user, device) = c.user();
                                c.logged_in(&LoginOk {
                                    user,
                                    device,
                                    heartbeat_ms: u32::try_from(cfg.heartbeat_ms)
                                        .unwrap_or(u32::MAX),
                                    server_time: crate::unix_time().as_millis() as u64,
                                    inbox_head,
                                    max_frame: u32::try_from(cfg.max_frame).unwrap_or(u32::MAX),
                                    session: conn.to_u64(),
                                    frame_rate: cfg.max_frames_per_sec,
                                    frame_burst: cfg.frame_burst,
                                    rate_strikes: cfg.rate_limit_strikes,
                                });
                            }
                            Outbound::Kick { conn, reason } => {
                                if let Some(c) = self.conn(conn) {
                                    c.close(Closing::Kick(reason));
                                }
                            }
                        }
                    }
                }
                CoreMsg::Kick {
                    user,
                    device,
                    reason,
                } => {
                    self.to_backend(Inbound::Kick {
                        user,
                        device,
                        reason,
                    });
                    self.flush_backend_soon();
                }
                CoreMsg::Request(ev) => {
                    self.to_backend(*ev);
                    self.flush_backend_soon();
                }
                CoreMsg::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&self) {
        self.stop.raise(1);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in conns {
            c.close(Closing::Kick(KickReason::ServerShutdown));
        }
        if self.conns.borrow().is_empty() {
            self.stop.raise(2);
        }
    }
}
