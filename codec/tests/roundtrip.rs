//! Every frame kind through `Frame::encode` and `Decoder::decode` and back,
//! with edge values, plus the two buffer properties the gateway relies on:
//! an encoded frame is shared, not copied, when cloned (group fan-out), and
//! a decoded payload is a slice of the read buffer (zero copy).

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Decoder, ErrorCode, Frame, HEADER_LEN, KickReason, Kind,
    frame::{
        AckA, AckN, AckR, Entry, ErrorFrame, GroupA, GroupOp, GroupR, Kick, Login, LoginOk, Logout,
        MAX_TEXT, MAX_TOKEN, MsgA, MsgN, MsgR, Ping, Pong, ReadA, ReadN, ReadR, ReceiptsA,
        ReceiptsR, SyncPage, SyncR, UnreadA, UnreadEntry, UnreadR,
    },
    header::{FLAG_PARTIAL, FLAG_RETRY},
};

const MAX: u64 = u64::MAX;

fn entry(seq: u64, body: &'static [u8]) -> Entry {
    Entry {
        seq,
        from: 7,
        to: 9,
        msg_id: seq.wrapping_mul(100),
        server_time: 1_700_000_000_000_u64.wrapping_add(seq),
        body: Bytes::from_static(body),
    }
}

fn page(group: u64, after: u64, head: u64, entries: &[Entry]) -> SyncPage {
    let mut p = SyncPage::new(group, after, head);
    let mut b = BytesMut::new();
    for e in entries {
        p.push(&mut b, e);
    }
    p.finish(b)
}

fn unread_entries() -> Vec<UnreadEntry> {
    vec![
        UnreadEntry {
            group: 0,
            peer: 42,
            unread: 3,
            last_seq: 17,
        },
        UnreadEntry {
            group: MAX,
            peer: 0,
            unread: u32::MAX,
            last_seq: MAX,
        },
    ]
}

/// At least one frame of every kind, with edge values.
fn samples() -> Vec<Frame> {
    let token = Bytes::from(vec![0x5a; MAX_TOKEN]);
    vec![
        Login {
            user: 1,
            device: 2,
            resume: 0,
            token: Bytes::from_static(b"t"),
        }
        .into(),
        Login {
            user: MAX,
            device: u32::MAX,
            resume: MAX,
            token,
        }
        .into(),
        LoginOk {
            user: MAX,
            device: u32::MAX,
            heartbeat_ms: 30_000,
            server_time: MAX,
            inbox_head: MAX,
            max_frame: u32::MAX,
            session: MAX,
            frame_rate: u32::MAX,
            frame_burst: 0,
            rate_strikes: 7,
        }
        .into(),
        Ping { nonce: 0 }.into(),
        Ping { nonce: MAX }.into(),
        Pong { nonce: MAX }.into(),
        Kick::new(KickReason::SlowConsumer, "outbound queue full").into(),
        Kick::new(KickReason::Unknown(200), "").into(),
        ErrorFrame::new(ErrorCode::RateLimited, Some(Kind::MsgR), MAX, "slow down").into(),
        ErrorFrame::new(ErrorCode::Unknown(u16::MAX), None, 0, "").into(),
        Logout {}.into(),
        MsgR {
            no_push: false,
            msg_id: MAX,
            group: 0,
            to: MAX,
            retry: false,
            body: Bytes::from_static(b"hello"),
        }
        .into(),
        MsgR {
            no_push: false,
            msg_id: 1,
            group: MAX,
            to: 0,
            retry: true,
            body: Bytes::new(),
        }
        .into(),
        MsgA {
            msg_id: MAX,
            group: MAX,
            seq: MAX,
            own_seq: MAX,
            server_time: MAX,
        }
        .into(),
        MsgA::default().into(),
        MsgN {
            group: 0,
            seq: 1,
            from: 3,
            to: 4,
            msg_id: 5,
            server_time: 6,
            retry: false,
            body: Bytes::from_static(b"hi there"),
        }
        .into(),
        MsgN {
            group: MAX,
            seq: MAX,
            from: MAX,
            to: 0,
            msg_id: MAX,
            server_time: MAX,
            retry: true,
            body: Bytes::new(),
        }
        .into(),
        AckR { group: 0, seq: MAX }.into(),
        AckA { group: MAX, seq: 0 }.into(),
        AckN {
            peer: MAX,
            group: 0,
            seq: MAX,
        }
        .into(),
        ReadR {
            group: 0,
            peer: MAX,
            seq: 1,
        }
        .into(),
        ReadA {
            group: MAX,
            peer: 0,
            seq: MAX,
        }
        .into(),
        ReadN {
            reader: MAX,
            group: 0,
            peer: 1,
            seq: MAX,
        }
        .into(),
        SyncR {
            group: MAX,
            after: MAX,
            limit: u16::MAX,
        }
        .into(),
        SyncR::default().into(),
        page(0, 10, 10, &[]).into(),
        page(
            MAX,
            10,
            MAX,
            &[
                entry(11, b"first"),
                entry(12, b""),
                entry(13, b"third entry"),
            ],
        )
        .into(),
        UnreadR {}.into(),
        UnreadA::from_entries(&[]).into(),
        UnreadA::from_entries(&unread_entries()).into(),
        GroupR {
            req: MAX,
            op: GroupOp::Create as u8,
            group: 0,
            ..Default::default()
        }
        .with_members(&[1, 2, MAX])
        .into(),
        GroupR {
            req: 1,
            op: GroupOp::List as u8,
            group: MAX,
            ..Default::default()
        }
        .into(),
        GroupA {
            req: MAX,
            op: GroupOp::Remove as u8,
            group: MAX,
            total: u32::MAX,
            ..Default::default()
        }
        .with_members(&[MAX, 0])
        .into(),
        GroupA {
            req: 2,
            op: GroupOp::Add as u8,
            group: 5,
            total: 0,
            ..Default::default()
        }
        .into(),
        ReceiptsR {
            req: MAX,
            group: MAX,
            seq: MAX,
        }
        .into(),
        ReceiptsA {
            req: MAX,
            group: MAX,
            seq: MAX,
            members: u32::MAX,
            delivered: u32::MAX,
            read: 0,
        }
        .into(),
    ]
}

