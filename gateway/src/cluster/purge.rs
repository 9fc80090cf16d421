//! Deleting what no device will ask for again, on the cluster backend:
//! records every reader acknowledged, and records older than the
//! retention period. The rules are the embedded backend's
//! (`delivery::purge`); what differs is that many nodes share the logs.
//!
//! ```text
//!  every node, every interval, for each partition p:
//!    lease purge.<p> in <prefix>_meta (compare-and-set) ── held by another: skip p
//!    batched direct get of <prefix>.<p>.> from where the last sweep of p ended
//!    per subject: the run of records that may go, from the subject's oldest
//!    per run: one $JS.API.STREAM.PURGE.<prefix>_<p> {"filter": subject, "seq": S}
//! ```
//!
//! **Who sweeps.** Every node runs the sweeper; a node sweeps the
//! partitions whose lease (key `purge.<p>`: holder token, expiry) it holds
//! or can take: absent, expired, or its own, taken and renewed at each
//! sweep with a compare-and-set. A lease lasts [`LEASE_INTERVALS`] sweep
//! intervals, so the partitions of a node that died are swept by another
//! soon after. The lease only saves work; it is not what makes the purge
//! safe. Every delete below is safe on its own, so two nodes that both
//! think they hold a lease (clocks far apart) only do the work twice.
//!
//! **What may go.** A record may go once JetStream stored it longer ago
//! than the dedup window (a retransmit's answer is read back from the
//! stored record by its stream sequence, see [`append`](super::append)),
//! and if it is older than `retention_ms` (when not 0) or, with
//! `purge_acked`, at or below its subject's acked floor. For each subject
//! a sweep deletes the run of such records from the subject's oldest one;
//! the first record that must stay ends the run, as in the embedded purge
//! (records of a subject are in sequence-id order and, near enough, in
//! time order). A run goes in one purge request: the subject's records
//! below the stream sequence of the first record kept, a bound that is
//! never above the subject's head as the stream leader reports it. The
//! head carries the sequence id the next append continues from, so it
//! stays, even past retention, and ids stay contiguous.
//!
//! The dedup window is measured from when JetStream stored the record (the
//! clock its window runs on), not from the record's own time: the second
//! copy of a message stored late by a retransmit repeats the first copy's
//! time, yet JetStream remembers it for a whole window from its own store.
//! Retention is measured on the record's time (the message's
//! `server_time`). Both are compared with this node's clock, which is
//! taken to be synchronised with JetStream's.
//!
//! **Acked floor.** An inbox: the lowest cursor of the user's devices
//! (keys `u.<user>.*` of the cursor bucket; none: nothing acknowledged). A
//! device gets its key, at 0, when it logs in ([`Node::register_device`]),
//! so a device that logged in and never acknowledged anything pins its
//! inbox until retention ends it: the cost of never losing a message to a
//! device that is merely offline. A group: for each member, the lowest over
//! its devices (those with an inbox or a group cursor) of the device's
//! group cursor or the member's join point, whichever is higher (a device
//! without a group cursor counts at the join point; nothing before the
//! join is visible to the member); the floor is the lowest over members.
//! A group with no members is purged by retention only, and so is one of
//! more than [`BIG_GROUP`] members: its floor costs a key scan per member
//! on every sweep that meets its old records, on the thread that serves
//! the node's requests.
//!
//! **Where a sweep reads.** Each sweep of a partition reads on from where
//! the last one ended, and from the stream's start again after reaching its
//! end, so records pinned at the start of a stream (a device that never
//! comes back) do not keep the sweep from the rest. A subject first met in
//! a read that did not start at the stream's start may have older records
//! that stayed: its run goes only if its first record read is the
//! subject's oldest.
//!
//! **When.** Sweeps run every ten timer ticks (`tick_ms`), between 100 ms
//! and 10 s (10 s with the default tick), reading at most `purge_per_tick`
//! records of each partition; while a sweep reads that many and deletes,
//! the next follows at once. A failed sweep is retried at the next
//! interval. Cursors, heads and receipt marks are never deleted: a device
//! whose cursor is below the oldest record kept sees where its history
//! starts (protocol section 5.8).

use std::{rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration};

use ahash::AHashMap;
use bytes::{BufMut, Bytes, BytesMut};

