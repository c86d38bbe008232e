//! A start that fails on the host is retried behind a growing delay, with the error in the
//! Instance's status, and never spins: each attempt writes the status, and without the
//! agent's back-off every write would start the next attempt at once (seen on a kind node,
//! where the agent wrote 20 status updates a second for each broken instance).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use bulkhead_crds::{Instance, InstancePhase};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, unique_host},
    fixtures::{instance, wait_for_phase},
    poll_until,
};
use futures::StreamExt;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};

const START: Duration = Duration::from_secs(120);
/// How long the failing instance is watched.
const WINDOW: Duration = Duration::from_secs(10);
/// Attempts in [`WINDOW`] with delays of 1, 2, 4 and 8 s: at most 4, each writing the status
/// at most three times (Pulling, Starting, the error). Without the gate: hundreds.
const MAX_WRITES: usize = 14;

#[tokio::test]
async fn a_start_failing_on_the_host_backs_off_and_spares_its_neighbour() {
    // A node root without the snapshot directories: making an instance's writable mount
    // points fails there (as a read-only one did in a kind node), and nothing else does.
    let root = tempfile::tempdir().unwrap();
    let root_flag = format!("--cni-root={}", root.path().display());
    let agent = Agent::start(&unique_host("backoff"), &["--no-network", &root_flag]);
    let ns = TestNamespace::new("backoff").await;
    instance("good").on(&agent.host).create(&ns).await;
    instance("bad")
        .on(&agent.host)
        .writable("/var/cache/app")
        .create(&ns)
        .await;

    let api: Api<Instance> = ns.api();
    let failed = poll_until(START, || {
        let api = api.clone();
        async move {
            let s = api.get("bad").await.ok()?.status?;
            (s.reason.as_deref() == Some("StartFailed")).then_some(s)
        }
    })
    .await
    .expect("bad never reported StartFailed");
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("writable mount points") && message.contains("next attempt in"),
        "{message}"
    );
    assert_eq!(failed.phase, Some(InstancePhase::Starting));

    let writes = status_writes(&api, "bad", WINDOW).await;
    assert!(
        (1..=MAX_WRITES).contains(&writes),
        "{writes} status writes of the failing instance in {WINDOW:?} (at most {MAX_WRITES} with the back-off; at least one shows it still retries)"
    );
    wait_for_phase(&ns, "good", InstancePhase::Running, START).await;
    ns.delete().await;
}

/// How many changes of `name` a watch sees within `window`.
async fn status_writes(api: &Api<Instance>, name: &str, window: Duration) -> usize {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), cfg).applied_objects().boxed();
    let end = Instant::now() + window;
    let mut versions = std::collections::BTreeSet::new();
    let mut first = None;
    while let Ok(Some(event)) = tokio::time::timeout_at(end.into(), events.next()).await {
        let Ok(obj) = event else { continue };
        let version = obj.metadata.resource_version.unwrap_or_default();
        // The watch's initial list is the state before the window, not a write within it.
        if first.is_none() {
            first = Some(version);
            continue;
        }
        versions.insert(version);
    }
    versions.len()
}
