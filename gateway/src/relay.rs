//! A relay backend that keeps nothing on disk: one-to-one messages get the
//! next sequence id of the receiver's inbox in memory and are pushed to the
//! receiver's online devices; nothing is stored for offline users.
//!
//! It exists to exercise the gateway core (framing, login, routing, push
//! retransmit, kicks) without a store, in tests and benchmarks of the core
//! alone. It is not a delivery guarantee: the default backend is.

use ahash::AHashMap;
use imgate_codec::{
    Body, ErrorCode, Frame,
    frame::{AckA, ErrorFrame, MsgA, MsgN, SyncPage},
};

use crate::backend::{Backend, Inbound, Router, Track};

/// The in-memory relay.
#[derive(Debug, Default)]
pub struct Relay {
    inbox_head: AHashMap<u64, u64>,
    /// Track pushes so the core re-sends unacknowledged ones.
    pub track_pushes: bool,
}

impl Relay {
    /// A relay; with `track_pushes` the core re-sends unacknowledged pushes.
    pub fn new(track_pushes: bool) -> Relay {
        Relay {
            track_pushes,
            ..Relay::default()
        }
    }
}

impl Backend for Relay {
    fn handle(&mut self, batch: &mut Vec<Inbound>, out: &mut Router) {
        for ev in batch.drain(..) {
            if out.control(&ev) {
                continue;
            }
            let (conn, user, frame) = match ev {
                Inbound::Login { conn, user, .. } => {
                    let head = self.inbox_head.get(&user).copied().unwrap_or(0);
                    out.login_ok(conn, head);
                    continue;
                }
                Inbound::Frame {
                    conn, user, frame, ..
                } => (conn, user, frame),
                Inbound::Closed { .. } | Inbound::Replaced { .. } | Inbound::Kick { .. } => {
                    continue;
                }
            };
            let now = crate::unix_time().as_millis() as u64;
            match frame {
                Frame::MsgR(m) if m.group == 0 => {
                    let head = self.inbox_head.entry(m.to).or_insert(0);
                    *head += 1;
                    let seq = *head;
                    out.to_conn(
                        conn,
                        MsgA {
                            msg_id: m.msg_id,
                            group: 0,
                            seq,
                            own_seq: 0,
                            server_time: now,
                        }
                        .to_bytes(),
                        None,
                    );
                    let n = MsgN {
                        group: 0,
                        seq,
                        from: user,
                        to: m.to,
                        msg_id: m.msg_id,
                        server_time: now,
                        retry: false,
                        body: m.body,
                    }
                    .to_bytes();
                    let track = self.track_pushes.then_some(Track { group: 0, seq });
                    out.to_user(m.to, None, &n, track);
                }
                Frame::AckR(a) => out.to_conn(
                    conn,
                    AckA {
                        group: a.group,
                        seq: a.seq,
                    }
                    .to_bytes(),
                    None,
                ),
                Frame::SyncR(s) => {
                    let head = self.inbox_head.get(&user).copied().unwrap_or(0);
                    out.to_conn(conn, SyncPage::new(s.group, s.after, head).to_bytes(), None);
                }
                other => out.to_conn(
                    conn,
                    ErrorFrame::new(
                        ErrorCode::InvalidRequest,
                        Some(other.kind()),
                        other.request_id(),
                        "not supported by the relay backend",
                    )
                    .to_bytes(),
                    None,
                ),
            }
        }
    }
}
