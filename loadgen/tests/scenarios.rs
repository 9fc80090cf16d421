//! Every scenario at small scale against a real gateway started in-process,
//! and the correctness checks themselves checked: broken backends that
//! drop or duplicate pushes must make the loss and duplicate counters fire.

mod common;

use common::{
    Broken, Fault, delivery, delivery_with_websocket, figure, loadgen, relay, start_with,
};
use imgate_loadgen::RunError;

#[test]
fn idle_connections_log_in_and_hold() {
    let gw = relay();
    let r = loadgen(gw.addr(), "idle -n 200 --hold 1s --settle 100ms").expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.connections.opened, 200);
    assert_eq!(r.connections.failed, 0);
    assert_eq!(r.connections.login.count, 200);
    assert!(r.connections.login_rate > 0.0);
    assert_eq!(r.counters.logins, 200);
    gw.shutdown();
}

#[test]
fn chat_on_the_relay_delivers_everything_once() {
    let gw = relay();
    let r = loadgen(
        gw.addr(),
        "chat --pairs 4 --rate 400 --duration 1s --warmup 200ms --drain 3s",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 400, "{v:?}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.acked, v.sent);
    assert_eq!(v.delivered, v.sent);
    assert_eq!(r.counters.duplicates_app, 0);
    let w = &r.windows[0];
    assert!(w.sent >= 350 && w.sent <= 450, "{w:?}");
    assert_eq!(w.ack.count, w.sent);
    assert_eq!(w.delivery.count, w.sent);
    assert!(
        w.delivery.p50_ms > 0.0 && w.delivery.p50_ms < 100.0,
        "{w:?}"
    );
    // The relay sends no delivered receipts.
    assert_eq!(w.receipt.count, 0);
    gw.shutdown();
}

#[test]
fn chat_over_websocket_delivers_everything_once_with_receipts() {
    let gw = delivery_with_websocket();
    let r = loadgen(
        gw.ws_addr().expect("a WebSocket listener"),
        "chat --transport ws --pairs 4 --rate 400 --duration 1s --warmup 200ms --drain 3s",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 400, "{v:?}");
    assert_eq!((v.lost, v.acked, v.delivered), (0, v.sent, v.sent));
    assert_eq!(r.counters.duplicates_app, 0);
    assert!(r.windows[0].receipt.count > 0);
    // The same load generator over TCP against the WebSocket port fails to
    // log in: the transports are not confused.
    let r = loadgen(
        gw.ws_addr().expect("a WebSocket listener"),
        "idle -n 2 --hold 200ms",
    );
    assert!(r.map(|r| !r.passed()).unwrap_or(true));
    gw.shutdown();
}

#[test]
fn chat_with_a_storing_backend_measures_receipts() {
    let gw = delivery();
    let r = loadgen(
        gw.addr(),
        "chat --pairs 4 --rate 400 --duration 1s --warmup 200ms --drain 3s",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    let w = &r.windows[0];
    assert!(w.receipt.count > 0, "{w:?}");
    assert!(w.receipt.p50_ms >= w.delivery.p50_ms, "{w:?}");
    gw.shutdown();
}

#[test]
fn a_backend_that_drops_pushes_is_caught() {
    let gw = start_with(Box::new(Broken::new(Fault::DropEvery(10))));
    let r = loadgen(
        gw.addr(),
        "chat --pairs 4 --rate 400 --duration 1s --warmup 0s --drain 2s",
    )
    .expect("runs");
    assert!(!r.passed());
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.lost >= 30, "{v:?}");
    assert!(!v.lost_examples.is_empty());
    assert!(
        r.failures.iter().any(|f| f.contains("never arrived")),
        "{:?}",
        r.failures
    );
    assert!(r.counters.history_skipped > 0);
    gw.shutdown();
}

#[test]
fn a_backend_that_pushes_twice_is_caught() {
    let gw = start_with(Box::new(Broken::new(Fault::DuplicateEvery(10))));
    let r = loadgen(
        gw.addr(),
        "chat --pairs 4 --rate 400 --duration 1s --warmup 0s --drain 2s",
    )
    .expect("runs");
    assert!(!r.passed());
    assert!(r.counters.duplicates_app >= 30, "{:?}", r.counters);
    // New seqs each time: the client's de-duplication cannot see them.
    assert_eq!(r.counters.duplicates_client, 0);
    assert!(
        r.failures.iter().any(|f| f.contains("twice")),
        "{:?}",
        r.failures
    );
    assert_eq!(r.verdict.as_ref().map(|v| v.lost), Some(0));
    gw.shutdown();
}

#[test]
fn storm_everyone_logs_in_again() {
    let gw = relay();
    let r = loadgen(gw.addr(), "storm -n 100 --pause 200ms").expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(figure(&r, "storm 1: re-logged in"), 100);
    assert_eq!(r.connections.relogin.count, 100);
    assert_eq!(r.counters.cuts, 100);
    gw.shutdown();
}

#[test]
fn storm_with_traffic_loses_nothing_on_a_storing_backend() {
    let gw = delivery();
    let r = loadgen(gw.addr(), "storm -n 40 --rate 400 --pause 400ms --drain 8s").expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent > 100, "{v:?}");
    assert_eq!(v.lost, 0);
    gw.shutdown();
}

