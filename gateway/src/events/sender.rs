//! The sender thread: reads stored events from a [`Source`], POSTs them
//! in signed batches, and tells the source what the backend took.
//!
//! ```text
//!  Source (outbox on disk, or a JetStream consumer)
//!     │ next(max, wait)                     commit(last) ▲
//!     ▼                                                  │ 2xx
//!  batch (held until a 2xx) ──POST, signed──► business backend
//!     ▲        │ error, timeout, non-2xx
//!     └────────┘ wait: Backoff (exponential, jittered), same batch again
//! ```
//!
//! One thread of its own, blocking on its HTTP client (`ureq`): a slow or
//! dead backend holds this thread and nothing else. The cores and the
//! delivery path only ever write events to the store, never wait on it.
//! A batch is sent again, the same events in the same order, until the
//! backend answers 2xx, so events are delivered at least once and in the
//! order stored; the backend de-duplicates by `id`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{Stats, backoff::Backoff, event::batch_body, sign};
use crate::config::EventsConfig;

/// A stored event, as the source hands it out.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its position in the source (what `commit` takes).
    pub seq: u64,
    /// Its JSON object.
    pub json: Vec<u8>,
}

/// Where the sender reads events.
pub trait Source: Send + 'static {
    /// Up to `max` events after those already returned, oldest first;
    /// waits up to `wait` for the first one.
    fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, String>;
    /// The backend took every event up to `last`: never send them again.
    fn commit(&mut self, last: &Stored) -> Result<(), String>;
    /// Events stored and not yet committed, if known.
    fn lag(&mut self) -> Option<u64>;
}

/// The running sender; stops (and joins) when dropped.
#[derive(Debug)]
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Closed when the thread ends.
    ended: std::sync::mpsc::Receiver<()>,
}

/// How long a stop waits for a POST in flight before leaving the thread
/// to end on its own (what it was sending is sent again after a restart).
const STOP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let ended = matches!(
            self.ended.recv_timeout(STOP_WAIT),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
        );
        if let (true, Some(t)) = (ended, self.thread.take()) {
            let _ = t.join();
        }
    }
}

/// Waits that a stop interrupts: at most this long at a time.
const SLICE: Duration = Duration::from_millis(100);
/// At most one lag or failure line per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Sender {
    /// Starts the thread.
    pub fn start(
        cfg: &EventsConfig,
        source: Box<dyn Source>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Sender> {
        let mut agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms)))
            .user_agent("imgate-events");
        if let Some(path) = &cfg.ca_file {
            let roots = load_roots(path).map_err(std::io::Error::other)?;
            agent = agent.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                    .build(),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        stats.enabled.store(true, Relaxed);
        let mut run = Run {
            cfg: cfg.clone(),
            agent: agent.build().into(),
            source,
            stats,
            stop: stop.clone(),
            backoff: Backoff::new(
                cfg.retry_min_ms,
                cfg.retry_max_ms,
                crate::unix_time().as_nanos() as u64 ^ u64::from(std::process::id()),
            ),
        };
        let (done, ended) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("imgate-events".into())
            .spawn(move || {
                let _done = done;
                lower_priority();
                run.run()
            })?;
        Ok(Sender {
            stop,
            thread: Some(thread),
            ended,
        })
    }
}

/// The certificates of `events.ca_file`; why not, naming the file.
pub fn load_roots(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let why = |e: &dyn std::fmt::Display| format!("events.ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| why(&e))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| why(&e))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(why(&"holds no PEM certificate"));
    }
    Ok(certs)
}

/// Bytes of the events' JSON.
fn bytes(batch: &[Stored]) -> usize {
    batch.iter().map(|s| s.json.len()).sum()
}

/// How many of the first events make one POST: at most `max` events and
/// `max_bytes` of JSON, and always at least one.
fn fits(batch: &[Stored], max: usize, max_bytes: usize) -> usize {
    let mut total = 0;
    let n = batch
        .iter()
        .take(max)
        .take_while(|s| {
            total += s.json.len();
            total <= max_bytes
        })
        .count();
    n.max(1).min(batch.len())
}

/// The calling thread's nice value is raised (Linux keeps one per
/// thread): when a backlog drains after an outage, the sender competes
/// for the CPU with the cores and the delivery thread, and it is the one
/// that can wait.
fn lower_priority() {
    // SAFETY: setpriority takes plain integers; on Linux, PRIO_PROCESS
    // with 0 names the calling thread only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SENDER_NICE) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the event sender's priority");
    }
}

/// The sender thread's nice value.
const SENDER_NICE: libc::c_int = 10;

struct Run {
    cfg: EventsConfig,
    agent: ureq::Agent,
    source: Box<dyn Source>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
}

