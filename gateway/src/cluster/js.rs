//! The JetStream side of the cluster backend: connecting, creating the
//! streams and buckets on first start, and the few reads and writes the
//! delivery logic needs (a compare-and-set append, a head read, a paged
//! read, compare-and-set keys, a scan of the keys under a prefix), and the
//! two the purge needs (a read of a whole partition, a purge of a
//! subject's oldest records).
//!
//! Reads that decide a sequence id (a head) go to the stream leader;
//! pages use direct gets, which any replica answers: a replica that lags
//! returns a shorter page, never a wrong one, and the client asks again.

use std::time::Duration;

use async_nats::{
    Client, HeaderMap,
    jetstream::{
        self, Context,
        consumer::pull,
        context::PublishErrorKind,
        kv,
        stream::{self, Stream},
    },
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::names::{Names, SEQ_HEADER};
use crate::config::ClusterConfig;

/// Why JetStream could not answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum JsError {
    /// Connecting or setting up failed.
    #[error("{0}")]
    Setup(String),
    /// Another node appended to the subject first.
    #[error("the subject's head moved")]
    Conflict,
    /// No answer in time, or the connection is down; retry.
    #[error("JetStream unavailable: {0}")]
    Unavailable(String),
    /// A record that cannot be read.
    #[error("corrupt record at stream sequence {0}")]
    Corrupt(u64),
}

/// A stored record of a subject: its sequence id in the subject, its
/// sequence in the stream, its bytes.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    /// The user-level (inbox or group) sequence id.
    pub(super) seq: u64,
    /// The stream sequence.
    pub(super) stream_seq: u64,
    /// The encoded record.
    pub(super) payload: Bytes,
}

/// What an append did.
#[derive(Debug, Clone)]
pub(super) enum Appended {
    /// Stored now, at this stream sequence.
    New(u64),
    /// The message id was seen within the dedup window: nothing stored,
    /// the first copy is at this stream sequence.
    Duplicate(u64),
}

/// The key-value buckets of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bucket {
    /// Device cursors.
    Cursors,
    /// Receipt marks (one-to-one and group read marks).
    Marks,
    /// Group members and each user's groups.
    Groups,
    /// Fixed settings and counters.
    Meta,
}

/// A key read from a bucket: its value (None: absent or deleted) and the
/// revision to write it at (0: never written).
#[derive(Debug, Clone, Default)]
pub(super) struct Entry {
    pub(super) value: Option<Bytes>,
    pub(super) revision: u64,
}

/// A record of a partition's stream as the purge reads it.
#[derive(Debug)]
pub(super) struct Listed {
    /// The subject: an inbox or a group's log.
    pub(super) subject: String,
    /// The stream sequence.
    pub(super) stream_seq: u64,
    /// The sequence id in the subject; None if the header is missing or
    /// unreadable.
    pub(super) seq: Option<u64>,
    /// When JetStream stored it (its own clock, which the dedup window
    /// runs on), ms since the Unix epoch; None if not readable.
    pub(super) stored_ms: Option<u64>,
    /// The encoded record.
    pub(super) payload: Bytes,
}

/// What [`Js::events_setup`] opens.
pub(super) struct EventsSetup {
    /// `<prefix>_presence`: who is online on which node.
    pub(super) presence: kv::Store,
    /// `<prefix>_nodes`: one expiring key per live node.
    pub(super) nodes: kv::Store,
    /// The webhook's consumer.
    pub(super) consumer: jetstream::consumer::Consumer<pull::Config>,
}

/// Compare-and-set tries on one key before a write gives up.
pub(super) const CAS_TRIES: u32 = 50;

/// What an [`Js::update_key`] does with the key it read.
#[derive(Debug)]
pub(super) enum Update<T> {
    /// Leave the key as it is; the update's result.
    Keep(T),
    /// Write this value; the update's result once it is written.
    Write(Bytes, T),
}

