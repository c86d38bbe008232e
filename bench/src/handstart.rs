//! The baselines of item 1: the agent's start done by hand, with the OCI spec the agent
//! produced for its warm-up instance (user namespace, seccomp, capabilities, read-only root,
//! cgroup limits, masked paths: taken from `ctr containers info`), the root pointed at a
//! copy of the image's unpacked filesystem:
//!
//! - `ctr run -d --config` against the same private containerd, no network;
//! - the same plus the agent's CNI chain ([`crate::cni`]), ADDed by a hook between the
//!   creation of the container's namespaces and the start of its process, as `ctr run
//!   --cni` and the agent do (the baseline of issue #16's start goal);
//! - `runc run -d` on a bundle, no network.

use std::{path::Path, time::Duration};

use anyhow::Context;

use crate::{
    argv,
    cmd::{Ctr, Runc},
    cni,
};

/// One kind of start in item 1's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An Instance through the agent.
    Agent,
    /// `ctr run`, no network.
    Ctr,
    /// Network namespace + the agent's CNI ADD + `ctr run` in that namespace.
    CtrCni,
    /// `runc run`, no network.
    Runc,
}

impl Kind {
    /// Every kind, in the order of the loop's first round (the order rotates each round).
    pub const ALL: [Kind; 4] = [Kind::Agent, Kind::Ctr, Kind::CtrCni, Kind::Runc];
}

/// The baselines' tools and what they started (removed by [`Baselines::remove_all`]).
#[derive(Debug)]
pub struct Baselines {
    /// `ctr` against the agent's containerd.
    pub ctr: Ctr,
    /// `runc` with a root of the benchmark's own.
    pub runc: Runc,
    /// The agent's CNI chain.
    pub cni: cni::Baseline,
    /// Containers started through `ctr`.
    pub ctr_ids: Vec<String>,
    /// Containers started through `runc`.
    pub runc_ids: Vec<String>,
    /// The agent's spec, root pointed at the copied filesystem ([`baseline_spec`]).
    pub spec: serde_json::Value,
}

impl Baselines {
    /// Starts baseline `kind` (not [`Kind::Agent`]) for round `i`; returns the seconds the
    /// timed part took. The spec is written before the clock starts, for every kind.
    pub async fn start(
        &mut self,
        kind: Kind,
        i: usize,
        cfg: &crate::start::Config,
    ) -> anyhow::Result<f64> {
        let pid = std::process::id();
        match kind {
            Kind::Ctr | Kind::CtrCni => {
                let tag = if kind == Kind::Ctr { "ctr" } else { "cni" };
                let id = format!("bench-{tag}-{pid}-{i}");
                let mut spec = self.spec.clone();
                if kind == Kind::CtrCni {
                    self.cni.attach(&mut spec, &id)?;
                }
                let file = cfg.work.join("specs").join(format!("{id}.json"));
                let path = write_spec(&spec, &id, &file)?;
                self.ctr_ids.push(id.clone());
                let (_, wall) = self
                    .ctr
                    .run(&["run", "-d", "--null-io", "--config", &path, &id])
                    .await?;
                if kind == Kind::CtrCni {
                    self.cni.address(&id)?;
                }
                Ok(wall)
            }
            Kind::Runc => {
                let id = format!("bench-runc-{pid}-{i}");
                let bundle = cfg.work.join("bundles").join(&id);
                write_spec(&self.spec, &id, &bundle.join("config.json"))?;
                self.runc_ids.push(id.clone());
                let b = bundle.to_string_lossy().into_owned();
                self.runc
                    .run_detached(&["run", "-d", "--bundle", &b, &id])
                    .await
            }
            Kind::Agent => anyhow::bail!("the agent's start is not a baseline"),
        }
    }

