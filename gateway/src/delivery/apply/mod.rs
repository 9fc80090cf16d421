//! Applying one event: checks, sequence ids, cursors and memberships go
//! into the write batch; the answers wait in `deferred` for the commit.

use imgate_codec::{
    ErrorCode, Frame, Kind,
    frame::{AckR, GroupOp, GroupR, MsgR, ReadR, ReceiptsR, SyncR},
};

mod groups;

use groups::{group, receipts};

use super::{
    emit::{Deferred, Page},
    keys::{self, Answer, Record, StreamId},
    rules,
    state::{Group, State},
};
use crate::{
    backend::Inbound,
    conn_id::ConnId,
    events::Event,
    store::{Store, StoreError, Table, WriteBatch},
};

/// What one request needs to reach the logic.
struct Ctx<'a> {
    now: u64,
    conn: ConnId,
    user: u64,
    device: u32,
    state: &'a mut State,
    store: &'a dyn Store,
    batch: &'a mut WriteBatch,
    out: &'a mut Vec<Deferred>,
}

impl Ctx<'_> {
    fn refuse(&mut self, code: ErrorCode, kind: Kind, id: u64, text: &'static str) {
        self.out.push(Deferred::Error {
            conn: self.conn,
            code,
            kind,
            id,
            text,
        });
    }

    /// Whether the request is the server API's (`crate::replies`): no
    /// client can send from its core number.
    fn is_server(&self) -> bool {
        self.conn.core == crate::replies::API_CORE
    }

    /// The stream a request names, if the user may use it; refuses if not.
    /// Returns the stream and the first sequence id the user may see - 1.
    fn stream(
        &mut self,
        group: u64,
        kind: Kind,
        id: u64,
    ) -> Result<Option<(StreamId, u64)>, StoreError> {
        if group == 0 {
            return Ok(Some((StreamId::inbox(self.user), 0)));
        }
        let user = self.user;
        let server = self.is_server();
        match self.state.group(self.store, group)? {
            None => {
                self.refuse(ErrorCode::NotFound, kind, id, "no such group");
                Ok(None)
            }
            // The server API acts on any group, from its start.
            Some(_) if server => Ok(Some((StreamId::group(group), 0))),
            Some(g) => match g.members.get(&user) {
                Some(join) => Ok(Some((StreamId::group(group), join.seq()))),
                None => {
                    self.refuse(ErrorCode::Forbidden, kind, id, "not a member");
                    Ok(None)
                }
            },
        }
    }
}

/// Applies one event.
pub(crate) fn apply(
    ev: Inbound,
    now: u64,
    state: &mut State,
    store: &dyn Store,
    batch: &mut WriteBatch,
    out: &mut Vec<Deferred>,
) {
    let (conn, user, device, frame) = match ev {
        Inbound::Login {
            conn,
            user,
            device,
            resume,
        } => {
            let mut cx = Ctx {
                now,
                conn,
                user,
                device,
                state,
                store,
                batch,
                out,
            };
            if let Err(e) = login(&mut cx, resume) {
                tracing::error!(error = %e, "store read failed at login");
            }
            cx.out.push(Deferred::LoginOk { conn, user });
            return;
        }
        // The router acts on Replaced and Kick before events reach here.
        Inbound::Closed { .. } | Inbound::Replaced { .. } | Inbound::Kick { .. } => return,
        Inbound::Frame {
            conn,
            user,
            device,
            frame,
        } => (conn, user, device, frame),
    };
    let (kind, id) = (frame.kind(), frame.request_id());
    let mut cx = Ctx {
        now,
        conn,
        user,
        device,
        state,
        store,
        batch,
        out,
    };
    let r = match frame {
        Frame::MsgR(m) => msg(&mut cx, m),
        Frame::AckR(a) => ack(&mut cx, a),
        Frame::ReadR(r) => read(&mut cx, r),
        Frame::SyncR(s) => sync(&mut cx, s),
        Frame::UnreadR(_) => {
            cx.out.push(Deferred::Unread { conn, user, device });
            Ok(())
        }
        Frame::GroupR(g) => group(&mut cx, g),
        Frame::ReceiptsR(r) => receipts(&mut cx, r),
        _ => {
            cx.refuse(ErrorCode::InvalidRequest, kind, id, "not a request");
            Ok(())
        }
    };
    if let Err(e) = r {
        tracing::error!(error = %e, "store read failed");
        cx.refuse(ErrorCode::Internal, kind, id, "storage error; retry");
    }
}

