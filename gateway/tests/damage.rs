//! A damaged data directory under the real binary: a journal torn at its
//! end is recovered with a warning; a byte flipped in the middle of the
//! journal stops the start, `imgate check` finds it, and `imgate salvage`
//! keeps everything before it, with sequence ids that are never reused.

mod common;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use common::{
    Client,
    process::{Gateway, free_port, imgate, store_args},
};
use imgate_codec::{Frame, frame::MsgR};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("imgate-damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn args(data: &Path) -> Vec<OsString> {
    store_args(data, &["--no-metrics", "--log-level", "info"])
}

fn body(i: u64) -> Bytes {
    Bytes::from(format!("message {i} {}", "y".repeat(300)))
}

fn send(a: &mut Client, msg_id: u64, body: Bytes) -> u64 {
    a.send(MsgR {
        no_push: false,
        msg_id,
        group: 0,
        to: 2,
        retry: false,
        body,
    });
    loop {
        match a.frame() {
            Frame::MsgA(m) => return m.seq,
            Frame::Error(e) => panic!("refused: {e:?}"),
            _ => {}
        }
    }
}

/// Writes `n` messages from user 1 to user 2, then SIGKILLs the gateway.
fn write_then_kill(data: &Path, n: u64) {
    let mut gw = Gateway::spawn(free_port(), args(data), None, Duration::from_secs(20));
    let mut a = Client::login(([127, 0, 0, 1], gw.port).into(), 1, 1);
    for i in 1..=n {
        assert_eq!(send(&mut a, i, body(i)), i);
    }
    gw.kill9();
}

/// The journal file and where its data ends.
fn journal(data: &Path) -> (PathBuf, usize) {
    let js = imgate::store::salvage::journals(data).expect("journals");
    let j = js.last().expect("a journal");
    (j.path.clone(), j.data_end as usize)
}

#[test]
fn a_torn_journal_tail_is_dropped_with_a_warning() {
    let (data, log) = (temp("torn"), temp("torn.log"));
    write_then_kill(&data, 50);
    let (path, end) = journal(&data);
    let mut bytes = std::fs::read(&path).expect("journal");
    bytes[end - 40..end].fill(0);
    std::fs::write(&path, &bytes).expect("tear it");
    let gw = Gateway::spawn(
        free_port(),
        args(&data),
        Some(log.clone()),
        Duration::from_secs(20),
    );
    let mut b = Client::login(([127, 0, 0, 1], gw.port).into(), 2, 1);
    let got = common::inbox_entries(&mut b);
    assert_eq!(
        got.len(),
        49,
        "the last batch, torn, is gone; the rest is there"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("dropped a torn journal tail"), "{text}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_flipped_byte_is_found_and_salvage_keeps_what_came_before() {
    let (data, out) = (temp("flip"), temp("flip-out"));
    const N: u64 = 400;
    write_then_kill(&data, N);
    let (path, end) = journal(&data);
    let mut bytes = std::fs::read(&path).expect("journal");
    bytes[end / 2] ^= 0xff;
    std::fs::write(&path, &bytes).expect("flip a byte");
    let data_s = data.to_str().expect("utf-8");

    // The gateway refuses to start on it, and says why.
    let start = imgate(&[
        "--data-dir",
        data_s,
        "--no-metrics",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!start.status.success());
    assert!(
        String::from_utf8_lossy(&start.stderr).contains("ChecksumMismatch"),
        "{start:?}"
    );
    let check = imgate(&["check", "--data-dir", data_s]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("is readable up to byte"), "{report}");
    assert_eq!(
        std::fs::read(&path).expect("journal"),
        bytes,
        "check writes nothing"
    );

    let out_s = out.to_str().expect("utf-8");
    let salvaged = imgate(&["salvage", out_s, "--data-dir", data_s, "--skip", "1000"]);
    let report = String::from_utf8_lossy(&salvaged.stdout);
    assert!(
        salvaged.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&salvaged.stderr)
    );
    assert!(
        report.contains("may have been lost and are never used again"),
        "{report}"
    );
    let check = imgate(&["check", "--data-dir", out_s]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let gw = Gateway::spawn(free_port(), args(&out), None, Duration::from_secs(20));
    let addr = ([127, 0, 0, 1], gw.port).into();
    let mut b = Client::login(addr, 2, 1);
    let got = common::inbox_entries(&mut b);
    let k = got.len() as u64;
    assert!(k > 0 && k < N, "kept {k} of {N}");
    for (i, (seq, text)) in got.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!((*seq, text), (i, &body(i)), "message {i}");
    }
    let mut a = Client::login(addr, 1, 1);
    assert_eq!(
        send(&mut a, 10_000, Bytes::from_static(b"after")),
        k + 1000 + 1
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&out);
}
