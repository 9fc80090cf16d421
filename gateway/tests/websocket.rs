//! The WebSocket listener over real sockets: the upgrade, imgate frames in
//! binary messages both ways (with a TCP client on the other end), pings,
//! refusals of text and bad upgrades, a handshake that never finishes, and
//! a kick that ends with a close frame.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::{Client, Gw};
use imgate_codec::{Decoder, Frame, KickReason, frame::MsgR, ws};

fn gw() -> Gw {
    Gw::start(|c| {
        c.ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.login_timeout_ms = 400;
    })
}

/// A WebSocket client of the gateway.
struct WsClient {
    s: TcpStream,
    buf: BytesMut,
    frames: Vec<Frame>,
}

enum Next {
    Ws(ws::Frame),
    Closed,
    Timeout,
}

impl WsClient {
    fn connect(addr: SocketAddr) -> WsClient {
        let mut s = TcpStream::connect(addr).expect("connect");
        let (req, key) = ws::client_request(&addr.to_string(), "/ws", [3; 16]);
        s.write_all(&req).expect("write");
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(n) = ws::client_response(&buf, &key).expect("upgraded") {
                let _ = buf.split_to(n);
                break;
            }
            assert!(Instant::now() < deadline, "no handshake answer");
            read_some(&mut s, &mut buf, deadline).expect("answer");
        }
        WsClient {
            s,
            buf,
            frames: Vec::new(),
        }
    }

    fn login(addr: SocketAddr, user: u64, device: u32) -> WsClient {
        let mut c = WsClient::connect(addr);
        common::log_in(&mut c, user, device);
        c
    }

    fn send(&mut self, f: impl Into<Frame>) {
        let mut b = BytesMut::new();
        f.into().encode(&mut b);
        self.send_ws(ws::Opcode::Binary, &b);
    }

    fn send_ws(&mut self, op: ws::Opcode, payload: &[u8]) {
        let wire = ws::encode(op, payload, Some([0x5a, 0x17, 0x00, 0xc3]));
        self.s.write_all(&wire).expect("write");
    }

    fn next_ws(&mut self, t: Duration) -> Next {
        let deadline = Instant::now() + t;
        loop {
            match ws::Decoder::client(1 << 20).decode(&mut self.buf) {
                Ok(Some(f)) => return Next::Ws(f),
                Ok(None) => {}
                Err(e) => panic!("server sent a bad WebSocket frame: {e}"),
            }
            match read_some(&mut self.s, &mut self.buf, deadline) {
                Ok(true) => {}
                Ok(false) => return Next::Closed,
                Err(()) => return Next::Timeout,
            }
        }
    }

    /// The next imgate frame (from binary messages, several per message
    /// allowed).
    fn frame(&mut self) -> Frame {
        loop {
            if !self.frames.is_empty() {
                return self.frames.remove(0);
            }
            match self.next_ws(Duration::from_secs(5)) {
                Next::Ws(f) if f.opcode == ws::Opcode::Binary => {
                    let mut p = f.payload;
                    let d = Decoder::new(1 << 20);
                    while let Some(fr) = d.decode(&mut p).expect("whole frames") {
                        self.frames.push(fr);
                    }
                    assert!(p.is_empty(), "a message carries whole frames");
                }
                Next::Ws(f) => panic!("expected a binary message, got {:?}", f.opcode),
                Next::Closed => panic!("closed"),
                Next::Timeout => panic!("timed out"),
            }
        }
    }

    /// The close frame's code, then the connection closes.
    fn close_code(&mut self) -> u16 {
        loop {
            match self.next_ws(Duration::from_secs(5)) {
                Next::Ws(f) if f.opcode == ws::Opcode::Close => {
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    assert!(matches!(self.next_ws(Duration::from_secs(5)), Next::Closed));
                    return code;
                }
                Next::Ws(f) if f.opcode == ws::Opcode::Binary => {
                    let mut p = f.payload;
                    while let Some(fr) = Decoder::new(1 << 20).decode(&mut p).expect("frames") {
                        self.frames.push(fr);
                    }
                }
                Next::Ws(f) => panic!("unexpected {:?}", f.opcode),
                Next::Closed => panic!("closed without a close frame"),
                Next::Timeout => panic!("no close frame"),
            }
        }
    }
}

impl common::FrameClient for WsClient {
    fn send_frame(&mut self, f: Frame) {
        self.send(f);
    }

    fn next_frame(&mut self) -> Frame {
        self.frame()
    }
}

/// Reads what arrives before `deadline`: Ok(true) some bytes (or none,
/// after a signal), Ok(false) closed, Err on timeout.
fn read_some(s: &mut TcpStream, buf: &mut BytesMut, deadline: Instant) -> Result<bool, ()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(());
    }
    s.set_read_timeout(Some(left)).expect("timeout");
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(true)
        }
        // Interrupted by a signal: read again.
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(()),
        Err(_) => Ok(false),
    }
}

/// Everything the server sends until it closes (bounded by 5 s).
fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match read_some(s, &mut buf, deadline) {
            Ok(true) => {}
            Ok(false) => return String::from_utf8_lossy(&buf).into_owned(),
            Err(()) => panic!("not closed: {}", String::from_utf8_lossy(&buf)),
        }
    }
}

