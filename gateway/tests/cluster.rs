//! The cluster backend on a real 3-node JetStream cluster: several real
//! `imgate` processes, one service.

mod common;

use std::{
    ffi::OsString,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use bytes::Bytes;
use common::{
    Client, Got,
    nats::NatsCluster,
    peer::Peer,
    process::{Gateway, free_port},
};
use imgate_codec::{
    ErrorCode, Frame, KickReason,
    client::Event,
    frame::{AckR, GroupOp, MsgR, ReadR, SyncR},
};

/// A gateway node: the real `imgate` binary on the cluster backend under
/// `prefix`, with `extra` flags; SIGKILLed when dropped. Its log is kept
/// only when the test fails.
struct Node(Gateway, std::path::PathBuf);

impl Node {
    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.0.port).into()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gateway log: {}", self.1.display());
        } else {
            let _ = std::fs::remove_file(&self.1);
        }
    }
}

/// The command line of a node (after `--listen`): `extra`, and the
/// defaults it does not set.
fn node_args(nats: &NatsCluster, prefix: &str, extra: &[&str]) -> Vec<OsString> {
    let urls = nats.url_list();
    let defaults = [
        ("--backend", "cluster"),
        ("--cluster-nats-urls", &urls),
        ("--cluster-stream-prefix", prefix),
        ("--cluster-partitions", "2"),
        ("--secret", common::SECRET),
        ("--workers", "2"),
        ("--tick-ms", "20"),
        ("--log-level", "warn"),
    ];
    let mut args: Vec<OsString> = Vec::new();
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value].map(OsString::from));
        }
    }
    if !extra.contains(&"--metrics-listen") {
        args.push("--no-metrics".into());
    }
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Starts a node and waits until it accepts connections.
fn node(nats: &NatsCluster, prefix: &str, extra: &[&str]) -> Node {
    let log = std::env::temp_dir().join(format!("imgate-{prefix}-{}.log", free_port()));
    let gw = Gateway::spawn(
        free_port(),
        node_args(nats, prefix, extra),
        Some(log.clone()),
        Duration::from_secs(40),
    );
    Node(gw, log)
}

/// A stream prefix of its own for each test: they share one cluster.
fn prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "T{}_{}_{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn shared() -> Option<&'static NatsCluster> {
    let c = common::nats::shared();
    if c.is_none() {
        eprintln!("skipped: nats-server not installed");
    }
    c
}

fn msg(id: u64, to: u64, body: &'static [u8]) -> MsgR {
    MsgR {
        no_push: false,
        msg_id: id,
        group: 0,
        to,
        retry: false,
        body: Bytes::from_static(body),
    }
}

/// Frames until one matches `f` (others are returned too).
fn until(c: &mut Client, what: &str, f: impl Fn(&Frame) -> bool) -> (Frame, Vec<Frame>) {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match c.next(Duration::from_millis(200)) {
            Got::Frame(fr) if f(&fr) => return (fr, seen),
            Got::Frame(fr) => seen.push(fr),
            Got::Closed => panic!("closed while waiting for {what}; saw {seen:?}"),
            Got::Timeout => {}
        }
    }
    panic!("no {what} in 20 s; saw {seen:?}");
}

