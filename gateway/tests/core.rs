//! The gateway core over real sockets: login, heartbeats, kicks, limits,
//! shutdown, on both io drivers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, Got, config, drivers, start, start_with, token};
use imgate::relay::Relay;
use imgate_codec::{
    ErrorCode, Frame, KickReason, Kind,
    frame::{AckR, Login, MsgR, Ping},
};

fn error_code(f: &Frame) -> ErrorCode {
    match f {
        Frame::Error(e) => e.code(),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn error_ref(f: &Frame) -> (Option<Kind>, u64) {
    match f {
        Frame::Error(e) => (e.ref_kind(), e.ref_id),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn kick_reason(f: &Frame) -> KickReason {
    match f {
        Frame::Kick(k) => k.reason(),
        other => panic!("expected a kick, got {other:?}"),
    }
}

#[test]
fn login_succeeds_and_ping_gets_pong() {
    for d in drivers() {
        let gw = start(config(d));
        let mut c = Client::login(gw.addr(), 7, 1);
        c.send(Ping { nonce: 99 });
        match c.frame() {
            Frame::Pong(p) => assert_eq!(p.nonce, 99, "{d:?}"),
            other => panic!("{d:?}: expected pong, got {other:?}"),
        }
        assert_eq!(
            gw.metrics()
                .cores
                .iter()
                .map(|c| c.logins.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>(),
            1
        );
        assert!(gw.shutdown());
    }
}

#[test]
fn bad_and_expired_tokens_are_refused_and_closed() {
    for d in drivers() {
        let gw = start(config(d));
        let mut c = Client::connect(gw.addr());
        c.send(Login {
            user: 7,
            device: 1,
            resume: 0,
            token: token(8, 1), // someone else's token
        });
        let got = c.closed();
        assert_eq!(got.len(), 1, "{d:?}: {got:?}");
        assert_eq!(error_code(&got[0]), ErrorCode::BadToken);
        // A login refusal quotes the login, with id 0 (protocol 3.3).
        assert_eq!(error_ref(&got[0]), (Some(Kind::Login), 0), "{d:?}");

        let expired = imgate::token::HmacVerifier::new(common::SECRET.as_bytes()).mint(7, 1, 1);
        let mut c = Client::connect(gw.addr());
        c.send(Login {
            user: 7,
            device: 1,
            resume: 0,
            token: Bytes::from(expired),
        });
        let got = c.closed();
        assert_eq!(error_code(&got[0]), ErrorCode::TokenExpired, "{d:?}");
        assert_eq!(error_ref(&got[0]), (Some(Kind::Login), 0), "{d:?}");
        assert!(gw.shutdown());
    }
}

#[test]
fn a_first_frame_other_than_login_is_refused() {
    for d in drivers() {
        let gw = start(config(d));
        let mut c = Client::connect(gw.addr());
        c.send(Ping { nonce: 1 });
        let got = c.closed();
        assert_eq!(got.len(), 2, "{d:?}: {got:?}");
        assert_eq!(error_code(&got[0]), ErrorCode::NotLoggedIn);
        assert_eq!(kick_reason(&got[1]), KickReason::ProtocolError);
        assert!(gw.shutdown());
    }
}

#[test]
fn garbage_gets_an_error_and_a_protocol_kick() {
    for d in drivers() {
        let gw = start(config(d));
        let mut c = Client::connect(gw.addr());
        // A plausible length, then a version this server does not speak.
        c.send_raw(&[0, 0, 0, 8, 9, 1, 0, 0, 1, 2, 3, 4]);
        let got = c.closed();
        assert_eq!(got.len(), 2, "{d:?}: {got:?}");
        assert_eq!(error_code(&got[0]), ErrorCode::UnsupportedVersion);
        assert_eq!(kick_reason(&got[1]), KickReason::ProtocolError);
        assert!(gw.shutdown());
    }
}

#[test]
fn an_oversized_frame_is_refused_before_it_arrives() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.max_frame = 4096;
        let gw = start(cfg);
        let mut c = Client::login(gw.addr(), 1, 1);
        // Announce 1 MiB; send only the header.
        c.send_raw(&[0, 0x10, 0, 0, 1, 0x10, 0, 0]);
        let got = c.closed();
        assert_eq!(error_code(&got[0]), ErrorCode::FrameTooLarge, "{d:?}");
        assert_eq!(kick_reason(&got[1]), KickReason::ProtocolError);
        assert!(gw.shutdown());
    }
}

#[test]
fn no_login_before_the_deadline_is_kicked() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.login_timeout_ms = 100;
        let gw = start(cfg);
        let mut c = Client::connect(gw.addr());
        let got = c.closed();
        assert_eq!(got.len(), 1, "{d:?}: {got:?}");
        assert_eq!(kick_reason(&got[0]), KickReason::LoginTimeout);
        assert!(gw.shutdown());
    }
}

#[test]
fn silence_past_the_heartbeat_timeout_is_kicked_and_pings_keep_alive() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.heartbeat_ms = 100;
        cfg.heartbeat_timeout_factor = 2;
        let gw = start(cfg);
        let mut quiet = Client::login(gw.addr(), 1, 1);
        let mut chatty = Client::login(gw.addr(), 2, 1);
        // The chatty one pings every 50 ms for 600 ms: three timeouts' worth.
        for i in 0..12 {
            chatty.send(Ping { nonce: i });
            assert!(matches!(chatty.frame(), Frame::Pong(_)), "{d:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = quiet.closed();
        assert_eq!(got.len(), 1, "{d:?}: {got:?}");
        assert_eq!(kick_reason(&got[0]), KickReason::HeartbeatTimeout);
        chatty.send(Ping { nonce: 100 });
        assert!(matches!(chatty.frame(), Frame::Pong(p) if p.nonce == 100));
        assert_eq!(gw.metrics().kicks(KickReason::HeartbeatTimeout), 1);
        assert!(gw.shutdown());
    }
}

#[test]
fn a_new_login_of_the_same_device_replaces_the_old() {
    for d in drivers() {
        let gw = start(config(d));
        let mut old = Client::login(gw.addr(), 5, 1);
        let mut other_device = Client::login(gw.addr(), 5, 2);
        let mut new = Client::login(gw.addr(), 5, 1);
        let got = old.closed();
        assert_eq!(kick_reason(&got[0]), KickReason::Replaced, "{d:?}");
        for c in [&mut other_device, &mut new] {
            c.send(Ping { nonce: 3 });
            assert!(matches!(c.frame(), Frame::Pong(_)));
        }
        assert!(gw.shutdown());
    }
}

#[test]
fn connections_over_the_limit_are_refused() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.max_connections = 2;
        let gw = start(cfg);
        let _a = Client::login(gw.addr(), 1, 1);
        let _b = Client::login(gw.addr(), 2, 1);
        let mut c = Client::connect(gw.addr());
        let got = c.closed();
        assert_eq!(error_code(&got[0]), ErrorCode::TooManyConnections, "{d:?}");
        drop(_a);
        // The slot frees once the server sees the close.
        let mut ok = false;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(20));
            let mut c = Client::connect(gw.addr());
            c.send(Login {
                user: 3,
                device: 1,
                resume: 0,
                token: token(3, 1),
            });
            if matches!(
                c.next(Duration::from_secs(2)),
                Got::Frame(Frame::LoginOk(_))
            ) {
                ok = true;
                break;
            }
        }
        assert!(ok, "{d:?}: a freed slot is reusable");
        assert!(gw.shutdown());
    }
}

