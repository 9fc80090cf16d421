//! Key and value layouts of the delivery tables.
//!
//! All integers are big-endian so that key order is numeric order.
//!
//! | table  | key                                   | value                                   |
//! |--------|---------------------------------------|-----------------------------------------|
//! | Log    | stream u64, seq u64                   | from u64, to u64, msg_id u64, time u64, body |
//! | Cursor | stream u64, user u64, device u32      | acked seq u64                           |
//! | Dedup  | epoch u64, sender u64, msg_id u64     | group u64, seq u64, own_seq u64, time u64 |
//! | Meta   | b'd', user u64, device u32            | (empty): a device with a cursor         |
//! | Meta   | b'e', stream u64                      | (empty): a stream with a message        |
//! | Meta   | b'h', stream u64                      | head seq u64                            |
//! | Meta   | b'f', stream u64                      | lowest seq not purged u64               |
//! | Meta   | b'r', sender u64, peer u64            | delivered u64, read u64                 |
//! | Meta   | b'g', group u64, user u64             | read seq u64                            |
//! | Meta   | b"next_group"                         | next group id u64                       |
//! | Meta   | b'x', user u64, device u32            | revoked until, Unix ms u64              |
//! | Meta   | b"purge_index"                        | (empty): the b'd' and b'e' keys are complete |
//! | Meta   | b'o', user u64                        | device u32: a user online here (presence events) |
//! | Meta   | b"Events.head", b"Events.cursor", b"Events.epoch" | u64 (`crate::events::outbox`) |
//! | Event  | seq u64                               | an event's JSON                         |
//! | Member | b'm', group u64, user u64             | join seq u64                            |
//! | Member | b'u', user u64, group u64             | (empty)                                 |
//!
//! The b'd' and b'e' keys are written once each, when a device's first
//! cursor or a stream's first message is: the purge sweep finds streams
//! and devices through them, because heads and cursors are rewritten on
//! every message and ack, and a range over keys rewritten that often walks
//! every version the store still keeps of them.
//!
//! A stream id is a user's inbox or a group's log: the top bit tells which,
//! so inboxes and groups never collide and each is one key range.

use bytes::{Buf, Bytes};

const GROUP_BIT: u64 = 1 << 63;

/// A stream: one user's inbox or one group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// A user's inbox.
    pub fn inbox(user: u64) -> StreamId {
        StreamId(user & !GROUP_BIT)
    }

    /// A group's log.
    pub fn group(group: u64) -> StreamId {
        StreamId(group | GROUP_BIT)
    }

    /// The wire `group` field of this stream (0 for an inbox).
    pub fn wire_group(self) -> u64 {
        if self.0 & GROUP_BIT != 0 {
            self.0 & !GROUP_BIT
        } else {
            0
        }
    }
}

/// A Log key.
pub fn log_key(s: StreamId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&s.0.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The stream of a Log or Cursor key (its first 8 bytes).
pub fn key_stream(k: &[u8]) -> Option<StreamId> {
    u64_value(k).map(StreamId)
}

/// The seq of a Log key.
pub fn log_key_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(8..16)?.try_into().ok()?))
}

/// A Cursor key.
pub fn cursor_key(s: StreamId, user: u64, device: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&s.0.to_be_bytes());
    k[8..16].copy_from_slice(&user.to_be_bytes());
    k[16..].copy_from_slice(&device.to_be_bytes());
    k
}

/// A Dedup key: the window epoch first, so whole expired epochs are one
/// key range to delete.
pub fn dedup_key(epoch: u64, sender: u64, msg_id: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&epoch.to_be_bytes());
    k[8..16].copy_from_slice(&sender.to_be_bytes());
    k[16..].copy_from_slice(&msg_id.to_be_bytes());
    k
}

/// A head key in Meta.
pub fn head_key(s: StreamId) -> [u8; 9] {
    let mut k = [b'h'; 9];
    k[1..].copy_from_slice(&s.0.to_be_bytes());
    k
}

/// The end (exclusive) of all head keys in Meta.
pub const HEAD_KEYS_END: &[u8] = b"i";

/// A stream key in Meta: the stream has had a message.
pub fn stream_key(s: StreamId) -> [u8; 9] {
    let mut k = [b'e'; 9];
    k[1..].copy_from_slice(&s.0.to_be_bytes());
    k
}

/// The end (exclusive) of all stream keys in Meta.
pub const STREAM_KEYS_END: &[u8] = b"f";

/// The stream of a stream key.
pub fn stream_key_stream(k: &[u8]) -> Option<StreamId> {
    if k.first() != Some(&b'e') {
        return None;
    }
    Some(StreamId(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?)))
}

/// The Meta key of a user online on this gateway.
pub fn online_key(user: u64) -> [u8; 9] {
    let mut k = [b'o'; 9];
    k[1..].copy_from_slice(&user.to_be_bytes());
    k
}

