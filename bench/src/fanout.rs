//! Item 2, fan-out: a controller benchmark.
//!
//! The real `bulkhead-controller` of the local system scales a Workload from 0 to N replicas
//! over *simulated* hosts: Host objects with a Ready status and a Lease renewed by this
//! process, and a lightweight fake agent that marks every Instance bound to them Running and
//! Ready with a podIP (what a real agent writes, see node-agent/src/host/lease.rs and
//! instance/status.rs) without starting anything. It writes each status as the agent of the
//! instance's host (the agent's ServiceAccount with that node name), so the API server
//! authorizes and admits it as an agent's: the chart's node restriction policy applies, as on
//! a real cluster. The local system's real host is cordoned for the duration (and restored),
//! so no real container starts. Measured: from the scale request to all bound, all Running,
//! and the Workload Available with N available replicas, with the controller's CPU seconds
//! and peak RSS (from /proc) over each step.
//!
//! Beside it on the same apiserver: kube-controller-manager's Deployment controller creating
//! N Pods (they stay Pending: there is no scheduler), at its default flags and given
//! `--kube-api-qps 500 --kube-api-burst 1000` ([`crate::kcm`]), each after a warm-up
//! Deployment of one, and a raw parallel create loop of N Instances and of N Pods (the
//! apiserver's write ceiling).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bulkhead_crds::{Host, Instance, Workload, conditions};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Namespace, Pod, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    kcm,
    procfs::{self, Usage},
};

/// The field manager of everything the simulation writes.
pub const FAKE_AGENT: &str = "bulkhead-bench-fake-agent";

/// The host the raw create loops bind their Instances to: no Host of that name exists, so no
/// agent or scheduler acts on them.
const RAW_HOST: &str = "bench-no-such-host";

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Replica counts, scaled to in order (e.g. 1000 then 10000).
    pub steps: Vec<i32>,
    /// Simulated hosts.
    pub hosts: usize,
    /// Longest a step may take before it is reported unfinished.
    pub step_timeout: Duration,
    /// Parallel requests of the raw create loop.
    pub concurrency: usize,
    /// The image in the templates (never pulled: nothing runs).
    pub image: String,
    /// The local system's real host, cordoned during the benchmark.
    pub real_host: String,
    /// The local system's state directory.
    pub state_dir: std::path::PathBuf,
    /// Whether to measure the raw create loops and kcm first (off only to profile the
    /// controller quickly; the report then says the baselines were not measured).
    pub baselines: bool,
}

/// Objects over time: (seconds since the request, count).
pub type Series = Vec<(f64, usize)>;

/// One scale step of the Workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// Replicas before.
    pub from: i32,
    /// Replicas asked for.
    pub to: i32,
    /// Seconds until every instance was bound to a host.
    pub all_bound_s: Option<f64>,
    /// Seconds until every instance was Running (as marked by the fake agent).
    pub all_running_s: Option<f64>,
    /// Seconds until the Workload was Available with `to` available replicas.
    pub available_s: Option<f64>,
    /// The step did not finish within its bound.
    pub timed_out: bool,
    /// Instances bound when the step ended.
    pub bound_at_end: usize,
    /// Instances Running when the step ended.
    pub running_at_end: usize,
    /// Available replicas the Workload reported when the step ended.
    pub available_at_end: i32,
    /// The controller's CPU and memory over the step.
    pub controller: Usage,
    /// Instances bound over time.
    pub bound: Series,
    /// Instances Running over time.
    pub running: Series,
}

/// A baseline that creates `n` objects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Creation {
    /// What created what.
    pub label: String,
    /// Objects.
    pub n: usize,
    /// Seconds until all existed.
    pub done_s: Option<f64>,
    /// Objects over time.
    pub series: Series,
    /// CPU and memory of the process doing the work (kube-controller-manager), if sampled.
    pub process: Option<Usage>,
}

