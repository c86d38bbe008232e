//! The one-step workflow through a Workload: record it, switch it to the recorded profile,
//! and roll a new profile version out only as a new revision.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{process::Command, time::Duration};

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD, SeccompProfile, Workload, isolation::SeccompType,
};
use bulkhead_e2e::{TestNamespace, agent::image, manifest, poll_until};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};

const CONVERGE: Duration = Duration::from_secs(180);

fn http_ok(ip: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "--max-time", "3", &format!("http://{ip}:8080/")])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "v1")
}

/// Waits for the server, then 20 requests that must all succeed.
async fn load(ip: &str) {
    let up = poll_until(Duration::from_secs(20), || async {
        http_ok(ip).then_some(())
    })
    .await;
    assert!(up.is_some(), "web at {ip} never answered");
    for n in 0..20 {
        assert!(http_ok(ip), "request {n} to {ip} failed");
    }
}

/// The only live (not finishing, not deleted) instance of the workload, once it runs with
/// `check` true and no other is alive.
async fn sole_running(
    api: &Api<Instance>,
    check: impl Fn(&Instance) -> bool,
    what: &str,
) -> Instance {
    let found = poll_until(CONVERGE, || async {
        let list = api
            .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
            .await
            .ok()?;
        let alive: Vec<Instance> = list
            .items
            .into_iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .collect();
        match alive.as_slice() {
            [only]
                if only.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Running)
                    && check(only) =>
            {
                Some(only.clone())
            }
            _ => None,
        }
    })
    .await;
    match found {
        Some(i) => i,
        None => {
            let all: Vec<_> = api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|i| {
                    (
                        i.name_any(),
                        i.spec.seccomp_profile_digest,
                        i.status.map(|s| (s.phase, s.reason, s.message)),
                    )
                })
                .collect();
            panic!("no sole running instance {what}: {all:#?}")
        }
    }
}

#[tokio::test]
async fn record_switch_to_the_recorded_profile_and_roll_out_a_new_version() {
    let ns = TestNamespace::with_isolation("scmp-wl", "baseline").await;
    manifest::create(
        &ns.client,
        &ns.name,
        &format!(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: 1
  template:
    image: {}
    terminationGracePeriodSeconds: 2
  isolation:
    seccomp: {{type: Record}}
"#,
            image("web:v1")
        ),
    )
    .await
    .unwrap();
    let instances: Api<Instance> = ns.api();
    let profiles: Api<SeccompProfile> = ns.api();
    let workloads: Api<Workload> = ns.api();

    // Record under the load, then write the profile with the documented annotation.
    let rec = sole_running(
        &instances,
        |i| i.spec.isolation.seccomp.type_ == SeccompType::Record,
        "recording",
    )
    .await;
    assert_eq!(rec.spec.seccomp_profile_digest, None);
    load(&rec.status.clone().unwrap().pod_ip.unwrap()).await;
    instances
        .patch(
            &rec.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"bulkhead.dev/record": "now"}}}),
            ),
        )
        .await
        .unwrap();
    let recorded = poll_until(Duration::from_secs(30), || async {
        profiles.get_opt("web-recorded").await.ok().flatten()
    })
    .await
    .expect("web-recorded written");
    assert_eq!(
        recorded.status.unwrap().recorded_from.unwrap().workload,
        "web"
    );

    // Switch the Workload to it: a new revision, pinned to the profile's version, that runs
    // and serves the same load.
    workloads
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"isolation": {"seccomp": {"type": "Localhost", "localhostProfile": "web-recorded"}}}})),
        )
        .await
        .unwrap();
    // The recording's stop rewrites the profile (with the same calls, or more: then that
    // version rolls out too); wait for the instance of the version that is current.
    let enforced = poll_until(CONVERGE, || async {
        let current = profiles
            .get("web-recorded")
            .await
            .ok()?
            .spec
            .content_digest();
        let i = sole_running(
            &instances,
            |i| i.spec.isolation.seccomp.type_ == SeccompType::Localhost,
            "with the recorded profile",
        )
        .await;
        (i.spec.seccomp_profile_digest.as_deref() == Some(current.as_str())).then_some(i)
    })
    .await
    .expect("an instance at the current profile version");
    load(&enforced.status.clone().unwrap().pod_ip.unwrap()).await;
    let v1 = enforced.spec.seccomp_profile_digest.clone().unwrap();

    // Edit the profile: the running instance is not touched; the Workload rolls the new
    // version out as a new revision.
    let mut profile = profiles.get("web-recorded").await.unwrap();
    profile.spec.syscalls[0].names.push("mkdir".into());
    profile.spec.syscalls[0].names.sort();
    profile.metadata.managed_fields = None;
    let profile = profiles
        .replace("web-recorded", &PostParams::default(), &profile)
        .await
        .unwrap();
    let v2 = profile.spec.content_digest();
    assert_ne!(v1, v2);
    let rolled = sole_running(
        &instances,
        |i| i.spec.seccomp_profile_digest.as_deref() == Some(v2.as_str()),
        "at the edited version",
    )
    .await;
    assert_ne!(rolled.spec.revision, enforced.spec.revision);
    assert_ne!(rolled.uid(), enforced.uid());
    load(&rolled.status.clone().unwrap().pod_ip.unwrap()).await;
    let wl = workloads.get("web").await.unwrap();
    assert_eq!(
        wl.status.unwrap().update_revision.as_deref(),
        Some(rolled.spec.revision.as_str())
    );

    // Deleting the profile is no new revision: the running instance stays, and a
    // replacement (same revision, same pinned version) fails with a reason.
    profiles
        .delete("web-recorded", &Default::default())
        .await
        .unwrap();
    instances
        .delete(&rolled.name_any(), &Default::default())
        .await
        .unwrap();
    let failed = poll_until(CONVERGE, || async {
        instances
            .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}=web")))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|i| {
                i.status.as_ref().and_then(|s| s.reason.as_deref())
                    == Some("SeccompProfileNotFound")
            })
    })
    .await
    .expect("a replacement failed with SeccompProfileNotFound");
    assert_eq!(failed.spec.revision, rolled.spec.revision);
    assert_eq!(
        failed.spec.seccomp_profile_digest.as_deref(),
        Some(v2.as_str())
    );
    ns.delete().await;
}
