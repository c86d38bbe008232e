//! Image problems fail only the instance that has them, with a reason a user can act on.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{path::PathBuf, time::Duration};

use bulkhead_crds::{Instance, InstancePhase};
use bulkhead_e2e::{
    TestNamespace,
    agent::{image, snapshots, start_agent},
    fixtures::{instance, wait_for_phase},
    state_dir,
};
use kube::Api;

const START: Duration = Duration::from_secs(120);

/// Waits until the instance's status carries `reason`, and returns its message.
async fn wait_for_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> (Option<InstancePhase>, String) {
    let api: Api<Instance> = ns.api();
    let found = bulkhead_e2e::poll_until(START, || {
        let api = api.clone();
        async move {
            let s = api.get(name).await.ok()?.status?;
            (s.reason.as_deref() == Some(reason)).then(|| (s.phase, s.message.unwrap_or_default()))
        }
    })
    .await;
    found.unwrap_or_else(|| panic!("{name} never reported reason {reason}"))
}

/// A good instance beside the bad ones keeps running.
async fn with_a_healthy_neighbour(
    prefix: &str,
    bad: &str,
    extra_agent_flags: &[&str],
    reason: &str,
    expect_phase: InstancePhase,
) -> String {
    let allowed = format!("{},localhost:5999", bulkhead_e2e::agent::registry());
    let mut flags = vec!["--allowed-registries", allowed.as_str()];
    flags.extend_from_slice(extra_agent_flags);
    let agent =
        bulkhead_e2e::agent::Agent::start(&bulkhead_e2e::agent::unique_host(prefix), &flags);
    let ns = TestNamespace::new(prefix).await;
    instance("good").on(&agent.host).create(&ns).await;
    instance("bad").on(&agent.host).image(bad).create(&ns).await;
    let (phase, message) = wait_for_reason(&ns, "bad", reason).await;
    assert_eq!(phase, Some(expect_phase), "{message}");
    wait_for_phase(&ns, "good", InstancePhase::Running, START).await;
    assert!(
        !snapshots(&agent.namespace)
            .iter()
            .any(|s| s.starts_with("extract-")),
        "a failed pull left an extraction snapshot"
    );
    ns.delete().await;
    message
}

#[tokio::test]
async fn an_unknown_image_fails_with_image_not_found() {
    let msg = with_a_healthy_neighbour(
        "unknown",
        &image("no-such-image:v1"),
        &[],
        "ImageNotFound",
        InstancePhase::Failed,
    )
    .await;
    assert!(
        msg.contains("not found") && msg.contains("no-such-image"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_digest_the_registry_does_not_have_fails_with_image_not_found() {
    let wrong = format!("{}@sha256:{}", image("web"), "0".repeat(64));
    let msg = with_a_healthy_neighbour(
        "wrongdigest",
        &wrong,
        &[],
        "ImageNotFound",
        InstancePhase::Failed,
    )
    .await;
    assert!(msg.contains(&"0".repeat(64)), "{msg}");
}

#[tokio::test]
async fn a_registry_outside_the_allow_list_is_refused() {
    let msg = with_a_healthy_neighbour(
        "notallowed",
        &image("web:v1").replace("localhost:", "127.0.0.1:"),
        &[],
        "RegistryNotAllowed",
        InstancePhase::Failed,
    )
    .await;
    assert!(
        msg.contains("127.0.0.1:") && msg.contains("allowed"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_and_reported() {
    // Nothing listens on localhost:5999; the pull stays Pulling and says why.
    let msg = with_a_healthy_neighbour(
        "unreachable",
        "localhost:5999/bulkhead/web:v1",
        &[],
        "RegistryUnreachable",
        InstancePhase::Pulling,
    )
    .await;
    assert!(
        msg.contains("localhost:5999") && msg.contains("retrying"),
        "{msg}"
    );
}

/// The registry's stored copy of a layer of `bulkhead/tamper:v1` (an image no other test
/// uses), so that the test can corrupt it and put it back.
fn tamper_layer() -> PathBuf {
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", image("tamper:v1")),
        ])
        .output()
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("skopeo inspect tamper:v1");
    let digest = info["Layers"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    state_dir().join(format!(
        "registry/data/docker/registry/v2/blobs/sha256/{}/{digest}/data",
        &digest[..2]
    ))
}

#[tokio::test]
async fn a_layer_that_does_not_match_its_digest_is_refused_and_nothing_is_imported() {
    bulkhead_e2e::ensure();
    let layer = tamper_layer();
    let original = std::fs::read(&layer).unwrap_or_else(|e| panic!("{}: {e}", layer.display()));
    let mut corrupted = original.clone();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0xff;
    std::fs::write(&layer, &corrupted).unwrap();
    let agent = start_agent("tamper");
    let ns = TestNamespace::new("tamper").await;
    instance("bad")
        .on(&agent.host)
        .image(&image("tamper:v1"))
        .create(&ns)
        .await;
    let (phase, msg) = wait_for_reason(&ns, "bad", "ImageDigestMismatch").await;
    std::fs::write(&layer, &original).unwrap();
    assert_eq!(phase, Some(InstancePhase::Failed));
    assert!(msg.contains("does not match its digest"), "{msg}");
    // Nothing half-imported: no image record, no blob of it, no snapshot.
    let images = bulkhead_e2e::agent::ctr(&agent.namespace, &["images", "ls", "-q"]);
    assert!(
        !images.contains("tamper"),
        "image record of a failed pull: {images}"
    );
    let content = bulkhead_e2e::agent::ctr(&agent.namespace, &["content", "ls", "-q"]);
    let digest = layer
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        !content.contains(&digest),
        "the corrupted layer entered the content store"
    );
    // The extraction snapshot goes with the failure (or, should containerd still hold its
    // mount, with the pull's lease a moment later).
    let clean = bulkhead_e2e::poll_until(Duration::from_secs(30), || async {
        snapshots(&agent.namespace).is_empty().then_some(())
    })
    .await;
    assert!(
        clean.is_some(),
        "snapshots left: {:?}",
        snapshots(&agent.namespace)
    );
    ns.delete().await;
}
