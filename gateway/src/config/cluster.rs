//! The `[cluster]` table: how a gateway node joins the others through NATS
//! JetStream when `backend = "cluster"`.
//!
//! Every node of one service must agree on `stream_prefix` and
//! `partitions` (the partition count is recorded in JetStream on first
//! start, and a node configured otherwise refuses to start); `node_id` is
//! this node's own and must differ between nodes.

use serde::Deserialize;

/// Settings of the cluster backend.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster; empty means the host name
    /// and the process id.
    pub node_id: String,
    /// NATS servers to connect to (any of the JetStream cluster's nodes).
    pub nats_urls: Vec<String>,
    /// Partitions (streams) the logs are spread over; fixed when the
    /// cluster is first started.
    pub partitions: u32,
    /// Replicas of each stream and bucket (1, 3 or 5).
    pub replicas: usize,
    /// Prefix of every stream, bucket and subject of this service, so
    /// several services (or tests) can share one JetStream cluster.
    pub stream_prefix: String,
    /// How long one publish waits for JetStream's acknowledgement, ms.
    pub publish_timeout_ms: u64,
    /// How long a write is retried (same message id, so never twice)
    /// before the client is told `overloaded`, ms; longer than a JetStream
    /// leader election.
    pub publish_retry_ms: u64,
    /// Requests in flight to JetStream on this node before new ones are
    /// refused with `overloaded`.
    pub max_in_flight: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            nats_urls: vec!["nats://127.0.0.1:4222".to_string()],
            partitions: 16,
            replicas: 3,
            stream_prefix: "IMGATE".to_string(),
            publish_timeout_ms: 2_000,
            publish_retry_ms: 30_000,
            max_in_flight: 20_000,
        }
    }
}

impl ClusterConfig {
    /// What is wrong with these settings, as (key, why).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.nats_urls.is_empty() || self.nats_urls.iter().any(|u| u.trim().is_empty()) {
            return Err(("cluster.nats_urls", "must list at least one URL".into()));
        }
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(("cluster.partitions", "must be 1..=1024".into()));
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err(("cluster.replicas", "must be 1, 3 or 5".into()));
        }
        let p = &self.stream_prefix;
        if p.is_empty()
            || p.len() > 32
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "cluster.stream_prefix",
                "must be 1 to 32 of A-Z, a-z, 0-9, _ and -".into(),
            ));
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err((
                "cluster.node_id",
                "must be at most 64 of A-Z, a-z, 0-9, _, - and .".into(),
            ));
        }
        if self.publish_timeout_ms == 0 {
            return Err(("cluster.publish_timeout_ms", "must be at least 1".into()));
        }
        if self.publish_retry_ms < self.publish_timeout_ms {
            return Err((
                "cluster.publish_retry_ms",
                "must be at least publish_timeout_ms".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(("cluster.max_in_flight", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The node id, with the default (host name and process id) filled in.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| {
                h.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string());
        format!("{host}-{}", std::process::id())
    }
}
