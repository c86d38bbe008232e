//! `kubectl bulkhead` against the local system: every subcommand, run as the built binary.
//!
//! The blue/green flow is driven only through the plugin (get, status --watch, promote,
//! restart, abort, undo); `isolation` and `logs` read a running instance on local-1; `verify`
//! runs the isolation-attempt suite on local-1, with the default walls (every attempt holds)
//! and with a deliberately weakened Workload's isolation (the breaches are named).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, InstancePhase, Workload, conditions, conditions::types};
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    fixtures::{instance, wait_for_phase},
    manifest, plugin, poll_until,
    rollout::{self, CONVERGE, status_of, wait_for},
};
use kube::{Api, ResourceExt, api::ListParams};

const START: Duration = Duration::from_secs(120);

/// Waits until `path` holds `needle`; panics with what it holds after `timeout`.
async fn wait_for_text(path: &std::path::Path, needle: &str, timeout: Duration) -> String {
    let found = poll_until(timeout, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.contains(needle).then_some(text)
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "{needle:?} never appeared in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        )
    })
}

#[tokio::test]
async fn a_blue_green_rollout_is_driven_and_watched_with_the_plugin() {
    let ns = TestNamespace::new("cli-bg").await;
    let n = ns.name.as_str();
    let v1 = rollout::deploy_v1(&ns, false, 120).await;

    let table = plugin::run(&["get", "-n", n]).ok();
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    for cell in ["BlueGreen", "Healthy", &format!("{v1}:2/2")] {
        assert!(row.contains(cell), "{cell} missing in {table}");
    }
    let all: serde_json::Value =
        serde_json::from_str(&plugin::run(&["get", "-A", "-o", "json"]).ok()).unwrap();
    let ours = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == n && r["name"] == "web")
        .unwrap();
    assert_eq!(ours["activeRevision"], v1.as_str());

    // Nothing in progress: clear refusals.
    let err = plugin::run(&["promote", "web", "-n", n]).err();
    assert!(
        err.contains("has no rollout in progress to promote"),
        "{err}"
    );
    let err = plugin::run(&["abort", "web", "-n", n]).err();
    assert!(err.contains("has no rollout in progress to abort"), "{err}");
    let err = plugin::run(&["status", "nosuch", "-n", n]).err();
    assert!(
        err.contains(&format!("workload nosuch not found in namespace {n}")),
        "{err}"
    );

    let once = plugin::run(&["status", "web", "-n", n]).ok();
    assert!(
        once.contains(&format!("revision {v1} (active)   2/2 ready")),
        "{once}"
    );
    assert!(
        once.contains(&format!("host {}", plugin::local_host())),
        "{once}"
    );
    assert!(once.contains("Service web   endpoints: 10."), "{once}");

    // status --watch during a rollout to v2, promoted with the plugin.
    let watch_file = std::env::temp_dir().join(format!("{n}-watch.txt"));
    let mut watch = plugin::spawn(&["status", "web", "--watch", "-n", n], &watch_file);
    wait_for_text(&watch_file, &format!("revision {v1} (active)"), CONVERGE).await;
    rollout::set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    let wl = wait_for(&ns, "v2 in preview and ready", |wl| {
        let s = status_of(wl);
        s.preview_revision.as_deref().is_some_and(|p| p != v1)
            && s.blue_green.is_some_and(|b| b.preview_ready_time.is_some())
    })
    .await;
    let v2 = status_of(&wl).preview_revision.unwrap();
    wait_for_text(
        &watch_file,
        &format!("revision {v2} (preview)   2/2 ready"),
        CONVERGE,
    )
    .await;
    let out = plugin::run(&["promote", "web", "-n", n]).ok();
    assert!(out.contains(&format!("promoting revision {v2}")), "{out}");
    wait_for(&ns, "v2 active", |wl| {
        status_of(wl).active_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    let frames = wait_for_text(&watch_file, &format!("revision {v2} (active)"), CONVERGE).await;
    watch.kill().unwrap();
    watch.wait().unwrap();
    let preview_at = frames.find(&format!("revision {v2} (preview)")).unwrap();
    let active_at = frames.find(&format!("revision {v2} (active)")).unwrap();
    assert!(
        preview_at < active_at,
        "the watch showed v2 active before preview:\n{frames}"
    );
    let _ = std::fs::remove_file(&watch_file);

    // restart: a new revision with the same template, then abort it.
    let out = plugin::run(&["restart", "web", "-n", n]).ok();
    assert!(out.contains("restart requested"), "{out}");
    let wl = wait_for(&ns, "the restart's revision in preview", |wl| {
        let p = status_of(wl).preview_revision;
        p.is_some_and(|p| p != v1 && p != v2)
    })
    .await;
    let v3 = status_of(&wl).preview_revision.unwrap();
    assert_eq!(
        wl.spec.template.image,
        image("web:v2"),
        "restart keeps the template"
    );
    assert!(wl.spec.template.restarted_at.is_some());
    let err = plugin::run(&["restart", "web", "-n", n]).err();
    assert!(err.contains("promote or abort it first"), "{err}");
    let out = plugin::run(&["abort", "web", "-n", n]).ok();
    assert!(out.contains(&format!("aborting revision {v3}")), "{out}");
    wait_for(&ns, "v3 aborted", |wl| {
        status_of(wl)
            .blue_green
            .and_then(|b| b.aborted_revision)
            .as_deref()
            == Some(v3.as_str())
    })
    .await;

    // undo: back to the previous revision (v2, the active one), then to revision 1 (v1).
    let out = plugin::run(&["undo", "web", "-n", n]).ok();
    assert!(out.contains(&format!("({v2})")), "{out}");
    let wl = wait_for(&ns, "undone to v2", |wl| {
        status_of(wl).update_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    assert_eq!(wl.spec.template.restarted_at, None);
    let err = plugin::run(&["undo", "web", "-n", n, "--to-revision", "99"]).err();
    assert!(
        err.contains("has no revision 99; its history: 1 ("),
        "{err}"
    );
    plugin::run(&["undo", "web", "-n", n, "--to-revision", "1"]).ok();
    let wl = wait_for(&ns, "undone to v1", |wl| {
        status_of(wl).update_revision.as_deref() == Some(v1.as_str())
    })
    .await;
    assert_eq!(wl.spec.template.image, image("web:v1"));
    ns.delete().await;
}

#[tokio::test]
async fn isolation_and_logs_of_an_instance_on_local_1() {
    let ns = TestNamespace::new("cli-inst").await;
    let n = ns.name.as_str();
    instance("talker")
        .on(&plugin::local_host())
        .image(&image("tools:v1"))
        .command(&[
            "/bin/sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ])
        .create(&ns)
        .await;
    wait_for_phase(&ns, "talker", InstancePhase::Running, START).await;
    let api: Api<Instance> = ns.api();
    poll_until(START, || async {
        let i = api.get("talker").await.ok()?;
        conditions::is_true(&i.status?.conditions, types::ISOLATION_VERIFIED).then_some(())
    })
    .await
    .expect("the agent verifies talker's isolation");

    let table = plugin::run(&["isolation", "talker", "-n", n]).ok();
    assert!(table.starts_with("WALL"), "{table}");
    assert!(table.contains("IsolationVerified=True"), "{table}");
    let walls: serde_json::Value =
        serde_json::from_str(&plugin::run(&["isolation", "talker", "-n", n, "-o", "json"]).ok())
            .unwrap();
    let walls = walls.as_array().unwrap();
    assert_eq!(walls.len(), 16);
    for w in walls {
        assert_eq!(w["verified"], "yes", "{w}");
    }
    assert!(
        walls[0]["enforced"]
            .as_str()
            .unwrap()
            .starts_with("host UIDs ")
    );

    let dir = plugin::local_agent_state_dir();
    let dir = dir.to_str().unwrap();
    let printed = plugin::run(&["logs", "talker", "-n", n, "--agent-state-dir", dir]).ok();
    assert!(printed.starts_with("tick 0\n"), "{printed}");
    let last = printed.lines().count();
    let err = plugin::run(&[
        "logs",
        "talker",
        "-n",
        n,
        "--agent-state-dir",
        "/nonexistent",
    ])
    .err();
    assert!(
        err.contains(&format!("runs on host {}", plugin::local_host())),
        "{err}"
    );

    // -f prints what comes later, and ends by itself once the instance is gone.
    let follow_file = std::env::temp_dir().join(format!("{n}-follow.txt"));
    let mut follow = plugin::spawn(
        &["logs", "talker", "-n", n, "-f", "--agent-state-dir", dir],
        &follow_file,
    );
    wait_for_text(&follow_file, &format!("tick {}\n", last + 2), CONVERGE).await;
    api.delete("talker", &Default::default()).await.unwrap();
    let ended = poll_until(CONVERGE, || {
        let exited = follow.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(
        ended.is_some_and(|s| s.success()),
        "logs -f did not end with the instance"
    );
    let _ = std::fs::remove_file(&follow_file);
    ns.delete().await;
}

/// Lines of the verify table: attempt -> (result, evidence).
fn verdicts(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cells.len() >= 3).then(|| (cells[0].to_string(), cells[1].to_string()))
        })
        .collect()
}

async fn verify_leaves_nothing_behind(ns: &TestNamespace) {
    let left = ns
        .api::<Instance>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let names: Vec<String> = left.iter().map(|i| i.name_any()).collect();
    assert!(names.is_empty(), "verify left instances behind: {names:?}");
}

#[tokio::test]
async fn verify_on_local_1_shows_every_attempt_held() {
    let ns = TestNamespace::new("cli-verify").await;
    let host = plugin::local_host();
    let dir = plugin::local_agent_state_dir();
    let out = plugin::run(&[
        "verify",
        "--host",
        &host,
        "-n",
        &ns.name,
        "--image",
        &image("tools:v1"),
        "--agent-state-dir",
        dir.to_str().unwrap(),
    ])
    .ok();
    let rows = verdicts(&out);
    assert_eq!(rows.len(), 21, "{out}");
    for (attempt, result) in &rows {
        let want = if attempt == "control-read" {
            "control ok"
        } else {
            "held"
        };
        assert_eq!(result, want, "{attempt}:\n{out}");
    }
    assert!(
        out.contains("DENIED mount tmpfs"),
        "the probe's own words as evidence:\n{out}"
    );
    assert!(out.contains(&format!(
        "host {host}: all 20 attempts held; the control succeeded"
    )));
    verify_leaves_nothing_behind(&ns).await;
    ns.delete().await;
}

#[tokio::test]
async fn verify_names_the_breaches_of_a_weakened_workload() {
    // Created with the label: the admission policy reads the namespace from a cache, which a
    // label patched just before may not have reached yet.
    let ns = TestNamespace::with_isolation("cli-weak", "privileged").await;
    let weak = format!(
        r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {{name: weak}}
spec:
  owner: team-e2e
  replicas: 0
  template: {{image: {}}}
  isolation:
    userNamespace: false
    seccomp: {{type: Unconfined}}
    capabilities: {{add: [SYS_ADMIN]}}
"#,
        image("tools:v1")
    );
    manifest::create(&ns.client, &ns.name, &weak).await.unwrap();
    assert!(ns.api::<Workload>().get("weak").await.is_ok());
    // local-1's floor (baseline) refuses privileged instances: a host whose operator allows
    // them runs the weakened attempts.
    let agent = bulkhead_e2e::agent::Agent::start(
        &bulkhead_e2e::agent::unique_host("cli-weak"),
        &[
            "--isolation-floor",
            "privileged",
            "--allowed-registries",
            &bulkhead_e2e::agent::registry(),
        ],
    );
    let run = plugin::run(&[
        "verify",
        "--host",
        &agent.host,
        "-n",
        &ns.name,
        "--workload",
        "weak",
        "--image",
        &image("tools:v1"),
    ]);
    assert_ne!(
        run.code, 0,
        "a weakened isolation must fail verify: {run:#?}"
    );
    let rows = verdicts(&run.stdout);
    let result = |a: &str| {
        rows.iter()
            .find(|(n, _)| n == a)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    // SYS_ADMIN without seccomp mounts and unshares; without seccomp keyctl runs.
    for breached in ["mount", "unshare-mount", "keyctl"] {
        assert_eq!(result(breached), "BREACHED", "{breached}:\n{}", run.stdout);
    }
    // Walls the weakening did not touch still hold, and the control still succeeds.
    for held in ["kernel-module", "write-sys", "read-kcore", "write-rootfs"] {
        assert_eq!(result(held), "held", "{held}:\n{}", run.stdout);
    }
    assert_eq!(result("control-read"), "control ok");
    let summary = run.stdout.lines().last().unwrap();
    assert!(summary.contains(" attempts BREACHED: mount, "), "{summary}");
    verify_leaves_nothing_behind(&ns).await;
    ns.delete().await;
}

#[test]
fn completion_and_help_examples() {
    let bash = plugin::run(&["completion", "bash"]).ok();
    assert!(
        bash.contains("kubectl-bulkhead") && bash.contains("verify"),
        "{bash}"
    );
    let help = plugin::run(&["verify", "--help"]).ok();
    assert!(
        help.contains("Examples:") && help.contains("system:masters"),
        "{help}"
    );
}

/// Ctrl-C while attempts wait (on a host no agent serves, so they never end) still deletes
/// every Instance the run made before the plugin exits.
#[tokio::test]
async fn verify_cleans_up_when_interrupted() {
    let ns = TestNamespace::new("cli-intr").await;
    let out = std::env::temp_dir().join(format!("{}-verify.txt", ns.name));
    let mut child = plugin::spawn(
        &[
            "verify",
            "--host",
            "no-agent-here",
            "-n",
            &ns.name,
            "--timeout",
            "600",
        ],
        &out,
    );
    let api: Api<Instance> = ns.api();
    poll_until(CONVERGE, || async {
        let n = api.list(&ListParams::default()).await.ok()?.items.len();
        (n == 21).then_some(())
    })
    .await
    .expect("verify creates its 21 instances");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exited = poll_until(CONVERGE, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
    .expect("verify exits after Ctrl-C");
    assert!(!exited.success(), "an interrupted verify must not exit 0");
    let left = api.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(left, 0, "verify exited with its instances still there");
    let _ = std::fs::remove_file(&out);
    ns.delete().await;
}
