//! sync:R / sync:page (paged pull) and unread:R / unread:A (summary).
//!
//! A pull walks one stream (inbox or group) in pages. Each sync:R names the
//! last sequence id the device holds; the server takes that as the device's
//! acknowledgement and answers with the entries after it. An empty page ends
//! the pull, so a pull of `n` pages costs `n + 1` round trips and needs no
//! separate ack.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Body, fixed_frame};
use crate::{
    error::DecodeError,
    header::{FLAG_PARTIAL, Kind},
    wire::Reader,
};

fixed_frame! {
    /// sync:R: `group u64, after u64, limit u16`.
    SyncR: SyncR {
        /// 0 for the inbox, else the group.
        group: u64,
        /// The device holds everything up to here (and acknowledges it).
        after: u64,
        /// Most entries wanted in the page (the server may send fewer; 0 asks
        /// for the server's default).
        limit: u16,
    }
}

/// Fixed bytes of a page entry before its body.
pub const ENTRY_FIXED: usize = 44;

/// sync:page: `group u64, after u64, head u64, count u16, entries [..]`;
/// each entry is `seq u64, from u64, to u64, msg_id u64, server_time u64,
/// body_len u32, body [body_len]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncPage {
    /// The stream: 0 for the inbox, else the group.
    pub group: u64,
    /// The `after` of the sync:R answered.
    pub after: u64,
    /// The stream's highest sequence id when the page was read.
    pub head: u64,
    /// Number of entries.
    pub count: u16,
    /// The encoded entries; read them with [`SyncPage::entries`].
    pub entries: Bytes,
}

/// One message in a sync page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sequence id in the stream.
    pub seq: u64,
    /// Sending user.
    pub from: u64,
    /// Receiving user, or 0 for a group message.
    pub to: u64,
    /// The sender's msg id.
    pub msg_id: u64,
    /// When the server stored it, ms since the Unix epoch.
    pub server_time: u64,
    /// The content, a slice of the page.
    pub body: Bytes,
}

impl SyncPage {
    /// Starts a page; add entries with [`SyncPage::push`].
    pub fn new(group: u64, after: u64, head: u64) -> SyncPage {
        SyncPage {
            group,
            after,
            head,
            count: 0,
            entries: Bytes::new(),
        }
    }

    /// Appends an entry encoded into `buf`, which collects the entries of
    /// this page; call [`SyncPage::finish`] with it at the end.
    pub fn push(&mut self, buf: &mut BytesMut, e: &Entry) {
        buf.put_u64(e.seq);
        buf.put_u64(e.from);
        buf.put_u64(e.to);
        buf.put_u64(e.msg_id);
        buf.put_u64(e.server_time);
        // Bodies are bounded by the frame limit, far below u32::MAX.
        buf.put_u32(u32::try_from(e.body.len()).unwrap_or(u32::MAX));
        buf.extend_from_slice(&e.body);
        self.count += 1;
    }

    /// Sets the entries collected in `buf`.
    pub fn finish(mut self, buf: BytesMut) -> SyncPage {
        self.entries = buf.freeze();
        self
    }

    /// The entries, in order. Their layout was checked at decode.
    pub fn entries(&self) -> Entries {
        Entries {
            buf: self.entries.clone(),
            left: self.count,
        }
    }

    /// The last sequence id in the page, if it has entries.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries().last().map(|e| e.seq)
    }
}

/// Iterator over a page's entries.
#[derive(Debug, Clone)]
pub struct Entries {
    buf: Bytes,
    left: u16,
}

