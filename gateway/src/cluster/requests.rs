//! The requests a node answers from JetStream, with the embedded backend's
//! rules (the shared [`rules`](crate::delivery::rules)) and answers:
//! msg:R, ack:R and sync:R on the inbox and on groups, and the dispatch of
//! the others (group:R in [`groups`](super::groups), read:R and
//! receipts:R in [`receipts`](super::receipts), unread:R in
//! [`unread`](super::unread)).

use std::{rc::Rc, sync::atomic::Ordering::Relaxed};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Body, ErrorCode, Frame,
    frame::{AckA, AckR, Entry, ErrorFrame, MsgA, MsgR, SyncPage, SyncR},
};

use super::{
    append::{ChainError, Step},
    feed::{Of, Push, msg_n},
    js::JsError,
    names::Names,
    node::Node,
    wire::NodeMsg,
};
use crate::{
    conn_id::ConnId,
    delivery::{
        keys::{self, Record},
        rules,
    },
};

/// Records read past the start of a page before a search is cheaper.
const SCAN: u64 = 64;

impl Node {
    /// Answers one request; every path ends in one answer or error frame.
    pub(super) async fn request(self: Rc<Self>, conn: ConnId, user: u64, device: u32, f: Frame) {
        let (kind, id) = (f.kind(), f.request_id());
        let r = match f {
            Frame::MsgR(m) if m.group != 0 => self.group_msg(conn, user, m).await,
            Frame::MsgR(m) => self.msg(conn, user, m).await,
            Frame::AckR(a) => self.ack(conn, user, device, a).await,
            Frame::SyncR(s) => self.sync(conn, user, device, s).await,
            Frame::ReadR(r) => self.read_request(conn, user, r).await,
            Frame::ReceiptsR(r) => self.receipts_request(conn, user, r).await,
            Frame::GroupR(r) => self.group_request(conn, user, r).await,
            Frame::UnreadR(_) => self.unread(conn, user, device).await,
            // The cores answer every other kind themselves.
            _ => Err(Refuse(ErrorCode::InvalidRequest, "not a request").into()),
        };
        if let Err(e) = r {
            let (code, text) = match e {
                Failed::Refuse(Refuse(code, text)) => (code, text),
                Failed::Js(e) => {
                    tracing::warn!(user, error = %e, "JetStream request failed");
                    match e {
                        JsError::Corrupt(_) | JsError::Setup(_) => {
                            (ErrorCode::Internal, "storage error; retry")
                        }
                        JsError::Conflict | JsError::Unavailable(_) => {
                            (ErrorCode::Overloaded, "storage unavailable; retry later")
                        }
                    }
                }
            };
            self.router.borrow_mut().to_conn(
                conn,
                ErrorFrame::new(code, Some(kind), id, text).to_bytes(),
                None,
            );
        }
        self.inflight.fetch_sub(1, Relaxed);
        self.kick_flush();
    }

