//! imgate-loadgen: real connections against an imgate gateway, driven by the
//! same sans-IO client state machine as any Rust client
//! ([`imgate_codec::client::Client`]), on monoio threads, one runtime per
//! core.
//!
//! ```text
//!   main thread: cli ─► scenario script ─► Engine (commands, replies) ─► Report ─► table, --json, --hgrm, --plot
//!                                              │  ▲
//!                       ┌──────────────────────┘  └────────────── per-thread figures, merged
//!                       ▼
//!   worker threads (one monoio runtime each): connections, pacer, client timers
//!     conn ─ reader: socket ─► Client::handle_input ─► events ─► histograms, ledger
//!          └ writer: Client::poll_transmit (staged) ─► one write per wake-up
//! ```
//!
//! Measurement follows the open-loop, coordinated-omission-corrected method:
//! messages are *scheduled* at fixed intervals and every latency counts
//! from the scheduled time (the pacer sends late messages at once rather
//! than skipping them, and reports how late it was: the schedule lag). Correctness is checked at
//! the application level on top of the client's own de-duplication: a
//! ledger of (sender, message number) bitsets finds every message that was
//! acknowledged but never delivered, or delivered twice ([`measure`]).
//!
//! The library is the whole tool, so tests run scenarios in-process against
//! a gateway started with `imgate::server::start`; `main.rs` only parses
//! the command line, prints the table and maps the verdict to an exit
//! status. How to use it for capacity planning is in
//! `docs/capacity-planning.md`; against several gateway nodes (a list of
//! targets, [`placement`]), in `docs/cluster.md`.

pub mod body;
pub mod cli;
pub mod clock;
mod engine;
pub mod gwmetrics;
/// The gateway's cross-thread mailbox (a channel that wakes a monoio
/// task): its source file, compiled in here.
#[allow(dead_code, unreachable_pub)]
#[path = "../../gateway/src/mailbox.rs"]
mod mailbox;
pub mod measure;
pub mod net;
pub mod output;
pub mod placement;
/// What the process knows of itself (clock, fd limit, memory, CPU): the
/// gateway's own source file, compiled in here so that the load generator
/// depends on the codec alone and the two cannot drift.
#[allow(dead_code, unreachable_pub)]
#[path = "../../gateway/src/process.rs"]
mod process;
mod progress;
pub mod report;
/// A monoio runtime per thread, built as the gateway builds its cores':
/// the gateway's source file, compiled in here.
#[allow(unreachable_pub)]
#[path = "../../gateway/src/runtime.rs"]
mod runtime;
pub mod scenario;
mod tls;
mod wake;

pub use cli::Cli;
pub use report::Report;
pub use scenario::{RunError, run};

/// Exit status of a run that held.
pub const EXIT_OK: u8 = 0;
/// Exit status when a message was lost or duplicated (or the run's
/// objective failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the run could not be carried out.
pub const EXIT_ERROR: u8 = 3;
