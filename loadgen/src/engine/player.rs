//! One worker thread: its connections, its timer heap, its recorder, and
//! what every client event does to the figures.

use std::{
    cell::{Cell, RefCell},
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use ahash::AHashMap;
use bytes::Bytes;
use crossbeam_channel::Sender;
use imgate_codec::token::TokenKey;
use imgate_codec::{
    Kind,
    client::{Client, Config, Dest, Event, SendError, State},
    frame::GroupOp,
};

use super::{
    Cmd, ConnSpec, EngineOpts, GroupCreate, Reply, Snapshot, TargetCounts, ThreadProgress,
    conn::{self, Conn, Sender as SenderState},
    pacer,
};
use crate::{
    body::{Arena, Stamp},
    mailbox::MailboxRx,
    measure::{Counters, Hist, SenderBook, Window, WindowStats, bump, new_hist, record_ns},
    progress::{Progress, inc},
};

/// Members per group:R (well below the protocol's 8,188).
const GROUP_CHUNK: usize = 4096;

/// What a thread measures.
pub(crate) struct Recorder {
    pub(crate) counters: Counters,
    pub(crate) windows: Vec<Window>,
    pub(crate) stats: Vec<WindowStats>,
    pub(crate) connect: Hist,
    pub(crate) handshake: Hist,
    pub(crate) login: Hist,
    pub(crate) relogin: Hist,
    pub(crate) pull: Hist,
    pub(crate) first_connect: Option<Instant>,
    pub(crate) last_login: Option<Instant>,
    /// Connections and logins per target, in `--target` order.
    pub(crate) targets: Vec<TargetCounts>,
    /// Group messages on their way to every member: (sender, counter) ->
    /// (members reached, latest delivery ns).
    pub(crate) group_pending: AHashMap<(u32, u64), (u32, u64)>,
}

impl Recorder {
    fn new(targets: usize) -> Recorder {
        Recorder {
            counters: Counters::default(),
            windows: Vec::new(),
            stats: Vec::new(),
            connect: new_hist(),
            handshake: new_hist(),
            login: new_hist(),
            relogin: new_hist(),
            pull: new_hist(),
            first_connect: None,
            last_login: None,
            targets: vec![TargetCounts::default(); targets],
            group_pending: AHashMap::new(),
        }
    }

    /// The window of a message scheduled at `ns`.
    pub(crate) fn window(&mut self, ns: u64) -> Option<&mut WindowStats> {
        let i = self.windows.iter().rposition(|w| w.contains(ns))?;
        self.stats.get_mut(i)
    }
}

/// Group requests waiting for an answer: (conn, req) -> group index.
type PendingGroups = AHashMap<(u32, u64), u32>;

/// One worker thread's state.
pub(crate) struct Player {
    pub(crate) index: usize,
    pub(crate) opts: Arc<EngineOpts>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) conns: RefCell<Vec<Rc<Conn>>>,
    pub(crate) by_id: RefCell<AHashMap<u32, u32>>,
    pub(crate) rec: RefCell<Recorder>,
    pub(crate) timers: RefCell<BinaryHeap<Reverse<(Instant, u32)>>>,
    pub(crate) arena: RefCell<Arena>,
    /// First connections still connecting or logging in.
    pub(crate) opening: Cell<usize>,
    /// First connections that gave up.
    pub(crate) open_failed: Cell<u32>,
    /// Connections cut by a storm that have not logged in again.
    pub(crate) storm_left: Cell<u32>,
    /// Connection tasks running.
    pub(crate) live: Cell<usize>,
    pub(crate) stopping: Cell<bool>,
    /// The running traffic phase should end now.
    pub(crate) traffic_stop: Cell<bool>,
    pending_groups: RefCell<PendingGroups>,
    groups_made: RefCell<Vec<(u32, u64)>>,
    group_errors: RefCell<Vec<String>>,
    minter: TokenKey,
}