/// Results of item 2.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Simulated hosts.
    pub hosts: usize,
    /// The controller binary measured.
    pub controller_exe: String,
    /// The Workload's steps.
    pub steps: Vec<Step>,
    /// kube-controller-manager's Deployment controller creating Pods (default flags).
    pub kcm: Option<Creation>,
    /// The same with `--kube-api-qps 500 --kube-api-burst 1000` ([`crate::kcm`]).
    #[serde(default)]
    pub kcm_tuned: Option<Creation>,
    /// Why `kcm_tuned` is missing, if it failed.
    #[serde(default)]
    pub kcm_tuned_error: Option<String>,
    /// Raw parallel creates of Instances.
    pub raw_instances: Option<Creation>,
    /// Raw parallel creates of Pods.
    pub raw_pods: Option<Creation>,
    /// Raw parallel creates of bound Instances, each followed by the Running status an agent
    /// applies: the floor of "all Running" for any controller and agent on this apiserver.
    #[serde(default)]
    pub raw_status: Option<Creation>,
    /// Parallel requests of the raw loops.
    pub concurrency: usize,
    /// Wall seconds the whole item took.
    pub wall_s: f64,
}

/// Runs item 2.
pub async fn run(client: &Client, cfg: &Config) -> anyhow::Result<Results> {
    let t_all = Instant::now();
    let first = cfg.steps.first().copied().unwrap_or(0).max(0) as usize;
    let controller = procfs::component_pid(&cfg.state_dir, "controller", "bulkhead-controller")?;
    let mut results = Results {
        hosts: cfg.hosts,
        controller_exe: procfs::exe_path(controller)?,
        concurrency: cfg.concurrency,
        ..Default::default()
    };
    let tag = std::process::id();

    if cfg.baselines {
        baselines(client, cfg, first, tag, &mut results).await?;
    } else {
        eprintln!("[bench] baselines skipped (--no-baselines)");
    }
    eprintln!(
        "[bench] bulkhead-controller over {} simulated hosts",
        cfg.hosts
    );
    let cordon = Cordon::apply(client, &cfg.real_host).await?;
    let sim = Simulation::start(client, cfg.hosts, tag).await;
    let steps = match &sim {
        Ok(sim) => {
            in_namespace(client, &format!("bench-fanout-{tag}"), |ns| {
                scale_steps(client.clone(), ns, sim, controller, cfg)
            })
            .await
        }
        Err(e) => Err(anyhow::anyhow!("starting the simulation: {e:#}")),
    };
    if let Ok(sim) = sim {
        sim.stop(client).await;
    }
    cordon.restore(client).await;
    results.steps = steps?;
    results.wall_s = t_all.elapsed().as_secs_f64();
    Ok(results)
}

/// The raw create loops and both kcm Deployments, each in its own namespace, for `first`
/// objects.
async fn baselines(
    client: &Client,
    cfg: &Config,
    first: usize,
    tag: u32,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!(
        "[bench] raw create loop: {first} Instances, {} in parallel",
        cfg.concurrency
    );
    results.raw_instances = Some(
        in_namespace(client, &format!("bench-raw-inst-{tag}"), |ns| {
            raw_instances(client.clone(), ns, first, cfg, false)
        })
        .await?,
    );
    eprintln!(
        "[bench] raw create + status loop: {first} Instances, {} in parallel",
        cfg.concurrency
    );
    results.raw_status = Some(
        in_namespace(client, &format!("bench-raw-status-{tag}"), |ns| {
            raw_instances(client.clone(), ns, first, cfg, true)
        })
        .await?,
    );
    eprintln!(
        "[bench] raw create loop: {first} Pods, {} in parallel",
        cfg.concurrency
    );
    results.raw_pods = Some(
        in_namespace(client, &format!("bench-raw-pod-{tag}"), |ns| {
            raw_pods(client.clone(), ns, first, cfg)
        })
        .await?,
    );
    eprintln!("[bench] kube-controller-manager: a Deployment of {first} replicas");
    let local_kcm = || {
        procfs::component_pid(
            &cfg.state_dir,
            "kube-controller-manager",
            "kube-controller-manager",
        )
    };
    results.kcm = Some(
        in_namespace(client, &format!("bench-kcm-{tag}"), |ns| {
            let label = "kube-controller-manager Deployment → ReplicaSet → Pods (default flags)";
            deployment(client.clone(), ns, first, cfg, local_kcm(), label)
        })
        .await?,
    );
    eprintln!(
        "[bench] kube-controller-manager with --kube-api-qps {} --kube-api-burst {}: a Deployment of {first} replicas",
        kcm::QPS,
        kcm::BURST
    );
    let tuned = in_namespace(client, &format!("bench-kcm-tuned-{tag}"), |ns| {
        kcm::with_tuned(&cfg.state_dir, |pid| {
            let label = format!(
                "kube-controller-manager Deployment → ReplicaSet → Pods (--kube-api-qps {} --kube-api-burst {})",
                kcm::QPS,
                kcm::BURST
            );
            deployment(client.clone(), ns, first, cfg, Ok(pid), label)
        })
    })
    .await;
    match tuned {
        Ok(c) => results.kcm_tuned = Some(c),
        Err(e) => {
            eprintln!("[bench] the tuned kube-controller-manager baseline failed: {e:#}");
            results.kcm_tuned_error = Some(format!("{e:#}"));
        }
    }

    Ok(())
}

