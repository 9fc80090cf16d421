//! Starting and stopping the whole gateway: cores, backend thread, metrics.
//!
//! ```text
//!   main ── start() ──► N core threads (monoio runtime each, SO_REUSEPORT listener each)
//!                  └──► backend thread (Backend::handle in batches)
//!                  └──► HTTP thread (/metrics, /healthz, /admin)
//!   shutdown(): cores stop accepting, kick everyone (server_shutdown), flush,
//!               exit; then the backend sees its channel close, finishes its
//!               durable writes, exits. All within the shutdown deadline.
//! ```

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicUsize},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::Receiver;

use crate::{
    backend::{self, Backend, CoreMsg, Router},
    config::{BackendKind, Config, DriverKind},
    conn::Transport,
    core::{self, Core, Shared},
    http,
    listener::{self, bind, listen, wait_for_port},
    mailbox::{MailboxRx, mailbox},
    metrics::Metrics,
    registry::Registry,
    token::Verifier,
};

/// A running gateway.
pub struct Running {
    addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
    cores_done: Receiver<u16>,
    cores: Vec<JoinHandle<()>>,
    backend: Option<JoinHandle<()>>,
    backend_done: Receiver<()>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// io_uring was required but is not available.
    #[error("io_uring is not available on this kernel (use --driver epoll or auto)")]
    NoUring,
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The backend's start hook failed.
    #[error("the backend cannot start: {0}")]
    Backend(std::io::Error),
}

/// The backend the configuration names: reliable delivery on the
/// embedded store (opening it, which may take a while after a crash), or
/// the relay.
pub fn backend(cfg: &Config) -> Result<Box<dyn Backend>, crate::store::StoreError> {
    Ok(match cfg.backend {
        BackendKind::Embedded => {
            let store = crate::store::open(&cfg.data_dir, cfg.durability)?;
            Box::new(crate::delivery::Delivery::new(store, cfg)?)
        }
        BackendKind::Relay => Box::new(crate::relay::Relay::default()),
        BackendKind::Cluster => Box::new(crate::cluster::Cluster::new(cfg)),
    })
}

/// Whether the cores will run io_uring under this setting.
pub fn uses_uring(driver: DriverKind) -> bool {
    match driver {
        DriverKind::Uring => true,
        DriverKind::Epoll => false,
        DriverKind::Auto => monoio::utils::detect_uring(),
    }
}

pub use crate::runtime::block_on;

