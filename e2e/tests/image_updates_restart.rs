//! Controllers without the registry's notifications: one dies right after it accepted a pushed
//! digest, before it recorded it or started anything (failpoint
//! `controller-after-image-accepted`), and nothing is lost: the next controller looks at every
//! followed tag once when it starts, finds the digest again and rolls it out. Another finds a
//! push by its check interval alone.
//!
//! The local system's controller is stopped (by its PID) for the duration and started again
//! by up.sh at the end, also when the test fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::workload::WorkloadPhase;
use bulkhead_e2e::{
    TestNamespace,
    controller::{LocalControllerStopped, TestController},
    rollout::*,
    signing,
};

/// The tests here stop the local system's controller: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_controller_killed_after_accepting_a_digest_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("iu-crash").await;
    let (repo, key, d1, v1) = signing::follow_signed_v1(&ns, true, 3600).await;

    // The signed v2 is pushed while no controller runs (its notification reaches nobody).
    let _local = LocalControllerStopped::stop();
    let d2 = signing::copy("bulkhead/web:v2", &repo, "candidate");
    key.sign(&repo, &d2);
    signing::copy("bulkhead/web:v2", &repo, "live");

    // A controller that looks once at start, accepts v2 and dies before recording it.
    let mut first = TestController::start("iu-crash-first", "controller-after-image-accepted", &[]);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !first.exited() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller never reached the acceptance failpoint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = status_of(&workload(&ns).await);
    assert_eq!(
        s.image_updates.unwrap().digest.as_deref(),
        Some(d1.as_str()),
        "nothing was recorded before the crash"
    );
    assert_eq!(s.preview_revision, None);
    assert_eq!(alive_revisions(&ns).await, [v1.clone(), v1.clone()]);

    // The next controller finds the digest again and rolls it out.
    drop(first);
    let _second = TestController::start("iu-crash-second", "", &[]);
    let wl = wait_for(&ns, "v2 rolled out after the restart", |wl| {
        let s = status_of(wl);
        s.phase == Some(WorkloadPhase::Healthy)
            && s.active_revision.as_deref() != Some(v1.as_str())
            && s.image_updates.and_then(|u| u.digest) == Some(d2.clone())
    })
    .await;
    let v2 = status_of(&wl).active_revision.unwrap();
    only_two_of(&ns, &v2)
        .await
        .expect("only v2 instances remain");
    ns.delete().await;
}

#[tokio::test]
async fn without_notifications_the_check_interval_finds_a_push() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("iu-interval").await;
    let (repo, key, _d1, v1) = signing::follow_signed_v1(&ns, true, 5).await;

    // A controller with no notification endpoint; it has looked at the tag (v1) once it leads.
    let _local = LocalControllerStopped::stop();
    let _quiet = TestController::start("iu-interval", "", &[]);
    let started = status_of(&workload(&ns).await)
        .image_updates
        .unwrap()
        .checked_time;
    bulkhead_e2e::poll_until(CONVERGE, || async {
        let s = status_of(&workload(&ns).await).image_updates?;
        (s.checked_time != started).then_some(())
    })
    .await
    .expect("the new controller looks at the tag");
    let d2 = signing::copy("bulkhead/web:v2", &repo, "candidate");
    key.sign(&repo, &d2);
    signing::copy("bulkhead/web:v2", &repo, "live");
    let wl = wait_for(&ns, "the interval found v2 and rolled it out", |wl| {
        let s = status_of(wl);
        s.phase == Some(WorkloadPhase::Healthy)
            && s.active_revision.as_deref() != Some(v1.as_str())
            && s.image_updates.and_then(|u| u.digest) == Some(d2.clone())
    })
    .await;
    let v2 = status_of(&wl).active_revision.unwrap();
    only_two_of(&ns, &v2)
        .await
        .expect("only v2 instances remain");
    ns.delete().await;
}
