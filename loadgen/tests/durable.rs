//! Group scenarios against the default backend (`imgate::delivery`) on its
//! in-memory store; the other storing-backend scenarios are in
//! `scenarios.rs`.

mod common;

use common::{delivery as durable, loadgen};

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
