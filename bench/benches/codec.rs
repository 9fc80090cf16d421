//! Codec micro-benchmarks: decode and encode of msg:R (what the gateway
//! decodes) and msg:N (what clients decode) with 64-byte and 1 KiB bodies,
//! side by side with tokio-util's `LengthDelimitedCodec` on the same bytes.
//!
//! Our frames are valid length-delimited frames for `LengthDelimitedCodec`'s
//! default configuration (4-byte big-endian length counting the bytes after
//! it), so both decoders split the very same buffer. The difference is what
//! they return: `LengthDelimitedCodec` a `BytesMut` of the bytes after the
//! length; ours a typed `Frame`, header checked and fixed fields parsed, the
//! body a `Bytes` slice of the same buffer.
//!
//! Method:
//!
//! - A batch of [`BATCH`] frames is encoded once into one buffer (`wire`).
//! - Decode: each iteration decodes the whole batch from a fresh `BytesMut`
//!   holding a copy of `wire` plus [`SLACK`] spare bytes, as a socket read
//!   buffer has. The copy is made by criterion's `iter_batched_ref` setup
//!   with `BatchSize::PerIteration`: outside the timing, identical for both
//!   codecs, and just before the timed part, so the bytes are in cache as
//!   they are after a `recv`. The buffer (and the storage the decoded frames
//!   shared) is freed outside the timing too. Each frame is `black_box`ed
//!   and dropped in the loop.
//! - Encode: each iteration clears a reused buffer (capacity reserved once)
//!   and encodes the batch into it. Ours encodes `Frame`s; for
//!   `LengthDelimitedCodec` the payloads are the same frames' bytes after
//!   the length field, as `Bytes::from_static` (cloning one is a pointer
//!   copy, no reference count), so both write identical output, which is
//!   checked before measuring.
//!
//! Each benchmark is reported twice, as frames/s (group `*/frames`) and as
//! bytes/s (group `*/bytes`, wire bytes, header included).
//!
//! Why `SLACK`: `LengthDelimitedCodec` reserves room for the next header
//! after each frame. On a buffer with no spare capacity that `reserve`
//! reallocates or moves the rest of the buffer on every frame, which would
//! make it look quadratic; a read buffer always has spare room.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use imgate_codec::{
    Decoder, Frame,
    frame::{MsgN, MsgR},
};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

/// Frames per batch.
const BATCH: usize = 1024;
/// Spare capacity of the decode buffer, as a socket read buffer has.
const SLACK: usize = 4096;
/// Body sizes benchmarked.
const PAYLOADS: [usize; 2] = [64, 1024];

/// One benchmark input: a batch of frames and its encoding.
struct Case {
    /// `msg:R/64` and so on.
    name: String,
    /// The frames, for our encoder.
    frames: Vec<Frame>,
    /// Every frame encoded, back to back.
    wire: &'static [u8],
    /// Each frame's bytes after the length field, for `LengthDelimitedCodec`.
    payloads: Vec<Bytes>,
}

fn msg_r(i: u64, body: Bytes) -> Frame {
    MsgR {
        no_push: false,
        msg_id: i + 1,
        group: 0,
        to: 42,
        retry: false,
        body,
    }
    .into()
}

fn msg_n(i: u64, body: Bytes) -> Frame {
    MsgN {
        group: 0,
        seq: i + 1,
        from: 7,
        to: 42,
        msg_id: i + 1,
        server_time: 1_700_000_000_000 + i,
        retry: false,
        body,
    }
    .into()
}

