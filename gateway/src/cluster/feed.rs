//! Pushing one stream to a node's connections in sequence order.
//!
//! Pushes arrive on a user's or a group's subject in whatever order the
//! storing nodes published them; a node pushes them to its connections
//! strictly in sequence order. A push ahead of a gap waits; if the gap is
//! still there after [`FILL_DELAY`] (the push that fills it was lost with
//! a node that died), the missing records are read from the log. The same
//! logic serves a user's inbox (to the user's connections) and a group's
//! log (to the connections of the members this node holds).

use std::{collections::BTreeMap, rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration};

use bytes::Bytes;
use imgate_codec::{Body, frame::MsgN};

use super::{js::Stored, node::Node, wire::NodeMsg};
use crate::{backend::Track, delivery::keys::Record};

/// How long a push ahead of a gap waits for the pushes before it, before
/// the node reads them from the log.
pub(super) const FILL_DELAY: Duration = Duration::from_millis(20);
/// Pushes held ahead of a gap, per stream; more are dropped and read from
/// the log instead.
const MAX_HELD: usize = 1024;
/// Recent (sequence id, stream sequence) pairs kept per stream to start
/// reads without a search.
const HINTS: usize = 32;

/// Which stream a feed orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Of {
    /// A user's inbox.
    Inbox(u64),
    /// A group's log.
    Group(u64),
}

impl Of {
    /// `user`'s inbox if `group` is 0, else the group's log.
    pub(super) fn new(user: u64, group: u64) -> Of {
        if group == 0 {
            Of::Inbox(user)
        } else {
            Of::Group(group)
        }
    }

    /// The `group` field of the stream's frames.
    pub(super) fn group(self) -> u64 {
        match self {
            Of::Inbox(_) => 0,
            Of::Group(g) => g,
        }
    }
}

/// A push (or a record read from the log) to deliver.
#[derive(Debug, Clone)]
pub(super) struct Push {
    pub(super) seq: u64,
    pub(super) from: u64,
    pub(super) frame: Bytes,
    pub(super) origin_node: u64,
    pub(super) origin_conn: u64,
}

impl Push {
    /// The push a node message carries, and its stream sequence; the
    /// message itself if it is not a push.
    pub(super) fn from_msg(m: NodeMsg) -> Result<(Push, u64), NodeMsg> {
        match m {
            NodeMsg::Push {
                seq,
                stream_seq,
                from,
                origin_node,
                origin_conn,
                frame,
            } => Ok((
                Push {
                    seq,
                    from,
                    frame,
                    origin_node,
                    origin_conn,
                },
                stream_seq,
            )),
            other => Err(other),
        }
    }
}

/// The order state of one stream on this node.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// The next sequence id to push; 0 until the stream's head was read.
    pub(super) next: u64,
    held: BTreeMap<u64, Push>,
    fill_armed: bool,
    /// The highest sequence id known.
    pub(super) head: u64,
    /// Recent (sequence id, stream sequence) pairs, oldest first.
    hints: Vec<(u64, u64)>,
}

impl Feed {
    pub(super) fn hint(&mut self, seq: u64, stream_seq: u64) {
        if self.hints.last().is_some_and(|&(s, _)| s >= seq) {
            return;
        }
        if self.hints.len() == HINTS {
            self.hints.remove(0);
        }
        self.hints.push((seq, stream_seq));
    }

    /// The newest hint at or below `seq`.
    pub(super) fn hint_below(&self, seq: u64) -> Option<(u64, u64)> {
        self.hints.iter().rev().find(|&&(s, _)| s <= seq).copied()
    }

    /// Starts the order at `head` (the first read of the stream's head):
    /// pushes above it are pushed, what is held at or below is dropped.
    pub(super) fn start(&mut self, head: u64) {
        if self.next == 0 {
            self.next = head + 1;
            self.held = self.held.split_off(&self.next);
        }
        self.head = self.head.max(head);
    }

    /// Takes a push; returns the pushes now in order.
    fn take(&mut self, p: Push, stream_seq: u64) -> Vec<Push> {
        self.head = self.head.max(p.seq);
        self.hint(p.seq, stream_seq);
        if p.seq < self.next {
            return Vec::new();
        }
        if self.held.len() < MAX_HELD || p.seq == self.next {
            self.held.insert(p.seq, p);
        }
        self.ready()
    }

    /// The held pushes that continue the sequence.
    pub(super) fn ready(&mut self) -> Vec<Push> {
        let mut out = Vec::new();
        if self.next == 0 {
            return out; // the head has not been read yet
        }
        while let Some(p) = self.held.remove(&self.next) {
            out.push(p);
            self.next += 1;
        }
        out
    }

    /// Whether something is missing below what is known.
    pub(super) fn gap(&self) -> bool {
        self.next != 0 && (!self.held.is_empty() || self.next <= self.head)
    }
}

impl Node {
    /// A push that arrived on the stream's subject.
    pub(super) fn on_push(self: &Rc<Self>, of: Of, p: Push, stream_seq: u64) {
        let Some((ready, gap)) = self.with_feed(of, |f| {
            let ready = f.take(p, stream_seq);
            (ready, f.gap())
        }) else {
            return;
        };
        self.deliver(of, &ready);
        if gap {
            self.arm_fill(of);
        }
    }

