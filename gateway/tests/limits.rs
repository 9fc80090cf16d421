//! Four configurable limits, each shrunk to test size and checked over real
//! sockets: `dedup_window_ms` (a retransmitted msg:R gets the first answer
//! within the window and is stored anew after it), `shutdown_timeout_ms`
//! (`Running::shutdown` gives up on a backend that cannot finish instead of
//! hanging), `unread_scan_limit` (the unread summary reads at most that
//! many inbox records, on the embedded and the cluster backend) and `bind_wait_ms` (start waits for another listener
//! on the port to close, then shares the port once the wait is over).
//!
//! Each had a config key, a `validate` check and a line in the operations
//! table, but no test that the gateway obeys it. The de-duplication tests
//! place their sends on a manual clock that the backend reads, because the
//! server keys remembered answers by `now / dedup_window_ms` and looks in
//! the current and the previous epoch: one test crosses an epoch boundary
//! inside the window, the other passes the window while the old entry is
//! still in the epochs looked at, so only the age check tells the two
//! apart.
//!
//! The clients are the raw [`common::Client`] rather than the codec's client
//! state machine: these tests look at the exact frames (which msg:A, which
//! msg:N, which summary entries), and the state machine would retransmit and
//! acknowledge on its own.

mod common;

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Client, Got, Gw, config, start_with};
use imgate::clock::ManualClock;
use imgate::{
    backend::{Backend, Inbound, Router},
    config::{Config, DriverKind},
    relay::Relay,
};
use imgate_codec::{
    Frame, KickReason,
    frame::{AckR, MsgA, MsgN, MsgR, SyncR, UnreadEntry, UnreadR},
};

/// How long nothing must arrive for "nothing more was pushed".
const QUIET: Duration = Duration::from_millis(150);

/// The next frame, which must be a msg:A.
fn answer(c: &mut Client) -> MsgA {
    match c.frame() {
        Frame::MsgA(a) => a,
        other => panic!("expected msg:A, got {other:?}"),
    }
}

/// The next frame, which must be a msg:N.
fn push(c: &mut Client) -> MsgN {
    match c.frame() {
        Frame::MsgN(n) => n,
        other => panic!("expected msg:N, got {other:?}"),
    }
}

/// Acknowledges the inbox up to `seq` and checks the recorded cursor.
fn ack(c: &mut Client, seq: u64) {
    c.send(AckR { group: 0, seq });
    match c.frame() {
        Frame::AckA(a) => assert_eq!((a.group, a.seq), (0, seq)),
        other => panic!("expected ack:A, got {other:?}"),
    }
}

/// The (seq, msg id) of every stored inbox entry of `c`'s user, and the
/// inbox head. (`after` 0 acknowledges nothing.)
fn inbox(c: &mut Client) -> (Vec<(u64, u64)>, u64) {
    c.send(SyncR {
        group: 0,
        after: 0,
        limit: 100,
    });
    match c.frame() {
        Frame::SyncPage(p) => (p.entries().map(|e| (e.seq, e.msg_id)).collect(), p.head),
        other => panic!("expected a sync page, got {other:?}"),
    }
}

