//! The client side of the protocol as a state machine, sans-IO.
//!
//! Like quinn-proto's `Connection`, [`Client`] opens no socket and reads no
//! clock: the caller passes frames (or bytes) and the current `Instant` in,
//! and takes frames to send, events and the next deadline out. The load
//! generator, the tests and any Rust client drive the same code; tests run
//! retransmissions, gaps and paging on a fake clock.
//!
//! ```text
//!                 handle_input / handle_frame        send, pull, mark_read, ...
//!   socket ──bytes──────────────┐                       │
//!                               ▼                       ▼
//!                        ┌──────────────────────────────────────┐
//!   timer ─handle_timeout─►  Client                              │
//!                        │   outbox   (msg:R awaiting msg:A)     │
//!                        │   streams  (per-stream dedup, order,  │
//!                        │             acks, pulls)              │
//!                        │   receipts (sent, awaiting ack/read:N)│
//!                        └──┬──────────────┬──────────────┬─────┘
//!                poll_transmit/poll_frame  poll_event     poll_timeout
//!                           ▼              ▼              ▼
//!                        socket       application     timer
//! ```
//!
//! # Calling order
//!
//! Methods are sorted into getters, inputs (`handle_*`, and the
//! application's requests such as [`Client::send`]) and outputs (`poll_*`).
//!
//! 1. When the transport is up, call [`Client::connect`]: it queues the
//!    login frame.
//! 2. Feed every received frame to [`Client::handle_frame`], or the read
//!    buffer to [`Client::handle_input`].
//! 3. Call the application's requests whenever they happen.
//! 4. After any input, drain the outputs: [`Client::poll_transmit`] (or
//!    [`Client::poll_frame`]) and write the bytes; [`Client::poll_event`]
//!    until `None`; then [`Client::poll_timeout`] and arm a timer for it.
//! 5. When that timer fires, call [`Client::handle_timeout`] and go to 4.
//! 6. When the transport closes, call [`Client::handle_disconnect`]; to
//!    reconnect, go to 1. Waiting messages and stream state survive: the
//!    login resumes from the inbox's contiguous mark, waiting messages are
//!    sent again right after login:ok, interrupted pulls restart.
//!
//! `now` must never go backwards between calls. Timers run only while
//! logged in; a deadline that passed while disconnected fires at the first
//! [`Client::handle_timeout`] after login:ok.
//!
//! # Modules
//!
//! One concern each: [`config`](Config), the wait-ack queue (`outbox`),
//! per-stream receive state (`stream`), paged pulls (`pull`), receipt
//! tracking (`receipts`), stream timers (`timers`), what each server frame
//! does (`recv`), and the [`Event`], [`Stats`] and error types. This module
//! holds the public surface: getters, inputs and outputs.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};

mod config;
mod error;
mod event;
mod outbox;
mod pull;
mod receipts;
mod recv;
mod stats;
mod stream;
mod timers;

pub use config::Config;
pub use error::{ConfigError, RequestError, SendError};
pub use event::{Event, FailReason};
pub use stats::Stats;

use self::{
    outbox::{Expired, Outbox},
    receipts::Tracker,
    stream::Stream,
    timers::{Kind as TimerKind, Timer, Timers},
};
use crate::{
    decoder::Decoder,
    error::DecodeError,
    frame::{
        ENTRY_FIXED, Frame, GroupOp, GroupR, Login, Logout, MsgR, Ping, Pong, ReadR, ReceiptsR,
        UnreadR,
    },
    header::HEADER_LEN,
};

/// Bytes a message body needs besides itself in the largest frame that
/// carries it, a one-entry sync page: header, page fields, entry fields.
const BODY_OVERHEAD: usize = HEADER_LEN + 26 + ENTRY_FIXED;

/// Where the client stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No transport (initially, and after [`Client::handle_disconnect`]).
    Disconnected,
    /// The login frame is queued or sent; waiting for login:ok.
    LoggingIn,
    /// Logged in: frames flow and timers run.
    Connected,
    /// The session ended (kicked, or [`Client::logout`]): flush what is
    /// queued, close the transport, then call [`Client::handle_disconnect`].
    Closed,
}

/// The destination of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A one-to-one message to this user.
    User(u64),
    /// A message to this group.
    Group(u64),
}

