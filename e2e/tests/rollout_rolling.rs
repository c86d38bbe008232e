//! The controller with the real agent: replicas are kept, instances are replaced, and a
//! rolling update stays within maxSurge and maxUnavailable from start to end.
//!
//! Uses the local system's controller and its agent (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, Workload, conditions};
use bulkhead_e2e::{TestNamespace, agent::image, kubectl, manifest, rollout::census};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};

const CONVERGE: Duration = Duration::from_secs(120);

fn workload_yaml(name: &str, replicas: i32, image: &str, surge: &str, unavailable: &str) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  owner: team-e2e
  replicas: {replicas}
  template:
    image: {image}
    terminationGracePeriodSeconds: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}
"#
    )
}

async fn wait_for_census(api: &Api<Instance>, workload: &str, ready: usize, alive: usize) {
    let ok = bulkhead_e2e::poll_until(CONVERGE, || async {
        let c = census(api, workload).await;
        (c.0 == ready && c.1 == alive).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{workload} did not reach {ready} ready / {alive} alive: {:?}",
        census(api, workload).await
    );
}

async fn set_replicas(ns: &TestNamespace, name: &str, replicas: i32) {
    ns.api::<Workload>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_are_kept_scaled_and_replaced() {
    let ns = TestNamespace::new("replicas").await;
    manifest::create(
        &ns.client,
        &ns.name,
        &workload_yaml("web", 3, &image("web:v1"), "1", "0"),
    )
    .await
    .unwrap();
    // kubectl wait works on the Available condition.
    let wait = kubectl([
        "wait",
        "--for=condition=Available",
        "wl/web",
        "-n",
        &ns.name,
        "--timeout=120s",
    ]);
    assert!(
        wait.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let instances: Api<Instance> = ns.api();
    wait_for_census(&instances, "web", 3, 3).await;
    let wl = ns.api::<Workload>().get("web").await.unwrap();
    let status = wl.status.unwrap();
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.updated_replicas
        ),
        (3, 3, 3)
    );
    assert_eq!(status.observed_generation, wl.metadata.generation);

    // Every instance is owned by the Workload and bound to a host.
    for i in instances.list(&Default::default()).await.unwrap() {
        assert_eq!(i.owner_references()[0].name, "web");
        assert!(i.spec.host_name.is_some(), "{} not scheduled", i.name_any());
    }

    set_replicas(&ns, "web", 5).await;
    wait_for_census(&instances, "web", 5, 5).await;
    set_replicas(&ns, "web", 2).await;
    wait_for_census(&instances, "web", 2, 2).await;

    // A deleted instance is replaced.
    let victim = instances.list(&Default::default()).await.unwrap().items[0].name_any();
    instances
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let replaced = bulkhead_e2e::poll_until(CONVERGE, || async {
        let names: Vec<String> = instances
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|i| i.name_any())
            .collect();
        let c = census(&instances, "web").await;
        (!names.contains(&victim) && c.0 == 2 && c.1 == 2).then_some(())
    })
    .await;
    assert!(
        replaced.is_some(),
        "the deleted instance was not replaced: {:?}",
        census(&instances, "web").await
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_rolling_update_stays_within_its_bounds() {
    let ns = TestNamespace::new("rolling").await;
    let (replicas, surge, unavailable) = (3usize, 1usize, 0usize);
    manifest::create(
        &ns.client,
        &ns.name,
        &workload_yaml("web", replicas as i32, &image("web:v1"), "1", "0"),
    )
    .await
    .unwrap();
    let instances: Api<Instance> = ns.api();
    wait_for_census(&instances, "web", replicas, replicas).await;

    ns.api::<Workload>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"template": {"image": image("web:v2")}}})),
        )
        .await
        .unwrap();
    // Sample throughout the rollout.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut samples = 0;
    loop {
        let (ready, alive, images, _) = census(&instances, "web").await;
        samples += 1;
        assert!(
            ready >= replicas - unavailable,
            "only {ready} ready during the rollout (sample {samples}): {images:?}"
        );
        assert!(
            alive <= replicas + surge,
            "{alive} instances exceed replicas + maxSurge (sample {samples}): {images:?}"
        );
        if ready == replicas && alive == replicas && images.iter().all(|i| i.ends_with("web:v2")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not finish: {images:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        samples > 5,
        "the rollout should have been observed in progress ({samples} samples)"
    );
    // The status follows: the update revision becomes the current (active) one.
    let workloads = ns.api::<Workload>();
    let settled = bulkhead_e2e::poll_until(CONVERGE, || async {
        let s = workloads.get("web").await.ok()?.status?;
        (s.current_revision.is_some() && s.current_revision == s.update_revision).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{:?}",
        workloads.get("web").await.unwrap().status
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_rollout_is_undone_with_the_documented_kubectl_command() {
    let ns = TestNamespace::new("undo").await;
    manifest::create(
        &ns.client,
        &ns.name,
        &workload_yaml("web", 2, &image("web:v1"), "1", "0"),
    )
    .await
    .unwrap();
    let instances: Api<Instance> = ns.api();
    wait_for_census(&instances, "web", 2, 2).await;
    let v1 = ns
        .api::<Workload>()
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .update_revision
        .unwrap();
    ns.api::<Workload>()
        .patch("web", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"spec": {"template": {"image": image("web:v2"), "args": ["httpd", "-f", "-p", "8081"]}}})))
        .await
        .unwrap();
    let v2_done = bulkhead_e2e::poll_until(CONVERGE, || async {
        let c = census(&instances, "web").await;
        (c.0 == 2 && c.1 == 2 && c.2.iter().all(|i| i.ends_with("web:v2"))).then_some(())
    })
    .await;
    assert!(
        v2_done.is_some(),
        "rollout to v2: {:?}",
        census(&instances, "web").await
    );

    // The history holds both revisions.
    let history = kubectl([
        "get",
        "controllerrevisions",
        "-n",
        &ns.name,
        "-l",
        "bulkhead.dev/workload=web",
        "-o",
        "name",
    ]);
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(history.contains(&format!("web-{v1}")), "{history}");

    // The documented undo, verbatim (docs/operations.md).
    let script = format!(
        r#"set -e
T=$(kubectl get controllerrevision web-{v1} -n {ns} -o jsonpath='{{.data.template}}')
I=$(kubectl get controllerrevision web-{v1} -n {ns} -o jsonpath='{{.data.isolation}}')
kubectl patch wl web -n {ns} --type json -p "[{{\"op\":\"replace\",\"path\":\"/spec/template\",\"value\":$T}},{{\"op\":\"replace\",\"path\":\"/spec/isolation\",\"value\":$I}}]""#,
        ns = ns.name
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("KUBECONFIG", bulkhead_e2e::state_dir().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "undo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = bulkhead_e2e::poll_until(CONVERGE, || async {
        let c = census(&instances, "web").await;
        (c.0 == 2 && c.1 == 2 && c.2.iter().all(|i| i.ends_with("web:v1"))).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "undo to v1: {:?}",
        census(&instances, "web").await
    );
    let wl = ns.api::<Workload>().get("web").await.unwrap();
    assert_eq!(
        wl.status.unwrap().update_revision.as_deref(),
        Some(v1.as_str()),
        "the old revision hash is back"
    );
    assert!(
        wl.spec.template.args.is_empty(),
        "args added by v2 are gone after the undo"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_rollout_that_cannot_progress_exceeds_its_deadline_and_keeps_the_old_instances() {
    let ns = TestNamespace::new("deadline").await;
    let yaml = workload_yaml("web", 2, &image("web:v1"), "1", "0").replace(
        "  replicas: 2",
        "  replicas: 2\n  progressDeadlineSeconds: 8",
    );
    manifest::create(&ns.client, &ns.name, &yaml).await.unwrap();
    let instances: Api<Instance> = ns.api();
    wait_for_census(&instances, "web", 2, 2).await;
    // A tag that does not exist: new instances fail to pull, over and over.
    ns.api::<Workload>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({"spec": {"template": {"image": image("web:does-not-exist")}}}),
            ),
        )
        .await
        .unwrap();
    let wait = kubectl([
        "wait",
        "--for=condition=Progressing=false",
        "wl/web",
        "-n",
        &ns.name,
        "--timeout=90s",
    ]);
    assert!(
        wait.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let wl = ns.api::<Workload>().get("web").await.unwrap();
    let status = wl.status.unwrap();
    let progressing = conditions::find(&status.conditions, conditions::types::PROGRESSING).unwrap();
    assert_eq!(progressing.reason, "ProgressDeadlineExceeded");
    assert!(conditions::is_true(
        &status.conditions,
        conditions::types::DEGRADED
    ));
    // The v1 instances were never given up (maxUnavailable 0).
    let (ready, _, images, _) = census(&instances, "web").await;
    assert!(ready >= 2, "old instances lost: {images:?}");
    // Events tell the story.
    let events = kubectl([
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    let reasons = String::from_utf8_lossy(&events.stdout).into_owned();
    for r in ["Created", "RolloutStarted", "ProgressDeadlineExceeded"] {
        assert!(reasons.contains(r), "no {r} event: {reasons}");
    }
    ns.delete().await;
}
