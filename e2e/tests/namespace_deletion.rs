//! Deleting a namespace completes whatever its instances do: a Record-mode instance, whose
//! profile can no longer be written in a terminating namespace, does not hold it up.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD,
    isolation::{Seccomp, SeccompType},
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{containers, start_agent},
    client,
    fixtures::{instance, wait_for_phase},
    poll_until,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};

const START: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_namespace_with_a_recording_instance_is_deleted_within_a_minute() {
    let agent = start_agent("nsdel");
    let ns = TestNamespace::with_isolation("nsdel", "baseline").await;
    let mut rec = instance("rec").on(&agent.host).build();
    rec.spec.isolation.seccomp = Seccomp {
        type_: SeccompType::Record,
        localhost_profile: None,
    };
    rec.labels_mut()
        .insert(LABEL_WORKLOAD.to_string(), "web".to_string());
    ns.api::<Instance>()
        .create(&PostParams::default(), &rec)
        .await
        .unwrap();
    wait_for_phase(&ns, "rec", InstancePhase::Running, START).await;
    assert_eq!(containers(&agent.namespace).len(), 1);

    let namespaces: Api<Namespace> = Api::all(client().await);
    let name = ns.name.clone();
    namespaces
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    let gone = poll_until(Duration::from_secs(60), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move {
            namespaces
                .get_opt(&name)
                .await
                .ok()
                .and_then(|n| n.is_none().then_some(()))
        }
    })
    .await;
    let instance = ns.api::<Instance>().get_opt("rec").await.ok().flatten();
    assert!(
        gone.is_some(),
        "namespace {name} still exists a minute after its deletion; its instance: {:?}; agent log:\n{}",
        instance.map(|i| (i.finalizers().to_vec(), i.status)),
        agent.log_tail()
    );
    // The instance was torn down on the way, not abandoned.
    assert!(
        containers(&agent.namespace).is_empty(),
        "containers left: {:?}",
        containers(&agent.namespace)
    );
}
