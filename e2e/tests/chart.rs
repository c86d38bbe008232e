//! The Helm chart on the real API server: `helm lint`, `helm template` accepted by
//! `kubectl apply --dry-run=server`, install, a rolling update run by a controller and an
//! agent whose API identities are the chart's ServiceAccounts (so under exactly the chart's
//! RBAC), `helm upgrade` with changed values and `helm uninstall`.
//!
//! `every_proven_rule_of_the_chart_rbac_is_needed` (about two minutes; also run alone by
//! `e2e/hack/rbac-proof.sh`) removes each rule in turn and shows what fails.
//!
//! The tests that install the chart pause the local system's controller and host (see
//! `bulkhead_e2e::chart`), so they hold [`SERIAL`] and run one at a time.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{process::Command, time::Duration};

use bulkhead_crds::{
    Host, Instance, InstancePhase, SeccompProfile, Workload, WorkloadService, conditions,
};
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    chart::{
        self, AGENT_SA, CONTROLLER_SA, ChartSystem, LocalSystemPaused, NAMESPACE, helm, helm_ok,
    },
    kubectl, manifest,
    rollout::census,
    state_dir,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

/// The chart tests change cluster-wide state (the release, the paused local controller).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERGE: Duration = Duration::from_secs(120);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_as(sa: &str, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .env("KUBECONFIG", chart::service_account_kubeconfig(sa))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn helm_lint_is_clean_and_the_rendered_chart_is_accepted_by_the_api_server() {
    // A dry-run apply races a concurrent install of the same objects.
    let _serial = SERIAL.blocking_lock();
    let chart = chart::chart_dir().display().to_string();
    let lint = helm_ok(&["lint", &chart, "--strict", "--namespace", NAMESPACE]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    assert!(!lint.contains("[WARNING]"), "{lint}");

    // Every object of the default rendering, validated by the real API server.
    let rendered = helm_ok(&["template", "bulkhead", &chart, "--namespace", NAMESPACE]);
    let file = state_dir().join("chart-rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let out = kubectl(["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for object in [
        "deployment.apps/bulkhead-controller",
        "daemonset.apps/bulkhead-node-agent",
        "poddisruptionbudget.policy/bulkhead-controller",
        "service/bulkhead-controller-metrics",
        "service/bulkhead-node-agent-metrics",
        "clusterrole.rbac.authorization.k8s.io/bulkhead-controller",
        "role.rbac.authorization.k8s.io/bulkhead-node-agent",
    ] {
        assert!(text.contains(object), "{object} not rendered:\n{text}");
    }
    // The restricted controller and the agent's host access, as rendered.
    for expected in [
        "runAsUser: 65532",
        "readOnlyRootFilesystem: true",
        "drop: [ALL]",
        "type: RuntimeDefault",
        "--identity=$(POD_NAME)",
        "--host-name=$(NODE_NAME)",
        "hostPID: true",
        "hostNetwork: true",
    ] {
        assert!(rendered.contains(expected), "{expected} not rendered");
    }

    // The schema refuses bad values, naming the key; the chart refuses another namespace.
    let bad = helm(&[
        "template",
        "bulkhead",
        &chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "controller.replicas=-1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/controller/replicas"));
    let elsewhere = helm(&["template", "bulkhead", &chart, "--namespace", "default"]);
    assert!(!elsewhere.status.success());
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("bulkhead-system"));
}

fn workload_yaml(replicas: i32, image: &str) -> String {
    format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: web}}
spec:
  owner: team-e2e
  replicas: {replicas}
  template:
    image: {image}
    terminationGracePeriodSeconds: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
"#
    )
}

