//! Opening connections from many source addresses.
//!
//! One source address has one ephemeral port range (about 28,000 ports by
//! default), and each connection to the same target needs its own port. To
//! open more than that from one run, sockets are bound to source addresses
//! 127.0.0.1, 127.0.0.2, ... in turn before they connect (all of 127/8 is
//! local on Linux).
//!
//! A monoio `TcpStream::connect` cannot bind first, so the socket is made
//! with socket2, bound, connected without blocking (`EINPROGRESS`), handed
//! to monoio with `from_std`, and awaited with `writable()`, which works on
//! both io_uring (a poll op) and epoll; the outcome is then read from
//! `SO_ERROR`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd, RawFd},
};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Parses `--source-ips`: a count N (127.0.0.1 ..= 127.0.0.N) or a
/// comma-separated list of addresses.
pub fn parse_sources(s: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(n) = s.parse::<u32>() {
        if n == 0 || n > 254 * 254 {
            return Err(format!("--source-ips {n}: must be 1..=64516"));
        }
        // 127.0.x.y with y in 1..=254: .0 and .255 are skipped on each /24.
        return Ok((0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, (i / 254) as u8, (i % 254) as u8 + 1)))
            .collect());
    }
    s.split(',')
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("--source-ips: `{a}` is neither a count nor an address"))
        })
        .collect()
}

/// Source address number `i` of `sources` (round robin).
pub fn source_for(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    if sources.is_empty() {
        None
    } else {
        sources.get(i % sources.len()).copied()
    }
}

/// Connects to `target` from `source` (port chosen by the kernel).
pub(crate) async fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(ip) = source {
        // Without this, bind() picks a port on its own, scanning the bound
        // ports of the address (costly with tens of thousands open) and
        // reserving it for every destination; with it, the port is chosen
        // at connect() from the free (source, target) pairs.
        if matches!(target, SocketAddr::V4(_)) {
            set_bind_no_port(&sock);
        }
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    stream.writable(false).await?;
    if let Some(e) = sock_ref(stream.as_raw_fd(), |s| s.take_error())? {
        return Err(e);
    }
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`; without it binding still works, only
/// slower, so a failure is ignored.
fn set_bind_no_port(sock: &Socket) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local
    // on a socket this function borrows.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Runs `f` on the socket `fd` names.
///
/// Callers pass the fd of a stream they still own (the connection task
/// clears its record of the fd before it drops the stream), so the fd is
/// open and is not closed during the call.
pub(crate) fn sock_ref<T>(fd: RawFd, f: impl FnOnce(&SockRef<'_>) -> T) -> T {
    // SAFETY: the fd belongs to a live stream for the whole call (see the
    // function's doc); the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(&SockRef::from(&fd))
}

/// Cuts a connection the hard way: no more reads or writes, and a reset
/// instead of an orderly close when the socket is dropped.
pub(crate) fn cut(fd: RawFd) {
    sock_ref(fd, |s| {
        let _ = s.set_linger(Some(std::time::Duration::ZERO));
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
}

/// Closes the sending side after the last write (an orderly goodbye).
pub(crate) fn close_write(fd: RawFd) {
    sock_ref(fd, |s| {
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_count_and_by_list() {
        let v = parse_sources("3").expect("count");
        assert_eq!(
            v,
            vec![
                "127.0.0.1".parse::<IpAddr>().expect("ip"),
                "127.0.0.2".parse().expect("ip"),
                "127.0.0.3".parse().expect("ip"),
            ]
        );
        let v = parse_sources("300").expect("count");
        assert_eq!(v.len(), 300);
        assert!(v.iter().all(|ip| match ip {
            IpAddr::V4(a) => a.octets()[3] != 0 && a.octets()[3] != 255,
            IpAddr::V6(_) => false,
        }));
        let uniq: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(uniq.len(), 300);
        let v = parse_sources("127.0.0.5, 127.0.0.9").expect("list");
        assert_eq!(v.len(), 2);
        assert!(parse_sources("0").is_err());
        assert!(parse_sources("x.y").is_err());
        assert_eq!(source_for(&v, 3), Some(v[1]));
        assert_eq!(source_for(&[], 3), None);
    }
}
