//! A WorkloadService never writes, adopts or deletes a Service or EndpointSlice it does not
//! own: a `<name>-preview` Service someone else made survives a WorkloadService named like
//! it, with preview on and then off, and the WorkloadService reports `ServiceConflict`.
//!
//! Uses the local system's controller and its agent (started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, time::Duration};

use bulkhead_crds::{
    WorkloadService,
    conditions::{self, types},
};
use bulkhead_e2e::{TestNamespace, agent::image, poll_until, rollout};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

const CONVERGE: Duration = Duration::from_secs(120);

/// A plain Service, as a person would make it with kubectl.
fn someone_elses_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"team": "someone-else"}},
        "spec": {"ports": [{"port": 8443, "name": "https"}], "selector": {"app": "theirs"}},
    }))
    .unwrap()
}

async fn ready_condition(api: &Api<WorkloadService>) -> Option<(String, String)> {
    let s = api.get("web").await.ok()?.status?;
    let c = conditions::find(&s.conditions, types::READY)?;
    Some((c.reason.clone(), c.message.clone()))
}

fn assert_untouched(theirs: &Service, before: &Service) {
    assert_eq!(theirs.uid(), before.uid(), "the Service was replaced");
    assert!(
        theirs.owner_references().is_empty(),
        "the Service was adopted: {:?}",
        theirs.owner_references()
    );
    assert_eq!(
        theirs.labels(),
        &BTreeMap::from([("team".to_string(), "someone-else".to_string())]),
        "the Service's labels were written"
    );
    let ports = &theirs.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(
        ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [8443],
        "the Service's ports were written"
    );
}

#[tokio::test]
async fn a_preview_service_someone_else_made_survives_a_workload_service_named_like_it() {
    let ns = TestNamespace::new("svc-conflict").await;
    let services: Api<Service> = ns.api();
    let before = services
        .create(
            &PostParams::default(),
            &someone_elses_service("web-preview"),
        )
        .await
        .unwrap();

    // The web Workload and its WorkloadService `web` with preview: true.
    rollout::create(
        &ns,
        &rollout::blue_green_yaml(
            &image("web:v1"),
            1,
            600,
            "autoPromote: true, scaleDownDelaySeconds: 0",
        ),
    )
    .await;
    let workload_services: Api<WorkloadService> = ns.api();
    let (reason, message) = poll_until(CONVERGE, || async {
        ready_condition(&workload_services)
            .await
            .filter(|(reason, _)| reason == "ServiceConflict")
    })
    .await
    .expect("the WorkloadService reports the conflict");
    eprintln!("{reason}: {message}");
    assert!(
        message.contains(&format!("Service {}/web-preview", ns.name))
            && message.contains("not owned by this WorkloadService"),
        "{message}"
    );

    // The active Service is published; the foreign one is untouched and gets no slice.
    let slices: Api<EndpointSlice> = ns.api();
    let active = poll_until(CONVERGE, || async {
        let s = workload_services.get("web").await.ok()?.status?;
        (!s.endpoints.is_empty()).then_some(s.endpoints)
    })
    .await
    .expect("the active endpoints are published despite the conflict");
    assert_eq!(active.len(), 1, "{active:?}");
    let ours = services.get("web").await.unwrap();
    assert_eq!(
        ours.owner_references()[0].uid,
        workload_services.get("web").await.unwrap().uid().unwrap()
    );
    assert_untouched(&services.get("web-preview").await.unwrap(), &before);
    assert!(
        slices.get_opt("web-preview").await.unwrap().is_none(),
        "a slice would add endpoints to someone else's Service"
    );

    // Preview off: the controller deletes its preview objects, never theirs.
    workload_services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"preview": false}})),
        )
        .await
        .unwrap();
    let (reason, _) = poll_until(CONVERGE, || async {
        ready_condition(&workload_services)
            .await
            .filter(|(reason, _)| reason != "ServiceConflict")
    })
    .await
    .expect("without preview there is no conflict");
    assert_eq!(reason, "EndpointsPublished");
    assert_untouched(&services.get("web-preview").await.unwrap(), &before);
    ns.delete().await;
}