    async fn msg(self: &Rc<Self>, conn: ConnId, user: u64, m: MsgR) -> Result<(), Failed> {
        rules::check_msg(&m, user, self.limits.max_body).map_err(|(c, t)| Refuse(c, t))?;
        let digest = keys::digest(0, m.to, &m.body);
        let sent = self.note_sending(user, m.msg_id, conn);
        let rec = Record {
            from: user,
            to: m.to,
            msg_id: m.msg_id,
            time: crate::unix_time().as_millis() as u64,
            body: m.body,
        };
        let mut buf = Vec::with_capacity(keys::RECORD_FIXED + rec.body.len());
        rec.encode_into(&mut buf);
        let names = self.js.names();
        let (to_id, own_id) = Names::msg_ids(user, m.msg_id);
        // The sender's own copy first: it is where a reused msg id is
        // caught (whoever the first message went to), and a crash before
        // the receiver's copy is repaired by the sender's retransmit.
        let steps = vec![
            Step {
                subject: names.inbox(user).0,
                msg_id: own_id,
            },
            Step {
                subject: names.inbox(m.to).0,
                msg_id: to_id,
            },
        ];
        // The chain is queued when first polled, so it goes first: requests
        // keep their order of arrival.
        let (stored, opened) = tokio::join!(
            self.chain(steps, buf.into(), 0, digest),
            self.open_conversation(user, m.to)
        );
        opened?;
        let stored = stored.map_err(Failed::from)?;
        let (Some(own), Some(theirs)) = (stored.first(), stored.get(1)) else {
            return Err(JsError::Unavailable("incomplete chain".into()).into());
        };
        let Some(rec) = Record::decode(&own.payload) else {
            return Err(JsError::Corrupt(own.stream_seq).into());
        };
        // Its event is stored before it is acknowledged; a retransmit
        // publishes it again (dropped as a duplicate if it was stored).
        self.message_event(&rec, 0, theirs.seq, own.seq, m.no_push)
            .await?;
        self.router.borrow_mut().to_conn(
            conn,
            MsgA {
                msg_id: rec.msg_id,
                group: 0,
                seq: theirs.seq,
                own_seq: own.seq,
                server_time: rec.time,
            }
            .to_bytes(),
            None,
        );
        self.kick_flush();
        // Pushed again on a retransmit too: if the node that stored it died
        // before pushing, this is the push; nodes drop what they pushed.
        for (target, s, origin_conn) in [(m.to, theirs, 0), (user, own, conn.to_u64())] {
            let push = NodeMsg::Push {
                seq: s.seq,
                stream_seq: s.stream_seq,
                from: rec.from,
                origin_node: self.token,
                origin_conn,
                frame: msg_n(0, s.seq, &rec),
            };
            self.clone().tell(target, push).await;
        }
        drop(sent);
        Ok(())
    }

    /// Remembers which connection sends (sender, msg id) until the guard
    /// is dropped and a little after.
    fn note_sending(self: &Rc<Self>, user: u64, msg_id: u64, conn: ConnId) -> Sending {
        let mut sending = self.sending.borrow_mut();
        if sending.len() >= 4096 && sending.len().is_multiple_of(1024) {
            let now = tokio::time::Instant::now();
            sending.retain(|_, (_, expires)| expires.is_none_or(|t| t > now));
        }
        sending.insert((user, msg_id), (conn, None));
        Sending {
            node: self.clone(),
            key: (user, msg_id),
        }
    }

    /// A group message: stored once in the group's log, pushed once to
    /// the nodes of its members.
    async fn group_msg(self: &Rc<Self>, conn: ConnId, user: u64, m: MsgR) -> Result<(), Failed> {
        rules::check_msg(&m, user, self.limits.max_body).map_err(|(c, t)| Refuse(c, t))?;
        let digest = keys::digest(m.group, 0, &m.body);
        let rec = Record {
            from: user,
            to: 0,
            msg_id: m.msg_id,
            time: crate::unix_time().as_millis() as u64,
            body: m.body,
        };
        let mut buf = Vec::with_capacity(keys::RECORD_FIXED + rec.body.len());
        rec.encode_into(&mut buf);
        let steps = vec![Step {
            subject: self.js.names().group_log(m.group),
            msg_id: Names::group_msg_id(user, m.msg_id),
        }];
        // The sender's messages queue in the order they arrived, though
        // each first waits for a membership check: the lock is taken in
        // that order and held until the append is queued.
        let lock = self
            .send_locks
            .borrow_mut()
            .entry(user)
            .or_default()
            .clone();
        let guard = lock.lock().await;
        // The server API (`crate::replies`) posts to any group.
        let checked = if conn.core == crate::replies::API_CORE {
            self.exists(m.group).await
        } else {
            self.membership(m.group, user).await
        };
        let pending = checked.map(|_| self.queue_chain(steps, buf.into(), m.group, digest));
        drop(guard);
        drop(lock);
        {
            let mut locks = self.send_locks.borrow_mut();
            if locks.get(&user).is_some_and(|l| Rc::strong_count(l) == 1) {
                locks.remove(&user);
            }
        }
        let stored = pending?.await.map_err(Failed::from)?;
        let Some(s) = stored.first() else {
            return Err(JsError::Unavailable("incomplete chain".into()).into());
        };
        let Some(rec) = Record::decode(&s.payload) else {
            return Err(JsError::Corrupt(s.stream_seq).into());
        };
        self.message_event(&rec, m.group, s.seq, 0, m.no_push)
            .await?;
        self.router.borrow_mut().to_conn(
            conn,
            MsgA {
                msg_id: rec.msg_id,
                group: m.group,
                seq: s.seq,
                own_seq: 0,
                server_time: rec.time,
            }
            .to_bytes(),
            None,
        );
        self.kick_flush();
        let push = NodeMsg::Push {
            seq: s.seq,
            stream_seq: s.stream_seq,
            from: rec.from,
            origin_node: self.token,
            origin_conn: conn.to_u64(),
            frame: msg_n(m.group, s.seq, &rec),
        };
        self.clone().tell_group(m.group, push).await;
        Ok(())
    }

