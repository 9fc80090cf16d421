//! The few facts about the process and the kernel the memory study reads:
//! the open-files limit, resident memory, slab memory and TCP socket counts.

use std::{fs, io};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// soft limit. 19,000 connections need more than the usual soft 1,024.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid `rlimit`, read for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// A `key: value kB` field of a `/proc` file such as `/proc/self/status`
/// or `/proc/meminfo`, in KiB.
fn kib_field(path: &str, key: &str) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} in {path}")))
}

/// This process's resident set (`VmRSS` in `/proc/self/status`), in KiB.
pub fn vm_rss_kib() -> io::Result<u64> {
    kib_field("/proc/self/status", "VmRSS")
}

/// Kernel slab memory, machine-wide (`Slab` in `/proc/meminfo`), in KiB.
pub fn slab_kib() -> io::Result<u64> {
    kib_field("/proc/meminfo", "Slab")
}

/// The `TCP:` line of `/proc/net/sockstat` (sockets in use, orphans,
/// time-wait, allocated, and buffer memory in pages), machine-wide.
pub fn sockstat_tcp() -> io::Result<String> {
    let text = fs::read_to_string("/proc/net/sockstat")?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .unwrap_or("TCP: ?")
        .to_owned())
}
