//! Garbage, truncated, oversized and invalid input, each with the exact
//! typed error the decoder must report (and the error code the gateway
//! sends back for it).

use bytes::{BufMut, BytesMut};
use imgate_codec::{
    DEFAULT_MAX_FRAME, DecodeError, Decoder, ErrorCode, Frame, HEADER_LEN, Kind, VERSION,
    frame::{
        ENTRY_FIXED, Entry, GroupR, Logout, MAX_TEXT, MAX_TOKEN, MsgN, MsgR, Ping, SyncPage,
        UNREAD_ENTRY,
    },
};

/// A frame as the peer sends it: a correct length, then whatever version,
/// kind, flags and body it likes.
fn raw_v(version: u8, kind: u8, flags: u16, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(u32::try_from(HEADER_LEN - 4 + body.len()).expect("small body"));
    b.put_u8(version);
    b.put_u8(kind);
    b.put_u16(flags);
    b.extend_from_slice(body);
    b
}

fn raw(kind: Kind, body: &[u8]) -> BytesMut {
    raw_v(VERSION, kind as u8, 0, body)
}

fn decode(mut b: BytesMut) -> Result<Option<Frame>, DecodeError> {
    Decoder::default().decode(&mut b)
}

fn truncated(kind: Kind) -> DecodeError {
    DecodeError::Truncated { kind: Some(kind) }
}

fn invalid(kind: Kind, field: &'static str) -> DecodeError {
    DecodeError::InvalidField { kind, field }
}

fn trailing(kind: Kind, extra: usize) -> DecodeError {
    DecodeError::TrailingBytes { kind, extra }
}

fn be(parts: &[u64]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// Bytes of each kind's fixed fields, as `docs/protocol.md` lays them out.
fn fixed_len(kind: Kind) -> usize {
    match kind {
        Kind::Login => 8 + 4 + 8,
        Kind::LoginOk => 8 + 4 + 4 + 8 + 8 + 4 + 8 + 3 * 4,
        Kind::Ping | Kind::Pong => 8,
        Kind::Kick => 1,
        Kind::Error => 2 + 1 + 8,
        Kind::Logout | Kind::UnreadR | Kind::UnreadA => 0,
        Kind::MsgR => 3 * 8,
        Kind::MsgA => 5 * 8,
        Kind::MsgN => 6 * 8,
        Kind::AckR | Kind::AckA => 2 * 8,
        Kind::AckN | Kind::ReadR | Kind::ReadA => 3 * 8,
        Kind::ReadN => 4 * 8,
        Kind::SyncR => 8 + 8 + 2,
        Kind::SyncPage => 8 + 8 + 8 + 2,
        Kind::GroupR => 8 + 1 + 8,
        Kind::GroupA => 8 + 1 + 8 + 4,
        Kind::ReceiptsR => 3 * 8,
        Kind::ReceiptsA => 3 * 8 + 3 * 4,
    }
}

/// Whether the kind is its fixed fields and nothing else.
fn is_fixed(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Login
            | Kind::Kick
            | Kind::Error
            | Kind::MsgR
            | Kind::MsgN
            | Kind::SyncPage
            | Kind::UnreadA
            | Kind::GroupR
            | Kind::GroupA
    )
}

/// A body of the fixed fields of `kind` that passes every field check.
fn valid_fixed(kind: Kind) -> Vec<u8> {
    let mut b = vec![0u8; fixed_len(kind)];
    match kind {
        // One of group/to set.
        Kind::MsgR => b[23] = 1,
        // seq 1.
        Kind::MsgN => b[15] = 1,
        // op Create.
        Kind::GroupR | Kind::GroupA => b[8] = 1,
        _ => {}
    }
    b
}

#[test]
fn fixed_lengths_match_the_encoder() {
    for &k in Kind::ALL {
        let mut b = raw(k, &valid_fixed(k));
        if k == Kind::Login {
            b.extend_from_slice(b"t");
            b[3] += 1;
        }
        let f = decode(b)
            .unwrap_or_else(|e| panic!("{k}: {e}"))
            .expect("whole frame");
        assert_eq!(f.kind(), k);
        let tail = usize::from(k == Kind::Login);
        assert_eq!(f.encoded_len(), HEADER_LEN + fixed_len(k) + tail, "{k}");
    }
}

