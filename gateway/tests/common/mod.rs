//! A gateway started in-process on an ephemeral port, and a blocking test
//! client that speaks the real protocol over a real socket.

#![allow(dead_code, unreachable_pub)]

pub mod hook;
pub mod nats;
pub mod peer;
pub mod process;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use imgate::{
    backend::Backend,
    config::{Config, DriverKind, Durability},
    delivery::Delivery,
    relay::Relay,
    server::{self, Running},
    token::HmacVerifier,
};
use imgate_codec::{Decoder, Frame, frame::Login};

pub const SECRET: &str = "test-secret";

/// Drivers to run a test on: epoll always, io_uring where the kernel has it.
pub fn drivers() -> Vec<DriverKind> {
    let mut d = vec![DriverKind::Epoll];
    if server::uses_uring(DriverKind::Auto) {
        d.push(DriverKind::Uring);
    }
    d
}

pub fn config(driver: DriverKind) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        driver,
        metrics_listen: None,
        secret: SECRET.into(),
        tick_ms: 20,
        purge_interval_ms: 20,
        shutdown_timeout_ms: 3000,
        ..Config::default()
    }
}

pub fn start(cfg: Config) -> Running {
    start_with(cfg, Box::new(Relay::default()))
}

pub fn start_with(cfg: Config, backend: Box<dyn Backend>) -> Running {
    let v = Arc::new(HmacVerifier::new(cfg.secret.as_bytes()));
    server::start(cfg, backend, v).expect("gateway starts")
}

/// A gateway with the delivery backend on the in-memory store, shut down
/// when dropped (also when a test fails).
pub struct Gw(pub Option<Running>);

impl Gw {
    pub fn start(f: impl FnOnce(&mut Config)) -> Gw {
        Gw::start_clocked(f, imgate::clock::SystemClock)
    }

    /// The same, with the backend's rules on `clock`.
    pub fn start_clocked(f: impl FnOnce(&mut Config), clock: impl imgate::clock::Clock) -> Gw {
        let mut cfg = config(DriverKind::Auto);
        cfg.durability = Durability::Memory;
        f(&mut cfg);
        let store = imgate::store::open(&cfg.data_dir, Durability::Memory).expect("memory store");
        let backend = Delivery::with_clock(store, &cfg, Arc::new(clock)).expect("backend");
        Gw(Some(start_with(cfg, Box::new(backend))))
    }

    /// A gateway on the cluster backend, on the shared 3-node JetStream
    /// cluster under a stream prefix of its own; None when nats-server is
    /// not installed (under CI=true the harness fails the test instead).
    pub fn cluster(f: impl FnOnce(&mut Config)) -> Option<Gw> {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        static N: AtomicU32 = AtomicU32::new(0);
        let Some(nats) = nats::shared() else {
            eprintln!("cluster backend skipped: nats-server not installed");
            return None;
        };
        let mut cfg = config(DriverKind::Auto);
        cfg.backend = imgate::config::BackendKind::Cluster;
        cfg.cluster.nats_urls = nats.urls();
        cfg.cluster.stream_prefix = format!("G{}_{}", std::process::id(), N.fetch_add(1, Relaxed));
        cfg.cluster.partitions = 2;
        f(&mut cfg);
        let backend = imgate::cluster::Cluster::new(&cfg);
        Some(Gw(Some(start_with(cfg, Box::new(backend)))))
    }

    /// The embedded backend in memory, and the cluster backend when
    /// nats-server is installed: the same test on each.
    pub fn on_every_backend(f: impl Fn(&mut Config)) -> Vec<Gw> {
        [Gw::start(&f)].into_iter().chain(Gw::cluster(&f)).collect()
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("running").addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.0
            .as_ref()
            .expect("running")
            .metrics_addr()
            .expect("a metrics endpoint")
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.0
            .as_ref()
            .expect("running")
            .ws_addr()
            .expect("a WebSocket listener")
    }
}

