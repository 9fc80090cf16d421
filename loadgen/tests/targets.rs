//! Several `--target`s: where the placement puts connections, and what a
//! connection does when its target is down or goes away. Every gateway here
//! is its own in-process node with its own store (no cluster), so runs that
//! must deliver keep each pair on one node.

mod common;

use std::time::{Duration, Instant};

use common::{closed_port, closed_ports, delivery, figure, loadgen_on, relay, relay_with_metrics};

#[test]
fn together_keeps_every_pair_on_one_of_two_gateways() {
    let a = delivery();
    let b = delivery();
    let r = loadgen_on(
        &[a.addr(), b.addr()],
        "chat --pairs 6 --rate 300 --duration 1s --warmup 200ms --drain 3s --placement together",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.placement, "together");
    assert_eq!(r.targets.len(), 2);
    for (t, gw) in r.targets.iter().zip([&a, &b]) {
        assert_eq!(t.address, gw.addr().to_string());
        // Three pairs each: pairs 0, 2, 4 on the first, 1, 3, 5 on the second.
        assert_eq!(t.placed, 6, "{t:?}");
        assert_eq!(t.logins, 6, "{t:?}");
        assert_eq!(t.last, 6, "{t:?}");
    }
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 300, "{v:?}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.delivered, v.sent);
    assert_eq!(r.counters.duplicates_app, 0);
    assert_eq!(r.counters.failovers, 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn round_robin_deals_connections_out_in_turn() {
    let gws = [relay(), relay(), relay()];
    let addrs: Vec<_> = gws.iter().map(|g| g.addr()).collect();
    let r = loadgen_on(
        &addrs,
        "idle -n 10 --hold 200ms --settle 100ms --placement round-robin",
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.placement, "round-robin");
    let placed: Vec<u64> = r.targets.iter().map(|t| t.placed).collect();
    assert_eq!(placed, vec![4, 3, 3]);
    let logins: Vec<u64> = r.targets.iter().map(|t| t.logins).collect();
    assert_eq!(logins, placed);
    for g in gws {
        g.shutdown();
    }
}

#[test]
fn a_target_that_is_down_fails_over_to_the_next() {
    let dead = closed_port();
    let gw = delivery();
    let t = Instant::now();
    let r = loadgen_on(
        &[dead, gw.addr()],
        "chat --pairs 4 --rate 200 --duration 1s --warmup 0s --drain 3s --placement together --connect-retries 1",
    )
    .expect("runs");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.connections.opened, 8);
    assert_eq!(r.connections.failed, 0);
    // Pairs 0 and 2 were placed on the dead target and moved on.
    assert_eq!(r.targets[0].placed, 4);
    assert_eq!(r.targets[0].connects, 0);
    assert_eq!(r.targets[1].logins, 8);
    assert_eq!(r.targets[1].last, 8);
    assert_eq!(r.counters.failovers, 4, "{:?}", r.counters);
    assert!(r.counters.connect_failures >= 8, "{:?}", r.counters);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 150, "{v:?}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.delivered, v.sent);
    gw.shutdown();
}

#[test]
fn connections_of_a_gateway_that_goes_away_move_to_the_next() {
    let a = relay();
    let b = relay();
    let addrs = [a.addr(), b.addr()];
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        a.shutdown();
    });
    let r = loadgen_on(
        &addrs,
        "idle -n 8 --hold 4s --settle 100ms --placement round-robin",
    )
    .expect("runs");
    stopper.join().expect("joins");
    assert_eq!(r.connections.opened, 8);
    // Its four, and any that came back before it stopped accepting.
    assert!(r.targets[0].logins >= 4, "{:?}", r.targets);
    assert_eq!(r.targets[0].last, 0, "{:?}", r.targets);
    assert!(r.targets[1].logins >= 8, "{:?}", r.targets);
    assert_eq!(r.targets[1].last, 8, "{:?}", r.targets);
    assert!(r.counters.failovers >= 4, "{:?}", r.counters);
    b.shutdown();
}

#[test]
fn every_target_down_is_reported() {
    let e =
        loadgen_on(&closed_ports(2), "idle -n 2 --connect-retries 0").expect_err("nothing listens");
    match e {
        imgate_loadgen::RunError::Failed(m) => {
            assert!(m.contains("no connection"), "{m}");
            assert_eq!(m.matches("127.0.0.1:").count(), 2, "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_metrics_endpoint_is_read_and_summed() {
    let a = relay_with_metrics();
    let b = relay_with_metrics();
    let ma = a.metrics_addr().expect("metrics").to_string();
    let mb = b.metrics_addr().expect("metrics").to_string();
    let r = loadgen_on(
        &[a.addr(), b.addr()],
        &format!(
            "idle -n 8 --hold 200ms --settle 200ms --placement round-robin --metrics {ma},{mb}"
        ),
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.gateway.len(), 3, "{:?}", r.gateway);
    for reading in &r.gateway {
        let names: Vec<&str> = reading
            .endpoints
            .iter()
            .map(|e| e.endpoint.as_str())
            .collect();
        assert_eq!(names, vec![ma.as_str(), mb.as_str()]);
        let rss: f64 = reading.endpoints.iter().map(|e| e.sample.rss_bytes).sum();
        let cpu: f64 = reading.endpoints.iter().map(|e| e.sample.cpu_seconds).sum();
        let conns: f64 = reading.endpoints.iter().map(|e| e.sample.connections).sum();
        assert_eq!(reading.sample.rss_bytes, rss);
        assert_eq!(reading.sample.cpu_seconds, cpu);
        assert_eq!(reading.sample.connections, conns);
    }
    // Logged in: four on each gateway, eight in the sum.
    let logged_in = &r.gateway[1];
    assert_eq!(logged_in.label, "logged in");
    for e in &logged_in.endpoints {
        assert_eq!(e.sample.connections, 4.0, "{e:?}");
    }
    assert_eq!(figure(&r, "gateway connections"), 8.0);
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["gateway"][1]["connections"], 8.0);
    assert_eq!(json["gateway"][1]["endpoints"][1]["endpoint"], mb);
    assert_eq!(json["gateway"][1]["endpoints"][1]["connections"], 4.0);
    assert_eq!(json["placement"], "round-robin");
    assert_eq!(json["targets"][0]["address"], a.addr().to_string());
    assert_eq!(json["targets"][0]["placed"], 4);
    a.shutdown();
    b.shutdown();
}
