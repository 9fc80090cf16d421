//! Replays every file in `codec/fuzz/seeds/` through the fuzz target's check
//! ([`imgate_codec::fuzzing::check_decode`]), so the seed corpus, and any
//! crashing input added to it, runs on every `cargo test`.
//!
//! The generated seeds below are the corpus the fuzzer starts from; each
//! must be on disk with these exact bytes and decode to the outcome listed.
//! To rewrite them after changing the list:
//!
//! ```text
//! IMGATE_WRITE_SEEDS=1 cargo test -p imgate-codec --test fuzz_corpus
//! ```

use std::{fs, path::PathBuf, sync::Once};

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::{
    DecodeError, ErrorCode, Frame, KickReason, Kind,
    frame::{
        AckA, AckN, AckR, Entry, ErrorFrame, GroupA, GroupOp, GroupR, Kick, Login, LoginOk, Logout,
        MsgA, MsgN, MsgR, Ping, Pong, ReadA, ReadN, ReadR, ReceiptsA, ReceiptsR, SyncPage, SyncR,
        UnreadA, UnreadEntry, UnreadR,
    },
    fuzzing::{check_decode, input},
};

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// One valid frame of each kind.
fn sample(kind: Kind) -> Frame {
    match kind {
        Kind::Login => Login {
            user: 1,
            device: 2,
            resume: 3,
            token: Bytes::from_static(b"secret-token"),
        }
        .into(),
        Kind::LoginOk => LoginOk {
            user: 1,
            device: 2,
            heartbeat_ms: 30_000,
            server_time: 1_700_000_000_000,
            inbox_head: 42,
            max_frame: 65_536,
            session: 9,
            frame_rate: 1000,
            frame_burst: 2000,
            rate_strikes: 10,
        }
        .into(),
        Kind::Ping => Ping { nonce: 7 }.into(),
        Kind::Pong => Pong { nonce: 7 }.into(),
        Kind::Kick => Kick::new(KickReason::Replaced, "replaced").into(),
        Kind::Error => ErrorFrame::new(ErrorCode::Forbidden, Some(Kind::MsgR), 5, "no").into(),
        Kind::Logout => Logout {}.into(),
        Kind::MsgR => MsgR {
            no_push: false,
            msg_id: 5,
            group: 0,
            to: 2,
            retry: true,
            body: Bytes::from_static(b"hello"),
        }
        .into(),
        Kind::MsgA => MsgA {
            msg_id: 5,
            group: 0,
            seq: 43,
            own_seq: 12,
            server_time: 1_700_000_000_001,
        }
        .into(),
        Kind::MsgN => MsgN {
            group: 0,
            seq: 43,
            from: 1,
            to: 2,
            msg_id: 5,
            server_time: 1_700_000_000_001,
            retry: false,
            body: Bytes::from_static(b"hello"),
        }
        .into(),
        Kind::AckR => AckR { group: 0, seq: 43 }.into(),
        Kind::AckA => AckA { group: 0, seq: 43 }.into(),
        Kind::AckN => AckN {
            peer: 2,
            group: 0,
            seq: 43,
        }
        .into(),
        Kind::ReadR => ReadR {
            group: 0,
            peer: 1,
            seq: 43,
        }
        .into(),
        Kind::ReadA => ReadA {
            group: 0,
            peer: 1,
            seq: 43,
        }
        .into(),
        Kind::ReadN => ReadN {
            reader: 2,
            group: 0,
            peer: 1,
            seq: 43,
        }
        .into(),
        Kind::SyncR => SyncR {
            group: 0,
            after: 40,
            limit: 100,
        }
        .into(),
        Kind::SyncPage => {
            let mut p = SyncPage::new(0, 40, 43);
            let mut b = BytesMut::new();
            for (seq, body) in [(41, &b"a"[..]), (42, b""), (43, b"hello")] {
                let e = Entry {
                    seq,
                    from: 1,
                    to: 2,
                    msg_id: seq,
                    server_time: 1_700_000_000_000 + seq,
                    body: Bytes::copy_from_slice(body),
                };
                p.push(&mut b, &e);
            }
            p.finish(b).into()
        }
        Kind::UnreadR => UnreadR {}.into(),
        Kind::UnreadA => UnreadA::from_entries(&[
            UnreadEntry {
                group: 0,
                peer: 1,
                unread: 2,
                last_seq: 43,
            },
            UnreadEntry {
                group: 8,
                peer: 0,
                unread: 0,
                last_seq: 100,
            },
        ])
        .into(),
        Kind::GroupR => GroupR {
            req: 3,
            op: GroupOp::Create as u8,
            group: 0,
            ..Default::default()
        }
        .with_members(&[1, 2, 3])
        .into(),
        Kind::GroupA => GroupA {
            req: 3,
            op: GroupOp::Create as u8,
            group: 8,
            total: 3,
            ..Default::default()
        }
        .with_members(&[1, 2, 3])
        .into(),
        Kind::ReceiptsR => ReceiptsR {
            req: 4,
            group: 8,
            seq: 100,
        }
        .into(),
        Kind::ReceiptsA => ReceiptsA {
            req: 4,
            group: 8,
            seq: 100,
            members: 3,
            delivered: 2,
            read: 1,
        }
        .into(),
    }
}