#[test]
fn one_to_one_across_two_nodes() {
    let Some(nats) = shared() else { return };
    let p = prefix("one");
    let a = node(nats, &p, &[]);
    let b = node(nats, &p, &[]);
    let mut alice = Client::login(a.addr(), 1, 1);
    let mut bob = Client::login(b.addr(), 2, 1);
    alice.send(msg(10, 2, b"hello"));
    let (ack, _) = until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    let Frame::MsgA(ack) = ack else {
        unreachable!()
    };
    assert_eq!((ack.msg_id, ack.seq, ack.own_seq), (10, 1, 1));
    let (n, _) = until(&mut bob, "msg:N", |f| matches!(f, Frame::MsgN(_)));
    let Frame::MsgN(n) = n else { unreachable!() };
    assert_eq!((n.seq, n.from, n.to, &n.body[..]), (1, 1, 2, &b"hello"[..]));
    bob.send(AckR { group: 0, seq: 1 });
    let (a1, _) = until(&mut bob, "ack:A", |f| matches!(f, Frame::AckA(_)));
    assert!(matches!(a1, Frame::AckA(ref x) if x.seq == 1), "{a1:?}");

    // The sender's retransmit through the other node: the same answer,
    // no second copy.
    drop(alice);
    let mut alice = Client::login(b.addr(), 1, 1);
    alice.send(MsgR {
        retry: true,
        ..msg(10, 2, b"hello")
    });
    let (again, _) = until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    let Frame::MsgA(again) = again else {
        unreachable!()
    };
    assert_eq!(
        (again.seq, again.own_seq, again.server_time),
        (1, 1, ack.server_time)
    );
    // The same id for another message is refused.
    alice.send(msg(10, 2, b"other"));
    let (e, _) = until(&mut alice, "error", |f| matches!(f, Frame::Error(_)));
    assert!(
        matches!(e, Frame::Error(ref x) if x.code == ErrorCode::MsgIdReused.to_wire()),
        "{e:?}"
    );
    // Next message: seq 2, contiguous.
    alice.send(msg(11, 2, b"two"));
    let (m2, _) = until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    assert!(
        matches!(m2, Frame::MsgA(ref x) if x.seq == 2 && x.own_seq == 2),
        "{m2:?}"
    );
    let (n2, _) = until(&mut bob, "msg:N 2", |f| matches!(f, Frame::MsgN(_)));
    assert!(matches!(n2, Frame::MsgN(ref x) if x.seq == 2), "{n2:?}");
}

#[test]
fn offline_pages_and_cursors_from_any_node() {
    let Some(nats) = shared() else { return };
    let p = prefix("pages");
    let a = node(nats, &p, &["--sync-page-default", "4"]);
    let b = node(nats, &p, &["--sync-page-default", "4"]);
    let mut alice = Client::login(a.addr(), 1, 1);
    for i in 1..=10u64 {
        alice.send(MsgR {
            no_push: false,
            msg_id: 100 + i,
            group: 0,
            to: 3,
            retry: false,
            body: Bytes::from(format!("m{i}")),
        });
    }
    let mut acked = 0;
    while acked < 10 {
        let (f, _) = until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
        let Frame::MsgA(x) = f else { unreachable!() };
        acked += 1;
        assert_eq!(x.seq, x.msg_id - 100, "in send order");
    }
    // User 3 was offline: pages from the other node, each acknowledging
    // the one before.
    let mut carol = Client::login(b.addr(), 3, 1);
    let mut after = 0;
    let mut got = Vec::new();
    loop {
        carol.send(SyncR {
            group: 0,
            after,
            limit: 0,
        });
        let (f, _) = until(&mut carol, "sync page", |f| matches!(f, Frame::SyncPage(_)));
        let Frame::SyncPage(page) = f else {
            unreachable!()
        };
        assert_eq!(page.head, 10);
        let entries: Vec<_> = page.entries().collect();
        if entries.is_empty() {
            break;
        }
        assert!(entries.len() <= 4);
        for e in &entries {
            got.push(e.seq);
        }
        after = entries.last().map_or(after, |e| e.seq);
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    // The cursor moved to 10 (the last page asked after 10): a page from
    // the middle still reads, and ack:A reports the cursor.
    drop(carol);
    let mut carol = Client::login(a.addr(), 3, 1);
    carol.send(SyncR {
        group: 0,
        after: 6,
        limit: 2,
    });
    let (f, _) = until(&mut carol, "sync page", |f| matches!(f, Frame::SyncPage(_)));
    let Frame::SyncPage(page) = f else {
        unreachable!()
    };
    let seqs: Vec<u64> = page.entries().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![7, 8]);
    carol.send(AckR { group: 0, seq: 3 });
    let (f, _) = until(&mut carol, "ack:A", |f| matches!(f, Frame::AckA(_)));
    assert!(
        matches!(f, Frame::AckA(ref x) if x.seq == 10),
        "cursors never go back: {f:?}"
    );
    carol.send(AckR { group: 0, seq: 11 });
    let (f, _) = until(&mut carol, "error", |f| matches!(f, Frame::Error(_)));
    assert!(
        matches!(f, Frame::Error(ref x) if x.code == ErrorCode::InvalidRequest.to_wire()),
        "{f:?}"
    );
}

