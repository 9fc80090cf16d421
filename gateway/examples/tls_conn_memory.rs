//! What rustls keeps per TLS connection on the server, measured with a
//! counting allocator: a server and a client connection handshake in
//! memory (no sockets), exchange one small record each way, then go idle.
//! Prints the server side's heap bytes and allocations at each step. Only
//! the server's calls are counted, and a few of its frees release memory
//! allocated outside them, so the count after the drop is the error to
//! subtract (docs/benchmarks.md, "TCP, WebSocket and TLS").
//!
//! `cargo run --release -p imgate --example tls_conn_memory`

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed},
    },
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
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

/// Moves every pending record from `from` to `to`.
fn pass(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) {
    let mut wire = Vec::new();
    from(&mut wire);
    if !wire.is_empty() {
        to(&wire);
    }
}

fn main() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("names")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    server_config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server_config.send_tls13_tickets = 0;
    let server_config = Arc::new(server_config);
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");
    let client_config = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    let mut client = ClientConnection::new(
        client_config,
        ServerName::try_from("127.0.0.1").expect("name"),
    )
    .expect("client");
    ON.store(true, Relaxed);
    let mut server = Box::new(ServerConnection::new(server_config).expect("server"));
    server.set_buffer_limit(None);
    ON.store(false, Relaxed);
    let report = |step: &str| {
        println!(
            "{step:<40} {:>6} bytes in {:>3} allocations",
            BYTES.load(Relaxed),
            COUNT.load(Relaxed)
        );
    };
    println!(
        "size_of::<ServerConnection>() = {} bytes",
        size_of::<ServerConnection>()
    );
    report("new");
    while client.is_handshaking() || server.is_handshaking() {
        pass(
            &mut |w| {
                while client.wants_write() {
                    client.write_tls(w).expect("client write");
                }
            },
            &mut |b| {
                ON.store(true, Relaxed);
                let mut r = b;
                while !r.is_empty() {
                    server.read_tls(&mut r).expect("server read");
                    server.process_new_packets().expect("server process");
                }
                ON.store(false, Relaxed);
            },
        );
        pass(
            &mut |w| {
                ON.store(true, Relaxed);
                while server.wants_write() {
                    server.write_tls(w).expect("server write");
                }
                ON.store(false, Relaxed);
            },
            &mut |b| {
                let mut r = b;
                while !r.is_empty() {
                    client.read_tls(&mut r).expect("client read");
                    client.process_new_packets().expect("client process");
                }
            },
        );
    }
    report("handshake done");
    // One small record each way, as a login and its answer.
    client.writer().write_all(&[1u8; 80]).expect("write");
    pass(
        &mut |w| {
            while client.wants_write() {
                client.write_tls(w).expect("client write");
            }
        },
        &mut |b| {
            ON.store(true, Relaxed);
            let mut r = b;
            while !r.is_empty() {
                server.read_tls(&mut r).expect("server read");
                server.process_new_packets().expect("server process");
            }
            let mut plain = [0u8; 128];
            let n = server.reader().read(&mut plain).expect("plaintext");
            assert_eq!(n, 80);
            server.writer().write_all(&[2u8; 60]).expect("answer");
            let mut sink = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut sink).expect("server write");
            }
            ON.store(false, Relaxed);
        },
    );
    report("after a request and an answer (idle)");
    ON.store(true, Relaxed);
    drop(server);
    ON.store(false, Relaxed);
    report("dropped");
}
