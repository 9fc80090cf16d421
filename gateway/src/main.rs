//! The `imgate` command: serve, or mint a login token.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};
use imgate::{
    config::{BackendKind, Config, DEV_SECRET, DriverKind, Durability, GroupAdmin, LogFormat},
    server,
    token::HmacVerifier,
};

#[global_allocator]
static GLOBAL: imgate::alloc::MiAlloc = imgate::alloc::MiAlloc;

/// imgate: a high-performance IM connection gateway.
///
/// With no arguments it serves on 127.0.0.1:7000. Settings come from, in
/// increasing priority: built-in defaults, the --config TOML file, IMGATE_*
/// environment variables, and command-line flags.
#[derive(Parser, Debug)]
#[command(name = "imgate", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    events: EventsArgs,
}

/// The `[events]` keys most often set per deployment.
#[derive(Args, Debug, Default)]
struct EventsArgs {
    /// Webhook URL events are POSTed to; empty for none [default: none].
    #[arg(long, env = "IMGATE_EVENTS_URL", global = true)]
    events_url: Option<String>,
    /// HMAC-SHA256 key of the webhook's signature header.
    #[arg(
        long,
        env = "IMGATE_EVENTS_SECRET",
        global = true,
        hide_env_values = true
    )]
    events_secret: Option<String>,
    /// PEM file of the CAs an https events URL is checked against [default: the Mozilla roots].
    #[arg(long, env = "IMGATE_EVENTS_CA_FILE", global = true)]
    events_ca_file: Option<PathBuf>,
    /// Event types sent, comma-separated [default: message,online,offline,group].
    #[arg(
        long,
        env = "IMGATE_EVENTS_TYPES",
        global = true,
        value_delimiter = ','
    )]
    events_types: Option<Vec<String>>,
}

impl EventsArgs {
    fn apply(&self, c: &mut imgate::config::EventsConfig) {
        if let Some(v) = &self.events_url {
            c.url = v.clone();
        }
        if let Some(v) = &self.events_secret {
            c.secret = v.clone();
        }
        if let Some(v) = &self.events_types {
            c.types = v.clone();
        }
        if let Some(v) = &self.events_ca_file {
            c.ca_file = Some(v.clone());
        }
    }
}

/// The `[cluster]` keys (backend = cluster).
#[derive(Args, Debug, Default)]
struct ClusterArgs {
    /// This node's name in the cluster [default: host name and process id].
    #[arg(long, env = "IMGATE_CLUSTER_NODE_ID", global = true)]
    cluster_node_id: Option<String>,
    /// NATS servers, comma-separated [default: nats://127.0.0.1:4222].
    #[arg(
        long,
        env = "IMGATE_CLUSTER_NATS_URLS",
        global = true,
        value_delimiter = ','
    )]
    cluster_nats_urls: Option<Vec<String>>,
    /// Partitions (streams) of the logs; fixed at the cluster's first start [default: 16].
    #[arg(long, env = "IMGATE_CLUSTER_PARTITIONS", global = true)]
    cluster_partitions: Option<u32>,
    /// Replicas of every stream and bucket: 1, 3 or 5 [default: 3].
    #[arg(long, env = "IMGATE_CLUSTER_REPLICAS", global = true)]
    cluster_replicas: Option<usize>,
    /// Prefix of the service's streams, buckets and subjects [default: IMGATE].
    #[arg(long, env = "IMGATE_CLUSTER_STREAM_PREFIX", global = true)]
    cluster_stream_prefix: Option<String>,
    /// Wait for one JetStream acknowledgement, ms [default: 2000].
    #[arg(long, env = "IMGATE_CLUSTER_PUBLISH_TIMEOUT_MS", global = true)]
    cluster_publish_timeout_ms: Option<u64>,
    /// Retry a write this long before answering overloaded, ms [default: 30000].
    #[arg(long, env = "IMGATE_CLUSTER_PUBLISH_RETRY_MS", global = true)]
    cluster_publish_retry_ms: Option<u64>,
    /// Requests in flight to JetStream before overloaded [default: 20000].
    #[arg(long, env = "IMGATE_CLUSTER_MAX_IN_FLIGHT", global = true)]
    cluster_max_in_flight: Option<usize>,
}

