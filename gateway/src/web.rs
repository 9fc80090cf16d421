//! The browser client and its demo chat page, served by the WebSocket
//! listener under `demo_path` when it is set: the page then comes from the
//! same origin as the WebSocket endpoint, so a browser needs nothing else
//! to try imgate. Both files are compiled into the binary; a request is
//! answered and the connection closed (no keep-alive: two requests per
//! page load).

/// The demo chat page.
const DEMO_PAGE: &str = include_str!("../web/demo.html");
/// The browser client, an ES module the page imports as `./imgate.js`.
const CLIENT_MODULE: &str = include_str!("../web/imgate.js");

/// Headers looked at in a request.
const MAX_HEADERS: usize = 32;

/// The response to a complete `GET` under `demo_path`, or `None` when the
/// request is incomplete or not for the demo (the WebSocket handshake
/// decides what to make of it then).
pub(crate) fn respond(request: &[u8], demo_path: &str) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(request), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    if req.method != Some("GET") {
        return None;
    }
    let target = req.path?;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let rest = path.strip_prefix(demo_path)?;
    let (body, kind) = match rest {
        "" | "/" => (DEMO_PAGE, "text/html; charset=utf-8"),
        "/imgate.js" => (CLIENT_MODULE, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    // A bare `<path>` is redirected so that the page's relative import
    // resolves under `<path>/`.
    if rest.is_empty() {
        let query = target.strip_prefix(path).unwrap_or("");
        return Some(
            format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {demo_path}/{query}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        );
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    fn head(resp: &[u8]) -> String {
        let text = String::from_utf8_lossy(resp);
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    #[test]
    fn serves_the_page_and_the_module_under_the_path_only() {
        let page = respond(&get("/demo/?user=1"), "/demo").expect("page");
        assert!(head(&page).starts_with("HTTP/1.1 200 OK"));
        assert!(head(&page).contains("text/html"));
        assert!(page.ends_with(DEMO_PAGE.as_bytes()));
        let module = respond(&get("/demo/imgate.js"), "/demo").expect("module");
        assert!(head(&module).contains("text/javascript"));
        assert!(module.ends_with(CLIENT_MODULE.as_bytes()));
        let bare = respond(&get("/demo?user=1"), "/demo").expect("redirect");
        assert!(head(&bare).starts_with("HTTP/1.1 308"));
        assert!(head(&bare).contains("Location: /demo/?user=1"));
        assert_eq!(respond(&get("/ws"), "/demo"), None);
        assert_eq!(respond(&get("/demo/other.js"), "/demo"), None);
        assert_eq!(respond(&get("/demonstration"), "/demo"), None);
        assert_eq!(
            respond(b"GET /demo/ HTTP/1.1\r\nHost: x\r\n", "/demo"),
            None
        );
        let post = b"POST /demo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(respond(post, "/demo"), None);
    }
}
