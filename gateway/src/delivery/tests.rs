//! The delivery logic without sockets: events in, the frames it would send
//! out, on a manual clock and the in-memory store. The router's mailbox is
//! read back instead of a core.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Decoder, ErrorCode, Frame, Kind,
    frame::{MsgA, MsgR, ReadR},
};

use super::Delivery;
use crate::{
    backend::{Backend, CoreMsg, Inbound, Outbound, Router},
    clock::ManualClock,
    config::Config,
    conn_id::ConnId,
    mailbox::{MailboxRx, mailbox},
    registry::Registry,
    store::MemoryStore,
};

const T0: u64 = 1_800_000_000_000;

/// A backend on a manual clock, and what it sends, per connection.
struct Harness {
    backend: Delivery,
    router: Router,
    rx: MailboxRx<CoreMsg>,
    registry: Arc<Registry>,
    clock: ManualClock,
}

impl Harness {
    fn new(f: impl FnOnce(&mut Config)) -> Harness {
        let mut cfg = Config::default();
        f(&mut cfg);
        let clock = ManualClock::at(T0);
        let backend = Delivery::with_clock(
            Box::new(MemoryStore::default()),
            &cfg,
            Arc::new(clock.clone()),
        )
        .expect("backend");
        let (tx, rx) = mailbox();
        let registry = Arc::new(Registry::new(1));
        Harness {
            backend,
            router: Router::new(vec![tx], registry.clone()),
            rx,
            registry,
            clock,
        }
    }

    /// A logged-in connection of `user` (device 1).
    fn login(&mut self, user: u64) -> ConnId {
        let conn = ConnId::new(0, user as u32, 1);
        self.registry.login(user, 1, conn);
        self.handle(Inbound::Login {
            conn,
            user,
            device: 1,
            resume: 0,
        });
        conn
    }

    /// Handles one event; returns every frame sent, with its connection.
    fn handle(&mut self, ev: Inbound) -> Vec<(ConnId, Frame)> {
        let mut batch = vec![ev];
        self.backend.handle(&mut batch, &mut self.router);
        self.router.flush();
        let mut msgs = Vec::new();
        self.rx.try_drain(&mut msgs);
        let mut out = Vec::new();
        for m in msgs {
            let CoreMsg::Out(outs) = m else { continue };
            for o in outs {
                if let Outbound::Send { conn, bytes, .. } = o {
                    let mut b = BytesMut::from(&bytes[..]);
                    while let Some(f) = Decoder::default().decode(&mut b).expect("decodes") {
                        out.push((conn, f));
                    }
                }
            }
        }
        out
    }

