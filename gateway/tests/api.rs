//! The server API over real HTTP against the real binary: a send from a
//! user reaches an online receiver and is pulled by an offline one, a
//! retried send is one copy, a batch to several users, and the refusals
//! (auth, bad JSON, a body too large, a batch too large, a reused key).

mod common;

use std::{ffi::OsString, time::Duration};

use common::{
    Client,
    process::{Gateway, free_port},
};
use imgate_codec::Frame;
use serde_json::{Value, json};

const TOKEN: &str = "api-token";

struct Api {
    gw: Gateway,
    http: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Api {
    fn start() -> Api {
        Api::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Api {
        let http_port = free_port();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("imgate-api-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args: Vec<OsString> = [
            "--metrics-listen",
            &format!("127.0.0.1:{http_port}"),
            "--admin-token",
            TOKEN,
            "--secret",
            common::SECRET,
            "--workers",
            "2",
            "--max-frame",
            "4096",
            "--api-batch-max",
            "3",
            "--data-dir",
        ]
        .iter()
        .map(OsString::from)
        .chain([dir.clone().into_os_string()])
        .chain(extra.iter().map(OsString::from))
        .collect();
        let gw = Gateway::spawn(free_port(), args, None, Duration::from_secs(20));
        Api {
            gw,
            http: ([127, 0, 0, 1], http_port).into(),
            dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.gw.port).into()
    }

    /// POSTs `body` to `path`: the status and the JSON answer.
    fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let (status, text) =
            imgate::http::request_with(self.http, "POST", path, token, Some(body)).expect("http");
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    fn send(&self, body: Value) -> (u16, Value) {
        self.post("/api/v1/messages", &body.to_string(), Some(TOKEN))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The messages in `c`'s inbox: (from, body) in order.
fn inbox(c: &mut Client, head: u64) -> Vec<(u64, String)> {
    use common::FrameClient;
    c.send_frame(
        imgate_codec::frame::SyncR {
            group: 0,
            after: 0,
            limit: 100,
        }
        .into(),
    );
    match c.next_frame() {
        Frame::SyncPage(p) => {
            assert_eq!(p.head, head);
            p.entries()
                .map(|e| (e.from, String::from_utf8_lossy(&e.body).into_owned()))
                .collect()
        }
        other => panic!("expected a page, got {other:?}"),
    }
}

#[test]
fn a_send_is_stored_pushed_pulled_and_one_copy_on_retry() {
    let api = Api::start();
    let mut bob = Client::login(api.addr(), 2, 1);
    let msg = json!({"from": 1, "to": 2, "key": "order-42-shipped", "body": "your order shipped"});
    let (status, sent) = api.send(msg.clone());
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["seq"], 1, "{sent}");
    assert_eq!(sent["own_seq"], 1, "{sent}");
    assert_eq!(
        sent["msg_id"],
        imgate::api::msg_id("order-42-shipped"),
        "{sent}"
    );
    match bob.frame() {
        Frame::MsgN(n) => {
            assert_eq!((n.from, n.seq), (1, 1));
            assert_eq!(&n.body[..], b"your order shipped");
        }
        other => panic!("expected msg:N, got {other:?}"),
    }
    // The same key again: the same answer, no second copy.
    let (status, again) = api.send(msg);
    assert_eq!((status, &again), (200, &sent));
    assert_eq!(inbox(&mut bob, 1), vec![(1, "your order shipped".into())]);
    // The same key with another message.
    let (status, reused) =
        api.send(json!({"from": 1, "to": 2, "key": "order-42-shipped", "body": "something else"}));
    assert_eq!(status, 409, "{reused}");
    assert_eq!(reused["error"], "msg_id_reused");

    // Carol is offline; she pulls it when she comes.
    let (status, sent) =
        api.send(json!({"from": 1, "to": 3, "key": "welcome-3", "body_base64": "aGk="}));
    assert_eq!((status, &sent["seq"]), (200, &json!(1)), "{sent}");
    let mut carol = Client::login(api.addr(), 3, 1);
    assert_eq!(inbox(&mut carol, 1), vec![(1, "hi".into())]);
}

#[test]
fn a_system_senders_own_copies_go_and_the_receiver_keeps_the_message() {
    let api = Api::start_with(&["--purge-interval-ms", "10"]);
    let (status, sent) = api.send(json!({"from": 99, "to": 2, "key": "n-1", "body": "notice"}));
    assert_eq!((status, &sent["own_seq"]), (200, &json!(1)), "{sent}");
    // Many purge steps later: 99 has no device, so its own copy went.
    std::thread::sleep(Duration::from_millis(300));
    let mut sys = Client::login(api.addr(), 99, 1);
    assert!(inbox(&mut sys, 1).is_empty(), "the own copy is gone");
    let mut bob = Client::login(api.addr(), 2, 1);
    assert_eq!(inbox(&mut bob, 1), vec![(99, "notice".to_string())]);
}

#[test]
fn a_batch_sends_one_message_to_each_once() {
    let api = Api::start();
    let batch = json!({"from": 9, "to": [4, 5, 6], "key": "maintenance-1", "body": "down at 2am"});
    let path = "/api/v1/messages/batch";
    let (status, first) = api.post(path, &batch.to_string(), Some(TOKEN));
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["sent"].clone(), first["failed"].clone()),
        (json!(3), json!(0))
    );
    let (status, again) = api.post(path, &batch.to_string(), Some(TOKEN));
    assert_eq!(
        (status, &again),
        (200, &first),
        "a retried batch is the same batch"
    );
    for user in [4, 5, 6] {
        let mut c = Client::login(api.addr(), user, 1);
        assert_eq!(
            inbox(&mut c, 1),
            vec![(9, "down at 2am".into())],
            "user {user}"
        );
    }
    // Over api_batch_max (3 here).
    let big = json!({"from": 9, "to": [4, 5, 6, 7], "key": "k", "body": "x"});
    let (status, e) = api.post(path, &big.to_string(), Some(TOKEN));
    assert_eq!((status, &e["error"]), (400, &json!("bad_receiver")), "{e}");
}

#[test]
fn bad_requests_get_a_4xx_with_a_json_error_and_store_nothing() {
    let api = Api::start();
    let good = json!({"from": 1, "to": 2, "key": "k", "body": "x"}).to_string();
    let path = "/api/v1/messages";
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, good.clone(), 401, "unauthorized"),
        (Some("wrong"), good.clone(), 401, "unauthorized"),
        (Some(TOKEN), "{not json".into(), 400, "bad_json"),
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "k", "body": "x", "extra": 1}).to_string(),
            400,
            "bad_json",
        ),
        (
            Some(TOKEN),
            json!({"from": 0, "to": 2, "key": "k", "body": "x"}).to_string(),
            400,
            "bad_sender",
        ),
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "group": 5, "key": "k", "body": "x"}).to_string(),
            400,
            "bad_receiver",
        ),
        (
            Some(TOKEN),
            json!({"from": 1, "key": "k", "body": "x"}).to_string(),
            400,
            "bad_receiver",
        ),
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "", "body": "x"}).to_string(),
            400,
            "bad_key",
        ),
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "k"}).to_string(),
            400,
            "bad_body",
        ),
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "k", "body_base64": "***"}).to_string(),
            400,
            "bad_body",
        ),
        // max_frame is 4096 here.
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "k", "body": "x".repeat(5000)}).to_string(),
            413,
            "body_too_large",
        ),
        // Over the HTTP body limit.
        (
            Some(TOKEN),
            json!({"from": 1, "to": 2, "key": "k", "body": "x".repeat(70_000)}).to_string(),
            413,
            "bad_json",
        ),
    ];
    for (token, body, status, code) in cases {
        let (got, v) = api.post(path, &body, token);
        assert_eq!((got, v["error"].as_str()), (status, Some(code)), "{v}");
        assert!(v["message"].is_string(), "{v}");
    }
    // A group the sender is not in.
    let (got, v) = api.send(json!({"from": 1, "group": 77, "key": "g", "body": "x"}));
    assert!((400..500).contains(&got), "{got} {v}");
    // Nothing reached user 2.
    let mut c = Client::login(api.addr(), 2, 1);
    assert_eq!(inbox(&mut c, 0), vec![]);
}

