//! Where everything of one service lives in JetStream: stream, bucket and
//! subject names, the partition of a user, and the message ids that make
//! JetStream drop a retransmitted write.
//!
//! A user's inbox is the subject `<prefix>.<p>.u.<user>` of stream
//! `<prefix>_<p>`, where `p` is the user's partition; its newest record is
//! its head (the record carries its user-level sequence id in a header).
//! Pushes and control messages to the nodes that hold a user travel on the
//! core subject `<prefix>.push.u.<user>`, which no stream captures.
//!
//! A group's log is the subject `<prefix>.<p>.g.<group>` (the partition of
//! the group id), stored once; its pushes go once to the core subject
//! `<prefix>.push.g.<group>`, which every node holding a member subscribes
//! to. Membership, receipt marks and cursors are keys of three buckets:
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `<prefix>_cursors` | `u.<user>.<device>`, `g.<group>.<user>.<device>` | the device's cursor (u64) |
//! | `<prefix>_marks` | `m.<sender>.<peer>` | (delivered, read) of sender's messages to peer; exists once sender wrote to peer |
//! | `<prefix>_marks` | `r.<group>.<user>` | the member's read mark (u64) |
//! | `<prefix>_groups` | `g.<group>` | the members and the seq each joined at |
//! | `<prefix>_groups` | `u.<user>` | the groups a user may be in (a superset: checked against `g.<group>`) |
//! | `<prefix>_meta` | `partitions`, `groups.next` | the partition count; the next group id to give out |
//! | `<prefix>_meta` | `purge.<p>` | the lease on sweeping partition `p`: holder token u64, expiry ms u64 |
//! | `<prefix>_meta` | `events.sender` | the lease on sending events to the webhook: holder token u64, expiry ms u64 |
//! | `<prefix>_meta` | `presence.lost` | the lease on clearing lost nodes' presence keys: holder token u64, expiry ms u64 |
//! | `<prefix>_presence` | `<node>.<user>` | the device that made the user online on the node (u32); only with `[events]` |
//! | `<prefix>_nodes` | `<node>` | this run's start, unix ms (u64), kept alive while the node runs; only with `[events]` |
//!
//! Events to the business backend (`[events]`) are the stream
//! `<prefix>_EVENTS` on subjects `<prefix>.ev.<type>`, read through its
//! durable consumer `webhook`.

/// The stream a log subject is: a user's inbox or a group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// The inbox of this user.
    Inbox(u64),
    /// The log of this group.
    Group(u64),
}

/// The names of one service (one stream prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
    partitions: u32,
}

/// The header carrying a record's sequence id in its stream (the user's
/// inbox or the group's log), decimal.
pub const SEQ_HEADER: &str = "Im-Seq";

impl Names {
    /// Names under `prefix` (already validated) over `partitions`.
    pub fn new(prefix: &str, partitions: u32) -> Names {
        Names {
            prefix: prefix.to_string(),
            partitions: partitions.max(1),
        }
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a user: a fixed mix of the id, so that consecutive
    /// ids spread evenly, identical on every node and every version.
    pub fn partition(&self, user: u64) -> u32 {
        (mix(user) % u64::from(self.partitions)) as u32
    }

    /// The stream of partition `p`.
    pub fn stream(&self, p: u32) -> String {
        format!("{}_{p}", self.prefix)
    }

    /// The subjects stream `p` captures.
    pub fn stream_subjects(&self, p: u32) -> String {
        format!("{}.{p}.>", self.prefix)
    }

    /// A user's inbox subject and its stream.
    pub fn inbox(&self, user: u64) -> (String, String) {
        let p = self.partition(user);
        (format!("{}.{p}.u.{user}", self.prefix), self.stream(p))
    }

    /// What a subject of stream `p` is: None for anything that is not an
    /// inbox or a group's log of this service's partition `p`.
    pub fn parse_log(&self, p: u32, subject: &str) -> Option<Log> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(p.to_string().as_str())?
            .strip_prefix('.')?;
        let (kind, id) = rest.split_once('.')?;
        // Only the canonical form: "u.007" is not the inbox of user 7.
        let n = id.parse::<u64>().ok().filter(|n| n.to_string() == id)?;
        match kind {
            "u" => Some(Log::Inbox(n)),
            "g" => Some(Log::Group(n)),
            _ => None,
        }
    }

