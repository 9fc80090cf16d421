//! The client state machine driven by hand-written server frames on a fake
//! clock: a base `Instant` plus durations, no sleeps, no sockets.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Decoder, ErrorCode, Frame, KickReason, Kind,
    client::{Client, Config, Dest, Event, FailReason, SendError, State, StreamInfo},
    frame::{
        AckA, AckN, AckR, Entry, ErrorFrame, GroupA, GroupOp, GroupR, Kick, Login, LoginOk, MsgA,
        MsgN, MsgR, Ping, Pong, ReadN, ReadR, ReceiptsA, ReceiptsR, SyncPage, SyncR, UnreadA,
        UnreadEntry, UnreadR,
    },
};

const ME: u64 = 1;
const DEVICE: u32 = 2;
const PEER: u64 = 7;
const GROUP: u64 = 9;
const LIMIT: u16 = 200;

/// A client, its fake clock and helpers to feed and drain it.
struct Harness {
    c: Client,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let t0 = Instant::now();
        Harness {
            c: Client::new(config).expect("valid config"),
            t0,
            now: t0,
        }
    }

    fn with(f: impl FnOnce(&mut Config)) -> Harness {
        let mut cfg = Config::new(ME, DEVICE, "tok");
        f(&mut cfg);
        Harness::new(cfg)
    }

    /// Milliseconds since the start.
    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    /// Runs every timer due up to `ms` (as a pump would, firing each
    /// deadline at its time), then sets the clock there.
    fn run_until(&mut self, ms: u64) {
        let target = self.t0 + Duration::from_millis(ms);
        while let Some(d) = self.c.poll_timeout() {
            if d > target {
                break;
            }
            // A deadline that passed while the timers were off (not logged
            // in) fires now.
            self.now = d.max(self.now);
            self.c.handle_timeout(self.now);
        }
        self.now = target;
    }

    fn feed(&mut self, f: impl Into<Frame>) {
        self.c.handle_frame(f.into(), self.now);
    }

    fn frames(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.c.poll_frame()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    /// Connects and logs in with this inbox head; drains the login frames
    /// and the LoggedIn event.
    fn login(&mut self, inbox_head: u64) {
        self.c.connect(self.now);
        let f = self.frames();
        assert!(matches!(f.as_slice(), [Frame::Login(_)]), "{f:?}");
        self.feed(login_ok(inbox_head, 30_000));
        let e = self.events();
        assert!(matches!(e.as_slice(), [Event::LoggedIn { .. }]), "{e:?}");
    }

    fn send_to_peer(&mut self, body: &'static str) -> u64 {
        self.c
            .send(
                Dest::User(PEER),
                Bytes::from_static(body.as_bytes()),
                self.now,
            )
            .expect("send")
    }
}

fn login_ok(inbox_head: u64, heartbeat_ms: u32) -> LoginOk {
    LoginOk {
        user: ME,
        device: DEVICE,
        heartbeat_ms,
        server_time: 1_700_000_000_000,
        inbox_head,
        max_frame: 64 * 1024,
        session: 42,
        frame_rate: 1000,
        frame_burst: 2000,
        rate_strikes: 10,
    }
}

/// A pushed message with fields derived from its seq.
fn push(group: u64, seq: u64) -> MsgN {
    MsgN {
        group,
        seq,
        from: PEER,
        to: if group == 0 { ME } else { 0 },
        msg_id: 1000 + seq,
        server_time: 5000 + seq,
        retry: false,
        body: Bytes::from(format!("m{seq}")),
    }
}

/// The Message event `push(group, seq)` (or the same entry pulled) makes.
fn message(group: u64, seq: u64, pulled: bool) -> Event {
    Event::Message {
        group,
        seq,
        from: PEER,
        to: if group == 0 { ME } else { 0 },
        msg_id: 1000 + seq,
        server_time: 5000 + seq,
        body: Bytes::from(format!("m{seq}")),
        pulled,
    }
}

/// A sync page of `push(group, seq)` entries for these seqs.
fn page(group: u64, after: u64, head: u64, seqs: impl IntoIterator<Item = u64>) -> SyncPage {
    let mut p = SyncPage::new(group, after, head);
    let mut buf = BytesMut::new();
    for seq in seqs {
        let m = push(group, seq);
        p.push(
            &mut buf,
            &Entry {
                seq,
                from: m.from,
                to: m.to,
                msg_id: m.msg_id,
                server_time: m.server_time,
                body: m.body,
            },
        );
    }
    p.finish(buf)
}

/// The login frame of `Config::new(ME, DEVICE, "tok")` resuming at `resume`.
fn login_r(resume: u64) -> Frame {
    Frame::Login(Login {
        user: ME,
        device: DEVICE,
        resume,
        token: Bytes::from_static(b"tok"),
    })
}

fn sync_r(group: u64, after: u64) -> Frame {
    Frame::SyncR(SyncR {
        group,
        after,
        limit: LIMIT,
    })
}

fn ack_r(group: u64, seq: u64) -> Frame {
    Frame::AckR(AckR { group, seq })
}

fn msg_r(msg_id: u64, body: &'static str, retry: bool) -> Frame {
    Frame::MsgR(MsgR {
        no_push: false,
        msg_id,
        group: 0,
        to: PEER,
        retry,
        body: Bytes::from_static(body.as_bytes()),
    })
}

fn msg_a(msg_id: u64, seq: u64, own_seq: u64) -> MsgA {
    MsgA {
        msg_id,
        group: 0,
        seq,
        own_seq,
        server_time: 9000 + msg_id,
    }
}

// ---- login and pull ---------------------------------------------------------

