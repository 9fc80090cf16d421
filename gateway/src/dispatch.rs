//! What one frame from a client does: the rate limit, the login, and the
//! routing of requests to the backend. Frame in, actions out: it changes
//! the connection's state and queues answers on it, and says in
//! [`Action`]s what the core must do (hand an event to the backend,
//! register a login, cancel a timer). No socket, no clock (the caller
//! passes both times), so unit tests drive it with a fake clock.

use std::{cell::Cell, sync::atomic::Ordering::Relaxed};

use imgate_codec::{
    Body, ErrorCode, Frame, KickReason, Kind,
    frame::{ErrorFrame, Login, Pong},
};

use crate::{
    backend::Inbound,
    config::Config,
    conn::{Closing, Conn, Phase},
    metrics::CoreMetrics,
    token::{TokenError, Verifier},
    wheel::TimerKey,
};

/// What the dispatch needs to know besides the frame.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) verifier: &'a dyn Verifier,
    pub(crate) metrics: &'a CoreMetrics,
    /// The core's clock, ms: the connection's last-seen stamp and its rate
    /// limit.
    pub(crate) now_ms: u64,
    /// The wall clock, Unix s: token expiry. Read only for a login, so
    /// other frames cost no clock read.
    pub(crate) unix_s: fn() -> u64,
    /// The core's queue to the backend is full: requests are refused with
    /// `overloaded` (it can change between two frames of one read).
    pub(crate) backlogged: &'a Cell<bool>,
    /// Devices refused at login whatever their token.
    pub(crate) revocations: &'a crate::revocations::Revocations,
}

/// What the core must do for a frame.
#[derive(Debug)]
pub(crate) enum Action {
    /// Hand this event to the backend.
    Backend(Inbound),
    /// The token checked out: register the connection as its (user,
    /// device), kicking an older connection of that device, arm its
    /// heartbeat and ask the backend to log it in.
    LoggedIn {
        /// The user.
        user: u64,
        /// The device.
        device: u32,
        /// The login's resume point.
        resume: u64,
    },
    /// The re-push timer has nothing left to watch: cancel it.
    CancelTimer(TimerKey),
}

/// Handles one decoded frame.
pub(crate) fn handle(cx: &Ctx<'_>, conn: &Conn, frame: Frame, out: &mut Vec<Action>) {
    let cfg = cx.cfg;
    cx.metrics.frames_in.fetch_add(1, Relaxed);
    conn.seen(cx.now_ms);
    if !conn
        .rate
        .take(cx.now_ms, cfg.max_frames_per_sec, cfg.frame_burst)
    {
        // Dropped, and said so; a client that keeps going is kicked.
        if conn.strike() > cfg.rate_limit_strikes {
            conn.close(Closing::Kick(KickReason::RateLimited));
        } else {
            refuse(
                conn,
                ErrorCode::RateLimited,
                Some(frame.kind()),
                frame.request_id(),
                "frame rate limit",
            );
        }
        return;
    }
    conn.clear_strikes();
    match conn.phase() {
        Phase::Login => login(cx, conn, frame, out),
        Phase::Pending | Phase::Active => active(cx, conn, frame, out),
    }
}

fn refuse(conn: &Conn, code: ErrorCode, kind: Option<Kind>, id: u64, text: &str) {
    conn.queue(ErrorFrame::new(code, kind, id, text).to_bytes());
}

