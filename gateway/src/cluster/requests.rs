//! The requests a node answers from JetStream: msg:R, ack:R and sync:R on
//! the inbox, with the embedded backend's rules (the shared
//! [`rules`](crate::delivery::rules)) and answers.

use std::{rc::Rc, sync::atomic::Ordering::Relaxed};

use bytes::BytesMut;
use imgate_codec::{
    Body, ErrorCode, Frame,
    frame::{AckA, AckR, Entry, ErrorFrame, MsgA, MsgN, MsgR, SyncPage, SyncR},
};

use super::{
    append::{ChainError, Step},
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
            Frame::MsgR(m) => self.msg(conn, user, m).await,
            Frame::AckR(a) => self.ack(conn, user, device, a).await,
            Frame::SyncR(s) => self.sync(conn, user, device, s).await,
            _ => Err(Refuse(
                ErrorCode::InvalidRequest,
                "not available on the cluster backend yet",
            )
            .into()),
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
        if m.group != 0 {
            return Err(NO_GROUPS.into());
        }
        let digest = keys::digest(0, m.to, &m.body);
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
        let stored = match self.chain(steps, buf.into(), digest).await {
            Ok(s) => s,
            Err(ChainError::Reused) => {
                return Err(Refuse(
                    ErrorCode::MsgIdReused,
                    "msg id already used for another message",
                )
                .into());
            }
            Err(ChainError::Js(e)) => return Err(e.into()),
        };
        let (Some(own), Some(theirs)) = (stored.first(), stored.get(1)) else {
            return Err(JsError::Unavailable("incomplete chain".into()).into());
        };
        let Some(rec) = Record::decode(&own.payload) else {
            return Err(JsError::Corrupt(own.stream_seq).into());
        };
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
            let frame = MsgN {
                group: 0,
                seq: s.seq,
                from: rec.from,
                to: rec.to,
                msg_id: rec.msg_id,
                server_time: rec.time,
                retry: false,
                body: rec.body.clone(),
            }
            .to_bytes();
            let push = NodeMsg::Push {
                seq: s.seq,
                stream_seq: s.stream_seq,
                origin_node: self.token,
                origin_conn,
                frame,
            };
            self.clone().tell(target, push).await;
        }
        Ok(())
    }

    async fn ack(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
        a: AckR,
    ) -> Result<(), Failed> {
        if a.group != 0 {
            return Err(NO_GROUPS.into());
        }
        let known = self.users.borrow().get(&user).map_or(0, |u| u.head);
        if a.seq > known {
            let (head, _) = self.inbox_head(user).await?;
            if a.seq > head {
                return Err(Refuse(ErrorCode::InvalidRequest, "ack beyond the head").into());
            }
        }
        let seq = self.raise_cursor(user, device, a.seq).await?;
        self.router
            .borrow_mut()
            .to_conn(conn, AckA { group: 0, seq }.to_bytes(), None);
        Ok(())
    }

    async fn sync(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
        r: SyncR,
    ) -> Result<(), Failed> {
        if r.group != 0 {
            return Err(NO_GROUPS.into());
        }
        let limit = match usize::from(r.limit) {
            0 => self.limits.page_default,
            n => n.min(self.limits.page_max),
        };
        let (head, _) = self.inbox_head(user).await?;
        // Asking for the page after `after` acknowledges everything up to it.
        let acked = r.after.min(head);
        if acked > 0 {
            self.raise_cursor(user, device, acked).await?;
        }
        let mut page = SyncPage::new(0, r.after, head);
        let mut buf = BytesMut::new();
        if r.after < head {
            let subject = self.js.names().inbox(user).0;
            let hint = self
                .users
                .borrow()
                .get(&user)
                .and_then(|u| u.hint_below(r.after));
            let start = self.locate(&subject, r.after, hint).await?;
            let skip = hint.map_or(0, |(s, _)| r.after.saturating_sub(s));
            let want = limit.saturating_add(usize::try_from(skip).unwrap_or(0));
            let recs = self
                .js
                .read(&subject, start, want, self.limits.page_budget + 4096)
                .await?;
            let mut n = 0;
            let mut last = None;
            for s in recs.into_iter().filter(|s| s.seq > r.after) {
                let Some(rec) = Record::decode(&s.payload) else {
                    tracing::error!(user, stream_seq = s.stream_seq, "corrupt record in the log");
                    break;
                };
                if !rules::fits_page(buf.len(), rec.body.len(), self.limits.page_budget) {
                    break;
                }
                last = Some((s.seq, s.stream_seq));
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
            if let (Some((seq, ss)), Some(u)) = (last, self.users.borrow_mut().get_mut(&user)) {
                u.hint(seq, ss);
            }
        }
        self.router
            .borrow_mut()
            .to_conn(conn, page.finish(buf).to_bytes(), None);
        Ok(())
    }

    /// The inbox head, read from the stream leader; remembered.
    pub(super) async fn inbox_head(&self, user: u64) -> Result<(u64, u64), JsError> {
        let subject = self.js.names().inbox(user).0;
        let (head, ss) = self.js.head(&subject).await?;
        if let Some(u) = self.users.borrow_mut().get_mut(&user) {
            u.head = u.head.max(head);
            if ss > 0 {
                u.hint(head, ss);
            }
        }
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

/// Groups are not on the cluster backend yet.
const NO_GROUPS: Refuse = Refuse(
    ErrorCode::InvalidRequest,
    "groups are not available on the cluster backend yet",
);

/// A request refused by the rules.
#[derive(Debug, Clone, Copy)]
struct Refuse(ErrorCode, &'static str);

#[derive(Debug)]
enum Failed {
    Refuse(Refuse),
    Js(JsError),
}

impl From<Refuse> for Failed {
    fn from(r: Refuse) -> Failed {
        Failed::Refuse(r)
    }
}

impl From<JsError> for Failed {
    fn from(e: JsError) -> Failed {
        Failed::Js(e)
    }
}
