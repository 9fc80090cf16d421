//! Events to a real HTTP receiver (`common::hook`), from the embedded
//! backend: every event once after de-duplication by id, the offline
//! recipients and the no-push flag, presence and group events; nothing
//! lost while the receiver is down or failing, and chat not slowed by it;
//! a SIGKILL of the real binary mid-stream replays from the cursor with no
//! gap; a receiver with the wrong secret sees every signature fail.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    Client, Gw,
    hook::{Hook, Mode},
    process::{Gateway, free_port, store_args},
};
use imgate::config::{Config, EventsConfig};
use imgate_codec::{
    Frame,
    frame::{GroupOp, GroupR, MsgR},
};
use serde_json::Value;

const HOOK_SECRET: &str = "hook-secret";

fn events_on(c: &mut Config, hook: &Hook) {
    c.events = EventsConfig {
        url: hook.url(),
        secret: HOOK_SECRET.into(),
        batch: 64,
        linger_ms: 5,
        timeout_ms: 2000,
        retry_min_ms: 20,
        retry_max_ms: 200,
        ..EventsConfig::default()
    };
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

/// Sends and waits for the msg:A; returns its seq.
fn send(c: &mut Client, m: MsgR) -> u64 {
    c.send(m);
    loop {
        match c.frame() {
            Frame::MsgA(a) => return a.seq,
            Frame::Error(e) => panic!("refused: {e:?}"),
            _ => {}
        }
    }
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_kind_of_event_arrives_once_with_the_offline_recipients() {
    let hook = Hook::start(HOOK_SECRET);
    let gw = Gw::start(|c| events_on(c, &hook));
    let addr = gw.addr();
    let mut a = Client::login(addr, 1, 1);
    // User 2 is offline: a message to it names it for a push.
    for i in 1..=100 {
        send(&mut a, msg(2, 0, i, false));
    }
    // A silent message: no push.
    send(&mut a, msg(2, 0, 101, true));
    let b = Client::login(addr, 2, 1);
    // Now user 2 is online: nobody to push.
    send(&mut a, msg(2, 0, 102, false));
    // A group of 1, 2 and 3, where 3 never connects.
    a.send(
        GroupR {
            req: 1,
            op: GroupOp::Create as u8,
            group: 0,
            members: Bytes::new(),
        }
        .with_members(&[2, 3]),
    );
    let group = loop {
        match a.frame() {
            Frame::GroupA(g) => break g.group,
            Frame::Error(e) => panic!("refused: {e:?}"),
            _ => {}
        }
    };
    send(&mut a, msg(0, group, 103, false));
    drop(b.stream.shutdown(std::net::Shutdown::Both));
    hook.wait_for(Duration::from_secs(10), "every event", |e| {
        of_type(e, "message").len() >= 103 && !of_type(e, "offline").is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    let events = hook.events();
    assert_eq!(hook.duplicates(), 0, "no duplicates without a failure");
    assert_eq!(hook.bad_signatures(), 0);
    let messages = of_type(&events, "message");
    assert_eq!(messages.len(), 103);
    // In order: inbox 2's seq ids rise.
    let seqs: Vec<u64> = messages
        .iter()
        .filter(|m| m["to"] == 2)
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=102).collect::<Vec<_>>());
    let by_id: BTreeMap<u64, &Value> = messages
        .iter()
        .filter_map(|m| Some((m["msg_id"].as_u64()?, *m)))
        .collect();
    let first = by_id[&1];
    assert_eq!(first["id"], "m-1-1");
    assert_eq!(first["from"], 1);
    assert_eq!(first["body"], "Ym9keSAx", "base64 of 'body 1'");
    assert_eq!(first["push"], true);
    assert_eq!(first["offline"], serde_json::json!([2]));
    assert_eq!(by_id[&101]["push"], false);
    assert_eq!(by_id[&101]["offline"], serde_json::json!([]));
    assert_eq!(by_id[&102]["offline"], serde_json::json!([]));
    assert_eq!(by_id[&103]["group"], group);
    assert_eq!(by_id[&103]["offline"], serde_json::json!([3]));
    let online: Vec<u64> = of_type(&events, "online")
        .iter()
        .filter_map(|e| e["user"].as_u64())
        .collect();
    assert_eq!(online, [1, 2]);
    let offline = of_type(&events, "offline");
    assert_eq!(offline.len(), 1);
    assert_eq!(
        (offline[0]["user"].as_u64(), offline[0]["reason"].as_str()),
        (Some(2), Some("closed"))
    );
    let groups = of_type(&events, "group");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["op"], "create");
    assert_eq!(groups[0]["by"], 1);
    assert_eq!(groups[0]["members"], serde_json::json!([1, 2, 3]));
    // Every event is one id.
    assert_eq!(ids(&events).len(), events.len());
}

#[test]
fn a_receiver_down_or_failing_loses_nothing_and_does_not_slow_chat() {
    let mut hook = Hook::start(HOOK_SECRET);
    let gw = Gw::start(|c| {
        events_on(c, &hook);
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    });
    let addr = gw.addr();
    let mut a = Client::login(addr, 1, 1);
    let mut latencies = Vec::new();
    let mut timed_send = |a: &mut Client, id: u64| {
        let t = Instant::now();
        send(a, msg(2, 0, id, false));
        latencies.push(t.elapsed());
    };
    // Down: connections refused.
    hook.down();
    for i in 1..=300 {
        timed_send(&mut a, i);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.counter("imgate_events_lag") >= 300, "the lag shows");
    assert!(gw.counter("imgate_events_post_failures_total") > 0);
    // Up but answering 500, then slowly (longer than the POST timeout).
    hook.set_mode(Mode::Fail);
    hook.up();
    wait_posts(&hook, 2);
    for i in 301..=600 {
        timed_send(&mut a, i);
    }
    // Sent while a POST hangs (the receiver takes longer than the
    // gateway's POST timeout).
    hook.set_mode(Mode::Slow(Duration::from_millis(3000)));
    wait_posts(&hook, 1);
    let failed = gw.counter("imgate_events_post_failures_total");
    let hung = Instant::now();
    for i in 601..=900 {
        timed_send(&mut a, i);
    }
    assert!(hook.events().is_empty(), "nothing accepted yet");
    // The hanging POST fails at timeout_ms (2 s), before the receiver's
    // answer at 3 s.
    while gw.counter("imgate_events_post_failures_total") == failed {
        assert!(hung.elapsed() < Duration::from_millis(2900), "no timeout");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A chat message's round trip never waited on the webhook: a POST
    // that hangs for seconds is nowhere in it.
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(1000),
        "chat waited on the webhook: worst msg:A {worst:?}, p50 {:?}",
        latencies[latencies.len() / 2]
    );
    hook.set_mode(Mode::Ok);
    hook.wait_for(Duration::from_secs(30), "all 900 messages", |e| {
        ids(e).iter().filter(|i| i.starts_with("m-")).count() >= 900
    });
    let events = hook.events();
    let got: BTreeSet<u64> = of_type(&events, "message")
        .iter()
        .filter_map(|m| m["msg_id"].as_u64())
        .collect();
    assert_eq!(got, (1..=900).collect::<BTreeSet<_>>());
    // The backlog went out in batches of at most `batch` (64).
    assert_eq!(hook.largest_batch(), 64);
    // Per user in order, across retries: the first time each id was seen.
    let mut seen = BTreeSet::new();
    let firsts: Vec<u64> = of_type(&events, "message")
        .iter()
        .filter(|m| seen.insert(m["id"].as_str().unwrap_or_default().to_string()))
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(firsts, (1..=900).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.counter("imgate_events_lag"), 0);
    assert!(gw.counter("imgate_events_sent_total") >= 900);
}

/// Waits until the receiver got `n` more POSTs.
fn wait_posts(hook: &Hook, n: u64) {
    let (from, deadline) = (hook.posts(), Instant::now() + Duration::from_secs(10));
    while hook.posts() < from + n {
        assert!(Instant::now() < deadline, "no POST came");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_wrong_secret_fails_every_signature_and_nothing_is_lost() {
    let hook = Hook::start("not-the-secret");
    let gw = Gw::start(|c| events_on(c, &hook));
    let mut a = Client::login(gw.addr(), 1, 1);
    for i in 1..=10 {
        send(&mut a, msg(2, 0, i, false));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.bad_signatures() < 3 {
        assert!(Instant::now() < deadline, "no POST came");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hook.events().is_empty());
}

/// User 1 logged in, or None while the gateway is down.
fn try_login(addr: std::net::SocketAddr) -> Option<Client> {
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    let mut c = Client::connect_stream(stream);
    c.send(imgate_codec::frame::Login {
        user: 1,
        device: 1,
        resume: 0,
        token: common::token(1, 1),
    });
    match c.next(Duration::from_secs(5)) {
        common::Got::Frame(Frame::LoginOk(_)) => Some(c),
        _ => None,
    }
}

/// The config file of a gateway process with events on.
fn config_file(dir: &std::path::Path, hook: &Hook) -> std::path::PathBuf {
    let path = dir.join("imgate.toml");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        &path,
        format!(
            "[events]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nbatch = 50\nlinger_ms = 5\nretry_min_ms = 20\nretry_max_ms = 200\n",
            hook.url()
        ),
    )
    .expect("config");
    path
}

#[test]
fn a_sigkill_mid_stream_replays_from_the_cursor_with_no_gap() {
    let dir = std::env::temp_dir().join(format!("imgate-events-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hook = Hook::start(HOOK_SECRET);
    let cfg = config_file(&dir, &hook);
    let mut args = store_args(&dir.join("data"), &["--no-metrics"]);
    args.extend(["--config".into(), cfg.into_os_string()]);
    let mut gw = Gateway::spawn(
        free_port(),
        args,
        Some(dir.join("log")),
        Duration::from_secs(20),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], gw.port).into();
    // The receiver is slow, so events wait in the outbox when the kill
    // comes.
    hook.set_mode(Mode::Slow(Duration::from_millis(50)));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 1u64;
            while !stop.load(SeqCst) && next <= 3000 {
                let Some(mut a) = try_login(addr) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                // Resend the unacked one after a reconnect: retransmits
                // are de-duplicated, by the store and by event id.
                loop {
                    a.send(msg(2, 0, next, false));
                    match a.next(Duration::from_secs(5)) {
                        common::Got::Frame(Frame::MsgA(_)) => {
                            acked.store(next, SeqCst);
                            next += 1;
                            if next > 3000 || stop.load(SeqCst) {
                                return;
                            }
                        }
                        common::Got::Frame(_) => {}
                        common::Got::Closed | common::Got::Timeout => break,
                    }
                }
            }
        })
    };
    while acked.load(SeqCst) < 1000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    gw.kill9();
    let at_kill = acked.load(SeqCst);
    gw.start();
    while acked.load(SeqCst) < 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, SeqCst);
    sender.join().expect("sender");
    let last = acked.load(SeqCst);
    hook.set_mode(Mode::Ok);
    hook.wait_for(Duration::from_secs(60), "every acked message", |e| {
        let got: BTreeSet<u64> = of_type(e, "message")
            .iter()
            .filter_map(|m| m["msg_id"].as_u64())
            .collect();
        (1..=last).all(|i| got.contains(&i))
    });
    let events = hook.events();
    // User 1 was online at the kill: the restart says it went offline.
    assert!(
        of_type(&events, "offline")
            .iter()
            .any(|e| e["user"] == 1 && e["reason"] == "restart"),
        "no restart offline event"
    );
    // No gap: inbox 2's seq ids, de-duplicated, are 1..=n.
    let seqs: BTreeSet<u64> = of_type(&events, "message")
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<BTreeSet<_>>());
    eprintln!(
        "killed at {at_kill} acked; {last} acked in all; {} events, {} duplicates",
        events.len(),
        hook.duplicates()
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_the_configured_types_are_sent() {
    let hook = Hook::start(HOOK_SECRET);
    let gw = Gw::start(|c| {
        events_on(c, &hook);
        c.events.types = vec!["message".into()];
    });
    let mut a = Client::login(gw.addr(), 1, 1);
    let b = Client::login(gw.addr(), 2, 1);
    for i in 1..=5 {
        send(&mut a, msg(2, 0, i, false));
    }
    drop(b);
    hook.wait_for(Duration::from_secs(10), "five messages", |e| e.len() >= 5);
    std::thread::sleep(Duration::from_millis(300));
    let events = hook.events();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "message"));
}

