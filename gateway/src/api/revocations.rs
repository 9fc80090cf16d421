//! The server API's revocations: a device (or every device of a user) that
//! no token logs in until a given time (docs/api.md, "Revoke a device").
//!
//! A revocation is made durable by the backend before the answer (the
//! embedded store, or the cluster's meta bucket, from which every node
//! loads it at start), applied on this node at once and on the others
//! through NATS, and the device's sessions are kicked with `revoked` on
//! every node. The cores check the list at each login, after the token.

use std::sync::Arc;

use axum::{
    Json,
    extract::{
        Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
};
use imgate_codec::KickReason;
use serde::Deserialize;

use super::{bad, json};
use crate::{
    http::{Admin, ApiError, Endpoint, Target, target},
    revocations::{ALL_DEVICES, Revocation},
};

/// `POST /api/v1/revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revoke {
    /// The user.
    pub user: u64,
    /// The device; absent: every device of the user.
    pub device: Option<u32>,
    /// Unix ms at which logins work again.
    pub until: u64,
}

fn device_json(device: u32) -> serde_json::Value {
    if device == ALL_DEVICES {
        serde_json::Value::Null
    } else {
        device.into()
    }
}

/// Has the backend keep `r` (or forget it, `until` 0), off the runtime's
/// thread: the cluster backend waits for JetStream.
async fn persist(e: &Arc<Endpoint>, r: Revocation) -> Result<(), ApiError> {
    let kept = crate::http::with_report(e, move |b| b.revoke(r)).await?;
    match kept {
        Some(Err(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the revocation was not stored: {why}"),
        )),
        _ => Ok(()),
    }
}

/// `POST /api/v1/revocations`.
pub(crate) async fn revoke(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    req: Result<Json<Revoke>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin: &Admin = crate::http::admin(&e, &headers)?;
    let req = json(req)?;
    if req.user == 0 {
        return Err(bad("bad_user", "user must be a user id (not 0)"));
    }
    if req.until <= crate::clock::unix_ms() {
        return Err(bad(
            "bad_until",
            "until must be a Unix time in ms in the future",
        ));
    }
    let r = Revocation {
        user: req.user,
        device: req.device.unwrap_or(ALL_DEVICES),
        until: req.until,
    };
    persist(&e, r).await?;
    admin.registry.revocations.set(r);
    admin.kick(r.user, req.device, KickReason::Revoked)?;
    tracing::info!(user = r.user, device = ?req.device, until = r.until, "device revoked");
    Ok(Json(serde_json::json!({
        "user": r.user,
        "device": device_json(r.device),
        "until": r.until,
    })))
}

/// `DELETE /api/v1/revocations?user=U[&device=D]`.
pub(crate) async fn lift(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    q: Result<Query<Target>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let w = target(q)?;
    let r = Revocation {
        user: w.user,
        device: w.device.unwrap_or(ALL_DEVICES),
        until: 0,
    };
    persist(&e, r).await?;
    let lifted = admin.registry.revocations.lift(r.user, r.device);
    Ok(Json(serde_json::json!({ "lifted": lifted })))
}

/// `GET /api/v1/revocations?user=U`: the user's revocations still running.
pub(crate) async fn list(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    q: Result<Query<Target>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let w = target(q)?;
    let list: Vec<serde_json::Value> = admin
        .registry
        .revocations
        .of(w.user, crate::clock::unix_ms())
        .iter()
        .filter(|r| w.device.is_none_or(|d| d == r.device))
        .map(|r| serde_json::json!({"device": device_json(r.device), "until": r.until}))
        .collect();
    Ok(Json(
        serde_json::json!({ "user": w.user, "revocations": list }),
    ))
}