fn case(kind: &str, payload: usize, make: fn(u64, Bytes) -> Frame) -> Case {
    let frames: Vec<Frame> = (0..BATCH as u64)
        .map(|i| make(i, Bytes::from(vec![i as u8; payload])))
        .collect();
    let mut buf = BytesMut::new();
    for f in &frames {
        f.encode(&mut buf);
    }
    // Leaked once per case (a few MiB in all) so the payloads can be
    // `Bytes::from_static`: LengthDelimitedCodec's encoder takes `Bytes` by
    // value, and a static one clones without touching a reference count.
    let wire: &'static [u8] = Box::leak(buf.to_vec().into_boxed_slice());
    let mut payloads = Vec::with_capacity(BATCH);
    let mut at = 0;
    for f in &frames {
        let n = f.encoded_len();
        payloads.push(Bytes::from_static(&wire[at + 4..at + n]));
        at += n;
    }
    assert_eq!(at, wire.len());
    Case {
        name: format!("{kind}/{payload}"),
        frames,
        wire,
        payloads,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for payload in PAYLOADS {
        v.push(case("msg:R", payload, msg_r));
        v.push(case("msg:N", payload, msg_n));
    }
    v
}

/// A read buffer holding `wire` with `SLACK` bytes to spare.
fn fresh(wire: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(wire.len() + SLACK);
    b.extend_from_slice(wire);
    b
}

fn decode_imgate(buf: &mut BytesMut) {
    let dec = Decoder::default();
    let mut n = 0;
    while let Some(f) = dec.decode(buf).expect("valid frames") {
        black_box(f);
        n += 1;
    }
    assert_eq!(n, BATCH);
}

fn decode_ldc(buf: &mut BytesMut) {
    let mut codec = LengthDelimitedCodec::new();
    let mut n = 0;
    while let Some(f) = codec.decode(buf).expect("valid frames") {
        black_box(f);
        n += 1;
    }
    assert_eq!(n, BATCH);
}

fn encode_imgate(frames: &[Frame], buf: &mut BytesMut) {
    buf.clear();
    for f in frames {
        f.encode(buf);
    }
    black_box(&*buf);
}

fn encode_ldc(codec: &mut LengthDelimitedCodec, payloads: &[Bytes], buf: &mut BytesMut) {
    buf.clear();
    for p in payloads {
        codec.encode(p.clone(), buf).expect("under the frame limit");
    }
    black_box(&*buf);
}

fn throughputs(c: &Case) -> [(&'static str, Throughput); 2] {
    [
        ("frames", Throughput::Elements(BATCH as u64)),
        ("bytes", Throughput::Bytes(c.wire.len() as u64)),
    ]
}

fn decode(cr: &mut Criterion) {
    let cases = cases();
    for unit in ["frames", "bytes"] {
        let mut g = cr.benchmark_group(format!("decode/{unit}"));
        for c in &cases {
            let t = throughputs(c)
                .into_iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, t)| t)
                .expect("both units");
            g.throughput(t);
            let wire = c.wire;
            g.bench_function(BenchmarkId::new("imgate", &c.name), |b| {
                b.iter_batched_ref(|| fresh(wire), decode_imgate, BatchSize::PerIteration)
            });
            g.bench_function(BenchmarkId::new("length_delimited", &c.name), |b| {
                b.iter_batched_ref(|| fresh(wire), decode_ldc, BatchSize::PerIteration)
            });
        }
        g.finish();
    }
}

fn encode(cr: &mut Criterion) {
    let cases = cases();
    for c in &cases {
        // Both encoders must write exactly the bytes decoded above.
        let mut ours = BytesMut::new();
        encode_imgate(&c.frames, &mut ours);
        let mut theirs = BytesMut::new();
        encode_ldc(&mut LengthDelimitedCodec::new(), &c.payloads, &mut theirs);
        assert_eq!(&ours[..], c.wire, "{}", c.name);
        assert_eq!(&theirs[..], c.wire, "{}", c.name);
    }
    for unit in ["frames", "bytes"] {
        let mut g = cr.benchmark_group(format!("encode/{unit}"));
        for c in &cases {
            let t = throughputs(c)
                .into_iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, t)| t)
                .expect("both units");
            g.throughput(t);
            let mut buf = BytesMut::with_capacity(c.wire.len());
            g.bench_function(BenchmarkId::new("imgate", &c.name), |b| {
                b.iter(|| encode_imgate(&c.frames, &mut buf))
            });
            let mut codec = LengthDelimitedCodec::new();
            g.bench_function(BenchmarkId::new("length_delimited", &c.name), |b| {
                b.iter(|| encode_ldc(&mut codec, &c.payloads, &mut buf))
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    // A shared 2-core machine: shorter runs, more of them, are steadier
    // than a few long ones; 64 samples of ~3 s per benchmark.
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(64)
}

/// Every codec benchmark (what `criterion_group!` would write, without
/// its undocumented `pub fn`).
fn benches() {
    let mut c = config().configure_from_args();
    decode(&mut c);
    encode(&mut c);
}

criterion_main!(benches);
