//! Wiring: connect to the API and containerd, register the Host, rebuild state, and run
//! the Lease loop, the housekeeping loop and the Instance controller.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use bulkhead_crds::host::{HostAllocations, HostStatus};
use futures::channel::mpsc;
use kube::{Client, Config};
use tracing::{info, warn};

use crate::{
    host::{
        detect::{self, HostRoot},
        lease::{self, LeaseTiming},
    },
    image::Registry,
    instance::{self, Allocations, Context, sweep},
    isolation::{mcs::McsAllocator, userns::UidRangePool},
    runtime::containerd::Containerd,
};

/// The agent's configuration (flags and environment, see main.rs).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's name.
    pub host_name: String,
    /// A kubeconfig; in-cluster configuration when None.
    pub kubeconfig: Option<PathBuf>,
    /// containerd's socket.
    pub containerd_address: PathBuf,
    /// containerd's state directory (runc mounts each container's root from under it).
    pub containerd_state_dir: PathBuf,
    /// containerd namespace of the agent's objects.
    pub containerd_namespace: String,
    /// Where logs and state live.
    pub state_dir: PathBuf,
    /// Host UID ranges to hand out.
    pub uid_range_pool: UidRangePool,
    /// Namespace of the Host Leases.
    pub lease_namespace: String,
    /// Registries images may come from; empty allows all.
    pub allowed_registries: Vec<String>,
    /// Lease timing.
    pub lease: LeaseTiming,
    /// The runc binary (for its version).
    pub runc: PathBuf,
    /// Register the Host cordoned.
    pub register_unschedulable: bool,
    /// First restart back-off in seconds.
    pub restart_backoff_base: i32,
    /// How long a Ready instance being deleted keeps serving before SIGTERM.
    pub deregistration: std::time::Duration,
    /// CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// A node's own CNI configuration directory; the agent's own bridge network when None.
    pub cni_conf_dir: Option<PathBuf>,
    /// The root the CNI plugins run in (chroot), the agent's own when None.
    pub cni_root: Option<PathBuf>,
    /// The agent's bridge.
    pub cni_bridge: String,
    /// The agent's instance subnet.
    pub instance_subnet: String,
    /// Run instances without a network.
    pub no_network: bool,
    /// Wall instances on the agent's own bridge (`--no-network-walls` turns it off).
    pub network_walls: bool,
    /// Addresses of masquerading service proxies (kube-proxy in a network namespace of its
    /// own) that reach every instance like the host (`--service-proxy-address`).
    pub service_proxies: Vec<std::net::Ipv4Addr>,
    /// Address of /metrics and /healthz.
    pub metrics_address: String,
    /// Peers kept off /metrics and /healthz (the instance subnet among them).
    pub metrics_deny_from: Vec<bulkhead_telemetry::Network>,
    /// The weakest isolation level this host runs.
    pub isolation_floor: bulkhead_crds::policy::IsolationLevel,
    /// Cap of one instance log file.
    pub log_max_bytes: u64,
    /// When images are garbage-collected.
    pub image_gc: crate::image_gc::Settings,
}

impl AgentConfig {
    /// What preflight checks of this configuration.
    pub fn preflight_settings(&self) -> crate::preflight::probe::Settings {
        crate::preflight::probe::Settings {
            containerd_address: self.containerd_address.clone(),
            containerd_state_dir: self.containerd_state_dir.clone(),
            runc: self.runc.clone(),
            cni_bin_dir: self.cni_bin_dir.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bridge: self.cni_bridge.clone(),
            instance_subnet: self.instance_subnet.clone(),
            no_network: self.no_network,
            state_dir: self.state_dir.clone(),
            allowed_registries: self.allowed_registries.clone(),
            mapped_uid: self.uid_range_pool.first(),
            cni_root: self.cni_root.clone(),
        }
    }
}