use super::{
    js::{Bucket, JsError, Listed, u64_value},
    names::{Log, Names},
    node::Node,
};
use crate::{config::Config, delivery::keys};

/// Members above which a group is purged by retention only.
pub(super) const BIG_GROUP: usize = 1000;

/// A lease lasts this many sweep intervals.
pub(super) const LEASE_INTERVALS: u32 = 3;

/// Records per read of a partition (a sweep makes several).
const READ_PAGE: usize = 1000;

/// Bytes per read of a partition, about.
const READ_BYTES: usize = 4 << 20;

/// Keys per read of a key scan.
const SCAN_PAGE: usize = 256;

/// The least time between two warnings about failing sweeps.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The purge settings of a node.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    /// Delete records every reader acknowledged.
    pub(super) purge_acked: bool,
    /// Delete records older than this, ms; 0 keeps them whatever their age.
    pub(super) retention_ms: u64,
    /// JetStream's dedup window, ms: nothing younger goes.
    pub(super) dedup_window_ms: u64,
    /// Most records of a partition read per sweep.
    pub(super) per_sweep: usize,
    /// Time between sweeps.
    pub(super) interval: Duration,
}

impl Settings {
    /// The settings of a configuration.
    pub(super) fn from_config(cfg: &Config) -> Settings {
        Settings {
            purge_acked: cfg.purge_acked,
            retention_ms: cfg.retention_ms,
            dedup_window_ms: cfg.dedup_window_ms,
            per_sweep: cfg.purge_per_tick.max(1),
            interval: (cfg.tick() * 10).clamp(Duration::from_millis(100), Duration::from_secs(10)),
        }
    }

    /// True if these settings delete nothing.
    fn deletes_nothing(&self) -> bool {
        !self.purge_acked && self.retention_ms == 0
    }

    fn lease_ms(&self) -> u64 {
        let ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        ms.saturating_mul(u64::from(LEASE_INTERVALS))
    }
}

/// A record that may go: by its age alone (`expired`), or if it is at or
/// below the subject's acked floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    seq: u64,
    stream_seq: u64,
    expired: bool,
}

/// One subject's records read in a sweep, from the first one read up to
/// the first that must stay whatever was acknowledged.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    subject: String,
    candidates: Vec<Candidate>,
    /// The stream sequence of the record that ended the run; None if the
    /// run reaches the last record read.
    stop: Option<u64>,
}

/// The runs of the records of a sweep, built as they are read (so that
/// their bodies are not kept), subjects in the order first met.
#[derive(Debug)]
struct Runs {
    /// Records stored before this (JetStream's time, ms) left the dedup
    /// window.
    dedup_cut: u64,
    /// Records older than this (their own time, ms) are past retention; 0:
    /// none is.
    retention_cut: u64,
    index: AHashMap<String, usize>,
    runs: Vec<Run>,
}

impl Runs {
    fn new(s: &Settings, now: u64) -> Runs {
        Runs {
            dedup_cut: now.saturating_sub(s.dedup_window_ms),
            retention_cut: if s.retention_ms == 0 {
                0
            } else {
                now.saturating_sub(s.retention_ms)
            },
            index: AHashMap::new(),
            runs: Vec::new(),
        }
    }

    /// Adds the next record of the stream (in stream order).
    fn add(&mut self, r: &Listed) {
        let i = match self.index.get(&r.subject) {
            Some(&i) => i,
            None => {
                self.index.insert(r.subject.clone(), self.runs.len());
                self.runs.push(Run {
                    subject: r.subject.clone(),
                    candidates: Vec::new(),
                    stop: None,
                });
                self.runs.len() - 1
            }
        };
        let Some(run) = self.runs.get_mut(i) else {
            return;
        };
        if run.stop.is_some() {
            return;
        }
        let out_of_window = r.stored_ms.is_some_and(|t| t < self.dedup_cut);
        match r.seq {
            // A record whose id or store time cannot be read stays, and so
            // does everything after it.
            Some(seq) if out_of_window => run.candidates.push(Candidate {
                seq,
                stream_seq: r.stream_seq,
                expired: keys::record_time(&r.payload).is_some_and(|t| t < self.retention_cut),
            }),
            _ => run.stop = Some(r.stream_seq),
        }
    }

