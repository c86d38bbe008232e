//! The controller dies in the middle of a promotion — right after it recorded the switch in
//! the Workload's status, before any Service followed (failpoint `controller-after-promote`).
//! Traffic stays on exactly one revision; a new controller finishes the rollout; the 20 ms
//! client sees no failed request and one switch.
//!
//! The local system's controller is stopped (by its PID) for the duration and started again
//! by up.sh at the end, also when the test fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::WorkloadService;
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    controller::{LocalControllerStopped, TestController},
    rollout::*,
    traffic::addresses,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;

#[tokio::test]
async fn a_controller_killed_during_promotion_leaves_traffic_on_one_revision() {
    let ns = TestNamespace::new("bg-crash").await;
    let _local = LocalControllerStopped::stop();
    let mut first = TestController::start("crash-first", "controller-after-promote", &[]);

    let v1 = deploy_v1(&ns, true, 600).await;
    let poller = start_traffic(&ns).await;
    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;

    // The first controller promotes, records it, and dies at the failpoint.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !first.exited() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller never reached the promotion failpoint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wl = workload(&ns).await;
    let v2 = status_of(&wl).active_revision.unwrap();
    assert_ne!(v1, v2, "the switch was recorded before the crash");
    // No Service followed: the slice still lists v1 only, and v1 still serves.
    let services: Api<WorkloadService> = ns.api();
    let published = services.get("web").await.unwrap().status.unwrap();
    assert_eq!(published.active_revision.as_deref(), Some(v1.as_str()));
    let slice = ns.api::<EndpointSlice>().get("web").await.unwrap();
    assert_eq!(addresses(&slice).len(), 2);
    let during = poller.snapshot();
    assert!(during.failed().is_empty(), "{:?}", during.failed().first());
    assert_eq!(during.sequence(), ["v1"]);

    // A new controller (after the dead one's leader Lease expires) finishes the rollout.
    let _second = TestController::start("crash-second", "", &[]);
    wait_settled_on(&ns, &v2, "the rollout completes after the restart").await;
    let published = services.get("web").await.unwrap().status.unwrap();
    assert_eq!(published.active_revision.as_deref(), Some(v2.as_str()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = poller.stop().await;
    assert_clean(&report, &["v1", "v2"]);
    ns.delete().await;
}
