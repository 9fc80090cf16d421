//! After the commit: the answers and pushes that waited for it, and the
//! reads (pages, summaries, receipts) that must only see committed data.

use ahash::AHashSet;
use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Body, ErrorCode, Frame, KickReason, Kind,
    frame::{
        AckA, AckN, Entry, ErrorFrame, GroupA, GroupOp, MsgN, ReadA, ReadN, ReceiptsA, SyncPage,
    },
};

use super::{
    keys::{self, Answer, Record, StreamId},
    state::State,
};
mod queries;

use queries::{logged_senders, page, receipts, unread};

use crate::{
    backend::{Inbound, Router, Track},
    conn_id::ConnId,
    store::{Store, StoreError, Table, WriteBatch},
};

/// A page to read after the commit.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) conn: ConnId,
    pub(crate) stream: StreamId,
    /// The `after` the client sent (echoed).
    pub(crate) after: u64,
    /// Entries start after this seq.
    pub(crate) from: u64,
    pub(crate) limit: usize,
}

/// An answer waiting for the commit.
#[derive(Debug)]
pub(crate) enum Deferred {
    LoginOk {
        conn: ConnId,
        user: u64,
    },
    Msg {
        conn: ConnId,
        answer: Answer,
        rec: Record,
    },
    Again {
        conn: ConnId,
        msg_id: u64,
        answer: Answer,
    },
    AckA {
        conn: ConnId,
        group: u64,
        seq: u64,
    },
    Delivered {
        user: u64,
        from: u64,
        to: u64,
    },
    Read {
        conn: ConnId,
        reader: u64,
        group: u64,
        peer: u64,
        seq: u64,
        moved: bool,
    },
    Page(Page),
    Unread {
        conn: ConnId,
        user: u64,
        device: u32,
    },
    GroupA {
        conn: ConnId,
        req: u64,
        op: GroupOp,
        group: u64,
        total: usize,
        members: Vec<u64>,
    },
    Receipts {
        conn: ConnId,
        req: u64,
        group: u64,
        seq: u64,
    },
    Error {
        conn: ConnId,
        code: ErrorCode,
        kind: Kind,
        id: u64,
        text: &'static str,
    },
}

impl Deferred {
    /// The request this answers: its connection, and the kind and id an
    /// error frame about it quotes (protocol section 3.3). None for what
    /// answers no request.
    fn request(&self) -> Option<(ConnId, Kind, u64)> {
        Some(match self {
            Deferred::LoginOk { conn, .. } => (*conn, Kind::Login, 0),
            Deferred::Msg { conn, rec, .. } => (*conn, Kind::MsgR, rec.msg_id),
            Deferred::Again { conn, msg_id, .. } => (*conn, Kind::MsgR, *msg_id),
            Deferred::AckA { conn, group, .. } => (*conn, Kind::AckR, *group),
            Deferred::Read { conn, group, .. } => (*conn, Kind::ReadR, *group),
            Deferred::Page(p) => (p.conn, Kind::SyncR, p.stream.wire_group()),
            Deferred::Unread { conn, .. } => (*conn, Kind::UnreadR, 0),
            Deferred::GroupA { conn, req, .. } => (*conn, Kind::GroupR, *req),
            Deferred::Receipts { conn, req, .. } => (*conn, Kind::ReceiptsR, *req),
            Deferred::Error { conn, kind, id, .. } => (*conn, *kind, *id),
            Deferred::Delivered { .. } => return None,
        })
    }
}

fn error(conn: ConnId, code: ErrorCode, kind: Kind, id: u64, text: &str, out: &mut Router) {
    out.to_conn(
        conn,
        ErrorFrame::new(code, Some(kind), id, text).to_bytes(),
        None,
    );
}

/// Sends every deferred answer, in order.
pub(crate) fn emit_all(
    deferred: &mut Vec<Deferred>,
    state: &mut State,
    store: &dyn Store,
    batch: &mut WriteBatch,
    out: &mut Router,
) {
    for d in deferred.drain(..) {
        let request = d.request();
        if let Err(e) = emit(d, state, store, batch, out) {
            tracing::error!(error = %e, "store read failed");
            if let Some((conn, kind, id)) = request {
                error(conn, ErrorCode::Internal, kind, id, "storage error", out);
            }
        }
    }
}