/// A snapshot of one stream's receive state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Received and delivered up to here.
    pub contiguous: u64,
    /// Acknowledged to the server up to here.
    pub acked: u64,
    /// Confirmed by ack:A up to here.
    pub confirmed: u64,
    /// Messages held above a gap.
    pub held: usize,
    /// A pull is in progress.
    pub pulling: bool,
}

/// The client protocol state machine. See the [module docs](self) for the
/// order in which to call it.
#[derive(Debug)]
pub struct Client {
    config: Config,
    state: State,
    stats: Stats,
    decoder: Decoder,
    outbox: Outbox,
    streams: HashMap<u64, Stream>,
    timers: Timers,
    delivered: Tracker,
    read: Tracker,
    transmit: VecDeque<Frame>,
    events: VecDeque<Event>,
    next_msg_id: u64,
    next_req: u64,
    next_nonce: u64,
    /// Idle time before a ping (login:ok's, else the configured one).
    heartbeat: Duration,
    /// The server's frame limit (login:ok's, else the configured one).
    max_out_frame: usize,
    /// When a frame was last queued on this connection.
    last_tx: Option<Instant>,
    /// When a frame last arrived on this connection.
    last_rx: Option<Instant>,
    /// The `resume` of the last login frame.
    resume_sent: u64,
    /// With `keep_send_order`: a send refused for now, which later sends
    /// wait behind.
    held_by: Option<u64>,
    /// An unread:R awaits its answer.
    unread_pending: bool,
}

impl Client {
    /// A disconnected client; call [`Client::connect`] once a transport is up.
    pub fn new(config: Config) -> Result<Client, ConfigError> {
        config.validate()?;
        Ok(Client {
            state: State::Disconnected,
            stats: Stats::default(),
            decoder: Decoder::new(config.max_frame),
            outbox: Outbox::new(
                config.rto,
                config.rto_backoff,
                config.max_rto,
                config.max_retries,
                config.dedup_window,
            ),
            streams: HashMap::new(),
            timers: Timers::default(),
            delivered: Tracker::new(config.max_tracked_receipts),
            read: Tracker::new(config.max_tracked_receipts),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            next_msg_id: config.first_msg_id,
            next_req: 1,
            next_nonce: 1,
            heartbeat: config.heartbeat,
            max_out_frame: config.max_frame,
            last_tx: None,
            last_rx: None,
            resume_sent: 0,
            held_by: None,
            unread_pending: false,
            config,
        })
    }

    // ---- getters -------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the client stands with the server.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters since the client was made.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Messages waiting for their msg:A.
    pub fn in_flight(&self) -> usize {
        self.outbox.len()
    }

    /// Whether [`Client::send`] would accept another message now.
    pub fn can_send(&self) -> bool {
        self.outbox.len() < self.config.max_in_flight
    }

    /// Whether this message still waits for its msg:A.
    pub fn is_in_flight(&self, msg_id: u64) -> bool {
        self.outbox.contains(msg_id)
    }

    /// The msg id the next [`Client::send`] will use (unless already in
    /// flight).
    pub fn next_msg_id(&self) -> u64 {
        self.next_msg_id
    }

    /// Receive state of a stream (0: the inbox), if anything arrived on it.
    pub fn stream(&self, group: u64) -> Option<StreamInfo> {
        self.streams.get(&group).map(|s| StreamInfo {
            contiguous: s.contiguous,
            acked: s.acked,
            confirmed: s.confirmed,
            held: s.held(),
            pulling: s.pull.is_some(),
        })
    }

    /// Sent messages still waiting for a delivered receipt, and for a read
    /// receipt.
    pub fn awaiting_receipts(&self) -> (usize, usize) {
        (self.delivered.len(), self.read.len())
    }

    /// Idle time after which a ping goes out.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    // ---- inputs: connection ----------------------------------------------

    /// Starts a session on a fresh transport: anything queued for a previous
    /// one is dropped and the login frame is queued, resuming the inbox from
    /// its contiguous mark.
    pub fn connect(&mut self, now: Instant) {
        self.interrupt();
        self.transmit.clear();
        self.last_tx = None;
        self.last_rx = Some(now);
        self.heartbeat = self.config.heartbeat;
        self.state = State::LoggingIn;
        let resume = self.streams.get(&0).map_or(0, |s| s.contiguous);
        self.resume_sent = resume;
        self.queue(
            Login {
                user: self.config.user,
                device: self.config.device,
                resume,
                token: self.config.token.clone(),
            },
            now,
        );
    }

