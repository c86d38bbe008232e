//! The node agent starts Instances bound to its host through real containerd and runc,
//! reports them, and removes them without a trace.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Host, InstancePhase, conditions};
use bulkhead_e2e::{
    TestNamespace,
    agent::{self, Agent, containers, host_uids, snapshots, start_agent, tasks},
    fixtures::{delete_and_wait, instance, wait_for_phase},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};

const START: Duration = Duration::from_secs(120);

fn pid_of(agent: &Agent, container: &str) -> u32 {
    tasks(&agent.namespace)
        .into_iter()
        .find(|(id, _, _)| id == container)
        .map(|(_, pid, _)| pid)
        .unwrap_or_else(|| panic!("no task for {container}; agent log:\n{}", agent.log_tail()))
}

#[tokio::test]
async fn instance_runs_with_status_filled_and_an_unprivileged_host_uid() {
    let agent = start_agent("lifecycle");
    let ns = TestNamespace::new("lifecycle").await;
    instance("web-1").on(&agent.host).create(&ns).await;
    let inst = wait_for_phase(&ns, "web-1", InstancePhase::Running, START).await;

    let status = inst.status.clone().unwrap();
    let container = format!("bh-{}", inst.uid().unwrap());
    assert_eq!(status.container_id.as_deref(), Some(container.as_str()));
    assert!(
        status
            .image_digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:"),
        "{status:?}"
    );
    assert!(status.started_at.is_some());
    assert!(conditions::is_true(
        &status.conditions,
        conditions::types::READY
    ));
    assert!(
        inst.finalizers()
            .contains(&bulkhead_crds::FINALIZER_NODE_AGENT.to_string())
    );
    let iso = status.isolation.clone().unwrap();
    let userns = iso.user_namespace.unwrap();
    assert_eq!(userns.size, 65536);
    assert!(
        userns.host_uid >= 65536,
        "never the host's own UIDs: {userns:?}"
    );
    let level = iso.selinux.unwrap().level;
    let (low, high) = level
        .strip_prefix("s0:c")
        .unwrap()
        .split_once(",c")
        .unwrap();
    assert!(
        low.parse::<u32>().unwrap() < high.parse::<u32>().unwrap(),
        "{level}"
    );
    let seccomp = iso.seccomp.clone().unwrap();
    assert!(
        seccomp
            .profile
            .clone()
            .unwrap()
            .starts_with("RuntimeDefault@")
    );

    // What the kernel enforces, read back by the agent.
    assert!(
        conditions::is_true(&status.conditions, conditions::types::ISOLATION_VERIFIED),
        "{:?}",
        status.conditions
    );
    assert_eq!(seccomp.mode, "filter");
    assert!(seccomp.filters.unwrap() >= 1);
    assert_eq!(iso.no_new_privs, Some(true));
    assert_eq!(iso.read_only_root_filesystem, Some(true));
    let caps = iso.capabilities.clone().unwrap();
    assert!(
        caps.effective.is_empty() && caps.bounding.is_empty(),
        "{caps:?}"
    );
    let private: Vec<&str> = iso
        .namespaces
        .iter()
        .filter(|n| n.private)
        .map(|n| n.type_.as_str())
        .collect();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(
            private.contains(&ns),
            "{ns} namespace not private: {:?}",
            iso.namespaces
        );
    }
    let cgroup = iso.cgroup.clone().unwrap();
    assert_eq!(
        cgroup.pids_limit,
        Some(bulkhead_crds::template::DEFAULT_PIDS_LIMIT)
    );
    assert!(cgroup.path.ends_with(&container), "{cgroup:?}");

    // The same values, read by the test itself from /proc and the cgroup files.
    let pid = pid_of(&agent, &container);
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(
        field("Seccomp_filters:").parse::<i32>().unwrap(),
        seccomp.filters.unwrap()
    );
    assert_eq!(field("NoNewPrivs:") == "1", iso.no_new_privs.unwrap());
    assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), 0);
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let uid_map: Vec<i64> = uid_map
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(uid_map, vec![0, userns.host_uid, userns.size]);
    for ns in &iso.namespaces {
        let inode = std::fs::read_link(format!("/proc/{pid}/ns/{}", ns.type_)).unwrap();
        assert!(
            inode.to_string_lossy().contains(&ns.inode.to_string()),
            "{ns:?} vs {inode:?}"
        );
    }
    let pids_max = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{}/pids.max", cgroup.path))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup{}/pids.max", cgroup.path)))
        .unwrap();
    assert_eq!(pids_max.trim().parse::<i64>().ok(), cgroup.pids_limit);

    // On the host, the instance's processes run as an unprivileged UID of its range.
    let uids = host_uids(pid);
    assert_eq!(uids.len(), 4, "Uid line of /proc/{pid}/status");
    for uid in uids {
        assert!(uid != 0, "process {pid} runs as host root");
        let uid = uid as i64;
        assert!(
            (userns.host_uid..userns.host_uid + userns.size).contains(&uid),
            "host UID {uid} outside the allocated range {}",
            userns.range
        );
    }

    // The status survives a read by name from the image: the tag resolved to a digest.
    let pinned = inst.status.unwrap().image_digest.unwrap();
    let images = agent::ctr(&agent.namespace, &["images", "ls", "-q"]);
    assert!(
        images.contains(&pinned),
        "image record pinned by digest: {images}"
    );

    delete_and_wait(&ns, "web-1", Duration::from_secs(60)).await;
    assert!(
        !containers(&agent.namespace).contains(&container),
        "container left behind"
    );
    assert!(
        !snapshots(&agent.namespace).contains(&container),
        "rootfs snapshot left behind"
    );
    assert!(tasks(&agent.namespace).is_empty(), "task left behind");
    ns.delete().await;
}

