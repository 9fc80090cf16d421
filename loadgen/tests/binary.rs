//! The real `imgate-loadgen` binary: exit statuses and output files.

mod common;

use std::process::Command;

use common::{Broken, Fault, SECRET, relay, start_with};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgate-loadgen"))
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["chat", "--pairs", "x"][..],
        &["nosuch"],
        &["chat", "--shard", "3/2"],
        &["chat", "--size", "8"],
        &["chat", "--target", "127.0.0.1"],
        &["chat", "--target", "127.0.0.1:7000,nohost"],
        &["chat", "--target", "127.0.0.1:7000,127.0.0.1:7000"],
        &["chat", "--placement", "scatter"],
        &["chat", "--metrics", "127.0.0.1:9100,"],
        &["chat", "--tls-ca", "ca.pem"],
        &["chat", "--tls"],
        &["chat", "--tls", "--tls-ca", "/nonexistent/ca.pem"],
    ] {
        let out = bin().args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("imgate-loadgen: error:"), "{err}");
    }
}

#[test]
fn a_chat_run_writes_its_files_and_exits_0() {
    let gw = relay();
    let dir = std::env::temp_dir().join(format!("loadgen-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("run.json");
    let svg = dir.join("lat.svg");
    let hgrm = dir.join("hgrm");
    let out = bin()
        .args([
            "chat",
            "--pairs",
            "4",
            "--rate",
            "400",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ])
        .args([
            "--target",
            &gw.addr().to_string(),
            "--metrics",
            "none",
            "--secret",
            SECRET,
        ])
        .args(["--threads", "2", "--drain", "2s"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("RESULT: PASS"), "{stdout}");
    assert!(stdout.contains("delivery"), "{stdout}");
    // The progress line, once a second, on stderr.
    assert!(stderr.contains("logged in 8/8"), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    assert_eq!(v["scenario"], "chat");
    assert_eq!(v["params"]["scenario"]["pairs"], 4);
    assert!(v["params"]["common"].get("secret").is_none());
    // One target: recorded as the address it always was, and all on it.
    assert_eq!(v["params"]["common"]["target"], gw.addr().to_string());
    assert_eq!(v["targets"][0]["address"], gw.addr().to_string());
    assert_eq!(v["targets"][0]["placed"], 8);
    assert_eq!(v["targets"][0]["logins"], 8);
    assert_eq!(v["counters"]["failovers"], 0);
    assert_eq!(v["verdict"]["lost"], 0);
    assert!(v["windows"][0]["delivery"]["p99_ms"].as_f64().is_some());
    let plot = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        plot.starts_with("<svg") && plot.contains("delivery"),
        "{}",
        &plot[..200.min(plot.len())]
    );
    let names: Vec<String> = std::fs::read_dir(&hgrm)
        .expect("hgrm dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("-delivery.hgrm")),
        "{names:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    gw.shutdown();
}

#[test]
fn a_lossy_backend_makes_the_binary_exit_1() {
    let gw = start_with(Box::new(Broken::new(Fault::DropEvery(7))));
    let out = bin()
        .args([
            "chat",
            "--pairs",
            "2",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ])
        .args([
            "--target",
            &gw.addr().to_string(),
            "--metrics",
            "none",
            "--secret",
            SECRET,
        ])
        .args(["--threads", "1", "--drain", "1s", "--quiet"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("RESULT: FAIL") && stdout.contains("LOST"),
        "{stdout}"
    );
    gw.shutdown();
}

#[test]
fn an_unreachable_gateway_exits_3() {
    let out = bin()
        .args([
            "idle",
            "-n",
            "2",
            "--target",
            "127.0.0.1:1",
            "--metrics",
            "none",
            "--connect-retries",
            "0",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run"), "{err}");
}