/// Runs `body` in a fresh namespace, then deletes the namespace (first, so that no
/// controller creates anything more in it) and every Instance and Pod in it, and waits
/// (bounded) until it is gone.
async fn in_namespace<T, F, Fut>(client: &Client, name: &str, body: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("bulkhead.dev/bench".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let out = body(name.to_string()).await;
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
    let all = ListParams::default();
    let _ = Api::<Instance>::namespaced(client.clone(), name)
        .delete_collection(&DeleteParams::background(), &all)
        .await;
    let _ = Api::<Pod>::namespaced(client.clone(), name)
        .delete_collection(&DeleteParams::background(), &all)
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while namespaces.get_opt(name).await.ok().flatten().is_some() {
        if Instant::now() > deadline {
            eprintln!("[bench] warning: namespace {name} still exists 300 s after deletion");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}

/// Creates `n` objects with `concurrency` requests in flight; the series is each creation's
/// completion.
async fn create_parallel<F, Fut>(
    n: usize,
    concurrency: usize,
    create: F,
) -> anyhow::Result<(f64, Series)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let t0 = Instant::now();
    let mut done: Vec<f64> = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let f = create(i);
            async move { f.await.map(|()| t0.elapsed().as_secs_f64()) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = stream.next().await {
        done.push(r?);
    }
    let wall = t0.elapsed().as_secs_f64();
    done.sort_by(f64::total_cmp);
    Ok((
        wall,
        thin(done.iter().enumerate().map(|(i, t)| (*t, i + 1))),
    ))
}

/// Keeps a series short enough to chart: at most ~400 points, always the last.
fn thin(points: impl Iterator<Item = (f64, usize)>) -> Series {
    let all: Series = points.collect();
    let step = (all.len() / 400).max(1);
    let mut out: Series = all.iter().step_by(step).copied().collect();
    if let (Some(last), Some(kept)) = (all.last(), out.last())
        && last != kept
    {
        out.push(*last);
    }
    out
}

/// N creates of bound Instances; with `running`, each is then marked Running as the fake
/// agent marks them (the same status, applied the same way) and the series is each status
/// write's completion.
async fn raw_instances(
    client: Client,
    ns: String,
    n: usize,
    cfg: &Config,
    running: bool,
) -> anyhow::Result<Creation> {
    let api: Api<Instance> = Api::namespaced(client, &ns);
    // Bound to a host that does not exist: no agent or scheduler acts on them. Their status
    // is written as that host's agent would write it, as the fake agent does.
    let agent: Api<Instance> =
        Api::namespaced(bulkhead_e2e::chart::agent_client(RAW_HOST).await?, &ns);
    let (wall, series) = create_parallel(n, cfg.concurrency, |i| {
        let api = api.clone();
        let agent = agent.clone();
        let name = format!("raw-{i}");
        let inst = bulkhead_e2e::fixtures::instance(&name)
            .on(RAW_HOST)
            .image(&cfg.image)
            .build();
        async move {
            api.create(&PostParams::default(), &inst).await?;
            if running {
                mark_running(agent, name, i).await;
            }
            Ok(())
        }
    })
    .await?;
    let what = if running {
        "raw create + Running status loop"
    } else {
        "raw create loop"
    };
    Ok(Creation {
        label: format!("{what}, Instances ({} in parallel)", cfg.concurrency),
        n,
        done_s: Some(wall),
        series,
        process: None,
    })
}

fn pod(name: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }))?)
}

