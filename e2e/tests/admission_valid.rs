//! Valid edge cases are accepted, and the schema's defaults are visible on the stored object.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_crds::{Workload, isolation::SeccompType, workload::StrategyType};
use bulkhead_e2e::{TestNamespace, manifest};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;

async fn create_ok(ns: &TestNamespace, yaml: &str) -> Workload {
    let created = manifest::create(&ns.client, &ns.name, yaml).await;
    let created = created.unwrap_or_else(|e| panic!("valid object refused: {e}\n{yaml}"));
    let name = created.metadata.name.unwrap();
    ns.api::<Workload>()
        .get(&name)
        .await
        .expect("stored object reads back as a Workload")
}

#[tokio::test]
async fn empty_isolation_block_defaults_to_the_strict_settings() {
    let ns = TestNamespace::new("defaults").await;
    let wl = create_ok(
        &ns,
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: minimal}
spec:
  owner: team-a
  template: {image: "localhost:5000/bulkhead/web:v1"}
  isolation: {}
"#,
    )
    .await;
    let spec = &wl.spec;
    assert_eq!(spec.replicas, 1, "replicas defaults to 1");
    assert_eq!(spec.revision_history_limit, 10);
    assert_eq!(spec.progress_deadline_seconds, 600);
    assert!(
        spec.isolation.user_namespace,
        "user namespace on by default"
    );
    assert!(
        spec.isolation.read_only_root_filesystem,
        "read-only root by default"
    );
    assert_eq!(spec.isolation.seccomp.type_, SeccompType::RuntimeDefault);
    assert!(
        spec.isolation.capabilities.add.is_empty(),
        "no capabilities by default"
    );
    assert_eq!(
        spec.template.resources.pids,
        bulkhead_crds::template::DEFAULT_PIDS_LIMIT
    );
    assert_eq!(spec.template.termination_grace_period_seconds, 30);
    assert_eq!(spec.strategy.type_, StrategyType::RollingUpdate);
    let rolling = spec
        .strategy
        .rolling_update
        .as_ref()
        .expect("rollingUpdate defaulted");
    assert_eq!(rolling.max_surge, IntOrString::String("25%".into()));
    assert_eq!(rolling.max_unavailable, IntOrString::Int(0));

    // The defaults are in the stored object itself, not filled in by our deserializer.
    let raw = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &manifest::api_resource("Workload"),
    )
    .get("minimal")
    .await
    .unwrap();
    let isolation = &raw.data["spec"]["isolation"];
    assert_eq!(isolation["userNamespace"], true, "stored: {isolation}");
    assert_eq!(isolation["readOnlyRootFilesystem"], true);
    assert_eq!(isolation["seccomp"]["type"], "RuntimeDefault");
    assert_eq!(isolation["selinux"]["mode"], "Preferred");
    assert_eq!(raw.data["spec"]["template"]["resources"]["pids"], 1024);
    ns.delete().await;
}

#[tokio::test]
async fn omitted_isolation_and_strategy_are_defaulted_too() {
    let ns = TestNamespace::new("defaults").await;
    let raw = manifest::create(
        &ns.client,
        &ns.name,
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: bare}
spec:
  owner: team-a
  template: {image: busybox}
"#,
    )
    .await
    .expect("a tag-less, registry-less image is valid");
    assert_eq!(raw.data["spec"]["isolation"]["userNamespace"], true);
    assert_eq!(
        raw.data["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    ns.delete().await;
}

#[tokio::test]
async fn percent_and_integer_surge_and_tag_only_images_are_accepted() {
    let ns = TestNamespace::new("valid").await;
    for (name, surge, unavailable, image) in [
        ("pct", "'50%'", "'0%'", "localhost:5000/bulkhead/web:v1"),
        ("int", "2", "0", "registry.example.com/team/web:1.2.3"),
        ("mixed", "0", "'25%'", "web:v2"),
        ("hundred", "'100%'", "1", "127.0.0.1:5000/web"),
    ] {
        let wl = create_ok(
            &ns,
            &format!(
                r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  owner: team-a
  template: {{image: "{image}"}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}
"#
            ),
        )
        .await;
        assert_eq!(wl.spec.template.image, image);
    }
    let ints: Api<Workload> = ns.api();
    let int = ints.get("int").await.unwrap();
    assert_eq!(
        int.spec.strategy.rolling_update.unwrap().max_surge,
        IntOrString::Int(2)
    );
    ns.delete().await;
}

#[tokio::test]
async fn blue_green_with_auto_promotion_and_a_digest_pinned_image() {
    // Added capabilities are a baseline relaxation.
    let ns = TestNamespace::with_isolation("valid", "baseline").await;
    let wl = create_ok(
        &ns,
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: bg}
spec:
  owner: team-a
  replicas: 0
  template:
    image: localhost:5000/bulkhead/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    readinessProbe: {exec: {command: [cat, /www/index.html]}}
  isolation:
    seccomp: {type: Localhost, localhostProfile: httpd-minimal}
    capabilities: {add: [NET_BIND_SERVICE, CHOWN]}
    selinux: {mode: Required}
  strategy:
    type: BlueGreen
    blueGreen: {autoPromote: true, autoPromotionSeconds: 0, previewReplicas: 1}
"#,
    )
    .await;
    let bg = wl.spec.strategy.blue_green.expect("blueGreen kept");
    assert_eq!(
        bg.scale_down_delay_seconds, 30,
        "scaleDownDelaySeconds defaults to 30"
    );
    assert_eq!(bg.abort_scale_down_delay_seconds, 30);
    assert!(
        wl.spec.strategy.rolling_update.is_none(),
        "no rollingUpdate defaulted in"
    );
    let probe = wl.spec.template.readiness_probe.expect("probe kept");
    assert_eq!(
        (probe.period_seconds, probe.failure_threshold),
        (10, 3),
        "probe defaults"
    );
    ns.delete().await;
}

/// Docker's own default profile applies unchanged (test data outside the repository).
#[tokio::test]
async fn dockers_default_seccomp_profile_applies_unchanged() {
    let path = bulkhead_e2e::repo_root().join("../shared/data/docker-seccomp-default.json");
    let Ok(json) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIPPED: {} is absent (it is not part of the repository)",
            path.display()
        );
        return;
    };
    let profile: serde_json::Value = serde_json::from_str(&json).unwrap();
    let doc = serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "SeccompProfile",
        "metadata": {"name": "docker-default"},
        "spec": profile,
    });
    let ns = TestNamespace::new("seccomp").await;
    let stored = manifest::create(&ns.client, &ns.name, &serde_json::to_string(&doc).unwrap())
        .await
        .unwrap_or_else(|e| panic!("Docker's default profile was refused: {e}"));
    assert_eq!(
        stored.data["spec"]["syscalls"].as_array().map(Vec::len),
        profile["syscalls"].as_array().map(Vec::len),
        "every rule is kept"
    );
    // Docker writes `null` for an empty subArchitectures list; the API server stores [].
    let arches = |v: &serde_json::Value| -> Vec<(String, Vec<String>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let subs = m["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                (
                    m["architecture"].to_string(),
                    subs.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(
        arches(&stored.data["spec"]["archMap"]),
        arches(&profile["archMap"])
    );
    ns.delete().await;
}
