//! Headless Chromium driven over the Chrome DevTools Protocol (CDP), for
//! tests that run the gateway's browser client in a real browser.
//!
//! [`Chromium`] is one browser process on a fresh profile, killed (and its
//! directory removed) when dropped. [`Cdp`] is a blocking client of its
//! browser-wide DevTools WebSocket: commands are JSON text messages with an
//! `id`, answered by a message with the same `id`; everything else on the
//! socket is an event, which these tests do not need and skip. Pages are
//! reached through flattened sessions (`Target.attachToTarget` with
//! `flatten: true`): a command for a page carries its `sessionId` at the top
//! level, on the same socket.
//!
//! The WebSocket is the codec's own client side (`imgate_codec::ws`), so the
//! tests need no WebSocket crate. Its decoder refuses fragmented messages;
//! Chromium sends each DevTools message as one frame, however large (a
//! screenshot is one text frame of a few hundred KiB), so that is enough.
//!
//! Where the browser comes from: `IMGATE_CHROMIUM` if set, else `chromium`
//! or `chromium-browser` on `PATH`. Without one [`Chromium::find`] returns
//! `None` (the test prints that it is skipped), except under `CI=true`,
//! where it panics.

use std::{
    env, fs,
    io::{self, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use imgate_codec::ws;
use serde_json::{Value, json};

/// How long Chromium may take to start and write its DevTools port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one DevTools command may take to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition is polled by [`wait_until`].
const POLL: Duration = Duration::from_millis(50);
/// The largest DevTools message accepted: screenshots come as one base64
/// text message.
const MAX_MESSAGE: usize = 64 << 20;
/// Lines of Chromium's own log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;

/// A running headless Chromium on a profile of its own, in a temporary
/// directory; killed, waited for, and the directory removed when dropped.
pub(crate) struct Chromium {
    child: Child,
    dir: PathBuf,
    /// `127.0.0.1:<port>` of the DevTools endpoint.
    addr: SocketAddr,
    /// The browser target's WebSocket path, `/devtools/browser/<id>`.
    ws_path: String,
}

impl Chromium {
    /// The browser binary; `None` (after a note on stderr) when there is
    /// none and `CI` is not `true`, where a missing browser is a failure:
    /// CI must run this test, not skip it quietly.
    pub(crate) fn find() -> Option<PathBuf> {
        let found = match env::var_os("IMGATE_CHROMIUM").filter(|p| !p.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(format!("IMGATE_CHROMIUM={} is not a file", p.display()))
                }
            }
            None => env::var_os("PATH")
                .iter()
                .flat_map(env::split_paths)
                .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    "no chromium or chromium-browser on PATH and IMGATE_CHROMIUM is not set"
                        .to_owned()
                }),
        };
        match found {
            Ok(p) => Some(p),
            Err(why) if env::var("CI").as_deref() == Ok("true") => {
                panic!("Chromium not found: install it (apt-get install chromium) ({why})")
            }
            Err(why) => {
                eprintln!("browser test skipped: {why}");
                None
            }
        }
    }

    /// Starts `binary` headless on a fresh profile and waits until its
    /// DevTools endpoint is announced in `DevToolsActivePort`.
    pub(crate) fn launch(binary: &Path) -> Chromium {
        Chromium::launch_with(binary, &[])
    }

    /// [`Chromium::launch`] with more command-line flags.
    pub(crate) fn launch_with(binary: &Path, extra: &[String]) -> Chromium {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = env::temp_dir().join(format!("imgate-chromium-{}-{seq}", std::process::id()));
        // Left by an earlier process with the same PID.
        let _ = fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        fs::create_dir_all(&profile).expect("create the chromium profile directory");
        let log = dir.join("chromium.log");
        let out = fs::File::create(&log).expect("create the chromium log");
        let err = out.try_clone().expect("clone the chromium log handle");

        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless=new",
            // Tests run as root in containers, where the sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            // Several tabs are open at once and only one is in front: keep
            // the others' timers and rendering at full speed.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--remote-debugging-port=0",
            "--window-size=900,700",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: the renderers and helpers it forks are
        // killed with it (see Drop).
        .process_group(0);
        let parent = std::process::id();
        // SAFETY: the hook runs in the forked child before exec; it calls
        // only prctl and getppid (async-signal-safe) and does not allocate.
        // The death signal follows the spawning thread, the test's own,
        // which outlives this value; a test process that dies without
        // unwinding (abort, SIGKILL) still takes the browser with it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("start {}: {e}", binary.display());
            }
        };
        let mut chromium = Chromium {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_path: String::new(),
        };
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // "<port>\n/devtools/browser/<id>\n", written once it listens.
            if let Ok(text) = fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                    && path.starts_with('/')
                {
                    chromium.addr = SocketAddr::from(([127, 0, 0, 1], port));
                    chromium.ws_path = path.trim().to_owned();
                    return chromium;
                }
            }
            if let Ok(Some(status)) = chromium.child.try_wait() {
                panic!(
                    "chromium exited before it listened ({status}); its log:\n{}",
                    chromium.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromium wrote no {} within {START_TIMEOUT:?}; its log:\n{}",
                    active.display(),
                    chromium.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// A DevTools connection to the browser target.
    pub(crate) fn connect(&self) -> Cdp {
        Cdp::connect(self.addr, &self.ws_path)
            .unwrap_or_else(|e| panic!("DevTools connection: {e}; log:\n{}", self.log_tail()))
    }

    /// The last lines of the browser's stdout and stderr.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole group: the browser and the zygote, renderer, GPU and
        // utility processes it started (they stay in the group it leads;
        // its crash handlers start sessions of their own and exit when it
        // is gone). The pid is ours until waited for, so the group id
        // cannot have been reused.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helpers may still be exiting and writing to the profile: retry.
        for _ in 0..20 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(POLL);
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A page, by the flattened session that commands for it use.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) session: String,
}