#[test]
fn frames_over_the_rate_limit_are_refused_then_kicked() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.max_frames_per_sec = 10;
        cfg.frame_burst = 20;
        cfg.rate_limit_strikes = 5;
        let gw = start(cfg);
        let mut c = Client::login(gw.addr(), 1, 1);
        // All at once, so the server reads them before it closes.
        let mut burst = bytes::BytesMut::new();
        for i in 0..40 {
            Frame::from(Ping { nonce: i }).encode(&mut burst);
        }
        c.send_raw(&burst);
        let got = c.closed();
        // The login used one token of the burst: 19 pings pass, 5 are
        // refused with an error naming them, the next one is kicked.
        let pongs = got.iter().filter(|f| matches!(f, Frame::Pong(_))).count();
        assert_eq!(pongs, 19, "{d:?}");
        assert_eq!(got.len(), 19 + 5 + 1, "{d:?}: {got:?}");
        for (i, f) in got[19..24].iter().enumerate() {
            assert_eq!(error_code(f), ErrorCode::RateLimited);
            let Frame::Error(e) = f else { unreachable!() };
            assert_eq!(e.ref_id, 19 + i as u64, "the refused ping's nonce");
        }
        assert_eq!(kick_reason(&got[24]), KickReason::RateLimited);
        assert!(gw.shutdown());
    }
}

