//! The `imgate-loadgen` command: parse, run, print, exit with the verdict.

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};
use imgate_loadgen::{Cli, EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunError, run};

/// mimalloc set up as the gateway sets it up: the gateway's source file,
/// compiled in here (the load generator does not depend on the gateway).
#[allow(unreachable_pub)]
#[path = "../../gateway/src/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::MiAlloc = alloc::MiAlloc;

fn main() -> ExitCode {
    alloc::tune_mimalloc();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            return ExitCode::from(
                if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    EXIT_USAGE
                } else {
                    EXIT_OK
                },
            );
        }
        Err(e) => {
            // One line: clap's first line, without its usage block.
            let text = e.render().to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid usage")
                .trim_start_matches("error: ");
            eprintln!("imgate-loadgen: error: {line} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::from(if report.passed() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        Err(RunError::Usage(m)) => {
            eprintln!("imgate-loadgen: error: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(RunError::Failed(m)) => {
            eprintln!("imgate-loadgen: cannot run: {m}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