#[test]
fn a_login_on_another_node_replaces_the_device() {
    let Some(nats) = shared() else { return };
    let p = prefix("replace");
    let a = node(nats, &p, &[]);
    let b = node(nats, &p, &[]);
    let mut old = Client::login(a.addr(), 5, 1);
    let _other_device = Client::login(a.addr(), 5, 2);
    let _new = Client::login(b.addr(), 5, 1);
    let frames = old.closed();
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Kick(k) if k.reason == KickReason::Replaced.to_wire())),
        "{frames:?}"
    );
}

#[test]
fn a_node_with_another_partition_count_refuses_to_start() {
    let Some(nats) = shared() else { return };
    let p = prefix("parts");
    let _first = node(nats, &p, &[]);
    let args = node_args(nats, &p, &["--cluster-partitions", "3"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(&args)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("configured with 3 partitions") && err.contains("created with 2"),
        "{err}"
    );
}

#[test]
fn health_and_metrics_follow_the_nats_connection() {
    let Some(mut nats) = NatsCluster::start(1) else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let gw = node(
        &nats,
        &prefix("health"),
        &[
            "--cluster-replicas",
            "1",
            "--metrics-listen",
            &metrics,
            "--admin-token",
            "s3cret",
        ],
    );
    let get = |path: &str| common::nats::http_get(port, path).expect("endpoint answers");
    assert_eq!(get("/healthz"), (200, "ok\n".to_string()));
    let mut alice = Client::login(gw.addr(), 1, 1);
    alice.send(msg(1, 2, b"counted"));
    until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    let (_, m) = get("/metrics");
    assert!(m.contains("imgate_cluster_connected 1"), "{m}");
    assert!(
        m.contains("imgate_cluster_appends_total 2"),
        "two copies: {m}"
    );

    nats.kill(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get("/healthz");
        if status == 503 {
            assert!(body.contains("JetStream unreachable"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(get("/metrics").1.contains("imgate_cluster_connected 0"));
    // The session list cannot ask the other nodes: a clear error, at once.
    let asked = std::time::Instant::now();
    let (status, body) = imgate::http::request(
        ([127, 0, 0, 1], port).into(),
        "GET",
        "/admin/sessions?user=1",
        Some("s3cret"),
    )
    .expect("admin answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn receipts_cross_nodes_and_come_back_at_login() {
    let Some(nats) = shared() else { return };
    let p = prefix("receipts");
    let a = node(nats, &p, &[]);
    let b = node(nats, &p, &[]);
    let mut alice = Peer::login(a.addr(), 1, 1);
    let mut bob = Peer::login(b.addr(), 2, 1);
    let mut bob2 = Peer::login(a.addr(), 2, 2);
    let id = alice.send_to(2, b"read me");
    bob.wait(
        |e| matches!(e, Event::Message { seq: 1, .. }),
        "bob gets it",
    );
    // Bob's client acks: alice, on the other node, hears it was delivered.
    let got = alice.wait(|e| matches!(e, Event::Delivered { .. }), "ack:N");
    assert_eq!(
        got,
        Event::Delivered {
            msg_id: id,
            peer: 2
        }
    );
    bob.client
        .mark_read(0, 1, 1, std::time::Instant::now())
        .expect("mark read");
    bob.flush();
    let got = alice.wait(|e| matches!(e, Event::Read { .. }), "read:N");
    assert_eq!(
        got,
        Event::Read {
            msg_id: id,
            peer: 2
        }
    );
    let got = bob2.wait(
        |e| matches!(e, Event::ReadElsewhere { .. }),
        "read elsewhere",
    );
    assert_eq!(
        got,
        Event::ReadElsewhere {
            group: 0,
            peer: 1,
            seq: 1
        }
    );
    // A device of alice that was away gets both marks at login, on either
    // node.
    let mut later = Client::login(b.addr(), 1, 7);
    let (f, seen) = until(&mut later, "read:N at login", |f| {
        matches!(f, Frame::ReadN(_))
    });
    assert!(
        matches!(f, Frame::ReadN(ref r) if (r.reader, r.peer, r.seq) == (2, 1, 1)),
        "{f:?}"
    );
    assert!(
        seen.iter()
            .any(|f| matches!(f, Frame::AckN(n) if (n.peer, n.seq) == (2, 1))),
        "{seen:?}"
    );
    // Only a peer that wrote may be marked read.
    let mut carol = Client::login(a.addr(), 3, 1);
    carol.send(ReadR {
        group: 0,
        peer: 1,
        seq: 0,
    });
    let (f, _) = until(&mut carol, "error", |f| matches!(f, Frame::Error(_)));
    assert!(
        matches!(f, Frame::Error(ref e) if e.code == ErrorCode::InvalidRequest.to_wire()),
        "seq 0: {f:?}"
    );
}

#[test]
fn a_group_split_across_nodes() {
    let Some(nats) = shared() else { return };
    let p = prefix("group");
    let a = node(nats, &p, &[]);
    let b = node(nats, &p, &[]);
    let mut alice = Peer::login(a.addr(), 1, 1);
    let mut alice2 = Peer::login(b.addr(), 1, 2);
    let mut bob = Peer::login(b.addr(), 2, 1);
    let mut carol = Peer::login(a.addr(), 3, 1);
    alice
        .client
        .group_request(GroupOp::Create, 0, &[2, 3], std::time::Instant::now())
        .expect("create");
    let Event::GroupAnswer(g) = alice.wait(|e| matches!(e, Event::GroupAnswer(_)), "group:A")
    else {
        unreachable!()
    };
    assert_eq!((g.group, g.total), (1, 3));
    let group = g.group;
    for i in 0..5u8 {
        alice.send_group(group, &[i]);
    }
    let five = |e: &Event| matches!(e, Event::Message { group: g, seq: 5, .. } if *g == group);
    for (who, p) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("alice2", &mut alice2),
    ] {
        p.wait(five, who);
        let got: Vec<(u64, u64, u64)> = p.messages().iter().map(|m| (m.0, m.1, m.2)).collect();
        let want: Vec<(u64, u64, u64)> = (1..=5).map(|s| (group, s, 1)).collect();
        assert_eq!(got, want, "{who}: every message once, in order");
    }
    assert!(
        alice.messages().is_empty(),
        "the sending connection gets msg:A, not msg:N"
    );
    // Dave joins while online on node b: he gets what comes after, only.
    let mut dave = Peer::login(b.addr(), 4, 1);
    bob.client
        .group_request(GroupOp::Add, group, &[4], std::time::Instant::now())
        .expect("add");
    bob.wait(
        |e| matches!(e, Event::GroupAnswer(g) if g.op == GroupOp::Add as u8),
        "added",
    );
    // Carol leaves: she gets nothing after.
    carol
        .client
        .group_request(GroupOp::Remove, group, &[3], std::time::Instant::now())
        .expect("remove");
    carol.wait(
        |e| matches!(e, Event::GroupAnswer(g) if g.op == GroupOp::Remove as u8),
        "removed",
    );
    // Nodes learn of membership changes from a notice: give it a moment.
    bob.pump(Duration::from_millis(300));
    bob.send_group(group, b"six");
    dave.wait(
        |e| matches!(e, Event::Message { seq: 6, .. }),
        "dave gets 6",
    );
    let dave_got: Vec<u64> = dave
        .messages()
        .iter()
        .filter(|m| m.0 == group)
        .map(|m| m.1)
        .collect();
    assert_eq!(dave_got, vec![6]);
    alice.wait(
        |e| matches!(e, Event::Message { seq: 6, .. }),
        "alice gets 6",
    );
    carol.pump(Duration::from_millis(300));
    assert!(
        !carol.messages().iter().any(|m| m.1 == 6),
        "a removed member gets no more"
    );
    // Receipts: members now are alice, bob, dave; all got 6 and acked it.
    for p in [&mut alice, &mut dave] {
        p.pump(Duration::from_millis(300));
    }
    alice
        .client
        .request_receipts(group, 6, std::time::Instant::now())
        .expect("receipts");
    let Event::Receipts(r) = alice.wait(|e| matches!(e, Event::Receipts(_)), "receipts:A") else {
        unreachable!()
    };
    assert_eq!(r.members, 3);
    assert!(r.delivered >= 2, "{r:?}");
    // Carol may no longer send, list or sync.
    let mut raw = Client::login(a.addr(), 3, 2);
    raw.send(SyncR {
        group,
        after: 0,
        limit: 10,
    });
    let (f, _) = until(&mut raw, "error", |f| matches!(f, Frame::Error(_)));
    assert!(
        matches!(f, Frame::Error(ref e) if e.code == ErrorCode::Forbidden.to_wire()),
        "{f:?}"
    );
}

#[test]
fn the_admin_path_sees_and_kicks_sessions_on_every_node() {
    let Some(nats) = shared() else { return };
    let p = prefix("admin");
    let ports = [free_port(), free_port()];
    let nodes: Vec<Node> = ["n-a", "n-b"]
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            let metrics = format!("127.0.0.1:{port}");
            let flags = ["--cluster-node-id", name, "--admin-token", "s3cret"];
            node(
                nats,
                &p,
                &[&flags[..], &["--metrics-listen", &metrics]].concat(),
            )
        })
        .collect();
    let mut phone = Client::login(nodes[0].addr(), 9, 1);
    let mut laptop = Client::login(nodes[1].addr(), 9, 2);
    let ask = |port: u16, method: &str, target: &str| {
        imgate::http::request(
            ([127, 0, 0, 1], port).into(),
            method,
            target,
            Some("s3cret"),
        )
        .expect("admin answers")
    };
    let (status, body) = ask(ports[0], "GET", "/admin/sessions?user=9");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"node\":\"n-a\",\"device\":1")
            && body.contains("\"node\":\"n-b\",\"device\":2"),
        "both nodes answer: {body}"
    );
    let (_, body) = ask(ports[1], "GET", "/admin/sessions?user=9&device=2");
    assert!(
        body.contains("\"device\":2") && !body.contains("\"device\":1"),
        "{body}"
    );
    let (status, body) = ask(ports[1], "POST", "/admin/kick?user=9");
    assert_eq!((status, body.as_str()), (200, "{\"kicked\":2}\n"));
    for c in [&mut phone, &mut laptop] {
        let frames = c.closed();
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::Kick(k) if k.reason == KickReason::Admin.to_wire())),
            "{frames:?}"
        );
    }
}