/// A blocking DevTools client on the browser's WebSocket.
pub(crate) struct Cdp {
    stream: TcpStream,
    buf: BytesMut,
    dec: ws::Decoder,
    next_id: u64,
}

impl Cdp {
    /// Opens the WebSocket at `path` on `addr`.
    pub(crate) fn connect(addr: SocketAddr, path: &str) -> Result<Cdp, String> {
        let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        // DevTools accepts a Host that is an IP address (its guard against
        // DNS rebinding) and a request without an Origin.
        let (req, key) = ws::client_request(&addr.to_string(), path, *b"imgate-cdp-tests");
        stream
            .write_all(&req)
            .map_err(|e| format!("send the upgrade request: {e}"))?;
        let mut cdp = Cdp {
            stream,
            buf: BytesMut::new(),
            dec: ws::Decoder::client(MAX_MESSAGE),
            next_id: 1,
        };
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            match ws::client_response(&cdp.buf, &key) {
                Ok(Some(n)) => {
                    let _ = cdp.buf.split_to(n);
                    return Ok(cdp);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "upgrade refused: {e}: {}",
                        String::from_utf8_lossy(&cdp.buf)
                    ));
                }
            }
            if !cdp.read_some(deadline)? {
                return Err("no answer to the upgrade request".into());
            }
        }
    }

    /// Sends `method` with `params` (to the page of `session`, or to the
    /// browser) and returns its `result`, or its `error` as text.
    pub(crate) fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = Value::from(s);
        }
        self.send(ws::Opcode::Text, msg.to_string().as_bytes())?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let reply = self.message(deadline)?;
            // Events, and answers to calls abandoned by an earlier error.
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(e) = reply.get("error") {
                return Err(format!("{method}: {e}"));
            }
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Evaluates `expr` in the page (awaiting it if it is a promise) and
    /// returns its value as JSON; an exception thrown is an error with the
    /// page's description of it.
    pub(crate) fn eval(&mut self, page: &Page, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            Some(&page.session),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let what = ex
                .pointer("/exception/description")
                .and_then(Value::as_str)
                .or_else(|| ex.get("text").and_then(Value::as_str))
                .unwrap_or("an exception");
            return Err(format!("{expr}: {what}"));
        }
        Ok(r.pointer("/result/value").cloned().unwrap_or(Value::Null))
    }

    /// Opens `url` in a new tab and attaches a flattened session to it.
    pub(crate) fn open(&mut self, url: &str) -> Result<Page, String> {
        let r = self.call("Target.createTarget", json!({ "url": url }), None)?;
        let target_id = str_field(&r, "targetId")?;
        let r = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            None,
        )?;
        let session = str_field(&r, "sessionId")?;
        Ok(Page { session })
    }

    /// Makes `page` the tab in front: its `document.visibilityState`
    /// becomes `visible` and the other tabs' `hidden`, as when a person
    /// switches to it (pages that send read receipts wait for that).
    pub(crate) fn bring_to_front(&mut self, page: &Page) -> Result<(), String> {
        self.call("Page.bringToFront", json!({}), Some(&page.session))
            .map(drop)
    }

    /// A PNG of the page as it is shown now.
    pub(crate) fn screenshot(&mut self, page: &Page) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        // A tab not in front may never paint a new frame to capture.
        self.bring_to_front(page)?;
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png" }),
            Some(&page.session),
        )?;
        let data = str_field(&r, "data")?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("screenshot data is not base64: {e}"))
    }

    fn send(&mut self, opcode: ws::Opcode, payload: &[u8]) -> Result<(), String> {
        // A client's frames must be masked; any key will do against a
        // server that is not a proxy.
        let mask = (self.next_id as u32)
            .wrapping_mul(0x9e37_79b9)
            .to_be_bytes();
        self.stream
            .write_all(&ws::encode(opcode, payload, Some(mask)))
            .map_err(|e| format!("write to DevTools: {e}"))
    }

    /// The next DevTools message, parsed; pings are answered on the way.
    fn message(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(f)) => match f.opcode {
                    ws::Opcode::Text => {
                        return serde_json::from_slice(&f.payload)
                            .map_err(|e| format!("DevTools sent bad JSON: {e}"));
                    }
                    ws::Opcode::Ping => self.send(ws::Opcode::Pong, &f.payload)?,
                    ws::Opcode::Close => return Err("DevTools closed the connection".into()),
                    other => return Err(format!("unexpected {other:?} frame from DevTools")),
                },
                Ok(None) => {
                    if !self.read_some(deadline)? {
                        return Err(format!("no DevTools answer within {CALL_TIMEOUT:?}"));
                    }
                }
                Err(e) => return Err(format!("bad frame from DevTools: {e}")),
            }
        }
    }

    /// Reads what has arrived into the buffer: `Ok(false)` when nothing
    /// came before `deadline`.
    fn read_some(&mut self, deadline: Instant) -> Result<bool, String> {
        let want = self.dec.needed(&self.buf).clamp(64 << 10, 4 << 20);
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let got = self.read_into(start, deadline);
        self.buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got.map(|n| n > 0)
    }

    /// One read into `buf[start..]`: the bytes read, 0 when nothing came
    /// before `deadline`. A read interrupted by a signal is retried.
    fn read_into(&mut self, start: usize, deadline: Instant) -> Result<usize, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut self.buf[start..]) {
                Ok(0) => return Err("DevTools connection closed".into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(0);
                }
                Err(e) => return Err(format!("read from DevTools: {e}")),
            }
        }
    }
}

/// The string `key` of a DevTools result.
fn str_field(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {key} in {v}"))
}

/// Polls `probe` until it yields a value or `deadline` passes; an error
/// from the probe ends the wait at once. Browsers change the DOM when
/// messages arrive, not when asked, so tests poll for the state they
/// expect instead of sleeping for a guessed time.
pub(crate) fn wait_until<T>(
    deadline: Instant,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        thread::sleep(POLL);
    }
}
