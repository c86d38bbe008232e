//! Blue/green rollouts with the real controller and agent, under live traffic: a client polls
//! the WorkloadService's ClusterIP every 20 ms, through the local system's kube-proxy
//! (iptables mode, in its own network namespace), through the whole rollout and must see no
//! failed request and one switch from v1 to v2.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, WorkloadService,
    conditions::{self, types},
    workload::WorkloadPhase,
};
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    poll_until,
    rollout::*,
    traffic::{self},
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;

#[tokio::test]
async fn manual_promotion_switches_traffic_once_with_no_failed_request() {
    let ns = TestNamespace::new("bg-manual").await;
    let v1 = deploy_v1(&ns, false, 600).await;
    let poller = start_cluster_ip_traffic(&ns).await;

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
    wait_settled_on(&ns, &v2, "v2 active and v1 retired").await;
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
    let poller = start_cluster_ip_traffic(&ns).await;
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
    only_two_of(&ns, &v1)
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
    let poller = start_cluster_ip_traffic(&ns).await;
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
    only_two_of(&ns, &v1)
        .await
        .expect("the preview instances are deleted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = poller.stop().await;
    assert_clean(&report, &["v1"]);
    ns.delete().await;
}

#[tokio::test]
async fn going_back_while_the_old_revision_is_warm_switches_at_once() {
    let ns = TestNamespace::new("bg-back").await;
    create(
        &ns,
        &blue_green_yaml(
            &image("web:v1"),
            2,
            600,
            "autoPromote: true, scaleDownDelaySeconds: 300",
        ),
    )
    .await;
    let wl = wait_for(&ns, "web:v1 healthy", |wl| {
        status_of(wl).phase == Some(WorkloadPhase::Healthy)
    })
    .await;
    let v1 = status_of(&wl).active_revision.unwrap();
    let poller = start_cluster_ip_traffic(&ns).await;
    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    wait_for(&ns, "v2 promoted, v1 warm", |wl| {
        let s = status_of(wl);
        s.active_revision.as_deref() != Some(v1.as_str())
            && s.blue_green
                .as_ref()
                .and_then(|b| b.previous_active_revision.as_deref())
                == Some(v1.as_str())
    })
    .await;
    poll_until(CONVERGE, || async {
        (poller.snapshot().sequence() == ["v1", "v2"]).then_some(())
    })
    .await
    .expect("the client reaches v2");
    let before = alive_revisions(&ns).await;
    assert_eq!(before.len(), 4, "v1 stays warm beside v2: {before:?}");

    // Back to v1's spec: its instances are warm, so traffic switches without a new instance.
    set_template(&ns, serde_json::json!({"image": image("web:v1")})).await;
    wait_for(&ns, "v1 active again", |wl| {
        status_of(wl).active_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    assert!(
        event_reasons(&ns).await.iter().any(|r| r == "RolledBack"),
        "no RolledBack event"
    );
    poll_until(CONVERGE, || async {
        (poller.snapshot().sequence() == ["v1", "v2", "v1"]).then_some(())
    })
    .await
    .expect("the client is back on v1");
    let mut after = alive_revisions(&ns).await;
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(
        after, before,
        "no instance was created or deleted to go back"
    );
    let report = poller.stop().await;
    assert_clean(&report, &["v1", "v2", "v1"]);
    ns.delete().await;
}

#[tokio::test]
async fn an_instance_that_stops_being_ready_leaves_the_endpoints() {
    use bulkhead_crds::Instance;
    let ns = TestNamespace::new("svc-ready").await;
    // Ready while /tmp/ready exists (a writable tmpfs), so a test can take readiness away.
    let yaml = blue_green_yaml(&image("web:v1"), 2, 600, "autoPromote: true").replace(
        "    readinessProbe: {httpGet: {port: 8080, path: /}, periodSeconds: 1}",
        "    args: [sh, -c, 'busybox touch /tmp/ready && exec busybox httpd -f -p 8080 -h /www']\n    writablePaths: [/tmp]\n    readinessProbe: {exec: {command: [/bin/busybox, test, -f, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}",
    );
    create(&ns, &yaml).await;
    let services: Api<WorkloadService> = ns.api();
    let endpoints = |n: usize| {
        let services = services.clone();
        async move {
            poll_until(CONVERGE, || async {
                let s = services.get("web").await.ok()?.status?;
                (s.endpoints.len() == n).then_some(s.endpoints)
            })
            .await
        }
    };
    endpoints(2).await.expect("both instances published");
    let victim = ns
        .api::<Instance>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap();
    let status = victim.status.clone().unwrap();
    let ip = status.pod_ip.clone().unwrap();
    let container = status.container_id.clone().unwrap();
    let (code, out) = bulkhead_e2e::agent::exec(
        "bulkhead",
        &container,
        &["/bin/busybox", "rm", "/tmp/ready"],
    );
    assert_eq!(code, 0, "{out}");
    let taken = std::time::Instant::now();
    let left = endpoints(1)
        .await
        .expect("the unready instance leaves the endpoints");
    println!(
        "unready instance left the endpoints after {:.2}s (readiness period 1 s, failureThreshold 1)",
        taken.elapsed().as_secs_f64()
    );
    assert!(
        !left.iter().any(|e| e.starts_with(&format!("{ip}:"))),
        "{left:?}"
    );
    let slice = ns.api::<EndpointSlice>().get("web").await.unwrap();
    assert_eq!(traffic::addresses(&slice).len(), 1);
    let (code, out) = bulkhead_e2e::agent::exec(
        "bulkhead",
        &container,
        &["/bin/busybox", "touch", "/tmp/ready"],
    );
    assert_eq!(code, 0, "{out}");
    endpoints(2).await.expect("ready again, published again");
    ns.delete().await;
}
