//! Killing the agent at any step and starting it again: it adopts what runs, finishes what
//! was half done, removes what should not run, and never starts anything twice.
//!
//! Crash points are armed with BULKHEAD_FAILPOINTS, which makes the agent abort exactly
//! there, as a `kill -9` at that instant would.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{FINALIZER_NODE_AGENT, Instance, InstancePhase};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, containers, registry, snapshots, tasks, unique_host},
    fixtures::{delete_and_wait, instance, wait_for_phase},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};

const START: Duration = Duration::from_secs(120);

fn agent_with(prefix: &str, failpoint: &str) -> Agent {
    Agent::start_with_env(
        &unique_host(prefix),
        &["--allowed-registries", &registry()],
        &[("BULKHEAD_FAILPOINTS", failpoint)],
    )
}

/// Waits until the agent process has aborted at its failpoint.
async fn wait_for_crash(agent: &mut Agent) {
    let crashed = bulkhead_e2e::poll_until(START, || {
        let exited = agent.exited();
        async move { exited.then_some(()) }
    })
    .await;
    assert!(
        crashed.is_some(),
        "the agent did not hit its failpoint:\n{}",
        agent.log_tail()
    );
}

/// The uid of every Instance in the namespace.
async fn uids(ns: &TestNamespace) -> Vec<String> {
    let api: Api<Instance> = ns.api();
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i.uid().unwrap())
        .collect()
}

/// Exactly one running task per Instance, named after it, and nothing else.
async fn assert_one_task_each(agent: &Agent, ns: &TestNamespace) {
    let mut expected: Vec<String> = uids(ns)
        .await
        .into_iter()
        .map(|u| format!("bh-{u}"))
        .collect();
    expected.sort();
    let mut running: Vec<String> = tasks(&agent.namespace)
        .into_iter()
        .filter(|t| t.2 == "RUNNING")
        .map(|t| t.0)
        .collect();
    running.sort();
    assert_eq!(running, expected, "tasks vs Instances");
    let mut cs = containers(&agent.namespace);
    cs.sort();
    assert_eq!(cs, expected, "containers vs Instances");
}

async fn crash_during_start(point: &str) {
    let mut agent = agent_with("crashstart", point);
    let ns = TestNamespace::new("crashstart").await;
    for name in ["a", "b"] {
        instance(name).on(&agent.host).create(&ns).await;
    }
    wait_for_crash(&mut agent).await;
    agent.restart_with_env(&[]);
    for name in ["a", "b"] {
        wait_for_phase(&ns, name, InstancePhase::Running, START).await;
    }
    assert_one_task_each(&agent, &ns).await;
    assert!(
        !snapshots(&agent.namespace)
            .iter()
            .any(|s| s.starts_with("extract-"))
    );
    // The allocations were rebuilt: both instances keep distinct ranges after the restart.
    let api: Api<Instance> = ns.api();
    let a = api
        .get("a")
        .await
        .unwrap()
        .status
        .unwrap()
        .isolation
        .unwrap()
        .user_namespace
        .unwrap();
    let b = api
        .get("b")
        .await
        .unwrap()
        .status
        .unwrap()
        .isolation
        .unwrap()
        .user_namespace
        .unwrap();
    assert_ne!(a.host_uid, b.host_uid);
    for name in ["a", "b"] {
        delete_and_wait(&ns, name, Duration::from_secs(60)).await;
    }
    assert!(containers(&agent.namespace).is_empty());
    ns.delete().await;
}

#[tokio::test]
async fn crash_after_pulling_layers() {
    crash_during_start("pull-after-layers").await;
}

#[tokio::test]
async fn crash_after_the_pull() {
    crash_during_start("after-pull").await;
}

#[tokio::test]
async fn crash_after_creating_the_container() {
    crash_during_start("after-create-container").await;
}

#[tokio::test]
async fn crash_after_creating_the_task() {
    crash_during_start("after-create-task").await;
}

#[tokio::test]
async fn crash_after_attaching_the_network() {
    crash_during_start("after-network").await;
}

#[tokio::test]
async fn crash_after_starting_the_task() {
    crash_during_start("after-start-task").await;
}

/// The agent's finalizer patch is sent beside a start (image, filter, allocations and
/// snapshot are prepared meanwhile) and the container is created only after its answer:
/// with the patch held back 2 s and the agent aborting right after it creates the
/// container, the Instance already holds the finalizer. (Created before the answer, the
/// container would exist 2 s before the finalizer, and a deletion in that window would
/// leave it behind.)
#[tokio::test]
async fn a_container_is_created_only_once_its_instance_holds_the_finalizer() {
    let mut agent = Agent::start_with_env(
        &unique_host("finalizer"),
        &["--allowed-registries", &registry()],
        &[
            ("BULKHEAD_FAILPOINTS", "after-create-container"),
            ("BULKHEAD_FAILPOINT_DELAYS", "finalizer-patch:2000"),
        ],
    );
    let ns = TestNamespace::new("finalizer").await;
    instance("a").on(&agent.host).create(&ns).await;
    wait_for_crash(&mut agent).await;
    let a = ns.api::<Instance>().get("a").await.unwrap();
    assert_eq!(
        containers(&agent.namespace),
        [format!("bh-{}", a.uid().unwrap())],
        "the agent aborted right after creating the container"
    );
    assert!(
        a.finalizers().iter().any(|f| f == FINALIZER_NODE_AGENT),
        "the container exists but the Instance lacks the finalizer: {:?}",
        a.finalizers()
    );
    agent.restart_with_env(&[]);
    wait_for_phase(&ns, "a", InstancePhase::Running, START).await;
    delete_and_wait(&ns, "a", Duration::from_secs(60)).await;
    assert!(containers(&agent.namespace).is_empty());
    ns.delete().await;
}