#[test]
fn chaos_loses_and_duplicates_nothing_on_a_storing_backend() {
    let gw = delivery();
    let r = loadgen(gw.addr(), "chaos --pairs 10 --rate 500 --duration 2s --warmup 200ms --cut-fraction 0.2 --cut-every 300ms --reconnect-max 100ms --drain 10s")
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.counters.cuts > 5, "{:?}", r.counters);
    assert!(r.counters.reconnects > 5, "{:?}", r.counters);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent > 800, "{v:?}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.unacked, 0);
    assert_eq!(r.counters.duplicates_app, 0);
    gw.shutdown();
}

#[test]
fn offline_on_the_relay_reports_that_nothing_was_kept() {
    let gw = relay();
    let t = std::time::Instant::now();
    let r = loadgen(gw.addr(), "offline -u 5 -m 20 --rate 500 --drain 2s").expect("runs");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    assert!(!r.passed());
    assert_eq!(r.verdict.as_ref().map(|v| v.lost), Some(100));
    assert!(
        r.warnings.iter().any(|w| w.contains("does not store")),
        "{:?}",
        r.warnings
    );
    gw.shutdown();
}

#[test]
fn offline_users_pull_everything_from_a_storing_backend() {
    let gw = delivery();
    let r = loadgen(gw.addr(), "offline -u 5 -m 300 --rate 3000").expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.counters.pulled, 1500);
    assert_eq!(figure(&r, "receivers done pulling"), 5);
    assert!(r.counters.sync_requests >= 5 * 3, "{:?}", r.counters);
    gw.shutdown();
}

#[test]
fn group_on_the_relay_reports_the_refusal() {
    let gw = relay();
    let t = std::time::Instant::now();
    let e = loadgen(gw.addr(), "group -g 2 -s 3 --rate 100 --duration 1s")
        .expect_err("the relay has no groups");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    match e {
        RunError::Failed(m) => {
            assert!(m.contains("refused to create groups"), "{m}");
            assert!(m.contains("InvalidRequest"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    gw.shutdown();
}

#[test]
fn capacity_steps_up_and_reports_the_best_rate() {
    let gw = relay();
    let r = loadgen(gw.addr(), "capacity --pairs 4 --start 200 --step 200 --max 600 --step-duration 500ms --settle 200ms --objective 1s")
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.windows.len(), 3);
    assert_eq!(
        figure(&r, "highest rate that held (msg/s)").as_f64(),
        Some(600.0)
    );
    gw.shutdown();
}

#[test]
fn a_gateway_that_is_not_there_is_reported() {
    let e = loadgen(
        "127.0.0.1:1".parse().expect("addr"),
        "idle -n 3 --connect-retries 0",
    )
    .expect_err("nothing listens");
    match e {
        RunError::Failed(m) => assert!(m.contains("no connection"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn chat_runs_on_the_epoll_driver_too() {
    let gw = relay();
    let r = loadgen(
        gw.addr(),
        "chat --pairs 4 --rate 200 --duration 1s --warmup 0s --driver epoll",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.driver, "epoll");
    assert_eq!(r.verdict.as_ref().map(|v| v.lost), Some(0));
    gw.shutdown();
}

#[test]
fn shards_split_the_users_without_overlap() {
    let gw = relay();
    let addr = gw.addr();
    let runs: Vec<_> = ["0/2", "1/2"]
        .into_iter()
        .map(|shard| {
            std::thread::spawn(move || {
                loadgen(
                    addr,
                    &format!("chat --pairs 6 --rate 300 --duration 1s --warmup 0s --shard {shard}"),
                )
            })
        })
        .collect();
    for h in runs {
        let r = h.join().expect("joins").expect("runs");
        assert!(r.passed(), "{:?}", r.failures);
        assert_eq!(r.connections.opened, 6);
        // Half the pairs, half the rate: about 150 messages in 1 s.
        let w = &r.windows[0];
        assert!((120..=180).contains(&w.sent), "{w:?}");
        assert_eq!(r.counters.foreign, 0);
    }
    gw.shutdown();
}

#[test]
fn group_messages_reach_every_member() {
    let gw = delivery();
    let r = loadgen(
        gw.addr(),
        "group -g 3 -s 4 --rate 300 --duration 1s --warmup 200ms --drain 3s",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 300, "{v:?}");
    assert_eq!(v.expected, v.acked * 3);
    assert_eq!(v.lost, 0);
    let w = &r.windows[0];
    assert_eq!(w.delivery.count, w.sent * 3);
    assert_eq!(w.group_last.count, w.sent);
    assert!(w.group_last.p50_ms >= w.delivery.p50_ms);
    gw.shutdown();
}