    /// Pushes to this node's connections that should have them.
    pub(super) fn deliver(&self, of: Of, pushes: &[Push]) {
        if pushes.is_empty() {
            return;
        }
        let users = self.users.borrow();
        let mut router = self.router.borrow_mut();
        let mine = |p: &Push, conn: crate::conn_id::ConnId| {
            p.origin_node == self.token && conn.to_u64() == p.origin_conn
        };
        match of {
            Of::Inbox(user) => {
                let Some(u) = users.get(&user) else {
                    return;
                };
                for p in pushes {
                    for s in &u.sessions {
                        if s.from >= p.seq || mine(p, s.conn) {
                            continue;
                        }
                        let track = Some(Track {
                            group: 0,
                            seq: p.seq,
                        });
                        router.to_conn(s.conn, p.frame.clone(), track);
                    }
                }
                drop(router);
                drop(users);
                self.note_senders(user, pushes);
            }
            Of::Group(group) => {
                let groups = self.groups.borrow();
                let Some(g) = groups.get(&group) else {
                    return;
                };
                for p in pushes {
                    let track = Some(Track { group, seq: p.seq });
                    for user in &g.local {
                        // Members get what was stored after they joined.
                        if !g
                            .members
                            .as_ref()
                            .is_some_and(|m| m.joined_before(*user, p.seq))
                        {
                            continue;
                        }
                        let Some(u) = users.get(user) else {
                            continue;
                        };
                        for s in &u.sessions {
                            if s.from != u64::MAX && !mine(p, s.conn) {
                                router.to_conn(s.conn, p.frame.clone(), track);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn arm_fill(self: &Rc<Self>, of: Of) {
        let arm = self.with_feed(of, |f| !std::mem::replace(&mut f.fill_armed, true));
        if arm == Some(true) {
            tokio::task::spawn_local(self.clone().fill(of));
        }
    }

    /// Reads what the pushes left out from the log and pushes it in order.
    async fn fill(self: Rc<Self>, of: Of) {
        tokio::time::sleep(FILL_DELAY).await;
        let subject = match of {
            Of::Inbox(u) => self.js.names().inbox(u).0,
            Of::Group(g) => self.js.names().group_log(g),
        };
        let mut failures = 0u32;
        loop {
            let stopping = self.stopping.get();
            let Some(Some((next, upto, hint))) = self.with_feed(of, |f| {
                let upto = f
                    .held
                    .keys()
                    .next()
                    .map(|s| s.saturating_sub(1))
                    .unwrap_or(f.head);
                if f.next == 0 || f.next > upto || stopping {
                    f.fill_armed = false;
                    return None;
                }
                Some((f.next, upto, f.hint_below(f.next - 1)))
            }) else {
                return;
            };
            self.stats.gap_fills.fetch_add(1, Relaxed);
            let want = usize::try_from(upto - next + 1)
                .unwrap_or(usize::MAX)
                .min(256);
            let read = async {
                let start = self.locate(&subject, next - 1, hint).await?;
                self.js
                    .read(&subject, start, want + 64, self.limits.page_budget)
                    .await
            };
            let recs = match read.await {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    tracing::debug!(?of, error = %e, "gap fill read failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20))))
                        .await;
                    continue;
                }
            };
            let Some(moved) = self.pushed_from_log(of, upto, recs) else {
                return;
            };
            self.kick_flush();
            if !moved {
                // A replica behind the leader: give it a moment.
                tokio::time::sleep(FILL_DELAY).await;
            }
        }
    }

    /// Pushes records read from the log that continue the sequence;
    /// returns whether any did (None: the stream is no longer fed here).
    fn pushed_from_log(&self, of: Of, upto: u64, recs: Vec<Stored>) -> Option<bool> {
        let sending = self.sending.borrow();
        let out = self.with_feed(of, |f| {
            let mut out = Vec::new();
            for r in recs {
                f.hint(r.seq, r.stream_seq);
                if r.seq < f.next || r.seq > upto {
                    continue;
                }
                let Some(rec) = Record::decode(&r.payload) else {
                    tracing::error!(?of, stream_seq = r.stream_seq, "corrupt record skipped");
                    continue;
                };
                // A record below the next one was purged: skip past it.
                f.held.remove(&r.seq);
                // An own copy sent through this node: not to its sender.
                let origin = match of {
                    Of::Inbox(user) if rec.from == user => {
                        sending.get(&(user, rec.msg_id)).map(|(c, _)| c.to_u64())
                    }
                    _ => None,
                };
                out.push(Push {
                    seq: r.seq,
                    from: rec.from,
                    frame: msg_n(of.group(), r.seq, &rec),
                    origin_node: if origin.is_some() { self.token } else { 0 },
                    origin_conn: origin.unwrap_or(0),
                });
                f.next = r.seq + 1;
            }
            let moved = !out.is_empty();
            out.extend(f.ready());
            (out, moved)
        })?;
        drop(sending);
        self.deliver(of, &out.0);
        Some(out.1)
    }

    /// Runs `f` on the stream's feed, if this node feeds it.
    pub(super) fn with_feed<R>(&self, of: Of, f: impl FnOnce(&mut Feed) -> R) -> Option<R> {
        match of {
            Of::Inbox(u) => self.users.borrow_mut().get_mut(&u).map(|u| f(&mut u.feed)),
            Of::Group(g) => self.groups.borrow_mut().get_mut(&g).map(|g| f(&mut g.feed)),
        }
    }
}

/// The msg:N of a stored record.
pub(super) fn msg_n(group: u64, seq: u64, rec: &Record) -> Bytes {
    MsgN {
        group,
        seq,
        from: rec.from,
        to: rec.to,
        msg_id: rec.msg_id,
        server_time: rec.time,
        retry: false,
        body: rec.body.clone(),
    }
    .to_bytes()
}
