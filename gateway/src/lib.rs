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
pub mod backend;
pub mod config;
mod conn;
pub mod conn_id;
pub mod delivery;
pub mod http;
pub mod mailbox;
pub mod metrics;
pub mod registry;
pub mod relay;
pub mod server;
pub mod signal;
pub mod signals;
mod sock;
pub mod store;
pub mod token;
pub mod wheel;
mod worker;

/// Time since the Unix epoch (zero if the clock is before it).
pub fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Raises the soft open-files limit to the hard limit; returns the new soft
/// limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads only the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
