//! Receipts on the cluster backend: delivered receipts when an inbox
//! cursor rises, read marks (read:R), a group message's receipts
//! (receipts:R), and the marks a device gets at login.
//!
//! The marks of one conversation, (delivered, read) of a sender's
//! messages to a peer, are one key of the marks bucket, `m.<sender>.<peer>`,
//! created by the sender's first message (its existence is what lets the
//! peer's read marks reach the sender). Marks only rise: every write is a
//! compare-and-set that keeps the larger value, and a receipt is pushed
//! only by the write that moved a mark, so two nodes acknowledging the
//! same range send it once.

use std::rc::Rc;

use ahash::AHashSet;
use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::{
    Body, ErrorCode,
    frame::{AckN, ReadA, ReadN, ReadR, ReceiptsA, ReceiptsR},
};

use super::{
    feed::Push,
    js::{Bucket, CAS_TRIES, JsError, Update, u64_value},
    names::Names,
    node::Node,
    requests::{Failed, Refuse},
    wire::NodeMsg,
};
use crate::{conn_id::ConnId, delivery::keys::Record, delivery::rules};

/// Open conversations remembered per node (then forgotten at once).
const OPEN_CACHE: usize = 100_000;
/// Records of an acknowledged range read to find its senders, at most.
const SENDER_SCAN: u64 = 10_000;
/// Keys read per batch when listing marks or cursors.
const SCAN_PAGE: usize = 1000;

/// What a node knows of one mark key: its value and revision as last read
/// or written (None: read it), and the lock that keeps one write of it in
/// flight on this node.
#[derive(Debug, Default)]
pub(super) struct Mark {
    known: Option<((u64, u64), u64)>,
    lock: Rc<tokio::sync::Mutex<()>>,
}

/// Mark keys remembered per node (then forgotten at once).
const MARK_CACHE: usize = 100_000;

fn mark_value(d: u64, r: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u64(d);
    b.put_u64(r);
    b.freeze()
}

fn mark_of(v: &[u8]) -> (u64, u64) {
    (
        u64_value(v).unwrap_or(0),
        v.get(8..).and_then(u64_value).unwrap_or(0),
    )
}

impl Node {
    /// Records that `sender` wrote to `peer` (once per conversation).
    pub(super) async fn open_conversation(&self, sender: u64, peer: u64) -> Result<(), JsError> {
        if self.open.borrow().contains(&(sender, peer)) {
            return Ok(());
        }
        let key = Names::mark_key(sender, peer);
        match self
            .js
            .put_key(Bucket::Marks, &key, mark_value(0, 0), 0)
            .await
        {
            Ok(_) | Err(JsError::Conflict) => {}
            Err(e) => return Err(e),
        }
        self.remember_open(sender, peer);
        Ok(())
    }

    fn remember_open(&self, sender: u64, peer: u64) {
        let mut open = self.open.borrow_mut();
        if open.len() >= OPEN_CACHE {
            open.clear();
        }
        open.insert((sender, peer));
    }

    /// Whether `sender` ever wrote to `peer`.
    async fn has_written(&self, sender: u64, peer: u64) -> Result<bool, JsError> {
        if self.open.borrow().contains(&(sender, peer)) {
            return Ok(true);
        }
        let e = self
            .js
            .get_key(Bucket::Marks, &Names::mark_key(sender, peer))
            .await?;
        if e.value.is_some() {
            self.remember_open(sender, peer);
        }
        Ok(e.value.is_some())
    }

    /// Raises the marks of `sender`'s messages to `peer`; returns whether
    /// they moved, and the marks after. Writes of one mark go one at a
    /// time on this node, from the value it last wrote, so a conversation
    /// whose marks rise often costs one write per rise and no read; another
    /// node's write shows as a conflict, and the key is read again.
    async fn raise_mark(
        &self,
        sender: u64,
        peer: u64,
        delivered: u64,
        read: u64,
    ) -> Result<(bool, (u64, u64)), JsError> {
        let key = Names::mark_key(sender, peer);
        let lock = {
            let mut marks = self.marks.borrow_mut();
            if marks.len() >= MARK_CACHE {
                marks.retain(|_, m| Rc::strong_count(&m.lock) > 1);
            }
            marks.entry(key.clone()).or_default().lock.clone()
        };
        let _one_at_a_time = lock.lock().await;
        let cached = |node: &Self| node.marks.borrow().get(&key).and_then(|m| m.known);
        let remember = |node: &Self, k: Option<((u64, u64), u64)>| {
            if let Some(m) = node.marks.borrow_mut().get_mut(&key) {
                m.known = k;
            }
        };
        for _ in 0..CAS_TRIES {
            let ((d, r), rev) = match cached(self) {
                Some(k) => k,
                None => {
                    let e = self.js.get_key(Bucket::Marks, &key).await?;
                    let k = (
                        e.value.as_deref().map(mark_of).unwrap_or((0, 0)),
                        e.revision,
                    );
                    remember(self, Some(k));
                    k
                }
            };
            // What is read is delivered too.
            let (nd, nr) = (d.max(delivered).max(read), r.max(read));
            if (nd, nr) == (d, r) {
                return Ok((false, (d, r)));
            }
            match self
                .js
                .put_key(Bucket::Marks, &key, mark_value(nd, nr), rev)
                .await
            {
                Ok(rev) => {
                    remember(self, Some(((nd, nr), rev)));
                    return Ok((true, (nd, nr)));
                }
                Err(JsError::Conflict) => remember(self, None),
                Err(e) => {
                    remember(self, None);
                    return Err(e);
                }
            }
        }
        Err(JsError::Unavailable("the mark kept moving".into()))
    }