impl Player {
    fn tp(&self) -> &ThreadProgress {
        &self.progress.threads[self.index]
    }

    /// The connection with scenario id `id`, if it lives here.
    pub(crate) fn conn(&self, id: u32) -> Option<Rc<Conn>> {
        let local = *self.by_id.borrow().get(&id)?;
        self.conns.borrow().get(local as usize).cloned()
    }

    // ---- pumping a client --------------------------------------------------

    /// After anything touched `c`'s client: handle its events, stage what it
    /// wants to send, re-arm its timer, and close the transport if the
    /// session ended.
    pub(crate) fn drain(&self, c: &Conn, now: Instant) {
        loop {
            let ev = c.client.borrow_mut().poll_event();
            match ev {
                Some(ev) => self.on_event(c, ev, now),
                None => break,
            }
        }
        c.pump_out();
        self.arm(c);
        if c.client.borrow().state() == State::Closed {
            c.signal.raise(crate::wake::CLOSE);
        }
    }

    fn arm(&self, c: &Conn) {
        let Some(at) = c.client.borrow_mut().poll_timeout() else {
            return;
        };
        if c.armed.get().is_none_or(|a| at < a) {
            c.armed.set(Some(at));
            self.timers.borrow_mut().push(Reverse((at, c.local)));
        }
    }

    /// Serves every client deadline that is due.
    fn run_timers(&self, now: Instant) {
        loop {
            let due = {
                let mut t = self.timers.borrow_mut();
                match t.peek() {
                    Some(Reverse((at, _))) if *at <= now => t.pop(),
                    _ => None,
                }
            };
            let Some(Reverse((at, local))) = due else {
                break;
            };
            let Some(c) = self.conns.borrow().get(local as usize).cloned() else {
                continue;
            };
            if c.armed.get() != Some(at) {
                continue;
            }
            c.armed.set(None);
            c.client.borrow_mut().handle_timeout(now);
            self.drain(&c, now);
        }
    }

    // ---- sending ---------------------------------------------------------

    /// Sends the next scheduled message of `c` (scheduled at `sched` ns),
    /// or queues it behind earlier ones the client could not take yet.
    pub(crate) fn send_scheduled(&self, c: &Conn, sched: u64, now: Instant) {
        let mut s = c.sender.borrow_mut();
        let Some(s) = s.as_mut() else {
            return;
        };
        if !s.backlog.is_empty() || !self.try_send(c, s, sched, now) {
            s.backlog.push_back(sched);
            self.rec.borrow_mut().counters.send_blocked += 1;
        }
    }

    /// Sends what waited behind a full wait-ack queue.
    fn flush_backlog(&self, c: &Conn, now: Instant) {
        let mut s = c.sender.borrow_mut();
        let Some(s) = s.as_mut() else {
            return;
        };
        while let Some(&sched) = s.backlog.front() {
            if !self.try_send(c, s, sched, now) {
                break;
            }
            s.backlog.pop_front();
        }
    }

    fn try_send(&self, c: &Conn, s: &mut SenderState, sched: u64, now: Instant) -> bool {
        let counter = s.book.sent;
        let body = self.arena.borrow_mut().body(Stamp {
            run: self.opts.run,
            sender: c.id,
            counter,
            scheduled: sched,
        });
        let r = c.client.borrow_mut().send(s.dest, body, now);
        match r {
            Ok(msg_id) => {
                if msg_id != c.first_msg_id + counter {
                    self.rec.borrow_mut().counters.unmatched += 1;
                }
                s.book.sent += 1;
                let now_ns = self.opts.clock.ns(now);
                let mut rec = self.rec.borrow_mut();
                rec.counters.sent += 1;
                if let Some(w) = rec.window(sched) {
                    w.sent += 1;
                    record_ns(&mut w.lag, now_ns.saturating_sub(sched));
                }
                inc(&self.tp().sent);
                c.pump_out();
                true
            }
            Err(SendError::Full { .. }) => false,
            Err(e) => {
                // Not retryable (too large, no destination): counted, dropped.
                bump(
                    &mut self.rec.borrow_mut().counters.server_errors,
                    format!("send refused locally: {e}"),
                );
                s.book.sent += 1;
                true
            }
        }
    }

