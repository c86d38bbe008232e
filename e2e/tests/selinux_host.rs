//! MCS labels on an SELinux-enforcing host (issue #20): the VM `selinux-1` that
//! e2e/selinux/host.sh boots under qemu, with this checkout's agent inside. These tests need
//! that VM and are ignored in `make test`; `make test-selinux` boots it and runs them.

use std::time::Duration;

use bulkhead_crds::{Host, Instance, InstancePhase, host::SELinuxHostMode};
use bulkhead_e2e::{TestNamespace, agent::image, fixtures};
use kube::{Api, api::PostParams};

const HOST: &str = "selinux-1";
/// Under TCG a pull and a runc start take tens of seconds.
const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn the_vm_host_reports_selinux_enforcing() {
    let ns = TestNamespace::new("selinux-host").await;
    let host: Host = Api::all(ns.client.clone())
        .get(HOST)
        .await
        .expect("Host selinux-1");
    let status = host.status.expect("status");
    let features = status.features.expect("features");
    assert_eq!(features.selinux, SELinuxHostMode::Enforcing);
    assert!(features.user_namespaces && features.seccomp, "{features:?}");
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn each_instance_runs_with_its_own_allocated_label_read_back_from_the_kernel() {
    let ns = TestNamespace::new("selinux-mcs").await;
    let api: Api<Instance> = ns.api();
    for name in ["a", "b"] {
        let inst = fixtures::instance(name)
            .on(HOST)
            .image(&image("web:v1"))
            .args(&["httpd", "-f", "-p", "8080", "-h", "/www"])
            .build();
        api.create(&PostParams::default(), &inst).await.unwrap();
    }
    let mut levels = Vec::new();
    for name in ["a", "b"] {
        let i = fixtures::wait_for_phase(&ns, name, InstancePhase::Running, TIMEOUT).await;
        let s = i.status.expect("status");
        assert!(
            bulkhead_crds::conditions::is_true(
                &s.conditions,
                bulkhead_crds::conditions::types::ISOLATION_VERIFIED
            ),
            "{s:?}"
        );
        let iso = s.isolation.expect("isolation");
        let selinux = iso.selinux.expect("selinux status");
        // enforced is true only when /proc/<pid>/attr/current equals the allocated label.
        assert!(selinux.enforced, "{name}: {selinux:?}");
        // The other walls hold beside it.
        assert_eq!(iso.read_only_root_filesystem, Some(true));
        assert_eq!(iso.no_new_privs, Some(true));
        assert!(iso.user_namespace.is_some_and(|u| u.host_uid > 0));
        levels.push(selinux.level);
    }
    assert_ne!(levels[0], levels[1], "two instances share an MCS pair");
    for name in ["a", "b"] {
        fixtures::delete_and_wait(&ns, name, TIMEOUT).await;
    }
    ns.delete().await;
}
