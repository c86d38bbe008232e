//! Reading back what the kernel enforces on a running instance, and comparing it with what
//! was asked for.
//!
//! Everything comes from the kernel's own view of the instance's init process:
//! `/proc/<pid>/status` (Seccomp, Seccomp_filters, NoNewPrivs, CapEff, CapBnd), `uid_map` and
//! `gid_map`, the namespace links compared with the host's (PID 1), the root mount's options,
//! and the limits in the instance's cgroup files. Paths go through a root directory so that
//! tests lay out fixture files instead of reading the real kernel.

use std::path::{Path, PathBuf};

use bulkhead_crds::{
    Isolation,
    instance::{CapabilityStatus, CgroupStatus, NamespaceStatus},
    isolation::{Capability, SeccompType},
    template::Resources,
};

/// The namespace types every instance must have of its own (user only with a user namespace).
pub const PRIVATE_NAMESPACES: [&str; 6] = ["cgroup", "ipc", "mnt", "net", "pid", "uts"];

/// What the kernel reports for an instance's init process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Seccomp mode: 0 disabled, 1 strict, 2 filter.
    pub seccomp_mode: u8,
    /// Number of seccomp filters.
    pub seccomp_filters: i32,
    /// The no_new_privs bit.
    pub no_new_privs: bool,
    /// Effective capability mask.
    pub cap_eff: u64,
    /// Bounding capability mask.
    pub cap_bnd: u64,
    /// uid_map lines: (inside, outside, count).
    pub uid_map: Vec<(u64, u64, u64)>,
    /// gid_map lines.
    pub gid_map: Vec<(u64, u64, u64)>,
    /// (type, inode, differs from the host's).
    pub namespaces: Vec<(String, u64, bool)>,
    /// The root mount is read-only.
    pub read_only_root: bool,
    /// The cgroup path and limits.
    pub cgroup: CgroupStatus,
    /// The process's SELinux label (`/proc/<pid>/attr/current`), where SELinux is on.
    pub selinux_label: Option<String>,
}

/// Reads the kernel's view through `root` (`/` on a real host).
#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
}

fn parse_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

/// A cgroup limit file's value: None for "max" (unlimited) or the v1 "unlimited" sentinel.
fn limit(text: &str) -> Option<i64> {
    let v = text.split_whitespace().next()?;
    if v == "max" {
        return None;
    }
    let n: i64 = v.parse().ok()?;
    // cgroup v1 reports "no limit" as a huge page-aligned number.
    (n < (1i64 << 62)).then_some(n)
}