    /// The core subject of pushes and control messages for a user's nodes.
    pub fn push(&self, user: u64) -> String {
        format!("{}.push.u.{user}", self.prefix)
    }

    /// The subject a revocation (or its end) reaches every node on.
    pub fn revoked(&self) -> String {
        format!("{}.revoked", self.prefix)
    }

    /// A revocation's key in the meta bucket.
    pub fn revocation_key(user: u64, device: u32) -> String {
        format!("revoked.{user}.{device}")
    }

    /// The subject every node answers with its online counts.
    pub fn census(&self) -> String {
        format!("{}.census", self.prefix)
    }

    /// A group's log subject.
    pub fn group_log(&self, group: u64) -> String {
        let p = self.partition(group);
        format!("{}.{p}.g.{group}", self.prefix)
    }

    /// The log subject of a stream: the user's inbox (`group` 0) or the
    /// group's log.
    pub fn log(&self, user: u64, group: u64) -> String {
        if group == 0 {
            self.inbox(user).0
        } else {
            self.group_log(group)
        }
    }

    /// The core subject of a group's pushes and membership notices.
    pub fn group_push(&self, group: u64) -> String {
        format!("{}.push.g.{group}", self.prefix)
    }

    /// The bucket of receipt marks.
    pub fn marks_bucket(&self) -> String {
        format!("{}_marks", self.prefix)
    }

    /// The bucket of group memberships.
    pub fn groups_bucket(&self) -> String {
        format!("{}_groups", self.prefix)
    }

    /// The bucket of device cursors.
    pub fn cursors_bucket(&self) -> String {
        format!("{}_cursors", self.prefix)
    }

    /// The bucket of the service's fixed settings (the partition count).
    pub fn meta_bucket(&self) -> String {
        format!("{}_meta", self.prefix)
    }

    /// The key of the lease on sweeping partition `p`.
    pub fn purge_lease_key(p: u32) -> String {
        format!("purge.{p}")
    }

    /// The key of a device's cursor on a user's inbox (`group` 0) or on
    /// a group's log.
    pub fn cursor_key(group: u64, user: u64, device: u32) -> String {
        if group == 0 {
            format!("u.{user}.{device}")
        } else {
            format!("g.{group}.{user}.{device}")
        }
    }

    /// The key of the receipt marks of `sender`'s messages to `peer`.
    pub fn mark_key(sender: u64, peer: u64) -> String {
        format!("m.{sender}.{peer}")
    }

    /// The key of a member's read mark in a group.
    pub fn group_read_key(group: u64, user: u64) -> String {
        format!("r.{group}.{user}")
    }

    /// The key of a group's members.
    pub fn group_key(group: u64) -> String {
        format!("g.{group}")
    }

    /// The key of a user's groups.
    pub fn user_groups_key(user: u64) -> String {
        format!("u.{user}")
    }

    /// The stream of events to the business backend.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.prefix)
    }

    /// The subjects the events stream captures.
    pub fn events_subjects(&self) -> String {
        format!("{}.ev.>", self.prefix)
    }

    /// The subject of an event of kind `kind` (`message`, `online`...).
    pub fn event_subject(&self, kind: &str) -> String {
        format!("{}.ev.{kind}", self.prefix)
    }

    /// The bucket of who is online on which node (for the offline
    /// recipients of message events).
    pub fn presence_bucket(&self) -> String {
        format!("{}_presence", self.prefix)
    }

    /// The bucket of live nodes: a key per node, refreshed while it runs
    /// and expiring when it stops (only with `[events]`).
    pub fn nodes_bucket(&self) -> String {
        format!("{}_nodes", self.prefix)
    }

    /// The key of the lease on clearing the presence of lost nodes.
    pub const LOST_LEASE_KEY: &'static str = "presence.lost";

    /// The key saying `user` has a device connected to node `node`.
    pub fn presence_key(node: &str, user: u64) -> String {
        format!("{node}.{user}")
    }

    /// The (node, user) of a presence key; None for anything else.
    pub fn parse_presence_key(key: &str) -> Option<(&str, u64)> {
        let (node, user) = key.rsplit_once('.')?;
        let n = user.parse::<u64>().ok().filter(|n| n.to_string() == user)?;
        (!node.is_empty()).then_some((node, n))
    }

    /// The key of the lease on reading the events stream for the webhook.
    pub const EVENTS_LEASE_KEY: &'static str = "events.sender";

    /// The durable consumer the webhook senders read.
    pub const WEBHOOK_CONSUMER: &'static str = "webhook";

    /// The JetStream message id of a group message.
    pub fn group_msg_id(sender: u64, msg_id: u64) -> String {
        format!("{sender}:{msg_id}:g")
    }

    /// The JetStream message id of the receiver's copy of a one-to-one
    /// message, and of the sender's own copy: a retransmit within the
    /// dedup window is dropped by JetStream, whichever node sends it.
    pub fn msg_ids(sender: u64, msg_id: u64) -> (String, String) {
        (format!("{sender}:{msg_id}"), format!("{sender}:{msg_id}:o"))
    }
}

