//! TLS on both listeners (`tls_cert`, `tls_key`), with rustls.
//!
//! The pump drives rustls's sans-IO [`ServerConnection`] itself instead of
//! going through an async stream wrapper: the gateway waits for readiness
//! and then makes one non-blocking system call (see [`crate::sock`]), and a
//! wrapper that lends buffers to the runtime across awaits would give every
//! readable connection a buffer of its own. Here ciphertext is read from
//! the socket straight into rustls's record buffer, decrypted there, and
//! copied once into the core's read block, where frames are decoded as
//! over TCP. On the way out, queued frames are encrypted only once the
//! ciphertext of the previous batch is on the wire, so the backlog that a
//! slow reader builds stays in the connection's queue, where the
//! slow-consumer limit sees it.
//!
//! What a TLS connection costs while idle (rustls's state and its record
//! buffer) is measured in docs/benchmarks.md.

use std::{io, path::Path, sync::Arc};

use bytes::BytesMut;
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("tls_cert {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("tls_key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate,
    /// or an algorithm it does not support).
    #[error("tls_cert and tls_key: {0}")]
    Config(rustls::Error),
}

/// Loads the server configuration from PEM files: the certificate chain
/// (leaf first) and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    // Resumption costs a session cache entry per client; a chat client
    // reconnects rarely, and tickets need no server state.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A new connection's TLS state.
pub(crate) fn accept(config: &Arc<ServerConfig>) -> Result<Box<ServerConnection>, rustls::Error> {
    let mut tls = ServerConnection::new(config.clone())?;
    // rustls would refuse plaintext past 64 KiB of unsent ciphertext; the
    // pump bounds what it hands over itself (a batch at a time, once the
    // previous one is on the wire), and the queue's backlog is what the
    // slow-consumer limit measures.
    tls.set_buffer_limit(None);
    Ok(Box::new(tls))
}

/// Most plaintext taken from one readiness, so that one busy connection
/// cannot hold its core for long (the rest is read on the next turn).
const MAX_PLAIN_PER_READ: usize = 64 * 1024;

/// How a TLS read ended.
#[derive(Debug)]
pub(crate) enum ReadTls {
    /// Some bytes were read (perhaps only handshake records).
    Read,
    /// Nothing was there.
    Empty,
    /// The peer closed the connection (end of stream or close_notify).
    Closed,
    /// The socket failed.
    Failed(io::Error),
    /// The peer sent something that is not valid TLS; rustls queued an
    /// alert, which the caller sends before closing.
    Refused(rustls::Error),
}

/// Reads what the socket holds into rustls and appends the plaintext to
/// `out` (which must have spare capacity; it grows no further than
/// [`MAX_PLAIN_PER_READ`] past its length); adds the ciphertext bytes
/// read to `wire`.
pub(crate) fn read(
    tls: &mut ServerConnection,
    fd: i32,
    out: &mut BytesMut,
    wire: &mut usize,
) -> ReadTls {
    let start = out.len();
    let mut any = false;
    loop {
        match tls.read_tls(&mut crate::sock::Nonblocking(fd)) {
            Ok(0) => return if any { ReadTls::Read } else { ReadTls::Closed },
            Ok(n) => {
                any = true;
                *wire += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if any { ReadTls::Read } else { ReadTls::Empty };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A handshake message over rustls's size limit.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return ReadTls::Refused(rustls::Error::General(e.to_string()));
            }
            Err(e) => return ReadTls::Failed(e),
        }
        let state = match tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => return ReadTls::Refused(e),
        };
        let mut plain = state.plaintext_bytes_to_read();
        while plain > 0 {
            if out.capacity() == out.len() {
                out.reserve(plain);
            }
            let spare = out.spare_capacity_mut();
            let want = plain.min(spare.len());
            // SAFETY: `spare` is memory `out` owns, at least `want` bytes;
            // zeroing them initialises them before a slice is made of them.
            let spare = unsafe {
                std::ptr::write_bytes(spare.as_mut_ptr(), 0, want);
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), want)
            };
            let n = match io::Read::read(&mut tls.reader(), spare) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return ReadTls::Failed(e),
            };
            if n == 0 {
                break;
            }
            // SAFETY: `read` wrote `n` bytes at the start of the spare room.
            unsafe { out.set_len(out.len() + n) };
            plain -= n.min(plain);
        }
        if state.peer_has_closed() {
            return if out.len() > start {
                ReadTls::Read
            } else {
                ReadTls::Closed
            };
        }
        if out.len() - start >= MAX_PLAIN_PER_READ {
            return ReadTls::Read;
        }
    }
}

/// Writes rustls's pending ciphertext. Ok(n, true): all of it went out;
/// Ok(n, false): the socket buffer is full.
pub(crate) fn write(tls: &mut ServerConnection, fd: i32) -> io::Result<(usize, bool)> {
    let mut total = 0;
    while tls.wants_write() {
        match tls.write_tls(&mut crate::sock::Nonblocking(fd)) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, false)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((total, true))
}
