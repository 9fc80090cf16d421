//! Reliable delivery end to end: real sockets, the codec's client state
//! machine, on every backend that keeps the protocol's promises: the
//! default one on a real store (in memory and with fsync), and the cluster
//! backend on a real 3-node JetStream cluster.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, Got, config, peer::Peer, start_with};
use imgate::{
    clock::ManualClock,
    config::{Config, DriverKind, Durability},
    delivery::Delivery,
    server::Running,
};
use imgate_codec::{
    ErrorCode, Frame, KickReason,
    client::Event,
    frame::{GroupOp, MsgR, SyncR},
};

struct Gw {
    running: Option<Running>,
    _dir: Option<TempDir>,
}

impl Gw {
    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").addr()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "imgate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The backend a gateway of a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// The default backend, in memory.
    Memory,
    /// The default backend, on disk with fsync.
    Fsync,
    /// The cluster backend, on the shared 3-node JetStream cluster, under
    /// a stream prefix of its own.
    Cluster,
}

fn gateway(on: On, f: impl FnOnce(&mut Config)) -> Gw {
    let mut cfg = config(DriverKind::Auto);
    if on == On::Cluster {
        let gw = common::Gw::cluster(f).expect("nats-server");
        return Gw {
            running: gw_running(gw),
            _dir: None,
        };
    }
    let durability = if on == On::Memory {
        Durability::Memory
    } else {
        Durability::Fsync
    };
    cfg.durability = durability;
    f(&mut cfg);
    let dir = (durability != Durability::Memory).then(|| TempDir::new("delivery"));
    if let Some(d) = &dir {
        cfg.data_dir = d.0.clone();
    }
    let store = imgate::store::open(&cfg.data_dir, durability).expect("store opens");
    let backend = Delivery::new(store, &cfg).expect("backend");
    Gw {
        running: Some(start_with(cfg, Box::new(backend))),
        _dir: dir,
    }
}

/// The running server of a common gateway, kept past the gateway.
fn gw_running(mut gw: common::Gw) -> Option<Running> {
    gw.0.take()
}

/// The cluster, when nats-server is here (under CI=true it must be:
/// the harness fails the test instead).
fn cluster() -> Option<On> {
    if common::nats::shared().is_some() {
        Some(On::Cluster)
    } else {
        eprintln!("cluster backend skipped: nats-server not installed");
        None
    }
}

/// Every backend.
fn all() -> Vec<On> {
    [On::Memory, On::Fsync]
        .into_iter()
        .chain(cluster())
        .collect()
}

/// The default backend in memory and on disk.
fn both() -> [On; 2] {
    [On::Memory, On::Fsync]
}

#[test]
fn one_to_one_online_is_acked_delivered_and_receipted() {
    for d in all() {
        let gw = gateway(d, |_| {});
        let mut a = Peer::login(gw.addr(), 1, 1);
        let mut b = Peer::login(gw.addr(), 2, 1);
        let id = a.send_to(2, b"hello");
        let acked = a.wait(|e| matches!(e, Event::Acked { .. }), "msg:A");
        assert!(
            matches!(acked, Event::Acked { msg_id, group: 0, seq: 1, own_seq: 1, .. } if msg_id == id),
            "{d:?}: {acked:?}"
        );
        b.wait(|e| matches!(e, Event::Message { .. }), "msg:N");
        assert_eq!(b.messages(), vec![(0, 1, 1, Bytes::from_static(b"hello"))]);
        // b's client acks after its ack delay; a hears it was delivered.
        b.pump(Duration::from_millis(30));
        let got = a.wait(|e| matches!(e, Event::Delivered { .. }), "ack:N");
        assert_eq!(
            got,
            Event::Delivered {
                msg_id: id,
                peer: 2
            },
            "{d:?}"
        );
    }
}

#[test]
fn an_offline_receiver_pages_everything_in_order() {
    for d in all() {
        let gw = gateway(d, |c| c.sync_page_max = 100);
        let mut a = Peer::login(gw.addr(), 1, 1);
        for i in 0..250u32 {
            a.send_to(2, &i.to_be_bytes());
        }
        a.wait(
            |e| matches!(e, Event::Acked { seq: 250, .. }),
            "the 250th msg:A",
        );
        let mut b = Peer::with(gw.addr(), 2, 1, |c| c.sync_limit = 100);
        b.wait(
            |e| matches!(e, Event::SyncDone { group: 0 }),
            "the pull ends",
        );
        let msgs = b.messages();
        assert_eq!(msgs.len(), 250, "{d:?}");
        for (i, (g, seq, from, body)) in msgs.iter().enumerate() {
            assert_eq!((*g, *seq, *from), (0, i as u64 + 1, 1));
            assert_eq!(&body[..], &(i as u32).to_be_bytes());
        }
        // Three full pages and the empty one that closes the pull.
        let pulls = b.client.stats().sync_requests;
        assert_eq!(pulls, 4, "{d:?}");
    }
}