    /// Kills and deletes the baseline containers (by the IDs this run gave them), then DELs
    /// and removes their network namespaces.
    pub async fn remove_all(&mut self) {
        for id in self.ctr_ids.drain(..) {
            if let Err(e) = self.ctr.run(&["tasks", "rm", "-f", &id]).await {
                eprintln!("[bench] removing task {id}: {e:#}");
            }
            if let Err(e) = self.ctr.run(&["containers", "rm", &id]).await {
                eprintln!("[bench] removing container {id}: {e:#}");
            }
        }
        for id in self.runc_ids.drain(..) {
            if let Err(e) = self.runc.run(&["delete", "-f", &id]).await {
                eprintln!("[bench] removing runc container {id}: {e:#}");
            }
        }
        self.cni.remove_all().await;
    }
}

/// The network of the local agent (PID `pid`), from its command line and environment.
pub fn agent_network(pid: u32) -> anyhow::Result<cni::AgentNetwork> {
    let args = argv::read(pid)?;
    let env = |name: &str| argv::env(pid, name).ok().flatten();
    cni::agent_network(&args, env)
}

/// The OCI spec of the agent's container `id`, with its root pointed at a copy of the
/// image's unpacked filesystem under the work directory.
pub async fn baseline_spec(
    ctr: &Ctr,
    (id, _): &(String, f64),
    cfg: &crate::start::Config,
) -> anyhow::Result<serde_json::Value> {
    let (info, _) = ctr.run(&["containers", "info", id]).await?;
    let info: serde_json::Value = serde_json::from_str(&info).context("ctr containers info")?;
    let mut spec = info
        .get("Spec")
        .cloned()
        .context("ctr containers info has no Spec")?;
    let key = info
        .get("SnapshotKey")
        .and_then(|k| k.as_str())
        .context("no SnapshotKey")?;
    // The image's top layer is the parent of the container's snapshot.
    let (list, _) = ctr.run(&["snapshots", "ls"]).await?;
    let parent = list
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&key))
        .and_then(|f| f.get(1).map(|p| p.to_string()))
        .context("the container's snapshot has no parent")?;
    let rootfs = cfg.work.join("rootfs");
    if !rootfs.join("bin").exists() {
        copy_snapshot(ctr, &parent, &cfg.work, &rootfs).await?;
    }
    spec["root"]["path"] = serde_json::json!(rootfs.to_string_lossy());
    Ok(spec)
}

/// Copies the contents of snapshot `parent` (through a temporary read-only view, mounted
/// and unmounted again) to `dest`.
async fn copy_snapshot(ctr: &Ctr, parent: &str, work: &Path, dest: &Path) -> anyhow::Result<()> {
    let key = format!("bench-rootfs-{}", std::process::id());
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    ctr.run(&["snapshots", "view", &key, parent]).await?;
    let copied = async {
        let (mount, _) = ctr
            .run(&["snapshots", "mounts", &mnt.to_string_lossy(), &key])
            .await?;
        crate::cmd::run("sh", &["-c", mount.trim()], Duration::from_secs(30)).await?;
        let tmp = dest.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let src = format!("{}/.", mnt.display());
        let copy = crate::cmd::run(
            "cp",
            &["-a", &src, &tmp.to_string_lossy()],
            Duration::from_secs(120),
        )
        .await;
        crate::cmd::run("umount", &[&mnt.to_string_lossy()], Duration::from_secs(30)).await?;
        copy?;
        std::fs::rename(&tmp, dest)?;
        anyhow::Ok(())
    }
    .await;
    let removed = ctr.run(&["snapshots", "rm", &key]).await;
    copied?;
    removed?;
    Ok(())
}

/// Writes the spec for baseline container `id` to `path`, with a cgroup and host name of its
/// own; returns the path.
pub fn write_spec(spec: &serde_json::Value, id: &str, path: &Path) -> anyhow::Result<String> {
    let mut spec = spec.clone();
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/bulkhead/{id}"));
    spec["hostname"] = serde_json::json!(id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec(&spec)?)?;
    Ok(path.to_string_lossy().into_owned())
}