#[test]
fn length_over_the_limit_is_rejected_as_soon_as_the_length_arrives() {
    let dec = Decoder::default();
    // 4 + 65533 = 65537 bytes, one over the default limit.
    let len = u32::try_from(DEFAULT_MAX_FRAME - 4 + 1).expect("fits");
    let field = len.to_be_bytes();
    let mut b = BytesMut::new();
    for (i, byte) in field.iter().enumerate() {
        b.put_u8(*byte);
        if i < 3 {
            assert_eq!(dec.decode(&mut b), Ok(None), "{} bytes", i + 1);
            assert_eq!(dec.needed(&b), HEADER_LEN - b.len());
        }
    }
    let err = DecodeError::FrameTooLarge {
        len: DEFAULT_MAX_FRAME as u64 + 1,
        max: DEFAULT_MAX_FRAME,
    };
    assert_eq!(dec.decode(&mut b), Err(err.clone()));
    assert_eq!(dec.needed(&b), 0);
    // Nothing reserved or consumed on the peer's word.
    assert_eq!(b.len(), 4);

    // The largest length field: no overflow in the arithmetic.
    let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        dec.decode(&mut b),
        Err(DecodeError::FrameTooLarge {
            len: 4 + u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME,
        })
    );
    // The rest of the header does not matter.
    let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 9, 0xee, 0, 0, 1][..]);
    assert!(matches!(
        dec.decode(&mut b),
        Err(DecodeError::FrameTooLarge { .. })
    ));
}

#[test]
fn the_limit_is_inclusive_and_configurable() {
    let limit = 100;
    let dec = Decoder::new(limit);
    assert_eq!(dec.max_frame(), limit);
    let at = |body: usize| {
        Frame::from(MsgR {
            no_push: false,
            msg_id: 1,
            group: 0,
            to: 2,
            retry: false,
            body: vec![7; body].into(),
        })
    };
    // Header 8 + fixed 24 + body 68 = 100 bytes: accepted.
    let ok = at(limit - HEADER_LEN - 24);
    assert_eq!(ok.encoded_len(), limit);
    let mut b = BytesMut::from(&ok.to_bytes()[..]);
    assert_eq!(dec.decode(&mut b), Ok(Some(ok)));

    // One byte more: rejected, from the header alone.
    let over = at(limit - HEADER_LEN - 24 + 1);
    let bytes = over.to_bytes();
    let err = Err(DecodeError::FrameTooLarge {
        len: 101,
        max: limit,
    });
    assert_eq!(dec.decode(&mut BytesMut::from(&bytes[..4])), err);
    assert_eq!(dec.decode(&mut BytesMut::from(&bytes[..])), err);
    // The default decoder takes it.
    assert_eq!(decode(BytesMut::from(&bytes[..])), Ok(Some(over.clone())));

    // A limit below a header is raised to a header: an empty frame passes.
    let tiny = Decoder::new(0);
    assert_eq!(tiny.max_frame(), HEADER_LEN);
    let mut b = BytesMut::from(&Frame::from(Logout {}).to_bytes()[..]);
    assert_eq!(tiny.decode(&mut b), Ok(Some(Frame::from(Logout {}))));
    let mut b = BytesMut::from(&Frame::from(Ping { nonce: 1 }).to_bytes()[..]);
    assert_eq!(
        tiny.decode(&mut b),
        Err(DecodeError::FrameTooLarge {
            len: 16,
            max: HEADER_LEN
        })
    );
}

#[test]
fn length_shorter_than_the_header_is_rejected() {
    for len in 0..4u32 {
        let mut b = BytesMut::from(&len.to_be_bytes()[..]);
        // Rejected with the length field alone...
        assert_eq!(
            Decoder::default().decode(&mut b),
            Err(DecodeError::FrameTooShort { len })
        );
        // ...and with a whole header.
        b.extend_from_slice(&[VERSION, Kind::Ping as u8, 0, 0]);
        assert_eq!(decode(b), Err(DecodeError::FrameTooShort { len }));
    }
}

#[test]
fn bad_version_is_rejected() {
    for v in [0, 2, 0xff] {
        assert_eq!(
            decode(raw_v(v, Kind::Ping as u8, 0, &[0; 8])),
            Err(DecodeError::UnsupportedVersion(v))
        );
        // With only the header there, before the body arrives.
        let mut head = raw_v(v, Kind::Ping as u8, 0, &[0; 8]);
        head.truncate(HEADER_LEN);
        assert_eq!(decode(head), Err(DecodeError::UnsupportedVersion(v)));
    }
    // The version is checked before the kind.
    assert_eq!(
        decode(raw_v(7, 0xee, 0, &[])),
        Err(DecodeError::UnsupportedVersion(7))
    );
}

