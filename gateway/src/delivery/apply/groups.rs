//! The group requests: membership (create, add, remove, list) and a group
//! message's receipts.

use super::*;
use crate::delivery::roles::{self, Actor, Joined, Role};

pub(super) fn receipts(cx: &mut Ctx<'_>, r: ReceiptsR) -> Result<(), StoreError> {
    let k = Kind::ReceiptsR;
    if r.group == 0 {
        cx.refuse(ErrorCode::InvalidRequest, k, r.req, "groups only");
        return Ok(());
    }
    let Some((s, _)) = cx.stream(r.group, k, r.req)? else {
        return Ok(());
    };
    let head = cx.state.head(cx.store, s)?;
    if let Err((code, text)) = rules::check_seq(r.seq, head) {
        cx.refuse(code, k, r.req, text);
        return Ok(());
    }
    cx.out.push(Deferred::Receipts {
        conn: cx.conn,
        req: r.req,
        group: r.group,
        seq: r.seq,
    });
    Ok(())
}

pub(super) fn group(cx: &mut Ctx<'_>, r: GroupR) -> Result<(), StoreError> {
    let k = Kind::GroupR;
    let Some(op) = r.op() else {
        cx.refuse(ErrorCode::InvalidRequest, k, r.req, "unknown group op");
        return Ok(());
    };
    let listed: Vec<u64> = r.members().collect();
    if let Err((code, text)) = rules::check_members(op, &listed)
        .and_then(|()| rules::may_manage(op, cx.is_server(), cx.state.limits.group_admin))
    {
        cx.refuse(code, k, r.req, text);
        return Ok(());
    }
    if op == GroupOp::Create {
        return create(cx, &r, &listed);
    }
    let Some((s, _)) = cx.stream(r.group, k, r.req)? else {
        return Ok(());
    };
    let head = cx.state.head(cx.store, s)?;
    let max = cx.state.limits.max_group_size;
    let policy = cx.state.limits.group_admin;
    let fit = (cx.state.limits.max_frame.saturating_sub(64) / 8).min(1000);
    let (server, me) = (cx.is_server(), cx.user);
    let Some(g) = cx.state.group(cx.store, r.group)? else {
        return Ok(());
    };
    let actor = match g.members.get(&me) {
        Some(j) if !server => Actor::Member(me, j.role()),
        _ => Actor::Server,
    };
    let role_of = |u: u64| g.members.get(&u).map(|j| j.role());
    let mut verdict = roles::may_act(op, policy, actor, &listed, role_of);
    if op == GroupOp::Add {
        let new = listed
            .iter()
            .filter(|u| !g.members.contains_key(u))
            .collect::<ahash::AHashSet<_>>()
            .len();
        if verdict.is_ok() && g.members.len() + new > max {
            verdict = Err((ErrorCode::InvalidRequest, "group too large"));
        }
    }
    if let Err((code, text)) = verdict {
        cx.refuse(code, k, r.req, text);
        return Ok(());
    }
    let mut changed = Vec::new();
    let mut gone = Vec::new();
    match op {
        GroupOp::Add => {
            for &u in &listed {
                if !g.members.contains_key(&u) {
                    // A new member sees what comes after it joined.
                    let j = Joined::new(head, Role::Member);
                    g.members.insert(u, j);
                    put_member(cx.batch, r.group, u, j);
                    changed.push(u);
                }
            }
        }
        GroupOp::Remove => {
            for &u in &listed {
                if g.members.remove(&u).is_some() {
                    delete_member(cx.batch, r.group, u);
                    changed.push(u);
                }
            }
        }
        GroupOp::Delete => {
            for (u, _) in g.members.drain() {
                delete_member(cx.batch, r.group, u);
                gone.push(u);
            }
            gone.sort_unstable();
        }
        GroupOp::Promote | GroupOp::Demote | GroupOp::Transfer => {
            let owner = g
                .members
                .iter()
                .find(|(_, j)| j.role() == Role::Owner)
                .map(|(&u, _)| u);
            let role_of = |u: u64| g.members.get(&u).map(|j| j.role());
            for (u, role) in roles::role_changes(op, &listed, role_of, owner) {
                if let Some(j) = g.members.get_mut(&u) {
                    *j = j.with_role(role);
                    put_member(cx.batch, r.group, u, *j);
                    changed.push(u);
                }
            }
        }
        GroupOp::List => {
            let after = listed.first().copied().unwrap_or(0);
            let mut all: Vec<u64> = g.members.keys().copied().filter(|&u| u > after).collect();
            all.sort_unstable();
            all.truncate(fit);
            changed = all;
        }
        GroupOp::Roles => {
            let after = listed.first().copied().unwrap_or(0);
            let owner = g.members.iter().find(|(_, j)| j.role() == Role::Owner);
            let mut admins: Vec<u64> = g
                .members
                .iter()
                .filter(|&(&u, j)| j.role() == Role::Admin && u > after)
                .map(|(&u, _)| u)
                .collect();
            admins.sort_unstable();
            admins.truncate(fit.saturating_sub(1));
            changed.push(owner.map_or(0, |(&u, _)| u));
            changed.extend(admins);
        }
        GroupOp::Create => {}
    }
    let total = g.members.len();
    if total == 0 {
        cx.state.set_group(r.group, None);
    }
    if op != GroupOp::Roles {
        changed.sort_unstable();
    }
    if !matches!(op, GroupOp::List | GroupOp::Roles) && (!changed.is_empty() || !gone.is_empty()) {
        let members = if op == GroupOp::Delete {
            gone
        } else {
            changed.clone()
        };
        let by = cx.user;
        cx.state.event(cx.batch, cx.now, || Event::Group {
            group: r.group,
            op: crate::events::event::op_name(op),
            by,
            members,
        });
    }
    cx.out.push(Deferred::GroupA {
        conn: cx.conn,
        req: r.req,
        op,
        group: r.group,
        total,
        members: changed,
    });
    Ok(())
}

