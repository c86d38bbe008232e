//! The machine a run was on: CPUs, memory, kernel, load, and the versions of every part.

use serde::{Deserialize, Serialize};

use crate::cmd::version;

/// What the report says about the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available (nproc).
    pub nproc: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Memory, bytes.
    pub mem_total: u64,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the run began.
    pub load_before: String,
    /// /proc/loadavg when it ended.
    pub load_after: String,
    /// Component versions, (name, version).
    pub versions: Vec<(String, String)>,
    /// The Bulkhead commit.
    pub commit: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The current 1/5/15-minute load averages.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Describes this machine. `bin_dir` holds the pinned kube-apiserver and etcd.
pub async fn describe(bin_dir: Option<&str>) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_total = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let mut versions = vec![
        (
            "containerd".into(),
            version("containerd", &["--version"]).await,
        ),
        ("ctr".into(), version("ctr", &["--version"]).await),
        ("runc".into(), version("runc", &["--version"]).await),
        ("rustc".into(), version("rustc", &["--version"]).await),
    ];
    if let Some(dir) = bin_dir {
        for (name, arg) in [
            ("kube-apiserver", "--version"),
            ("kube-controller-manager", "--version"),
            ("etcd", "--version"),
        ] {
            let path = format!("{dir}/{name}");
            versions.push((name.into(), version(&path, &[arg]).await));
        }
    }
    let commit = version("git", &["describe", "--always", "--dirty"]).await;
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        mem_total,
        kernel: read("/proc/sys/kernel/osrelease"),
        load_before: loadavg(),
        load_after: String::new(),
        versions,
        commit,
    }
}