#[test]
fn login_then_automatic_inbox_pull_in_pages() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    assert_eq!(h.c.state(), State::Disconnected);
    h.c.connect(h.now);
    assert_eq!(h.c.state(), State::LoggingIn);
    assert_eq!(h.frames(), vec![login_r(0)]);
    // Before login:ok only the dead-connection check runs (3 heartbeats).
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_secs(90)));

    h.feed(login_ok(5, 15_000));
    assert_eq!(h.c.state(), State::Connected);
    assert_eq!(
        h.events(),
        vec![Event::LoggedIn {
            user: ME,
            device: DEVICE,
            session: 42,
            heartbeat: Duration::from_millis(15_000),
            inbox_head: 5,
            server_time: 1_700_000_000_000,
            max_frame: 64 * 1024,
            frame_rate: 1000,
            frame_burst: 2000,
        }]
    );
    assert_eq!(h.frames(), vec![sync_r(0, 0)]);

    h.feed(page(0, 0, 5, 1..=3));
    assert_eq!(
        h.events(),
        (1..=3).map(|s| message(0, s, true)).collect::<Vec<_>>()
    );
    // Asking for the next page acknowledges this one.
    assert_eq!(h.frames(), vec![sync_r(0, 3)]);
    h.feed(page(0, 3, 5, 4..=5));
    assert_eq!(h.events(), vec![message(0, 4, true), message(0, 5, true)]);
    assert_eq!(h.frames(), vec![sync_r(0, 5)]);
    h.feed(page(0, 5, 5, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: 0 }]);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(
        h.c.stream(0),
        Some(StreamInfo {
            contiguous: 5,
            acked: 5,
            confirmed: 0,
            held: 0,
            pulling: false,
        })
    );
    // Pulled entries need no ack:R: nothing but the heartbeat is due.
    assert_eq!(
        h.c.poll_timeout(),
        Some(h.t0 + Duration::from_millis(15_000))
    );
    h.run_until(14_999);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(h.c.stats().sync_requests, 3);
    assert_eq!(h.c.stats().delivered, 5);
}

#[test]
fn no_inbox_pull_when_the_device_is_up_to_date_or_it_is_off() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.set_stream_mark(0, 8, h.now);
    h.c.connect(h.now);
    assert_eq!(h.frames(), vec![login_r(8)]);
    h.feed(login_ok(8, 30_000));
    assert_eq!(h.frames(), vec![]);

    let mut off = Harness::with(|c| c.auto_pull_inbox = false);
    off.login(100);
    assert_eq!(off.frames(), vec![]);
    assert_eq!(off.c.stream(0).map(|s| s.pulling), Some(false));
}

#[test]
fn manual_group_pull_one_at_a_time() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    assert!(h.c.pull(GROUP, h.now));
    assert!(!h.c.pull(GROUP, h.now), "a second pull of the same stream");
    assert_eq!(h.frames(), vec![sync_r(GROUP, 0)]);
    // A push during the pull is delivered and counts for the next request.
    h.feed(push(GROUP, 1));
    h.feed(page(GROUP, 0, 3, 1..=3));
    assert_eq!(
        h.events(),
        vec![
            message(GROUP, 1, false),
            message(GROUP, 2, true),
            message(GROUP, 3, true)
        ]
    );
    assert_eq!(h.frames(), vec![sync_r(GROUP, 3)]);
    h.feed(page(GROUP, 3, 3, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: GROUP }]);
    h.run_until(1000);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(h.c.stats().duplicates, 1);
    assert_eq!(h.c.stats().received, 4);
}

// ---- sending ----------------------------------------------------------------

#[test]
fn msg_a_clears_the_wait_ack_queue() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let id = h.send_to_peer("hi");
    assert_eq!(id, 1);
    assert_eq!(h.frames(), vec![msg_r(1, "hi", false)]);
    assert_eq!(h.c.in_flight(), 1);
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_secs(2)));

    h.run_until(100);
    h.feed(msg_a(1, 40, 0));
    assert_eq!(
        h.events(),
        vec![Event::Acked {
            msg_id: 1,
            group: 0,
            seq: 40,
            own_seq: 0,
            server_time: 9001,
        }]
    );
    assert_eq!(h.c.in_flight(), 0);
    assert!(!h.c.is_in_flight(1));
    // Only the heartbeat is left, 30 s after the msg:R went out.
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_secs(30)));
    h.run_until(29_000);
    assert_eq!(h.frames(), vec![]);
    // A second msg:A for it is late, not a new ack.
    h.feed(msg_a(1, 40, 0));
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.c.stats().acked, 1);
    assert_eq!(h.c.stats().late_acks, 1);
    assert_eq!(h.send_to_peer("again"), 2);
}

#[test]
fn retransmit_after_rto_with_the_same_id_and_the_retry_flag() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.send_to_peer("hi");
    h.frames();
    h.run_until(1999);
    assert_eq!(h.frames(), vec![]);
    h.run_until(2000);
    assert_eq!(h.frames(), vec![msg_r(1, "hi", true)]);
    assert_eq!(h.c.stats().retransmitted, 1);
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_secs(4)));

    // On the wire the retry is the header flag.
    h.run_until(4000);
    let mut buf = BytesMut::new();
    assert_eq!(h.c.poll_transmit(&mut buf), 1);
    let frame = Decoder::default().decode(&mut buf).expect("decodes");
    assert_eq!(frame, Some(msg_r(1, "hi", true)));
    assert!(buf.is_empty());
}

#[test]
fn a_silent_message_keeps_no_push_on_every_retransmission() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let id =
        h.c.send_silent(Dest::User(PEER), Bytes::from_static(b"typing"), h.now)
            .expect("sent");
    let first = MsgR {
        no_push: true,
        msg_id: id,
        group: 0,
        to: PEER,
        retry: false,
        body: Bytes::from_static(b"typing"),
    };
    assert_eq!(h.frames(), vec![Frame::MsgR(first.clone())]);
    h.run_until(2000);
    assert_eq!(
        h.frames(),
        vec![Frame::MsgR(MsgR {
            retry: true,
            ..first
        })]
    );
    // On the wire it is the header flag NO_PUSH (0x0004), with RETRY.
    h.run_until(4000);
    let mut buf = BytesMut::new();
    assert_eq!(h.c.poll_transmit(&mut buf), 1);
    assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 0x0005);
}

