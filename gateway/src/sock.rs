//! Non-blocking socket calls made right after readiness.
//!
//! monoio's reads and writes lend a buffer to the kernel until they
//! complete (on io_uring, across an await). A gateway with many connections
//! readable at once would lend one buffer per connection. Instead, a
//! connection waits for readiness with monoio (`readable`/`writable`, both
//! drivers) and then reads or writes with one non-blocking system call, so
//! the core's single read block and the queued `Bytes` are all the memory
//! I/O needs.

use std::{collections::VecDeque, io, os::fd::RawFd};

use bytes::{Buf, Bytes, BytesMut};

/// Reads what is there into the spare capacity of `buf` (which must have
/// some). Returns 0 at end of stream; `WouldBlock` if nothing was there.
pub(crate) fn recv(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is memory `buf` owns and nothing else refers to; recv
    // writes at most `spare.len()` bytes into it.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised exactly `n` bytes after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Most buffers gathered into one `sendmsg`.
const MAX_IOV: usize = 64;

/// Sends as much of `queue` as the socket takes, removing what was sent;
/// returns the bytes sent and whether the front buffer was sent in part.
/// Stops without error when the socket is full.
pub(crate) fn send_queued(fd: RawFd, queue: &mut VecDeque<Bytes>) -> io::Result<(usize, bool)> {
    let mut total = 0;
    let mut partial = false;
    while !queue.is_empty() {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        let mut cnt = 0;
        for (slot, b) in iov.iter_mut().zip(queue.iter()) {
            slot.iov_base = b.as_ptr() as *mut libc::c_void;
            slot.iov_len = b.len();
            cnt += 1;
        }
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = cnt;
        // SAFETY: the iovecs point into `Bytes` held by `queue`, alive and
        // unchanged for the call; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok((total, partial)),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        let mut n = n as usize;
        total += n;
        while n > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                queue.pop_front();
                partial = false;
            } else {
                front.advance(n);
                n = 0;
                partial = true;
            }
        }
    }
    Ok((total, partial))
}

/// A socket as `io::Read` and `io::Write` with non-blocking calls, for
/// rustls's `read_tls` and `write_tls`.
pub(crate) struct Nonblocking(pub(crate) RawFd);

impl io::Read for Nonblocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for `buf.len()` bytes; recv writes at
        // most that many.
        let n = unsafe {
            libc::recv(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl io::Write for Nonblocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let cnt = bufs.len().min(MAX_IOV);
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is guaranteed to be ABI compatible with iovec on Unix.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = cnt;
        // SAFETY: the iovecs point into `bufs`, alive for the call;
        // sendmsg only reads them.
        let n = unsafe { libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