    async fn ack(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
        a: AckR,
    ) -> Result<(), Failed> {
        let (of, join) = self.reader_of(user, a.group).await?;
        let known = self.with_feed(of, |f| f.head).unwrap_or(0);
        if a.seq > known {
            let (head, _) = self.stream_head(user, a.group).await?;
            if a.seq > head {
                return Err(Refuse(ErrorCode::InvalidRequest, "ack beyond the head").into());
            }
        }
        let seq = self
            .raise_cursor(a.group, user, device, a.seq.max(join))
            .await?;
        self.router.borrow_mut().to_conn(
            conn,
            AckA {
                group: a.group,
                seq,
            }
            .to_bytes(),
            None,
        );
        Ok(())
    }

    async fn sync(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
        r: SyncR,
    ) -> Result<(), Failed> {
        let (of, join) = self.reader_of(user, r.group).await?;
        let limit = match usize::from(r.limit) {
            0 => self.limits.page_default,
            n => n.min(self.limits.page_max),
        };
        let (head, _) = self.stream_head(user, r.group).await?;
        // Asking for the page after `after` acknowledges everything up to it.
        let acked = r.after.min(head);
        if acked > 0 {
            self.raise_cursor(r.group, user, device, acked).await?;
        }
        // A member gets nothing from before it joined.
        let from = r.after.max(join);
        let mut page = SyncPage::new(r.group, r.after, head);
        let mut buf = BytesMut::new();
        let mut senders = Vec::new();
        if from < head {
            let subject = self.js.names().log(user, r.group);
            let hint = self.with_feed(of, |f| f.hint_below(from)).flatten();
            let start = self.locate(&subject, from, hint).await?;
            let skip = hint.map_or(0, |(s, _)| from.saturating_sub(s));
            let want = limit.saturating_add(usize::try_from(skip).unwrap_or(0));
            let recs = self
                .js
                .read(&subject, start, want, self.limits.page_budget + 4096)
                .await?;
            let mut n = 0;
            let mut last = None;
            for s in recs.into_iter().filter(|s| s.seq > from) {
                let Some(rec) = Record::decode(&s.payload) else {
                    tracing::error!(user, stream_seq = s.stream_seq, "corrupt record in the log");
                    break;
                };
                if !rules::fits_page(buf.len(), rec.body.len(), self.limits.page_budget) {
                    break;
                }
                last = Some((s.seq, s.stream_seq));
                senders.push(Push {
                    seq: s.seq,
                    from: rec.from,
                    frame: Bytes::new(),
                    origin_node: 0,
                    origin_conn: 0,
                });
                page.push(
                    &mut buf,
                    &Entry {
                        seq: s.seq,
                        from: rec.from,
                        to: rec.to,
                        msg_id: rec.msg_id,
                        server_time: rec.time,
                        body: rec.body,
                    },
                );
                n += 1;
                if n == limit {
                    break;
                }
            }
            // Where this page ends is where the next one starts.
            if let Some((seq, ss)) = last {
                self.with_feed(of, |f| f.hint(seq, ss));
            }
        }
        if r.group == 0 {
            self.note_senders(user, &senders);
        }
        self.router
            .borrow_mut()
            .to_conn(conn, page.finish(buf).to_bytes(), None);
        Ok(())
    }

