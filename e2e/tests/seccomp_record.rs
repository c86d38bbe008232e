//! Seccomp Record, enforcement of the recorded profile, Complain mode, pinned profile
//! versions and missing profiles, with the real agent, containerd, runc and registry.
//!
//! The load is a bounded number of HTTP requests from the host to web:v1 (busybox httpd);
//! the call the load never makes is `mkdir`, from a busybox tool exec'd into the instance
//! (`ctr tasks exec`, under the instance's own filter). The root filesystem is read-only,
//! so an unfiltered `mkdir /denied` fails with EROFS, a refused one with EPERM.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, process::Command, time::Duration};

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD, SeccompProfile,
    isolation::{Seccomp, SeccompType},
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, exec, start_agent},
    fixtures::{delete_and_wait, instance, wait_for_phase},
    kubectl, poll_until,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

const START: Duration = Duration::from_secs(120);
/// Requests per load run.
const LOAD: usize = 20;

fn http_get(ip: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", &format!("http://{ip}:8080/")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The bounded load: waits (20 s at most) for the server to answer, then `LOAD` requests,
/// each of which must return the page.
async fn load(ip: &str) {
    let first = poll_until(Duration::from_secs(20), || async { http_get(ip) }).await;
    assert_eq!(first.as_deref(), Some("v1"), "web at {ip} never answered");
    for n in 0..LOAD {
        assert_eq!(http_get(ip).as_deref(), Some("v1"), "request {n} to {ip}");
    }
}

/// Samples of one metric family for one instance: syscall → count.
fn metric(agent: &Agent, family: &str, instance: &str) -> BTreeMap<String, u64> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{}/metrics", agent.metrics_port),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{family}{{instance=\"{instance}\",syscall=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn event_notes(ns: &str, instance: &str) -> String {
    let out = kubectl([
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={instance}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn with_seccomp(mut i: Instance, type_: SeccompType, profile: Option<&str>) -> Instance {
    i.spec.isolation.seccomp = Seccomp {
        type_,
        localhost_profile: profile.map(String::from),
    };
    i
}

async fn create(ns: &TestNamespace, i: Instance) -> Instance {
    ns.api::<Instance>()
        .create(&PostParams::default(), &i)
        .await
        .unwrap()
}

/// Starts Instance `rec` of `workload` in Record mode and gives it the load.
async fn record_under_load(ns: &TestNamespace, agent: &Agent, workload: &str) {
    let mut rec = with_seccomp(
        instance("rec").on(&agent.host).build(),
        SeccompType::Record,
        None,
    );
    rec.labels_mut()
        .insert(LABEL_WORKLOAD.to_string(), workload.to_string());
    create(ns, rec).await;
    let rec = wait_for_phase(ns, "rec", InstancePhase::Running, START).await;
    load(&rec.status.clone().unwrap().pod_ip.unwrap()).await;
}

fn mkdir_calls(m: &BTreeMap<String, u64>) -> u64 {
    m.get("mkdir").copied().unwrap_or(0) + m.get("mkdirat").copied().unwrap_or(0)
}

#[tokio::test]
async fn record_then_enforce_then_complain_on_the_web_image() {
    let agent = start_agent("scmp-rec");
    let ns = TestNamespace::with_isolation("scmp-rec", "baseline").await;
    let profiles: Api<SeccompProfile> = ns.api();

    // 1. Record web:v1 under the load.
    record_under_load(&ns, &agent, "web").await;
    let key = format!("{}/rec", ns.name);
    let seen = metric(&agent, "bulkhead_agent_seccomp_recorded_total", &key);
    assert!(
        seen.keys().any(|s| s.starts_with("accept")),
        "the recording saw no accept: {seen:?}"
    );

    // The documented command writes the profile while the instance runs...
    ns.api::<Instance>()
        .patch(
            "rec",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"bulkhead.dev/record": "1"}}}),
            ),
        )
        .await
        .unwrap();
    let written = poll_until(Duration::from_secs(30), || async {
        profiles.get_opt("web-recorded").await.ok().flatten()
    })
    .await
    .expect("web-recorded written on request");
    assert_eq!(
        written.status.unwrap().recorded_from.unwrap().instance,
        "rec"
    );
    // ...and stopping it writes it again, with everything it did until the end.
    delete_and_wait(&ns, "rec", Duration::from_secs(60)).await;
    let profile = profiles.get("web-recorded").await.unwrap();
    let managers: Vec<(String, String)> = profile
        .managed_fields()
        .iter()
        .map(|f| {
            (
                f.manager.clone().unwrap_or_default(),
                f.subresource.clone().unwrap_or_default(),
            )
        })
        .collect();
    for entry in [
        ("bulkhead-node-agent", ""),
        ("bulkhead-node-agent", "status"),
    ] {
        assert!(
            managers.contains(&(entry.0.to_string(), entry.1.to_string())),
            "spec and status applied by the agent: {managers:?}"
        );
    }
    let counts: BTreeMap<String, u64> =
        serde_json::from_str(&profile.annotations()["bulkhead.dev/syscall-counts"]).unwrap();
    let allowed = &profile.spec.syscalls[0].names;
    for name in counts.keys() {
        assert!(allowed.contains(name), "observed {name} not allowed");
    }
    for name in ["write", "execve", "futex"] {
        assert!(allowed.contains(&name.to_string()), "runtime needs {name}");
    }
    assert!(
        mkdir_calls(&counts) == 0 && !allowed.iter().any(|n| n.starts_with("mkdir")),
        "the load made no mkdir: {counts:?}"
    );
    let status = profile.status.clone().unwrap();
    assert_eq!(status.syscall_count, Some(allowed.len() as i32));
    assert_eq!(
        status.digest.as_deref(),
        Some(profile.spec.content_digest().as_str())
    );
    let from = status.recorded_from.unwrap();
    assert_eq!(
        (from.workload.as_str(), from.instance.as_str()),
        ("web", "rec")
    );
    let runtime_default = bulkhead_node_agent::isolation::seccomp::syscall_count(
        &bulkhead_node_agent::isolation::seccomp::runtime_default(),
    );
    println!(
        "recorded profile: {} system calls ({} observed); RuntimeDefault: {runtime_default}",
        allowed.len(),
        counts.len()
    );
    println!("recorded: {}", allowed.join(" "));
    assert!(
        allowed.len() * 3 < runtime_default,
        "recorded {} is not much smaller than RuntimeDefault {runtime_default}",
        allowed.len()
    );

    // 2. Enforce the recorded profile, pinned at the version just written.
    let mut enf = instance("enf")
        .on(&agent.host)
        .seccomp_profile("web-recorded")
        .build();
    enf.spec.seccomp_profile_digest = Some(profile.spec.content_digest());
    create(&ns, enf).await;
    let enf = wait_for_phase(&ns, "enf", InstancePhase::Running, START).await;
    load(&enf.status.clone().unwrap().pod_ip.unwrap()).await;
    let key = format!("{}/enf", ns.name);
    let denied = metric(&agent, "bulkhead_agent_seccomp_denials_total", &key);
    assert!(denied.is_empty(), "the load was denied: {denied:?}");
    // A call the load never made is refused with EPERM, and counted.
    let id = format!("bh-{}", enf.uid().unwrap());
    let (code, out) = exec(&agent.namespace, &id, &["/bin/busybox", "mkdir", "/denied"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "not EPERM: {out}");
    let denied = metric(&agent, "bulkhead_agent_seccomp_denials_total", &key);
    assert!(mkdir_calls(&denied) >= 1, "mkdir not counted: {denied:?}");
    let notes = poll_until(Duration::from_secs(20), || async {
        let n = event_notes(&ns.name, "enf");
        n.contains("SeccompDenied: system call mkdir").then_some(n)
    })
    .await;
    assert!(
        notes.is_some(),
        "no SeccompDenied event: {}",
        event_notes(&ns.name, "enf")
    );

    // 3. Complain mode: the same call runs (and fails only on the read-only root), counted.
    create(
        &ns,
        with_seccomp(
            instance("cmp").on(&agent.host).build(),
            SeccompType::Complain,
            Some("web-recorded"),
        ),
    )
    .await;
    let cmp = wait_for_phase(&ns, "cmp", InstancePhase::Running, START).await;
    load(&cmp.status.clone().unwrap().pod_ip.unwrap()).await;
    let id = format!("bh-{}", cmp.uid().unwrap());
    let (code, out) = exec(&agent.namespace, &id, &["/bin/busybox", "mkdir", "/denied"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("Read-only file system") && !out.contains("Operation not permitted"),
        "the call was refused instead of run: {out}"
    );
    let key = format!("{}/cmp", ns.name);
    let complaints = metric(&agent, "bulkhead_agent_seccomp_complaints_total", &key);
    assert!(
        mkdir_calls(&complaints) >= 1,
        "mkdir not counted: {complaints:?}"
    );
    let notes = poll_until(Duration::from_secs(20), || async {
        let n = event_notes(&ns.name, "cmp");
        n.contains("SeccompWouldDeny: system call mkdir")
            .then_some(n)
    })
    .await;
    assert!(
        notes.is_some(),
        "no SeccompWouldDeny event: {}",
        event_notes(&ns.name, "cmp")
    );

    // 4. Editing the profile never changes a running instance: allow mkdir, and the
    // enforcing instance still refuses it; an instance started now gets the new version.
    let mut edited = profiles.get("web-recorded").await.unwrap();
    edited.spec.syscalls[0]
        .names
        .extend(["mkdir".to_string(), "mkdirat".to_string()]);
    edited.metadata.managed_fields = None;
    profiles
        .replace("web-recorded", &PostParams::default(), &edited)
        .await
        .unwrap();
    let enf_id = format!("bh-{}", enf.uid().unwrap());
    let (_, out) = exec(
        &agent.namespace,
        &enf_id,
        &["/bin/busybox", "mkdir", "/denied"],
    );
    assert!(
        out.contains("Operation not permitted"),
        "the running instance changed: {out}"
    );
    create(
        &ns,
        instance("new")
            .on(&agent.host)
            .seccomp_profile("web-recorded")
            .build(),
    )
    .await;
    let new = wait_for_phase(&ns, "new", InstancePhase::Running, START).await;
    let (_, out) = exec(
        &agent.namespace,
        &format!("bh-{}", new.uid().unwrap()),
        &["/bin/busybox", "mkdir", "/denied"],
    );
    assert!(
        out.contains("Read-only file system"),
        "not the edited version: {out}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_missing_or_changed_profile_fails_only_its_instance() {
    let agent = start_agent("scmp-miss");
    let ns = TestNamespace::with_isolation("scmp-miss", "baseline").await;
    instance("ok").on(&agent.host).create(&ns).await;
    instance("missing")
        .on(&agent.host)
        .seccomp_profile("nope")
        .create(&ns)
        .await;
    // A profile that exists, but not at the version the instance was made for.
    let profile: SeccompProfile = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "SeccompProfile",
        "metadata": {"name": "edited"},
        "spec": {"defaultAction": "SCMP_ACT_ERRNO",
                 "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
    }))
    .unwrap();
    ns.api::<SeccompProfile>()
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let mut stale = instance("stale")
        .on(&agent.host)
        .seccomp_profile("edited")
        .build();
    stale.spec.seccomp_profile_digest = Some(format!("sha256:{}", "0".repeat(64)));
    create(&ns, stale).await;

    let failed = wait_for_phase(&ns, "missing", InstancePhase::Failed, START).await;
    let s = failed.status.unwrap();
    assert_eq!(s.reason.as_deref(), Some("SeccompProfileNotFound"), "{s:?}");
    assert!(s.message.unwrap_or_default().contains("nope"));
    let failed = wait_for_phase(&ns, "stale", InstancePhase::Failed, START).await;
    let s = failed.status.unwrap();
    assert_eq!(
        s.reason.as_deref(),
        Some("SeccompProfileVersionGone"),
        "{s:?}"
    );
    assert!(
        s.message
            .unwrap_or_default()
            .contains(&profile.spec.content_digest())
    );
    let ok = wait_for_phase(&ns, "ok", InstancePhase::Running, START).await;
    assert_eq!(ok.status.unwrap().restart_count, 0);
    // The controller reports every profile's version and size in its status.
    let reported = poll_until(Duration::from_secs(30), || async {
        let p = ns.api::<SeccompProfile>().get("edited").await.ok()?;
        let s = p.status?;
        (s.digest.as_deref() == Some(profile.spec.content_digest().as_str())).then_some(s)
    })
    .await
    .expect("status.digest written");
    assert_eq!(reported.syscall_count, Some(1));
    ns.delete().await;
}