/// Waits (≤ 60 s) for the namespace's default ServiceAccount, which Pod admission needs.
async fn wait_service_account(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("no default ServiceAccount in {ns} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn raw_pods(client: Client, ns: String, n: usize, cfg: &Config) -> anyhow::Result<Creation> {
    wait_service_account(&client, &ns).await?;
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let (wall, series) = create_parallel(n, cfg.concurrency, |i| {
        let api = api.clone();
        let p = pod(&format!("raw-{i}"), &cfg.image);
        async move {
            api.create(&PostParams::default(), &p?).await?;
            Ok(())
        }
    })
    .await?;
    Ok(Creation {
        label: format!("raw create loop, Pods ({} in parallel)", cfg.concurrency),
        n,
        done_s: Some(wall),
        series,
        process: None,
    })
}

/// First-seen times of objects in a namespace, from a watch.
type FirstSeen = Arc<Mutex<HashMap<String, f64>>>;

fn count(seen: &FirstSeen) -> usize {
    seen.lock().map(|m| m.len()).unwrap_or(0)
}

/// The first-seen times as a series relative to `offset` seconds after the watch began.
fn series_of(seen: &FirstSeen, offset: f64) -> Series {
    let mut times: Vec<f64> = seen
        .lock()
        .map(|m| m.values().map(|t| t - offset).collect())
        .unwrap_or_default();
    times.sort_by(f64::total_cmp);
    thin(times.iter().enumerate().map(|(i, t)| (*t, i + 1)))
}

/// A Deployment of `n` replicas (label app=bench) after a warm-up Deployment of one, both
/// in `ns`: kube-controller-manager (PID `kcm`, sampled) creates their Pods. Measured from
/// the create request until the watch has seen all `n` Pods.
async fn deployment(
    client: Client,
    ns: String,
    n: usize,
    cfg: &Config,
    kcm: anyhow::Result<u32>,
    label: impl Into<String>,
) -> anyhow::Result<Creation> {
    wait_service_account(&client, &ns).await?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    warm_up(&client, &deployments, &ns, &cfg.image).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let seen: FirstSeen = Arc::default();
    let origin = Instant::now();
    let watch = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let only_bench = watcher::Config::default().labels("app=bench");
            let stream = watcher(pods, only_bench).applied_objects();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                if let (Ok(p), Ok(mut m)) = (ev, seen.lock()) {
                    m.entry(p.name_any())
                        .or_insert_with(|| origin.elapsed().as_secs_f64());
                }
            }
        })
    };
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "web", "image": cfg.image}]},
            },
        },
    }))?;
    let kcm = kcm.and_then(|pid| procfs::Sampler::start(pid, Duration::from_millis(500)));
    let t0 = Instant::now();
    let created = deployments.create(&PostParams::default(), &d).await;
    let mut done_s = None;
    if created.is_ok() {
        while t0.elapsed() < cfg.step_timeout {
            if count(&seen) >= n {
                done_s = Some(t0.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    watch.abort();
    let process = match kcm {
        Ok(s) => Some(s.finish().await?),
        Err(e) => {
            eprintln!("[bench] not sampling kube-controller-manager: {e:#}");
            None
        }
    };
    created?;
    Ok(Creation {
        label: label.into(),
        n,
        done_s,
        series: series_of(&seen, t0.duration_since(origin).as_secs_f64()),
        process,
    })
}

/// A Deployment of one replica (label app=bench-warm), until its Pod exists (≤ 60 s): the
/// kube-controller-manager is then known to act (a fresh one has synced its caches), so the
/// measured Deployment times its work, not its start.
async fn warm_up(
    client: &Client,
    deployments: &Api<Deployment>,
    ns: &str,
    image: &str,
) -> anyhow::Result<()> {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "warm-up"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "bench-warm"}},
            "template": {
                "metadata": {"labels": {"app": "bench-warm"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let warm = ListParams::default().labels("app=bench-warm");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.list(&warm).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "kube-controller-manager made no Pod for the warm-up Deployment in {ns} within 60 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Cordons the real host and remembers what to restore.
#[derive(Debug)]
struct Cordon {
    host: String,
    was: Option<bool>,
}

/// Marks a cordon the benchmark made, so that a run killed before it restored the host is
/// recognised (and undone) by the next run rather than kept as the host's own setting.
const CORDONED_BY_BENCH: &str = "bench.bulkhead.dev/cordoned";

impl Cordon {
    async fn apply(client: &Client, host: &str) -> anyhow::Result<Self> {
        let api: Api<Host> = Api::all(client.clone());
        let was = api.get_opt(host).await?.map(|h| {
            let ours = h.annotations().contains_key(CORDONED_BY_BENCH);
            h.spec.unschedulable && !ours
        });
        if was == Some(false) {
            api.patch(
                host,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"annotations": {CORDONED_BY_BENCH: "true"}},
                    "spec": {"unschedulable": true},
                })),
            )
            .await
            .with_context(|| format!("cordoning {host}"))?;
        }
        Ok(Self {
            host: host.into(),
            was,
        })
    }

    async fn restore(self, client: &Client) {
        if self.was == Some(false) {
            let api: Api<Host> = Api::all(client.clone());
            if let Err(e) = api
                .patch(
                    &self.host,
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"annotations": {CORDONED_BY_BENCH: null}},
                        "spec": {"unschedulable": false},
                    })),
                )
                .await
            {
                eprintln!("[bench] warning: could not uncordon {}: {e}", self.host);
            }
        }
    }
}