impl Iterator for Entries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.left == 0 || self.buf.len() < ENTRY_FIXED {
            return None;
        }
        self.left -= 1;
        let seq = self.buf.get_u64();
        let from = self.buf.get_u64();
        let to = self.buf.get_u64();
        let msg_id = self.buf.get_u64();
        let server_time = self.buf.get_u64();
        let n = (self.buf.get_u32() as usize).min(self.buf.len());
        let body = self.buf.split_to(n);
        Some(Entry {
            seq,
            from,
            to,
            msg_id,
            server_time,
            body,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl Body for SyncPage {
    const KIND: Kind = Kind::SyncPage;

    fn load(_flags: u16, body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::KIND, &body);
        let group = r.u64()?;
        let after = r.u64()?;
        let head = r.u64()?;
        let count = r.u16()?;
        let n = r.pos();
        // Walk the entries once so that iterating later cannot fail.
        let mut rest = &body[n..];
        for _ in 0..count {
            if rest.len() < ENTRY_FIXED {
                return Err(DecodeError::Truncated {
                    kind: Some(Self::KIND),
                });
            }
            let mut l = [0u8; 4];
            l.copy_from_slice(&rest[40..44]);
            let len = u32::from_be_bytes(l) as usize;
            rest = rest
                .get(ENTRY_FIXED + len..)
                .ok_or(DecodeError::Truncated {
                    kind: Some(Self::KIND),
                })?;
        }
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                kind: Self::KIND,
                extra: rest.len(),
            });
        }
        Ok(SyncPage {
            group,
            after,
            head,
            count,
            entries: crate::wire::rest(body, n),
        })
    }

    fn body_len(&self) -> usize {
        26 + self.entries.len()
    }

    fn put_body(&self, dst: &mut BytesMut) {
        dst.put_u64(self.group);
        dst.put_u64(self.after);
        dst.put_u64(self.head);
        dst.put_u16(self.count);
        dst.extend_from_slice(&self.entries);
    }
}

fixed_frame! {
    /// unread:R: no body; asks for the unread summary.
    UnreadR: UnreadR {}
}

/// Bytes of one unread entry.
pub const UNREAD_ENTRY: usize = 28;

fn check_unread(r: &Reader<'_>, len: usize) -> Result<(), DecodeError> {
    if !len.is_multiple_of(UNREAD_ENTRY) {
        return Err(r.invalid("entries length"));
    }
    Ok(())
}

/// unread:A: entries of `group u64, peer u64, unread u32, last_seq u64`,
/// and the header flag [`FLAG_PARTIAL`](crate::header::FLAG_PARTIAL) when
/// the summary is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnreadA {
    /// Packed entries; read them with [`UnreadA::iter`].
    pub entries: Bytes,
    /// The server did not read everything, or could not send everything it
    /// read: conversations may be missing and counts may be low.
    pub partial: bool,
}

impl Body for UnreadA {
    const KIND: Kind = Kind::UnreadA;

    fn load(flags: u16, body: Bytes) -> Result<Self, DecodeError> {
        let r = Reader::new(Self::KIND, &body);
        check_unread(&r, body.len())?;
        Ok(UnreadA {
            entries: body,
            partial: flags & FLAG_PARTIAL != 0,
        })
    }

    fn flags(&self) -> u16 {
        if self.partial { FLAG_PARTIAL } else { 0 }
    }

    fn body_len(&self) -> usize {
        self.entries.len()
    }

    fn put_body(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.entries);
    }
}

/// One conversation in the unread summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadEntry {
    /// 0 for a one-to-one conversation, else the group.
    pub group: u64,
    /// The other user of a one-to-one conversation, else 0.
    pub peer: u64,
    /// Messages not yet acknowledged by this device.
    pub unread: u32,
    /// The newest sequence id of the conversation (in the inbox or group).
    pub last_seq: u64,
}

impl UnreadA {
    /// A complete summary of these conversations.
    pub fn from_entries(entries: &[UnreadEntry]) -> UnreadA {
        let mut b = BytesMut::with_capacity(entries.len() * UNREAD_ENTRY);
        for e in entries {
            b.put_u64(e.group);
            b.put_u64(e.peer);
            b.put_u32(e.unread);
            b.put_u64(e.last_seq);
        }
        UnreadA {
            entries: b.freeze(),
            partial: false,
        }
    }

    /// The conversations.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = UnreadEntry> + '_ {
        self.entries
            .chunks_exact(UNREAD_ENTRY)
            .map(|mut c| UnreadEntry {
                group: c.get_u64(),
                peer: c.get_u64(),
                unread: c.get_u32(),
                last_seq: c.get_u64(),
            })
    }
}
