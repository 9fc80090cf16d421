//! Fuzz target `decode`: arbitrary bytes through the frame decoder.
//!
//! The input's first three bytes pick the read size and the frame limit; the
//! rest is the stream (layout in `imgate_codec::fuzzing`). Besides "never
//! panics", every decoded frame must re-encode to the bytes it came from and
//! decode again to itself, and `Decoder::needed` must agree with `decode`.
//! The same check replays `codec/fuzz/seeds/` in `cargo test`
//! (`codec/tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imgate_codec::fuzzing::check_decode(data);
});
