//! The command line: global flags, subcommands, and `--help` examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

const EXAMPLES: &str = "\
Examples:
  kubectl bulkhead get -A                       # every Workload: strategy, phase, revisions
  kubectl bulkhead status web --watch           # a live tree of web's rollout
  kubectl bulkhead promote web                  # switch traffic to the preview revision
  kubectl bulkhead undo web --to-revision 3     # back to revision 3 of web's history
  kubectl bulkhead isolation web-7f9c2-x4k2p    # each wall: asked / enforced / verified
  kubectl bulkhead verify --host local-1        # the isolation-attempt suite on a host
  source <(kubectl bulkhead completion bash)    # shell completion";

/// Bulkhead from kubectl: Workloads and their rollouts, what the kernel enforces on each
/// instance, and the isolation-attempt suite against any host.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-bulkhead",
    bin_name = "kubectl-bulkhead",
    version,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API server is and which namespace to use, as for kubectl.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Kubeconfig file; otherwise $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace; the context's namespace (or "default") when unset.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List Workloads with strategy, phase, active/preview revision and ready per revision.
    #[command(after_help = "Examples:\n  kubectl bulkhead get\n  kubectl bulkhead get -A -o yaml")]
    Get(GetArgs),
    /// Show a Workload as a tree: revisions, instances, service endpoints, recent events.
    #[command(
        after_help = "Examples:\n  kubectl bulkhead status web\n  kubectl bulkhead status web --watch   # redraws in place until Ctrl-C"
    )]
    Status(StatusArgs),
    /// Promote the preview revision of a BlueGreen Workload (traffic switches to it).
    #[command(after_help = "Examples:\n  kubectl bulkhead promote web")]
    Promote(WorkloadArg),
    /// Abort the preview of a BlueGreen Workload (traffic stays on the active revision).
    #[command(after_help = "Examples:\n  kubectl bulkhead abort web")]
    Abort(WorkloadArg),
    /// Roll a Workload back to an earlier revision of its history (the previous one by default).
    #[command(
        after_help = "Examples:\n  kubectl bulkhead undo web\n  kubectl bulkhead undo web --to-revision 2\n\nThe history: kubectl get controllerrevisions -l bulkhead.dev/workload=web --sort-by=.revision"
    )]
    Undo(UndoArgs),
    /// Replace every instance of a Workload: a new revision with the same template.
    #[command(after_help = "Examples:\n  kubectl bulkhead restart web")]
    Restart(WorkloadArg),
    /// Each isolation wall of an instance: asked for, enforced by the kernel, verified.
    #[command(
        after_help = "Examples:\n  kubectl bulkhead isolation web-7f9c2-x4k2p\n  kubectl bulkhead isolation web-7f9c2-x4k2p -o json"
    )]
    Isolation(InstanceArgs),
    /// Print an instance's stdout and stderr (read on the instance's host, see --agent-state-dir).
    #[command(
        after_help = "Examples:\n  kubectl bulkhead logs web-7f9c2-x4k2p\n  kubectl bulkhead logs web-7f9c2-x4k2p -f --agent-state-dir /var/lib/bulkhead\n\nLogs stay on the instance's host: run this there. Reading them remotely is not supported."
    )]
    Logs(LogsArgs),
    /// Run the isolation-attempt suite on a host as short-lived Instances; non-zero on a breach.
    #[command(
        after_help = "Examples:\n  kubectl bulkhead verify --host local-1\n  kubectl bulkhead verify --host h1 --image registry.example/bulkhead/tools:v1\n  kubectl bulkhead verify --host h1 --workload web -n shop   # with web's isolation settings\n\nCreates Instances directly, so it needs the rights of an admin (system:masters)."
    )]
    Verify(VerifyArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  source <(kubectl bulkhead completion bash)\n  kubectl bulkhead completion zsh > \"${fpath[1]}/_kubectl-bulkhead\""
    )]
    Completion(CompletionArgs),
}

/// `get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Workloads of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The Workload.
    pub workload: String,
    /// Redraw the tree in place whenever it changes, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format (json and yaml print the objects the tree is drawn from, once).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// A subcommand that acts on one Workload.
#[derive(Args, Debug)]
pub struct WorkloadArg {
    /// The Workload.
    pub workload: String,
}

/// `undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    /// The Workload.
    pub workload: String,
    /// The revision number to go back to (the ControllerRevision's `revision`); the previous
    /// revision when unset.
    #[arg(long)]
    pub to_revision: Option<i64>,
}

/// `isolation`.
#[derive(Args, Debug)]
pub struct InstanceArgs {
    /// The Instance.
    pub instance: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The Instance.
    pub instance: String,
    /// Keep printing what the instance writes, until it ends or Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The node agent's --state-dir on this machine (instance logs are in its logs/).
    #[arg(
        long,
        env = "BULKHEAD_AGENT_STATE_DIR",
        default_value = "/var/lib/bulkhead"
    )]
    pub agent_state_dir: PathBuf,
}

/// `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The Host to run the attempts on.
    #[arg(long)]
    pub host: String,
    /// An image carrying /bin/probe (e2e/images/probe.c); the local system's tools image by
    /// default.
    #[arg(long)]
    pub image: Option<String>,
    /// Run the attempts with this Workload's isolation settings instead of the defaults.
    #[arg(long)]
    pub workload: Option<String>,
    /// Seconds to wait for every attempt to end.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Where the host's node agent keeps its state, when that host is this machine: the
    /// probes' own output is then shown as evidence.
    #[arg(long, env = "BULKHEAD_AGENT_STATE_DIR")]
    pub agent_state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-bulkhead",
            "undo",
            "web",
            "-n",
            "shop",
            "--to-revision",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        let Command::Undo(a) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!((a.workload.as_str(), a.to_revision), ("web", Some(3)));
    }
}