#[test]
fn past_max_lag_the_oldest_events_are_dropped_and_counted() {
    let mut hook = Hook::start(HOOK_SECRET);
    let gw = Gw::start(|c| {
        events_on(c, &hook);
        c.events.types = vec!["message".into()];
        c.events.max_lag = 100;
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    });
    hook.down();
    let mut a = Client::login(gw.addr(), 1, 1);
    for i in 1..=300 {
        send(&mut a, msg(2, 0, i, false));
    }
    hook.up();
    hook.wait_for(Duration::from_secs(20), "the newest messages", |e| {
        e.iter().any(|m| m["msg_id"] == 300)
    });
    std::thread::sleep(Duration::from_millis(300));
    let got: BTreeSet<u64> = hook
        .events()
        .iter()
        .filter_map(|m| m["msg_id"].as_u64())
        .collect();
    // At most max_lag waited: the batch the sender held while the
    // receiver was down (at most 64, the oldest) and the newest.
    assert!(
        got.len() <= 100 && (300 - 35..=300).all(|i| got.contains(&i)),
        "kept {} events: {:?}..",
        got.len(),
        got.iter().take(5).collect::<Vec<_>>()
    );
    let dropped = gw.counter("imgate_events_dropped_total");
    assert!(dropped >= 200, "dropped {dropped}");
    assert_eq!(dropped + got.len() as u64, 300);
}

