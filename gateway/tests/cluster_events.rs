//! Events from the cluster backend to a real HTTP receiver
//! (`common::hook`): two real `imgate` nodes on a real 3-node JetStream
//! cluster, one `[events]` config. Every message event arrives once after
//! de-duplication by id, with the offline recipients seen cluster-wide (a
//! user connected to the other node is not offline); presence and group
//! events too; a retransmit through the other node adds no event; the
//! receiver down for a while loses nothing, and one user's events keep
//! their order. A node SIGKILLed and never started again has its users
//! reported offline (`node_lost`) by the other, and stops counting them
//! online; one that only stalls that long reports them online again.

mod common;

use std::{
    ffi::OsString,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    Client, Got,
    hook::Hook,
    nats::NatsCluster,
    process::{Gateway, free_port},
};
use imgate_codec::{
    Frame,
    frame::{GroupOp, GroupR, MsgA, MsgR},
};
use serde_json::Value;

const HOOK_SECRET: &str = "hook-secret";

/// A gateway node, SIGKILLed when dropped; its log kept if the test fails.
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

fn node(nats: &NatsCluster, prefix: &str, id: &str, config: &std::path::Path) -> Node {
    let urls = nats.url_list();
    let args: Vec<OsString> = [
        "--backend",
        "cluster",
        "--cluster-nats-urls",
        &urls,
        "--cluster-stream-prefix",
        prefix,
        "--cluster-partitions",
        "2",
        "--cluster-node-id",
        id,
        "--secret",
        common::SECRET,
        "--workers",
        "2",
        "--tick-ms",
        "20",
        "--log-level",
        "warn",
        "--no-metrics",
        "--config",
    ]
    .iter()
    .map(OsString::from)
    .chain([config.as_os_str().to_owned()])
    .collect();
    let log = std::env::temp_dir().join(format!("imgate-{prefix}-{id}.log"));
    let gw = Gateway::spawn(
        free_port(),
        args,
        Some(log.clone()),
        Duration::from_secs(40),
    );
    Node(gw, log)
}

fn msg(to: u64, group: u64, msg_id: u64, no_push: bool) -> MsgR {
    MsgR {
        msg_id,
        group,
        to,
        retry: false,
        no_push,
        body: Bytes::from(format!("body {msg_id}")),
    }
}

/// Sends and waits for the msg:A.
fn send(c: &mut Client, m: MsgR) -> MsgA {
    c.send(m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.next(Duration::from_millis(200)) {
            Got::Frame(Frame::MsgA(a)) => return a,
            Got::Frame(Frame::Error(e)) => panic!("refused: {e:?}"),
            Got::Closed => panic!("closed while waiting for a msg:A"),
            _ => {}
        }
    }
    panic!("no msg:A in 20 s");
}

/// The first copy of each event id, in arrival order.
fn distinct(events: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_string()))
        .cloned()
        .collect()
}

fn messages(events: &[Value]) -> Vec<Value> {
    distinct(events)
        .into_iter()
        .filter(|e| e["type"] == "message")
        .collect()
}

