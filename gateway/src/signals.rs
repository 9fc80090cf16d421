//! SIGINT / SIGTERM without a handler: the signals are blocked in every
//! thread and one thread waits for them with `sigwait`, so no code runs in
//! signal context and no core is interrupted.

/// The blocked signal set.
#[derive(Debug)]
pub struct Signals(libc::sigset_t);

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts).
pub fn block() -> std::io::Result<Signals> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only write it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: valid set pointer; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(Signals(set))
}

/// Waits for one of the blocked signals; returns its number.
pub fn wait(s: &Signals) -> i32 {
    let mut sig = 0;
    // SAFETY: valid set and out pointer.
    unsafe { libc::sigwait(&s.0, &mut sig) };
    sig
}
