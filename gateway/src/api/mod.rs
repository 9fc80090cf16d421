//! The server API's messages: the application's backend sends a message
//! on a user's behalf, or a notice from a system sender id, with the
//! protocol's guarantees (docs/api.md).
//!
//! A send is a msg:R from `from` as the API's own device ([`API_DEVICE`]),
//! handed to the backend through a core like any connection's request, and
//! answered once the backend answers it (`crate::replies`): the 200 comes
//! after the message is stored, exactly when a client would get msg:A.
//! The caller's idempotency key becomes the msg id (the first 8 bytes of
//! its SHA-256), so a retry with the same key is the protocol's
//! retransmission: one copy, the same answer; the same key with another
//! message is `msg_id_reused` (409).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
};
use bytes::Bytes;
use imgate_codec::{
    Decoder, ErrorCode, Frame,
    frame::{MAX_LOGIN_FRAME, MsgR},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod groups;
mod revocations;

pub(crate) use groups::{
    change_admins, change_members, create_group, delete_group, list_members, list_roles,
    transfer_group,
};
pub(crate) use revocations::{lift, list, revoke};

use crate::{
    backend::{CoreMsg, Inbound},
    http::{Admin, ApiError, Endpoint},
};

/// The device a server API send comes from. Clients number their
/// devices from 1 (docs/api.md), so every device of the sender gets the
/// copy of what the API sent in its name.
pub const API_DEVICE: u32 = 0;

/// Room a msg:N takes besides its body (header and fixed fields, with
/// margin): a body sent through the API must fit in `max_frame` pushed.
pub const FRAME_OVERHEAD: usize = 128;

/// Longest idempotency key, bytes.
pub const MAX_KEY: usize = 256;

/// What the server API may do, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Longest message body, bytes.
    pub max_body: usize,
    /// Most recipients in one batch.
    pub batch_max: usize,
    /// How long a send waits for the backend.
    pub timeout: Duration,
}

/// `POST /api/v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The sender: a user, or a system sender id.
    pub from: u64,
    /// The receiving user (or `group`).
    #[serde(default)]
    pub to: u64,
    /// The receiving group (or `to`).
    #[serde(default)]
    pub group: u64,
    /// The caller's idempotency key: the same key, the same message.
    pub key: String,
    /// The body as UTF-8 text (or `body_base64`).
    pub body: Option<String>,
    /// The body as base64 bytes (or `body`).
    pub body_base64: Option<String>,
}

/// `POST /api/v1/messages/batch`: one message to each of `to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The sender.
    pub from: u64,
    /// The receiving users.
    pub to: Vec<u64>,
    /// The batch's idempotency key; each recipient's message gets
    /// `key/recipient`.
    pub key: String,
    /// The body as UTF-8 text (or `body_base64`).
    pub body: Option<String>,
    /// The body as base64 bytes (or `body`).
    pub body_base64: Option<String>,
}

/// A stored message, as msg:A says.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// The msg id the key became.
    pub msg_id: u64,
    /// 0 for one-to-one, else the group.
    pub group: u64,
    /// The receiver's sequence id (or the group's).
    pub seq: u64,
    /// The sequence id of the sender's own copy (0 for a group).
    pub own_seq: u64,
}

/// One recipient's outcome in a batch.
#[derive(Debug, Serialize)]
pub struct BatchItem {
    /// The recipient.
    pub to: u64,
    /// The message, once stored.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    /// Why not, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The msg id an idempotency key stands for (never 0).
pub fn msg_id(key: &str) -> u64 {
    let h = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b).max(1)
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The body of a request, checked against the limit.
fn body(text: Option<String>, b64: Option<String>, limits: &ApiLimits) -> Result<Bytes, ApiError> {
    use base64::Engine as _;
    let bytes = match (text, b64) {
        (Some(t), None) => Bytes::from(t),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(Bytes::from)
            .map_err(|e| bad("bad_body", format!("body_base64: {e}")))?,
        _ => return Err(bad("bad_body", "give exactly one of body and body_base64")),
    };
    if bytes.len() > limits.max_body {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is {} bytes; at most {}",
                bytes.len(),
                limits.max_body
            ),
        ));
    }
    Ok(bytes)
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(bad("bad_key", format!("key must be 1 to {MAX_KEY} bytes")));
    }
    Ok(())
}

/// A request handed to the backend, waiting for its answer.
type Pending = (
    crate::conn_id::ConnId,
    tokio::sync::oneshot::Receiver<Bytes>,
);

/// Hands a msg:R to the backend as `from`.
fn submit(admin: &Admin, from: u64, m: MsgR) -> Result<Pending, ApiError> {
    submit_frame(admin, from, Frame::MsgR(m))
}

