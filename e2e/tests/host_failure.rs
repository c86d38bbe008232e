//! A host dies: its agent is killed and its instances' processes with it. The controller
//! notices the expired Lease, marks the host not ready and its instances Lost, and replaces
//! them on the other host. When the dead host's agent comes back it tears the Lost instances
//! down (fencing) and nothing runs twice.
//!
//! Two test agents (hosts A and B, each with its own containerd namespace, state dir and CNI
//! subnet) with Leases of 8 s; the local system's controller with a 10 s grace (up.sh). The
//! local system's own host is cordoned for the duration so that the Workload lands on A and B.
//!
//! Also here, because it needs the same two hosts: draining a host replaces its instances
//! elsewhere before they go, under live traffic.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use bulkhead_crds::{
    Host, Instance, InstancePhase, LABEL_WORKLOAD,
    conditions::{self, types},
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, containers, image, registry, tasks, unique_host},
    manifest, poll_until,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

const CONVERGE: Duration = Duration::from_secs(120);

async fn set_unschedulable(hosts: &Api<Host>, name: &str, unschedulable: bool) {
    hosts
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
        .unwrap();
}

/// Uncordons the local system's host when the test ends, also when it fails (with kubectl:
/// the test's async client cannot run while its runtime unwinds).
struct Uncordon(String);

