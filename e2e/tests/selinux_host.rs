//! MCS labels on an SELinux-enforcing host (issue #20): the VM `selinux-1` that
//! e2e/selinux/host.sh boots under qemu, with this checkout's agent inside. These tests need
//! that VM (or, for `no_enforcing_host_*`, its absence) and are ignored in `make test`;
//! `make test-selinux` runs `no_enforcing_host_*` before it boots the VM and the rest after.
//!
//! What happens inside the guest is asked through e2e/selinux/probe.sh (a fixed set of
//! verbs, served on a loopback port forwarded into the guest): `runc exec` runs a command
//! inside an instance with that instance's label, user namespace, seccomp filter and
//! capabilities, which is how "instance A writes, instance B reads" is done.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{
    Host, Instance, InstancePhase,
    conditions::{self, types},
    host::SELinuxHostMode,
};
use bulkhead_e2e::{TestNamespace, agent::image, fixtures, manifest, plugin, poll_until};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "selinux-1";
/// Under TCG a pull and a runc start take tens of seconds.
const TIMEOUT: Duration = Duration::from_secs(600);

/// One request to the guest's probe: its output (without the status line) and exit code.
async fn guest(request: &str) -> (i32, String) {
    let offset: u16 = std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let addr = format!("127.0.0.1:{}", 7070 + offset);
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(format!("{request}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(300), exchange)
        .await
        .unwrap_or_else(|_| panic!("the guest's probe did not answer {request:?} in 300s"))
        .unwrap_or_else(|e| panic!("the guest's probe at {addr} ({request:?}): {e}"));
    let (body, last) = out
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", out.trim_end()));
    let code = last
        .strip_prefix("exit=")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no exit status from the probe for {request:?}: {out:?}"));
    (code, body.to_string())
}

/// `sh -c script` inside the instance's container (runc exec).
async fn exec_in(container: &str, script: &str) -> (i32, String) {
    guest(&format!("exec {container} {script}")).await
}

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn the_vm_host_enforces_selinux_with_no_permissive_domain() {
    let ns = TestNamespace::new("selinux-host").await;
    let host: Host = Api::all(ns.client.clone())
        .get(HOST)
        .await
        .expect("Host selinux-1");
    let features = host.status.expect("status").features.expect("features");
    assert_eq!(features.selinux, SELinuxHostMode::Enforcing);
    assert!(features.user_namespaces && features.seccomp, "{features:?}");
    // The kernel's own word, and no domain in the loaded policy exempt from enforcement
    // (a permissive container_t would let every MCS check below pass falsely).
    assert_eq!(guest("enforce").await, (0, "1".to_string()));
    let (code, out) = guest("permissive").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim().trim_end_matches(':') == "Permissive Types: 0"
                || l.trim() == "Permissive Types: 0"),
        "permissive types are loaded: {out}"
    );
    ns.delete().await;
}

/// Creates a web instance bound to selinux-1 and waits until it runs with its isolation
/// verified; returns it.
async fn running_on_vm(ns: &TestNamespace, name: &str) -> Instance {
    let inst = fixtures::instance(name)
        .on(HOST)
        .image(&image("web:v1"))
        .build();
    ns.api::<Instance>()
        .create(&PostParams::default(), &inst)
        .await
        .unwrap();
    fixtures::wait_for_phase(ns, name, InstancePhase::Running, TIMEOUT).await
}

