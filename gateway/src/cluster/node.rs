//! One gateway node of the cluster: the state it keeps and the events it
//! acts on, on the cluster backend's own thread (a single-threaded tokio
//! runtime, so the state needs no locks: every task of the node runs on
//! this thread, and none holds a borrow across an await).
//!
//! What a node keeps is only what is about its own connections: which
//! users it holds (and for each a subscription to the user's push
//! subject), the next inbox sequence id to push to them in order, pushes
//! that arrived ahead of a gap, and cached cursors. Everything durable is
//! in JetStream.
//!
//! Pushes arrive on the user's subject in whatever order the storing
//! nodes published them; a node pushes them to its connections strictly in
//! sequence order. A push ahead of a gap waits; if the gap is still there
//! after [`FILL_DELAY`] (the push that fills it was lost with a node that
//! died), the missing records are read from the log.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use ahash::AHashMap;
use bytes::Bytes;
use futures_util::StreamExt;
use imgate_codec::{Body, KickReason, frame::MsgN};
use tokio::sync::{Notify, watch};

use super::{
    append::Queues,
    js::{Js, Stored},
    stats::Stats,
    wire::NodeMsg,
};
use crate::{
    backend::{Inbound, Router, Track},
    conn_id::ConnId,
    delivery::keys::Record,
};

/// How long a push ahead of a gap waits for the pushes before it, before
/// the node reads them from the log.
pub(super) const FILL_DELAY: Duration = Duration::from_millis(20);
/// Pushes held ahead of a gap, per user; more are dropped and read from
/// the log instead.
const MAX_HELD: usize = 1024;
/// Recent (sequence id, stream sequence) pairs kept per user to start
/// reads without a search.
const HINTS: usize = 32;

/// The request limits the node applies (as the embedded backend does).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_body: usize,
    pub(super) page_default: usize,
    pub(super) page_max: usize,
    pub(super) page_budget: usize,
    pub(super) retry: Duration,
}

/// A connection of a user on this node.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) conn: ConnId,
    /// The inbox head its login:ok reported: it gets pushes above it.
    /// `u64::MAX` until then.
    pub(super) from: u64,
}

/// A push waiting behind a gap.
#[derive(Debug)]
struct Held {
    frame: Bytes,
    origin_node: u64,
    origin_conn: u64,
}

/// A user this node holds connections of.
#[derive(Debug)]
pub(super) struct User {
    pub(super) sessions: Vec<Session>,
    /// Becomes true once the push subscription is in place.
    ready: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<()>,
    /// The next inbox sequence id to push; 0 until the first login read
    /// the head.
    next: u64,
    held: BTreeMap<u64, Held>,
    fill_armed: bool,
    /// The highest inbox sequence id known.
    pub(super) head: u64,
    /// Recent (sequence id, stream sequence) pairs, oldest first.
    pub(super) hints: Vec<(u64, u64)>,
}

impl User {
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
}

impl Drop for User {
    fn drop(&mut self) {
        // Dropping the subscription unsubscribes.
        self.watcher.abort();
    }
}

/// The node.
pub(super) struct Node {
    pub(super) js: Js,
    /// This node's id on the wire (random per start).
    pub(super) token: u64,
    pub(super) limits: Limits,
    pub(super) router: RefCell<Router>,
    flush: Notify,
    pub(super) users: RefCell<AHashMap<u64, User>>,
    pub(super) queues: Queues,
    pub(super) cursor_slots: RefCell<AHashMap<(u64, u32), super::cursors::Slot>>,
    pub(super) inflight: Arc<AtomicUsize>,
    pub(super) stats: Arc<Stats>,
    stopping: Cell<bool>,
}