#[tokio::test]
async fn host_is_registered_with_its_features_and_a_renewed_lease() {
    let agent = start_agent("register");
    let client = bulkhead_e2e::client().await;
    let hosts: Api<Host> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, bulkhead_crds::SYSTEM_NAMESPACE);
    let host = bulkhead_e2e::poll_until(Duration::from_secs(60), || {
        let hosts = hosts.clone();
        let name = agent.host.clone();
        async move { hosts.get(&name).await.ok().filter(|h| h.status.is_some()) }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "Host {} not registered; agent log:\n{}",
            agent.host,
            agent.log_tail()
        )
    });
    let status = host.status.unwrap();
    assert!(conditions::is_true(
        &status.conditions,
        conditions::types::READY
    ));
    let features = status.features.unwrap();
    assert!(features.seccomp, "this kernel supports seccomp");
    assert!(features.user_namespaces);
    assert!(!features.cgroup_controllers.is_empty());
    let info = status.node_info.unwrap();
    assert!(
        info.kernel_version
            .starts_with(|c: char| c.is_ascii_digit())
    );
    assert!(info.containerd_version.unwrap().starts_with("1."));
    assert!(info.runc_version.is_some());
    assert!(status.capacity.unwrap().memory_bytes > 0);

    // The Lease is renewed: its renewTime moves.
    let renew = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = renew(leases.get(&agent.host).await.unwrap()).unwrap();
    let moved = bulkhead_e2e::poll_until(Duration::from_secs(30), || {
        let leases = leases.clone();
        let name = agent.host.clone();
        async move { renew(leases.get(&name).await.ok()?).filter(|t| *t > first) }
    })
    .await;
    assert!(moved.is_some(), "Lease {} was not renewed", agent.host);
    let _ = hosts.delete(&agent.host, &Default::default()).await;
}

#[tokio::test]
async fn instances_on_one_host_never_share_a_uid_range_or_mcs_pair() {
    let agent = start_agent("alloc");
    let ns = TestNamespace::new("alloc").await;
    let names: Vec<String> = (0..4).map(|i| format!("web-{i}")).collect();
    for name in &names {
        instance(name).on(&agent.host).create(&ns).await;
    }
    let mut ranges = Vec::new();
    let mut pairs = Vec::new();
    for name in &names {
        let inst = wait_for_phase(&ns, name, InstancePhase::Running, START).await;
        let iso = inst.status.unwrap().isolation.unwrap();
        ranges.push(iso.user_namespace.unwrap().host_uid);
        pairs.push(iso.selinux.unwrap().level);
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[1] - w[0] >= 65536, "overlapping UID ranges: {ranges:?}");
    }
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), names.len(), "an MCS pair was handed out twice");
    // Processes really run in distinct ranges.
    let mut host_uid_sets: Vec<u64> = tasks(&agent.namespace)
        .iter()
        .map(|(_, pid, _)| host_uids(*pid)[0])
        .collect();
    host_uid_sets.sort();
    host_uid_sets.dedup();
    assert_eq!(host_uid_sets.len(), names.len());
    ns.delete().await;
}