/// Encodes one frame, checks the length, decodes it back.
fn round_trip(frame: &Frame) -> Frame {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len(), "{frame:?}");
    let decoded = Decoder::default()
        .decode(&mut buf)
        .expect("a valid frame decodes")
        .expect("a whole frame is there");
    assert!(buf.is_empty(), "{} bytes left after {frame:?}", buf.len());
    decoded
}

#[test]
fn every_kind_has_a_sample() {
    let covered: HashSet<Kind> = samples().iter().map(Frame::kind).collect();
    for &k in Kind::ALL {
        assert!(covered.contains(&k), "no sample for {k}");
    }
}

#[test]
fn every_sample_round_trips() {
    for frame in samples() {
        assert_eq!(round_trip(&frame), frame);
    }
}

#[test]
fn all_samples_in_one_stream_round_trip_in_order() {
    let frames = samples();
    let mut buf = BytesMut::new();
    for f in &frames {
        f.encode(&mut buf);
    }
    let total: usize = frames.iter().map(Frame::encoded_len).sum();
    assert_eq!(buf.len(), total);
    let dec = Decoder::default();
    let mut got = Vec::new();
    while let Some(f) = dec.decode(&mut buf).expect("valid stream") {
        got.push(f);
    }
    assert!(buf.is_empty());
    assert_eq!(got, frames);
}

#[test]
fn header_layout_is_len_version_kind_flags() {
    let mut buf = BytesMut::new();
    Frame::from(Ping {
        nonce: 0x0102_0304_0506_0708,
    })
    .encode(&mut buf);
    assert_eq!(
        &buf[..],
        &[0, 0, 0, 12, 1, 0x03, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(HEADER_LEN, 8);

    let mut buf = BytesMut::new();
    Frame::from(Logout {}).encode(&mut buf);
    assert_eq!(&buf[..], &[0, 0, 0, 4, 1, 0x07, 0, 0]);
}

#[test]
fn retry_flag_is_the_header_flag_on_msg_r_and_msg_n() {
    let r = MsgR {
        no_push: false,
        msg_id: 9,
        group: 0,
        to: 2,
        retry: true,
        body: Bytes::from_static(b"x"),
    };
    let n = MsgN {
        seq: 1,
        retry: true,
        ..Default::default()
    };
    for (frame, kind) in [
        (Frame::from(r.clone()), 0x10),
        (Frame::from(n.clone()), 0x12),
    ] {
        let b = frame.to_bytes();
        assert_eq!(b[5], kind);
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), FLAG_RETRY);
        assert_eq!(round_trip(&frame), frame);
    }
    // Without the flag the frames differ only in it.
    let plain_r = Frame::from(MsgR { retry: false, ..r }).to_bytes();
    assert_eq!(&plain_r[6..8], &[0, 0]);
    let plain_n = Frame::from(MsgN { retry: false, ..n }).to_bytes();
    assert_eq!(&plain_n[6..8], &[0, 0]);
    assert_eq!(
        round_trip(&Frame::from(MsgN {
            seq: 1,
            ..Default::default()
        })),
        Frame::from(MsgN {
            seq: 1,
            retry: false,
            ..Default::default()
        })
    );
}