/// The user of an online key.
pub fn online_key_user(k: &[u8]) -> Option<u64> {
    if k.len() != 9 || k[0] != b'o' {
        return None;
    }
    Some(u64::from_be_bytes(k[1..].try_into().ok()?))
}

/// A revocation key in Meta.
pub fn revocation_key(user: u64, device: u32) -> [u8; 13] {
    let mut k = device_key(user, device);
    k[0] = b'x';
    k
}

/// The (user, device) of a revocation key.
pub fn revocation_key_owner(k: &[u8]) -> Option<(u64, u32)> {
    if k.len() != 13 || k[0] != b'x' {
        return None;
    }
    Some((
        u64::from_be_bytes(k[1..9].try_into().ok()?),
        u32::from_be_bytes(k[9..].try_into().ok()?),
    ))
}

/// A device key in Meta: the device has a cursor in some stream. Its first
/// 9 bytes are the user's prefix.
pub fn device_key(user: u64, device: u32) -> [u8; 13] {
    let mut k = [b'd'; 13];
    k[1..9].copy_from_slice(&user.to_be_bytes());
    k[9..].copy_from_slice(&device.to_be_bytes());
    k
}

/// The device of a device key.
pub fn device_key_device(k: &[u8]) -> Option<u32> {
    if k.len() != 13 {
        return None;
    }
    Some(u32::from_be_bytes(k.get(9..13)?.try_into().ok()?))
}

/// The Meta key saying that stream and device keys exist for every stream
/// and cursor (stores written before they existed get them at start).
pub const PURGE_INDEX_KEY: &[u8] = b"purge_index";

/// The stream of a head key.
pub fn head_key_stream(k: &[u8]) -> Option<StreamId> {
    if k.first() != Some(&b'h') {
        return None;
    }
    Some(StreamId(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?)))
}

/// A purge-floor key in Meta: every seq below its value was purged.
pub fn floor_key(s: StreamId) -> [u8; 9] {
    let mut k = [b'f'; 9];
    k[1..].copy_from_slice(&s.0.to_be_bytes());
    k
}

/// The least key above every key that starts with `prefix` (None if there
/// is none: the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A receipt-mark key in Meta: what `peer` received and read of `sender`'s
/// conversation with it.
pub fn receipt_key(sender: u64, peer: u64) -> [u8; 17] {
    let mut k = [b'r'; 17];
    k[1..9].copy_from_slice(&sender.to_be_bytes());
    k[9..].copy_from_slice(&peer.to_be_bytes());
    k
}

/// A group read-mark key in Meta.
pub fn group_read_key(group: u64, user: u64) -> [u8; 17] {
    let mut k = [b'g'; 17];
    k[1..9].copy_from_slice(&group.to_be_bytes());
    k[9..].copy_from_slice(&user.to_be_bytes());
    k
}

/// The Meta key of the group id counter.
pub const NEXT_GROUP_KEY: &[u8] = b"next_group";

/// A membership key (group -> user) in Member.
pub fn member_key(group: u64, user: u64) -> [u8; 17] {
    let mut k = [b'm'; 17];
    k[1..9].copy_from_slice(&group.to_be_bytes());
    k[9..].copy_from_slice(&user.to_be_bytes());
    k
}

/// The reverse membership key (user -> group) in Member.
pub fn user_group_key(user: u64, group: u64) -> [u8; 17] {
    let mut k = [b'u'; 17];
    k[1..9].copy_from_slice(&user.to_be_bytes());
    k[9..].copy_from_slice(&group.to_be_bytes());
    k
}

/// The last u64 of a key (user of a member key, group of a reverse key).
pub fn key_tail_u64(k: &[u8]) -> Option<u64> {
    let n = k.len().checked_sub(8)?;
    Some(u64::from_be_bytes(k.get(n..)?.try_into().ok()?))
}

/// The (user, device) of a Cursor key.
pub fn cursor_key_owner(k: &[u8]) -> Option<(u64, u32)> {
    let user = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    let device = u32::from_be_bytes(k.get(16..20)?.try_into().ok()?);
    Some((user, device))
}

/// The server time of a stored record, read without decoding the rest.
pub fn record_time(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(24..32)?.try_into().ok()?))
}

/// Reads a u64 value.
pub fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sender.
    pub from: u64,
    /// Receiver of a one-to-one message, 0 for a group message.
    pub to: u64,
    /// The sender's msg id.
    pub msg_id: u64,
    /// Server time, ms since the Unix epoch.
    pub time: u64,
    /// Content.
    pub body: Bytes,
}

/// Bytes of a record before its body.
pub const RECORD_FIXED: usize = 32;

impl Record {
    /// Encodes into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(RECORD_FIXED + self.body.len());
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.msg_id.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// Decodes a stored record; None if it is corrupt.
    pub fn decode(v: &[u8]) -> Option<Record> {
        if v.len() < RECORD_FIXED {
            return None;
        }
        let mut b = v;
        Some(Record {
            from: b.get_u64(),
            to: b.get_u64(),
            msg_id: b.get_u64(),
            time: b.get_u64(),
            body: Bytes::copy_from_slice(b),
        })
    }
}