#[tokio::test]
async fn stdout_and_stderr_go_to_a_log_file_the_logs_command_shows() {
    let agent = start_agent("logs");
    let ns = TestNamespace::new("logs").await;
    instance("talker")
        .on(&agent.host)
        .args(&[
            "sh",
            "-c",
            "echo hello from bulkhead; echo to stderr >&2; exec sleep 3600",
        ])
        .create(&ns)
        .await;
    wait_for_phase(&ns, "talker", InstancePhase::Running, START).await;
    let target = format!("{}/talker", ns.name);
    let out = bulkhead_e2e::poll_until(Duration::from_secs(20), || {
        let target = target.clone();
        let state = agent.state_dir.clone();
        async move {
            let out = std::process::Command::new(agent::binary("bulkhead-node-agent"))
                .args(["logs", "--state-dir"])
                .arg(&state)
                .arg(&target)
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("hello from bulkhead") && text.contains("to stderr")).then_some(text)
        }
    })
    .await;
    assert!(
        out.is_some(),
        "logs command did not show the output; agent log:\n{}",
        agent.log_tail()
    );
    ns.delete().await;
}

#[tokio::test]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let agent = start_agent("grace");
    let ns = TestNamespace::new("grace").await;
    instance("stubborn")
        .on(&agent.host)
        .grace(2)
        .args(&["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "stubborn", InstancePhase::Running, START).await;
    let container = format!("bh-{}", inst.uid().unwrap());
    delete_and_wait(&ns, "stubborn", Duration::from_secs(60)).await;
    assert!(
        std::fs::read_to_string(&agent.log)
            .unwrap()
            .contains("sending SIGKILL"),
        "the agent should have escalated to SIGKILL:\n{}",
        agent.log_tail()
    );
    assert!(!containers(&agent.namespace).contains(&container));
    ns.delete().await;
}

#[tokio::test]
async fn an_exited_instance_reports_its_exit_and_is_not_started_again() {
    let agent = start_agent("exit");
    let ns = TestNamespace::new("exit").await;
    instance("once")
        .on(&agent.host)
        .restart(bulkhead_crds::template::RestartPolicy::Never)
        .args(&["sh", "-c", "exit 3"])
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "once", InstancePhase::Failed, START).await;
    let exit = inst.status.unwrap().last_exit.unwrap();
    assert_eq!(exit.exit_code, 3);
    assert!(!exit.oom_killed);
    // An agent restart adopts the finished instance without starting it again.
    let mut agent = agent;
    agent.restart();
    agent
        .wait_for_log("adopted running containers", 2, Duration::from_secs(30))
        .await;
    assert!(
        !tasks(&agent.namespace).iter().any(|t| t.2 == "RUNNING"),
        "a finished instance was started again: {:?}",
        tasks(&agent.namespace)
    );
    let again = wait_for_phase(&ns, "once", InstancePhase::Failed, Duration::from_secs(10)).await;
    assert_eq!(again.status.unwrap().last_exit.unwrap().exit_code, 3);
    ns.delete().await;
}

#[tokio::test]
async fn writable_paths_missing_from_the_image_work_under_a_read_only_root() {
    let agent = start_agent("writable");
    let ns = TestNamespace::new("writable").await;
    instance("cache")
        .on(&agent.host)
        .image(&agent::image("tools:v1"))
        .command(&["/bin/probe", "sleep"])
        .writable("/var/cache/app/data")
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "cache", InstancePhase::Running, START).await;
    let id = format!("bh-{}", inst.uid().unwrap());
    let (code, out) = agent::exec(
        &agent.namespace,
        &id,
        &[
            "sh",
            "-c",
            "echo kept > /var/cache/app/data/f && cat /var/cache/app/data/f",
        ],
    );
    assert_eq!(
        (code, out.trim()),
        (0, "kept"),
        "the writable path is writable"
    );
    let (code, out) = agent::exec(&agent.namespace, &id, &["/bin/probe", "write-rootfs"]);
    assert_eq!(code, 0, "the root stays read-only: {out}");
    ns.delete().await;
}