/// Runs the preflight checks, logs each, and fails when a required one failed: a host that
/// cannot run instances is never registered.
async fn preflight(cfg: &AgentConfig) -> anyhow::Result<()> {
    use crate::preflight;
    let input = preflight::probe::gather(&HostRoot::default(), &cfg.preflight_settings()).await;
    let results = preflight::check(&input);
    for r in &results {
        match r.status() {
            "ok" => info!(check = r.name, detail = %r.detail, "preflight ok"),
            status => {
                warn!(check = r.name, status, detail = %r.detail, fix = r.fix.as_deref().unwrap_or(""), "preflight")
            }
        }
    }
    match preflight::refusal(&results) {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(()),
    }
}

/// /metrics and /healthz of the agent.
struct Endpoint(Arc<Context>);

impl bulkhead_telemetry::Endpoint for Endpoint {
    fn metrics(&self) -> String {
        let pools = self
            .0
            .allocations
            .lock()
            .map(|a| crate::metrics::Pools {
                uid_ranges: a.uids.in_use() as u64,
                uid_capacity: u64::from(a.uids.capacity()),
                mcs_pairs: a.mcs.in_use() as u64,
                mcs_capacity: u64::from(a.mcs.capacity()),
            })
            .unwrap_or_default();
        let mut text = self.0.metrics.render(pools);
        text.push_str(&crate::isolation::notify::render_metrics(&self.0.notifier));
        text
    }
}

