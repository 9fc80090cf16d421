//! A gateway started in-process on an ephemeral port with the default
//! backend (on its in-memory store) or the relay, a broken relay that
//! must make the load generator's loss and duplicate counters fire, and a
//! port nothing listens on.

#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, sync::Arc};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use clap::Parser;
use imgate::{
    backend::{Backend, Inbound, Router},
    config::{Config, DriverKind},
    conn_id::ConnId,
    relay::Relay,
    server::{self, Running},
    token::HmacVerifier,
};
use imgate_codec::{
    Body, ErrorCode, Frame,
    frame::{AckA, ErrorFrame, MsgA, MsgN, SyncPage},
};
use imgate_loadgen::{Cli, Report, RunError};

pub const SECRET: &str = "loadgen-test-secret";

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        driver: DriverKind::Auto,
        metrics_listen: None,
        secret: SECRET.into(),
        tick_ms: 20,
        purge_interval_ms: 20,
        push_timeout_ms: 500,
        shutdown_timeout_ms: 2000,
        ..Config::default()
    }
}

pub fn start_with(backend: Box<dyn Backend>) -> Running {
    let cfg = config();
    let v = Arc::new(HmacVerifier::new(cfg.secret.as_bytes()));
    server::start(cfg, backend, v).expect("gateway starts")
}

/// The gateway with its default backend on the in-memory store.
pub fn delivery() -> Running {
    let store = Box::new(imgate::store::MemoryStore::new());
    let backend = imgate::delivery::Delivery::new(store, &config()).expect("backend");
    start_with(Box::new(backend))
}

/// A named figure of a report.
pub fn figure<'a>(r: &'a Report, name: &str) -> &'a serde_json::Value {
    r.figures
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no figure {name}"))
}

/// The gateway with its default backend in memory and a WebSocket
/// listener too.
pub fn delivery_with_websocket() -> Running {
    let cfg = Config {
        ws_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..config()
    };
    let store = Box::new(imgate::store::MemoryStore::new());
    let backend = imgate::delivery::Delivery::new(store, &cfg).expect("backend");
    let v = Arc::new(HmacVerifier::new(cfg.secret.as_bytes()));
    server::start(cfg, Box::new(backend), v).expect("gateway starts")
}

pub fn relay() -> Running {
    start_with(Box::new(Relay::default()))
}

/// The relay with its metrics endpoint on an ephemeral port.
pub fn relay_with_metrics() -> Running {
    let cfg = Config {
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..config()
    };
    let v = Arc::new(HmacVerifier::new(cfg.secret.as_bytes()));
    server::start(cfg, Box::new(Relay::default()), v).expect("gateway starts")
}

/// Runs the load generator in-process: `cmd` is the scenario and its flags,
/// split on whitespace; the target, secret, thread and quiet flags are
/// added, and `--metrics none` unless `cmd` names its own.
pub fn loadgen(addr: SocketAddr, cmd: &str) -> Result<Report, RunError> {
    loadgen_on(&[addr], cmd)
}

/// [`loadgen`] against several gateways: `--target` lists `targets`.
pub fn loadgen_on(targets: &[SocketAddr], cmd: &str) -> Result<Report, RunError> {
    let target = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut argv = vec!["imgate-loadgen"];
    argv.extend(cmd.split_whitespace());
    if !cmd.contains("--metrics") {
        argv.extend_from_slice(&["--metrics", "none"]);
    }
    argv.extend_from_slice(&[
        "--target",
        &target,
        "--secret",
        SECRET,
        "--threads",
        "2",
        "--quiet",
    ]);
    let cli = Cli::try_parse_from(&argv).expect("arguments parse");
    let r = imgate_loadgen::run(cli);
    if let Ok(r) = &r {
        eprintln!("{}", r.table());
    }
    r
}

/// A loopback address nothing listens on: a port the kernel handed out,
/// its listener closed again.
pub fn closed_port() -> SocketAddr {
    closed_ports(1)[0]
}