    /// The stream `user` reads as `group` (0: its inbox), and the sequence
    /// id it joined the stream at (0 for the inbox); refuses a group the
    /// user is not in.
    async fn reader_of(&self, user: u64, group: u64) -> Result<(Of, u64), Failed> {
        let join = if group == 0 {
            0
        } else {
            self.membership(group, user).await?
        };
        Ok((Of::new(user, group), join))
    }

    /// The inbox head, read from the stream leader; remembered.
    pub(super) async fn inbox_head(&self, user: u64) -> Result<(u64, u64), JsError> {
        self.stream_head(user, 0).await
    }

    /// The head of the user's inbox (`group` 0) or of a group's log, read
    /// from the stream leader: (sequence id, stream sequence).
    pub(super) async fn stream_head(&self, user: u64, group: u64) -> Result<(u64, u64), JsError> {
        let subject = self.js.names().log(user, group);
        let (head, ss) = self.js.head(&subject).await?;
        self.with_feed(Of::new(user, group), |f| {
            f.head = f.head.max(head);
            if ss > 0 {
                f.hint(head, ss);
            }
        });
        Ok((head, ss))
    }

    /// A stream sequence to read `subject` from so that the first record
    /// with a sequence id above `after` is the first one read (or, from a
    /// hint, among the next [`SCAN`]). A binary search over the stream
    /// when nothing nearer is known.
    pub(super) async fn locate(
        &self,
        subject: &str,
        after: u64,
        hint: Option<(u64, u64)>,
    ) -> Result<u64, JsError> {
        if after == 0 {
            return Ok(1);
        }
        let mut lo = 1;
        if let Some((s, ss)) = hint
            && s <= after
        {
            lo = ss + 1;
            if after - s <= SCAN {
                return Ok(lo);
            }
        }
        let (head, head_ss) = self.js.head(subject).await?;
        if head <= after {
            return Ok(head_ss + 1);
        }
        let mut hi = head_ss;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.js.first_from(subject, mid).await? {
                Some(r) if r.seq <= after => lo = r.stream_seq + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }
}

/// A msg:R being answered: when dropped (answered, or failed), its entry
/// in `Node::sending` expires [`SENDING_LINGER`] later, long enough for
/// the pushes of its own copy, whether published or read from the log.
pub(super) struct Sending {
    node: Rc<Node>,
    key: (u64, u64),
}

/// How long a sent message's connection is remembered after its answer.
const SENDING_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(e) = self.node.sending.borrow_mut().get_mut(&self.key) {
            e.1 = Some(tokio::time::Instant::now() + SENDING_LINGER);
        }
    }
}

/// A request refused by the rules: the code and a text for humans.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refuse(pub(super) ErrorCode, pub(super) &'static str);

/// Why a request got an error instead of its answer.
#[derive(Debug)]
pub(super) enum Failed {
    Refuse(Refuse),
    Js(JsError),
}

impl From<Refuse> for Failed {
    fn from(r: Refuse) -> Failed {
        Failed::Refuse(r)
    }
}

impl From<ChainError> for Failed {
    fn from(e: ChainError) -> Failed {
        match e {
            ChainError::Reused => Failed::Refuse(Refuse(
                ErrorCode::MsgIdReused,
                "msg id already used for another message",
            )),
            ChainError::Js(e) => Failed::Js(e),
        }
    }
}

impl From<JsError> for Failed {
    fn from(e: JsError) -> Failed {
        Failed::Js(e)
    }
}