#[test]
fn a_send_works_on_the_cluster_backend() {
    use common::Gw;
    let start = |f: &dyn Fn(&mut imgate::config::Config)| {
        Gw::cluster(|c| {
            c.metrics_listen = Some(([127, 0, 0, 1], 0).into());
            c.admin_token = TOKEN.into();
            f(c);
        })
    };
    let Some(a) = start(&|c| c.cluster.node_id = "api-a".into()) else {
        return;
    };
    let mut bob = Client::login(a.addr(), 2, 1);
    let body = json!({"from": 1, "to": 2, "key": "cluster-1", "body": "from the API"}).to_string();
    let post = |body: &str| {
        let (status, text) = imgate::http::request_with(
            a.metrics_addr(),
            "POST",
            "/api/v1/messages",
            Some(TOKEN),
            Some(body),
        )
        .expect("http");
        (status, serde_json::from_str::<Value>(&text).expect("json"))
    };
    let (status, sent) = post(&body);
    assert_eq!((status, &sent["seq"]), (200, &json!(1)), "{sent}");
    match bob.frame() {
        Frame::MsgN(n) => assert_eq!((n.from, &n.body[..]), (1, &b"from the API"[..])),
        other => panic!("expected msg:N, got {other:?}"),
    }
    let (status, again) = post(&body);
    assert_eq!((status, &again), (200, &sent), "one copy on retry");
}

