//! `isolation INSTANCE`: each wall of an instance — what was asked for, what the node agent
//! read back from the kernel, and whether that reading holds what was asked.

use bulkhead_crds::{
    Instance, Isolation,
    conditions::{self, types},
    instance::IsolationStatus,
    isolation::SeccompType,
    quantity,
};
use serde::Serialize;

use crate::{args::InstanceArgs, client::Kube, output, table};

/// One wall.
#[derive(Serialize, Debug, PartialEq)]
pub struct Wall {
    /// Its name.
    pub wall: String,
    /// What the instance's spec asks for.
    pub asked: String,
    /// What the agent read back from the running process; "-" before it did.
    pub enforced: String,
    /// "yes" when the reading holds what was asked, "NO" when it does not, "-" unread.
    pub verified: String,
}

fn wall(name: &str, asked: String, enforced: Option<String>, holds: Option<bool>) -> Wall {
    Wall {
        wall: name.into(),
        asked,
        enforced: enforced.unwrap_or_else(|| "-".into()),
        verified: match holds {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        }
        .into(),
    }
}

/// Every wall of `inst`.
pub fn walls(inst: &Instance) -> Vec<Wall> {
    let iso = &inst.spec.isolation;
    let read: Option<&IsolationStatus> = inst.status.as_ref().and_then(|s| s.isolation.as_ref());
    let mut out = Vec::new();

    let userns = read.map(|r| r.user_namespace.as_ref().map(|u| u.range.clone()));
    out.push(wall(
        "UID/GID range",
        if iso.user_namespace {
            "own, shared with no other instance"
        } else {
            "host's (no user namespace)"
        }
        .into(),
        userns
            .clone()
            .map(|u| u.map_or_else(|| "host's".into(), |r| format!("host UIDs {r}"))),
        userns.map(|u| u.is_some() || !iso.user_namespace),
    ));

    let seccomp = read.map(|r| r.seccomp.clone().unwrap_or_default());
    let want_filter = iso.seccomp.type_ != SeccompType::Unconfined;
    out.push(wall(
        "seccomp",
        match &iso.seccomp.localhost_profile {
            Some(p) => format!("{:?} {p}", iso.seccomp.type_),
            None => format!("{:?}", iso.seccomp.type_),
        },
        seccomp.as_ref().map(|s| match &s.profile {
            Some(p) => format!("{} ({p})", s.mode),
            None => s.mode.clone(),
        }),
        seccomp.map(|s| !want_filter || s.mode == "filter"),
    ));

    let asked_caps: Vec<&str> = iso.capabilities.add.iter().map(|c| c.as_str()).collect();
    let effective = read.map(|r| r.capabilities.clone().unwrap_or_default().effective);
    out.push(wall(
        "capabilities",
        list_or_none(&asked_caps),
        effective.as_ref().map(|e| list_or_none(e)),
        effective.map(|e| {
            e.iter()
                .all(|c| asked_caps.contains(&c.trim_start_matches("CAP_")))
        }),
    ));

    privileges_and_labels(&mut out, iso, read);
    namespaces(&mut out, inst, read);
    limits(&mut out, inst, read);
    out
}

/// no_new_privs, the read-only root filesystem and the SELinux label.
fn privileges_and_labels(out: &mut Vec<Wall>, iso: &Isolation, read: Option<&IsolationStatus>) {
    let nnp = read.and_then(|r| r.no_new_privs);
    out.push(wall("no_new_privs", "on".into(), nnp.map(on_off), nnp));

    let ro = read.and_then(|r| r.read_only_root_filesystem);
    out.push(wall(
        "read-only root filesystem",
        on_off(iso.read_only_root_filesystem),
        ro.map(on_off),
        ro.map(|ro| ro || !iso.read_only_root_filesystem),
    ));

    let selinux = read.map(|r| r.selinux.clone());
    out.push(wall(
        "selinux",
        format!("{:?}", iso.selinux.mode),
        selinux.clone().map(|s| match s {
            Some(s) if s.enforced => format!("{} enforced", s.level),
            Some(s) => format!(
                "{} recorded, not enforced (SELinux off on the host)",
                s.level
            ),
            None => "none".into(),
        }),
        selinux.map(|s| {
            s.is_some_and(|s| s.enforced)
                || iso.selinux.mode == bulkhead_crds::isolation::SELinuxMode::Preferred
        }),
    ));
}

