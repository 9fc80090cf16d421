//! Configuration: defaults, a TOML file, environment variables and flags,
//! each overriding the one before, then one `validate` step.
//!
//! Every limit the gateway enforces is a key here, so that an operator can
//! change it and a test can shrink it (a 50 ms heartbeat instead of 30 s).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

mod cluster;
mod events;

pub use cluster::ClusterConfig;
pub use events::{EventsConfig, TYPES as EVENT_TYPES};

/// Which io driver the cores run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// io_uring where the kernel allows it, else epoll (with a log line).
    Auto,
    /// io_uring only; start fails without it.
    Uring,
    /// epoll only.
    Epoll,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Durability of the default backend's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// msg:A after fsync: acknowledged means on disk.
    Fsync,
    /// msg:A after the write reaches the page cache.
    Os,
    /// Nothing on disk; for experiments only.
    Memory,
}

/// Who manages group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupAdmin {
    /// Members, with group:R, and the server API; the owner alone
    /// promotes, demotes and hands over (docs/api.md, "Roles").
    #[default]
    Members,
    /// Members by role: the owner and admins add and remove, the owner
    /// alone deletes; everyone but the owner may leave.
    Roles,
    /// The server API only: a client's create, add or remove is refused
    /// (`forbidden`); members still list.
    Api,
}

