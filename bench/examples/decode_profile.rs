//! Decodes a batch of 1,024 frames many times with one codec, for a
//! profiler: instruction counts under callgrind are exact where the
//! criterion figures on a shared machine are noisy.
//!
//! ```text
//! cargo build --profile bench -p imgate-bench --example decode_profile
//! valgrind --tool=callgrind target/release/examples/decode_profile imgate msg:R 64 200
//! ```
//!
//! Arguments: codec (`imgate` or `ldc`), kind (`msg:R` or `msg:N`), body
//! bytes, rounds. The setup (encoding, copying) is in functions of its own,
//! so a profile separates it from `decode_imgate` / `decode_ldc`
//! (`--toggle-collect='*decode_imgate*'`).
//!
//! With codec `both`, it times instead: `rounds` trials, each decoding one
//! fresh copy of the batch with our decoder and one with
//! `LengthDelimitedCodec`, alternately (the copy untimed), and prints the
//! minimum and the median ns per frame of each. The minimum is the figure
//! least disturbed by other work on a shared machine.

use std::{error::Error, hint::black_box, time::Instant};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Decoder, Frame,
    frame::{MsgN, MsgR},
};
use tokio_util::codec::{Decoder as _, LengthDelimitedCodec};

const BATCH: usize = 1024;

#[inline(never)]
fn encode_batch(kind: &str, payload: usize) -> Result<BytesMut, Box<dyn Error>> {
    let mut buf = BytesMut::new();
    for i in 0..BATCH as u64 {
        let body = Bytes::from(vec![i as u8; payload]);
        let f: Frame = match kind {
            "msg:R" => MsgR {
                no_push: false,
                msg_id: i + 1,
                group: 0,
                to: 42,
                retry: false,
                body,
            }
            .into(),
            "msg:N" => MsgN {
                group: 0,
                seq: i + 1,
                from: 7,
                to: 42,
                msg_id: i + 1,
                server_time: 1_700_000_000_000,
                retry: false,
                body,
            }
            .into(),
            _ => return Err(format!("unknown kind {kind}").into()),
        };
        f.encode(&mut buf);
    }
    Ok(buf)
}

#[inline(never)]
fn fresh(wire: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(wire.len() + 4096);
    b.extend_from_slice(wire);
    b
}

/// One batch with our decoder (the same loop as `benches/codec.rs`).
#[inline(never)]
fn decode_imgate(buf: &mut BytesMut) -> Result<usize, Box<dyn Error>> {
    let dec = Decoder::default();
    let mut n = 0;
    while let Some(f) = dec.decode(buf)? {
        black_box(f);
        n += 1;
    }
    Ok(n)
}

/// One batch with `LengthDelimitedCodec` (the same loop as the benchmark).
#[inline(never)]
fn decode_ldc(buf: &mut BytesMut) -> Result<usize, Box<dyn Error>> {
    let mut codec = LengthDelimitedCodec::new();
    let mut n = 0;
    while let Some(f) = codec.decode(buf)? {
        black_box(f);
        n += 1;
    }
    Ok(n)
}

fn decode_round(ldc: bool, buf: &mut BytesMut) -> Result<usize, Box<dyn Error>> {
    if ldc {
        decode_ldc(buf)
    } else {
        decode_imgate(buf)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, codec, kind, payload, rounds] = &args[..] else {
        return Err("usage: decode_profile imgate|ldc msg:R|msg:N BODY_BYTES ROUNDS".into());
    };
    let wire = encode_batch(kind, payload.parse()?)?;
    let ldc = match codec.as_str() {
        "imgate" => false,
        "ldc" => true,
        "both" => return time_both(&wire, rounds.parse()?),
        _ => return Err(format!("unknown codec {codec}").into()),
    };
    let mut frames = 0;
    for _ in 0..rounds.parse::<usize>()? {
        let mut buf = fresh(&wire);
        frames += decode_round(ldc, &mut buf)?;
    }
    println!("{frames} frames decoded");
    Ok(())
}

/// Times `trials` alternate single-batch decodes with each codec.
fn time_both(wire: &[u8], trials: usize) -> Result<(), Box<dyn Error>> {
    let mut ns = [Vec::with_capacity(trials), Vec::with_capacity(trials)];
    for _ in 0..trials {
        for (i, ldc) in [false, true].into_iter().enumerate() {
            let mut buf = fresh(wire);
            let start = Instant::now();
            let n = decode_round(ldc, &mut buf)?;
            let t = start.elapsed();
            if n != BATCH {
                return Err(format!("decoded {n} frames").into());
            }
            ns[i].push(t.as_nanos() as f64 / BATCH as f64);
        }
    }
    for (name, v) in ["imgate", "length_delimited"].into_iter().zip(&mut ns) {
        v.sort_by(f64::total_cmp);
        let (min, med) = (v[0], v[v.len() / 2]);
        println!(
            "{name:>16}: min {min:5.1} ns/frame ({:5.1} M frames/s), median {med:5.1} ns/frame ({:5.1} M frames/s)",
            1e3 / min,
            1e3 / med
        );
    }
    Ok(())
}