    /// The runs with at least one record that may go.
    fn finish(self) -> Vec<Run> {
        let mut runs = self.runs;
        runs.retain(|r| !r.candidates.is_empty());
        runs
    }
}

/// How much of a run goes given the subject's acked floor (0 when
/// acknowledgements do not count): how many records, and the stream
/// sequence of the first record that stays if the run read one (None: the
/// whole run may go, as far as the head allows).
fn cut(run: &Run, floor: u64) -> (usize, Option<u64>) {
    let n = run
        .candidates
        .iter()
        .take_while(|c| c.expired || c.seq <= floor)
        .count();
    let kept = run.candidates.get(n).map(|c| c.stream_seq).or(run.stop);
    (n, kept)
}

/// A member of a group, as its floor needs it.
#[derive(Debug)]
struct Member {
    user: u64,
    /// The sequence id it joined at.
    join: u64,
    /// Its devices with an inbox cursor (None: a key that names none).
    devices: Vec<Option<u32>>,
}

/// A group's acked floor from its members and its cursors (user →
/// (device, cursor)); 0 for a group without members.
fn group_floor(members: &[Member], cursors: &AHashMap<u64, Vec<(u32, u64)>>) -> u64 {
    members
        .iter()
        .map(|m| {
            let own = cursors.get(&m.user).map_or(&[][..], Vec::as_slice);
            let at = |d: Option<u32>| {
                own.iter()
                    .find(|(x, _)| Some(*x) == d)
                    .map_or(m.join, |&(_, c)| c.max(m.join))
            };
            let listed = m.devices.iter().map(|&d| at(d));
            let with_cursor = own.iter().map(|&(_, c)| c.max(m.join));
            listed.chain(with_cursor).min().unwrap_or(m.join)
        })
        .min()
        .unwrap_or(0)
}

/// The value of a lease key: holder token, expiry (unix ms), big-endian.
pub(super) fn lease_value(holder: u64, until: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u64(holder);
    b.put_u64(until);
    b.freeze()
}

/// A lease key's (holder, expiry); None if unreadable.
pub(super) fn lease_of(v: &[u8]) -> Option<(u64, u64)> {
    Some((u64_value(v)?, u64_value(v.get(8..)?)?))
}

/// Whether `me` may take (or renew) a lease read as `held` at `now`.
pub(super) fn may_take(held: Option<(u64, u64)>, me: u64, now: u64) -> bool {
    held.is_none_or(|(holder, until)| holder == me || until <= now)
}

/// What one sweep of a partition did.
#[derive(Debug, Clone, Copy)]
struct Swept {
    /// It read as many records as a sweep may: more may wait.
    full: bool,
    /// Records deleted.
    deleted: u64,
}

/// Failed sweeps: each logged at debug, a warning at most once per
/// [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Failures {
    since_warning: u64,
    warned: Option<tokio::time::Instant>,
}

impl Failures {
    fn note(&mut self, p: u32, e: &JsError) {
        tracing::debug!(partition = p, error = %e, "purge sweep failed; retrying next interval");
        self.since_warning += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                partition = p,
                error = %e,
                failures = self.since_warning,
                "purge sweeps failing; retrying every interval"
            );
            self.warned = Some(tokio::time::Instant::now());
            self.since_warning = 0;
        }
    }
}