#[test]
fn unknown_flag_bits_are_ignored() {
    let mut b = BytesMut::from(&Frame::from(Ping { nonce: 5 }).to_bytes()[..]);
    b[6] = 0xff;
    b[7] = 0xfe; // every bit but RETRY
    let f = Decoder::default().decode(&mut b).expect("flags ignored");
    assert_eq!(f, Some(Frame::from(Ping { nonce: 5 })));

    let mut b = BytesMut::from(
        &Frame::from(MsgN {
            seq: 3,
            ..Default::default()
        })
        .to_bytes()[..],
    );
    b[6] = 0x80;
    b[7] = 0x01;
    let f = Decoder::default().decode(&mut b).expect("flags ignored");
    assert_eq!(
        f,
        Some(Frame::from(MsgN {
            seq: 3,
            retry: true,
            ..Default::default()
        }))
    );
}

#[test]
fn sync_page_entries_read_back() {
    let entries = [entry(11, b"first"), entry(12, b""), entry(MAX, b"last one")];
    let p = page(3, 10, MAX, &entries);
    assert_eq!(p.count, 3);
    assert_eq!(p.entries().size_hint(), (3, Some(3)));
    assert_eq!(p.entries().count(), 3);
    assert_eq!(p.last_seq(), Some(MAX));
    let Frame::SyncPage(back) = round_trip(&p.clone().into()) else {
        panic!("not a sync page");
    };
    assert_eq!(back, p);
    assert_eq!(back.entries().collect::<Vec<_>>(), entries);

    let empty = page(0, 5, 5, &[]);
    assert_eq!(empty.count, 0);
    assert_eq!(empty.entries().next(), None);
    assert_eq!(empty.last_seq(), None);
    assert_eq!(round_trip(&empty.clone().into()), Frame::from(empty));
}

#[test]
fn unread_entries_read_back() {
    let u = UnreadA::from_entries(&unread_entries());
    let Frame::UnreadA(back) = round_trip(&u.clone().into()) else {
        panic!("not unread:A");
    };
    assert_eq!(back.iter().collect::<Vec<_>>(), unread_entries());
    assert!(!back.partial);
    assert_eq!(UnreadA::from_entries(&[]).iter().len(), 0);
}

#[test]
fn partial_flag_is_the_header_flag_on_unread_a() {
    let mut u = UnreadA::from_entries(&unread_entries());
    u.partial = true;
    let b = Frame::from(u.clone()).to_bytes();
    assert_eq!(b[5], 0x23);
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), FLAG_PARTIAL);
    let Frame::UnreadA(back) = round_trip(&u.clone().into()) else {
        panic!("not unread:A");
    };
    assert!(back.partial);
    assert_eq!(back.iter().collect::<Vec<_>>(), unread_entries());
    // Without it the frames differ only in the flag.
    u.partial = false;
    let plain = Frame::from(u).to_bytes();
    assert_eq!(&plain[6..8], &[0, 0]);
    assert_eq!(plain[8..], b[8..]);
}

#[test]
fn group_members_read_back() {
    let ids = [1, 0, MAX, 77];
    let r = GroupR {
        req: 4,
        op: GroupOp::Add as u8,
        group: 9,
        ..Default::default()
    }
    .with_members(&ids);
    let Frame::GroupR(back) = round_trip(&r.into()) else {
        panic!("not group:R");
    };
    assert_eq!(back.op(), Some(GroupOp::Add));
    assert_eq!(back.members().collect::<Vec<_>>(), ids);

    let a = GroupA {
        req: 4,
        op: GroupOp::List as u8,
        group: 9,
        total: 4,
        ..Default::default()
    }
    .with_members(&ids);
    let Frame::GroupA(back) = round_trip(&a.into()) else {
        panic!("not group:A");
    };
    assert_eq!(back.op(), Some(GroupOp::List));
    assert_eq!(back.total, 4);
    assert_eq!(back.members().len(), 4);
    assert_eq!(back.members().collect::<Vec<_>>(), ids);
}