/// The allocated level and the container of a running instance, after checking that every
/// wall is on: the label read back (enforced), user namespace, seccomp filter, no
/// capabilities, no_new_privs and a read-only root.
fn walls_hold(name: &str, i: &Instance) -> (String, String) {
    let s = i.status.clone().expect("status");
    assert!(
        conditions::is_true(&s.conditions, types::ISOLATION_VERIFIED),
        "{name}: {s:?}"
    );
    let iso = s.isolation.expect("isolation");
    let selinux = iso.selinux.expect("selinux status");
    // enforced is true only when /proc/<pid>/attr/current equals the allocated label.
    assert!(selinux.enforced, "{name}: {selinux:?}");
    assert_eq!(iso.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(iso.no_new_privs, Some(true), "{name}");
    assert!(iso.user_namespace.is_some_and(|u| u.host_uid > 0), "{name}");
    assert_eq!(
        iso.seccomp.as_ref().map(|x| x.mode.as_str()),
        Some("filter")
    );
    let caps = iso.capabilities.expect("capabilities");
    assert!(
        caps.effective.is_empty() && caps.bounding.is_empty(),
        "{caps:?}"
    );
    (selinux.level, s.container_id.expect("container id"))
}

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn mcs_labels_are_read_back_per_instance_and_deny_across_instances_where_dac_allows() {
    let ns = TestNamespace::new("selinux-mcs").await;
    let a = running_on_vm(&ns, "a").await;
    let b = running_on_vm(&ns, "b").await;
    let (level_a, id_a) = walls_hold("a", &a);
    let (level_b, id_b) = walls_hold("b", &b);
    assert_ne!(level_a, level_b, "two instances share an MCS pair");

    // The kernel's label of each instance's first process (pid 1 of its pid namespace), read
    // from inside: the allocated pair, nothing else.
    let proc_a = format!("system_u:system_r:container_t:{level_a}");
    let proc_b = format!("system_u:system_r:container_t:{level_b}");
    for (id, label) in [(&id_a, &proc_a), (&id_b, &proc_b)] {
        let (code, out) = exec_in(id, "cat /proc/1/attr/current").await;
        assert_eq!((code, out.trim_end_matches('\0')), (0, label.as_str()));
    }

    // A shared directory both reach (mode 1777, container_file_t:s0), on each /www.
    for id in [&id_a, &id_b] {
        let (code, out) = guest(&format!("share {id}")).await;
        assert_eq!(code, 0, "sharing the directory with {id}: {out}");
    }
    let (code, out) = exec_in(&id_a, "echo secret-a > /www/from-a && cat /www/from-a").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "secret-a"),
        "A writes and reads its file"
    );
    let file_a = format!("system_u:object_r:container_file_t:{level_a}");
    assert_eq!(guest("label from-a").await, (0, file_a.clone()));

    // DAC lets B read it (world-readable, B sees it), SELinux does not.
    let (code, out) = exec_in(&id_b, "ls -ln /www/from-a").await;
    assert!(code == 0 && out.starts_with("-rw-r--r--"), "{code} {out}");
    let (code, out) = exec_in(&id_b, "cat /www/from-a").await;
    assert!(
        code != 0 && out.contains("Permission denied"),
        "B read A's file: {code} {out}"
    );
    let (_, avc) = guest(&format!("avc {proc_b}")).await;
    let denial = avc
        .lines()
        .find(|l| l.contains(&format!("tcontext={file_a}")) && l.contains("tclass=file"))
        .unwrap_or_else(|| panic!("no AVC record of B's denied read: {avc}"));
    assert!(denial.contains("denied  { read }"), "{denial}");
    // Same types, other categories: type enforcement allows container_t to read
    // container_file_t, so the kernel's refusal is the MCS constraint (the level check).
    let file_b = format!("system_u:object_r:container_file_t:{level_b}");
    let allowed = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("allowed="))
            .is_some_and(|l| l.split_whitespace().any(|p| p == "read"))
    };
    let (_, across) = guest(&format!("compute_av {proc_b} {file_a}")).await;
    let (_, own) = guest(&format!("compute_av {proc_b} {file_b}")).await;
    assert!(!allowed(&across) && allowed(&own), "{across}\n{own}");

    // The same file with B's categories: B reads it, A no longer does.
    assert_eq!(guest(&format!("relabel from-a {level_b}")).await.0, 0);
    let (code, out) = exec_in(&id_b, "cat /www/from-a").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "secret-a"),
        "B reads its own level"
    );
    let (code, out) = exec_in(&id_a, "cat /www/from-a").await;
    assert!(
        code != 0 && out.contains("Permission denied"),
        "{code} {out}"
    );

    // The shim cannot unmount a rootfs with the shared directory still mounted under it.
    for id in [&id_a, &id_b] {
        let (code, out) = guest(&format!("unshare {id}")).await;
        assert_eq!(code, 0, "unmounting the shared directory of {id}: {out}");
    }
    for name in ["a", "b"] {
        fixtures::delete_and_wait(&ns, name, TIMEOUT).await;
    }
    ns.delete().await;
}

const REQUIRED_WORKLOAD: &str = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: needs-selinux}
spec:
  owner: team-a
  replicas: 2
  template: {image: "IMAGE", terminationGracePeriodSeconds: 5}
  isolation: {selinux: {mode: Required}}
"#;