    // ---- events ----------------------------------------------------------

    fn on_event(&self, c: &Conn, ev: Event, now: Instant) {
        match ev {
            Event::LoggedIn { inbox_head, .. } => self.on_login(c, inbox_head, now),
            Event::Acked { msg_id, .. } => {
                self.on_acked(c, msg_id, now);
                self.flush_backlog(c, now);
            }
            Event::Message {
                group,
                body,
                pulled,
                ..
            } => self.on_message(c, group, &body, pulled, now),
            Event::Delivered { msg_id, .. } => {
                let sched = msg_id
                    .checked_sub(c.first_msg_id)
                    .and_then(|k| c.sender.borrow().as_ref()?.scheduled(k));
                let mut rec = self.rec.borrow_mut();
                match sched {
                    Some(sched) => {
                        rec.counters.receipts += 1;
                        let lat = self.opts.clock.ns(now).saturating_sub(sched);
                        if let Some(w) = rec.window(sched) {
                            record_ns(&mut w.receipt, lat);
                        }
                    }
                    None => rec.counters.unmatched += 1,
                }
            }
            Event::SendFailed { reason, .. } => {
                let mut rec = self.rec.borrow_mut();
                rec.counters.failed += 1;
                bump(
                    &mut rec.counters.server_errors,
                    format!("send failed: {reason:?}"),
                );
                drop(rec);
                self.flush_backlog(c, now);
            }
            Event::SyncDone { group } => {
                let mut rec = self.rec.borrow_mut();
                rec.counters.syncs_done += 1;
                if group == 0
                    && let Some(t) = c.pull_started.take()
                {
                    record_ns(&mut rec.pull, ns_between(t, now));
                    inc(&self.tp().syncs);
                }
            }
            Event::Kicked { reason, text } => {
                if reason == imgate_codec::KickReason::Replaced {
                    c.reconnect.set(false);
                }
                bump(
                    &mut self.rec.borrow_mut().counters.kicks,
                    format!("{reason}: {text}"),
                );
            }
            Event::ServerError {
                code,
                ref_kind,
                ref_id,
                text,
            } => {
                let kind = ref_kind.map_or("-".to_string(), |k| format!("{k:?}"));
                let key = format!("{code:?} on {kind}: {text}");
                if ref_kind == Some(Kind::GroupR)
                    && self
                        .pending_groups
                        .borrow_mut()
                        .remove(&(c.id, ref_id))
                        .is_some()
                {
                    self.group_errors.borrow_mut().push(key.clone());
                }
                bump(&mut self.rec.borrow_mut().counters.server_errors, key);
            }
            Event::GroupAnswer(g) => {
                let idx = self.pending_groups.borrow_mut().remove(&(c.id, g.req));
                if let Some(idx) = idx {
                    self.groups_made.borrow_mut().push((idx, g.group));
                    // The rest of a large group's members, in chunks.
                    let rest = c.group_rest.borrow_mut().take();
                    if let Some(rest) = rest {
                        self.add_members(c, idx, g.group, rest, now);
                    }
                }
            }
            Event::ConnectionDead { .. } => self.rec.borrow_mut().counters.dead += 1,
            Event::Read { .. }
            | Event::ReadElsewhere { .. }
            | Event::Unread(_)
            | Event::Receipts(_)
            | Event::Pong { .. } => {}
        }
    }

