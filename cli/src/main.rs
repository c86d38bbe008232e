//! `kubectl-bulkhead`: found by kubectl on the PATH and run as `kubectl bulkhead ...`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = kubectl_bulkhead::args::Cli::parse();
    match kubectl_bulkhead::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