/// A fixed 64-bit mix (the splitmix64 finaliser).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_fixed_and_spread() {
        let n = Names::new("IM", 16);
        // Fixed forever: a change would move every user's inbox.
        assert_eq!(n.partition(1), mix(1) as u32 % 16);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
        let mut counts = [0u32; 16];
        for u in 1..=16_000 {
            counts[n.partition(u) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn names_of_a_user() {
        let n = Names::new("IM", 4);
        let p = n.partition(42);
        assert_eq!(n.inbox(42), (format!("IM.{p}.u.42"), format!("IM_{p}")));
        assert_eq!(n.stream_subjects(p), format!("IM.{p}.>"));
        assert_eq!(n.push(42), "IM.push.u.42");
        assert_eq!(Names::msg_ids(7, 9), ("7:9".into(), "7:9:o".into()));
        assert_eq!(Names::cursor_key(0, 7, 2), "u.7.2");
        assert_eq!(Names::cursor_key(5, 7, 2), "g.5.7.2");
        let g = n.partition(9);
        assert_eq!(n.group_log(9), format!("IM.{g}.g.9"));
        assert_eq!(n.log(42, 0), n.inbox(42).0);
        assert_eq!(n.log(42, 9), n.group_log(9));
        assert_eq!(n.group_push(9), "IM.push.g.9");
        assert_eq!(Names::mark_key(1, 2), "m.1.2");
        assert_eq!(Names::group_read_key(9, 2), "r.9.2");
        assert_eq!(Names::purge_lease_key(3), "purge.3");
        assert_eq!(n.events_stream(), "IM_EVENTS");
        assert_eq!(n.events_subjects(), "IM.ev.>");
        assert_eq!(n.event_subject("message"), "IM.ev.message");
        assert_eq!(n.presence_bucket(), "IM_presence");
        assert_eq!(n.nodes_bucket(), "IM_nodes");
        assert_eq!(Names::presence_key("a.b", 7), "a.b.7");
        assert_eq!(Names::parse_presence_key("a.b.7"), Some(("a.b", 7)));
        for bad in ["7", ".7", "a.07", "a.x", "a."] {
            assert_eq!(Names::parse_presence_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_subjects_parse_back() {
        let n = Names::new("IM", 4);
        let (inbox, _) = n.inbox(42);
        let p = n.partition(42);
        assert_eq!(n.parse_log(p, &inbox), Some(Log::Inbox(42)));
        let g = n.partition(9);
        assert_eq!(n.parse_log(g, &n.group_log(9)), Some(Log::Group(9)));
        // Another partition, prefix or kind, or not a canonical number.
        assert_eq!(n.parse_log(p + 1, &inbox), None);
        assert_eq!(Names::new("IMX", 4).parse_log(p, &inbox), None);
        for bad in [
            "IM.0.x.1",
            "IM.0.u.",
            "IM.0.u.01",
            "IM.0.u.1.2",
            "IM.0.u.-1",
            "IM.0",
        ] {
            assert_eq!(n.parse_log(0, bad), None, "{bad}");
        }
    }
}
