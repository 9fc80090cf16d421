//! What docs/protocol.md promises, checked frame by frame over real sockets
//! against the delivery backend (the rules of delivery, read marks, groups
//! and receipts against the cluster backend too, on the shared JetStream
//! cluster): the points where a client written from the
//! document alone could meet a surprise (error reference fields, read and
//! receipt checks, member lists, timer deadlines, user 0, the token MAC, the
//! rate limits in login:ok, msg id reuse, the first frame's size, who may
//! receive a read receipt, the smaller rules of sections 3 to 5, and the
//! reference fields of an `internal` error).
//!
//! The clients are the raw [`common::Client`]: these tests look at the exact
//! frames, which the codec's client state machine would act on by itself.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Client, Got, Gw, config, start_with, token};
use imgate::{
    config::{DriverKind, Durability},
    delivery::Delivery,
    token::HmacVerifier,
};
use imgate_codec::{
    ErrorCode, Frame, KickReason, Kind,
    frame::{
        AckR, ErrorFrame, GroupA, GroupOp, GroupR, Login, LoginOk, MsgA, MsgR, Ping, ReadA, ReadR,
        ReceiptsR, SyncR,
    },
};

const QUIET: Duration = Duration::from_millis(200);

fn error(f: Frame) -> ErrorFrame {
    match f {
        Frame::Error(e) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// The code and reference fields of an error frame.
fn refs(f: Frame) -> (ErrorCode, Option<Kind>, u64) {
    let e = error(f);
    (e.code(), e.ref_kind(), e.ref_id)
}

/// The next frame is an error with this code, kind and id.
fn expect_error(c: &mut Client, code: ErrorCode, kind: Option<Kind>, id: u64) {
    assert_eq!(refs(c.frame()), (code, kind, id));
}

fn kick_reason(f: &Frame) -> KickReason {
    match f {
        Frame::Kick(k) => k.reason(),
        other => panic!("expected a kick, got {other:?}"),
    }
}

fn assert_quiet(c: &mut Client, what: &str) {
    match c.next(QUIET) {
        Got::Timeout => {}
        other => panic!("{what}: expected nothing, got {other:?}"),
    }
}

fn send_msg(c: &mut Client, msg_id: u64, to: u64, body: &'static [u8]) -> MsgA {
    c.send(MsgR {
        no_push: false,
        msg_id,
        group: 0,
        to,
        retry: false,
        body: Bytes::from_static(body),
    });
    match c.frame() {
        Frame::MsgA(a) => a,
        other => panic!("expected msg:A, got {other:?}"),
    }
}

/// Skips pushes (msg:N, ack:N, read:N) until a frame of another kind.
fn answer(c: &mut Client) -> Frame {
    loop {
        match c.frame() {
            Frame::MsgN(_) | Frame::AckN(_) | Frame::ReadN(_) => {}
            other => return other,
        }
    }
}

fn read(c: &mut Client, group: u64, peer: u64, seq: u64) -> Frame {
    c.send(ReadR { group, peer, seq });
    answer(c)
}

fn group_req(c: &mut Client, req: u64, op: GroupOp, group: u64, members: &[u64]) -> Frame {
    c.send(
        GroupR {
            req,
            op: op as u8,
            group,
            members: Bytes::new(),
        }
        .with_members(members),
    );
    answer(c)
}

fn group_a(f: Frame) -> GroupA {
    match f {
        Frame::GroupA(a) => a,
        other => panic!("expected group:A, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Error reference fields (section 3.3)

#[test]
fn a_malformed_body_is_answered_with_its_kind_and_id_0() {
    let gw = Gw::start(|_| {});
    let mut c = Client::login(gw.addr(), 1, 1);
    // A ping with a 9-byte body: one byte too many.
    let mut raw = vec![0, 0, 0, 0x0d, 1, 3, 0, 0];
    raw.extend_from_slice(&[0; 9]);
    c.send_raw(&raw);
    let got = c.closed();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        refs(got[0].clone()),
        (ErrorCode::MalformedFrame, Some(Kind::Ping), 0)
    );
    assert_eq!(kick_reason(&got[1]), KickReason::ProtocolError);
}

#[test]
fn not_logged_in_names_the_request_it_refuses() {
    let gw = Gw::start(|_| {});
    let mut c = Client::connect(gw.addr());
    c.send(Ping { nonce: 77 });
    let got = c.closed();
    assert_eq!(
        refs(got[0].clone()),
        (ErrorCode::NotLoggedIn, Some(Kind::Ping), 77)
    );

    let mut c = Client::connect(gw.addr());
    c.send(MsgR {
        no_push: false,
        msg_id: 4242,
        group: 0,
        to: 2,
        retry: false,
        body: Bytes::from_static(b"early"),
    });
    assert_eq!(
        refs(c.closed()[0].clone()),
        (ErrorCode::NotLoggedIn, Some(Kind::MsgR), 4242)
    );
}

// ---------------------------------------------------------------------------
// 2. Read marks and receipt requests (sections 3.5, 5.10, 5.11)

#[test]
fn a_read_mark_never_goes_backwards_and_out_of_range_marks_are_refused() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        for id in 1..=3 {
            send_msg(&mut a, id, 2, b"hi");
        }
        match read(&mut b, 0, 1, 2) {
            Frame::ReadA(r) => assert_eq!(
                r,
                ReadA {
                    group: 0,
                    peer: 1,
                    seq: 2
                }
            ),
            other => panic!("expected read:A, got {other:?}"),
        }
        // Below the mark: the answer reports the mark, not the lower seq.
        match read(&mut b, 0, 1, 1) {
            Frame::ReadA(r) => assert_eq!(r.seq, 2, "read:A reports the mark after the request"),
            other => panic!("expected read:A, got {other:?}"),
        }
        for (group, peer, seq, what) in [
            (0, 1, 0, "seq 0"),
            (0, 1, 4, "above the head"),
            (0, 0, 1, "no peer"),
            (0, 2, 1, "the reader itself"),
        ] {
            b.send(ReadR { group, peer, seq });
            assert_eq!(
                refs(answer(&mut b)),
                (ErrorCode::InvalidRequest, Some(Kind::ReadR), group),
                "{what}"
            );
        }
    }
}

#[test]
fn group_reads_need_peer_0_and_receipts_need_a_seq_in_the_log() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let g = group_a(group_req(&mut a, 1, GroupOp::Create, 0, &[2])).group;
        a.send(MsgR {
            no_push: false,
            msg_id: 10,
            group: g,
            to: 0,
            retry: false,
            body: Bytes::from_static(b"to all"),
        });
        assert!(matches!(answer(&mut a), Frame::MsgA(m) if m.seq == 1));

        a.send(ReadR {
            group: g,
            peer: 2,
            seq: 1,
        });
        assert_eq!(
            refs(answer(&mut a)),
            (ErrorCode::InvalidRequest, Some(Kind::ReadR), g)
        );
        assert!(matches!(read(&mut a, g, 0, 1), Frame::ReadA(r) if r.seq == 1));

        for seq in [0, 2] {
            a.send(ReceiptsR {
                req: 5,
                group: g,
                seq,
            });
            assert_eq!(
                refs(answer(&mut a)),
                (ErrorCode::InvalidRequest, Some(Kind::ReceiptsR), 5),
                "seq {seq}"
            );
        }
        a.send(ReceiptsR {
            req: 6,
            group: g,
            seq: 1,
        });
        match answer(&mut a) {
            Frame::ReceiptsA(r) => assert_eq!((r.req, r.members, r.read), (6, 2, 1)),
            other => panic!("expected receipts:A, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Member lists (section 5.10)

#[test]
fn member_lists_are_checked_and_the_creator_is_listed() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 5, 1);
        let created = group_a(group_req(&mut a, 1, GroupOp::Create, 0, &[7, 6]));
        let members: Vec<u64> = created.members().collect();
        assert_eq!(members, vec![5, 6, 7], "the creator is listed");
        assert_eq!(created.total, 3);
        let g = created.group;
        for (req, op, group, list, what) in [
            (2, GroupOp::Add, g, &[][..], "add nobody"),
            (3, GroupOp::Remove, g, &[][..], "remove nobody"),
            (4, GroupOp::Add, g, &[8, 0][..], "add user 0"),
            (5, GroupOp::Create, 0, &[0][..], "create with user 0"),
            (6, GroupOp::List, g, &[6, 7][..], "list after two ids"),
        ] {
            assert_eq!(
                refs(group_req(&mut a, req, op, group, list)),
                (ErrorCode::InvalidRequest, Some(Kind::GroupR), req),
                "{what}"
            );
        }
        // Nothing changed.
        let listed = group_a(group_req(&mut a, 7, GroupOp::List, g, &[]));
        assert_eq!(listed.members().collect::<Vec<_>>(), vec![5, 6, 7]);
    }
}

// ---------------------------------------------------------------------------
// 4. Deadlines never fire early (sections 5.1.1, 5.2)

/// Tick of the gateways below: deadlines are whole ticks, so a deadline
/// rounded down would fire up to this much early.
const TICK_MS: u64 = 100;

#[test]
fn the_heartbeat_deadline_never_fires_early() {
    let gw = Gw::start(|c| {
        c.tick_ms = TICK_MS;
        c.heartbeat_ms = 100;
        c.heartbeat_timeout_factor = 3;
    });
    let timeout = Duration::from_millis(300);
    // Connections whose last frames fall at different points of a tick.
    let mut clients = Vec::new();
    for i in 0..8u64 {
        let mut c = Client::login(gw.addr(), 100 + i, 1);
        // Taken before the ping leaves: the server sees it later.
        let last = Instant::now();
        c.send(Ping { nonce: i });
        assert!(matches!(c.frame(), Frame::Pong(_)));
        clients.push((c, last));
        std::thread::sleep(Duration::from_millis(13));
    }
    for (mut c, last) in clients {
        let got = c.closed();
        let after = last.elapsed();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(kick_reason(&got[0]), KickReason::HeartbeatTimeout);
        assert!(after >= timeout, "kicked {after:?} after the last frame");
        assert!(
            after < timeout + Duration::from_millis(2 * TICK_MS + 1000),
            "kicked {after:?} after the last frame"
        );
    }
}

#[test]
fn the_login_deadline_never_fires_early() {
    let gw = Gw::start(|c| {
        c.tick_ms = TICK_MS;
        c.heartbeat_ms = 100;
        c.login_timeout_ms = 300;
    });
    let deadline = Duration::from_millis(300);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let at = Instant::now();
        clients.push((Client::connect(gw.addr()), at));
        std::thread::sleep(Duration::from_millis(13));
    }
    for (mut c, at) in clients {
        let got = c.closed();
        let after = at.elapsed();
        assert_eq!(kick_reason(&got[0]), KickReason::LoginTimeout);
        assert!(after >= deadline, "kicked {after:?} after connecting");
    }
}

