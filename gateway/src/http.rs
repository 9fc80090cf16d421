//! The operator's HTTP endpoint: `/metrics`, `/healthz` and the admin path.
//!
//! An axum (hyper) server on a current-thread tokio runtime, on a thread of
//! its own: it serves a Prometheus scrape every few seconds and an
//! occasional admin request, so it must never run on a core. Request
//! bodies are capped at [`MAX_BODY`]; every error is a 4xx or 5xx with a
//! JSON body `{"error": code, "message": text}`.
//!
//! The admin path kicks connections (`POST /admin/kick?user=U[&device=D]`,
//! reason `admin`; the kick goes through the backend, which knows every
//! node) and lists a user's sessions (`GET /admin/sessions?user=U`; on a
//! backend that spans several gateways, the sessions on every node, each
//! with its node's name). It is off unless an admin token is configured,
//! and every admin request must carry it as `Authorization: Bearer <token>`:
//! the metrics address is often opened to a scraper, and a kick must not
//! be open with it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use imgate_codec::KickReason;
use serde::Deserialize;

use crate::{backend::CoreMsg, mailbox::MailboxTx, metrics::Metrics, registry::Registry};

/// Largest request body taken.
pub const MAX_BODY: usize = 64 * 1024;

/// How long the one-shot client waits.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// What the admin path acts on.
#[derive(Debug)]
pub struct Admin {
    /// The bearer token every admin request must carry.
    pub token: String,
    /// Who is online where.
    pub registry: Arc<Registry>,
    /// The cores' mailboxes: a kick goes to one, which hands it to the
    /// backend (holding the backend's queue here would keep the backend
    /// running after the cores stop).
    pub cores: Vec<MailboxTx<CoreMsg>>,
    /// The server API's limits.
    pub limits: crate::api::ApiLimits,
}

/// Everything the endpoint serves.
#[derive(Debug)]
pub struct Endpoint {
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The admin path; `None` when no admin token is configured.
    pub admin: Option<Admin>,
}

/// An error answer: a status and a JSON body with a code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The error's code, as in the JSON body.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

/// Serves `endpoint` on `addr` from a thread of its own; returns the bound
/// address (useful with port 0).
pub fn serve(addr: SocketAddr, endpoint: Endpoint) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let app = router(Arc::new(endpoint));
    std::thread::Builder::new()
        .name("imgate-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the HTTP endpoint cannot listen");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the HTTP endpoint stopped");
                }
            });
        })?;
    Ok(local)
}

/// The endpoint's routes.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/admin/kick", post(kick))
        .route("/admin/sessions", get(sessions))
        .route("/admin/backup", post(backup))
        .route("/api/v1/messages", post(crate::api::send))
        .route("/api/v1/messages/batch", post(crate::api::batch))
        .route("/api/v1/presence", get(presence))
        .route(
            "/api/v1/revocations",
            post(crate::api::revoke)
                .delete(crate::api::lift)
                .get(crate::api::list),
        )
        .route("/api/v1/groups", post(crate::api::create_group))
        .route("/api/v1/groups/{group}", delete(crate::api::delete_group))
        .route(
            "/api/v1/groups/{group}/members",
            post(crate::api::change_members).get(crate::api::list_members),
        )
        .route(
            "/api/v1/groups/{group}/admins",
            post(crate::api::change_admins).get(crate::api::list_roles),
        )
        .route(
            "/api/v1/groups/{group}/owner",
            put(crate::api::transfer_group),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed here",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(endpoint)
}

async fn metrics(State(e): State<Arc<Endpoint>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        e.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(e): State<Arc<Endpoint>>) -> Response {
    match e.metrics.health() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// The admin path's part of `e`, for a request that carries its token.
pub(crate) fn admin<'a>(e: &'a Endpoint, headers: &HeaderMap) -> Result<&'a Admin, ApiError> {
    let Some(admin) = &e.admin else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin path disabled: set admin_token to enable it",
        ));
    };
    if !authorized(headers, &admin.token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        ));
    }
    Ok(admin)
}

