use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use bulkhead_controller::{Context, leader, metrics::Metrics, scheduler, workload};
use bulkhead_crds::{Instance, Workload};
use clap::Parser;
use futures::StreamExt;
use kube::{
    Api, Client, Config,
    runtime::{Controller, controller::Action, watcher},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::{error, info, warn};

/// Schedules Bulkhead instances onto hosts, keeps replicas and replaces them safely.
#[derive(Parser, Debug)]
#[command(name = "bulkhead-controller", version = bulkhead_controller::VERSION)]
struct Args {
    /// Kubeconfig to use; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "BULKHEAD_LEADER_NAMESPACE", default_value = bulkhead_crds::SYSTEM_NAMESPACE)]
    leader_election_namespace: String,
    /// This replica's identity in leader election; host name and PID by default.
    #[arg(long, env = "BULKHEAD_IDENTITY")]
    identity: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "BULKHEAD_METRICS_ADDRESS",
        default_value = "127.0.0.1:9464"
    )]
    metrics_address: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => Config::incluster().context("no --kubeconfig and not running in a cluster")?,
    };
    let client = Client::try_from(config)?;
    let metrics = Arc::new(Metrics::default());
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(serve(
        args.metrics_address.clone(),
        metrics.clone(),
        leading.clone(),
    ));

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id()));
    let elector = leader::Elector::new(
        client.clone(),
        &args.leader_election_namespace,
        "bulkhead-controller",
        &identity,
        leader::Timing::default(),
    );
    elector.acquire().await;
    leading.store(true, std::sync::atomic::Ordering::SeqCst);

    let reporter = kube::runtime::events::Reporter {
        controller: "bulkhead-controller".into(),
        instance: Some(identity.clone()),
    };
    let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics,
        recorder,
    });
    let workloads = Controller::new(Api::<Workload>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Instance>::all(client.clone()), watcher::Config::default())
        .shutdown_on_signal()
        .run(workload::reconcile::reconcile, |wl, e, _| {
            warn!(workload = %kube::ResourceExt::name_any(wl.as_ref()), error = %e, "reconcile failed; retrying");
            Action::requeue(std::time::Duration::from_secs(5))
        }, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = workloads => info!("workload controller stopped"),
        _ = scheduler::run(ctx) => info!("scheduler stopped"),
        _ = elector.hold() => {
            error!("lost leadership; exiting so that only one controller acts");
            std::process::exit(1);
        }
    }
    Ok(())
}

/// /metrics, /healthz and /readyz (ready once leading).
async fn serve(
    address: String,
    metrics: Arc<Metrics>,
    leading: Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = match TcpListener::bind(&address).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%address, error = %e, "cannot serve metrics");
            return;
        }
    };
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let leading = leading.clone();
        tokio::spawn(async move {
            // Read the request head (a client may send it in several segments).
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz" if leading.load(std::sync::atomic::Ordering::SeqCst) => {
                    ("200 OK", "ok\n".to_string())
                }
                "/readyz" => ("503 Service Unavailable", "not leading\n".to_string()),
                _ => ("404 Not Found", String::new()),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
