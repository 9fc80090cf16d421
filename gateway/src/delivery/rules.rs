//! The rules of the delivery requests that need no store: what makes a
//! msg:R, a read mark, a receipts request or a member list acceptable, and
//! how much of a stream fits in one sync page. Shared by every backend that
//! keeps the protocol's promises (the embedded one here; one on another
//! engine uses the same functions, so both refuse the same requests with the
//! same codes). Each refusal is the error code and a text for humans.

use crate::config::GroupAdmin;
use imgate_codec::{
    ErrorCode, HEADER_LEN,
    frame::{ENTRY_FIXED, GroupOp, MsgR, ReadR, UNREAD_ENTRY, UnreadA, UnreadEntry},
};

/// A refused request: its error code and a detail for humans.
pub type Refusal = (ErrorCode, &'static str);

/// The largest message body a server with frames of `max_frame` bytes
/// accepts: the largest that still fits a msg:N and a one-entry sync page,
/// so that every stored message can be delivered both ways.
pub fn max_body(max_frame: usize) -> usize {
    max_frame.saturating_sub(78)
}

/// A msg:R from `sender`, before anything is stored.
pub fn check_msg(m: &MsgR, sender: u64, max_body: usize) -> Result<(), Refusal> {
    if m.msg_id == 0 {
        return Err((ErrorCode::InvalidRequest, "msg id 0"));
    }
    if m.body.len() > max_body {
        return Err((ErrorCode::InvalidRequest, "body too large"));
    }
    if m.group == 0 && m.to == sender {
        return Err((ErrorCode::InvalidRequest, "to yourself"));
    }
    Ok(())
}

/// The peer field of a read:R from `reader`: a one-to-one mark names
/// another user, a group mark none.
pub fn check_read_peer(r: &ReadR, reader: u64) -> Result<(), Refusal> {
    let ok = if r.group == 0 {
        r.peer != 0 && r.peer != reader
    } else {
        r.peer == 0
    };
    if ok {
        Ok(())
    } else {
        Err((ErrorCode::InvalidRequest, "bad read peer"))
    }
}

/// A seq a read mark or a receipts request names: 1 to the stream's head.
pub fn check_seq(seq: u64, head: u64) -> Result<(), Refusal> {
    if seq == 0 || seq > head {
        Err((ErrorCode::InvalidRequest, "seq out of range"))
    } else {
        Ok(())
    }
}

/// The member list of a group:R: add, remove, promote and demote name
/// someone, transfer exactly one user, delete nobody; no list names user 0
/// (the one id of list and roles may be 0: from the start), list and roles
/// name at most one id.
pub fn check_members(op: GroupOp, listed: &[u64]) -> Result<(), Refusal> {
    match op {
        GroupOp::Add | GroupOp::Remove | GroupOp::Promote | GroupOp::Demote
            if listed.is_empty() =>
        {
            Err((ErrorCode::InvalidRequest, "no members listed"))
        }
        GroupOp::Transfer if listed.len() != 1 => {
            Err((ErrorCode::InvalidRequest, "transfer names one member"))
        }
        GroupOp::Delete if !listed.is_empty() => {
            Err((ErrorCode::InvalidRequest, "delete lists nobody"))
        }
        GroupOp::List | GroupOp::Roles if listed.len() > 1 => {
            Err((ErrorCode::InvalidRequest, "list takes one id"))
        }
        GroupOp::List | GroupOp::Roles => Ok(()),
        _ if listed.contains(&0) => Err((ErrorCode::InvalidRequest, "user id 0")),
        _ => Ok(()),
    }
}

/// Whether a group:R may change anything at all, before the group is read:
/// the server API always may; under `group_admin = "api"` a client only
/// lists. What a member's role allows is [`super::roles::may_act`].
pub fn may_manage(op: GroupOp, server: bool, admin: GroupAdmin) -> Result<(), Refusal> {
    match (op, server, admin) {
        (GroupOp::List | GroupOp::Roles, _, _)
        | (_, true, _)
        | (_, false, GroupAdmin::Members | GroupAdmin::Roles) => Ok(()),
        (_, false, GroupAdmin::Api) => Err((
            ErrorCode::Forbidden,
            "group membership is managed by the server",
        )),
    }
}

/// Bytes of entries one sync page may carry in a frame of `max_frame`.
pub fn page_budget(max_frame: usize) -> usize {
    max_frame.saturating_sub(HEADER_LEN + 26)
}

/// Whether an entry with a body of `body_len` bytes still fits a page that
/// holds `used` bytes of entries.
pub fn fits_page(used: usize, body_len: usize, budget: usize) -> bool {
    used + ENTRY_FIXED + body_len <= budget
}

/// The inbox part of an unread summary, read from the device's cursor on
/// and counted the same way by every backend: per conversation, the
/// messages not from the user and the newest seq.
#[derive(Debug)]
pub struct InboxNews {
    user: u64,
    by_peer: ahash::AHashMap<u64, (u32, u64)>,
    scanned: usize,
    last: u64,
}

impl InboxNews {
    /// The news of `user`'s inbox above `cursor`.
    pub fn new(user: u64, cursor: u64) -> InboxNews {
        InboxNews {
            user,
            by_peer: ahash::AHashMap::new(),
            scanned: 0,
            last: cursor,
        }
    }

    /// One record read, at `seq`, from `from` to `to` (None: unreadable,
    /// counted as read). Returns whether `limit` records are read.
    pub fn add(&mut self, seq: u64, from_to: Option<(u64, u64)>, limit: usize) -> bool {
        if let Some((from, to)) = from_to {
            let peer = if from == self.user { to } else { from };
            let e = self.by_peer.entry(peer).or_insert((0, 0));
            if from != self.user {
                e.0 += 1;
            }
            e.1 = seq;
            self.last = seq;
        }
        self.scanned += 1;
        self.scanned >= limit
    }

    /// Whether the read stopped at `limit` records with the inbox's
    /// `head` not reached.
    pub fn partial(&self, limit: usize, head: u64) -> bool {
        self.scanned >= limit && self.last < head
    }

    /// One entry per conversation with news.
    pub fn entries(self) -> Vec<UnreadEntry> {
        self.by_peer
            .into_iter()
            .map(|(peer, (unread, last_seq))| UnreadEntry {
                group: 0,
                peer,
                unread,
                last_seq,
            })
            .collect()
    }
}

/// The unread entry of a group whose log is at `head`, for a device at
/// `cursor` in it of a member that joined at `join`: everything above
/// both, own messages included.
pub fn group_news(group: u64, head: u64, cursor: u64, join: u64) -> UnreadEntry {
    UnreadEntry {
        group,
        peer: 0,
        unread: u32::try_from(head.saturating_sub(cursor.max(join))).unwrap_or(u32::MAX),
        last_seq: head,
    }
}

/// The unread summary of `entries`, newest conversations first, as many
/// as fit a frame of `max_frame`; `PARTIAL` if some did not fit or
/// `partial` says the reading stopped short.
pub fn unread_summary(mut entries: Vec<UnreadEntry>, partial: bool, max_frame: usize) -> UnreadA {
    entries.sort_by_key(|e| std::cmp::Reverse(e.last_seq));
    let fit = max_frame.saturating_sub(HEADER_LEN) / UNREAD_ENTRY;
    let cut = entries.len() > fit;
    entries.truncate(fit);
    let mut summary = UnreadA::from_entries(&entries);
    summary.partial = partial || cut;
    summary
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(msg_id: u64, group: u64, to: u64, body: usize) -> MsgR {
        MsgR {
            no_push: false,
            msg_id,
            group,
            to,
            retry: false,
            body: Bytes::from(vec![0; body]),
        }
    }

    #[test]
    fn a_msg_r_needs_an_id_a_body_that_fits_and_someone_else() {
        let max = max_body(65_536);
        assert_eq!(max, 65_458);
        assert_eq!(check_msg(&msg(1, 0, 2, max), 1, max), Ok(()));
        assert_eq!(
            check_msg(&msg(0, 0, 2, 1), 1, max).map_err(|r| r.1),
            Err("msg id 0")
        );
        assert_eq!(
            check_msg(&msg(1, 0, 2, max + 1), 1, max).map_err(|r| r.1),
            Err("body too large")
        );
        assert_eq!(
            check_msg(&msg(1, 0, 1, 1), 1, max).map_err(|r| r.1),
            Err("to yourself")
        );
        assert_eq!(
            check_msg(&msg(1, 9, 0, 1), 1, max),
            Ok(()),
            "a group message"
        );
    }

    #[test]
    fn read_marks_name_a_peer_only_one_to_one_and_a_seq_in_the_stream() {
        let r = |group, peer| ReadR {
            group,
            peer,
            seq: 1,
        };
        assert_eq!(check_read_peer(&r(0, 2), 1), Ok(()));
        assert!(check_read_peer(&r(0, 0), 1).is_err());
        assert!(check_read_peer(&r(0, 1), 1).is_err());
        assert_eq!(check_read_peer(&r(5, 0), 1), Ok(()));
        assert!(check_read_peer(&r(5, 2), 1).is_err());
        assert!(check_seq(0, 3).is_err());
        assert_eq!(check_seq(3, 3), Ok(()));
        assert!(check_seq(4, 3).is_err());
    }

    #[test]
    fn member_lists() {
        assert!(check_members(GroupOp::Add, &[]).is_err());
        assert!(check_members(GroupOp::Remove, &[]).is_err());
        assert_eq!(check_members(GroupOp::Create, &[]), Ok(()));
        assert!(check_members(GroupOp::Create, &[3, 0]).is_err());
        assert_eq!(check_members(GroupOp::List, &[0]), Ok(()));
        assert!(check_members(GroupOp::List, &[1, 2]).is_err());
        assert_eq!(check_members(GroupOp::Delete, &[]), Ok(()));
        assert!(check_members(GroupOp::Delete, &[3]).is_err());
        assert!(check_members(GroupOp::Transfer, &[]).is_err());
        assert!(check_members(GroupOp::Transfer, &[3, 4]).is_err());
        assert!(check_members(GroupOp::Transfer, &[0]).is_err());
        assert!(check_members(GroupOp::Promote, &[]).is_err());
        assert!(check_members(GroupOp::Demote, &[0]).is_err());
        assert_eq!(check_members(GroupOp::Roles, &[0]), Ok(()));
    }

    #[test]
    fn who_manages_membership() {
        use GroupAdmin::{Api, Members, Roles};
        for op in [
            GroupOp::Create,
            GroupOp::Add,
            GroupOp::Remove,
            GroupOp::Delete,
        ] {
            assert_eq!(may_manage(op, false, Members), Ok(()));
            assert_eq!(may_manage(op, false, Roles), Ok(()));
            assert_eq!(may_manage(op, true, Api), Ok(()));
            assert_eq!(
                may_manage(op, false, Api).map_err(|e| e.0),
                Err(ErrorCode::Forbidden)
            );
        }
        assert_eq!(may_manage(GroupOp::List, false, Api), Ok(()));
        assert_eq!(may_manage(GroupOp::Roles, false, Api), Ok(()));
    }

    #[test]
    fn inbox_news_counts_what_others_sent_per_conversation() {
        let mut n = InboxNews::new(7, 10);
        assert!(!n.add(11, Some((2, 7)), 4));
        assert!(!n.add(12, Some((7, 2)), 4), "an own copy: not counted");
        assert!(!n.add(13, None, 4), "unreadable: read past");
        assert!(n.add(14, Some((3, 7)), 4));
        assert!(n.partial(4, 20));
        assert!(!n.partial(4, 14));
        let mut e: Vec<(u64, u32, u64)> = n
            .entries()
            .iter()
            .map(|e| (e.peer, e.unread, e.last_seq))
            .collect();
        e.sort_unstable();
        assert_eq!(e, vec![(2, 1, 12), (3, 1, 14)]);
    }

    #[test]
    fn group_news_counts_from_the_cursor_or_the_join_point() {
        let e = group_news(9, 20, 5, 12);
        assert_eq!((e.group, e.peer, e.unread, e.last_seq), (9, 0, 8, 20));
        assert_eq!(group_news(9, 20, 15, 12).unread, 5);
        assert_eq!(group_news(9, 20, 25, 0).unread, 0);
    }

    #[test]
    fn an_unread_summary_keeps_the_newest_that_fit() {
        let e = |peer, last_seq| UnreadEntry {
            group: 0,
            peer,
            unread: 1,
            last_seq,
        };
        let max_frame = HEADER_LEN + 2 * UNREAD_ENTRY;
        let s = unread_summary(vec![e(1, 5), e(2, 9), e(3, 7)], false, max_frame);
        let peers: Vec<u64> = s.iter().map(|x| x.peer).collect();
        assert_eq!((peers, s.partial), (vec![2, 3], true));
        let s = unread_summary(vec![e(1, 5)], false, max_frame);
        assert!(!s.partial);
        assert!(unread_summary(vec![e(1, 5)], true, max_frame).partial);
    }

    #[test]
    fn a_page_holds_what_fits_its_frame() {
        let budget = page_budget(1024);
        assert_eq!(budget, 1024 - 34);
        assert!(fits_page(0, budget - ENTRY_FIXED, budget));
        assert!(!fits_page(1, budget - ENTRY_FIXED, budget));
    }
}
