//! Invalid objects are refused by the real API server's schema and CEL validation, each with
//! a message that names the offending field.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_e2e::{TestNamespace, manifest};

const WORKLOAD: &str = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata:
  name: web
spec:
  owner: team-web
  replicas: 2
  template:
    image: localhost:5000/bulkhead/web:v1
    ports:
      - containerPort: 8080
"#;

/// The valid Workload with `spec.<path>` replaced (or added) by `value`, as YAML.
fn workload_with(path: &str, value: &str) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(WORKLOAD).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(value).unwrap();
    let mut node = doc.get_mut("spec").unwrap();
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let map = node.as_mapping_mut().unwrap();
        if !map.contains_key(*part) {
            map.insert((*part).into(), serde_yaml::Mapping::new().into());
        }
        node = map.get_mut(*part).unwrap();
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        node.as_mapping_mut().unwrap().remove(last);
    } else {
        node.as_mapping_mut().unwrap().insert(last.into(), value);
    }
    serde_yaml::to_string(&doc).unwrap()
}

/// Creates `yaml` in a fresh namespace and asserts that the API server refuses it as
/// Invalid with a message (and a cause) naming `field`.
async fn assert_refused(yaml: &str, field: &str, says: &str) {
    let ns = TestNamespace::new("admission").await;
    let status = manifest::refusal(manifest::create(&ns.client, &ns.name, yaml).await);
    assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
    assert!(
        status.message.contains(field),
        "message should name {field}: {}",
        status.message
    );
    assert!(
        status.message.contains(says),
        "message should say {says:?}: {}",
        status.message
    );
    let causes = status.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.field == field),
        "no cause for field {field}: {causes:?}"
    );
    ns.delete().await;
}

macro_rules! refused {
    ($($name:ident: $yaml:expr => $field:literal, $says:literal;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                assert_refused(&$yaml, $field, $says).await;
            }
        )*
    };
}

