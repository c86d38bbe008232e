//! The CRDs install and serve: examples apply, `kubectl get bulkhead` shows the printer
//! columns, `kubectl explain` shows the field docs, and agents can select by host.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_crds::Instance;
use bulkhead_e2e::{TestNamespace, kubectl, manifest};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, api::ListParams};

fn stdout_of(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn all_five_crds_are_established() {
    let client = bulkhead_e2e::client().await;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in bulkhead_crds::crds() {
        let name = crd.metadata.name.unwrap();
        let live = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name} not installed: {e}"));
        let conditions = live.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "{name} is not {wanted}: {conditions:?}"
            );
        }
    }
}

#[tokio::test]
async fn examples_apply_and_list_with_printer_columns() {
    let ns = TestNamespace::with_isolation("examples", "baseline").await;
    let applied = stdout_of(&["apply", "-n", &ns.name, "-f", "examples/"]);
    for object in [
        "workload.bulkhead.dev/web",
        "workload.bulkhead.dev/api",
        "workloadservice.bulkhead.dev/web",
        "seccompprofile.bulkhead.dev/httpd-minimal",
    ] {
        assert!(applied.contains(object), "{object} not applied:\n{applied}");
    }

    let listed = stdout_of(&["get", "bulkhead", "-A"]);
    for header in [
        "REPLICAS", "READY", "STRATEGY", "ACTIVE", "WORKLOAD", "DEFAULT",
    ] {
        assert!(
            listed.contains(header),
            "column {header} missing:\n{listed}"
        );
    }
    let web = stdout_of(&["get", "wl", "web", "-n", &ns.name, "--no-headers"]);
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(cols[0], "web");
    assert_eq!(cols[1], "2", "replicas column: {web}");
    assert!(cols.contains(&"BlueGreen"), "strategy column: {web}");
    let api = stdout_of(&["get", "workloads", "api", "-n", &ns.name, "--no-headers"]);
    assert!(
        api.contains("RollingUpdate") && api.split_whitespace().nth(1) == Some("3"),
        "{api}"
    );
    let scp = stdout_of(&["get", "scp", "-n", &ns.name, "--no-headers"]);
    assert!(
        scp.contains("SCMP_ACT_ERRNO"),
        "default action column: {scp}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn instance_columns_show_host_phase_and_allocations() {
    let ns = TestNamespace::new("columns").await;
    manifest::create(
        &ns.client,
        &ns.name,
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Instance
metadata: {name: web-abc}
spec: {hostName: host-a, revision: r1, template: {image: web:v1}}
"#,
    )
    .await
    .unwrap();
    // Status as the node agent will write it, through the status subresource.
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": "10.88.0.5",
        "isolation": {
            "selinux": {"level": "s0:c12,c345", "enforced": false},
            "userNamespace": {"hostUID": 165536, "hostGID": 165536, "size": 65536,
                              "range": "165536-231071"}
        }
    }});
    ns.api::<Instance>()
        .patch_status(
            "web-abc",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .unwrap();
    let row = stdout_of(&["get", "inst", "-n", &ns.name, "--no-headers"]);
    for value in [
        "web-abc",
        "host-a",
        "Running",
        "10.88.0.5",
        "r1",
        "s0:c12,c345",
        "165536-231071",
    ] {
        assert!(row.contains(value), "{value} missing from: {row}");
    }
    let header = stdout_of(&["get", "inst", "-n", &ns.name]);
    for column in ["HOST", "PHASE", "IP", "REVISION", "MCS", "UIDS", "AGE"] {
        assert!(header.contains(column), "column {column} missing: {header}");
    }
    ns.delete().await;
}

#[tokio::test]
async fn agents_can_watch_only_their_hosts_instances() {
    let ns = TestNamespace::new("selector").await;
    for (name, host) in [("a-1", "host-a"), ("a-2", "host-a"), ("b-1", "host-b")] {
        manifest::create(
            &ns.client,
            &ns.name,
            &format!(
                "apiVersion: bulkhead.dev/v1alpha1\nkind: Instance\nmetadata: {{name: {name}}}\n\
                 spec: {{hostName: {host}, revision: r1, template: {{image: web:v1}}}}\n"
            ),
        )
        .await
        .unwrap();
    }
    let api: Api<Instance> = ns.api();
    let on_a = api
        .list(&ListParams::default().fields("spec.hostName=host-a"))
        .await
        .unwrap();
    let mut names: Vec<_> = on_a
        .items
        .iter()
        .map(|i| i.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a-1", "a-2"]);
    ns.delete().await;
}

#[test]
fn kubectl_explain_shows_the_isolation_docs() {
    // kubectl wraps lines; compare with whitespace collapsed.
    let out = stdout_of(&["explain", "workload.spec.isolation"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for text in [
        "How each instance is isolated",
        "userNamespace",
        "65536-wide host UID/GID range",
        "readOnlyRootFilesystem",
        "seccomp",
        "capabilities",
    ] {
        assert!(
            out.contains(text),
            "{text:?} missing from kubectl explain:\n{out}"
        );
    }
    let inst = stdout_of(&["explain", "instance.spec.hostName"]);
    assert!(inst.contains("Set once by the scheduler"), "{inst}");
}

#[test]
fn short_names_and_the_bulkhead_category_resolve() {
    for short in ["wl", "inst", "wsvc", "bhost", "scp"] {
        let out = kubectl(["get", short, "-A"]);
        assert!(
            out.status.success(),
            "kubectl get {short}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let resources = stdout_of(&["api-resources", "--categories=bulkhead", "-o", "name"]);
    for r in [
        "workloads",
        "instances",
        "workloadservices",
        "hosts",
        "seccompprofiles",
    ] {
        assert!(
            resources.contains(&format!("{r}.bulkhead.dev")),
            "{r} not in category: {resources}"
        );
    }
}