#[test]
fn a_slow_consumer_is_kicked_and_fast_ones_are_not() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.max_frame = 4096;
        cfg.max_outbound_bytes = 64 * 1024;
        cfg.max_frames_per_sec = 1_000_000;
        cfg.frame_burst = 1_000_000;
        let gw = start(cfg);
        let mut slow = Client::login(gw.addr(), 2, 1);
        slow.stream.set_nonblocking(false).expect("blocking");
        let mut sender = Client::login(gw.addr(), 1, 1);
        // A thread reads the sender's msg:A as fast as they come, so the
        // sender is never the slow one.
        let mut drain = sender.stream.try_clone().expect("clone");
        let drainer = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while matches!(std::io::Read::read(&mut drain, &mut buf), Ok(n) if n > 0) {}
        });
        // A thread sends far more than socket buffers hold; this thread
        // watches for the kick and reads at once, so the kick frame does
        // not wait past the close grace period for its reader.
        let metrics = gw.metrics().clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let sending = std::thread::spawn(move || {
            let body = Bytes::from(vec![7u8; 2000]);
            let mut sent = 0u64;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) && sent < 50_000 {
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
            sent
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while metrics.kicks(KickReason::SlowConsumer) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{d:?}: no slow-consumer kick"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = slow.closed();
        let last = got.last().expect("frames before the close");
        assert_eq!(kick_reason(last), KickReason::SlowConsumer, "{d:?}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = sending.join().expect("sender");
        assert!(
            (got.len() as u64) < sent,
            "the backlog was dropped, not delivered"
        );
        assert_eq!(gw.metrics().kicks(KickReason::SlowConsumer), 1);
        assert!(gw.shutdown());
        drainer.join().expect("drainer");
    }
}

#[test]
fn unacknowledged_pushes_are_resent_then_kicked() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.push_timeout_ms = 60;
        cfg.push_retries = 2;
        let relay = Relay::new(true);
        let gw = start_with(cfg, Box::new(relay));
        let mut rx = Client::login(gw.addr(), 2, 1);
        let mut acker = Client::login(gw.addr(), 3, 1);
        let mut tx = Client::login(gw.addr(), 1, 1);
        for to in [2, 3] {
            tx.send(MsgR {
                no_push: false,
                msg_id: to,
                group: 0,
                to,
                retry: false,
                body: Bytes::from_static(b"hi"),
            });
        }
        // The acker acks its one message at once and is never re-pushed.
        match acker.frame() {
            Frame::MsgN(n) => {
                assert!(!n.retry);
                acker.send(AckR {
                    group: 0,
                    seq: n.seq,
                });
            }
            other => panic!("{other:?}"),
        }
        // The silent receiver gets it once, then twice more with RETRY, then
        // a kick.
        let got = rx.closed();
        let pushes: Vec<bool> = got
            .iter()
            .filter_map(|f| match f {
                Frame::MsgN(n) => Some(n.retry),
                _ => None,
            })
            .collect();
        assert_eq!(pushes, vec![false, true, true], "{d:?}: {got:?}");
        assert_eq!(
            kick_reason(got.last().expect("kick")),
            KickReason::PushUnacked
        );
        let mut acker_frames = Vec::new();
        while let Got::Frame(f) = acker.next(Duration::from_millis(100)) {
            acker_frames.push(f);
        }
        assert!(
            acker_frames.iter().all(|f| !matches!(f, Frame::MsgN(_))),
            "{acker_frames:?}"
        );
        assert!(gw.shutdown());
    }
}

#[test]
fn graceful_shutdown_kicks_everyone_with_server_shutdown() {
    for d in drivers() {
        let gw = start(config(d));
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        let addr = gw.addr();
        assert!(gw.shutdown(), "{d:?}: within the deadline");
        for c in [&mut a, &mut b] {
            let got = c.closed();
            assert_eq!(kick_reason(&got[0]), KickReason::ServerShutdown);
        }
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "no longer accepting"
        );
    }
}

/// A backend that takes its time: its queue fills.
struct Slow;