fn namespaces(out: &mut Vec<Wall>, inst: &Instance, read: Option<&IsolationStatus>) {
    for ty in ["pid", "ipc", "uts", "mnt", "net", "cgroup", "user"] {
        let asked = ty != "user" || inst.spec.isolation.user_namespace;
        let seen = read.map(|r| {
            r.namespaces
                .iter()
                .find(|n| n.type_ == ty)
                .map(|n| n.private)
        });
        out.push(wall(
            &format!("{ty} namespace"),
            private_or_host(asked),
            seen.map(|p| p.map_or_else(|| "not read".into(), private_or_host)),
            seen.map(|p| p.is_some_and(|p| p || !asked)),
        ));
    }
}

fn limits(out: &mut Vec<Wall>, inst: &Instance, read: Option<&IsolationStatus>) {
    let res = &inst.spec.template.resources;
    let cg = read.map(|r| r.cgroup.clone().unwrap_or_default());
    let memory = res
        .memory
        .as_deref()
        .and_then(|m| quantity::memory_bytes(m).ok());
    out.push(wall(
        "memory limit",
        res.memory.clone().unwrap_or_else(|| "unlimited".into()),
        cg.as_ref().map(|c| {
            c.memory_limit_bytes
                .map_or_else(|| "unlimited".into(), |b| format!("{b} bytes"))
        }),
        cg.as_ref()
            .map(|c| memory.is_none() || c.memory_limit_bytes == memory),
    ));
    let cpu = res
        .cpu
        .as_deref()
        .and_then(|c| quantity::cpu_millis(c).ok());
    out.push(wall(
        "cpu limit",
        res.cpu.clone().unwrap_or_else(|| "unlimited".into()),
        cg.as_ref()
            .map(|c| match (c.cpu_quota_micros, c.cpu_period_micros) {
                (Some(q), Some(p)) => format!("{q}us per {p}us"),
                _ => "unlimited".into(),
            }),
        cg.as_ref()
            .map(|c| match (cpu, c.cpu_quota_micros, c.cpu_period_micros) {
                (None, _, _) => true,
                (Some(m), Some(q), Some(p)) if p > 0 => (q * 1000 / p - m).abs() <= 1,
                _ => false,
            }),
    ));
    out.push(wall(
        "pids limit",
        res.pids.to_string(),
        cg.as_ref().map(|c| {
            c.pids_limit
                .map_or_else(|| "unlimited".into(), |p| p.to_string())
        }),
        cg.as_ref().map(|c| c.pids_limit == Some(res.pids)),
    ));
}

fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

fn private_or_host(private: bool) -> String {
    if private { "private" } else { "host's" }.into()
}

/// The table, with the agent's overall verdict (the IsolationVerified condition) below it.
pub fn render(inst: &Instance, walls: &[Wall]) -> String {
    let rows: Vec<Vec<String>> = walls
        .iter()
        .map(|w| {
            vec![
                w.wall.clone(),
                w.asked.clone(),
                w.enforced.clone(),
                w.verified.clone(),
            ]
        })
        .collect();
    let mut out = table::render(
        &["WALL", "ASKED FOR", "ENFORCED BY THE KERNEL", "VERIFIED"],
        &rows,
    );
    let verdict = inst
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::ISOLATION_VERIFIED))
        .map_or_else(
            || "IsolationVerified: not yet (the agent has not read the running process)".into(),
            |c| format!("IsolationVerified={} {}: {}", c.status, c.reason, c.message),
        );
    out.push_str(&verdict);
    out.push('\n');
    out
}

