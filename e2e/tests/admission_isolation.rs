//! Isolation policy under the chart's admission policies and RBAC (installed by up.sh):
//! namespace isolation levels refused by the API server itself, each host's own floor, node
//! restriction of agents, and Instances written only by the controller.

use std::time::Duration;

use bulkhead_crds::{
    Host, Instance, InstancePhase, SeccompProfile, Workload,
    conditions::{self, types},
    policy::{self, IsolationLevel},
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, registry, unique_host},
    chart::{agent_kubeconfig, service_account_kubeconfig, user_kubeconfig},
    client_for, fixtures, kubectl, manifest, poll_until,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn workload(name: &str, isolation: &str) -> String {
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  owner: team-a\n  replicas: 0\n  template: {{image: \"{}/bulkhead/web:v1\"}}\n  isolation: {isolation}\n",
        registry()
    )
}

/// Each relaxation, one manifest each: every capability class, each seccomp mode that relaxes,
/// no user namespace, a writable root. (SELinux has no "off" mode to refuse: Preferred and
/// Required both label where SELinux runs.)
const RELAXATIONS: &[&str] = &[
    "{userNamespace: false}",
    "{seccomp: {type: Unconfined}}",
    "{seccomp: {type: Record}}",
    "{seccomp: {type: Complain, localhostProfile: p}}",
    "{readOnlyRootFilesystem: false}",
    "{capabilities: {add: [NET_BIND_SERVICE]}}",
    "{capabilities: {add: [CHOWN, SETUID, SETGID]}}",
    "{capabilities: {add: [SYS_ADMIN]}}",
    "{capabilities: {add: [SYS_MODULE]}}",
    "{capabilities: {add: [NET_RAW]}}",
    "{capabilities: {add: [NET_ADMIN]}}",
    "{capabilities: {add: [SYS_PTRACE]}}",
    "{capabilities: {add: [DAC_READ_SEARCH]}}",
    "{capabilities: {add: [BPF, PERFMON]}}",
    "{capabilities: {add: [KILL, MKNOD]}}",
];

#[tokio::test]
async fn each_relaxation_is_refused_below_its_level_naming_field_level_and_label() {
    let strict = TestNamespace::new("iso-strict").await;
    let baseline = TestNamespace::with_isolation("iso-base", "baseline").await;
    let privileged = TestNamespace::with_isolation("iso-priv", "privileged").await;
    for (i, isolation) in RELAXATIONS.iter().enumerate() {
        let yaml = workload(&format!("w{i}"), isolation);
        // What the Rust definition says this needs: the API server must agree.
        let wl: Workload = serde_yaml::from_str(&yaml).expect("test manifest");
        let needed = policy::required_level(&wl.spec.isolation);
        assert_ne!(
            needed,
            IsolationLevel::Strict,
            "{isolation} relaxes nothing"
        );
        for ns in [&strict, &baseline, &privileged] {
            let level = if ns.name.starts_with("iso-priv") {
                IsolationLevel::Privileged
            } else if ns.name.starts_with("iso-base") {
                IsolationLevel::Baseline
            } else {
                IsolationLevel::Strict
            };
            let result = manifest::create(&ns.client, &ns.name, &yaml).await;
            if level.allows(needed) {
                assert!(
                    result.is_ok(),
                    "{isolation} refused in a {level} namespace: {:?}",
                    result.err()
                );
                continue;
            }
            let status = manifest::refusal(result);
            assert_eq!(status.code, 403, "{isolation}: {status:?}");
            let m = &status.message;
            for r in policy::beyond(&wl.spec.isolation, level) {
                assert!(m.contains(r.field), "{isolation}: {m} lacks {}", r.field);
                assert!(m.contains(&r.value), "{isolation}: {m} lacks {}", r.value);
            }
            assert!(
                m.contains(&format!("needs isolation level {needed}")),
                "{isolation}: {m}"
            );
            assert!(
                m.contains(&format!("namespace {} is {level}", ns.name)),
                "{isolation}: {m}"
            );
            assert!(
                m.contains(&format!("bulkhead.dev/isolation={needed}")),
                "{isolation}: {m}"
            );
        }
    }
    // The level applies to Instances too, and to updates that relax the isolation block.
    let inst = "apiVersion: bulkhead.dev/v1alpha1\nkind: Instance\nmetadata: {name: i}\nspec:\n  revision: r1\n  template: {image: \"x/y:1\"}\n  isolation: {userNamespace: false}\n";
    let status = manifest::refusal(manifest::create(&strict.client, &strict.name, inst).await);
    assert!(
        status
            .message
            .contains("spec.isolation.userNamespace: false"),
        "{status:?}"
    );
    manifest::create(&strict.client, &strict.name, &workload("upd", "{}"))
        .await
        .expect("a strict workload");
    let out = kubectl([
        "patch",
        "wl",
        "upd",
        "-n",
        &strict.name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"isolation":{"readOnlyRootFilesystem":false}}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("readOnlyRootFilesystem: false needs isolation level baseline"),
        "a relaxing update was not refused: {err}"
    );
    for ns in [strict, baseline, privileged] {
        ns.delete().await;
    }
}

/// The condition of type `t` on a Workload, once it has one matching `pred`.
async fn workload_condition(
    api: &Api<Workload>,
    name: &str,
    t: &str,
    pred: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    poll_until(TIMEOUT, || {
        let api = api.clone();
        let pred = &pred;
        async move {
            let wl = api.get(name).await.ok()?;
            let c = conditions::find(&wl.status?.conditions, t)?.clone();
            pred(&c).then_some(c)
        }
    })
    .await
}

#[tokio::test]
async fn the_host_floor_keeps_relaxed_instances_off_and_the_agent_refuses_them() {
    // A privileged Workload: every host here has a stricter floor (local-1 runs baseline,
    // test agents register cordoned), so the scheduler never places it and says why.
    let ns = TestNamespace::with_isolation("floor", "privileged").await;
    let yaml = workload("root", "{userNamespace: false}").replace("replicas: 0", "replicas: 1");
    manifest::create(&ns.client, &ns.name, &yaml)
        .await
        .expect("a privileged namespace admits it");
    let instances: Api<Instance> = ns.api();
    let unscheduled = poll_until(TIMEOUT, || {
        let api = instances.clone();
        async move {
            let list = api.list(&Default::default()).await.ok()?;
            let i = list.items.into_iter().next()?;
            let c = conditions::find(&i.status?.conditions, types::SCHEDULED)?.clone();
            (c.status == "False").then_some((i.spec.host_name, c.message))
        }
    })
    .await
    .expect("the instance reports why it is not scheduled");
    assert_eq!(
        unscheduled.0, None,
        "bound to a host whose floor refuses it"
    );
    assert!(
        unscheduled
            .1
            .contains("isolation floor stricter than privileged (the agent's --isolation-floor)"),
        "{}",
        unscheduled.1
    );

    // The agent's own floor, whatever the API admitted: a hand-made Instance bound to a
    // strict host fails with IsolationForbidden and starts nothing.
    let agent = Agent::start(
        &unique_host("floor"),
        &[
            "--isolation-floor",
            "strict",
            "--allowed-registries",
            &registry(),
        ],
    );
    let baseline = TestNamespace::with_isolation("floor-b", "baseline").await;
    let mut inst = fixtures::instance("writable-root").on(&agent.host).build();
    inst.spec.isolation.read_only_root_filesystem = false;
    baseline
        .api::<Instance>()
        .create(&PostParams::default(), &inst)
        .await
        .expect("admin creates a bound instance");
    let failed =
        fixtures::wait_for_phase(&baseline, "writable-root", InstancePhase::Failed, TIMEOUT).await;
    let s = failed.status.expect("status");
    assert_eq!(s.reason.as_deref(), Some("IsolationForbidden"), "{s:?}");
    assert!(
        s.message.as_deref().is_some_and(
            |m| m.contains("spec.isolation.readOnlyRootFilesystem: false needs baseline")
        ),
        "{s:?}"
    );
    assert!(s.container_id.is_none(), "a container was made: {s:?}");
    assert!(
        bulkhead_e2e::agent::containers(&agent.namespace).is_empty(),
        "the refused instance left a container"
    );
    let host: Host = Api::all(ns.client.clone()).get(&agent.host).await.unwrap();
    assert_eq!(
        host.status.and_then(|s| s.isolation_floor),
        Some(IsolationLevel::Strict),
        "the floor is published in Host status"
    );
    fixtures::delete_and_wait(&baseline, "writable-root", TIMEOUT).await;
    ns.delete().await;
    baseline.delete().await;
}

#[tokio::test]
async fn a_workload_whose_namespace_was_tightened_reports_the_refused_creates() {
    let ns = TestNamespace::with_isolation("tighten", "baseline").await;
    let yaml = workload("rw", "{readOnlyRootFilesystem: false}");
    manifest::create(&ns.client, &ns.name, &yaml).await.unwrap();
    // Tighten the namespace, then ask for an instance: the controller's create is refused.
    let out = kubectl([
        "label",
        "ns",
        &ns.name,
        "bulkhead.dev/isolation=strict",
        "--overwrite",
    ]);
    assert!(out.status.success());
    let workloads: Api<Workload> = ns.api();
    workloads
        .patch(
            "rw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let c = workload_condition(&workloads, "rw", types::REPLICA_FAILURE, |c| {
        c.status == "True"
    })
    .await
    .expect("ReplicaFailure=True");
    assert_eq!(c.reason, "FailedCreate");
    assert!(
        c.message.contains(
            "spec.isolation.readOnlyRootFilesystem: false needs isolation level baseline"
        ),
        "{}",
        c.message
    );
    // Allowing it again lets the create through and clears the condition.
    let out = kubectl([
        "label",
        "ns",
        &ns.name,
        "bulkhead.dev/isolation=baseline",
        "--overwrite",
    ]);
    assert!(out.status.success());
    let cleared = poll_until(TIMEOUT, || {
        let api = workloads.clone();
        async move {
            let wl = api.get("rw").await.ok()?;
            conditions::find(&wl.status?.conditions, types::REPLICA_FAILURE)
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        cleared.is_some(),
        "ReplicaFailure stayed after the namespace allowed it"
    );
    ns.delete().await;
}

fn forbidden(result: Result<impl std::fmt::Debug, kube::Error>, needle: &str) {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains(needle), "{} lacks {needle}", s.message);
        }
        other => panic!("expected 403 naming {needle}, got {other:?}"),
    }
}

