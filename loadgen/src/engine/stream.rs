//! A connection's byte stream, plain TCP or TLS over it, in two halves.
//!
//! A connection's reader and writer are two tasks, each owning one half of
//! the socket, so that a read is never cancelled and a write never waits
//! for one. TLS keeps that shape: one rustls [`ClientConnection`] (sans
//! I/O) is shared by the halves through `Rc<RefCell<..>>` and borrowed only
//! between awaits, never across one. The read half reads ciphertext into
//! its own buffer, hands it to rustls and takes the plaintext out; the
//! write half hands plaintext to rustls and writes the records rustls makes
//! of it. A record rustls makes while reading (an alert, a key update)
//! waits in rustls until the writer's next wake-up, which the reader asks
//! for ([`ReadHalf::wants_write`]).
//!
//! Why not a TLS stream type split by monoio (`monoio-rustls`): it keeps
//! two fixed 16 KiB buffers per connection whatever the traffic (some
//! 600 MiB at the 19,000 connections one process opens), and its split
//! lets both halves hold `&mut` to one stream. Here a connection costs
//! rustls's own state plus buffers that grow with the traffic, as over
//! plain TCP.

use std::{
    cell::RefCell,
    io::{self, Read as _, Write as _},
    rc::Rc,
    sync::Arc,
};

use bytes::{Buf, BytesMut};
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable},
    net::TcpStream,
};
use rustls::{ClientConfig, ClientConnection, pki_types::ServerName};

/// Reads of at least this much.
pub(crate) const READ_MIN: usize = 4 * 1024;
/// Reads of at most this much, when the socket keeps filling the buffer.
pub(crate) const READ_MAX: usize = 64 * 1024;

type Tls = Rc<RefCell<ClientConnection>>;

/// The half a connection reads from.
pub(crate) struct ReadHalf {
    rd: OwnedReadHalf<TcpStream>,
    /// The next read's size: grows while reads fill the buffer.
    want: usize,
    /// With TLS: the session, and ciphertext read but not yet handed to it.
    tls: Option<(Tls, BytesMut)>,
}

/// The half a connection writes to.
pub(crate) struct WriteHalf {
    wr: OwnedWriteHalf<TcpStream>,
    /// With TLS: the session, and a buffer for the records it makes.
    tls: Option<(Tls, Vec<u8>)>,
}

/// A plain TCP connection's halves.
pub(crate) fn plain(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = stream.into_split();
    (
        ReadHalf {
            rd,
            want: READ_MIN,
            tls: None,
        },
        WriteHalf { wr, tls: None },
    )
}

/// The TLS handshake as a client of `name` on a connected socket; the
/// halves once it is done, or why it failed.
pub(crate) async fn handshake(
    mut stream: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<(ReadHalf, WriteHalf), String> {
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| format!("TLS handshake failed: {e}"))?;
    let mut raw = BytesMut::new();
    let mut wire = Vec::new();
    loop {
        if let Err(e) = flush(&mut conn, &mut wire, &mut stream).await {
            return Err(format!("TLS handshake failed: {e}"));
        }
        if !conn.is_handshaking() {
            break;
        }
        if raw.is_empty() {
            match read_some(&mut stream, &mut raw, READ_MIN).await {
                Ok(0) => return Err("TLS handshake failed: closed by the gateway".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("TLS handshake failed: {e}")),
            }
        }
        // Handed over a little at a time (rustls takes what one of its
        // reads would): what follows the handshake stays in `raw` for the
        // read half.
        let n = match conn.read_tls(&mut &raw[..]) {
            Ok(0) => return Err("TLS handshake failed: closed by the gateway".into()),
            Ok(n) => n,
            Err(e) => return Err(format!("TLS handshake failed: {e}")),
        };
        raw.advance(n);
        if let Err(e) = conn.process_new_packets() {
            // Tell the gateway why (rustls queued an alert), then give up.
            let _ = flush(&mut conn, &mut wire, &mut stream).await;
            return Err(format!("TLS handshake failed: {e}"));
        }
    }
    // The handshake's flights are over: no need to keep their room.
    wire = Vec::new();
    let tls = Rc::new(RefCell::new(conn));
    let (rd, wr) = stream.into_split();
    Ok((
        ReadHalf {
            rd,
            want: READ_MIN,
            tls: Some((tls.clone(), raw)),
        },
        WriteHalf {
            wr,
            tls: Some((tls, wire)),
        },
    ))
}

