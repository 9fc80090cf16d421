//! TLS on both listeners over real sockets, with a certificate made for
//! the test: the six packets, offline paging, a kick that ends with
//! close_notify, WebSocket over TLS, a clear-text client and a handshake
//! that never finishes, and configuration errors.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::{Gw, token};
use imgate_codec::{
    Decoder, Frame, KickReason,
    frame::{Login, MsgR},
    ws,
};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};

/// A certificate for 127.0.0.1 and localhost, written as PEM files.
struct Cert {
    dir: PathBuf,
    pem: String,
}

impl Cert {
    fn new() -> Cert {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        static N: AtomicU32 = AtomicU32::new(0);
        let key = rcgen::KeyPair::generate().expect("key pair");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("names");
        let cert = params.self_signed(&key).expect("self-signed");
        let dir = std::env::temp_dir().join(format!(
            "imgate-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
        Cert {
            dir,
            pem: cert.pem(),
        }
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("pem");
        roots.add(der).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gw(cert: &Cert) -> Gw {
    Gw::start(|c| {
        c.ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.login_timeout_ms = 400;
        c.tls_cert = Some(cert.dir.join("cert.pem"));
        c.tls_key = Some(cert.dir.join("key.pem"));
    })
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// How a read ended.
enum Read1 {
    Data,
    Closed,
    Timeout,
}

/// Reads what arrives before `deadline` into `buf`. A close_notify or the
/// end of the stream is `Closed`.
fn read_some(s: &mut Tls, buf: &mut BytesMut, deadline: Instant) -> Read1 {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Read1::Timeout;
    }
    s.sock.set_read_timeout(Some(left)).expect("timeout");
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp) {
        Ok(0) => Read1::Closed,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Read1::Data
        }
        // Interrupted by a signal: read again.
        Err(e) if e.kind() == ErrorKind::Interrupted => Read1::Data,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Read1::Timeout,
        Err(_) => Read1::Closed,
    }
}

/// A client over TLS, on the TCP listener or, upgraded, on the WebSocket
/// one.
struct Client {
    s: Tls,
    buf: BytesMut,
    ws: bool,
    frames: Vec<Frame>,
}

impl Client {
    fn connect(cert: &Cert, addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = ClientConnection::new(cert.client_config(), name).expect("client");
        Client {
            s: StreamOwned::new(conn, tcp),
            buf: BytesMut::new(),
            ws: false,
            frames: Vec::new(),
        }
    }

    fn connect_ws(cert: &Cert, addr: SocketAddr) -> Client {
        let mut c = Client::connect(cert, addr);
        let (req, key) = ws::client_request(&addr.to_string(), "/ws", [9; 16]);
        c.s.write_all(&req).expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(n) = ws::client_response(&c.buf, &key).expect("upgraded") {
                let _ = c.buf.split_to(n);
                break;
            }
            assert!(
                matches!(read_some(&mut c.s, &mut c.buf, deadline), Read1::Data),
                "no upgrade answer"
            );
        }
        c.ws = true;
        c
    }

    fn login_on(mut c: Client, user: u64, device: u32) -> Client {
        common::log_in(&mut c, user, device);
        c
    }

    fn login(cert: &Cert, addr: SocketAddr, user: u64, device: u32) -> Client {
        Client::login_on(Client::connect(cert, addr), user, device)
    }

    fn send(&mut self, f: impl Into<Frame>) {
        let mut b = BytesMut::new();
        f.into().encode(&mut b);
        if self.ws {
            b = ws::encode(ws::Opcode::Binary, &b, Some([1, 2, 3, 4]))
                .as_slice()
                .into();
        }
        self.s.write_all(&b).expect("write");
        self.s.flush().expect("flush");
    }

    /// The next imgate frame, or None when the server closed.
    fn next(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if !self.frames.is_empty() {
                return Some(self.frames.remove(0));
            }
            if self.ws {
                match ws::Decoder::client(1 << 20).decode(&mut self.buf) {
                    Ok(Some(f)) if f.opcode == ws::Opcode::Binary => {
                        let mut p = f.payload;
                        while let Some(fr) = Decoder::new(1 << 20).decode(&mut p).expect("frames") {
                            self.frames.push(fr);
                        }
                        continue;
                    }
                    Ok(Some(f)) if f.opcode == ws::Opcode::Close => {
                        let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                        assert_eq!(code, ws::CloseCode::POLICY.0, "a kick's close code");
                        continue;
                    }
                    Ok(Some(f)) => panic!("unexpected {:?}", f.opcode),
                    Ok(None) => {}
                    Err(e) => panic!("bad WebSocket frame: {e}"),
                }
            } else if let Some(f) = Decoder::new(1 << 20).decode(&mut self.buf).expect("frame") {
                return Some(f);
            }
            match read_some(&mut self.s, &mut self.buf, deadline) {
                Read1::Data => {}
                Read1::Closed => return None,
                Read1::Timeout => panic!("timed out waiting for a frame"),
            }
        }
    }

