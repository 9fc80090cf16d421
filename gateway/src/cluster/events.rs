//! Events to the business backend on the cluster backend (`[events]`):
//! the same events as the embedded backend's (`crate::events`), stored in
//! a JetStream stream instead of an outbox table.
//!
//! ```text
//!  msg:R ── appends stored ── event published, PubAck ── msg:A
//!  group:R ── change stored ── event published, PubAck ── group:A
//!  login / close ── presence queue (one task) ── <prefix>_presence key ── event
//!                                   │
//!   <prefix>_EVENTS (work queue, R = cluster.replicas, max_msgs = max_lag, discard old)
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
//!
//! A node that dies and never starts again under its `node_id` would leave
//! its keys for ever, its users online to everyone. So each node keeps a
//! key `<node>` in the bucket `<prefix>_nodes`, written at start (before
//! its first presence key) and refreshed every [`alive_every`] (ten timer
//! ticks, between 1 s and 10 s: the purge sweep's interval, so one setting,
//! `tick_ms`, paces both; 10 s with the default tick); the bucket's
//! `max_age` is [`ALIVE_PERIODS`] periods, so JetStream itself removes the
//! key of a node that missed two refreshes, by its own clock, whatever the
//! nodes' clocks say. Every period each node lists the bucket (one key per
//! node) and takes a node that has presence keys but no key there for
//! lost; its presence no longer counts for the `offline` recipients. The
//! holder of the lease `presence.lost` (meta bucket, lasting
//! [`ALIVE_PERIODS`] periods) then reads the node's key once more, and if
//! it is still gone publishes an `offline` event with reason `node_lost`
//! for each of its presence keys, `node` naming the lost node (online and
//! offline are per node: a user also on a live node gets it too, and
//! stays online there), then deletes the key at the revision it read. The
//! event id is `lost-<node>-<user>-<key revision>`: two nodes that both
//! clear one key publish the same id and the stream keeps one. A node that
//! finds its own key expired (it stalled, or lost JetStream, for longer
//! than the bound) writes it again and puts back the presence keys of its
//! users that were cleared, with `online` events: the backend saw them
//! offline (`node_lost`) and sees them online again.

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
    js::{Bucket, Js, JsError, Update},
    names::Names,
    node::Node,
    purge::{lease_of, lease_value, may_take},
};
use crate::{config::EventsConfig, delivery::keys::Record, events::Event};

/// A presence change to record: (user, device, online).
pub(super) type Change = (u64, u32, bool);

/// Presence changes handled together at most.
const PRESENCE_BATCH: usize = 256;

/// Keys per read of a key scan.
const SCAN_PAGE: usize = 256;

/// A node's key in the nodes bucket expires this many refresh periods
/// after it was last written: a node is lost after missing two refreshes.
pub(super) const ALIVE_PERIODS: u32 = 3;