    /// Raises a member's read mark in a group; returns whether it moved
    /// and the mark after.
    async fn raise_group_read(
        &self,
        group: u64,
        user: u64,
        to: u64,
    ) -> Result<(bool, u64), JsError> {
        let key = Names::group_read_key(group, user);
        self.js
            .update_key(Bucket::Marks, &key, |e| {
                let cur = e.value.as_deref().and_then(u64_value).unwrap_or(0);
                Ok::<_, JsError>(if to <= cur {
                    Update::Keep((false, cur))
                } else {
                    Update::Write(Bytes::copy_from_slice(&to.to_be_bytes()), (true, to))
                })
            })
            .await
    }

    /// A device of `user` moved its inbox cursor from `before` to `after`:
    /// the senders of what it covers get a delivered receipt, if their
    /// mark moves.
    pub(super) async fn delivered(self: Rc<Self>, user: u64, before: u64, after: u64) {
        let senders = match self.senders(user, before, after).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user, error = %e, "cannot read who sent what was delivered");
                return;
            }
        };
        let receipt = AckN {
            peer: user,
            group: 0,
            seq: after,
        }
        .to_bytes();
        for sender in senders {
            match self.raise_mark(sender, user, after, 0).await {
                Ok((true, _)) => {
                    let m = NodeMsg::Notice {
                        origin_node: 0,
                        origin_conn: 0,
                        frame: receipt.clone(),
                    };
                    self.clone().tell(sender, m).await;
                }
                Ok((false, _)) => {}
                Err(e) => tracing::warn!(user, sender, error = %e, "delivered mark not raised"),
            }
        }
        self.kick_flush();
    }

    /// The senders, other than `user`, of inbox records `before + 1 ..=
    /// after`: from what this node pushed, else from the log (the last
    /// [`SENDER_SCAN`] records of the range).
    async fn senders(&self, user: u64, before: u64, after: u64) -> Result<Vec<u64>, JsError> {
        let from = before.max(after.saturating_sub(SENDER_SCAN)) + 1;
        let known: Option<AHashSet<u64>> = self.users.borrow().get(&user).and_then(|u| {
            let got: Vec<(&u64, &u64)> = u.senders.range(from..=after).collect();
            (got.len() as u64 == after + 1 - from)
                .then(|| got.into_iter().map(|(_, &s)| s).collect())
        });
        let mut set = match known {
            Some(s) => s,
            None => {
                let subject = self.js.names().inbox(user).0;
                let hint = self
                    .users
                    .borrow()
                    .get(&user)
                    .and_then(|u| u.feed.hint_below(from - 1));
                let mut start = self.locate(&subject, from - 1, hint).await?;
                let mut set = AHashSet::new();
                let mut noted = Vec::new();
                'read: loop {
                    let recs = self.js.read(&subject, start, 256, 1 << 20).await?;
                    if recs.is_empty() {
                        break;
                    }
                    for r in recs {
                        start = r.stream_seq + 1;
                        if r.seq > after {
                            break 'read;
                        }
                        if r.seq < from {
                            continue;
                        }
                        if let Some(rec) = Record::decode(&r.payload) {
                            set.insert(rec.from);
                            noted.push(Push {
                                seq: r.seq,
                                from: rec.from,
                                frame: Bytes::new(),
                                origin_node: 0,
                                origin_conn: 0,
                            });
                        }
                    }
                }
                self.note_senders(user, &noted);
                set
            }
        };
        set.remove(&user);
        Ok(set.into_iter().collect())
    }

    /// The delivered and read marks of every conversation `user` wrote in,
    /// to a device that just logged in.
    pub(super) async fn replay_receipts(&self, conn: ConnId, user: u64) -> Result<(), JsError> {
        let prefix = format!("m.{user}.");
        let marks = self.js.scan_keys(Bucket::Marks, &prefix, SCAN_PAGE).await?;
        let mut router = self.router.borrow_mut();
        for (key, v) in marks {
            let Some(peer) = key.strip_prefix(&prefix).and_then(|p| p.parse().ok()) else {
                continue;
            };
            let (d, r) = mark_of(&v);
            if d > 0 {
                let n = AckN {
                    peer,
                    group: 0,
                    seq: d,
                };
                router.to_conn(conn, n.to_bytes(), None);
            }
            if r > 0 {
                let n = ReadN {
                    reader: peer,
                    group: 0,
                    peer: user,
                    seq: r,
                };
                router.to_conn(conn, n.to_bytes(), None);
            }
        }
        Ok(())
    }

    /// Answers a read:R.
    pub(super) async fn read_request(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        r: ReadR,
    ) -> Result<(), Failed> {
        rules::check_read_peer(&r, user).map_err(|(c, t)| Refuse(c, t))?;
        let head = if r.group == 0 {
            self.inbox_head(user).await?.0
        } else {
            self.membership(r.group, user).await?;
            self.js.head(&self.js.names().group_log(r.group)).await?.0
        };
        rules::check_seq(r.seq, head).map_err(|(c, t)| Refuse(c, t))?;
        let (moved, seq) = if r.group == 0 {
            // A read receipt reaches only a peer that wrote to the reader.
            if !self.has_written(r.peer, user).await? {
                return Err(Refuse(ErrorCode::Forbidden, "the peer never wrote to you").into());
            }
            let (moved, (_, read)) = self.raise_mark(r.peer, user, 0, r.seq).await?;
            (moved, read)
        } else {
            self.raise_group_read(r.group, user, r.seq).await?
        };
        self.router.borrow_mut().to_conn(
            conn,
            ReadA {
                group: r.group,
                peer: r.peer,
                seq,
            }
            .to_bytes(),
            None,
        );
        self.kick_flush();
        if moved {
            let n = ReadN {
                reader: user,
                group: r.group,
                peer: r.peer,
                seq,
            }
            .to_bytes();
            if r.group == 0 {
                let m = NodeMsg::Notice {
                    origin_node: 0,
                    origin_conn: 0,
                    frame: n.clone(),
                };
                self.clone().tell(r.peer, m).await;
            }
            // The reader's other devices.
            let m = NodeMsg::Notice {
                origin_node: self.token,
                origin_conn: conn.to_u64(),
                frame: n,
            };
            self.clone().tell(user, m).await;
        }
        Ok(())
    }

    /// Answers a receipts:R: of the group's members now, how many have a
    /// device at or past `seq`, and how many read it.
    pub(super) async fn receipts_request(
        &self,
        conn: ConnId,
        user: u64,
        r: ReceiptsR,
    ) -> Result<(), Failed> {
        if r.group == 0 {
            return Err(Refuse(ErrorCode::InvalidRequest, "groups only").into());
        }
        let Some(members) = self.read_members(r.group).await? else {
            return Err(Refuse(ErrorCode::NotFound, "no such group").into());
        };
        if members.join(user).is_none() {
            return Err(Refuse(ErrorCode::Forbidden, "not a member").into());
        }
        let (head, _) = self.js.head(&self.js.names().group_log(r.group)).await?;
        rules::check_seq(r.seq, head).map_err(|(c, t)| Refuse(c, t))?;
        let at_least = |prefix: &str, kv: Vec<(String, Bytes)>| -> AHashSet<u64> {
            kv.into_iter()
                .filter(|(_, v)| u64_value(v).unwrap_or(0) >= r.seq)
                .filter_map(|(k, _)| {
                    k.strip_prefix(prefix)?
                        .split('.')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .collect()
        };
        let cursors = format!("g.{}.", r.group);
        let reads = format!("r.{}.", r.group);
        let past = at_least(
            &cursors,
            self.js
                .scan_keys(Bucket::Cursors, &cursors, SCAN_PAGE)
                .await?,
        );
        let read_by = at_least(
            &reads,
            self.js.scan_keys(Bucket::Marks, &reads, SCAN_PAGE).await?,
        );
        let (mut delivered, mut read) = (0u32, 0u32);
        for m in members.users() {
            if read_by.contains(&m) {
                read += 1;
            }
            if read_by.contains(&m) || past.contains(&m) {
                delivered += 1;
            }
        }
        let a = ReceiptsA {
            req: r.req,
            group: r.group,
            seq: r.seq,
            members: u32::try_from(members.len()).unwrap_or(u32::MAX),
            delivered,
            read,
        };
        self.router.borrow_mut().to_conn(conn, a.to_bytes(), None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_a_short_value_reads_as_nothing_read() {
        assert_eq!(mark_of(&mark_value(7, 3)), (7, 3));
        assert_eq!(mark_of(&7u64.to_be_bytes()), (7, 0));
        assert_eq!(mark_of(&[]), (0, 0));
    }
}