/// A profile in Docker's full format (our own fixture: archMap with null subArchitectures,
/// includes/excludes by capability, architecture and kernel, argument conditions) applies
/// unchanged and runs web:v1, and its conditional rules are resolved for the instance.
#[tokio::test]
async fn a_docker_format_profile_applies_and_runs_the_web_image() {
    let agent = start_agent("scmp-dock");
    let ns = TestNamespace::with_isolation("scmp-dock", "baseline").await;
    let path = bulkhead_e2e::repo_root().join("e2e/fixtures/seccomp-docker-format.json");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let doc = serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "SeccompProfile",
        "metadata": {"name": "docker-format"},
        "spec": spec,
    });
    bulkhead_e2e::manifest::create(&ns.client, &ns.name, &doc.to_string())
        .await
        .unwrap_or_else(|e| panic!("the Docker-format fixture was refused: {e}"));
    instance("web")
        .on(&agent.host)
        .seccomp_profile("docker-format")
        .create(&ns)
        .await;
    let web = wait_for_phase(&ns, "web", InstancePhase::Running, START).await;
    load(&web.status.clone().unwrap().pod_ip.unwrap()).await;
    let id = format!("bh-{}", web.uid().unwrap());
    // excludes {caps: [CAP_SYS_ADMIN]}, not held: the rule applies.
    let (code, out) = exec(&agent.namespace, &id, &["/bin/busybox", "uname", "-s"]);
    assert_eq!((code, out.trim()), (0, "Linux"), "{out}");
    // includes {caps: [CAP_SYS_ADMIN]}, not held: the rule is dropped, mkdir is refused.
    let (code, out) = exec(&agent.namespace, &id, &["/bin/busybox", "mkdir", "/denied"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "not EPERM: {out}");

    // After an agent crash the profile still refuses, and the new agent counts again.
    let mut agent = agent;
    agent.restart();
    let key = format!("{}/web", ns.name);
    let counted = poll_until(Duration::from_secs(30), || async {
        let (_, out) = exec(&agent.namespace, &id, &["/bin/busybox", "mkdir", "/denied"]);
        assert!(
            !out.contains("Read-only file system"),
            "mkdir ran after the agent restart: {out}"
        );
        let denied = metric(&agent, "bulkhead_agent_seccomp_denials_total", &key);
        (out.contains("Operation not permitted") && mkdir_calls(&denied) >= 1).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "no counted denial after the agent restart"
    );
    load(&web.status.clone().unwrap().pod_ip.unwrap()).await;
    let web = wait_for_phase(&ns, "web", InstancePhase::Running, START).await;
    assert_eq!(
        web.status.unwrap().restart_count,
        0,
        "an enforcing instance is not restarted"
    );
    ns.delete().await;
}

/// A recording goes on across an agent crash: the counts saved before it are kept, and the
/// process, whose listener went with the old agent, is restarted once under the new one.
#[tokio::test]
async fn a_recording_survives_an_agent_restart() {
    let mut agent = start_agent("scmp-rst");
    let ns = TestNamespace::with_isolation("scmp-rst", "baseline").await;
    record_under_load(&ns, &agent, "api").await;
    // The agent saves the counts every 3 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    agent.restart();
    let restarted = poll_until(START, || async {
        let i = ns.api::<Instance>().get("rec").await.ok()?;
        let s = i.status.clone()?;
        (s.restart_count == 1 && s.phase == Some(InstancePhase::Running)).then_some(i)
    })
    .await
    .expect("the recording's task restarted once and runs");
    load(&restarted.status.clone().unwrap().pod_ip.unwrap()).await;
    delete_and_wait(&ns, "rec", Duration::from_secs(60)).await;
    let profile = ns
        .api::<SeccompProfile>()
        .get("api-recorded")
        .await
        .unwrap();
    let counts: BTreeMap<String, u64> =
        serde_json::from_str(&profile.annotations()["bulkhead.dev/syscall-counts"]).unwrap();
    let accepts =
        counts.get("accept").copied().unwrap_or(0) + counts.get("accept4").copied().unwrap_or(0);
    assert!(
        accepts >= 2 * LOAD as u64,
        "accepts from before the restart are lost: {counts:?}"
    );
    ns.delete().await;
}

/// The largest filter the agent builds: the shipped RuntimeDefault as a SeccompProfile, with
/// every call it does not name notifying, still loads, runs web:v1 and counts a refusal.
#[tokio::test]
async fn a_large_profile_with_counted_denials_runs() {
    let agent = start_agent("scmp-big");
    let ns = TestNamespace::with_isolation("scmp-big", "baseline").await;
    let spec = bulkhead_node_agent::isolation::seccomp::runtime_default();
    let profile = SeccompProfile::new("runtime-default-copy", spec);
    ns.api::<SeccompProfile>()
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    instance("web")
        .on(&agent.host)
        .seccomp_profile("runtime-default-copy")
        .create(&ns)
        .await;
    let web = wait_for_phase(&ns, "web", InstancePhase::Running, START).await;
    load(&web.status.clone().unwrap().pod_ip.unwrap()).await;
    // RuntimeDefault does not allow unshare; the agent answers for it.
    let id = format!("bh-{}", web.uid().unwrap());
    let (code, out) = exec(
        &agent.namespace,
        &id,
        &["/bin/busybox", "unshare", "-U", "true"],
    );
    assert_ne!(code, 0, "{out}");
    let key = format!("{}/web", ns.name);
    let denied = metric(&agent, "bulkhead_agent_seccomp_denials_total", &key);
    assert!(
        denied.contains_key("unshare"),
        "unshare not counted: {denied:?} ({out})"
    );
    ns.delete().await;
}