fn presence(events: &[Value], t: &str, user: u64) -> Vec<Value> {
    distinct(events)
        .into_iter()
        .filter(|e| e["type"] == t && e["user"] == user)
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn events_from_two_nodes_reach_the_webhook_once_each() {
    let Some(nats) = common::nats::shared() else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let started = Instant::now();
    let prefix = format!("E{}", std::process::id());
    let mut hook = Hook::start(HOOK_SECRET);
    let dir = std::env::temp_dir().join(format!("imgate-cluster-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("imgate.toml");
    std::fs::write(
        &config,
        format!(
            "[events]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nbatch = 50\nlinger_ms = 5\n\
             timeout_ms = 2000\nretry_min_ms = 20\nretry_max_ms = 200\n",
            hook.url()
        ),
    )
    .expect("config");
    let a = node(nats, &prefix, "a", &config);
    let b = node(nats, &prefix, "b", &config);

    // Alice (1) on a, bob (2) on b; carol (3) never connects.
    let mut alice = Client::login(a.addr(), 1, 1);
    let mut bob = Client::login(b.addr(), 2, 7);
    hook.wait_for(Duration::from_secs(20), "both online", |ev| {
        presence(ev, "online", 1).len() == 1 && presence(ev, "online", 2).len() == 1
    });
    let ev = hook.events();
    let (on1, on2) = (
        &presence(&ev, "online", 1)[0],
        &presence(&ev, "online", 2)[0],
    );
    assert_eq!((&on1["node"], &on1["device"]), (&"a".into(), &1.into()));
    assert_eq!((&on2["node"], &on2["device"]), (&"b".into(), &7.into()));

    // One-to-one: to bob (online on the other node), to carol (offline),
    // and one to carol with no push.
    const N: u64 = 20;
    let first = send(&mut alice, msg(2, 0, 1, false));
    for i in 2..=N {
        send(&mut alice, msg(2, 0, i, false));
    }
    for i in 101..=105 {
        send(&mut alice, msg(3, 0, i, false));
    }
    send(&mut alice, msg(3, 0, 106, true));

    // A group of the three; a message to it.
    alice.send(
        GroupR {
            req: 1,
            op: GroupOp::Create as u8,
            group: 0,
            members: Bytes::new(),
        }
        .with_members(&[2, 3]),
    );
    let group = loop {
        match alice.next(Duration::from_secs(10)) {
            Got::Frame(Frame::GroupA(g)) => break g.group,
            Got::Frame(Frame::Error(e)) => panic!("group refused: {e:?}"),
            Got::Frame(_) => {}
            other => panic!("no group:A: {other:?}"),
        }
    };
    send(&mut alice, msg(0, group, 200, false));

    let want = (N + 6 + 1) as usize;
    hook.wait_for(Duration::from_secs(20), "every message event", |ev| {
        messages(ev).len() >= want
    });
    let ev = hook.events();
    let msgs = messages(&ev);
    assert_eq!(msgs.len(), want, "{msgs:?}");
    for m in &msgs {
        let id = m["msg_id"].as_u64().expect("msg_id");
        assert_eq!(m["id"], format!("m-1-{id}"), "{m}");
        assert_eq!(m["from"], 1);
        match id {
            1..=N => {
                assert_eq!((m["to"].as_u64(), m["seq"].as_u64()), (Some(2), Some(id)));
                if id == 1 {
                    // The stored time, as in the msg:A.
                    assert_eq!(m["time"].as_u64(), Some(first.server_time), "{m}");
                }
                assert_eq!(ids(&m["offline"]), Vec::<u64>::new(), "bob is on b: {m}");
                assert_eq!(m["push"], true);
            }
            101..=105 => assert_eq!(ids(&m["offline"]), vec![3], "{m}"),
            106 => {
                assert_eq!(m["push"], false);
                assert_eq!(ids(&m["offline"]), Vec::<u64>::new());
            }
            200 => {
                assert_eq!(m["group"].as_u64(), Some(group));
                assert_eq!(ids(&m["offline"]), vec![3], "only carol: {m}");
            }
            _ => panic!("unexpected message event {m}"),
        }
    }
    let groups: Vec<Value> = distinct(&ev)
        .into_iter()
        .filter(|e| e["type"] == "group")
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["op"], "create");
    assert_eq!(groups[0]["by"], 1);
    assert_eq!(ids(&groups[0]["members"]), vec![1, 2, 3]);

    // A transfer names the old owner and the new one in user order: bob
    // (2) hands a group of his to alice (1).
    let group_request = |c: &mut Client, req: u64, op: GroupOp, group: u64, members: &[u64]| {
        c.send(
            GroupR {
                req,
                op: op as u8,
                group,
                members: Bytes::new(),
            }
            .with_members(members),
        );
        loop {
            match c.next(Duration::from_secs(10)) {
                Got::Frame(Frame::GroupA(g)) => break g.group,
                Got::Frame(Frame::Error(e)) => panic!("{op:?} refused: {e:?}"),
                Got::Frame(_) => {}
                other => panic!("no group:A: {other:?}"),
            }
        }
    };
    let bobs = group_request(&mut bob, 1, GroupOp::Create, 0, &[1]);
    group_request(&mut bob, 2, GroupOp::Transfer, bobs, &[1]);
    let transfer = |ev: &[Value]| {
        distinct(ev)
            .into_iter()
            .find(|e| e["type"] == "group" && e["op"] == "transfer")
    };
    hook.wait_for(Duration::from_secs(20), "the transfer event", |ev| {
        transfer(ev).is_some()
    });
    let transfer = transfer(&hook.events()).expect("transfer event");
    assert_eq!(transfer["group"].as_u64(), Some(bobs), "{transfer}");
    assert_eq!(ids(&transfer["members"]), vec![1, 2], "{transfer}");

    // A retransmit through the other node: the same event id, stored once.
    let before = hook.distinct();
    let mut alice_b = Client::login(b.addr(), 1, 2);
    send(
        &mut alice_b,
        MsgR {
            retry: true,
            ..msg(2, 0, 1, false)
        },
    );
    drop(alice_b);

    // The receiver goes away; messages, and bob leaving, wait for it.
    hook.down();
    for i in N + 1..=N + 10 {
        send(&mut alice, msg(2, 0, i, false));
    }
    drop(bob);
    std::thread::sleep(Duration::from_millis(1500));
    hook.up();
    hook.wait_for(Duration::from_secs(20), "the events held back", |ev| {
        messages(ev).len() >= want + 10 && !presence(ev, "offline", 2).is_empty()
    });
    let ev = hook.events();
    let off = presence(&ev, "offline", 2);
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(
        (&off[0]["node"], &off[0]["reason"], &off[0]["device"]),
        (&"b".into(), &"closed".into(), &7.into())
    );
    let msgs = messages(&ev);
    assert_eq!(msgs.len(), want + 10, "no loss, no extra event");
    // Alice's second device came and went: one online and one offline
    // event of her own on b; the retransmit added no message event.
    assert!(
        hook.distinct() >= before + 10,
        "{} distinct before, {} after",
        before,
        hook.distinct()
    );
    // One user's events in the order stored: alice's messages to bob.
    let to_bob: Vec<u64> = msgs
        .iter()
        .filter(|m| m["to"] == 2)
        .filter_map(|m| m["msg_id"].as_u64())
        .collect();
    assert_eq!(to_bob, (1..=N + 10).collect::<Vec<_>>());
    assert_eq!(hook.bad_signatures(), 0);
    // The stream is a work queue: what the webhook acked is gone.
    let stream = format!("{prefix}_EVENTS");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = stream_messages(nats, &stream);
    while held != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        held = stream_messages(nats, &stream);
    }
    assert_eq!(
        held,
        Some(0),
        "events left in {stream} after the webhook took them"
    );
    drop(alice);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// How many messages `stream` holds, as its leader reports them in
/// `/jsz` (`state.messages`); `None` if no leader is known.
fn stream_messages(nats: &NatsCluster, stream: &str) -> Option<u64> {
    let leader = nats.stream_leader(stream)?;
    let i = nats.node_index(&leader)?;
    let (_, body) = nats.monitor(i, "/jsz?accounts=true&streams=true").ok()?;
    let jsz: Value = serde_json::from_str(&body).ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == stream)?["state"]["messages"]
        .as_u64()
}

/// An `[events]` config sending to `hook`, in a directory of its own.
fn events_config(name: &str, hook: &Hook) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("imgate.toml");
    std::fs::write(
        &config,
        format!(
            "[events]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nbatch = 50\nlinger_ms = 5\n\
             timeout_ms = 2000\nretry_min_ms = 20\nretry_max_ms = 200\n",
            hook.url()
        ),
    )
    .expect("config");
    config
}

