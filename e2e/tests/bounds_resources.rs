//! Every instance is bounded in memory, whatever its tenant sets: an instance that sets no
//! memory gets the schema default on its stored object and in its cgroup, its tmpfs mounts are
//! sized to that limit, and filling /tmp stops inside the instance while a neighbour runs on.
//! A ResourceQuota on `count/instances.bulkhead.dev` caps a Workload, which reports the
//! refusal instead of hot-looping.
//!
//! The quota test uses the local system's controller and agent (started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD, Workload,
    conditions::{self, types},
    template::{DEFAULT_MEMORY, RestartPolicy},
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{self, Agent, image, start_agent, tasks},
    control_plane::state_dir,
    fixtures::{delete_and_wait, instance, wait_for_phase},
    manifest, poll_until,
};
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};

const START: Duration = Duration::from_secs(120);
/// The default memory limit, 256Mi, in bytes.
const DEFAULT_BYTES: i64 = 256 << 20;

fn pid_of(agent: &Agent, container: &str) -> u32 {
    tasks(&agent.namespace)
        .into_iter()
        .find(|(id, _, _)| id == container)
        .map(|(_, pid, _)| pid)
        .unwrap_or_else(|| panic!("no task for {container}; agent log:\n{}", agent.log_tail()))
}

/// The memory limit of a cgroup as the kernel holds it: cgroup v1 `memory.limit_in_bytes`
/// or v2 `memory.max`.
fn cgroup_memory_limit(path: &str) -> i64 {
    let v1 = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup{path}/memory.max");
    let text = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("neither {v1} nor {v2}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no numeric limit: {text:?}"))
}

/// The `size=` of the tmpfs at `dest` in the mount namespace of `pid`, in KiB.
fn tmpfs_size_kib(pid: u32, dest: &str) -> Option<i64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(dest) && l.contains(" - tmpfs "))?
        .split(',')
        .find_map(|o| o.trim().strip_prefix("size="))
        .and_then(|s| s.strip_suffix('k'))
        .and_then(|s| s.parse().ok())
}

/// Creates an Instance with no `resources.memory` field at all, as a tenant would write it.
async fn create_without_memory(ns: &TestNamespace, name: &str, host: &str) -> Instance {
    let mut inst = instance(name)
        .on(host)
        .image(&image("tools:v1"))
        .command(&["/bin/probe", "sleep"])
        .writable("/var/cache/app")
        .restart(RestartPolicy::Never)
        .build();
    inst.spec.template.resources.memory = None;
    let body = serde_json::to_value(&inst).unwrap();
    assert!(
        body["spec"]["template"]["resources"]
            .get("memory")
            .is_none(),
        "the request carries no memory: {body}"
    );
    ns.api::<Instance>()
        .create(&PostParams::default(), &inst)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_instance_without_memory_runs_under_the_default_and_cannot_fill_the_host() {
    let agent = start_agent("bounds");
    let ns = TestNamespace::new("bounds").await;
    let stored = create_without_memory(&ns, "filler", &agent.host).await;
    assert_eq!(
        stored.spec.template.resources.memory.as_deref(),
        Some(DEFAULT_MEMORY),
        "the API server stores the default"
    );
    create_without_memory(&ns, "neighbour", &agent.host).await;
    let filler = wait_for_phase(&ns, "filler", InstancePhase::Running, START).await;
    let neighbour = wait_for_phase(&ns, "neighbour", InstancePhase::Running, START).await;

    // What the kernel enforces, read back from the cgroup and the mount table.
    let filler_id = format!("bh-{}", filler.uid().unwrap());
    let cgroup = filler
        .status
        .clone()
        .unwrap()
        .isolation
        .unwrap()
        .cgroup
        .unwrap();
    assert_eq!(cgroup_memory_limit(&cgroup.path), DEFAULT_BYTES);
    assert_eq!(cgroup.memory_limit_bytes, Some(DEFAULT_BYTES));
    let pid = pid_of(&agent, &filler_id);
    for dest in ["/tmp", "/run", "/var/cache/app"] {
        assert_eq!(
            tmpfs_size_kib(pid, dest),
            Some(DEFAULT_BYTES / 1024),
            "{dest} is sized to the memory limit, not half the host's RAM"
        );
    }

    let neighbour_id = format!("bh-{}", neighbour.uid().unwrap());
    let neighbour_pid = pid_of(&agent, &neighbour_id);

    // A 2 GiB write to /tmp: stopped inside the instance, by ENOSPC or the OOM killer.
    let (code, out) = agent::exec(
        &agent.namespace,
        &filler_id,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=2048 2>&1; echo dd=$?; du -k /tmp/fill",
        ],
    );
    eprintln!("2 GiB write to /tmp: exit {code}, output:\n{out}");
    assert!(!out.contains("dd=0"), "the 2 GiB write completed: {out}");
    let written_kib = out
        .lines()
        .find_map(|l| l.strip_suffix("\t/tmp/fill"))
        .and_then(|k| k.trim().parse::<i64>().ok());
    let enospc = out.contains("No space left on device");
    let oom_killed = code == 137 || out.contains("Killed") || out.contains("dd=137");
    assert!(
        enospc || oom_killed,
        "neither ENOSPC nor an OOM kill stopped the write (exit {code}): {out}"
    );
    if let Some(kib) = written_kib {
        assert!(kib <= DEFAULT_BYTES / 1024, "{kib} KiB in /tmp");
    }

    // The neighbour keeps running: same process, never restarted, still Running.
    assert!(
        std::path::Path::new(&format!("/proc/{neighbour_pid}")).exists(),
        "the neighbour's process is gone"
    );
    assert_eq!(pid_of(&agent, &neighbour_id), neighbour_pid);
    let after = wait_for_phase(&ns, "neighbour", InstancePhase::Running, START).await;
    assert_eq!(after.status.unwrap().restart_count, 0);
    let (code, out) = agent::exec(&agent.namespace, &neighbour_id, &["sh", "-c", "echo alive"]);
    assert_eq!((code, out.trim()), (0, "alive"));
    // Removed while their agent runs, so the namespace goes too.
    for name in ["filler", "neighbour"] {
        delete_and_wait(&ns, name, Duration::from_secs(60)).await;
    }
    ns.delete().await;
}