#[test]
fn a_retransmitted_msg_r_gets_the_same_answer_and_one_copy() {
    for d in all() {
        // Kept after the ack, so that a second device can page it below.
        let gw = gateway(d, |c| c.purge_acked = false);
        let mut raw = Client::login(gw.addr(), 1, 1);
        let mut b = Peer::login(gw.addr(), 2, 1);
        let m = MsgR {
            no_push: false,
            msg_id: 77,
            group: 0,
            to: 2,
            retry: false,
            body: Bytes::from_static(b"once"),
        };
        raw.send(m.clone());
        let first = raw.frame();
        raw.send(MsgR { retry: true, ..m });
        let second = raw.frame();
        assert!(
            matches!(first, Frame::MsgA(a) if a.seq == 1 && a.msg_id == 77),
            "{first:?}"
        );
        assert_eq!(first, second, "{d:?}: the same msg:A");
        b.pump(Duration::from_millis(200));
        assert_eq!(b.messages().len(), 1, "{d:?}");
        // A page from the start shows one stored copy.
        let mut raw_b = Client::login(gw.addr(), 2, 2);
        raw_b.send(SyncR {
            group: 0,
            after: 0,
            limit: 10,
        });
        match raw_b.frame() {
            Frame::SyncPage(p) => assert_eq!((p.count, p.head), (1, 1), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn unacked_pushes_are_resent_then_the_device_syncs() {
    for on in [On::Fsync].into_iter().chain(cluster()) {
        unacked_pushes_are_resent_then_the_device_syncs_on(on);
    }
}

fn unacked_pushes_are_resent_then_the_device_syncs_on(on: On) {
    let gw = gateway(on, |c| {
        c.push_timeout_ms = 60;
        c.push_retries = 1;
    });
    let mut a = Peer::login(gw.addr(), 1, 1);
    let mut silent = Client::login(gw.addr(), 2, 1);
    a.send_to(2, b"are you there");
    let mut pushes = Vec::new();
    let got = silent.closed();
    for f in &got {
        if let Frame::MsgN(n) = f {
            pushes.push((n.seq, n.retry));
        }
    }
    assert_eq!(pushes, vec![(1, false), (1, true)], "{got:?}");
    assert!(matches!(got.last(), Some(Frame::Kick(k)) if k.reason() == KickReason::PushUnacked));
    // The message stayed: the device logs in again and pulls it.
    let mut b = Peer::login(gw.addr(), 2, 1);
    b.wait(|e| matches!(e, Event::SyncDone { group: 0 }), "pull");
    assert_eq!(
        b.messages(),
        vec![(0, 1, 1, Bytes::from_static(b"are you there"))]
    );
}

#[test]
fn devices_of_one_user_sync_and_ack_on_their_own() {
    for on in [On::Fsync].into_iter().chain(cluster()) {
        devices_of_one_user_sync_and_ack_on_their_own_on(on);
    }
}

fn devices_of_one_user_sync_and_ack_on_their_own_on(on: On) {
    // History is kept after the phone's ack, so that devices logging in for
    // the first time (unknown to the server until then) can page it.
    let gw = gateway(on, |c| c.purge_acked = false);
    let mut a = Peer::login(gw.addr(), 1, 1);
    let mut phone = Peer::login(gw.addr(), 2, 1);
    for i in 0..3u8 {
        a.send_to(2, &[i]);
    }
    phone.wait(
        |e| matches!(e, Event::Message { seq: 3, .. }),
        "phone gets 3",
    );
    phone.pump(Duration::from_millis(30));
    // The laptop was off: it pulls all three itself.
    let mut laptop = Peer::login(gw.addr(), 2, 2);
    laptop.wait(|e| matches!(e, Event::SyncDone { group: 0 }), "laptop pull");
    assert_eq!(laptop.messages().len(), 3);
    // The sender's other device sees its own sent messages.
    let mut a2 = Peer::login(gw.addr(), 1, 2);
    a2.wait(|e| matches!(e, Event::SyncDone { group: 0 }), "own copies");
    let own: Vec<u64> = a2.messages().iter().map(|m| m.2).collect();
    assert_eq!(own, vec![1, 1, 1]);
    // Unread per device: the phone acked everything, a new tablet has 3.
    phone
        .client
        .request_unread(std::time::Instant::now())
        .expect("unread");
    let u = phone.wait(|e| matches!(e, Event::Unread(_)), "unread");
    let Event::Unread(u) = u else { unreachable!() };
    assert!(
        u.iter().all(|e| e.unread == 0),
        "{:?}",
        u.iter().collect::<Vec<_>>()
    );
    let mut tablet = Peer::with(gw.addr(), 2, 3, |c| c.auto_pull_inbox = false);
    tablet
        .client
        .request_unread(std::time::Instant::now())
        .expect("unread");
    let u = tablet.wait(|e| matches!(e, Event::Unread(_)), "unread");
    let Event::Unread(u) = u else { unreachable!() };
    let e: Vec<_> = u.iter().collect();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].peer, e[0].unread, e[0].last_seq), (1, 3, 3));
}

#[test]
fn groups_store_once_push_to_online_members_and_page_to_the_rest() {
    for d in all() {
        let gw = gateway(d, |_| {});
        let mut a = Peer::login(gw.addr(), 1, 1);
        let mut b = Peer::login(gw.addr(), 2, 1);
        let now = std::time::Instant::now();
        a.client
            .group_request(GroupOp::Create, 0, &[2, 3], now)
            .expect("create");
        let ans = a.wait(|e| matches!(e, Event::GroupAnswer(_)), "group:A");
        let Event::GroupAnswer(g) = ans else {
            unreachable!()
        };
        assert_eq!(g.total, 3);
        let group = g.group;
        for i in 0..3u8 {
            a.send_group(group, &[i]);
        }
        b.wait(
            |e| matches!(e, Event::Message { group: g, seq: 3, .. } if *g == group),
            "b gets 3",
        );
        assert_eq!(b.messages().len(), 3, "{d:?}");
        b.pump(Duration::from_millis(30));
        // c was offline: the unread summary names the group, then it pulls.
        let mut c = Peer::login(gw.addr(), 3, 1);
        c.client
            .request_unread(std::time::Instant::now())
            .expect("unread");
        let u = c.wait(|e| matches!(e, Event::Unread(_)), "unread");
        let Event::Unread(u) = u else { unreachable!() };
        let ge: Vec<_> = u.iter().filter(|e| e.group == group).collect();
        assert_eq!((ge.len(), ge[0].unread, ge[0].last_seq), (1, 3, 3), "{d:?}");
        assert!(c.client.pull(group, std::time::Instant::now()));
        c.wait(
            |e| matches!(e, Event::SyncDone { group: g } if *g == group),
            "c pulls the group",
        );
        let got: Vec<(u64, u64)> = c.messages().iter().map(|m| (m.0, m.1)).collect();
        assert_eq!(got, vec![(group, 1), (group, 2), (group, 3)], "{d:?}");
        // Receipts are pulled: b and c acked everything.
        c.pump(Duration::from_millis(30));
        a.client
            .request_receipts(group, 3, std::time::Instant::now())
            .expect("receipts");
        let r = a.wait(|e| matches!(e, Event::Receipts(_)), "receipts:A");
        let Event::Receipts(r) = r else {
            unreachable!()
        };
        assert_eq!(r.members, 3);
        assert!(r.delivered >= 2, "{d:?}: {r:?}");
        // A new member sees only what comes after it joined.
        a.client
            .group_request(GroupOp::Add, group, &[4], std::time::Instant::now())
            .expect("add");
        a.wait(
            |e| matches!(e, Event::GroupAnswer(g) if g.op == GroupOp::Add as u8),
            "added",
        );
        let mut late = Peer::login(gw.addr(), 4, 1);
        assert!(late.client.pull(group, std::time::Instant::now()));
        late.wait(|e| matches!(e, Event::SyncDone { .. }), "late pull");
        assert!(late.messages().is_empty(), "{:?}", late.messages());
    }
}

#[test]
fn read_receipts_reach_the_sender_and_the_readers_other_devices() {
    for on in [On::Fsync].into_iter().chain(cluster()) {
        read_receipts_reach_the_sender_and_the_readers_other_devices_on(on);
    }
}

fn read_receipts_reach_the_sender_and_the_readers_other_devices_on(on: On) {
    let gw = gateway(on, |_| {});
    let mut a = Peer::login(gw.addr(), 1, 1);
    let mut b = Peer::login(gw.addr(), 2, 1);
    let mut b2 = Peer::login(gw.addr(), 2, 2);
    let id = a.send_to(2, b"read me");
    b.wait(|e| matches!(e, Event::Message { .. }), "b gets it");
    b.client
        .mark_read(0, 1, 1, std::time::Instant::now())
        .expect("mark read");
    b.flush();
    let r = a.wait(|e| matches!(e, Event::Read { .. }), "read:N");
    assert_eq!(
        r,
        Event::Read {
            msg_id: id,
            peer: 2
        }
    );
    let r = b2.wait(
        |e| matches!(e, Event::ReadElsewhere { .. }),
        "read elsewhere",
    );
    assert_eq!(
        r,
        Event::ReadElsewhere {
            group: 0,
            peer: 1,
            seq: 1
        }
    );
}

#[test]
fn users_cannot_touch_groups_they_are_not_in() {
    for on in [On::Memory].into_iter().chain(cluster()) {
        users_cannot_touch_groups_they_are_not_in_on(on);
    }
}

fn users_cannot_touch_groups_they_are_not_in_on(on: On) {
    let gw = gateway(on, |_| {});
    let mut a = Peer::login(gw.addr(), 1, 1);
    a.client
        .group_request(GroupOp::Create, 0, &[2], std::time::Instant::now())
        .expect("create");
    let Event::GroupAnswer(g) = a.wait(|e| matches!(e, Event::GroupAnswer(_)), "group:A") else {
        unreachable!()
    };
    let mut outsider = Client::login(gw.addr(), 9, 1);
    outsider.send(MsgR {
        no_push: false,
        msg_id: 5,
        group: g.group,
        to: 0,
        retry: false,
        body: Bytes::from_static(b"let me in"),
    });
    match outsider.frame() {
        Frame::Error(e) => assert_eq!((e.code(), e.ref_id), (ErrorCode::Forbidden, 5)),
        other => panic!("{other:?}"),
    }
    outsider.send(SyncR {
        group: g.group,
        after: 0,
        limit: 10,
    });
    assert!(matches!(outsider.frame(), Frame::Error(e) if e.code() == ErrorCode::Forbidden));
    outsider.send(SyncR {
        group: 424242,
        after: 0,
        limit: 10,
    });
    assert!(matches!(outsider.frame(), Frame::Error(e) if e.code() == ErrorCode::NotFound));
    // Acking past the own inbox's head (someone else's messages) is refused.
    outsider.send(imgate_codec::frame::AckR { group: 0, seq: 5 });
    assert!(matches!(outsider.frame(), Frame::Error(e) if e.code() == ErrorCode::InvalidRequest));
    // Nothing reached the group.
    let mut b = Peer::login(gw.addr(), 2, 1);
    assert!(b.client.pull(g.group, std::time::Instant::now()));
    b.wait(|e| matches!(e, Event::SyncDone { .. }), "pull");
    assert!(b.messages().is_empty());
    assert!(matches!(
        outsider.next(Duration::from_millis(50)),
        Got::Timeout
    ));
}

#[test]
fn groups_over_the_size_limit_are_refused() {
    for on in [On::Memory].into_iter().chain(cluster()) {
        groups_over_the_size_limit_are_refused_on(on);
    }
}

fn groups_over_the_size_limit_are_refused_on(on: On) {
    let gw = gateway(on, |c| c.max_group_size = 3);
    let mut a = Peer::login(gw.addr(), 1, 1);
    let refused = |p: &Peer| {
        p.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::ServerError {
                        code: ErrorCode::InvalidRequest,
                        ..
                    }
                )
            })
            .count()
    };
    // The creator and three more: four members, over the limit of three.
    a.client
        .group_request(GroupOp::Create, 0, &[2, 3, 4], std::time::Instant::now())
        .expect("create");
    a.wait(|e| matches!(e, Event::ServerError { .. }), "refusal");
    assert_eq!(refused(&a), 1);
    a.client
        .group_request(GroupOp::Create, 0, &[2, 3], std::time::Instant::now())
        .expect("create");
    let Event::GroupAnswer(g) = a.wait(|e| matches!(e, Event::GroupAnswer(_)), "group:A") else {
        unreachable!()
    };
    assert_eq!((g.group, g.total), (1, 3), "the refused create took no id");
    a.client
        .group_request(GroupOp::Add, g.group, &[4], std::time::Instant::now())
        .expect("add");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while refused(&a) < 2 && std::time::Instant::now() < deadline {
        a.pump(Duration::from_millis(20));
    }
    assert_eq!(refused(&a), 2, "{:?}", a.events);
}