/// Which backend routes and stores the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Reliable delivery on the embedded store (the default).
    Embedded,
    /// An in-memory relay to online connections only: nothing stored,
    /// nothing resent; for measuring the core alone.
    Relay,
    /// Reliable delivery on NATS JetStream, shared by every gateway node
    /// of the service (`[cluster]`).
    Cluster,
}

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Address of the WebSocket listener (the same frames in binary
    /// WebSocket messages); empty, the default, for none.
    pub ws_listen: Option<SocketAddr>,
    /// The one request path the WebSocket listener upgrades.
    pub ws_path: String,
    /// Longest WebSocket upgrade request, headers included, bytes.
    pub ws_handshake_max: usize,
    /// Path under which the WebSocket listener serves the browser client
    /// and its demo chat page (`<path>/`, `<path>/imgate.js`); empty, the
    /// default, for none.
    pub demo_path: Option<String>,
    /// PEM certificate chain: with `tls_key`, both listeners speak TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Worker threads (cores); 0 means one per CPU.
    pub workers: usize,
    /// Pin worker `i` to CPU `i`.
    pub pin_cores: bool,
    /// io driver.
    pub driver: DriverKind,
    /// Listen backlog per core.
    pub backlog: u32,
    /// How long start waits for another socket listening on the port (a
    /// killed instance's, still being torn down) to close before sharing
    /// the port with it, ms.
    pub bind_wait_ms: u64,
    /// Connections accepted at once, over all cores; more are refused.
    pub max_connections: usize,
    /// Largest frame accepted, header included, bytes.
    pub max_frame: usize,
    /// Time a new connection has to log in, ms.
    pub login_timeout_ms: u64,
    /// Heartbeat interval advertised to clients, ms.
    pub heartbeat_ms: u64,
    /// Silence after which a connection is kicked, in heartbeat intervals.
    pub heartbeat_timeout_factor: u32,
    /// Timer wheel tick, ms.
    pub tick_ms: u64,
    /// Bytes queued for one connection before it is kicked as a slow consumer.
    pub max_outbound_bytes: usize,
    /// Frames per second one connection may send (sustained).
    pub max_frames_per_sec: u32,
    /// Frames one connection may send in a burst above the sustained rate.
    pub frame_burst: u32,
    /// Frames over the rate limit answered with `rate_limited` (and
    /// dropped) before the connection is kicked.
    pub rate_limit_strikes: u32,
    /// Time a pushed msg:N may stay unacknowledged before it is re-sent, ms.
    pub push_timeout_ms: u64,
    /// Re-sends of unacknowledged pushes before the connection is kicked.
    pub push_retries: u32,
    /// How long the server remembers (sender, msg id) to answer a
    /// retransmitted msg:R without storing it again, ms.
    pub dedup_window_ms: u64,
    /// Sync page size when a client asks for 0.
    pub sync_page_default: usize,
    /// Largest sync page.
    pub sync_page_max: usize,
    /// Largest group.
    pub max_group_size: usize,
    /// Most inbox entries read to build one unread summary.
    pub unread_scan_limit: usize,
    /// Most entries in each of the delivery backend's caches (stream heads,
    /// cursors, receipt marks; cached groups count one per member).
    pub cache_entries: usize,
    /// Inbound events per batch to the backend.
    pub backend_batch: usize,
    /// Batches queued towards the backend before cores shed load.
    pub backend_queue: usize,
    /// Delete messages once every device (every member's device, for a
    /// group) acknowledged them.
    pub purge_acked: bool,
    /// Delete messages older than this, acknowledged or not, ms; 0 keeps
    /// them whatever their age.
    pub retention_ms: u64,
    /// Most messages deleted per purge step (one atomic batch).
    pub purge_per_tick: usize,
    /// Time between purge steps on the embedded backend, ms (steps follow
    /// each other at once while they come back full).
    pub purge_interval_ms: u64,
    /// Free space the embedded store's disk keeps, MiB: below it, new
    /// messages are refused with `storage_full` (0: no floor).
    pub disk_free_min_mb: u64,
    /// How often the embedded backend checks its disk's free space and,
    /// while failing, tries to recover the store, ms.
    pub disk_check_ms: u64,
    /// How long a client refused with `storage_full` is told to wait, ms.
    pub storage_retry_ms: u64,
    /// Grace period for a graceful shutdown, ms.
    pub shutdown_timeout_ms: u64,
    /// Secret for HMAC login tokens.
    pub secret: String,
    /// Who manages group membership.
    pub group_admin: GroupAdmin,
    /// How long a server API send waits for the backend, ms.
    pub api_timeout_ms: u64,
    /// Most recipients of one server API batch.
    pub api_batch_max: usize,
    /// JWT login tokens: HS256 secret; empty, the default, for none.
    pub jwt_secret: String,
    /// JWT login tokens: PEM public key (RSA: RS256, EC P-256: ES256).
    pub jwt_public_key: Option<PathBuf>,
    /// JWT login tokens: the `iss` required, if any.
    pub jwt_issuer: Option<String>,
    /// JWT login tokens: the `aud` required, if any.
    pub jwt_audience: Option<String>,
    /// JWT login tokens: the claim that names the device.
    pub jwt_device_claim: String,
    /// JWT login tokens: clock skew allowed on `exp` and `nbf`, seconds.
    pub jwt_leeway_s: u64,
    /// The backend.
    pub backend: BackendKind,
    /// Directory of the default backend's store.
    pub data_dir: PathBuf,
    /// Durability of the default backend.
    pub durability: Durability,
    /// Metrics and health endpoint; empty to disable.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token of the admin path on the metrics endpoint; empty (the
    /// default) disables the admin path.
    pub admin_token: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter, as `RUST_LOG` (e.g. `info`, `imgate=debug`).
    pub log_level: String,
    /// The cluster backend (`backend = "cluster"`).
    pub cluster: ClusterConfig,
    /// Events to the business backend (`[events]`).
    pub events: EventsConfig,
}