    fn request(
        &mut self,
        conn: ConnId,
        user: u64,
        frame: impl Into<Frame>,
    ) -> Vec<(ConnId, Frame)> {
        self.handle(Inbound::Frame {
            conn,
            user,
            device: 1,
            frame: frame.into(),
        })
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

fn msg_a(frames: &[(ConnId, Frame)], conn: ConnId) -> MsgA {
    frames
        .iter()
        .find_map(|(c, f)| match f {
            Frame::MsgA(a) if *c == conn => Some(*a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no msg:A in {frames:?}"))
}

fn error(frames: &[(ConnId, Frame)]) -> (ErrorCode, Option<Kind>, u64) {
    match frames {
        [(_, Frame::Error(e))] => (e.code(), e.ref_kind(), e.ref_id),
        other => panic!("expected one error, got {other:?}"),
    }
}

#[test]
fn a_message_is_stamped_with_the_clock_and_pushed_to_the_receiver() {
    let mut h = Harness::new(|_| {});
    let (a, b) = (h.login(1), h.login(2));
    let out = h.request(a, 1, msg(5, 2, b"hi"));
    let ack = msg_a(&out, a);
    assert_eq!(
        (ack.msg_id, ack.seq, ack.own_seq, ack.server_time),
        (5, 1, 1, T0)
    );
    let pushed: Vec<_> = out.iter().filter(|(c, _)| *c == b).collect();
    assert!(
        matches!(pushed.as_slice(), [(_, Frame::MsgN(n))] if n.seq == 1 && n.from == 1 && &n.body[..] == b"hi"),
        "{out:?}"
    );
}

#[test]
fn the_dedup_window_is_judged_on_the_clock() {
    let mut h = Harness::new(|c| c.dedup_window_ms = 1_000);
    let (a, _) = (h.login(1), h.login(2));
    let first = msg_a(&h.request(a, 1, msg(5, 2, b"hi")), a);
    h.clock.advance(1_000);
    let again = h.request(
        a,
        1,
        MsgR {
            retry: true,
            ..msg(5, 2, b"hi")
        },
    );
    assert_eq!(again.len(), 1, "only the answer, nothing pushed: {again:?}");
    assert_eq!(msg_a(&again, a), first, "the last ms of the window");
    h.clock.advance(1);
    let later = msg_a(&h.request(a, 1, msg(5, 2, b"hi")), a);
    assert_eq!(
        (later.seq, later.server_time),
        (2, T0 + 1_001),
        "a new message"
    );
}

#[test]
fn a_reused_msg_id_is_refused_and_stores_nothing() {
    let mut h = Harness::new(|_| {});
    let (a, _) = (h.login(1), h.login(2));
    msg_a(&h.request(a, 1, msg(5, 2, b"hi")), a);
    let out = h.request(a, 1, msg(5, 3, b"hi"));
    assert_eq!(error(&out), (ErrorCode::MsgIdReused, Some(Kind::MsgR), 5));
    let next = msg_a(&h.request(a, 1, msg(6, 3, b"hi")), a);
    assert_eq!(
        next.seq, 1,
        "user 3's inbox got nothing from the refused one"
    );
}

#[test]
fn read_receipts_go_only_to_peers_that_wrote() {
    let mut h = Harness::new(|_| {});
    let (a, b, _c) = (h.login(1), h.login(2), h.login(3));
    h.request(a, 1, msg(5, 2, b"hi"));
    let refused = h.request(
        b,
        2,
        ReadR {
            group: 0,
            peer: 3,
            seq: 1,
        },
    );
    assert_eq!(
        error(&refused),
        (ErrorCode::Forbidden, Some(Kind::ReadR), 0)
    );
    let out = h.request(
        b,
        2,
        ReadR {
            group: 0,
            peer: 1,
            seq: 1,
        },
    );
    assert!(
        out.iter()
            .any(|(c, f)| *c == a && matches!(f, Frame::ReadN(n) if n.reader == 2 && n.seq == 1)),
        "{out:?}"
    );
}

/// A store whose writes fail while `fail` is set.
struct Flaky {
    inner: Arc<MemoryStore>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::store::Store for Flaky {
    fn write(&self, b: &crate::store::WriteBatch) -> Result<(), crate::store::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::store::StoreError::Engine("disk gone".into()));
        }
        self.inner.write(b)
    }

    fn get(
        &self,
        t: crate::store::Table,
        k: &[u8],
    ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.inner.get(t, k)
    }

    fn scan(
        &self,
        t: crate::store::Table,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.scan(t, from, to, f)
    }
}

#[test]
fn a_presence_event_survives_a_failed_commit_and_a_failing_store() {
    use crate::store::{Store, Table};
    let inner = Arc::new(MemoryStore::default());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut cfg = Config::default();
    cfg.events.url = "http://127.0.0.1:1/".into();
    cfg.events.secret = "s".into();
    let clock = ManualClock::at(T0);
    let store = Flaky {
        inner: inner.clone(),
        fail: fail.clone(),
    };
    let backend =
        Delivery::with_clock(Box::new(store), &cfg, Arc::new(clock.clone())).expect("backend");
    let (tx, rx) = mailbox();
    let registry = Arc::new(Registry::new(1));
    let mut h = Harness {
        backend,
        router: Router::new(vec![tx], registry.clone()),
        rx,
        registry,
        clock,
    };
    let events = || {
        let mut v = Vec::new();
        inner
            .scan(Table::Event, &[], &[0xff; 9], &mut |_, j| {
                let e: serde_json::Value = serde_json::from_slice(j).expect("json");
                v.push((
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["user"].as_u64(),
                ));
                true
            })
            .expect("scan");
        v
    };
    let conn = h.login(2);
    assert_eq!(events(), [("online".to_string(), Some(2))]);
    // The close's batch fails, then the store refuses everything.
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    h.handle(Inbound::Closed {
        conn,
        user: 2,
        device: 1,
    });
    assert_eq!(events().len(), 1);
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // The store recovers at the next disk check past its retry time; the
    // offline event is written then.
    for _ in 0..40 {
        h.clock.advance(1000);
        h.backend.tick(std::time::Instant::now(), &mut h.router);
    }
    assert_eq!(
        events(),
        [
            ("online".to_string(), Some(2)),
            ("offline".to_string(), Some(2))
        ]
    );
}