/// The answer remembered for a (sender, msg id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// 0 for one-to-one, else the group.
    pub group: u64,
    /// Receiver-side seq.
    pub seq: u64,
    /// Seq in the sender's inbox (0 for groups).
    pub own_seq: u64,
    /// Server time.
    pub time: u64,
    /// What the message was ([`digest`]), so that a msg id reused for
    /// another message is told apart from a retransmission; 0 in entries
    /// written before it was kept (they match anything).
    pub digest: u64,
}

impl Answer {
    /// Encodes.
    pub fn encode(&self) -> [u8; 40] {
        let mut v = [0u8; 40];
        v[..8].copy_from_slice(&self.group.to_be_bytes());
        v[8..16].copy_from_slice(&self.seq.to_be_bytes());
        v[16..24].copy_from_slice(&self.own_seq.to_be_bytes());
        v[24..32].copy_from_slice(&self.time.to_be_bytes());
        v[32..].copy_from_slice(&self.digest.to_be_bytes());
        v
    }

    /// Decodes; None if corrupt.
    pub fn decode(v: &[u8]) -> Option<Answer> {
        if v.len() != 32 && v.len() != 40 {
            return None;
        }
        let mut b = v;
        Some(Answer {
            group: b.get_u64(),
            seq: b.get_u64(),
            own_seq: b.get_u64(),
            time: b.get_u64(),
            digest: if b.is_empty() { 0 } else { b.get_u64() },
        })
    }

    /// The msg:A of this answer: the same frame to the first msg:R and to
    /// every retransmission.
    pub fn msg_a(&self, msg_id: u64) -> imgate_codec::frame::MsgA {
        imgate_codec::frame::MsgA {
            msg_id,
            group: self.group,
            seq: self.seq,
            own_seq: self.own_seq,
            server_time: self.time,
        }
    }

    /// Whether a msg:R with this digest is a retransmission of the message
    /// answered.
    pub fn matches(&self, digest: u64) -> bool {
        self.digest == 0 || self.digest == digest
    }
}

/// A digest of what a msg:R asks for (where it goes and its body), stable
/// across restarts because it is stored with the dedup entry: the first 8
/// bytes of a SHA-256, never 0.
pub fn digest(group: u64, to: u64, body: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(group.to_be_bytes());
    h.update(to.to_be_bytes());
    h.update(body);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_bound_exactly_their_prefix() {
        assert_eq!(prefix_end(b"h"), Some(b"i".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let k = cursor_key(StreamId::inbox(u64::MAX), u64::MAX, u32::MAX);
        let end = prefix_end(&k[..16]).expect("end");
        assert!(k.as_slice() < end.as_slice());
        assert_eq!(
            head_key_stream(&head_key(StreamId::group(5))),
            Some(StreamId::group(5))
        );
        assert_eq!(head_key_stream(&floor_key(StreamId::group(5))), None);
    }

    #[test]
    fn inbox_and_group_streams_never_collide_and_keys_sort_numerically() {
        assert_ne!(StreamId::inbox(5), StreamId::group(5));
        assert_eq!(StreamId::group(5).wire_group(), 5);
        assert_eq!(StreamId::inbox(5).wire_group(), 0);
        let s = StreamId::inbox(1);
        assert!(log_key(s, 2) < log_key(s, 10));
        assert!(log_key(s, u64::MAX) < log_key(StreamId::inbox(2), 0));
        assert_eq!(log_key_seq(&log_key(s, 77)), Some(77));
    }

    #[test]
    fn records_and_answers_round_trip_and_corruption_is_detected() {
        let r = Record {
            from: 1,
            to: 2,
            msg_id: 3,
            time: 4,
            body: Bytes::from_static(b"hello"),
        };
        let mut v = Vec::new();
        r.encode_into(&mut v);
        assert_eq!(Record::decode(&v), Some(r));
        assert_eq!(Record::decode(&v[..10]), None);
        let a = Answer {
            group: 0,
            seq: 9,
            own_seq: 8,
            time: 7,
            digest: digest(0, 2, b"hi"),
        };
        assert_eq!(Answer::decode(&a.encode()), Some(a));
        assert_eq!(Answer::decode(&[0; 31]), None);
        // An entry written without a digest matches any message.
        let old = Answer::decode(&a.encode()[..32]).expect("32 bytes decode");
        assert_eq!(old.digest, 0);
        assert!(old.matches(digest(0, 3, b"other")));
    }

    #[test]
    fn the_digest_tells_recipient_and_body_apart() {
        let d = digest(0, 2, b"hi");
        assert!(d != 0);
        assert_eq!(d, digest(0, 2, b"hi"));
        assert_ne!(d, digest(0, 3, b"hi"));
        assert_ne!(d, digest(2, 0, b"hi"));
        assert_ne!(d, digest(0, 2, b"ho"));
    }
}