fn assert_quiet(c: &mut Client, what: &str) {
    match c.next(QUIET) {
        Got::Timeout => {}
        other => panic!("{what}: expected nothing, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// dedup_window_ms

/// The window of these tests. The backend reads a manual clock, so the
/// window is crossed by moving it, not by sleeping.
const WINDOW_MS: u64 = 400;

/// An epoch boundary (a multiple of the window) far from zero.
const EPOCH_START: u64 = 4_000_000 * WINDOW_MS;

/// A gateway with the window and a manual clock reading `at`. The
/// receivers in these tests never acknowledge (so that what is stored stays
/// readable whatever purges acknowledged messages); re-pushes are put off
/// beyond the test so that every msg:N seen is a stored copy.
fn dedup_gateway(at: u64) -> (Gw, ManualClock) {
    let clock = ManualClock::at(at);
    let gw = Gw::start_clocked(
        |c| {
            c.dedup_window_ms = WINDOW_MS;
            c.push_timeout_ms = 30_000;
        },
        clock.clone(),
    );
    (gw, clock)
}

fn msg_r(retry: bool) -> MsgR {
    MsgR {
        no_push: false,
        msg_id: 77,
        group: 0,
        to: 2,
        retry,
        body: Bytes::from_static(b"once"),
    }
}

#[test]
fn a_retransmission_within_the_window_gets_the_first_answer_even_in_the_next_epoch() {
    // Late in an epoch, so that the epoch ends well inside the window.
    let (gw, clock) = dedup_gateway(EPOCH_START + WINDOW_MS * 3 / 4);
    let mut a = Client::login(gw.addr(), 1, 1);
    let mut b = Client::login(gw.addr(), 2, 1);
    a.send(msg_r(false));
    let first = answer(&mut a);
    assert_eq!(
        (
            first.msg_id,
            first.group,
            first.seq,
            first.own_seq,
            first.server_time
        ),
        (77, 0, 1, 1, EPOCH_START + WINDOW_MS * 3 / 4),
        "{first:?}"
    );
    let n = push(&mut b);
    assert_eq!((n.seq, n.from, n.msg_id, n.retry), (1, 1, 77, false));
    assert_eq!(&n.body[..], b"once");

    // At once: the answer is still in the batch's memory or the store.
    a.send(msg_r(true));
    assert_eq!(answer(&mut a), first, "an immediate retransmission");

    // Just after the epoch of the first answer ended: found in the
    // previous epoch, and younger than the window.
    clock.advance(WINDOW_MS / 4 + 20);
    a.send(msg_r(true));
    assert_eq!(answer(&mut a), first, "a retransmission in the next epoch");

    // One copy: nothing more pushed, one entry stored.
    assert_quiet(&mut b, "the receiver after two retransmissions");
    assert_eq!(inbox(&mut b), (vec![(1, 77)], 1));
}

#[test]
fn after_the_window_the_same_msg_id_is_a_new_message() {
    // Early in an epoch, so that one window later the old entry is in the
    // previous epoch, still looked up and not yet expired: only its age
    // makes it stale.
    let (gw, clock) = dedup_gateway(EPOCH_START + WINDOW_MS / 10);
    let mut a = Client::login(gw.addr(), 1, 1);
    let mut b = Client::login(gw.addr(), 2, 1);
    a.send(msg_r(false));
    let first = answer(&mut a);
    assert_eq!((first.msg_id, first.seq, first.own_seq), (77, 1, 1));
    assert_eq!(push(&mut b).seq, 1);
    a.send(msg_r(true));
    assert_eq!(answer(&mut a), first, "within the window");

    clock.advance(WINDOW_MS + 40);
    a.send(msg_r(true));
    let second = answer(&mut a);
    assert_eq!(
        (second.msg_id, second.group, second.seq, second.own_seq),
        (77, 0, 2, 2),
        "a new answer with new sequence ids: {second:?}"
    );
    assert_eq!(second.server_time, first.server_time + WINDOW_MS + 40);
    assert_eq!(
        second.server_time / WINDOW_MS,
        first.server_time / WINDOW_MS + 1,
        "the epoch after the first answer's: only the age check tells"
    );
    // The receiver gets a second copy, as a new message, not a re-push.
    let n = push(&mut b);
    assert_eq!(
        (n.seq, n.from, n.to, n.msg_id, n.server_time, n.retry),
        (2, 1, 2, 77, second.server_time, false)
    );
    assert_eq!(&n.body[..], b"once");

    // The new answer is remembered in turn.
    a.send(msg_r(true));
    assert_eq!(answer(&mut a), second, "a retransmission of the new copy");
    assert_quiet(&mut b, "the receiver after the last retransmission");
    assert_eq!(inbox(&mut b), (vec![(1, 77), (2, 77)], 2));
}

// ---------------------------------------------------------------------------
// shutdown_timeout_ms

/// The [`Relay`], except that its `shutdown` hook, which `backend::run`
/// calls once after every core has stopped (where a backend finishes its
/// durable writes), waits until the test releases it.
struct SlowToFinish {
    relay: Relay,
    /// Told when the hook starts.
    entered: mpsc::Sender<()>,
    /// The hook returns when this gets a message or its sender is dropped.
    release: mpsc::Receiver<()>,
    /// Dropped with the backend: its receiver sees the backend thread end.
    _alive: mpsc::Sender<()>,
}

/// The test's ends of a [`SlowToFinish`].
struct Handles {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    alive: mpsc::Receiver<()>,
}

fn slow_to_finish() -> (SlowToFinish, Handles) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (alive_tx, alive) = mpsc::channel();
    let b = SlowToFinish {
        relay: Relay::default(),
        entered: entered_tx,
        release: release_rx,
        _alive: alive_tx,
    };
    (
        b,
        Handles {
            entered,
            release,
            alive,
        },
    )
}

impl Backend for SlowToFinish {
    fn handle(&mut self, batch: &mut Vec<Inbound>, out: &mut Router) {
        self.relay.handle(batch, out);
    }

    fn tick(&mut self, now: Instant, out: &mut Router) {
        self.relay.tick(now, out);
    }

    fn shutdown(&mut self, out: &mut Router) {
        let _ = self.entered.send(());
        let _ = self.release.recv();
        self.relay.shutdown(out);
    }
}

/// Asserts the connection was kicked with `server_shutdown`.
fn assert_kicked(c: &mut Client) {
    let frames = c.closed();
    assert!(
        matches!(frames.last(), Some(Frame::Kick(k)) if k.reason() == KickReason::ServerShutdown),
        "{frames:?}"
    );
}

#[test]
fn shutdown_gives_up_at_the_deadline_on_a_backend_that_cannot_finish() {
    let deadline = Duration::from_millis(300);
    let (backend, h) = slow_to_finish();
    let mut cfg = config(DriverKind::Auto);
    cfg.shutdown_timeout_ms = 300;
    let running = start_with(cfg, Box::new(backend));
    let mut c = Client::login(running.addr(), 1, 1);

    // Shut down on another thread, so that a shutdown that waits for the
    // backend without a deadline fails this test instead of hanging it.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let finished = running.shutdown();
        let _ = done_tx.send((finished, t0.elapsed()));
    });
    let Ok((finished, took)) = done.recv_timeout(Duration::from_secs(10)) else {
        drop(h.release);
        panic!("shutdown did not return within 10 s with a deadline of {deadline:?}");
    };
    assert!(!finished, "shutdown reported success after {took:?}");
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(1500),
        "shutdown returned after {took:?}, deadline {deadline:?}"
    );
    // The cores did their part (kicked the client, exited, so the backend
    // reached its last hook): the deadline was spent waiting on the backend.
    assert_kicked(&mut c);
    h.entered
        .try_recv()
        .expect("the backend's shutdown hook ran before the deadline");

    // Released late, the backend thread still ends (nothing is leaked).
    drop(h.release);
    assert_eq!(
        h.alive.recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the backend thread did not end after its release"
    );
}

