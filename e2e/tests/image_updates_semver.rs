//! Policy SemverRange (issue #17) with the real registry, real cosign signatures, the real
//! controller and agent: the Workload runs the newest signed tag within its range, pinned by
//! digest; a newer tag in the range rolls out by itself; a tag outside the range is never
//! picked, also when it is the newest in the repository.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_crds::{Instance, Workload, workload::WorkloadPhase};
use bulkhead_e2e::{
    TestNamespace,
    agent::registry,
    kubectl,
    rollout::*,
    signing::{self, KeyPair},
};

/// Far longer than any wait below: what rolls out was found through push notifications.
const LONG_INTERVAL: i32 = 3600;

/// Copies `src` to `repo:tag`, signed by `key` before the tag exists (as users do: sign the
/// digest under a scratch tag, then tag the release). Returns the digest.
fn release(src: &str, repo: &str, tag: &str, key: &KeyPair) -> String {
    let digest = signing::copy(src, repo, "candidate");
    key.sign(repo, &digest);
    assert_eq!(signing::copy(src, repo, tag), digest);
    digest
}

/// Whether the Workload is healthy on `digest`, found under `tag`.
fn runs(wl: &Workload, digest: &str, tag: &str) -> bool {
    let s = status_of(wl);
    let u = s.image_updates.unwrap_or_default();
    s.phase == Some(WorkloadPhase::Healthy)
        && s.preview_revision.is_none()
        && u.digest.as_deref() == Some(digest)
        && u.resolved_tag.as_deref() == Some(tag)
}

async fn instance_images(ns: &TestNamespace) -> Vec<String> {
    let list = ns
        .api::<Instance>()
        .list(&Default::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| i.spec.template.image.clone())
        .collect()
}

#[tokio::test]
async fn the_newest_signed_tag_in_the_range_rolls_out_and_one_outside_it_never_does() {
    let ns = TestNamespace::new("iu-semver").await;
    let repo = format!("bulkhead/sv-{}", ns.name);
    let key = KeyPair::generate();
    signing::trust(&ns, &key).await;
    let d120 = release("bulkhead/web:v1", &repo, "1.2.0", &key);
    let image = format!("{}/{repo}:1.2.0", registry());
    create(
        &ns,
        &signing::semver_yaml(&image, ">=1.2.0 <2.0.0", LONG_INTERVAL),
    )
    .await;
    let wl = wait_for(&ns, "1.2.0 runs", |wl| runs(wl, &d120, "1.2.0")).await;
    let v120 = status_of(&wl).active_revision.unwrap();
    let u = status_of(&wl).image_updates.unwrap();
    assert_eq!(
        u.tag,
        format!("{}/{repo} (semver >=1.2.0 <2.0.0)", registry())
    );

    // A newer tag in the range: rolled out blue/green by itself, pinned by digest.
    let d130 = release("bulkhead/web:v2", &repo, "1.3.0", &key);
    let wl = wait_for(&ns, "1.3.0 replaces 1.2.0", |wl| {
        runs(wl, &d130, "1.3.0") && status_of(wl).active_revision.as_deref() != Some(&v120)
    })
    .await;
    let v130 = status_of(&wl).active_revision.unwrap();
    only_two_of(&ns, &v130).await.expect("only 1.3.0 instances");
    let pinned = format!("{}/{repo}@{d130}", registry());
    assert_eq!(instance_images(&ns).await, [pinned.clone(), pinned]);
    let wide = kubectl(["get", "wl", "web", "-n", &ns.name, "-o", "wide"]);
    let wide = String::from_utf8_lossy(&wide.stdout);
    // Columns are aligned (an empty cell is blank): the TAG cell starts under its header.
    let (header, row) = wide.split_once('\n').unwrap();
    let at = header.find(" TAG ").unwrap() + 1;
    let cell = row.get(at..).unwrap_or_default().split_whitespace().next();
    assert_eq!(cell, Some("1.3.0"), "{wide}");

    // 2.0.0 is the newest tag, outside the range, signed: never picked. 1.3.1 (the 1.2.0
    // image again, pushed after it) is, so the look that picked it saw 2.0.0 too.
    let d200 = release("bulkhead/tools:v1", &repo, "2.0.0", &key);
    release("bulkhead/web:v1", &repo, "1.3.1", &key);
    let wl = wait_for(&ns, "1.3.1 is picked over 2.0.0", |wl| {
        runs(wl, &d120, "1.3.1")
    })
    .await;
    let u = status_of(&wl).image_updates.unwrap();
    assert!(
        u.history.iter().all(|v| v.digest != d200),
        "2.0.0 was considered: {:?}",
        u.history
    );
    let tags: Vec<_> = u
        .history
        .iter()
        .map(|v| (v.digest.as_str(), v.tag.as_deref()))
        .collect();
    assert_eq!(
        tags,
        [
            (d120.as_str(), Some("1.3.1")),
            (d130.as_str(), Some("1.3.0"))
        ]
    );
    ns.delete().await;
}