/// `n` different loopback addresses nothing listens on.
pub fn closed_ports(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binds"))
        .collect();
    held.iter().map(|l| l.local_addr().expect("addr")).collect()
}

fn encode<T: Body>(f: T) -> Bytes {
    let mut b = BytesMut::with_capacity(imgate_codec::HEADER_LEN + f.body_len());
    f.encode(&mut b);
    b.freeze()
}

fn now_ms() -> u64 {
    u64::try_from(imgate::unix_time().as_millis()).unwrap_or(0)
}

fn refuse(out: &mut Router, conn: ConnId, f: &Frame) {
    let id = match f {
        Frame::GroupR(g) => g.req,
        Frame::ReceiptsR(r) => r.req,
        Frame::MsgR(m) => m.msg_id,
        _ => 0,
    };
    out.to_conn(
        conn,
        encode(ErrorFrame::new(
            ErrorCode::InvalidRequest,
            Some(f.kind()),
            id,
            "not supported by this test backend",
        )),
        None,
    );
}

/// How a broken relay misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Every nth msg:N is not pushed (its seq is used up: a gap the client
    /// syncs, and the relay has nothing to give).
    DropEvery(u64),
    /// Every nth msg:N is pushed a second time under a new seq.
    DuplicateEvery(u64),
}

/// The relay's behaviour with a fault injected.
#[derive(Debug)]
pub struct Broken {
    fault: Fault,
    head: AHashMap<u64, u64>,
    n: u64,
}

impl Broken {
    pub fn new(fault: Fault) -> Broken {
        Broken {
            fault,
            head: AHashMap::new(),
            n: 0,
        }
    }
}

impl Backend for Broken {
    fn handle(&mut self, batch: &mut Vec<Inbound>, out: &mut Router) {
        for ev in batch.drain(..) {
            if out.control(&ev) {
                continue;
            }
            let (conn, user, frame) = match ev {
                Inbound::Login { conn, user, .. } => {
                    out.login_ok(conn, self.head.get(&user).copied().unwrap_or(0));
                    continue;
                }
                Inbound::Frame {
                    conn, user, frame, ..
                } => (conn, user, frame),
                Inbound::Closed { .. } | Inbound::Replaced { .. } | Inbound::Kick { .. } => {
                    continue;
                }
            };
            match frame {
                Frame::MsgR(m) if m.group == 0 => {
                    let head = self.head.entry(m.to).or_insert(0);
                    *head += 1;
                    let seq = *head;
                    let t = now_ms();
                    let a = MsgA {
                        msg_id: m.msg_id,
                        group: 0,
                        seq,
                        own_seq: 0,
                        server_time: t,
                    };
                    out.to_conn(conn, encode(a), None);
                    self.n += 1;
                    let n = MsgN {
                        group: 0,
                        seq,
                        from: user,
                        to: m.to,
                        msg_id: m.msg_id,
                        server_time: t,
                        retry: false,
                        body: m.body,
                    };
                    match self.fault {
                        Fault::DropEvery(k) if self.n.is_multiple_of(k) => {}
                        Fault::DuplicateEvery(k) if self.n.is_multiple_of(k) => {
                            *head += 1;
                            let again = MsgN {
                                seq: *head,
                                ..n.clone()
                            };
                            out.to_user(m.to, None, &encode(n), None);
                            out.to_user(m.to, None, &encode(again), None);
                        }
                        _ => {
                            out.to_user(m.to, None, &encode(n), None);
                        }
                    }
                }
                Frame::AckR(a) => out.to_conn(
                    conn,
                    encode(AckA {
                        group: a.group,
                        seq: a.seq,
                    }),
                    None,
                ),
                Frame::SyncR(s) => {
                    let head = self.head.get(&user).copied().unwrap_or(0);
                    out.to_conn(conn, encode(SyncPage::new(s.group, s.after, head)), None);
                }
                other => refuse(out, conn, &other),
            }
        }
    }
}