/// True if the `Authorization: Bearer <token>` header matches, compared in
/// time independent of where the first difference is.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.trim().strip_prefix("Bearer "))
        .any(|given| {
            let (a, b) = (given.trim().as_bytes(), token.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
}

/// The `user` and optional `device` of an admin or server API request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Target {
    pub(crate) user: u64,
    pub(crate) device: Option<u32>,
}

pub(crate) fn target(q: Result<Query<Target>, QueryRejection>) -> Result<Target, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text()))
}

/// Runs `f` with the backend's report on a blocking thread (the cluster
/// backend's answers wait for the other nodes or JetStream); None when
/// there is no report.
pub(crate) async fn with_report<T: Send + 'static>(
    e: &Arc<Endpoint>,
    f: impl FnOnce(&dyn crate::metrics::BackendReport) -> Option<T> + Send + 'static,
) -> Result<Option<T>, ApiError> {
    let e = e.clone();
    tokio::task::spawn_blocking(move || e.metrics.backend.get().and_then(|b| f(&**b)))
        .await
        .map_err(|err| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            )
        })
}

/// The user's sessions as JSON objects, off the runtime's thread: a
/// backend of several nodes asks the others and waits for them.
async fn sessions_of(e: &Arc<Endpoint>, t: &Target) -> Result<Vec<String>, ApiError> {
    let (e, user, device) = (e.clone(), t.user, t.device);
    tokio::task::spawn_blocking(move || {
        let Some(admin) = &e.admin else {
            return Ok(Vec::new());
        };
        admin.sessions(&Target { user, device }, &e.metrics)
    })
    .await
    .unwrap_or_else(|err| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
        ))
    })
}

impl Admin {
    /// Kicks the user's connections (only `device`'s, if set) on every
    /// node, through a core and the backend.
    pub(crate) fn kick(
        &self,
        user: u64,
        device: Option<u32>,
        reason: KickReason,
    ) -> Result<(), ApiError> {
        let sent = self.cores.first().is_some_and(|core| {
            core.send(CoreMsg::Kick {
                user,
                device,
                reason,
            })
        });
        if sent {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the backend is not taking requests",
            ))
        }
    }

    /// The user's sessions as JSON objects: on every node if the backend
    /// knows them, else on this one. It may block: see [`sessions_of`].
    fn sessions(&self, t: &Target, metrics: &Metrics) -> Result<Vec<String>, ApiError> {
        if let Some(found) = metrics
            .backend
            .get()
            .and_then(|b| b.sessions(t.user, t.device))
        {
            return found
                .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why));
        }
        Ok(self
            .registry
            .sessions_info(t.user, t.device)
            .iter()
            .map(|(d, c, info)| format!("{{{}}}", info.json_members(*d, *c)))
            .collect())
    }
}

async fn kick(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    q: Result<Query<Target>, QueryRejection>,
) -> Result<Response, ApiError> {
    let admin = admin(&e, &headers)?;
    let t = target(q)?;
    let sessions = sessions_of(&e, &t).await?;
    admin.kick(t.user, t.device, KickReason::Admin)?;
    tracing::info!(user = t.user, device = ?t.device, kicked = sessions.len(), "admin kick");
    Ok(json_text(format!("{{\"kicked\":{}}}\n", sessions.len())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupTo {
    /// The directory to create the copy in (empty or missing).
    dir: std::path::PathBuf,
}

/// `POST /admin/backup?dir=D`: an online copy of the embedded store.
async fn backup(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    q: Result<Query<BackupTo>, QueryRejection>,
) -> Result<Response, ApiError> {
    admin(&e, &headers)?;
    let to = q
        .map(|Query(b)| b.dir)
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text()))?;
    if !to.is_absolute() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_dir",
            "dir must be an absolute path (on the gateway's machine)",
        ));
    }
    if crate::store::occupied(&to) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_dir",
            format!("{} is not empty: name a new directory", to.display()),
        ));
    }
    let started = std::time::Instant::now();
    let dir = to.clone();
    let copied = with_report(&e, move |b| b.backup(&dir)).await?;
    match copied {
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_store",
            "this backend keeps no store of its own (the cluster backend's data is in JetStream: back up its streams and buckets with NATS)",
        )),
        Some(Err(why)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backup_failed",
            why,
        )),
        Some(Ok(entries)) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(dir = %to.display(), entries, secs, "backup written");
            Ok(Json(serde_json::json!({
                "dir": to.display().to_string(),
                "entries": entries,
                "seconds": secs,
            }))
            .into_response())
        }
    }
}