impl Drop for Uncordon {
    fn drop(&mut self) {
        let out = bulkhead_e2e::kubectl([
            "patch",
            "host",
            &self.0,
            "--type=merge",
            "-p",
            r#"{"spec":{"unschedulable":false}}"#,
        ]);
        if !out.status.success() {
            eprintln!(
                "uncordoning {}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// (instance, host, phase, deleting) of the Workload's instances.
async fn placement(api: &Api<Instance>) -> Vec<(String, String, Option<InstancePhase>, bool)> {
    api.list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| {
            (
                i.name_any(),
                i.spec.host_name.clone().unwrap_or_default(),
                i.status.as_ref().and_then(|s| s.phase),
                i.metadata.deletion_timestamp.is_some(),
            )
        })
        .collect()
}

fn running_on(p: &[(String, String, Option<InstancePhase>, bool)], host: &str) -> usize {
    p.iter()
        .filter(|(_, h, phase, deleting)| {
            h == host && *phase == Some(InstancePhase::Running) && !deleting
        })
        .count()
}

/// Both tests cordon the local system's host: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two schedulable test agents, with the local system's host cordoned until the guard drops.
async fn two_hosts(hosts: &Api<Host>, a: &str, b: &str) -> (Agent, Agent, Uncordon) {
    let local = "local-1";
    set_unschedulable(hosts, local, true).await;
    let uncordon = Uncordon(local.to_string());
    let flags = ["--allowed-registries", &registry()];
    let a = Agent::start(&unique_host(a), &flags);
    let b = Agent::start(&unique_host(b), &flags);
    for agent in [&a, &b] {
        // As long as a start: under the full suite's load an agent's start-up sweep of
        // the shared containerd has taken 30 s (its log line "adopted running containers"
        // says how long each step took).
        poll_until(Duration::from_secs(120), || async {
            let h = hosts.get(&agent.host).await.ok()?;
            conditions::is_true(&h.status?.conditions, types::READY).then_some(())
        })
        .await
        .expect("the agent registers its host");
        set_unschedulable(hosts, &agent.host, false).await;
    }
    (a, b, uncordon)
}

#[tokio::test]
async fn draining_a_host_replaces_its_instances_elsewhere_first() {
    use bulkhead_e2e::rollout::{assert_clean, create, start_traffic, web_yaml};
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("host-drain").await;
    let hosts: Api<Host> = Api::all(ns.client.clone());
    let (a, b, _uncordon) = two_hosts(&hosts, "drained", "stays").await;
    create(&ns, &web_yaml(&image("web:v1"), true, 600)).await;
    let instances: Api<Instance> = ns.api();
    poll_until(CONVERGE, || async {
        let p = placement(&instances).await;
        (running_on(&p, &a.host) == 1 && running_on(&p, &b.host) == 1).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not spread over A and B"));
    let poller = start_traffic(&ns).await;

    // The documented drain: cordon, then annotate.
    set_unschedulable(&hosts, &a.host, true).await;
    let out = bulkhead_e2e::kubectl(["annotate", "host", &a.host, "bulkhead.dev/drain=true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Throughout, two instances stay Running; at the end both are on B.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let p = placement(&instances).await;
        let running = running_on(&p, &a.host) + running_on(&p, &b.host);
        assert!(running >= 2, "fewer than 2 running during the drain: {p:?}");
        if running_on(&p, &b.host) == 2 && p.iter().all(|(_, h, ..)| *h == b.host) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained: {p:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        containers(&a.namespace).is_empty(),
        "host A still runs containers"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_clean(&poller.stop().await, &["v1"]);
    ns.delete().await;
}

#[tokio::test]
async fn instances_of_a_dead_host_are_replaced_and_fenced_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("host-failure").await;
    let hosts: Api<Host> = Api::all(ns.client.clone());
    let (mut a, b, _uncordon) = two_hosts(&hosts, "dies", "lives").await;

    manifest::create(
        &ns.client,
        &ns.name,
        &format!(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: 2
  template: {{image: "{}", terminationGracePeriodSeconds: 2}}
"#,
            image("web:v1")
        ),
    )
    .await
    .unwrap();
    let instances: Api<Instance> = ns.api();
    // The scheduler spreads the Workload: one instance on each host.
    poll_until(CONVERGE, || async {
        let p = placement(&instances).await;
        (running_on(&p, &a.host) == 1 && running_on(&p, &b.host) == 1).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not spread over A and B"));
    let doomed: Vec<String> = placement(&instances)
        .await
        .into_iter()
        .filter(|(_, h, _, _)| *h == a.host)
        .map(|(n, ..)| n)
        .collect();

    // Host A dies: its agent and every process it started.
    let died = Instant::now();
    a.kill();
    for (_, pid, _) in tasks(&a.namespace) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }

    // Replaced on B.
    poll_until(CONVERGE, || async {
        let p = placement(&instances).await;
        (running_on(&p, &b.host) == 2).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not replaced on B: {:?}", a.host));
    let replaced_after = died.elapsed();
    println!(
        "host {} died; its instance ran again on {} after {:.1}s (lease 8s + grace 10s)",
        a.host,
        b.host,
        replaced_after.as_secs_f64()
    );
    let host_a = hosts.get(&a.host).await.unwrap().status.unwrap();
    let ready = conditions::find(&host_a.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "HostLeaseExpired")
    );
    let old = instances.get(&doomed[0]).await.unwrap();
    assert_eq!(
        old.status.as_ref().and_then(|s| s.phase),
        Some(InstancePhase::Lost)
    );
    assert!(
        old.metadata.deletion_timestamp.is_some(),
        "the Lost instance is being deleted, held by the dead agent's finalizer"
    );

    // Host A comes back: it tears the Lost instance down before it reports Ready.
    a.restart();
    poll_until(CONVERGE, || async {
        instances
            .get_opt(&doomed[0])
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the Lost instance was not released:\n{}", a.log_tail()));
    assert!(
        containers(&a.namespace).is_empty(),
        "host A still has containers: {:?}",
        containers(&a.namespace)
    );
    poll_until(Duration::from_secs(30), || async {
        let h = hosts.get(&a.host).await.ok()?;
        conditions::is_true(&h.status?.conditions, types::READY).then_some(())
    })
    .await
    .expect("host A is Ready again");
    // Nothing runs twice: the Workload has exactly its two instances, both on B.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = placement(&instances).await;
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(running_on(&p, &b.host), 2, "{p:?}");
    assert!(tasks(&a.namespace).is_empty());
    ns.delete().await;
}

/// An Instance being deleted whose Host no longer exists loses the agent's finalizer (no
/// agent will ever remove it), read from the controller's shared store, not a LIST; one bound
/// to a Host that still exists keeps it (the control: the pass does not release everything).
#[tokio::test]
async fn a_deleted_instance_of_a_gone_host_loses_the_agent_finalizer() {
    use bulkhead_crds::FINALIZER_NODE_AGENT;
    use kube::api::{DeleteParams, PostParams};
    let ns = TestNamespace::new("orphan").await;
    let hosts: Api<Host> = Api::all(ns.client.clone());
    let kept_host = unique_host("orphan-kept");
    let host: Host = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Host",
        "metadata": {"name": kept_host}, "spec": {"unschedulable": true},
    }))
    .unwrap();
    hosts.create(&PostParams::default(), &host).await.unwrap();
    let api: Api<Instance> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, on) in [
        ("of-gone", "orphan-no-such-host"),
        ("of-kept", kept_host.as_str()),
    ] {
        let mut i = bulkhead_e2e::fixtures::instance(name).on(on).build();
        i.metadata.finalizers = Some(vec![FINALIZER_NODE_AGENT.to_string()]);
        api.create(&PostParams::default(), &i).await.unwrap();
        api.delete(name, &DeleteParams::background()).await.unwrap();
    }
    // The controller looks every 60 s.
    let released = poll_until(Duration::from_secs(150), || async {
        api.get_opt("of-gone")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let kept = api.get_opt("of-kept").await.unwrap();
    // Clean up before asserting.
    if kept.is_some() {
        let _ = api
            .patch(
                "of-kept",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    let _ = hosts.delete(&kept_host, &DeleteParams::default()).await;
    assert!(
        released.is_some(),
        "the instance of a gone host kept the agent's finalizer for 150 s"
    );
    let kept = kept.expect("the instance of an existing host was released");
    assert!(kept.finalizers().iter().any(|f| f == FINALIZER_NODE_AGENT));
    ns.delete().await;
}