#[test]
fn unknown_kind_is_rejected() {
    let mut unknown = 0;
    for k in 0..=u8::MAX {
        if Kind::from_u8(k).is_some() {
            continue;
        }
        unknown += 1;
        assert_eq!(
            decode(raw_v(VERSION, k, 0, b"body")),
            Err(DecodeError::UnknownKind(k))
        );
    }
    assert_eq!(unknown, 256 - Kind::ALL.len());
}

#[test]
fn garbage_is_rejected() {
    // Someone speaking HTTP: "GET " read as a length.
    let len = u32::from_be_bytes(*b"GET ");
    assert_eq!(
        decode(BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..])),
        Err(DecodeError::FrameTooLarge {
            len: 4 + u64::from(len),
            max: DEFAULT_MAX_FRAME
        })
    );
    // A TLS ClientHello.
    assert_eq!(
        decode(BytesMut::from(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..])),
        Err(DecodeError::FrameTooLarge {
            len: 4 + 0x1603_0102,
            max: DEFAULT_MAX_FRAME
        })
    );
    // Zeros.
    assert_eq!(
        decode(BytesMut::from(&[0u8; 64][..])),
        Err(DecodeError::FrameTooShort { len: 0 })
    );
    // A plausible length, then nonsense.
    assert_eq!(
        decode(BytesMut::from(
            &[0, 0, 0, 8, b'h', b'e', b'l', b'l', b'o', b'!', 0, 0][..]
        )),
        Err(DecodeError::UnsupportedVersion(b'h'))
    );
}

#[test]
fn truncated_fixed_fields_are_rejected_for_every_kind() {
    for &k in Kind::ALL {
        for n in 0..fixed_len(k) {
            assert_eq!(
                decode(raw(k, &vec![0xab; n])),
                Err(truncated(k)),
                "{k} with {n} body bytes"
            );
        }
    }
}

#[test]
fn trailing_bytes_on_fixed_frames_are_rejected() {
    let mut fixed = 0;
    for &k in Kind::ALL.iter().filter(|&&k| is_fixed(k)) {
        fixed += 1;
        for extra in [1, 3, 64] {
            let mut body = valid_fixed(k);
            body.extend(std::iter::repeat_n(0xcd, extra));
            assert_eq!(decode(raw(k, &body)), Err(trailing(k, extra)), "{k}");
        }
    }
    assert_eq!(fixed, 15);
}

#[test]
fn login_token_must_be_1_to_1024_bytes() {
    let login = |token: usize| {
        let mut b = be(&[1]);
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&be(&[0]));
        b.extend(std::iter::repeat_n(b'x', token));
        raw(Kind::Login, &b)
    };
    assert_eq!(decode(login(0)), Err(invalid(Kind::Login, "token length")));
    assert_eq!(
        decode(login(MAX_TOKEN + 1)),
        Err(invalid(Kind::Login, "token length"))
    );
    for ok in [1, MAX_TOKEN] {
        let Ok(Some(Frame::Login(l))) = decode(login(ok)) else {
            panic!("token of {ok} bytes rejected");
        };
        assert_eq!((l.user, l.device, l.resume), (1, 2, 0));
        assert_eq!(l.token.len(), ok);
    }
}

#[test]
fn msg_r_needs_exactly_one_of_group_and_to() {
    let field = "group/to (exactly one must be set)";
    for (group, to) in [(0, 0), (1, 2), (u64::MAX, u64::MAX)] {
        assert_eq!(
            decode(raw(Kind::MsgR, &be(&[9, group, to]))),
            Err(invalid(Kind::MsgR, field)),
            "group {group} to {to}"
        );
    }
    let mut body = be(&[9, 0, 2]);
    body.extend_from_slice(b"text");
    assert_eq!(
        decode(raw(Kind::MsgR, &body)),
        Ok(Some(Frame::from(MsgR {
            no_push: false,
            msg_id: 9,
            group: 0,
            to: 2,
            retry: false,
            body: "text".into(),
        })))
    );
    // Encoding does not check: the decoder is the gate.
    let both = Frame::from(MsgR {
        msg_id: 9,
        group: 1,
        to: 2,
        ..Default::default()
    });
    assert_eq!(
        decode(BytesMut::from(&both.to_bytes()[..])),
        Err(invalid(Kind::MsgR, field))
    );
}

#[test]
fn msg_n_seq_zero_is_rejected() {
    assert_eq!(
        decode(raw(Kind::MsgN, &be(&[0, 0, 3, 4, 5, 6]))),
        Err(invalid(Kind::MsgN, "seq"))
    );
    assert_eq!(
        decode(raw(Kind::MsgN, &be(&[0, 1, 3, 4, 5, 6]))),
        Ok(Some(Frame::from(MsgN {
            group: 0,
            seq: 1,
            from: 3,
            to: 4,
            msg_id: 5,
            server_time: 6,
            retry: false,
            body: Default::default(),
        })))
    );
}

