//! `kubectl bulkhead`: a kubectl plugin for Bulkhead, in the spirit of `kubectl argo rollouts`.
//!
//! One module per subcommand. Each keeps its decisions and rendering in pure functions
//! (unit-tested from fixture objects) and talks to the API server only in its `run`.

pub mod abort;
pub mod args;
pub mod client;
pub mod completion;
pub mod get;
pub mod isolation;
pub mod logs;
pub mod model;
pub mod output;
pub mod promote;
pub mod restart;
pub mod status;
pub mod table;
pub mod undo;
pub mod verify;

#[cfg(test)]
pub mod fixtures;

/// Runs a parsed command line.
pub async fn run(cli: args::Cli) -> anyhow::Result<std::process::ExitCode> {
    use args::Command;
    let global = &cli.global;
    let kube = || client::Kube::connect(global);
    match cli.command {
        Command::Get(a) => get::run(&kube().await?, &a).await?,
        Command::Status(a) => status::run(&kube().await?, &a).await?,
        Command::Promote(a) => promote::run(&kube().await?, &a.workload).await?,
        Command::Abort(a) => abort::run(&kube().await?, &a.workload).await?,
        Command::Undo(a) => undo::run(&kube().await?, &a).await?,
        Command::Restart(a) => restart::run(&kube().await?, &a.workload).await?,
        Command::Isolation(a) => isolation::run(&kube().await?, &a).await?,
        Command::Logs(a) => logs::run(&kube().await?, &a).await?,
        Command::Verify(a) => return verify::run(&kube().await?, &a).await,
        Command::Completion(a) => completion::print(a.shell),
    }
    Ok(std::process::ExitCode::SUCCESS)
}
