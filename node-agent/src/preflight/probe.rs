//! Reads this host into a preflight [`Input`]: the kernel through [`HostRoot`], runc and
//! containerd by asking them, the CNI plugin directory, the modes of the runtime's state
//! directories, `ip -j` for addresses and routes, DNS for the allowed registries. Every
//! external call is bounded in time; a failure becomes part of the Input, never an error.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{CniInput, Input, RuntimePath, SubnetInput, reach};
use crate::{
    host::detect::{self, HostRoot},
    network::Cni,
    runtime::containerd::Containerd,
};

/// Bound on each call to containerd, `ip` and DNS.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The agent settings preflight checks (the agent's flags of the same names).
#[derive(Debug, Clone)]
pub struct Settings {
    /// --containerd-address.
    pub containerd_address: PathBuf,
    /// --containerd-state-dir: containerd's `state`, where runc finds each bundle's rootfs.
    pub containerd_state_dir: PathBuf,
    /// --runc.
    pub runc: PathBuf,
    /// --cni-bin-dir.
    pub cni_bin_dir: PathBuf,
    /// --cni-conf-dir.
    pub cni_conf_dir: Option<PathBuf>,
    /// --cni-bridge.
    pub cni_bridge: String,
    /// --instance-subnet.
    pub instance_subnet: String,
    /// --no-network.
    pub no_network: bool,
    /// --state-dir (where the CNI configuration keeps its IPAM state).
    pub state_dir: PathBuf,
    /// --allowed-registries.
    pub allowed_registries: Vec<String>,
    /// The first host UID of --uid-range-pool: what an instance's root maps to.
    pub mapped_uid: u32,
    /// --cni-root: where the node's `ip` is found when the agent runs in a pod.
    pub cni_root: Option<PathBuf>,
}

/// Reads everything the checks need.
pub async fn gather(root: &HostRoot, s: &Settings) -> Input {
    let features = root.features();
    Input {
        user_namespaces: features.user_namespaces,
        seccomp: features.seccomp,
        seccomp_actions: features.seccomp_actions,
        cgroup_version: features.cgroup_version,
        cgroup_controllers: features.cgroup_controllers,
        runc: (
            s.runc.clone(),
            detect::runc_version(&s.runc).ok_or_else(|| {
                "`runc --version` printed no version (is runc installed and on PATH?)".to_string()
            }),
        ),
        containerd: (
            s.containerd_address.clone(),
            containerd_version(&s.containerd_address).await,
        ),
        cni: (!s.no_network).then(|| cni(s)),
        runtime_paths: vec![runtime_path(
            "--containerd-state-dir",
            &s.containerd_state_dir,
            s.mapped_uid,
        )],
        subnet: match (&s.cni_conf_dir, s.no_network) {
            (None, false) => Some(subnet(s).await),
            _ => None,
        },
        registries: resolve_all(&s.allowed_registries).await,
    }
}

async fn containerd_version(socket: &Path) -> Result<String, String> {
    let asked = async {
        let c = Containerd::connect(socket, "default")
            .await
            .map_err(|e| e.to_string())?;
        c.version().await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(TIMEOUT, asked)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", TIMEOUT.as_secs())))
}

fn cni(s: &Settings) -> CniInput {
    let config = match &s.cni_conf_dir {
        Some(dir) => Cni::from_conf_dir(&s.cni_bin_dir, dir, &s.state_dir),
        None => Ok(Cni::bridge(
            &s.cni_bin_dir,
            &s.cni_bridge,
            &s.instance_subnet,
            &s.state_dir,
        )),
    };
    let (wanted, config_error) = match config {
        Ok(c) => (c.plugin_types(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let present = wanted
        .iter()
        .filter(|t| {
            std::fs::metadata(s.cni_bin_dir.join(t))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .cloned()
        .collect();
    CniInput {
        bin_dir: s.cni_bin_dir.clone(),
        wanted,
        present,
        config_error,
    }
}

/// The canonical path's ancestors, so that a symlink on the way is judged by where it leads.
fn runtime_path(flag: &'static str, dir: &Path, mapped: u32) -> RuntimePath {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    RuntimePath {
        flag,
        ancestors: reach::ancestors(&canonical, |p| {
            std::fs::metadata(p).map(|m| reach::Meta::of(&m))
        }),
        mapped: (mapped, mapped),
    }
}

async fn subnet(s: &Settings) -> SubnetInput {
    SubnetInput {
        subnet: s.instance_subnet.clone(),
        bridge: s.cni_bridge.clone(),
        interfaces: ip_json(s.cni_root.as_deref(), &["-j", "-4", "addr", "show"]).await,
        routes: ip_json(
            s.cni_root.as_deref(),
            &["-j", "-4", "route", "show", "table", "main"],
        )
        .await,
    }
}

async fn ip_json<T: serde::de::DeserializeOwned>(
    root: Option<&std::path::Path>,
    args: &[&str],
) -> Result<T, String> {
    let cmd = format!("ip {}", args.join(" "));
    let out = tokio::time::timeout(
        TIMEOUT,
        crate::network::cni::node_command(root, "ip")
            .map_err(|e| format!("{cmd}: {e}"))?
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{cmd}: no answer within {}s", TIMEOUT.as_secs()))?
    .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{cmd}: {e}"))
}

async fn resolve_all(registries: &[String]) -> Vec<(String, Result<usize, String>)> {
    let mut out = Vec::new();
    for r in registries {
        out.push((r.clone(), resolve(r).await));
    }
    out
}

/// How many addresses the host part of `host[:port]` resolves to.
async fn resolve(registry: &str) -> Result<usize, String> {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::net::lookup_host((host, 443));
    match tokio::time::timeout(TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => match addrs.count() {
            0 => Err("no address".into()),
            n => Ok(n),
        },
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}