refused! {
    image_updates_without_trusted_keys:
        workload_with("imageUpdates", "{policy: Follow}") => "spec.imageUpdates.trustedKeys", "exactly one of trustedKeys";
    image_updates_with_keys_and_allow_unsigned:
        workload_with("imageUpdates", "{trustedKeys: {configMapName: keys}, allowUnsigned: true}")
            => "spec.imageUpdates.trustedKeys", "exactly one of trustedKeys";
    image_updates_of_a_digest:
        workload_with("imageUpdates", "{allowUnsigned: true}").replace(
            "localhost:5000/bulkhead/web:v1",
            "localhost:5000/bulkhead/web@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ) => "spec.imageUpdates", "must name a tag, not a digest";
    image_updates_checked_every_second:
        workload_with("imageUpdates", "{allowUnsigned: true, checkIntervalSeconds: 1}")
            => "spec.imageUpdates.checkIntervalSeconds", "greater than or equal to 5";
    semver_range_policy_without_a_range:
        workload_with("imageUpdates", "{policy: SemverRange, allowUnsigned: true}")
            => "spec.imageUpdates.semverRange", "semverRange is required with policy SemverRange";
    semver_range_with_policy_follow:
        workload_with("imageUpdates", "{policy: Follow, semverRange: '~1.4', allowUnsigned: true}")
            => "spec.imageUpdates.semverRange", "allowed only with it";
    semver_range_that_is_not_a_range:
        workload_with("imageUpdates", "{policy: SemverRange, semverRange: 'latest || 1.2', allowUnsigned: true}")
            => "spec.imageUpdates.semverRange", "must be semver comparators";
    negative_replicas:
        workload_with("replicas", "-1") => "spec.replicas", "greater than or equal to 0";
    replicas_above_the_bound:
        workload_with("replicas", "20000") => "spec.replicas", "less than or equal to 10000";
    workload_without_owner:
        workload_with("owner", "null") => "spec.owner", "Required value";
    image_with_spaces:
        workload_with("template.image", "'localhost:5000/web app:v1'") => "spec.template.image", "must be an image reference";
    image_with_upper_case_repository:
        workload_with("template.image", "localhost:5000/Web:v1") => "spec.template.image", "must be an image reference";
    image_with_a_short_digest:
        workload_with("template.image", "web@sha256:abc123") => "spec.template.image", "must be an image reference";
    memory_with_unknown_unit:
        workload_with("template.resources", "{memory: 12XB}") => "spec.template.resources.memory", "should match";
    cpu_in_words:
        workload_with("template.resources", "{cpu: 1 core}") => "spec.template.resources.cpu", "should match";
    pids_limit_zero:
        workload_with("template.resources", "{pids: 0}") => "spec.template.resources.pids", "greater than or equal to 1";
    port_out_of_range:
        workload_with("template.ports", "[{containerPort: 70000}]") => "spec.template.ports[0].containerPort", "less than or equal to 65535";
    env_name_not_an_identifier:
        workload_with("template.env", "[{name: 1BAD, value: x}]") => "spec.template.env[0].name", "should match";
    writable_path_not_absolute:
        workload_with("template.writablePaths", "[var/cache]") => "spec.template.writablePaths[0]", "should match";
    unknown_restart_policy:
        workload_with("template.restartPolicy", "Sometimes") => "spec.template.restartPolicy", "Unsupported value";
    probe_with_two_handlers:
        workload_with("template.readinessProbe", "{tcpSocket: {port: 8080}, httpGet: {port: 8080}}")
            => "spec.template.readinessProbe", "exactly one of exec, httpGet or tcpSocket";
    unknown_seccomp_type:
        workload_with("isolation.seccomp", "{type: Permissive}") => "spec.isolation.seccomp.type", "Unsupported value";
    localhost_seccomp_without_profile:
        workload_with("isolation.seccomp", "{type: Localhost}")
            => "spec.isolation.seccomp.localhostProfile", "localhostProfile must be set when type is Localhost";
    complain_seccomp_without_profile:
        workload_with("isolation.seccomp", "{type: Complain}")
            => "spec.isolation.seccomp.localhostProfile", "localhostProfile must be set when type is Localhost or Complain";
    unknown_capability:
        workload_with("isolation.capabilities", "{add: [NET_BIND_SERVICE, CAP_EVERYTHING]}")
            => "spec.isolation.capabilities.add[1]", "Unsupported value";
    unknown_selinux_mode:
        workload_with("isolation.selinux", "{mode: Sometimes}") => "spec.isolation.selinux.mode", "Unsupported value";
    unknown_strategy_type:
        workload_with("strategy", "{type: Canary}") => "spec.strategy.type", "Unsupported value";
    blue_green_settings_under_rolling_update:
        workload_with("strategy", "{type: RollingUpdate, blueGreen: {autoPromote: true}}")
            => "spec.strategy.blueGreen", "blueGreen settings require strategy type BlueGreen";
    rolling_settings_under_blue_green:
        workload_with("strategy", "{type: BlueGreen, rollingUpdate: {maxSurge: 1}}")
            => "spec.strategy.rollingUpdate", "rollingUpdate settings require strategy type RollingUpdate";
    max_surge_and_max_unavailable_both_zero:
        workload_with("strategy", "{type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: '0%'}}")
            => "spec.strategy.rollingUpdate.maxSurge", "cannot both be 0";
    max_surge_above_100_percent:
        workload_with("strategy", "{type: RollingUpdate, rollingUpdate: {maxSurge: '150%'}}")
            => "spec.strategy.rollingUpdate.maxSurge", "percentage from 0% to 100%";
    auto_promotion_seconds_without_auto_promote:
        workload_with("strategy", "{type: BlueGreen, blueGreen: {autoPromotionSeconds: 30}}")
            => "spec.strategy.blueGreen.autoPromotionSeconds", "requires autoPromote: true";
    progress_deadline_not_above_min_ready:
        workload_with("minReadySeconds", "600") => "spec.progressDeadlineSeconds", "greater than minReadySeconds";
    service_port_zero:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: WorkloadService
metadata: {name: web}
spec: {workloadName: web, ports: [{port: 0}]}
"# => "spec.ports[0].port", "greater than or equal to 1";
    service_workload_name_not_dns:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: WorkloadService
metadata: {name: web}
spec: {workloadName: Web_App, ports: [{port: 80}]}
"# => "spec.workloadName", "should match";
    seccomp_unknown_default_action:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: SeccompProfile
metadata: {name: bad}
spec: {defaultAction: SCMP_ACT_MAYBE}
"# => "spec.defaultAction", "Unsupported value";
    seccomp_unknown_syscall_name:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: SeccompProfile
metadata: {name: bad}
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls: [{names: [read, notasyscall], action: SCMP_ACT_ALLOW}]
"# => "spec.syscalls[0].names[1]", "Unsupported value";
    seccomp_empty_names:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: SeccompProfile
metadata: {name: bad}
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls: [{names: [], action: SCMP_ACT_ALLOW}]
"# => "spec.syscalls[0].names", "should have at least 1 items";
    seccomp_more_than_six_argument_rules:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: SeccompProfile
metadata: {name: bad}
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls:
    - names: [personality]
      action: SCMP_ACT_ALLOW
      args:
        - {index: 0, value: 0, op: SCMP_CMP_EQ}
        - {index: 1, value: 0, op: SCMP_CMP_EQ}
        - {index: 2, value: 0, op: SCMP_CMP_EQ}
        - {index: 3, value: 0, op: SCMP_CMP_EQ}
        - {index: 4, value: 0, op: SCMP_CMP_EQ}
        - {index: 5, value: 0, op: SCMP_CMP_EQ}
        - {index: 5, value: 1, op: SCMP_CMP_EQ}
"# => "spec.syscalls[0].args", "must have at most 6 items";
    seccomp_argument_index_out_of_range:
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: SeccompProfile
metadata: {name: bad}
spec:
  defaultAction: SCMP_ACT_ERRNO
  syscalls: [{names: [personality], action: SCMP_ACT_ALLOW, args: [{index: 6, value: 0, op: SCMP_CMP_EQ}]}]
"# => "spec.syscalls[0].args[0].index", "less than or equal to 5";
}

const BOUND_INSTANCE: &str = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Instance
metadata: {name: web-1}
spec:
  hostName: host-a
  revision: abc123
  template: {image: localhost:5000/bulkhead/web:v1}
"#;

/// Updates are validated too: a bound Instance keeps its host, and its template.
async fn assert_update_refused(from: &str, to: &str, field: &str, says: &str) {
    let ns = TestNamespace::new("admission").await;
    manifest::create(&ns.client, &ns.name, from)
        .await
        .expect("the original object is valid");
    let status = manifest::refusal(manifest::replace(&ns.client, &ns.name, to).await);
    assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
    assert!(
        status.message.contains(field),
        "message should name {field}: {}",
        status.message
    );
    assert!(
        status.message.contains(says),
        "message should say {says:?}: {}",
        status.message
    );
    ns.delete().await;
}

#[tokio::test]
async fn instance_host_name_cannot_change_once_set() {
    let moved = BOUND_INSTANCE.replace("hostName: host-a", "hostName: host-b");
    assert_update_refused(
        BOUND_INSTANCE,
        &moved,
        "spec.hostName",
        "hostName cannot change once set",
    )
    .await;
}

#[tokio::test]
async fn instance_host_name_cannot_be_removed() {
    let unbound = BOUND_INSTANCE.replace("  hostName: host-a\n", "");
    assert_update_refused(
        BOUND_INSTANCE,
        &unbound,
        "spec.hostName",
        "hostName cannot change once set",
    )
    .await;
}

#[tokio::test]
async fn instance_template_is_immutable() {
    let patched = BOUND_INSTANCE.replace("web:v1", "web:v2");
    assert_update_refused(
        BOUND_INSTANCE,
        &patched,
        "spec.template",
        "template is immutable",
    )
    .await;
}

#[tokio::test]
async fn unbound_instance_can_be_bound_once() {
    let ns = TestNamespace::new("admission").await;
    // selinux Required keeps the local system's scheduler from binding it first (no host
    // here enforces SELinux); it may still write the Scheduled condition, so a conflict is
    // retried.
    let isolation = "  isolation: {selinux: {mode: Required}}\n";
    let unbound = format!(
        "{}{isolation}",
        BOUND_INSTANCE.replace("  hostName: host-a\n", "")
    );
    let bound = format!("{BOUND_INSTANCE}{isolation}");
    manifest::create(&ns.client, &ns.name, &unbound)
        .await
        .expect("an unbound Instance is valid");
    let mut result = manifest::replace(&ns.client, &ns.name, &bound).await;
    for _ in 0..5 {
        match &result {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                result = manifest::replace(&ns.client, &ns.name, &bound).await;
            }
            _ => break,
        }
    }
    result.expect("binding an unbound Instance is allowed");
    ns.delete().await;
}
