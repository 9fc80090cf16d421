//! Appending records with contiguous sequence ids.
//!
//! A subject's sequence ids are contiguous because every append says which
//! record it follows: it is published with the stream sequence of the
//! subject's newest record as `Nats-Expected-Last-Subject-Sequence`, and
//! carries that record's sequence id + 1. If another node appended first,
//! JetStream refuses it; the node reads the new head and tries again. So
//! two nodes never give out the same id, and no id is skipped.
//!
//! On one node, appends to one subject go one at a time, in the order the
//! requests arrived (a queue per subject): JetStream refuses an append
//! whose expected head is not yet stored, so a second one in flight would
//! only be refused. A message written to two subjects (the sender's own
//! copy, then the receiver's) is a chain: its second step joins the next
//! queue the moment the first is stored, so two messages of one sender
//! keep their order in both inboxes.
//!
//! Every append of a message carries the same JetStream message id on
//! every try and from every node, so a retry after a lost acknowledgement,
//! or a client's retransmit through another node, finds the first copy
//! instead of storing a second one.

use std::{cell::RefCell, collections::VecDeque, rc::Rc, sync::atomic::Ordering::Relaxed};

use ahash::AHashMap;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{
    js::{Appended, JsError, Stored},
    node::Node,
};
use crate::delivery::keys::{self, Record};

/// Cached subject heads dropped (all at once) past this many.
const MAX_HEADS: usize = 100_000;

/// One append of a chain: where, under which message id.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) subject: String,
    pub(super) msg_id: String,
}

/// Why a chain stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChainError {
    /// The message id was used for another message.
    #[error("msg id reused")]
    Reused,
    /// JetStream did not take it within the retry time.
    #[error(transparent)]
    Js(#[from] JsError),
}

type Done = oneshot::Sender<Result<Vec<Stored>, ChainError>>;

#[derive(Debug)]
struct Job {
    steps: Vec<Step>,
    at: usize,
    payload: Bytes,
    /// The group of a group message (0: one-to-one).
    group: u64,
    /// The digest of (group, to, body), to tell a retransmit from a
    /// reused message id.
    digest: u64,
    stored: Vec<Stored>,
    done: Done,
}

/// The per-subject queues and the cached heads.
#[derive(Debug, Default)]
pub(super) struct Queues {
    queues: RefCell<AHashMap<String, VecDeque<Job>>>,
    heads: RefCell<AHashMap<String, (u64, u64)>>,
}

impl Node {
    /// Stores `payload` at each step in turn; returns what each stored (or
    /// had stored, for a retransmit).
    pub(super) async fn chain(
        self: &Rc<Self>,
        steps: Vec<Step>,
        payload: Bytes,
        group: u64,
        digest: u64,
    ) -> Result<Vec<Stored>, ChainError> {
        self.queue_chain(steps, payload, group, digest).await
    }

    /// Queues the chain now; the future resolves when it is stored.
    pub(super) fn queue_chain(
        self: &Rc<Self>,
        steps: Vec<Step>,
        payload: Bytes,
        group: u64,
        digest: u64,
    ) -> impl std::future::Future<Output = Result<Vec<Stored>, ChainError>> + use<> {
        let (done, rx) = oneshot::channel();
        self.enqueue(Job {
            steps,
            at: 0,
            payload,
            group,
            digest,
            stored: Vec::new(),
            done,
        });
        async move {
            rx.await
                .map_err(|_| ChainError::Js(JsError::Unavailable("the node is stopping".into())))?
        }
    }

    fn enqueue(self: &Rc<Self>, job: Job) {
        let Some(step) = job.steps.get(job.at) else {
            let _ = job.done.send(Ok(job.stored));
            return;
        };
        let subject = step.subject.clone();
        let mut qs = self.queues.queues.borrow_mut();
        let q = qs.entry(subject.clone()).or_default();
        q.push_back(job);
        if q.len() == 1 {
            tokio::task::spawn_local(self.clone().drain(subject));
        }
    }