#[test]
fn backoff_spaces_the_retransmissions() {
    let mut h = Harness::with(|c| {
        c.rto = Duration::from_millis(100);
        c.rto_backoff = 2.0;
        c.max_rto = Duration::from_millis(350);
        c.max_retries = 4;
    });
    h.login(0);
    h.send_to_peer("hi");
    h.frames();
    let mut at = Vec::new();
    for ms in 1..=2000 {
        h.run_until(ms);
        for f in h.frames() {
            assert_eq!(f, msg_r(1, "hi", true));
            at.push(h.ms());
        }
    }
    assert_eq!(at, vec![100, 300, 650, 1000]);
    assert_eq!(
        h.events(),
        vec![Event::SendFailed {
            msg_id: 1,
            reason: FailReason::TimedOut,
        }]
    );
}

#[test]
fn retry_limit_fails_the_send() {
    let mut h = Harness::with(|c| {
        c.rto = Duration::from_secs(1);
        c.max_retries = 2;
    });
    h.login(0);
    h.send_to_peer("hi");
    h.frames();
    h.run_until(1000);
    assert_eq!(h.frames(), vec![msg_r(1, "hi", true)]);
    h.run_until(2000);
    assert_eq!(h.frames(), vec![msg_r(1, "hi", true)]);
    assert_eq!(h.events(), vec![]);
    h.run_until(2999);
    assert_eq!(h.events(), vec![]);
    h.run_until(3000);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(
        h.events(),
        vec![Event::SendFailed {
            msg_id: 1,
            reason: FailReason::TimedOut,
        }]
    );
    assert_eq!(h.c.in_flight(), 0);
    assert_eq!(h.c.stats().failed, 1);
    assert_eq!(h.c.stats().retransmitted, 2);
    // The message may have been stored after all: a late msg:A is counted,
    // not reported as an ack.
    h.feed(msg_a(1, 3, 0));
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.c.stats().late_acks, 1);
}

/// The msg:R frames queued (acks and pulls left out).
fn sends(h: &mut Harness) -> Vec<Frame> {
    h.frames()
        .into_iter()
        .filter(|f| matches!(f, Frame::MsgR(_)))
        .collect()
}

#[test]
fn with_keep_send_order_later_sends_wait_behind_a_refused_one() {
    let mut h = Harness::with(|c| c.keep_send_order = true);
    h.login(0);
    let a = h.send_to_peer("a");
    let b = h.send_to_peer("b");
    assert_eq!(
        sends(&mut h),
        vec![msg_r(a, "a", false), msg_r(b, "b", false)]
    );
    // a is refused for now; b was already in flight.
    h.feed(ErrorFrame::new(
        ErrorCode::Overloaded,
        Some(Kind::MsgR),
        a,
        "try again",
    ));
    let c = h.send_to_peer("c");
    let d = h.send_to_peer("d");
    assert_eq!(sends(&mut h), vec![], "c and d wait behind a");
    h.feed(msg_a(b, 1, 1));
    assert_eq!(sends(&mut h), vec![]);
    // a's timer resends it; once it is accepted, c and d go, in order.
    h.run_until(2_000);
    assert_eq!(sends(&mut h), vec![msg_r(a, "a", true)]);
    h.feed(msg_a(a, 2, 2));
    assert_eq!(
        sends(&mut h),
        vec![msg_r(c, "c", false), msg_r(d, "d", false)]
    );
    // Nothing holds any more.
    let e = h.send_to_peer("e");
    assert_eq!(sends(&mut h), vec![msg_r(e, "e", false)]);
}

#[test]
fn a_held_send_that_fails_releases_the_rest_and_without_the_setting_nothing_waits() {
    let mut h = Harness::with(|c| c.keep_send_order = true);
    h.login(0);
    let a = h.send_to_peer("a");
    sends(&mut h);
    h.feed(ErrorFrame::new(
        ErrorCode::RateLimited,
        Some(Kind::MsgR),
        a,
        "slow down",
    ));
    let b = h.send_to_peer("b");
    assert_eq!(sends(&mut h), vec![]);
    // a is then refused for good: b goes.
    h.feed(ErrorFrame::new(
        ErrorCode::InvalidRequest,
        Some(Kind::MsgR),
        a,
        "no",
    ));
    assert_eq!(sends(&mut h), vec![msg_r(b, "b", false)]);

    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let a = h.send_to_peer("a");
    sends(&mut h);
    h.feed(ErrorFrame::new(
        ErrorCode::Overloaded,
        Some(Kind::MsgR),
        a,
        "try again",
    ));
    let b = h.send_to_peer("b");
    assert_eq!(
        sends(&mut h),
        vec![msg_r(b, "b", false)],
        "b may overtake a"
    );
}

#[test]
fn error_frame_for_a_msg_id_fails_that_send() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let a = h.send_to_peer("a");
    let b = h.send_to_peer("b");
    h.frames();
    h.feed(ErrorFrame::new(
        ErrorCode::Forbidden,
        Some(Kind::MsgR),
        b,
        "blocked",
    ));
    assert_eq!(
        h.events(),
        vec![Event::SendFailed {
            msg_id: b,
            reason: FailReason::Rejected(ErrorCode::Forbidden),
        }]
    );
    assert!(h.c.is_in_flight(a));
    assert!(!h.c.is_in_flight(b));
    assert_eq!(h.c.stats().failed, 1);

    // "Overloaded" means later, not no: the send stays and is retried.
    h.feed(ErrorFrame::new(
        ErrorCode::Overloaded,
        Some(Kind::MsgR),
        a,
        "busy",
    ));
    assert_eq!(
        h.events(),
        vec![Event::ServerError {
            code: ErrorCode::Overloaded,
            ref_kind: Some(Kind::MsgR),
            ref_id: a,
            text: "busy".into(),
        }]
    );
    h.run_until(2000);
    assert_eq!(h.frames(), vec![msg_r(a, "a", true)]);

    // Errors about anything else are passed on.
    h.feed(ErrorFrame::new(
        ErrorCode::NotFound,
        Some(Kind::GroupR),
        77,
        "",
    ));
    assert_eq!(
        h.events(),
        vec![Event::ServerError {
            code: ErrorCode::NotFound,
            ref_kind: Some(Kind::GroupR),
            ref_id: 77,
            text: String::new(),
        }]
    );
}

