//! `completion SHELL`: a completion script generated from the command line definition.

use clap::CommandFactory;

/// Prints the completion script for `shell` on stdout.
pub fn print(shell: clap_complete::Shell) {
    let mut cmd = crate::args::Cli::command();
    clap_complete::generate(shell, &mut cmd, "kubectl-bulkhead", &mut std::io::stdout());
}