/// A group:R or group:A body with this op and `members` bytes of members.
fn group_body(kind: Kind, op: u8, members: usize) -> BytesMut {
    let mut b = be(&[77]);
    b.push(op);
    b.extend_from_slice(&be(&[5]));
    if kind == Kind::GroupA {
        b.extend_from_slice(&3u32.to_be_bytes());
    }
    b.extend(std::iter::repeat_n(0x11, members));
    raw(kind, &b)
}

#[test]
fn group_op_must_be_known() {
    for k in [Kind::GroupR, Kind::GroupA] {
        for op in [0, 10, 0xff] {
            assert_eq!(decode(group_body(k, op, 8)), Err(invalid(k, "op")), "{k}");
        }
        for op in 1..=9 {
            let f = decode(group_body(k, op, 16))
                .expect("valid")
                .expect("whole");
            assert_eq!(f.kind(), k);
        }
    }
}

#[test]
fn member_list_must_be_whole_ids() {
    for k in [Kind::GroupR, Kind::GroupA] {
        for len in [1, 7, 9, 15] {
            assert_eq!(
                decode(group_body(k, 2, len)),
                Err(invalid(k, "member list length")),
                "{k} with {len} bytes"
            );
        }
        // The list length is checked before the op.
        assert_eq!(
            decode(group_body(k, 0, 7)),
            Err(invalid(k, "member list length"))
        );
    }
    let Ok(Some(Frame::GroupR(g))) = decode(group_body(Kind::GroupR, 2, 0)) else {
        panic!("empty member list rejected");
    };
    assert_eq!(
        g,
        GroupR {
            req: 77,
            op: 2,
            group: 5,
            ..Default::default()
        }
    );
}

#[test]
fn unread_entries_must_be_whole() {
    for len in [1, UNREAD_ENTRY - 1, UNREAD_ENTRY + 1, 2 * UNREAD_ENTRY - 1] {
        assert_eq!(
            decode(raw(Kind::UnreadA, &vec![0; len])),
            Err(invalid(Kind::UnreadA, "entries length")),
            "{len} bytes"
        );
    }
    for n in [0, 1, 2] {
        let Ok(Some(Frame::UnreadA(u))) = decode(raw(Kind::UnreadA, &vec![0; n * UNREAD_ENTRY]))
        else {
            panic!("{n} entries rejected");
        };
        assert_eq!(u.iter().len(), n);
    }
}

/// A sync page body claiming `count` entries, followed by `entries`.
fn page_body(count: u16, entries: &[u8]) -> BytesMut {
    let mut b = be(&[0, 10, 20]);
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(entries);
    raw(Kind::SyncPage, &b)
}

/// One encoded entry with a body of `body` bytes and a length field of
/// `claimed`.
fn page_entry(body: usize, claimed: u32) -> Vec<u8> {
    let mut b = be(&[11, 1, 2, 3, 4]);
    b.extend_from_slice(&claimed.to_be_bytes());
    b.extend(std::iter::repeat_n(b'm', body));
    b
}

#[test]
fn sync_page_entries_must_fit_the_frame() {
    let t = Err(truncated(Kind::SyncPage));
    // A count with no entries.
    assert_eq!(decode(page_body(1, &[])), t);
    // Part of an entry's fixed fields.
    assert_eq!(
        decode(page_body(1, &page_entry(0, 0)[..ENTRY_FIXED - 1])),
        t
    );
    // A body length that overruns the frame, by one and by everything.
    assert_eq!(decode(page_body(1, &page_entry(5, 6))), t);
    assert_eq!(decode(page_body(1, &page_entry(5, u32::MAX))), t);
    // Fewer entries than counted.
    let mut two = page_entry(3, 3);
    assert_eq!(decode(page_body(2, &two)), t);
    // More bytes than the counted entries take.
    two.extend_from_slice(&page_entry(0, 0));
    assert_eq!(
        decode(page_body(1, &two)),
        Err(trailing(Kind::SyncPage, ENTRY_FIXED))
    );
    assert_eq!(decode(page_body(0, b"x")), Err(trailing(Kind::SyncPage, 1)));
    // A body length that is short leaves trailing bytes.
    assert_eq!(
        decode(page_body(1, &page_entry(5, 4))),
        Err(trailing(Kind::SyncPage, 1))
    );

    // And the counted entries, exactly.
    let Ok(Some(Frame::SyncPage(p))) = decode(page_body(2, &two)) else {
        panic!("valid page rejected");
    };
    let mut want = SyncPage::new(0, 10, 20);
    let mut b = BytesMut::new();
    for body in [&b"mmm"[..], b""] {
        want.push(
            &mut b,
            &Entry {
                seq: 11,
                from: 1,
                to: 2,
                msg_id: 3,
                server_time: 4,
                body: body.to_vec().into(),
            },
        );
    }
    assert_eq!(p, want.finish(b));
}