fn quota(max: &str) -> ResourceQuota {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "instances"},
        "spec": {"hard": {"count/instances.bulkhead.dev": max}},
    }))
    .unwrap()
}

fn workload_yaml(replicas: i32) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: {replicas}
  template:
    image: {image}
    ports: [{{name: http, containerPort: 8080}}]
    terminationGracePeriodSeconds: 2
"#,
        image = image("web:v1")
    )
}

/// Lines of the local controller's log that record a create of this namespace's instances
/// the API server refused: one per attempt.
fn refused_creates(namespace: &str) -> usize {
    let log = std::fs::read_to_string(state_dir().join("logs/controller.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("the API server refused an instance") && l.contains(namespace))
        .count()
}

#[tokio::test]
async fn an_instance_quota_caps_a_workload_which_reports_it_without_hot_looping() {
    let ns = TestNamespace::new("quota").await;
    // Quota admission needs the quota's status, which kube-controller-manager fills.
    let quotas: Api<ResourceQuota> = ns.api();
    quotas
        .create(&PostParams::default(), &quota("2"))
        .await
        .unwrap();
    poll_until(Duration::from_secs(60), || async {
        let q = quotas.get("instances").await.ok()?;
        q.status?.hard.filter(|h| !h.is_empty()).map(|_| ())
    })
    .await
    .expect("kube-controller-manager fills the quota's status");

    manifest::create(&ns.client, &ns.name, &workload_yaml(3))
        .await
        .unwrap();
    let workloads: Api<Workload> = ns.api();
    let condition = poll_until(START, || async {
        let wl = workloads.get("web").await.ok()?;
        conditions::find(&wl.status?.conditions, types::REPLICA_FAILURE).cloned()
    })
    .await
    .expect("the Workload reports the refused instance");
    eprintln!("ReplicaFailure: {condition:?}");
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason, "FailedCreate");
    assert!(
        condition.message.contains("exceeded quota") && condition.message.contains("instances"),
        "the refusal names the quota: {}",
        condition.message
    );
    let instances: Api<Instance> = ns.api();
    let count = || async {
        instances
            .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(count().await, 2, "the quota caps the Workload at 2");

    // Once the two admitted instances run (their start-up changes each wake the controller),
    // it tries again on its 30 s back-off, not in a loop. The 40 s is a measurement window,
    // not a wait for a condition.
    poll_until(START, || async {
        let running = instances
            .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
            .await
            .ok()?
            .items
            .iter()
            .filter(|i| {
                i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Running)
                    && conditions::is_true(&i.status.as_ref().unwrap().conditions, types::READY)
            })
            .count();
        (running == 2).then_some(())
    })
    .await
    .expect("the two admitted instances run");
    let before = refused_creates(&ns.name);
    assert!(before >= 1, "the controller log records the refusal");
    tokio::time::sleep(Duration::from_secs(40)).await;
    let attempts = refused_creates(&ns.name) - before;
    eprintln!("refused creates in 40 s: {attempts} (before the window: {before})");
    assert!(
        attempts <= 3,
        "{attempts} refused creates in 40 s: the controller hot-loops on the quota"
    );
    assert_eq!(count().await, 2);

    // Raising the quota lets the third instance in, and the condition clears.
    quotas
        .patch(
            "instances",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"spec": {"hard": {"count/instances.bulkhead.dev": "3"}}}),
            ),
        )
        .await
        .unwrap();
    poll_until(Duration::from_secs(90), || async {
        let wl = workloads.get("web").await.ok()?;
        let cleared = conditions::find(&wl.status?.conditions, types::REPLICA_FAILURE).is_none();
        (cleared && count().await == 3).then_some(())
    })
    .await
    .expect("with room in the quota the third instance is created and the condition clears");
    ns.delete().await;
}