/// Hands a request frame to the backend as `from` (0: the server itself).
fn submit_frame(admin: &Admin, from: u64, frame: Frame) -> Result<Pending, ApiError> {
    let replies = &admin.registry.replies;
    let (conn, answer) = replies.open();
    let ev = Inbound::Frame {
        conn,
        user: from,
        device: API_DEVICE,
        frame,
    };
    // Spread requests over the cores by sender, as logins are.
    let core = admin
        .cores
        .get((from as usize) % admin.cores.len().max(1))
        .is_some_and(|c| c.send(CoreMsg::Request(Box::new(ev))));
    if !core {
        replies.close(conn);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the backend is not taking requests",
        ));
    }
    Ok((conn, answer))
}

/// Waits until `deadline` for the backend's answer to a submitted msg:R.
async fn answer(
    admin: &Admin,
    pending: Pending,
    deadline: tokio::time::Instant,
) -> Result<Sent, ApiError> {
    match answer_frame(admin, pending, deadline).await? {
        Frame::MsgA(a) => Ok(Sent {
            msg_id: a.msg_id,
            group: a.group,
            seq: a.seq,
            own_seq: a.own_seq,
        }),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(f: &Frame) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected answer from the backend: {:?}", f.kind()),
    )
}

/// Waits until `deadline` for the backend's answer to a submitted
/// request; an error frame is the matching HTTP error.
async fn answer_frame(
    admin: &Admin,
    (conn, answer): Pending,
    deadline: tokio::time::Instant,
) -> Result<Frame, ApiError> {
    let replies = &admin.registry.replies;
    let bytes = match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) | Err(_) => {
            replies.close(conn);
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "no answer from the backend in time; retry with the same key",
            ));
        }
    };
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    match Decoder::new(bytes.len().max(MAX_LOGIN_FRAME)).decode(&mut buf) {
        Ok(Some(Frame::Error(e))) => Err(refusal(e.code(), &e.text())),
        Ok(Some(f)) => Ok(f),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected answer from the backend: {other:?}"),
        )),
    }
}

/// An error frame's code as an HTTP answer.
fn refusal(code: ErrorCode, text: &str) -> ApiError {
    let status = match code {
        ErrorCode::MsgIdReused => StatusCode::CONFLICT,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest | ErrorCode::FrameTooLarge => StatusCode::BAD_REQUEST,
        ErrorCode::Overloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::RateLimited
        | ErrorCode::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, code.as_str(), text.to_string())
}

fn json<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(t)| t).map_err(|e| {
        ApiError::new(
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            "bad_json",
            e.body_text(),
        )
    })
}

/// `POST /api/v1/messages`.
pub(crate) async fn send(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    req: Result<Json<SendRequest>, JsonRejection>,
) -> Result<Json<Sent>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let req = json(req)?;
    let limits = admin.limits;
    if req.from == 0 {
        return Err(bad("bad_sender", "from must be a user id (not 0)"));
    }
    if (req.to == 0) == (req.group == 0) {
        return Err(bad("bad_receiver", "give exactly one of to and group"));
    }
    check_key(&req.key)?;
    let body = body(req.body, req.body_base64, &limits)?;
    let m = MsgR {
        no_push: false,
        msg_id: msg_id(&req.key),
        group: req.group,
        to: req.to,
        retry: true,
        body,
    };
    let pending = submit(admin, req.from, m)?;
    let deadline = tokio::time::Instant::now() + limits.timeout;
    answer(admin, pending, deadline).await.map(Json)
}

/// `POST /api/v1/messages/batch`.
pub(crate) async fn batch(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    req: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let req = json(req)?;
    let limits = admin.limits;
    if req.from == 0 {
        return Err(bad("bad_sender", "from must be a user id (not 0)"));
    }
    if req.to.is_empty() || req.to.len() > limits.batch_max {
        return Err(bad(
            "bad_receiver",
            format!("to must list 1 to {} users", limits.batch_max),
        ));
    }
    if req.to.contains(&0) {
        return Err(bad("bad_receiver", "user 0 names no user"));
    }
    check_key(&req.key)?;
    let body = body(req.body, req.body_base64, &limits)?;
    // Every send is handed over first, then every answer awaited: the
    // backend commits them together.
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let pending: Vec<(u64, Result<Pending, ApiError>)> = req
        .to
        .iter()
        .map(|&to| {
            let m = MsgR {
                no_push: false,
                msg_id: msg_id(&format!("{}/{to}", req.key)),
                group: 0,
                to,
                retry: true,
                body: body.clone(),
            };
            (to, submit(admin, req.from, m))
        })
        .collect();
    let mut items = Vec::with_capacity(pending.len());
    for (to, p) in pending {
        let r = match p {
            Ok(p) => answer(admin, p, deadline).await,
            Err(e) => Err(e),
        };
        items.push(BatchItem {
            to,
            error: r.as_ref().err().map(|e| e.code().to_string()),
            sent: r.ok(),
        });
    }
    let failed = items.iter().filter(|i| i.error.is_some()).count();
    Ok(Json(
        serde_json::json!({ "sent": items.len() - failed, "failed": failed, "results": items }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_msg_id_and_never_0() {
        assert_eq!(msg_id("order-42"), msg_id("order-42"));
        assert_ne!(msg_id("order-42"), msg_id("order-43"));
        assert_ne!(msg_id(""), 0);
    }
}
