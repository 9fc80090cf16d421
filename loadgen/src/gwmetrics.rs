//! Readings of the gateway's `/metrics` endpoint (Prometheus text), for the
//! memory and CPU figures that only the gateway process knows.

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
}
