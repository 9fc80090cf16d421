//! The cluster backend under faults: two real `imgate` processes on a
//! private 3-node JetStream cluster; a gateway and the leader of a stream
//! in use are SIGKILLed mid-burst and restarted. Every message a sender saw
//! acknowledged must be stored exactly once at its acknowledged sequence
//! id, inboxes and the group's log must be contiguous, and each sender's
//! order kept.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    Client, Got, SECRET,
    nats::NatsCluster,
    process::{Gateway, free_port},
};
use imgate_codec::{
    Frame,
    frame::{GroupOp, GroupR, Login, MsgR, SyncR},
};

const SENDERS: u64 = 4;
/// Senders to the group, users 201 and up; the group's reader is 300.
const GROUP_SENDERS: u64 = 2;
const PER_SENDER: u64 = 150;
const WINDOW: usize = 16;

fn token(user: u64) -> Bytes {
    common::token(user, 1)
}

/// Logs in at one of `ports` (starting with `first`), or None.
fn connect(ports: &[u16], first: usize, user: u64) -> Option<Client> {
    for i in 0..ports.len() {
        let port = ports[(first + i) % ports.len()];
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        drop(stream);
        let mut c = Client::connect(([127, 0, 0, 1], port).into());
        c.send(Login {
            user,
            device: 1,
            resume: 0,
            token: token(user),
        });
        match c.next(Duration::from_secs(10)) {
            Got::Frame(Frame::LoginOk(_)) => return Some(c),
            _ => continue,
        }
    }
    None
}

/// What a sender saw acknowledged: msg id → (seq, own seq).
type Acked = BTreeMap<u64, (u64, u64)>;

/// Sends PER_SENDER messages to `to` (or, if `group` is not 0, to the
/// group), at most WINDOW unacknowledged, reconnecting (to the other
/// gateway first) and retransmitting with the same ids whenever its
/// connection breaks.
fn sender(
    user: u64,
    (to, group): (u64, u64),
    ports: Vec<u16>,
    first: usize,
    acked_total: Arc<AtomicUsize>,
) -> Acked {
    let mut acked = Acked::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut at = first;
    while (acked.len() as u64) < PER_SENDER {
        assert!(
            Instant::now() < deadline,
            "user {user}: {} of {PER_SENDER} acked",
            acked.len()
        );
        let Some(mut c) = connect(&ports, at, user) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        at += 1;
        let mut inflight: Vec<u64> = Vec::new();
        let mut next = 1u64;
        let mut silent = Instant::now();
        'conn: loop {
            // Unacknowledged ids in order, from the lowest: a retransmit
            // (the same id, flagged) or a first send.
            while inflight.len() < WINDOW && next <= PER_SENDER {
                if !acked.contains_key(&next) {
                    c.send(MsgR {
                        no_push: false,
                        msg_id: next,
                        group,
                        to,
                        retry: true,
                        body: Bytes::from(format!("{user}:{next}")),
                    });
                    inflight.push(next);
                }
                next += 1;
            }
            if inflight.is_empty() {
                break 'conn;
            }
            match c.next(Duration::from_millis(500)) {
                Got::Frame(Frame::MsgA(a)) => {
                    silent = Instant::now();
                    inflight.retain(|&id| id != a.msg_id);
                    if let Some(prev) = acked.insert(a.msg_id, (a.seq, a.own_seq)) {
                        assert_eq!(
                            prev,
                            (a.seq, a.own_seq),
                            "user {user}: a second answer differs"
                        );
                    } else {
                        acked_total.fetch_add(1, Relaxed);
                    }
                }
                Got::Frame(Frame::Error(_)) => {
                    // overloaded during an election: retransmit later.
                    silent = Instant::now();
                    break 'conn;
                }
                Got::Frame(_) => {}
                Got::Closed => break 'conn,
                Got::Timeout if silent.elapsed() > Duration::from_secs(40) => break 'conn,
                Got::Timeout => {}
            }
        }
    }
    acked
}

/// Every entry of a user's inbox (`group` 0) or of a group's log, read by
/// `user` in pages through `port`.
fn stream(port: u16, user: u64, group: u64) -> Vec<(u64, u64, u64)> {
    let mut c = connect(&[port], 0, user).expect("login for the check");
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        c.send(SyncR {
            group,
            after,
            limit: 500,
        });
        let page = loop {
            match c.next(Duration::from_secs(10)) {
                Got::Frame(Frame::SyncPage(p)) => break p,
                Got::Frame(_) => {}
                other => panic!("no page: {other:?}"),
            }
        };
        let entries: Vec<_> = page.entries().collect();
        if entries.is_empty() {
            assert_eq!(after, page.head, "user {user}: pages end at the head");
            return out;
        }
        for e in entries {
            out.push((e.seq, e.from, e.msg_id));
            after = e.seq;
        }
    }
}

