//! Instance logs are bounded and go with their Instance; unused images are collected.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{os::unix::fs::MetadataExt, path::Path, process::Command, time::Duration};

use bulkhead_crds::InstancePhase;
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, binary, ctr, image, registry, unique_host},
    fixtures::{delete_and_wait, instance, wait_for_phase},
    plugin, poll_until,
};
use kube::ResourceExt;

const START: Duration = Duration::from_secs(120);
const CAP: u64 = 64 * 1024;

/// The instance's log files in the agent's state directory: (name, size, inode).
fn log_files(agent: &Agent, ns: &str, name: &str) -> Vec<(String, u64, u64)> {
    let prefix = format!("{ns}_{name}_");
    std::fs::read_dir(agent.state_dir.join("logs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        // The new file of a rotation, for the instant before it is renamed into place.
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.ino(),
            ))
        })
        .collect()
}

/// One look at instance `yes`'s logs: asserts the cap and at most one previous file;
/// returns the previous file's inode (a new one means a rotation) and the largest size.
fn look(agent: &Agent, ns: &str) -> (Option<u64>, u64) {
    let files = log_files(agent, ns, "yes");
    assert!(files.len() <= 2, "more than one previous file: {files:?}");
    for (file, size, _) in &files {
        assert!(*size <= CAP, "{file} is {size} bytes, over the cap {CAP}");
    }
    let previous = files
        .iter()
        .find(|(f, _, _)| f.ends_with(".log.1"))
        .map(|f| f.2);
    (previous, files.iter().map(|f| f.1).max().unwrap_or(0))
}