/// The message event of `msg_id` (sent by anyone), once it arrived.
fn message_event(hook: &Hook, msg_id: u64) -> Value {
    hook.wait_for(Duration::from_secs(20), "a message event", |ev| {
        messages(ev).iter().any(|m| m["msg_id"] == msg_id)
    });
    messages(&hook.events())
        .into_iter()
        .find(|m| m["msg_id"] == msg_id)
        .expect("message event")
}

#[test]
fn a_node_killed_for_good_has_its_users_reported_offline() {
    let Some(nats) = common::nats::shared() else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let started = Instant::now();
    let prefix = format!("L{}", std::process::id());
    let hook = Hook::start(HOOK_SECRET);
    let config = events_config("cluster-lost", &hook);
    // With `--tick-ms 20` a node refreshes its key every second and is
    // lost three seconds after its last refresh.
    let a = node(nats, &prefix, "a", &config);
    let mut b = node(nats, &prefix, "b", &config);

    // Frank (6) on a; dave (4) on b only; erin (5) on both.
    let mut frank = Client::login(a.addr(), 6, 1);
    let dave = Client::login(b.addr(), 4, 3);
    let erin_a = Client::login(a.addr(), 5, 1);
    let erin_b = Client::login(b.addr(), 5, 2);
    hook.wait_for(Duration::from_secs(20), "everyone online", |ev| {
        presence(ev, "online", 4).len() == 1
            && presence(ev, "online", 5).len() == 2
            && presence(ev, "online", 6).len() == 1
    });
    send(&mut frank, msg(4, 0, 1, false));
    let m = message_event(&hook, 1);
    assert_eq!(ids(&m["offline"]), Vec::<u64>::new(), "dave is on b: {m}");

    // b dies without a word and never comes back.
    b.0.kill9();
    drop((dave, erin_b));
    let killed = Instant::now();
    hook.wait_for(Duration::from_secs(45), "node_lost for b's users", |ev| {
        !presence(ev, "offline", 4).is_empty() && !presence(ev, "offline", 5).is_empty()
    });
    eprintln!("node_lost events {:?} after the kill", killed.elapsed());
    let ev = hook.events();
    for (user, device) in [(4, 3), (5, 2)] {
        let off = presence(&ev, "offline", user);
        assert_eq!(off.len(), 1, "{off:?}");
        assert_eq!(
            (&off[0]["node"], &off[0]["reason"], &off[0]["device"]),
            (&"b".into(), &"node_lost".into(), &device.into()),
            "{}",
            off[0]
        );
        let id = off[0]["id"].as_str().unwrap_or_default();
        assert!(id.starts_with(&format!("lost-b-{user}-")), "{id}");
    }

    // Dave is offline now; erin, still on a, is not.
    send(&mut frank, msg(4, 0, 2, false));
    send(&mut frank, msg(5, 0, 3, false));
    let m = message_event(&hook, 2);
    assert_eq!(ids(&m["offline"]), vec![4], "dave was on b only: {m}");
    let m = message_event(&hook, 3);
    assert_eq!(ids(&m["offline"]), Vec::<u64>::new(), "erin is on a: {m}");
    // No node_lost for a's users, and a reported nobody offline twice.
    let ev = hook.events();
    assert!(presence(&ev, "offline", 6).is_empty());
    assert_eq!(presence(&ev, "offline", 5).len(), 1);
    assert_eq!(hook.bad_signatures(), 0);
    drop((frank, erin_a, a));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_node_that_stalled_past_the_bound_reports_its_users_online_again() {
    let Some(nats) = common::nats::shared() else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let started = Instant::now();
    let prefix = format!("S{}", std::process::id());
    let hook = Hook::start(HOOK_SECRET);
    let config = events_config("cluster-stall", &hook);
    let a = node(nats, &prefix, "a", &config);
    let b = node(nats, &prefix, "b", &config);
    let mut frank = Client::login(a.addr(), 6, 1);
    let grace = Client::login(b.addr(), 7, 4);
    hook.wait_for(Duration::from_secs(20), "both online", |ev| {
        presence(ev, "online", 6).len() == 1 && presence(ev, "online", 7).len() == 1
    });

    // b stops answering long enough to be taken for lost, then resumes.
    b.0.signal(libc::SIGSTOP);
    hook.wait_for(Duration::from_secs(45), "node_lost for grace", |ev| {
        !presence(ev, "offline", 7).is_empty()
    });
    b.0.signal(libc::SIGCONT);
    hook.wait_for(Duration::from_secs(20), "grace online again", |ev| {
        presence(ev, "online", 7).len() == 2
    });
    let ev = hook.events();
    let off = presence(&ev, "offline", 7);
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(off[0]["reason"], "node_lost");
    let on = presence(&ev, "online", 7);
    assert_eq!((&on[1]["node"], &on[1]["device"]), (&"b".into(), &4.into()));

    // a counts her online again once it read b's key (within a period).
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1.. {
        send(&mut frank, msg(7, 0, id, false));
        let m = message_event(&hook, id);
        if ids(&m["offline"]).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "grace still offline: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(presence(&hook.events(), "offline", 7).len(), 1);
    drop((frank, grace, a, b));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_clean_stop_of_the_sending_node_hands_the_webhook_to_another_at_once() {
    let Some(nats) = common::nats::shared() else {
        eprintln!("skipped: nats-server not installed");
        return;
    };
    let prefix = format!("H{}", std::process::id());
    let hook = Hook::start(HOOK_SECRET);
    let config = events_config("cluster-handover", &hook);
    // Node a alone: it takes the lease with its first event.
    let mut a = node(nats, &prefix, "a", &config);
    let mut alice = Client::login(a.addr(), 1, 1);
    send(&mut alice, msg(2, 0, 1, false));
    message_event(&hook, 1);
    let b = node(nats, &prefix, "b", &config);
    let mut carol = Client::login(b.addr(), 3, 1);
    drop(alice);
    // A clean stop of a: without the lease handed back, b would wait for
    // it to run out (twice ack_wait, 60 s here).
    a.0.signal(libc::SIGTERM);
    assert!(
        a.0.wait_exit(Duration::from_secs(20)),
        "node a did not stop"
    );
    let stopped = Instant::now();
    send(&mut carol, msg(2, 0, 2, false));
    hook.wait_for(Duration::from_secs(15), "the event sent by node b", |ev| {
        messages(ev).iter().any(|m| m["msg_id"] == 2)
    });
    eprintln!(
        "event through node b {:?} after node a stopped",
        stopped.elapsed()
    );
    // What node a held when it stopped (alice's offline, at least) was
    // given back, not lost.
    hook.wait_for(
        Duration::from_secs(15),
        "alice's offline from node a",
        |ev| {
            ev.iter()
                .any(|e| e["type"] == "offline" && e["user"] == 1 && e["node"] == "a")
        },
    );
}