#[test]
fn bounded_in_flight_and_other_send_errors() {
    let mut h = Harness::with(|c| c.max_in_flight = 2);
    h.login(0);
    assert_eq!(h.send_to_peer("a"), 1);
    assert_eq!(h.send_to_peer("b"), 2);
    assert!(!h.c.can_send());
    assert_eq!(
        h.c.send(Dest::User(PEER), Bytes::from_static(b"c"), h.now),
        Err(SendError::Full { max: 2 })
    );
    h.feed(msg_a(1, 1, 0));
    assert!(h.c.can_send());
    assert_eq!(h.send_to_peer("c"), 3);

    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    assert_eq!(
        h.c.send(Dest::User(0), Bytes::new(), h.now),
        Err(SendError::NoDestination)
    );
    // login:ok said 64 KiB; a body must fit a one-entry sync page, 78 bytes
    // of header and fixed fields.
    let body = Bytes::from(vec![0u8; 64 * 1024 - 77]);
    assert_eq!(
        h.c.send(Dest::Group(GROUP), body, h.now),
        Err(SendError::TooLarge {
            len: 64 * 1024 - 77,
            max: 64 * 1024 - 78,
        })
    );
    let fits = Bytes::from(vec![0u8; 64 * 1024 - 78]);
    assert!(h.c.send(Dest::Group(GROUP), fits, h.now).is_ok());
}

#[test]
fn msg_ids_start_at_the_seed_and_skip_zero() {
    let mut h = Harness::with(|c| c.first_msg_id = u64::MAX);
    h.login(0);
    assert_eq!(h.send_to_peer("a"), u64::MAX);
    assert_eq!(h.send_to_peer("b"), 1);
    assert_eq!(h.c.next_msg_id(), 2);
}

// ---- receiving --------------------------------------------------------------

#[test]
fn duplicate_pushes_are_counted_and_delivered_once() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.feed(MsgN {
        retry: true,
        ..push(0, 1)
    });
    h.feed(push(0, 2));
    h.feed(push(0, 1));
    assert_eq!(h.events(), vec![message(0, 1, false), message(0, 2, false)]);
    let s = h.c.stats();
    assert_eq!((s.received, s.duplicates, s.delivered), (4, 2, 2));
}

#[test]
fn out_of_order_pushes_are_held_then_delivered_in_order() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.feed(push(0, 3));
    h.feed(push(0, 4));
    h.feed(push(0, 3));
    assert_eq!(h.events(), vec![message(0, 1, false)]);
    assert_eq!(h.c.stream(0).map(|s| s.held), Some(2));
    h.run_until(50);
    h.feed(push(0, 2));
    assert_eq!(
        h.events(),
        vec![
            message(0, 2, false),
            message(0, 3, false),
            message(0, 4, false)
        ]
    );
    // The gap closed in time: no sync, just the acks (1 at 10 ms, then 2..4
    // at 60 ms).
    h.run_until(1000);
    assert_eq!(h.frames(), vec![ack_r(0, 1), ack_r(0, 4)]);
    let s = h.c.stats();
    assert_eq!((s.out_of_order, s.duplicates, s.gaps_synced), (2, 1, 0));
}

#[test]
fn an_unfilled_gap_is_pulled_after_the_gap_timeout() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.feed(push(0, 2));
    h.run_until(5);
    h.feed(push(0, 5));
    h.run_until(204);
    assert_eq!(h.frames(), vec![ack_r(0, 2)]);
    h.run_until(205);
    assert_eq!(h.frames(), vec![sync_r(0, 2)]);
    assert_eq!(h.c.stats().gaps_synced, 1);
    assert_eq!(h.events(), vec![message(0, 1, false), message(0, 2, false)]);

    h.feed(page(0, 2, 5, 3..=5));
    assert_eq!(
        h.events(),
        vec![
            message(0, 3, true),
            message(0, 4, true),
            message(0, 5, false)
        ]
    );
    assert_eq!(h.frames(), vec![sync_r(0, 5)]);
    h.feed(page(0, 5, 5, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: 0 }]);
    h.run_until(2000);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(h.c.stats().duplicates, 1);
}

#[test]
fn a_gap_during_a_pull_is_left_to_the_pull() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(10);
    assert_eq!(h.frames(), vec![sync_r(0, 0)]);
    h.feed(push(0, 12));
    h.run_until(1000);
    assert_eq!(h.frames(), vec![]);
    h.feed(page(0, 0, 12, 1..=11));
    assert_eq!(h.events().len(), 12);
    assert_eq!(h.frames(), vec![sync_r(0, 12)]);
}

#[test]
fn buffer_overflow_drops_the_highest_and_syncs_at_once() {
    let mut h = Harness::with(|c| c.max_held = 2);
    h.login(0);
    h.feed(push(0, 1));
    h.feed(push(0, 3));
    h.feed(push(0, 4));
    assert_eq!(h.frames(), vec![]);
    h.feed(push(0, 6));
    assert_eq!(h.frames(), vec![sync_r(0, 1)]);
    // 5 is above a full buffer too; the pull already covers it.
    h.feed(push(0, 5));
    assert_eq!(h.frames(), vec![]);
    let s = *h.c.stats();
    assert_eq!(
        (s.overflow_dropped, s.gaps_synced, s.out_of_order),
        (2, 1, 4)
    );
    assert_eq!(h.events(), vec![message(0, 1, false)]);

    h.feed(page(0, 1, 6, 2..=6));
    assert_eq!(
        h.events(),
        vec![
            message(0, 2, true),
            message(0, 3, false),
            message(0, 4, false),
            message(0, 5, true),
            message(0, 6, true),
        ]
    );
    assert_eq!(h.frames(), vec![sync_r(0, 6)]);
    h.feed(page(0, 6, 6, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: 0 }]);
}

