use std::path::PathBuf;

use bulkhead_crds::policy::IsolationLevel;
use bulkhead_node_agent::{agent, host::lease::LeaseTiming, isolation::userns::UidRangePool};
use clap::{Parser, Subcommand};

/// Starts the Bulkhead instances bound to this host through containerd and runc, with every
/// isolation layer on, and reports what the kernel enforces.
#[derive(Parser, Debug, Clone)]
#[command(name = "bulkhead-node-agent", version = bulkhead_node_agent::VERSION)]
struct Args {
    /// Name of this host's Host object; defaults to the machine's host name.
    #[arg(long, env = "BULKHEAD_HOST_NAME")]
    host_name: Option<String>,
    /// Kubeconfig to use; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// containerd's gRPC socket.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_address: PathBuf,
    /// containerd's `state` directory (its config.toml's `state`): runc mounts each
    /// container's root filesystem from under it, from inside the container's user namespace,
    /// so preflight checks that the mapped UIDs can traverse every directory down to it.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_CONTAINERD_STATE_DIR",
        default_value = "/run/containerd"
    )]
    containerd_state_dir: PathBuf,
    /// containerd namespace for the agent's images, containers and tasks.
    #[arg(
        long,
        env = "BULKHEAD_CONTAINERD_NAMESPACE",
        default_value = "bulkhead"
    )]
    containerd_namespace: String,
    /// Directory for instance logs and agent state.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_STATE_DIR",
        default_value = "/var/lib/bulkhead"
    )]
    state_dir: PathBuf,
    /// Host UID/GID ranges handed to instances: "<first host uid>:<number of 65536-wide ranges>".
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_UID_RANGE_POOL",
        default_value = "1000000000:1024"
    )]
    uid_range_pool: String,
    /// Namespace of the per-host Leases.
    #[arg(long, env = "BULKHEAD_LEASE_NAMESPACE", default_value = bulkhead_crds::SYSTEM_NAMESPACE)]
    lease_namespace: String,
    /// Registries (host[:port]) images may be pulled from, comma-separated; empty allows any.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    allowed_registries: Vec<String>,
    /// Seconds between Lease renewals.
    #[arg(long, env = "BULKHEAD_LEASE_RENEW_SECONDS", default_value_t = 10)]
    lease_renew_seconds: u64,
    /// Seconds a Lease renewal is valid.
    #[arg(long, env = "BULKHEAD_LEASE_DURATION_SECONDS", default_value_t = 40)]
    lease_duration_seconds: u64,
    /// The runc binary.
    #[arg(long, global = true, env = "BULKHEAD_RUNC", default_value = "runc")]
    runc: PathBuf,
    /// Register the Host cordoned (spec.unschedulable), like a kubelet's
    /// --register-schedulable=false.
    #[arg(long, env = "BULKHEAD_REGISTER_UNSCHEDULABLE")]
    register_unschedulable: bool,
    /// First restart back-off in seconds; it doubles up to 5 minutes (kubelet's is 10).
    #[arg(long, env = "BULKHEAD_RESTART_BACKOFF_SECONDS", default_value_t = 10)]
    restart_backoff_seconds: i32,
    /// Seconds a Ready instance that is being deleted keeps serving after it is reported
    /// Terminating, before SIGTERM, so that Service consumers stop routing to it first
    /// (bounded by its terminationGracePeriodSeconds).
    #[arg(long, env = "BULKHEAD_DEREGISTRATION_SECONDS", default_value_t = 2)]
    deregistration_seconds: u64,
    /// Directory of the CNI plugin binaries.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_CNI_BIN_DIR",
        default_value = "/usr/lib/cni"
    )]
    cni_bin_dir: PathBuf,
    /// Use the node's own CNI configuration (the first .conf/.conflist here) instead of the
    /// agent's bridge network.
    #[arg(long, global = true, env = "BULKHEAD_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// Run the CNI plugins and iptables (the network walls) with this directory as their
    /// root (chroot): /proc/1/root when the agent runs in a pod with the host PID namespace
    /// (the Helm chart), so that they use the node's own iptables and paths rather than the
    /// agent image's. --cni-bin-dir, the state directory and network namespace paths are then
    /// the node's.
    #[arg(long, env = "BULKHEAD_CNI_ROOT")]
    cni_root: Option<PathBuf>,
    /// The agent's own network: bridge name.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_CNI_BRIDGE",
        default_value = "bulkhead0"
    )]
    cni_bridge: String,
    /// The agent's own network: the instance subnet (the default stays clear of podman's and
    /// containerd's example CNI network, 10.88.0.0/16).
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_INSTANCE_SUBNET",
        default_value = "10.89.0.0/24"
    )]
    instance_subnet: String,
    /// Run instances without a network (an empty network namespace).
    #[arg(long, global = true, env = "BULKHEAD_NO_NETWORK")]
    no_network: bool,
    /// Leave instances on the agent's own bridge unwalled: every instance reaches every
    /// other and the host (no default deny across namespaces, no NetworkPolicy). For tests of
    /// the layers behind the walls; never in production.
    #[arg(long, global = true, env = "BULKHEAD_NO_NETWORK_WALLS")]
    no_network_walls: bool,
    /// Address (comma-separated for several) a masquerading service proxy sends from, such as
    /// kube-proxy with --masquerade-all in a network namespace of its own: the walls let it
    /// reach every instance on the bridge, like the host. Under NetworkPolicy this is the
    /// known cost of a masquerading proxy: a ClusterIP reaches what the walls between
    /// instances would refuse.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_SERVICE_PROXY_ADDRESS",
        value_delimiter = ','
    )]
    service_proxy_address: Vec<std::net::Ipv4Addr>,
    /// Address of /metrics and /healthz.
    #[arg(
        long,
        env = "BULKHEAD_AGENT_METRICS_ADDRESS",
        default_value = "127.0.0.1:9465"
    )]
    metrics_address: String,
    /// Networks (address/prefix, comma-separated) whose connections to /metrics and
    /// /healthz are closed unanswered, in addition to the instance subnet, which is always
    /// denied: instances reach the node's address through their bridge.
    #[arg(long, env = "BULKHEAD_METRICS_DENY_FROM", value_delimiter = ',')]
    metrics_deny_from: Vec<String>,
    /// Exit when the process that started the agent exits (test harnesses).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// The weakest isolation level this host runs: strict, baseline or privileged. The agent
    /// refuses (IsolationForbidden) any instance that needs more, whatever the API admitted,
    /// and publishes it in Host status.isolationFloor for the scheduler.
    #[arg(long, env = "BULKHEAD_ISOLATION_FLOOR", default_value = "strict", value_parser = parse_level)]
    isolation_floor: IsolationLevel,
    /// Cap of one instance log file in bytes; at the cap it becomes the previous file
    /// (`.log.1`, one kept), so an instance's logs take at most twice this.
    #[arg(long, env = "BULKHEAD_LOG_MAX_BYTES", default_value_t = bulkhead_node_agent::logs::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    log_max_bytes: u64,
    /// Seconds an image no instance of this host needs is kept before it is removed.
    #[arg(
        long,
        env = "BULKHEAD_IMAGE_GC_UNUSED_SECONDS",
        default_value_t = 86400
    )]
    image_gc_unused_seconds: u64,
    /// Seconds between image garbage collection passes.
    #[arg(long, env = "BULKHEAD_IMAGE_GC_PERIOD_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    image_gc_period_seconds: u64,
    /// The file system containerd keeps images on (its root, e.g. /var/lib/containerd):
    /// above --image-gc-high-percent used, unneeded images go sooner, oldest first, down to
    /// --image-gc-low-percent. Without it only the unused time counts.
    #[arg(long, env = "BULKHEAD_IMAGE_GC_DISK_PATH")]
    image_gc_disk_path: Option<PathBuf>,
    /// Disk use (percent) above which unneeded images are removed before their time.
    #[arg(long, env = "BULKHEAD_IMAGE_GC_HIGH_PERCENT", default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    image_gc_high_percent: u8,
    /// Disk use (percent) the early removal stops at.
    #[arg(long, env = "BULKHEAD_IMAGE_GC_LOW_PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_percent: u8,
    /// Log format: text or json.
    #[arg(long, env = "BULKHEAD_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Print an instance's stdout and stderr: `logs <namespace>/<name>`.
    Logs {
        /// The Instance, as namespace/name.
        instance: String,
    },
    /// Check that this host can run instances: one line per check (ok, FAIL or warn, what
    /// was found, the fix); exits non-zero when a required check fails. The agent runs the
    /// same checks at start and refuses to register a host that fails one.
    Preflight {
        /// Output: text (one line per check) or json.
        #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

fn main() -> anyhow::Result<()> {
    // containerd's shim runs this binary as an instance's log writer (see logs.rs).
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // The agent runs CNI plugins in the node's root this way (--cni-root).
    if let Some(e) = bulkhead_node_agent::network::cni::chroot_exec(&raw) {
        anyhow::bail!("{} {}: {e}", raw[0], raw[2]);
    }
    if let Some(writer) = bulkhead_node_agent::logs::WriterArgs::parse(&raw) {
        let writer = writer.map_err(anyhow::Error::msg)?;
        return Ok(bulkhead_node_agent::logs::run_writer(&writer)?);
    }
    let args = Args::parse();
    if let Some(Command::Logs { instance }) = &args.command {
        return bulkhead_node_agent::logs::print(&args.state_dir, instance);
    }
    if let Some(Command::Preflight { output }) = &args.command {
        let cfg = config(args.clone(), String::new())?;
        let failed = preflight(&cfg, output)?;
        if failed > 0 {
            // Each failure is on its own line above, with its fix: no error chain to add.
            eprintln!(
                "error: {failed} required check(s) failed: this host cannot run instances until they are fixed"
            );
            std::process::exit(1);
        }
        return Ok(());
    }
    if args.exit_with_parent {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    }
    init_tracing(&args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host_name = match args.host_name.clone() {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_string(),
    };
    let cfg = config(args, host_name)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(agent::run(cfg))
}

/// Runs the preflight checks and prints them; returns how many required ones failed.
fn preflight(cfg: &agent::AgentConfig, output: &str) -> anyhow::Result<usize> {
    use bulkhead_node_agent::{host::detect::HostRoot, preflight};
    let settings = cfg.preflight_settings();
    let input = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(preflight::probe::gather(&HostRoot::default(), &settings));
    let results = preflight::check(&input);
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!("{}", r.line());
        }
    }
    Ok(preflight::failures(&results).len())
}

