//! Properties of the codec over generated frames and bytes: encoding then
//! decoding is the identity for every kind; a stream decodes to the same
//! frames however it is split into reads; the decoder never panics on any
//! bytes under any limit; and [`Decoder::needed`] agrees with
//! [`Decoder::decode`].

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    DEFAULT_MAX_FRAME, Decoder, Frame, HEADER_LEN, Kind,
    frame::{
        AckA, AckN, AckR, Entry, ErrorFrame, GroupA, GroupR, Kick, Login, LoginOk, Logout,
        MAX_TEXT, MAX_TOKEN, MsgA, MsgN, MsgR, Ping, Pong, ReadA, ReadN, ReadR, ReceiptsA,
        ReceiptsR, SyncPage, SyncR, UnreadA, UnreadEntry, UnreadR,
    },
};
use proptest::{collection::vec, prelude::*, sample::select};

/// A u64 id, biased towards the edges.
fn id() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()]
}

fn nonzero() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![Just(1), Just(u64::MAX), 1..=u64::MAX]
}

fn u32e() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn group_op() -> impl Strategy<Value = u8> + Clone {
    1..=4u8
}

/// A valid frame of `kind`, variable parts at most `max` bytes (tokens and
/// texts also stay within their protocol limits).
fn frame_of(kind: Kind, max: usize) -> BoxedStrategy<Frame> {
    let text = bytes(max.min(MAX_TEXT));
    match kind {
        Kind::Login => (
            id(),
            u32e(),
            id(),
            vec(any::<u8>(), 1..=max.clamp(1, MAX_TOKEN)),
        )
            .prop_map(|(user, device, resume, t)| {
                Login {
                    user,
                    device,
                    resume,
                    token: t.into(),
                }
                .into()
            })
            .boxed(),
        Kind::LoginOk => (
            (id(), u32e(), u32e(), id(), id(), u32e(), id()),
            (u32e(), u32e(), u32e()),
        )
            .prop_map(
                |(
                    (user, device, heartbeat_ms, server_time, inbox_head, max_frame, session),
                    (frame_rate, frame_burst, rate_strikes),
                )| {
                    LoginOk {
                        user,
                        device,
                        heartbeat_ms,
                        server_time,
                        inbox_head,
                        max_frame,
                        session,
                        frame_rate,
                        frame_burst,
                        rate_strikes,
                    }
                    .into()
                },
            )
            .boxed(),
        Kind::Ping => id().prop_map(|nonce| Ping { nonce }.into()).boxed(),
        Kind::Pong => id().prop_map(|nonce| Pong { nonce }.into()).boxed(),
        Kind::Kick => (any::<u8>(), text)
            .prop_map(|(reason, text)| Kick { reason, text }.into())
            .boxed(),
        Kind::Error => (any::<u16>(), any::<u8>(), id(), text)
            .prop_map(|(code, ref_kind, ref_id, text)| {
                ErrorFrame {
                    code,
                    ref_kind,
                    ref_id,
                    text,
                }
                .into()
            })
            .boxed(),
        Kind::Logout => Just(Logout {}.into()).boxed(),
        Kind::MsgR => (id(), nonzero(), any::<bool>(), any::<bool>(), bytes(max))
            .prop_map(|(msg_id, dest, to_group, retry, body)| {
                let (group, to) = if to_group { (dest, 0) } else { (0, dest) };
                MsgR {
                    no_push: false,
                    msg_id,
                    group,
                    to,
                    retry,
                    body,
                }
                .into()
            })
            .boxed(),
        Kind::MsgA => (id(), id(), id(), id(), id())
            .prop_map(|(msg_id, group, seq, own_seq, server_time)| {
                MsgA {
                    msg_id,
                    group,
                    seq,
                    own_seq,
                    server_time,
                }
                .into()
            })
            .boxed(),
        Kind::MsgN => (
            (id(), nonzero(), id(), id(), id(), id()),
            any::<bool>(),
            bytes(max),
        )
            .prop_map(
                |((group, seq, from, to, msg_id, server_time), retry, body)| {
                    MsgN {
                        group,
                        seq,
                        from,
                        to,
                        msg_id,
                        server_time,
                        retry,
                        body,
                    }
                    .into()
                },
            )
            .boxed(),
        Kind::AckR => (id(), id())
            .prop_map(|(group, seq)| AckR { group, seq }.into())
            .boxed(),
        Kind::AckA => (id(), id())
            .prop_map(|(group, seq)| AckA { group, seq }.into())
            .boxed(),
        Kind::AckN => (id(), id(), id())
            .prop_map(|(peer, group, seq)| AckN { peer, group, seq }.into())
            .boxed(),
        Kind::ReadR => (id(), id(), id())
            .prop_map(|(group, peer, seq)| ReadR { group, peer, seq }.into())
            .boxed(),
        Kind::ReadA => (id(), id(), id())
            .prop_map(|(group, peer, seq)| ReadA { group, peer, seq }.into())
            .boxed(),
        Kind::ReadN => (id(), id(), id(), id())
            .prop_map(|(reader, group, peer, seq)| {
                ReadN {
                    reader,
                    group,
                    peer,
                    seq,
                }
                .into()
            })
            .boxed(),
        Kind::SyncR => (id(), id(), any::<u16>())
            .prop_map(|(group, after, limit)| {
                SyncR {
                    group,
                    after,
                    limit,
                }
                .into()
            })
            .boxed(),
        Kind::SyncPage => (
            id(),
            id(),
            id(),
            vec(
                ((id(), id(), id(), id(), id()), bytes(max / 4)),
                0..=max.clamp(1, 8),
            ),
        )
            .prop_map(|(group, after, head, entries)| {
                let mut p = SyncPage::new(group, after, head);
                let mut b = BytesMut::new();
                for ((seq, from, to, msg_id, server_time), body) in entries {
                    let e = Entry {
                        seq,
                        from,
                        to,
                        msg_id,
                        server_time,
                        body,
                    };
                    p.push(&mut b, &e);
                }
                p.finish(b).into()
            })
            .boxed(),
        Kind::UnreadR => Just(UnreadR {}.into()).boxed(),
        Kind::UnreadA => vec((id(), id(), u32e(), id()), 0..=max.clamp(1, 16))
            .prop_map(|es| {
                let es: Vec<UnreadEntry> = es
                    .into_iter()
                    .map(|(group, peer, unread, last_seq)| UnreadEntry {
                        group,
                        peer,
                        unread,
                        last_seq,
                    })
                    .collect();
                UnreadA::from_entries(&es).into()
            })
            .boxed(),
        Kind::GroupR => (id(), group_op(), id(), vec(id(), 0..=max.clamp(1, 32) / 8))
            .prop_map(|(req, op, group, ids)| {
                GroupR {
                    req,
                    op,
                    group,
                    ..Default::default()
                }
                .with_members(&ids)
                .into()
            })
            .boxed(),
        Kind::GroupA => (
            id(),
            group_op(),
            id(),
            u32e(),
            vec(id(), 0..=max.clamp(1, 32) / 8),
        )
            .prop_map(|(req, op, group, total, ids)| {
                GroupA {
                    req,
                    op,
                    group,
                    total,
                    ..Default::default()
                }
                .with_members(&ids)
                .into()
            })
            .boxed(),
        Kind::ReceiptsR => (id(), id(), id())
            .prop_map(|(req, group, seq)| ReceiptsR { req, group, seq }.into())
            .boxed(),
        Kind::ReceiptsA => (id(), id(), id(), u32e(), u32e(), u32e())
            .prop_map(|(req, group, seq, members, delivered, read)| {
                ReceiptsA {
                    req,
                    group,
                    seq,
                    members,
                    delivered,
                    read,
                }
                .into()
            })
            .boxed(),
    }
}