/// CPU (millicores) and memory (bytes) the instances bound to this host reserve: every one
/// that is not finished or being deleted, by its template's resources, saturating at
/// `i64::MAX`.
async fn reserved(ctx: &Context) -> kube::Result<(i64, i64)> {
    use bulkhead_crds::{Instance, InstancePhase, quantity};
    let bound = kube::Api::<Instance>::all(ctx.client.clone())
        .list(&kube::api::ListParams::default().fields(&format!("spec.hostName={}", ctx.host)))
        .await?;
    Ok(bound
        .items
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            !matches!(
                i.status.as_ref().and_then(|s| s.phase),
                Some(InstancePhase::Failed | InstancePhase::Succeeded | InstancePhase::Lost)
            )
        })
        .map(|i| {
            // As the scheduler counts: the default memory when unset, everything for a
            // quantity too large for 64 bits.
            let r = &i.spec.template.resources;
            let cpu = r
                .cpu
                .as_deref()
                .map_or(0, |c| quantity::cpu_millis(c).unwrap_or(i64::MAX));
            let mem = quantity::memory_bytes(r.memory_or_default()).unwrap_or(i64::MAX);
            (cpu, mem)
        })
        // Saturating: instances bound by hand with huge quantities must not overflow the sum.
        .fold((0i64, 0i64), |(c, m), (dc, dm)| {
            (c.saturating_add(dc), m.saturating_add(dm))
        }))
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => Config::incluster().context("no --kubeconfig and not running in a cluster")?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    // 1. The host's checks and connections.
    preflight(&cfg).await?;
    let client = kube_client(cfg.kubeconfig.as_ref()).await?;
    let containerd =
        Containerd::connect(&cfg.containerd_address, &cfg.containerd_namespace).await?;
    let containerd_version = containerd.version().await.ok();
    std::fs::create_dir_all(cfg.state_dir.join("logs"))
        .with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    let log_writer = crate::logs::LogWriter {
        binary: crate::logs::install_writer(&cfg.state_dir).with_context(|| {
            format!(
                "installing the log writer under {}",
                cfg.state_dir.display()
            )
        })?,
        max_bytes: cfg.log_max_bytes,
    };
    let root = HostRoot::default();
    let report = HostReport {
        capacity: root.capacity(i64::from(cfg.uid_range_pool.capacity())),
        node_info: detect::node_info(&root, containerd_version, detect::runc_version(&cfg.runc)),
        features: root.features(),
        isolation_floor: cfg.isolation_floor,
    };
    info!(host = %cfg.host_name, kernel = %report.node_info.kernel_version, selinux = ?report.features.selinux, cgroup = report.features.cgroup_version, "host detected");

    // 2. The Host, alive from the start: start-up housekeeping (tearing down orphans, each
    //    with its grace period) can outlast a Lease, and a host must not look dead, its
    //    instances given up, while its agent is busy. Ready comes only after it.
    let host = lease::ensure_host(&client, &cfg.host_name, cfg.register_unschedulable)
        .await
        .context("registering the Host")?;
    lease::renew_lease(&client, &cfg.lease_namespace, &host, cfg.lease).await?;
    spawn_lease_renewal(client.clone(), cfg.clone(), host);

    // 3. The instance network and its walls.
    let (cni, walls) = network(&cfg, &client).await?;

    // 4. The shared context and the tasks beside the instances.
    let (wake_tx, wake_rx) = mpsc::unbounded();
    let (first_seen_tx, first_seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client: client.clone(),
        host: cfg.host_name.clone(),
        containerd,
        registry: Registry::new(cfg.allowed_registries.clone()),
        recent_tags: Default::default(),
        allocations: Mutex::new(Allocations {
            uids: cfg.uid_range_pool.clone(),
            mcs: McsAllocator::new(),
        }),
        features: report.features.clone(),
        isolation_floor: cfg.isolation_floor,
        state_dir: cfg.state_dir.clone(),
        log_writer,
        supervised: Mutex::new(HashSet::new()),
        wake: wake_tx,
        restart_backoff_base: cfg.restart_backoff_base,
        deregistration: cfg.deregistration,
        cni,
        walls,
        probing: Mutex::default(),
        node_root: cfg.cni_root.clone(),
        start_backoff: Mutex::new(crate::instance::backoff::start_backoff()),
        written: Default::default(),
        metrics: Arc::default(),
        notifier: crate::isolation::notify::Notifier::new(cfg.state_dir.join("sc"), first_seen_tx),
        recorder: crate::instance::record::recorder(client.clone(), &cfg.host_name),
    });
    spawn_recording_tasks(&ctx, first_seen_rx);
    tokio::spawn(bulkhead_telemetry::serve_with(
        cfg.metrics_address.clone(),
        Arc::new(Endpoint(ctx.clone())),
        bulkhead_telemetry::Limits {
            deny: cfg.metrics_deny_from.clone(),
            ..Default::default()
        },
    ));

    // 5. State rebuilt from the containers before anything new can start.
    let begun = std::time::Instant::now();
    let restored = sweep::rebuild_allocations(&ctx).await?;
    let rebuilt = begun.elapsed();
    sweep::clear_interrupted_work(&ctx).await?;
    let cleared = begun.elapsed();
    let removed = sweep::remove_orphans(&ctx).await?;
    info!(restored, removed, ?rebuilt, ?cleared, took = ?begun.elapsed(), "adopted running containers");

    // 6. The Host status, then housekeeping, then the instances.
    let reserved_now = reserved(&ctx).await.unwrap_or_default();
    lease::report_host_status(&client, &cfg.host_name, report.status(&ctx, reserved_now)).await?;
    spawn_host_status(ctx.clone(), cfg.clone(), report);
    tokio::spawn(crate::image_gc::run(ctx.clone(), cfg.image_gc.clone()));
    spawn_orphan_sweep(ctx.clone());
    instance::run(ctx, wake_rx).await;
    Ok(())
}

/// What the Host status reports besides the allocations.
struct HostReport {
    capacity: bulkhead_crds::host::HostCapacity,
    node_info: bulkhead_crds::host::NodeInfo,
    features: bulkhead_crds::host::HostFeatures,
    isolation_floor: bulkhead_crds::policy::IsolationLevel,
}

