//! Drives the message store alone at a fixed message rate with the writes
//! one one-to-one message costs the default backend, and prints, every
//! second, the commit latency (p50, p99, max) and the commits that took
//! longer than 20 ms: a stall in the store shows here without the gateway,
//! the network or the load generator around it.
//!
//! ```text
//! cargo run --release -p imgate --example store_pace -- DIR [RATE] [SECONDS] [fsync|os] [PER_COMMIT]
//! ```
//!
//! Per message (as `delivery::apply` writes it): two log records of about
//! 110 bytes (the receiver's inbox and the sender's own), two stream heads,
//! one de-duplication answer, and, as the receiver acknowledges, one cursor
//! and one receipt mark. 100 pairs of users, as `imgate-loadgen chat
//! --pairs 100`. Messages are committed `PER_COMMIT` at a time (6: what the
//! gateway's group commit gathered at 10,000 msg/s with fsync).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use imgate::{
    config::Durability,
    store::{self, Table, WriteBatch},
};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: store_pace DIR [RATE] [SECONDS] [fsync|os] [PER_COMMIT]");
        std::process::exit(2);
    };
    let rate: u64 = arg(&args, 2, 10_000);
    let secs: u64 = arg(&args, 3, 60);
    let durability = match args.get(4).map(String::as_str) {
        None | Some("fsync") => Durability::Fsync,
        Some("os") => Durability::Os,
        Some(other) => {
            eprintln!("durability must be fsync or os, not {other}");
            std::process::exit(2);
        }
    };
    let per_commit: u64 = arg(&args, 5, 6).max(1);
    let s = match store::open(&dir, durability) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    const PAIRS: u64 = 100;
    let mut heads = vec![0u64; 2 * PAIRS as usize];
    let mut b = WriteBatch::new();
    let body = [7u8; 64];
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 * per_commit / rate.max(1));
    let mut next = start;
    let mut n: u64 = 0;
    let mut window: Vec<u64> = Vec::new();
    let mut all: Vec<u64> = Vec::new();
    let mut second = 1;
    while start.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        b.clear();
        for _ in 0..per_commit {
            let pair = n % PAIRS;
            let (from, to) = (pair * 2 + 1, pair * 2 + 2);
            for user in [to, from] {
                let h = &mut heads[user as usize - 1];
                *h += 1;
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&user.to_be_bytes());
                k[8..].copy_from_slice(&h.to_be_bytes());
                let mut v = Vec::with_capacity(110);
                v.extend_from_slice(&from.to_be_bytes());
                v.extend_from_slice(&to.to_be_bytes());
                v.extend_from_slice(&n.to_be_bytes());
                v.extend_from_slice(&[0u8; 16]);
                v.extend_from_slice(&body);
                b.put(Table::Log, k, v);
                let mut hk = [0u8; 9];
                hk[0] = b'h';
                hk[1..].copy_from_slice(&user.to_be_bytes());
                b.put(Table::Meta, hk, h.to_be_bytes());
            }
            let mut dk = [0u8; 24];
            dk[8..16].copy_from_slice(&from.to_be_bytes());
            dk[16..].copy_from_slice(&n.to_be_bytes());
            b.put(Table::Dedup, dk, [1u8; 40]);
            let mut ck = [0u8; 20];
            ck[..8].copy_from_slice(&to.to_be_bytes());
            ck[8..16].copy_from_slice(&to.to_be_bytes());
            b.put(Table::Cursor, ck, heads[to as usize - 1].to_be_bytes());
            let mut rk = [0u8; 17];
            rk[0] = b'r';
            rk[1..9].copy_from_slice(&from.to_be_bytes());
            rk[9..].copy_from_slice(&to.to_be_bytes());
            b.put(Table::Meta, rk, heads[to as usize - 1].to_be_bytes());
            n += 1;
        }
        let t = Instant::now();
        if let Err(e) = s.write(&b) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        let us = t.elapsed().as_micros() as u64;
        if us > 20_000 {
            println!(
                "  stall: {:.1} ms at {:.2} s",
                us as f64 / 1000.0,
                start.elapsed().as_secs_f64()
            );
        }
        window.push(us);
        if start.elapsed() >= Duration::from_secs(second) {
            report(&format!("{second:>4} s"), &mut window);
            all.append(&mut window);
            second += 1;
        }
    }
    all.append(&mut window);
    println!("messages {n}, commits {}", all.len());
    report("all", &mut all);
}

fn report(label: &str, v: &mut [u64]) {
    if v.is_empty() {
        return;
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: commits {} p50 {} us p99 {} us p99.9 {} us max {} us",
        v.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        v[v.len() - 1]
    );
}