/// A group:R create: the creator (a client, or the user the server API
/// names) owns the group; everyone joins at the log's head, so an id used
/// before shows nothing of its old log.
fn create(cx: &mut Ctx<'_>, r: &GroupR, listed: &[u64]) -> Result<(), StoreError> {
    let k = Kind::GroupR;
    let owner = (cx.user != 0).then_some(cx.user);
    let mut unique = listed.to_vec();
    unique.extend(owner);
    unique.sort_unstable();
    unique.dedup();
    if unique.len() > cx.state.limits.max_group_size {
        cx.refuse(ErrorCode::InvalidRequest, k, r.req, "group too large");
        return Ok(());
    }
    let id = if r.group == 0 {
        cx.state.alloc_group(cx.batch)
    } else {
        if cx.state.group(cx.store, r.group)?.is_some() {
            cx.refuse(ErrorCode::InvalidRequest, k, r.req, "group exists");
            return Ok(());
        }
        cx.state.reserve_group(r.group, cx.batch);
        r.group
    };
    let head = cx.state.head(cx.store, StreamId::group(id))?;
    let mut g = Group::default();
    for &u in &unique {
        let role = if Some(u) == owner {
            Role::Owner
        } else {
            Role::Member
        };
        let j = Joined::new(head, role);
        g.members.insert(u, j);
        put_member(cx.batch, id, u, j);
    }
    let total = g.members.len();
    cx.state.set_group(id, Some(g));
    let (by, members) = (cx.user, unique.clone());
    cx.state.event(cx.batch, cx.now, || Event::Group {
        group: id,
        op: crate::events::event::op_name(GroupOp::Create),
        by,
        members,
    });
    cx.out.push(Deferred::GroupA {
        conn: cx.conn,
        req: r.req,
        op: GroupOp::Create,
        group: id,
        total,
        members: unique,
    });
    Ok(())
}

fn delete_member(batch: &mut WriteBatch, group: u64, user: u64) {
    batch.delete(Table::Member, keys::member_key(group, user));
    batch.delete(Table::Member, keys::user_group_key(user, group));
}

pub(super) fn put_member(batch: &mut WriteBatch, group: u64, user: u64, join: Joined) {
    batch.put(
        Table::Member,
        keys::member_key(group, user),
        join.to_u64().to_be_bytes(),
    );
    batch.put(Table::Member, keys::user_group_key(user, group), Vec::new());
}