impl Run {
    fn run(&mut self) {
        let linger = Duration::from_millis(self.cfg.linger_ms);
        let mut batch: Vec<Stored> = Vec::new();
        let mut since = Instant::now();
        let mut failures = 0u32;
        // The last failure line, and the last lag alert.
        let mut last_log: Option<Instant> = None;
        let mut last_alert: Option<Instant> = None;
        let mut failures_not_logged = 0u64;
        while !self.stop.load(Relaxed) {
            self.watch_lag(&mut last_alert);
            let full = batch.len() >= self.cfg.batch || bytes(&batch) >= self.cfg.batch_bytes;
            if !full {
                let wait = if batch.is_empty() {
                    SLICE
                } else {
                    linger.saturating_sub(since.elapsed()).min(SLICE)
                };
                match self.source.next(self.cfg.batch - batch.len(), wait) {
                    Ok(more) => {
                        if batch.is_empty() && !more.is_empty() {
                            since = Instant::now();
                        }
                        batch.extend(more);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read stored events");
                        self.pause(Duration::from_secs(1));
                        continue;
                    }
                }
                let full = batch.len() >= self.cfg.batch || bytes(&batch) >= self.cfg.batch_bytes;
                if batch.is_empty() || (!full && since.elapsed() < linger) {
                    continue;
                }
            }
            // The same prefix on every try: what is added meanwhile goes
            // after it.
            let n = fits(&batch, self.cfg.batch, self.cfg.batch_bytes);
            match self.post(&batch[..n]) {
                Ok(()) => {
                    failures = 0;
                    self.stats.sent.fetch_add(n as u64, Relaxed);
                    self.stats
                        .last_sent_ms
                        .store(crate::clock::unix_ms(), Relaxed);
                    if let Some(last) = n.checked_sub(1).and_then(|i| batch.get(i))
                        && let Err(e) = self.source.commit(last)
                    {
                        // Sent, not recorded: sent again after a restart,
                        // which the backend's de-duplication absorbs.
                        tracing::error!(error = %e, "cannot record the events sent");
                    }
                    batch.drain(..n);
                    since = Instant::now();
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    self.stats.failures.fetch_add(1, Relaxed);
                    let wait = self.backoff.wait(failures);
                    if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) || failures == 1 {
                        tracing::warn!(
                            url = %self.cfg.url,
                            error = %why,
                            failures_in_a_row = failures,
                            earlier_failures_not_logged = failures_not_logged,
                            retry_in_ms = wait.as_millis() as u64,
                            "event webhook failed; sending the batch again"
                        );
                        last_log = Some(Instant::now());
                        failures_not_logged = 0;
                    } else {
                        failures_not_logged += 1;
                    }
                    self.pause(wait);
                }
            }
        }
    }

    /// Updates the lag gauge; an error line every 10 s while it is over
    /// `lag_alert`.
    fn watch_lag(&mut self, last: &mut Option<Instant>) {
        let Some(lag) = self.source.lag() else {
            return;
        };
        self.stats.lag.store(lag, Relaxed);
        if lag > self.cfg.lag_alert && last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::error!(
                waiting = lag,
                alert_at = self.cfg.lag_alert,
                dropped_at = self.cfg.max_lag,
                "events are falling behind: the webhook is not keeping up"
            );
            *last = Some(Instant::now());
        }
    }

    /// Waits `d` (or until stopped), keeping the lag gauge current.
    fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(SLICE));
            if let Some(lag) = self.source.lag() {
                self.stats.lag.store(lag, Relaxed);
            }
        }
    }

    /// One signed POST of `batch`; Ok on a 2xx.
    fn post(&mut self, batch: &[Stored]) -> Result<(), String> {
        let body = batch_body(batch.iter().map(|s| s.json.as_slice()));
        let ts = crate::clock::unix_ms();
        let signature = sign::sign(self.cfg.secret.as_bytes(), ts, &body);
        self.stats.posts.fetch_add(1, Relaxed);
        let started = Instant::now();
        let res = self
            .agent
            .post(&self.cfg.url)
            .header("Content-Type", "application/json")
            .header(sign::TIMESTAMP_HEADER, ts.to_string())
            .header(sign::SIGNATURE_HEADER, signature)
            .send(&body[..]);
        self.stats
            .post_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut res = res.map_err(|e| e.to_string())?;
        let status = res.status();
        // Read the answer so the connection can be used again.
        let _ = res.body_mut().read_to_vec();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(sizes: &[usize]) -> Vec<Stored> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Stored {
                seq: i as u64 + 1,
                json: vec![b'x'; n],
            })
            .collect()
    }

    #[test]
    fn a_post_holds_at_most_max_events_and_max_bytes_and_at_least_one() {
        assert_eq!(fits(&events(&[10, 10, 10]), 2, 1000), 2);
        assert_eq!(fits(&events(&[10, 10, 10]), 10, 25), 2);
        assert_eq!(fits(&events(&[10, 10, 10]), 10, 30), 3);
        // One event larger than the cap still goes, alone.
        assert_eq!(fits(&events(&[100, 10]), 10, 50), 1);
        assert_eq!(fits(&events(&[]), 10, 50), 0);
    }
}
