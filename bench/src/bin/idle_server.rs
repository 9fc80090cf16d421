//! The idle-connection server with the system allocator (glibc malloc).
//! See `imgate_bench::idle`.

use std::error::Error;

use imgate_bench::idle::{ServerOpts, run_server};

fn main() -> Result<(), Box<dyn Error>> {
    let opts = ServerOpts::parse(std::env::args().skip(1))?;
    run_server("system", &opts)
}
