//! unread:R on the cluster backend: the device's news per conversation,
//! as the embedded backend counts it (section 5.9 of the protocol).
//!
//! The inbox is read from the device's cursor, at most
//! `unread_scan_limit` records; each group the user is in counts its head
//! minus the device's cursor there (no read of the log).

use std::rc::Rc;

use imgate_codec::Body;

use super::{node::Node, requests::Failed};
use crate::{
    conn_id::ConnId,
    delivery::{keys::Record, rules},
};

impl Node {
    /// Answers an unread:R.
    pub(super) async fn unread(
        self: &Rc<Self>,
        conn: ConnId,
        user: u64,
        device: u32,
    ) -> Result<(), Failed> {
        let cursor = self.read_cursor(0, user, device).await?;
        let (head, _) = self.inbox_head(user).await?;
        let limit = self.limits.unread_scan_limit;
        let mut news = rules::InboxNews::new(user, cursor);
        if cursor < head {
            let subject = self.js.names().inbox(user).0;
            let hint = self
                .users
                .borrow()
                .get(&user)
                .and_then(|u| u.feed.hint_below(cursor));
            let mut start = self.locate(&subject, cursor, hint).await?;
            'read: loop {
                let recs = self.js.read(&subject, start, 512, 1 << 20).await?;
                if recs.is_empty() {
                    break;
                }
                for r in recs {
                    start = r.stream_seq + 1;
                    if r.seq <= cursor {
                        continue;
                    }
                    let rec = Record::decode(&r.payload).map(|rec| (rec.from, rec.to));
                    if news.add(r.seq, rec, limit) || r.seq >= head {
                        break 'read;
                    }
                }
            }
        }
        // The scan stopped at the limit with inbox entries left unread.
        let partial = news.partial(limit, head);
        let mut entries = news.entries();
        for g in self.user_groups(user).await? {
            let Some(members) = self.read_members(g).await? else {
                continue;
            };
            let Some(join) = members.join(user) else {
                continue;
            };
            let (head, _) = self.stream_head(user, g).await?;
            let cursor = self.read_cursor(g, user, device).await?;
            entries.push(rules::group_news(g, head, cursor, join));
        }
        let summary = rules::unread_summary(entries, partial, self.limits.max_frame);
        self.router
            .borrow_mut()
            .to_conn(conn, summary.to_bytes(), None);
        Ok(())
    }
}