impl ProcReader {
    /// A reader rooted at `root` (tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn p(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn ns_inode(&self, pid: &str, ns: &str) -> Option<u64> {
        let link = std::fs::read_link(self.p(&format!("/proc/{pid}/ns/{ns}"))).ok()?;
        // "net:[4026531992]"
        let s = link.to_string_lossy();
        s.split_once('[')?.1.trim_end_matches(']').parse().ok()
    }

    /// Reads the kernel's view of process `pid`.
    pub fn observe(&self, pid: u32) -> std::io::Result<Observed> {
        let status = read(&self.p(&format!("/proc/{pid}/status")))?;
        let hex = |name: &str| {
            field(&status, name)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0)
        };
        let mut o = Observed {
            seccomp_mode: field(&status, "Seccomp:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            seccomp_filters: field(&status, "Seccomp_filters:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            no_new_privs: field(&status, "NoNewPrivs:") == Some("1"),
            cap_eff: hex("CapEff:"),
            cap_bnd: hex("CapBnd:"),
            uid_map: parse_map(&read(&self.p(&format!("/proc/{pid}/uid_map")))?),
            gid_map: parse_map(&read(&self.p(&format!("/proc/{pid}/gid_map")))?),
            ..Default::default()
        };
        for ns in PRIVATE_NAMESPACES.iter().chain(["user"].iter()) {
            if let Some(inode) = self.ns_inode(&pid.to_string(), ns) {
                let host = self.ns_inode("1", ns);
                o.namespaces
                    .push((ns.to_string(), inode, host != Some(inode)));
            }
        }
        // The root mount: the line of mountinfo whose mount point is "/".
        let mountinfo = read(&self.p(&format!("/proc/{pid}/mountinfo")))?;
        o.read_only_root = mountinfo.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 5 && f[4] == "/" && f[5].split(',').any(|opt| opt == "ro")
        });
        o.cgroup = self.cgroup(pid)?;
        o.selinux_label = read(&self.p(&format!("/proc/{pid}/attr/current")))
            .ok()
            .map(|l| l.trim_end_matches(['\0', '\n']).to_string())
            .filter(|l| !l.is_empty());
        Ok(o)
    }

    /// The process's cgroup path and its memory, CPU and pids limits (v1 or v2).
    fn cgroup(&self, pid: u32) -> std::io::Result<CgroupStatus> {
        let text = read(&self.p(&format!("/proc/{pid}/cgroup")))?;
        let mut c = CgroupStatus::default();
        let path_of = |controller: &str| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers
                    .split(',')
                    .any(|x| x == controller)
                    .then(|| path.to_string())
            })
        };
        let unified = text
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(String::from));
        let v1 = |controller: &str, dir: &str, file: &str| {
            path_of(controller)
                .and_then(|p| read(&self.p(&format!("/sys/fs/cgroup/{dir}{p}/{file}"))).ok())
        };
        if let Some(mem) = v1("memory", "memory", "memory.limit_in_bytes") {
            c.path = path_of("memory").unwrap_or_default();
            c.memory_limit_bytes = limit(&mem);
            c.pids_limit = v1("pids", "pids", "pids.max").and_then(|t| limit(&t));
            c.cpu_quota_micros = v1("cpu", "cpu,cpuacct", "cpu.cfs_quota_us")
                .or_else(|| v1("cpu", "cpu", "cpu.cfs_quota_us"))
                .and_then(|t| t.trim().parse::<i64>().ok())
                .filter(|q| *q > 0);
            c.cpu_period_micros = v1("cpu", "cpu,cpuacct", "cpu.cfs_period_us")
                .or_else(|| v1("cpu", "cpu", "cpu.cfs_period_us"))
                .and_then(|t| t.trim().parse().ok());
        } else if let Some(p) = unified {
            let f = |file: &str| read(&self.p(&format!("/sys/fs/cgroup{p}/{file}"))).ok();
            c.path = p.clone();
            c.memory_limit_bytes = f("memory.max").and_then(|t| limit(&t));
            c.pids_limit = f("pids.max").and_then(|t| limit(&t));
            if let Some(cpu) = f("cpu.max") {
                let mut it = cpu.split_whitespace();
                c.cpu_quota_micros = it.next().and_then(|q| q.parse().ok());
                c.cpu_period_micros = it.next().and_then(|q| q.parse().ok());
            }
        }
        Ok(c)
    }
}

/// The capability mask of a list of capabilities.
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c.bit()))
}

/// Names of the capabilities in a mask.
pub fn names(mask: u64) -> Vec<String> {
    Capability::ALL
        .iter()
        .filter(|c| mask & (1u64 << c.bit()) != 0)
        .map(|c| c.as_str().to_string())
        .collect()
}

/// What was asked for, to compare against.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The Instance's isolation.
    pub isolation: &'a Isolation,
    /// The Instance's resources.
    pub resources: &'a Resources,
    /// The allocated host UID range start, with a user namespace.
    pub uid_start: Option<u32>,
    /// The process label the agent set, where the host enforces SELinux.
    pub selinux_label: Option<String>,
}