    fn frame(&mut self) -> Frame {
        self.next().expect("a frame, not the end")
    }
}

impl common::FrameClient for Client {
    fn send_frame(&mut self, f: Frame) {
        self.send(f);
    }

    fn next_frame(&mut self) -> Frame {
        self.frame()
    }
}

fn msg(msg_id: u64, to: u64, body: &'static [u8]) -> MsgR {
    MsgR {
        no_push: false,
        msg_id,
        group: 0,
        to,
        retry: false,
        body: Bytes::from_static(body),
    }
}

#[test]
fn the_six_packets_over_tls_and_over_websocket_on_tls() {
    let cert = Cert::new();
    let g = gw(&cert);
    let mut a = Client::login(&cert, g.addr(), 1, 1);
    let mut b = Client::login_on(Client::connect_ws(&cert, g.ws_addr()), 2, 1);
    common::six_packets(&mut a, &mut b, b"over tls");
    // A body that takes several TLS records, the other way.
    let big = Bytes::from(vec![b'y'; 40_000]);
    b.send(MsgR {
        no_push: false,
        msg_id: 11,
        group: 0,
        to: 1,
        retry: false,
        body: big.clone(),
    });
    assert!(matches!(b.frame(), Frame::MsgA(_)));
    match a.frame() {
        Frame::MsgN(n) => assert_eq!(n.body, big),
        other => panic!("expected msg:N, got {other:?}"),
    }
    assert_eq!(g.counter("imgate_tls_handshakes_total"), 2);
    assert_eq!(g.counter("imgate_ws_upgrades_total"), 1);
    // Labelled by transport: one login over TLS, one over WebSocket on TLS.
    for (t, n) in [("tcp", 0), ("ws", 0), ("tls", 1), ("wss", 1)] {
        let name = format!("imgate_transport_logins_total{{transport=\"{t}\"}}");
        assert_eq!(g.counter(&name), n, "{name}");
    }
    // The 40 kB body went in over wss and out over tls.
    assert!(g.counter("imgate_transport_bytes_in_total{transport=\"wss\"}") > 40_000);
    assert!(g.counter("imgate_transport_bytes_out_total{transport=\"tls\"}") > 40_000);
}