/// Starts the gateway with `backend` and `verifier`.
pub fn start(
    cfg: Config,
    mut backend: Box<dyn Backend>,
    verifier: Arc<dyn Verifier>,
) -> Result<Running, StartError> {
    let n = cfg.worker_count();
    let uring = uses_uring(cfg.driver);
    if cfg.driver == DriverKind::Uring && !monoio::utils::detect_uring() {
        return Err(StartError::NoUring);
    }
    if cfg.driver == DriverKind::Auto && !uring {
        tracing::info!("io_uring unavailable, cores use epoll");
    }
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let (sockets, addr) = bind_all(cfg.listen, n, cfg.bind_wait_ms)?;
    let ws = match cfg.ws_listen {
        Some(a) => Some(bind_all(a, n, cfg.bind_wait_ms)?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new(n));
    let registry = Arc::new(Registry::default());
    let (backend_tx, backend_rx) = crossbeam_channel::bounded(cfg.backend_queue);
    let mut txs = Vec::with_capacity(n);
    let mut rxs: Vec<MailboxRx<CoreMsg>> = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mailbox();
        txs.push(tx);
        rxs.push(rx);
    }
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => {
            let admin = (!cfg.admin_token.is_empty()).then(|| http::Admin {
                token: cfg.admin_token.clone(),
                registry: registry.clone(),
                cores: txs.clone(),
                limits: crate::api::ApiLimits {
                    max_body: cfg.max_frame.saturating_sub(crate::api::FRAME_OVERHEAD),
                    batch_max: cfg.api_batch_max,
                    timeout: std::time::Duration::from_millis(cfg.api_timeout_ms),
                },
            });
            let endpoint = http::Endpoint {
                metrics: metrics.clone(),
                admin,
            };
            Some(
                http::serve(a, endpoint)
                    .map_err(|source| StartError::Metrics { addr: a, source })?,
            )
        }
        None => None,
    };
    backend
        .start(&backend::Start {
            cores: txs.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
        })
        .map_err(StartError::Backend)?;
    let listeners = sockets
        .into_iter()
        .map(|s| listen(s, cfg.backlog))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| StartError::Listen { addr, source })?;
    let (mut ws_listeners, ws_addr) = match ws {
        Some((sockets, a)) => (
            sockets
                .into_iter()
                .map(|s| listen(s, cfg.backlog).map(Some))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| StartError::Listen { addr: a, source })?,
            Some(a),
        ),
        None => ((0..n).map(|_| None).collect(), None),
    };
    let router = Router::new(txs.clone(), registry.clone());
    let tick = cfg.tick().min(Duration::from_millis(100));
    let (backend_done_tx, backend_done) = crossbeam_channel::bounded(1);
    let backend = std::thread::Builder::new()
        .name("imgate-backend".into())
        .spawn(move || {
            backend::run(backend, backend_rx, router, tick);
            let _ = backend_done_tx.send(());
        })
        .map_err(StartError::Thread)?;
    let shared = Arc::new(Shared {
        cfg,
        registry,
        cores: txs,
        backend: backend_tx,
        metrics: metrics.clone(),
        verifier,
        connections: AtomicUsize::new(0),
        shutting_down: Default::default(),
        tls,
    });
    let (done_tx, cores_done) = crossbeam_channel::unbounded();
    let allowed = if shared.cfg.pin_cores {
        allowed_cpus()
    } else {
        Vec::new()
    };
    let mut cores = Vec::with_capacity(n);
    for (i, (listener, rx)) in listeners.into_iter().zip(rxs).enumerate() {
        let ws_listener = ws_listeners.get_mut(i).and_then(Option::take);
        let shared = shared.clone();
        let done = done_tx.clone();
        // Core i on the i-th CPU this process may use (wrapping around
        // when there are more workers than CPUs); none when not pinning.
        let pin = (!allowed.is_empty()).then(|| allowed[i % allowed.len()]);
        let h = std::thread::Builder::new()
            .name(format!("imgate-core-{i}"))
            .spawn(move || {
                if let Some(cpu) = pin
                    && let Err(e) = monoio::utils::bind_to_cpu_set([cpu])
                {
                    tracing::warn!(core = i, cpu, error = %e, "cannot pin the core");
                }
                let id = u16::try_from(i).unwrap_or(u16::MAX);
                let fut = async move {
                    let ws = match ws_listener.map(monoio::net::TcpListener::from_std) {
                        Some(Ok(l)) => Some(l),
                        Some(Err(e)) => {
                            tracing::error!(core = id, error = %e, "WebSocket listener failed");
                            None
                        }
                        None => None,
                    };
                    match monoio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            let core = Rc::new(Core::new(id, shared));
                            let tcp = listener::accept_loop(core.clone(), l, Transport::Tcp);
                            let ws = async {
                                if let Some(l) = ws {
                                    listener::accept_loop(core.clone(), l, Transport::Ws).await;
                                }
                            };
                            let accept = async {
                                monoio::join!(tcp, ws);
                            };
                            core::run(core.clone(), rx, accept).await;
                        }
                        Err(e) => tracing::error!(core = id, error = %e, "listener failed"),
                    }
                };
                if let Err(e) = block_on(uring, 16384, fut) {
                    tracing::error!(core = id, error = %e, "cannot start the runtime");
                }
                let _ = done.send(id);
            })
            .map_err(StartError::Thread)?;
        cores.push(h);
    }
    tracing::info!(%addr, ws = ?ws_addr, cores = n, driver = if uring { "io_uring" } else { "epoll" }, "imgate listening");
    Ok(Running {
        addr,
        ws_addr,
        metrics_addr,
        shared: Some(shared),
        metrics,
        cores_done,
        cores,
        backend: Some(backend),
        backend_done,
    })
}

use std::rc::Rc;

/// Binds `n` listening sockets on `addr` (the first resolves port 0, the
/// others share its port), after waiting up to `wait_ms` for a previous
/// listener on it to go.
fn bind_all(
    addr: SocketAddr,
    n: usize,
    wait_ms: u64,
) -> Result<(Vec<socket2::Socket>, SocketAddr), StartError> {
    wait_for_port(addr, Duration::from_millis(wait_ms))
        .map_err(|source| StartError::Listen { addr, source })?;
    let first = bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| StartError::Listen {
            addr,
            source: std::io::Error::other("no local address"),
        })?;
    let mut sockets = vec![first];
    for _ in 1..n {
        sockets.push(bind(bound).map_err(|source| StartError::Listen {
            addr: bound,
            source,
        })?);
    }
    Ok((sockets, bound))
}

impl Running {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket listener's address, if enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The metrics endpoint, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Graceful shutdown: stop accepting, kick everyone with
    /// `server_shutdown`, flush, let the backend finish. Returns false if
    /// the deadline passed first.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        let Some(shared) = self.shared.take() else {
            return true;
        };
        let deadline = Instant::now() + Duration::from_millis(shared.cfg.shutdown_timeout_ms);
        shared
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for tx in &shared.cores {
            tx.send(CoreMsg::Shutdown);
        }
        drop(shared);
        let mut left = self.cores.len();
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.cores_done.recv_timeout(wait) {
                Ok(_) => left -= 1,
                Err(_) => return false,
            }
        }
        for h in self.cores.drain(..) {
            let _ = h.join();
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if self.backend_done.recv_timeout(wait).is_err() {
            return false;
        }
        if let Some(h) = self.backend.take() {
            let _ = h.join();
        }
        true
    }
}

/// A gateway dropped without [`Running::shutdown`] shuts down the same way
/// (its threads would otherwise keep serving with nobody holding them).
impl Drop for Running {
    fn drop(&mut self) {
        if self.shared.is_some() && !self.stop() {
            tracing::warn!("shutdown deadline passed while dropping the gateway");
        }
    }
}

/// The CPUs this process may run on, in order (empty if unknown).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is that of the set passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the CPU affinity; cores are not pinned");
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set within its fixed size.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}