/// A group:R from a client: the error code it gets, if any.
fn client_group_op(
    c: &mut Client,
    op: imgate_codec::frame::GroupOp,
    group: u64,
    ids: &[u64],
) -> Frame {
    c.send(
        imgate_codec::frame::GroupR {
            req: 5,
            op: op as u8,
            group,
            members: bytes::Bytes::new(),
        }
        .with_members(ids),
    );
    c.frame()
}

/// Groups managed by the server API alone (`group_admin = "api"`), and
/// a notice to a group from a system sender id that is not a member.
fn groups_managed_by_the_api(addr: std::net::SocketAddr, http: std::net::SocketAddr) {
    use imgate_codec::{ErrorCode, frame::GroupOp};
    let call = |method: &str, path: &str, body: Option<Value>| {
        let body = body.map(|b| b.to_string());
        let (status, text) =
            imgate::http::request_with(http, method, path, Some(TOKEN), body.as_deref())
                .expect("http");
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    };
    let (status, g) = call("POST", "/api/v1/groups", Some(json!({"members": [11, 12]})));
    assert_eq!(status, 200, "{g}");
    assert_eq!(
        (g["total"].clone(), g["members"].clone()),
        (json!(2), json!([11, 12])),
        "{g}"
    );
    let id = g["group"].as_u64().expect("an id");
    let members = format!("/api/v1/groups/{id}/members");
    // A member cannot change the membership; it may list.
    let mut m11 = Client::login(addr, 11, 1);
    match client_group_op(&mut m11, GroupOp::Add, id, &[13]) {
        Frame::Error(e) => assert_eq!(e.code(), ErrorCode::Forbidden),
        other => panic!("expected forbidden, got {other:?}"),
    }
    match client_group_op(&mut m11, GroupOp::List, id, &[]) {
        Frame::GroupA(a) => assert_eq!(a.total, 2),
        other => panic!("expected group:A, got {other:?}"),
    }
    let (status, added) = call("POST", &members, Some(json!({"add": [13]})));
    assert_eq!(
        (status, added["members"].clone(), added["total"].clone()),
        (200, json!([13]), json!(3)),
        "{added}"
    );
    let (status, list) = call("GET", &members, None);
    assert_eq!(
        (status, list["members"].clone()),
        (200, json!([11, 12, 13])),
        "{list}"
    );
    let (status, page) = call("GET", &format!("{members}?after=11"), None);
    assert_eq!(
        (status, page["members"].clone()),
        (200, json!([12, 13])),
        "{page}"
    );
    // A system sender that is no member posts to the group.
    let mut m12 = Client::login(addr, 12, 1);
    let (status, sent) = call(
        "POST",
        "/api/v1/messages",
        Some(json!({"from": 99, "group": id, "key": "g-notice-1", "body": "meeting at 3"})),
    );
    assert_eq!(status, 200, "{sent}");
    match m12.frame() {
        Frame::MsgN(n) => assert_eq!(
            (n.group, n.from, &n.body[..]),
            (id, 99, &b"meeting at 3"[..])
        ),
        other => panic!("expected msg:N, got {other:?}"),
    }
    let (status, removed) = call("POST", &members, Some(json!({"remove": [11]})));
    assert_eq!(
        (status, removed["total"].clone()),
        (200, json!(2)),
        "{removed}"
    );
    // Refusals.
    let (status, e) = call("POST", &members, Some(json!({"add": [1], "remove": [2]})));
    assert_eq!(
        (status, e["error"].clone()),
        (400, json!("bad_members")),
        "{e}"
    );
    let (status, e) = call("POST", "/api/v1/groups", Some(json!({"members": []})));
    assert_eq!(
        (status, e["error"].clone()),
        (400, json!("bad_members")),
        "{e}"
    );
    let (status, e) = call("GET", "/api/v1/groups/987654/members", None);
    assert_eq!(
        (status, e["error"].clone()),
        (404, json!("not_found")),
        "{e}"
    );

    // Roles: a group created for an owner, an admin, a handover, a delete.
    let (status, g) = call(
        "POST",
        "/api/v1/groups",
        Some(json!({"members": [22], "owner": 21})),
    );
    assert_eq!(
        (status, g["members"].clone()),
        (200, json!([21, 22])),
        "{g}"
    );
    let id = g["group"].as_u64().expect("an id");
    let admins = format!("/api/v1/groups/{id}/admins");
    let (status, r) = call("GET", &admins, None);
    assert_eq!(
        (status, r["owner"].clone(), r["admins"].clone()),
        (200, json!(21), json!([])),
        "{r}"
    );
    let (status, r) = call("POST", &admins, Some(json!({"add": [22, 23]})));
    assert_eq!((status, r["members"].clone()), (200, json!([22])), "{r}");
    let owner = format!("/api/v1/groups/{id}/owner");
    let (status, r) = call("PUT", &owner, Some(json!({"owner": 22})));
    assert_eq!(
        (status, r["members"].clone()),
        (200, json!([21, 22])),
        "{r}"
    );
    let (status, r) = call("GET", &admins, None);
    assert_eq!(
        (status, r["owner"].clone(), r["admins"].clone()),
        (200, json!(22), json!([21])),
        "{r}"
    );
    let (status, e) = call("PUT", &owner, Some(json!({"owner": 99})));
    assert_eq!(
        (status, e["error"].clone()),
        (400, json!("invalid_request")),
        "{e}"
    );
    let (status, r) = call("DELETE", &format!("/api/v1/groups/{id}"), None);
    assert_eq!((status, r["total"].clone()), (200, json!(0)), "{r}");
    for (method, path) in [
        ("GET", format!("/api/v1/groups/{id}/members")),
        ("DELETE", format!("/api/v1/groups/{id}")),
    ] {
        let (status, e) = call(method, &path, None);
        assert_eq!(
            (status, e["error"].clone()),
            (404, json!("not_found")),
            "{e}"
        );
    }
}

