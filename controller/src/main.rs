use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use bulkhead_controller::{
    Context, cache, hosts, image_updates, leader, metrics::Metrics, placement::Placement,
    scheduler, service, workload,
};
use bulkhead_crds::{Host, SeccompProfile, Workload};
use clap::Parser;
use futures::StreamExt;
use kube::{
    Api, Client, Config,
    runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher},
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
    /// Seconds a host may stay silent after its Lease expired before its instances are
    /// marked Lost and replaced elsewhere.
    #[arg(long, env = "BULKHEAD_HOST_LOST_GRACE_SECONDS", default_value_t = 30)]
    host_lost_grace_seconds: u64,
    /// Registries (host[:port]) the controller may ask about followed tags
    /// (spec.imageUpdates); empty allows any. Comma-separated.
    #[arg(long, env = "BULKHEAD_ALLOWED_REGISTRIES", value_delimiter = ',')]
    allowed_registries: Vec<String>,
    /// Address for the registry's push notifications (POST /registry/notifications); off
    /// when unset. Needs --registry-notifications-token-file.
    #[arg(long, env = "BULKHEAD_REGISTRY_NOTIFICATIONS_ADDRESS")]
    registry_notifications_address: Option<String>,
    /// File holding the token the registry presents (Authorization: Bearer <token>).
    #[arg(long, env = "BULKHEAD_REGISTRY_NOTIFICATIONS_TOKEN_FILE")]
    registry_notifications_token_file: Option<PathBuf>,
}