/// The sequence ids of the page `c` reads from the start of its inbox
/// (asking from 0 acknowledges nothing), and the head it reports.
fn inbox_from_start(c: &mut Client) -> (Vec<u64>, u64) {
    c.send(SyncR {
        group: 0,
        after: 0,
        limit: 0,
    });
    let (f, _) = until(c, "sync page", |f| matches!(f, Frame::SyncPage(_)));
    let Frame::SyncPage(page) = f else {
        unreachable!()
    };
    (page.entries().map(|e| e.seq).collect(), page.head)
}

/// Reads the inbox from the start until it is `want` (the purge runs on
/// its own schedule), at most for 20 s.
fn wait_inbox(c: &mut Client, want: &[u64]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (got, _) = inbox_from_start(c);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the inbox is still {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `n` messages from `from` to `to` (msg ids from `first`) and
/// waits for their msg:A.
fn send_n(from: &mut Client, to: u64, first: u64, n: u64) {
    for i in 0..n {
        from.send(msg(first + i, to, b"purge me"));
    }
    for _ in 0..n {
        until(from, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    }
}

#[test]
fn acknowledged_and_expired_records_are_purged_but_never_the_head() {
    let Some(nats) = shared() else { return };
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    // The smallest dedup window JetStream accepts (100 ms), sweeps every
    // 10 ticks of 20 ms, each reading on from where the last one ended.
    let gw = node(
        nats,
        &prefix("purge"),
        &[
            "--dedup-window-ms",
            "100",
            "--purge-acked",
            "true",
            "--purge-per-tick",
            "3",
            "--metrics-listen",
            &metrics,
        ],
    );
    let mut alice = Client::login(gw.addr(), 1, 1);
    let mut phone = Client::login(gw.addr(), 2, 1);
    let mut laptop = Client::login(gw.addr(), 2, 2);
    // Erin's tablet logs in and acknowledges nothing: it holds back what
    // her phone acknowledged.
    let mut erin = Client::login(gw.addr(), 5, 1);
    let _tablet = Client::login(gw.addr(), 5, 2);
    send_n(&mut alice, 5, 101, 2);
    erin.send(AckR { group: 0, seq: 2 });
    until(&mut erin, "ack:A", |f| matches!(f, Frame::AckA(_)));
    send_n(&mut alice, 2, 1, 5);
    for (c, seq) in [(&mut phone, 5), (&mut laptop, 3)] {
        c.send(AckR { group: 0, seq });
        let (f, _) = until(c, "ack:A", |f| matches!(f, Frame::AckA(_)));
        assert!(matches!(f, Frame::AckA(ref a) if a.seq == seq), "{f:?}");
    }
    // What every device acknowledged goes; the rest stays.
    wait_inbox(&mut phone, &[4, 5]);
    laptop.send(AckR { group: 0, seq: 5 });
    until(&mut laptop, "ack:A", |f| matches!(f, Frame::AckA(_)));
    // Everything is acknowledged, but the head stays...
    wait_inbox(&mut laptop, &[5]);
    // ...and sweeps after that keep it.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(inbox_from_start(&mut phone), (vec![5], 5));
    // Seqs 1 to 4 went, and nothing else yet (reading the inbox acks it,
    // so later reads let more go).
    let (_, m) = common::nats::http_get(port, "/metrics").expect("metrics");
    assert!(m.contains("imgate_cluster_purged_total 4"), "{m}");
    assert!(!m.contains("imgate_cluster_purge_sweeps_total 0"), "{m}");
    // The next message continues the ids.
    alice.send(msg(106, 2, b"six"));
    let (f, _) = until(&mut alice, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    assert!(matches!(f, Frame::MsgA(ref a) if a.seq == 6), "{f:?}");
    // 5 is no longer the head and every device acknowledged it: a sweep
    // may take it any time now.
    let (seqs, head) = inbox_from_start(&mut phone);
    assert_eq!(head, 6);
    assert!(seqs == [5, 6] || seqs == [6], "{seqs:?}");
    // Alice's own copies stay: her device logged in and acknowledged
    // nothing; so do Erin's, for her tablet.
    assert_eq!(inbox_from_start(&mut alice).0, (1..=8).collect::<Vec<_>>());
    assert_eq!(inbox_from_start(&mut erin), (vec![1, 2], 2));

    // Past retention, records go whether acknowledged or not; the head
    // stays.
    let old = node(
        nats,
        &prefix("retention"),
        &["--dedup-window-ms", "100", "--retention-ms", "1"],
    );
    let mut carol = Client::login(old.addr(), 3, 1);
    send_n(&mut carol, 4, 1, 3);
    wait_inbox(&mut carol, &[3]);
    let mut dave = Client::login(old.addr(), 4, 1);
    wait_inbox(&mut dave, &[3]);
    carol.send(msg(4, 4, b"four"));
    let (f, _) = until(&mut carol, "msg:A", |f| matches!(f, Frame::MsgA(_)));
    assert!(
        matches!(f, Frame::MsgA(ref a) if (a.seq, a.own_seq) == (4, 4)),
        "{f:?}"
    );
}