impl Node {
    /// Makes a device a reader of its user's inbox: writes its cursor key
    /// at 0 unless it exists (a compare-and-set on "never written"; a
    /// conflict means it exists). Without it, a device that logged in but
    /// never acknowledged anything would not hold back the purge.
    pub(super) async fn register_device(&self, user: u64, device: u32) -> Result<(), JsError> {
        if !self.limits.purge.purge_acked {
            return Ok(());
        }
        let key = Names::cursor_key(0, user, device);
        let zero = Bytes::copy_from_slice(&0u64.to_be_bytes());
        match self.js.put_key(Bucket::Cursors, &key, zero, 0).await {
            Ok(_) | Err(JsError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The purge: every interval, a sweep of each partition whose lease
    /// this node holds or takes, until the node stops.
    pub(super) async fn sweeper(self: Rc<Self>) {
        let s = self.limits.purge;
        if s.deletes_nothing() {
            return;
        }
        let partitions = self.js.names().partitions();
        // Where the next sweep of each partition reads from.
        let mut pos = vec![1u64; partitions as usize];
        let mut failures = Failures::default();
        let mut wait = s.interval;
        loop {
            tokio::time::sleep(wait).await;
            tokio::task::yield_now().await;
            wait = s.interval;
            for (p, at) in (0..partitions).zip(pos.iter_mut()) {
                if self.stopping.get() {
                    return;
                }
                let now = crate::clock::unix_ms();
                let r = async {
                    if !self.hold_lease(p, now).await? {
                        return Ok(None);
                    }
                    self.sweep(p, at, now).await.map(Some)
                };
                match r.await {
                    Ok(None) => {}
                    Ok(Some(sw)) => {
                        self.stats.purge_sweeps.fetch_add(1, Relaxed);
                        self.stats.purged.fetch_add(sw.deleted, Relaxed);
                        if sw.deleted > 0 {
                            tracing::debug!(partition = p, deleted = sw.deleted, "purged");
                        }
                        if sw.full && sw.deleted > 0 {
                            wait = Duration::ZERO;
                        }
                    }
                    Err(e) => failures.note(p, &e),
                }
            }
            if self.stopping.get() {
                return;
            }
        }
    }

    /// Takes or renews the lease on sweeping partition `p`; false if
    /// another node holds it.
    async fn hold_lease(&self, p: u32, now: u64) -> Result<bool, JsError> {
        let key = Names::purge_lease_key(p);
        let e = self.js.get_key(Bucket::Meta, &key).await?;
        let held = e.value.as_deref().and_then(lease_of);
        if !may_take(held, self.token, now) {
            return Ok(false);
        }
        let until = now.saturating_add(self.limits.purge.lease_ms());
        match self
            .js
            .put_key(
                Bucket::Meta,
                &key,
                lease_value(self.token, until),
                e.revision,
            )
            .await
        {
            Ok(_) => Ok(true),
            // Another node took or renewed it meanwhile.
            Err(JsError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One sweep of partition `p` from stream sequence `*at`; moves `*at`
    /// to where the next one reads.
    async fn sweep(&self, p: u32, at: &mut u64, now: u64) -> Result<Swept, JsError> {
        let s = self.limits.purge;
        let from = *at;
        let mut runs = Runs::new(&s, now);
        let (mut read, mut next, mut end) = (0usize, from, false);
        while read < s.per_sweep {
            let want = (s.per_sweep - read).min(READ_PAGE);
            let page = self.js.list(p, next, want, READ_BYTES).await?;
            let Some(last) = page.last() else {
                end = true;
                break;
            };
            next = last.stream_seq.saturating_add(1);
            read += page.len();
            for r in &page {
                runs.add(r);
            }
        }
        let mut deleted = 0;
        for run in runs.finish() {
            if self.stopping.get() {
                break;
            }
            deleted += self.delete_run(p, &run, from <= 1).await?;
        }
        *at = if end { 1 } else { next };
        Ok(Swept {
            full: !end,
            deleted,
        })
    }

    /// Deletes what may go of a run with one purge request; returns how
    /// many records went. `from_start`: the sweep read the stream from its
    /// start, so the run starts at the subject's oldest record.
    async fn delete_run(&self, p: u32, run: &Run, from_start: bool) -> Result<u64, JsError> {
        let s = self.limits.purge;
        // Only inboxes and group logs of this partition, never another
        // subject that reached the stream.
        let Some(log) = self.js.names().parse_log(p, &run.subject) else {
            return Ok(0);
        };
        let floor = if s.purge_acked && run.candidates.iter().any(|c| !c.expired) {
            self.acked_floor(log).await?
        } else {
            0
        };
        let (n, kept) = cut(run, floor);
        let (Some(first), Some(last)) = (
            run.candidates.first(),
            n.checked_sub(1).and_then(|i| run.candidates.get(i)),
        ) else {
            return Ok(0);
        };
        let below = match kept {
            Some(k) => k,
            None => {
                // The run reaches the last record read: the head stays.
                let (_, head) = self.js.head(&run.subject).await?;
                last.stream_seq.saturating_add(1).min(head)
            }
        };
        if below <= first.stream_seq {
            return Ok(0);
        }
        if !from_start {
            let oldest = self.js.first_from(&run.subject, 1).await?;
            if oldest.map(|o| o.stream_seq) != Some(first.stream_seq) {
                return Ok(0);
            }
        }
        self.js.purge_below(&run.subject, below).await
    }

    /// The highest sequence id of a log every reader acknowledged; 0 where
    /// only retention applies.
    async fn acked_floor(&self, log: Log) -> Result<u64, JsError> {
        match log {
            Log::Inbox(user) => Ok(self
                .inbox_cursors(user)
                .await?
                .iter()
                .map(|&(_, c)| c)
                .min()
                .unwrap_or(0)),
            Log::Group(group) => {
                // A group with no members (deleted, or everyone left) is
                // read by nobody: a create under its id starts at the head.
                let Some(members) = self.read_members(group).await? else {
                    return Ok(u64::MAX);
                };
                if members.len() > BIG_GROUP {
                    return Ok(0);
                }
                let prefix = format!("g.{group}.");
                let mut cursors: AHashMap<u64, Vec<(u32, u64)>> = AHashMap::new();
                for (k, v) in self
                    .js
                    .scan_keys(Bucket::Cursors, &prefix, SCAN_PAGE)
                    .await?
                {
                    let owner = k.strip_prefix(prefix.as_str()).and_then(|rest| {
                        let (u, d) = rest.split_once('.')?;
                        Some((u.parse::<u64>().ok()?, d.parse::<u32>().ok()?))
                    });
                    if let Some((u, d)) = owner {
                        let c = u64_value(&v).unwrap_or(0);
                        cursors.entry(u).or_default().push((d, c));
                    }
                }
                let mut list = Vec::with_capacity(members.len());
                for user in members.users() {
                    let devices = self.inbox_cursors(user).await?;
                    list.push(Member {
                        user,
                        join: members.join(user).unwrap_or(0),
                        devices: devices.into_iter().map(|(d, _)| d).collect(),
                    });
                }
                Ok(group_floor(&list, &cursors))
            }
        }
    }

    /// The inbox cursors of a user's devices: (device, cursor); a key that
    /// names no device, or a value that cannot be read, counts as a device
    /// at 0.
    async fn inbox_cursors(&self, user: u64) -> Result<Vec<(Option<u32>, u64)>, JsError> {
        let prefix = format!("u.{user}.");
        let keys = self
            .js
            .scan_keys(Bucket::Cursors, &prefix, SCAN_PAGE)
            .await?;
        Ok(keys
            .into_iter()
            .map(|(k, v)| {
                let device = k.strip_prefix(prefix.as_str()).and_then(|d| d.parse().ok());
                (device, u64_value(&v).unwrap_or(0))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 1000;
    const NOW: u64 = 1_000_000;

    fn settings(retention_ms: u64) -> Settings {
        Settings {
            purge_acked: true,
            retention_ms,
            dedup_window_ms: WINDOW,
            per_sweep: 100,
            interval: Duration::from_secs(10),
        }
    }

    /// A record of `subject` stored by JetStream at `stored`, with its own
    /// time `time`.
    fn rec(subject: &str, stream_seq: u64, seq: u64, stored: u64, time: u64) -> Listed {
        let mut v = Vec::new();
        keys::Record {
            from: 1,
            to: 2,
            msg_id: seq,
            time,
            body: Bytes::from_static(b"x"),
        }
        .encode_into(&mut v);
        Listed {
            subject: subject.into(),
            stream_seq,
            seq: Some(seq),
            stored_ms: Some(stored),
            payload: v.into(),
        }
    }

    fn runs_of(s: &Settings, recs: &[Listed]) -> Vec<Run> {
        let mut r = Runs::new(s, NOW);
        for x in recs {
            r.add(x);
        }
        r.finish()
    }

    #[test]
    fn the_dedup_window_ends_a_run() {
        let old = NOW - WINDOW - 1;
        let recs = [
            rec("a", 1, 1, old, old),
            rec("b", 2, 1, old, old),
            rec("a", 3, 2, old, old),
            // Within the window (JetStream's time), although the record's
            // own time is old: a late second copy.
            rec("a", 4, 3, NOW - WINDOW, old),
            rec("a", 5, 4, old, old),
            rec("c", 6, 1, NOW, NOW),
        ];
        let runs = runs_of(&settings(0), &recs);
        assert_eq!(runs.len(), 2, "c has nothing that may go: {runs:?}");
        assert_eq!(runs[0].subject, "a");
        assert_eq!(
            runs[0].candidates.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(runs[0].stop, Some(4));
        assert_eq!((runs[1].subject.as_str(), runs[1].stop), ("b", None));
    }

    #[test]
    fn unreadable_records_stay() {
        let old = NOW - WINDOW - 1;
        let mut no_seq = rec("a", 2, 2, old, old);
        no_seq.seq = None;
        let mut no_time = rec("b", 3, 1, old, old);
        no_time.stored_ms = None;
        let runs = runs_of(
            &settings(0),
            &[
                rec("a", 1, 1, old, old),
                no_seq,
                rec("a", 4, 3, old, old),
                no_time,
            ],
        );
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].candidates.len(), runs[0].stop), (1, Some(2)));
    }

    #[test]
    fn acknowledged_or_expired_records_go_up_to_the_first_that_stays() {
        let old = NOW - WINDOW - 1;
        let retention = 10_000;
        let expired = NOW - retention - 1;
        let recs = [
            rec("a", 10, 1, old, expired),
            rec("a", 11, 2, old, old),
            rec("a", 12, 3, old, expired),
            rec("a", 13, 4, old, old),
        ];
        let runs = runs_of(&settings(retention), &recs);
        let run = &runs[0];
        // Nothing acknowledged: the expired first one only.
        assert_eq!(cut(run, 0), (1, Some(11)));
        // Acked to 2: 1..=3 (3 by age).
        assert_eq!(cut(run, 2), (3, Some(13)));
        // Everything: the head decides how far.
        assert_eq!(cut(run, 4), (4, None));
        // Without retention the expired one waits for the floor too.
        let runs = runs_of(&settings(0), &recs);
        assert_eq!(cut(&runs[0], 0), (0, Some(10)));
    }

    #[test]
    fn a_group_floor_is_the_slowest_device_of_any_member() {
        let mut cursors: AHashMap<u64, Vec<(u32, u64)>> = AHashMap::new();
        cursors.insert(1, vec![(1, 9), (2, 7)]);
        cursors.insert(2, vec![(1, 3)]);
        let m = |user, join, devices: &[u32]| Member {
            user,
            join,
            devices: devices.iter().map(|&d| Some(d)).collect(),
        };
        assert_eq!(group_floor(&[], &cursors), 0, "no members: retention only");
        assert_eq!(group_floor(&[m(1, 0, &[1, 2])], &cursors), 7);
        // A device without a group cursor counts at the join point.
        assert_eq!(group_floor(&[m(1, 5, &[1, 2, 3])], &cursors), 5);
        // A cursor below the join point counts at the join point.
        assert_eq!(group_floor(&[m(2, 4, &[1])], &cursors), 4);
        assert_eq!(group_floor(&[m(1, 0, &[1, 2]), m(2, 0, &[1])], &cursors), 3);
        // A member without devices holds at its join point.
        assert_eq!(group_floor(&[m(1, 0, &[1, 2]), m(3, 6, &[])], &cursors), 6);
        // A group cursor of a device not listed in the inbox still counts.
        assert_eq!(group_floor(&[m(1, 0, &[1])], &cursors), 7);
    }

    #[test]
    fn leases_are_taken_when_free_expired_or_own() {
        let v = lease_value(7, 500);
        assert_eq!(lease_of(&v), Some((7, 500)));
        assert_eq!(lease_of(&v[..12]), None);
        assert!(may_take(None, 8, 100));
        assert!(!may_take(Some((7, 500)), 8, 100));
        assert!(may_take(Some((7, 500)), 7, 100));
        assert!(may_take(Some((7, 500)), 8, 500));
    }

    #[test]
    fn the_interval_follows_the_tick() {
        let mut cfg = Config::default();
        assert_eq!(
            Settings::from_config(&cfg).interval,
            Duration::from_secs(10)
        );
        cfg.tick_ms = 20;
        let s = Settings::from_config(&cfg);
        assert_eq!(s.interval, Duration::from_millis(200));
        assert_eq!(s.lease_ms(), 600);
        cfg.tick_ms = 1;
        assert_eq!(
            Settings::from_config(&cfg).interval,
            Duration::from_millis(100)
        );
    }
}
