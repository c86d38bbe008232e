//! Helpers for blue/green rollout tests: the `web` Workload with its WorkloadService, waits on
//! its status, and the 20 ms client.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test helpers: a panic is the report

use std::time::Duration;

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD, Workload, WorkloadService,
    conditions::{self, types},
    workload::WorkloadPhase,
};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};

use crate::{
    TestNamespace,
    agent::image,
    kubectl, manifest, poll_until,
    traffic::{Poller, Report},
};

/// How long a rollout step may take.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// A BlueGreen Workload `web` of `image` and its WorkloadService (with preview).
pub fn web_yaml(image: &str, auto_promote: bool, progress_deadline: i32) -> String {
    blue_green_yaml(
        image,
        2,
        progress_deadline,
        &format!(
            "autoPromote: {auto_promote}, scaleDownDelaySeconds: 3, abortScaleDownDelaySeconds: 2"
        ),
    )
}

/// A BlueGreen Workload `web` of `image` with `replicas` and its WorkloadService (with
/// preview); `blue_green` is the body of `strategy.blueGreen` as flow YAML
/// (e.g. `autoPromote: true, scaleDownDelaySeconds: 0`).
pub fn blue_green_yaml(
    image: &str,
    replicas: i32,
    progress_deadline: i32,
    blue_green: &str,
) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: {replicas}
  progressDeadlineSeconds: {progress_deadline}
  template:
    image: {image}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{port: 8080, path: /}}, periodSeconds: 1}}
    terminationGracePeriodSeconds: 2
  strategy:
    type: BlueGreen
    blueGreen: {{{blue_green}}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: WorkloadService
metadata: {{name: web}}
spec:
  workloadName: web
  preview: true
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
    )
}

/// Creates every document of a multi-document YAML in the namespace.
pub async fn create(ns: &TestNamespace, yaml: &str) {
    for doc in yaml.split("\n---\n") {
        manifest::create(&ns.client, &ns.name, doc).await.unwrap();
    }
}

/// The `web` Workload as stored.
pub async fn workload(ns: &TestNamespace) -> Workload {
    ns.api::<Workload>().get("web").await.unwrap()
}

/// Its status, empty when none was written yet.
pub fn status_of(wl: &Workload) -> bulkhead_crds::WorkloadStatus {
    wl.status.clone().unwrap_or_default()
}

/// Waits until the Workload's status satisfies `f`; panics with the status otherwise.
pub async fn wait_for(ns: &TestNamespace, what: &str, f: impl Fn(&Workload) -> bool) -> Workload {
    let found = poll_until(CONVERGE, || async {
        let wl = workload(ns).await;
        f(&wl).then_some(wl)
    })
    .await;
    match found {
        Some(wl) => wl,
        None => panic!("{what}: {:#?}", status_of(&workload(ns).await)),
    }
}

/// The reason of its Progressing condition.
pub fn progressing_reason(wl: &Workload) -> String {
    conditions::find(&status_of(wl).conditions, types::PROGRESSING)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Creates web:v1 and waits until its service publishes both instances.
pub async fn deploy_v1(ns: &TestNamespace, auto_promote: bool, deadline: i32) -> String {
    create(ns, &web_yaml(&image("web:v1"), auto_promote, deadline)).await;
    let wl = wait_for(ns, "web:v1 healthy", |wl| {
        status_of(wl).phase == Some(WorkloadPhase::Healthy)
    })
    .await;
    let v1 = status_of(&wl).active_revision.unwrap();
    let services: Api<WorkloadService> = ns.api();
    poll_until(CONVERGE, || async {
        let s = services.get("web").await.ok()?.status?;
        (s.endpoints.len() == 2 && s.active_revision.as_deref() == Some(v1.as_str())).then_some(())
    })
    .await
    .expect("the WorkloadService publishes both v1 instances");
    v1
}

/// Starts the 20 ms client and waits until it has been answered by v1 a few times.
pub async fn start_traffic(ns: &TestNamespace) -> Poller {
    let poller = Poller::start(ns.client.clone(), &ns.name, "web");
    poll_until(Duration::from_secs(30), || async {
        (poller.snapshot().served() >= 10).then_some(())
    })
    .await
    .expect("the client gets answers from the service");
    poller
}

/// Starts the 20 ms client on `web`'s ClusterIP (through the local system's kube-proxy) and
/// waits until it has been answered by v1 a few times.
pub async fn start_cluster_ip_traffic(ns: &TestNamespace) -> Poller {
    let poller = Poller::cluster_ip(ns.client.clone(), &ns.name, "web")
        .await
        .unwrap();
    poll_until(Duration::from_secs(30), || async {
        (poller.snapshot().served() >= 10).then_some(())
    })
    .await
    .expect("the client gets answers through the ClusterIP");
    poller
}

/// Merge-patches `web`'s template.
pub async fn set_template(ns: &TestNamespace, patch: serde_json::Value) {
    ns.api::<Workload>()
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"spec": {"template": patch}})),
        )
        .await
        .unwrap();
}

