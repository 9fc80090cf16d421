//! The real `imgate` binary: flags, config errors, tokens, signals.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::process::free_port;
use imgate_codec::{Decoder, Frame, KickReason, frame::Login};

fn imgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgate"))
}

#[test]
fn help_lists_every_option() {
    let out = imgate().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--workers",
        "--driver",
        "--max-connections",
        "--max-frame",
        "--login-timeout-ms",
        "--heartbeat-ms",
        "--tick-ms",
        "--max-outbound-bytes",
        "--max-frames-per-sec",
        "--push-timeout-ms",
        "--shutdown-timeout-ms",
        "--secret",
        "--data-dir",
        "--durability",
        "--metrics-listen",
        "--no-metrics",
        "--admin-token",
        "--log-format",
        "--ws-listen",
        "--demo-path",
        "--tls-cert",
        "--tls-key",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwt-issuer",
        "--jwt-audience",
        "--jwt-device-claim",
        "--jwt-leeway-s",
        "--events-url",
        "--events-secret",
        "--events-types",
        "--events-ca-file",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_and_configs_exit_2_with_one_line() {
    let out = imgate().args(["--workers", "many"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));

    let out = imgate()
        .args(["--heartbeat-ms", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("imgate: error: invalid setting heartbeat_ms"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let dir = std::env::temp_dir().join(format!("imgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").expect("write");
    let out = imgate().arg("--config").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config file"), "{err}");

    let out = imgate()
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    // Events: a URL without a secret, an unknown type, a CA file that is
    // not there or holds no certificate.
    let events = |args: &[&str]| {
        let out = imgate()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-metrics",
                "--durability",
                "memory",
            ])
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = events(&["--events-url", "http://127.0.0.1:1/e"]);
    assert!(err.contains("invalid setting events.secret"), "{err}");
    let err = events(&[
        "--events-url",
        "http://127.0.0.1:1/e",
        "--events-secret",
        "s",
        "--events-types",
        "message,typing",
    ]);
    assert!(err.contains("invalid setting events.types"), "{err}");
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    for (file, want) in [
        (dir.join("missing-ca.pem"), "events.ca_file"),
        (not_pem, "holds no PEM certificate"),
    ] {
        let f = file.to_str().expect("utf-8");
        let err = events(&[
            "--events-url",
            "https://127.0.0.1:1/e",
            "--events-secret",
            "s",
            "--events-ca-file",
            f,
        ]);
        assert!(err.contains(want) && err.contains(f), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }

    // TLS: a certificate without its key, and files that are not there.
    let out = imgate()
        .args(["--tls-cert", "cert.pem"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid setting tls_key"), "{err}");
    // A key file that is not there stops the start, naming the setting
    // and the file.
    let fails_to_start = |files: &[(&str, &str)], want: &str| {
        let mut cmd = imgate();
        cmd.args(["--listen", "127.0.0.1:0", "--no-metrics"])
            .args(["--durability", "memory", "--data-dir"])
            .arg(dir.join("data"));
        for (flag, file) in files {
            cmd.arg(flag).arg(dir.join(file));
        }
        let out = cmd.output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want) && err.contains(files[0].1), "{err}");
    };
    fails_to_start(
        &[
            ("--tls-cert", "missing-cert.pem"),
            ("--tls-key", "missing-key.pem"),
        ],
        "tls_cert",
    );
    fails_to_start(&[("--jwt-public-key", "missing-jwt.pem")], "jwt_public_key");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_token_for_user_0_is_a_usage_error() {
    let out = imgate()
        .args(["token", "--user", "0", "--device", "1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no token printed: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--user"), "{err}");
}

#[test]
fn flags_override_env_which_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("imgate-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(&file, "secret = \"from-file\"\n").expect("write");
    let mint = |extra: &[(&str, &str)], args: &[&str]| {
        let mut c = imgate();
        c.arg("--config").arg(&file).args(args);
        c.args(["token", "--user", "1", "--device", "2", "--ttl", "100"]);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().expect("runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let verify = |secret: &str, tok: &str| {
        use imgate::token::Verifier;
        imgate::token::HmacVerifier::new(secret.as_bytes())
            .verify(1, 2, tok.as_bytes(), imgate::unix_time().as_secs())
            .is_ok()
    };
    assert!(verify("from-file", &mint(&[], &[])));
    assert!(verify(
        "from-env",
        &mint(&[("IMGATE_SECRET", "from-env")], &[])
    ));
    assert!(verify(
        "from-flag",
        &mint(&[("IMGATE_SECRET", "from-env")], &["--secret", "from-flag"])
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills the child when dropped unless it was reaped, so a failing test
/// leaves no server behind.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_binary_serves_logins_and_shuts_down_on_sigterm() {
    let port = free_port();
    let metrics_port = free_port();
    let child = imgate()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--secret", "s3", "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut child = Reap(Some(child));
    let pid = child.0.as_ref().map_or(0, |c| c.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("gateway did not start: {e}"),
        }
    };
    let tok = imgate()
        .args(["--secret", "s3", "token", "--user", "9", "--device", "1"])
        .output()
        .expect("token");
    let tok = String::from_utf8_lossy(&tok.stdout).trim().to_string();
    let mut b = BytesMut::new();
    Frame::from(Login {
        user: 9,
        device: 1,
        resume: 0,
        token: Bytes::from(tok),
    })
    .encode(&mut b);
    stream.write_all(&b).expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut frames = Vec::new();
    let mut buf = BytesMut::new();
    let dec = Decoder::default();
    let mut read = |frames: &mut Vec<Frame>, buf: &mut BytesMut| {
        let mut tmp = [0u8; 4096];
        let n = stream.read(&mut tmp).unwrap_or(0);
        buf.extend_from_slice(&tmp[..n]);
        while let Ok(Some(f)) = dec.decode(buf) {
            frames.push(f);
        }
        n
    };
    while frames.is_empty() {
        assert!(read(&mut frames, &mut buf) > 0, "closed before login:ok");
    }
    assert!(matches!(frames[0], Frame::LoginOk(_)), "{frames:?}");

    // The metrics endpoint counts the login.
    let mut m = TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics");
    m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    m.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let logins: u64 = text
        .lines()
        .filter(|l| l.starts_with("imgate_logins_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(logins, 1, "{text}");
    assert!(text.contains("process_resident_memory_bytes"));

    // SIGTERM: a server_shutdown kick, then a clean exit.
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    while read(&mut frames, &mut buf) > 0 {}
    assert!(
        matches!(frames.last(), Some(Frame::Kick(k)) if k.reason() == KickReason::ServerShutdown),
        "{frames:?}"
    );
    let status = child.0.take().expect("child").wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn imgate_kick_reaches_a_running_gateway_and_explains_what_is_missing() {
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = imgate()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &metrics, "--admin-token", "tk"])
        .args(["--durability", "memory", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _child = Reap(Some(child));

    // Without a token, or with the endpoint off: a usage error, exit 2.
    let out = imgate()
        .args(["--metrics-listen", &metrics, "kick", "--user", "1"])
        .output()
        .expect("kick");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_token"));
    let out = imgate()
        .args(["--no-metrics", "--admin-token", "tk", "kick", "--user", "1"])
        .output()
        .expect("kick");
    assert_eq!(out.status.code(), Some(2));

    // Against the running gateway (retrying until it listens).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = imgate()
            .args(["--metrics-listen", &metrics, "--admin-token", "tk"])
            .args(["kick", "--user", "1", "--device", "3"])
            .output()
            .expect("kick");
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"kicked\":0}\n");
            break;
        }
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(Instant::now() < deadline, "gateway never answered: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A wrong token is refused by the gateway: exit 1 with its answer.
    let out = imgate()
        .args(["--metrics-listen", &metrics, "--admin-token", "nope"])
        .args(["kick", "--user", "1"])
        .output()
        .expect("kick");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
}
