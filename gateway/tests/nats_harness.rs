//! The NATS test harness (tests/common/nats.rs) against real nats-server
//! processes: clusters start, speak the protocol, survive a killed node, and
//! report stream leaders.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::nats::{self, NatsCluster};

const SKIPPED: &str = "skipped: nats-server not installed";

/// Connects to a client URL and reads the server's greeting line.
fn greeting(url: &str) -> String {
    let addr = url.strip_prefix("nats://").expect("a nats:// URL");
    let stream = TcpStream::connect(addr).expect("connect to a nats client port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read the INFO line");
    line
}

/// One request over the raw NATS protocol (no client crate): publishes
/// `body` to `subject` with a reply inbox and returns the reply's payload
/// (headers included for an HMSG, e.g. a 503 "no responders").
fn request(url: &str, subject: &str, body: &str) -> String {
    let addr = url.strip_prefix("nats://").expect("a nats:// URL");
    let mut stream = TcpStream::connect(addr).expect("connect to a nats client port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read the INFO line");
    assert!(line.starts_with("INFO "), "greeting: {line:?}");
    write!(
        stream,
        "CONNECT {{\"verbose\":false,\"headers\":true,\"no_responders\":true}}\r\n\
         SUB _INBOX.harness 1\r\n\
         PUB {subject} _INBOX.harness {}\r\n{body}\r\n",
        body.len()
    )
    .expect("send the request");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read a protocol line");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("PING") => stream.write_all(b"PONG\r\n").expect("send PONG"),
            Some("MSG" | "HMSG") => {
                let size: usize = words
                    .last()
                    .and_then(|n| n.parse().ok())
                    .expect("a payload size");
                let mut payload = vec![0; size + 2];
                reader.read_exact(&mut payload).expect("read the payload");
                payload.truncate(size);
                return String::from_utf8_lossy(&payload).into_owned();
            }
            Some("-ERR") => panic!("nats error: {line}"),
            _ => {}
        }
    }
}

/// Creates a file stream on `subjects` with `replicas` copies.
fn create_stream(url: &str, name: &str, subjects: &str, replicas: usize) {
    let config = format!(
        "{{\"name\":\"{name}\",\"subjects\":[\"{subjects}\"],\"storage\":\"file\",\"num_replicas\":{replicas}}}"
    );
    let reply = request(url, &format!("$JS.API.STREAM.CREATE.{name}"), &config);
    assert!(
        reply.contains("stream_create_response") && !reply.contains("\"error\""),
        "create stream {name}: {reply}"
    );
}

/// Polls until `cluster` names a leader for `stream`.
fn wait_stream_leader(cluster: &NatsCluster, stream: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leader) = cluster.stream_leader(stream) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no leader for stream {stream} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shared_cluster_is_healthy_and_speaks_nats() {
    let started = Instant::now();
    let Some(cluster) = nats::shared() else {
        println!("{SKIPPED}");
        return;
    };
    println!("shared cluster ready after {:?}", started.elapsed());
    assert_eq!(cluster.node_count(), 3);
    for i in 0..3 {
        cluster.healthz(i).expect("a healthy node");
        assert!(cluster.is_running(i));
        assert!(cluster.pid(i) > 0);
    }
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    assert_eq!(cluster.url_list(), urls.join(","));
    for url in &urls {
        let line = greeting(url);
        assert!(line.starts_with("INFO "), "{url} greeted with {line:?}");
    }
    for (i, name) in ["n0", "n1", "n2"].into_iter().enumerate() {
        assert_eq!(cluster.node_index(name), Some(i));
    }
    assert_eq!(cluster.node_index("n3"), None);
}

#[test]
fn shared_cluster_reports_stream_leaders() {
    let Some(cluster) = nats::shared() else {
        println!("{SKIPPED}");
        return;
    };
    assert_eq!(cluster.stream_leader("HARNESS_NONE"), None);
    let urls = cluster.urls();
    create_stream(&urls[1], "HARNESS_R3", "harness.r3.>", 3);
    let leader = wait_stream_leader(cluster, "HARNESS_R3", Duration::from_secs(10));
    assert!(cluster.node_index(&leader).is_some(), "leader {leader:?}");
    create_stream(&urls[2], "HARNESS_R1", "harness.r1.>", 1);
    let leader = wait_stream_leader(cluster, "HARNESS_R1", Duration::from_secs(10));
    assert!(cluster.node_index(&leader).is_some(), "leader {leader:?}");
}

#[test]
fn killed_node_restarts_on_the_same_ports() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        println!("{SKIPPED}");
        return;
    };
    let urls = cluster.urls();
    let old_pid = cluster.pid(0);
    cluster.kill(0);
    assert!(!cluster.is_running(0));
    assert!(
        cluster.healthz(0).is_err(),
        "a killed node answers /healthz"
    );
    // If n0 led the meta group, the others answer 503 until they elect anew.
    for i in 1..3 {
        cluster.wait_healthy(i, Duration::from_secs(20));
    }
    cluster.restart(0);
    assert_ne!(cluster.pid(0), old_pid);
    cluster.healthz(0).expect("the restarted node is healthy");
    assert_eq!(cluster.urls(), urls);
    assert!(greeting(&urls[0]).starts_with("INFO "));
}

#[test]
fn single_node_has_jetstream() {
    let Some(cluster) = NatsCluster::start(1) else {
        println!("{SKIPPED}");
        return;
    };
    cluster.healthz(0).expect("a healthy node");
    let url = cluster.url_list();
    create_stream(&url, "HARNESS_SINGLE", "harness.single.>", 1);
    assert_eq!(
        wait_stream_leader(&cluster, "HARNESS_SINGLE", Duration::from_secs(10)),
        "n0"
    );
}