#[test]
fn an_https_webhook_is_checked_against_the_configured_ca() {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("names")
        .self_signed(&key)
        .expect("self-signed");
    let dir = std::env::temp_dir().join(format!("imgate-events-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.pem()).expect("ca");
    let hook = Hook::start_tls(HOOK_SECRET, &cert.pem(), &key.serialize_pem());
    assert!(hook.url().starts_with("https://"));
    // Trusting the Mozilla roots only: the certificate is refused, no
    // request reaches the receiver, and the failures are counted.
    let untrusting = Gw::start(|c| {
        events_on(c, &hook);
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    });
    let mut a = Client::login(untrusting.addr(), 1, 1);
    send(&mut a, msg(2, 0, 1, false));
    let deadline = Instant::now() + Duration::from_secs(10);
    while untrusting.counter("imgate_events_post_failures_total") < 2 {
        assert!(Instant::now() < deadline, "no failed POST");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hook.posts(), 0);
    drop(a);
    drop(untrusting);
    // With the CA file: every event arrives over TLS.
    let trusting = Gw::start(|c| {
        events_on(c, &hook);
        c.events.ca_file = Some(ca.clone());
    });
    let mut a = Client::login(trusting.addr(), 1, 1);
    for i in 1..=3 {
        send(&mut a, msg(2, 0, i, false));
    }
    hook.wait_for(Duration::from_secs(10), "three messages over https", |e| {
        of_type(e, "message").len() >= 3
    });
    assert_eq!(hook.bad_signatures(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lag_past_lag_alert_is_logged_as_an_error() {
    let dir = std::env::temp_dir().join(format!("imgate-events-alert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut hook = Hook::start(HOOK_SECRET);
    hook.down();
    let cfg = config_file(&dir, &hook);
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str("lag_alert = 20\n");
    std::fs::write(&cfg, text).expect("config");
    let mut args = store_args(&dir.join("data"), &["--log-format", "json", "--no-metrics"]);
    args.extend(["--config".into(), cfg.into_os_string()]);
    let log = dir.join("log");
    let gw = Gateway::spawn(
        free_port(),
        args,
        Some(log.clone()),
        Duration::from_secs(20),
    );
    let mut a = Client::login(([127, 0, 0, 1], gw.port).into(), 1, 1);
    for i in 1..=10 {
        send(&mut a, msg(2, 0, i, false));
    }
    // 11 waiting (and the online event): under the alert.
    std::thread::sleep(Duration::from_millis(500));
    let alert = "events are falling behind";
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged().contains(alert), "{}", logged());
    for i in 11..=30 {
        send(&mut a, msg(2, 0, i, false));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged().contains(alert) {
        assert!(Instant::now() < deadline, "no alert: {}", logged());
        std::thread::sleep(Duration::from_millis(20));
    }
    let line: Value = logged()
        .lines()
        .find(|l| l.contains(alert))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a JSON log line");
    assert_eq!(line["level"], "ERROR", "{line}");
    let waiting = line["fields"]["waiting"].as_u64().unwrap_or(0);
    assert!((21..=31).contains(&waiting), "{line}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