#[test]
fn offline_messages_are_paged_over_tls() {
    let cert = Cert::new();
    let g = gw(&cert);
    let mut a = Client::login(&cert, g.addr(), 1, 1);
    for i in 0..5 {
        a.send(msg(100 + i, 3, b"while you were away"));
        assert!(matches!(a.frame(), Frame::MsgA(_)));
    }
    let mut c = Client::login(&cert, g.addr(), 3, 1);
    let seen = common::page_through(&mut c, 2, 5);
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_replaced_session_gets_its_kick_then_close_notify() {
    let cert = Cert::new();
    let g = gw(&cert);
    for ws in [false, true] {
        let connect = |ws| {
            if ws {
                Client::connect_ws(&cert, g.ws_addr())
            } else {
                Client::connect(&cert, g.addr())
            }
        };
        let mut first = Client::login_on(connect(ws), 5, 1);
        let _second = Client::login_on(connect(ws), 5, 1);
        match first.frame() {
            Frame::Kick(k) => assert_eq!(k.reason, KickReason::Replaced.to_wire()),
            other => panic!("expected a kick, got {other:?}"),
        }
        // The stream then ends cleanly: rustls reports a close_notify as
        // the end (a truncation would be an error, read as `Closed` too,
        // so check the state rustls saw).
        assert!(first.next().is_none(), "closed after the kick");
        let mut rest = [0u8; 1];
        assert_eq!(
            first.s.conn.reader().read(&mut rest).expect("clean end"),
            0,
            "close_notify received"
        );
    }
}

#[test]
fn a_clear_text_client_is_refused_and_others_are_unharmed() {
    let cert = Cert::new();
    let g = gw(&cert);
    let mut good = Client::login(&cert, g.addr(), 1, 1);
    for addr in [g.addr(), g.ws_addr()] {
        let mut plain = TcpStream::connect(addr).expect("connect");
        let mut login = BytesMut::new();
        Frame::from(Login {
            user: 9,
            device: 1,
            resume: 0,
            token: token(9, 1),
        })
        .encode(&mut login);
        plain.write_all(&login).expect("write");
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut tmp = [0u8; 512];
        loop {
            match plain.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("a clear-text client was not closed")
                }
                Err(_) => break,
            }
        }
        // At most a TLS alert record (content type 21), never a frame.
        assert!(got.is_empty() || got[0] == 21, "got {got:?}");
    }
    assert_eq!(g.counter("imgate_tls_failures_total"), 2);
    good.send(msg(1, 2, b"still here"));
    assert!(matches!(good.frame(), Frame::MsgA(_)));
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_login_deadline() {
    let cert = Cert::new();
    let g = gw(&cert);
    for addr in [g.addr(), g.ws_addr()] {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        // The start of a TLS record, then nothing.
        s.write_all(&[22, 3, 1]).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut tmp = [0u8; 64];
        let n = loop {
            match s.read(&mut tmp) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("not closed at the login deadline")
                }
                r => break r.unwrap_or(0),
            }
        };
        assert_eq!(n, 0, "closed without a frame");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(3),
            "closed after {took:?}, login_timeout_ms is 400"
        );
    }
}

#[test]
fn bad_certificate_files_are_refused_at_start_with_the_file_named() {
    let cert = Cert::new();
    let missing = cert.dir.join("missing.pem");
    let e =
        imgate::tls::server_config(&missing, &cert.dir.join("key.pem")).expect_err("missing cert");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A key file given as the certificate holds no certificate.
    let e = imgate::tls::server_config(&cert.dir.join("key.pem"), &cert.dir.join("key.pem"))
        .expect_err("no certificate");
    assert!(e.to_string().contains("tls_cert"), "{e}");
    // A certificate given as the key holds no key.
    let e = imgate::tls::server_config(&cert.dir.join("cert.pem"), &cert.dir.join("cert.pem"))
        .expect_err("no key");
    assert!(e.to_string().contains("tls_key"), "{e}");
    // A key that is not the certificate's.
    let other = Cert::new();
    let e = imgate::tls::server_config(&cert.dir.join("cert.pem"), &other.dir.join("key.pem"))
        .expect_err("mismatched key");
    assert!(e.to_string().contains("tls_cert and tls_key"), "{e}");
}

