//! A regression guard for the controller's fan-out cost: each instance a Workload gets costs
//! exactly one API write from the controller, its create, already bound to a host. No bind
//! patch (the Instance's generation stays 1), no Scheduled status write (no status entry of
//! the controller in its managedFields), and no Event per instance (one summary Event per
//! reconcile).
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, MANAGER_CONTROLLER, Workload};
use bulkhead_e2e::{TestNamespace, agent::image, manifest, rollout::census};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
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