/// A generated seed and what it must decode to.
struct Seed {
    name: String,
    input: Vec<u8>,
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    left: usize,
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

/// A frame with a correct length and any header fields and body.
fn raw(version: u8, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(u32::try_from(4 + body.len()).expect("small body"));
    b.put_u8(version);
    b.put_u8(kind);
    b.put_u16(0);
    b.extend_from_slice(body);
    b.to_vec()
}

fn be(parts: &[u64]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut valid = |name: String, chunk: u8, max: u16, frames: Vec<Frame>| {
        out.push(Seed {
            name,
            input: input(chunk, max, &encode(&frames)),
            frames,
            error: None,
            left: 0,
        });
    };
    for &k in Kind::ALL {
        valid(
            format!("valid-{}", k.name().replace(':', "-")),
            0,
            0,
            vec![sample(k)],
        );
    }
    let all: Vec<Frame> = Kind::ALL.iter().map(|&k| sample(k)).collect();
    valid("valid-all-kinds".into(), 0, 0, all.clone());
    valid("valid-all-kinds-1-byte-reads".into(), 1, 0, all.clone());
    valid("valid-all-kinds-7-byte-reads".into(), 7, 256, all);

    // An invalid stream: a valid ping first, then the bad bytes.
    let mut invalid = |name: &str, max: u16, bad: Vec<u8>, error: DecodeError, left: usize| {
        let mut stream = encode(&[sample(Kind::Ping)]);
        stream.extend_from_slice(&bad);
        out.push(Seed {
            name: format!("invalid-{name}"),
            input: input(0, max, &stream),
            frames: vec![sample(Kind::Ping)],
            error: Some(error),
            left,
        });
    };
    let inv = |kind, field| DecodeError::InvalidField { kind, field };
    invalid(
        "too-large",
        0,
        vec![0xff, 0xff, 0xff, 0xff],
        DecodeError::FrameTooLarge {
            len: 4 + u64::from(u32::MAX),
            max: 65_536,
        },
        4,
    );
    invalid(
        "over-limit",
        100,
        raw(1, Kind::MsgR as u8, &[0; 93]),
        DecodeError::FrameTooLarge { len: 101, max: 100 },
        101,
    );
    invalid(
        "too-short",
        0,
        vec![0, 0, 0, 3, 1],
        DecodeError::FrameTooShort { len: 3 },
        5,
    );
    invalid(
        "version",
        0,
        raw(2, Kind::Ping as u8, &[0; 8]),
        DecodeError::UnsupportedVersion(2),
        16,
    );
    invalid(
        "kind",
        0,
        raw(1, 0x40, &[0; 8]),
        DecodeError::UnknownKind(0x40),
        16,
    );
    invalid(
        "truncated-msg-r",
        0,
        raw(1, Kind::MsgR as u8, &be(&[1, 0])),
        DecodeError::Truncated {
            kind: Some(Kind::MsgR),
        },
        0,
    );
    invalid(
        "trailing-ping",
        0,
        raw(1, Kind::Ping as u8, &[0; 9]),
        DecodeError::TrailingBytes {
            kind: Kind::Ping,
            extra: 1,
        },
        0,
    );
    invalid(
        "msg-r-group-and-to",
        0,
        raw(1, Kind::MsgR as u8, &be(&[1, 2, 3])),
        inv(Kind::MsgR, "group/to (exactly one must be set)"),
        0,
    );
    invalid(
        "msg-n-seq-0",
        0,
        raw(1, Kind::MsgN as u8, &be(&[0, 0, 1, 2, 3, 4])),
        inv(Kind::MsgN, "seq"),
        0,
    );
    let mut login = be(&[1]);
    login.extend_from_slice(&[0, 0, 0, 2]);
    login.extend_from_slice(&be(&[0]));
    invalid(
        "login-empty-token",
        0,
        raw(1, Kind::Login as u8, &login),
        inv(Kind::Login, "token length"),
        0,
    );
    let mut group = be(&[3]);
    group.push(0);
    group.extend_from_slice(&be(&[8, 1]));
    invalid(
        "group-op",
        0,
        raw(1, Kind::GroupR as u8, &group),
        inv(Kind::GroupR, "op"),
        0,
    );
    group[8] = GroupOp::Add as u8;
    group.push(0);
    invalid(
        "group-members",
        0,
        raw(1, Kind::GroupR as u8, &group),
        inv(Kind::GroupR, "member list length"),
        0,
    );
    invalid(
        "unread-entries",
        0,
        raw(1, Kind::UnreadA as u8, &[0; 27]),
        inv(Kind::UnreadA, "entries length"),
        0,
    );
    let mut page = be(&[0, 1, 2]);
    page.extend_from_slice(&1u16.to_be_bytes());
    page.extend_from_slice(&be(&[1, 2, 3, 4, 5]));
    page.extend_from_slice(&100u32.to_be_bytes());
    page.extend_from_slice(b"short");
    invalid(
        "sync-page-overrun",
        0,
        raw(1, Kind::SyncPage as u8, &page),
        DecodeError::Truncated {
            kind: Some(Kind::SyncPage),
        },
        0,
    );
    let mut kick = vec![KickReason::Admin.to_wire()];
    kick.extend(std::iter::repeat_n(b'k', 1025));
    invalid(
        "kick-text",
        0,
        raw(1, Kind::Kick as u8, &kick),
        inv(Kind::Kick, "text length"),
        0,
    );

    // A stream that ends inside a frame: no error, the part is left.
    let mut partial = encode(&[sample(Kind::Ping), sample(Kind::MsgN)]);
    partial.truncate(partial.len() - 3);
    let left = sample(Kind::MsgN).encoded_len() - 3;
    out.push(Seed {
        name: "partial-msg-n".into(),
        input: input(5, 0, &partial),
        frames: vec![sample(Kind::Ping)],
        error: None,
        left,
    });
    out
}

/// Writes the generated seeds when `IMGATE_WRITE_SEEDS` is set (once, before
/// either test reads the directory).
fn write_seeds_if_asked() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("IMGATE_WRITE_SEEDS").is_none() {
            return;
        }
        let dir = seeds_dir();
        fs::create_dir_all(&dir).expect("create seeds dir");
        for s in seeds() {
            fs::write(dir.join(&s.name), &s.input).expect("write seed");
        }
    });
}

