//! The real `imgate` binary as a test's child process: started on a port
//! of its own, SIGKILLed mid-run, restarted with the same arguments, and
//! killed when dropped so a failing test leaves no server behind on a port
//! the next test may reuse.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The flags of a gateway on the embedded store in `data` with fsync, one
/// core and no frame-rate limit, then `extra`.
pub fn store_args(data: &std::path::Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--data-dir".into(), data.as_os_str().to_owned()];
    args.extend(
        [
            "--durability",
            "fsync",
            "--secret",
            super::SECRET,
            "--workers",
            "1",
            "--max-frames-per-sec",
            "100000",
            "--frame-burst",
            "100000",
        ]
        .iter()
        .chain(extra)
        .map(OsString::from),
    );
    args
}

/// Runs `imgate <args>` to its end (a subcommand).
pub fn imgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(args)
        .output()
        .expect("run imgate")
}

/// A gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    args: Vec<OsString>,
    /// Its stdout and stderr go here (appended); nowhere if None.
    log: Option<PathBuf>,
    /// How long a start may take until the port accepts.
    start_timeout: Duration,
}

impl Gateway {
    /// Starts `imgate --listen 127.0.0.1:<port> <args>` and waits until the
    /// port accepts connections.
    pub fn spawn(
        port: u16,
        args: Vec<OsString>,
        log: Option<PathBuf>,
        start_timeout: Duration,
    ) -> Gateway {
        let mut g = Gateway {
            child: None,
            port,
            args,
            log,
            start_timeout,
        };
        g.start();
        g
    }

    /// Starts it (again), with the same arguments.
    pub fn start(&mut self) {
        let (out, err) = match &self.log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file");
                (
                    Stdio::from(f.try_clone().expect("log file")),
                    Stdio::from(f),
                )
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn imgate");
        self.child = Some(child);
        let deadline = Instant::now() + self.start_timeout;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start; log: {}",
                self.log
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the gateway and waits until its listeners are closed.
    ///
    /// A reaped process's io_uring listeners linger until the kernel has
    /// torn down its rings, and accept (then reset) connections meanwhile:
    /// a readiness probe right after the kill would be answered by them,
    /// not by the restarted gateway. A plain bind succeeds once no socket
    /// listens on the port.
    pub fn kill9(&mut self) {
        if !self.kill() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the killed gateway's port stays taken"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `sig` to the running gateway (SIGSTOP, SIGCONT...).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill with the pid of a child not yet reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits up to `timeout` for the process to end by itself (after a
    /// SIGTERM); true if it did, and it is reaped.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(c) = &mut self.child {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// SIGKILL and reap; false if it was already gone.
    fn kill(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill with the pid of a child not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        let _ = c.wait();
        true
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}