/// Any valid frame, every kind equally likely.
fn frame(max: usize) -> impl Strategy<Value = Frame> {
    select(Kind::ALL).prop_flat_map(move |k| frame_of(k, max))
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

/// Appends each read to a buffer and decodes everything available after
/// each; fails on a decode error or on bytes left at the end.
fn decode_reads<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        while let Some(f) = dec.decode(&mut buf).expect("a valid stream") {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

/// Splits `bytes` at the given cut points (sorted, deduplicated here).
fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        out.push(&bytes[from..c]);
        from = c;
    }
    out.push(&bytes[from..]);
    out
}

/// Checks `needed` against `decode` on `buf` (a copy is decoded).
fn needed_agrees(dec: &Decoder, buf: &[u8]) -> Result<(), TestCaseError> {
    let needed = dec.needed(buf);
    let mut b = BytesMut::from(buf);
    match dec.decode(&mut b) {
        Ok(None) => {
            prop_assert!(needed > 0, "needed 0 but decode waits: {:?}", buf);
            prop_assert_eq!(&b[..], buf, "Ok(None) consumed bytes");
        }
        Ok(Some(f)) => {
            prop_assert_eq!(needed, 0, "decode gave {:?}", f);
            prop_assert_eq!(buf.len() - b.len(), f.encoded_len());
        }
        Err(e) => prop_assert_eq!(needed, 0, "decode failed: {}", e),
    }
    Ok(())
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(f in frame(2048)) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        prop_assert_eq!(buf.len(), f.encoded_len());
        prop_assert_eq!(&f.to_bytes()[..], &buf[..]);
        let got = Decoder::default().decode(&mut buf);
        prop_assert_eq!(got, Ok(Some(f)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_split_at_every_byte_decodes_the_same(
        frames in vec(frame(48), 1..6),
    ) {
        let bytes = encode_all(&frames);
        // One read per byte.
        prop_assert_eq!(&decode_reads(bytes.chunks(1)), &frames);
        // Two reads, split at every boundary.
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            prop_assert_eq!(&decode_reads([a, b]), &frames, "split at {}", i);
        }
    }

    #[test]
    fn a_stream_in_random_reads_decodes_the_same(
        frames in vec(frame(512), 1..16),
        cuts in vec(any::<usize>(), 0..32),
    ) {
        let bytes = encode_all(&frames);
        prop_assert_eq!(decode_reads(split_at(&bytes, &cuts)), frames);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..512),
        max_frame in prop_oneof![0..64usize, 0..100_000usize, Just(usize::MAX)],
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let dec = Decoder::new(max_frame);
        let mut buf = BytesMut::new();
        'reads: for r in split_at(&bytes, &cuts) {
            buf.extend_from_slice(r);
            loop {
                needed_agrees(&dec, &buf)?;
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'reads,
                }
            }
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_frames(
        frames in vec(frame(64), 1..4),
        edits in vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        max_frame in prop_oneof![Just(DEFAULT_MAX_FRAME), 0..256usize],
    ) {
        // Near-valid input reaches the field checks that random bytes
        // rarely get past the header to.
        let mut bytes = encode_all(&frames);
        for (at, v) in edits {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let dec = Decoder::new(max_frame);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            needed_agrees(&dec, &buf)?;
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    // Whatever decodes re-encodes to a frame that decodes
                    // to itself.
                    let mut again = BytesMut::from(&f.to_bytes()[..]);
                    prop_assert_eq!(dec.decode(&mut again), Ok(Some(f)));
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn needed_agrees_with_decode_on_every_prefix(
        frames in vec(frame(64), 1..4),
        max_frame in prop_oneof![Just(DEFAULT_MAX_FRAME), HEADER_LEN..200usize],
    ) {
        let bytes = encode_all(&frames);
        let dec = Decoder::new(max_frame);
        for i in 0..=bytes.len() {
            needed_agrees(&dec, &bytes[..i])?;
        }
    }

    #[test]
    fn needed_agrees_with_decode_on_a_header_alone(
        len in prop_oneof![0..300u32, any::<u32>()],
        version in prop_oneof![Just(1u8), any::<u8>()],
        kind in any::<u8>(),
        flags in any::<u16>(),
        have in 0..=HEADER_LEN,
        max_frame in prop_oneof![Just(DEFAULT_MAX_FRAME), 0..64usize],
    ) {
        // A header (often with a bad version or kind) followed by less than
        // the body it announces.
        let mut h = len.to_be_bytes().to_vec();
        h.extend_from_slice(&[version, kind]);
        h.extend_from_slice(&flags.to_be_bytes());
        needed_agrees(&Decoder::new(max_frame), &h[..have])?;
    }
}