#[test]
fn groups_are_managed_by_the_api_alone_when_configured() {
    let api = Api::start_with(&["--group-admin", "api"]);
    groups_managed_by_the_api(api.addr(), api.http);
}

#[test]
fn groups_are_managed_by_the_api_on_the_cluster_backend() {
    let Some(g) = common::Gw::cluster(|c| {
        c.metrics_listen = Some(([127, 0, 0, 1], 0).into());
        c.admin_token = TOKEN.into();
        c.group_admin = imgate::config::GroupAdmin::Api;
    }) else {
        return;
    };
    groups_managed_by_the_api(g.addr(), g.metrics_addr());
}

#[test]
fn presence_shows_sessions_with_transport_and_since_and_counts() {
    let api = Api::start();
    let before = imgate::unix_time().as_secs();
    let _a = Client::login(api.addr(), 2, 1);
    let _b = Client::login(api.addr(), 3, 1);
    let _c = Client::login(api.addr(), 3, 2);
    let get = |path: &str| {
        let (status, text) =
            imgate::http::request(api.http, "GET", path, Some(TOKEN)).expect("http");
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    };
    let (status, s) = get("/admin/sessions?user=3");
    assert_eq!(status, 200, "{s}");
    let sessions = s["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{s}");
    for (i, one) in sessions.iter().enumerate() {
        assert_eq!(one["device"], json!(i + 1), "{s}");
        assert_eq!(one["transport"], "tcp", "{s}");
        let since = one["since"].as_u64().expect("since");
        assert!(
            since >= before && since <= imgate::unix_time().as_secs(),
            "{s}"
        );
    }
    let (status, p) = get("/api/v1/presence");
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["users"].clone(), p["sessions"].clone()),
        (json!(2), json!(3)),
        "{p}"
    );
    assert_eq!(
        (p["connections"].clone(), p["by_transport"]["tcp"].clone()),
        (json!(3), json!(3)),
        "{p}"
    );
    assert_eq!(p["by_transport"]["tls"], json!(0), "{p}");
}