#[test]
fn shutdown_waits_for_a_backend_that_finishes_before_the_deadline() {
    let hold = Duration::from_millis(200);
    let (backend, h) = slow_to_finish();
    let mut cfg = config(DriverKind::Auto);
    cfg.shutdown_timeout_ms = 3000;
    let running = start_with(cfg, Box::new(backend));
    let mut c = Client::login(running.addr(), 1, 1);
    let Handles {
        entered, release, ..
    } = h;
    let releaser = std::thread::spawn(move || {
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the backend's shutdown hook runs");
        std::thread::sleep(hold);
        release.send(()).expect("the backend waits");
    });

    let t0 = Instant::now();
    let finished = running.shutdown();
    let took = t0.elapsed();
    releaser.join().expect("releaser");
    assert!(finished, "shutdown gave up after {took:?}");
    assert!(
        took >= hold && took < Duration::from_millis(3000),
        "shutdown returned after {took:?}; the backend held it {hold:?}"
    );
    assert_kicked(&mut c);
    assert_eq!(
        h.alive.try_recv(),
        Err(mpsc::TryRecvError::Disconnected),
        "shutdown returned before the backend thread ended"
    );
}

#[test]
fn shutdown_with_the_delivery_backend_finishes_well_within_the_deadline() {
    let deadline = Duration::from_millis(300);
    let mut gw = Gw::start(|c| c.shutdown_timeout_ms = 300);
    let mut a = Client::login(gw.addr(), 1, 1);
    let mut b = Client::login(gw.addr(), 2, 1);
    a.send(msg_r(false));
    assert_eq!(answer(&mut a).seq, 1);
    assert_eq!(push(&mut b).seq, 1);

    let running = gw.0.take().expect("running");
    let t0 = Instant::now();
    let finished = running.shutdown();
    let took = t0.elapsed();
    assert!(finished, "shutdown gave up after {took:?}");
    // It takes about a millisecond; half the deadline leaves room for a
    // loaded machine.
    assert!(
        took < deadline / 2,
        "{took:?} for a deadline of {deadline:?}"
    );
    assert_kicked(&mut a);
    assert_kicked(&mut b);
}