/// Reads the Instance and prints its walls.
pub async fn run(kube: &Kube, args: &InstanceArgs) -> anyhow::Result<()> {
    let inst: Instance = kube.get(&args.instance, "instance").await?;
    let walls = walls(&inst);
    output::print(args.output, &walls, || render(&inst, &walls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use bulkhead_crds::{
        InstancePhase,
        instance::{
            CapabilityStatus, CgroupStatus, NamespaceStatus, SeccompStatus, UserNamespaceStatus,
        },
    };

    fn verified() -> Instance {
        let mut inst = fixtures::instance("web-1", "r1", InstancePhase::Running, true);
        inst.spec.template.resources.memory = Some("64Mi".into());
        let status = inst.status.as_mut().unwrap();
        status.isolation = Some(IsolationStatus {
            user_namespace: Some(UserNamespaceStatus {
                range: "1000065536-1000131071".into(),
                ..Default::default()
            }),
            seccomp: Some(SeccompStatus {
                mode: "filter".into(),
                profile: Some("RuntimeDefault@1".into()),
                ..Default::default()
            }),
            capabilities: Some(CapabilityStatus::default()),
            no_new_privs: Some(true),
            read_only_root_filesystem: Some(true),
            namespaces: ["pid", "ipc", "uts", "mnt", "net", "cgroup", "user"]
                .iter()
                .map(|t| NamespaceStatus {
                    type_: t.to_string(),
                    inode: 1,
                    private: true,
                })
                .collect(),
            cgroup: Some(CgroupStatus {
                memory_limit_bytes: Some(64 << 20),
                pids_limit: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        });
        inst
    }

    #[test]
    fn every_wall_of_a_verified_instance_holds() {
        let walls = walls(&verified());
        assert_eq!(walls.len(), 16);
        let unverified: Vec<&Wall> = walls.iter().filter(|w| w.verified != "yes").collect();
        assert!(unverified.is_empty(), "{unverified:#?}");
        let out = render(&verified(), &walls);
        assert_eq!(walls[0].enforced, "host UIDs 1000065536-1000131071");
        assert!(out.starts_with("WALL "), "{out}");
        assert!(out.contains("memory limit"), "{out}");
        assert!(
            out.ends_with("IsolationVerified=True Verified: \n"),
            "{out}"
        );
    }

    #[test]
    fn a_weaker_reading_is_flagged_and_an_unread_one_is_unknown() {
        let mut inst = verified();
        let iso = inst.status.as_mut().unwrap().isolation.as_mut().unwrap();
        iso.capabilities = Some(CapabilityStatus {
            effective: vec!["CAP_SYS_ADMIN".into()],
            bounding: vec![],
        });
        iso.seccomp = Some(SeccompStatus {
            mode: "disabled".into(),
            ..Default::default()
        });
        let walls = walls(&inst);
        let flagged: Vec<&str> = walls
            .iter()
            .filter(|w| w.verified == "NO")
            .map(|w| w.wall.as_str())
            .collect();
        assert_eq!(flagged, ["seccomp", "capabilities"]);
        inst.status.as_mut().unwrap().isolation = None;
        assert!(
            super::walls(&inst)
                .iter()
                .all(|w| w.verified == "-" && w.enforced == "-")
        );
    }

    #[test]
    fn relaxations_asked_for_are_not_flagged() {
        let mut inst = verified();
        inst.spec.isolation.seccomp.type_ = SeccompType::Unconfined;
        inst.spec.isolation.capabilities.add =
            vec![bulkhead_crds::isolation::Capability::SYS_ADMIN];
        let iso = inst.status.as_mut().unwrap().isolation.as_mut().unwrap();
        iso.capabilities = Some(CapabilityStatus {
            effective: vec!["SYS_ADMIN".into()],
            bounding: vec![],
        });
        iso.seccomp = Some(SeccompStatus {
            mode: "disabled".into(),
            ..Default::default()
        });
        assert!(walls(&inst).iter().all(|w| w.verified == "yes"));
    }
}
