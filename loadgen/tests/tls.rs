//! Scenarios over TLS, on both transports, against a gateway started
//! in-process with a certificate made for the test (self-signed, for
//! 127.0.0.1 and localhost); and what the load generator reports when the
//! certificate is not one it trusts, or the gateway does not speak TLS.

mod common;

use std::{path::PathBuf, sync::Arc};

use common::{config, loadgen};
use imgate::{config::Config, server::Running, token::HmacVerifier};
use imgate_loadgen::{Report, RunError};

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in
/// a directory of its own (removed on drop).
struct Cert {
    dir: PathBuf,
}

impl Cert {
    fn new(tag: &str) -> Cert {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("names");
        let cert = params.self_signed(&key).expect("self-signed");
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
        Cert { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// `--tls --tls-ca <this certificate>`.
    fn flags(&self) -> String {
        format!("--tls --tls-ca {}", self.cert().display())
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The default backend in memory, both listeners speaking TLS with `cert`.
fn gateway(cert: &Cert) -> Running {
    let cfg = Config {
        ws_listen: Some("127.0.0.1:0".parse().expect("addr")),
        tls_cert: Some(cert.cert()),
        tls_key: Some(cert.key()),
        ..config()
    };
    let store = Box::new(imgate::store::MemoryStore::new());
    let backend = imgate::delivery::Delivery::new(store, &cfg).expect("backend");
    let v = Arc::new(HmacVerifier::new(cfg.secret.as_bytes()));
    imgate::server::start(cfg, Box::new(backend), v).expect("gateway starts")
}

/// Every message of a chat run delivered once, acknowledged, with
/// receipts, every connection through a TLS handshake.
fn delivered_once_with_receipts(r: &Report) {
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verdict.as_ref().expect("a verdict");
    assert!(v.sent >= 400, "{v:?}");
    assert_eq!((v.lost, v.acked, v.delivered), (0, v.sent, v.sent));
    assert_eq!(r.counters.duplicates_app, 0);
    assert!(r.windows[0].receipt.count > 0);
    assert_eq!(r.connections.opened, 8);
    assert_eq!(r.connections.handshake.count, 8);
    assert!(r.connections.handshake.p50_ms > 0.0);
    assert!(r.counters.connect_errors.is_empty(), "{:?}", r.counters);
}

const CHAT: &str = "chat --pairs 4 --rate 400 --duration 1s --warmup 200ms --drain 3s";

#[test]
fn chat_over_tls_delivers_everything_once_with_receipts() {
    let cert = Cert::new("tcp");
    let gw = gateway(&cert);
    let r = loadgen(gw.addr(), &format!("{CHAT} {}", cert.flags())).expect("runs");
    delivered_once_with_receipts(&r);
    gw.shutdown();
}

#[test]
fn chat_over_websocket_over_tls_delivers_everything_once_with_receipts() {
    let cert = Cert::new("ws");
    let gw = gateway(&cert);
    let r = loadgen(
        gw.ws_addr().expect("a WebSocket listener"),
        &format!("{CHAT} --transport ws {}", cert.flags()),
    )
    .expect("runs");
    delivered_once_with_receipts(&r);
    gw.shutdown();
}

#[test]
fn the_certificate_is_checked_against_the_name() {
    let cert = Cert::new("name");
    let gw = gateway(&cert);
    // A DNS name the certificate carries, sent as SNI.
    let r = loadgen(
        gw.addr(),
        &format!(
            "idle -n 4 --hold 200ms --settle 0s {} --tls-server-name localhost",
            cert.flags()
        ),
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.connections.handshake.count, 4);
    // One it does not.
    handshake_fails(
        gw.addr(),
        &format!("{} --tls-server-name gw.example", cert.flags()),
        "the name is not on the certificate",
    );
    gw.shutdown();
}

#[test]
fn a_certificate_not_trusted_fails_the_connections_unless_insecure() {
    let cert = Cert::new("theirs");
    let other = Cert::new("other");
    let gw = gateway(&cert);
    let m = handshake_fails(gw.addr(), &other.flags(), "not trusted");
    assert!(m.contains("certificate"), "{m}");
    // --tls-insecure takes it, on both transports.
    for (addr, transport) in [
        (gw.addr(), "tcp"),
        (gw.ws_addr().expect("a WebSocket listener"), "ws"),
    ] {
        let r = loadgen(
            addr,
            &format!(
                "idle -n 2 --hold 200ms --settle 0s --transport {transport} --tls --tls-insecure"
            ),
        )
        .expect("runs");
        assert!(r.passed(), "{transport}: {:?}", r.failures);
        assert_eq!(r.connections.handshake.count, 2, "{transport}");
    }
    gw.shutdown();
}

#[test]
fn tls_and_clear_text_are_not_confused() {
    let cert = Cert::new("clear");
    let gw = gateway(&cert);
    // Clear text against the TLS listener: no login.
    let r = loadgen(gw.addr(), "idle -n 2 --hold 200ms --connect-retries 0");
    assert!(r.map(|r| !r.passed()).unwrap_or(true));
    gw.shutdown();
    // TLS against a clear-text listener: the handshake fails.
    let gw = common::relay();
    handshake_fails(gw.addr(), &cert.flags(), "no TLS there");
    gw.shutdown();
}

/// Two idle connections with `flags` whose TLS handshakes must fail;
/// returns the run's failure.
fn handshake_fails(addr: std::net::SocketAddr, flags: &str, why: &str) -> String {
    let e = loadgen(
        addr,
        &format!("idle -n 2 --hold 200ms --connect-retries 0 {flags}"),
    )
    .expect_err(why);
    match e {
        RunError::Failed(m) => {
            assert!(m.contains("TLS handshake failed"), "{why}: {m}");
            m
        }
        other => panic!("{why}: {other:?}"),
    }
}

#[test]
fn messages_larger_than_a_tls_record_arrive_whole() {
    let cert = Cert::new("large");
    let gw = gateway(&cert);
    // 40 KB bodies: each frame spans three TLS records, each read holds
    // more plaintext than rustls keeps at once.
    for (addr, transport) in [
        (gw.addr(), "tcp"),
        (gw.ws_addr().expect("a WebSocket listener"), "ws"),
    ] {
        let r = loadgen(
            addr,
            &format!(
                "chat --pairs 4 --rate 400 --duration 1s --warmup 200ms --drain 3s --size 40000 --transport {transport} {}",
                cert.flags()
            ),
        )
        .expect("runs");
        assert!(r.passed(), "{transport}: {:?}", r.failures);
        let v = r.verdict.as_ref().expect("a verdict");
        assert_eq!((v.lost, v.delivered), (0, v.sent), "{transport}");
    }
    gw.shutdown();
}

#[test]
fn chaos_over_tls_loses_and_duplicates_nothing() {
    let cert = Cert::new("chaos");
    let gw = gateway(&cert);
    let r = loadgen(
        gw.ws_addr().expect("a WebSocket listener"),
        &format!(
            "chaos --pairs 10 --rate 500 --duration 2s --warmup 200ms --cut-fraction 0.2 --cut-every 300ms --reconnect-max 100ms --drain 10s --transport ws --driver epoll {}",
            cert.flags()
        ),
    )
    .expect("runs");
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.counters.reconnects > 5, "{:?}", r.counters);
    let v = r.verdict.as_ref().expect("a verdict");
    assert_eq!((v.lost, v.unacked), (0, 0), "{v:?}");
    assert_eq!(r.counters.duplicates_app, 0);
    assert!(r.counters.connect_errors.is_empty(), "{:?}", r.counters);
    gw.shutdown();
}
