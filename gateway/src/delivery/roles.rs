//! Roles in a group and who may change what, shared by every backend.
//!
//! A group created by a client is owned by its creator; the owner may make
//! members admins and hand the group to another member. How much a role
//! grants depends on `group_admin`:
//!
//! | `group_admin` | add | remove others | leave | delete | promote, demote, transfer |
//! |---|---|---|---|---|---|
//! | `members` | any member | any member | anyone | any member | the owner |
//! | `roles` | owner, admins | owner: anyone; admins: plain members | anyone but the owner | the owner | the owner |
//! | `api` | no client | no client | no client | no client | no client |
//!
//! The server API may do everything under every setting. Listing members
//! and roles is open to every member.
//!
//! The role is stored with the member's join point, in the top byte of the
//! same u64 ([`Joined`]): a member's role and membership change in one
//! write, and a value written before roles existed reads as a plain member.

use imgate_codec::{ErrorCode, frame::GroupOp};

use super::rules::Refusal;
use crate::config::GroupAdmin;

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A plain member.
    Member,
    /// Manages membership alongside the owner (under `roles`).
    Admin,
    /// The group's one owner.
    Owner,
}

/// Bits of [`Joined`] that hold the join point.
const SEQ_MASK: u64 = (1 << 56) - 1;

/// A member's join point (the log's head when it joined: it sees what
/// comes after) and its role, packed as both backends store them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Joined(u64);

impl Joined {
    /// A member that joined at `seq` with `role`.
    pub fn new(seq: u64, role: Role) -> Joined {
        let r: u64 = match role {
            Role::Member => 0,
            Role::Admin => 1,
            Role::Owner => 2,
        };
        Joined((seq & SEQ_MASK) | (r << 56))
    }

    /// The stored form.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// From the stored form; an unknown role reads as a plain member.
    pub fn from_u64(v: u64) -> Joined {
        Joined(v)
    }

    /// The join point.
    pub fn seq(self) -> u64 {
        self.0 & SEQ_MASK
    }

    /// The role.
    pub fn role(self) -> Role {
        match self.0 >> 56 {
            1 => Role::Admin,
            2 => Role::Owner,
            _ => Role::Member,
        }
    }

    /// The same join point with another role.
    pub fn with_role(self, role: Role) -> Joined {
        Joined::new(self.seq(), role)
    }
}

/// Who asks: the server API, or a member with its id and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The server API.
    Server,
    /// A member of the group.
    Member(u64, Role),
}

fn forbidden(text: &'static str) -> Refusal {
    (ErrorCode::Forbidden, text)
}

/// Whether `actor` may do `op` on a group it belongs to, under `policy`.
/// `role_of` gives the role of a listed user (None: not a member). A
/// transfer to a user that is not a member is refused whoever asks.
pub fn may_act(
    op: GroupOp,
    policy: GroupAdmin,
    actor: Actor,
    listed: &[u64],
    role_of: impl Fn(u64) -> Option<Role>,
) -> Result<(), Refusal> {
    if op == GroupOp::Transfer && listed.first().and_then(|&u| role_of(u)).is_none() {
        return Err((ErrorCode::InvalidRequest, "the new owner is not a member"));
    }
    let Actor::Member(me, role) = actor else {
        return Ok(());
    };
    let owner_only = || {
        if role == Role::Owner {
            Ok(())
        } else {
            Err(forbidden("only the group's owner may do this"))
        }
    };
    match (op, policy) {
        (
            GroupOp::List | GroupOp::Roles | GroupOp::Create,
            GroupAdmin::Members | GroupAdmin::Roles,
        ) => Ok(()),
        (GroupOp::List | GroupOp::Roles, GroupAdmin::Api) => Ok(()),
        (_, GroupAdmin::Api) => Err(forbidden("group membership is managed by the server")),
        (GroupOp::Promote | GroupOp::Demote | GroupOp::Transfer, _) => owner_only(),
        (GroupOp::Add | GroupOp::Remove | GroupOp::Delete, GroupAdmin::Members) => Ok(()),
        (GroupOp::Delete, GroupAdmin::Roles) => owner_only(),
        (GroupOp::Add, GroupAdmin::Roles) => match role {
            Role::Owner | Role::Admin => Ok(()),
            Role::Member => Err(forbidden("only the owner and admins add members")),
        },
        (GroupOp::Remove, GroupAdmin::Roles) => {
            for &u in listed {
                let target = role_of(u);
                let ok = match (u == me, role, target) {
                    (true, Role::Owner, _) => {
                        return Err(forbidden(
                            "the owner may not leave; hand the group over or delete it",
                        ));
                    }
                    (true, _, _) | (false, _, None) | (false, Role::Owner, _) => true,
                    (false, Role::Admin, Some(Role::Member)) => true,
                    (false, _, _) => false,
                };
                if !ok {
                    return Err(forbidden(match role {
                        Role::Admin => "admins remove plain members only",
                        _ => "only the owner and admins remove members",
                    }));
                }
            }
            Ok(())
        }
    }
}