impl Node {
    pub(super) fn new(
        js: Js,
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
            limits,
            router: RefCell::new(router),
            flush: Notify::new(),
            users: RefCell::new(AHashMap::new()),
            queues: Queues::default(),
            cursor_slots: RefCell::new(AHashMap::new()),
            inflight,
            stats,
            stopping: Cell::new(false),
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
        while let Some(ev) = rx.recv().await {
            self.on_event(ev);
        }
        self.stopping.set(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.inflight.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
            } => self.login(conn, user, device, resume),
            Inbound::Frame {
                conn,
                user,
                device,
                frame,
            } => {
                tokio::task::spawn_local(self.clone().request(conn, user, device, frame));
            }
            Inbound::Closed { conn, user, .. } => {
                let mut users = self.users.borrow_mut();
                if let Some(u) = users.get_mut(&user) {
                    u.sessions.retain(|s| s.conn != conn);
                    if u.sessions.is_empty() {
                        users.remove(&user);
                    }
                }
            }
            // The login that replaced it kicks the device on other nodes.
            Inbound::Replaced { .. } => {}
            Inbound::Kick { user, device } => {
                let m = NodeMsg::Kick {
                    reason: KickReason::Admin,
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
                    next: 0,
                    held: BTreeMap::new(),
                    fill_armed: false,
                    head: 0,
                    hints: Vec::new(),
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
        let head = loop {
            match self.inbox_head(user).await {
                Ok((h, _)) => break h,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(user, error = %e, "inbox head read failed; retrying");
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
        if resume > 0
            && let Err(e) = self.raise_cursor(user, device, resume.min(head)).await
        {
            tracing::warn!(user, error = %e, "cannot move the cursor at login");
        }
        let mut users = self.users.borrow_mut();
        let Some(u) = users.get_mut(&user) else {
            return;
        };
        // Pushes this node already made are in the log: the head shown
        // covers them, so the device syncs them instead of missing them.
        let shown = head.max(u.next.saturating_sub(1));
        u.head = u.head.max(shown);
        let Some(s) = u.sessions.iter_mut().find(|s| s.conn == conn) else {
            return;
        };
        s.from = shown;
        let mut router = self.router.borrow_mut();
        router.login_ok(conn, shown);
        if u.next == 0 {
            u.next = shown + 1;
            u.held = u.held.split_off(&u.next);
        }
        self.drain_held(u, &mut router);
        drop(router);
        let arm = u.next <= u.head || !u.held.is_empty();
        drop(users);
        if arm {
            self.arm_fill(user);
        }
        self.kick_flush();
    }

    /// Holds the user's push subscription while the node has the user.
    async fn watch(self: Rc<Self>, user: u64, ready: watch::Sender<bool>) {
        let subject = self.js.names().push(user);
        let mut sub = loop {
            match self.js.client().subscribe(subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(user, error = %e, "cannot subscribe; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // The subscription is in place at the server before the login
        // reads the head: a push of anything stored later reaches us.
        while let Err(e) = self.js.client().flush().await {
            tracing::debug!(user, error = %e, "flush failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = ready.send(true);
        while let Some(m) = sub.next().await {
            match NodeMsg::decode(&m.payload) {
                Some(msg) => self.on_node_msg(user, msg),
                None => tracing::warn!(user, "malformed node message dropped"),
            }
            self.kick_flush();
        }
    }

    fn on_node_msg(self: &Rc<Self>, user: u64, msg: NodeMsg) {
        match msg {
            NodeMsg::Kick {
                reason,
                device,
                except_node,
                except_conn,
            } => {
                let mut router = self.router.borrow_mut();
                for (_, conn) in router.registry().sessions(user, device) {
                    if except_node == self.token && conn.to_u64() == except_conn {
                        continue;
                    }
                    router.kick(conn, reason);
                }
            }
            NodeMsg::Push {
                seq,
                stream_seq,
                origin_node,
                origin_conn,
                frame,
            } => {
                let mut users = self.users.borrow_mut();
                let Some(u) = users.get_mut(&user) else {
                    return;
                };
                u.head = u.head.max(seq);
                u.hint(seq, stream_seq);
                if seq < u.next {
                    return;
                }
                if u.held.len() < MAX_HELD || seq == u.next {
                    u.held.insert(
                        seq,
                        Held {
                            frame,
                            origin_node,
                            origin_conn,
                        },
                    );
                }
                if u.next == 0 {
                    return; // the first login has not read the head yet
                }
                let mut router = self.router.borrow_mut();
                self.drain_held(u, &mut router);
                let gap = !u.held.is_empty() || u.next <= u.head;
                drop(router);
                drop(users);
                if gap {
                    self.arm_fill(user);
                }
            }
        }
    }

    /// Pushes the held pushes that continue the sequence.
    fn drain_held(&self, u: &mut User, router: &mut Router) {
        while let Some(h) = u.held.remove(&u.next) {
            let seq = u.next;
            self.deliver(u, seq, &h.frame, h.origin_node, h.origin_conn, router);
            u.next += 1;
        }
    }

    fn deliver(
        &self,
        u: &User,
        seq: u64,
        frame: &Bytes,
        origin_node: u64,
        origin_conn: u64,
        router: &mut Router,
    ) {
        for s in &u.sessions {
            if s.from >= seq || (origin_node == self.token && s.conn.to_u64() == origin_conn) {
                continue;
            }
            router.to_conn(s.conn, frame.clone(), Some(Track { group: 0, seq }));
        }
    }

    fn arm_fill(self: &Rc<Self>, user: u64) {
        let mut users = self.users.borrow_mut();
        if let Some(u) = users.get_mut(&user)
            && !u.fill_armed
        {
            u.fill_armed = true;
            tokio::task::spawn_local(self.clone().fill(user));
        }
    }

    /// Reads what the pushes left out from the log and pushes it in order.
    async fn fill(self: Rc<Self>, user: u64) {
        tokio::time::sleep(FILL_DELAY).await;
        let (subject, _) = self.js.names().inbox(user);
        let mut failures = 0u32;
        loop {
            let (next, upto, hint) = {
                let mut users = self.users.borrow_mut();
                let Some(u) = users.get_mut(&user) else {
                    return;
                };
                let upto = u
                    .held
                    .keys()
                    .next()
                    .map(|s| s.saturating_sub(1))
                    .unwrap_or(u.head);
                if u.next == 0 || u.next > upto || self.stopping.get() {
                    u.fill_armed = false;
                    return;
                }
                (u.next, upto, u.hint_below(u.next - 1))
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
                    tracing::debug!(user, error = %e, "gap fill read failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20))))
                        .await;
                    continue;
                }
            };
            let Some(moved) = self.pushed_from_log(user, upto, recs) else {
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
    /// returns whether any did (None: the user is gone).
    fn pushed_from_log(&self, user: u64, upto: u64, recs: Vec<Stored>) -> Option<bool> {
        let mut users = self.users.borrow_mut();
        let u = users.get_mut(&user)?;
        let mut router = self.router.borrow_mut();
        let mut moved = false;
        for r in recs {
            u.hint(r.seq, r.stream_seq);
            if r.seq < u.next || r.seq > upto {
                continue;
            }
            let Some(rec) = Record::decode(&r.payload) else {
                tracing::error!(user, stream_seq = r.stream_seq, "corrupt record skipped");
                continue;
            };
            // A record below the next one was purged: skip past it.
            u.next = r.seq;
            let frame = MsgN {
                group: 0,
                seq: r.seq,
                from: rec.from,
                to: rec.to,
                msg_id: rec.msg_id,
                server_time: rec.time,
                retry: false,
                body: rec.body,
            }
            .to_bytes();
            u.held.remove(&r.seq);
            self.deliver(u, r.seq, &frame, 0, 0, &mut router);
            u.next = r.seq + 1;
            moved = true;
        }
        self.drain_held(u, &mut router);
        Some(moved)
    }
}