/// The secret used when none is configured: fine for trying imgate on a
/// laptop, never for production (the gateway warns at start).
pub const DEV_SECRET: &str = imgate_codec::token::DEV_SECRET;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            ws_listen: None,
            ws_path: "/ws".into(),
            ws_handshake_max: 8192,
            demo_path: None,
            tls_cert: None,
            tls_key: None,
            workers: 0,
            pin_cores: false,
            driver: DriverKind::Auto,
            backlog: 4096,
            bind_wait_ms: 2000,
            max_connections: 1_000_000,
            max_frame: imgate_codec::DEFAULT_MAX_FRAME,
            login_timeout_ms: 10_000,
            heartbeat_ms: 30_000,
            heartbeat_timeout_factor: 3,
            tick_ms: 1000,
            max_outbound_bytes: 1 << 20,
            max_frames_per_sec: 1000,
            frame_burst: 2000,
            rate_limit_strikes: 10,
            push_timeout_ms: 5000,
            push_retries: 3,
            dedup_window_ms: 600_000,
            sync_page_default: 100,
            sync_page_max: 1000,
            max_group_size: 10_000,
            unread_scan_limit: 100_000,
            cache_entries: 1_000_000,
            backend_batch: 512,
            backend_queue: 4096,
            purge_acked: true,
            retention_ms: 7 * 24 * 3600 * 1000,
            purge_per_tick: 10_000,
            purge_interval_ms: 250,
            disk_free_min_mb: 256,
            disk_check_ms: 1000,
            storage_retry_ms: 5000,
            shutdown_timeout_ms: 10_000,
            secret: DEV_SECRET.to_string(),
            group_admin: GroupAdmin::Members,
            api_timeout_ms: 10_000,
            api_batch_max: 1000,
            jwt_secret: String::new(),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_device_claim: "device".into(),
            jwt_leeway_s: 30,
            backend: BackendKind::Embedded,
            data_dir: PathBuf::from("./imgate-data"),
            durability: Durability::Fsync,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
            admin_token: String::new(),
            log_format: LogFormat::Human,
            log_level: "info,fjall=warn,lsm_tree=warn".to_string(),
            cluster: ClusterConfig::default(),
            events: EventsConfig::default(),
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, one line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl Config {
    /// Parses a TOML document (unknown keys are errors).
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().replace('\n', " "),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Checks every value; the gateway refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, why: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                why: why.into(),
            })
        }
        // A login with a token, and a useful message, must fit.
        let min_frame = 1024;
        if self.max_frame < min_frame || self.max_frame > 16 << 20 {
            return invalid("max_frame", format!("must be {min_frame}..=16777216"));
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.tick_ms == 0 {
            return invalid("tick_ms", "must be at least 1");
        }
        if self.heartbeat_ms < self.tick_ms {
            return invalid("heartbeat_ms", "must be at least tick_ms");
        }
        if self.heartbeat_ms > u64::from(u32::MAX) {
            return invalid("heartbeat_ms", "must fit in 32 bits");
        }
        if self.heartbeat_timeout_factor == 0 {
            return invalid("heartbeat_timeout_factor", "must be at least 1");
        }
        if self.login_timeout_ms == 0 {
            return invalid("login_timeout_ms", "must be at least 1");
        }
        if self.max_outbound_bytes < self.max_frame {
            return invalid("max_outbound_bytes", "must be at least max_frame");
        }
        if !self.ws_path.starts_with('/') {
            return invalid("ws_path", "must start with /");
        }
        if !(256..=65_536).contains(&self.ws_handshake_max) {
            return invalid("ws_handshake_max", "must be between 256 and 65536");
        }
        if let Some(p) = &self.demo_path {
            if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
                return invalid("demo_path", "must start with / and not end with /");
            }
            if *p == self.ws_path {
                return invalid("demo_path", "must differ from ws_path");
            }
        }
        if self.api_timeout_ms == 0 {
            return invalid("api_timeout_ms", "must be at least 1");
        }
        if !(1..=100_000).contains(&self.api_batch_max) {
            return invalid("api_batch_max", "must be between 1 and 100000");
        }
        if self.jwt_device_claim.is_empty() {
            return invalid("jwt_device_claim", "must not be empty");
        }
        if self.jwt_leeway_s > 3600 {
            return invalid("jwt_leeway_s", "must be at most 3600");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let which = if self.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return invalid(which, "tls_cert and tls_key go together");
        }
        if self.push_timeout_ms == 0 {
            return invalid("push_timeout_ms", "must be at least 1");
        }
        if self.dedup_window_ms == 0 {
            return invalid("dedup_window_ms", "must be at least 1");
        }
        if self.sync_page_default == 0 || self.sync_page_max < self.sync_page_default {
            return invalid(
                "sync_page_max",
                "sync_page_default must be at least 1 and at most sync_page_max",
            );
        }
        if self.sync_page_max > usize::from(u16::MAX) {
            return invalid("sync_page_max", "must be at most 65535");
        }
        if self.max_group_size == 0 {
            return invalid("max_group_size", "must be at least 1");
        }
        if self.purge_interval_ms == 0 || self.purge_interval_ms > 3_600_000 {
            return invalid("purge_interval_ms", "must be between 1 and 3600000");
        }
        if self.disk_check_ms == 0 || self.disk_check_ms > 60_000 {
            return invalid("disk_check_ms", "must be between 1 and 60000");
        }
        if self.storage_retry_ms == 0 || self.storage_retry_ms > 3_600_000 {
            return invalid("storage_retry_ms", "must be between 1 and 3600000");
        }
        if self.purge_per_tick == 0 {
            return invalid("purge_per_tick", "must be at least 1");
        }
        if self.unread_scan_limit == 0 {
            return invalid("unread_scan_limit", "must be at least 1");
        }
        if self.cache_entries < 2 {
            return invalid("cache_entries", "must be at least 2");
        }
        if self.max_frames_per_sec == 0 {
            return invalid("max_frames_per_sec", "must be at least 1");
        }
        if self.backend_batch == 0 || self.backend_queue == 0 {
            return invalid(
                "backend_batch",
                "backend_batch and backend_queue must be at least 1",
            );
        }
        if self.secret.is_empty() {
            return invalid("secret", "must not be empty");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid("log_level", e.to_string());
        }
        if self.workers > 1024 {
            return invalid("workers", "must be at most 1024");
        }
        self.events
            .check()
            .map_err(|(key, why)| ConfigError::Invalid { key, why })?;
        if self.backend == BackendKind::Cluster {
            self.cluster
                .check()
                .map_err(|(key, why)| ConfigError::Invalid { key, why })?;
            // JetStream's shortest duplicate window.
            if self.dedup_window_ms < 100 {
                return invalid(
                    "dedup_window_ms",
                    "must be at least 100 with backend = \"cluster\"",
                );
            }
        }
        Ok(())
    }

    /// The JWT settings.
    pub fn jwt(&self) -> crate::jwt::JwtSettings {
        crate::jwt::JwtSettings {
            secret: self.jwt_secret.clone(),
            public_key: self.jwt_public_key.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            device_claim: self.jwt_device_claim.clone(),
            leeway_s: self.jwt_leeway_s,
        }
    }

    /// Worker count, with 0 resolved to the number of CPUs.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The timer tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml(
            "listen = \"0.0.0.0:7100\"\nheartbeat_ms = 5000\n",
            std::path::Path::new("t.toml"),
        )
        .expect("parses");
        assert_eq!(c.listen.port(), 7100);
        assert_eq!(c.heartbeat_ms, 5000);
        assert_eq!(c.login_timeout_ms, 10_000);
        let c = Config::from_toml(
            "backend = \"cluster\"\n[cluster]\nnode_id = \"a\"\npartitions = 4\n",
            std::path::Path::new("t.toml"),
        )
        .expect("parses");
        assert_eq!(c.backend, BackendKind::Cluster);
        assert_eq!((c.cluster.node_id.as_str(), c.cluster.partitions), ("a", 4));
        assert_eq!(c.cluster.replicas, 3);
        let e = Config::from_toml("heartbeat = 1", std::path::Path::new("t.toml"))
            .expect_err("unknown key");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    /// Events on, with a secret: the rest of the table is checked.
    fn events_on(c: &mut Config) -> &mut EventsConfig {
        c.events.url = "http://127.0.0.1:1/hook".into();
        c.events.secret = "s".into();
        &mut c.events
    }

    #[test]
    fn every_limit_is_checked() {
        type Case = (&'static str, Box<dyn Fn(&mut Config)>);
        let cases: Vec<Case> = vec![
            ("max_frame", Box::new(|c| c.max_frame = 100)),
            ("push_timeout_ms", Box::new(|c| c.push_timeout_ms = 0)),
            ("ws_path", Box::new(|c| c.ws_path = "ws".into())),
            ("ws_handshake_max", Box::new(|c| c.ws_handshake_max = 100)),
            ("jwt_device_claim", Box::new(|c| c.jwt_device_claim.clear())),
            ("api_timeout_ms", Box::new(|c| c.api_timeout_ms = 0)),
            ("api_batch_max", Box::new(|c| c.api_batch_max = 0)),
            ("jwt_leeway_s", Box::new(|c| c.jwt_leeway_s = 7200)),
            (
                "demo_path",
                Box::new(|c| c.demo_path = Some("/demo/".into())),
            ),
            ("demo_path", Box::new(|c| c.demo_path = Some("/ws".into()))),
            (
                "tls_key",
                Box::new(|c| c.tls_cert = Some("cert.pem".into())),
            ),
            ("tls_cert", Box::new(|c| c.tls_key = Some("key.pem".into()))),
            ("dedup_window_ms", Box::new(|c| c.dedup_window_ms = 0)),
            ("sync_page_max", Box::new(|c| c.sync_page_max = 5)),
            ("max_group_size", Box::new(|c| c.max_group_size = 0)),
            ("unread_scan_limit", Box::new(|c| c.unread_scan_limit = 0)),
            ("cache_entries", Box::new(|c| c.cache_entries = 1)),
            ("purge_per_tick", Box::new(|c| c.purge_per_tick = 0)),
            ("purge_interval_ms", Box::new(|c| c.purge_interval_ms = 0)),
            ("disk_check_ms", Box::new(|c| c.disk_check_ms = 0)),
            ("storage_retry_ms", Box::new(|c| c.storage_retry_ms = 0)),
            ("max_connections", Box::new(|c| c.max_connections = 0)),
            ("tick_ms", Box::new(|c| c.tick_ms = 0)),
            ("heartbeat_ms", Box::new(|c| c.heartbeat_ms = 1)),
            (
                "heartbeat_timeout_factor",
                Box::new(|c| c.heartbeat_timeout_factor = 0),
            ),
            ("login_timeout_ms", Box::new(|c| c.login_timeout_ms = 0)),
            (
                "max_outbound_bytes",
                Box::new(|c| c.max_outbound_bytes = 100),
            ),
            ("max_frames_per_sec", Box::new(|c| c.max_frames_per_sec = 0)),
            ("backend_batch", Box::new(|c| c.backend_queue = 0)),
            ("secret", Box::new(|c| c.secret.clear())),
            ("workers", Box::new(|c| c.workers = 5000)),
            (
                "log_level",
                Box::new(|c| c.log_level = "imgate=loud".into()),
            ),
            (
                "cluster.nats_urls",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.nats_urls.clear();
                }),
            ),
            (
                "cluster.partitions",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.partitions = 0;
                }),
            ),
            (
                "cluster.replicas",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.replicas = 2;
                }),
            ),
            (
                "cluster.stream_prefix",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.stream_prefix = "a.b".into();
                }),
            ),
            (
                "cluster.node_id",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.node_id = "a b".into();
                }),
            ),
            (
                "cluster.publish_timeout_ms",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.publish_timeout_ms = 0;
                }),
            ),
            (
                "cluster.publish_retry_ms",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.publish_retry_ms = 1;
                }),
            ),
            (
                "cluster.max_in_flight",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.cluster.max_in_flight = 0;
                }),
            ),
            (
                "dedup_window_ms",
                Box::new(|c| {
                    c.backend = BackendKind::Cluster;
                    c.dedup_window_ms = 99;
                }),
            ),
            ("events.url", Box::new(|c| c.events.url = "ftp://x".into())),
            (
                "events.secret",
                Box::new(|c| c.events.url = "http://127.0.0.1:1/".into()),
            ),
            (
                "events.types",
                Box::new(|c| events_on(c).types = vec!["msg".into()]),
            ),
            ("events.batch", Box::new(|c| events_on(c).batch = 0)),
            (
                "events.ca_file",
                Box::new(|c| events_on(c).ca_file = Some("ca.pem".into())),
            ),
            (
                "events.batch_bytes",
                Box::new(|c| events_on(c).batch_bytes = 10),
            ),
            (
                "events.linger_ms",
                Box::new(|c| events_on(c).linger_ms = 60_001),
            ),
            (
                "events.timeout_ms",
                Box::new(|c| events_on(c).timeout_ms = 0),
            ),
            (
                "events.retry_max_ms",
                Box::new(|c| events_on(c).retry_min_ms = 0),
            ),
            (
                "events.retry_max_ms",
                Box::new(|c| events_on(c).retry_max_ms = 1),
            ),
            ("events.max_lag", Box::new(|c| events_on(c).max_lag = 10)),
            ("events.lag_alert", Box::new(|c| events_on(c).lag_alert = 0)),
        ];
        for (key, f) in cases {
            let mut c = Config::default();
            f(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected invalid, got {other:?}"),
            }
        }
    }
}
