//! Blue/green rollouts with the real controller and agent, under live traffic: a client polls
//! the WorkloadService's EndpointSlice every 20 ms (as kube-proxy would route) through the
//! whole rollout and must see no failed request and one switch from v1 to v2.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, Instance, LABEL_WORKLOAD, Workload, WorkloadService,
    conditions::{self, types},
    workload::WorkloadPhase,
};
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    kubectl, manifest, poll_until,
    traffic::{self, Poller, Report},
};
use k8s_openapi::api::{discovery::v1::EndpointSlice, events::v1::Event};
use kube::{Api, api::ListParams};

const CONVERGE: Duration = Duration::from_secs(120);

/// A BlueGreen Workload `web` of `image` and its WorkloadService (with preview).
fn web_yaml(image: &str, auto_promote: bool, progress_deadline: i32) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: 2
  progressDeadlineSeconds: {progress_deadline}
  template:
    image: {image}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{port: 8080, path: /}}, periodSeconds: 1}}
    terminationGracePeriodSeconds: 2
  strategy:
    type: BlueGreen
    blueGreen: {{autoPromote: {auto_promote}, scaleDownDelaySeconds: 3, abortScaleDownDelaySeconds: 2}}
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

async fn create(ns: &TestNamespace, yaml: &str) {
    for doc in yaml.split("\n---\n") {
        manifest::create(&ns.client, &ns.name, doc).await.unwrap();
    }
}

async fn workload(ns: &TestNamespace) -> Workload {
    ns.api::<Workload>().get("web").await.unwrap()
}

fn status_of(wl: &Workload) -> bulkhead_crds::WorkloadStatus {
    wl.status.clone().unwrap_or_default()
}

/// Waits until the Workload's status satisfies `f`; panics with the status otherwise.
async fn wait_for(ns: &TestNamespace, what: &str, f: impl Fn(&Workload) -> bool) -> Workload {
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

fn progressing_reason(wl: &Workload) -> String {
    conditions::find(&status_of(wl).conditions, types::PROGRESSING)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Creates web:v1 and waits until its service publishes both instances.
async fn deploy_v1(ns: &TestNamespace, auto_promote: bool, deadline: i32) -> String {
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
async fn start_traffic(ns: &TestNamespace) -> Poller {
    let poller = Poller::start(ns.client.clone(), &ns.name, "web");
    poll_until(Duration::from_secs(30), || async {
        (poller.snapshot().served() >= 10).then_some(())
    })
    .await
    .expect("the client gets answers from the service");
    poller
}

async fn set_template(ns: &TestNamespace, patch: serde_json::Value) {
    ns.api::<Workload>()
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"spec": {"template": patch}})),
        )
        .await
        .unwrap();
}

fn annotate(ns: &TestNamespace, key: &str, value: &str) {
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

fn assert_clean(report: &Report, expected: &[&str]) {
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        report.samples.len(),
        failed.first()
    );
    assert_eq!(report.sequence(), expected, "answers in order");
    println!(
        "traffic: {} requests served, 0 failed, answers {:?}, v2 first at {:?}",
        report.served(),
        report.sequence(),
        report.first("v2")
    );
}