/// A login's `resume` acknowledges the inbox up to it.
fn login(cx: &mut Ctx<'_>, resume: u64) -> Result<(), StoreError> {
    let s = StreamId::inbox(cx.user);
    if cx.state.limits.purge_acked {
        cx.state
            .register_device(cx.store, cx.batch, cx.user, cx.device)?;
    }
    if resume == 0 {
        return Ok(());
    }
    let head = cx.state.head(cx.store, s)?;
    advance_inbox(cx, resume.min(head))
}

/// Moves this device's inbox cursor and, if the user's delivered mark
/// rises, schedules delivered receipts to the senders.
fn advance_inbox(cx: &mut Ctx<'_>, to: u64) -> Result<(), StoreError> {
    let s = StreamId::inbox(cx.user);
    if cx
        .state
        .advance_cursor(cx.store, cx.batch, s, cx.user, cx.device, to)?
        .is_some()
        && let Some(from) = cx.state.raise_delivered(cx.store, cx.user, to)?
    {
        cx.out.push(Deferred::Delivered {
            user: cx.user,
            from,
            to,
        });
    }
    Ok(())
}

fn msg(cx: &mut Ctx<'_>, m: MsgR) -> Result<(), StoreError> {
    let k = Kind::MsgR;
    if let Err((code, text)) = rules::check_msg(&m, cx.user, cx.state.limits.max_body) {
        cx.refuse(code, k, m.msg_id, text);
        return Ok(());
    }
    let digest = keys::digest(m.group, m.to, &m.body);
    if let Some(a) = cx.state.dedup(cx.store, cx.user, m.msg_id, cx.now)? {
        if !a.matches(digest) {
            cx.refuse(
                ErrorCode::MsgIdReused,
                k,
                m.msg_id,
                "msg id already used for another message",
            );
            return Ok(());
        }
        cx.out.push(Deferred::Again {
            conn: cx.conn,
            msg_id: m.msg_id,
            answer: a,
        });
        return Ok(());
    }
    // A group message lands in the group's log; a one-to-one message in the
    // receiver's inbox and in the sender's own (for its other devices).
    let group_log = if m.group == 0 {
        None
    } else {
        let Some((s, _)) = cx.stream(m.group, k, m.msg_id)? else {
            return Ok(());
        };
        Some(s)
    };
    // Read before anything is written: a failed read refuses the request
    // whole, never stores a message without its event.
    let offline = if cx.state.wants_event("message") && !m.no_push {
        offline_recipients(cx, m.to, m.group)?
    } else {
        Vec::new()
    };
    let rec = Record {
        from: cx.user,
        to: if group_log.is_some() { 0 } else { m.to },
        msg_id: m.msg_id,
        time: cx.now,
        body: m.body,
    };
    let mut buf = Vec::new();
    rec.encode_into(&mut buf);
    let answer = match group_log {
        Some(s) => {
            let seq = cx.state.next_seq(cx.store, s)?;
            cx.batch.put(Table::Log, keys::log_key(s, seq), buf);
            Answer {
                group: m.group,
                seq,
                own_seq: 0,
                time: cx.now,
                digest,
            }
        }
        None => {
            let (inbox, own) = (StreamId::inbox(m.to), StreamId::inbox(cx.user));
            let seq = cx.state.next_seq(cx.store, inbox)?;
            let own_seq = cx.state.next_seq(cx.store, own)?;
            cx.batch.put(Table::Log, keys::log_key(inbox, seq), &buf);
            cx.batch.put(Table::Log, keys::log_key(own, own_seq), buf);
            cx.state
                .open_conversation(cx.store, cx.batch, cx.user, m.to)?;
            cx.state.note_sender(m.to, seq, cx.user);
            cx.state.note_sender(cx.user, own_seq, cx.user);
            Answer {
                group: 0,
                seq,
                own_seq,
                time: cx.now,
                digest,
            }
        }
    };
    cx.state.remember(cx.batch, cx.user, m.msg_id, answer);
    if cx.state.wants_event("message") {
        let ev = Event::message(
            rec.from,
            rec.to,
            answer.group,
            rec.msg_id,
            answer.seq,
            answer.own_seq,
            &rec.body,
            !m.no_push,
            offline,
        );
        cx.state.event(cx.batch, cx.now, || ev);
    }
    cx.out.push(Deferred::Msg {
        conn: cx.conn,
        answer,
        rec,
    });
    Ok(())
}