/// A record of a stream read in a batch: its subject, stream sequence,
/// headers and bytes.
#[derive(Debug)]
struct Raw {
    subject: String,
    stream_seq: u64,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

/// A connected node.
#[derive(Debug, Clone)]
pub(super) struct Js {
    client: Client,
    ctx: Context,
    names: Names,
    streams: Vec<Stream>,
    /// Indexed by [`Bucket`].
    buckets: Vec<kv::Store>,
}

fn unavailable(e: impl std::fmt::Display) -> JsError {
    JsError::Unavailable(e.to_string())
}

impl Js {
    /// Connects and makes sure every stream and bucket exists; refuses a
    /// partition count other than the one the cluster was created with.
    pub(super) async fn connect(
        cfg: &ClusterConfig,
        node: &str,
        dedup_window: Duration,
    ) -> Result<Js, JsError> {
        let urls = cfg.nats_urls.join(",");
        let addrs = cfg
            .nats_urls
            .iter()
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JsError::Setup(format!("invalid NATS URL in {urls}: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("imgate {node}"))
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .map_err(|e| JsError::Setup(format!("cannot connect to NATS at {urls}: {e}")))?;
        let ctx = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(cfg.publish_timeout_ms))
            .build(client.clone());
        let names = Names::new(&cfg.stream_prefix, cfg.partitions);
        // A JetStream cluster that just started (or is electing) answers
        // its API late or not at all: keep trying for as long as a write
        // would, then give up with the last error.
        let admin = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(client.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.publish_retry_ms);
        let (streams, buckets) = loop {
            match setup(&admin, cfg, &names, dedup_window).await {
                Ok(parts) => break parts,
                Err(JsError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %why, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(JsError::Unavailable(why)) => return Err(JsError::Setup(why)),
                Err(e) => return Err(e),
            }
        };
        Ok(Js {
            client,
            ctx,
            names,
            streams,
            buckets,
        })
    }

    fn bucket(&self, b: Bucket) -> &kv::Store {
        let i = match b {
            Bucket::Cursors => 0,
            Bucket::Marks => 1,
            Bucket::Groups => 2,
            Bucket::Meta => 3,
        };
        &self.buckets[i]
    }

    /// The names of this service.
    /// The meta bucket, for a thread that has no `Js` (the endpoint's).
    pub(super) fn meta_bucket(&self) -> kv::Store {
        self.bucket(Bucket::Meta).clone()
    }

    pub(super) fn names(&self) -> &Names {
        &self.names
    }

    /// The core NATS client (pushes and control messages).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes one record to a stream that has no sequence ids of its
    /// own (the events stream), under JetStream message id `msg_id`, and
    /// waits for the acknowledgement; a duplicate within the dedup window
    /// counts as stored.
    pub(super) async fn publish_dedup(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(), JsError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        self.ctx
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Creates (or updates) the events stream, the presence bucket, the
    /// nodes bucket (keys expiring `alive_for` after their last write) and
    /// the webhook's consumer (`[events]` on).
    pub(super) async fn events_setup(
        &self,
        cfg: &ClusterConfig,
        events: &crate::config::EventsConfig,
        dedup_window: Duration,
        ack_wait: Duration,
        alive_for: Duration,
    ) -> Result<EventsSetup, JsError> {
        let fail = |what: &str, e: String| JsError::Setup(format!("{what}: {e}"));
        let max_msgs = i64::try_from(events.max_lag).unwrap_or(i64::MAX);
        let name = self.names.events_stream();
        // A work queue: an event the webhook acked is removed; `max_msgs`
        // with discard old bounds what waits.
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![self.names.events_subjects()],
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            duplicate_window: dedup_window,
            max_messages: max_msgs,
            discard: stream::DiscardPolicy::Old,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        };
        // JetStream refuses to change a stream's retention to or from
        // work queue: a stream made with another one (by an earlier
        // version) is left as it is, and this node does not start.
        if let Ok(old) = self.ctx.get_stream(name.clone()).await {
            let retention = old.cached_info().config.retention;
            if retention != stream::RetentionPolicy::WorkQueue {
                return Err(JsError::Setup(format!(
                    "the events stream {name} has retention {retention:?}, not WorkQueue, and \
                     JetStream cannot change it: once the webhook has taken every event in it \
                     (imgate_events_lag 0), stop the nodes with [events], delete the stream \
                     and start them again (it is created anew)"
                )));
            }
        }
        // An existing stream takes the settings of this node's config
        // (`max_lag` may have changed).
        let stream = match self.ctx.create_or_update_stream(config).await {
            Ok(_) => self
                .ctx
                .get_stream(name.clone())
                .await
                .map_err(|e| fail("cannot open the events stream", e.to_string()))?,
            Err(e) => {
                return Err(fail(
                    &format!("cannot create or update the events stream {name}"),
                    e.to_string(),
                ));
            }
        };
        let presence = bucket(&self.ctx, self.names.presence_bucket(), cfg.replicas).await?;
        // An existing bucket takes this node's expiry (its tick may have
        // changed); every node should run the same one.
        let nodes = self
            .ctx
            .create_or_update_key_value(kv::Config {
                bucket: self.names.nodes_bucket(),
                history: 1,
                max_age: alive_for,
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| fail("cannot create the nodes bucket", e.to_string()))?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(Names::WEBHOOK_CONSUMER.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: i64::try_from(events.batch).unwrap_or(i64::MAX),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| fail("cannot create the webhook consumer", e.to_string()))?;
        Ok(EventsSetup {
            presence,
            nodes,
            consumer,
        })
    }

    fn stream_of(&self, subject: &str) -> Result<&Stream, JsError> {
        let p = subject
            .split('.')
            .nth(1)
            .and_then(|p| p.parse::<usize>().ok())
            .ok_or_else(|| JsError::Setup(format!("not a log subject: {subject}")))?;
        self.streams
            .get(p)
            .ok_or_else(|| JsError::Setup(format!("no stream for {subject}")))
    }

    /// The newest record of a subject, read from the stream leader: its
    /// (sequence id, stream sequence), or (0, 0) for an empty subject.
    pub(super) async fn head(&self, subject: &str) -> Result<(u64, u64), JsError> {
        let s = self.stream_of(subject)?;
        match s.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok((
                seq_of(&m.headers).ok_or(JsError::Corrupt(m.sequence))?,
                m.sequence,
            )),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Appends a record to `subject` as its sequence id `seq`, only if the
    /// subject's newest record is still at stream sequence `after`.
    pub(super) async fn append(
        &self,
        subject: &str,
        msg_id: &str,
        after: u64,
        seq: u64,
        payload: Bytes,
    ) -> Result<Appended, JsError> {
        let mut headers = HeaderMap::new();
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(msg_id)
            .expected_last_subject_sequence(after);
        let ack = self
            .ctx
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(a) if a.duplicate => Ok(Appended::Duplicate(a.sequence)),
            Ok(a) => Ok(Appended::New(a.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence || wrong_last(&e) => {
                Err(JsError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The record at a stream sequence, from the stream leader.
    pub(super) async fn get(&self, subject: &str, stream_seq: u64) -> Result<Stored, JsError> {
        let s = self.stream_of(subject)?;
        let m = s.get_raw_message(stream_seq).await.map_err(unavailable)?;
        Ok(Stored {
            seq: seq_of(&m.headers).ok_or(JsError::Corrupt(m.sequence))?,
            stream_seq: m.sequence,
            payload: m.payload,
        })
    }

    /// The first record of `subject` at or after stream sequence `from`.
    pub(super) async fn first_from(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<Option<Stored>, JsError> {
        let mut v = self.read(subject, from, 1, usize::MAX).await?;
        Ok(v.pop())
    }

    /// Up to `n` records of `subject` from stream sequence `from` on, in
    /// order, at most about `max_bytes` of them (at least one), in one
    /// batched direct get (any replica answers).
    pub(super) async fn read(
        &self,
        subject: &str,
        from: u64,
        n: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, JsError> {
        let s = self.stream_of(subject)?;
        let name = s.cached_info().config.name.clone();
        let raw = self.batch(&name, subject, from, n, max_bytes).await?;
        raw.into_iter()
            .map(|m| {
                let seq = m
                    .headers
                    .as_ref()
                    .and_then(seq_of)
                    .ok_or(JsError::Corrupt(m.stream_seq))?;
                Ok(Stored {
                    seq,
                    stream_seq: m.stream_seq,
                    payload: m.payload,
                })
            })
            .collect()
    }

    /// Up to `n` records of partition `p`'s stream, every subject, from
    /// stream sequence `from` on, at most about `max_bytes` of them (at
    /// least one), in one batched direct get.
    pub(super) async fn list(
        &self,
        p: u32,
        from: u64,
        n: usize,
        max_bytes: usize,
    ) -> Result<Vec<Listed>, JsError> {
        let (stream, filter) = (self.names.stream(p), self.names.stream_subjects(p));
        let raw = self.batch(&stream, &filter, from, n, max_bytes).await?;
        Ok(raw
            .into_iter()
            .map(|m| {
                let h = m.headers.as_ref();
                Listed {
                    seq: h.and_then(seq_of),
                    stored_ms: h
                        .and_then(|h| h.get("Nats-Time-Stamp"))
                        .and_then(|v| rfc3339_ms(v.as_str())),
                    subject: m.subject,
                    stream_seq: m.stream_seq,
                    payload: m.payload,
                }
            })
            .collect())
    }

    /// Deletes the records of `subject` below stream sequence `below`
    /// (one purge request, answered by the stream leader); returns how
    /// many went.
    pub(super) async fn purge_below(&self, subject: &str, below: u64) -> Result<u64, JsError> {
        let s = self.stream_of(subject)?;
        let r = s
            .purge()
            .filter(subject)
            .sequence(below)
            .await
            .map_err(unavailable)?;
        Ok(r.purged)
    }

    /// One batched direct get: up to `n` records of stream `stream` whose
    /// subject matches `filter`, from stream sequence `from` on.
    async fn batch(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        n: usize,
        max_bytes: usize,
    ) -> Result<Vec<Raw>, JsError> {
        let api = format!("$JS.API.DIRECT.GET.{stream}");
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        // Subjects are dot-separated numbers, letters and wildcards; nothing
        // to escape.
        let req = format!(
            "{{\"seq\":{},\"next_by_subj\":\"{filter}\",\"batch\":{},\"max_bytes\":{}}}",
            from.max(1),
            n.max(1),
            max_bytes.min(i32::MAX as usize)
        );
        self.client
            .publish_with_reply(api, inbox, Bytes::from(req))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(JsError::Unavailable("read subscription closed".into())),
                Err(_) => return Err(JsError::Unavailable("read timed out".into())),
            };
            match m.status.map(|s| s.as_u16()) {
                // 204: end of the batch; 404: nothing (more) on the subject.
                Some(204) | Some(404) => break,
                Some(code) if code != 200 => {
                    return Err(JsError::Unavailable(format!(
                        "direct get answered {code} {}",
                        m.description.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let stream_seq = header("Nats-Sequence")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(JsError::Corrupt(0))?;
            let subject = header("Nats-Subject").unwrap_or_default();
            out.push(Raw {
                subject,
                stream_seq,
                headers: m.headers,
                payload: m.payload,
            });
            if out.len() >= n {
                // The server ends a full batch with an end marker too; not
                // waiting for it costs nothing (the inbox is dropped).
                break;
            }
        }
        Ok(out)
    }

    /// A key of a bucket.
    pub(super) async fn get_key(&self, b: Bucket, key: &str) -> Result<Entry, JsError> {
        match self.bucket(b).entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => Ok(Entry {
                value: Some(e.value),
                revision: e.revision,
            }),
            Some(e) => Ok(Entry {
                value: None,
                revision: e.revision,
            }),
            None => Ok(Entry::default()),
        }
    }

    /// Writes a key if the bucket still holds revision `rev` of it (0:
    /// never written); returns the new revision, or `Conflict`.
    pub(super) async fn put_key(
        &self,
        b: Bucket,
        key: &str,
        value: Bytes,
        rev: u64,
    ) -> Result<u64, JsError> {
        // Revision 0 requires that the key was never written: the same
        // check as any other revision, answered by the stream leader (a
        // create that re-read the key from a replica could miss a write
        // that just happened).
        match self.bucket(b).update(key, value, rev).await {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || wrong_last(&e) => {
                Err(JsError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Updates a key with compare-and-set: `f` decides from the key as read
    /// whether to write it; if another writer got there first, the key is
    /// read again and `f` asked again.
    pub(super) async fn update_key<T, E: From<JsError>>(
        &self,
        b: Bucket,
        key: &str,
        mut f: impl FnMut(&Entry) -> Result<Update<T>, E>,
    ) -> Result<T, E> {
        for _ in 0..CAS_TRIES {
            let e = self.get_key(b, key).await?;
            match f(&e)? {
                Update::Keep(t) => return Ok(t),
                Update::Write(v, t) => match self.put_key(b, key, v, e.revision).await {
                    Ok(_) => return Ok(t),
                    Err(JsError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(JsError::Unavailable(format!("key {key} kept changing")).into())
    }

    /// Every live key of a bucket under `prefix` (a key prefix ending in
    /// a dot), with its value, in batches of `page`.
    pub(super) async fn scan_keys(
        &self,
        b: Bucket,
        prefix: &str,
        page: usize,
    ) -> Result<Vec<(String, Bytes)>, JsError> {
        self.scan_store(self.bucket(b), prefix, page).await
    }

    /// [`scan_keys`](Self::scan_keys) of any bucket.
    pub(super) async fn scan_store(
        &self,
        kv: &kv::Store,
        prefix: &str,
        page: usize,
    ) -> Result<Vec<(String, Bytes)>, JsError> {
        let entries = self.scan_entries(kv, prefix, page).await?;
        Ok(entries.into_iter().map(|(k, v, _)| (k, v)).collect())
    }

    /// [`scan_store`](Self::scan_store) with each key's revision; an
    /// empty `prefix` lists the whole bucket.
    pub(super) async fn scan_entries(
        &self,
        kv: &kv::Store,
        prefix: &str,
        page: usize,
    ) -> Result<Vec<(String, Bytes, u64)>, JsError> {
        let filter = format!("{}{prefix}>", kv.prefix);
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let got = self
                .batch(&kv.stream_name, &filter, from, page, usize::MAX)
                .await?;
            let full = got.len() >= page;
            for m in got {
                from = m.stream_seq + 1;
                let deleted = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() != "PUT");
                if let (false, Some(key)) = (deleted, m.subject.strip_prefix(kv.prefix.as_str())) {
                    out.push((key.to_string(), m.payload, m.stream_seq));
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

/// Creates what is missing (first start) and checks the partition count;
/// `Setup` errors are final, `Unavailable` ones worth a retry.
async fn setup(
    ctx: &Context,
    cfg: &ClusterConfig,
    names: &Names,
    dedup_window: Duration,
) -> Result<(Vec<Stream>, Vec<kv::Store>), JsError> {
    let setup = |what: String| move |e: String| JsError::Unavailable(format!("{what}: {e}"));

    // The partition count is fixed when the service is first started:
    // it decides which stream holds each user, so every node must use
    // the same one.
    let meta = bucket(ctx, names.meta_bucket(), cfg.replicas).await?;
    let want = cfg.partitions.to_string();
    match meta.create("partitions", Bytes::from(want.clone())).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let have = meta
                .get("partitions")
                .await
                .map_err(|e| setup("cannot read the partition count".into())(e.to_string()))?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            if have != want {
                return Err(JsError::Setup(format!(
                    "this node is configured with {want} partitions, but the cluster \
                         (stream prefix {}) was created with {have}; every node must use \
                         cluster.partitions = {have}",
                    cfg.stream_prefix
                )));
            }
        }
        Err(e) => {
            return Err(setup("cannot record the partition count".into())(
                e.to_string(),
            ));
        }
    }
    let mut streams = Vec::with_capacity(cfg.partitions as usize);
    for p in 0..cfg.partitions {
        let s = ctx
            .get_or_create_stream(stream::Config {
                name: names.stream(p),
                subjects: vec![names.stream_subjects(p)],
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                duplicate_window: dedup_window,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                setup(format!("cannot create stream {}", names.stream(p)))(e.to_string())
            })?;
        streams.push(s);
    }
    let mut buckets = Vec::with_capacity(4);
    for name in [
        names.cursors_bucket(),
        names.marks_bucket(),
        names.groups_bucket(),
    ] {
        buckets.push(bucket(ctx, name, cfg.replicas).await?);
    }
    buckets.push(meta);
    Ok((streams, buckets))
}

/// A key-value bucket of one version per key, on disk, created if missing.
async fn bucket(ctx: &Context, name: String, replicas: usize) -> Result<kv::Store, JsError> {
    ctx.create_or_update_key_value(kv::Config {
        bucket: name.clone(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| JsError::Unavailable(format!("cannot create bucket {name}: {e}")))
}

/// Whether JetStream refused a write because the subject's last record
/// is not the one expected. Besides the error the client library names,
/// a clustered stream answers a check that fails before its proposal with
/// another code for the same thing.
fn wrong_last(e: &(dyn std::error::Error + 'static)) -> bool {
    const WRONG_LAST: [u64; 2] = [10071, 10164];
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(js) = err.downcast_ref::<jetstream::Error>()
            && WRONG_LAST.contains(&js.error_code().0)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The big-endian u64 a value starts with.
pub(super) fn u64_value(v: &[u8]) -> Option<u64> {
    v.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

fn seq_of(h: &HeaderMap) -> Option<u64> {
    h.get(SEQ_HEADER).and_then(|v| v.as_str().parse().ok())
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as JetStream
/// writes it (`2024-05-01T12:34:56.789012345Z`); None for anything else,
/// or a time before the epoch.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_times_read_as_unix_ms() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2024-05-01T12:34:56.789012345Z"),
            Some(1_714_566_896_789)
        );
        // Trailing zeros of the fraction are dropped by the server.
        assert_eq!(
            rfc3339_ms("2024-05-01T12:34:56.7Z"),
            Some(1_714_566_896_700)
        );
        assert_eq!(rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(
            rfc3339_ms("2024-05-01T14:34:56+02:00"),
            Some(1_714_566_896_000)
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:34:56",
            "2024-05-01T12:34:56.Z",
            "2024-13-01T12:34:56Z",
            "2024-05-01T12:34:56Zjunk",
            "2024-05-01T1a:34:56Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}