/// Hostile quantities: the largest i64, one that does not fit in 64 bits, and one longer than
/// the schema allows. None wraps into "fits": the scheduler leaves them unbound with a reason,
/// and the API server refuses the over-long one.
#[tokio::test]
async fn huge_memory_quantities_never_fit_a_host() {
    let ns = TestNamespace::new("huge").await;
    let api: Api<Instance> = ns.api();
    for (name, memory) in [("max-i64", "9223372036854775807"), ("past-i64", "8Ei")] {
        let inst = instance(name).memory(memory).build();
        api.create(&PostParams::default(), &inst).await.unwrap();
    }
    for name in ["max-i64", "past-i64"] {
        let scheduled = poll_until(START, || async {
            let inst = api.get(name).await.ok()?;
            conditions::find(&inst.status?.conditions, types::SCHEDULED).cloned()
        })
        .await
        .unwrap_or_else(|| panic!("{name}: the scheduler reports no decision"));
        eprintln!("{name}: {}", scheduled.message);
        assert_eq!(scheduled.status, "False", "{name}: {scheduled:?}");
        assert!(
            scheduled.message.contains("insufficient memory"),
            "{name}: {}",
            scheduled.message
        );
        assert!(api.get(name).await.unwrap().spec.host_name.is_none());
    }
    let too_long = instance("too-long").memory(&"9".repeat(65)).build();
    let err = api
        .create(&PostParams::default(), &too_long)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not an API refusal: {err}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.template.resources.memory") && status.message.contains("64"),
        "{}",
        status.message
    );
    ns.delete().await;
}

/// Three instances bound by hand (as an admin may, past the scheduler) with 3Ei of memory
/// each, a limit the kernel still holds as a number: together 9 × 2^60 bytes, past `i64::MAX`.
/// The
/// agent's reservation sum saturates instead of overflowing, and the agent keeps its Host
/// Ready and its Lease renewed.
#[tokio::test]
async fn the_agent_sums_huge_reservations_without_overflow() {
    let mut agent = start_agent("huge-sum");
    let ns = TestNamespace::new("huge-sum").await;
    for name in ["huge-a", "huge-b", "huge-c"] {
        instance(name)
            .on(&agent.host)
            .image(&image("tools:v1"))
            .command(&["/bin/probe", "sleep"])
            .memory("3Ei")
            .create(&ns)
            .await;
    }
    for name in ["huge-a", "huge-b", "huge-c"] {
        let inst = wait_for_phase(&ns, name, InstancePhase::Running, START).await;
        eprintln!(
            "{name}: cgroup memory limit {:?}",
            inst.status
                .and_then(|s| s.isolation)
                .and_then(|i| i.cgroup)
                .and_then(|c| c.memory_limit_bytes)
        );
    }
    let hosts: Api<bulkhead_crds::Host> = Api::all(ns.client.clone());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(ns.client.clone(), bulkhead_crds::SYSTEM_NAMESPACE);
    let renewed = || async {
        leases
            .get(&agent.host)
            .await
            .ok()
            .and_then(|l| l.spec?.renew_time)
            .map(|t| t.0)
    };
    let first = renewed().await.expect("the agent holds a Lease");
    let saturated = poll_until(Duration::from_secs(60), || async {
        let h = hosts.get(&agent.host).await.ok()?;
        let a = h.status.as_ref()?.allocations.clone()?;
        let ready = conditions::is_true(&h.status?.conditions, types::READY);
        let later = renewed().await.is_some_and(|t| t > first);
        (a.memory_bytes == i64::MAX && ready && later).then_some(a)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no saturated reservation on a Ready host with a renewed Lease:\n{}",
            agent.log_tail()
        )
    });
    eprintln!("reserved: {saturated:?}");
    assert!(!agent.exited(), "the agent died:\n{}", agent.log_tail());
    for name in ["huge-a", "huge-b", "huge-c"] {
        delete_and_wait(&ns, name, Duration::from_secs(60)).await;
    }
    ns.delete().await;
}