/// Who gets a message of the requesting user to `to` or `group` and has no
/// connection logged in here: the receiver of a one-to-one message, or the
/// group's members but the sender.
fn offline_recipients(cx: &mut Ctx<'_>, to: u64, group: u64) -> Result<Vec<u64>, StoreError> {
    if group == 0 {
        return Ok(if cx.state.is_offline(to) {
            vec![to]
        } else {
            Vec::new()
        });
    }
    let members: Vec<u64> = match cx.state.group(cx.store, group)? {
        Some(g) => g.members.keys().copied().collect(),
        None => Vec::new(),
    };
    let mut offline: Vec<u64> = members
        .into_iter()
        .filter(|&u| u != cx.user && cx.state.is_offline(u))
        .collect();
    offline.sort_unstable();
    Ok(offline)
}

fn ack(cx: &mut Ctx<'_>, a: AckR) -> Result<(), StoreError> {
    let Some((s, join)) = cx.stream(a.group, Kind::AckR, a.group)? else {
        return Ok(());
    };
    let head = cx.state.head(cx.store, s)?;
    if a.seq > head {
        cx.refuse(
            ErrorCode::InvalidRequest,
            Kind::AckR,
            a.group,
            "ack beyond the head",
        );
        return Ok(());
    }
    let to = a.seq.max(join);
    if a.group == 0 {
        advance_inbox(cx, to)?;
    } else {
        cx.state
            .advance_cursor(cx.store, cx.batch, s, cx.user, cx.device, to)?;
    }
    let seq = cx.state.cursor(cx.store, s, cx.user, cx.device)?;
    cx.out.push(Deferred::AckA {
        conn: cx.conn,
        group: a.group,
        seq,
    });
    Ok(())
}

fn read(cx: &mut Ctx<'_>, r: ReadR) -> Result<(), StoreError> {
    let k = Kind::ReadR;
    if let Err((code, text)) = rules::check_read_peer(&r, cx.user) {
        cx.refuse(code, k, r.group, text);
        return Ok(());
    }
    let Some((s, _)) = cx.stream(r.group, k, r.group)? else {
        return Ok(());
    };
    let head = cx.state.head(cx.store, s)?;
    if let Err((code, text)) = rules::check_seq(r.seq, head) {
        cx.refuse(code, k, r.group, text);
        return Ok(());
    }
    // A read receipt reaches only a peer that wrote to the reader: anyone
    // else would be sent receipts of a conversation it never had.
    if r.group == 0 && !cx.state.has_written(cx.store, r.peer, cx.user)? {
        cx.refuse(
            ErrorCode::Forbidden,
            k,
            r.group,
            "the peer never wrote to you",
        );
        return Ok(());
    }
    let (moved, seq) = if r.group == 0 {
        let moved = cx
            .state
            .raise_mark(cx.store, cx.batch, r.peer, cx.user, 0, r.seq)?;
        (moved, cx.state.mark(cx.store, r.peer, cx.user)?.1)
    } else {
        let moved = cx
            .state
            .raise_group_read(cx.store, cx.batch, r.group, cx.user, r.seq)?;
        (moved, cx.state.group_read(cx.store, r.group, cx.user)?)
    };
    cx.out.push(Deferred::Read {
        conn: cx.conn,
        reader: cx.user,
        group: r.group,
        peer: r.peer,
        seq,
        moved,
    });
    Ok(())
}

fn sync(cx: &mut Ctx<'_>, r: SyncR) -> Result<(), StoreError> {
    let Some((s, join)) = cx.stream(r.group, Kind::SyncR, r.group)? else {
        return Ok(());
    };
    let limits = &cx.state.limits;
    let limit = match usize::from(r.limit) {
        0 => limits.page_default,
        n => n.min(limits.page_max),
    };
    let head = cx.state.head(cx.store, s)?;
    // Asking for the page after `after` acknowledges everything up to it.
    let acked = r.after.min(head);
    if acked > 0 {
        if r.group == 0 {
            advance_inbox(cx, acked)?;
        } else {
            cx.state
                .advance_cursor(cx.store, cx.batch, s, cx.user, cx.device, acked)?;
        }
    }
    cx.out.push(Deferred::Page(Page {
        conn: cx.conn,
        stream: s,
        after: r.after,
        from: r.after.max(join),
        limit,
    }));
    Ok(())
}