async fn alive_revisions(ns: &TestNamespace) -> Vec<String> {
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

async fn event_reasons(ns: &TestNamespace) -> Vec<String> {
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

#[tokio::test]
async fn manual_promotion_switches_traffic_once_with_no_failed_request() {
    let ns = TestNamespace::new("bg-manual").await;
    let v1 = deploy_v1(&ns, false, 600).await;
    let poller = start_traffic(&ns).await;

    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    let wl = wait_for(&ns, "the preview is ready and waits for promotion", |wl| {
        progressing_reason(wl) == "AwaitingPromotion"
    })
    .await;
    let v2 = status_of(&wl).preview_revision.unwrap();
    assert_ne!(v1, v2);
    assert_eq!(status_of(&wl).active_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status_of(&wl).phase, Some(WorkloadPhase::Paused));

    // Before promotion the preview Service answers v2, the active one still v1.
    let services: Api<WorkloadService> = ns.api();
    let preview = poll_until(CONVERGE, || async {
        let s = services.get("web").await.ok()?.status?;
        (s.preview_endpoints.len() == 2 && s.preview_revision.as_deref() == Some(&v2))
            .then_some(s.preview_endpoints)
    })
    .await
    .expect("the WorkloadService publishes both preview instances");
    let slices: Api<EndpointSlice> = ns.api();
    let preview_slice = slices.get("web-preview").await.unwrap();
    let mut listed = traffic::addresses(&preview_slice);
    listed.sort();
    let mut expected = preview.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the preview slice lists the preview endpoints"
    );
    for endpoint in &preview {
        assert_eq!(
            traffic::get(endpoint).await.as_deref(),
            Ok("v2"),
            "{endpoint}"
        );
    }

    // Promotion waits for the command.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&workload(&ns).await).active_revision.as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(
        poller.snapshot().sequence(),
        ["v1"],
        "no v2 before promotion"
    );

    annotate(&ns, ANNOTATION_PROMOTE, &v2);
    wait_for(&ns, "v2 active and v1 retired", |wl| {
        let s = status_of(wl);
        s.active_revision.as_deref() == Some(v2.as_str()) && s.phase == Some(WorkloadPhase::Healthy)
    })
    .await;
    poll_until(CONVERGE, || async {
        (alive_revisions(&ns).await == [v2.clone(), v2.clone()]).then_some(())
    })
    .await
    .expect("only v2 instances remain");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = poller.stop().await;
    assert_clean(&report, &["v1", "v2"]);

    let reasons = event_reasons(&ns).await;
    for r in ["PreviewStarted", "PreviewReady", "Promoted", "ScaledDown"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "no {r} event in {reasons:?}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn an_abort_keeps_traffic_on_v1_and_retires_the_preview() {
    let ns = TestNamespace::new("bg-abort").await;
    let v1 = deploy_v1(&ns, false, 600).await;
    let poller = start_traffic(&ns).await;
    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    let wl = wait_for(&ns, "preview ready", |wl| {
        progressing_reason(wl) == "AwaitingPromotion"
    })
    .await;
    let v2 = status_of(&wl).preview_revision.unwrap();

    annotate(&ns, ANNOTATION_ABORT, &v2);
    let wl = wait_for(&ns, "aborted", |wl| {
        status_of(wl).phase == Some(WorkloadPhase::Degraded)
    })
    .await;
    let s = status_of(&wl);
    assert_eq!(s.active_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(s.preview_revision, None);
    let degraded = conditions::find(&s.conditions, types::DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolloutAborted")
    );
    assert!(degraded.message.contains("AbortRequested"), "{degraded:?}");
    // The preview retires after abortScaleDownDelaySeconds and is not started again.
    poll_until(CONVERGE, || async {
        (alive_revisions(&ns).await == [v1.clone(), v1.clone()]).then_some(())
    })
    .await
    .expect("the preview instances are deleted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(alive_revisions(&ns).await, [v1.clone(), v1.clone()]);
    let report = poller.stop().await;
    assert_clean(&report, &["v1"]);
    assert!(event_reasons(&ns).await.iter().any(|r| r == "Aborted"));
    ns.delete().await;
}

#[tokio::test]
async fn a_preview_that_never_gets_ready_aborts_at_the_deadline() {
    let ns = TestNamespace::new("bg-deadline").await;
    let v1 = deploy_v1(&ns, true, 15).await;
    let poller = start_traffic(&ns).await;
    // v2 whose readiness probe asks a port nobody listens on.
    let patched = k8s_openapi::jiff::Timestamp::now().as_second();
    set_template(
        &ns,
        serde_json::json!({
            "image": image("web:v2"),
            "readinessProbe": {"httpGet": {"port": 9999, "path": "/"}, "periodSeconds": 1},
        }),
    )
    .await;
    let wl = wait_for(&ns, "aborted at the deadline", |wl| {
        status_of(wl).phase == Some(WorkloadPhase::Degraded)
    })
    .await;
    let s = status_of(&wl);
    assert_eq!(s.active_revision.as_deref(), Some(v1.as_str()));
    let bg = s.blue_green.clone().unwrap();
    assert_eq!(bg.abort_reason.as_deref(), Some("ProgressDeadlineExceeded"));
    // progressDeadlineSeconds (15) after the preview started, not before.
    let after = bg.aborted_time.unwrap().0.as_second() - patched;
    assert!(after >= 14, "aborted {after}s after the new spec");
    let degraded = conditions::find(&s.conditions, types::DEGRADED).unwrap();
    assert_eq!(degraded.reason, "RolloutAborted");
    // No v2 instance is left once abortScaleDownDelaySeconds passed.
    poll_until(CONVERGE, || async {
        (alive_revisions(&ns).await == [v1.clone(), v1.clone()]).then_some(())
    })
    .await
    .expect("the preview instances are deleted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = poller.stop().await;
    assert_clean(&report, &["v1"]);
    ns.delete().await;
}
