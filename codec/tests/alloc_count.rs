//! Heap allocations of decoding and of fan-out, counted: none per frame.
//!
//! A counting global allocator wraps `System` and counts `alloc`,
//! `alloc_zeroed` and `realloc` calls in an `AtomicUsize`. libtest runs
//! tests on several threads at once and allocates on its own threads, so
//! only allocations made on a thread inside [`count`] are counted (a
//! thread-local flag), and a mutex keeps two tests from counting at once.
//!
//! What is expected: decoding splits each frame off the read buffer and
//! freezes it, so the payload is a slice of that buffer. The first split
//! promotes the `BytesMut`'s storage to shared storage (one allocation for
//! the shared header); every later frame only bumps a reference count. So
//! decoding N frames allocates a small constant, the same for 1,000 frames
//! and for 10,000.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Decoder, Frame,
    frame::{MsgA, MsgN, MsgR, Ping},
};

/// Allocations counted since the current [`count`] began.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// One counted section at a time.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

impl Counting {
    #[inline]
    fn note(&self) {
        // `try_with`: an allocation during thread teardown is not counted.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.fetch_add(1, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches only an atomic and a
// const-initialised thread-local without a destructor (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the allocations it made.
fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    ALLOCS.store(0, Relaxed);
    COUNTING.set(true);
    let out = f();
    COUNTING.set(false);
    (out, ALLOCS.load(Relaxed))
}

/// Frame `i` of a stream: msg:R and msg:N with a 64-byte body, and, in the
/// mixed stream, msg:A and ping between them.
fn frame(i: u64, mixed: bool) -> Frame {
    let body = Bytes::from(vec![i as u8; 64]);
    match (mixed, i % 4) {
        (_, 0) | (false, 2) => MsgR {
            no_push: false,
            msg_id: i + 1,
            group: 0,
            to: 42,
            retry: false,
            body,
        }
        .into(),
        (_, 1) | (false, 3) => MsgN {
            group: 7,
            seq: i + 1,
            from: 3,
            to: 0,
            msg_id: i + 1,
            server_time: 1_700_000_000_000,
            retry: i.is_multiple_of(3),
            body,
        }
        .into(),
        (true, 2) => MsgA {
            msg_id: i + 1,
            group: 0,
            seq: i,
            own_seq: i + 2,
            server_time: 1_700_000_000_000,
        }
        .into(),
        _ => Ping { nonce: i }.into(),
    }
}

/// `n` frames encoded into one buffer (not counted).
fn stream(n: usize, mixed: bool) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n as u64 {
        frame(i, mixed).encode(&mut buf);
    }
    buf
}

/// Allocations made decoding `n` frames from one buffer, each frame dropped
/// as soon as it is decoded (as the gateway does after handling it).
fn decode_dropping(n: usize, mixed: bool) -> usize {
    let mut buf = stream(n, mixed);
    let dec = Decoder::default();
    let (decoded, allocs) = count(|| {
        let mut decoded = 0;
        while let Some(f) = dec.decode(&mut buf).expect("valid frames") {
            std::hint::black_box(f);
            decoded += 1;
        }
        decoded
    });
    assert_eq!(decoded, n);
    assert!(buf.is_empty());
    allocs
}

/// Allocations made decoding `n` frames while keeping every frame alive
/// (their payloads all share the read buffer's storage).
fn decode_keeping(n: usize, mixed: bool) -> usize {
    let mut buf = stream(n, mixed);
    let dec = Decoder::default();
    let mut kept = Vec::with_capacity(n);
    let ((), allocs) = count(|| {
        while let Some(f) = dec.decode(&mut buf).expect("valid frames") {
            kept.push(f);
        }
    });
    assert_eq!(kept.len(), n);
    for (i, f) in kept.iter().enumerate() {
        assert_eq!(*f, frame(i as u64, mixed));
    }
    allocs
}

/// A decode run: frames, mixed kinds or not, to allocations.
type DecodeRun = fn(usize, bool) -> usize;

#[test]
fn decoding_allocates_nothing_per_frame() {
    for mixed in [false, true] {
        let ways = [
            ("dropping", decode_dropping as DecodeRun),
            ("keeping", decode_keeping),
        ];
        for (how, decode) in ways {
            let small = decode(1_000, mixed);
            let large = decode(10_000, mixed);
            println!(
                "mixed={mixed} {how} frames: 1,000 frames: {small} allocations; \
                 10,000 frames: {large}"
            );
            assert_eq!(small, large, "allocations grow with the number of frames");
            // The promotion of the read buffer to shared storage.
            assert!(small <= 1, "{small} allocations for one buffer");
        }
    }
}

#[test]
fn a_decode_that_waits_for_more_bytes_allocates_nothing() {
    let whole = stream(1, false);
    let dec = Decoder::default();
    for cut in 0..whole.len() {
        let mut part = BytesMut::from(&whole[..cut]);
        let (got, allocs) = count(|| dec.decode(&mut part).expect("a prefix is not an error"));
        assert!(got.is_none());
        assert_eq!(allocs, 0, "cut at {cut}");
    }
}

/// Allocations made cloning a freshly encoded frame `n` times.
fn fan_out(n: usize) -> usize {
    let encoded = frame(1, false).to_bytes();
    let mut clones = Vec::with_capacity(n);
    let ((), allocs) = count(|| clones.extend((0..n).map(|_| encoded.clone())));
    assert!(clones.iter().all(|b| *b == encoded));
    allocs
}

#[test]
fn fan_out_allocates_the_same_for_one_recipient_and_a_thousand() {
    // `to_bytes` leaves one spare byte, so `freeze` makes the buffer shared
    // at once: cloning it for every recipient allocates nothing.
    let one = fan_out(1);
    let thousand = fan_out(1_000);
    println!("to_bytes: 1 clone: {one} allocations; 1,000 clones: {thousand}");
    assert_eq!(one, thousand, "allocations grow with the number of clones");
    assert_eq!(thousand, 0, "{thousand} allocations for 1,000 clones");
}