    fn on_login(&self, c: &Conn, inbox_head: u64, now: Instant) {
        c.logged_in.set(true);
        self.tp().logged_in.fetch_add(1, Relaxed);
        let inbox_mark = c.client.borrow().stream(0).map_or(0, |s| s.contiguous);
        if inbox_head > inbox_mark {
            if c.ever_logged_in.get() || c.history {
                // Missed while away (or sent while offline): pull it.
                c.client.borrow_mut().pull(0, now);
                c.pull_started.set(Some(now));
            } else {
                // Left by earlier runs for this user: not this run's.
                c.client.borrow_mut().set_stream_mark(0, inbox_head, now);
                self.rec.borrow_mut().counters.stale += inbox_head - inbox_mark;
            }
        }
        let mut rec = self.rec.borrow_mut();
        rec.counters.logins += 1;
        let target = c.target.get();
        c.logged_in_at.set(Some(target));
        if let Some(t) = rec.targets.get_mut(target) {
            t.logins += 1;
        }
        if !c.ever_logged_in.replace(true) {
            record_ns(&mut rec.login, ns_between(c.attempt_started.get(), now));
            rec.last_login = Some(rec.last_login.map_or(now, |l| l.max(now)));
            self.opening.set(self.opening.get().saturating_sub(1));
        }
        if let Some(t) = c.cut_at.take() {
            record_ns(&mut rec.relogin, ns_between(t, now));
            if c.storm.replace(false) {
                self.storm_left.set(self.storm_left.get().saturating_sub(1));
            }
        }
    }

    fn on_acked(&self, c: &Conn, msg_id: u64, now: Instant) {
        let mut s = c.sender.borrow_mut();
        let mut rec = self.rec.borrow_mut();
        let Some(s) = s.as_mut() else {
            rec.counters.unmatched += 1;
            return;
        };
        let Some(counter) = msg_id
            .checked_sub(c.first_msg_id)
            .filter(|&k| k < s.book.sent)
        else {
            rec.counters.unmatched += 1;
            return;
        };
        if s.book.acked.set(counter) {
            rec.counters.unmatched += 1;
            return;
        }
        rec.counters.acked += 1;
        inc(&self.tp().acked);
        if let Some(sched) = s.scheduled(counter) {
            let lat = self.opts.clock.ns(now).saturating_sub(sched);
            if let Some(w) = rec.window(sched) {
                w.acked += 1;
                record_ns(&mut w.ack, lat);
            }
        }
    }

    fn on_message(&self, c: &Conn, group: u64, body: &Bytes, pulled: bool, now: Instant) {
        let mut rec = self.rec.borrow_mut();
        let Some(st) = Stamp::parse(body).filter(|s| s.run == self.opts.run) else {
            rec.counters.foreign += 1;
            return;
        };
        let (dup, ooo) = c
            .seen
            .borrow_mut()
            .entry(st.sender)
            .or_default()
            .take(st.counter);
        if dup {
            rec.counters.duplicates_app += 1;
            return;
        }
        rec.counters.delivered += 1;
        rec.counters.pulled += u64::from(pulled);
        rec.counters.out_of_order_app += u64::from(ooo);
        inc(&self.tp().delivered);
        let now_ns = self.opts.clock.ns(now);
        let lat = now_ns.saturating_sub(st.scheduled);
        let mut last = None;
        if group != 0 && c.group_size > 1 {
            let key = (st.sender, st.counter);
            let e = rec.group_pending.entry(key).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(lat);
            if e.0 + 1 >= c.group_size {
                last = Some(e.1);
                rec.group_pending.remove(&key);
            }
        }
        if let Some(w) = rec.window(st.scheduled) {
            w.delivered += 1;
            record_ns(&mut w.delivery, lat);
            if let Some(l) = last {
                record_ns(&mut w.group_last, l);
            }
        }
    }

    // ---- groups ----------------------------------------------------------

