//! The cluster backend: many gateway nodes, one service, on NATS
//! JetStream (`backend = "cluster"`).
//!
//! ```text
//!  cores ──► backend thread: Cluster::handle ──(unbounded, counted)──► cluster thread (tokio)
//!                                                                      │  per request a task:
//!                                                                      │  append with CAS, read, cursor
//!                                                                      ▼
//!            JetStream (R3, fsync): streams <prefix>_<p>; buckets <prefix>_cursors, _marks, _groups, _meta
//!                                                                      │
//!  cores ◄── Router ◄── pushes in order ◄── core NATS <prefix>.push.{u,g}.<id> ◄── storing node
//! ```
//!
//! Everything durable is in JetStream, so any node can serve any user and
//! a node can die without taking anything acknowledged with it. The
//! protocol's guarantees hold across nodes because of three properties of
//! JetStream used together: a publish is acknowledged after a quorum of
//! replicas wrote it (with `sync_interval: always`, to disk); an append
//! can require the subject's newest record to be a given one, which makes
//! per-user sequence ids contiguous without a coordinator (see
//! the `append` module); and a message id seen within the dedup window is not
//! stored again, whichever node sends it.
//!
//! The backend's own thread never waits on JetStream: `handle` passes
//! events to the cluster thread and refuses requests with `overloaded`
//! when too many are in flight there.
//!
//! Records every reader acknowledged, or past retention, are deleted by
//! one node per partition at a time, the holder of the partition's lease
//! (module `purge`).
//!
//! With `[events]` on, the events for the business backend are published
//! to a stream of their own before the answers they report (module
//! `events`) and read from it by the sender of one node at a time (module
//! `webhook`).

mod append;
mod cursors;
mod events;
mod feed;
mod groups;
mod js;
pub mod names;
mod node;
mod purge;
mod receipts;
mod requests;
mod stats;
mod unread;
mod webhook;
pub mod wire;

