//! Events to the business backend on the cluster backend (`[events]`):
//! the same events as the embedded backend's (`crate::events`), stored in
//! a JetStream stream instead of an outbox table.
//!
//! ```text
//!  msg:R ── appends stored ── event published, PubAck ── msg:A
//!  group:R ── change stored ── event published, PubAck ── group:A
//!  login / close ── presence queue (one task) ── <prefix>_presence key ── event
//!                                   │
//!        <prefix>_EVENTS (R = cluster.replicas, max_msgs = max_lag, discard old)
//!                                   │ consumer `webhook` (module `webhook`)
//!                                   ▼
//!                      the sender thread of the lease holder ── POST
//! ```
//!
//! A message's event is published, and its acknowledgement awaited,
//! before the msg:A goes out, under the JetStream message id
//! `m-<from>-<msg_id>`: an acknowledged message always has its event, and
//! a retransmit (which publishes it again, whichever node answers it) is
//! dropped by the stream's dedup window. The embedded backend gets the
//! same from one atomic batch; here two writes and an idempotent retry
//! stand in for it. Other events have the id `<node>-<boot ms>-<n>`.
//!
//! Who is offline for a message event is read from a cluster-wide view of
//! presence: a key `<node>.<user>` in the bucket `<prefix>_presence` while
//! the user has a device on the node, which every node watches into a
//! map. A node that starts deletes its own keys left by a crash (same
//! `node_id`) and publishes `offline` events with reason `restart` for
//! them. The watch lags a put by a round trip, so a message sent just as
//! the receiver logs in elsewhere may name it offline (an extra push).

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use ahash::{AHashMap, AHashSet};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use imgate_codec::frame::GroupOp;
use tokio::sync::mpsc;

use super::{
    js::{Js, JsError},
    names::Names,
    node::Node,
};
use crate::{config::EventsConfig, delivery::keys::Record, events::Event};

/// A presence change to record: (user, device, online).
pub(super) type Change = (u64, u32, bool);

/// Presence changes handled together at most.
const PRESENCE_BATCH: usize = 256;

/// What a node needs to publish events.
pub(super) struct Out {
    pub(super) cfg: EventsConfig,
    /// Unix ms this node started: part of its event ids.
    boot: u64,
    /// The last event id number given out.
    n: Cell<u64>,
    presence: kv::Store,
    /// Users with a device on some node, and which nodes, as watched.
    online: RefCell<AHashMap<u64, AHashSet<String>>>,
    /// The presence changes in the order they happened on this node.
    changes: mpsc::UnboundedSender<Change>,
    queued: RefCell<Option<mpsc::UnboundedReceiver<Change>>>,
    /// Changes queued and not yet recorded.
    pending: Cell<usize>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("boot", &self.boot)
            .field("n", &self.n.get())
            .finish_non_exhaustive()
    }
}

impl Out {
    pub(super) fn new(cfg: &EventsConfig, presence: kv::Store, boot: u64) -> Out {
        let (changes, queued) = mpsc::unbounded_channel();
        Out {
            cfg: cfg.clone(),
            boot,
            n: Cell::new(0),
            presence,
            online: RefCell::new(AHashMap::new()),
            changes,
            queued: RefCell::new(Some(queued)),
            pending: Cell::new(0),
        }
    }

    fn next_id(&self, node: &str) -> String {
        let n = self.n.get() + 1;
        self.n.set(n);
        format!("{node}-{}-{n}", self.boot)
    }
}