/// Every way the kernel enforces less than was asked; empty when it enforces it all.
pub fn differences(expected: &Expected, o: &Observed) -> Vec<String> {
    let mut d = Vec::new();
    let iso = expected.isolation;
    if iso.seccomp.type_ != SeccompType::Unconfined && o.seccomp_mode != 2 {
        d.push(format!(
            "seccomp mode is {} instead of filter (2)",
            o.seccomp_mode
        ));
    }
    if !o.no_new_privs {
        d.push("no_new_privs is not set".into());
    }
    if let Some(label) = &expected.selinux_label
        && o.selinux_label.as_ref() != Some(label)
    {
        d.push(format!(
            "the SELinux label is {} instead of {label}",
            o.selinux_label.as_deref().unwrap_or("unreadable")
        ));
    }
    let allowed = mask(&iso.capabilities.add);
    if o.cap_eff & !allowed != 0 {
        d.push(format!(
            "effective capabilities beyond those asked for: {}",
            names(o.cap_eff & !allowed).join(", ")
        ));
    }
    if o.cap_bnd & !allowed != 0 {
        d.push(format!(
            "bounding capabilities beyond those asked for: {}",
            names(o.cap_bnd & !allowed).join(", ")
        ));
    }
    if let Some(start) = expected.uid_start {
        let want = vec![(0, u64::from(start), 65536)];
        if o.uid_map != want {
            d.push(format!(
                "uid_map is {:?} instead of 0 {start} 65536",
                o.uid_map
            ));
        }
        if o.gid_map != want {
            d.push(format!(
                "gid_map is {:?} instead of 0 {start} 65536",
                o.gid_map
            ));
        }
    }
    let private = |ns: &str| o.namespaces.iter().any(|(t, _, p)| t == ns && *p);
    for ns in PRIVATE_NAMESPACES
        .iter()
        .copied()
        .chain(iso.user_namespace.then_some("user"))
    {
        if !private(ns) {
            d.push(format!("the {ns} namespace is shared with the host"));
        }
    }
    if iso.read_only_root_filesystem && !o.read_only_root {
        d.push("the root filesystem is writable".into());
    }
    let r = expected.resources;
    if let Some(mem) = r
        .memory
        .as_deref()
        .and_then(|m| bulkhead_crds::quantity::memory_bytes(m).ok())
        && o.cgroup.memory_limit_bytes.is_none_or(|got| got > mem)
    {
        d.push(format!(
            "memory limit is {:?} instead of {mem}",
            o.cgroup.memory_limit_bytes
        ));
    }
    if o.cgroup.pids_limit.is_none_or(|got| got > r.pids) {
        d.push(format!(
            "pids limit is {:?} instead of {}",
            o.cgroup.pids_limit, r.pids
        ));
    }
    if let Some(millis) = r
        .cpu
        .as_deref()
        .and_then(|c| bulkhead_crds::quantity::cpu_millis(c).ok())
    {
        let got = o
            .cgroup
            .cpu_quota_micros
            .zip(o.cgroup.cpu_period_micros)
            .map(|(q, p)| q * 1000 / p.max(1));
        if got.is_none_or(|g| g > millis) {
            d.push(format!(
                "cpu quota allows {got:?} millicores instead of {millis}"
            ));
        }
    }
    d
}

