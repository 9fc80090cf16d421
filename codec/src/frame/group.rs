//! group:R / group:A (membership) and receipts:R / receipts:A (group
//! receipts, pulled rather than pushed per reader).

use super::fixed_frame;
use crate::{
    error::DecodeError,
    wire::{Reader, iter_ids, pack_ids},
};

/// What a group:R asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GroupOp {
    /// Create a group (id 0: the server picks one) with the listed members;
    /// the creator is always a member.
    Create = 1,
    /// Add the listed users.
    Add = 2,
    /// Remove the listed users (a member may remove itself: leave).
    Remove = 3,
    /// List members after the one listed (none listed: from the start).
    List = 4,
    /// Delete the group: every member leaves at once.
    Delete = 5,
    /// Make the listed members admins.
    Promote = 6,
    /// Make the listed admins plain members again.
    Demote = 7,
    /// Hand the group to the one listed member (the owner becomes an admin).
    Transfer = 8,
    /// The owner and the admins after the one listed (none: from the start).
    Roles = 9,
}

impl GroupOp {
    /// Decodes a wire value.
    pub fn from_u8(v: u8) -> Option<GroupOp> {
        Some(match v {
            1 => GroupOp::Create,
            2 => GroupOp::Add,
            3 => GroupOp::Remove,
            4 => GroupOp::List,
            5 => GroupOp::Delete,
            6 => GroupOp::Promote,
            7 => GroupOp::Demote,
            8 => GroupOp::Transfer,
            9 => GroupOp::Roles,
            _ => return None,
        })
    }
}

fn check_ids(r: &Reader<'_>, len: usize) -> Result<(), DecodeError> {
    if !len.is_multiple_of(8) {
        return Err(r.invalid("member list length"));
    }
    Ok(())
}

fn check_op(op: u8, r: &Reader<'_>) -> Result<(), DecodeError> {
    GroupOp::from_u8(op)
        .map(|_| ())
        .ok_or_else(|| r.invalid("op"))
}

fn check_ids_and_op(r: &Reader<'_>, len: usize) -> Result<(), DecodeError> {
    check_ids(r, len)?;
    // `op` is the byte after the 8-byte request id in both frames.
    check_op(r.peek_at(8), r)
}

fixed_frame! {
    /// group:R: `req u64, op u8, group u64, members [u64..]`.
    GroupR: GroupR {
        /// Request id, echoed in the answer or an error.
        req: u64,
        /// A [`GroupOp`] wire value.
        op: u8,
        /// The group (0 with `Create`: the server picks).
        group: u64,
    }
    tail
    /// Packed big-endian user ids.
    members, check check_ids_and_op
}

fixed_frame! {
    /// group:A: `req u64, op u8, group u64, total u32, members [u64..]`.
    GroupA: GroupA {
        /// The request answered.
        req: u64,
        /// The op answered.
        op: u8,
        /// The group (the new id after `Create`).
        group: u64,
        /// Members in the group after the op.
        total: u32,
    }
    tail
    /// For `List`: a page of members in ascending id order (ask again after
    /// the last for more; an empty page is the end). For `Roles`: the owner
    /// (0 if none), then a page of admins in ascending id order. Otherwise:
    /// the users the op changed.
    members, check check_ids_and_op
}

macro_rules! member_list {
    ($t:ident) => {
        impl $t {
            /// The op, if known.
            pub fn op(&self) -> Option<GroupOp> {
                GroupOp::from_u8(self.op)
            }

            /// The member ids.
            pub fn members(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
                iter_ids(&self.members)
            }

            /// Sets the member ids.
            pub fn with_members(mut self, ids: &[u64]) -> Self {
                self.members = pack_ids(ids);
                self
            }
        }
    };
}
member_list!(GroupR);
member_list!(GroupA);

fixed_frame! {
    /// receipts:R: `req u64, group u64, seq u64`.
    ReceiptsR: ReceiptsR {
        /// Request id.
        req: u64,
        /// The group.
        group: u64,
        /// The group message asked about.
        seq: u64,
    }
}

fixed_frame! {
    /// receipts:A: `req u64, group u64, seq u64, members u32, delivered u32,
    /// read u32`.
    ReceiptsA: ReceiptsA {
        /// The request answered.
        req: u64,
        /// The group.
        group: u64,
        /// The group message asked about.
        seq: u64,
        /// Members of the group now.
        members: u32,
        /// Members whose ack cursor is at or past `seq`.
        delivered: u32,
        /// Members whose read mark is at or past `seq`.
        read: u32,
    }
}