/// Simulated hosts whose Leases this process renews, and a client for each one's agent.
struct Simulation {
    hosts: Vec<String>,
    agents: HashMap<String, Client>,
    renew: tokio::task::JoinHandle<()>,
}

impl Simulation {
    async fn start(client: &Client, n: usize, tag: u32) -> anyhow::Result<Self> {
        let hosts: Vec<String> = (0..n).map(|i| format!("bench-sim-{tag}-{i}")).collect();
        let api: Api<Host> = Api::all(client.clone());
        // Those of a run killed before it stopped them (their Leases are owned by them).
        let _ = api
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels("bulkhead.dev/bench=simulated"),
            )
            .await;
        let apply = PatchParams::apply(FAKE_AGENT).force();
        let mut uids = Vec::new();
        for h in &hosts {
            let host = api
                .patch(
                    h,
                    &apply,
                    &Patch::Apply(json!({
                        "apiVersion": "bulkhead.dev/v1alpha1",
                        "kind": "Host",
                        "metadata": {"name": h, "labels": {
                            "bulkhead.dev/host": h,
                            "bulkhead.dev/bench": "simulated",
                        }},
                        "spec": {},
                    })),
                )
                .await
                .with_context(|| format!("creating simulated Host {h}"))?;
            let now = serde_json::to_value(Time(Timestamp::now()))?;
            api.patch_status(
                h,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "bulkhead.dev/v1alpha1",
                    "kind": "Host",
                    "status": {
                        "conditions": [{
                            "type": conditions::types::READY, "status": "True",
                            "reason": "Simulated", "lastTransitionTime": now,
                            "message": "simulated by bulkhead-bench (controller benchmark): nothing runs here",
                        }],
                        "capacity": {"cpuMillis": 1_000_000, "memoryBytes": 1_i64 << 42, "instances": 20_000},
                        "nodeInfo": {"kernelVersion": "simulated", "architecture": std::env::consts::ARCH},
                        "features": {
                            "cgroupVersion": 2, "cgroupControllers": ["cpu", "memory", "pids"],
                            "seccomp": true, "seccompActions": [], "selinux": "Disabled",
                            "apparmor": false, "userNamespaces": true, "idmappedMounts": false,
                        },
                        "allocations": {"instances": 0, "uidRanges": 0, "mcsPairs": 0},
                    },
                })),
            )
            .await
            .with_context(|| format!("writing the status of simulated Host {h}"))?;
            uids.push((h.clone(), host.uid().unwrap_or_default()));
        }
        renew_leases(client, &uids).await?;
        let mut agents = HashMap::new();
        for h in &hosts {
            agents.insert(h.clone(), bulkhead_e2e::chart::agent_client(h).await?);
        }
        let renew = {
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if let Err(e) = renew_leases(&client, &uids).await {
                        eprintln!("[bench] renewing simulated Leases: {e:#}");
                    }
                }
            })
        };
        Ok(Self {
            hosts,
            agents,
            renew,
        })
    }

    async fn stop(self, client: &Client) {
        self.renew.abort();
        let hosts: Api<Host> = Api::all(client.clone());
        let leases: Api<Lease> = Api::namespaced(client.clone(), bulkhead_crds::SYSTEM_NAMESPACE);
        for h in &self.hosts {
            let _ = hosts.delete(h, &DeleteParams::background()).await;
            let _ = leases.delete(h, &DeleteParams::background()).await;
        }
    }
}