impl HostReport {
    /// The Host status with the allocations in use and the reserved CPU and memory.
    fn status(&self, ctx: &Context, (cpu_millis, memory_bytes): (i64, i64)) -> HostStatus {
        let (uids, mcs) = ctx
            .allocations
            .lock()
            .map(|a| (a.uids.in_use() as i64, a.mcs.in_use() as i64))
            .unwrap_or_default();
        HostStatus {
            capacity: Some(self.capacity.clone()),
            node_info: Some(self.node_info.clone()),
            features: Some(self.features.clone()),
            allocations: Some(HostAllocations {
                instances: mcs,
                uid_ranges: uids,
                mcs_pairs: mcs,
                cpu_millis,
                memory_bytes,
            }),
            isolation_floor: Some(self.isolation_floor),
            ..Default::default()
        }
    }
}

/// The instance network (the agent's bridge, a node's own CNI configuration, or none) and
/// the walls, synced once before any instance starts. Walls only on the agent's own bridge:
/// a node's own CNI configuration brings its own policy agent. Rules a previous agent left
/// stay until this sync replaces them at once.
async fn network(
    cfg: &AgentConfig,
    client: &Client,
) -> anyhow::Result<(
    Option<crate::network::Cni>,
    Option<Arc<crate::walls::Walls>>,
)> {
    if cfg.no_network {
        return Ok((None, None));
    }
    let cni = match &cfg.cni_conf_dir {
        Some(dir) => crate::network::Cni::from_conf_dir(&cfg.cni_bin_dir, dir, &cfg.state_dir)?,
        None => crate::network::Cni::bridge(
            &cfg.cni_bin_dir,
            &cfg.cni_bridge,
            &cfg.instance_subnet,
            &cfg.state_dir,
        ),
    }
    .with_root(cfg.cni_root.clone());
    if !cfg.network_walls || cfg.cni_conf_dir.is_some() {
        return Ok((Some(cni), None));
    }
    crate::walls::Walls::check_bridge_netfilter()?;
    let walls = crate::walls::Walls::start(
        client,
        &cfg.cni_bridge,
        &cfg.service_proxies,
        &cfg.state_dir,
        cfg.cni_root.clone(),
    );
    walls
        .sync(true)
        .await
        .context("applying the network walls")?;
    Ok((Some(cni), Some(walls)))
}

/// Renews the host's Lease every `cfg.lease.renew`.
fn spawn_lease_renewal(client: Client, cfg: AgentConfig, host: bulkhead_crds::Host) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.lease.renew);
        loop {
            tick.tick().await;
            if let Err(e) =
                lease::renew_lease(&client, &cfg.lease_namespace, &host, cfg.lease).await
            {
                warn!(error = %e, "renewing the host Lease failed");
            }
        }
    });
}

/// Recordings survive an agent restart: their counts are saved every few seconds; calls
/// seen for the first time are published.
fn spawn_recording_tasks(
    ctx: &Arc<Context>,
    first_seen: tokio::sync::mpsc::UnboundedReceiver<crate::isolation::notify::FirstSeen>,
) {
    let saver = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3));
        loop {
            tick.tick().await;
            saver.notifier.save();
        }
    });
    tokio::spawn(crate::instance::record::publish_first_seen(
        ctx.clone(),
        first_seen,
    ));
}

/// The Host status every `cfg.lease.renew`, like a kubelet's node status updates.
fn spawn_host_status(ctx: Arc<Context>, cfg: AgentConfig, report: HostReport) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.lease.renew);
        loop {
            tick.tick().await;
            let reserved_now = match reserved(&ctx).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "summing the instances' reservations failed");
                    continue;
                }
            };
            let status = report.status(&ctx, reserved_now);
            if let Err(e) = lease::report_host_status(&ctx.client, &cfg.host_name, status).await {
                warn!(error = %e, "reporting the Host status failed");
            }
        }
    });
}

/// Housekeeping every 30 s: containers whose Instance went away while no event reached us.
fn spawn_orphan_sweep(ctx: Arc<Context>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = sweep::remove_orphans(&ctx).await {
                warn!(error = %e, "orphan sweep failed");
            }
        }
    });
}
