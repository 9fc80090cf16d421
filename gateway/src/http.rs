//! The operator's HTTP endpoint: `/metrics`, `/healthz` and the admin path.
//!
//! One blocking HTTP/1.0 responder on a thread of its own: it serves a
//! Prometheus scrape every few seconds and an occasional admin request, so
//! it must never run on a core and needs no async runtime. Requests are read
//! whole (headers only, at most [`MAX_REQUEST`] bytes) with a read deadline,
//! so a slow or hostile client holds the thread for at most that deadline.
//!
//! The admin path kicks connections (`POST /admin/kick?user=U[&device=D]`,
//! reason `admin`; the kick goes through the backend, which knows every
//! node) and lists a user's sessions (`GET /admin/sessions?user=U`; on a
//! backend that spans several gateways, the sessions on every node, each
//! with its node's name). It is off unless an admin token is configured,
//! and every admin request must carry it as `Authorization: Bearer <token>`:
//! the metrics address is often opened to a scraper, and a kick must not
//! be open with it.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use crate::{backend::CoreMsg, mailbox::MailboxTx, metrics::Metrics, registry::Registry};

/// Largest request head read; longer requests get 431.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request.
const READ_DEADLINE: Duration = Duration::from_secs(2);

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
}

/// Everything the endpoint serves.
#[derive(Debug)]
pub struct Endpoint {
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The admin path; `None` when no admin token is configured.
    pub admin: Option<Admin>,
}

/// One response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status line text after the version, e.g. `200 OK`.
    pub status: &'static str,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        let mut body = body.into();
        body.push('\n');
        Response {
            status,
            content_type: "text/plain",
            body,
        }
    }

    fn json(body: String) -> Response {
        Response::json_status("200 OK", body)
    }

    fn json_status(status: &'static str, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// Serves `endpoint` on `addr` from a thread of its own; returns the bound
/// address (useful with port 0).
pub fn serve(addr: SocketAddr, endpoint: Endpoint) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("imgate-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                answer(stream, &endpoint);
            }
        })?;
    Ok(local)
}

fn answer(mut stream: TcpStream, endpoint: &Endpoint) {
    let _ = stream.set_read_timeout(Some(READ_DEADLINE));
    let _ = stream.set_write_timeout(Some(READ_DEADLINE));
    let r = match read_head(&mut stream) {
        Ok(head) => endpoint.handle(&head),
        Err(r) => r,
    };
    let _ = write!(
        stream,
        "HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    );
}

/// Reads up to the blank line that ends the request head.
fn read_head(stream: &mut TcpStream) -> Result<String, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() >= MAX_REQUEST {
            return Err(Response::text(
                "431 Request Header Fields Too Large",
                "request head too large",
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Response::text("408 Request Timeout", "request timeout")),
        }
    }
    String::from_utf8(buf).map_err(|_| Response::text("400 Bad Request", "request is not UTF-8"))
}

/// A one-shot HTTP/1.0 request (for `imgate kick` and tests): the status
/// code and body of the answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, READ_DEADLINE)?;
    s.set_read_timeout(Some(READ_DEADLINE))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {target} HTTP/1.0\r\n{auth}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

