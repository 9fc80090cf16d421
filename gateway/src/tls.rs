//! TLS on both listeners (`tls_cert`, `tls_key`), with rustls.
//!
//! The pump drives rustls's unbuffered, sans-IO connection
//! ([`UnbufferedServerConnection`]) itself instead of going through an
//! async stream wrapper: the gateway waits for readiness and then makes one
//! non-blocking system call (see [`crate::sock`]), and a wrapper that lends
//! buffers to the runtime across awaits would give every readable
//! connection a buffer of its own. The unbuffered API leaves the buffers to
//! the caller, so a TLS connection keeps the gateway's rule: no buffer
//! while idle. Ciphertext is read into the core's read block, records are
//! decrypted from there and their plaintext appended to the block the
//! frames are decoded from; only the start of a record still in flight is
//! kept per connection, as over TCP the start of a frame. On the way out,
//! queued frames are encrypted a batch at a time, once the previous batch
//! is on the wire, so the backlog that a slow reader builds stays in the
//! connection's queue, where the slow-consumer limit sees it; the
//! ciphertext buffer is freed once sent.
//!
//! What a TLS connection costs while idle (rustls's state and keys) is
//! measured in docs/benchmarks.md.

use std::{io, path::Path, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use rustls::{
    ServerConfig,
    server::UnbufferedServerConnection,
    unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError},
};
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

/// One connection's TLS: rustls's state and the two buffers the
/// unbuffered API leaves to the caller, both empty (unallocated) while the
/// connection idles.
pub struct TlsConn {
    conn: UnbufferedServerConnection,
    /// Ciphertext not yet on the wire: handshake flights, alerts, an
    /// encrypted batch.
    out: BytesMut,
    /// The start of a record whose end has not arrived.
    partial: BytesMut,
}

/// A new connection's TLS state.
pub fn accept(config: &Arc<ServerConfig>) -> Result<Box<TlsConn>, rustls::Error> {
    Ok(Box::new(TlsConn {
        conn: UnbufferedServerConnection::new(config.clone())?,
        out: BytesMut::new(),
        partial: BytesMut::new(),
    }))
}

/// How a TLS read ended.
#[derive(Debug)]
pub enum ReadTls {
    /// Bytes were read (perhaps only handshake records).
    Read,
    /// Nothing was there.
    Empty,
    /// The peer closed the connection (end of stream or close_notify).
    Closed,
    /// The socket failed.
    Failed(io::Error),
    /// The peer sent something that is not valid TLS; an alert for it is
    /// queued, which the caller sends before closing.
    Refused(rustls::Error),
}

/// Room for `len` bytes of plaintext once encrypted: a record header, the
/// content type and the AEAD tag per record of at most 16 KiB, and some
/// slack; rustls says when it needs more.
fn sealed_len(len: usize) -> usize {
    len + (len / 16_384 + 1) * 32
}

/// Appends what `write` writes to `out`, growing `out` as rustls asks.
fn write_into<E>(
    out: &mut BytesMut,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    insufficient: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    loop {
        let len = out.len();
        out.resize(len + room, 0);
        match write(&mut out[len..]) {
            Ok(n) => {
                out.truncate(len + n);
                return Ok(());
            }
            Err(e) => {
                out.truncate(len);
                match insufficient(&e) {
                    Some(need) if need > room => room = need,
                    _ => return Err(e),
                }
            }
        }
    }
}