/// Renews each simulated host's Lease (40 s), owned by its Host, as an agent does.
async fn renew_leases(client: &Client, hosts: &[(String, String)]) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), bulkhead_crds::SYSTEM_NAMESPACE);
    let apply = PatchParams::apply(FAKE_AGENT).force();
    for (name, uid) in hosts {
        let now = serde_json::to_value(MicroTime(Timestamp::now()))?;
        api.patch(
            name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "labels": {"bulkhead.dev/host": name},
                    "ownerReferences": [{
                        "apiVersion": Host::api_version(&()), "kind": Host::kind(&()),
                        "name": name, "uid": uid,
                    }],
                },
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            })),
        )
        .await
        .with_context(|| format!("renewing Lease {name}"))?;
    }
    Ok(())
}

/// What the fake agent has seen: first time bound, first time Running, and which
/// Instances it has already marked.
#[derive(Debug, Default)]
struct Tracker {
    bound: HashMap<String, f64>,
    running: HashMap<String, f64>,
    marked: HashSet<String>,
}

/// The fake agent: watches the namespace's Instances and, for each bound to a simulated
/// host, writes the status a real agent writes once the process runs (phase Running, Ready
/// condition, podIP, startedAt) as that host's agent, with up to 32 writes in flight.
fn fake_agent(
    client: Client,
    ns: &str,
    agents: HashMap<String, Client>,
    t0: Instant,
    tracker: Arc<Mutex<Tracker>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Instance> = Api::namespaced(client, ns);
    // Each status is written as the agent of the instance's host.
    let as_agent: HashMap<String, Api<Instance>> = agents
        .into_iter()
        .map(|(host, c)| (host, Api::namespaced(c, ns)))
        .collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, Api<Instance>)>();
    let writer = tokio::spawn(async move {
        let names =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        names
            .enumerate()
            .map(|(i, (name, api))| mark_running(api, name, i))
            .buffer_unordered(32)
            .for_each(|_| async {})
            .await;
    });
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let Ok(inst) = ev else { continue };
            let Some(agent) = inst.spec.host_name.as_ref().and_then(|h| as_agent.get(h)) else {
                continue;
            };
            let name = inst.name_any();
            let t = t0.elapsed().as_secs_f64();
            let running = inst.status.as_ref().is_some_and(|s| {
                s.phase == Some(bulkhead_crds::InstancePhase::Running)
                    && conditions::is_true(&s.conditions, conditions::types::READY)
            });
            let Ok(mut tr) = tracker.lock() else { break };
            tr.bound.entry(name.clone()).or_insert(t);
            if running {
                tr.running.entry(name).or_insert(t);
            } else if tr.marked.insert(name.clone()) {
                let _ = tx.send((name, agent.clone()));
            }
        }
        writer.abort();
    })
}

