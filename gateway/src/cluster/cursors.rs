//! Device cursors in the cursor bucket, written one at a time per device
//! and stream (the inbox, or a group's log).
//!
//! A client acknowledges every push, so acks come faster than JetStream
//! writes a replicated key. Each device has at most one write in flight:
//! acks that arrive meanwhile raise the target, and the next write covers
//! them all, so a burst of acks costs one or two writes, never a race of
//! writers against each other's revisions. A cursor only rises: a write is
//! a compare-and-set on the key's revision, so two nodes (during a
//! `replaced` login) never lower what the other wrote.

use std::rc::Rc;

use tokio::sync::oneshot;

use bytes::Bytes;

use super::{
    js::{Bucket, JsError, u64_value},
    names::Names,
    node::Node,
};

/// Writes in flight and waiting, for one device.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The highest cursor asked for.
    target: u64,
    /// Whether a writer task runs.
    running: bool,
    waiters: Vec<oneshot::Sender<Result<u64, String>>>,
    /// The cursor and key revision last read or written.
    known: Option<(u64, u64)>,
}

impl Node {
    /// Raises a device's cursor on the stream (`group` 0: the inbox) to
    /// `to` (never lowers it); returns the cursor after.
    pub(super) async fn raise_cursor(
        self: &Rc<Self>,
        group: u64,
        user: u64,
        device: u32,
        to: u64,
    ) -> Result<u64, JsError> {
        let (tx, rx) = oneshot::channel();
        let spawn = {
            let mut slots = self.cursor_slots.borrow_mut();
            let slot = slots.entry((group, user, device)).or_default();
            slot.target = slot.target.max(to);
            slot.waiters.push(tx);
            !std::mem::replace(&mut slot.running, true)
        };
        if spawn {
            tokio::task::spawn_local(self.clone().write_cursor(group, user, device));
        }
        rx.await
            .map_err(|_| JsError::Unavailable("the node is stopping".into()))?
            .map_err(JsError::Unavailable)
    }

    /// The writer of one device's cursor: until no ack waits. A raise of
    /// an inbox cursor is followed by the delivered receipts it makes.
    async fn write_cursor(self: Rc<Self>, group: u64, user: u64, device: u32) {
        let key = Names::cursor_key(group, user, device);
        let slot_key = (group, user, device);
        loop {
            let (target, known, waiters) = {
                let mut slots = self.cursor_slots.borrow_mut();
                let Some(slot) = slots.get_mut(&slot_key) else {
                    return;
                };
                if slot.waiters.is_empty() {
                    slot.running = false;
                    // Keep what is known while the device is online.
                    let online = self
                        .users
                        .borrow()
                        .get(&user)
                        .is_some_and(|u| !u.sessions.is_empty());
                    if !online {
                        slots.remove(&slot_key);
                    }
                    return;
                }
                (slot.target, slot.known, std::mem::take(&mut slot.waiters))
            };
            let r = self.cas_cursor(&key, target, known).await;
            if let (0, Ok((before, after, _))) = (group, &r)
                && after > before
            {
                tokio::task::spawn_local(self.clone().delivered(user, *before, *after));
            }
            let mut slots = self.cursor_slots.borrow_mut();
            let slot = slots.entry(slot_key).or_default();
            match r {
                Ok((_, after, rev)) => {
                    let k = (after, rev);
                    slot.known = Some(k);
                    for tx in waiters {
                        let _ = tx.send(Ok(k.0));
                    }
                }
                Err(e) => {
                    slot.known = None;
                    let why = e.to_string();
                    for tx in waiters {
                        let _ = tx.send(Err(why.clone()));
                    }
                }
            }
        }
    }

    /// The cursor of a device on a stream, read from the bucket.
    pub(super) async fn read_cursor(
        &self,
        group: u64,
        user: u64,
        device: u32,
    ) -> Result<u64, JsError> {
        if let Some(slot) = self.cursor_slots.borrow().get(&(group, user, device))
            && let Some((c, _)) = slot.known
        {
            return Ok(c);
        }
        let e = self
            .js
            .get_key(Bucket::Cursors, &Names::cursor_key(group, user, device))
            .await?;
        Ok(e.value.as_deref().and_then(u64_value).unwrap_or(0))
    }

    /// One compare-and-set raise, re-reading the key when another writer
    /// got there first; returns the cursor before and after, and the
    /// revision after.
    async fn cas_cursor(
        &self,
        key: &str,
        to: u64,
        mut known: Option<(u64, u64)>,
    ) -> Result<(u64, u64, u64), JsError> {
        let mut conflicts = 0u32;
        loop {
            let (cur, rev) = match known.take() {
                Some(k) => k,
                None => {
                    let e = self.js.get_key(Bucket::Cursors, key).await?;
                    (
                        e.value.as_deref().and_then(u64_value).unwrap_or(0),
                        e.revision,
                    )
                }
            };
            if to <= cur {
                return Ok((cur, cur, rev));
            }
            let v = Bytes::copy_from_slice(&to.to_be_bytes());
            match self.js.put_key(Bucket::Cursors, key, v, rev).await {
                Ok(r) => return Ok((cur, to, r)),
                Err(JsError::Conflict) => {
                    conflicts += 1;
                    if conflicts > 50 {
                        return Err(JsError::Unavailable("the cursor kept moving".into()));
                    }
                    if conflicts > 3 {
                        // A replica behind the write we lost to.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