#[test]
fn kick_and_error_accessors() {
    let k = Kick::new(KickReason::Replaced, "logged in elsewhere");
    let Frame::Kick(back) = round_trip(&k.into()) else {
        panic!("not kick");
    };
    assert_eq!(back.reason(), KickReason::Replaced);
    assert_eq!(back.text(), "logged in elsewhere");

    let e = ErrorFrame::new(ErrorCode::Forbidden, Some(Kind::GroupR), 31, "not a member");
    let Frame::Error(back) = round_trip(&e.into()) else {
        panic!("not error");
    };
    assert_eq!(back.code(), ErrorCode::Forbidden);
    assert_eq!(back.ref_kind(), Some(Kind::GroupR));
    assert_eq!(back.ref_id, 31);
    assert_eq!(back.text(), "not a member");

    let none = ErrorFrame::new(ErrorCode::Internal, None, 0, "");
    assert_eq!(none.ref_kind, 0);
    assert_eq!(none.ref_kind(), None);
    assert_eq!(none.text(), "");

    // Text longer than the limit is cut to it, and still round trips.
    let long = Kick::new(KickReason::Admin, &"a".repeat(MAX_TEXT + 10));
    assert_eq!(long.text.len(), MAX_TEXT);
    assert_eq!(round_trip(&long.clone().into()), Frame::from(long));

    // Invalid UTF-8 from the wire is replaced, not rejected.
    let raw = Kick {
        reason: 99,
        text: Bytes::from_static(b"bad \xff"),
    };
    assert_eq!(raw.reason(), KickReason::Unknown(99));
    assert_eq!(raw.text(), "bad \u{fffd}");
}

#[test]
fn to_bytes_equals_encode_and_clones_share_memory() {
    for frame in samples() {
        let mut enc = BytesMut::new();
        frame.encode(&mut enc);
        let b = frame.to_bytes();
        assert_eq!(b, enc, "{frame:?}");
        assert_eq!(b.len(), frame.encoded_len());
        // Queued on many connections: each clone is the same memory.
        let copies: Vec<Bytes> = (0..3).map(|_| b.clone()).collect();
        for c in &copies {
            assert_eq!(c.as_ptr(), b.as_ptr());
            assert_eq!(c.len(), b.len());
        }
    }
}

/// The addresses `b` occupies.
fn span(b: &[u8]) -> std::ops::Range<usize> {
    let r = b.as_ptr_range();
    r.start as usize..r.end as usize
}

/// Whether `inner` lies within the memory of `outer`.
fn within(inner: &[u8], outer: &std::ops::Range<usize>) -> bool {
    let i = span(inner);
    outer.start <= i.start && i.end <= outer.end
}

#[test]
fn decoded_payloads_are_slices_of_the_read_buffer() {
    let msg = MsgR {
        no_push: false,
        msg_id: 1,
        group: 0,
        to: 2,
        retry: false,
        body: Bytes::from_static(b"zero copy body"),
    };
    let p = page(0, 0, 2, &[entry(1, b"one"), entry(2, b"two")]);
    let login = Login {
        user: 1,
        device: 1,
        resume: 0,
        token: Bytes::from_static(b"token bytes"),
    };
    let kick = Kick::new(KickReason::Admin, "bye");
    let mut buf = BytesMut::new();
    Frame::from(Ping { nonce: 1 }).encode(&mut buf);
    Frame::from(msg.clone()).encode(&mut buf);
    Frame::from(p.clone()).encode(&mut buf);
    Frame::from(login.clone()).encode(&mut buf);
    Frame::from(kick.clone()).encode(&mut buf);
    // The read buffer's memory, before the decoder splits it up.
    let read = span(&buf);

    let dec = Decoder::default();
    let mut next = || {
        dec.decode(&mut buf)
            .expect("valid stream")
            .expect("whole frame")
    };
    assert_eq!(next(), Frame::from(Ping { nonce: 1 }));

    let Frame::MsgR(got) = next() else {
        panic!("not msg:R");
    };
    assert_eq!(got, msg);
    // Exactly where it was read: after the ping (16 bytes), the msg:R
    // header and its 24 bytes of fixed fields.
    assert_eq!(span(&got.body).start, read.start + 16 + HEADER_LEN + 24);
    assert!(within(&got.body, &read));

    let Frame::SyncPage(got) = next() else {
        panic!("not a page");
    };
    assert_eq!(got, p);
    assert!(within(&got.entries, &read));
    for e in got.entries() {
        assert!(within(&e.body, &read), "entry body copied");
    }

    let Frame::Login(got) = next() else {
        panic!("not login");
    };
    assert_eq!(got, login);
    assert!(within(&got.token, &read));

    let Frame::Kick(got) = next() else {
        panic!("not kick");
    };
    assert_eq!(got, kick);
    assert!(within(&got.text, &read));
    assert!(buf.is_empty());

    // The check itself can fail: a copy is not within the read.
    let copy = got.text.to_vec();
    assert!(!within(&copy, &read));
}
