//! Opens N TCP connections to an idle server from one process and holds
//! them, for the memory-per-connection study (`imgate_bench::idle`).

use std::{
    error::Error,
    io::Write,
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use imgate_bench::{idle::ClientOpts, sys};

fn main() -> Result<(), Box<dyn Error>> {
    let opts = ClientOpts::parse(std::env::args().skip(1))?;
    let nofile = sys::raise_nofile_limit()?;
    if opts.conns as u64 + 16 > nofile {
        return Err(format!(
            "{} connections need more than the {nofile} open files allowed",
            opts.conns
        )
        .into());
    }
    let start = Instant::now();
    let mut conns = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let s = TcpStream::connect(opts.addr).map_err(|e| format!("connection {i}: {e}"))?;
        conns.push(s);
        if opts.rate > 0 {
            // Pace against the start, so a slow connect is not paid twice.
            let due = start + Duration::from_secs_f64((i + 1) as f64 / opts.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        if (i + 1) % 5000 == 0 {
            println!("  {} connected", i + 1);
        }
    }
    println!(
        "CONNECTED {} in {:.0} ms",
        conns.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    if opts.send > 0 {
        let payload = vec![0u8; opts.send];
        for s in &mut conns {
            s.write_all(&payload)?;
        }
        println!("SENT {} bytes on each", opts.send);
    }
    thread::sleep(opts.hold);
    drop(conns);
    println!("CLOSED");
    Ok(())
}
