//! Readings of the gateway's `/metrics` endpoint (Prometheus text), for the
//! memory and CPU figures that only the gateway process knows.
//!
//! A cluster has one endpoint per gateway process; a reading takes them
//! all and their sum stands for the tier (its memory, its CPU), with each
//! process's own figures kept beside it.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use serde::Serialize;

/// One reading.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct GatewaySample {
    /// `process_resident_memory_bytes`.
    pub rss_bytes: f64,
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// Sum of `imgate_connections` over cores.
    pub connections: f64,
    /// Sum of `imgate_frames_in_total`.
    pub frames_in: f64,
    /// Sum of `imgate_frames_out_total`.
    pub frames_out: f64,
    /// Seconds since the run started when it was taken.
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// Where to read from: `host:port`, or `none`.
pub fn parse_endpoint(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(None);
    }
    let s = s.trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    s.to_socket_addrs()
        .map_err(|e| format!("--metrics {s}: {e}"))?
        .next()
        .map(Some)
        .ok_or_else(|| format!("--metrics {s}: no address"))
}

/// Where to read from: comma-separated `host:port` (one per gateway
/// process), or `none` for nowhere.
pub fn parse_endpoints(s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() || part.eq_ignore_ascii_case("none") {
            return Err(format!(
                "--metrics {s}: an empty entry or `none` in a list (use `none` alone)"
            ));
        }
        let Some(addr) = parse_endpoint(part)? else {
            continue;
        };
        if out.contains(&addr) {
            return Err(format!("--metrics {s}: {addr} is listed twice"));
        }
        out.push(addr);
    }
    Ok(out)
}

/// The readings of several gateway processes as one: memory, CPU and
/// counts summed, the time of the last reading.
pub fn sum(samples: &[GatewaySample]) -> GatewaySample {
    let mut t = GatewaySample::default();
    for s in samples {
        t.rss_bytes += s.rss_bytes;
        t.cpu_seconds += s.cpu_seconds;
        t.connections += s.connections;
        t.frames_in += s.frames_in;
        t.frames_out += s.frames_out;
        t.at = t.at.max(s.at);
    }
    t
}

/// Reads `/metrics` from `addr`.
pub fn scrape(addr: SocketAddr) -> Result<GatewaySample, String> {
    let t = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("metrics {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: imgate\r\n\r\n")
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(_, b)| b);
    let mut out = parse(body);
    out.at = Some(Instant::now());
    if !body.contains("process_resident_memory_bytes") {
        return Err(format!(
            "metrics {addr}: no process_resident_memory_bytes in the answer"
        ));
    }
    Ok(out)
}

/// Parses the text exposition.
pub fn parse(text: &str) -> GatewaySample {
    let mut s = GatewaySample::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let metric = name.split('{').next().unwrap_or(name);
        match metric {
            "process_resident_memory_bytes" => s.rss_bytes = v,
            "process_cpu_seconds_total" => s.cpu_seconds = v,
            "imgate_connections" => s.connections += v,
            "imgate_frames_in_total" => s.frames_in += v,
            "imgate_frames_out_total" => s.frames_out += v,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_gateway_exposition() {
        let m = imgate::metrics::Metrics::new(2);
        m.cores[0]
            .connections
            .store(3, std::sync::atomic::Ordering::Relaxed);
        m.cores[1]
            .connections
            .store(4, std::sync::atomic::Ordering::Relaxed);
        let s = parse(&m.render());
        assert_eq!(s.connections, 7.0);
        assert!(s.rss_bytes > 0.0);
        assert_eq!(parse_endpoint("none"), Ok(None));
        assert!(parse_endpoint("127.0.0.1:9100").expect("parses").is_some());
    }

    #[test]
    fn an_endpoint_list_parses() {
        let a: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9101".parse().expect("addr");
        assert_eq!(parse_endpoints("none"), Ok(vec![]));
        assert_eq!(parse_endpoints("NONE"), Ok(vec![]));
        assert_eq!(parse_endpoints("127.0.0.1:9100"), Ok(vec![a]));
        assert_eq!(
            parse_endpoints("127.0.0.1:9100, http://127.0.0.1:9101/metrics"),
            Ok(vec![a, b])
        );
        for bad in [
            "127.0.0.1:9100,",
            "127.0.0.1:9100,none",
            "127.0.0.1:9100,127.0.0.1:9100",
            "127.0.0.1",
            "127.0.0.1:x",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readings_of_several_processes_add_up() {
        let now = Instant::now();
        let later = now + Duration::from_millis(5);
        let a = GatewaySample {
            rss_bytes: 100.0,
            cpu_seconds: 1.5,
            connections: 3.0,
            frames_in: 10.0,
            frames_out: 20.0,
            at: Some(later),
        };
        let b = GatewaySample {
            rss_bytes: 50.0,
            cpu_seconds: 0.5,
            connections: 4.0,
            frames_in: 1.0,
            frames_out: 2.0,
            at: Some(now),
        };
        let t = sum(&[a, b]);
        assert_eq!(t.rss_bytes, 150.0);
        assert_eq!(t.cpu_seconds, 2.0);
        assert_eq!(t.connections, 7.0);
        assert_eq!((t.frames_in, t.frames_out), (11.0, 22.0));
        assert_eq!(t.at, Some(later));
        assert_eq!(sum(&[a]), a);
    }
}