// ---------------------------------------------------------------------------
// unread_scan_limit

/// Sends `n` one-to-one messages from `c` to user `to`, msg ids from
/// `first_id` on, and waits for every msg:A, so that they take consecutive
/// seqs in `to`'s inbox.
fn send_many(c: &mut Client, to: u64, first_id: u64, n: u64) {
    for id in first_id..first_id + n {
        c.send(MsgR {
            no_push: false,
            msg_id: id,
            group: 0,
            to,
            retry: false,
            body: Bytes::from_static(b"hi"),
        });
    }
    for id in first_id..first_id + n {
        let a = answer(c);
        assert_eq!(a.msg_id, id);
    }
}

/// The summary's entries, and whether it says it is partial.
fn unread(c: &mut Client) -> (Vec<UnreadEntry>, bool) {
    c.send(UnreadR {});
    match c.frame() {
        Frame::UnreadA(u) => (u.iter().collect(), u.partial),
        other => panic!("expected unread:A, got {other:?}"),
    }
}

fn entry(peer: u64, unread: u32, last_seq: u64) -> UnreadEntry {
    UnreadEntry {
        group: 0,
        peer,
        unread,
        last_seq,
    }
}

/// Gateways on every backend with an unread scan limit of `limit` (None:
/// the default).
fn scan_limited(limit: Option<usize>) -> Vec<Gw> {
    Gw::on_every_backend(|c| {
        if let Some(l) = limit {
            c.unread_scan_limit = l;
        }
    })
}

/// User 2, offline, gets 50 messages from user 1 (inbox seqs 1..=50), then
/// one from user 3 (seq 51); then its device 1 logs in and asks for the
/// summary. Returns the gateway and that device.
fn offline_inbox(gw: Gw) -> (Gw, Client) {
    let mut one = Client::login(gw.addr(), 1, 1);
    send_many(&mut one, 2, 1, 50);
    let mut three = Client::login(gw.addr(), 3, 1);
    send_many(&mut three, 2, 1, 1);
    let two = Client::login(gw.addr(), 2, 1);
    (gw, two)
}

#[test]
fn the_unread_summary_counts_everything_under_the_default_scan_limit() {
    assert_eq!(Config::default().unread_scan_limit, 100_000);
    for gw in scan_limited(None) {
        let (_gw, mut two) = offline_inbox(gw);
        // Newest conversation first.
        assert_eq!(
            unread(&mut two),
            (vec![entry(3, 1, 51), entry(1, 50, 50)], false)
        );
    }
}

