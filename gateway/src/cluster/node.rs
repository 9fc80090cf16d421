//! One gateway node of the cluster: the state it keeps and the events it
//! acts on, on the cluster backend's own thread (a single-threaded tokio
//! runtime, so the state needs no locks: every task of the node runs on
//! this thread, and none holds a borrow across an await).
//!
//! What a node keeps is only what is about its own connections: which
//! users it holds (and for each a subscription to the user's push
//! subject), which groups those users are in (and for each a subscription
//! to the group's push subject and a copy of its members), the order state
//! of each such stream ([`feed`](super::feed)), and cached cursors.
//! Everything durable is in JetStream.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use ahash::{AHashMap, AHashSet};
use futures_util::StreamExt;
use imgate_codec::KickReason;
use tokio::sync::{Notify, watch};

use super::{
    append::Queues,
    feed::{Feed, Of, Push},
    groups::Members,
    js::Js,
    stats::Stats,
    wire::NodeMsg,
};
use crate::{
    backend::{Inbound, Router},
    conn_id::ConnId,
};

/// Senders of recent inbox records kept per user, for delivered receipts.
const SENDERS: usize = 4096;

/// The request limits the node applies (as the embedded backend does).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_body: usize,
    pub(super) max_frame: usize,
    pub(super) page_default: usize,
    pub(super) page_max: usize,
    pub(super) page_budget: usize,
    pub(super) max_group_size: usize,
    pub(super) group_admin: crate::config::GroupAdmin,
    pub(super) unread_scan_limit: usize,
    pub(super) retry: Duration,
    pub(super) purge: super::purge::Settings,
}

/// A connection of a user on this node.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) conn: ConnId,
    /// The inbox head its login:ok reported: it gets pushes above it.
    /// `u64::MAX` until then.
    pub(super) from: u64,
}

/// A user this node holds connections of.
#[derive(Debug)]
pub(super) struct User {
    pub(super) sessions: Vec<Session>,
    /// Becomes true once the push subscription is in place.
    ready: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
    /// The order of the user's inbox.
    pub(super) feed: Feed,
    /// The groups this node feeds the user.
    pub(super) groups: AHashSet<u64>,
    /// Senders of recent inbox records (sequence id → sender).
    pub(super) senders: std::collections::BTreeMap<u64, u64>,
}

impl Drop for User {
    fn drop(&mut self) {
        // Dropping the subscription unsubscribes.
        self.watcher.abort();
    }
}