async fn crash_during_delete(point: &str) {
    let mut agent = agent_with("crashdelete", point);
    let ns = TestNamespace::new("crashdelete").await;
    // The failpoints are on the delete path only, so the start completes.
    instance("doomed")
        .on(&agent.host)
        .grace(2)
        .create(&ns)
        .await;
    instance("keeper").on(&agent.host).create(&ns).await;
    let doomed = wait_for_phase(&ns, "doomed", InstancePhase::Running, START).await;
    wait_for_phase(&ns, "keeper", InstancePhase::Running, START).await;
    let api: Api<Instance> = ns.api();
    api.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_crash(&mut agent).await;
    agent.restart_with_env(&[]);
    delete_and_wait(&ns, "doomed", Duration::from_secs(60)).await;
    let id = format!("bh-{}", doomed.uid().unwrap());
    assert!(
        !containers(&agent.namespace).contains(&id),
        "container of the deleted instance left"
    );
    assert!(
        !snapshots(&agent.namespace).contains(&id),
        "snapshot of the deleted instance left"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/pids/bulkhead/{id}")).exists(),
        "cgroup left"
    );
    assert_one_task_each(&agent, &ns).await;
    ns.delete().await;
}

#[tokio::test]
async fn crash_after_sigterm() {
    crash_during_delete("delete-after-sigterm").await;
}

#[tokio::test]
async fn crash_after_deleting_the_task() {
    crash_during_delete("delete-after-delete-task").await;
}

#[tokio::test]
async fn crash_after_deleting_the_container() {
    crash_during_delete("delete-after-delete-container").await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_instances_without_restarting_them() {
    let mut agent = agent_with("adopt", "");
    let ns = TestNamespace::new("adopt").await;
    instance("web").on(&agent.host).create(&ns).await;
    let before = wait_for_phase(&ns, "web", InstancePhase::Running, START).await;
    let pid_before = tasks(&agent.namespace)[0].1;
    agent.kill();
    agent.restart_with_env(&[]);
    agent
        .wait_for_log("adopted running containers", 2, START)
        .await;
    let after = wait_for_phase(&ns, "web", InstancePhase::Running, Duration::from_secs(30)).await;
    assert_eq!(
        tasks(&agent.namespace)[0].1,
        pid_before,
        "the instance was restarted"
    );
    let s0 = before.status.unwrap();
    let s1 = after.status.unwrap();
    assert_eq!(s0.started_at, s1.started_at);
    assert_eq!(
        s0.isolation.unwrap().user_namespace,
        s1.isolation.unwrap().user_namespace,
        "allocation changed"
    );
    ns.delete().await;
}

#[tokio::test]
async fn containers_of_vanished_or_rebound_instances_are_removed_at_restart() {
    let mut agent = agent_with("fence", "");
    let ns = TestNamespace::new("fence").await;
    for name in ["gone", "rebound", "kept"] {
        instance(name).on(&agent.host).create(&ns).await;
    }
    for name in ["gone", "rebound", "kept"] {
        wait_for_phase(&ns, name, InstancePhase::Running, START).await;
    }
    agent.kill();
    // While the agent is down: "gone" disappears (its finalizer removed by hand, as a user
    // forcing it would), "rebound" is recreated under the same name on another host.
    let api: Api<Instance> = ns.api();
    let strip = serde_json::json!({"metadata": {"finalizers": null}});
    for name in ["gone", "rebound"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        api.patch(name, &PatchParams::default(), &Patch::Merge(&strip))
            .await
            .unwrap();
    }
    let gone = bulkhead_e2e::poll_until(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            api.get_opt("rebound")
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        }
    })
    .await;
    assert!(gone.is_some());
    instance("rebound").on("some-other-host").create(&ns).await;
    agent.restart_with_env(&[]);
    agent
        .wait_for_log("adopted running containers", 2, Duration::from_secs(60))
        .await;
    let kept = api.get("kept").await.unwrap().uid().unwrap();
    let left = containers(&agent.namespace);
    assert_eq!(
        left,
        vec![format!("bh-{kept}")],
        "only the kept instance may still run here"
    );
    assert_eq!(tasks(&agent.namespace).len(), 1);
    ns.delete().await;
}