#[test]
fn acknowledged_messages_survive_a_gateway_and_a_stream_leader_sigkill() {
    let Some(mut nats) = NatsCluster::start(3) else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let dir = nats.dir().to_path_buf();
    let args = |node: &str| {
        [
            "--no-metrics",
            "--secret",
            SECRET,
            "--workers",
            "1",
            "--backend",
            "cluster",
            "--cluster-stream-prefix",
            "FAULT",
            "--cluster-partitions",
            "2",
            "--cluster-node-id",
            node,
            "--cluster-nats-urls",
            &nats.url_list(),
            "--max-frames-per-sec",
            "100000",
            "--frame-burst",
            "100000",
        ]
        .iter()
        .map(OsString::from)
        .collect::<Vec<_>>()
    };
    let ports = vec![free_port(), free_port()];
    let start = Duration::from_secs(30);
    let mut a = Gateway::spawn(ports[0], args("a"), Some(dir.join("a.log")), start);
    let _b = Gateway::spawn(ports[1], args("b"), Some(dir.join("b.log")), start);

    // A group of the group senders and an offline reader, its log in the
    // stream whose leader dies.
    let names = imgate::cluster::names::Names::new("FAULT", 2);
    let wanted = (1..).find(|&g| names.partition(g) == 0).expect("an id");
    let mut creator = connect(&ports, 0, 201).expect("creator logs in");
    let others: Vec<u64> = (202..201 + GROUP_SENDERS).chain([300]).collect();
    creator.send(
        GroupR {
            req: 1,
            op: GroupOp::Create as u8,
            group: wanted,
            members: Bytes::new(),
        }
        .with_members(&others),
    );
    let group = loop {
        match creator.next(Duration::from_secs(10)) {
            Got::Frame(Frame::GroupA(g)) => break g.group,
            Got::Frame(_) => {}
            other => panic!("no group:A: {other:?}"),
        }
    };
    drop(creator);

    let acked_total = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(HashMap::new()));
    let mut threads = Vec::new();
    let one_to_one = (1..=SENDERS).map(|s| (s, (100 + s, 0)));
    let to_group = (201..201 + GROUP_SENDERS).map(|s| (s, (0, group)));
    for (s, target) in one_to_one.chain(to_group) {
        let (ports, acked_total, results) = (ports.clone(), acked_total.clone(), results.clone());
        // Senders alternate nodes; their receivers are offline.
        threads.push(std::thread::spawn(move || {
            let acked = sender(s, target, ports, (s % 2) as usize, acked_total);
            results.lock().expect("results").insert(s, acked);
        }));
    }
    let total = ((SENDERS + GROUP_SENDERS) * PER_SENDER) as usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked_total.load(Relaxed) < total / 4 {
        assert!(
            Instant::now() < deadline,
            "the burst did not start: {} acked; logs in {}",
            acked_total.load(Relaxed),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Mid-burst: a gateway, then the leader of a stream in use.
    a.kill9();
    let leader = nats
        .stream_leader("FAULT_0")
        .and_then(|n| nats.node_index(&n))
        .expect("stream FAULT_0 has a leader");
    nats.kill(leader);
    let at_kill = acked_total.load(Relaxed);
    assert!(at_kill < total, "the kills landed after the burst");
    std::thread::sleep(Duration::from_millis(500));
    nats.restart(leader);
    a.start();
    for t in threads {
        t.join().expect("sender");
    }
    let results = results.lock().expect("results");

    for s in 1..=SENDERS {
        let acked = &results[&s];
        assert_eq!(acked.len() as u64, PER_SENDER);
        // The receiver's inbox: contiguous, each message once, at its
        // acknowledged seq, in the sender's order.
        let theirs = stream(ports[0], 100 + s, 0);
        let seqs: Vec<u64> = theirs.iter().map(|e| e.0).collect();
        assert_eq!(
            seqs,
            (1..=PER_SENDER).collect::<Vec<_>>(),
            "user {}: contiguous, nothing extra",
            100 + s
        );
        for &(seq, from, id) in &theirs {
            assert_eq!(from, s);
            assert_eq!(
                acked[&id].0,
                seq,
                "user {}: msg {id} at its acked seq",
                100 + s
            );
        }
        let ids: Vec<u64> = theirs.iter().map(|e| e.2).collect();
        assert_eq!(
            ids,
            (1..=PER_SENDER).collect::<Vec<_>>(),
            "sender {s}'s order"
        );
        // The sender's own copies likewise.
        let own = stream(ports[1], s, 0);
        assert_eq!(own.len() as u64, PER_SENDER, "sender {s}: own copies");
        for (i, &(seq, _, id)) in own.iter().enumerate() {
            assert_eq!(seq, i as u64 + 1);
            assert_eq!(
                acked[&id].1, seq,
                "sender {s}: msg {id} at its acked own seq"
            );
        }
    }
    // The group's log: contiguous, each message once at its acknowledged
    // seq, each sender's messages in its order.
    let log = stream(ports[1], 300, group);
    let seqs: Vec<u64> = log.iter().map(|e| e.0).collect();
    let n = GROUP_SENDERS * PER_SENDER;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "the group's log");
    for s in 201..201 + GROUP_SENDERS {
        let acked = &results[&s];
        assert_eq!(acked.len() as u64, PER_SENDER);
        let mine: Vec<(u64, u64)> = log
            .iter()
            .filter(|e| e.1 == s)
            .map(|e| (e.0, e.2))
            .collect();
        let ids: Vec<u64> = mine.iter().map(|m| m.1).collect();
        assert_eq!(
            ids,
            (1..=PER_SENDER).collect::<Vec<_>>(),
            "sender {s}'s order"
        );
        for (seq, id) in mine {
            assert_eq!(
                acked[&id],
                (seq, 0),
                "sender {s}: msg {id} at its acked seq"
            );
        }
    }
    eprintln!("killed with {at_kill} of {total} acknowledged; all {total} stored once, in order");
}