// ---------------------------------------------------------------------------
// 5, 6. User 0 and the token's spelling (sections 1.2, 5.1.2)

#[test]
fn user_0_cannot_log_in() {
    let gw = Gw::start(|_| {});
    let mut c = Client::connect(gw.addr());
    let t = HmacVerifier::new(common::SECRET.as_bytes()).mint(0, 1, u64::MAX / 2);
    c.send(Login {
        user: 0,
        device: 1,
        resume: 0,
        token: Bytes::from(t),
    });
    let got = c.closed();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        refs(got[0].clone()),
        (ErrorCode::BadToken, Some(Kind::Login), 0)
    );
}

#[test]
fn a_token_mac_in_uppercase_is_refused() {
    let gw = Gw::start(|_| {});
    let t = String::from_utf8(token(3, 1).to_vec()).expect("ascii");
    let dot = t.rfind('.').expect("a mac");
    let upper = format!("{}{}", &t[..=dot], t[dot + 1..].to_ascii_uppercase());
    let mut c = Client::connect(gw.addr());
    c.send(Login {
        user: 3,
        device: 1,
        resume: 0,
        token: Bytes::from(upper),
    });
    assert_eq!(refs(c.closed()[0].clone()).0, ErrorCode::BadToken);
}

// ---------------------------------------------------------------------------
// 7. The frame-rate limit is announced (sections 3.3, 6)

