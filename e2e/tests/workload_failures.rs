//! A Workload whose instances fail at once is replaced behind a back-off, not as fast as the
//! API server and the agent allow: the failed instance keeps its slot (and its reason) for
//! 1 s, 2 s, 4 s, ... before the next replacement.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh), whose
//! registry allow-list refuses the image: each instance fails with ImageNotAllowed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use bulkhead_crds::{Instance, InstancePhase, LABEL_WORKLOAD};
use bulkhead_e2e::{TestNamespace, manifest};
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

/// How long the churn is watched.
const WINDOW: Duration = Duration::from_secs(12);
/// Replacements at 0, 1, 3 and 7 s (delays 1, 2, 4, 8 s): at most 5 instances in the
/// window, plus one for a replacement racing the window's end. Without the back-off: one
/// every few hundred milliseconds.
const MAX_INSTANCES: usize = 6;

#[tokio::test]
async fn instances_that_fail_at_once_are_replaced_behind_a_back_off() {
    let ns = TestNamespace::new("wl-fail").await;
    let yaml = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: refused}
spec:
  owner: team-e2e
  replicas: 1
  template:
    image: localhost:5999/bulkhead/web:v1
    terminationGracePeriodSeconds: 1
"#;
    let api: Api<Instance> = ns.api();
    let selector = format!("{LABEL_WORKLOAD}=refused");
    let mut events = watcher(api.clone(), watcher::Config::default().labels(&selector))
        .applied_objects()
        .boxed();
    manifest::create(&ns.client, &ns.name, yaml).await.unwrap();

    let mut uids = BTreeSet::new();
    let mut failed_seen = 0usize;
    let mut end: Option<Instant> = None;
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let deadline = end.unwrap_or(give_up);
        let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), events.next()).await else {
            break;
        };
        let Ok(instance) = event else { continue };
        // Slot names are reused: each replacement is a new UID.
        uids.insert(instance.uid().unwrap_or_default());
        let failed = instance.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Failed);
        if failed {
            failed_seen += 1;
            // The window starts at the first failure.
            end.get_or_insert_with(|| Instant::now() + WINDOW);
        }
    }
    assert!(
        end.is_some(),
        "no instance of the Workload failed within 120 s"
    );
    assert!(
        uids.len() >= 3,
        "the failed instances are still replaced: {uids:?}"
    );
    assert!(
        uids.len() <= MAX_INSTANCES,
        "{} instances in {WINDOW:?} after the first failure (at most {MAX_INSTANCES} behind the back-off)",
        uids.len()
    );
    assert!(failed_seen > 0);
    ns.delete().await;
}