/// The role changes of a promote, demote or transfer on `members`, as
/// (user, new role) pairs for the users that change, ascending; users that
/// are not members are skipped. A transfer names one member: it becomes the
/// owner and the current owner, if any, an admin.
pub fn role_changes(
    op: GroupOp,
    listed: &[u64],
    role_of: impl Fn(u64) -> Option<Role>,
    owner: Option<u64>,
) -> Vec<(u64, Role)> {
    let mut out: Vec<(u64, Role)> = Vec::new();
    match op {
        GroupOp::Promote | GroupOp::Demote => {
            let (from, to) = if op == GroupOp::Promote {
                (Role::Member, Role::Admin)
            } else {
                (Role::Admin, Role::Member)
            };
            for &u in listed {
                if role_of(u) == Some(from) && !out.iter().any(|&(v, _)| v == u) {
                    out.push((u, to));
                }
            }
        }
        GroupOp::Transfer => {
            if let Some(&u) = listed.first()
                && matches!(role_of(u), Some(Role::Member | Role::Admin))
            {
                if let Some(o) = owner {
                    out.push((o, Role::Admin));
                }
                out.push((u, Role::Owner));
            }
        }
        _ => {}
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupAdmin::{Api, Members, Roles};
    use Role::{Admin, Member, Owner};

    /// User 1 owns, 2 is an admin, 3 and 4 are members.
    fn role_of(u: u64) -> Option<Role> {
        match u {
            1 => Some(Owner),
            2 => Some(Admin),
            3 | 4 => Some(Member),
            _ => None,
        }
    }

    fn may(op: GroupOp, policy: GroupAdmin, me: u64, listed: &[u64]) -> bool {
        let actor = Actor::Member(me, role_of(me).unwrap_or(Member));
        may_act(op, policy, actor, listed, role_of).is_ok()
    }

    #[test]
    fn the_role_rides_in_the_top_byte_and_old_values_are_members() {
        let j = Joined::new(77, Admin);
        assert_eq!((j.seq(), j.role()), (77, Admin));
        assert_eq!(Joined::from_u64(j.to_u64()), j);
        assert_eq!(Joined::from_u64(1234).role(), Member);
        assert_eq!(Joined::from_u64(1234).seq(), 1234);
        assert_eq!(j.with_role(Owner).seq(), 77);
        assert_eq!(Joined::from_u64(9 << 56 | 5).role(), Member);
    }

    #[test]
    fn under_roles_the_owner_and_admins_add_and_only_the_owner_deletes() {
        assert!(may(GroupOp::Add, Roles, 1, &[9]));
        assert!(may(GroupOp::Add, Roles, 2, &[9]));
        assert!(!may(GroupOp::Add, Roles, 3, &[9]));
        assert!(may(GroupOp::Delete, Roles, 1, &[]));
        assert!(!may(GroupOp::Delete, Roles, 2, &[]));
        for op in [GroupOp::Promote, GroupOp::Demote, GroupOp::Transfer] {
            assert!(may(op, Roles, 1, &[3]));
            assert!(!may(op, Roles, 2, &[3]));
            assert!(!may(op, Members, 3, &[3]), "the owner's, under members too");
        }
        let to_outsider = may_act(GroupOp::Transfer, Roles, Actor::Server, &[9], role_of);
        assert_eq!(to_outsider.map_err(|e| e.0), Err(ErrorCode::InvalidRequest));
    }

    #[test]
    fn under_roles_admins_remove_plain_members_and_the_owner_cannot_leave() {
        assert!(may(GroupOp::Remove, Roles, 2, &[3, 4]));
        assert!(!may(GroupOp::Remove, Roles, 2, &[3, 1]), "not the owner");
        assert!(!may(GroupOp::Remove, Roles, 2, &[2, 2, 1]));
        assert!(may(GroupOp::Remove, Roles, 2, &[2]), "an admin leaves");
        assert!(may(GroupOp::Remove, Roles, 3, &[3]), "a member leaves");
        assert!(!may(GroupOp::Remove, Roles, 3, &[4]));
        assert!(may(GroupOp::Remove, Roles, 1, &[2, 3]));
        assert!(!may(GroupOp::Remove, Roles, 1, &[1]));
        assert!(
            may(GroupOp::Remove, Roles, 2, &[99]),
            "a non-member is a no-op"
        );
    }

    #[test]
    fn under_members_everyone_manages_and_under_api_nobody_but_the_server() {
        for op in [GroupOp::Add, GroupOp::Remove, GroupOp::Delete] {
            assert!(may(op, Members, 3, &[1]));
            assert!(!may(op, Api, 1, &[3]));
            assert!(may_act(op, Api, Actor::Server, &[1], role_of).is_ok());
        }
        for policy in [Members, Roles, Api] {
            assert!(may(GroupOp::List, policy, 3, &[]));
            assert!(may(GroupOp::Roles, policy, 3, &[]));
        }
    }

    #[test]
    fn role_changes_skip_non_members_and_a_transfer_keeps_the_old_owner_as_admin() {
        assert_eq!(
            role_changes(GroupOp::Promote, &[4, 3, 2, 9, 3], role_of, Some(1)),
            vec![(3, Admin), (4, Admin)]
        );
        assert_eq!(
            role_changes(GroupOp::Demote, &[2, 3], role_of, Some(1)),
            vec![(2, Member)]
        );
        assert_eq!(
            role_changes(GroupOp::Transfer, &[3], role_of, Some(1)),
            vec![(1, Admin), (3, Owner)]
        );
        assert_eq!(
            role_changes(GroupOp::Transfer, &[3], role_of, None),
            vec![(3, Owner)]
        );
        assert!(role_changes(GroupOp::Transfer, &[1], role_of, Some(1)).is_empty());
        assert!(role_changes(GroupOp::Transfer, &[9], role_of, Some(1)).is_empty());
    }
}