fn login(cx: &Ctx<'_>, conn: &Conn, frame: Frame, out: &mut Vec<Action>) {
    let m = cx.metrics;
    let Frame::Login(login) = frame else {
        m.login_failures.fetch_add(1, Relaxed);
        refuse(
            conn,
            ErrorCode::NotLoggedIn,
            Some(frame.kind()),
            frame.request_id(),
            "log in first",
        );
        conn.close(Closing::Kick(KickReason::ProtocolError));
        return;
    };
    if let Err(e) = verify(cx, &login) {
        m.login_failures.fetch_add(1, Relaxed);
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::BadToken,
        };
        refuse(conn, code, Some(Kind::Login), 0, &e.to_string());
        conn.close(Closing::Flush);
        return;
    }
    let now_ms = (cx.unix_s)().saturating_mul(1000);
    if let Some(until) = cx.revocations.until(login.user, login.device, now_ms) {
        m.login_failures.fetch_add(1, Relaxed);
        let text = format!("device revoked until {until} (Unix ms)");
        refuse(conn, ErrorCode::DeviceRevoked, Some(Kind::Login), 0, &text);
        conn.close(Closing::Flush);
        return;
    }
    conn.authenticated(login.user, login.device);
    m.logins.fetch_add(1, Relaxed);
    if let Some(t) = m.transports.get(conn.transport_index()) {
        t.logins.fetch_add(1, Relaxed);
    }
    out.push(Action::LoggedIn {
        user: login.user,
        device: login.device,
        resume: login.resume,
    });
}

/// User ids are never 0 (0 means "none" in the fields that hold users),
/// whatever a verifier would say of the token.
fn verify(cx: &Ctx<'_>, login: &Login) -> Result<(), TokenError> {
    if login.user == 0 {
        return Err(TokenError::NoUser);
    }
    cx.verifier
        .verify(login.user, login.device, &login.token, (cx.unix_s)())
}