/// Writes one Instance's Running status (retried a few times on errors).
async fn mark_running(api: Api<Instance>, name: String, i: usize) {
    let ip = format!("10.89.{}.{}", 200 + (i / 250) % 50, 1 + i % 250);
    for attempt in 0..5 {
        let now = match serde_json::to_value(Time(Timestamp::now())) {
            Ok(v) => v,
            Err(_) => return,
        };
        let body = json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "Instance",
            "status": {
                "phase": "Running",
                "podIP": ip,
                "containerID": format!("simulated-{name}"),
                "startedAt": now,
                "restartCount": 0,
                "conditions": [{
                    "type": conditions::types::READY, "status": "True", "reason": "Running",
                    "message": "simulated by bulkhead-bench's fake agent (controller benchmark)",
                    "lastTransitionTime": now,
                }],
            },
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(FAKE_AGENT).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) if attempt == 4 => eprintln!("[bench] fake agent: marking {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn scale_steps(
    client: Client,
    ns: String,
    sim: &Simulation,
    controller: u32,
    cfg: &Config,
) -> anyhow::Result<Vec<Step>> {
    let workloads: Api<Workload> = Api::namespaced(client.clone(), &ns);
    let wl: Workload = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "fanout"},
        "spec": {
            "owner": "bulkhead-bench",
            "replicas": 0,
            "template": {"image": cfg.image, "terminationGracePeriodSeconds": 2},
        },
    }))?;
    workloads.create(&PostParams::default(), &wl).await?;
    let tracker: Arc<Mutex<Tracker>> = Arc::default();
    let t_watch = Instant::now();
    let agent = fake_agent(
        client.clone(),
        &ns,
        sim.agents.clone(),
        t_watch,
        tracker.clone(),
    );
    let mut steps = Vec::new();
    let mut from = 0;
    let outcome = async {
        for &to in &cfg.steps {
            eprintln!("[bench]   scaling {from} → {to}");
            let step = scale(&workloads, controller, &tracker, t_watch, from, to, cfg).await?;
            let timed_out = step.timed_out;
            steps.push(step);
            if timed_out {
                eprintln!(
                    "[bench]   step {from} → {to} did not finish within {:?}; stopping",
                    cfg.step_timeout
                );
                break;
            }
            from = to;
        }
        anyhow::Ok(())
    }
    .await;
    agent.abort();
    outcome?;
    Ok(steps)
}

async fn scale(
    workloads: &Api<Workload>,
    controller: u32,
    tracker: &Arc<Mutex<Tracker>>,
    t_watch: Instant,
    from: i32,
    to: i32,
    cfg: &Config,
) -> anyhow::Result<Step> {
    let target = to as usize;
    let mut step = Step {
        from,
        to,
        ..Default::default()
    };
    let sampler = procfs::Sampler::start(controller, Duration::from_millis(500))?;
    let t0 = Instant::now();
    let offset = t0.duration_since(t_watch).as_secs_f64();
    let patched = workloads
        .patch(
            "fanout",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": to}})),
        )
        .await?;
    let generation = patched.metadata.generation.unwrap_or(0);
    loop {
        let (bound, running) = tracker
            .lock()
            .map(|t| (t.bound.len(), t.running.len()))
            .unwrap_or_default();
        let elapsed = t0.elapsed().as_secs_f64();
        if step.all_bound_s.is_none() && bound >= target {
            step.all_bound_s = Some(elapsed);
        }
        if step.all_running_s.is_none() && running >= target {
            step.all_running_s = Some(elapsed);
        }
        step.bound_at_end = bound;
        step.running_at_end = running;
        let wl = workloads.get("fanout").await?;
        step.available_at_end = wl.status.as_ref().map_or(0, |s| s.available_replicas);
        let available = wl.status.as_ref().is_some_and(|s| {
            s.observed_generation.unwrap_or(0) >= generation
                && s.available_replicas >= to
                && conditions::is_true(&s.conditions, conditions::types::AVAILABLE)
        });
        if available {
            step.available_s = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if t0.elapsed() > cfg.step_timeout {
            step.timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step.controller = sampler.finish().await?;
    if let Ok(t) = tracker.lock() {
        let since = |m: &HashMap<String, f64>| {
            let mut v: Vec<f64> = m
                .values()
                .map(|t| t - offset)
                .filter(|t| *t >= 0.0)
                .collect();
            v.sort_by(f64::total_cmp);
            let before = m.len() - v.len();
            thin(v.iter().enumerate().map(|(i, t)| (*t, before + i + 1)))
        };
        step.bound = since(&t.bound);
        step.running = since(&t.running);
    }
    Ok(step)
}