#[tokio::test]
async fn a_command_the_image_lacks_fails_the_instance_with_the_runtime_error() {
    let agent = start_agent("nocmd");
    let ns = TestNamespace::new("nocmd").await;
    instance("broken")
        .on(&agent.host)
        .command(&["/bin/not-there"])
        .create(&ns)
        .await;
    instance("fine").on(&agent.host).create(&ns).await;
    let inst = wait_for_phase(&ns, "broken", InstancePhase::Failed, START).await;
    let status = inst.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("RuntimeCreateFailed"));
    assert!(status.message.unwrap().contains("/bin/not-there"));
    wait_for_phase(&ns, "fine", InstancePhase::Running, START).await;
    assert_eq!(
        containers(&agent.namespace).len(),
        1,
        "the failed instance left a container"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_host_reports_what_its_instances_reserve() {
    let agent = start_agent("reserve");
    let ns = TestNamespace::new("reserve").await;
    let hosts: Api<Host> = Api::all(ns.client.clone());
    // Reservations count every bound instance; `instances` counts the running ones.
    let reserved = |memory: i64, running: i64| {
        let hosts = hosts.clone();
        let name = agent.host.clone();
        async move {
            bulkhead_e2e::poll_until(Duration::from_secs(30), || async {
                let a = hosts.get(&name).await.ok()?.status?.allocations?;
                (a.memory_bytes == memory && a.instances == running).then_some(a)
            })
            .await
        }
    };
    instance("small")
        .on(&agent.host)
        .memory("64Mi")
        .create(&ns)
        .await;
    instance("large")
        .on(&agent.host)
        .memory("96Mi")
        .create(&ns)
        .await;
    wait_for_phase(&ns, "small", InstancePhase::Running, START).await;
    wait_for_phase(&ns, "large", InstancePhase::Running, START).await;
    let a = reserved(160 << 20, 2).await.unwrap_or_else(|| {
        panic!(
            "Host status does not reserve 160Mi for 2 instances:\n{}",
            agent.log_tail()
        )
    });
    assert_eq!((a.uid_ranges, a.mcs_pairs), (2, 2));
    delete_and_wait(&ns, "large", START).await;
    assert!(
        reserved(64 << 20, 1).await.is_some(),
        "the deleted instance's memory is still reserved"
    );
    ns.delete().await;
}

/// Creates Instance `name` on `host` and returns every status it showed (none, or its
/// phase), in order, as a watch delivers them, until it is Running. The watch has done its
/// first list before the create, so nothing is missed.
async fn phases_until_running(
    ns: &TestNamespace,
    name: &str,
    host: &str,
) -> Vec<Option<Option<InstancePhase>>> {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    let api: Api<bulkhead_crds::Instance> = ns.api();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, cfg).boxed();
    let deadline = tokio::time::Instant::now() + START;
    let mut next = async || match tokio::time::timeout_at(deadline, events.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("watching {name}: {other:?}"),
    };
    while !matches!(next().await, Event::InitDone) {}
    instance(name).on(host).create(ns).await;
    let mut seen = Vec::new();
    loop {
        let Event::Apply(i) = next().await else {
            continue;
        };
        // None: no status at all; Some(None): a status without a phase.
        let status = i.status.as_ref().map(|s| s.phase);
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        if status == Some(Some(InstancePhase::Running)) {
            return seen;
        }
    }
}

/// A start whose image the host already holds writes no phase before the task runs: the
/// first phase anyone sees is Running (one status write, not Starting then Running). The
/// control: the first instance, whose image is pulled, shows Pulling first, so the watch does
/// see what is written before Running.
#[tokio::test]
async fn a_start_with_the_image_present_shows_running_as_its_first_phase() {
    let agent = start_agent("firstwrite");
    let ns = TestNamespace::new("firstwrite").await;
    let pulled = phases_until_running(&ns, "pulls", &agent.host).await;
    assert!(
        pulled.contains(&Some(Some(InstancePhase::Pulling))),
        "the control: a pull is written before Running, and the watch sees it: {pulled:?}"
    );
    let local = phases_until_running(&ns, "local", &agent.host).await;
    // The walls' own report (status.isolation.network, a writer of its own) may land just
    // before the Running write; the start path itself writes no phase before Running.
    let before = &local[..local.len() - 1];
    assert!(
        before.iter().all(|s| matches!(s, None | Some(None))),
        "a phase before Running although the image is present: {local:?}; agent log:\n{}",
        agent.log_tail()
    );
    ns.delete().await;
}