impl ClusterArgs {
    fn apply(&self, c: &mut imgate::config::ClusterConfig) {
        if let Some(v) = &self.cluster_node_id {
            c.node_id = v.clone();
        }
        if let Some(v) = &self.cluster_nats_urls {
            c.nats_urls = v.clone();
        }
        if let Some(v) = self.cluster_partitions {
            c.partitions = v;
        }
        if let Some(v) = self.cluster_replicas {
            c.replicas = v;
        }
        if let Some(v) = &self.cluster_stream_prefix {
            c.stream_prefix = v.clone();
        }
        if let Some(v) = self.cluster_publish_timeout_ms {
            c.publish_timeout_ms = v;
        }
        if let Some(v) = self.cluster_publish_retry_ms {
            c.publish_retry_ms = v;
        }
        if let Some(v) = self.cluster_max_in_flight {
            c.max_in_flight = v;
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Mint a login token with the configured secret and print it.
    Token(TokenArgs),
    /// Kick a user's connections (reason admin) through the admin path of
    /// a running gateway (its metrics address and admin token).
    Kick(KickArgs),
    /// Copy the embedded store, as of one moment, into a new directory:
    /// through the admin path of the running gateway, or from `data_dir`
    /// directly when no gateway answers there.
    Backup(BackupArgs),
    /// Make `data_dir` (empty or missing) a copy of a backup, with every
    /// stream's sequence ids moved past anything handed out after it. The
    /// gateway must be stopped.
    Restore(RestoreArgs),
    /// Read all of the embedded store in `data_dir` (the gateway stopped)
    /// and report damage: a journal that does not replay, unreadable
    /// records, records or cursors past their stream's head. Exits 0 when
    /// clean, 1 when damaged. `data_dir` is not written.
    Check,
    /// Copy what can be read of a damaged `data_dir` into a new directory:
    /// the journal up to its first damaged batch, with every stream's
    /// sequence ids moved on so none is reused. `data_dir` is not written.
    Salvage(SalvageArgs),
}

#[derive(Args, Debug)]
struct SalvageArgs {
    /// The new directory (must not exist).
    to: PathBuf,
    /// Sequence ids skipped in every stream, past anything the lost part
    /// of the journal can have handed out.
    #[arg(long, default_value_t = imgate::delivery::restore::DEFAULT_SKIP)]
    skip: u64,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The new directory (empty or missing), absolute.
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// The backup's directory.
    from: PathBuf,
    /// Sequence ids skipped in every stream, so that none handed out after
    /// the backup is given out again.
    #[arg(long, default_value_t = imgate::delivery::restore::DEFAULT_SKIP)]
    skip: u64,
}

#[derive(Args, Debug)]
struct KickArgs {
    /// User id.
    #[arg(long)]
    user: u64,
    /// Only this device [default: every device of the user].
    #[arg(long)]
    device: Option<u32>,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// User id (1 or more: 0 names no user).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    user: u64,
    /// Device id.
    #[arg(long)]
    device: u32,
    /// Seconds the token stays valid.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
}

macro_rules! serve_args {
    ($($(#[doc = $doc:literal])* $field:ident : $ty:ty, $env:literal;)*) => {
        #[derive(Args, Debug, Default)]
        struct ServeArgs {
            /// TOML configuration file (keys as in docs/operations.md).
            #[arg(long, short, env = "IMGATE_CONFIG", global = true)]
            config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, global = true)]
                $field: Option<$ty>,
            )*
            /// Disable the metrics endpoint.
            #[arg(long, env = "IMGATE_NO_METRICS", global = true)]
            no_metrics: bool,
        }

        impl ServeArgs {
            fn apply(&self, cfg: &mut Config) {
                $(if let Some(v) = &self.$field {
                    serve_args!(@set cfg.$field, v, $ty);
                })*
                if self.no_metrics {
                    cfg.metrics_listen = None;
                }
            }
        }
    };
    (@set $dst:expr, $v:ident, SocketAddr) => { serve_args!(@opt $dst, $v) };
    (@set $dst:expr, $v:ident, $ty:ty) => { $dst = $v.clone().into() };
    (@opt $dst:expr, $v:ident) => { $dst = (*$v).into() };
}

serve_args! {
    /// Address to listen on [default: 127.0.0.1:7000].
    listen: SocketAddr, "IMGATE_LISTEN";
    /// WebSocket listener address (same frames in binary messages) [default: off].
    ws_listen: SocketAddr, "IMGATE_WS_LISTEN";
    /// Request path the WebSocket listener upgrades [default: /ws].
    ws_path: String, "IMGATE_WS_PATH";
    /// Longest WebSocket upgrade request, bytes [default: 8192].
    ws_handshake_max: usize, "IMGATE_WS_HANDSHAKE_MAX";
    /// Serve the browser client and a demo chat page under this path on the WebSocket listener [default: off].
    demo_path: String, "IMGATE_DEMO_PATH";
    /// PEM certificate chain; with --tls-key, both listeners speak TLS [default: off].
    tls_cert: PathBuf, "IMGATE_TLS_CERT";
    /// PEM private key of --tls-cert [default: off].
    tls_key: PathBuf, "IMGATE_TLS_KEY";
    /// Worker threads, one per core; 0 = one per CPU [default: 0].
    workers: usize, "IMGATE_WORKERS";
    /// Pin each worker to a CPU.
    pin_cores: bool, "IMGATE_PIN_CORES";
    /// io driver: auto (io_uring, else epoll), uring, epoll [default: auto].
    driver: DriverKind, "IMGATE_DRIVER";
    /// Listen backlog per core [default: 4096].
    backlog: u32, "IMGATE_BACKLOG";
    /// Wait at start for a previous listener on the port to close, ms [default: 2000].
    bind_wait_ms: u64, "IMGATE_BIND_WAIT_MS";
    /// Maximum connections over all cores [default: 1000000].
    max_connections: usize, "IMGATE_MAX_CONNECTIONS";
    /// Largest frame accepted, header included, bytes [default: 65536].
    max_frame: usize, "IMGATE_MAX_FRAME";
    /// Time to log in after connecting, ms [default: 10000].
    login_timeout_ms: u64, "IMGATE_LOGIN_TIMEOUT_MS";
    /// Heartbeat interval advertised to clients, ms [default: 30000].
    heartbeat_ms: u64, "IMGATE_HEARTBEAT_MS";
    /// Silent heartbeat intervals before a kick [default: 3].
    heartbeat_timeout_factor: u32, "IMGATE_HEARTBEAT_TIMEOUT_FACTOR";
    /// Timer wheel tick, ms [default: 1000].
    tick_ms: u64, "IMGATE_TICK_MS";
    /// Outbound bytes queued per connection before a slow-consumer kick [default: 1048576].
    max_outbound_bytes: usize, "IMGATE_MAX_OUTBOUND_BYTES";
    /// Sustained frames per second per connection [default: 1000].
    max_frames_per_sec: u32, "IMGATE_MAX_FRAMES_PER_SEC";
    /// Burst of frames above the sustained rate [default: 2000].
    frame_burst: u32, "IMGATE_FRAME_BURST";
    /// Frames over the rate limit refused before a rate_limited kick [default: 10].
    rate_limit_strikes: u32, "IMGATE_RATE_LIMIT_STRIKES";
    /// Unacknowledged push re-send timeout, ms [default: 5000].
    push_timeout_ms: u64, "IMGATE_PUSH_TIMEOUT_MS";
    /// Push re-sends before a push_unacked kick [default: 3].
    push_retries: u32, "IMGATE_PUSH_RETRIES";
    /// How long (sender, msg id) is remembered for de-duplication, ms [default: 600000].
    dedup_window_ms: u64, "IMGATE_DEDUP_WINDOW_MS";
    /// Sync page size when a client asks for 0 [default: 100].
    sync_page_default: usize, "IMGATE_SYNC_PAGE_DEFAULT";
    /// Largest sync page [default: 1000].
    sync_page_max: usize, "IMGATE_SYNC_PAGE_MAX";
    /// Largest group [default: 10000].
    max_group_size: usize, "IMGATE_MAX_GROUP_SIZE";
    /// Inbox entries read for one unread summary [default: 100000].
    unread_scan_limit: usize, "IMGATE_UNREAD_SCAN_LIMIT";
    /// Most entries in each delivery cache (heads, cursors, marks; group members) [default: 1000000].
    cache_entries: usize, "IMGATE_CACHE_ENTRIES";
    /// Delete messages once every device acknowledged them [default: true].
    purge_acked: bool, "IMGATE_PURGE_ACKED";
    /// Delete messages older than this, acknowledged or not, ms; 0 = never [default: 604800000, 7 days].
    retention_ms: u64, "IMGATE_RETENTION_MS";
    /// Most messages deleted per purge step [default: 10000].
    purge_per_tick: usize, "IMGATE_PURGE_PER_TICK";
    /// Time between purge steps on the embedded backend, ms [default: 250].
    purge_interval_ms: u64, "IMGATE_PURGE_INTERVAL_MS";
    /// Free disk space kept, MiB; below it new messages get storage_full (0: none) [default: 256].
    disk_free_min_mb: u64, "IMGATE_DISK_FREE_MIN_MB";
    /// Free-space checks and store recovery tries, ms [default: 1000].
    disk_check_ms: u64, "IMGATE_DISK_CHECK_MS";
    /// Wait told to clients refused with storage_full, ms [default: 5000].
    storage_retry_ms: u64, "IMGATE_STORAGE_RETRY_MS";
    /// Events per batch to the backend [default: 512].
    backend_batch: usize, "IMGATE_BACKEND_BATCH";
    /// Batches queued to the backend before requests are refused [default: 4096].
    backend_queue: usize, "IMGATE_BACKEND_QUEUE";
    /// Graceful shutdown deadline, ms [default: 10000].
    shutdown_timeout_ms: u64, "IMGATE_SHUTDOWN_TIMEOUT_MS";
    /// Secret for HMAC-SHA256 login tokens.
    secret: String, "IMGATE_SECRET";
    /// Who manages group membership: members (group:R and the server API) or api (the server API only) [default: members].
    group_admin: GroupAdmin, "IMGATE_GROUP_ADMIN";
    /// How long a server API send waits for the backend, ms [default: 10000].
    api_timeout_ms: u64, "IMGATE_API_TIMEOUT_MS";
    /// Most recipients of one server API batch [default: 1000].
    api_batch_max: usize, "IMGATE_API_BATCH_MAX";
    /// Accept JWT login tokens signed HS256 with this secret [default: off].
    jwt_secret: String, "IMGATE_JWT_SECRET";
    /// Accept JWT login tokens signed with this PEM public key's private key: RSA for RS256, EC P-256 for ES256 [default: off].
    jwt_public_key: PathBuf, "IMGATE_JWT_PUBLIC_KEY";
    /// JWTs must carry this iss [default: any].
    jwt_issuer: String, "IMGATE_JWT_ISSUER";
    /// JWTs must carry this aud [default: any].
    jwt_audience: String, "IMGATE_JWT_AUDIENCE";
    /// The JWT claim that names the device [default: device].
    jwt_device_claim: String, "IMGATE_JWT_DEVICE_CLAIM";
    /// Clock skew allowed on a JWT's exp and nbf, s [default: 30].
    jwt_leeway_s: u64, "IMGATE_JWT_LEEWAY_S";
    /// Backend: embedded (reliable delivery on the embedded store), cluster (on NATS JetStream, see --cluster-*) or relay (online only, nothing stored) [default: embedded].
    backend: BackendKind, "IMGATE_BACKEND";
    /// Data directory of the default backend [default: ./imgate-data].
    data_dir: PathBuf, "IMGATE_DATA_DIR";
    /// Durability: fsync, os, memory [default: fsync].
    durability: Durability, "IMGATE_DURABILITY";
    /// Metrics and health endpoint address [default: 127.0.0.1:9100].
    metrics_listen: SocketAddr, "IMGATE_METRICS_LISTEN";
    /// Bearer token enabling the admin path (/admin/kick, /admin/sessions) [default: off].
    admin_token: String, "IMGATE_ADMIN_TOKEN";
    /// Log format: human or json [default: human].
    log_format: LogFormat, "IMGATE_LOG_FORMAT";
    /// Log filter, e.g. info or imgate=debug [default: info,fjall=warn,lsm_tree=warn].
    log_level: String, "IMGATE_LOG_LEVEL";
}

fn load(args: &ServeArgs, cluster: &ClusterArgs, events: &EventsArgs) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    args.apply(&mut cfg);
    cluster.apply(&mut cfg.cluster);
    events.apply(&mut cfg.events);
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn init_logs(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match cfg.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("imgate: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    imgate::alloc::tune_mimalloc();
    let cli = Cli::parse();
    let cfg = match load(&cli.serve, &cli.cluster, &cli.events) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    match cli.command {
        Some(Command::Token(t)) => {
            let expiry = imgate::unix_time().as_secs() + t.ttl;
            println!(
                "{}",
                HmacVerifier::new(cfg.secret.as_bytes()).mint(t.user, t.device, expiry)
            );
            ExitCode::SUCCESS
        }
        Some(Command::Kick(k)) => kick(&cfg, &k),
        Some(Command::Backup(b)) => backup(&cfg, &b),
        Some(Command::Restore(r)) => restore(&cfg, &r),
        Some(Command::Check) => check(&cfg),
        Some(Command::Salvage(s)) => salvage(&cfg, &s),
        Some(Command::Serve) | None => serve(cfg),
    }
}

fn kick(cfg: &Config, k: &KickArgs) -> ExitCode {
    let Some(addr) = cfg.metrics_listen else {
        return usage_error("the metrics endpoint is disabled; the admin path is served on it");
    };
    if cfg.admin_token.is_empty() {
        return usage_error("admin_token is not set; the admin path needs it");
    }
    let mut target = format!("/admin/kick?user={}", k.user);
    if let Some(d) = k.device {
        target.push_str(&format!("&device={d}"));
    }
    match imgate::http::request(addr, "POST", &target, Some(&cfg.admin_token)) {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("imgate: error: {addr} answered {status}: {}", body.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("imgate: error: cannot reach the gateway at {addr}: {e}");
            ExitCode::from(3)
        }
    }
}

fn backup(cfg: &Config, b: &BackupArgs) -> ExitCode {
    if !b.dir.is_absolute() {
        return usage_error("the backup directory must be an absolute path");
    }
    let Some(dir) = b.dir.to_str() else {
        return usage_error("the backup directory must be valid UTF-8");
    };
    if let (Some(addr), false) = (cfg.metrics_listen, cfg.admin_token.is_empty()) {
        let query = match serde_urlencoded::to_string([("dir", dir)]) {
            Ok(q) => q,
            Err(e) => return usage_error(&format!("cannot encode the backup directory: {e}")),
        };
        let target = format!("/admin/backup?{query}");
        match imgate::http::request(addr, "POST", &target, Some(&cfg.admin_token)) {
            Ok((200, body)) => {
                print!("{body}");
                return ExitCode::SUCCESS;
            }
            Ok((status, body)) => {
                eprintln!("imgate: error: {addr} answered {status}: {}", body.trim());
                return ExitCode::from(1);
            }
            // Nobody there: the store is copied from disk below (its lock
            // refuses if a gateway holds it after all).
            Err(_) => {}
        }
    }
    let copy = imgate::store::open(&cfg.data_dir, cfg.durability).and_then(|s| s.backup(&b.dir));
    match copy {
        Ok(n) => {
            println!("{{\"dir\":{dir:?},\"entries\":{n}}}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imgate: error: backup failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn restore(cfg: &Config, r: &RestoreArgs) -> ExitCode {
    if imgate::store::occupied(&cfg.data_dir) {
        return usage_error(&format!(
            "data_dir {} is not empty: restore into an empty or missing directory",
            cfg.data_dir.display()
        ));
    }
    if !imgate::store::occupied(&r.from) {
        return usage_error(&format!(
            "{} is not a backup (missing or empty)",
            r.from.display()
        ));
    }
    let done = imgate::store::open(&r.from, Durability::Fsync)
        .and_then(|b| b.backup(&cfg.data_dir))
        .and_then(|n| {
            let store = imgate::store::open(&cfg.data_dir, Durability::Fsync)?;
            let streams = imgate::delivery::restore::skip_sequences(&*store, r.skip)?;
            Ok((n, streams.len()))
        });
    match done {
        Ok((n, streams)) => {
            println!(
                "restored {n} entries into {}; {streams} streams continue {} sequence ids on",
                cfg.data_dir.display(),
                r.skip
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imgate: error: restore failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(cfg: &Config) -> ExitCode {
    use imgate::store::salvage;
    let dir = &cfg.data_dir;
    let journals = match salvage::journals(dir) {
        Ok(j) => j,
        Err(e) => return usage_error(&format!("cannot read {}: {e}", dir.display())),
    };
    for j in &journals {
        println!("journal {}: {} bytes of data", j.path.display(), j.data_end);
    }
    let scratch = scratch_dir(dir, "check");
    let opened = salvage::scratch_copy(dir, &scratch)
        .map_err(|e| e.to_string())
        .and_then(|()| imgate::store::open(&scratch, Durability::Os).map_err(|e| e.to_string()));
    let code = match opened {
        Err(why) => {
            println!("DAMAGED: the store does not open: {why}");
            let probe = scratch_dir(dir, "probe");
            match salvage::salvage(dir, &probe) {
                Ok(s) => report_salvage(&s),
                Err(e) => println!("the damage could not be located: {e}"),
            }
            let _ = std::fs::remove_dir_all(&probe);
            println!("run `imgate salvage NEW_DIR` to keep everything before the damage");
            ExitCode::from(1)
        }
        Ok(store) => match imgate::delivery::check::check(&*store) {
            Err(e) => {
                println!("DAMAGED: reading the tables failed: {e}");
                ExitCode::from(1)
            }
            Ok(r) => {
                for (t, n) in &r.entries {
                    println!("table {t}: {n} entries");
                }
                println!("streams: {}", r.streams);
                for (what, f) in [
                    ("records that do not decode", &r.unreadable),
                    ("records past their stream's head", &r.above_head),
                    ("cursors past their stream's head", &r.cursors_ahead),
                ] {
                    if f.count > 0 {
                        println!("DAMAGED: {} {what}, first: {:?}", f.count, f.first);
                    }
                }
                if r.clean() {
                    println!("clean");
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
        },
    };
    let _ = std::fs::remove_dir_all(&scratch);
    code
}

fn salvage(cfg: &Config, s: &SalvageArgs) -> ExitCode {
    if s.to.exists() {
        return usage_error(&format!("{} exists: name a new directory", s.to.display()));
    }
    let done = imgate::store::salvage::salvage(&cfg.data_dir, &s.to).and_then(|report| {
        let store = imgate::store::open(&s.to, Durability::Fsync)?;
        let streams = imgate::delivery::restore::skip_sequences(&*store, s.skip)?;
        Ok((report, streams))
    });
    match done {
        Ok((report, streams)) => {
            report_salvage(&report);
            println!(
                "salvaged into {}; {} streams continue {} sequence ids on",
                s.to.display(),
                streams.len(),
                s.skip
            );
            if report.damaged.is_some() {
                // What the lost journal held is unreadable: every stream
                // may have lost ids from its kept head up.
                for (stream, head) in streams.iter().take(20) {
                    println!(
                        "  {}: kept up to seq {head}; seqs {} to {} may have been lost and are never used again",
                        imgate::delivery::check::stream_name(*stream),
                        head + 1,
                        head.saturating_add(s.skip)
                    );
                }
                if streams.len() > 20 {
                    println!("  ... and {} more streams alike", streams.len() - 20);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imgate: error: salvage failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn report_salvage(s: &imgate::store::salvage::Salvage) {
    match &s.damaged {
        None => println!("every journal replays whole: nothing lost"),
        Some((path, kept)) => {
            println!(
                "journal {} is readable up to byte {kept}; {} bytes of journal data after it are lost ({} later journal files), found in {} tries",
                path.display(),
                s.dropped_bytes,
                s.later.len(),
                s.tries
            );
        }
    }
}

/// A scratch directory beside `dir`.
fn scratch_dir(dir: &std::path::Path, what: &str) -> PathBuf {
    let name = format!(
        ".{}.{what}-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("data"),
        std::process::id()
    );
    dir.parent().unwrap_or(dir).join(name)
}

fn serve(cfg: Config) -> ExitCode {
    init_logs(&cfg);
    // Block the shutdown signals before any thread starts, so every thread
    // inherits the mask and only the waiting thread below receives them.
    let signals = match imgate::signals::block() {
        Ok(s) => s,
        Err(e) => return usage_error(&format!("cannot set up signals: {e}")),
    };
    match imgate::raise_fd_limit() {
        Ok(limit) if (limit as usize) < cfg.max_connections => tracing::warn!(
            open_files = limit,
            max_connections = cfg.max_connections,
            "max_connections exceeds the open-files limit; connections past it will fail"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    if cfg.secret == DEV_SECRET {
        tracing::warn!("using the built-in development token secret; set `secret` for production");
    }
    match cfg.backend {
        BackendKind::Embedded if cfg.durability == Durability::Memory => tracing::warn!(
            "durability = memory: nothing is written to disk, every message is lost at exit; for experiments only"
        ),
        BackendKind::Embedded | BackendKind::Cluster => {}
        BackendKind::Relay => tracing::warn!(
            "backend = relay: messages reach online connections only, nothing is stored; for measuring the core"
        ),
    }
    let backend = match server::backend(&cfg) {
        Ok(b) => b,
        Err(e) => return usage_error(&e.to_string()),
    };
    if let Some(path) = &cfg.events.ca_file
        && let Err(e) = imgate::events::sender::load_roots(path)
    {
        return usage_error(&e);
    }
    let jwt = match imgate::jwt::JwtVerifier::new(&cfg.jwt()) {
        Ok(j) => j,
        Err(e) => return usage_error(&e.to_string()),
    };
    let verifier = Arc::new(imgate::jwt::Tokens::new(cfg.secret.as_bytes(), jwt));
    let running = match server::start(cfg, backend, verifier) {
        Ok(r) => r,
        Err(e) => return usage_error(&e.to_string()),
    };
    let sig = imgate::signals::wait(&signals);
    tracing::info!(signal = sig, "shutting down");
    if running.shutdown() {
        tracing::info!("shutdown complete");
        ExitCode::SUCCESS
    } else {
        tracing::warn!("shutdown deadline passed");
        ExitCode::from(1)
    }
}