impl imgate::backend::Backend for Slow {
    fn handle(
        &mut self,
        batch: &mut Vec<imgate::backend::Inbound>,
        out: &mut imgate::backend::Router,
    ) {
        for ev in batch.drain(..) {
            if let imgate::backend::Inbound::Login { conn, .. } = ev {
                out.login_ok(conn, 0);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_full_backend_queue_answers_overloaded_and_the_core_keeps_serving() {
    for d in drivers() {
        let mut cfg = config(d);
        cfg.backend_batch = 1;
        cfg.backend_queue = 1;
        let gw = start_with(cfg, Box::new(Slow));
        let mut c = Client::login(gw.addr(), 1, 1);
        let mut burst = bytes::BytesMut::new();
        for i in 0..20u64 {
            Frame::from(MsgR {
                no_push: false,
                msg_id: i + 1,
                group: 0,
                to: 2,
                retry: false,
                body: Bytes::from_static(b"x"),
            })
            .encode(&mut burst);
        }
        c.send_raw(&burst);
        let mut overloaded = Vec::new();
        while let Got::Frame(f) = c.next(Duration::from_millis(500)) {
            if let Frame::Error(e) = &f {
                assert_eq!(e.code(), ErrorCode::Overloaded, "{d:?}");
                overloaded.push(e.ref_id);
            }
        }
        assert!(!overloaded.is_empty(), "{d:?}: some msg:R were refused");
        assert!(overloaded.iter().all(|id| (1..=20).contains(id)));
        // The core itself still answers at once.
        c.send(Ping { nonce: 5 });
        assert!(matches!(c.frame(), Frame::Pong(p) if p.nonce == 5), "{d:?}");
        assert!(
            gw.metrics()
                .cores
                .iter()
                .map(|m| m.overloaded.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
                > 0
        );
        assert!(gw.shutdown());
    }
}

#[test]
fn the_admin_path_kicks_a_device_or_a_user_and_needs_its_token() {
    use imgate::http::request;
    for d in drivers() {
        let mut cfg = config(d);
        cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        cfg.admin_token = "adm1n".into();
        let gw = start(cfg);
        let http = gw.metrics_addr().expect("metrics endpoint");
        let mut phone = Client::login(gw.addr(), 5, 1);
        let mut laptop = Client::login(gw.addr(), 5, 2);
        let mut bystander = Client::login(gw.addr(), 6, 1);

        let (status, _) = request(http, "POST", "/admin/kick?user=5", Some("wrong")).expect("http");
        assert_eq!(status, 401, "{d:?}");
        let (status, body) =
            request(http, "GET", "/admin/sessions?user=5", Some("adm1n")).expect("http");
        assert_eq!(status, 200);
        assert!(
            body.contains("\"device\":1") && body.contains("\"device\":2"),
            "{body}"
        );

        let (status, body) =
            request(http, "POST", "/admin/kick?user=5&device=1", Some("adm1n")).expect("http");
        assert_eq!((status, body.as_str()), (200, "{\"kicked\":1}\n"), "{d:?}");
        let got = phone.closed();
        assert_eq!(kick_reason(&got[0]), KickReason::Admin, "{d:?}");
        laptop.send(Ping { nonce: 1 });
        assert!(matches!(laptop.frame(), Frame::Pong(_)), "{d:?}");

        let (status, body) =
            request(http, "POST", "/admin/kick?user=5", Some("adm1n")).expect("http");
        assert_eq!((status, body.as_str()), (200, "{\"kicked\":1}\n"), "{d:?}");
        assert_eq!(kick_reason(&laptop.closed()[0]), KickReason::Admin);
        bystander.send(Ping { nonce: 2 });
        assert!(matches!(bystander.frame(), Frame::Pong(_)), "{d:?}");

        // Nobody left to kick: an honest zero.
        let (_, body) = request(http, "POST", "/admin/kick?user=5", Some("adm1n")).expect("http");
        assert_eq!(body, "{\"kicked\":0}\n");
        assert_eq!(gw.metrics().kicks(KickReason::Admin), 2, "{d:?}");
        assert!(gw.shutdown());
    }
}

#[test]
fn the_admin_path_is_off_without_a_token() {
    let mut cfg = config(drivers()[0]);
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let gw = start(cfg);
    let _c = Client::login(gw.addr(), 5, 1);
    let http = gw.metrics_addr().expect("metrics endpoint");
    let (status, body) =
        imgate::http::request(http, "POST", "/admin/kick?user=5", Some("")).expect("http");
    assert_eq!(status, 403, "{body}");
    assert_eq!(gw.metrics().kicks(KickReason::Admin), 0);
    assert!(gw.shutdown());
}

#[test]
fn a_gateway_dropped_without_shutdown_still_shuts_down() {
    let gw = start(config(drivers()[0]));
    let addr = gw.addr();
    let mut c = Client::login(addr, 1, 1);
    drop(gw);
    let got = c.closed();
    assert_eq!(kick_reason(&got[got.len() - 1]), KickReason::ServerShutdown);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after drop"
    );
}

/// The relay, plus what a backend of several nodes would do with the start
/// hook: a thread of its own, with its own router, that kicks user 9 once
/// it is online; and a record of the `replaced` events it was handed.
struct Hooked {
    relay: Relay,
    replaced: std::sync::Arc<std::sync::Mutex<Vec<(u64, u32)>>>,
}

impl imgate::backend::Backend for Hooked {
    fn start(&mut self, start: &imgate::backend::Start) -> std::io::Result<()> {
        let mut router = start.router();
        let registry = start.registry.clone();
        assert_eq!(start.cores.len(), 2, "one mailbox per core");
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while registry.conn_of(9, 1).is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            router.kick_user(9, None, KickReason::Admin);
            router.flush();
        });
        Ok(())
    }

    fn handle(
        &mut self,
        batch: &mut Vec<imgate::backend::Inbound>,
        out: &mut imgate::backend::Router,
    ) {
        for ev in batch.iter() {
            if let imgate::backend::Inbound::Replaced { user, device, .. } = ev {
                self.replaced.lock().expect("lock").push((*user, *device));
            }
        }
        self.relay.handle(batch, out);
    }
}

#[test]
fn a_backend_gets_a_start_hook_with_routers_and_sees_replaced_logins() {
    let replaced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let backend = Hooked {
        relay: Relay::default(),
        replaced: replaced.clone(),
    };
    let gw = start_with(config(drivers()[0]), Box::new(backend));
    // The hook's thread kicks user 9 through its own router, as soon as
    // the registry shows it: before or after its login:ok.
    let mut c = Client::connect(gw.addr());
    c.send(Login {
        user: 9,
        device: 1,
        resume: 0,
        token: token(9, 1),
    });
    let got = c.closed();
    assert!(
        matches!(got.last(), Some(Frame::Kick(k)) if k.reason() == KickReason::Admin),
        "{got:?}"
    );
    // A second login of one device: the backend is handed the older
    // connection, and kicks it (the relay does as every backend does).
    let mut old = Client::login(gw.addr(), 4, 1);
    let _new = Client::login(gw.addr(), 4, 1);
    assert_eq!(kick_reason(&old.closed()[0]), KickReason::Replaced);
    assert_eq!(*replaced.lock().expect("lock"), vec![(4, 1)]);
    assert!(gw.shutdown());
}

#[test]
fn the_configuration_chooses_the_backend() {
    use imgate::config::{BackendKind, Durability};
    for kind in [BackendKind::Relay, BackendKind::Embedded] {
        let mut cfg = config(drivers()[0]);
        cfg.backend = kind;
        cfg.durability = Durability::Memory;
        let backend = imgate::server::backend(&cfg).expect("backend");
        let gw = start_with(cfg, backend);
        let mut a = Client::login(gw.addr(), 1, 1);
        let mut b = Client::login(gw.addr(), 2, 1);
        a.send(MsgR {
            no_push: false,
            msg_id: 1,
            group: 0,
            to: 2,
            retry: false,
            body: Bytes::from_static(b"hi"),
        });
        assert!(matches!(a.frame(), Frame::MsgA(_)), "{kind:?}");
        assert!(
            matches!(b.frame(), Frame::MsgN(n) if &n.body[..] == b"hi"),
            "{kind:?}"
        );
        // Only the embedded backend keeps what it delivered: a page.
        b.send(imgate_codec::frame::SyncR {
            group: 0,
            after: 0,
            limit: 10,
        });
        let stored = match b.frame() {
            Frame::SyncPage(p) => p.count,
            other => panic!("{kind:?}: expected a page, got {other:?}"),
        };
        assert_eq!(stored, u16::from(kind == BackendKind::Embedded), "{kind:?}");
        assert!(gw.shutdown());
    }
}