impl Endpoint {
    /// Answers one request head (request line and headers).
    pub fn handle(&self, head: &str) -> Response {
        let mut lines = head.lines();
        let mut parts = lines.next().unwrap_or("").split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match (method, path) {
            ("GET", "/metrics") => Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            },
            ("GET", "/healthz") => match self.metrics.health() {
                Ok(()) => Response::text("200 OK", "ok"),
                Err(why) => Response::text("503 Service Unavailable", &why),
            },
            (_, "/metrics" | "/healthz") => Response::text("405 Method Not Allowed", "use GET"),
            (_, p) if p.starts_with("/admin/") => {
                let Some(admin) = &self.admin else {
                    return Response::text(
                        "403 Forbidden",
                        "admin path disabled: set admin_token to enable it",
                    );
                };
                if !authorized(lines, &admin.token) {
                    return Response::text("401 Unauthorized", "missing or wrong bearer token");
                }
                admin.handle(method, p, query, &self.metrics)
            }
            _ => Response::text("404 Not Found", "not found"),
        }
    }
}

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True if a header `Authorization: Bearer <token>` matches, compared in
/// time independent of where the first difference is.
fn authorized<'a>(headers: impl Iterator<Item = &'a str>, token: &str) -> bool {
    headers
        .filter_map(|h| h.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .filter_map(|(_, v)| v.trim().strip_prefix("Bearer "))
        .any(|given| {
            let (a, b) = (given.trim().as_bytes(), token.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
}

/// The `user` and optional `device` of a query string.
fn target(query: &str) -> Result<(u64, Option<u32>), Response> {
    let (mut user, mut device) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| Response::text("400 Bad Request", format!("bad {what}: {v:?}"));
        match k {
            "user" => user = Some(v.parse::<u64>().map_err(|_| bad("user"))?),
            "device" => device = Some(v.parse::<u32>().map_err(|_| bad("device"))?),
            _ => {
                return Err(Response::text(
                    "400 Bad Request",
                    format!("unknown parameter {k:?}"),
                ));
            }
        }
    }
    match user {
        Some(u) => Ok((u, device)),
        None => Err(Response::text("400 Bad Request", "missing user=<id>")),
    }
}

impl Admin {
    /// The user's sessions as JSON objects: on every node if the backend
    /// knows them, else on this one.
    fn sessions(
        &self,
        user: u64,
        device: Option<u32>,
        metrics: &Metrics,
    ) -> Result<Vec<String>, Response> {
        if let Some(found) = metrics.backend.get().and_then(|b| b.sessions(user, device)) {
            return found.map_err(|why| {
                Response::json_status(
                    "503 Service Unavailable",
                    format!("{{\"error\":{}}}\n", json_string(&why)),
                )
            });
        }
        Ok(self
            .registry
            .sessions(user, device)
            .iter()
            .map(|(d, c)| format!("{{\"device\":{d},\"core\":{}}}", c.core))
            .collect())
    }

    fn handle(&self, method: &str, path: &str, query: &str, metrics: &Metrics) -> Response {
        let (user, device) = match target(query) {
            Ok(t) => t,
            Err(r) => return r,
        };
        match (method, path) {
            ("POST", "/admin/kick") => {
                let sessions = match self.sessions(user, device, metrics) {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                let sent = self
                    .cores
                    .first()
                    .is_some_and(|core| core.send(CoreMsg::Kick { user, device }));
                if !sent {
                    return Response::json_status(
                        "503 Service Unavailable",
                        "{\"error\":\"the backend is not taking requests\"}\n".to_string(),
                    );
                }
                tracing::info!(user, ?device, kicked = sessions.len(), "admin kick");
                Response::json(format!("{{\"kicked\":{}}}\n", sessions.len()))
            }
            ("GET", "/admin/sessions") => {
                let list = match self.sessions(user, device, metrics) {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                Response::json(format!(
                    "{{\"user\":{user},\"sessions\":[{}]}}\n",
                    list.join(",")
                ))
            }
            (_, "/admin/kick") => Response::text("405 Method Not Allowed", "use POST"),
            (_, "/admin/sessions") => Response::text("405 Method Not Allowed", "use GET"),
            _ => Response::text("404 Not Found", "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_id::ConnId;

    /// An endpoint, its registry, and the mailbox of its one core.
    fn endpoint(
        token: Option<&str>,
    ) -> (Endpoint, Arc<Registry>, crate::mailbox::MailboxRx<CoreMsg>) {
        let registry = Arc::new(Registry::default());
        let (core, rx) = crate::mailbox::mailbox();
        let admin = token.map(|t| Admin {
            token: t.to_string(),
            registry: registry.clone(),
            cores: vec![core],
        });
        let e = Endpoint {
            metrics: Arc::new(Metrics::new(1)),
            admin,
        };
        (e, registry, rx)
    }

    #[test]
    fn routes_and_methods() {
        let (e, _, _rx) = endpoint(None);
        assert_eq!(e.handle("GET /healthz HTTP/1.0\r\n\r\n").status, "200 OK");
        let m = e.handle("GET /metrics HTTP/1.0\r\n\r\n");
        assert!(m.body.contains("imgate_connections"), "{}", m.body);
        assert_eq!(
            e.handle("POST /metrics HTTP/1.0\r\n\r\n").status,
            "405 Method Not Allowed"
        );
        assert_eq!(
            e.handle("GET /nope HTTP/1.0\r\n\r\n").status,
            "404 Not Found"
        );
        assert_eq!(e.handle("").status, "404 Not Found");
    }

    #[test]
    fn admin_is_off_without_a_token_and_needs_the_right_one() {
        let (off, _, _rx_off) = endpoint(None);
        let r = off.handle("POST /admin/kick?user=1 HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, "403 Forbidden");
        assert!(r.body.contains("admin_token"));

        let (on, _, rx) = endpoint(Some("s3cret"));
        for head in [
            "POST /admin/kick?user=1 HTTP/1.0\r\n\r\n",
            "POST /admin/kick?user=1 HTTP/1.0\r\nAuthorization: Bearer s3cre\r\n\r\n",
            "POST /admin/kick?user=1 HTTP/1.0\r\nAuthorization: Bearer s3cret2\r\n\r\n",
            "POST /admin/kick?user=1 HTTP/1.0\r\nAuthorization: Basic s3cret\r\n\r\n",
        ] {
            assert_eq!(on.handle(head).status, "401 Unauthorized", "{head}");
        }
        let ok =
            on.handle("POST /admin/kick?user=1 HTTP/1.0\r\nauthorization:  Bearer s3cret\r\n\r\n");
        assert_eq!(ok.status, "200 OK");
        assert_eq!(ok.body, "{\"kicked\":0}\n");
        // Only the authorised request went on, as a kick for the backend.
        let mut sent = Vec::new();
        rx.try_drain(&mut sent);
        assert!(
            matches!(
                sent.as_slice(),
                [CoreMsg::Kick {
                    user: 1,
                    device: None
                }]
            ),
            "{sent:?}"
        );
        drop(rx);
        let gone =
            on.handle("POST /admin/kick?user=1 HTTP/1.0\r\nAuthorization: Bearer s3cret\r\n\r\n");
        assert_eq!(gone.status, "503 Service Unavailable", "no core to take it");
    }

    #[test]
    fn admin_queries_are_checked() {
        let (e, _, _rx) = endpoint(Some("t"));
        let auth = "HTTP/1.0\r\nAuthorization: Bearer t\r\n\r\n";
        for (target, want) in [
            ("POST /admin/kick", "missing user"),
            ("POST /admin/kick?user=x", "bad user"),
            ("POST /admin/kick?user=1&device=-1", "bad device"),
            ("POST /admin/kick?user=1&force=1", "unknown parameter"),
        ] {
            let r = e.handle(&format!("{target} {auth}"));
            assert_eq!(r.status, "400 Bad Request", "{target}");
            assert!(r.body.contains(want), "{target}: {}", r.body);
        }
        assert_eq!(
            e.handle(&format!("GET /admin/kick?user=1 {auth}")).status,
            "405 Method Not Allowed"
        );
        assert_eq!(
            e.handle(&format!("POST /admin/other?user=1 {auth}")).status,
            "404 Not Found"
        );
    }

    #[test]
    fn sessions_lists_devices_in_order() {
        let (e, reg, _rx) = endpoint(Some("t"));
        reg.login(7, 2, ConnId::new(1, 5, 0));
        reg.login(7, 1, ConnId::new(0, 3, 0));
        let auth = "HTTP/1.0\r\nAuthorization: Bearer t\r\n\r\n";
        let all = e.handle(&format!("GET /admin/sessions?user=7 {auth}"));
        assert_eq!(
            all.body,
            "{\"user\":7,\"sessions\":[{\"device\":1,\"core\":0},{\"device\":2,\"core\":1}]}\n"
        );
        let one = e.handle(&format!("GET /admin/sessions?user=7&device=2 {auth}"));
        assert_eq!(
            one.body,
            "{\"user\":7,\"sessions\":[{\"device\":2,\"core\":1}]}\n"
        );
    }
}