#[test]
fn presence_counts_every_node_on_the_cluster_backend() {
    let node = |name: &str| cluster_node("CENSUS", name);
    let (Some(a), Some(b)) = (node("census-a"), node("census-b")) else {
        return;
    };
    let _u2 = Client::login(a.addr(), 2, 1);
    let _u3 = Client::login(b.addr(), 3, 1);
    let _u3b = Client::login(b.addr(), 3, 2);
    let (status, text) =
        imgate::http::request(a.metrics_addr(), "GET", "/api/v1/presence", Some(TOKEN))
            .expect("http");
    let p: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["users"].clone(), p["sessions"].clone()),
        (json!(1), json!(1)),
        "{p}"
    );
    let c = &p["cluster"];
    assert_eq!(
        (
            c["nodes"].clone(),
            c["users"].clone(),
            c["sessions"].clone()
        ),
        (json!(2), json!(2), json!(3)),
        "{p}"
    );
    assert_eq!(c["by_transport"]["tcp"], json!(3), "{p}");
    let nodes: Vec<(Value, Value)> = p["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["node"].clone(), n["sessions"].clone()))
        .collect();
    assert_eq!(
        nodes,
        vec![(json!("census-a"), json!(1)), (json!("census-b"), json!(2))],
        "{p}"
    );
}

/// A login of `user`'s `device` with a valid token: the error code it gets,
/// or None for login:ok.
fn login_refusal(addr: std::net::SocketAddr, user: u64, device: u32) -> Option<u16> {
    let mut c = Client::connect(addr);
    c.send(imgate_codec::frame::Login {
        user,
        device,
        resume: 0,
        token: common::token(user, device),
    });
    match c.frame() {
        Frame::LoginOk(_) => None,
        Frame::Error(e) => Some(e.code),
        other => panic!("expected login:ok or an error, got {other:?}"),
    }
}

