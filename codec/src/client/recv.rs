//! What each server frame does to the client, and the per-stream
//! bookkeeping that follows (timers, acks, pulls).
//!
//! Split from the public surface in the parent module so that each reads in
//! one sitting: there, what a caller can do; here, how the client reacts.
//! Every handler only updates state and queues frames and events; nothing
//! here blocks, and nothing trusts a value from the server further than the
//! stream and outbox checks below it.

use std::time::{Duration, Instant};

use super::{
    Client, Event, FailReason, State,
    outbox::Resend,
    pull::{PageStep, Pull},
    stream::{Arrival, Incoming, Item},
    timers::{Kind as TimerKind, Timer},
};
use crate::{
    codes::ErrorCode,
    frame::{AckA, AckN, AckR, ErrorFrame, Kick, LoginOk, MsgA, MsgN, ReadN, SyncPage},
    header::{DEFAULT_MAX_FRAME, Kind},
};

impl Client {
    pub(super) fn on_login_ok(&mut self, ok: LoginOk, now: Instant) {
        self.state = State::Connected;
        // Every waiting send goes out below, in send order.
        self.held_by = None;
        self.heartbeat = match ok.heartbeat_ms {
            0 => self.config.heartbeat,
            ms => Duration::from_millis(u64::from(ms)),
        };
        self.max_out_frame = match ok.max_frame {
            0 => DEFAULT_MAX_FRAME,
            n => n as usize,
        };
        self.events.push_back(Event::LoggedIn {
            user: ok.user,
            device: ok.device,
            session: ok.session,
            heartbeat: self.heartbeat,
            inbox_head: ok.inbox_head,
            server_time: ok.server_time,
            max_frame: ok.max_frame,
            frame_rate: ok.frame_rate,
            frame_burst: ok.frame_burst,
        });
        // The server recorded `resume` as the inbox cursor (capped at its
        // head). A head below the device's mark means the server's inbox is
        // behind (restored from an older state): the device follows it, or
        // it would drop the next messages as duplicates.
        let inbox = self.streams.entry(0).or_default();
        inbox.acked = inbox.acked.max(self.resume_sent.min(ok.inbox_head));
        inbox.lower_mark(ok.inbox_head);
        let inbox_mark = inbox.contiguous;

        for r in self.outbox.resend_all(now) {
            match r {
                Resend::First(msg) => {
                    self.stats.sent += 1;
                    self.queue(msg, now);
                }
                Resend::Again(msg) => {
                    self.stats.retransmitted += 1;
                    self.queue(msg, now);
                }
                Resend::TooOld(msg) => self.fail(msg.msg_id, FailReason::Expired),
            }
        }
        // Pulls the old connection interrupted (or asked for offline).
        let mut waiting: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.pull.is_some_and(|p| !p.is_sent()))
            .map(|(&g, _)| g)
            .collect();
        waiting.sort_unstable();
        for group in waiting {
            self.send_page_request(group, now);
        }
        if self.config.auto_pull_inbox && ok.inbox_head > inbox_mark {
            self.start_pull(0, now);
        }
    }

    pub(super) fn on_kick(&mut self, k: Kick) {
        self.events.push_back(Event::Kicked {
            reason: k.reason(),
            text: k.text().into_owned(),
        });
        self.close();
    }

    pub(super) fn on_error(&mut self, e: ErrorFrame, now: Instant) {
        let code = e.code();
        let ref_kind = e.ref_kind();
        match ref_kind {
            Some(Kind::MsgR) if !is_transient(code) && self.outbox.remove(e.ref_id).is_some() => {
                self.fail(e.ref_id, FailReason::Rejected(code));
                self.release(e.ref_id, now);
                return;
            }
            // Refused for now: it is retransmitted on its timer; with
            // `keep_send_order`, later sends wait behind it.
            Some(Kind::MsgR)
                if self.config.keep_send_order
                    && self.held_by.is_none()
                    && matches!(
                        code,
                        ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::StorageFull
                    )
                    && self.outbox.contains(e.ref_id) =>
            {
                self.held_by = Some(e.ref_id);
            }
            // A refused pull ends; a transient refusal is retried by the gap
            // timer, a final one (not a member, no such group) is not.
            Some(Kind::SyncR) => {
                if let Some(s) = self.streams.get_mut(&e.ref_id)
                    && s.pull.take().is_some()
                {
                    if is_transient(code) {
                        self.settle(e.ref_id, false, now);
                    } else {
                        s.gap_deadline = None;
                    }
                }
            }
            Some(Kind::UnreadR) => self.unread_pending = false,
            _ => {}
        }
        self.events.push_back(Event::ServerError {
            code,
            ref_kind,
            ref_id: e.ref_id,
            text: e.text().into_owned(),
        });
        if closes_connection(code) {
            self.close();
        }
    }

    pub(super) fn on_msg_a(&mut self, a: MsgA, now: Instant) {
        let Some(msg) = self.outbox.remove(a.msg_id) else {
            self.stats.late_acks += 1;
            return;
        };
        self.release(a.msg_id, now);
        self.stats.acked += 1;
        self.events.push_back(Event::Acked {
            msg_id: a.msg_id,
            group: a.group,
            seq: a.seq,
            own_seq: a.own_seq,
            server_time: a.server_time,
        });
        if msg.to != 0 && a.group == 0 {
            // A receipt may have come first (after a reconnection): then
            // it settles the message now.
            let peer = msg.to;
            if self.delivered.track(peer, a.seq, a.msg_id) {
                self.events.push_back(Event::Delivered {
                    msg_id: a.msg_id,
                    peer,
                });
            }
            if self.read.track(peer, a.seq, a.msg_id) {
                self.events.push_back(Event::Read {
                    msg_id: a.msg_id,
                    peer,
                });
            }
        }
        // This device holds the message: its copies in our own inbox and in
        // the group's log count as received, not as gaps. The server does
        // not push them to this connection.
        if a.own_seq != 0 {
            self.take_in(0, a.own_seq, Item::Own, now);
        }
        if a.group != 0 && a.seq != 0 {
            self.take_in(a.group, a.seq, Item::Own, now);
        }
    }

    pub(super) fn on_msg_n(&mut self, m: MsgN, now: Instant) {
        let item = Item::Msg(Incoming {
            from: m.from,
            to: m.to,
            msg_id: m.msg_id,
            server_time: m.server_time,
            body: m.body,
            pulled: false,
        });
        self.take_in(m.group, m.seq, item, now);
    }

    pub(super) fn on_ack_a(&mut self, a: AckA) {
        if let Some(s) = self.streams.get_mut(&a.group) {
            s.confirmed = s.confirmed.max(a.seq);
        }
    }

    pub(super) fn on_ack_n(&mut self, n: AckN) {
        if n.group == 0 {
            self.settle_delivered(n.peer, n.seq);
        }
    }

    pub(super) fn on_read_n(&mut self, n: ReadN) {
        if n.reader == self.config.user {
            self.events.push_back(Event::ReadElsewhere {
                group: n.group,
                peer: n.peer,
                seq: n.seq,
            });
        } else if n.group == 0 {
            // Read implies delivered; a late ack:N then finds nothing.
            self.settle_delivered(n.reader, n.seq);
            for msg_id in self.read.settle(n.reader, n.seq) {
                self.events.push_back(Event::Read {
                    msg_id,
                    peer: n.reader,
                });
            }
        }
    }

    pub(super) fn on_page(&mut self, page: SyncPage, now: Instant) {
        let group = page.group;
        let mut advanced = false;
        let s = self.streams.entry(group).or_default();
        if s.pull.is_some_and(|p| p.answers(page.after)) {
            // Where history starts: seqs between `after` and the first entry
            // (or the head, for an empty page) are not there for this device.
            let start = match page.entries().next() {
                Some(first) => first.seq.saturating_sub(1),
                None => page.head,
            };
            let from = s.contiguous.max(page.after);
            if start > from {
                self.stats.history_skipped += start - from;
                let delivered = s.raise_mark(group, start, &mut self.events);
                self.stats.delivered += delivered;
                advanced = true;
            }
        }
        let mut overflow = false;
        for e in page.entries() {
            let item = Item::Msg(Incoming {
                from: e.from,
                to: e.to,
                msg_id: e.msg_id,
                server_time: e.server_time,
                body: e.body,
                pulled: true,
            });
            match self.accept(group, e.seq, item) {
                Arrival::InOrder { .. } => advanced = true,
                Arrival::Overflow => overflow = true,
                Arrival::Duplicate | Arrival::Held => {}
            }
        }
        let s = self.streams.entry(group).or_default();
        let step = s.pull.map_or(PageStep::Unsolicited, |p| {
            p.on_page(page.after, page.count, s.contiguous)
        });
        match step {
            PageStep::Next => self.send_page_request(group, now),
            PageStep::Done | PageStep::Stalled => {
                s.pull = None;
                self.events.push_back(Event::SyncDone { group });
            }
            PageStep::Unsolicited => {}
        }
        // A stalled pull is not restarted at once (it would stall again);
        // the gap timer retries it.
        if overflow && step != PageStep::Stalled && self.start_pull(group, now) {
            self.stats.gaps_synced += 1;
        }
        self.settle(group, advanced, now);
    }

    pub(super) fn on_stream_timer(&mut self, t: Timer, now: Instant) {
        let Some(s) = self.streams.get_mut(&t.group) else {
            return;
        };
        match t.kind {
            TimerKind::Gap if s.gap_deadline == Some(t.at) => {
                s.gap_deadline = None;
                if s.has_gap() && self.start_pull(t.group, now) {
                    self.stats.gaps_synced += 1;
                }
            }
            TimerKind::Ack if s.ack_deadline == Some(t.at) => {
                s.ack_deadline = None;
                if s.pull.is_none() && s.owes_ack() {
                    self.send_ack(t.group, now);
                }
            }
            // Stale: the deadline was cleared or replaced.
            TimerKind::Gap | TimerKind::Ack => {}
        }
    }

    // ---- stream bookkeeping --------------------------------------------

    /// Takes in a pushed message or an own copy, then updates the stream's
    /// timers and acks.
    pub(super) fn take_in(&mut self, group: u64, seq: u64, item: Item, now: Instant) {
        let arrival = self.accept(group, seq, item);
        if arrival == Arrival::Overflow && self.start_pull(group, now) {
            self.stats.gaps_synced += 1;
        }
        self.settle(group, matches!(arrival, Arrival::InOrder { .. }), now);
    }

    /// Hands an arrival to its stream and counts what became of it (own
    /// copies are not counted as received). A pushed message at or below
    /// the mark is a re-push: the server missed the ack, so it is owed
    /// again.
    pub(super) fn accept(&mut self, group: u64, seq: u64, item: Item) -> Arrival {
        let (own, pushed) = match &item {
            Item::Own => (true, false),
            Item::Msg(m) => (false, !m.pulled),
        };
        let s = self.streams.entry(group).or_default();
        let arrival = s.accept(group, seq, item, self.config.max_held, &mut self.events);
        let st = &mut self.stats;
        if !own {
            st.received += 1;
        }
        match arrival {
            Arrival::Duplicate if own => {}
            Arrival::Duplicate => {
                st.duplicates += 1;
                if pushed && seq <= s.contiguous {
                    s.reack = true;
                }
            }
            Arrival::InOrder { delivered } => st.delivered += delivered,
            Arrival::Held => st.out_of_order += u64::from(!own),
            Arrival::Overflow => {
                st.out_of_order += u64::from(!own);
                st.overflow_dropped += 1;
            }
        }
        arrival
    }

    /// Brings a stream's gap and ack timers up to date after a change, and
    /// sends the ack at once when `ack_every` deliveries are pending.
    /// `advanced`: the contiguous mark moved, so a remaining gap is a new
    /// one and its timer restarts.
    pub(super) fn settle(&mut self, group: u64, advanced: bool, now: Instant) {
        let connected = self.state == State::Connected;
        let Some(s) = self.streams.get_mut(&group) else {
            return;
        };
        if !s.has_gap() || s.pull.is_some() {
            // No gap, or the pull walks past it.
            s.gap_deadline = None;
        } else if advanced || s.gap_deadline.is_none() {
            let at = now + self.config.gap_timeout;
            s.gap_deadline = Some(at);
            self.timers.push(at, group, TimerKind::Gap);
        }
        // While a pull runs, its next sync:R is the ack.
        if s.pull.is_some() || !s.owes_ack() {
            return;
        }
        if connected && s.unacked() >= u64::from(self.config.ack_every) {
            self.send_ack(group, now);
        } else if s.ack_deadline.is_none() {
            let delay = if group == 0 {
                self.config.ack_delay
            } else {
                self.config.group_ack_delay
            };
            let at = now + delay;
            s.ack_deadline = Some(at);
            self.timers.push(at, group, TimerKind::Ack);
        }
    }

    /// Sends ack:R up to the stream's contiguous mark.
    pub(super) fn send_ack(&mut self, group: u64, now: Instant) {
        let Some(s) = self.streams.get_mut(&group) else {
            return;
        };
        s.acked = s.contiguous;
        s.ack_deadline = None;
        s.reack = false;
        let seq = s.contiguous;
        self.stats.acks_sent += 1;
        self.queue(AckR { group, seq }, now);
    }

    /// Starts a pull of `group` unless one runs; sends its first request if
    /// logged in. Returns whether a pull started.
    pub(super) fn start_pull(&mut self, group: u64, now: Instant) -> bool {
        let s = self.streams.entry(group).or_default();
        if s.pull.is_some() {
            return false;
        }
        s.pull = Some(Pull::default());
        s.gap_deadline = None;
        if self.state == State::Connected {
            self.send_page_request(group, now);
        }
        true
    }

    /// Sends the next sync:R of the pull in progress on `group`.
    pub(super) fn send_page_request(&mut self, group: u64, now: Instant) {
        let limit = self.config.sync_limit;
        if let Some(req) = self
            .streams
            .get_mut(&group)
            .and_then(|s| s.request_page(group, limit))
        {
            self.stats.sync_requests += 1;
            self.queue(req, now);
        }
    }

    pub(super) fn settle_delivered(&mut self, peer: u64, seq: u64) {
        for msg_id in self.delivered.settle(peer, seq) {
            self.events.push_back(Event::Delivered { msg_id, peer });
        }
    }
}

/// Error codes after which a request is worth repeating as it was (the
/// server said "later", not "no"): a msg:R refused with one stays queued
/// and is retransmitted as usual (protocol section 5.6).
fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Overloaded
            | ErrorCode::Internal
            | ErrorCode::RateLimited
            | ErrorCode::StorageFull
    )
}

/// Error codes after which the server closes the connection (protocol
/// section 5.12): the client stops sending.
fn closes_connection(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MalformedFrame
            | ErrorCode::UnsupportedVersion
            | ErrorCode::UnknownKind
            | ErrorCode::FrameTooLarge
            | ErrorCode::NotLoggedIn
            | ErrorCode::BadToken
            | ErrorCode::TokenExpired
            | ErrorCode::TooManyConnections
            | ErrorCode::ShuttingDown
    )
}