/// Reads up to `want` bytes from `stream` onto the end of `buf`.
async fn read_some<R: AsyncReadRent>(
    stream: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    buf.reserve(want);
    let start = buf.len();
    let cap = buf.capacity();
    let owned = std::mem::take(buf);
    let (res, slice) = stream.read(owned.slice_mut(start..cap)).await;
    *buf = slice.into_inner();
    res
}

/// Writes every record `conn` has queued.
async fn flush(
    conn: &mut ClientConnection,
    wire: &mut Vec<u8>,
    stream: &mut TcpStream,
) -> io::Result<()> {
    while conn.wants_write() {
        wire.clear();
        while conn.wants_write() {
            conn.write_tls(wire)?;
        }
        let (res, w) = stream.write_all(std::mem::take(wire)).await;
        *wire = w;
        res?;
    }
    Ok(())
}

/// Hands `raw` to `conn` and appends the plaintext it yields to `plain`.
/// Returns whether the gateway closed the session (close_notify).
fn decrypt(
    conn: &mut ClientConnection,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
) -> io::Result<bool> {
    loop {
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Taken out at once: rustls holds at most 16 KiB of plaintext.
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            conn.reader().read_exact(&mut plain[start..])?;
        }
        if state.peer_has_closed() {
            return Ok(true);
        }
        if raw.is_empty() {
            return Ok(false);
        }
        // Never with an empty `raw`: rustls takes a read of 0 for the end.
        match conn.read_tls(&mut &raw[..])? {
            0 => return Ok(true),
            n => raw.advance(n),
        }
    }
}

impl ReadHalf {
    /// Reads onto the end of `buf` (plaintext, with TLS); Ok(0) at the end
    /// of the stream. An error of kind `InvalidData` is TLS refusing what
    /// the gateway sent.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Some((tls, raw)) = &mut self.tls else {
            let room = self.want;
            let n = read_some(&mut self.rd, buf, room).await?;
            self.want = if n >= room { READ_MAX } else { READ_MIN };
            return Ok(n);
        };
        let before = buf.len();
        loop {
            let closed = decrypt(&mut tls.borrow_mut(), raw, buf)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
            if closed {
                return Ok(0);
            }
            let room = self.want;
            let n = read_some(&mut self.rd, raw, room).await?;
            if n == 0 {
                return Ok(0);
            }
            self.want = if n >= room { READ_MAX } else { READ_MIN };
        }
    }

    /// Whether TLS made records while reading that the writer must send.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|(tls, _)| tls.borrow().wants_write())
    }
}

impl WriteHalf {
    /// Writes `buf` whole (through TLS, with it), and any record TLS has
    /// waiting; hands `buf` back.
    pub(crate) async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let Some((tls, wire)) = &mut self.tls else {
            if buf.is_empty() {
                return (Ok(()), buf);
            }
            let (res, buf) = self.wr.write_all(buf).await;
            return (res.map(|_| ()), buf);
        };
        let mut done = 0;
        loop {
            {
                let mut conn = tls.borrow_mut();
                if done < buf.len() {
                    // rustls takes up to its buffer limit (64 KiB) at a time.
                    match conn.writer().write(&buf[done..]) {
                        Ok(n) => done += n,
                        Err(e) => return (Err(e), buf),
                    }
                }
                wire.clear();
                while conn.wants_write() {
                    if let Err(e) = conn.write_tls(wire) {
                        return (Err(e), buf);
                    }
                }
            }
            if wire.is_empty() {
                if done < buf.len() {
                    return (Err(io::Error::other("TLS took no data")), buf);
                }
                return (Ok(()), buf);
            }
            let (res, w) = self.wr.write_all(std::mem::take(wire)).await;
            *wire = w;
            if let Err(e) = res {
                return (Err(e), buf);
            }
        }
    }

    /// Whether TLS has records waiting to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|(tls, _)| tls.borrow().wants_write())
    }

    /// Ends the TLS session with a close_notify (nothing without TLS); the
    /// socket itself is the caller's to shut down.
    pub(crate) async fn close_notify(&mut self) {
        if let Some((tls, _)) = &self.tls {
            tls.borrow_mut().send_close_notify();
            let _ = self.write_all(BytesMut::new()).await;
        }
    }
}
