//! `imgate check`'s reading of a store: every entry of every table read
//! (the engine verifies each block's checksum on the way), and the
//! delivery tables' own rules checked: every message record decodes and
//! lies within its stream's head, and no cursor is above its stream's head.

use ahash::AHashMap;

use super::keys::{self, Record, StreamId};
use crate::store::{Store, StoreError, Table};

/// Problems of one kind: how many, and the first few as (stream, seq).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// How many.
    pub count: u64,
    /// The first [`SHOWN`] of them: the stream's wire form (`inbox U` or
    /// `group G`) and a sequence id.
    pub first: Vec<(String, u64)>,
}

/// Problems listed by example.
pub const SHOWN: usize = 10;

impl Found {
    fn add(&mut self, s: StreamId, seq: u64) {
        self.count += 1;
        if self.first.len() < SHOWN {
            self.first.push((stream_name(s), seq));
        }
    }
}

/// `inbox U` or `group G`.
pub fn stream_name(s: StreamId) -> String {
    match s.wire_group() {
        0 => format!("inbox {}", s.0),
        g => format!("group {g}"),
    }
}

/// What a check read and found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries read per table, in [`Table::ALL`] order.
    pub entries: Vec<(&'static str, u64)>,
    /// Streams with a head.
    pub streams: u64,
    /// Message records that do not decode.
    pub unreadable: Found,
    /// Message records above their stream's head.
    pub above_head: Found,
    /// Cursors above their stream's head (seq: the cursor).
    pub cursors_ahead: Found,
}

impl Report {
    /// Whether nothing was found.
    pub fn clean(&self) -> bool {
        self.unreadable.count + self.above_head.count + self.cursors_ahead.count == 0
    }
}

/// Reads all of `store`.
pub fn check(store: &dyn Store) -> Result<Report, StoreError> {
    let mut r = Report::default();
    let mut heads: AHashMap<StreamId, u64> = AHashMap::new();
    store.scan(
        Table::Meta,
        &keys::head_key(StreamId(0)),
        keys::HEAD_KEYS_END,
        &mut |k, v| {
            if let (Some(s), Some(h)) = (keys::head_key_stream(k), keys::u64_value(v)) {
                heads.insert(s, h);
            }
            true
        },
    )?;
    r.streams = heads.len() as u64;
    let head = |s: StreamId| heads.get(&s).copied().unwrap_or(0);
    for t in Table::ALL {
        let mut n = 0u64;
        store.scan(t, &[], &[0xff; 32], &mut |k, v| {
            n += 1;
            match t {
                Table::Log => {
                    let s = keys::key_stream(k).unwrap_or(StreamId(0));
                    let seq = keys::log_key_seq(k).unwrap_or(0);
                    if Record::decode(v).is_none() {
                        r.unreadable.add(s, seq);
                    } else if seq > head(s) {
                        r.above_head.add(s, seq);
                    }
                }
                Table::Cursor => {
                    let s = keys::key_stream(k);
                    if let (Some(s), Some(c)) = (s, keys::u64_value(v))
                        && c > head(s)
                    {
                        r.cursors_ahead.add(s, c);
                    }
                }
                _ => {}
            }
            true
        })?;
        r.entries.push((t.name(), n));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, WriteBatch};

    #[test]
    fn a_record_that_does_not_decode_or_lies_past_the_head_is_found() {
        let store = MemoryStore::default();
        let s = StreamId::inbox(7);
        let mut b = WriteBatch::default();
        b.put(Table::Meta, keys::head_key(s), 2u64.to_be_bytes());
        let mut rec = Vec::new();
        Record {
            from: 1,
            to: 7,
            msg_id: 1,
            time: 1,
            body: bytes::Bytes::from_static(b"hi"),
        }
        .encode_into(&mut rec);
        b.put(Table::Log, keys::log_key(s, 1), &rec);
        b.put(Table::Log, keys::log_key(s, 2), [1, 2, 3]);
        b.put(Table::Log, keys::log_key(s, 3), &rec);
        b.put(Table::Cursor, keys::cursor_key(s, 7, 1), 5u64.to_be_bytes());
        store.write(&b).expect("write");
        let r = check(&store).expect("check");
        assert!(!r.clean());
        assert_eq!(r.streams, 1);
        assert_eq!(r.unreadable.first, vec![("inbox 7".to_string(), 2)]);
        assert_eq!(r.above_head.first, vec![("inbox 7".to_string(), 3)]);
        assert_eq!(r.cursors_ahead.first, vec![("inbox 7".to_string(), 5)]);
        assert!(r.entries.contains(&("log", 3)), "{:?}", r.entries);
    }
}
