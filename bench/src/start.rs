//! Item 1, start latency, and item 4, the agent's footprint.
//!
//! The real agent of the local system (host `local-1`) starts Instances bound to it (the
//! image already pulled by a warm-up instance); the time is from the create request to the
//! watch event that shows phase Running. Beside it, in the same loop (the order rotates each
//! round), the same start done by hand ([`crate::handstart`]): `ctr run` with the agent's
//! OCI spec, `ctr run` plus the agent's CNI chain, and `runc run`. The baselines use a copy
//! of the image's unpacked root filesystem instead of an overlay snapshot; the agent's
//! figure also includes its API round trips and the read-back of what the kernel enforces.
//!
//! The agent's RSS and CPU are sampled idle with no instances, and idle again with the
//! measured instances running.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bulkhead_crds::{Instance, InstancePhase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, Serialize};

use crate::{
    cmd::{Ctr, Runc},
    cni,
    handstart::{self, Baselines, Kind},
    procfs::{self, Usage},
    stats::Summary,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Starts of each kind.
    pub starts: usize,
    /// The host of the local system's agent.
    pub host: String,
    /// The image every start runs.
    pub image: String,
    /// Seconds of each idle footprint window.
    pub idle: Duration,
    /// Scratch directory (must be traversable by the containers' mapped root).
    pub work: PathBuf,
    /// The local system's state directory.
    pub state_dir: PathBuf,
}

/// Start latencies (milliseconds) and the agent's footprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Instance created → Running, through the agent.
    pub agent_ms: Vec<f64>,
    /// `ctr run -d` wall time.
    pub ctr_ms: Vec<f64>,
    /// `runc run -d` wall time.
    pub runc_ms: Vec<f64>,
    /// Network namespace + the agent's CNI ADD + `ctr run -d` in it, wall time.
    #[serde(default)]
    pub ctr_cni_ms: Vec<f64>,
    /// Summaries of the three.
    pub agent: Option<Summary>,
    /// Summary of `ctr run`.
    pub ctr: Option<Summary>,
    /// Summary of `runc run`.
    pub runc: Option<Summary>,
    /// Summary of `ctr run` plus the CNI chain.
    #[serde(default)]
    pub ctr_cni: Option<Summary>,
    /// The agent binary measured.
    pub agent_exe: String,
    /// The agent idle with no instances.
    pub footprint_empty: Option<Usage>,
    /// The agent idle with the measured instances running.
    pub footprint_loaded: Option<Usage>,
    /// Instances Running during the loaded window.
    pub loaded_instances: usize,
    /// containerd's own RSS during the loaded window (a reference, not the agent's).
    pub containerd_rss: Option<u64>,
    /// Wall seconds the whole item took.
    pub wall_s: f64,
}

/// First time the watch saw each Instance Running (or Failed, with its message).
type Seen = Arc<Mutex<HashMap<String, (Instant, Result<(), String>)>>>;

