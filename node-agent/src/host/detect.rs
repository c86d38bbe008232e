//! What this host's kernel and runtime can enforce, read from /proc and /sys.
//!
//! Every read goes through a root directory so that tests can lay out fixture files in a
//! temporary directory instead of reading the real kernel.

use std::path::{Path, PathBuf};

use bulkhead_crds::host::{HostCapacity, HostFeatures, NodeInfo, SELinuxHostMode};

/// Where the kernel's pseudo-filesystems are (`/` on a real host).
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl Default for HostRoot {
    fn default() -> Self {
        Self(PathBuf::from("/"))
    }
}

impl HostRoot {
    /// A root at `path` (tests).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }

    /// Kernel release, e.g. "6.1.0-18-amd64".
    pub fn kernel_release(&self) -> String {
        self.read("/proc/sys/kernel/osrelease")
            .unwrap_or_else(|| "unknown".into())
    }

    /// Kernel (major, minor).
    pub fn kernel_version(&self) -> (u32, u32) {
        parse_kernel(&self.kernel_release())
    }

    /// 2 when /sys/fs/cgroup is the unified hierarchy, else 1 (legacy or hybrid).
    pub fn cgroup_version(&self) -> i32 {
        if self.exists("/sys/fs/cgroup/cgroup.controllers") {
            2
        } else {
            1
        }
    }

    /// Cgroup controllers the kernel has enabled.
    pub fn cgroup_controllers(&self) -> Vec<String> {
        if self.cgroup_version() == 2 {
            return self
                .read("/sys/fs/cgroup/cgroup.controllers")
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
        }
        // /proc/cgroups: subsys_name hierarchy num_cgroups enabled
        self.read("/proc/cgroups")
            .map(|s| {
                s.lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() == 4 && f[3] == "1").then(|| f[0].to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seccomp actions the kernel supports; empty when seccomp is unavailable.
    pub fn seccomp_actions(&self) -> Vec<String> {
        self.read("/proc/sys/kernel/seccomp/actions_avail")
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Whether seccomp filters are supported (the Seccomp field of /proc/self/status).
    pub fn seccomp_supported(&self) -> bool {
        self.read("/proc/self/status")
            .is_some_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
            && !self.seccomp_actions().is_empty()
    }

    /// SELinux mode from selinuxfs.
    pub fn selinux_mode(&self) -> SELinuxHostMode {
        match self.read("/sys/fs/selinux/enforce").as_deref() {
            Some("1") => SELinuxHostMode::Enforcing,
            Some("0") => SELinuxHostMode::Permissive,
            _ => SELinuxHostMode::Disabled,
        }
    }

    /// Whether AppArmor is enabled.
    pub fn apparmor(&self) -> bool {
        self.read("/sys/module/apparmor/parameters/enabled")
            .is_some_and(|s| s == "Y")
    }

    /// Whether user namespaces can be created.
    pub fn user_namespaces(&self) -> bool {
        self.read("/proc/sys/user/max_user_namespaces")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }

    /// Memory in bytes (MemTotal).
    pub fn memory_bytes(&self) -> i64 {
        self.read("/proc/meminfo")
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<i64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// Online CPUs, from /sys/devices/system/cpu/online ("0-1,4").
    pub fn cpus(&self) -> i64 {
        self.read("/sys/devices/system/cpu/online")
            .map(|s| {
                s.split(',')
                    .map(|part| match part.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<i64>().unwrap_or(0) - a.parse::<i64>().unwrap_or(0) + 1
                        }
                        None => 1,
                    })
                    .sum()
            })
            .unwrap_or(1)
    }

    /// The isolation features of this host.
    pub fn features(&self) -> HostFeatures {
        let (major, minor) = self.kernel_version();
        HostFeatures {
            cgroup_version: self.cgroup_version(),
            cgroup_controllers: self.cgroup_controllers(),
            seccomp: self.seccomp_supported(),
            seccomp_actions: self.seccomp_actions(),
            selinux: self.selinux_mode(),
            apparmor: self.apparmor(),
            user_namespaces: self.user_namespaces(),
            // mount_setattr(2) with MOUNT_ATTR_IDMAP arrived in Linux 5.12.
            idmapped_mounts: (major, minor) >= (5, 12),
        }
    }

    /// Capacity, bounded in instances by the UID range pool.
    pub fn capacity(&self, max_instances: i64) -> HostCapacity {
        HostCapacity {
            cpu_millis: self.cpus() * 1000,
            memory_bytes: self.memory_bytes(),
            instances: max_instances,
        }
    }
}

/// Parses "6.1.0-18-amd64" into (6, 1).
pub fn parse_kernel(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// The Go name of this machine's architecture, as image indexes use it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// runc's version, from `runc --version`.
pub fn runc_version(runc: &Path) -> Option<String> {
    let out = std::process::Command::new(runc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("runc version "))
        .map(|v| v.trim().to_string())
}

/// Node info for the Host status.
pub fn node_info(root: &HostRoot, containerd: Option<String>, runc: Option<String>) -> NodeInfo {
    NodeInfo {
        kernel_version: root.kernel_release(),
        architecture: go_arch().into(),
        containerd_version: containerd,
        runc_version: runc,
        agent_version: Some(crate::VERSION.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixture_fs::write;

    #[test]
    fn reads_a_hybrid_cgroup_host_without_selinux() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        write(
            r,
            "/proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t10\t1\nmemory\t3\t10\t1\nrdma\t0\t1\t0\n",
        );
        write(
            r,
            "/proc/sys/kernel/seccomp/actions_avail",
            "kill_process kill_thread trap errno user_notif trace log allow\n",
        );
        write(r, "/proc/self/status", "Name:\tx\nSeccomp:\t0\n");
        write(r, "/proc/sys/user/max_user_namespaces", "63000\n");
        write(r, "/proc/meminfo", "MemTotal:       24576000 kB\n");
        write(r, "/sys/devices/system/cpu/online", "0-1\n");
        let host = HostRoot::at(r);
        let f = host.features();
        assert_eq!(f.cgroup_version, 1);
        assert_eq!(f.cgroup_controllers, ["cpu", "memory"]);
        assert!(f.seccomp && f.seccomp_actions.contains(&"user_notif".to_string()));
        assert_eq!(f.selinux, SELinuxHostMode::Disabled);
        assert!(!f.apparmor);
        assert!(f.user_namespaces && f.idmapped_mounts);
        let cap = host.capacity(512);
        assert_eq!(
            (cap.cpu_millis, cap.memory_bytes, cap.instances),
            (2000, 24576000 * 1024, 512)
        );
    }

    #[test]
    fn reads_a_unified_cgroup_host_with_selinux_enforcing() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        write(r, "/sys/fs/selinux/enforce", "1");
        write(r, "/sys/module/apparmor/parameters/enabled", "Y\n");
        write(r, "/proc/sys/user/max_user_namespaces", "0\n");
        write(r, "/proc/sys/kernel/osrelease", "5.4.0\n");
        let f = HostRoot::at(r).features();
        assert_eq!(f.cgroup_version, 2);
        assert_eq!(f.cgroup_controllers.len(), 5);
        assert_eq!(f.selinux, SELinuxHostMode::Enforcing);
        assert!(f.apparmor);
        assert!(!f.user_namespaces, "max_user_namespaces 0 disables them");
        assert!(!f.idmapped_mounts);
        assert!(!f.seccomp);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.1.0-18-amd64"), (6, 1));
        assert_eq!(parse_kernel("5.15.153.1-microsoft-standard"), (5, 15));
        assert_eq!(parse_kernel("garbage"), (0, 0));
    }
}
