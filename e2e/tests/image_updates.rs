//! Image updates (issue #17) with the real registry, real cosign signatures, the real
//! controller and agent: a Workload follows a tag; a signed rebuild pushed under the same tag
//! rolls out blue/green by itself under the 20 ms client; unsigned, wrongly signed, tampered or
//! misdirected signatures are refused with the reason and nothing rolls out.
//!
//! Each test follows a repository of its own (`bulkhead/iu-<namespace>`), filled by copying the
//! harness's images (web:v1, web:v2, tamper:v1, tools:v1: four distinct digests).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_crds::{
    Instance, Workload,
    conditions::{self, types},
    workload::WorkloadPhase,
};
use bulkhead_e2e::{
    TestNamespace,
    agent::{ctr, registry},
    poll_until,
    rollout::*,
    signing::{self, KeyPair},
};

/// Check interval of the tests' Workloads: far longer than any wait below, so that a rollout
/// seen within a wait was started by the registry's push notification, not by the interval.
const LONG_INTERVAL: i32 = 3600;

/// The image each alive instance of the Workload runs, as containerd records it.
async fn containerd_images(ns: &TestNamespace) -> Vec<String> {
    let instances: Vec<Instance> = ns
        .api::<Instance>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| {
            let id = format!("bh-{}", i.metadata.uid.clone().unwrap());
            let info = ctr("bulkhead", &["containers", "info", &id]);
            let v: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
            v["Image"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn condition(wl: &Workload) -> Option<(String, String, String)> {
    conditions::find(&status_of(wl).conditions, types::IMAGE_NOT_TRUSTED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_signed_push_under_the_same_tag_rolls_out_blue_green_with_no_failed_request() {
    let ns = TestNamespace::new("iu-follow").await;
    let (repo, key, d1, v1) = signing::follow_signed_v1(&ns, true, LONG_INTERVAL).await;
    let pinned_v1 = format!("{}/{repo}@{d1}", registry());
    let images = containerd_images(&ns).await;
    assert_eq!(
        images,
        [pinned_v1.clone(), pinned_v1.clone()],
        "instances run v1 by digest"
    );
    let poller = start_traffic(&ns).await;

    let d2 = signing::push("bulkhead/web:v2", &repo, Some(&key));
    assert_ne!(d1, d2);
    let wl = wait_for(&ns, "the pushed v2 is active and v1 retired", |wl| {
        let s = status_of(wl);
        s.active_revision.as_deref() != Some(v1.as_str())
            && s.phase == Some(WorkloadPhase::Healthy)
            && s.image_updates.as_ref().and_then(|u| u.digest.as_deref()) == Some(d2.as_str())
    })
    .await;
    let v2 = status_of(&wl).active_revision.unwrap();
    only_two_of(&ns, &v2)
        .await
        .expect("only v2 instances remain");
    let report = poller.stop().await;
    assert_clean(&report, &["v1", "v2"]);

    let pinned_v2 = format!("{}/{repo}@{d2}", registry());
    assert_eq!(
        containerd_images(&ns).await,
        [pinned_v2.clone(), pinned_v2],
        "instances run v2 by digest"
    );
    // Each instance carries the trusted key, for the agent's own check before it starts.
    for i in ns
        .api::<Instance>()
        .list(&Default::default())
        .await
        .unwrap()
    {
        let keys = i
            .spec
            .image_signature
            .expect("the instance requires a signature")
            .keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].name.as_str(), keys[0].public_key.trim()),
            ("release.pub", key.public_pem().trim())
        );
    }
    let s = status_of(&wl).image_updates.unwrap();
    assert_eq!(s.tag, format!("{}/{repo}:live", registry()));
    assert_eq!(s.pending_digest, None);
    let verdicts: Vec<(&str, &str)> = s
        .history
        .iter()
        .map(|v| (v.digest.as_str(), v.verdict.as_str()))
        .collect();
    assert_eq!(
        verdicts,
        [(d2.as_str(), "Trusted"), (d1.as_str(), "Trusted")]
    );
    assert_eq!(condition(&wl).map(|c| c.0), Some("False".to_string()));
    let reasons = event_reasons(&ns).await;
    for r in ["ImageUpdated", "PreviewStarted", "Promoted", "ScaledDown"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "no {r} event in {reasons:?}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn untrusted_pushes_are_refused_with_the_reason_and_nothing_rolls_out() {
    let ns = TestNamespace::new("iu-refuse").await;
    let (repo, key, d1, v1) = signing::follow_signed_v1(&ns, true, LONG_INTERVAL).await;
    let refused = |digest: String, reason: &'static str| {
        move |wl: &Workload| {
            condition(wl).is_some_and(|(status, r, message)| {
                status == "True" && r == reason && message.contains(&digest)
            })
        }
    };

    // Unsigned.
    let d2 = signing::push("bulkhead/web:v2", &repo, None);
    wait_for(
        &ns,
        "the unsigned push is refused",
        refused(d2.clone(), "Unsigned"),
    )
    .await;

    // Signed by a key nobody trusts (the signature's push is announced too: looked at again).
    KeyPair::generate().sign(&repo, &d2);
    wait_for(
        &ns,
        "the stranger's signature is refused",
        refused(d2.clone(), "NoTrustedSignature"),
    )
    .await;

    // A valid signature by the trusted key, but of another digest (v1's, copied over).
    let d3 = signing::copy("bulkhead/tamper:v1", &repo, "candidate");
    signing::copy_signature(&repo, &d1, &d3);
    signing::copy("bulkhead/tamper:v1", &repo, "live");
    wait_for(
        &ns,
        "a signature for another digest is refused",
        refused(d3.clone(), "SignedForAnotherDigest"),
    )
    .await;

    // Signed by the trusted key, then the payload changed.
    let d4 = signing::copy("bulkhead/tools:v1", &repo, "candidate");
    key.sign(&repo, &d4);
    signing::tamper_signature(&repo, &d4);
    signing::copy("bulkhead/tools:v1", &repo, "live");
    let wl = wait_for(
        &ns,
        "a tampered signature is refused",
        refused(d4.clone(), "NoTrustedSignature"),
    )
    .await;

    // Nothing rolled out: v1 keeps serving, by digest.
    let s = status_of(&wl);
    assert_eq!(s.active_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(s.preview_revision, None);
    let u = s.image_updates.unwrap();
    assert_eq!(u.digest.as_deref(), Some(d1.as_str()));
    assert_eq!(u.pending_digest.as_deref(), Some(d4.as_str()));
    assert_eq!(alive_revisions(&ns).await, [v1.clone(), v1.clone()]);
    let pinned_v1 = format!("{}/{repo}@{d1}", registry());
    assert_eq!(containerd_images(&ns).await, [pinned_v1.clone(), pinned_v1]);
    // Events of one reason form a series (kube's Recorder), so their count is not the number
    // of refusals; the conditions above showed each refusal.
    let reasons = event_reasons(&ns).await;
    assert!(
        reasons.iter().any(|r| r == "ImageNotTrusted"),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r == "PreviewStarted"),
        "{reasons:?}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_notification_endpoint_wants_its_token_bounds_bodies_and_ignores_unknown_repositories()
{
    let token = signing::notify_token();
    let envelope = |repo: &str| {
        serde_json::json!({"events": [{"action": "push", "target": {"repository": repo, "tag": "live"}}]})
            .to_string()
    };
    let (status, body) = signing::notify("wrong-token", &envelope("bulkhead/web"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = signing::notify(
        &token,
        &format!("{}{}", envelope("bulkhead/web"), " ".repeat(300 << 10)),
    );
    assert_eq!(status, 413, "{body}");
    let (status, body) = signing::notify(&token, &envelope("bulkhead/nobody-follows-this"));
    assert_eq!((status, body.as_str()), (200, "{\"matched\":0}"));

    // A followed repository is matched (and looked at: nothing changed, nothing rolls out).
    let ns = TestNamespace::new("iu-notify").await;
    let (repo, _key, d1, v1) = signing::follow_signed_v1(&ns, true, LONG_INTERVAL).await;
    let (status, body) = signing::notify(&token, &envelope(&repo));
    assert_eq!((status, body.as_str()), (200, "{\"matched\":1}"));
    let checked = status_of(&workload(&ns).await)
        .image_updates
        .unwrap()
        .checked_time;
    poll_until(CONVERGE, || async {
        let s = status_of(&workload(&ns).await).image_updates?;
        (s.checked_time != checked).then_some(())
    })
    .await
    .expect("the notification made the controller look at the tag");
    let s = status_of(&workload(&ns).await);
    assert_eq!(s.active_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(
        s.image_updates.unwrap().digest.as_deref(),
        Some(d1.as_str())
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_push_during_a_rollout_waits_for_it_and_never_makes_a_second_preview() {
    let ns = TestNamespace::new("iu-during").await;
    let (repo, key, _d1, v1) = signing::follow_signed_v1(&ns, false, LONG_INTERVAL).await;
    let d2 = signing::push("bulkhead/web:v2", &repo, Some(&key));
    let wl = wait_for(&ns, "v2's preview awaits promotion", |wl| {
        progressing_reason(wl) == "AwaitingPromotion"
    })
    .await;
    let v2 = status_of(&wl).preview_revision.unwrap();

    // A later signed push while v2 is previewed: it waits as the pending digest.
    let d3 = signing::push("bulkhead/tamper:v1", &repo, Some(&key));
    let wl = wait_for(&ns, "the later digest waits", |wl| {
        status_of(wl).image_updates.and_then(|u| u.pending_digest) == Some(d3.clone())
    })
    .await;
    let s = status_of(&wl);
    assert_eq!(s.preview_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(
        s.image_updates.unwrap().digest.as_deref(),
        Some(d2.as_str())
    );
    let mut alive = alive_revisions(&ns).await;
    alive.sort();
    alive.dedup();
    assert_eq!(alive.len(), 2, "only v1 and v2 run: {alive:?}");
    assert!(alive.contains(&v1) && alive.contains(&v2), "{alive:?}");

    // Once v2 is promoted and the rollout is over, the waiting digest gets its own preview.
    annotate(&ns, bulkhead_crds::ANNOTATION_PROMOTE, &v2);
    let wl = wait_for(
        &ns,
        "the waiting digest is previewed after v2's rollout",
        |wl| {
            let s = status_of(wl);
            s.active_revision.as_deref() == Some(v2.as_str())
                && progressing_reason(wl) == "AwaitingPromotion"
                && s.image_updates.and_then(|u| u.digest) == Some(d3.clone())
        },
    )
    .await;
    let v3 = status_of(&wl).preview_revision.unwrap();
    assert!(v3 != v1 && v3 != v2);
    ns.delete().await;
}
