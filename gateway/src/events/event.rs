//! One event, and its JSON: the same bytes whichever backend stored it.
//!
//! An event is encoded once, when it is stored (the embedded outbox, the
//! cluster's event stream); the sender only joins stored objects into a
//! batch, so what the business backend reads is exactly what was made
//! durable.

use base64::Engine as _;
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message was stored.
    Message {
        /// The sender (0: the server API with no user).
        from: u64,
        /// The receiver of a one-to-one message; 0 for a group message.
        to: u64,
        /// The group of a group message; 0 for one-to-one.
        group: u64,
        /// The sender's msg id.
        msg_id: u64,
        /// The sequence id in the receiver's inbox or the group's log.
        seq: u64,
        /// The sequence id of the sender's own copy (0 for a group).
        own_seq: u64,
        /// The body, base64 (standard alphabet, padded).
        body: String,
        /// False when the sender asked for no offline push.
        push: bool,
        /// Recipients with no device connected when it was stored: whom
        /// to send a mobile push. Empty when `push` is false.
        offline: Vec<u64>,
    },
    /// A user's first device connected (to this node).
    Online {
        /// The user.
        user: u64,
        /// The device that connected.
        device: u32,
    },
    /// A user's last device disconnected (from this node).
    Offline {
        /// The user.
        user: u64,
        /// The device that disconnected last.
        device: u32,
        /// `closed`, or `restart` when the node stopped without a word.
        reason: &'static str,
    },
    /// A group's membership or roles changed.
    Group {
        /// The group.
        group: u64,
        /// `create`, `add`, `remove`, `delete`, `promote`, `demote`,
        /// `transfer`.
        op: &'static str,
        /// Who asked (0: the server API).
        by: u64,
        /// The members the change touched (for `create`, all).
        members: Vec<u64>,
    },
}

impl Event {
    /// The event's `type`, as named in `[events] types`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message { .. } => "message",
            Event::Online { .. } => "online",
            Event::Offline { .. } => "offline",
            Event::Group { .. } => "group",
        }
    }

    /// A message event; `offline` is kept only if `push`.
    #[allow(clippy::too_many_arguments)]
    pub fn message(
        from: u64,
        to: u64,
        group: u64,
        msg_id: u64,
        seq: u64,
        own_seq: u64,
        body: &[u8],
        push: bool,
        offline: Vec<u64>,
    ) -> Event {
        Event::Message {
            from,
            to,
            group,
            msg_id,
            seq,
            own_seq,
            body: base64::engine::general_purpose::STANDARD.encode(body),
            push,
            offline: if push { offline } else { Vec::new() },
        }
    }

    /// The JSON object sent: `id`, `time` (Unix ms), `node`, then the
    /// event's own fields.
    pub fn to_json(&self, id: &str, time: u64, node: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            id: &'a str,
            time: u64,
            node: &'a str,
            #[serde(flatten)]
            event: &'a Event,
        }
        // Serializing plain fields into a Vec cannot fail.
        serde_json::to_vec(&Envelope {
            id,
            time,
            node,
            event: self,
        })
        .unwrap_or_default()
    }
}

/// A group op's name in a group event.
pub fn op_name(op: imgate_codec::frame::GroupOp) -> &'static str {
    use imgate_codec::frame::GroupOp;
    match op {
        GroupOp::Create => "create",
        GroupOp::Add => "add",
        GroupOp::Remove => "remove",
        GroupOp::List => "list",
        GroupOp::Delete => "delete",
        GroupOp::Promote => "promote",
        GroupOp::Demote => "demote",
        GroupOp::Transfer => "transfer",
        GroupOp::Roles => "roles",
    }
}

/// A POST body: `{"events":[e1,e2,...]}` from stored objects.
pub fn batch_body<'a>(events: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(e);
    }
    b.extend_from_slice(b"]}");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_event_is_one_flat_json_object() {
        let e = Event::message(1, 2, 0, 5, 3, 4, b"hi", true, vec![2]);
        let j = e.to_json("17", 1000, "a");
        let v: serde_json::Value = serde_json::from_slice(&j).expect("json");
        assert_eq!(v["id"], "17");
        assert_eq!(v["type"], "message");
        assert_eq!(v["time"], 1000);
        assert_eq!(v["node"], "a");
        assert_eq!(v["body"], "aGk=");
        assert_eq!(v["offline"], serde_json::json!([2]));
        assert_eq!(v["push"], true);
    }

    #[test]
    fn no_push_drops_the_offline_list() {
        let e = Event::message(1, 2, 0, 5, 3, 4, b"", false, vec![2]);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json("1", 1, "")).expect("json");
        assert_eq!(v["push"], false);
        assert_eq!(v["offline"], serde_json::json!([]));
    }

    #[test]
    fn a_batch_is_a_json_array_of_the_stored_objects() {
        let a = Event::Online { user: 1, device: 2 }.to_json("1", 1, "");
        let b = Event::Offline {
            user: 1,
            device: 2,
            reason: "closed",
        }
        .to_json("2", 2, "");
        let body = batch_body([a.as_slice(), b.as_slice()].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["events"][1]["type"], "offline");
        assert_eq!(v["events"][1]["reason"], "closed");
        assert_eq!(batch_body(std::iter::empty()), b"{\"events\":[]}");
    }
}