async fn sessions(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    q: Result<Query<Target>, QueryRejection>,
) -> Result<Response, ApiError> {
    admin(&e, &headers)?;
    let t = target(q)?;
    let list = sessions_of(&e, &t).await?;
    Ok(json_text(format!(
        "{{\"user\":{},\"sessions\":[{}]}}\n",
        t.user,
        list.join(",")
    )))
}

/// `GET /api/v1/presence`: this node's online users, sessions, and
/// connections by transport.
async fn presence(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = admin(&e, &headers)?;
    let (users, sessions) = admin.registry.counts();
    let by_transport: serde_json::Map<String, serde_json::Value> = e
        .metrics
        .connections_by_transport()
        .into_iter()
        .map(|(t, n)| (t.to_string(), n.into()))
        .collect();
    let mut answer = serde_json::json!({
        "users": users,
        "sessions": sessions,
        "connections": e.metrics.connections().max(0),
        "by_transport": by_transport,
    });
    if let Some(nodes) = census(&e).await? {
        let mut total = serde_json::json!({"nodes": nodes.len(), "users": 0, "sessions": 0});
        let mut by: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
        for n in &nodes {
            for k in ["users", "sessions"] {
                let sum = total[k].as_u64().unwrap_or(0) + n[k].as_u64().unwrap_or(0);
                total[k] = sum.into();
            }
            for (t, v) in n["by_transport"].as_object().into_iter().flatten() {
                let sum = by.get(t).and_then(|x| x.as_u64()).unwrap_or(0) + v.as_u64().unwrap_or(0);
                by.insert(t.clone(), sum.into());
            }
        }
        total["by_transport"] = by.into();
        answer["cluster"] = total;
        answer["nodes"] = nodes.into();
    }
    Ok(Json(answer))
}

/// Every node's online counts, if the backend spans several gateways (it
/// may block while it asks them: on a blocking thread, as sessions).
async fn census(e: &Arc<Endpoint>) -> Result<Option<Vec<serde_json::Value>>, ApiError> {
    let lines = with_report(e, |b| b.census()).await?;
    match lines {
        None => Ok(None),
        Some(Err(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            why,
        )),
        Some(Ok(lines)) => {
            let mut nodes: Vec<serde_json::Value> = lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
            Ok(Some(nodes))
        }
    }
}

/// A JSON body already serialised.
fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A one-shot request without a body (for `imgate kick` and tests): the
/// status code and body of the answer, whatever the status.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    request_with(addr, method, target, token, None)
}

