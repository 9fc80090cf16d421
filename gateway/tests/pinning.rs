//! CPU pinning (`pin_cores`), in a test binary of its own: it reads the
//! affinity of the threads named `imgate-core-N` in this process, and no
//! other gateway may run beside it while it does.

mod common;

use std::time::Duration;

use common::{Client, config, drivers, start};
use imgate_codec::{Frame, frame::Ping};

/// The CPUs a thread of this process named `name` may run on, from /proc.
fn thread_cpus(name: &str) -> Option<String> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string());
        }
    }
    None
}

#[test]
fn pinned_cores_each_run_on_one_cpu_of_their_own() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        // Pinning cannot be told apart from not pinning; CI machines have
        // two CPUs, so there this is a broken machine, not a pass.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "one CPU under CI: the pinning test cannot run"
        );
        eprintln!("one CPU: pinning cannot be told apart from not pinning; skipped");
        return;
    }
    let mut cfg = config(drivers()[0]);
    cfg.pin_cores = true;
    let gw = start(cfg);
    // The threads pin themselves as they start: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let pinned = loop {
        let got = [thread_cpus("imgate-core-0"), thread_cpus("imgate-core-1")];
        if got
            .iter()
            .all(|c| c.as_deref().is_some_and(|c| !c.contains(['-', ','])))
        {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cores not pinned: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(pinned[0], pinned[1], "both cores on one CPU");
    // A pinned gateway still serves.
    let mut c = Client::login(gw.addr(), 1, 1);
    c.send(Ping { nonce: 4 });
    assert!(matches!(c.frame(), Frame::Pong(_)));
    assert!(gw.shutdown());

    // Unpinned, a core may run anywhere.
    let gw = start(config(drivers()[0]));
    // The thread names itself as it starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let free = loop {
        if let Some(c) = thread_cpus("imgate-core-0") {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no core thread");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(free.contains(['-', ',']), "unpinned core limited to {free}");
    assert!(gw.shutdown());
}
