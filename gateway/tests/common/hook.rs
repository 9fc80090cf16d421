//! A real HTTP receiver of the gateway's event webhook, on a loopback
//! port: checks every POST's signature with the gateway's own rules
//! (`imgate::events::sign`), keeps the events, and can be told to fail
//! (500), to answer slowly, or to go away and come back on its port.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use imgate::events::sign;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// 500 at once; nothing is kept.
    Fail,
    /// 200 after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Seen {
    /// Every event of every accepted POST, in arrival order.
    events: Vec<serde_json::Value>,
    ids: HashSet<String>,
    duplicates: u64,
    bad_signatures: u64,
    /// The most events one accepted POST carried.
    largest_batch: usize,
}

/// The receiver.
pub struct Hook {
    pub port: u16,
    secret: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    posts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Serves HTTPS with this configuration, if set.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Hook {
    /// A receiver on a free port, checking signatures with `secret`.
    pub fn start(secret: &str) -> Hook {
        let port = super::process::free_port();
        let mut h = Hook {
            port,
            secret: secret.into(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            seen: Arc::default(),
            posts: Arc::default(),
            stop: Arc::default(),
            thread: None,
            tls: None,
        };
        h.up();
        h
    }

    /// A receiver that serves HTTPS with this PEM certificate and key.
    pub fn start_tls(secret: &str, cert_pem: &str, key_pem: &str) -> Hook {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let mut h = Hook::start(secret);
        h.down();
        h.tls = Some(Arc::new(cfg));
        h.up();
        h
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/events", self.port)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().expect("mode") = m;
    }

    /// Stops listening: connections are refused until [`Hook::up`].
    pub fn down(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread");
        }
    }

    /// Listens (again) on its port.
    pub fn up(&mut self) {
        let listener = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match TcpListener::bind(("127.0.0.1", self.port)) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "cannot bind the receiver: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        self.stop = Arc::new(AtomicBool::new(false));
        let (stop, mode, seen, posts, secret, tls) = (
            self.stop.clone(),
            self.mode.clone(),
            self.seen.clone(),
            self.posts.clone(),
            self.secret.clone(),
            self.tls.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (stop, mode, seen, posts, secret, tls) = (
                            stop.clone(),
                            mode.clone(),
                            seen.clone(),
                            posts.clone(),
                            secret.clone(),
                            tls.clone(),
                        );
                        conns.push(std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                            match tls {
                                None => serve(s, &stop, &mode, &seen, &posts, &secret),
                                Some(cfg) => {
                                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                        return;
                                    };
                                    let tls = rustls::StreamOwned::new(conn, s);
                                    serve(tls, &stop, &mode, &seen, &posts, &secret)
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        }));
    }

    /// Events accepted so far (duplicates included), in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.seen.lock().expect("seen").events.clone()
    }

    /// Distinct event ids accepted.
    pub fn distinct(&self) -> usize {
        self.seen.lock().expect("seen").ids.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.seen.lock().expect("seen").duplicates
    }

    /// The most events one accepted POST carried.
    pub fn largest_batch(&self) -> usize {
        self.seen.lock().expect("seen").largest_batch
    }

    pub fn bad_signatures(&self) -> u64 {
        self.seen.lock().expect("seen").bad_signatures
    }

    pub fn posts(&self) -> u64 {
        self.posts.load(Relaxed)
    }

    /// Waits until `f` holds for the events, or panics after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if f(&self.seen.lock().expect("seen").events) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} events seen",
                self.events().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.down();
    }
}

/// Serves one connection's requests (keep-alive) until it closes or the
/// receiver stops.
fn serve<S: Read + Write>(
    s: S,
    stop: &AtomicBool,
    mode: &Mutex<Mode>,
    seen: &Mutex<Seen>,
    posts: &AtomicU64,
    secret: &str,
) {
    let mut r = BufReader::new(s);
    'requests: while !stop.load(Relaxed) {
        let mut line = String::new();
        if !read_line(&mut r, &mut line, stop) {
            return;
        }
        let (mut len, mut ts, mut sig) = (0usize, 0u64, String::new());
        loop {
            let mut h = String::new();
            if !read_line(&mut r, &mut h, stop) {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "x-imgate-timestamp" => ts = v.parse().unwrap_or(0),
                    "x-imgate-signature" => sig = v.to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match r.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(e) if timed_out(&e) && !stop.load(Relaxed) => {}
                Err(_) => return,
            }
        }
        posts.fetch_add(1, Relaxed);
        let m = *mode.lock().expect("mode");
        let status = match m {
            Mode::Fail => 500,
            Mode::Ok | Mode::Slow(_) => {
                if let Mode::Slow(d) = m {
                    std::thread::sleep(d);
                }
                let mut seen = seen.lock().expect("seen");
                if !sign::verify(secret.as_bytes(), ts, &body, &sig) {
                    seen.bad_signatures += 1;
                    401
                } else {
                    let v: serde_json::Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(_) => continue 'requests,
                    };
                    let events = v["events"].as_array().cloned().unwrap_or_default();
                    seen.largest_batch = seen.largest_batch.max(events.len());
                    for e in events {
                        let id = e["id"].as_str().unwrap_or_default().to_string();
                        if !seen.ids.insert(id) {
                            seen.duplicates += 1;
                        }
                        seen.events.push(e);
                    }
                    200
                }
            }
        };
        let reason = if status == 200 { "OK" } else { "Error" };
        let answer = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n");
        let w = r.get_mut();
        if w.write_all(answer.as_bytes())
            .and_then(|()| w.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads one line into `buf`, across read timeouts (what a timeout cut
/// off stays in `buf`); false at the end of the stream, on an error, or
/// once the receiver stops.
fn read_line<S: Read>(r: &mut BufReader<S>, buf: &mut String, stop: &AtomicBool) -> bool {
    loop {
        match r.read_line(buf) {
            Ok(0) => return false,
            Ok(_) if buf.ends_with('\n') => return true,
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(_) => return false,
        }
        if stop.load(Relaxed) {
            return false;
        }
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