fn active(cx: &Ctx<'_>, conn: &Conn, frame: Frame, out: &mut Vec<Action>) {
    let (user, device) = conn.user();
    let (kind, id) = (frame.kind(), frame.request_id());
    match frame {
        Frame::Ping(p) => {
            conn.queue(Pong { nonce: p.nonce }.to_bytes());
        }
        Frame::Pong(_) => {}
        Frame::Logout(_) => conn.close(Closing::Now),
        Frame::Login(_) => refuse(
            conn,
            ErrorCode::AlreadyLoggedIn,
            Some(kind),
            id,
            "already logged in",
        ),
        Frame::MsgR(_)
        | Frame::AckR(_)
        | Frame::ReadR(_)
        | Frame::SyncR(_)
        | Frame::UnreadR(_)
        | Frame::GroupR(_)
        | Frame::ReceiptsR(_) => {
            if let Frame::AckR(a) = &frame
                && let Some(key) = conn.pushes.settle(a.group, a.seq)
            {
                out.push(Action::CancelTimer(key));
            }
            if cx.backlogged.get() {
                cx.metrics.overloaded.fetch_add(1, Relaxed);
                refuse(conn, ErrorCode::Overloaded, Some(kind), id, "try again");
                return;
            }
            out.push(Action::Backend(Inbound::Frame {
                conn: conn.id,
                user,
                device,
                frame,
            }));
        }
        // Frames only a server sends.
        Frame::LoginOk(_)
        | Frame::Kick(_)
        | Frame::Error(_)
        | Frame::MsgA(_)
        | Frame::MsgN(_)
        | Frame::AckA(_)
        | Frame::AckN(_)
        | Frame::ReadA(_)
        | Frame::ReadN(_)
        | Frame::SyncPage(_)
        | Frame::UnreadA(_)
        | Frame::GroupA(_)
        | Frame::ReceiptsA(_) => {
            cx.metrics.protocol_errors.fetch_add(1, Relaxed);
            refuse(
                conn,
                ErrorCode::InvalidRequest,
                Some(kind),
                0,
                "a server-to-client frame",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use imgate_codec::{
        Decoder,
        frame::{AckR, MsgN, MsgR, Ping},
    };

    use super::*;
    use crate::{backend::Track, conn_id::ConnId, token::HmacVerifier};

    const SECRET: &[u8] = b"dispatch-test";
    const NOW_S: u64 = 1_000_000;

    struct Bench {
        cfg: Config,
        verifier: HmacVerifier,
        metrics: CoreMetrics,
        backlogged: Cell<bool>,
        revocations: crate::revocations::Revocations,
        conn: Conn,
    }

    impl Bench {
        fn new(f: impl FnOnce(&mut Config)) -> Bench {
            let mut cfg = Config::default();
            f(&mut cfg);
            let conn = Conn::new(ConnId::new(0, 1, 1), cfg.frame_burst, 0);
            Bench {
                cfg,
                verifier: HmacVerifier::new(SECRET),
                metrics: CoreMetrics::default(),
                backlogged: Cell::new(false),
                revocations: Default::default(),
                conn,
            }
        }

        /// Handles `frame` at `now_ms`; returns the actions and the frames
        /// queued on the connection.
        fn feed(&self, now_ms: u64, frame: impl Into<Frame>) -> (Vec<Action>, Vec<Frame>) {
            let cx = Ctx {
                cfg: &self.cfg,
                verifier: &self.verifier,
                metrics: &self.metrics,
                now_ms,
                unix_s: || NOW_S,
                backlogged: &self.backlogged,
                revocations: &self.revocations,
            };
            let mut out = Vec::new();
            handle(&cx, &self.conn, frame.into(), &mut out);
            let mut bytes = BytesMut::new();
            for b in self.conn.out().drain(..) {
                bytes.extend_from_slice(&b);
            }
            let dec = Decoder::default();
            let mut frames = Vec::new();
            while let Some(f) = dec.decode(&mut bytes).expect("the server's frames decode") {
                frames.push(f);
            }
            (out, frames)
        }

        fn login(&self, user: u64, expiry: u64) -> (Vec<Action>, Vec<Frame>) {
            let token = self.verifier.mint(user, 1, expiry);
            self.feed(
                0,
                Login {
                    user,
                    device: 1,
                    resume: 5,
                    token: Bytes::from(token),
                },
            )
        }
    }

    fn error(f: &Frame) -> (ErrorCode, Option<Kind>, u64) {
        match f {
            Frame::Error(e) => (e.code(), e.ref_kind(), e.ref_id),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_login_asks_the_core_to_register_it() {
        let b = Bench::new(|_| {});
        let (actions, frames) = b.login(7, NOW_S + 60);
        assert!(frames.is_empty(), "{frames:?}");
        assert!(matches!(
            actions.as_slice(),
            [Action::LoggedIn {
                user: 7,
                device: 1,
                resume: 5
            }]
        ));
        assert_eq!(b.conn.phase(), Phase::Pending);
        assert_eq!(b.conn.user(), (7, 1));
    }

    #[test]
    fn a_revoked_device_is_refused_with_a_valid_token_until_the_time() {
        use crate::revocations::Revocation;
        let b = Bench::new(|_| {});
        b.revocations.set(Revocation {
            user: 7,
            device: 1,
            until: NOW_S * 1000 + 1,
        });
        let (actions, frames) = b.login(7, NOW_S + 60);
        assert!(actions.is_empty());
        assert_eq!(
            error(&frames[0]),
            (ErrorCode::DeviceRevoked, Some(Kind::Login), 0)
        );
        assert_eq!(b.conn.closing(), Some(Closing::Flush));
        let b = Bench::new(|_| {});
        b.revocations.set(Revocation {
            user: 7,
            device: 1,
            until: NOW_S * 1000,
        });
        let (actions, _) = b.login(7, NOW_S + 60);
        assert_eq!(actions.len(), 1, "over: logs in");
    }

    #[test]
    fn expiry_is_judged_on_the_clock_given() {
        let b = Bench::new(|_| {});
        let (actions, frames) = b.login(7, NOW_S);
        assert!(actions.is_empty());
        assert_eq!(
            error(&frames[0]),
            (ErrorCode::TokenExpired, Some(Kind::Login), 0)
        );
        assert_eq!(b.conn.closing(), Some(Closing::Flush));
    }

    #[test]
    fn user_0_is_refused_whatever_the_verifier_says() {
        let b = Bench::new(|_| {});
        let (actions, frames) = b.login(0, NOW_S + 60);
        assert!(actions.is_empty());
        assert_eq!(
            error(&frames[0]),
            (ErrorCode::BadToken, Some(Kind::Login), 0)
        );
    }

    #[test]
    fn a_request_before_login_is_refused_naming_it() {
        let b = Bench::new(|_| {});
        let (actions, frames) = b.feed(0, Ping { nonce: 9 });
        assert!(actions.is_empty());
        assert_eq!(
            error(&frames[0]),
            (ErrorCode::NotLoggedIn, Some(Kind::Ping), 9)
        );
        assert_eq!(
            b.conn.closing(),
            Some(Closing::Kick(KickReason::ProtocolError))
        );
    }

    #[test]
    fn the_rate_limit_refuses_then_kicks_and_refills_with_time() {
        let b = Bench::new(|c| {
            c.max_frames_per_sec = 10;
            c.frame_burst = 3;
            c.rate_limit_strikes = 2;
        });
        b.login(7, NOW_S + 60);
        // Two tokens left after the login.
        for n in 0..2 {
            let (_, f) = b.feed(0, Ping { nonce: n });
            assert!(matches!(f.as_slice(), [Frame::Pong(_)]));
        }
        let (_, f) = b.feed(0, Ping { nonce: 2 });
        assert_eq!(error(&f[0]), (ErrorCode::RateLimited, Some(Kind::Ping), 2));
        // 100 ms at 10/s is one token: answered, and the strikes reset.
        let (_, f) = b.feed(100, Ping { nonce: 3 });
        assert!(matches!(f.as_slice(), [Frame::Pong(_)]));
        for n in 4..6 {
            let (_, f) = b.feed(100, Ping { nonce: n });
            assert_eq!(error(&f[0]).0, ErrorCode::RateLimited);
        }
        assert!(!b.conn.is_closing());
        b.feed(100, Ping { nonce: 6 });
        assert_eq!(
            b.conn.closing(),
            Some(Closing::Kick(KickReason::RateLimited))
        );
        assert_eq!(b.conn.last_seen(), 100);
    }

    #[test]
    fn requests_go_to_the_backend_unless_it_is_backlogged() {
        let b = Bench::new(|_| {});
        b.login(7, NOW_S + 60);
        let msg = MsgR {
            no_push: false,
            msg_id: 4,
            group: 0,
            to: 8,
            retry: false,
            body: Bytes::from_static(b"x"),
        };
        let (a, f) = b.feed(1, msg.clone());
        assert!(f.is_empty());
        assert!(matches!(
            a.as_slice(),
            [Action::Backend(Inbound::Frame { user: 7, .. })]
        ));
        b.backlogged.set(true);
        let (a, f) = b.feed(2, msg);
        assert!(a.is_empty());
        assert_eq!(error(&f[0]), (ErrorCode::Overloaded, Some(Kind::MsgR), 4));
    }

    #[test]
    fn an_ack_that_settles_every_push_cancels_the_timer() {
        let b = Bench::new(|_| {});
        b.login(7, NOW_S + 60);
        let push = MsgN {
            group: 0,
            seq: 3,
            from: 8,
            to: 7,
            msg_id: 1,
            server_time: 0,
            retry: false,
            body: Bytes::new(),
        };
        assert!(
            b.conn
                .pushes
                .track(Track { group: 0, seq: 3 }, push.to_bytes())
        );
        let key = crate::wheel::Wheel::new(8).insert(1, ());
        b.conn.pushes.set_timer(Some(key));
        let (a, _) = b.feed(1, AckR { group: 0, seq: 3 });
        assert!(matches!(a.as_slice(), [Action::CancelTimer(k), Action::Backend(_)] if *k == key));
    }

    #[test]
    fn a_server_frame_from_a_client_is_refused_and_the_session_goes_on() {
        let b = Bench::new(|_| {});
        b.login(7, NOW_S + 60);
        let (a, f) = b.feed(1, imgate_codec::frame::AckA { group: 0, seq: 1 });
        assert!(a.is_empty());
        assert_eq!(
            error(&f[0]),
            (ErrorCode::InvalidRequest, Some(Kind::AckA), 0)
        );
        assert!(!b.conn.is_closing());
    }
}
