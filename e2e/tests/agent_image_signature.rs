//! The node agent verifies an image's cosign signature again before it starts an instance that
//! requires one (`spec.imageSignature`, issue #17's defense in depth), with the real registry
//! and signatures made by the real cosign CLI: an unsigned digest, one signed by another key
//! and one whose signature names another digest are refused with the reason, before anything
//! is pulled; a signed one starts beside them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, InstancePhase};
use bulkhead_e2e::{
    TestNamespace,
    agent::{containers, registry, start_agent},
    fixtures::{delete_and_wait, instance, wait_for_phase},
    poll_until,
    signing::{self, KeyPair},
};

const START: Duration = Duration::from_secs(120);

/// Waits until `name` has ended Failed, and returns its reason and message.
async fn refusal(ns: &TestNamespace, name: &str) -> (String, String) {
    let api = ns.api::<Instance>();
    poll_until(START, || {
        let api = api.clone();
        async move {
            let s = api.get(name).await.ok()?.status?;
            (s.phase == Some(InstancePhase::Failed))
                .then(|| (s.reason.unwrap_or_default(), s.message.unwrap_or_default()))
        }
    })
    .await
    .unwrap_or_else(|| panic!("{name} was never refused"))
}

#[tokio::test]
async fn the_agent_starts_only_an_image_signed_by_a_key_the_instance_names() {
    let agent = start_agent("sig");
    let ns = TestNamespace::new("agent-sig").await;
    let repo = format!("bulkhead/sig-{}", ns.name);
    let (key, stranger) = (KeyPair::generate(), KeyPair::generate());
    let signed = signing::copy("bulkhead/web:v1", &repo, "signed");
    key.sign(&repo, &signed);
    let unsigned = signing::copy("bulkhead/web:v2", &repo, "unsigned");
    let by_stranger = signing::copy("bulkhead/tamper:v1", &repo, "stranger");
    stranger.sign(&repo, &by_stranger);
    let misdirected = signing::copy("bulkhead/tools:v1", &repo, "misdirected");
    signing::copy_signature(&repo, &signed, &misdirected);

    let pem = key.public_pem();
    let keys = [("release.pub", pem.as_str())];
    let pinned = |digest: &str| format!("{}/{repo}@{digest}", registry());
    for (name, digest) in [
        ("signed", &signed),
        ("unsigned", &unsigned),
        ("stranger", &by_stranger),
        ("misdirected", &misdirected),
    ] {
        instance(name)
            .on(&agent.host)
            .image(&pinned(digest))
            .signed_by(&keys)
            .create(&ns)
            .await;
    }

    for (name, digest, says) in [
        ("unsigned", &unsigned, "Unsigned"),
        ("stranger", &by_stranger, "NoTrustedSignature"),
        ("misdirected", &misdirected, "SignedForAnotherDigest"),
    ] {
        let (reason, message) = refusal(&ns, name).await;
        assert_eq!(reason, "ImageNotTrusted", "{name}: {message}");
        assert!(
            message.contains(digest.as_str()) && message.contains(says),
            "{name}: {message}"
        );
    }
    wait_for_phase(&ns, "signed", InstancePhase::Running, START).await;
    // Only the signed instance got a container; the refused ones stay refused (no retry loop).
    assert_eq!(containers(&agent.namespace).len(), 1);
    let api = ns.api::<Instance>();
    for name in ["unsigned", "stranger", "misdirected"] {
        let s = api.get(name).await.unwrap().status.unwrap();
        assert_eq!(s.phase, Some(InstancePhase::Failed), "{name}");
        assert_eq!(s.image_digest, None, "{name} was pulled");
    }
    // Deleted while the agent runs, so that its finalizer is released and nothing stays.
    for name in ["signed", "unsigned", "stranger", "misdirected"] {
        delete_and_wait(&ns, name, START).await;
    }
    assert!(containers(&agent.namespace).is_empty());
    ns.delete().await;
}

#[tokio::test]
async fn the_api_server_refuses_a_signature_requirement_on_an_unpinned_image() {
    let ns = TestNamespace::new("agent-sig-tag").await;
    let key = KeyPair::generate();
    let pem = key.public_pem();
    let err = ns
        .api::<Instance>()
        .create(
            &Default::default(),
            &instance("tagged")
                .on("nowhere")
                .signed_by(&[("release.pub", pem.as_str())])
                .build(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("imageSignature requires template.image pinned by digest"),
        "{err}"
    );
    ns.delete().await;
}