#[test]
fn a_page_above_after_moves_the_mark_over_missing_history() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    // Joined the group when its head was 100: the first push is 101.
    h.feed(push(GROUP, 101));
    assert_eq!(h.events(), vec![]);
    h.run_until(200);
    assert_eq!(h.frames(), vec![sync_r(GROUP, 0)]);
    // Nothing before 101 is there for this device.
    h.feed(page(GROUP, 0, 102, 101..=102));
    assert_eq!(
        h.events(),
        vec![message(GROUP, 101, false), message(GROUP, 102, true)]
    );
    assert_eq!(h.frames(), vec![sync_r(GROUP, 102)]);
    h.feed(page(GROUP, 102, 102, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: GROUP }]);
    assert_eq!(h.c.stats().history_skipped, 100);

    // An empty page below the head: everything up to the head is gone.
    assert!(h.c.pull(0, h.now));
    assert_eq!(h.frames(), vec![sync_r(0, 0)]);
    h.feed(page(0, 0, 40, []));
    assert_eq!(h.events(), vec![Event::SyncDone { group: 0 }]);
    assert_eq!(h.c.stream(0).map(|s| s.contiguous), Some(40));
    assert_eq!(h.c.stats().history_skipped, 140);
    // The pull ended at an empty page that acknowledged 0, so the skipped
    // range is acknowledged with an ack:R.
    h.run_until(210);
    assert_eq!(h.frames(), vec![ack_r(0, 40)]);
    h.feed(push(0, 41));
    assert_eq!(h.events(), vec![message(0, 41, false)]);
}

#[test]
fn a_page_that_brings_nothing_new_ends_the_pull() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(GROUP, 1));
    h.feed(push(GROUP, 2));
    h.feed(push(GROUP, 4));
    h.events();
    h.run_until(200);
    // The gap's sync:R goes before the group's delayed ack, and stands for
    // it (asking after 2 acknowledges 2).
    assert_eq!(h.frames(), vec![sync_r(GROUP, 2)]);
    // A faulty page of entries at or below `after`: asking again would
    // bring it again, so the pull stops.
    h.feed(page(GROUP, 2, 4, 1..=2));
    assert_eq!(h.events(), vec![Event::SyncDone { group: GROUP }]);
    assert_eq!(h.frames(), vec![]);
    // The gap is still open; its timer tries again later.
    h.run_until(399);
    assert_eq!(h.frames(), vec![]);
    h.run_until(400);
    assert_eq!(h.frames(), vec![sync_r(GROUP, 2)]);
    assert_eq!(h.c.stats().gaps_synced, 2);
}

#[test]
fn a_refused_pull_ends_with_a_server_error() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.c.pull(GROUP, h.now);
    h.frames();
    h.feed(ErrorFrame::new(
        ErrorCode::Forbidden,
        Some(Kind::SyncR),
        GROUP,
        "not a member",
    ));
    assert_eq!(
        h.events(),
        vec![Event::ServerError {
            code: ErrorCode::Forbidden,
            ref_kind: Some(Kind::SyncR),
            ref_id: GROUP,
            text: "not a member".into(),
        }]
    );
    assert_eq!(h.c.stream(GROUP).map(|s| s.pulling), Some(false));
    assert!(h.c.pull(GROUP, h.now));
}

// ---- acks -------------------------------------------------------------------

#[test]
fn acks_are_batched_by_count() {
    let mut h = Harness::with(|c| c.ack_every = 4);
    h.login(0);
    for seq in 1..=9 {
        h.feed(push(0, seq));
    }
    assert_eq!(h.frames(), vec![ack_r(0, 4), ack_r(0, 8)]);
    h.run_until(9);
    assert_eq!(h.frames(), vec![]);
    h.run_until(10);
    assert_eq!(h.frames(), vec![ack_r(0, 9)]);
    assert_eq!(h.c.stats().acks_sent, 3);
    h.feed(AckA { group: 0, seq: 9 });
    assert_eq!(
        h.c.stream(0),
        Some(StreamInfo {
            contiguous: 9,
            acked: 9,
            confirmed: 9,
            held: 0,
            pulling: false,
        })
    );
}

#[test]
fn acks_are_batched_by_delay_from_the_first_delivery() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.run_until(6);
    h.feed(push(0, 2));
    h.run_until(9);
    assert_eq!(h.frames(), vec![]);
    h.run_until(10);
    assert_eq!(h.frames(), vec![ack_r(0, 2)]);
    h.run_until(1000);
    assert_eq!(h.frames(), vec![]);
}

#[test]
fn group_acks_wait_longer_and_cover_more() {
    let mut h = Harness::with(|c| c.group_ack_delay = Duration::from_millis(200));
    h.login(0);
    h.feed(push(GROUP, 1));
    h.feed(push(0, 1));
    h.run_until(50);
    h.feed(push(GROUP, 2));
    h.run_until(150);
    h.feed(push(GROUP, 3));
    // The inbox ack went at 10 ms; the group's waits for 200 ms after its
    // first delivery and then covers all three.
    h.run_until(199);
    assert_eq!(h.frames(), vec![ack_r(0, 1)]);
    h.run_until(200);
    assert_eq!(h.frames(), vec![ack_r(GROUP, 3)]);
    h.run_until(1000);
    assert_eq!(h.frames(), vec![]);
}

// ---- receipts ---------------------------------------------------------------

#[test]
fn receipts_that_come_before_the_msg_a_settle_it_when_it_arrives() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let a = h.send_to_peer("a");
    let b = h.send_to_peer("b");
    h.frames();
    // The connection breaks before either msg:A; at the next login the
    // server's receipt marks come before the retransmissions' answers.
    h.c.handle_disconnect();
    h.c.connect(h.now);
    h.frames();
    h.feed(login_ok(2, 30_000));
    h.events();
    h.feed(AckN {
        peer: PEER,
        group: 0,
        seq: 7,
    });
    h.feed(ReadN {
        reader: PEER,
        group: 0,
        peer: ME,
        seq: 6,
    });
    assert_eq!(h.events(), vec![]);
    h.feed(msg_a(a, 6, 1));
    h.feed(msg_a(b, 8, 2));
    let e = h.events();
    let settled: Vec<&Event> = e
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. } | Event::Read { .. }))
        .collect();
    assert_eq!(
        settled,
        vec![
            &Event::Delivered {
                msg_id: a,
                peer: PEER
            },
            &Event::Read {
                msg_id: a,
                peer: PEER
            }
        ],
        "{e:?}"
    );
    // b (seq 8) waits for a receipt that covers it.
    assert_eq!(h.c.awaiting_receipts(), (1, 1));
}