/// The status fields describing what was observed.
pub fn status_parts(o: &Observed) -> (CapabilityStatus, Vec<NamespaceStatus>) {
    (
        CapabilityStatus {
            effective: names(o.cap_eff),
            bounding: names(o.cap_bnd),
        },
        o.namespaces
            .iter()
            .map(|(t, inode, private)| NamespaceStatus {
                type_: t.clone(),
                inode: *inode as i64,
                private: *private,
            })
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    use crate::fixture_fs::write;

    use crate::fixture_fs::link;

    /// A fixture of a well-isolated instance (pid 42) on a cgroup v1 host.
    pub(crate) fn fixture(root: &Path) {
        write(
            root,
            "/proc/42/status",
            "Name:\tsh\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000400\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n",
        );
        write(
            root,
            "/proc/42/uid_map",
            "         0 1000000000      65536\n",
        );
        write(
            root,
            "/proc/42/gid_map",
            "         0 1000000000      65536\n",
        );
        for (i, ns) in ["cgroup", "ipc", "mnt", "net", "pid", "uts", "user"]
            .iter()
            .enumerate()
        {
            link(
                root,
                &format!("/proc/42/ns/{ns}"),
                &format!("{ns}:[{}]", 5000 + i),
            );
            link(
                root,
                &format!("/proc/1/ns/{ns}"),
                &format!("{ns}:[{}]", 4000 + i),
            );
        }
        write(
            root,
            "/proc/42/mountinfo",
            "600 500 0:50 / / ro,relatime - overlay overlay rw\n601 600 0:51 / /tmp rw - tmpfs tmpfs rw\n",
        );
        write(
            root,
            "/proc/42/cgroup",
            "12:pids:/bulkhead/bh-1\n11:memory:/bulkhead/bh-1\n4:cpu,cpuacct:/bulkhead/bh-1\n0::/\n",
        );
        write(
            root,
            "/sys/fs/cgroup/memory/bulkhead/bh-1/memory.limit_in_bytes",
            "67108864\n",
        );
        write(root, "/sys/fs/cgroup/pids/bulkhead/bh-1/pids.max", "128\n");
        write(
            root,
            "/sys/fs/cgroup/cpu,cpuacct/bulkhead/bh-1/cpu.cfs_quota_us",
            "25000\n",
        );
        write(
            root,
            "/sys/fs/cgroup/cpu,cpuacct/bulkhead/bh-1/cpu.cfs_period_us",
            "100000\n",
        );
    }

    fn expected<'a>(iso: &'a Isolation, res: &'a Resources) -> Expected<'a> {
        Expected {
            isolation: iso,
            resources: res,
            uid_start: Some(1_000_000_000),
            selinux_label: None,
        }
    }

    #[test]
    fn a_well_isolated_instance_has_no_differences() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let o = ProcReader::at(dir.path()).observe(42).unwrap();
        assert_eq!(
            (o.seccomp_mode, o.seccomp_filters, o.no_new_privs),
            (2, 1, true)
        );
        assert_eq!(o.cgroup.memory_limit_bytes, Some(64 << 20));
        assert_eq!(
            (o.cgroup.cpu_quota_micros, o.cgroup.cpu_period_micros),
            (Some(25000), Some(100000))
        );
        assert!(o.read_only_root);
        let mut iso = Isolation::default();
        iso.capabilities.add = vec![Capability::NET_BIND_SERVICE];
        let res = Resources {
            cpu: Some("250m".into()),
            memory: Some("64Mi".into()),
            pids: 128,
        };
        assert_eq!(differences(&expected(&iso, &res), &o), Vec::<String>::new());
        let (caps, ns) = status_parts(&o);
        assert_eq!(caps.bounding, ["NET_BIND_SERVICE"]);
        assert!(ns.iter().all(|n| n.private) && ns.len() == 7);
    }

    #[test]
    fn each_weaker_wall_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let r = dir.path();
        write(
            r,
            "/proc/42/status",
            "CapEff:\t0000000000200000\nCapBnd:\t0000000000200000\nNoNewPrivs:\t0\nSeccomp:\t0\n",
        );
        write(r, "/proc/42/uid_map", "0 0 4294967295\n");
        fs::remove_file(r.join("proc/42/ns/net")).unwrap();
        link(r, "/proc/42/ns/net", "net:[4003]");
        write(
            r,
            "/proc/42/mountinfo",
            "600 500 0:50 / / rw,relatime - overlay overlay rw\n",
        );
        write(r, "/sys/fs/cgroup/pids/bulkhead/bh-1/pids.max", "max\n");
        let o = ProcReader::at(r).observe(42).unwrap();
        let iso = Isolation::default();
        let res = Resources {
            cpu: None,
            memory: Some("64Mi".into()),
            pids: 128,
        };
        let d = differences(&expected(&iso, &res), &o).join("; ");
        for needle in [
            "seccomp mode is 0",
            "no_new_privs is not set",
            "effective capabilities beyond those asked for: SYS_ADMIN",
            "uid_map is",
            "the net namespace is shared with the host",
            "the root filesystem is writable",
            "pids limit is None",
        ] {
            assert!(d.contains(needle), "{needle:?} missing from: {d}");
        }
    }

    #[test]
    fn unlimited_values_read_as_none() {
        assert_eq!(limit("max\n"), None);
        assert_eq!(limit("9223372036854771712\n"), None);
        assert_eq!(limit("1024"), Some(1024));
    }

    #[test]
    fn a_process_without_its_selinux_label_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let reader = ProcReader::at(dir.path());
        let iso = Isolation::default();
        let res = Resources::default();
        let mut e = expected(&iso, &res);
        e.selinux_label = Some("system_u:system_r:container_t:s0:c1,c2".into());
        let o = reader.observe(42).unwrap();
        assert_eq!(o.selinux_label, None);
        let d = differences(&e, &o);
        assert!(
            d.iter().any(|x| x.contains(
                "SELinux label is unreadable instead of system_u:system_r:container_t:s0:c1,c2"
            )),
            "{d:?}"
        );
        crate::fixture_fs::write(
            dir.path(),
            "/proc/42/attr/current",
            "system_u:system_r:container_t:s0:c1,c2\0",
        );
        let o = reader.observe(42).unwrap();
        assert!(!differences(&e, &o).iter().any(|x| x.contains("SELinux")));
        crate::fixture_fs::write(
            dir.path(),
            "/proc/42/attr/current",
            "system_u:system_r:container_t:s0:c3,c4\0",
        );
        let o = reader.observe(42).unwrap();
        assert!(
            differences(&e, &o)
                .iter()
                .any(|x| x.contains("is system_u:system_r:container_t:s0:c3,c4 instead of"))
        );
    }
}
