//! Groups on the cluster backend: membership in the groups bucket, and
//! group:R.
//!
//! A group's members are one key, `g.<group>`: every member and the
//! sequence id of the group's log it joined at. Every change is a
//! compare-and-set on that key, so two nodes changing one group never
//! lose each other's change, and the size limit holds. Each user also has
//! a key `u.<user>` listing its groups, which a node reads at login to
//! know which groups to subscribe to for the user. It is written after
//! the group's key, and only grows on an add: a group listed there that
//! no longer has the user is harmless, because every use checks the
//! group's own key (a node delivers a group's messages only to the
//! members its copy of `g.<group>` names). A user missing from a group's
//! list (an add whose second write failed) still syncs the group; its
//! next add repairs the list.
//!
//! A membership change is announced on the group's push subject (nodes
//! holding members read the key again) and, for each added user, on the
//! user's push subject (nodes holding the user start feeding it the
//! group).

use std::{collections::BTreeMap, rc::Rc};

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::{
    Body, ErrorCode,
    frame::{GroupA, GroupOp, GroupR},
};

use super::{
    js::{Bucket, CAS_TRIES, Entry, JsError, Update, u64_value},
    names::Names,
    node::Node,
    requests::{Failed, Refuse},
    wire::NodeMsg,
};
use crate::{
    conn_id::ConnId,
    delivery::{
        roles::{self, Actor, Joined, Role},
        rules,
    },
};

/// The members of a group, the sequence id each joined at and its role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Members(BTreeMap<u64, Joined>);

impl Members {
    /// The wire form: (user, joined at and role) pairs, big-endian, in user
    /// order.
    pub(super) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.0.len() * 16);
        for (&u, &j) in &self.0 {
            b.put_u64(u);
            b.put_u64(j.to_u64());
        }
        b.freeze()
    }

    /// None for anything that is not a list of pairs.
    pub(super) fn decode(v: &[u8]) -> Option<Members> {
        if !v.len().is_multiple_of(16) {
            return None;
        }
        let mut m = BTreeMap::new();
        for pair in v.chunks_exact(16) {
            m.insert(u64_value(pair)?, Joined::from_u64(u64_value(&pair[8..])?));
        }
        Some(Members(m))
    }

    /// The sequence id `user` joined at, if a member.
    pub(super) fn join(&self, user: u64) -> Option<u64> {
        self.0.get(&user).map(|j| j.seq())
    }

    /// The role of `user`, if a member.
    pub(super) fn role(&self, user: u64) -> Option<Role> {
        self.0.get(&user).map(|j| j.role())
    }

    /// The owner, if the group has one.
    pub(super) fn owner(&self) -> Option<u64> {
        self.0
            .iter()
            .find(|(_, j)| j.role() == Role::Owner)
            .map(|(&u, _)| u)
    }

    /// Whether `user` is a member that joined before `seq` was stored.
    pub(super) fn joined_before(&self, user: u64, seq: u64) -> bool {
        self.join(user).is_some_and(|j| j < seq)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn users(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.keys().copied()
    }
}

/// A user's groups: u64 ids, big-endian, ascending.
fn encode_ids(ids: &[u64]) -> Bytes {
    let mut b = BytesMut::with_capacity(ids.len() * 8);
    for &g in ids {
        b.put_u64(g);
    }
    b.freeze()
}

fn decode_ids(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8).filter_map(u64_value).collect()
}

impl Node {
    /// A group's members from the bucket; None if it does not exist.
    pub(super) async fn read_members(&self, group: u64) -> Result<Option<Members>, JsError> {
        let e = self
            .js
            .get_key(Bucket::Groups, &Names::group_key(group))
            .await?;
        members_of(&e)
    }

    /// The sequence id `user` joined `group` at; refuses a group that does
    /// not exist (`not_found`) or a user who is not a member (`forbidden`).
    /// A member is read from this node's copy while it feeds the group;
    /// anything else from the bucket.
    pub(super) async fn membership(&self, group: u64, user: u64) -> Result<u64, Failed> {
        let cached = self
            .groups
            .borrow()
            .get(&group)
            .and_then(|g| g.members.as_ref().map(|m| (m.len(), m.join(user))));
        // A copy that does not name the user may predate the user's add:
        // the bucket decides.
        let (len, join) = match cached {
            Some((len, Some(j))) => (len, Some(j)),
            _ => match self.read_members(group).await? {
                Some(m) => (m.len(), m.join(user)),
                None => (0, None),
            },
        };
        match join {
            Some(j) => Ok(j),
            None if len == 0 => Err(Refuse(ErrorCode::NotFound, "no such group").into()),
            None => Err(Refuse(ErrorCode::Forbidden, "not a member").into()),
        }
    }