/// A group whose members this node holds connections of.
#[derive(Debug)]
pub(super) struct Group {
    /// The order of the group's log.
    pub(super) feed: Feed,
    /// The members, as last read (None until read).
    pub(super) members: Option<Members>,
    /// Users of this node that may be members.
    pub(super) local: AHashSet<u64>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The connection sending a message, and when to forget it (None: its
/// msg:A has not gone out yet).
pub(super) type Sender = (ConnId, Option<tokio::time::Instant>);

/// The node.
pub(super) struct Node {
    pub(super) js: Js,
    /// This node's id on the wire (random per start).
    pub(super) token: u64,
    /// This node's name (`cluster.node_id`, or the host's).
    pub(super) name: String,
    pub(super) limits: Limits,
    pub(super) router: RefCell<Router>,
    flush: Notify,
    pub(super) users: RefCell<AHashMap<u64, User>>,
    pub(super) groups: RefCell<AHashMap<u64, Group>>,
    pub(super) queues: Queues,
    pub(super) cursor_slots: RefCell<AHashMap<(u64, u64, u32), super::cursors::Slot>>,
    /// One lock per sender of group messages: taken in arrival order
    /// around the membership check, so its messages keep their order.
    pub(super) send_locks: RefCell<AHashMap<u64, Rc<tokio::sync::Mutex<()>>>>,
    /// Conversations known to be open (the sender wrote to the peer).
    pub(super) open: RefCell<AHashSet<(u64, u64)>>,
    /// Receipt marks as last read or written: (value, revision) per key,
    /// and one lock per key so that one write is in flight per mark.
    pub(super) marks: RefCell<AHashMap<String, super::receipts::Mark>>,
    /// The connection that sent each message whose msg:R this node is
    /// answering, by (sender, msg id), kept a little past its msg:A: a
    /// push of its own copy read from the log leaves that connection out,
    /// as a published push does.
    pub(super) sending: RefCell<AHashMap<(u64, u64), Sender>>,
    pub(super) inflight: Arc<AtomicUsize>,
    pub(super) stats: Arc<Stats>,
    pub(super) stopping: Cell<bool>,
    /// Events to the business backend (`[events]` on).
    pub(super) events: Option<super::events::Out>,
}

impl Node {
    pub(super) fn new(
        js: Js,
        name: String,
        limits: Limits,
        router: Router,
        inflight: Arc<AtomicUsize>,
        stats: Arc<Stats>,
    ) -> Node {
        let token = {
            let t = crate::unix_time().as_nanos() as u64;
            t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
        };
        Node {
            js,
            token,
            name,
            limits,
            router: RefCell::new(router),
            flush: Notify::new(),
            users: RefCell::new(AHashMap::new()),
            groups: RefCell::new(AHashMap::new()),
            queues: Queues::default(),
            cursor_slots: RefCell::new(AHashMap::new()),
            send_locks: RefCell::new(AHashMap::new()),
            open: RefCell::new(AHashSet::new()),
            marks: RefCell::new(AHashMap::new()),
            sending: RefCell::new(AHashMap::new()),
            inflight,
            stats,
            stopping: Cell::new(false),
            events: None,
        }
    }

    /// Runs until the cores are gone and the requests in flight finished
    /// (or `grace` passed).
    pub(super) async fn run(
        self: Rc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Inbound>,
        grace: Duration,
    ) {
        let flusher = tokio::task::spawn_local(self.clone().flusher());
        let sweeper = tokio::task::spawn_local(self.clone().sweeper());
        let census = tokio::task::spawn_local(self.clone().census());
        let revoked = tokio::task::spawn_local(self.clone().revocations());
        while let Some(ev) = rx.recv().await {
            self.on_event(ev);
        }
        self.stopping.set(true);
        sweeper.abort();
        census.abort();
        revoked.abort();
        let deadline = tokio::time::Instant::now() + grace;
        while self.inflight.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.groups.borrow_mut().clear();
        self.users.borrow_mut().clear();
        self.router.borrow_mut().flush();
        flusher.abort();
        let _ = self.js.client().flush().await;
    }

    /// Sends what tasks queued on the router, once per scheduler round.
    async fn flusher(self: Rc<Self>) {
        loop {
            self.flush.notified().await;
            tokio::task::yield_now().await;
            self.router.borrow_mut().flush();
        }
    }

    pub(super) fn kick_flush(&self) {
        self.flush.notify_one();
    }

    fn on_event(self: &Rc<Self>, ev: Inbound) {
        self.router.borrow_mut().control(&ev);
        match ev {
            Inbound::Login {
                conn,
                user,
                device,
                resume,
            } => {
                if !self.users.borrow().contains_key(&user) {
                    self.presence_changed(user, device, true);
                }
                self.login(conn, user, device, resume);
            }
            Inbound::Frame {
                conn,
                user,
                device,
                frame,
            } => {
                tokio::task::spawn_local(self.clone().request(conn, user, device, frame));
            }
            Inbound::Closed {
                conn, user, device, ..
            } => {
                let gone = {
                    let mut users = self.users.borrow_mut();
                    match users.get_mut(&user) {
                        Some(u) => {
                            u.sessions.retain(|s| s.conn != conn);
                            if u.sessions.is_empty() {
                                users.remove(&user)
                            } else {
                                None
                            }
                        }
                        None => None,
                    }
                };
                if let Some(u) = gone {
                    self.presence_changed(user, device, false);
                    for g in &u.groups {
                        self.detach(*g, user);
                    }
                }
            }
            // The login that replaced it kicks the device on other nodes.
            Inbound::Replaced { .. } => {}
            Inbound::Kick {
                user,
                device,
                reason,
            } => {
                let m = NodeMsg::Kick {
                    reason,
                    device,
                    except_node: 0,
                    except_conn: 0,
                };
                tokio::task::spawn_local(self.clone().tell(user, m));
            }
        }
        self.kick_flush();
    }

    /// Publishes a message to the nodes holding `user`.
    pub(super) async fn tell(self: Rc<Self>, user: u64, m: NodeMsg) {
        let subject = self.js.names().push(user);
        if let Err(e) = self.js.client().publish(subject, m.encode()).await {
            tracing::warn!(user, error = %e, "cannot publish to the user's nodes");
        }
    }

    /// Publishes a message to the nodes holding members of `group`.
    pub(super) async fn tell_group(self: Rc<Self>, group: u64, m: NodeMsg) {
        let subject = self.js.names().group_push(group);
        if let Err(e) = self.js.client().publish(subject, m.encode()).await {
            tracing::warn!(group, error = %e, "cannot publish to the group's nodes");
        }
    }

    fn login(self: &Rc<Self>, conn: ConnId, user: u64, device: u32, resume: u64) {
        let ready = {
            let mut users = self.users.borrow_mut();
            let u = users.entry(user).or_insert_with(|| {
                let (tx, rx) = watch::channel(false);
                let watcher = tokio::task::spawn_local(self.clone().watch(user, tx));
                User {
                    sessions: Vec::new(),
                    ready: rx,
                    watcher,
                    feed: Feed::default(),
                    groups: AHashSet::new(),
                    senders: std::collections::BTreeMap::new(),
                }
            });
            u.sessions.push(Session {
                conn,
                from: u64::MAX,
            });
            u.ready.clone()
        };
        tokio::task::spawn_local(self.clone().finish_login(conn, user, device, resume, ready));
    }

    async fn finish_login(
        self: Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
        resume: u64,
        mut ready: watch::Receiver<bool>,
    ) {
        if ready.wait_for(|r| *r).await.is_err() {
            return; // the user's connections closed meanwhile
        }
        // The device's connections on other nodes go (`replaced`).
        self.clone()
            .tell(
                user,
                NodeMsg::Kick {
                    reason: KickReason::Replaced,
                    device: Some(device),
                    except_node: self.token,
                    except_conn: conn.to_u64(),
                },
            )
            .await;
        let deadline = tokio::time::Instant::now() + self.limits.retry;
        let (head, groups) = loop {
            let read = async {
                let (h, _) = self.inbox_head(user).await?;
                let g = self.user_groups(user).await?;
                Ok::<_, super::js::JsError>((h, g))
            };
            match read.await {
                Ok(r) => break r,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(user, error = %e, "login reads failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(user, error = %e, "cannot read the inbox head at login");
                    self.router
                        .borrow_mut()
                        .kick(conn, KickReason::ServerShutdown);
                    self.kick_flush();
                    return;
                }
            }
        };
        // The device reads the inbox from here on: the purge waits for its
        // cursor (a raise writes the key; otherwise it is registered at 0).
        let resumed = resume.min(head);
        if resumed > 0 {
            if let Err(e) = self.raise_cursor(0, user, device, resumed).await {
                tracing::warn!(user, error = %e, "cannot move the cursor at login");
            }
        } else if let Err(e) = self.register_device(user, device).await {
            tracing::warn!(user, device, error = %e, "cannot register the device's cursor at login");
        }
        let ready = {
            let mut users = self.users.borrow_mut();
            let Some(u) = users.get_mut(&user) else {
                return;
            };
            // Pushes this node already made are in the log: the head shown
            // covers them, so the device syncs them instead of missing them.
            let shown = head.max(u.feed.next.saturating_sub(1));
            let Some(s) = u.sessions.iter_mut().find(|s| s.conn == conn) else {
                return;
            };
            s.from = shown;
            self.router.borrow_mut().login_ok(conn, shown);
            u.feed.start(shown);
            (u.feed.ready(), u.feed.gap())
        };
        self.deliver(Of::Inbox(user), &ready.0);
        if ready.1 {
            self.arm_fill(Of::Inbox(user));
        }
        for g in groups {
            self.attach(g, user);
        }
        self.kick_flush();
        // Receipts that moved while the device was away.
        if let Err(e) = self.replay_receipts(conn, user).await {
            tracing::warn!(user, error = %e, "cannot read the receipts at login");
        }
        self.kick_flush();
    }

    /// Holds the user's push subscription while the node has the user.
    async fn watch(self: Rc<Self>, user: u64, ready: watch::Sender<bool>) {
        let subject = self.js.names().push(user);
        let mut sub = self.subscribe(subject).await;
        let _ = ready.send(true);
        while let Some(m) = sub.next().await {
            match NodeMsg::decode(&m.payload) {
                Some(NodeMsg::Who { device }) => {
                    if let Some(reply) = m.reply {
                        tokio::task::spawn_local(self.clone().who(user, device, reply));
                    }
                }
                Some(msg) => self.on_user_msg(user, msg),
                None => tracing::warn!(user, "malformed node message dropped"),
            }
            self.kick_flush();
        }
    }

    /// Answers which of the user's sessions this node holds.
    async fn who(self: Rc<Self>, user: u64, device: Option<u32>, reply: async_nats::Subject) {
        let lines: String = self
            .router
            .borrow()
            .registry()
            .sessions_info(user, device)
            .iter()
            .map(|(d, c, info)| {
                format!(
                    "{{\"node\":\"{}\",{}}}\n",
                    self.name,
                    info.json_members(*d, *c)
                )
            })
            .collect();
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.js.client().publish(reply, lines.into()).await {
            tracing::debug!(user, error = %e, "cannot answer a session query");
        }
    }

    /// Answers every census question with this node's online counts (the
    /// server API's presence counts across nodes).
    async fn census(self: Rc<Self>) {
        use futures_util::StreamExt;
        let mut sub = self.subscribe(self.js.names().census()).await;
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply else { continue };
            let line = format!(
                "{{\"node\":\"{}\",{}}}\n",
                self.name,
                self.router.borrow().registry().census_json()
            );
            if let Err(e) = self.js.client().publish(reply, line.into()).await {
                tracing::debug!(error = %e, "cannot answer a census");
            }
        }
    }

    /// Applies the revocations the server API made on any node.
    async fn revocations(self: Rc<Self>) {
        use futures_util::StreamExt;
        let mut sub = self.subscribe(self.js.names().revoked()).await;
        while let Some(m) = sub.next().await {
            let Some(r) = super::stats::decode_revocation(&m.payload) else {
                tracing::warn!("malformed revocation dropped");
                continue;
            };
            let router = self.router.borrow();
            let list = &router.registry().revocations;
            if r.until == 0 {
                list.lift(r.user, r.device);
            } else {
                list.set(r);
            }
        }
    }

    /// Subscribes, and waits until the server has the subscription: a
    /// push of anything stored after this returns reaches it.
    async fn subscribe(&self, subject: String) -> async_nats::Subscriber {
        let sub = loop {
            match self.js.client().subscribe(subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(subject, error = %e, "cannot subscribe; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        while let Err(e) = self.js.client().flush().await {
            tracing::debug!(subject, error = %e, "flush failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sub
    }

    fn on_user_msg(self: &Rc<Self>, user: u64, msg: NodeMsg) {
        let msg = match Push::from_msg(msg) {
            Ok((p, stream_seq)) => return self.on_push(Of::Inbox(user), p, stream_seq),
            Err(other) => other,
        };
        match msg {
            NodeMsg::Kick {
                reason,
                device,
                except_node,
                except_conn,
            } => {
                let mut router = self.router.borrow_mut();
                for (_, conn) in router.registry().kick_targets(user, device, reason) {
                    if except_node == self.token && conn.to_u64() == except_conn {
                        continue;
                    }
                    router.kick(conn, reason);
                }
            }
            NodeMsg::Notice {
                origin_node,
                origin_conn,
                frame,
            } => {
                let users = self.users.borrow();
                let Some(u) = users.get(&user) else {
                    return;
                };
                let mut router = self.router.borrow_mut();
                for s in &u.sessions {
                    let origin = origin_node == self.token && s.conn.to_u64() == origin_conn;
                    if s.from != u64::MAX && !origin {
                        router.to_conn(s.conn, frame.clone(), None);
                    }
                }
            }
            NodeMsg::Joined { group } => {
                self.attach(group, user);
                // This node's copy of the members may not have the user yet.
                let stale =
                    self.groups.borrow().get(&group).is_some_and(|g| {
                        g.members.as_ref().is_some_and(|m| m.join(user).is_none())
                    });
                if stale {
                    tokio::task::spawn_local(self.clone().reload_members(group));
                }
            }
            NodeMsg::Push { .. } | NodeMsg::Members | NodeMsg::Who { .. } => {}
        }
    }

    /// Feeds `group` to `user`'s connections here (from now on).
    pub(super) fn attach(self: &Rc<Self>, group: u64, user: u64) {
        {
            let mut users = self.users.borrow_mut();
            let Some(u) = users.get_mut(&user) else {
                return;
            };
            if !u.groups.insert(group) {
                return;
            }
        }
        let mut groups = self.groups.borrow_mut();
        let g = groups.entry(group).or_insert_with(|| Group {
            feed: Feed::default(),
            members: None,
            local: AHashSet::new(),
            watcher: tokio::task::spawn_local(self.clone().watch_group(group)),
        });
        g.local.insert(user);
    }

    /// Stops feeding `group` to `user` here; the last user ends the feed.
    fn detach(&self, group: u64, user: u64) {
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get_mut(&group) {
            g.local.remove(&user);
            if g.local.is_empty() {
                groups.remove(&group);
            }
        }
    }

    /// Holds a group's push subscription while the node has members.
    async fn watch_group(self: Rc<Self>, group: u64) {
        let subject = self.js.names().group_push(group);
        let mut sub = self.subscribe(subject).await;
        let log = self.js.names().group_log(group);
        let mut failures = 0u32;
        loop {
            let read = async {
                let (head, _) = self.js.head(&log).await?;
                let members = self.read_members(group).await?;
                Ok::<_, super::js::JsError>((head, members))
            };
            match read.await {
                Ok((head, members)) => {
                    let mut groups = self.groups.borrow_mut();
                    let Some(g) = groups.get_mut(&group) else {
                        return;
                    };
                    g.members = Some(members.unwrap_or_default());
                    g.feed.start(head);
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(group, error = %e, "group head read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20))))
                        .await;
                }
            }
        }
        let (ready, gap) = self
            .with_feed(Of::Group(group), |f| (f.ready(), f.gap()))
            .unwrap_or_default();
        self.deliver(Of::Group(group), &ready);
        if gap {
            self.arm_fill(Of::Group(group));
        }
        self.kick_flush();
        while let Some(m) = sub.next().await {
            match NodeMsg::decode(&m.payload).map(Push::from_msg) {
                Some(Ok((p, stream_seq))) => self.on_push(Of::Group(group), p, stream_seq),
                Some(Err(NodeMsg::Members)) => {
                    tokio::task::spawn_local(self.clone().reload_members(group));
                }
                Some(_) => {}
                None => tracing::warn!(group, "malformed node message dropped"),
            }
            self.kick_flush();
        }
    }

    /// Reads a group's members again after a change.
    pub(super) async fn reload_members(self: Rc<Self>, group: u64) {
        match self.read_members(group).await {
            Ok(m) => {
                if let Some(g) = self.groups.borrow_mut().get_mut(&group) {
                    g.members = Some(m.unwrap_or_default());
                }
            }
            Err(e) => tracing::warn!(group, error = %e, "cannot read the group's members"),
        }
    }

    /// Notes the senders of inbox records pushed or paged to the user.
    pub(super) fn note_senders(&self, user: u64, recs: &[Push]) {
        let mut users = self.users.borrow_mut();
        let Some(u) = users.get_mut(&user) else {
            return;
        };
        for r in recs {
            u.senders.insert(r.seq, r.from);
        }
        while u.senders.len() > SENDERS {
            u.senders.pop_first();
        }
    }
}