#[tokio::test]
async fn a_yes_instance_log_stays_under_the_cap_and_goes_with_the_instance() {
    let cap = CAP.to_string();
    let mut agent = Agent::start(
        &unique_host("logcap"),
        &["--allowed-registries", &registry(), "--log-max-bytes", &cap],
    );
    let ns = TestNamespace::new("logcap").await;
    instance("yes")
        .on(&agent.host)
        .command(&["sh", "-c", "yes"])
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "yes", InstancePhase::Running, START).await;

    // Watch the writer rotate several times; every look finds both files under the cap
    // and never a third one.
    let mut rotations = 0;
    let mut last_inode = None;
    let mut largest = 0;
    let rotated = poll_until(Duration::from_secs(90), || {
        let (ino, size) = look(&agent, &ns.name);
        largest = largest.max(size);
        if ino.is_some() && ino != last_inode {
            last_inode = ino;
            rotations += 1;
        }
        std::future::ready((rotations >= 5).then_some(()))
    })
    .await;
    assert!(
        rotated.is_some(),
        "the log did not rotate 5 times within 90s (seen {rotations}); agent log:\n{}",
        agent.log_tail()
    );
    // The writer is the shim's child, not the agent's: with the agent killed the cap holds.
    agent.kill();
    let mut after_kill = 0;
    let held = poll_until(Duration::from_secs(60), || {
        let (ino, _) = look(&agent, &ns.name);
        if ino.is_some() && ino != last_inode {
            last_inode = ino;
            after_kill += 1;
        }
        std::future::ready((after_kill >= 3).then_some(()))
    })
    .await;
    assert!(held.is_some(), "the log stopped rotating without the agent");
    agent.restart();
    let total: u64 = log_files(&agent, &ns.name, "yes").iter().map(|f| f.1).sum();
    assert!(
        total <= 2 * CAP,
        "{total} bytes of logs, over twice the cap"
    );
    println!(
        "rotations seen: {rotations}, largest file {largest} bytes, total {total} bytes (cap {CAP})"
    );

    // `logs` reads the previous and the current file: more than one file holds. `yes` keeps
    // writing, so a read just after a rotation finds the current file empty and prints only
    // the previous one; such a read is tried again (at most 5 reads).
    let agent_logs = || {
        let out = Command::new(binary("bulkhead-node-agent"))
            .args(["--state-dir"])
            .arg(&agent.state_dir)
            .args(["logs", &format!("{}/yes", ns.name)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let out = both_files(agent_logs, "logs");
    assert!(out.starts_with(b"y\n"), "not the output of yes");

    // So does `kubectl bulkhead logs`.
    let dir = agent.state_dir.to_str().unwrap();
    both_files(
        || {
            plugin::run(&["logs", "yes", "-n", &ns.name, "--agent-state-dir", dir])
                .ok()
                .into_bytes()
        },
        "kubectl bulkhead logs",
    );

    // Deleting the Instance removes its logs.
    delete_and_wait(&ns, "yes", START).await;
    let files = log_files(&agent, &ns.name, "yes");
    assert!(
        files.is_empty(),
        "logs of deleted instance {} remain: {files:?}",
        inst.uid().unwrap()
    );
    assert!(
        !Path::new(&agent.state_dir)
            .join("logs")
            .join(format!("{}_yes_{}.log", ns.name, inst.uid().unwrap()))
            .exists()
    );
    ns.delete().await;
}

/// What `read` prints once it holds more than one capped file (the previous and the current
/// one) and at most two plus what `yes` wrote meanwhile; at most 5 reads.
fn both_files(read: impl Fn() -> Vec<u8>, what: &str) -> Vec<u8> {
    let mut sizes = vec![];
    for _ in 0..5 {
        let out = read();
        let len = out.len() as u64;
        assert!(
            len <= 2 * CAP + 65536,
            "{what} printed {len} bytes: more than the previous and the current file"
        );
        if len > CAP {
            return out;
        }
        sizes.push(len);
    }
    panic!("{what} printed at most one file's worth in 5 reads: {sizes:?} bytes (cap {CAP})")
}

/// Image records in the agent's containerd namespace: (name, manifest digest).
fn images(agent: &Agent) -> Vec<(String, String)> {
    ctr(&agent.namespace, &["images", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

#[tokio::test]
async fn an_unused_image_is_collected_while_a_used_one_stays() {
    let agent = Agent::start(
        &unique_host("imagegc"),
        &[
            "--allowed-registries",
            &registry(),
            "--image-gc-unused-seconds",
            "3",
            "--image-gc-period-seconds",
            "1",
        ],
    );
    let ns = TestNamespace::new("imagegc").await;
    instance("used").on(&agent.host).create(&ns).await;
    instance("done")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .create(&ns)
        .await;
    wait_for_phase(&ns, "used", InstancePhase::Running, START).await;
    wait_for_phase(&ns, "done", InstancePhase::Running, START).await;
    let before = images(&agent);
    let find = |list: &[(String, String)], repo: &str| {
        list.iter()
            .find(|(n, _)| n.contains(&format!("/bulkhead/{repo}@")))
            .cloned()
    };
    let (web, _) = find(&before, "web").expect("web:v1 is recorded");
    let (tools, tools_manifest) = find(&before, "tools").expect("tools:v1 is recorded");

    delete_and_wait(&ns, "done", START).await;
    let collected = poll_until(Duration::from_secs(60), || {
        std::future::ready(find(&images(&agent), "tools").is_none().then_some(()))
    })
    .await;
    assert!(
        collected.is_some(),
        "{tools} was not collected within 60s of its last instance going; agent log:\n{}",
        agent.log_tail()
    );
    // The used image stays (it was recorded before the collected one: were it not kept for
    // its instance it would have gone first), and its instance runs on.
    let after = images(&agent);
    assert!(
        after.iter().any(|(n, _)| *n == web),
        "{web} was removed while an instance uses it: {after:?}"
    );
    wait_for_phase(&ns, "used", InstancePhase::Running, START).await;
    // containerd's collection removed the content too.
    let content = ctr(&agent.namespace, &["content", "ls", "-q"]);
    assert!(
        !content.lines().any(|d| d == tools_manifest),
        "the manifest {tools_manifest} of {tools} is still in the content store"
    );
    ns.delete().await;
}
