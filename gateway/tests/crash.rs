//! Crash safety: SIGKILL the real gateway in the middle of a send burst,
//! restart it on the same data directory, and prove that every message that
//! got a msg:A is delivered exactly once, in order, with sequence ids that
//! continue without reuse or gap.

mod common;

use std::{
    collections::HashSet,
    ffi::OsString,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    SECRET,
    peer::Peer,
    process::{Gateway, free_port},
};
use imgate_codec::client::Event;

fn spawn(port: u16, dir: &std::path::Path) -> Gateway {
    let args = [
        "--no-metrics",
        "--secret",
        SECRET,
        "--workers",
        "2",
        "--durability",
        "fsync",
        // The burst below is far above a chat client's rate.
        "--max-frames-per-sec",
        "1000000",
        "--frame-burst",
        "1000000",
        "--data-dir",
    ];
    let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
    args.push(dir.into());
    Gateway::spawn(port, args, None, Duration::from_secs(10))
}

#[test]
fn acknowledged_messages_survive_sigkill_exactly_once_in_order() {
    let dir = std::env::temp_dir().join(format!("imgate-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut gw = spawn(port, &dir);

    const N: usize = 10_000;
    let mut a = Peer::with(addr, 1, 1, |c| c.max_in_flight = N);
    let mut ids = Vec::with_capacity(N);
    for i in 0..N as u32 {
        ids.push(a.send_to(2, &i.to_be_bytes()));
    }
    // Kill it once some, not all, messages are acknowledged.
    let acked = |p: &Peer| {
        p.events
            .iter()
            .filter(|e| matches!(e, Event::Acked { .. }))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked(&a) < 100 {
        assert!(
            Instant::now() < deadline,
            "no acks: {:?} {:?}",
            a.client.stats(),
            &a.events[..a.events.len().min(5)]
        );
        a.pump(Duration::from_millis(1));
    }
    gw.kill9();
    while a.pump(Duration::from_millis(50)) {}
    let acked_before: HashSet<u64> = a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Acked { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert!(
        !acked_before.is_empty() && acked_before.len() < N,
        "the kill landed mid-burst: {} of {N} acked",
        acked_before.len()
    );

    eprintln!(
        "killed with {} of {N} messages acknowledged",
        acked_before.len()
    );
    // Restart; the sender reconnects and retransmits what was not acked,
    // with the same msg ids.
    let mut gw = spawn(port, &dir);
    a.reconnect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.client.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "not all acked after restart: {} in flight, {:?}, last events {:?}",
            a.client.in_flight(),
            a.client.stats(),
            &a.events[a.events.len().saturating_sub(3)..]
        );
        a.pump(Duration::from_millis(10));
    }
    assert_eq!(a.client.stats().failed, 0, "no send failed");

    // The receiver pulls everything: each message once, in send order,
    // sequence ids 1..=N.
    let mut b = Peer::with(addr, 2, 1, |c| c.sync_limit = 500);
    b.wait(
        |e| matches!(e, Event::SyncDone { group: 0 }),
        "the pull ends",
    );
    let msgs = b.messages();
    assert_eq!(msgs.len(), N, "every message exactly once");
    for (i, (_, seq, from, body)) in msgs.iter().enumerate() {
        assert_eq!((*seq, *from), (i as u64 + 1, 1), "contiguous, in order");
        assert_eq!(&body[..], &(i as u32).to_be_bytes(), "in send order");
    }
    let got: HashSet<u64> = b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert!(acked_before.is_subset(&got), "every acked message is there");

    // Sequence ids continue after the restart without reuse or gap.
    a.send_to(2, b"after");
    let e = a.wait(
        |e| matches!(e, Event::Acked { seq, .. } if *seq == N as u64 + 1),
        "the next seq",
    );
    assert!(matches!(e, Event::Acked { seq, .. } if seq == N as u64 + 1));

    gw.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}
