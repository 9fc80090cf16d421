//! The scenarios that need storage (groups, offline users) and the loss
//! checks under chaos, against the default backend (`imgate::delivery`) on
//! its in-memory store.

mod common;

use common::{delivery as durable, figure, loadgen};

#[test]
fn group_messages_reach_every_member() {
    let gw = durable();
    let r = loadgen(
        gw.addr(),
        &[
            "group",
            "-g",
            "3",
            "-s",
            "4",
            "--rate",
            "300",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--drain",
            "3s",
        ],
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

#[test]
fn offline_users_pull_everything() {
    let gw = durable();
    let r = loadgen(
        gw.addr(),
        &["offline", "-u", "4", "-m", "250", "--rate", "2000"],
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.counters.pulled, 1000);
    assert_eq!(figure(&r, "receivers done pulling"), 4);
    gw.shutdown();
}

#[test]
fn chaos_loses_and_duplicates_nothing() {
    let gw = durable();
    let r = loadgen(
        gw.addr(),
        &[
            "chaos",
            "--pairs",
            "10",
            "--rate",
            "400",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "--cut-fraction",
            "0.2",
            "--cut-every",
            "300ms",
            "--reconnect-max",
            "100ms",
            "--drain",
            "10s",
        ],
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.counters.cuts > 5, "{:?}", r.counters);
    let v = r.verdict.as_ref().expect("a verdict");
    assert_eq!(v.lost, 0);
    assert_eq!(v.unacked, 0);
    assert_eq!(r.counters.duplicates_app, 0);
    gw.shutdown();
}

#[test]
fn chat_measures_receipts() {
    let gw = durable();
    let r = loadgen(
        gw.addr(),
        &[
            "chat",
            "--pairs",
            "4",
            "--rate",
            "400",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--drain",
            "3s",
        ],
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.windows[0].receipt.count > 0, "{:?}", r.windows[0]);
    gw.shutdown();
}
