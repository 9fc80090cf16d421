//! imgate: a thread-per-core IM connection gateway.
//!
//! ```text
//!            clients (TCP, length-framed binary protocol: see docs/protocol.md)
//!               │            │            │
//!        ┌──────▼─────┐┌─────▼──────┐┌────▼───────┐   one thread per core, each:
//!        │  core 0    ││  core 1    ││  core N    │   monoio runtime (io_uring or epoll),
//!        │ listener   ││ listener   ││ listener   │   SO_REUSEPORT listener, slab of
//!        │ slab, wheel││ slab, wheel││ slab, wheel│   connections, timer wheel
//!        └──────┬─────┘└─────┬──────┘└────┬───────┘
//!               │ batches of decoded frames (crossbeam, bounded, try_send)
//!               ▼
//!        ┌──────────────┐  deliveries, per core, through each core's mailbox
//!        │   backend    │──────────────────────────────────────────────► cores
//!        └──────────────┘
//! ```
//!
//! The design notes are in `docs/architecture.md`.

pub mod alloc;
pub mod api;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
mod conn;
pub mod conn_id;
mod core;
pub mod delivery;
mod dispatch;
pub mod events;
pub mod http;
pub mod jwt;
mod listener;
pub mod mailbox;
pub mod metrics;
pub mod process;
mod pump;
mod pushes;
mod rate;
pub mod registry;
pub mod relay;
pub mod replies;
pub mod revocations;
mod runtime;
pub mod server;
pub mod signals;
mod sock;
pub mod store;
mod timers;
pub mod tls;
pub mod token;
pub mod wake;
mod web;
pub mod wheel;

pub use process::{raise_fd_limit, unix_time};