fn emit(
    d: Deferred,
    state: &mut State,
    store: &dyn Store,
    batch: &mut WriteBatch,
    out: &mut Router,
) -> Result<(), StoreError> {
    match d {
        Deferred::LoginOk { conn, user } => {
            let head = state.head(store, StreamId::inbox(user))?;
            out.login_ok(conn, head);
            // Receipts that moved while this device was away: the latest
            // mark of every conversation, which covers all before it.
            let from = keys::receipt_key(user, 0);
            let end = keys::receipt_key(user.saturating_add(1), 0);
            let mut marks = Vec::new();
            store.scan(Table::Meta, &from, &end, &mut |k, v| {
                if let (Some(peer), Some(d), Some(r)) = (
                    keys::key_tail_u64(k),
                    keys::u64_value(v),
                    v.get(8..).and_then(keys::u64_value),
                ) {
                    marks.push((peer, d, r));
                }
                true
            })?;
            for (peer, d, r) in marks {
                if d > 0 {
                    out.to_conn(
                        conn,
                        AckN {
                            peer,
                            group: 0,
                            seq: d,
                        }
                        .to_bytes(),
                        None,
                    );
                }
                if r > 0 {
                    out.to_conn(
                        conn,
                        ReadN {
                            reader: peer,
                            group: 0,
                            peer: user,
                            seq: r,
                        }
                        .to_bytes(),
                        None,
                    );
                }
            }
        }
        Deferred::Msg { conn, answer, rec } => {
            out.to_conn(conn, answer.msg_a(rec.msg_id).to_bytes(), None);
            let n = MsgN {
                group: answer.group,
                seq: answer.seq,
                from: rec.from,
                to: rec.to,
                msg_id: rec.msg_id,
                server_time: answer.time,
                retry: false,
                body: rec.body,
            };
            if answer.group == 0 {
                let own = MsgN {
                    seq: answer.own_seq,
                    ..n.clone()
                };
                out.to_user(
                    rec.to,
                    None,
                    &n.to_bytes(),
                    Some(Track {
                        group: 0,
                        seq: answer.seq,
                    }),
                );
                out.to_user(
                    rec.from,
                    Some(conn),
                    &own.to_bytes(),
                    Some(Track {
                        group: 0,
                        seq: answer.own_seq,
                    }),
                );
            } else {
                // Encoded once; every member's connection gets the same bytes.
                let bytes = n.to_bytes();
                let track = Some(Track {
                    group: answer.group,
                    seq: answer.seq,
                });
                let members: Vec<u64> = state
                    .group(store, answer.group)?
                    .map(|g| g.members.keys().copied().collect())
                    .unwrap_or_default();
                for m in members {
                    out.to_user(m, Some(conn), &bytes, track);
                }
            }
        }
        Deferred::Again {
            conn,
            msg_id,
            answer,
        } => out.to_conn(conn, answer.msg_a(msg_id).to_bytes(), None),
        Deferred::AckA { conn, group, seq } => {
            out.to_conn(conn, AckA { group, seq }.to_bytes(), None);
        }
        Deferred::Delivered { user, from, to } => {
            // Who sent what was just delivered: they get a receipt.
            let senders = match state.delivered_senders(user, from, to) {
                Some(s) => s,
                None => logged_senders(store, user, from, to)?,
            };
            let receipt = AckN {
                peer: user,
                group: 0,
                seq: to,
            }
            .to_bytes();
            for sender in senders {
                state.raise_mark(store, batch, sender, user, to, 0)?;
                out.to_user(sender, None, &receipt, None);
            }
        }
        Deferred::Read {
            conn,
            reader,
            group,
            peer,
            seq,
            moved,
        } => {
            out.to_conn(conn, ReadA { group, peer, seq }.to_bytes(), None);
            if moved {
                let n = ReadN {
                    reader,
                    group,
                    peer,
                    seq,
                }
                .to_bytes();
                if group == 0 {
                    out.to_user(peer, None, &n, None);
                }
                out.to_user(reader, Some(conn), &n, None);
            }
        }
        Deferred::Page(p) => page(p, state, store, out)?,
        Deferred::Unread { conn, user, device } => unread(conn, user, device, state, store, out)?,
        Deferred::GroupA {
            conn,
            req,
            op,
            group,
            total,
            members,
        } => {
            let a = GroupA {
                req,
                op: op as u8,
                group,
                total: u32::try_from(total).unwrap_or(u32::MAX),
                members: Bytes::new(),
            }
            .with_members(&members);
            out.to_conn(conn, a.to_bytes(), None);
        }
        Deferred::Receipts {
            conn,
            req,
            group,
            seq,
        } => receipts(conn, req, group, seq, state, store, out)?,
        Deferred::Error {
            conn,
            code,
            kind,
            id,
            text,
        } => error(conn, code, kind, id, text, out),
    }
    Ok(())
}

/// A commit failed: answer every request of the batch with `storage_full`
/// and `text` (a login is kicked: it cannot be recorded).
pub(crate) fn refuse_all(deferred: &mut Vec<Deferred>, text: &str, out: &mut Router) {
    for d in deferred.drain(..) {
        match d {
            // A refusal stays what it was.
            Deferred::Error {
                conn,
                code,
                kind,
                id,
                text,
            } => error(conn, code, kind, id, text, out),
            Deferred::LoginOk { conn, .. } => out.kick(conn, KickReason::ServerShutdown),
            d => {
                if let Some((conn, kind, id)) = d.request() {
                    error(conn, ErrorCode::StorageFull, kind, id, text, out);
                }
            }
        }
    }
}

/// The store is failing, or the event would grow a store short of
/// space: refuse it with `storage_full` and `text`, without touching it.
pub(crate) fn refuse_event(ev: Inbound, text: &str, out: &mut Router) {
    match ev {
        Inbound::Login { conn, .. } => out.kick(conn, KickReason::ServerShutdown),
        Inbound::Frame { conn, frame, .. } => {
            let f: &Frame = &frame;
            error(
                conn,
                ErrorCode::StorageFull,
                f.kind(),
                f.request_id(),
                text,
                out,
            );
        }
        Inbound::Closed { .. } | Inbound::Replaced { .. } | Inbound::Kick { .. } => {}
    }
}
