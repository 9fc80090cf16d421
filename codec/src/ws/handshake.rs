//! The opening handshake: an HTTP/1.1 `GET` with `Upgrade: websocket`,
//! answered `101 Switching Protocols` with the key's accept value, or
//! refused with a 4xx status and a JSON body saying why.

use base64::{Engine, engine::general_purpose::STANDARD};
use sha1::{Digest, Sha1};

/// The GUID every accept value is derived with (RFC 6455, section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Headers looked at in a request; a request with more is refused.
const MAX_HEADERS: usize = 32;

/// What a server makes of the bytes a client sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The request is not complete: read more (unless `max_len` is
    /// reached, which is a [`Refusal`] instead).
    Partial,
    /// A valid upgrade: send `response`; the WebSocket frames start after
    /// `consumed` bytes of the input.
    Accept {
        /// Length of the request, headers included.
        consumed: usize,
        /// The `101 Switching Protocols` response.
        response: Vec<u8>,
    },
    /// Not an upgrade this server takes: send `response`, then close.
    Refuse(Refusal),
}

/// Why a request was refused, as an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status code.
    pub status: u16,
    /// A short code for the JSON body.
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: u16, code: &'static str, message: &'static str) -> Refusal {
        Refusal {
            status,
            code,
            message,
        }
    }

    /// The HTTP response: status line, `Connection: close`, and a JSON
    /// body `{"error": code, "message": message}`; a version refusal also
    /// names the version this server speaks.
    pub fn response(&self) -> Vec<u8> {
        let body = format!(
            "{{\"error\":\"{}\",\"message\":\"{}\"}}",
            self.code, self.message
        );
        let reason = match self.status {
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let extra = if self.status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {reason}\r\n{extra}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// The accept value for a client's `Sec-WebSocket-Key`: base64 of the
/// SHA-1 of the key followed by the protocol's GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    STANDARD.encode(h.finalize())
}

/// Reads a client's opening request from the start of `buf`.
///
/// `path` is the only request target accepted (a query string after it
/// is allowed and ignored); `max_len` bounds the request, headers
/// included: a longer or unfinished one at that length is refused with
/// 431, so a client cannot make the server hold more than that.
pub fn accept(buf: &[u8], path: &str, max_len: usize) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_len {
                Handshake::Refuse(TOO_LARGE)
            } else {
                Handshake::Partial
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Handshake::Refuse(TOO_LARGE),
        Err(_) => return Handshake::Refuse(MALFORMED),
    };
    if consumed > max_len {
        return Handshake::Refuse(TOO_LARGE);
    }
    if req.method != Some("GET") {
        return Handshake::Refuse(Refusal::new(
            405,
            "method_not_allowed",
            "a WebSocket upgrade is a GET",
        ));
    }
    if req.version != Some(1) {
        return Handshake::Refuse(Refusal::new(
            400,
            "http_version",
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    let target = req.path.unwrap_or("");
    let target_path = target.split('?').next().unwrap_or("");
    if target_path != path {
        return Handshake::Refuse(Refusal::new(
            404,
            "not_found",
            "no WebSocket endpoint at this path",
        ));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |value: Option<&[u8]>, token: &str| {
        value.is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Handshake::Refuse(Refusal::new(
            426,
            "not_an_upgrade",
            "expected Upgrade: websocket and Connection: Upgrade",
        ));
    }
    if header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Handshake::Refuse(Refusal::new(
            426,
            "websocket_version",
            "only WebSocket version 13 is spoken",
        ));
    }
    let Some(key) = header("sec-websocket-key").map(<[u8]>::trim_ascii) else {
        return Handshake::Refuse(BAD_KEY);
    };
    // A key is 16 random bytes in base64.
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Handshake::Refuse(BAD_KEY);
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes();
    Handshake::Accept { consumed, response }
}

const TOO_LARGE: Refusal =
    Refusal::new(431, "request_too_large", "the upgrade request is too long");
const MALFORMED: Refusal = Refusal::new(400, "malformed_request", "not an HTTP/1.1 request");
const BAD_KEY: Refusal = Refusal::new(
    400,
    "bad_websocket_key",
    "Sec-WebSocket-Key must be 16 bytes in base64",
);

/// A client's opening request for `path` on `host`, with its key (16
/// random bytes, which the caller chooses).
pub fn client_request(host: &str, path: &str, key: [u8; 16]) -> (Vec<u8>, String) {
    let key = STANDARD.encode(key);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    (req.into_bytes(), key)
}

/// Why a server's answer to [`client_request`] is not an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHandshakeError {
    /// Not an HTTP response.
    #[error("malformed handshake response")]
    Malformed,
    /// A status other than 101.
    #[error("the server refused the upgrade with status {0}")]
    Refused(u16),
    /// 101, but the accept value does not match the key.
    #[error("the server's Sec-WebSocket-Accept does not match the key")]
    WrongAccept,
}

/// Reads the server's answer to a request made with `key` (as returned by
/// [`client_request`]): `Ok(None)` until it is complete, then the number
/// of bytes it took (frames follow).
pub fn client_response(buf: &[u8], key: &str) -> Result<Option<usize>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let n = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ClientHandshakeError::Malformed),
    };
    match res.code {
        Some(101) => {}
        Some(code) => return Err(ClientHandshakeError::Refused(code)),
        None => return Err(ClientHandshakeError::Malformed),
    }
    let want = accept_key(key.as_bytes());
    let ok = res.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept")
            && h.value.trim_ascii() == want.as_bytes()
    });
    if ok {
        Ok(Some(n))
    } else {
        Err(ClientHandshakeError::WrongAccept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/ws";

    fn request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept_value() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_valid_upgrade_is_accepted_and_the_client_checks_the_answer() {
        let req = request("Sec-WebSocket-Version: 13\r\n");
        let mut bytes = req.clone().into_bytes();
        bytes.extend_from_slice(b"\x82\x80"); // a frame right behind it
        let Handshake::Accept { consumed, response } = accept(&bytes, PATH, 4096) else {
            panic!("refused");
        };
        assert_eq!(consumed, req.len());
        let text = String::from_utf8(response.clone()).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(
            client_response(&response, "dGhlIHNhbXBsZSBub25jZQ=="),
            Ok(Some(response.len()))
        );
        assert_eq!(
            client_response(&response, "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(ClientHandshakeError::WrongAccept)
        );
        assert_eq!(client_response(&response[..20], "x"), Ok(None));
    }

    #[test]
    fn a_client_request_is_accepted_by_the_server_side() {
        let (req, key) = client_request("127.0.0.1:7001", PATH, [7; 16]);
        let Handshake::Accept { response, .. } = accept(&req, PATH, 4096) else {
            panic!("refused");
        };
        assert_eq!(client_response(&response, &key), Ok(Some(response.len())));
    }

    #[test]
    fn an_unfinished_request_waits_until_the_limit_then_is_refused() {
        let req = request("Sec-WebSocket-Version: 13\r\n");
        let part = &req.as_bytes()[..req.len() - 2];
        assert_eq!(accept(part, PATH, 4096), Handshake::Partial);
        match accept(part, PATH, part.len()) {
            Handshake::Refuse(r) => assert_eq!(r.status, 431),
            other => panic!("{other:?}"),
        }
        // Complete but longer than the limit.
        match accept(req.as_bytes(), PATH, 50) {
            Handshake::Refuse(r) => assert_eq!(r.status, 431),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_status_and_a_json_reason() {
        let cases: Vec<(String, u16, &str)> = vec![
            ("garbage\r\n\r\n".into(), 400, "malformed_request"),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen("GET", "POST", 1),
                405,
                "method_not_allowed",
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen("/ws", "/other", 1),
                404,
                "not_found",
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen(
                    "Upgrade: websocket",
                    "Upgrade: h2c",
                    1,
                ),
                426,
                "not_an_upgrade",
            ),
            (
                request("Sec-WebSocket-Version: 8\r\n"),
                426,
                "websocket_version",
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen(
                    "dGhlIHNhbXBsZSBub25jZQ==",
                    "c2hvcnQ=",
                    1,
                ),
                400,
                "bad_websocket_key",
            ),
            (
                format!(
                    "GET /ws HTTP/1.1\r\n{}\r\n",
                    "X: y\r\n".repeat(MAX_HEADERS + 1)
                ),
                431,
                "request_too_large",
            ),
        ];
        for (req, status, code) in cases {
            let Handshake::Refuse(r) = accept(req.as_bytes(), PATH, 8192) else {
                panic!("accepted: {req}");
            };
            assert_eq!((r.status, r.code), (status, code), "{req}");
            let text = String::from_utf8(r.response()).expect("utf8");
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains(&format!("{{\"error\":\"{code}\"")), "{text}");
            assert!(text.contains("Connection: close"), "{text}");
        }
    }

    #[test]
    fn a_query_string_is_ignored_and_header_names_are_case_blind() {
        let req = "GET /ws?token=abc HTTP/1.1\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
        assert!(matches!(
            accept(req.as_bytes(), PATH, 4096),
            Handshake::Accept { .. }
        ));
    }
}