/// jemalloc returns freed memory to the kernel after a few seconds (its background thread
/// purges); glibc's malloc kept the peak of a 10000-instance fan-out, and of every Instance
/// that came and went before it, for the process's life.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let endpoint = Arc::new(Endpoint {
        metrics: metrics.clone(),
        leading: leading.clone(),
    });
    tokio::spawn(bulkhead_telemetry::serve(
        args.metrics_address.clone(),
        endpoint,
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
    let (hosts, host_writer) = reflector::store();
    let (hosts_told, hosts_ready) = cache::Ready::channel();
    let caches = cache::start(&client);
    let (switched, switches) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics,
        recorder,
        placement: Placement::new(
            (hosts, hosts_ready),
            caches.leases,
            (caches.instances, caches.instances_ready),
        ),
        expectations: Default::default(),
        image_updates: bulkhead_controller::image_updates::ImageUpdates::new(
            args.allowed_registries.clone(),
        ),
        history: Default::default(),
        replacements: std::sync::Mutex::new(bulkhead_telemetry::backoff::Backoff::new(
            bulkhead_controller::REPLACE_FIRST,
            bulkhead_controller::REPLACE_MAX,
        )),
        services: caches.services.clone(),
        switchboard: Default::default(),
        create_refusals: Default::default(),
        status_writes: Default::default(),
        switched,
    });
    let workloads = Controller::new(
        Api::<Workload>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_shared_stream(caches.for_workloads)
    // A Service that followed a switch lets the old revision retire.
    .watches_shared_stream(caches.services_for_workloads, |s| {
        Some(
            reflector::ObjectRef::new(&s.spec.workload_name)
                .within(&kube::ResourceExt::namespace(s.as_ref())?),
        )
    });
    // Draining a host (or undraining it) revisits every Workload: its instances there are
    // replaced. Host status updates (every Lease renewal) do not trigger anything.
    let drains = reflector::reflector(
        host_writer,
        watcher(Api::<Host>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .inspect(cache::tell_on_init(hosts_told))
    .applied_objects()
    .predicate_filter(
        |h: &Host| Some(u64::from(workload::reconcile::is_draining(h))),
        Default::default(),
    )
    .filter_map(|h| futures::future::ready(h.ok().map(|_| ())));
    // A push the registry announces to a followed repository: look at the tag at once.
    let pushes = push_notifications(&args, workloads.store(), ctx.clone()).await?;
    // A changed SeccompProfile is a new revision of every Workload that names it.
    let store = workloads.store();
    let workloads = workloads
        .reconcile_all_on(drains)
        .reconcile_on(pushes)
        .watches(Api::<SeccompProfile>::all(client.clone()), watcher::Config::default(), move |p| {
            workload::seccomp::workloads_using(&store, &p)
        })
        .shutdown_on_signal()
        .run(workload::reconcile::reconcile, |wl, e, _| {
            warn!(workload = %kube::ResourceExt::name_any(wl.as_ref()), error = %e, "reconcile failed; retrying");
            Action::requeue(std::time::Duration::from_secs(5))
        }, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let profiles = Controller::new(
        Api::<SeccompProfile>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(workload::seccomp::report, |p, e, _| {
        warn!(profile = %kube::ResourceExt::name_any(p.as_ref()), error = %e, "writing the profile status failed; retrying");
        Action::requeue(std::time::Duration::from_secs(5))
    }, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = workloads => info!("workload controller stopped"),
        _ = profiles => info!("seccomp profile status writer stopped"),
        _ = scheduler::run(ctx.clone(), caches.for_scheduler) => info!("scheduler stopped"),
        _ = service::run(ctx.clone(), caches.services.store(), caches.services_for_services, caches.for_services, switches) => info!("service controller stopped"),
        _ = hosts::run(ctx.clone(), std::time::Duration::from_secs(args.host_lost_grace_seconds)) => info!("host lifecycle stopped"),
        _ = elector.hold() => {
            error!("lost leadership; exiting so that only one controller acts");
            std::process::exit(1);
        }
    }
    Ok(())
}

/// Serves the registry's push notifications (when configured) and returns the Workloads to
/// reconcile at once: those following a pushed repository.
async fn push_notifications(
    args: &Args,
    store: reflector::Store<Workload>,
    ctx: Arc<Context>,
) -> anyhow::Result<futures::channel::mpsc::UnboundedReceiver<reflector::ObjectRef<Workload>>> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let Some(address) = &args.registry_notifications_address else {
        return Ok(rx);
    };
    let path = args
        .registry_notifications_token_file
        .as_ref()
        .context("--registry-notifications-address needs --registry-notifications-token-file")?;
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the notification token {}", path.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the notification token file {} is empty; put a random token in it",
        path.display()
    );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the registry notification endpoint to {address}"))?;
    let on_push = move |repos: &[String]| {
        let state = store.state();
        let mut matched = 0;
        for repo in repos {
            for wl in image_updates::following(state.iter().map(|w| w.as_ref()), repo) {
                // docker-registry announces a manifest push before it moves the tag, so the
                // tag is looked at now and once more a moment later.
                let (key, obj) = (image_updates::key(wl), reflector::ObjectRef::from_obj(wl));
                ctx.image_updates.pushes.mark(key.clone());
                let _ = tx.unbounded_send(obj.clone());
                let (ctx, tx) = (ctx.clone(), tx.clone());
                tokio::spawn(async move {
                    for after in image_updates::notify::LOOK_AGAIN_AFTER {
                        tokio::time::sleep(after).await;
                        ctx.image_updates.pushes.mark(key.clone());
                        let _ = tx.unbounded_send(obj.clone());
                    }
                });
                matched += 1;
            }
        }
        matched
    };
    info!(%address, "serving registry push notifications");
    tokio::spawn(image_updates::notify::serve(
        listener,
        token,
        Arc::new(on_push),
    ));
    Ok(rx)
}

/// /metrics, /healthz and /readyz (ready once leading).
struct Endpoint {
    metrics: Arc<Metrics>,
    leading: Arc<std::sync::atomic::AtomicBool>,
}

impl bulkhead_telemetry::Endpoint for Endpoint {
    fn metrics(&self) -> String {
        self.metrics.render()
    }
    fn ready(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }
}