#[test]
fn text_over_1024_bytes_is_rejected() {
    let kick = |n: usize| {
        let mut b = vec![2];
        b.extend(std::iter::repeat_n(b'k', n));
        raw(Kind::Kick, &b)
    };
    let error = |n: usize| {
        let mut b = 11u16.to_be_bytes().to_vec();
        b.push(Kind::SyncR as u8);
        b.extend_from_slice(&be(&[4]));
        b.extend(std::iter::repeat_n(b'e', n));
        raw(Kind::Error, &b)
    };
    assert_eq!(
        decode(kick(MAX_TEXT + 1)),
        Err(invalid(Kind::Kick, "text length"))
    );
    assert_eq!(
        decode(error(MAX_TEXT + 1)),
        Err(invalid(Kind::Error, "text length"))
    );
    for n in [0, MAX_TEXT] {
        let Ok(Some(Frame::Kick(k))) = decode(kick(n)) else {
            panic!("kick text of {n} rejected");
        };
        assert_eq!(k.text.len(), n);
        let Ok(Some(Frame::Error(e))) = decode(error(n)) else {
            panic!("error text of {n} rejected");
        };
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
        assert_eq!(e.ref_kind(), Some(Kind::SyncR));
        assert_eq!(e.text.len(), n);
    }
}

#[test]
fn every_error_maps_to_its_code() {
    let cases = [
        (
            DecodeError::FrameTooLarge { len: 9, max: 8 },
            ErrorCode::FrameTooLarge,
        ),
        (
            DecodeError::FrameTooShort { len: 0 },
            ErrorCode::MalformedFrame,
        ),
        (
            DecodeError::UnsupportedVersion(2),
            ErrorCode::UnsupportedVersion,
        ),
        (DecodeError::UnknownKind(0), ErrorCode::UnknownKind),
        (
            DecodeError::Truncated { kind: None },
            ErrorCode::MalformedFrame,
        ),
        (truncated(Kind::MsgR), ErrorCode::MalformedFrame),
        (trailing(Kind::Ping, 1), ErrorCode::MalformedFrame),
        (invalid(Kind::MsgN, "seq"), ErrorCode::MalformedFrame),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
    assert_eq!(ErrorCode::FrameTooLarge.to_wire(), 4);
    assert_eq!(ErrorCode::MalformedFrame.to_wire(), 1);
    assert_eq!(
        invalid(Kind::MsgN, "seq").to_string(),
        "msg:N frame has an invalid seq"
    );
    assert_eq!(
        truncated(Kind::SyncPage).to_string(),
        "truncated sync:page frame"
    );
}

#[test]
fn a_partial_frame_waits_and_consumes_nothing() {
    let dec = Decoder::default();
    let frames = [
        Frame::from(Ping { nonce: 3 }),
        Frame::from(MsgR {
            no_push: false,
            msg_id: 1,
            group: 4,
            to: 0,
            retry: true,
            body: "partial".into(),
        }),
        Frame::from(Logout {}),
    ];
    for f in frames {
        let bytes = f.to_bytes();
        for n in 0..bytes.len() {
            let mut b = BytesMut::from(&bytes[..n]);
            assert_eq!(dec.decode(&mut b), Ok(None), "{n} bytes of {f:?}");
            assert_eq!(&b[..], &bytes[..n], "consumed bytes");
            let needed = if n < 4 {
                HEADER_LEN - n
            } else {
                bytes.len() - n
            };
            assert_eq!(dec.needed(&b), needed, "{n} bytes of {f:?}");
        }
        assert_eq!(dec.needed(&bytes), 0);
    }
}

#[test]
fn an_invalid_complete_frame_is_consumed() {
    // The frame after it is still there, whole.
    let mut b = raw(Kind::MsgN, &be(&[0, 0, 3, 4, 5, 6]));
    Frame::from(Ping { nonce: 8 }).encode(&mut b);
    let dec = Decoder::default();
    assert_eq!(dec.decode(&mut b), Err(invalid(Kind::MsgN, "seq")));
    assert_eq!(dec.decode(&mut b), Ok(Some(Frame::from(Ping { nonce: 8 }))));
    assert!(b.is_empty());
}
