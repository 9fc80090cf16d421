//! The server API's groups: create, change membership and roles, list,
//! delete (docs/api.md, "Groups").
//!
//! Each call is one group:R from the API's core number, so the backend
//! checks and applies it exactly as it would a client's, except that the
//! server may act on any group under every `group_admin` setting and is
//! never a member itself. A group created here is owned by the `owner` the
//! call names (as if that user had created it), or by nobody.

use std::sync::Arc;

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::HeaderMap,
};
use bytes::Bytes;
use imgate_codec::{
    Frame,
    frame::{GroupA, GroupOp, GroupR},
};
use serde::Deserialize;

use super::{answer_frame, bad, json, submit_frame, unexpected};
use crate::http::{Admin, ApiError, Endpoint};

/// `POST /api/v1/groups`: a new group of `members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGroup {
    /// The id wanted; 0 or absent: the server picks one.
    #[serde(default)]
    pub group: u64,
    /// The members, at least one.
    pub members: Vec<u64>,
    /// The owner (made a member too); absent: nobody owns the group.
    #[serde(default)]
    pub owner: u64,
}

/// `POST /api/v1/groups/{group}/members` and `…/admins`: exactly one of
/// the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Change {
    /// Users to add (members) or to make admins.
    pub add: Option<Vec<u64>>,
    /// Users to remove (members) or to make plain members again.
    pub remove: Option<Vec<u64>>,
}

/// `PUT /api/v1/groups/{group}/owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transfer {
    /// The member that becomes the owner.
    pub owner: u64,
}

/// `GET /api/v1/groups/{group}/members?after=U` and `…/roles?after=U`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct After {
    /// The page starts after this user id (0: from the first).
    #[serde(default)]
    pub after: u64,
}

/// Sends a group:R from the server (on behalf of `owner` for a create)
/// and waits for its group:A.
async fn group_op(
    admin: &Admin,
    op: GroupOp,
    group: u64,
    members: &[u64],
    owner: u64,
) -> Result<GroupA, ApiError> {
    let fit = admin.limits.max_body / 8;
    if members.len() > fit {
        return Err(bad(
            "bad_members",
            format!("at most {fit} members per call; add the rest with more calls"),
        ));
    }
    let r = GroupR {
        req: 1,
        op: op as u8,
        group,
        members: Bytes::new(),
    }
    .with_members(members);
    let pending = submit_frame(admin, owner, Frame::GroupR(r))?;
    let deadline = tokio::time::Instant::now() + admin.limits.timeout;
    match answer_frame(admin, pending, deadline).await? {
        Frame::GroupA(a) => Ok(a),
        other => Err(unexpected(&other)),
    }
}

/// The usual answer: `{"group", "total", "members"}` (for a change, the
/// users changed).
fn members_json(a: &GroupA) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "group": a.group,
        "total": a.total,
        "members": a.members().collect::<Vec<u64>>(),
    }))
}

fn one_of(c: Change, add: GroupOp, remove: GroupOp) -> Result<(GroupOp, Vec<u64>), ApiError> {
    match c {
        Change {
            add: Some(m),
            remove: None,
        } => Ok((add, m)),
        Change {
            add: None,
            remove: Some(m),
        } => Ok((remove, m)),
        _ => Err(bad("bad_members", "give exactly one of add and remove")),
    }
}

fn after(q: Result<Query<After>, QueryRejection>) -> Result<Vec<u64>, ApiError> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|r| bad("bad_query", r.body_text()))?;
    Ok(if q.after == 0 { vec![] } else { vec![q.after] })
}

/// `POST /api/v1/groups`.
pub(crate) async fn create_group(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    req: Result<Json<CreateGroup>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let req = json(req)?;
    if req.members.is_empty() && req.owner == 0 {
        return Err(bad("bad_members", "a group needs at least one member"));
    }
    let a = group_op(admin, GroupOp::Create, req.group, &req.members, req.owner).await?;
    Ok(members_json(&a))
}

/// `DELETE /api/v1/groups/{group}`.
pub(crate) async fn delete_group(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let a = group_op(admin, GroupOp::Delete, group, &[], 0).await?;
    Ok(Json(
        serde_json::json!({ "group": a.group, "total": a.total }),
    ))
}

/// A change of members or of admins: `add` and `remove` are its two ops.
async fn change(
    e: &Arc<Endpoint>,
    headers: &HeaderMap,
    group: u64,
    req: Result<Json<Change>, JsonRejection>,
    (add, remove): (GroupOp, GroupOp),
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(e, headers)?;
    let (op, members) = one_of(json(req)?, add, remove)?;
    let a = group_op(admin, op, group, &members, 0).await?;
    Ok(members_json(&a))
}

/// `POST /api/v1/groups/{group}/members`.
pub(crate) async fn change_members(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
    req: Result<Json<Change>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    change(&e, &headers, group, req, (GroupOp::Add, GroupOp::Remove)).await
}

/// `POST /api/v1/groups/{group}/admins`.
pub(crate) async fn change_admins(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
    req: Result<Json<Change>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    change(
        &e,
        &headers,
        group,
        req,
        (GroupOp::Promote, GroupOp::Demote),
    )
    .await
}

/// `PUT /api/v1/groups/{group}/owner`.
pub(crate) async fn transfer_group(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
    req: Result<Json<Transfer>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let req = json(req)?;
    if req.owner == 0 {
        return Err(bad("bad_members", "owner must be a user id (not 0)"));
    }
    let a = group_op(admin, GroupOp::Transfer, group, &[req.owner], 0).await?;
    Ok(members_json(&a))
}

/// `GET /api/v1/groups/{group}/members`.
pub(crate) async fn list_members(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
    q: Result<Query<After>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let a = group_op(admin, GroupOp::List, group, &after(q)?, 0).await?;
    Ok(members_json(&a))
}

/// `GET /api/v1/groups/{group}/roles`: `{"group", "total", "owner",
/// "admins"}` (owner null when nobody owns the group).
pub(crate) async fn list_roles(
    State(e): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Path(group): Path<u64>,
    q: Result<Query<After>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = crate::http::admin(&e, &headers)?;
    let a = group_op(admin, GroupOp::Roles, group, &after(q)?, 0).await?;
    let mut ids = a.members();
    let owner = ids.next().filter(|&o| o != 0);
    Ok(Json(serde_json::json!({
        "group": a.group,
        "total": a.total,
        "owner": owner,
        "admins": ids.collect::<Vec<u64>>(),
    })))
}