/// A rolling update of 2 replicas from web:v1 to web:v2 (maxSurge 1, maxUnavailable 0),
/// entirely done by the chart-identity controller and agent: never fewer than 2 ready or
/// more than 3 alive, all instances on the system's agent, status settled, then the
/// namespace is deleted and the agent releases every finalizer.
async fn rolling_update(system: &ChartSystem) {
    let ns = TestNamespace::new("chart-rolling").await;
    manifest::create(&ns.client, &ns.name, &workload_yaml(2, &image("web:v1")))
        .await
        .unwrap();
    let instances: Api<Instance> = ns.api();
    let up = bulkhead_e2e::poll_until(CONVERGE, || async {
        let c = census(&instances, "web").await;
        (c.0 == 2 && c.1 == 2).then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "web:v1 not up: {:?}\n{}",
        census(&instances, "web").await,
        system.logs()
    );
    ns.api::<Workload>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"template": {"image": image("web:v2")}}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let (ready, alive, images, hosts) = census(&instances, "web").await;
        assert!(
            ready >= 2,
            "only {ready} ready during the rollout: {images:?}"
        );
        assert!(alive <= 3, "{alive} alive exceeds 2 + maxSurge: {images:?}");
        assert!(
            hosts
                .iter()
                .all(|h| h.is_empty() || *h == system.agent.host),
            "an instance ran elsewhere than the chart's agent: {hosts:?}"
        );
        if ready == 2 && alive == 2 && images.iter().all(|i| i.ends_with("web:v2")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not finish: {images:?}\n{}",
            system.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let workloads = ns.api::<Workload>();
    let settled = bulkhead_e2e::poll_until(CONVERGE, || async {
        let s = workloads.get("web").await.ok()?.status?;
        (s.current_revision.is_some() && s.current_revision == s.update_revision).then_some(())
    })
    .await;
    assert!(settled.is_some(), "{:?}", workloads.get("web").await);
    // The history was written under the controller's RBAC.
    let history = kubectl(["get", "controllerrevisions", "-n", &ns.name, "-o", "name"]);
    assert_eq!(stdout(&history).lines().count(), 2, "{}", stdout(&history));

    // Teardown under the agent's RBAC: it removes its finalizer from every instance.
    let name = ns.name.clone();
    let client = ns.client.clone();
    ns.delete().await;
    let all: Api<Instance> = Api::namespaced(client, &name);
    let gone = bulkhead_e2e::poll_until(CONVERGE, || async {
        all.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "instances kept\n{}", system.logs());
}

/// A blue/green rollout from web:v1 to web:v2 under a 20 ms client reading the
/// WorkloadService's EndpointSlice, done by the chart-identity controller and agent: no
/// failed request, one switch, every instance on the chart's agent.
async fn blue_green(system: &ChartSystem) {
    use bulkhead_e2e::rollout::{
        assert_clean, deploy_v1, only_two_of, set_template, start_traffic, status_of, wait_for,
    };
    let ns = TestNamespace::new("chart-bg").await;
    let v1 = deploy_v1(&ns, true, 600).await;
    let poller = start_traffic(&ns).await;
    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    let wl = wait_for(&ns, "v2 active and healthy", |wl| {
        let s = status_of(wl);
        s.active_revision.is_some()
            && s.active_revision.as_deref() != Some(v1.as_str())
            && s.phase == Some(bulkhead_crds::workload::WorkloadPhase::Healthy)
    })
    .await;
    let v2 = status_of(&wl).active_revision.unwrap();
    let gone = only_two_of(&ns, &v2).await;
    assert!(gone.is_some(), "v1 not retired\n{}", system.logs());
    let report = poller.stop().await;
    assert_clean(&report, &["v1", "v2"]);
    let (_, _, _, hosts) = census(&ns.api(), "web").await;
    assert!(
        hosts.iter().all(|h| *h == system.agent.host),
        "an instance ran elsewhere than the chart's agent: {hosts:?}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_chart_runs_a_rollout_under_its_own_rbac_and_upgrades_and_uninstalls() {
    let _serial = SERIAL.lock().await;
    chart::install(&[]);

    // The kubeconfigs really carry the ServiceAccounts' identities, which are not admins.
    for sa in [CONTROLLER_SA, AGENT_SA] {
        let who = kubectl_as(
            sa,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        assert_eq!(
            stdout(&who),
            format!("system:serviceaccount:{NAMESPACE}:{sa}")
        );
        let secrets = kubectl_as(sa, &["auth", "can-i", "list", "secrets", "-A"]);
        assert_eq!(stdout(&secrets).trim(), "no", "{sa} may list secrets");
    }

    let system = ChartSystem::start("chart");
    let client = bulkhead_e2e::client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let leads = bulkhead_e2e::poll_until(Duration::from_secs(60), || async {
        let holder = leases
            .get("bulkhead-controller")
            .await
            .ok()?
            .spec?
            .holder_identity?;
        (holder == system.controller.identity).then_some(())
    })
    .await;
    assert!(
        leads.is_some(),
        "the chart-identity controller never led\n{}",
        system.logs()
    );

    // Scenarios under the chart's identities.
    rolling_update(&system).await;
    blue_green(&system).await;

    // RBAC's refusals read `... is forbidden: User "..." cannot ...` (other 403s, such as a
    // write into a namespace being deleted, are not about the chart).
    assert!(
        !system.logs().contains("is forbidden: User"),
        "a request was refused by RBAC with the full chart RBAC\n{}",
        system.logs()
    );
    drop(system);

    // helm upgrade with changed values reaches the objects.
    chart::install(&["controller.metricsPort=9500"]);
    let port = kubectl([
        "get",
        "service",
        "bulkhead-controller-metrics",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.ports[0].port}",
    ]);
    assert_eq!(stdout(&port), "9500");
    chart::install(&["metrics.service.enabled=false"]);
    let services = kubectl([
        "get",
        "services",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/instance=bulkhead",
        "-o",
        "name",
    ]);
    assert_eq!(
        stdout(&services),
        "",
        "metrics Services outlive their value"
    );
    let history = helm_ok(&["history", chart::RELEASE, "-n", NAMESPACE, "-o", "json"]);
    let revisions: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert!(revisions.as_array().unwrap().len() >= 3, "{history}");

    // helm uninstall removes what the chart made and keeps the CRDs (and so every object).
    helm_ok(&["uninstall", chart::RELEASE, "-n", NAMESPACE, "--wait"]);
    for (kind, name) in [
        ("clusterrole", "bulkhead-controller"),
        ("clusterrolebinding", "bulkhead-node-agent"),
        ("serviceaccount", "bulkhead-controller"),
        ("role", "bulkhead-node-agent"),
    ] {
        let out = kubectl([
            "get",
            kind,
            name,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
            "-o",
            "name",
        ]);
        assert_eq!(stdout(&out), "", "{kind}/{name} outlived helm uninstall");
    }
    let crd = kubectl(["get", "crd", "workloads.bulkhead.dev", "-o", "name"]);
    assert!(out_ok(&crd), "the CRDs were removed by helm uninstall");
}

fn out_ok(out: &std::process::Output) -> bool {
    out.status.success() && !out.stdout.is_empty()
}

/// A log line that shows the API server refusing one of `verbs` on one of `resources`.
fn forbidden_line(logs: &str, rule: &serde_json::Value) -> Option<String> {
    let logs = logs.replace("\\\"", "\"");
    for line in logs.lines() {
        for r in rule["resources"].as_array().unwrap() {
            let resource = format!("resource \"{}\"", r.as_str().unwrap());
            let verb = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| line.contains(&format!("cannot {} {resource}", v.as_str().unwrap())));
            if verb {
                return Some(line.chars().take(400).collect());
            }
        }
    }
    None
}

/// Kills and removes every task and container an agent left in its containerd namespace.
fn remove_containers(namespace: &str) {
    for id in bulkhead_e2e::agent::containers(namespace) {
        bulkhead_e2e::agent::ctr(namespace, &["tasks", "kill", "-s", "SIGKILL", &id]);
        std::thread::sleep(Duration::from_millis(300));
        bulkhead_e2e::agent::ctr(namespace, &["tasks", "rm", "-f", &id]);
        bulkhead_e2e::agent::ctr(namespace, &["containers", "rm", &id]);
    }
}

/// Removes each rule of the chart's four roles in turn, runs the proof scenario (see
/// [`exercise`]) under the reduced RBAC, and shows what then fails: the API server refuses a
/// request of the rule's verbs on its resource (the component logs it), or, where an error is
/// not logged, the scenario never completes. Every rule must be shown needed.
#[tokio::test]
async fn every_proven_rule_of_the_chart_rbac_is_needed() {
    let _serial = SERIAL.lock().await;
    chart::install(&[]);
    let paused = LocalSystemPaused::pause();
    // The control: with every rule the same steps complete, so a failure below is the rule's.
    let control = exercise(&paused, &serde_json::json!({"resources": [], "verbs": []})).await;
    assert!(control.is_none(), "with the full RBAC: {control:?}");
    let mut report = Vec::new();
    let mut unproven = Vec::new();
    for role in [
        "clusterrole/bulkhead-controller",
        "role/bulkhead-controller",
        "clusterrole/bulkhead-node-agent",
        "role/bulkhead-node-agent",
    ] {
        let original = stdout(&kubectl(["get", role, "-n", NAMESPACE, "-o", "json"]));
        let original: serde_json::Value = serde_json::from_str(&original).unwrap();
        let rules = original["rules"].as_array().unwrap().clone();
        for (i, rule) in rules.iter().enumerate() {
            let what = format!(
                "{role} rule {i}: {} {}{}",
                rule["verbs"],
                rule["resources"],
                rule.get("resourceNames")
                    .map(|n| format!(" names {n}"))
                    .unwrap_or_default()
            );
            let patch = format!(r#"[{{"op":"remove","path":"/rules/{i}"}}]"#);
            let out = kubectl([
                "patch", role, "-n", NAMESPACE, "--type", "json", "-p", &patch,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The authorizer's cache follows RBAC changes within a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let outcome = exercise(&paused, rule).await;
            // Restore the role exactly.
            let mut restore = original.clone();
            restore["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            let file = state_dir().join("rbac-restore.json");
            std::fs::write(&file, restore.to_string()).unwrap();
            let out = kubectl(["replace", "-f", file.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            match outcome {
                Some(evidence) => report.push(format!("{what}: needed — {evidence}")),
                None => {
                    report.push(format!("{what}: NOTHING FAILED"));
                    unproven.push(what);
                }
            }
        }
    }
    drop(paused);
    let text = report.join("\n");
    std::fs::write(state_dir().join("rbac-proof.txt"), &text).unwrap();
    eprintln!("{text}");
    assert!(
        unproven.is_empty(),
        "rules not shown to be needed: {unproven:?}\n{text}"
    );
}

/// Runs the proof scenario under the current (reduced) RBAC until the rule's absence shows:
/// a blue/green Workload with a Localhost profile and a WorkloadService rolled from web:v1 to
/// web:v2 until the Service publishes v2, a Host whose Lease expired an hour ago (the controller
/// marks it not ready), and a Record-mode Instance whose profile the agent writes. Returns
/// the evidence, or None when everything completed regardless.
async fn exercise(paused: &LocalSystemPaused, rule: &serde_json::Value) -> Option<String> {
    chart::release_leader_lease();
    let system = ChartSystem::start_while_paused(paused, "proof");
    let ns = TestNamespace::with_isolation("chart-proof", "baseline").await;
    // A Localhost seccomp profile, which the controller pins and the agent reads (all allowed
    // but reboot: the point here is the read, not the filter).
    let profile = "apiVersion: bulkhead.dev/v1alpha1\nkind: SeccompProfile\nmetadata: {name: no-reboot}\nspec:\n  defaultAction: SCMP_ACT_ALLOW\n  syscalls:\n    - {names: [reboot], action: SCMP_ACT_ERRNO}\n";
    manifest::create(&ns.client, &ns.name, profile)
        .await
        .unwrap();
    // A blue/green Workload published by a WorkloadService: Service, EndpointSlice, status.
    let workload = workload_yaml(1, &image("web:v1"))
        .replace(
            "  strategy:",
            "  isolation:\n    seccomp: {type: Localhost, localhostProfile: no-reboot}\n  strategy:",
        )
        .replace(
            "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}",
            "    type: BlueGreen\n    blueGreen: {autoPromote: true, scaleDownDelaySeconds: 0}",
        );
    let _ = manifest::create(&ns.client, &ns.name, &workload).await;
    // A Workload following its tag: the controller reads the trusted keys it names (the
    // ConfigMap is missing, which only a forbidden read tells apart in the log).
    let follow = "apiVersion: bulkhead.dev/v1alpha1\nkind: Workload\nmetadata: {name: follow}\nspec:\n  owner: team-proof\n  replicas: 0\n  template: {image: \"IMAGE\"}\n  imageUpdates: {trustedKeys: {configMapName: proof-keys}}\n".replace("IMAGE", &image("web:v1"));
    let _ = manifest::create(&ns.client, &ns.name, &follow).await;
    let service = "apiVersion: bulkhead.dev/v1alpha1\nkind: WorkloadService\nmetadata: {name: web}\nspec:\n  workloadName: web\n  ports: [{port: 80, targetPort: 8080}]\n";
    let _ = manifest::create(&ns.client, &ns.name, service).await;
    // A host whose Lease expired long ago: the controller marks it not ready at once.
    let dead = format!("proof-dead-{}", &ns.name[ns.name.len() - 6..]);
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), NAMESPACE);
    let long_ago = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(3600))
        .unwrap();
    let expired = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(dead.clone()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(dead.clone()),
            lease_duration_seconds: Some(10),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                long_ago,
            )),
            ..Default::default()
        }),
    };
    let _ = leases.create(&Default::default(), &expired).await;
    let hosts: Api<Host> = Api::all(ns.client.clone());
    let _ = hosts
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Host",
                "metadata": {"name": dead}, "spec": {"unschedulable": true},
                "status": null,
            }))
            .unwrap(),
        )
        .await;
    // A recording on the chart's agent: the agent writes the profile `rec-recorded`.
    let recording = format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Instance\nmetadata: {{name: rec, labels: {{bulkhead.dev/workload: rec}}}}\nspec:\n  hostName: {}\n  revision: r1\n  template: {{image: \"{}\", terminationGracePeriodSeconds: 1}}\n  isolation: {{seccomp: {{type: Record}}}}\n",
        system.agent.host,
        image("web:v1")
    );
    let _ = manifest::create(&ns.client, &ns.name, &recording).await;
    // An Instance that fits no host: the scheduler writes its Scheduled=False condition, the
    // controller's one field of Instance.status (bound at creation, the Workload's instances
    // need no scheduler once the agent's Host is Ready).
    let unfit = format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Instance\nmetadata: {{name: unfit}}\nspec:\n  revision: r1\n  template: {{image: \"{}\", resources: {{memory: 1Ei}}}}\n",
        image("web:v1")
    );
    let _ = manifest::create(&ns.client, &ns.name, &unfit).await;
    let instances: Api<Instance> = ns.api();
    let workloads: Api<Workload> = ns.api();
    let services: Api<WorkloadService> = ns.api();
    let profiles: Api<SeccompProfile> = ns.api();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let mut patched = false;
    let mut record_asked = false;
    let evidence = loop {
        if let Some(line) = forbidden_line(&system.logs(), rule) {
            break Some(format!("forbidden: {line}"));
        }
        let (ready, alive, images, _) = census(&instances, "web").await;
        let status = workloads.get("web").await.ok().and_then(|w| w.status);
        let settled = status.as_ref().is_some_and(|s| {
            s.current_revision.is_some() && s.current_revision == s.update_revision
        });
        let published = services
            .get("web")
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|p| {
                p.endpoints.len() == 1
                    && p.active_revision == status.as_ref().and_then(|s| s.update_revision.clone())
            });
        let dead_marked = hosts
            .get(&dead)
            .await
            .ok()
            .and_then(|h| h.status)
            .and_then(|s| conditions::find(&s.conditions, conditions::types::READY).cloned())
            .is_some_and(|c| c.reason == "HostLeaseExpired");
        let rec_running = instances
            .get("rec")
            .await
            .ok()
            .and_then(|i| i.status)
            .is_some_and(|s| s.phase == Some(InstancePhase::Running));
        if rec_running && !record_asked {
            let _ = instances
                .patch(
                    "rec",
                    &PatchParams::default(),
                    &Patch::Merge(
                        &serde_json::json!({"metadata": {"annotations": {"bulkhead.dev/record": "1"}}}),
                    ),
                )
                .await;
            record_asked = true;
        }
        let recorded = profiles
            .get_opt("rec-recorded")
            .await
            .ok()
            .flatten()
            .is_some();
        let unfit_reported = instances
            .get("unfit")
            .await
            .ok()
            .and_then(|i| i.status)
            .and_then(|s| conditions::find(&s.conditions, conditions::types::SCHEDULED).cloned())
            .is_some_and(|c| c.status == conditions::status::FALSE);
        if ready == 1 && alive == 1 && !patched {
            let _ = workloads
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(
                        &serde_json::json!({"spec": {"template": {"image": image("web:v2")}}}),
                    ),
                )
                .await;
            patched = true;
        } else if patched
            && settled
            && published
            && dead_marked
            && recorded
            && unfit_reported
            && ready == 1
            && alive == 1
            && images[0].ends_with("web:v2")
        {
            break None;
        }
        if tokio::time::Instant::now() > deadline {
            break Some(format!(
                "the scenario did not complete in 75 s (ready {ready}, alive {alive}, {images:?}, published {published}, dead host marked {dead_marked}, recorded {recorded}, unfit reported {unfit_reported})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = hosts.delete(&dead, &Default::default()).await;
    let _ = leases.delete(&dead, &Default::default()).await;
    // Tear down whatever the reduced system left: its instances' finalizers, its containers.
    let containerd_ns = system.agent.namespace.clone();
    let log = system.logs();
    drop(system);
    remove_containers(&containerd_ns);
    if let Ok(list) = instances.list(&Default::default()).await {
        for i in list {
            let _ = instances
                .patch(
                    &i.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
    ns.delete().await;
    if evidence.is_none() {
        eprintln!("{log}");
    }
    evidence
}