/// `kubectl annotate workload/web key=value --overwrite`: the documented promote/abort command.
pub fn annotate(ns: &TestNamespace, key: &str, value: &str) {
    let out = kubectl([
        "annotate",
        "-n",
        &ns.name,
        "workload/web",
        &format!("{key}={value}"),
        "--overwrite",
    ]);
    assert!(
        out.status.success(),
        "kubectl annotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that no request failed or was slow, and that the answers came in `expected` order.
pub fn assert_clean(report: &Report, expected: &[&str]) {
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        report.samples.len(),
        failed.first()
    );
    let slow = report.slow();
    assert!(
        slow.is_empty(),
        "{} of {} requests answered after {:?}: {slow:?}",
        slow.len(),
        report.samples.len(),
        crate::traffic::SLOW
    );
    assert_eq!(report.sequence(), expected, "answers in order");
    println!(
        "traffic: {} requests served, 0 failed, answers {:?}, v2 first at {:?}",
        report.served(),
        report.sequence(),
        report.first("v2")
    );
}

/// The revision of every `web` instance not being deleted.
pub async fn alive_revisions(ns: &TestNamespace) -> Vec<String> {
    ns.api::<Instance>()
        .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| i.spec.revision.clone())
        .collect()
}

/// Waits until the instances of `web` that are not being deleted are exactly two, both of
/// `revision`; None after [`CONVERGE`].
pub async fn only_two_of(ns: &TestNamespace, revision: &str) -> Option<()> {
    poll_until(CONVERGE, || async {
        (alive_revisions(ns).await == [revision, revision]).then_some(())
    })
    .await
}

/// Waits until `revision` is active with `web` Healthy, then until only its two instances
/// remain; `what` names the first wait in a failure.
pub async fn wait_settled_on(ns: &TestNamespace, revision: &str, what: &str) {
    wait_for(ns, what, |wl| {
        let s = status_of(wl);
        s.active_revision.as_deref() == Some(revision)
            && s.phase == Some(bulkhead_crds::workload::WorkloadPhase::Healthy)
    })
    .await;
    only_two_of(ns, revision)
        .await
        .expect("only instances of the active revision remain");
}

/// The reasons of the Events about `web`.
pub async fn event_reasons(ns: &TestNamespace) -> Vec<String> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter_map(|e| e.reason.clone())
        .collect()
}

/// (running-and-ready, alive, images of the alive, hosts of the alive) of a Workload's
/// instances; Failed, Succeeded and deleting ones are not alive.
pub async fn census(
    api: &Api<Instance>,
    workload: &str,
) -> (usize, usize, Vec<String>, Vec<String>) {
    let list = api
        .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}={workload}")))
        .await
        .unwrap();
    let alive: Vec<&Instance> = list
        .items
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            !matches!(
                i.status.as_ref().and_then(|s| s.phase),
                Some(InstancePhase::Failed | InstancePhase::Succeeded)
            )
        })
        .collect();
    let ready = alive
        .iter()
        .filter(|i| {
            i.status.as_ref().is_some_and(|s| {
                s.phase == Some(InstancePhase::Running)
                    && conditions::is_true(&s.conditions, conditions::types::READY)
            })
        })
        .count();
    (
        ready,
        alive.len(),
        alive
            .iter()
            .map(|i| i.spec.template.image.clone())
            .collect(),
        alive
            .iter()
            .map(|i| i.spec.host_name.clone().unwrap_or_default())
            .collect(),
    )
}