    /// Refuses a group that does not exist (`not_found`).
    pub(super) async fn exists(&self, group: u64) -> Result<u64, Failed> {
        match self.read_members(group).await? {
            Some(_) => Ok(0),
            None => Err(Refuse(ErrorCode::NotFound, "no such group").into()),
        }
    }

    /// The groups listed for `user` (a superset of its groups).
    pub(super) async fn user_groups(&self, user: u64) -> Result<Vec<u64>, JsError> {
        let e = self
            .js
            .get_key(Bucket::Groups, &Names::user_groups_key(user))
            .await?;
        Ok(e.value.as_deref().map(decode_ids).unwrap_or_default())
    }

    /// Answers a group:R.
    pub(super) async fn group_request(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        r: GroupR,
    ) -> Result<(), Failed> {
        let Some(op) = r.op() else {
            return Err(Refuse(ErrorCode::InvalidRequest, "unknown group op").into());
        };
        let listed: Vec<u64> = r.members().collect();
        // The server API (`crate::replies`) manages any group and is no
        // member of the groups it creates.
        let server = conn.core == crate::replies::API_CORE;
        rules::check_members(op, &listed)
            .and_then(|()| rules::may_manage(op, server, self.limits.group_admin))
            .map_err(|(c, t)| Refuse(c, t))?;
        let max = self.limits.max_group_size;
        let (group, total, changed) = match op {
            GroupOp::Create => {
                // A client owns what it creates; the server API creates on
                // behalf of the user it names, or for nobody (user 0).
                let owner = (user != 0).then_some(user);
                let mut all = listed.clone();
                all.extend(owner);
                all.sort_unstable();
                all.dedup();
                if all.len() > max {
                    return Err(Refuse(ErrorCode::InvalidRequest, "group too large").into());
                }
                let group = self.create(r.group, &all, owner).await?;
                self.joined(group, &all).await?;
                self.group_event(group, op, user, all.clone()).await;
                (group, all.len(), all)
            }
            GroupOp::List | GroupOp::Roles => {
                let m = self.read_members(r.group).await?;
                let m = if server {
                    m.as_ref()
                        .ok_or(Refuse(ErrorCode::NotFound, "no such group"))?
                } else {
                    check_member(m.as_ref(), user)?
                };
                let after = listed.first().copied().unwrap_or(0);
                let fit = (self.limits.max_frame.saturating_sub(64) / 8).min(1000);
                let page: Vec<u64> = if op == GroupOp::List {
                    m.users().filter(|&u| u > after).take(fit).collect()
                } else {
                    let admins = m
                        .users()
                        .filter(|&u| u > after && m.role(u) == Some(Role::Admin));
                    std::iter::once(m.owner().unwrap_or(0))
                        .chain(admins.take(fit.saturating_sub(1)))
                        .collect()
                };
                (r.group, m.len(), page)
            }
            _ => {
                let (total, changed) = self.change(r.group, user, server, op, &listed).await?;
                if op == GroupOp::Add {
                    self.joined(r.group, &changed).await?;
                }
                if !changed.is_empty() {
                    self.clone().tell_group(r.group, NodeMsg::Members).await;
                    self.group_event(r.group, op, user, changed.clone()).await;
                }
                if op == GroupOp::Delete {
                    // The answer names nobody; the members' lists of groups
                    // are tidied after it (a stale entry is harmless).
                    let (node, group) = (self.clone(), r.group);
                    tokio::task::spawn_local(async move {
                        for u in changed {
                            if let Err(e) = node.list_group(u, group, false).await {
                                tracing::warn!(user = u, group, error = %e, "group list not updated");
                            }
                        }
                    });
                    (r.group, total, Vec::new())
                } else {
                    (r.group, total, changed)
                }
            }
        };
        let answer = GroupA {
            req: r.req,
            op: op as u8,
            group,
            total: u32::try_from(total).unwrap_or(u32::MAX),
            members: Bytes::new(),
        }
        .with_members(&changed);
        self.router
            .borrow_mut()
            .to_conn(conn, answer.to_bytes(), None);
        Ok(())
    }

