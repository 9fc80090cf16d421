//! A receiver of the event webhook for measurements: checks every POST's
//! signature, counts events and distinct ids, and prints one line a
//! second: events so far, in the last second, distinct ids, duplicates,
//! bad signatures, POSTs, and the time from the first accepted POST to the
//! latest (`span_ms`).
//!
//! ```text
//! cargo run --release -p imgate --example event_sink -- \
//!     --listen 127.0.0.1:17790 --secret s --seconds 60
//! ```
//!
//! It stops by itself after `--seconds`; `--delay-ms` answers each POST
//! that much later (a slow backend).

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use imgate::events::sign;

#[derive(Default)]
struct Counts {
    events: u64,
    ids: HashSet<String>,
    duplicates: u64,
    bad: u64,
    posts: u64,
    /// When the first and the latest accepted POST arrived.
    first: Option<Instant>,
    latest: Option<Instant>,
}

struct Sink {
    secret: String,
    delay: Duration,
    counts: Mutex<Counts>,
}

async fn take(State(s): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ts = header(sign::TIMESTAMP_HEADER).parse().unwrap_or(0);
    let ok = sign::verify(
        s.secret.as_bytes(),
        ts,
        &body,
        header(sign::SIGNATURE_HEADER),
    );
    let Ok(mut c) = s.counts.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    c.posts += 1;
    if !ok {
        c.bad += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let now = Instant::now();
    c.first.get_or_insert(now);
    c.latest = Some(now);
    for e in v["events"].as_array().into_iter().flatten() {
        c.events += 1;
        let id = e["id"].as_str().unwrap_or_default().to_string();
        if !c.ids.insert(id) {
            c.duplicates += 1;
        }
    }
    StatusCode::OK
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen", SocketAddr::from(([127, 0, 0, 1], 17790)));
    let seconds: u64 = arg(&args, "--seconds", 60);
    let sink = Arc::new(Sink {
        secret: arg(&args, "--secret", String::new()),
        delay: Duration::from_millis(arg(&args, "--delay-ms", 0)),
        counts: Mutex::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let app = Router::new()
            .route("/events", post(take))
            .with_state(sink.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let started = Instant::now();
        let mut last = 0;
        for t in 1..=seconds {
            tokio::time::sleep_until((started + Duration::from_secs(t)).into()).await;
            let c = sink
                .counts
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            let span = match (c.first, c.latest) {
                (Some(a), Some(b)) => b.duration_since(a).as_millis(),
                _ => 0,
            };
            println!(
                "t={t} events={} rate={} distinct={} duplicates={} bad_signatures={} posts={} span_ms={span}",
                c.events,
                c.events - last,
                c.ids.len(),
                c.duplicates,
                c.bad,
                c.posts
            );
            last = c.events;
        }
        server.abort();
        Ok(())
    })
}