#[tokio::test]
async fn each_agent_writes_only_its_own_host_lease_instances_and_profiles() {
    let ns = TestNamespace::with_isolation("noderes", "baseline").await;
    let (a, b) = (unique_host("nr-a"), unique_host("nr-b"));
    let as_a = client_for(&agent_kubeconfig(&a)).await;
    let admin = ns.client.clone();
    let apply = PatchParams::apply("bulkhead-node-agent").force();
    let host = |name: &str| json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Host", "metadata": {"name": name}, "spec": {}});
    let hosts_a: Api<Host> = Api::all(as_a.clone());
    hosts_a
        .patch(&a, &apply, &Patch::Apply(host(&a)))
        .await
        .expect("its own Host");
    Api::<Host>::all(admin.clone())
        .patch(&b, &apply, &Patch::Apply(host(&b)))
        .await
        .unwrap();
    forbidden(
        hosts_a.patch(&b, &apply, &Patch::Apply(host(&b))).await,
        &format!("the node agent of {a} may write only Host {a}, not {b}"),
    );
    forbidden(
        hosts_a
            .patch_status(&b, &apply, &Patch::Apply(json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Host", "status": {"isolationFloor": "privileged"}})))
            .await,
        "may write only Host",
    );

    let leases: Api<Lease> = Api::namespaced(as_a.clone(), bulkhead_crds::SYSTEM_NAMESPACE);
    let lease = |name: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": {"holderIdentity": name}});
    leases
        .patch(&a, &apply, &Patch::Apply(lease(&a)))
        .await
        .expect("its own Lease");
    forbidden(
        leases.patch(&b, &apply, &Patch::Apply(lease(&b))).await,
        "may write only its own Lease",
    );
    forbidden(
        leases
            .patch(
                "bulkhead-controller",
                &apply,
                &Patch::Apply(lease("bulkhead-controller")),
            )
            .await,
        // Both the node restriction and the controller-writes policy refuse it; the API
        // server reports whichever it evaluated first.
        "bulkhead-controller",
    );

    // Instances: status of its own, never another host's, never a create.
    let admin_instances: Api<Instance> = ns.api();
    for (name, h) in [("on-a", &a), ("on-b", &b)] {
        admin_instances
            .create(
                &PostParams::default(),
                &fixtures::instance(name).on(h).build(),
            )
            .await
            .unwrap();
    }
    let instances_a: Api<Instance> = Api::namespaced(as_a.clone(), &ns.name);
    let phase = |p: &str| Patch::Merge(json!({"status": {"phase": p}}));
    instances_a
        .patch_status("on-a", &PatchParams::default(), &phase("Pulling"))
        .await
        .expect("status of its own instance");
    forbidden(
        instances_a
            .patch_status("on-b", &PatchParams::default(), &phase("Running"))
            .await,
        &format!("may only update the status and finalizers of Instances bound to {a}"),
    );
    forbidden(
        instances_a
            .patch(
                "on-b",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["bulkhead.dev/node-agent"]}})),
            )
            .await,
        "(bound to",
    );
    forbidden(
        instances_a
            .create(
                &PostParams::default(),
                &fixtures::instance("mine").on(&a).build(),
            )
            .await,
        "cannot create",
    );

    // Profiles: only `<workload>-recorded` labelled with its own host.
    let profiles: Api<SeccompProfile> = Api::namespaced(as_a.clone(), &ns.name);
    let profile = |name: &str, h: &str| json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "SeccompProfile", "metadata": {"name": name, "labels": {"bulkhead.dev/host": h}}, "spec": {"defaultAction": "SCMP_ACT_ALLOW"}});
    profiles
        .patch(
            "w-recorded",
            &apply,
            &Patch::Apply(profile("w-recorded", &a)),
        )
        .await
        .expect("a profile it recorded");
    forbidden(
        profiles
            .patch("w", &apply, &Patch::Apply(profile("w", &a)))
            .await,
        "may write only the recorded profiles it made",
    );
    forbidden(
        profiles
            .patch(
                "v-recorded",
                &apply,
                &Patch::Apply(profile("v-recorded", &b)),
            )
            .await,
        "may write only the recorded profiles it made",
    );

    // The same ServiceAccount without a node name in its credentials may write nothing.
    let anonymous = client_for(&service_account_kubeconfig("bulkhead-node-agent")).await;
    forbidden(
        Api::<Host>::all(anonymous)
            .patch(&a, &apply, &Patch::Apply(host(&a)))
            .await,
        "credentials name no node",
    );

    for h in [&a, &b] {
        let _ = kubectl(["delete", "hosts.bulkhead.dev", h, "--wait=false"]);
    }
    for name in ["on-a", "on-b"] {
        let _ = admin_instances.delete(name, &Default::default()).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn tenants_run_workloads_but_never_write_instances() {
    let ns = TestNamespace::new("tenant").await;
    let user = format!("tenant-{}", ns.name);
    // `edit` aggregates bulkhead-edit; a second user gets a role that grants Instance writes
    // outright, which the controller-writes policy still refuses.
    let out = kubectl([
        "create",
        "rolebinding",
        "t",
        "-n",
        &ns.name,
        "--clusterrole=edit",
        &format!("--user={user}"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let broad = format!("broad-{}", ns.name);
    assert!(
        kubectl([
            "create",
            "role",
            "inst",
            "-n",
            &ns.name,
            "--verb=*",
            "--resource=instances.bulkhead.dev"
        ])
        .status
        .success()
    );
    assert!(
        kubectl([
            "create",
            "rolebinding",
            "b",
            "-n",
            &ns.name,
            "--role=inst",
            &format!("--user={broad}")
        ])
        .status
        .success()
    );

    let tenant = client_for(&user_kubeconfig(&user)).await;
    manifest::create(&tenant, &ns.name, &workload("mine", "{}"))
        .await
        .expect("a tenant with edit creates a Workload");
    let inst = fixtures::instance("bound").on("local-1").build();
    let tenant_instances: Api<Instance> = Api::namespaced(tenant.clone(), &ns.name);
    forbidden(
        tenant_instances.create(&PostParams::default(), &inst).await,
        "cannot create resource \"instances\"",
    );
    tenant_instances
        .list(&Default::default())
        .await
        .expect("tenants read Instances");

    let broad_client = client_for(&user_kubeconfig(&broad)).await;
    let broad_instances: Api<Instance> = Api::namespaced(broad_client, &ns.name);
    forbidden(
        broad_instances.create(&PostParams::default(), &inst).await,
        "only the bulkhead controller creates Instances",
    );
    // An Instance the admin made, left unbound (SELinux Required: no host here enforces it):
    // binding it, or relabelling it, is not the tenant's to do.
    let mut mine = fixtures::instance("made").build();
    mine.spec.host_name = None;
    mine.spec.isolation.selinux.mode = bulkhead_crds::isolation::SELinuxMode::Required;
    ns.api::<Instance>()
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    forbidden(
        tenant_instances
            .patch(
                "made",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostName": "local-1"}})),
            )
            .await,
        "cannot patch resource",
    );
    forbidden(
        broad_instances
            .patch(
                "made",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostName": "local-1"}})),
            )
            .await,
        "only the bulkhead controller creates Instances or changes their spec",
    );
    forbidden(
        broad_instances
            .patch(
                "made",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"bulkhead.dev/workload": "x"}}})),
            )
            .await,
        "or labels",
    );
    tenant_instances
        .delete("made", &Default::default())
        .await
        .expect("tenants may delete an Instance");
    ns.delete().await;
}