fn login_ok(addr: SocketAddr, user: u64) -> (Client, LoginOk) {
    let mut c = Client::connect(addr);
    c.send(Login {
        user,
        device: 1,
        resume: 0,
        token: token(user, 1),
    });
    match c.frame() {
        Frame::LoginOk(ok) => (c, ok),
        other => panic!("expected login:ok, got {other:?}"),
    }
}

#[test]
fn login_ok_announces_the_rate_limit_and_a_client_within_it_is_never_refused() {
    let gw = Gw::start(|c| {
        c.max_frames_per_sec = 200;
        c.frame_burst = 20;
        c.rate_limit_strikes = 50;
    });
    let (mut c, ok) = login_ok(gw.addr(), 9);
    assert_eq!(
        (ok.frame_rate, ok.frame_burst, ok.rate_strikes),
        (200, 20, 50)
    );
    // The login frame took one token. Spend the rest of the burst at once,
    // then one frame per 1/rate: all answered.
    let per = Duration::from_micros(1_000_000 / u64::from(ok.frame_rate));
    for nonce in 0..(u64::from(ok.frame_burst) - 1 + 40) {
        if nonce >= u64::from(ok.frame_burst) - 1 {
            std::thread::sleep(per + Duration::from_millis(1));
        }
        c.send(Ping { nonce });
        match c.frame() {
            Frame::Pong(p) => assert_eq!(p.nonce, nonce),
            other => panic!("frame {nonce}: expected pong, got {other:?}"),
        }
    }
    // Past the burst at once: refused, and named.
    for nonce in 1000..1000 + u64::from(ok.frame_burst) + 2 {
        c.send(Ping { nonce });
    }
    let mut refused = 0;
    loop {
        match c.next(QUIET) {
            Got::Frame(Frame::Pong(_)) => {}
            Got::Frame(Frame::Error(e)) => {
                assert_eq!(
                    (e.code(), e.ref_kind()),
                    (ErrorCode::RateLimited, Some(Kind::Ping))
                );
                refused += 1;
            }
            Got::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 1, "frames over the burst are refused");
}

// ---------------------------------------------------------------------------
// 9. A msg id reused for another message (section 5.6)

#[test]
fn a_msg_id_reused_for_another_message_is_refused_and_stores_nothing() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let first = send_msg(&mut a, 55, 2, b"first");
        // Same id, same message: a retransmission, the same answer.
        assert_eq!(send_msg(&mut a, 55, 2, b"first"), first);
        for (to, body) in [(3, &b"first"[..]), (2, &b"other"[..])] {
            a.send(MsgR {
                no_push: false,
                msg_id: 55,
                group: 0,
                to,
                retry: true,
                body: Bytes::copy_from_slice(body),
            });
            expect_error(&mut a, ErrorCode::MsgIdReused, Some(Kind::MsgR), 55);
        }
        // Nothing was stored for user 3, and user 2 holds one copy.
        for (user, want) in [(3, 0), (2, 1)] {
            let (mut c, ok) = login_ok(gw.addr(), user);
            assert_eq!(ok.inbox_head, want, "user {user}");
            c.send(SyncR {
                group: 0,
                after: 0,
                limit: 10,
            });
            match c.frame() {
                Frame::SyncPage(p) => assert_eq!(p.count, want as u16),
                other => panic!("expected a page, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 10. The first frame is refused at once when longer than a login

#[test]
fn a_first_frame_longer_than_any_login_is_refused_at_once() {
    let gw = Gw::start(|c| c.login_timeout_ms = 10_000);
    let mut c = Client::connect(gw.addr());
    let started = Instant::now();
    // A header claiming 64 KiB; nothing follows.
    c.send_raw(&[0, 0, 0xff, 0xfc, 1, 1, 0, 0]);
    let got = c.closed();
    assert!(started.elapsed() < Duration::from_secs(3), "not waited on");
    assert_eq!(refs(got[0].clone()), (ErrorCode::FrameTooLarge, None, 0));
    assert_eq!(kick_reason(&got[1]), KickReason::ProtocolError);

    // The largest login frame still gets in.
    let mut c = Client::connect(gw.addr());
    let mut t = token(4, 1).to_vec();
    t.resize(imgate_codec::frame::MAX_TOKEN, b' ');
    c.send(Login {
        user: 4,
        device: 1,
        resume: 0,
        token: Bytes::from(t),
    });
    // The padded token is not a valid token, but it was read whole.
    assert_eq!(refs(c.closed()[0].clone()).0, ErrorCode::BadToken);
}

// ---------------------------------------------------------------------------
// 11. Who receives a read receipt (section 5.13)

#[test]
fn read_receipts_reach_only_peers_that_wrote_to_the_reader() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        let mut stranger = Client::login(gw.addr(), 3, 1);
        // 3 never wrote to 2: 2 cannot send it read receipts.
        send_msg(&mut a, 1, 2, b"hello");
        assert_eq!(
            refs(read(&mut b, 0, 3, 1)),
            (ErrorCode::Forbidden, Some(Kind::ReadR), 0)
        );
        assert_quiet(&mut stranger, "a user that never wrote gets no read:N");
        // Nor at its next login.
        drop(stranger);
        let mut stranger = Client::login(gw.addr(), 3, 1);
        assert_quiet(&mut stranger, "no read:N after login either");
        // 1 wrote to 2: the receipt reaches it.
        assert!(matches!(read(&mut b, 0, 1, 1), Frame::ReadA(r) if r.seq == 1));
        loop {
            match a.frame() {
                Frame::ReadN(n) => {
                    assert_eq!((n.reader, n.group, n.peer, n.seq), (2, 0, 1, 1));
                    break;
                }
                Frame::AckN(_) => {}
                other => panic!("expected read:N, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 12. The smaller rules

#[test]
fn ack_0_reports_the_cursor_and_a_sync_after_the_head_moves_it_to_the_head() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        for id in 1..=3 {
            send_msg(&mut a, id, 2, b"m");
        }
        b.send(AckR { group: 0, seq: 0 });
        assert!(matches!(answer(&mut b), Frame::AckA(x) if x.seq == 0));
        b.send(SyncR {
            group: 0,
            after: 99,
            limit: 10,
        });
        match answer(&mut b) {
            Frame::SyncPage(p) => assert_eq!((p.after, p.head, p.count), (99, 3, 0)),
            other => panic!("expected a page, got {other:?}"),
        }
        b.send(AckR { group: 0, seq: 0 });
        assert!(
            matches!(answer(&mut b), Frame::AckA(x) if x.seq == 3),
            "the cursor is at the head"
        );
    }
}

#[test]
fn the_body_is_checked_before_the_direction() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut c = Client::login(gw.addr(), 1, 1);
        // A msg:A (server to client) with its right size: invalid_request, and
        // the connection stays.
        c.send(MsgA {
            msg_id: 1,
            group: 0,
            seq: 1,
            own_seq: 1,
            server_time: 1,
        });
        expect_error(&mut c, ErrorCode::InvalidRequest, Some(Kind::MsgA), 0);
        c.send(Ping { nonce: 1 });
        assert!(matches!(c.frame(), Frame::Pong(_)));
        // The same kind with a wrong size: malformed, and closed.
        c.send_raw(&[0, 0, 0, 7, 1, 0x11, 0, 0, 1, 2, 3]);
        let got = c.closed();
        assert_eq!(
            refs(got[0].clone()),
            (ErrorCode::MalformedFrame, Some(Kind::MsgA), 0)
        );
    }
}

#[test]
fn acks_of_own_copies_send_no_delivered_receipt_and_msg_a_comes_first() {
    for gw in Gw::on_every_backend(|_| {}) {
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        a.send(MsgR {
            no_push: false,
            msg_id: 9,
            group: 0,
            to: 2,
            retry: false,
            body: Bytes::from_static(b"x"),
        });
        // b acknowledges as soon as the push arrives; a still sees msg:A first.
        assert!(matches!(b.frame(), Frame::MsgN(n) if n.seq == 1));
        b.send(AckR { group: 0, seq: 1 });
        let own_seq = match a.frame() {
            Frame::MsgA(m) => m.own_seq,
            other => panic!("expected msg:A before anything else, got {other:?}"),
        };
        assert!(matches!(a.frame(), Frame::AckN(n) if (n.peer, n.seq) == (2, 1)));
        // a acknowledges its own copy: recorded, and no receipt to anyone.
        a.send(AckR {
            group: 0,
            seq: own_seq,
        });
        assert!(matches!(a.frame(), Frame::AckA(x) if x.seq == own_seq));
        assert_quiet(&mut a, "no ack:N for an own copy");
        assert!(matches!(b.frame(), Frame::AckA(_)));
        assert_quiet(&mut b, "no ack:N to the receiver");
    }
}

#[test]
fn the_server_never_pings() {
    let gw = Gw::start(|c| {
        c.tick_ms = 20;
        c.heartbeat_ms = 200;
    });
    let mut c = Client::login(gw.addr(), 1, 1);
    // Keep the connection alive, pinging at twice the heartbeat rate, for
    // two heartbeat timeouts: only pongs come back.
    for nonce in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        c.send(Ping { nonce });
        match c.frame() {
            Frame::Pong(p) => assert_eq!(p.nonce, nonce),
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// An `internal` error names the request it answers (section 3.3)

/// The in-memory store, with range reads that fail while `fail` is set.
#[derive(Default)]
struct FlakyScans {
    inner: imgate::store::MemoryStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl imgate::store::Store for FlakyScans {
    fn write(&self, batch: &imgate::store::WriteBatch) -> Result<(), imgate::store::StoreError> {
        self.inner.write(batch)
    }

    fn get(
        &self,
        table: imgate::store::Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, imgate::store::StoreError> {
        self.inner.get(table, key)
    }

    fn scan(
        &self,
        table: imgate::store::Table,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), imgate::store::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(imgate::store::StoreError::Engine("injected".into()));
        }
        self.inner.scan(table, from, to, f)
    }
}

#[test]
fn a_failed_read_while_answering_names_the_request() {
    let store = FlakyScans::default();
    let fail = store.fail.clone();
    let mut cfg = config(DriverKind::Auto);
    cfg.durability = Durability::Memory;
    let backend = Delivery::new(Box::new(store), &cfg).expect("backend");
    let gw = Gw(Some(start_with(cfg, Box::new(backend))));
    let mut a = Client::login(gw.addr(), 1, 1);
    let g = group_a(group_req(&mut a, 1, GroupOp::Create, 0, &[2])).group;
    a.send(MsgR {
        no_push: false,
        msg_id: 1,
        group: g,
        to: 0,
        retry: false,
        body: Bytes::from_static(b"m"),
    });
    assert!(matches!(answer(&mut a), Frame::MsgA(m) if m.seq == 1));
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    // The page is read after the request was applied: that read fails.
    a.send(SyncR {
        group: g,
        after: 0,
        limit: 10,
    });
    expect_error(&mut a, ErrorCode::Internal, Some(Kind::SyncR), g);
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    a.send(SyncR {
        group: g,
        after: 0,
        limit: 10,
    });
    assert!(matches!(a.frame(), Frame::SyncPage(p) if p.count == 1));
}
