//! Properties of the WebSocket frame layer: whatever a client encodes, in
//! whatever pieces it arrives, the server's decoder gives back the same
//! frames in order; and no input makes the decoder panic.

use bytes::BytesMut;
use imgate_codec::ws::{Decoder, Opcode, encode};
use proptest::prelude::*;

fn frame() -> impl Strategy<Value = (Opcode, Vec<u8>, [u8; 4])> {
    let data = (
        Just(Opcode::Binary),
        proptest::collection::vec(any::<u8>(), 0..70_000),
    );
    let control = (
        prop_oneof![Just(Opcode::Ping), Just(Opcode::Pong), Just(Opcode::Close)],
        proptest::collection::vec(any::<u8>(), 0..=125),
    );
    (prop_oneof![data, control], any::<[u8; 4]>()).prop_map(|((op, p), k)| (op, p, k))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_come_back_whole_and_in_order_from_any_split(
        frames in proptest::collection::vec(frame(), 1..6),
        cuts in proptest::collection::vec(1usize..5_000, 1..40),
    ) {
        let mut wire = Vec::new();
        for (op, p, k) in &frames {
            wire.extend_from_slice(&encode(*op, p, Some(*k)));
        }
        let d = Decoder::server(70_000);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - at);
            i += 1;
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(f) = d.decode(&mut buf).expect("valid frames") {
                got.push((f.opcode, f.payload.to_vec()));
            }
        }
        prop_assert!(buf.is_empty());
        let want: Vec<(Opcode, Vec<u8>)> = frames.into_iter().map(|(o, p, _)| (o, p)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_decode_to_frames_an_error_or_a_wait_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        for d in [Decoder::server(64), Decoder::client(64)] {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match d.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.payload.len() <= 64 && buf.len() < before),
                    Ok(None) => {
                        prop_assert!(d.needed(&buf) > 0);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
