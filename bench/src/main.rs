//! `bulkhead-bench`: runs the benchmarks against the local system `make up` starts and
//! writes `results.json` and `report.md` (see the library documentation).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use bulkhead_bench::{Run, cutover, fanout, machine, patched, report, start};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Bulkhead's benchmarks, side by side with their baselines")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the benchmarks and writes OUT/results.json and OUT/report.md.
    Run(RunArgs),
    /// Writes OUT/report.md again from OUT/results.json.
    Report {
        /// Output directory.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// The OCI hook of the `ctr run + CNI` start baseline: ADDs the local agent's CNI chain
    /// for the container in the OCI state on stdin (run by runc, not by hand).
    #[command(name = "cni-hook", hide = true)]
    CniHook {
        /// Configuration directory, plugin directory, work directory.
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Output directory.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Starts of each kind (agent, ctr run, ctr run + CNI, runc run).
    #[arg(long, default_value_t = 50)]
    starts: usize,
    /// Seconds of each idle window of the agent footprint.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Replica counts the fan-out Workload is scaled to, in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    steps: Vec<i32>,
    /// Simulated hosts of the fan-out.
    #[arg(long, default_value_t = 20)]
    hosts: usize,
    /// Longest one fan-out step (or the kcm baseline) may take, seconds.
    #[arg(long, default_value_t = 900)]
    step_timeout_seconds: u64,
    /// Skip the fan-out's baselines (raw create loops, kcm): for profiling the controller
    /// only; the goals then read "not measured".
    #[arg(long)]
    no_baselines: bool,
    /// Requests in flight in the raw create loops.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Blue/green rollouts of the cutover item.
    #[arg(long, default_value_t = 5)]
    cutover_rounds: usize,
    /// Direct EndpointSlice switches (the cutover's baseline) after each rollout.
    #[arg(long, default_value_t = 4)]
    cutover_direct: usize,
    /// Signed pushes under the followed tag timed by the patched-image item.
    #[arg(long, default_value_t = 5)]
    patched_rounds: usize,
    /// Which items to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "start,fanout,cutover,patched"
    )]
    only: Vec<String>,
    /// The local system's real host.
    #[arg(long, env = "BULKHEAD_HOST_NAME", default_value = "local-1")]
    host: String,
    /// Directory of the pinned kube-apiserver, kube-controller-manager and etcd (versions).
    #[arg(long, env = "BULKHEAD_BIN_DIR")]
    bin_dir: Option<String>,
    /// A note printed at the top of the report.
    #[arg(long, env = "BULKHEAD_BENCH_NOTE")]
    note: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Command::CniHook { args } = &args.command {
        // Lean: runc waits for it inside the measured start.
        let mut state = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut state)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(bulkhead_bench::cni::hook_main(args, &state));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.command {
        Command::Run(a) => rt.block_on(run(a)),
        Command::CniHook { .. } => Ok(()),
        Command::Report { out } => {
            let data = std::fs::read(out.join("results.json"))
                .with_context(|| format!("reading {}/results.json", out.display()))?;
            let run: Run = serde_json::from_slice(&data)?;
            write_report(&out, &run)
        }
    }
}

fn write_report(out: &std::path::Path, run: &Run) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(run)?)?;
    std::fs::write(out.join("report.md"), report::render(run))?;
    eprintln!("[bench] wrote {}/report.md and results.json", out.display());
    Ok(())
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let began = k8s_openapi::jiff::Timestamp::now().to_string();
    let state_dir = bulkhead_e2e::state_dir();
    let client = bulkhead_e2e::client().await;
    let image = bulkhead_e2e::agent::image("web:v1");
    let mut run = Run {
        began,
        machine: machine::describe(a.bin_dir.as_deref()).await,
        note: a.note.clone(),
        ..Run::empty(cutover::Outcome::NotMeasured {
            reason: "not selected".into(),
        })
    };
    let only = |item: &str| a.only.iter().any(|o| o == item);

    if only("start") {
        // In the runtime directory (up.sh makes it, and every directory down to it,
        // traversable by others; the state directory is 0700), so that the containers'
        // mapped root can reach the copied root filesystem; down.sh removes it.
        let runtime = state_dir.join("runtime");
        let work = std::fs::canonicalize(&runtime)
            .with_context(|| {
                format!(
                    "{} (the runtime directory up.sh makes) is missing: run e2e/hack/up.sh",
                    runtime.display()
                )
            })?
            .join("bench");
        std::fs::create_dir_all(&work)?;
        set_mode(&work)?;
        let cfg = start::Config {
            starts: a.starts,
            host: a.host.clone(),
            image: image.clone(),
            idle: Duration::from_secs(a.idle_seconds),
            work,
            state_dir: state_dir.clone(),
        };
        match start::run(&client, &cfg).await {
            Ok(r) => run.start = Some(r),
            Err(e) => {
                eprintln!("[bench] start latency failed: {e:#}");
                run.start_error = Some(format!("{e:#}"));
            }
        }
    }
    if only("fanout") {
        let cfg = fanout::Config {
            steps: a.steps.clone(),
            hosts: a.hosts,
            step_timeout: Duration::from_secs(a.step_timeout_seconds),
            concurrency: a.concurrency,
            image: image.clone(),
            real_host: a.host.clone(),
            state_dir: state_dir.clone(),
            baselines: !a.no_baselines,
        };
        match fanout::run(&client, &cfg).await {
            Ok(r) => run.fanout = Some(r),
            Err(e) => {
                eprintln!("[bench] fan-out failed: {e:#}");
                run.fanout_error = Some(format!("{e:#}"));
            }
        }
    }
    if only("cutover") {
        let cfg = cutover::Config {
            rounds: a.cutover_rounds,
            direct_per_round: a.cutover_direct,
            round_timeout: Duration::from_secs(180),
        };
        run.cutover = cutover::run(&cfg).await;
        if let cutover::Outcome::Failed { error } = &run.cutover {
            eprintln!("[bench] cutover failed: {error}");
        }
    }
    if only("patched") {
        let cfg = patched::Config {
            rounds: a.patched_rounds,
            timeout: Duration::from_secs(120 + 60 * a.patched_rounds as u64),
        };
        match patched::run(&cfg, &bulkhead_e2e::control_plane::repo_root()).await {
            Ok(r) => run.patched = Some(r),
            Err(e) => {
                eprintln!("[bench] patched images failed: {e:#}");
                run.patched_error = Some(format!("{e:#}"));
            }
        }
    }
    run.machine.load_after = machine::loadavg();
    run.wall_s = t0.elapsed().as_secs_f64();
    write_report(&a.out, &run)
}

/// rwx for the owner, r-x for the rest: the work directory must be readable by the
/// containers' mapped root.
fn set_mode(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