    /// The transport closed. Frames not yet taken are dropped; waiting
    /// messages, stream state and pulls are kept for the next
    /// [`Client::connect`].
    pub fn handle_disconnect(&mut self) {
        self.interrupt();
        self.transmit.clear();
        self.last_tx = None;
        self.last_rx = None;
        self.state = State::Disconnected;
    }

    /// Decodes and handles every complete frame at the front of `buf`,
    /// returning how many there were. On an error the stream cannot be
    /// trusted any more: close the transport.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) -> Result<usize, DecodeError> {
        let mut n = 0;
        while let Some(frame) = self.decoder.decode(buf)? {
            self.handle_frame(frame, now);
            n += 1;
        }
        Ok(n)
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        self.last_rx = Some(now);
        match frame {
            Frame::LoginOk(f) => self.on_login_ok(f, now),
            Frame::Ping(p) => self.queue(Pong { nonce: p.nonce }, now),
            Frame::Pong(p) => self.events.push_back(Event::Pong { nonce: p.nonce }),
            Frame::Kick(k) => self.on_kick(k),
            Frame::Error(e) => self.on_error(e, now),
            Frame::MsgA(a) => self.on_msg_a(a, now),
            Frame::MsgN(m) => self.on_msg_n(m, now),
            Frame::AckA(a) => self.on_ack_a(a),
            Frame::AckN(n) => self.on_ack_n(n),
            Frame::ReadN(n) => self.on_read_n(n),
            Frame::SyncPage(p) => self.on_page(p, now),
            Frame::UnreadA(u) => {
                self.unread_pending = false;
                self.events.push_back(Event::Unread(u));
            }
            Frame::GroupA(g) => self.events.push_back(Event::GroupAnswer(g)),
            Frame::ReceiptsA(r) => self.events.push_back(Event::Receipts(r)),
            // Our own mark echoed; nothing waits on it.
            Frame::ReadA(_) => {}
            Frame::Login(_)
            | Frame::Logout(_)
            | Frame::MsgR(_)
            | Frame::AckR(_)
            | Frame::ReadR(_)
            | Frame::SyncR(_)
            | Frame::UnreadR(_)
            | Frame::GroupR(_)
            | Frame::ReceiptsR(_) => self.stats.unexpected_frames += 1,
        }
    }

    /// Handles every timer due at `now`: retransmissions and failures, gap
    /// syncs, ack batches, the heartbeat ping and the dead-connection check.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::LoggingIn | State::Connected) {
            return;
        }
        if let (Some(at), Some(rx)) = (self.dead_deadline(), self.last_rx)
            && at <= now
        {
            self.close();
            self.events.push_back(Event::ConnectionDead {
                silent_for: now.saturating_duration_since(rx),
            });
            return;
        }
        if self.state != State::Connected {
            return;
        }
        while let Some(expired) = self.outbox.poll_expired(now) {
            match expired {
                Expired::Retransmit(msg) => {
                    self.stats.retransmitted += 1;
                    self.queue(msg, now);
                }
                Expired::GaveUp(msg) => {
                    self.fail(msg.msg_id, FailReason::TimedOut);
                    self.release(msg.msg_id, now);
                }
                Expired::TooOld(msg) => {
                    self.fail(msg.msg_id, FailReason::Expired);
                    self.release(msg.msg_id, now);
                }
            }
        }
        while let Some(t) = self.timers.pop_due(now) {
            self.on_stream_timer(t, now);
        }
        if self.last_tx.is_some_and(|at| at + self.heartbeat <= now) {
            let nonce = self.take_nonce();
            self.stats.pings_sent += 1;
            self.queue(Ping { nonce }, now);
        }
    }

    // ---- inputs: the application's requests -------------------------------

    /// Sends a message, returning its msg id. It waits in the wait-ack
    /// queue until its msg:A ([`Event::Acked`]), and is retransmitted with
    /// the same id until then; while disconnected it waits for the next
    /// login. Fails when the queue is full: back off until an ack or a
    /// failure event frees a slot.
    pub fn send(&mut self, dest: Dest, body: Bytes, now: Instant) -> Result<u64, SendError> {
        self.send_message(dest, body, false, now)
    }

    /// Sends a silent message: as [`Client::send`], with the header flag
    /// `NO_PUSH`, so the server's event for it asks the business backend
    /// for no mobile push (a typing notice, a reaction).
    pub fn send_silent(&mut self, dest: Dest, body: Bytes, now: Instant) -> Result<u64, SendError> {
        self.send_message(dest, body, true, now)
    }

    fn send_message(
        &mut self,
        dest: Dest,
        body: Bytes,
        no_push: bool,
        now: Instant,
    ) -> Result<u64, SendError> {
        let (group, to) = match dest {
            Dest::User(u) => (0, u),
            Dest::Group(g) => (g, 0),
        };
        if group == 0 && to == 0 {
            return Err(SendError::NoDestination);
        }
        let max = self.max_out_frame.saturating_sub(BODY_OVERHEAD);
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        if !self.can_send() {
            return Err(SendError::Full {
                max: self.config.max_in_flight,
            });
        }
        let msg_id = self.take_msg_id();
        let msg = MsgR {
            no_push,
            msg_id,
            group,
            to,
            retry: false,
            body,
        };
        if self.state == State::Connected && self.held_by.is_none() {
            self.outbox.insert(msg.clone(), Some(now));
            self.stats.sent += 1;
            self.queue(msg, now);
        } else {
            // Sent after the next login, or once the refused send ahead of
            // it is accepted.
            self.outbox.insert(msg, None);
        }
        Ok(msg_id)
    }

    /// Pulls a stream (0: the inbox, else a group) from its contiguous mark
    /// to the head, page by page, ending with [`Event::SyncDone`]. Returns
    /// false if a pull of it is already running. While disconnected, the
    /// pull starts after the next login.
    pub fn pull(&mut self, group: u64, now: Instant) -> bool {
        self.start_pull(group, now)
    }

    /// Declares that the application already holds `group` up to `seq`
    /// (restored from storage, or the point where it joined a group), so
    /// nothing at or below it is delivered, counted as a gap or pulled.
    /// Only raises the mark.
    pub fn set_stream_mark(&mut self, group: u64, seq: u64, now: Instant) {
        let s = self.streams.entry(group).or_default();
        let delivered = s.raise_mark(group, seq, &mut self.events);
        self.stats.delivered += delivered;
        self.settle(group, true, now);
    }

    /// Marks a conversation read up to `seq` of this user's stream (read:R).
    pub fn mark_read(
        &mut self,
        group: u64,
        peer: u64,
        seq: u64,
        now: Instant,
    ) -> Result<(), RequestError> {
        self.request(ReadR { group, peer, seq }, now)
    }

    /// Asks for the unread summary ([`Event::Unread`]). Its answer carries
    /// no id, so only one may be outstanding.
    pub fn request_unread(&mut self, now: Instant) -> Result<(), RequestError> {
        if self.unread_pending && self.state == State::Connected {
            return Err(RequestError::Pending);
        }
        self.request(UnreadR {}, now)?;
        self.unread_pending = true;
        Ok(())
    }

    /// Creates a group (`group` 0), adds or removes members, or lists them;
    /// returns the request id echoed in [`Event::GroupAnswer`] or in an
    /// error.
    pub fn group_request(
        &mut self,
        op: GroupOp,
        group: u64,
        members: &[u64],
        now: Instant,
    ) -> Result<u64, RequestError> {
        let req = self.next_req;
        let frame = GroupR {
            req,
            op: op as u8,
            group,
            members: Bytes::new(),
        }
        .with_members(members);
        self.request(frame, now)?;
        self.next_req += 1;
        Ok(req)
    }

    /// Asks how many members received and read group message `seq`
    /// ([`Event::Receipts`]); returns the request id.
    pub fn request_receipts(
        &mut self,
        group: u64,
        seq: u64,
        now: Instant,
    ) -> Result<u64, RequestError> {
        let req = self.next_req;
        self.request(ReceiptsR { req, group, seq }, now)?;
        self.next_req += 1;
        Ok(req)
    }

    /// Sends a ping now, returning its nonce (echoed in [`Event::Pong`]).
    pub fn ping(&mut self, now: Instant) -> Result<u64, RequestError> {
        let nonce = self.next_nonce;
        self.request(Ping { nonce }, now)?;
        self.next_nonce += 1;
        Ok(nonce)
    }

    /// Says goodbye: acknowledges what every stream holds, queues a
    /// logout, and the state becomes [`State::Closed`]. Waiting messages
    /// stay for a later [`Client::connect`].
    pub fn logout(&mut self, now: Instant) {
        if self.state == State::Connected {
            let mut owed: Vec<u64> = self
                .streams
                .iter()
                .filter(|(_, s)| s.owes_ack())
                .map(|(&g, _)| g)
                .collect();
            owed.sort_unstable();
            for group in owed {
                self.send_ack(group, now);
            }
        }
        if matches!(self.state, State::LoggingIn | State::Connected) {
            self.queue(Logout {}, now);
        }
        self.interrupt();
        self.state = State::Closed;
    }

    // ---- outputs ---------------------------------------------------------

    /// Encodes every queued frame into `buf` (one write for the lot),
    /// returning how many there were.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> usize {
        let n = self.transmit.len();
        buf.reserve(self.transmit.iter().map(Frame::encoded_len).sum());
        for f in self.transmit.drain(..) {
            f.encode(buf);
        }
        n
    }

    /// The next queued frame, for callers that encode themselves.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called (None: no timer
    /// runs, as while not logged in).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let dead = self.dead_deadline();
        match self.state {
            State::Connected => {}
            State::LoggingIn => return dead,
            State::Disconnected | State::Closed => return None,
        }
        let streams = &self.streams;
        let stream = self.timers.next(|t| timer_live(streams, t));
        let outbox = self.outbox.next_deadline();
        let heartbeat = self.last_tx.map(|at| at + self.heartbeat);
        [stream, outbox, heartbeat, dead]
            .into_iter()
            .flatten()
            .min()
    }

    /// The send `msg_id` left the outbox (accepted or failed): if later
    /// sends waited behind it, they go out now, in order.
    pub(super) fn release(&mut self, msg_id: u64, now: Instant) {
        if self.held_by != Some(msg_id) {
            return;
        }
        self.held_by = None;
        if self.state != State::Connected {
            return;
        }
        for msg in self.outbox.send_unsent(now) {
            self.stats.sent += 1;
            self.queue(msg, now);
        }
    }

    /// Reports a send as failed (it has left the outbox).
    fn fail(&mut self, msg_id: u64, reason: FailReason) {
        self.stats.failed += 1;
        self.events.push_back(Event::SendFailed { msg_id, reason });
    }

    /// Queues a request frame if logged in.
    fn request(&mut self, frame: impl Into<Frame>, now: Instant) -> Result<(), RequestError> {
        if self.state != State::Connected {
            return Err(RequestError::NotConnected);
        }
        self.queue(frame, now);
        Ok(())
    }

    fn queue(&mut self, frame: impl Into<Frame>, now: Instant) {
        self.transmit.push_back(frame.into());
        self.last_tx = Some(now);
    }

    /// When the connection counts as dead if nothing arrives before.
    fn dead_deadline(&self) -> Option<Instant> {
        let silence = self.heartbeat.checked_mul(self.config.dead_after)?;
        if silence.is_zero() {
            return None;
        }
        self.last_rx?.checked_add(silence)
    }

    /// The session is over (kicked, a closing error, dead): nothing more is
    /// sent and the caller closes the transport.
    fn close(&mut self) {
        self.interrupt();
        self.transmit.clear();
        self.state = State::Closed;
    }

    /// The connection is gone or going: timers stop, outstanding pull
    /// requests are lost.
    fn interrupt(&mut self) {
        self.outbox.disarm();
        self.unread_pending = false;
        for s in self.streams.values_mut() {
            if let Some(p) = s.pull.as_mut() {
                p.interrupt();
            }
        }
    }

    fn take_msg_id(&mut self) -> u64 {
        loop {
            let id = self.next_msg_id;
            self.next_msg_id = id.wrapping_add(1);
            if id != 0 && !self.outbox.contains(id) {
                return id;
            }
        }
    }

    fn take_nonce(&mut self) -> u64 {
        let n = self.next_nonce;
        self.next_nonce += 1;
        n
    }
}

/// Whether a stream timer is still the stream's current deadline.
fn timer_live(streams: &HashMap<u64, Stream>, t: &Timer) -> bool {
    streams.get(&t.group).is_some_and(|s| match t.kind {
        TimerKind::Gap => s.gap_deadline == Some(t.at),
        TimerKind::Ack => s.ack_deadline == Some(t.at),
    })
}