fn encode_insufficient(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

fn encrypt_insufficient(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

impl TlsConn {
    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether ciphertext waits to be sent.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Reads what the socket holds, into `scratch` (the core's read block,
    /// left empty for the next read) or after the unfinished record this
    /// connection keeps; decrypts every whole record and appends the
    /// plaintext to `plain`; adds the ciphertext bytes read to `wire`.
    pub fn read(
        &mut self,
        fd: i32,
        scratch: &mut BytesMut,
        plain: &mut BytesMut,
        wire: &mut usize,
    ) -> ReadTls {
        let own = !self.partial.is_empty();
        let mut buf = if own {
            // The rest of the record, at least; rustls says how long it is
            // only once it has its header, so read what comes.
            self.partial.reserve(16 * 1024);
            std::mem::take(&mut self.partial)
        } else {
            scratch.clear();
            std::mem::take(scratch)
        };
        let n = match crate::sock::recv(fd, &mut buf) {
            Ok(0) => {
                self.put_back(buf, 0, own, scratch);
                return ReadTls::Closed;
            }
            Ok(n) => n,
            Err(e) => {
                self.put_back(buf, 0, own, scratch);
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadTls::Empty,
                    _ => ReadTls::Failed(e),
                };
            }
        };
        *wire += n;
        let (used, end) = self.process(&mut buf, plain);
        self.put_back(buf, used, own, scratch);
        end
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many
    /// of them it used, and how the read ends.
    fn process(&mut self, buf: &mut [u8], plain: &mut BytesMut) -> (usize, ReadTls) {
        let start = plain.len();
        let mut used = 0;
        let mut closed = false;
        loop {
            let status = self.conn.process_tls_records(&mut buf[used..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    self.queue_alert();
                    return (used, ReadTls::Refused(e));
                }
            };
            let mut more = true;
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(r) => plain.extend_from_slice(r.payload),
                            Err(e) => {
                                drop(records);
                                used += discard;
                                self.queue_alert();
                                return (used, ReadTls::Refused(e));
                            }
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut flight) => {
                    if let Err(e) = write_into(
                        &mut self.out,
                        4096,
                        |b| flight.encode(b),
                        encode_insufficient,
                    ) {
                        used += discard;
                        return (
                            used,
                            ReadTls::Refused(rustls::Error::General(e.to_string())),
                        );
                    }
                }
                // The flight is in `out`, which the pump sends next.
                ConnectionState::TransmitTlsData(flight) => flight.done(),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    closed = true;
                    more = false;
                }
                // Needs more bytes (BlockedHandshake, WriteTraffic: every
                // whole record is used); early data is not accepted.
                _ => more = false,
            }
            used += discard;
            if !more {
                break;
            }
        }
        let end = if closed && plain.len() == start {
            ReadTls::Closed
        } else {
            ReadTls::Read
        };
        (used, end)
    }

    /// Keeps the unfinished record of `buf` (after `used` bytes) as the
    /// connection's own, and leaves the core's block in `scratch`.
    fn put_back(&mut self, mut buf: BytesMut, used: usize, own: bool, scratch: &mut BytesMut) {
        let left = buf.len() - used;
        if own {
            if left > 0 {
                buf.advance(used);
                self.partial = buf;
            }
            return;
        }
        if left > 0 {
            let mut keep = BytesMut::with_capacity(left + 4096);
            keep.extend_from_slice(&buf[used..]);
            self.partial = keep;
        }
        buf.clear();
        *scratch = buf;
    }

    /// After a refused record: whatever rustls queued (the alert that says
    /// why) goes to `out`.
    fn queue_alert(&mut self) {
        loop {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut alert)) => {
                    if write_into(&mut self.out, 64, |b| alert.encode(b), encode_insufficient)
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }

    /// Encrypts what `next` hands over, up to `max` bytes of plaintext
    /// (whole chunks; the last may pass it), into the ciphertext to send.
    /// Returns the plaintext bytes taken. Nothing is taken during the
    /// handshake.
    pub fn encrypt(
        &mut self,
        max: usize,
        mut next: impl FnMut() -> Option<Bytes>,
    ) -> Result<usize, rustls::Error> {
        loop {
            let status = self.conn.process_tls_records(&mut []);
            match status.state? {
                ConnectionState::WriteTraffic(mut w) => {
                    let mut taken = 0;
                    while taken < max {
                        let Some(b) = next() else {
                            break;
                        };
                        write_into(
                            &mut self.out,
                            sealed_len(b.len()),
                            |out| w.encrypt(&b, out),
                            encrypt_insufficient,
                        )
                        .map_err(|e| rustls::Error::General(e.to_string()))?;
                        taken += b.len();
                    }
                    return Ok(taken);
                }
                // Records rustls makes by itself (a key update's answer).
                ConnectionState::EncodeTlsData(mut d) => {
                    write_into(&mut self.out, 256, |b| d.encode(b), encode_insufficient)
                        .map_err(|e| rustls::Error::General(e.to_string()))?;
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                // Announced once; writing goes on.
                ConnectionState::PeerClosed => {}
                _ => return Ok(0),
            }
        }
    }

    /// Queues close_notify after what is already queued.
    pub fn close_notify(&mut self) {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = status.state {
            let _ = write_into(
                &mut self.out,
                64,
                |b| w.queue_close_notify(b),
                encrypt_insufficient,
            );
        }
    }

    /// Sends the queued ciphertext. Ok(n, true): all of it went out (and
    /// its buffer is freed); Ok(n, false): the socket buffer is full.
    pub fn send(&mut self, fd: i32) -> io::Result<(usize, bool)> {
        let mut total = 0;
        while !self.out.is_empty() {
            match io::Write::write(&mut crate::sock::Nonblocking(fd), &self.out) {
                Ok(n) => {
                    self.out.advance(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = BytesMut::new();
        Ok((total, true))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        os::{fd::AsRawFd, unix::net::UnixStream},
    };

    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use rustls_pki_types::{PrivatePkcs8KeyDer, ServerName};

    use super::*;

    /// A server connection on one end of a socket pair, a rustls client
    /// on the other, both ends non-blocking.
    struct Pair {
        server: Box<TlsConn>,
        server_end: UnixStream,
        client: ClientConnection,
        client_end: UnixStream,
        scratch: BytesMut,
    }

    impl Pair {
        fn new() -> Pair {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .expect("names")
                .self_signed(&key)
                .expect("cert");
            let der = CertificateDer::from(cert.der().to_vec());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let server_config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .expect("server config");
            let mut roots = RootCertStore::empty();
            roots.add(der).expect("root");
            let client_config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let (server_end, client_end) = UnixStream::pair().expect("pair");
            server_end.set_nonblocking(true).expect("nonblocking");
            client_end.set_nonblocking(true).expect("nonblocking");
            Pair {
                server: accept(&Arc::new(server_config)).expect("server"),
                server_end,
                client: ClientConnection::new(
                    Arc::new(client_config),
                    ServerName::try_from("localhost").expect("name"),
                )
                .expect("client"),
                client_end,
                scratch: BytesMut::with_capacity(64 * 1024),
            }
        }

        /// One round each way; the plaintext the server got.
        fn round(&mut self) -> BytesMut {
            while self.client.wants_write() {
                self.client
                    .write_tls(&mut self.client_end)
                    .expect("client write");
            }
            let mut plain = BytesMut::new();
            let mut wire = 0;
            let fd = self.server_end.as_raw_fd();
            while let ReadTls::Read = self
                .server
                .read(fd, &mut self.scratch, &mut plain, &mut wire)
            {}
            self.server.send(fd).expect("server send");
            match self.client.read_tls(&mut self.client_end) {
                Ok(_) => {
                    self.client.process_new_packets().expect("client process");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
            plain
        }

        fn handshake(&mut self) {
            for _ in 0..10 {
                if !self.client.is_handshaking() && !self.server.is_handshaking() {
                    return;
                }
                self.round();
            }
            panic!("no handshake after 10 rounds");
        }

        fn holds_no_buffer(&self) -> bool {
            self.server.out.capacity() == 0 && self.server.partial.capacity() == 0
        }
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_and_a_split_record_is_kept_until_whole() {
        let mut p = Pair::new();
        p.handshake();
        assert!(p.holds_no_buffer(), "after the handshake");
        // A request and its answer.
        p.client.writer().write_all(b"login").expect("write");
        assert_eq!(&p.round()[..], b"login");
        let taken = p
            .server
            .encrypt(1 << 16, {
                let mut one = Some(Bytes::from_static(b"login:ok"));
                move || one.take()
            })
            .expect("encrypt");
        assert_eq!(taken, 8);
        p.round();
        let mut answer = [0u8; 16];
        let n = p.client.reader().read(&mut answer).expect("answer");
        assert_eq!(&answer[..n], b"login:ok");
        assert!(p.holds_no_buffer(), "idle after an exchange");

        // A record that arrives in two parts: its start is kept, then
        // freed once the record is whole.
        p.client.writer().write_all(&[7u8; 1000]).expect("write");
        let mut record = Vec::new();
        while p.client.wants_write() {
            p.client.write_tls(&mut record).expect("encode");
        }
        let fd = p.server_end.as_raw_fd();
        let (head, tail) = record.split_at(record.len() / 2);
        p.client_end.write_all(head).expect("head");
        let mut plain = BytesMut::new();
        let mut wire = 0;
        let end = p.server.read(fd, &mut p.scratch, &mut plain, &mut wire);
        assert!(matches!(end, ReadTls::Read), "{end:?}");
        assert!(plain.is_empty());
        assert_eq!(p.server.partial.len(), head.len());
        p.client_end.write_all(tail).expect("tail");
        let end = p.server.read(fd, &mut p.scratch, &mut plain, &mut wire);
        assert!(matches!(end, ReadTls::Read), "{end:?}");
        assert_eq!(&plain[..], &[7u8; 1000][..]);
        assert_eq!(wire, record.len());
        assert!(p.holds_no_buffer(), "idle after the split record");

        // close_notify from the client ends the stream.
        p.client.send_close_notify();
        p.round();
        let end = p.server.read(fd, &mut p.scratch, &mut plain, &mut wire);
        assert!(matches!(end, ReadTls::Closed | ReadTls::Empty), "{end:?}");
    }

    #[test]
    fn garbage_is_refused_with_an_alert() {
        let mut p = Pair::new();
        p.client_end
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .expect("write");
        let mut plain = BytesMut::new();
        let mut wire = 0;
        let fd = p.server_end.as_raw_fd();
        let end = p.server.read(fd, &mut p.scratch, &mut plain, &mut wire);
        assert!(matches!(end, ReadTls::Refused(_)), "{end:?}");
        assert!(p.server.wants_write(), "an alert is queued");
        p.server.send(fd).expect("send");
        let mut alert = [0u8; 64];
        let n = p.client_end.read(&mut alert).expect("alert");
        assert_eq!(alert[0], 21, "a TLS alert record: {:?}", &alert[..n]);
    }
}