#[test]
fn ack_n_and_read_n_settle_the_right_messages() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    let a = h.send_to_peer("a");
    let b = h.send_to_peer("b");
    let c =
        h.c.send(Dest::User(8), Bytes::from_static(b"c"), h.now)
            .expect("send");
    let g =
        h.c.send(Dest::Group(GROUP), Bytes::from_static(b"g"), h.now)
            .expect("send");
    h.feed(msg_a(a, 10, 0));
    h.feed(msg_a(b, 11, 0));
    h.feed(MsgA {
        msg_id: c,
        group: 0,
        seq: 5,
        own_seq: 0,
        server_time: 1,
    });
    h.feed(MsgA {
        msg_id: g,
        group: GROUP,
        seq: 1,
        own_seq: 0,
        server_time: 1,
    });
    h.events();
    assert_eq!(h.c.awaiting_receipts(), (3, 3));

    h.feed(AckN {
        peer: PEER,
        group: 0,
        seq: 10,
    });
    assert_eq!(
        h.events(),
        vec![Event::Delivered {
            msg_id: a,
            peer: PEER
        }]
    );
    h.feed(AckN {
        peer: 8,
        group: 0,
        seq: 4,
    });
    assert_eq!(h.events(), vec![]);
    h.feed(AckN {
        peer: PEER,
        group: 0,
        seq: 11,
    });
    assert_eq!(
        h.events(),
        vec![Event::Delivered {
            msg_id: b,
            peer: PEER
        }]
    );
    h.feed(ReadN {
        reader: PEER,
        group: 0,
        peer: ME,
        seq: 11,
    });
    assert_eq!(
        h.events(),
        vec![
            Event::Read {
                msg_id: a,
                peer: PEER
            },
            Event::Read {
                msg_id: b,
                peer: PEER
            }
        ]
    );
    // Read before delivered: both, delivered first.
    h.feed(ReadN {
        reader: 8,
        group: 0,
        peer: ME,
        seq: 5,
    });
    assert_eq!(
        h.events(),
        vec![
            Event::Delivered { msg_id: c, peer: 8 },
            Event::Read { msg_id: c, peer: 8 }
        ]
    );
    assert_eq!(h.c.awaiting_receipts(), (0, 0));
    // Another device of ours read a conversation.
    h.feed(ReadN {
        reader: ME,
        group: 0,
        peer: PEER,
        seq: 30,
    });
    assert_eq!(
        h.events(),
        vec![Event::ReadElsewhere {
            group: 0,
            peer: PEER,
            seq: 30,
        }]
    );
}

// ---- own copies -------------------------------------------------------------

#[test]
fn own_seq_from_msg_a_is_not_a_gap() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    for seq in 1..=3 {
        h.feed(push(0, seq));
    }
    let id = h.send_to_peer("mine");
    h.feed(msg_a(id, 50, 4));
    h.feed(push(0, 5));
    let e = h.events();
    assert_eq!(e.len(), 5, "{e:?}");
    assert_eq!(e.last(), Some(&message(0, 5, false)));
    assert_eq!(h.c.stream(0).map(|s| (s.contiguous, s.held)), Some((5, 0)));

    // A group message's seq counts as received in the group's log.
    let g =
        h.c.send(Dest::Group(GROUP), Bytes::from_static(b"hey"), h.now)
            .expect("send");
    h.feed(MsgA {
        msg_id: g,
        group: GROUP,
        seq: 1,
        own_seq: 0,
        server_time: 1,
    });
    h.feed(push(GROUP, 2));
    assert_eq!(
        h.events(),
        vec![
            Event::Acked {
                msg_id: g,
                group: GROUP,
                seq: 1,
                own_seq: 0,
                server_time: 1,
            },
            message(GROUP, 2, false)
        ]
    );
    h.run_until(1000);
    assert_eq!(
        h.frames()
            .iter()
            .filter(|f| f.kind() == Kind::SyncR)
            .count(),
        0
    );
    assert_eq!(h.c.stats().gaps_synced, 0);
    assert_eq!(h.c.stats().delivered, 5);
}

#[test]
fn an_own_copy_ahead_of_the_stream_is_held_silently() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    let id = h.send_to_peer("mine");
    h.feed(msg_a(id, 50, 3));
    assert_eq!(h.c.stream(0).map(|s| (s.contiguous, s.held)), Some((1, 1)));
    h.feed(push(0, 2));
    let e = h.events();
    assert_eq!(
        e.iter()
            .filter_map(|e| match e {
                Event::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(h.c.stream(0).map(|s| (s.contiguous, s.held)), Some((3, 0)));
    // The own copy is not counted as received.
    assert_eq!(h.c.stats().received, 2);
}

// ---- connection -------------------------------------------------------------

#[test]
fn reconnect_resends_unacked_messages_and_interrupted_pulls() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.feed(push(0, 2));
    let a = h.send_to_peer("a");
    let b = h.send_to_peer("b");
    h.c.pull(GROUP, h.now);
    h.frames();
    h.feed(msg_a(a, 1, 0));
    h.c.handle_disconnect();
    assert_eq!(h.c.state(), State::Disconnected);
    assert_eq!(h.c.poll_timeout(), None);
    // Sending while disconnected queues the message for the next login.
    h.run_until(500);
    let c = h.send_to_peer("c");
    assert_eq!(h.frames(), vec![]);
    h.run_until(5000);

    h.c.connect(h.now);
    assert_eq!(h.frames(), vec![login_r(2)]);
    h.feed(login_ok(2, 30_000));
    assert_eq!(
        h.frames(),
        vec![msg_r(b, "b", true), msg_r(c, "c", false), sync_r(GROUP, 0)]
    );
    // The login's resume acknowledged the inbox: the ack batch that came
    // due while disconnected has nothing left to send.
    h.run_until(5000);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(h.c.stream(0).map(|s| s.acked), Some(2));
    let s = h.c.stats();
    assert_eq!((s.sent, s.retransmitted), (3, 1));
    // Timers restart from the login.
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_millis(7000)));
    h.feed(msg_a(b, 2, 0));
    h.feed(msg_a(c, 3, 0));
    assert_eq!(h.c.in_flight(), 0);
}