/// Runs items 1 and 4.
pub async fn run(client: &Client, cfg: &Config) -> anyhow::Result<Results> {
    let t_all = Instant::now();
    let agent_pid = procfs::component_pid(&cfg.state_dir, "node-agent", "bulkhead-node-agent")?;
    let containerd_pid = procfs::component_pid(&cfg.state_dir, "containerd", "containerd").ok();
    let mut results = Results {
        agent_exe: procfs::exe_path(agent_pid)?,
        ..Default::default()
    };
    let mut b = Baselines {
        ctr: Ctr {
            address: cfg.state_dir.join("containerd/containerd.sock"),
            namespace: "bulkhead".into(),
        },
        runc: Runc {
            root: cfg.work.join("runc-root"),
        },
        cni: cni::Baseline::new(&handstart::agent_network(agent_pid)?, &cfg.work)?,
        ctr_ids: Vec::new(),
        runc_ids: Vec::new(),
        spec: serde_json::Value::Null,
    };
    let ns = format!("bench-start-{}", std::process::id());
    create_namespace(client, &ns).await?;
    let api: Api<Instance> = Api::namespaced(client.clone(), &ns);
    let seen: Seen = Arc::default();
    let watch = tokio::spawn(watch_running(api.clone(), seen.clone()));

    let outcome = async {
        eprintln!("[bench] agent footprint, no instances, {:?}", cfg.idle);
        results.footprint_empty = Some(procfs::sample_for(agent_pid, cfg.idle).await?);

        eprintln!("[bench] warm-up instance (pulls the image), and the OCI spec it got");
        let warm = start_instance(&api, &seen, "warm", cfg).await?;
        b.spec = handstart::baseline_spec(&b.ctr, &warm, cfg).await?;
        delete_all(&api).await?;

        eprintln!(
            "[bench] {} starts each: agent, ctr run, ctr run + CNI, runc run",
            cfg.starts
        );
        for i in 0..cfg.starts {
            for k in 0..Kind::ALL.len() {
                let kind = Kind::ALL[(i + k) % Kind::ALL.len()];
                let ms = match kind {
                    Kind::Agent => {
                        start_instance(&api, &seen, &format!("start-{i}"), cfg)
                            .await?
                            .1
                            * 1e3
                    }
                    _ => b.start(kind, i, cfg).await? * 1e3,
                };
                match kind {
                    Kind::Agent => results.agent_ms.push(ms),
                    Kind::Ctr => results.ctr_ms.push(ms),
                    Kind::CtrCni => results.ctr_cni_ms.push(ms),
                    Kind::Runc => results.runc_ms.push(ms),
                }
            }
            if (i + 1) % 10 == 0 {
                eprintln!("[bench]   {} of {} rounds", i + 1, cfg.starts);
            }
        }
        b.remove_all().await;

        tokio::time::sleep(Duration::from_secs(5)).await;
        results.loaded_instances = count_running(&api).await?;
        eprintln!(
            "[bench] agent footprint, {} instances running, {:?}",
            results.loaded_instances, cfg.idle
        );
        let window = procfs::Sampler::start(agent_pid, Duration::from_millis(500))?;
        tokio::time::sleep(cfg.idle).await;
        results.footprint_loaded = Some(window.finish().await?);
        results.containerd_rss = containerd_pid
            .and_then(|p| procfs::rss(p).ok())
            .map(|r| r.0);
        anyhow::Ok(())
    }
    .await;

    // Clean up whatever happened.
    b.remove_all().await;
    let _ = std::fs::remove_dir_all(cfg.work.join("runc-root"));
    let _ = std::fs::remove_dir_all(cfg.work.join("bundles"));
    let _ = std::fs::remove_dir_all(cfg.work.join("specs"));
    let _ = std::fs::remove_dir_all(cfg.work.join("cni"));
    let cleanup = delete_all(&api).await;
    watch.abort();
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::background())
        .await;
    outcome?;
    cleanup?;

    results.agent = Summary::of(&results.agent_ms);
    results.ctr = Summary::of(&results.ctr_ms);
    results.runc = Summary::of(&results.runc_ms);
    results.ctr_cni = Summary::of(&results.ctr_cni_ms);
    results.wall_s = t_all.elapsed().as_secs_f64();
    Ok(results)
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("bulkhead.dev/bench".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Records when each Instance is first seen Running (or Failed).
async fn watch_running(api: Api<Instance>, seen: Seen) {
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(inst) = event else { continue };
        let status = inst.status.as_ref();
        let outcome = match status.and_then(|s| s.phase) {
            Some(InstancePhase::Running) => Ok(()),
            Some(InstancePhase::Failed) => Err(status
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "Failed".into())),
            _ => continue,
        };
        if let Ok(mut map) = seen.lock() {
            map.entry(inst.name_any())
                .or_insert_with(|| (Instant::now(), outcome));
        }
    }
}

/// Creates Instance `name` on the agent's host and waits until the watch sees it Running.
/// Returns (its container ID, seconds from the create request to Running).
async fn start_instance(
    api: &Api<Instance>,
    seen: &Seen,
    name: &str,
    cfg: &Config,
) -> anyhow::Result<(String, f64)> {
    let inst = bulkhead_e2e::fixtures::instance(name)
        .on(&cfg.host)
        .image(&cfg.image)
        .grace(2)
        .build();
    let t0 = Instant::now();
    api.create(&PostParams::default(), &inst)
        .await
        .with_context(|| format!("creating Instance {name}"))?;
    let deadline = t0 + Duration::from_secs(120);
    loop {
        let hit = seen.lock().ok().and_then(|m| m.get(name).cloned());
        match hit {
            Some((at, Ok(()))) => {
                let got = api.get(name).await?;
                let id = got
                    .status
                    .and_then(|s| s.container_id)
                    .context("a Running Instance without a containerID")?;
                return Ok((id, at.duration_since(t0).as_secs_f64()));
            }
            Some((_, Err(message))) => bail!("Instance {name} failed: {message}"),
            None if Instant::now() > deadline => {
                bail!("Instance {name} was not Running within 120 s")
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn count_running(api: &Api<Instance>) -> anyhow::Result<usize> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|i| i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Running))
        .count())
}

/// Deletes every Instance in the namespace and waits (≤ 180 s) until the agent has let them
/// go.
async fn delete_all(api: &Api<Instance>) -> anyhow::Result<()> {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} Instances still exist 180 s after deletion");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
