//! The idle-connection server with mimalloc set up as
//! `imgate_bench::mimalloc_tuning` recommends: THP off, set first thing in
//! `main`, and the `MiAlloc` global allocator. See `imgate_bench::idle`.

use std::error::Error;

use imgate_bench::{
    idle::{ServerOpts, run_server},
    mimalloc_tuning::{MiAlloc, tune_mimalloc},
};

#[global_allocator]
static GLOBAL: MiAlloc = MiAlloc;

fn main() -> Result<(), Box<dyn Error>> {
    tune_mimalloc();
    let opts = ServerOpts::parse(std::env::args().skip(1))?;
    run_server("mimalloc-tuned", &opts)
}