/// A one-shot request with an optional JSON body.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CLIENT_DEADLINE))
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{target}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let answer = match json {
        Some(body) => {
            let req = req
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .map_err(|e| other(&e))?;
            agent.run(req)
        }
        None => agent.run(req.body(()).map_err(|e| other(&e))?),
    };
    let mut answer = answer.map_err(|e| other(&e))?;
    let status = answer.status().as_u16();
    let body = answer.body_mut().read_to_string().map_err(|e| other(&e))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpStream,
    };

    use super::*;
    use crate::conn_id::ConnId;

    /// An endpoint served on a loopback port, its registry, and the
    /// mailbox of its one core.
    fn endpoint(
        token: Option<&str>,
    ) -> (
        SocketAddr,
        Arc<Registry>,
        crate::mailbox::MailboxRx<CoreMsg>,
    ) {
        let registry = Arc::new(Registry::default());
        let (core, rx) = crate::mailbox::mailbox();
        let admin = token.map(|t| Admin {
            token: t.to_string(),
            registry: registry.clone(),
            cores: vec![core],
            limits: crate::api::ApiLimits {
                max_body: 1024,
                batch_max: 10,
                timeout: Duration::from_secs(1),
            },
        });
        let e = Endpoint {
            metrics: Arc::new(Metrics::new(1)),
            admin,
        };
        let addr = serve(SocketAddr::from(([127, 0, 0, 1], 0)), e).expect("serves");
        (addr, registry, rx)
    }

    /// A request with raw headers; the status and body.
    fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(head.as_bytes()).expect("write");
        let mut text = String::new();
        loop {
            match s.read_to_string(&mut text) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => {
                    r.expect("read");
                    break;
                }
            }
        }
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status");
        (status, body.to_string())
    }

    #[test]
    fn routes_and_methods() {
        let (a, _, _rx) = endpoint(None);
        assert_eq!(
            request(a, "GET", "/healthz", None).expect("http"),
            (200, "ok\n".into())
        );
        let (status, body) = request(a, "GET", "/metrics", None).expect("http");
        assert_eq!(status, 200);
        assert!(body.contains("imgate_connections"), "{body}");
        let (status, body) = request(a, "POST", "/metrics", None).expect("http");
        assert_eq!(status, 405);
        assert!(body.contains("\"error\":\"method_not_allowed\""), "{body}");
        assert_eq!(request(a, "GET", "/nope", None).expect("http").0, 404);
    }

    #[test]
    fn admin_is_off_without_a_token_and_needs_the_right_one() {
        let (off, _, _rx_off) = endpoint(None);
        let (status, body) = request(off, "POST", "/admin/kick?user=1", None).expect("http");
        assert_eq!(status, 403);
        assert!(body.contains("admin_token"), "{body}");

        let (on, _, rx) = endpoint(Some("s3cret"));
        for auth in [
            "",
            "Authorization: Bearer s3cre\r\n",
            "Authorization: Bearer s3cret2\r\n",
            "Authorization: Basic s3cret\r\n",
        ] {
            let head = format!("POST /admin/kick?user=1 HTTP/1.0\r\n{auth}\r\n");
            assert_eq!(raw(on, &head).0, 401, "{head}");
        }
        let ok = raw(
            on,
            "POST /admin/kick?user=1 HTTP/1.0\r\nauthorization:  Bearer s3cret\r\n\r\n",
        );
        assert_eq!(ok, (200, "{\"kicked\":0}\n".to_string()));
        // Only the authorised request went on, as a kick for the backend.
        let mut sent = Vec::new();
        rx.try_drain(&mut sent);
        assert!(
            matches!(
                sent.as_slice(),
                [CoreMsg::Kick {
                    user: 1,
                    device: None,
                    reason: KickReason::Admin,
                }]
            ),
            "{sent:?}"
        );
        drop(rx);
        let gone = request(on, "POST", "/admin/kick?user=1", Some("s3cret")).expect("http");
        assert_eq!(gone.0, 503, "no core to take it");
    }

    #[test]
    fn admin_queries_are_checked() {
        let (a, _, _rx) = endpoint(Some("t"));
        for (target, want) in [
            ("/admin/kick", "user"),
            ("/admin/kick?user=x", "user"),
            ("/admin/kick?user=1&device=-1", "device"),
            ("/admin/kick?user=1&force=1", "force"),
        ] {
            let (status, body) = request(a, "POST", target, Some("t")).expect("http");
            assert_eq!(status, 400, "{target}");
            assert!(body.contains("\"error\":\"bad_query\""), "{target}: {body}");
            assert!(body.contains(want), "{target}: {body}");
        }
        assert_eq!(
            request(a, "GET", "/admin/kick?user=1", Some("t"))
                .expect("http")
                .0,
            405
        );
        assert_eq!(
            request(a, "POST", "/admin/other?user=1", Some("t"))
                .expect("http")
                .0,
            404
        );
    }

    #[test]
    fn sessions_lists_devices_in_order() {
        let (a, reg, _rx) = endpoint(Some("t"));
        let wss = crate::registry::SessionInfo {
            since: 1_767_312_000,
            transport: 3,
        };
        reg.login_with(7, 2, ConnId::new(1, 5, 0), wss);
        reg.login(7, 1, ConnId::new(0, 3, 0));
        let all = request(a, "GET", "/admin/sessions?user=7", Some("t")).expect("http");
        assert_eq!(
            all.1,
            "{\"user\":7,\"sessions\":[{\"device\":1,\"core\":0,\"transport\":\"tcp\",\"since\":0},{\"device\":2,\"core\":1,\"transport\":\"wss\",\"since\":1767312000}]}\n"
        );
        let one = request(a, "GET", "/admin/sessions?user=7&device=2", Some("t")).expect("http");
        assert_eq!(
            one.1,
            "{\"user\":7,\"sessions\":[{\"device\":2,\"core\":1,\"transport\":\"wss\",\"since\":1767312000}]}\n"
        );
    }
}