    /// Works through one subject's queue; ends when it is empty.
    async fn drain(self: Rc<Self>, subject: String) {
        loop {
            let (msg_id, payload) = {
                let qs = self.queues.queues.borrow();
                let Some(job) = qs.get(&subject).and_then(|q| q.front()) else {
                    return;
                };
                (job.steps[job.at].msg_id.clone(), job.payload.clone())
            };
            let r = self.append_one(&subject, &msg_id, payload).await;
            let (job, more) = {
                let mut qs = self.queues.queues.borrow_mut();
                let Some(q) = qs.get_mut(&subject) else {
                    return;
                };
                let job = q.pop_front();
                let more = !q.is_empty();
                if !more {
                    qs.remove(&subject);
                }
                (job, more)
            };
            if let Some(job) = job {
                self.advance(job, r);
            }
            if !more {
                return;
            }
        }
    }

    fn advance(self: &Rc<Self>, mut job: Job, r: Result<(Stored, bool), JsError>) {
        match r {
            Err(e) => {
                let _ = job.done.send(Err(e.into()));
            }
            Ok((stored, duplicate)) => {
                if duplicate && job.at == 0 {
                    // A retransmit: the same message, or a reused id.
                    match Record::decode(&stored.payload) {
                        Some(rec) if keys::digest(job.group, rec.to, &rec.body) == job.digest => {
                            // The later copies repeat the first one's
                            // record (its time), whichever node writes them.
                            job.payload = stored.payload.clone();
                        }
                        _ => {
                            let _ = job.done.send(Err(ChainError::Reused));
                            return;
                        }
                    }
                }
                job.stored.push(stored);
                job.at += 1;
                self.enqueue(job);
            }
        }
    }

    /// One append with its retries; returns the record stored and whether
    /// it was there already.
    async fn append_one(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(Stored, bool), JsError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.limits.retry;
        let mut backoff = std::time::Duration::from_millis(20);
        let mut waited = false;
        loop {
            let cached = self.queues.heads.borrow().get(subject).copied();
            let attempt = async {
                let head = match cached {
                    Some(h) => h,
                    None => self.js.head(subject).await?,
                };
                let r = self
                    .js
                    .append(subject, msg_id, head.1, head.0 + 1, payload.clone())
                    .await;
                Ok::<_, JsError>((head, r?))
            };
            match attempt.await {
                Ok((head, Appended::New(stream_seq))) => {
                    let mut heads = self.queues.heads.borrow_mut();
                    if heads.len() >= MAX_HEADS {
                        heads.clear();
                    }
                    heads.insert(subject.to_string(), (head.0 + 1, stream_seq));
                    self.stats.appended(started.elapsed(), waited);
                    return Ok((
                        Stored {
                            seq: head.0 + 1,
                            stream_seq,
                            payload,
                        },
                        false,
                    ));
                }
                Ok((_, Appended::Duplicate(stream_seq))) => {
                    match self.js.get(subject, stream_seq).await {
                        Ok(s) => {
                            self.stats.duplicates.fetch_add(1, Relaxed);
                            return Ok((s, true));
                        }
                        Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                        Err(_) => {}
                    }
                }
                Err(JsError::Conflict) => {
                    // Another node appended: read the head again, now.
                    self.stats.conflicts.fetch_add(1, Relaxed);
                    self.queues.heads.borrow_mut().remove(subject);
                    if tokio::time::Instant::now() < deadline {
                        continue;
                    }
                    return Err(JsError::Unavailable("the head kept moving".into()));
                }
                Err(e @ JsError::Corrupt(_)) | Err(e @ JsError::Setup(_)) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(subject, error = %e, "append failed; retrying");
                }
            }
            // Unavailable (an election, a lost connection): the same
            // message id again after a pause, so it is never stored twice.
            self.stats.retries.fetch_add(1, Relaxed);
            waited = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
        }
    }
}
