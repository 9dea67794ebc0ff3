//! The `neverust` binary: parses the command line and runs it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = neverust::cli::Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the tokio runtime");
    match runtime.block_on(neverust::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