#[test]
fn heartbeat_ping_when_idle() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.connect(h.now);
    h.frames();
    h.feed(login_ok(0, 1000));
    h.events();
    assert_eq!(h.c.heartbeat(), Duration::from_millis(1000));
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_millis(1000)));
    h.run_until(999);
    assert_eq!(h.frames(), vec![]);
    h.run_until(1000);
    assert_eq!(h.frames(), vec![Frame::Ping(Ping { nonce: 1 })]);
    // Sending anything resets the idle clock.
    h.run_until(1500);
    h.c.mark_read(0, PEER, 3, h.now).expect("connected");
    assert_eq!(
        h.frames(),
        vec![Frame::ReadR(ReadR {
            group: 0,
            peer: PEER,
            seq: 3,
        })]
    );
    h.run_until(2499);
    assert_eq!(h.frames(), vec![]);
    h.run_until(2500);
    assert_eq!(h.frames(), vec![Frame::Ping(Ping { nonce: 2 })]);
    assert_eq!(h.c.stats().pings_sent, 2);

    h.feed(Pong { nonce: 2 });
    assert_eq!(h.events(), vec![Event::Pong { nonce: 2 }]);
    h.feed(Ping { nonce: 77 });
    assert_eq!(h.frames(), vec![Frame::Pong(Pong { nonce: 77 })]);
}

#[test]
fn a_kick_closes_the_session() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.send_to_peer("a");
    h.feed(Kick::new(KickReason::Replaced, "another login"));
    assert_eq!(
        h.events(),
        vec![Event::Kicked {
            reason: KickReason::Replaced,
            text: "another login".into(),
        }]
    );
    assert_eq!(h.c.state(), State::Closed);
    assert_eq!(h.frames(), vec![], "nothing is sent after a kick");
    assert_eq!(h.c.poll_timeout(), None);
    h.run_until(10_000);
    assert_eq!(h.frames(), vec![]);
    assert_eq!(h.c.in_flight(), 1);
    assert_eq!(
        h.c.request_unread(h.now),
        Err(imgate_codec::client::RequestError::NotConnected)
    );
}

#[test]
fn requests_and_their_answers() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.c.request_unread(h.now).expect("connected");
    let g =
        h.c.group_request(GroupOp::Add, GROUP, &[7, 8], h.now)
            .expect("connected");
    let r = h.c.request_receipts(GROUP, 3, h.now).expect("connected");
    assert_eq!((g, r), (1, 2));
    assert_eq!(
        h.frames(),
        vec![
            Frame::UnreadR(UnreadR {}),
            Frame::GroupR(
                GroupR {
                    req: 1,
                    op: GroupOp::Add as u8,
                    group: GROUP,
                    members: Bytes::new(),
                }
                .with_members(&[7, 8])
            ),
            Frame::ReceiptsR(ReceiptsR {
                req: 2,
                group: GROUP,
                seq: 3,
            }),
        ]
    );
    let unread = UnreadA::from_entries(&[UnreadEntry {
        group: 0,
        peer: PEER,
        unread: 4,
        last_seq: 12,
    }]);
    let group_a = GroupA {
        req: 1,
        op: GroupOp::Add as u8,
        group: GROUP,
        total: 3,
        members: Bytes::new(),
    }
    .with_members(&[7, 8]);
    let receipts = ReceiptsA {
        req: 2,
        group: GROUP,
        seq: 3,
        members: 3,
        delivered: 2,
        read: 1,
    };
    h.feed(unread.clone());
    h.feed(group_a.clone());
    h.feed(receipts.clone());
    assert_eq!(
        h.events(),
        vec![
            Event::Unread(unread),
            Event::GroupAnswer(group_a),
            Event::Receipts(receipts)
        ]
    );
    // A frame only clients send is counted and ignored.
    h.feed(AckR { group: 0, seq: 1 });
    assert_eq!(h.c.stats().unexpected_frames, 1);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn logout_queues_a_logout_and_closes() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.c.logout(h.now);
    assert_eq!(h.c.state(), State::Closed);
    assert_eq!(
        h.frames(),
        vec![Frame::Logout(imgate_codec::frame::Logout {})]
    );
    assert_eq!(h.c.poll_timeout(), None);
}

/// Server bytes split at every position give the same events as whole.
#[test]
fn input_split_at_every_byte() {
    let server: Vec<Frame> = vec![
        login_ok(0, 30_000).into(),
        push(0, 1).into(),
        push(0, 3).into(),
        push(0, 2).into(),
        page(GROUP, 0, 0, []).into(),
    ];
    let mut wire = BytesMut::new();
    for f in &server {
        f.encode(&mut wire);
    }
    let wire = wire.freeze();

    let run = |split: usize| {
        let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
        h.c.connect(h.now);
        h.frames();
        let mut buf = BytesMut::new();
        let mut n = 0;
        for part in [&wire[..split], &wire[split..]] {
            buf.extend_from_slice(part);
            n += h.c.handle_input(&mut buf, h.now).expect("valid input");
        }
        assert!(buf.is_empty());
        assert_eq!(n, server.len());
        h.events()
    };
    let whole = run(wire.len());
    assert_eq!(whole.len(), 4, "{whole:?}");
    assert_eq!(
        &whole[1..],
        &[
            message(0, 1, false),
            message(0, 2, false),
            message(0, 3, false)
        ]
    );
    for split in 0..wire.len() {
        assert_eq!(run(split), whole, "split at {split}");
    }
}