use std::{
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use imgate_codec::{Body, ErrorCode, frame::ErrorFrame};

use crate::{
    backend::{Backend, Inbound, Router, Start},
    config::Config,
};
pub use stats::Stats;

/// The cluster backend.
pub struct Cluster {
    cfg: Config,
    stats: Arc<Stats>,
    histograms: crate::metrics::BackendHistograms,
    inflight: Arc<AtomicUsize>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<Inbound>>,
    thread: Option<JoinHandle<()>>,
    /// The webhook sender (`[events]` on).
    sender: Option<crate::events::Sender>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.cfg.cluster.node_id)
            .field("inflight", &self.inflight.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A backend for `cfg`; it connects in [`Backend::start`].
    pub fn new(cfg: &Config) -> Cluster {
        Cluster {
            cfg: cfg.clone(),
            stats: Arc::new(Stats::default()),
            histograms: Default::default(),
            inflight: Arc::new(AtomicUsize::new(0)),
            tx: None,
            thread: None,
            sender: None,
        }
    }

    /// The node's counters (for the metrics endpoint).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Backend for Cluster {
    fn start(&mut self, start: &Start) -> std::io::Result<()> {
        let fail = |e: String| std::io::Error::other(e);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cc = &self.cfg.cluster;
        let node_name = cc.node_name();
        let js = rt
            .block_on(js::Js::connect(
                cc,
                &node_name,
                Duration::from_millis(self.cfg.dedup_window_ms),
            ))
            .map_err(|e| fail(e.to_string()))?;
        // Revocations are loaded before the first login can arrive.
        let revoked = rt
            .block_on(js.scan_keys(js::Bucket::Meta, "revoked.", 256))
            .map_err(|e| fail(e.to_string()))?;
        let now = crate::unix_time().as_millis() as u64;
        for (key, value) in revoked {
            if let Some(r) = stats::parse_revocation(&key, &value)
                && r.until > now
            {
                start.registry.revocations.set(r);
            }
        }
        let report: Arc<dyn crate::metrics::BackendReport> = Arc::new(stats::Report {
            stats: self.stats.clone(),
            client: js.client().clone(),
            names: js.names().clone(),
            meta: js.meta_bucket(),
        });
        let _ = start.metrics.backend.set(report);
        self.histograms = start.metrics.histograms.clone();
        tracing::info!(
            node = %node_name,
            partitions = cc.partitions,
            replicas = cc.replicas,
            prefix = %cc.stream_prefix,
            "cluster backend connected to JetStream"
        );
        let limits = node::Limits {
            max_body: crate::delivery::rules::max_body(self.cfg.max_frame),
            max_frame: self.cfg.max_frame,
            max_group_size: self.cfg.max_group_size,
            group_admin: self.cfg.group_admin,
            unread_scan_limit: self.cfg.unread_scan_limit,
            page_default: self.cfg.sync_page_default,
            page_max: self.cfg.sync_page_max,
            page_budget: crate::delivery::rules::page_budget(self.cfg.max_frame),
            retry: Duration::from_millis(cc.publish_retry_ms),
            purge: purge::Settings::from_config(&self.cfg),
        };
        let events = if self.cfg.events.enabled() {
            let ack_wait = webhook::ack_wait(self.cfg.events.timeout_ms);
            let every = events::alive_every(self.cfg.tick());
            let setup = rt
                .block_on(js.events_setup(
                    cc,
                    &self.cfg.events,
                    Duration::from_millis(self.cfg.dedup_window_ms),
                    ack_wait,
                    every * events::ALIVE_PERIODS,
                ))
                .map_err(|e| fail(e.to_string()))?;
            let out = events::Out::new(&self.cfg.events, setup.presence, setup.nodes, every, now);
            // Alive before clearing its leftovers (no other node clears
            // them too) and before the first presence key of this run.
            rt.block_on(events::announce(&out, &node_name))
                .map_err(|e| fail(format!("cannot write this node's key: {e}")))?;
            // Before the first login can put a key of this run.
            let gone = rt
                .block_on(events::went_offline_in_a_restart(
                    &js,
                    &out,
                    &node_name,
                    limits.retry,
                ))
                .map_err(|e| fail(format!("cannot clear this node's presence: {e}")))?;
            if gone > 0 {
                tracing::info!(
                    users = gone,
                    "offline events for the users online here when this node last stopped"
                );
            }
            let source = webhook::Webhook::new(
                rt.handle().clone(),
                js.client().clone(),
                setup.consumer,
                js.meta_bucket(),
                ack_wait,
            );
            self.sender = Some(crate::events::Sender::start(
                &self.cfg.events,
                Box::new(source),
                start.metrics.events.clone(),
            )?);
            Some(out)
        } else {
            None
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let router = start.router();
        let (inflight, stats) = (self.inflight.clone(), self.stats.clone());
        let grace = Duration::from_millis(self.cfg.shutdown_timeout_ms);
        let thread = std::thread::Builder::new()
            .name("imgate-cluster".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                let mut node = node::Node::new(js, node_name, limits, router, inflight, stats);
                node.events = events;
                let node = Rc::new(node);
                local.block_on(&rt, async move {
                    if node.events.is_some() {
                        tokio::task::spawn_local(node.clone().presence_writer());
                        tokio::task::spawn_local(node.clone().presence_watcher());
                        tokio::task::spawn_local(node.clone().liveness());
                    }
                    node.clone().run(rx, grace).await;
                    node.presence_drained(grace).await;
                    node.leave().await;
                });
            })?;
        self.tx = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    fn handle(&mut self, batch: &mut Vec<Inbound>, out: &mut Router) {
        let Some(tx) = &self.tx else {
            return;
        };
        self.histograms.batch(batch.len());
        let max = self.cfg.cluster.max_in_flight;
        for ev in batch.drain(..) {
            if let Inbound::Frame { conn, frame, .. } = &ev {
                if self.inflight.load(Relaxed) >= max {
                    self.stats.refused.fetch_add(1, Relaxed);
                    out.to_conn(
                        *conn,
                        ErrorFrame::new(
                            ErrorCode::Overloaded,
                            Some(frame.kind()),
                            frame.request_id(),
                            "try again",
                        )
                        .to_bytes(),
                        None,
                    );
                    continue;
                }
                self.inflight.fetch_add(1, Relaxed);
            }
            if tx.send(ev).is_err() {
                tracing::error!("the cluster thread stopped");
                return;
            }
        }
    }

    fn shutdown(&mut self, _out: &mut Router) {
        // The sender's calls run on the cluster thread: it stops first.
        self.sender = None;
        // Closing the channel ends the node once its requests finished.
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the cluster thread panicked");
        }
    }
}
