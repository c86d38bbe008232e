//! Restart policies with exponential back-off, as kubelet applies them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, InstancePhase, template::RestartPolicy};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, registry, unique_host},
    fixtures::{instance, wait_for_phase},
};
use kube::Api;

/// An agent whose back-off starts at 2 s (kubelet's 10 s would make the test slow).
fn agent() -> Agent {
    Agent::start(
        &unique_host("restarts"),
        &[
            "--allowed-registries",
            &registry(),
            "--restart-backoff-seconds",
            "2",
        ],
    )
}

#[tokio::test]
async fn on_failure_restarts_with_growing_delays_and_reports_crash_loop() {
    let agent = agent();
    let ns = TestNamespace::new("restarts").await;
    instance("flaky")
        .on(&agent.host)
        .restart(RestartPolicy::OnFailure)
        .args(&["sh", "-c", "exit 1"])
        .create(&ns)
        .await;
    let api: Api<Instance> = ns.api();
    // Sample the status; note each new start time.
    let mut starts: Vec<i64> = vec![];
    let mut saw_crash_loop = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while starts.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} starts seen: {starts:?}",
            starts.len()
        );
        let s = api.get("flaky").await.unwrap().status.unwrap_or_default();
        saw_crash_loop |= s.reason.as_deref() == Some("CrashLoopBackOff");
        if let Some(t) = s.started_at.map(|t| t.0.as_second())
            && starts.last() != Some(&t)
        {
            starts.push(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "delays between restarts must grow: {gaps:?}"
    );
    assert!(saw_crash_loop, "a waiting instance shows CrashLoopBackOff");
    let s = api.get("flaky").await.unwrap().status.unwrap();
    assert!(s.restart_count >= 3, "{s:?}");
    assert_eq!(s.last_exit.unwrap().exit_code, 1);
    ns.delete().await;
}

#[tokio::test]
async fn always_restarts_even_after_success_and_never_does_not() {
    let agent = agent();
    let ns = TestNamespace::new("restarts").await;
    instance("again")
        .on(&agent.host)
        .restart(RestartPolicy::Always)
        .args(&["sh", "-c", "exit 0"])
        .create(&ns)
        .await;
    instance("once")
        .on(&agent.host)
        .restart(RestartPolicy::Never)
        .args(&["sh", "-c", "exit 1"])
        .create(&ns)
        .await;
    let api: Api<Instance> = ns.api();
    let restarted = bulkhead_e2e::poll_until(Duration::from_secs(60), || async {
        let s = api.get("again").await.ok()?.status?;
        (s.restart_count >= 2).then_some(())
    })
    .await;
    assert!(
        restarted.is_some(),
        "Always restarts an instance that exited 0"
    );
    let once = wait_for_phase(&ns, "once", InstancePhase::Failed, Duration::from_secs(60)).await;
    assert_eq!(
        once.status.unwrap().restart_count,
        0,
        "Never never restarts"
    );
    ns.delete().await;
}
