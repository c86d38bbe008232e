//! A regression guard for the controller's fan-out cost: each instance a Workload gets costs
//! exactly one API write from the controller, its create, already bound to a host. No bind
//! patch (the Instance's generation stays 1), no Scheduled status write (no status entry of
//! the controller in its managedFields), and no Event per instance (one summary Event per
//! reconcile). And the Workload's own status: while a scale only moves its counts, it is
//! written at most once a second, not once per instance event.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bulkhead_crds::{Instance, MANAGER_CONTROLLER, Workload, WorkloadStatus};
use bulkhead_e2e::{TestNamespace, agent::image, manifest, rollout::census};
use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};

const CONVERGE: Duration = Duration::from_secs(120);

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
    image: {}
    terminationGracePeriodSeconds: 2
"#,
        image("web:v1")
    )
}

/// Waits until `alive` instances of `web` exist, all ready.
async fn wait_ready(api: &Api<Instance>, alive: usize) {
    let ok = bulkhead_e2e::poll_until(CONVERGE, || async {
        let c = census(api, "web").await;
        (c.0 == alive && c.1 == alive).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "web did not reach {alive} ready: {:?}",
        census(api, "web").await
    );
}

/// Every controller write to each instance, as its managedFields and generation record them.
fn assert_one_write_each(instances: &[Instance]) {
    for i in instances {
        let name = i.name_any();
        assert!(i.spec.host_name.is_some(), "{name} is not bound");
        assert_eq!(
            i.metadata.generation,
            Some(1),
            "{name}: its spec was written after its create (a bind patch?)"
        );
        let mine: Vec<_> = i
            .managed_fields()
            .iter()
            .filter(|m| m.manager.as_deref() == Some(MANAGER_CONTROLLER))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "{name}: the controller wrote more than its create: {mine:?}"
        );
        assert_eq!(mine[0].operation.as_deref(), Some("Update"), "{name}");
        assert_eq!(
            mine[0].subresource, None,
            "{name}: the controller wrote its status"
        );
    }
}

/// The controller's `Created` Events about `web`: (how many times each was published, its
/// note). A repeated Event is one object whose series counts the repeats (each repeat is
/// one API write).
async fn created_events(ns: &TestNamespace) -> Vec<(i32, String)> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter(|e| e.reason.as_deref() == Some("Created"))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (count, e.note.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn each_created_instance_costs_one_controller_write() {
    let ns = TestNamespace::new("writes").await;
    let api: Api<Instance> = ns.api();
    manifest::create(&ns.client, &ns.name, &workload_yaml(6))
        .await
        .unwrap();
    wait_ready(&api, 6).await;
    set_replicas(&ns, 10).await;
    wait_ready(&api, 10).await;

    let instances = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(instances.len(), 10);
    assert_one_write_each(&instances);

    // One summary Event per reconcile that created (here about one per scale step), not one
    // per instance.
    let events = created_events(&ns).await;
    let published: i32 = events.iter().map(|(n, _)| n).sum();
    assert!(
        (1..5).contains(&published),
        "expected a few summary Events for 10 instances, got {published}: {events:?}"
    );
    let first = &events[0].1;
    assert!(
        first.starts_with("created 6 instances of revision "),
        "{first}"
    );
    ns.delete().await;
}

async fn set_replicas(ns: &TestNamespace, replicas: i32) {
    ns.api::<Workload>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Every distinct status of Workload `web` a watch sees from now on, in order, with when.
type Seen = Arc<Mutex<Vec<(Instant, WorkloadStatus)>>>;

fn watch_statuses(ns: &TestNamespace) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let api: Api<Workload> = ns.api();
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let stream =
            watcher(api, watcher::Config::default().fields("metadata.name=web")).applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(wl)) = stream.next().await {
            let status = wl.status.unwrap_or_default();
            let mut seen = out.lock().unwrap();
            if seen.last().map(|(_, s)| s) != Some(&status) {
                seen.push((Instant::now(), status));
            }
        }
    });
    (seen, task)
}

/// What is not a count: a status that differs from another only in counts (and the
/// messages quoting them) has the same key.
fn beyond_counts(s: &WorkloadStatus) -> impl PartialEq + std::fmt::Debug {
    let conditions: Vec<_> = s
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    (
        s.observed_generation,
        s.phase,
        (s.active_revision.clone(), s.update_revision.clone()),
        conditions,
    )
}

#[tokio::test]
async fn a_scale_writes_the_workload_status_once_a_second_while_only_counts_move() {
    const REPLICAS: i32 = 24;
    let ns = TestNamespace::new("paced").await;
    let api: Api<Instance> = ns.api();
    manifest::create(&ns.client, &ns.name, &workload_yaml(0))
        .await
        .unwrap();
    let workloads: Api<Workload> = ns.api();
    let at_rest = || async {
        let wl = workloads.get("web").await.ok()?;
        let s = wl.status.as_ref()?;
        (s.observed_generation == wl.metadata.generation
            && [s.replicas, s.ready_replicas, s.available_replicas]
                .iter()
                .all(|&n| n == wl.spec.replicas))
        .then_some(())
    };
    assert!(bulkhead_e2e::poll_until(CONVERGE, at_rest).await.is_some());
    let (seen, watch) = watch_statuses(&ns);
    // The watch's first event is the status as it stands.
    let watching = || async { (!seen.lock().unwrap().is_empty()).then_some(()) };
    assert!(bulkhead_e2e::poll_until(CONVERGE, watching).await.is_some());

    set_replicas(&ns, REPLICAS).await;
    wait_ready(&api, REPLICAS as usize).await;
    // The settled status (every count at the replicas) is written at once, not held back.
    assert!(
        bulkhead_e2e::poll_until(CONVERGE, at_rest).await.is_some(),
        "the Workload status did not settle at {REPLICAS}: {:?}",
        workloads.get("web").await.unwrap().status
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();

    let seen = seen.lock().unwrap().clone();
    let t0 = seen[0].0;
    let steps: Vec<String> = seen
        .iter()
        .map(|(t, s)| {
            format!(
                "{:.2}s {}/{}/{}",
                (*t - t0).as_secs_f64(),
                s.replicas,
                s.ready_replicas,
                s.available_replicas
            )
        })
        .collect();
    assert!(seen.len() >= 3, "too few status writes to judge: {steps:?}");
    // Writes that moved only counts, short of the settled status: at most one a second
    // (counted against the span the watch saw them in, plus two for its jitter). Unpaced, 24
    // instances made about one write each, milliseconds apart.
    let counts_only = seen
        .windows(2)
        .filter(|pair| {
            let (before, after) = (&pair[0].1, &pair[1].1);
            let settled = after.ready_replicas == REPLICAS && after.available_replicas == REPLICAS;
            beyond_counts(before) == beyond_counts(after) && !settled
        })
        .count();
    let span = (seen.last().unwrap().0 - t0).as_secs_f64();
    assert!(
        counts_only as f64 <= span + 2.0,
        "{counts_only} writes of counts alone in {span:.2} s: {steps:?}"
    );
    assert_eq!(seen.last().unwrap().1.ready_replicas, REPLICAS, "{steps:?}");
    ns.delete().await;
}