    /// Creates a group of `members` (sorted) owned by `owner`, as `wanted`
    /// or, for 0, under the next free id; returns its id.
    async fn create(
        &self,
        wanted: u64,
        members: &[u64],
        owner: Option<u64>,
    ) -> Result<u64, Failed> {
        let log = |g| self.js.names().group_log(g);
        let new_members = |head: u64| {
            let role = |u| {
                if Some(u) == owner {
                    Role::Owner
                } else {
                    Role::Member
                }
            };
            Members(
                members
                    .iter()
                    .map(|&u| (u, Joined::new(head, role(u))))
                    .collect(),
            )
        };
        if wanted != 0 {
            let key = Names::group_key(wanted);
            let e = self.js.get_key(Bucket::Groups, &key).await?;
            if members_of(&e)?.is_some() {
                return Err(Refuse(ErrorCode::InvalidRequest, "group exists").into());
            }
            // A group id used before starts its members at its log's head.
            let (head, _) = self.js.head(&log(wanted)).await?;
            return match self
                .js
                .put_key(Bucket::Groups, &key, new_members(head).encode(), e.revision)
                .await
            {
                Ok(_) => Ok(wanted),
                Err(JsError::Conflict) => {
                    Err(Refuse(ErrorCode::InvalidRequest, "group exists").into())
                }
                Err(e) => Err(e.into()),
            };
        }
        for _ in 0..CAS_TRIES {
            let id = self.next_group_id().await?;
            let key = Names::group_key(id);
            let (head, _) = self.js.head(&log(id)).await?;
            match self
                .js
                .put_key(Bucket::Groups, &key, new_members(head).encode(), 0)
                .await
            {
                Ok(_) => return Ok(id),
                // Taken by a create that named it: the next one.
                Err(JsError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(JsError::Unavailable("no free group id".into()).into())
    }

    /// Takes the next group id from the counter in the meta bucket.
    async fn next_group_id(&self) -> Result<u64, JsError> {
        self.js
            .update_key(Bucket::Meta, "groups.next", |e| {
                let id = e.value.as_deref().and_then(u64_value).unwrap_or(1).max(1);
                let next = Bytes::copy_from_slice(&(id + 1).to_be_bytes());
                Ok::<_, JsError>(Update::Write(next, id))
            })
            .await
    }

    /// Changes membership or roles (`op`: add, remove, delete, promote,
    /// demote, transfer) as `by` asks, a member or the server; returns the
    /// members after and the users changed, ascending.
    async fn change(
        &self,
        group: u64,
        by: u64,
        server: bool,
        op: GroupOp,
        listed: &[u64],
    ) -> Result<(usize, Vec<u64>), Failed> {
        let key = Names::group_key(group);
        for _ in 0..CAS_TRIES {
            let e = self.js.get_key(Bucket::Groups, &key).await?;
            let m = members_of(&e)?;
            let mut m = if server {
                m.ok_or(Refuse(ErrorCode::NotFound, "no such group"))?
            } else {
                check_member(m.as_ref(), by)?.clone()
            };
            let actor = match m.role(by) {
                Some(role) if !server => Actor::Member(by, role),
                _ => Actor::Server,
            };
            roles::may_act(op, self.limits.group_admin, actor, listed, |u| m.role(u))
                .map_err(|(c, t)| Refuse(c, t))?;
            let mut changed: Vec<u64> = Vec::new();
            match op {
                GroupOp::Add => {
                    let mut new: Vec<u64> = listed
                        .iter()
                        .copied()
                        .filter(|u| m.join(*u).is_none())
                        .collect();
                    new.sort_unstable();
                    new.dedup();
                    if m.len() + new.len() > self.limits.max_group_size {
                        return Err(Refuse(ErrorCode::InvalidRequest, "group too large").into());
                    }
                    // A new member sees what comes after it joined.
                    let (head, _) = self.js.head(&self.js.names().group_log(group)).await?;
                    for u in new {
                        m.0.insert(u, Joined::new(head, Role::Member));
                        changed.push(u);
                    }
                }
                GroupOp::Remove => {
                    for &u in listed {
                        if m.0.remove(&u).is_some() {
                            changed.push(u);
                        }
                    }
                    changed.sort_unstable();
                    changed.dedup();
                }
                GroupOp::Delete => {
                    changed = m.users().collect();
                    m.0.clear();
                }
                _ => {
                    let owner = m.owner();
                    for (u, role) in roles::role_changes(op, listed, |u| m.role(u), owner) {
                        if let Some(j) = m.0.get_mut(&u) {
                            *j = j.with_role(role);
                            changed.push(u);
                        }
                    }
                }
            }
            if changed.is_empty() {
                return Ok((m.len(), changed));
            }
            match self
                .js
                .put_key(Bucket::Groups, &key, m.encode(), e.revision)
                .await
            {
                Ok(_) => {
                    if op == GroupOp::Remove {
                        for &u in &changed {
                            if let Err(e) = self.list_group(u, group, false).await {
                                tracing::warn!(user = u, group, error = %e, "group list not updated");
                            }
                        }
                    }
                    return Ok((m.len(), changed));
                }
                Err(JsError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(JsError::Unavailable("the group kept changing".into()).into())
    }

    /// Lists `group` for each of `users` and tells their nodes.
    async fn joined(self: &Rc<Self>, group: u64, users: &[u64]) -> Result<(), JsError> {
        for &u in users {
            self.list_group(u, group, true).await?;
            self.clone().tell(u, NodeMsg::Joined { group }).await;
        }
        Ok(())
    }

    /// Adds `group` to (or removes it from) `user`'s list of groups.
    async fn list_group(&self, user: u64, group: u64, add: bool) -> Result<(), JsError> {
        let key = Names::user_groups_key(user);
        self.js
            .update_key(Bucket::Groups, &key, |e| {
                let mut ids = e.value.as_deref().map(decode_ids).unwrap_or_default();
                match (ids.binary_search(&group), add) {
                    (Ok(_), true) | (Err(_), false) => return Ok::<_, JsError>(Update::Keep(())),
                    (Err(i), true) => ids.insert(i, group),
                    (Ok(i), false) => {
                        ids.remove(i);
                    }
                }
                Ok(Update::Write(encode_ids(&ids), ()))
            })
            .await
    }
}

/// The members in a key read from the bucket; a group with none does not
/// exist.
fn members_of(e: &Entry) -> Result<Option<Members>, JsError> {
    match e.value.as_deref() {
        None => Ok(None),
        Some(v) => {
            let m = Members::decode(v).ok_or(JsError::Corrupt(e.revision))?;
            Ok((m.len() > 0).then_some(m))
        }
    }
}

/// The members, if `user` is one of them.
fn check_member(m: Option<&Members>, user: u64) -> Result<&Members, Failed> {
    match m {
        None => Err(Refuse(ErrorCode::NotFound, "no such group").into()),
        Some(m) if m.join(user).is_none() => {
            Err(Refuse(ErrorCode::Forbidden, "not a member").into())
        }
        Some(m) => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_refuse_a_torn_value() {
        let m = Members(
            [
                (3, Joined::new(0, Role::Owner)),
                (9, Joined::new(12, Role::Member)),
            ]
            .into_iter()
            .collect(),
        );
        let b = m.encode();
        assert_eq!(Members::decode(&b), Some(m.clone()));
        assert_eq!(Members::decode(&b[..b.len() - 1]), None);
        assert!(m.joined_before(9, 13));
        assert!(!m.joined_before(9, 12), "joined at 12: sees 13 on");
        assert!(!m.joined_before(4, 100), "not a member");
        assert_eq!(m.users().collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(
            (m.owner(), m.role(9), m.role(4)),
            (Some(3), Some(Role::Member), None)
        );
    }

    #[test]
    fn a_users_groups_round_trip() {
        assert_eq!(
            decode_ids(&encode_ids(&[1, 5, 1 << 40])),
            vec![1, 5, 1 << 40]
        );
        assert!(decode_ids(&[]).is_empty());
    }

    #[test]
    fn an_empty_group_does_not_exist() {
        let e = Entry {
            value: Some(Bytes::new()),
            revision: 4,
        };
        assert_eq!(members_of(&e).ok(), Some(None));
        let torn = Entry {
            value: Some(Bytes::from_static(&[1, 2, 3])),
            revision: 5,
        };
        assert!(members_of(&torn).is_err());
    }
}