    fn create_group(&self, g: GroupCreate, now: Instant) {
        let Some(c) = self.conn(g.creator) else {
            self.group_errors
                .borrow_mut()
                .push(format!("creator {} is not on this thread", g.creator));
            return;
        };
        let mut members = g.members;
        let rest = if members.len() > GROUP_CHUNK {
            Some(members.split_off(GROUP_CHUNK))
        } else {
            None
        };
        let r = c
            .client
            .borrow_mut()
            .group_request(GroupOp::Create, 0, &members, now);
        match r {
            Ok(req) => {
                self.pending_groups
                    .borrow_mut()
                    .insert((c.id, req), g.index);
                *c.group_rest.borrow_mut() = rest;
            }
            Err(e) => self
                .group_errors
                .borrow_mut()
                .push(format!("group:R not sent: {e}")),
        }
        self.drain(&c, now);
    }

    fn add_members(&self, c: &Conn, idx: u32, group: u64, rest: Vec<u64>, now: Instant) {
        for chunk in rest.chunks(GROUP_CHUNK) {
            let r = c
                .client
                .borrow_mut()
                .group_request(GroupOp::Add, group, chunk, now);
            match r {
                // Answers to adds are not waited for: the group exists,
                // and a refused add shows up as an error.
                Ok(_) => {}
                Err(e) => self
                    .group_errors
                    .borrow_mut()
                    .push(format!("group {idx}: add not sent: {e}")),
            }
        }
    }

    // ---- snapshots ---------------------------------------------------------

    fn snapshot(&self) -> Snapshot {
        let mut rec = self.rec.borrow_mut();
        let mut counters = rec.counters.clone();
        for c in self.conns.borrow().iter() {
            let s = *c.client.borrow().stats();
            counters.retransmitted += s.retransmitted;
            counters.late_acks += s.late_acks;
            counters.received += s.received;
            counters.duplicates_client += s.duplicates;
            counters.out_of_order_client += s.out_of_order;
            counters.overflow_dropped += s.overflow_dropped;
            counters.gaps_synced += s.gaps_synced;
            counters.history_skipped += s.history_skipped;
            counters.sync_requests += s.sync_requests;
            counters.acks_sent += s.acks_sent;
            counters.pings_sent += s.pings_sent;
        }
        let open_span = rec.first_connect.zip(rec.last_login);
        let mut targets = rec.targets.clone();
        for c in self.conns.borrow().iter() {
            if let Some(t) = c.logged_in_at.get().and_then(|t| targets.get_mut(t)) {
                t.last += 1;
            }
        }
        let rec = &mut *rec;
        Snapshot {
            counters,
            windows: rec.stats.clone(),
            connect: rec.connect.clone(),
            handshake: rec.handshake.clone(),
            login: rec.login.clone(),
            relogin: rec.relogin.clone(),
            pull: rec.pull.clone(),
            open_span,
            targets,
            rss: crate::process::process_stats().0,
        }
    }

    // ---- commands ----------------------------------------------------------