impl Gw {
    /// The sum of a metric's lines on the metrics endpoint whose name and
    /// labels start with `name`.
    pub fn counter(&self, name: &str) -> u64 {
        let (status, text) =
            imgate::http::request(self.metrics_addr(), "GET", "/metrics", None).expect("metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// A client of any transport, for flows every transport must carry alike.
pub trait FrameClient {
    fn send_frame(&mut self, f: Frame);
    /// The next frame; panics on a close or a timeout.
    fn next_frame(&mut self) -> Frame;
}

impl FrameClient for Client {
    fn send_frame(&mut self, f: Frame) {
        self.send(f);
    }

    fn next_frame(&mut self) -> Frame {
        self.frame()
    }
}

/// The six packets between `a` (user 1) and `b` (user 2): msg:R, msg:A,
/// msg:N, ack:R, ack:A, ack:N, with `body`.
pub fn six_packets(a: &mut impl FrameClient, b: &mut impl FrameClient, body: &'static [u8]) {
    use imgate_codec::frame::{AckR, MsgR};
    a.send_frame(
        MsgR {
            no_push: false,
            msg_id: 10,
            group: 0,
            to: 2,
            retry: false,
            body: Bytes::from_static(body),
        }
        .into(),
    );
    match a.next_frame() {
        Frame::MsgA(m) => assert_eq!((m.msg_id, m.seq), (10, 1)),
        other => panic!("expected msg:A, got {other:?}"),
    }
    match b.next_frame() {
        Frame::MsgN(n) => assert_eq!((n.from, n.seq, &n.body[..]), (1, 1, body)),
        other => panic!("expected msg:N, got {other:?}"),
    }
    b.send_frame(AckR { group: 0, seq: 1 }.into());
    match b.next_frame() {
        Frame::AckA(x) => assert_eq!(x.seq, 1),
        other => panic!("expected ack:A, got {other:?}"),
    }
    match a.next_frame() {
        Frame::AckN(x) => assert_eq!((x.peer, x.seq), (2, 1)),
        other => panic!("expected ack:N, got {other:?}"),
    }
}

/// `c`'s whole inbox, pulled 200 a page: (seq, body) in order.
pub fn inbox_entries(c: &mut Client) -> Vec<(u64, Bytes)> {
    use imgate_codec::frame::SyncR;
    let (mut after, mut out) = (0, Vec::new());
    loop {
        c.send(SyncR {
            group: 0,
            after,
            limit: 200,
        });
        let page = match c.frame() {
            Frame::SyncPage(p) => p,
            other => panic!("expected a page, got {other:?}"),
        };
        let entries: Vec<(u64, Bytes)> = page.entries().map(|e| (e.seq, e.body.clone())).collect();
        let Some(&(last, _)) = entries.last() else {
            return out;
        };
        after = last;
        out.extend(entries);
    }
}

/// Pages `c`'s inbox from the start, `limit` entries a page, until a page
/// comes back empty; checks every page's head is `head` and returns the
/// sequence ids seen.
pub fn page_through(c: &mut impl FrameClient, limit: u16, head: u64) -> Vec<u64> {
    use imgate_codec::frame::SyncR;
    let (mut after, mut seen) = (0, Vec::new());
    loop {
        c.send_frame(
            SyncR {
                group: 0,
                after,
                limit,
            }
            .into(),
        );
        let page = match c.next_frame() {
            Frame::SyncPage(p) => p,
            other => panic!("expected a page, got {other:?}"),
        };
        assert_eq!(page.head, head);
        let seqs: Vec<u64> = page.entries().map(|e| e.seq).collect();
        assert!(seqs.len() <= usize::from(limit), "{seqs:?}");
        let Some(&last) = seqs.last() else {
            return seen;
        };
        after = last;
        seen.extend(seqs);
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.shutdown();
        }
    }
}

pub fn token(user: u64, device: u32) -> Bytes {
    let exp = imgate::unix_time().as_secs() + 3600;
    Bytes::from(HmacVerifier::new(SECRET.as_bytes()).mint(user, device, exp))
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

/// What a read returned.
#[derive(Debug)]
pub enum Got {
    Frame(Frame),
    Closed,
    Timeout,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client::connect_stream(stream)
    }

    /// A client over a connected stream.
    pub fn connect_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: BytesMut::new(),
            dec: Decoder::new(1 << 20),
        }
    }

    pub fn send(&mut self, f: impl Into<Frame>) {
        let mut b = BytesMut::new();
        f.into().encode(&mut b);
        self.stream.write_all(&b).expect("write");
    }

    pub fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write");
    }

    /// The next frame, or closed, within `t`.
    pub fn next(&mut self, t: Duration) -> Got {
        let deadline = Instant::now() + t;
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(f)) => return Got::Frame(f),
                Ok(None) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Timeout;
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    /// The next frame; panics on close or timeout.
    pub fn frame(&mut self) -> Frame {
        match self.next(Duration::from_secs(5)) {
            Got::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection (after any frames, which
    /// are returned).
    pub fn closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next(Duration::from_secs(5)) {
                Got::Frame(f) => frames.push(f),
                Got::Closed => return frames,
                Got::Timeout => panic!(
                    "connection not closed; {} frames so far, the last {:?}",
                    frames.len(),
                    frames.last().map(|f| f.kind())
                ),
            }
        }
    }

    pub fn login(addr: SocketAddr, user: u64, device: u32) -> Client {
        let mut c = Client::connect(addr);
        log_in(&mut c, user, device);
        c
    }
}

/// Logs `c` in as `user` on `device` with a valid token; panics unless
/// login:ok names them.
pub fn log_in(c: &mut impl FrameClient, user: u64, device: u32) {
    c.send_frame(
        Login {
            user,
            device,
            resume: 0,
            token: token(user, device),
        }
        .into(),
    );
    match c.next_frame() {
        Frame::LoginOk(ok) => assert_eq!((ok.user, ok.device), (user, device)),
        other => panic!("expected login:ok, got {other:?}"),
    }
}