#[test]
fn a_websocket_client_and_a_tcp_client_chat() {
    let g = gw();
    let mut w = WsClient::login(g.ws_addr(), 1, 1);
    let mut t = Client::login(g.addr(), 2, 1);
    w.send(MsgR {
        no_push: false,
        msg_id: 10,
        group: 0,
        to: 2,
        retry: false,
        body: Bytes::from_static(b"from the browser"),
    });
    match w.frame() {
        Frame::MsgA(a) => assert_eq!((a.msg_id, a.seq), (10, 1)),
        other => panic!("expected msg:A, got {other:?}"),
    }
    match t.frame() {
        Frame::MsgN(n) => {
            assert_eq!((n.from, n.seq), (1, 1));
            assert_eq!(&n.body[..], b"from the browser");
        }
        other => panic!("expected msg:N, got {other:?}"),
    }
    // A body larger than 125 bytes takes the longer header form.
    let big = Bytes::from(vec![b'x'; 3000]);
    t.send(MsgR {
        no_push: false,
        msg_id: 20,
        group: 0,
        to: 1,
        retry: false,
        body: big.clone(),
    });
    match w.frame() {
        Frame::MsgN(n) => assert_eq!((n.from, &n.body[..]), (2, &big[..])),
        other => panic!("expected msg:N, got {other:?}"),
    }
    assert_eq!(g.counter("imgate_ws_upgrades_total"), 1);
    for (t, n) in [("tcp", 1), ("ws", 1), ("tls", 0), ("wss", 0)] {
        let name = format!("imgate_transport_connections{{transport=\"{t}\"}}");
        assert_eq!(g.counter(&name), n, "{name}");
    }
}

#[test]
fn pings_are_answered_and_text_is_refused_with_1003() {
    let g = gw();
    let mut w = WsClient::login(g.ws_addr(), 1, 1);
    w.send_ws(ws::Opcode::Ping, b"are you there");
    match w.next_ws(Duration::from_secs(5)) {
        Next::Ws(f) => {
            assert_eq!(f.opcode, ws::Opcode::Pong);
            assert_eq!(&f.payload[..], b"are you there");
        }
        _ => panic!("no pong"),
    }
    w.send_ws(ws::Opcode::Text, b"hello");
    assert_eq!(w.close_code(), 1003);
}

#[test]
fn a_message_with_half_a_frame_is_a_protocol_error() {
    let g = gw();
    let mut w = WsClient::login(g.ws_addr(), 1, 1);
    let mut b = BytesMut::new();
    Frame::from(MsgR {
        no_push: false,
        msg_id: 1,
        group: 0,
        to: 2,
        retry: false,
        body: Bytes::from_static(b"cut"),
    })
    .encode(&mut b);
    let half = b.len() / 2;
    w.send_ws(ws::Opcode::Binary, &b[..half]);
    assert!(matches!(w.frame(), Frame::Error(_)));
    match w.frame() {
        Frame::Kick(k) => assert_eq!(k.reason(), KickReason::ProtocolError),
        other => panic!("expected a kick, got {other:?}"),
    }
    assert_eq!(w.close_code(), 1008);
}

#[test]
fn a_replaced_websocket_session_gets_a_kick_then_a_close_frame() {
    let g = gw();
    let mut first = WsClient::login(g.ws_addr(), 7, 1);
    let _second = Client::login(g.addr(), 7, 1);
    match first.frame() {
        Frame::Kick(k) => assert_eq!(k.reason(), KickReason::Replaced),
        other => panic!("expected a kick, got {other:?}"),
    }
    assert_eq!(first.close_code(), 1008);
}

#[test]
fn bad_upgrades_get_an_http_error_with_a_json_body() {
    let g = gw();
    for (req, status) in [
        (
            "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "404",
        ),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        ("\x00\x00\x00\x10garbage\r\n\r\n", "400"),
    ] {
        let mut s = TcpStream::connect(g.ws_addr()).expect("connect");
        s.write_all(req.as_bytes()).expect("write");
        let answer = read_to_close(&mut s);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(answer.contains("{\"error\":\""), "{answer}");
    }
    // An endless header is refused at the configured size.
    let mut s = TcpStream::connect(g.ws_addr()).expect("connect");
    let mut req = b"GET /ws HTTP/1.1\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'a', 9000));
    let _ = s.write_all(&req);
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(g.counter("imgate_ws_refused_total"), 4);
    assert_eq!(g.counter("imgate_ws_upgrades_total"), 0);
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_login_deadline() {
    let g = gw();
    let mut s = TcpStream::connect(g.ws_addr()).expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let start = Instant::now();
    let answer = read_to_close(&mut s);
    assert!(answer.is_empty(), "no frame before the upgrade: {answer:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The others are not harmed.
    let _w = WsClient::login(g.ws_addr(), 1, 1);
}

#[test]
fn over_the_connection_limit_a_websocket_client_gets_a_503() {
    let g = Gw::start(|c| {
        c.ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.max_connections = 1;
    });
    let _first = WsClient::login(g.ws_addr(), 1, 1);
    let mut s = TcpStream::connect(g.ws_addr()).expect("connect");
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.contains("\"error\":\"too_many_connections\""),
        "{answer}"
    );
}

#[test]
fn the_six_packets_and_offline_paging_over_websocket() {
    let g = gw();
    let mut a = WsClient::login(g.ws_addr(), 1, 1);
    let mut b = WsClient::login(g.ws_addr(), 2, 1);
    common::six_packets(&mut a, &mut b, b"six packets");
    // Five messages to a user who is offline, paged two at a time.
    for i in 0..5 {
        a.send(MsgR {
            no_push: false,
            msg_id: 100 + i,
            group: 0,
            to: 3,
            retry: false,
            body: Bytes::from_static(b"later"),
        });
        assert!(matches!(a.frame(), Frame::MsgA(_)));
    }
    let mut c = WsClient::login(g.ws_addr(), 3, 1);
    assert_eq!(common::page_through(&mut c, 2, 5), vec![1, 2, 3, 4, 5]);
}