#[test]
fn the_unread_summary_reads_at_most_unread_scan_limit_records() {
    // The scan starts at the device's cursor and stops after `limit`
    // records. unread:A says it stopped early (PARTIAL): counts and
    // last_seq are those of the records read, and a conversation whose
    // messages all lie beyond them is missing (user 3's here).
    for gw in scan_limited(Some(10)) {
        let (gw, mut two) = offline_inbox(gw);
        assert_eq!(unread(&mut two), (vec![entry(1, 10, 10)], true));
        // A second device logs in before the first acknowledges anything: its
        // cursor (0) keeps records 1..=45 needed, should the store delete what
        // every device acknowledged.
        let mut tablet = Client::login(gw.addr(), 2, 2);
        // The scan starts at the cursor: after acking up to 45, records
        // 46..=51 are read, all of them.
        ack(&mut two, 45);
        assert_eq!(
            unread(&mut two),
            (vec![entry(3, 1, 51), entry(1, 5, 50)], false)
        );
        // The other device's cursor is still at 0.
        assert_eq!(unread(&mut tablet), (vec![entry(1, 10, 10)], true));
    }
}

#[test]
fn the_unread_scan_limit_is_exact_at_the_boundary() {
    // 51 records: a limit of 50 leaves out exactly the last one (partial),
    // 51 reads all (complete, though the scan stopped at the limit).
    for gw in scan_limited(Some(50)) {
        let (_gw, mut two) = offline_inbox(gw);
        assert_eq!(unread(&mut two), (vec![entry(1, 50, 50)], true));
    }
    for gw in scan_limited(Some(51)) {
        let (_gw, mut two) = offline_inbox(gw);
        assert_eq!(
            unread(&mut two),
            (vec![entry(3, 1, 51), entry(1, 50, 50)], false)
        );
    }
}

#[test]
fn an_unread_summary_cut_to_fit_one_frame_says_it_is_partial() {
    // max_frame 1024: (1024 - 8) / 28 = 36 entries fit.
    let gw = Gw::start(|c| c.max_frame = 1024);
    let senders = 37;
    for from in 0..senders {
        let mut c = Client::login(gw.addr(), 100 + from, 1);
        send_many(&mut c, 2, 1, 1);
    }
    let mut two = Client::login(gw.addr(), 2, 1);
    let (entries, partial) = unread(&mut two);
    assert!(partial);
    // The newest 36 conversations: every sender but the first.
    assert_eq!(entries.len(), 36);
    assert_eq!(entries[0], entry(100 + senders - 1, 1, senders));
    assert_eq!(entries[35], entry(101, 1, 2));
    // One conversation fewer fits whole.
    let gw = Gw::start(|c| c.max_frame = 1024);
    for from in 0..36 {
        let mut c = Client::login(gw.addr(), 100 + from, 1);
        send_many(&mut c, 2, 1, 1);
    }
    let mut two = Client::login(gw.addr(), 2, 1);
    let (entries, partial) = unread(&mut two);
    assert_eq!((entries.len(), partial), (36, false));
}

/// A listener on its own port with SO_REUSEPORT, as a killed gateway's
/// listener is until the kernel has torn down the dead process's io_uring.
fn other_listener() -> (socket2::Socket, std::net::SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    s.set_reuse_port(true).expect("reuseport");
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    s.listen(16).expect("listen");
    let addr = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("address");
    (s, addr)
}

#[test]
fn start_waits_for_another_listener_on_the_port_to_close() {
    let (other, addr) = other_listener();
    let (tx, rx) = mpsc::channel();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = tx.send(Instant::now());
        drop(other);
    });
    let t0 = Instant::now();
    let gw = Gw::start(|c| {
        c.listen = addr;
        c.bind_wait_ms = 10_000;
    });
    let started = Instant::now();
    let closing = rx.recv().expect("closed");
    closer.join().expect("closer");
    assert!(
        started >= closing,
        "started {:?} before the other listener closed",
        closing - started
    );
    assert!(
        started - t0 < Duration::from_secs(5),
        "took {:?}",
        started - t0
    );
    assert_eq!(gw.addr(), addr);
    // Every connection reaches the gateway's own listeners.
    for user in 1..=20 {
        Client::login(gw.addr(), user, 1);
    }
}

#[test]
fn start_shares_the_port_once_bind_wait_ms_is_over() {
    let (_other, addr) = other_listener();
    let t0 = Instant::now();
    let gw = Gw::start(|c| {
        c.listen = addr;
        c.bind_wait_ms = 200;
    });
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(gw.addr(), addr);
}