/// How often a node refreshes its key in the nodes bucket (and reads
/// which nodes are alive): ten timer ticks, between 1 s and 10 s.
pub(super) fn alive_every(tick: Duration) -> Duration {
    (tick * 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

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
    /// How many users each node has in `online`.
    per_node: RefCell<AHashMap<String, usize>>,
    /// `<prefix>_nodes`: the key of every live node.
    nodes: kv::Store,
    /// How often this node's key there is refreshed.
    every: Duration,
    /// The revision of this node's key there.
    alive_rev: Cell<u64>,
    /// Set when this node found its key gone: its users' presence keys
    /// are checked again at the next refresh too.
    recheck: Cell<bool>,
    /// Nodes with presence keys and no key in the nodes bucket, as last
    /// read.
    dead: RefCell<AHashSet<String>>,
    /// The users online on this node, with the device that made them so.
    mine: RefCell<AHashMap<u64, u32>>,
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
    pub(super) fn new(
        cfg: &EventsConfig,
        presence: kv::Store,
        nodes: kv::Store,
        every: Duration,
        boot: u64,
    ) -> Out {
        let (changes, queued) = mpsc::unbounded_channel();
        Out {
            cfg: cfg.clone(),
            boot,
            n: Cell::new(0),
            presence,
            online: RefCell::new(AHashMap::new()),
            per_node: RefCell::new(AHashMap::new()),
            nodes,
            every,
            alive_rev: Cell::new(0),
            recheck: Cell::new(false),
            dead: RefCell::new(AHashSet::new()),
            mine: RefCell::new(AHashMap::new()),
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

    /// This node's key's value in the nodes bucket: its start time.
    fn alive_value(&self) -> Bytes {
        Bytes::copy_from_slice(&self.boot.to_be_bytes())
    }
}

/// The device a presence key's value names (0 if unreadable).
fn device_of(value: &[u8]) -> u32 {
    value
        .get(..4)
        .and_then(|d| d.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// At start, before any presence key of this run: writes this node's key
/// in the nodes bucket, so no other node takes it for lost.
pub(super) async fn announce(out: &Out, node: &str) -> Result<(), JsError> {
    let rev = out
        .nodes
        .put(node, out.alive_value())
        .await
        .map_err(|e| JsError::Unavailable(e.to_string()))?;
    out.alive_rev.set(rev);
    Ok(())
}

/// Publishes `ev` under `id` with `time` (Unix ms), retried (same id, so
/// stored once) for up to `retry`.
async fn publish(
    js: &Js,
    ev: &Event,
    (id, time): (&str, u64),
    node: &str,
    retry: Duration,
) -> Result<(), JsError> {
    let subject = js.names().event_subject(ev.kind());
    let payload = Bytes::from(ev.to_json(id, time, node));
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
        let device = device_of(&value);
        if out.cfg.wants("offline") {
            let ev = Event::Offline {
                user,
                device,
                reason: "restart",
            };
            publish(
                js,
                &ev,
                (&out.next_id(node), crate::clock::unix_ms()),
                node,
                retry,
            )
            .await?;
        }
        out.presence
            .delete(&key)
            .await
            .map_err(|e| JsError::Unavailable(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

impl Node {
    /// Publishes a group or presence event under a fresh id; a failure
    /// is logged (the change it reports is already stored).
    async fn publish_or_log(&self, out: &Out, ev: &Event) {
        let id = out.next_id(&self.name);
        let r = publish(
            &self.js,
            ev,
            (&id, crate::clock::unix_ms()),
            &self.name,
            self.limits.retry,
        )
        .await;
        if let Err(e) = r {
            tracing::error!(event = ev.kind(), error = %e, "event lost: JetStream did not take it");
        }
    }

    /// Whether `user` has no device connected to any node, as far as this
    /// node knows.
    fn is_offline(&self, out: &Out, user: u64) -> bool {
        if self.users.borrow().contains_key(&user) {
            return false;
        }
        let dead = out.dead.borrow();
        out.online
            .borrow()
            .get(&user)
            .is_none_or(|n| n.iter().all(|node| dead.contains(node)))
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
        // The message's stored time, as in its msg:A.
        publish(
            &self.js,
            &ev,
            (&id, rec.time),
            &self.name,
            self.limits.retry,
        )
        .await
    }

    /// Publishes a group event (if wanted) before the group:A; a failure
    /// is logged (the change is stored, and a retry of the request would
    /// not repeat it).
    pub(super) async fn group_event(
        &self,
        group: u64,
        op: GroupOp,
        by: u64,
        mut members: Vec<u64>,
    ) {
        let Some(out) = &self.events else {
            return;
        };
        if !out.cfg.wants("group") {
            return;
        }
        // In user order, as on the embedded backend.
        members.sort_unstable();
        let ev = Event::Group {
            group,
            op: crate::events::event::op_name(op),
            by,
            members,
        };
        self.publish_or_log(out, &ev).await;
    }

    /// A user's first device connected here (`online`) or its last left.
    pub(super) fn presence_changed(&self, user: u64, device: u32, online: bool) {
        if let Some(out) = &self.events
            && out.changes.send((user, device, online)).is_ok()
        {
            out.pending.set(out.pending.get() + 1);
            if online {
                out.mine.borrow_mut().insert(user, device);
            } else {
                out.mine.borrow_mut().remove(&user);
            }
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
        self.publish_or_log(out, &ev).await;
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
                    out.per_node.borrow_mut().clear();
                    while let Some(e) = w.next().await {
                        let Ok(e) = e else { break };
                        let Some((node, user)) = Names::parse_presence_key(&e.key) else {
                            continue;
                        };
                        let mut online = out.online.borrow_mut();
                        let mut per_node = out.per_node.borrow_mut();
                        if e.operation == kv::Operation::Put {
                            if online.entry(user).or_default().insert(node.to_string()) {
                                *per_node.entry(node.to_string()).or_default() += 1;
                            }
                        } else if let Some(nodes) = online.get_mut(&user)
                            && nodes.remove(node)
                        {
                            if nodes.is_empty() {
                                online.remove(&user);
                            }
                            if let Some(n) = per_node.get_mut(node) {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    per_node.remove(node);
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the presence bucket"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Keeps this node's key in the nodes bucket alive, reads which nodes
    /// are lost, and (under the lease) clears their presence keys; every
    /// [`alive_every`].
    pub(super) async fn liveness(self: Rc<Self>) {
        let Some(out) = &self.events else {
            return;
        };
        let mut every = tokio::time::interval(out.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.keep_alive(out).await;
            self.read_lost(out).await;
            if out.dead.borrow().is_empty() || !self.hold_lost_lease(out).await {
                continue;
            }
            let lost: Vec<String> = out.dead.borrow().iter().cloned().collect();
            for node in lost {
                match self.clear_lost(out, &node).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        node = %node,
                        users = n,
                        "a lost node's users reported offline (node_lost)"
                    ),
                    Err(e) => tracing::warn!(
                        node = %node,
                        error = %e,
                        "cannot clear a lost node's presence; retrying"
                    ),
                }
            }
        }
    }

    /// Refreshes this node's key; if it is gone (expired: others may have
    /// cleared this node's presence), writes it again and puts back the
    /// presence keys of its users.
    async fn keep_alive(&self, out: &Out) {
        let value = out.alive_value();
        let lost = match out
            .nodes
            .update(&self.name, value.clone(), out.alive_rev.get())
            .await
        {
            Ok(rev) => {
                out.alive_rev.set(rev);
                false
            }
            // Refused, or no answer: read what the bucket holds.
            Err(e) => match out.nodes.entry(&self.name).await {
                // The update went through after all.
                Ok(Some(en)) if en.operation == kv::Operation::Put && en.value == value => {
                    out.alive_rev.set(en.revision);
                    false
                }
                Ok(_) => true,
                Err(_) => {
                    tracing::debug!(error = %e, "cannot refresh this node's key; retrying");
                    false
                }
            },
        };
        if lost {
            tracing::warn!(
                "this node's key in the nodes bucket expired (a stall, or JetStream out of \
                 reach): its users may have been reported offline; reporting them online"
            );
            match out.nodes.put(&self.name, value).await {
                Ok(rev) => {
                    out.alive_rev.set(rev);
                    out.recheck.set(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write this node's key");
                    return;
                }
            }
            self.announce_again(out).await;
        } else if out.recheck.replace(false) {
            // A node clearing this one's keys just before the key was
            // written again may have deleted some after the last check.
            self.announce_again(out).await;
        }
    }

    /// Queues an `online` for each user of this node whose presence key is
    /// missing from the bucket.
    async fn announce_again(&self, out: &Out) {
        let prefix = format!("{}.", self.name);
        let keys = match self.js.scan_store(&out.presence, &prefix, SCAN_PAGE).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's presence keys");
                out.recheck.set(true);
                return;
            }
        };
        let kept: AHashSet<u64> = keys
            .iter()
            .filter_map(|(k, _)| Names::parse_presence_key(k))
            .filter(|(node, _)| *node == self.name)
            .map(|(_, user)| user)
            .collect();
        let missing: Vec<(u64, u32)> = {
            let users = self.users.borrow();
            out.mine
                .borrow()
                .iter()
                .filter(|(u, _)| !kept.contains(u) && users.contains_key(u))
                .map(|(&u, &d)| (u, d))
                .collect()
        };
        for (user, device) in missing {
            self.presence_changed(user, device, true);
        }
    }

    /// Lists the live nodes and sets `dead`: the nodes with presence keys
    /// and no key in the nodes bucket. The nodes with presence keys are
    /// taken before the list is read: each wrote its own key before its
    /// first presence key, so a node that just started is not among them.
    async fn read_lost(&self, out: &Out) {
        let seen: Vec<String> = out.per_node.borrow().keys().cloned().collect();
        let live = match self.js.scan_entries(&out.nodes, "", SCAN_PAGE).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the live nodes; keeping the last list");
                return;
            }
        };
        let live: AHashSet<String> = live.into_iter().map(|(k, _, _)| k).collect();
        let dead: AHashSet<String> = seen
            .into_iter()
            .filter(|n| *n != self.name && !live.contains(n))
            .collect();
        for n in dead.difference(&out.dead.borrow()) {
            tracing::info!(node = %n, "a node's key expired: its users no longer count as online");
        }
        *out.dead.borrow_mut() = dead;
    }

    /// Whether this node holds (took or renewed) the lease on clearing
    /// lost nodes' presence.
    async fn hold_lost_lease(&self, out: &Out) -> bool {
        let now = u64::try_from(crate::unix_time().as_millis()).unwrap_or(u64::MAX);
        let lease = u64::try_from((out.every * ALIVE_PERIODS).as_millis()).unwrap_or(u64::MAX);
        let (me, until) = (self.token, now.saturating_add(lease));
        let r = self
            .js
            .update_key(Bucket::Meta, Names::LOST_LEASE_KEY, |e| {
                let held = e.value.as_deref().and_then(lease_of);
                Ok::<_, JsError>(if may_take(held, me, now) {
                    Update::Write(lease_value(me, until), true)
                } else {
                    Update::Keep(false)
                })
            })
            .await;
        r.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot take the lease on lost nodes");
            false
        })
    }

    /// If `lost` still has no key in the nodes bucket: an `offline` event
    /// (reason `node_lost`) for each of its presence keys, then the key
    /// deleted at the revision read; returns how many went.
    async fn clear_lost(&self, out: &Out, lost: &str) -> Result<usize, JsError> {
        let unavailable = |e: String| JsError::Unavailable(e);
        match out.nodes.entry(lost).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(unavailable(e.to_string())),
        }
        let keys = self
            .js
            .scan_entries(&out.presence, &format!("{lost}."), SCAN_PAGE)
            .await?;
        let mut n = 0;
        for (key, value, rev) in keys {
            // `a.` also lists the keys of a node named `a.b`.
            let Some((owner, user)) = Names::parse_presence_key(&key) else {
                continue;
            };
            if owner != lost {
                continue;
            }
            if out.cfg.wants("offline") {
                let ev = Event::Offline {
                    user,
                    device: device_of(&value),
                    reason: "node_lost",
                };
                let id = format!("lost-{lost}-{user}-{rev}");
                publish(
                    &self.js,
                    &ev,
                    (&id, crate::clock::unix_ms()),
                    lost,
                    self.limits.retry,
                )
                .await?;
            }
            // Refused if the key changed since: another node cleared it,
            // or the node came back and wrote it again.
            match out.presence.delete_expect_revision(&key, Some(rev)).await {
                Ok(()) => n += 1,
                Err(e) => tracing::debug!(key, error = %e, "presence key not deleted"),
            }
        }
        Ok(n)
    }

    /// At a clean stop, after the presence keys: deletes this node's key
    /// in the nodes bucket (what is left of its presence, if the drain ran
    /// out of time, is cleared by the others).
    pub(super) async fn leave(&self) {
        if let Some(out) = &self.events
            && let Err(e) = out.nodes.delete(&self.name).await
        {
            tracing::debug!(error = %e, "cannot delete this node's key");
        }
    }
}