/// Pages the inbox from `after` on a raw connection: (first seq, count, head).
fn page_from(c: &mut Client, after: u64) -> (Option<u64>, u16, u64) {
    c.send(SyncR {
        group: 0,
        after,
        limit: 100,
    });
    match c.frame() {
        Frame::SyncPage(p) => {
            let first = p.entries().next().map(|e| e.seq);
            (first, p.count, p.head)
        }
        other => panic!("expected a page, got {other:?}"),
    }
}

/// Pages until `want` holds, for up to 5 s (the purge sweep runs on the
/// backend's tick).
fn page_until(
    c: &mut Client,
    want: impl Fn((Option<u64>, u16, u64)) -> bool,
) -> (Option<u64>, u16, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = page_from(c, 0);
        if want(p) || std::time::Instant::now() > deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ack(c: &mut Client, seq: u64) {
    c.send(imgate_codec::frame::AckR { group: 0, seq });
    loop {
        if let Frame::AckA(a) = c.frame() {
            assert_eq!(a.seq, seq);
            return;
        }
    }
}

#[test]
fn messages_every_device_acked_are_deleted_and_the_rest_kept() {
    let dir;
    {
        let mut gw = gateway(On::Fsync, |c| c.retention_ms = 0);
        // Kept past the gateway, to look at the store after it stopped.
        dir = gw._dir.take().expect("dir");
        let mut phone = Client::login(gw.addr(), 2, 1);
        let mut laptop = Client::login(gw.addr(), 2, 2);
        let mut a = Peer::login(gw.addr(), 1, 1);
        for i in 0..5u8 {
            a.send_to(2, &[i]);
        }
        a.wait(|e| matches!(e, Event::Acked { seq: 5, .. }), "msg:A 5");
        ack(&mut phone, 5);
        ack(&mut laptop, 3);
        // The laptop has not acked 4 and 5: they stay, 1..=3 go.
        assert_eq!(page_until(&mut phone, |p| p.0 == Some(4)), (Some(4), 2, 5));
        ack(&mut laptop, 5);
        // Now nothing is left; the head says where history resumes.
        assert_eq!(page_until(&mut phone, |p| p.1 == 0), (None, 0, 5));
        // A device new to the server starts where history starts, and the
        // next message reaches it without a gap to fill.
        let mut tablet = Peer::login(gw.addr(), 2, 3);
        tablet.wait(|e| matches!(e, Event::SyncDone { group: 0 }), "tablet pull");
        a.send_to(2, b"six");
        tablet.wait(|e| matches!(e, Event::Message { seq: 6, .. }), "msg:N 6");
        assert_eq!(
            tablet.messages(),
            vec![(0, 6, 1, Bytes::from_static(b"six"))]
        );
    }
    // Deleted on disk, not just hidden: user 2's inbox holds only seq 6.
    let store = imgate::store::open(&dir.0, Durability::Fsync).expect("reopen");
    let s = imgate::delivery::keys::StreamId::inbox(2);
    let mut left = Vec::new();
    store
        .scan(
            imgate::store::Table::Log,
            &imgate::delivery::keys::log_key(s, 0),
            &imgate::delivery::keys::log_key(s, u64::MAX),
            &mut |k, _| {
                left.extend(imgate::delivery::keys::log_key_seq(k));
                true
            },
        )
        .expect("scan");
    assert_eq!(left, vec![6]);
}

#[test]
fn messages_past_the_retention_period_are_deleted_unacked() {
    // The backend's rules read a clock the test moves: the period passes
    // without sleeping through it.
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = common::Gw::start_clocked(
        |c| {
            c.purge_acked = false;
            c.retention_ms = 800;
        },
        clock.clone(),
    );
    let mut a = Peer::login(gw.addr(), 1, 1);
    for i in 0..3u8 {
        a.send_to(2, &[i]);
    }
    a.wait(|e| matches!(e, Event::Acked { seq: 3, .. }), "msg:A 3");
    let mut b = Client::login(gw.addr(), 2, 1);
    assert_eq!(page_from(&mut b, 0), (Some(1), 3, 3), "kept while young");
    // One ms before their time: still kept after several purge steps
    // (every 20 ms, the test configuration's tick).
    clock.advance(800);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        page_from(&mut b, 0),
        (Some(1), 3, 3),
        "kept until the period is over"
    );
    clock.advance(1);
    assert_eq!(page_until(&mut b, |p| p.1 == 0), (None, 0, 3));
}