#[test]
fn a_slow_reader_over_tls_is_kicked_at_the_outbound_limit() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let cert = Cert::new();
    let g = Gw::start(|c| {
        c.max_outbound_bytes = 256 * 1024;
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.max_frames_per_sec = 1_000_000;
        c.frame_burst = 1_000_000;
        c.tls_cert = Some(cert.dir.join("cert.pem"));
        c.tls_key = Some(cert.dir.join("key.pem"));
    });
    let mut slow = Client::login(&cert, g.addr(), 2, 1);
    let mut sender = Client::login(&cert, g.addr(), 1, 1);
    let metrics = g.0.as_ref().expect("running").metrics().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The sender writes far more than socket buffers hold, and reads its
    // msg:A between bursts so that it is never the slow one.
    let sending = std::thread::spawn(move || {
        let body = Bytes::from(vec![7u8; 2000]);
        let mut sent = 0u64;
        while !stop2.load(Relaxed) && sent < 50_000 {
            for _ in 0..20 {
                sent += 1;
                sender.send(MsgR {
                    no_push: false,
                    msg_id: sent,
                    group: 0,
                    to: 2,
                    retry: false,
                    body: body.clone(),
                });
            }
            let soon = Instant::now() + Duration::from_millis(1);
            while let Read1::Data = read_some(&mut sender.s, &mut sender.buf, soon) {}
            sender.buf.clear();
        }
        sent
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.kicks(KickReason::SlowConsumer) == 0 {
        assert!(Instant::now() < deadline, "no slow-consumer kick");
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Relaxed);
    let mut got = Vec::new();
    while let Some(f) = slow.next() {
        got.push(f);
    }
    match got.last() {
        Some(Frame::Kick(k)) => assert_eq!(k.reason, KickReason::SlowConsumer.to_wire()),
        other => panic!("expected a slow_consumer kick last, got {other:?}"),
    }
    let sent = sending.join().expect("sender");
    assert!((got.len() as u64) < sent, "the backlog was dropped");
    assert_eq!(
        g.counter("imgate_transport_kicks_total{transport=\"tls\"}"),
        1
    );
}

#[test]
fn a_backlog_of_large_messages_over_tls_is_delivered_whole() {
    let cert = Cert::new();
    let g = Gw::start(|c| {
        c.max_outbound_bytes = 64 << 20;
        c.max_frames_per_sec = 1_000_000;
        c.frame_burst = 1_000_000;
        c.tls_cert = Some(cert.dir.join("cert.pem"));
        c.tls_key = Some(cert.dir.join("key.pem"));
    });
    let mut reader = Client::login(&cert, g.addr(), 2, 1);
    let mut sender = Client::login(&cert, g.addr(), 1, 1);
    // 10 MB for a reader that reads nothing yet: more than the socket
    // buffers hold, so the gateway queues large frames and hands rustls
    // several at a time.
    let body = Bytes::from(vec![b'z'; 40_000]);
    let n = 250;
    for i in 1..=n {
        sender.send(MsgR {
            no_push: false,
            msg_id: i,
            group: 0,
            to: 2,
            retry: false,
            body: body.clone(),
        });
        assert!(matches!(sender.frame(), Frame::MsgA(_)));
    }
    for i in 1..=n {
        match reader.frame() {
            Frame::MsgN(m) => assert_eq!((m.seq, m.body.len()), (i, body.len())),
            other => panic!("expected msg:N {i}, got {other:?}"),
        }
    }
}

#[test]
fn over_the_connection_limit_a_tls_client_is_closed_without_a_frame() {
    let cert = Cert::new();
    let g = Gw::start(|c| {
        c.max_connections = 1;
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.tls_cert = Some(cert.dir.join("cert.pem"));
        c.tls_key = Some(cert.dir.join("key.pem"));
    });
    let mut first = Client::login(&cert, g.addr(), 1, 1);
    // The second connection is closed at once: a refusal frame would
    // need a handshake, which the limit is there to spare.
    let mut second = Client::connect(&cert, g.addr());
    second
        .s
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let handshake = loop {
        match second.s.conn.complete_io(&mut second.s.sock) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            r => break r,
        }
    };
    match handshake {
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "not closed: {e}"
        ),
        Ok(_) => panic!("a handshake over the connection limit"),
    }
    assert_eq!(g.counter("imgate_refused_total"), 1);
    first.send(msg(1, 2, b"still served"));
    assert!(matches!(first.frame(), Frame::MsgA(_)));
}