async fn workload_instances(ns: &TestNamespace, expected: usize) -> Vec<Instance> {
    let api: Api<Instance> = ns.api();
    let last = std::sync::Mutex::new(String::from("nothing listed yet"));
    let found = poll_until(TIMEOUT, || {
        let (api, last) = (api.clone(), &last);
        async move {
            // The namespace is this test's own: every Instance in it is the Workload's.
            let items = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    *last.lock().unwrap() = format!("listing: {e}");
                    return None;
                }
            };
            // Decided: created bound to a host (the controller places at creation), or
            // given a Scheduled condition by the scheduler (with its reason when it fits
            // nowhere).
            let scheduled: Vec<Option<String>> = items
                .iter()
                .map(|i| {
                    if let Some(host) = &i.spec.host_name {
                        return Some(format!("bound to {host}"));
                    }
                    let s = i.status.as_ref()?;
                    conditions::find(&s.conditions, types::SCHEDULED).map(|c| c.status.clone())
                })
                .collect();
            *last.lock().unwrap() = format!("{} instances, Scheduled {scheduled:?}", items.len());
            (items.len() == expected && scheduled.iter().all(Option::is_some)).then_some(items)
        }
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "{expected} instances of needs-selinux were not all decided: {}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn a_selinux_required_workload_lands_only_on_the_enforcing_host() {
    let ns = TestNamespace::new("selinux-required").await;
    // The local system's own host is Ready beside selinux-1 and does not enforce SELinux.
    let hosts: Vec<Host> = Api::all(ns.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        hosts.len() >= 2,
        "only {} hosts: the test proves nothing",
        hosts.len()
    );
    let yaml = REQUIRED_WORKLOAD.replace("IMAGE", &image("web:v1"));
    manifest::create(&ns.client, &ns.name, &yaml).await.unwrap();
    for i in workload_instances(&ns, 2).await {
        assert_eq!(i.spec.host_name.as_deref(), Some(HOST), "{:?}", i.status);
        let name = i.metadata.name.unwrap();
        let running = fixtures::wait_for_phase(&ns, &name, InstancePhase::Running, TIMEOUT).await;
        walls_hold(&name, &running);
    }
    ns.delete().await;
}

#[tokio::test]
#[ignore = "runs before the SELinux VM boots: make test-selinux"]
async fn no_enforcing_host_a_selinux_required_workload_stays_unscheduled_with_the_reason() {
    let ns = TestNamespace::new("selinux-none").await;
    let hosts: Vec<Host> = Api::all(ns.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(!hosts.is_empty(), "no host: nothing to be refused by");
    assert!(
        hosts.iter().all(|h| h
            .status
            .as_ref()
            .and_then(|s| s.features.as_ref())
            .is_none_or(|f| f.selinux != SELinuxHostMode::Enforcing)),
        "a host enforces SELinux: run this before the VM boots"
    );
    let yaml = REQUIRED_WORKLOAD.replace("IMAGE", &image("web:v1"));
    manifest::create(&ns.client, &ns.name, &yaml).await.unwrap();
    for i in workload_instances(&ns, 2).await {
        assert_eq!(i.spec.host_name, None);
        let s = i.status.unwrap();
        let c = conditions::find(&s.conditions, types::SCHEDULED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert!(
            c.message.contains("lack SELinux enforcing"),
            "{}",
            c.message
        );
    }
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the SELinux VM: make test-selinux"]
async fn the_isolation_attempt_suite_holds_on_the_enforcing_host() {
    let ns = TestNamespace::new("selinux-verify").await;
    // kubectl bulkhead verify: every attempt as a short-lived Instance on selinux-1, its
    // verdict read from how it ended. Under TCG the attempts start slowly: a long timeout.
    let out = plugin::run(&[
        "verify",
        "--host",
        HOST,
        "-n",
        &ns.name,
        "--image",
        &image("tools:v1"),
        "--timeout",
        "1500",
    ])
    .ok();
    let rows: Vec<(&str, &str)> = out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cells.len() >= 3).then(|| (cells[0], cells[1]))
        })
        .collect();
    assert_eq!(rows.len(), 21, "{out}");
    for (attempt, result) in &rows {
        let want = if *attempt == "control-read" {
            "control ok"
        } else {
            "held"
        };
        assert_eq!(*result, want, "{attempt}:\n{out}");
    }
    assert!(
        out.contains(&format!(
            "host {HOST}: all 20 attempts held; the control succeeded"
        )),
        "{out}"
    );
    ns.delete().await;
}
