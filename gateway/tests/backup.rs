//! A backup taken while the real binary serves a stream of messages, then
//! restored into a new data directory and served: the receiver pulls a
//! prefix of what was acknowledged (at least what was acknowledged before
//! the backup began), with the same bodies, and the next message gets a
//! sequence id past anything handed out before the restore.

mod common;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{
    Client,
    process::{Gateway, free_port, imgate, store_args},
};
use imgate_codec::{Frame, frame::MsgR};

const TOKEN: &str = "backup-token";

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("imgate-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn args(data: &Path, http: u16) -> Vec<OsString> {
    let http = format!("127.0.0.1:{http}");
    store_args(data, &["--metrics-listen", &http, "--admin-token", TOKEN])
}

fn body(i: u64) -> Bytes {
    Bytes::from(format!("message {i} {}", "x".repeat(200)))
}

#[test]
fn a_backup_under_load_restores_a_prefix_and_sequence_ids_move_on() {
    let (data, copy, restored) = (temp("data"), temp("copy dir"), temp("restored"));
    let http = free_port();
    let gw = Gateway::spawn(
        free_port(),
        args(&data, http),
        None,
        Duration::from_secs(20),
    );
    let addr = ([127, 0, 0, 1], gw.port).into();
    let acked = Arc::new(AtomicU64::new(0));
    const N: u64 = 3000;
    let sender = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut a = Client::login(addr, 1, 1);
            for i in 1..=N {
                a.send(MsgR {
                    no_push: false,
                    msg_id: i,
                    group: 0,
                    to: 2,
                    retry: false,
                    body: body(i),
                });
                loop {
                    match a.frame() {
                        Frame::MsgA(m) => {
                            assert_eq!(m.seq, i);
                            acked.store(i, SeqCst);
                            break;
                        }
                        Frame::Error(e) => panic!("refused: {e:?}"),
                        _ => {}
                    }
                }
            }
        })
    };
    while acked.load(SeqCst) < N / 3 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let before = acked.load(SeqCst);
    let out = imgate(&[
        "backup",
        copy.to_str().expect("utf-8"),
        "--metrics-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-token",
        TOKEN,
    ]);
    let after = acked.load(SeqCst);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        answer["entries"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    // Refused: a relative directory, by the endpoint and by the command,
    // and a directory that is not empty.
    let http_addr = ([127, 0, 0, 1], http).into();
    let (status, text) =
        imgate::http::request(http_addr, "POST", "/admin/backup?dir=relative", Some(TOKEN))
            .expect("http");
    assert!(status == 400 && text.contains("bad_dir"), "{status} {text}");
    let relative = imgate(&["backup", "relative/dir"]);
    assert_eq!(relative.status.code(), Some(2), "{relative:?}");
    let copy_q =
        serde_urlencoded::to_string([("dir", copy.to_str().expect("utf-8"))]).expect("query");
    let (status, text) = imgate::http::request(
        http_addr,
        "POST",
        &format!("/admin/backup?{copy_q}"),
        Some(TOKEN),
    )
    .expect("http");
    assert!(
        status == 400 && text.contains("not empty"),
        "{status} {text}"
    );
    sender.join().expect("sender");
    drop(gw);

    // Refused: a restore into a directory in use, and from nothing.
    let data_s = data.to_str().expect("utf-8");
    let refused = imgate(&[
        "restore",
        copy.to_str().expect("utf-8"),
        "--data-dir",
        data_s,
    ]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let missing = temp("missing");
    let restored_s = restored.to_str().expect("utf-8");
    let none = imgate(&[
        "restore",
        missing.to_str().expect("utf-8"),
        "--data-dir",
        restored_s,
    ]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");

    let skip = "5000";
    let out = imgate(&[
        "restore",
        copy.to_str().expect("utf-8"),
        "--data-dir",
        restored_s,
        "--skip",
        skip,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gw = Gateway::spawn(
        free_port(),
        args(&restored, free_port()),
        None,
        Duration::from_secs(20),
    );
    let addr = ([127, 0, 0, 1], gw.port).into();
    let mut b = Client::login(addr, 2, 1);
    let got = common::inbox_entries(&mut b);
    let k = got.len() as u64;
    assert!(
        (before..=after).contains(&k),
        "the backup holds {k} messages; {before} were acked before it began, {after} when it ended"
    );
    for (i, (seq, text)) in got.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!((*seq, text), (i, &body(i)), "message {i}");
    }
    // The next message skips every id the lost interval could have used.
    let mut a = Client::login(addr, 1, 1);
    a.send(MsgR {
        no_push: false,
        msg_id: 1_000_000,
        group: 0,
        to: 2,
        retry: false,
        body: Bytes::from_static(b"after the restore"),
    });
    let seq = loop {
        match a.frame() {
            Frame::MsgA(m) => break m.seq,
            Frame::Error(e) => panic!("refused: {e:?}"),
            _ => {}
        }
    };
    assert_eq!(seq, k + 5000 + 1);
    drop(gw);
    for d in [data, copy, restored] {
        let _ = std::fs::remove_dir_all(d);
    }
}
