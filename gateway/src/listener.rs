//! Taking connections: each core's listening socket, its accept loop, and
//! the connection limit. A connection over `max_connections`, or one that
//! arrives while the server shuts down, gets an error frame and a close; an
//! admitted one gets a slot on the core and a task of its own
//! ([`crate::pump::serve`]).

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use imgate_codec::{Body, ErrorCode, frame::ErrorFrame};
use monoio::net::{TcpListener, TcpStream};

use crate::{conn::Transport, core::Core, pump};

/// Accepts connections until shutdown begins, then closes the listener.
pub(crate) async fn accept_loop(core: Rc<Core>, listener: TcpListener, transport: Transport) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = core.stopped() => None,
        };
        match accepted {
            Some(Ok((stream, _))) => admit(&core, stream, transport),
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(core = core.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
}

/// Takes a new connection, or refuses it at the limit or during shutdown.
fn admit(core: &Rc<Core>, stream: TcpStream, transport: Transport) {
    let m = core.metrics();
    let shared = &core.shared;
    let t = crate::metrics::transport_index(transport == Transport::Ws, shared.tls.is_some());
    m.accepted.fetch_add(1, Relaxed);
    if let Some(tm) = m.transports.get(t) {
        tm.accepted.fetch_add(1, Relaxed);
    }
    let _ = stream.set_nodelay(true);
    let total = shared.connections.fetch_add(1, Relaxed) + 1;
    if total > shared.cfg.max_connections || core.stopping() {
        shared.connections.fetch_sub(1, Relaxed);
        m.refused.fetch_add(1, Relaxed);
        let code = if core.stopping() {
            ErrorCode::ShuttingDown
        } else {
            ErrorCode::TooManyConnections
        };
        // A TLS client cannot read a clear-text refusal; it sees the close.
        if shared.tls.is_none() {
            monoio::spawn(refuse(stream, code, transport));
        }
        return;
    }
    let tls = match shared.tls.as_ref().map(crate::tls::accept).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            shared.connections.fetch_sub(1, Relaxed);
            m.tls_failures.fetch_add(1, Relaxed);
            tracing::warn!(core = core.id, error = %e, "cannot start TLS");
            return;
        }
    };
    let conn = core.insert();
    if transport == Transport::Ws {
        conn.set_websocket();
    }
    if tls.is_some() {
        conn.set_tls();
    }
    if let Some(tm) = m.transports.get(conn.transport_index()) {
        tm.connections.fetch_add(1, Relaxed);
    }
    monoio::spawn(pump::serve(core.clone(), conn, stream, tls));
}

/// Refuses a connection with an error frame (over WebSocket, before any
/// handshake: an HTTP 503 with the code in a JSON body).
async fn refuse(mut stream: TcpStream, code: ErrorCode, transport: Transport) {
    use monoio::io::AsyncWriteRentExt;
    let frame = match transport {
        Transport::Tcp => ErrorFrame::new(code, None, 0, code.as_str()).to_bytes(),
        Transport::Ws => imgate_codec::ws::Refusal {
            status: 503,
            code: code.as_str(),
            message: "the server takes no new connections now",
        }
        .response()
        .into(),
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(frame)).await;
}

/// A socket bound to `addr` that shares its port with the other cores'
/// (`SO_REUSEPORT`: the kernel spreads new connections over them), not yet
/// listening. Binding first reserves the port (a port taken fails the start
/// at once); listening only once the backend is up keeps a starting node
/// from accepting connections it cannot serve yet (a load balancer's TCP
/// check sees it down until then).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Starts listening on a socket from [`bind`].
pub(crate) fn listen(s: socket2::Socket, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    s.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(s.into())
}

/// Waits up to `wait` for the port of `addr` to have no listening socket.
///
/// The gateway's listeners share their port (SO_REUSEPORT), so they would
/// also join the listeners of a gateway that was just killed: with io_uring
/// those close only when the kernel tears down the dead process's rings,
/// and every connection the kernel hands them meanwhile is reset. A probe
/// socket without SO_REUSEPORT cannot bind while any socket listens on the
/// port, so it tells when they are gone. After `wait` the gateway binds
/// anyway, with a warning: another live process may share the port on
/// purpose, or refuse it (then binding fails with a clear error).
pub(crate) fn wait_for_port(addr: SocketAddr, wait: Duration) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 || wait.is_zero() {
        return Ok(());
    }
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Connections of the old instance in TIME_WAIT do not count.
        s.set_reuse_address(true)?;
        match s.bind(&addr.into()) {
            Ok(()) => {
                if told {
                    tracing::info!(%addr, "the port's earlier listeners are gone");
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        %addr,
                        waited_ms = wait.as_millis() as u64,
                        "another socket still listens on the port; sharing it"
                    );
                    return Ok(());
                }
                if !told {
                    tracing::info!(%addr, "another socket listens on the port; waiting for it to close");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}