#[test]
fn generated_seeds_are_on_disk_and_decode_as_listed() {
    write_seeds_if_asked();
    let dir = seeds_dir();
    let seeds = seeds();
    let kinds = seeds
        .iter()
        .filter(|s| s.name.starts_with("valid-") && s.frames.len() == 1)
        .count();
    assert_eq!(kinds, Kind::ALL.len(), "a valid seed per kind");
    for s in seeds {
        let path = dir.join(&s.name);
        let on_disk = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run IMGATE_WRITE_SEEDS=1 cargo test -p imgate-codec --test fuzz_corpus",
                path.display()
            )
        });
        assert_eq!(on_disk, s.input, "{} differs from its generator", s.name);
        let got = check_decode(&s.input).expect("seed has a prefix");
        assert_eq!(got.frames, s.frames, "{}", s.name);
        assert_eq!(got.error, s.error, "{}", s.name);
        assert_eq!(got.left, s.left, "{}", s.name);
    }
}

#[test]
fn every_seed_file_passes_the_fuzz_check() {
    write_seeds_if_asked();
    let mut n = 0;
    for entry in fs::read_dir(seeds_dir()).expect("codec/fuzz/seeds exists") {
        let path = entry.expect("dir entry").path();
        let data = fs::read(&path).expect("read seed");
        // Panics, naming no file; print it first so a failure is findable.
        eprintln!("replaying {}", path.display());
        let _ = check_decode(&data);
        n += 1;
    }
    assert!(n >= seeds().len(), "only {n} seed files");
}

#[test]
fn short_inputs_are_ignored() {
    assert_eq!(check_decode(&[]), None);
    assert_eq!(check_decode(&[0, 0]), None);
    let empty = check_decode(&[0, 0, 0]).expect("a prefix");
    assert!(empty.frames.is_empty());
    assert_eq!(empty.error, None);
    assert_eq!(empty.max_frame, 65_536);
}
