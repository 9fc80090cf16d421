//! The reads that answer a request after the commit: a sync page (within
//! the frame and page budgets), the unread summary, and the senders of a
//! delivered range when memory no longer has them.

use super::*;
use crate::delivery::{rules, state::get_u64};

/// Reads one page: at most `limit` entries, and no more than fit a frame.
pub(super) fn page(
    p: Page,
    state: &mut State,
    store: &dyn Store,
    out: &mut Router,
) -> Result<(), StoreError> {
    let head = state.head(store, p.stream)?;
    let mut sp = SyncPage::new(p.stream.wire_group(), p.after, head);
    let budget = rules::page_budget(state.limits.max_frame);
    let mut buf = BytesMut::new();
    let mut n = 0;
    let mut scan_err = None;
    store.scan(
        Table::Log,
        &keys::log_key(p.stream, p.from.saturating_add(1)),
        &keys::log_key(p.stream, u64::MAX),
        &mut |k, v| {
            let (Some(seq), Some(r)) = (keys::log_key_seq(k), Record::decode(v)) else {
                scan_err = Some(());
                return false;
            };
            if !rules::fits_page(buf.len(), r.body.len(), budget) {
                return false;
            }
            sp.push(
                &mut buf,
                &Entry {
                    seq,
                    from: r.from,
                    to: r.to,
                    msg_id: r.msg_id,
                    server_time: r.time,
                    body: r.body,
                },
            );
            n += 1;
            n < p.limit
        },
    )?;
    if scan_err.is_some() {
        tracing::error!(stream = p.stream.0, "corrupt record in the log");
    }
    out.to_conn(p.conn, sp.finish(buf).to_bytes(), None);
    Ok(())
}

/// The unread summary of one device.
pub(super) fn unread(
    conn: ConnId,
    user: u64,
    device: u32,
    state: &mut State,
    store: &dyn Store,
    out: &mut Router,
) -> Result<(), StoreError> {
    let s = StreamId::inbox(user);
    let cursor = state.cursor(store, s, user, device)?;
    let limit = state.limits.unread_scan_limit;
    let mut news = rules::InboxNews::new(user, cursor);
    store.scan(
        Table::Log,
        &keys::log_key(s, cursor.saturating_add(1)),
        &keys::log_key(s, u64::MAX),
        &mut |k, v| {
            let seq = keys::log_key_seq(k);
            let rec = seq.and(Record::decode(v).map(|r| (r.from, r.to)));
            !news.add(seq.unwrap_or(0), rec, limit)
        },
    )?;
    // The scan stopped at the limit with inbox entries left unread.
    let partial = news.partial(limit, state.head(store, s)?);
    let mut entries = news.entries();
    let mut groups = Vec::new();
    store.scan(
        Table::Member,
        &keys::user_group_key(user, 0),
        &keys::user_group_key(user.saturating_add(1), 0),
        &mut |k, _| {
            if let Some(g) = keys::key_tail_u64(k) {
                groups.push(g);
            }
            true
        },
    )?;
    for g in groups {
        let gs = StreamId::group(g);
        let join = state
            .group(store, g)?
            .and_then(|gr| gr.members.get(&user).map(|j| j.seq()))
            .unwrap_or(0);
        let head = state.head(store, gs)?;
        let cursor = state.cursor(store, gs, user, device)?;
        entries.push(rules::group_news(g, head, cursor, join));
    }
    let summary = rules::unread_summary(entries, partial, state.limits.max_frame);
    out.to_conn(conn, summary.to_bytes(), None);
    Ok(())
}

/// The senders, other than `user`, of seqs `after + 1 ..= to` of `user`'s
/// inbox, read from the log (when memory no longer has them).
pub(super) fn logged_senders(
    store: &dyn Store,
    user: u64,
    after: u64,
    to: u64,
) -> Result<Vec<u64>, StoreError> {
    let s = StreamId::inbox(user);
    let mut senders = AHashSet::new();
    store.scan(
        Table::Log,
        &keys::log_key(s, after.saturating_add(1)),
        &keys::log_key(s, to.saturating_add(1)),
        &mut |_, v| {
            // Only the sender is needed: the record starts with it.
            if let Some(from) = keys::u64_value(v)
                && from != user
            {
                senders.insert(from);
            }
            true
        },
    )?;
    Ok(senders.into_iter().collect())
}

/// The receipts of group message `seq`: how many members have a device
/// past it, and how many read it.
pub(super) fn receipts(
    conn: ConnId,
    req: u64,
    group: u64,
    seq: u64,
    state: &mut State,
    store: &dyn Store,
    out: &mut Router,
) -> Result<(), StoreError> {
    let members: Vec<u64> = state
        .group(store, group)?
        .map(|g| g.members.keys().copied().collect())
        .unwrap_or_default();
    let s = StreamId::group(group);
    let mut delivered_users = AHashSet::new();
    store.scan(
        Table::Cursor,
        &keys::cursor_key(s, 0, 0),
        &keys::cursor_key(StreamId(s.0.saturating_add(1)), 0, 0),
        &mut |k, v| {
            if keys::u64_value(v).unwrap_or(0) >= seq
                && let Some((u, _)) = keys::cursor_key_owner(k)
            {
                delivered_users.insert(u);
            }
            true
        },
    )?;
    let mut read = 0u32;
    let mut delivered = 0u32;
    for m in &members {
        let r = get_u64(store, Table::Meta, &keys::group_read_key(group, *m))?.unwrap_or(0);
        if r >= seq {
            read += 1;
        }
        if r >= seq || delivered_users.contains(m) {
            delivered += 1;
        }
    }
    out.to_conn(
        conn,
        ReceiptsA {
            req,
            group,
            seq,
            members: u32::try_from(members.len()).unwrap_or(u32::MAX),
            delivered,
            read,
        }
        .to_bytes(),
        None,
    );
    Ok(())
}
