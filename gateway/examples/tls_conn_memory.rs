//! What a TLS connection keeps on the server while idle: the gateway's
//! [`imgate::tls::TlsConn`] on one end of a socket pair and a rustls client
//! on the other handshake, exchange one small record each way (a login and
//! its answer), then idle. A counting allocator counts what the server
//! side's calls allocate and free; a few of its frees release memory
//! allocated outside them, so the count after the connection is dropped
//! (which should be 0) is the error to subtract. The figures are in
//! docs/benchmarks.md ("TCP, WebSocket and TLS").
//!
//! `cargo run --release -p imgate --example tls_conn_memory`

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{ErrorKind, Read, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed},
    },
};

use bytes::{Bytes, BytesMut};
use imgate::tls::{ReadTls, TlsConn};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Counts live bytes and allocations while `ON` is set.
struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.load(Relaxed) {
            BYTES.fetch_add(l.size() as isize, Relaxed);
            COUNT.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's layout, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ON.load(Relaxed) {
            BYTES.fetch_sub(l.size() as isize, Relaxed);
            COUNT.fetch_sub(1, Relaxed);
        }
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if ON.load(Relaxed) {
            BYTES.fetch_add(new as isize - l.size() as isize, Relaxed);
        }
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with the counter on.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    ON.store(true, Relaxed);
    let r = f();
    ON.store(false, Relaxed);
    r
}

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("names")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    // As the gateway's: no resumption state.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn main() {
    let (server_config, client_config) = configs();
    let (server_end, mut client_end) = UnixStream::pair().expect("pair");
    server_end.set_nonblocking(true).expect("nonblocking");
    client_end.set_nonblocking(true).expect("nonblocking");
    let fd = server_end.as_raw_fd();
    let mut client = ClientConnection::new(
        client_config,
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    // The core's read block: the gateway's, not the connection's.
    let mut block = BytesMut::with_capacity(64 * 1024);
    let report = |step: &str| {
        println!(
            "{step:<38} {:>6} bytes in {:>3} allocations",
            BYTES.load(Relaxed),
            COUNT.load(Relaxed)
        );
    };
    let mut server = counted(|| imgate::tls::accept(&server_config).expect("server"));
    report("accepted");
    let mut plain = BytesMut::with_capacity(64 * 1024);
    let mut round = |server: &mut Box<TlsConn>, client: &mut ClientConnection| {
        while client.wants_write() {
            client.write_tls(&mut client_end).expect("client write");
        }
        counted(|| {
            let mut wire = 0;
            while let ReadTls::Read = server.read(fd, &mut block, &mut plain, &mut wire) {}
            server.send(fd).expect("server send");
        });
        match client.read_tls(&mut client_end) {
            Ok(_) => {
                client.process_new_packets().expect("client process");
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
    };
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        round(&mut server, &mut client);
    }
    assert!(!server.is_handshaking(), "handshake done");
    report("handshake done");
    client.writer().write_all(&[1u8; 80]).expect("login");
    round(&mut server, &mut client);
    counted(|| {
        let mut answer = Some(Bytes::from(vec![2u8; 60]));
        server.encrypt(1 << 16, || answer.take()).expect("encrypt");
    });
    round(&mut server, &mut client);
    let mut got = [0u8; 64];
    let n = client.reader().read(&mut got).expect("answer");
    assert_eq!(n, 60);
    report("after a request and an answer (idle)");
    counted(|| drop(server));
    report("dropped (the error to subtract)");
}