/// Revokes user 5's device 1 through `http`, then checks the kick, the
/// refused login and the list; returns the revocation's end.
fn revoke_device_1(
    http: std::net::SocketAddr,
    on: std::net::SocketAddr,
    other: std::net::SocketAddr,
) -> u64 {
    use imgate_codec::{ErrorCode, KickReason};
    let mut online = Client::login(on, 5, 1);
    let until = imgate::unix_time().as_millis() as u64 + 60_000;
    let body = json!({"user": 5, "device": 1, "until": until}).to_string();
    let (status, text) = imgate::http::request_with(
        http,
        "POST",
        "/api/v1/revocations",
        Some(TOKEN),
        Some(&body),
    )
    .expect("http");
    assert_eq!(status, 200, "{text}");
    let kicked = online.closed();
    assert!(
        kicked
            .iter()
            .any(|f| matches!(f, Frame::Kick(k) if k.reason() == KickReason::Revoked)),
        "{kicked:?}"
    );
    let revoked = Some(ErrorCode::DeviceRevoked.to_wire());
    assert_eq!(login_refusal(on, 5, 1), revoked, "a valid token is refused");
    assert_eq!(login_refusal(other, 5, 1), revoked, "on every node");
    assert_eq!(login_refusal(on, 5, 2), None, "another device logs in");
    let (status, text) =
        imgate::http::request(http, "GET", "/api/v1/revocations?user=5", Some(TOKEN))
            .expect("http");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        (status, v["revocations"].clone()),
        (200, json!([{"device": 1, "until": until}])),
        "{v}"
    );
    until
}

#[test]
fn a_revoked_device_is_kicked_refused_until_lifted_and_it_survives_a_restart() {
    use imgate_codec::ErrorCode;
    let mut api = Api::start();
    revoke_device_1(api.http, api.addr(), api.addr());
    api.gw.kill9();
    api.gw.start();
    let revoked = Some(ErrorCode::DeviceRevoked.to_wire());
    assert_eq!(login_refusal(api.addr(), 5, 1), revoked, "kept on disk");
    // Every device of a user, then lifted.
    let until = imgate::unix_time().as_millis() as u64 + 60_000;
    let (status, _) = api.post(
        "/api/v1/revocations",
        &json!({"user": 6, "until": until}).to_string(),
        Some(TOKEN),
    );
    assert_eq!(status, 200);
    assert_eq!(login_refusal(api.addr(), 6, 3), revoked);
    let (status, text) = imgate::http::request(
        api.http,
        "DELETE",
        "/api/v1/revocations?user=6",
        Some(TOKEN),
    )
    .expect("http");
    assert_eq!((status, text.trim()), (200, "{\"lifted\":true}"));
    assert_eq!(login_refusal(api.addr(), 6, 3), None);
    // Refusals.
    for (body, code) in [
        (json!({"user": 0, "until": until}), "bad_user"),
        (json!({"user": 7, "until": 1}), "bad_until"),
        (json!({"user": 7}), "bad_json"),
    ] {
        let (status, e) = api.post("/api/v1/revocations", &body.to_string(), Some(TOKEN));
        assert_eq!((status, e["error"].clone()), (400, json!(code)), "{e}");
    }
    let (status, _) = api.post(
        "/api/v1/revocations",
        &json!({"user": 7, "until": until}).to_string(),
        None,
    );
    assert_eq!(status, 401);
}

#[test]
fn a_revocation_reaches_every_node_on_the_cluster_backend() {
    let node = |name: &str| cluster_node("REVOKE", name);
    let (Some(a), Some(b)) = (node("revoke-a"), node("revoke-b")) else {
        return;
    };
    revoke_device_1(a.metrics_addr(), b.addr(), a.addr());
    drop(b);
    // A node started afterwards loads it from the meta bucket.
    let Some(c) = node("revoke-c") else { return };
    assert_eq!(
        login_refusal(c.addr(), 5, 1),
        Some(imgate_codec::ErrorCode::DeviceRevoked.to_wire())
    );
}

/// A cluster node named `name` with the server API on, sharing the stream
/// prefix `prefix` (plus this process's id) with the test's other nodes.
fn cluster_node(prefix: &str, name: &str) -> Option<common::Gw> {
    common::Gw::cluster(|c| {
        c.metrics_listen = Some(([127, 0, 0, 1], 0).into());
        c.admin_token = TOKEN.into();
        c.cluster.node_id = name.into();
        c.cluster.stream_prefix = format!("{prefix}{}", std::process::id());
    })
}