/// Pumps every peer until `done` holds for all of them (within 10 s).
fn pump_all(peers: &mut [Peer], what: &str, done: impl Fn(&Peer) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !peers.iter().all(&done) {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        for p in peers.iter_mut() {
            p.pump(Duration::from_millis(2));
        }
    }
}

fn acked(p: &Peer) -> Vec<(u64, u64, u64)> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Acked {
                group,
                seq,
                own_seq,
                ..
            } => Some((*group, *seq, *own_seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn caches_of_two_entries_change_nothing_but_store_reads() {
    // cache_entries = 2: the caches drop what they hold after nearly every
    // commit, so heads, cursors, receipt marks and memberships are read
    // back from the store over and over. Sequence ids must still be
    // contiguous and never reused, and every message delivered once.
    for d in both() {
        let gw = gateway(d, |c| c.cache_entries = 2);
        let n = 6u64;
        let mut peers: Vec<Peer> = (1..=n).map(|u| Peer::login(gw.addr(), u, 1)).collect();
        // A ring: u sends 0, 1, 2 to u + 1.
        for round in 0..3u8 {
            for u in 1..=n {
                peers[(u - 1) as usize].send_to(u % n + 1, &[round]);
            }
        }
        pump_all(&mut peers, "ring", |p| {
            p.messages().len() == 3 && acked(p).len() == 3
        });
        for (i, p) in peers.iter().enumerate() {
            let u = i as u64 + 1;
            let from = (u + n - 2) % n + 1;
            let got = p.messages();
            assert!(got.iter().all(|m| m.0 == 0 && m.2 == from), "{d:?} {u}");
            let bodies: Vec<u8> = got.iter().map(|m| m.3[0]).collect();
            assert_eq!(bodies, vec![0, 1, 2], "{d:?} {u}");
            // The inbox: 3 received and 3 own copies, seqs 1..=6 once each.
            let mut seqs: Vec<u64> = got.iter().map(|m| m.1).collect();
            seqs.extend(acked(p).iter().map(|a| a.2));
            seqs.sort_unstable();
            assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "{d:?} {u}");
        }
        // Receipts: every sender hears its 3 messages were delivered.
        pump_all(&mut peers, "receipts", |p| {
            p.events
                .iter()
                .filter(|e| matches!(e, Event::Delivered { .. }))
                .count()
                >= 3
        });
        // A group of everyone; each member sends one message.
        let now = std::time::Instant::now();
        let members: Vec<u64> = (2..=n).collect();
        peers[0]
            .client
            .group_request(GroupOp::Create, 0, &members, now)
            .expect("create");
        let ans = peers[0].wait(|e| matches!(e, Event::GroupAnswer(_)), "group:A");
        let Event::GroupAnswer(g) = ans else {
            unreachable!()
        };
        for p in peers.iter_mut() {
            p.send_group(g.group, b"g");
        }
        let group = g.group;
        let in_group = |p: &Peer| {
            let mut seqs: Vec<u64> = p
                .messages()
                .iter()
                .filter(|m| m.0 == group)
                .map(|m| m.1)
                .collect();
            seqs.extend(acked(p).iter().filter(|a| a.0 == group).map(|a| a.1));
            seqs.sort_unstable();
            seqs
        };
        pump_all(&mut peers, "group", |p| in_group(p).len() == n as usize);
        for p in &peers {
            assert_eq!(in_group(p), (1..=n).collect::<Vec<_>>(), "{d:?}");
        }
        // After all that, the next message takes the next seq.
        peers[0].send_to(2, b"next");
        pump_all(&mut peers[..1], "next", |p| acked(p).len() == 5);
        let last = acked(&peers[0])[4];
        assert_eq!((last.1, last.2), (7, 7), "{d:?}");
    }
}