    async fn open(self: Rc<Self>, specs: Vec<ConnSpec>, reconnect: bool) -> Reply {
        let now = crate::process::unix_time();
        let expiry = now.as_secs() + 7 * 86_400;
        let unix_ms = u64::try_from(now.as_millis()).unwrap_or(0);
        let start_failed = self.open_failed.get();
        let mut started = 0;
        for spec in specs {
            while self.opening.get() >= self.opts.connect_concurrency.max(1) {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            let token = Bytes::from(self.minter.mint(spec.user, 1, expiry));
            let mut cfg = Config::new(spec.user, 1, token);
            // Unique per user across runs (protocol section 5.6): device 1
            // in the high bits, a clock below; x4 leaves room for a user
            // to average up to 4 messages per ms between two runs.
            cfg.first_msg_id = (1u64 << 44) | ((unix_ms << 2) & ((1 << 44) - 1));
            cfg.max_in_flight = self.opts.max_in_flight;
            // Pulls are started on the LoggedIn event, which knows whether
            // the inbox holds this run's messages or older ones.
            cfg.auto_pull_inbox = false;
            cfg.max_tracked_receipts = if self.opts.receipts { 4096 } else { 0 };
            let client = match Client::new(cfg) {
                Ok(c) => c,
                Err(e) => {
                    bump(
                        &mut self.rec.borrow_mut().counters.connect_errors,
                        format!("client config: {e}"),
                    );
                    self.open_failed.set(self.open_failed.get() + 1);
                    continue;
                }
            };
            let local = u32::try_from(self.conns.borrow().len()).unwrap_or(u32::MAX);
            let c = Rc::new(Conn::new(spec, local, client, reconnect));
            self.conns.borrow_mut().push(c.clone());
            self.by_id.borrow_mut().insert(spec.id, local);
            self.opening.set(self.opening.get() + 1);
            {
                let mut rec = self.rec.borrow_mut();
                if rec.first_connect.is_none() {
                    rec.first_connect = Some(Instant::now());
                }
            }
            started += 1;
            monoio::spawn(conn::run(self.clone(), c));
        }
        while self.opening.get() > 0 {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        let failed = self.open_failed.get() - start_failed;
        Reply::Opened {
            ok: u32::try_from(started)
                .unwrap_or(u32::MAX)
                .saturating_sub(failed),
            failed,
        }
    }

    fn cut(&self, fraction: f64, delay_max: Duration, seed: u64, storm: bool) -> u32 {
        let mut rng = seed ^ (self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut n = 0;
        for c in self.conns.borrow().iter() {
            let r = xorshift(&mut rng);
            if !storm && (r % 1_000_000) as f64 >= fraction * 1_000_000.0 {
                continue;
            }
            if !c.logged_in.get() || c.done.get() {
                continue;
            }
            let delay_ms = if delay_max.is_zero() {
                0
            } else {
                xorshift(&mut rng) % (delay_max.as_millis() as u64 + 1)
            };
            c.next_delay.set(Some(Duration::from_millis(delay_ms)));
            c.cut_at.set(Some(Instant::now()));
            c.storm.set(storm);
            c.signal.raise(crate::wake::CUT);
            n += 1;
        }
        self.rec.borrow_mut().counters.cuts += u64::from(n);
        n
    }

    async fn storm(self: Rc<Self>) -> Reply {
        let n = self.cut(1.0, Duration::ZERO, 1, true);
        self.storm_left.set(n);
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.storm_left.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        let left = self.storm_left.get();
        Reply::Relogged {
            ok: n - left,
            failed: left,
        }
    }

    async fn groups(self: Rc<Self>, gs: Vec<GroupCreate>) -> Reply {
        let n = gs.len();
        let now = Instant::now();
        for g in gs {
            self.create_group(g, now);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.groups_made.borrow().len() + self.group_errors.borrow().len() < n
            && Instant::now() < deadline
        {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut errors = std::mem::take(&mut *self.group_errors.borrow_mut());
        let made = std::mem::take(&mut *self.groups_made.borrow_mut());
        if made.len() + errors.len() < n {
            errors.push(format!(
                "{} group:R requests unanswered after 30 s",
                n - made.len() - errors.len()
            ));
        }
        Reply::Groups { made, errors }
    }

    async fn finish(self: Rc<Self>) -> Reply {
        self.stopping.set(true);
        let now = Instant::now();
        let conns = self.conns.borrow().clone();
        for c in &conns {
            c.reconnect.set(false);
            let state = c.client.borrow().state();
            if state == State::Connected || state == State::LoggingIn {
                c.client.borrow_mut().logout(now);
                self.drain(c, now);
            }
            c.signal.raise(crate::wake::CLOSE);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.live.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        let snap = Box::new(self.snapshot());
        let mut senders = Vec::new();
        let mut received = Vec::new();
        for c in &conns {
            if let Some(s) = c.sender.borrow_mut().take() {
                senders.push((c.id, s.book));
            }
            for (s, seen) in c.seen.borrow_mut().drain() {
                received.push(((c.id, s), seen));
            }
        }
        Reply::Final {
            snap,
            senders,
            received,
        }
    }
}

fn ns_between(a: Instant, b: Instant) -> u64 {
    u64::try_from(b.saturating_duration_since(a).as_nanos()).unwrap_or(u64::MAX)
}

fn xorshift(s: &mut u64) -> u64 {
    let mut x = *s | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

/// The thread's main future: serves commands until the channel closes.
pub(crate) async fn run(
    index: usize,
    opts: Arc<EngineOpts>,
    progress: Arc<Progress>,
    rx: MailboxRx<Cmd>,
    tx: Sender<(usize, Reply)>,
) {
    let minter = TokenKey::new(opts.secret.as_bytes());
    let targets = opts.targets.len();
    let p = Rc::new(Player {
        index,
        arena: RefCell::new(Arena::new(opts.body_size)),
        opts,
        progress,
        conns: RefCell::new(Vec::new()),
        by_id: RefCell::new(AHashMap::new()),
        rec: RefCell::new(Recorder::new(targets)),
        timers: RefCell::new(BinaryHeap::new()),
        opening: Cell::new(0),
        open_failed: Cell::new(0),
        storm_left: Cell::new(0),
        live: Cell::new(0),
        stopping: Cell::new(false),
        traffic_stop: Cell::new(false),
        pending_groups: RefCell::new(AHashMap::new()),
        groups_made: RefCell::new(Vec::new()),
        group_errors: RefCell::new(Vec::new()),
        minter,
    });
    let timers = p.clone();
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(Duration::from_millis(1)).await;
            timers.run_timers(Instant::now());
        }
    });
    // Commands wake this task (no polling); the loop ends after Finish, or
    // when the engine is gone.
    let mut cmds = VecDeque::new();
    let mut batch = Vec::new();
    loop {
        let Some(cmd) = cmds.pop_front() else {
            if !rx.recv_into(&mut batch).await {
                break;
            }
            cmds.extend(batch.drain(..));
            continue;
        };
        let p = p.clone();
        let tx = tx.clone();
        let finish = matches!(cmd, Cmd::Finish);
        let task = async move {
            let reply = match cmd {
                Cmd::Open { specs, reconnect } => p.clone().open(specs, reconnect).await,
                Cmd::Traffic {
                    senders,
                    start_ns,
                    period_ns,
                    end_ns,
                    window,
                } => {
                    if let Some(w) = window {
                        let mut rec = p.rec.borrow_mut();
                        rec.windows.push(w);
                        rec.stats.push(WindowStats::default());
                    }
                    p.traffic_stop.set(false);
                    pacer::run(&p, senders, start_ns, period_ns, end_ns).await;
                    Reply::TrafficDone
                }
                Cmd::Cut {
                    fraction,
                    delay_max,
                    seed,
                } => Reply::Cut(p.cut(fraction, delay_max, seed, false)),
                Cmd::Storm => p.clone().storm().await,
                Cmd::StopTraffic => {
                    p.traffic_stop.set(true);
                    Reply::Stopped
                }
                Cmd::Groups(gs) => p.clone().groups(gs).await,
                Cmd::Snapshot => Reply::Snapshot(Box::new(p.snapshot())),
                Cmd::Finish => p.clone().finish().await,
            };
            let _ = tx.send((p.index, reply));
        };
        if finish {
            task.await;
            break;
        }
        monoio::spawn(task);
    }
}

/// The sender state of `c`, made on its first traffic phase.
pub(crate) fn ensure_sender(
    c: &Conn,
    dest: Dest,
) -> std::cell::RefMut<'_, Option<Box<SenderState>>> {
    let mut s = c.sender.borrow_mut();
    if s.is_none() {
        *s = Some(Box::new(SenderState {
            book: SenderBook::default(),
            segments: Vec::new(),
            backlog: VecDeque::new(),
            dest,
        }));
    }
    s
}
