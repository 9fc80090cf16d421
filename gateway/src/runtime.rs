//! A monoio runtime for one thread: the gateway's cores and the load
//! generator's threads are built the same way (the load generator compiles
//! this file; it does not depend on the gateway).

/// Runs `fut` to completion on a new monoio runtime of this thread, with
/// the io_uring driver (`entries` submission slots) or the epoll one, timers
/// on.
pub fn block_on<F: std::future::Future>(
    uring: bool,
    entries: u32,
    fut: F,
) -> std::io::Result<F::Output> {
    if uring {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut))
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut))
    }
}
