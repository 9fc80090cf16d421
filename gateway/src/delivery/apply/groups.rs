//! The group requests: membership (create, add, remove, list) and a group
//! message's receipts.

use super::*;

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
    let max = cx.state.limits.max_group_size;
    if op == GroupOp::Create {
        // The creator plus the listed users, each once (the server API
        // creates groups it is not a member of).
        let mut unique = listed.clone();
        if !cx.is_server() {
            unique.push(cx.user);
        }
        unique.sort_unstable();
        unique.dedup();
        if unique.len() > max {
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
        let mut g = Group::default();
        if !cx.is_server() {
            g.members.insert(cx.user, 0);
        }
        for &u in &listed {
            g.members.insert(u, 0);
        }
        for &u in g.members.keys() {
            put_member(cx.batch, id, u, 0);
        }
        let total = g.members.len();
        let mut added: Vec<u64> = g.members.keys().copied().collect();
        added.sort_unstable();
        cx.state.set_group(id, Some(g));
        cx.out.push(Deferred::GroupA {
            conn: cx.conn,
            req: r.req,
            op,
            group: id,
            total,
            members: added,
        });
        return Ok(());
    }
    let Some((s, _)) = cx.stream(r.group, k, r.req)? else {
        return Ok(());
    };
    let head = cx.state.head(cx.store, s)?;
    let fit = cx.state.limits.max_frame.saturating_sub(64) / 8;
    let Some(g) = cx.state.group(cx.store, r.group)? else {
        return Ok(());
    };
    let mut changed = Vec::new();
    match op {
        GroupOp::Add => {
            let new: Vec<u64> = listed
                .iter()
                .copied()
                .filter(|u| !g.members.contains_key(u))
                .collect();
            if g.members.len() + new.len() > max {
                cx.refuse(ErrorCode::InvalidRequest, k, r.req, "group too large");
                return Ok(());
            }
            for u in new {
                // A new member sees what comes after it joined.
                g.members.insert(u, head);
                put_member(cx.batch, r.group, u, head);
                changed.push(u);
            }
        }
        GroupOp::Remove => {
            for &u in &listed {
                if g.members.remove(&u).is_some() {
                    cx.batch.delete(Table::Member, keys::member_key(r.group, u));
                    cx.batch
                        .delete(Table::Member, keys::user_group_key(u, r.group));
                    changed.push(u);
                }
            }
        }
        GroupOp::List => {
            let after = listed.first().copied().unwrap_or(0);
            let mut all: Vec<u64> = g.members.keys().copied().filter(|&u| u > after).collect();
            all.sort_unstable();
            all.truncate(fit.min(1000));
            changed = all;
        }
        GroupOp::Create => {}
    }
    let total = g.members.len();
    if total == 0 {
        cx.state.set_group(r.group, None);
    }
    changed.sort_unstable();
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

pub(super) fn put_member(batch: &mut WriteBatch, group: u64, user: u64, join: u64) {
    batch.put(
        Table::Member,
        keys::member_key(group, user),
        join.to_be_bytes(),
    );
    batch.put(Table::Member, keys::user_group_key(user, group), Vec::new());
}
