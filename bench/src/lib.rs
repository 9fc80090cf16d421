//! imgate benchmarks.
//!
//! Two kinds live here:
//!
//! - `benches/codec.rs`: criterion micro-benchmarks of the frame decoder and
//!   encoder, side by side with tokio-util's `LengthDelimitedCodec` on the
//!   same bytes (`cargo bench -p imgate-bench --bench codec`).
//! - the idle-connection memory study: a bare monoio server that holds
//!   connections without a per-connection buffer, built once per global
//!   allocator, and a client that opens and holds N connections.
//!
//! ```text
//!   idle_client ──N TCP connections──► idle_server{,_mimalloc,_mimalloc_tuned}
//!                                       one monoio runtime per thread (SO_REUSEPORT)
//!                                       per connection: one task parked in readable()
//!                                       prints VmRSS before and after N connections
//! ```
//!
//! A global allocator is chosen at build time, not at run time, so the server
//! is three tiny binaries over one module ([`idle`]) instead of one binary
//! with a flag; one `cargo build` makes all three. The mimalloc options the
//! tuned binary sets are the gateway's own ([`mimalloc_tuning`], which is
//! `imgate::alloc`). Figures and commands are in `docs/benchmarks.md`.

pub mod idle;
/// The gateway's allocator set-up, measured here.
pub use imgate::alloc as mimalloc_tuning;
pub mod sys;
