//! The idle-connection server with mimalloc, default options (any
//! `MIMALLOC_*` environment variables still apply). See `imgate_bench::idle`.

use std::error::Error;

use imgate_bench::idle::{ServerOpts, run_server};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> Result<(), Box<dyn Error>> {
    let opts = ServerOpts::parse(std::env::args().skip(1))?;
    run_server("mimalloc", &opts)
}