#[test]
fn poll_transmit_writes_every_queued_frame() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(3);
    h.send_to_peer("x");
    let mut buf = BytesMut::new();
    assert_eq!(h.c.poll_transmit(&mut buf), 2);
    let d = Decoder::default();
    assert_eq!(d.decode(&mut buf).expect("ok"), Some(sync_r(0, 0)));
    assert_eq!(d.decode(&mut buf).expect("ok"), Some(msg_r(1, "x", false)));
    assert!(buf.is_empty());
    assert_eq!(h.c.poll_transmit(&mut buf), 0);
}

#[test]
fn a_re_pushed_message_is_acknowledged_again() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    for seq in 1..=3 {
        h.feed(push(0, seq));
    }
    h.run_until(10);
    assert_eq!(h.frames(), vec![ack_r(0, 3)]);
    h.run_until(5000);
    h.feed(MsgN {
        retry: true,
        ..push(0, 2)
    });
    assert_eq!(h.events().len(), 3, "delivered once");
    h.run_until(5009);
    assert_eq!(h.frames(), vec![]);
    h.run_until(5010);
    assert_eq!(h.frames(), vec![ack_r(0, 3)]);
    // A duplicate in a page needs no ack: the next sync:R is one.
    h.c.pull(0, h.now);
    assert_eq!(h.frames(), vec![sync_r(0, 3)]);
    h.feed(page(0, 3, 3, []));
    h.run_until(6000);
    assert_eq!(h.frames(), vec![]);
}

#[test]
fn an_inbox_behind_the_device_lowers_its_mark() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.set_stream_mark(0, 10, h.now);
    h.c.connect(h.now);
    h.frames();
    // The server's storage was restored from an older state.
    h.feed(login_ok(6, 30_000));
    assert_eq!(h.frames(), vec![], "no pull: the head is not ahead");
    assert_eq!(
        h.c.stream(0),
        Some(StreamInfo {
            contiguous: 6,
            acked: 6,
            confirmed: 0,
            held: 0,
            pulling: false,
        })
    );
    h.events();
    h.feed(push(0, 7));
    assert_eq!(h.events(), vec![message(0, 7, false)]);
}

#[test]
fn an_error_that_closes_the_connection_stops_the_client() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.connect(h.now);
    h.feed(ErrorFrame::new(
        ErrorCode::BadToken,
        Some(Kind::Login),
        0,
        "bad token",
    ));
    assert_eq!(
        h.events(),
        vec![Event::ServerError {
            code: ErrorCode::BadToken,
            ref_kind: Some(Kind::Login),
            ref_id: 0,
            text: "bad token".into(),
        }]
    );
    assert_eq!(h.c.state(), State::Closed);
    assert_eq!(h.frames(), vec![], "the login is not sent after all");
    assert_eq!(h.c.poll_timeout(), None);
}

#[test]
fn one_unread_request_at_a_time() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    assert_eq!(h.c.request_unread(h.now), Ok(()));
    assert_eq!(
        h.c.request_unread(h.now),
        Err(imgate_codec::client::RequestError::Pending)
    );
    h.feed(UnreadA::from_entries(&[]));
    assert_eq!(h.c.request_unread(h.now), Ok(()));
    assert_eq!(
        h.frames(),
        vec![Frame::UnreadR(UnreadR {}), Frame::UnreadR(UnreadR {})]
    );
}

#[test]
fn logout_acknowledges_what_the_device_holds_first() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.login(0);
    h.feed(push(0, 1));
    h.feed(push(0, 2));
    h.feed(push(GROUP, 1));
    h.c.logout(h.now);
    assert_eq!(
        h.frames(),
        vec![
            ack_r(0, 2),
            ack_r(GROUP, 1),
            Frame::Logout(imgate_codec::frame::Logout {})
        ]
    );
}

#[test]
fn a_silent_server_is_declared_dead() {
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.connect(h.now);
    h.frames();
    h.feed(login_ok(0, 1000));
    h.events();
    h.run_until(2500);
    assert_eq!(
        h.frames(),
        vec![
            Frame::Ping(Ping { nonce: 1 }),
            Frame::Ping(Ping { nonce: 2 })
        ]
    );
    // Anything from the server counts as a sign of life.
    h.feed(Pong { nonce: 2 });
    h.events();
    h.run_until(5499);
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.c.state(), State::Connected);
    h.run_until(5500);
    assert_eq!(
        h.events(),
        vec![Event::ConnectionDead {
            silent_for: Duration::from_secs(3),
        }]
    );
    assert_eq!(h.c.state(), State::Closed);
    assert_eq!(h.c.poll_timeout(), None);

    // The same while waiting for login:ok, with the configured heartbeat.
    let mut h = Harness::new(Config::new(ME, DEVICE, "tok"));
    h.c.connect(h.now);
    assert_eq!(h.c.poll_timeout(), Some(h.t0 + Duration::from_secs(90)));
    h.run_until(90_000);
    assert_eq!(
        h.events(),
        vec![Event::ConnectionDead {
            silent_for: Duration::from_secs(90),
        }]
    );
}

#[test]
fn messages_past_the_dedup_window_are_not_resent() {
    let mut h = Harness::with(|c| {
        c.dedup_window = Duration::from_secs(60);
        c.max_retries = 1000;
    });
    h.login(0);
    let old = h.send_to_peer("old");
    h.run_until(30_000);
    let young = h.send_to_peer("young");
    h.frames();
    h.c.handle_disconnect();
    h.run_until(70_000);
    h.c.connect(h.now);
    h.frames();
    h.feed(login_ok(0, 30_000));
    let e = h.events();
    assert!(matches!(e.first(), Some(Event::LoggedIn { .. })), "{e:?}");
    assert_eq!(
        &e[1..],
        &[Event::SendFailed {
            msg_id: old,
            reason: FailReason::Expired,
        }]
    );
    assert_eq!(h.frames(), vec![msg_r(young, "young", true)]);
    assert_eq!(h.c.in_flight(), 1);
}
