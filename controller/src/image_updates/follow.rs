//! The executor of [`super::plan`]: asks the registry what the followed tag points to,
//! verifies a new digest's signature once, and pins the Workload's template to the accepted
//! digest so that the revision (and every instance) is that digest.

use std::time::Duration;

use bulkhead_crds::{
    MANAGER_CONTROLLER, Workload, WorkloadStatus,
    conditions::{self, types},
    workload::{ImageUpdatePolicy, ImageUpdates, ImageUpdatesStatus, WorkloadPhase},
};
use bulkhead_registry::{
    ImageRef,
    signature::{self, VerifyError},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::warn;

use super::{
    plan::{self, Looked, Next, Outcome},
    semver_range,
};
use crate::{Context, Error};

/// The longest one look at the registry (tag and signatures) may take; a slow registry only
/// delays the next rollout, never the reconcile of what runs.
pub const LOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// A Workload as the rest of the reconcile sees it.
#[derive(Debug)]
pub struct Followed {
    /// The Workload with its template pinned to the accepted digest; `None` while no digest
    /// has been accepted yet (nothing is started from an unverified image).
    pub workload: Option<Workload>,
    /// The image-updates status to write, when the Workload follows a tag.
    pub status: Option<ImageUpdatesStatus>,
    /// What happened this time, for an Event: (warning, reason, note).
    pub event: Option<(bool, &'static str, String)>,
    /// Seconds until the registry should be asked again.
    pub wake_in: Option<i64>,
}

/// Resolves the followed tag of `wl` (when it follows one) at `now`.
pub async fn follow(ctx: &Context, wl: &Workload, now: Timestamp) -> Followed {
    let unchanged = Followed {
        workload: Some(wl.clone()),
        status: None,
        event: None,
        wake_in: None,
    };
    let Some(settings) = &wl.spec.image_updates else {
        return unchanged;
    };
    let Ok(image) = ImageRef::parse(&wl.spec.template.image) else {
        return unchanged;
    };
    let tag = followed_name(&image, settings);
    let key = super::key(wl);
    // The status as last written, not as the watch cache has it: a reconcile that runs on a
    // cached copy from before the previous reconcile's write must not take the accepted
    // digest back.
    let current = fresh_status(ctx, wl).await;
    let previous = current.image_updates.as_ref();
    let input = plan::Input {
        previous,
        tag: &tag,
        interval: i64::from(settings.check_interval_seconds),
        pushed: ctx.image_updates.pushes.take(&key) | ctx.image_updates.looked.first(&key),
        rollout_in_progress: rollout_in_progress(&current),
        now: now.as_second(),
    };
    let (status, event) = if plan::check_in(&input) > 0 {
        (previous.cloned().unwrap_or_default(), None)
    } else {
        let (outcome, resolved) = look(ctx, wl, &current, &image).await;
        if matches!(outcome, Outcome::Accepted { .. }) {
            // Crash-safety tests stop here: a digest accepted, nothing recorded or started yet.
            bulkhead_telemetry::failpoint::hit("controller-after-image-accepted");
        }
        let mut status = plan::record(previous, &tag, &outcome, now);
        plan::note_tag(&mut status, &outcome, resolved.as_deref());
        (status, event_of(previous, &outcome, &tag))
    };
    let wake_in = plan::check_in(&plan::Input {
        previous: Some(&status),
        pushed: false,
        ..input
    });
    let workload = status.digest.as_ref().map(|digest| {
        let mut pinned = wl.clone();
        pinned.spec.template.image = image.pinned(digest).to_string();
        pinned
    });
    Followed {
        workload,
        status: Some(status),
        event,
        wake_in: Some(wake_in.max(1)),
    }
}

/// What the status calls the followed tag: `registry/repository:tag`, or with policy
/// SemverRange `registry/repository (semver <range>)`.
pub fn followed_name(image: &ImageRef, settings: &ImageUpdates) -> String {
    match (settings.policy, &settings.semver_range) {
        (ImageUpdatePolicy::SemverRange, Some(range)) => {
            format!("{}/{} (semver {range})", image.registry, image.repository)
        }
        _ => image.to_string(),
    }
}

/// The tag to resolve: the template's (Follow), or the newest in the range (SemverRange,
/// returned as the tag the digest is found under).
async fn pick_tag(
    ctx: &Context,
    wl: &Workload,
    image: &ImageRef,
) -> Result<(ImageRef, Option<String>), String> {
    let Some(range) = wl
        .spec
        .image_updates
        .as_ref()
        .filter(|u| u.policy == ImageUpdatePolicy::SemverRange)
        .and_then(|u| u.semver_range.as_deref())
    else {
        return Ok((image.clone(), None));
    };
    let range = semver_range::parse(range)?;
    let registry = &ctx.image_updates.registry;
    let tags = match tokio::time::timeout(LOOK_TIMEOUT, registry.tags(image)).await {
        Ok(Ok(tags)) => tags,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            return Err(format!(
                "listing the tags took longer than {LOOK_TIMEOUT:?}"
            ));
        }
    };
    let Some((tag, _)) = semver_range::newest(&tags, &range) else {
        return Err(format!(
            "no tag of {}/{} is within {range} ({} tags looked at)",
            image.registry,
            image.repository,
            tags.len()
        ));
    };
    let chosen = ImageRef {
        tag: Some(tag.to_string()),
        digest: None,
        ..image.clone()
    };
    Ok((chosen, Some(tag.to_string())))
}

/// Asks the registry and, for a new digest, verifies it; also the tag picked by a range.
async fn look(
    ctx: &Context,
    wl: &Workload,
    status: &WorkloadStatus,
    image: &ImageRef,
) -> (Outcome, Option<String>) {
    let (chosen, resolved) = match pick_tag(ctx, wl, image).await {
        Ok(c) => c,
        Err(message) => {
            warn!(workload = %wl.name_any(), image = %image, error = %message, "picking a tag in the semver range failed; backing off");
            return (Outcome::Failed(message), None);
        }
    };
    (look_at(ctx, wl, status, &chosen).await, resolved)
}

/// Asks the registry what `image`'s tag points to and, for a new digest, verifies it.
async fn look_at(
    ctx: &Context,
    wl: &Workload,
    status: &WorkloadStatus,
    image: &ImageRef,
) -> Outcome {
    let registry = &ctx.image_updates.registry;
    let looked = match tokio::time::timeout(LOOK_TIMEOUT, registry.tag_digest(image)).await {
        Ok(Ok(digest)) => Looked::Digest(digest),
        Ok(Err(e)) => Looked::Failed(e.to_string()),
        Err(_) => Looked::Failed(format!("registry took longer than {LOOK_TIMEOUT:?}")),
    };
    let digest = match looked {
        Looked::Digest(d) => d,
        Looked::Failed(message) => {
            warn!(workload = %wl.name_any(), image = %image, error = %message, "looking up the followed tag failed; backing off");
            return Outcome::Failed(message);
        }
    };
    let previous = status.image_updates.as_ref();
    let required = !wl
        .spec
        .image_updates
        .as_ref()
        .is_some_and(|u| u.allow_unsigned);
    match plan::next(previous, &digest, rollout_in_progress(status), required) {
        Next::Keep => Outcome::Unchanged,
        Next::Wait => Outcome::Waiting(digest),
        Next::Accept => Outcome::Accepted {
            digest,
            verdict: if required {
                plan::TRUSTED
            } else {
                plan::ALLOW_UNSIGNED
            }
            .into(),
            message: String::new(),
        },
        Next::Verify => verify(ctx, wl, image, digest).await,
    }
}

/// The Workload's status read from the API server; the cached one if that fails.
async fn fresh_status(ctx: &Context, wl: &Workload) -> WorkloadStatus {
    let api: Api<Workload> =
        Api::namespaced(ctx.client.clone(), &wl.namespace().unwrap_or_default());
    match api.get(&wl.name_any()).await {
        Ok(fresh) => fresh.status.unwrap_or_default(),
        Err(e) => {
            warn!(workload = %wl.name_any(), error = %e, "reading the workload status failed; using the cached one");
            wl.status.clone().unwrap_or_default()
        }
    }
}

/// Whether a rollout is under way (a newer digest waits for it).
fn rollout_in_progress(status: &WorkloadStatus) -> bool {
    status.preview_revision.is_some() || status.phase == Some(WorkloadPhase::Progressing)
}

/// Verifies the signature of `digest` against the Workload's trusted keys.
async fn verify(ctx: &Context, wl: &Workload, image: &ImageRef, digest: String) -> Outcome {
    let keys = match super::keys::trusted_keys(ctx, wl).await {
        Ok(k) => k,
        Err(message) => {
            return Outcome::Refused {
                digest,
                reason: "TrustedKeysUnavailable".into(),
                message,
            };
        }
    };
    let registry = &ctx.image_updates.registry;
    let checked = tokio::time::timeout(
        LOOK_TIMEOUT,
        signature::verify(registry, image, &digest, &keys),
    )
    .await;
    match checked {
        Ok(Ok(key)) => Outcome::Accepted {
            message: format!("signed by trusted key {key}"),
            digest,
            verdict: plan::TRUSTED.into(),
        },
        Ok(Err(VerifyError::Untrusted(u))) => Outcome::Refused {
            reason: u.reason().into(),
            message: u.to_string(),
            digest,
        },
        Ok(Err(VerifyError::Registry(e))) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed(format!(
            "reading the signatures of {digest} took longer than {LOOK_TIMEOUT:?}"
        )),
    }
}

/// The Event telling what a look changed, if anything: a refusal once per digest.
fn event_of(
    previous: Option<&ImageUpdatesStatus>,
    outcome: &Outcome,
    tag: &str,
) -> Option<(bool, &'static str, String)> {
    match outcome {
        Outcome::Accepted {
            digest, message, ..
        } => Some((
            false,
            "ImageUpdated",
            format!("{tag} now points to {digest} ({message}); rolling it out").replace(" ()", ""),
        )),
        Outcome::Refused {
            digest,
            reason,
            message,
        } => {
            let already = previous.is_some_and(|p| {
                p.pending_digest.as_deref() == Some(digest.as_str())
                    && p.history
                        .iter()
                        .any(|v| &v.digest == digest && &v.verdict == reason)
            });
            (!already).then(|| {
                (
                    true,
                    "ImageNotTrusted",
                    format!("{tag} points to {digest}, not rolled out ({reason}): {message}"),
                )
            })
        }
        _ => None,
    }
}

/// Writes the image-updates status and the ImageNotTrusted condition into `next`.
pub fn report(next: &mut WorkloadStatus, status: &ImageUpdatesStatus, now: Timestamp) {
    next.image_updates = Some(status.clone());
    let condition = match plan::refusal(status) {
        Some(v) => conditions::new(
            types::IMAGE_NOT_TRUSTED,
            conditions::status::TRUE,
            &v.verdict,
            format!("digest {} is not rolled out: {}", v.digest, v.message),
            None,
            Time(now),
        ),
        None => conditions::new(
            types::IMAGE_NOT_TRUSTED,
            conditions::status::FALSE,
            "NoUntrustedDigest",
            match &status.digest {
                Some(d) => format!("running {d}, accepted from {}", status.tag),
                None => format!("no digest of {} accepted yet", status.tag),
            },
            None,
            Time(now),
        ),
    };
    conditions::merge(&mut next.conditions, condition);
}

/// Writes the image-updates status of a Workload that has no accepted digest yet (nothing
/// else changes: no instance is started) and comes back when the registry is due.
pub async fn write_waiting(
    api: &Api<Workload>,
    wl: &Workload,
    followed: &Followed,
    now: Timestamp,
) -> Result<Action, Error> {
    let previous = wl.status.clone().unwrap_or_default();
    let mut next = previous.clone();
    if let Some(s) = &followed.status {
        report(&mut next, s, now);
    }
    if next != previous {
        let body =
            json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Workload", "status": next});
        api.patch_status(
            &wl.name_any(),
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    let wake = followed.wake_in.unwrap_or(60).clamp(1, 300);
    Ok(Action::requeue(Duration::from_secs(wake as u64)))
}