/// Publishes `ev` under `id`, retried (same id, so stored once) for up
/// to `retry`.
async fn publish(
    js: &Js,
    ev: &Event,
    id: &str,
    node: &str,
    retry: Duration,
) -> Result<(), JsError> {
    let subject = js.names().event_subject(ev.kind());
    let payload = Bytes::from(ev.to_json(id, crate::unix_time().as_millis() as u64, node));
    let deadline = tokio::time::Instant::now() + retry;
    let mut backoff = Duration::from_millis(20);
    loop {
        match js.publish_dedup(&subject, id, payload.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::debug!(id, error = %e, "event publish failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// At start, before any login: deletes this node's presence keys left by
/// a run that stopped without a word, with an `offline` event (reason
/// `restart`) for each; returns how many.
pub(super) async fn went_offline_in_a_restart(
    js: &Js,
    out: &Out,
    node: &str,
    retry: Duration,
) -> Result<usize, JsError> {
    let prefix = format!("{node}.");
    let keys = js.scan_store(&out.presence, &prefix, 256).await?;
    let mut n = 0;
    for (key, value) in keys {
        // `a.` also lists the keys of a node named `a.b`: only `a.<user>`.
        let Some((owner, user)) = Names::parse_presence_key(&key) else {
            continue;
        };
        if owner != node {
            continue;
        }
        let device = value
            .get(..4)
            .and_then(|d| d.try_into().ok())
            .map_or(0, u32::from_be_bytes);
        if out.cfg.wants("offline") {
            let ev = Event::Offline {
                user,
                device,
                reason: "restart",
            };
            publish(js, &ev, &out.next_id(node), node, retry).await?;
        }
        out.presence
            .delete(&key)
            .await
            .map_err(|e| JsError::Unavailable(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// An op's name in a group event (as the embedded backend names it).
pub(super) fn op_name(op: GroupOp) -> &'static str {
    match op {
        GroupOp::Create => "create",
        GroupOp::Add => "add",
        GroupOp::Remove => "remove",
        GroupOp::List => "list",
        GroupOp::Delete => "delete",
        GroupOp::Promote => "promote",
        GroupOp::Demote => "demote",
        GroupOp::Transfer => "transfer",
        GroupOp::Roles => "roles",
    }
}

impl Node {
    /// Whether `user` has no device connected to any node, as far as this
    /// node knows.
    fn is_offline(&self, out: &Out, user: u64) -> bool {
        !self.users.borrow().contains_key(&user)
            && out.online.borrow().get(&user).is_none_or(|n| n.is_empty())
    }

    /// Publishes a stored message's event (if wanted) and waits until it
    /// is stored: called before its msg:A. `group` 0 for one-to-one.
    pub(super) async fn message_event(
        &self,
        rec: &Record,
        group: u64,
        seq: u64,
        own_seq: u64,
        no_push: bool,
    ) -> Result<(), JsError> {
        let Some(out) = &self.events else {
            return Ok(());
        };
        if !out.cfg.wants("message") {
            return Ok(());
        }
        let offline = if no_push {
            Vec::new()
        } else if group == 0 {
            if self.is_offline(out, rec.to) {
                vec![rec.to]
            } else {
                Vec::new()
            }
        } else {
            let cached = self
                .groups
                .borrow()
                .get(&group)
                .and_then(|g| g.members.clone());
            let members = match cached {
                Some(m) => m,
                None => self.read_members(group).await?.unwrap_or_default(),
            };
            let mut v: Vec<u64> = members
                .users()
                .filter(|&u| u != rec.from && self.is_offline(out, u))
                .collect();
            v.sort_unstable();
            v
        };
        let ev = Event::message(
            rec.from, rec.to, group, rec.msg_id, seq, own_seq, &rec.body, !no_push, offline,
        );
        let id = format!("m-{}-{}", rec.from, rec.msg_id);
        publish(&self.js, &ev, &id, &self.name, self.limits.retry).await
    }

    /// Publishes a group event (if wanted) before the group:A; a failure
    /// is logged (the change is stored, and a retry of the request would
    /// not repeat it).
    pub(super) async fn group_event(&self, group: u64, op: GroupOp, by: u64, members: Vec<u64>) {
        let Some(out) = &self.events else {
            return;
        };
        if !out.cfg.wants("group") {
            return;
        }
        let ev = Event::Group {
            group,
            op: op_name(op),
            by,
            members,
        };
        let id = out.next_id(&self.name);
        if let Err(e) = publish(&self.js, &ev, &id, &self.name, self.limits.retry).await {
            tracing::error!(group, error = %e, "group event lost: JetStream did not take it");
        }
    }

    /// A user's first device connected here (`online`) or its last left.
    pub(super) fn presence_changed(&self, user: u64, device: u32, online: bool) {
        if let Some(out) = &self.events
            && out.changes.send((user, device, online)).is_ok()
        {
            out.pending.set(out.pending.get() + 1);
        }
    }

    /// Records presence changes in the bucket and publishes their events,
    /// in the order they happened for each user; users side by side.
    pub(super) async fn presence_writer(self: Rc<Self>) {
        let Some(out) = &self.events else {
            return;
        };
        let Some(mut rx) = out.queued.borrow_mut().take() else {
            return;
        };
        let mut buf = Vec::with_capacity(PRESENCE_BATCH);
        while rx.recv_many(&mut buf, PRESENCE_BATCH).await > 0 {
            let mut per_user: AHashMap<u64, Vec<(u32, bool)>> = AHashMap::new();
            for (user, device, online) in buf.drain(..) {
                per_user.entry(user).or_default().push((device, online));
            }
            let tasks = per_user.into_iter().map(|(user, changes)| {
                let node = self.clone();
                async move {
                    for (device, online) in changes {
                        node.record_presence(user, device, online).await;
                        if let Some(out) = &node.events {
                            out.pending.set(out.pending.get().saturating_sub(1));
                        }
                    }
                }
            });
            futures_util::future::join_all(tasks).await;
        }
    }

    async fn record_presence(&self, user: u64, device: u32, online: bool) {
        let Some(out) = &self.events else {
            return;
        };
        let key = Names::presence_key(&self.name, user);
        let deadline = tokio::time::Instant::now() + self.limits.retry;
        loop {
            let r = if online {
                out.presence
                    .put(&key, Bytes::copy_from_slice(&device.to_be_bytes()))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                out.presence.delete(&key).await.map_err(|e| e.to_string())
            };
            match r {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(user, error = %e, "presence not recorded");
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let ev = if online {
            Event::Online { user, device }
        } else {
            Event::Offline {
                user,
                device,
                reason: "closed",
            }
        };
        if !out.cfg.wants(ev.kind()) {
            return;
        }
        let id = out.next_id(&self.name);
        if let Err(e) = publish(&self.js, &ev, &id, &self.name, self.limits.retry).await {
            tracing::error!(user, error = %e, "presence event lost: JetStream did not take it");
        }
    }

    /// Waits (up to `grace`) until the presence changes queued are
    /// recorded: a node that stops cleanly leaves no key behind.
    pub(super) async fn presence_drained(&self, grace: Duration) {
        let Some(out) = &self.events else {
            return;
        };
        let deadline = tokio::time::Instant::now() + grace;
        while out.pending.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Keeps this node's view of who is online on which node, from the
    /// presence bucket; watches again (from the start) if the watch ends.
    pub(super) async fn presence_watcher(self: Rc<Self>) {
        let Some(out) = &self.events else {
            return;
        };
        loop {
            match out.presence.watch_with_history(">").await {
                Ok(mut w) => {
                    out.online.borrow_mut().clear();
                    while let Some(e) = w.next().await {
                        let Ok(e) = e else { break };
                        let Some((node, user)) = Names::parse_presence_key(&e.key) else {
                            continue;
                        };
                        let mut online = out.online.borrow_mut();
                        if e.operation == kv::Operation::Put {
                            online.entry(user).or_default().insert(node.to_string());
                        } else if let Some(nodes) = online.get_mut(&user) {
                            nodes.remove(node);
                            if nodes.is_empty() {
                                online.remove(&user);
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the presence bucket"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