fn config(args: Args, host_name: String) -> anyhow::Result<agent::AgentConfig> {
    let metrics_deny_from = metrics_deny(
        &args.metrics_deny_from,
        &args.instance_subnet,
        args.cni_conf_dir.is_none() && !args.no_network,
    )?;
    Ok(agent::AgentConfig {
        metrics_deny_from,
        host_name,
        kubeconfig: args.kubeconfig,
        containerd_address: args.containerd_address,
        containerd_state_dir: args.containerd_state_dir,
        containerd_namespace: args.containerd_namespace,
        state_dir: args.state_dir,
        uid_range_pool: UidRangePool::parse(&args.uid_range_pool)
            .map_err(|e| anyhow::anyhow!("--uid-range-pool {}: {e}", args.uid_range_pool))?,
        lease_namespace: args.lease_namespace,
        allowed_registries: args
            .allowed_registries
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect(),
        lease: LeaseTiming {
            renew: std::time::Duration::from_secs(args.lease_renew_seconds),
            duration: std::time::Duration::from_secs(args.lease_duration_seconds),
        },
        runc: args.runc,
        register_unschedulable: args.register_unschedulable,
        restart_backoff_base: args.restart_backoff_seconds.max(1),
        deregistration: std::time::Duration::from_secs(args.deregistration_seconds),
        cni_bin_dir: args.cni_bin_dir,
        cni_conf_dir: args.cni_conf_dir,
        cni_root: args.cni_root,
        cni_bridge: args.cni_bridge,
        instance_subnet: args.instance_subnet,
        no_network: args.no_network,
        network_walls: !args.no_network_walls,
        service_proxies: args.service_proxy_address,
        metrics_address: args.metrics_address,
        isolation_floor: args.isolation_floor,
        log_max_bytes: args.log_max_bytes,
        image_gc: bulkhead_node_agent::image_gc::Settings {
            period: std::time::Duration::from_secs(args.image_gc_period_seconds),
            unused_after: std::time::Duration::from_secs(args.image_gc_unused_seconds),
            disk_path: args.image_gc_disk_path,
            high_percent: args.image_gc_high_percent,
            low_percent: args.image_gc_low_percent.min(args.image_gc_high_percent),
        },
    })
}

/// The networks kept off /metrics: `--metrics-deny-from` and the agent's instance subnet.
fn metrics_deny(
    extra: &[String],
    instance_subnet: &str,
    own_bridge: bool,
) -> anyhow::Result<Vec<bulkhead_telemetry::Network>> {
    extra
        .iter()
        .filter(|n| !n.is_empty())
        .map(String::as_str)
        .chain(own_bridge.then_some(instance_subnet))
        .map(|n| {
            n.parse()
                .map_err(|e| anyhow::anyhow!("--metrics-deny-from: {e}"))
        })
        .collect()
}

fn parse_level(s: &str) -> Result<IsolationLevel, String> {
    IsolationLevel::parse(s)
        .ok_or_else(|| format!("{s} is not one of strict, baseline, privileged"))
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn")
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
