//! The Workload reconciler: observe → plan → apply → report. Only this file and the status
//! write touch the API.

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{
    ANNOTATION_ABORT, ANNOTATION_DRAIN, ANNOTATION_PROMOTE, Host, Instance, InstanceSpec,
    LABEL_HOST, LABEL_REVISION, LABEL_WORKLOAD, MANAGER_CONTROLLER, Workload,
    workload::{Strategy, StrategyType},
};
use k8s_openapi::{
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    bluegreen,
    expectations::Pending,
    history,
    observe::{next_available_in, observe},
    pace,
    plan::{self, Desired, IntOrPercent},
    status,
};
use crate::{Context, Error, scheduler::filter::Requirements};
use futures::StreamExt;

fn int_or_percent(v: &IntOrString) -> IntOrPercent {
    match v {
        IntOrString::Int(n) => IntOrPercent::Int(*n),
        IntOrString::String(s) => {
            IntOrPercent::Percent(s.trim_end_matches('%').parse().unwrap_or(0))
        }
    }
}

/// The rollout limits of a strategy, as the rolling planner and the status use them. A
/// BlueGreen Workload is planned by `bluegreen::plan`; its limits (surge 100%, none
/// unavailable) only feed the generic status counts.
pub fn desired(wl: &Workload, update_revision: String) -> Desired {
    let replicas = wl.spec.replicas;
    let Strategy {
        type_,
        rolling_update,
        ..
    } = &wl.spec.strategy;
    let limits = match (type_, rolling_update) {
        (StrategyType::RollingUpdate, Some(r)) => plan::resolve_limits(
            replicas,
            &int_or_percent(&r.max_surge),
            &int_or_percent(&r.max_unavailable),
        ),
        (StrategyType::RollingUpdate, None) => {
            plan::resolve_limits(replicas, &IntOrPercent::Percent(25), &IntOrPercent::Int(0))
        }
        (StrategyType::BlueGreen, _) => {
            plan::resolve_limits(replicas, &IntOrPercent::Percent(100), &IntOrPercent::Int(0))
        }
    };
    Desired {
        replicas,
        update_revision,
        limits,
        paused: wl.spec.paused,
    }
}

/// Reconciles one Workload, recording its outcome and duration.
pub async fn reconcile(wl: Arc<Workload>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(wl, ctx.clone()).await;
    ctx.metrics
        .observe("Workload", result.is_ok(), started.elapsed());
    result
}

async fn reconcile_inner(wl: Arc<Workload>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    tracing::debug!(workload = %wl.name_any(), namespace = ?wl.namespace(), "reconciling");
    // A followed tag is pinned to its accepted digest, which makes the revision; until a
    // digest is accepted nothing is started (docs/image-updates.md).
    let followed = crate::image_updates::follow::follow(&ctx, &wl, now).await;
    if let Some((warning, reason, note)) = &followed.event {
        emit(&ctx, &wl, reason, "ImageUpdate", note.clone(), *warning);
    }
    let Some(wl) = followed.workload.clone() else {
        let workloads = Api::namespaced(ctx.client.clone(), &wl.namespace().unwrap_or_default());
        return crate::image_updates::follow::write_waiting(&workloads, &wl, &followed, now).await;
    };
    let seen = observe_workload(&ctx, &wl, now).await?;
    let planned = plan_workload(&ctx, &wl, &seen, now).await?;
    let refused = apply(&ctx, &wl, &seen, &planned).await?;
    let image_updates = followed.status.as_ref();
    let (next, deferred) = report(
        &ctx,
        &wl,
        &seen,
        &planned,
        image_updates,
        refused.as_deref(),
        now,
    )
    .await?;
    let wake = wake_in(
        &wl,
        &seen,
        &planned,
        &next,
        (refused.is_some(), followed.wake_in),
        now,
    );
    Ok(Action::requeue(deferred.map_or(wake, |d| d.min(wake))))
}

/// What one reconcile saw: the revision the template makes and the Workload's instances.
struct Seen {
    ns: String,
    name: String,
    /// The SeccompProfile version the template names, pinned into the revision.
    profile: Option<String>,
    rev: String,
    owned: Vec<Arc<Instance>>,
    observed: Vec<plan::ObservedInstance>,
    desired: Desired,
    /// How long failed instances are still held before they are replaced.
    hold: Option<Duration>,
}

/// What the planners decided: the actions, and for BlueGreen the plan and its settings.
struct Planned {
    actions: Vec<plan::Action>,
    blue_green: Option<(bluegreen::Plan, bluegreen::Settings)>,
}

/// Observe: the revision, the owned instances from the shared store (with what this
/// controller has created or deleted but not yet seen), and which hosts drain.
async fn observe_workload(ctx: &Context, wl: &Workload, now: Timestamp) -> Result<Seen, Error> {
    let ns = wl
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = wl.name_any();
    let profile = super::seccomp::resolve(ctx, wl).await?;
    let rev = super::seccomp::revision_with_profile(
        &wl.spec.template,
        &wl.spec.isolation,
        profile.as_deref(),
    );
    let owned = ctx.placement.workload_instances(&ns, &name).await?;
    let draining = draining_hosts(ctx).await?;
    let mut observed: Vec<_> = owned
        .iter()
        .map(|i| {
            let mut o = observe(i, wl.spec.min_ready_seconds, now);
            o.evicting = i
                .spec
                .host_name
                .as_ref()
                .is_some_and(|h| draining.contains(h));
            o
        })
        .collect();
    ctx.expectations
        .overlay(&crate::placement::key(&ns, &name), &mut observed);
    let desired = desired(wl, rev.clone());
    let hold = hold_failed(ctx, wl, &owned, &mut observed, desired.replicas);
    Ok(Seen {
        ns,
        name,
        profile,
        rev,
        owned,
        observed,
        desired,
        hold,
    })
}

/// Failed instances are replaced behind the Workload's back-off (1 s doubling to 5 min,
/// forgotten once every replica is available): an instance that fails at once (an image
/// its hosts refuse, a command that does not exist) would otherwise be deleted and created
/// again as fast as the API and the agent allow. While the gate holds, a failed instance
/// keeps its slot as an unready one (and its status, for `kubectl get inst`); returns how
/// long it still holds.
fn hold_failed(
    ctx: &Context,
    wl: &Workload,
    owned: &[Arc<Instance>],
    observed: &mut [plan::ObservedInstance],
    replicas: i32,
) -> Option<Duration> {
    let failed: std::collections::BTreeSet<String> = owned
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            i.status.as_ref().and_then(|s| s.phase) == Some(bulkhead_crds::InstancePhase::Failed)
        })
        .map(|i| i.name_any())
        .collect();
    let uid = wl.uid()?;
    let mut gate = ctx.replacements.lock().ok()?;
    if failed.is_empty() {
        let available = observed.iter().filter(|o| o.available).count();
        if available >= usize::try_from(replicas).unwrap_or(0) {
            gate.forget(&uid);
        }
        return None;
    }
    let now = std::time::Instant::now();
    if let Some(wait) = gate.wait(&uid, now) {
        plan::hold(observed, &failed);
        return Some(wait);
    }
    let next = gate.failed(&uid, now);
    info!(workload = %wl.name_any(), namespace = ?wl.namespace(), failed = failed.len(), next_wait = ?next, "replacing failed instances");
    None
}

/// Plan: the pure planners (rolling or blue/green) over what was seen.
async fn plan_workload(
    ctx: &Context,
    wl: &Workload,
    seen: &Seen,
    now: Timestamp,
) -> Result<Planned, Error> {
    let blue_green = match wl.spec.strategy.type_ {
        StrategyType::BlueGreen => {
            let published = published_revisions(ctx, &seen.ns, &seen.name).await?;
            let settings = blue_green_settings(wl);
            let previous = wl.status.clone().unwrap_or_default();
            let annotation = |key: &str| wl.annotations().get(key).map(String::as_str);
            let input = bluegreen::Input {
                update: &seen.rev,
                settings: settings.clone(),
                state: status::blue_green_state(&previous),
                requests: bluegreen::Requests {
                    promote: annotation(ANNOTATION_PROMOTE) == Some(seen.rev.as_str()),
                    abort: annotation(ANNOTATION_ABORT) == Some(seen.rev.as_str()),
                },
                published,
                now: now.as_second(),
                observed: &seen.observed,
            };
            Some((bluegreen::plan(&seen.name, &input), settings))
        }
        StrategyType::RollingUpdate => None,
    };
    let actions = match &blue_green {
        Some((p, _)) => p.actions.clone(),
        None => plan::plan(&seen.name, &seen.desired, &seen.observed),
    };
    Ok(Planned {
        actions,
        blue_green,
    })
}

/// Apply: record the revision history, then create and delete instances. Returns the
/// API server's refusal of a create, if any.
async fn apply(
    ctx: &Context,
    wl: &Workload,
    seen: &Seen,
    planned: &Planned,
) -> Result<Option<String>, Error> {
    let in_use: std::collections::BTreeSet<String> = seen
        .observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .map(|i| i.revision.clone())
        .collect();
    if !ctx.history.done(wl, &seen.rev, &in_use) {
        history::record(
            &Api::namespaced(ctx.client.clone(), &seen.ns),
            wl,
            &seen.rev,
            &in_use,
        )
        .await?;
        ctx.history.remember(wl, &seen.rev, &in_use);
    }
    let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &seen.ns);
    apply_actions(
        ctx,
        wl,
        &instances,
        &planned.actions,
        &seen.rev,
        seen.profile.as_deref(),
    )
    .await
}

/// Report: the next status (written only when it changed, paced while only its counts move),
/// its Events and metrics; with when to come back for a write held back.
async fn report(
    ctx: &Context,
    wl: &Workload,
    seen: &Seen,
    planned: &Planned,
    image_updates: Option<&bulkhead_crds::workload::ImageUpdatesStatus>,
    refused: Option<&str>,
    now: Timestamp,
) -> Result<(bulkhead_crds::WorkloadStatus, Option<Duration>), Error> {
    let previous = wl.status.clone().unwrap_or_default();
    let mut next = status::compute(
        &previous,
        wl.metadata.generation,
        &seen.desired,
        &seen.observed,
        wl.spec.progress_deadline_seconds,
        Time(now),
    );
    status::report_create_refusal(&mut next, refused, wl.metadata.generation, Time(now));
    if let Some(s) = image_updates {
        crate::image_updates::follow::report(&mut next, s, now);
    }
    if let Some((p, settings)) = &planned.blue_green {
        status::report_blue_green(
            &mut next,
            &p.state,
            settings,
            &seen.rev,
            &seen.observed,
            wl.metadata.generation,
            Time(now),
        );
        for step in &p.steps {
            step_event(ctx, wl, step);
        }
    } else {
        rollout_event(ctx, wl, &seen.rev, &previous, &next);
    }
    let phase_name = next.phase.map(|p| match p {
        bulkhead_crds::workload::WorkloadPhase::Healthy => "Healthy",
        bulkhead_crds::workload::WorkloadPhase::Progressing => "Progressing",
        bulkhead_crds::workload::WorkloadPhase::Paused => "Paused",
        bulkhead_crds::workload::WorkloadPhase::Degraded => "Degraded",
    });
    ctx.metrics
        .workload_phase(&format!("{}/{}", seen.ns, seen.name), phase_name);
    let deferred = write_status(ctx, wl, seen, &previous, &next).await?;
    if planned.blue_green.as_ref().is_some_and(|(p, _)| {
        p.steps
            .iter()
            .any(|s| matches!(s, bluegreen::Step::Promoted { .. }))
    }) {
        // Crash-safety tests stop here: the switch is recorded, no Service has followed yet.
        bulkhead_telemetry::failpoint::hit("controller-after-promote");
    }
    if (&next.active_revision, &next.preview_revision)
        != (&previous.active_revision, &previous.preview_revision)
    {
        // The traffic follows now (one slice write), and the Services' reconciler is woken
        // rather than waiting for the watch event.
        if next.active_revision != previous.active_revision
            && let Some(active) = &next.active_revision
        {
            crate::service::switch::follow(ctx, &seen.ns, &seen.name, active).await;
        }
        let _ = ctx
            .switched
            .unbounded_send(ObjectRef::new(&seen.name).within(&seen.ns));
    }
    Ok((next, deferred))
}

/// Writes `next` when it differs from `previous`, at once or, when only counts moved and
/// the last write was recent, later ([`pace`]): then returns when to come back for it.
async fn write_status(
    ctx: &Context,
    wl: &Workload,
    seen: &Seen,
    previous: &bulkhead_crds::WorkloadStatus,
    next: &bulkhead_crds::WorkloadStatus,
) -> Result<Option<Duration>, Error> {
    if next == previous {
        return Ok(None);
    }
    let uid = wl.uid().unwrap_or_default();
    let since = ctx.status_writes.since(&uid);
    if let pace::Write::After(wait) = pace::decide(previous, next, seen.desired.replicas, since) {
        ctx.metrics.status_write("Workload", false);
        return Ok(Some(wait));
    }
    let body = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Workload", "status": next});
    Api::<Workload>::namespaced(ctx.client.clone(), &seen.ns)
        .patch_status(
            &seen.name,
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    ctx.status_writes.wrote(&uid);
    ctx.metrics.status_write("Workload", true);
    Ok(None)
}

/// The rolling update's Event when its Progressing reason changes.
fn rollout_event(
    ctx: &Context,
    wl: &Workload,
    rev: &str,
    previous: &bulkhead_crds::WorkloadStatus,
    next: &bulkhead_crds::WorkloadStatus,
) {
    let reason_of = |s: &bulkhead_crds::WorkloadStatus| {
        bulkhead_crds::conditions::find(
            &s.conditions,
            bulkhead_crds::conditions::types::PROGRESSING,
        )
        .map(|c| c.reason.clone())
    };
    if reason_of(next) == reason_of(previous) {
        return;
    }
    match reason_of(next).as_deref() {
        Some(status::reasons::NEW_REVISION_AVAILABLE) => event(
            ctx,
            wl,
            "RolloutComplete",
            "Rollout",
            format!("revision {rev} is available on every instance"),
        ),
        Some(status::reasons::PROGRESS_DEADLINE_EXCEEDED) => event(
            ctx,
            wl,
            "ProgressDeadlineExceeded",
            "Rollout",
            format!(
                "revision {rev} made no progress for {}s",
                wl.spec.progress_deadline_seconds
            ),
        ),
        Some(status::reasons::REVISION_UPDATED) => event(
            ctx,
            wl,
            "RolloutStarted",
            "Rollout",
            format!("rolling out revision {rev}"),
        ),
        _ => {}
    }
}

/// Seconds until the next reconcile: when a ready instance becomes available
/// (minReadySeconds), a refused create is tried again, the progress deadline passes, or the
/// blue/green plan wants to look again; else on changes (and every 300 s).
fn wake_in(
    wl: &Workload,
    seen: &Seen,
    planned: &Planned,
    next: &bulkhead_crds::WorkloadStatus,
    (refused, followed_wake_in): (bool, Option<i64>),
    now: Timestamp,
) -> Duration {
    let deadline_in = next
        .last_progress_time
        .as_ref()
        .filter(|_| next.phase == Some(bulkhead_crds::workload::WorkloadPhase::Progressing))
        .filter(|_| planned.blue_green.is_none())
        .map(|t| {
            t.0.as_second() + i64::from(wl.spec.progress_deadline_seconds) + 1 - now.as_second()
        });
    let wake = [
        next_available_in(
            seen.owned.iter().map(AsRef::as_ref),
            wl.spec.min_ready_seconds,
            now,
        ),
        // A refused create (isolation level, quota) is tried again, not hot-looped.
        refused.then_some(CREATE_RETRY_SECONDS),
        deadline_in,
        planned.blue_green.as_ref().and_then(|(p, _)| p.wake_in),
        followed_wake_in,
        seen.hold.map(|d| d.as_secs() as i64 + 1),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(300);
    Duration::from_secs(wake.clamp(1, 300) as u64)
}

/// Seconds before a create the API server refused is tried again.
const CREATE_RETRY_SECONDS: i64 = 30;

/// Creates in flight at once.
const CREATES_IN_FLIGHT: usize = 32;

/// Creates and deletes instances as planned: one summary Event each way, not one per
/// instance. A create the API server refuses (admission: the namespace's isolation level, a
/// quota) comes back as the refusal's message, for the Workload's `ReplicaFailure`
/// condition; other errors fail the reconcile.
async fn apply_actions(
    ctx: &Context,
    wl: &Workload,
    instances: &Api<Instance>,
    actions: &[plan::Action],
    rev: &str,
    profile: Option<&str>,
) -> Result<Option<String>, Error> {
    let creates: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::Create(n) => Some(n.as_str()),
            plan::Action::Delete(_) => None,
        })
        .collect();
    let deletes: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::Delete(n) => Some(n.as_str()),
            plan::Action::Create(_) => None,
        })
        .collect();
    let uid = wl.uid().unwrap_or_default();
    let refused = match ctx.create_refusals.holds(&uid, !creates.is_empty()) {
        // Refused less than CREATE_RETRY_SECONDS ago: every Instance change of the
        // Workload wakes this reconciler, and each would try (and be refused) again.
        Some(message) => Some(message),
        None => {
            let refused = create_all(ctx, wl, instances, &creates, rev, profile).await?;
            if let Some(message) = &refused {
                ctx.create_refusals.refused(&uid, message);
            }
            refused
        }
    };
    delete_all(ctx, wl, instances, &deletes).await?;
    Ok(refused)
}

/// The API server's last refusal of a Workload's create, by Workload UID: creates are tried
/// again only `CREATE_RETRY_SECONDS` later, whatever wakes the reconciler meanwhile.
#[derive(Debug, Default)]
pub struct CreateRefusals(
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
);

impl CreateRefusals {
    /// The refusal that still holds back creates, if creates are wanted; forgets one whose
    /// delay is over or that no create needs any more.
    pub fn holds(&self, workload_uid: &str, creating: bool) -> Option<String> {
        let mut map = self.0.lock().ok()?;
        let retry = Duration::from_secs(CREATE_RETRY_SECONDS as u64);
        match map.get(workload_uid) {
            Some((at, message)) if creating && at.elapsed() < retry => Some(message.clone()),
            Some(_) => {
                map.remove(workload_uid);
                None
            }
            None => None,
        }
    }

    /// Records a refusal now.
    pub fn refused(&self, workload_uid: &str, message: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(
                workload_uid.to_string(),
                (std::time::Instant::now(), message.to_string()),
            );
        }
    }
}

/// New instances of the revision, each bound to the host the shared placement chooses (the
/// scheduler binds those that fit nowhere yet), so that each costs one API write.
fn bound_instances(
    ctx: &Context,
    wl: &Workload,
    names: &[&str],
    rev: &str,
    profile: Option<&str>,
) -> Result<Vec<Instance>, Error> {
    let ns = wl.namespace().unwrap_or_default();
    let mut batch = Vec::with_capacity(names.len());
    for name in names {
        let mut instance = new_instance(wl, name, rev)?;
        instance.spec.seccomp_profile_digest = profile.map(str::to_string);
        batch.push(instance);
    }
    let requests: Vec<_> = batch
        .iter()
        .map(|i| {
            let req = Requirements::of(&i.spec, Some(wl.name_any()));
            (crate::placement::key(&ns, &i.name_any()), req)
        })
        .collect();
    for (instance, decision) in batch.iter_mut().zip(ctx.placement.place(&requests)) {
        if let Ok(host) = decision {
            instance
                .labels_mut()
                .insert(LABEL_HOST.to_string(), host.clone());
            instance.spec.host_name = Some(host);
        }
    }
    Ok(batch)
}

async fn create_all(
    ctx: &Context,
    wl: &Workload,
    instances: &Api<Instance>,
    names: &[&str],
    rev: &str,
    profile: Option<&str>,
) -> Result<Option<String>, Error> {
    if names.is_empty() {
        return Ok(None);
    }
    let (ns, name) = (wl.namespace().unwrap_or_default(), wl.name_any());
    let wkey = crate::placement::key(&ns, &name);
    // The agent checks the image's signature again against these keys before it starts an
    // instance; without them nothing is created (fail closed), the Workload says why.
    let signature = match crate::image_updates::keys::instance_signature(ctx, wl).await {
        Ok(s) => s,
        Err(message) => {
            let note = format!("creating instances: {message}");
            event(ctx, wl, "FailedCreate", "CreateInstance", note.clone());
            return Ok(Some(note));
        }
    };
    let mut batch = bound_instances(ctx, wl, names, rev, profile)?;
    for instance in &mut batch {
        instance.spec.image_signature = signature.clone();
    }
    for n in names {
        ctx.expectations
            .expect(&wkey, n, Pending::Create(rev.to_string()));
    }
    let params = PostParams {
        field_manager: Some(MANAGER_CONTROLLER.into()),
        ..Default::default()
    };
    // The API server's answer is dropped as it comes: held until the whole batch was sent,
    // 10000 of them more than doubled the controller's peak memory.
    let results: Vec<(String, Result<(), kube::Error>)> =
        futures::stream::iter(batch.into_iter().map(|i| {
            let params = &params;
            async move { (i.name_any(), instances.create(params, &i).await.map(drop)) }
        }))
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect()
        .await;
    let (mut created, mut refused, mut failed) = (Vec::new(), None, None);
    for (instance, result) in results {
        let forget = |keep_expectation: bool| {
            ctx.placement.forget(&crate::placement::key(&ns, &instance));
            if !keep_expectation {
                ctx.expectations.forget(&wkey, &instance);
            }
        };
        match result {
            Ok(_) => created.push(instance),
            // It exists: the store will show it.
            Err(kube::Error::Api(e)) if e.code == 409 => forget(true),
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                forget(false);
                warn!(workload = %name, namespace = %ns, instance = %instance, error = %e.message, "the API server refused an instance");
                refused.get_or_insert(format!("creating instance {instance}: {}", e.message));
            }
            Err(e) => {
                forget(false);
                failed.get_or_insert(e);
            }
        }
    }
    if !created.is_empty() {
        created.sort();
        info!(workload = %name, namespace = %ns, count = created.len(), revision = %rev, "created instances");
        let note = summary("created", &created, &format!(" of revision {rev}"));
        event(ctx, wl, "Created", "CreateInstance", note);
    }
    if let Some(note) = &refused {
        event(ctx, wl, "FailedCreate", "CreateInstance", note.clone());
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(refused),
    }
}

async fn delete_all(
    ctx: &Context,
    wl: &Workload,
    instances: &Api<Instance>,
    names: &[&str],
) -> Result<(), Error> {
    let (ns, name) = (wl.namespace().unwrap_or_default(), wl.name_any());
    let wkey = crate::placement::key(&ns, &name);
    // As many in flight as creates: a scale-down of thousands is not one round trip each.
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let results: Vec<(String, Result<(), kube::Error>)> =
        futures::stream::iter(owned.into_iter().map(|instance| async move {
            let result = instances
                .delete(&instance, &DeleteParams::background())
                .await
                .map(drop);
            (instance, result)
        }))
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect()
        .await;
    let (mut deleted, mut failed) = (Vec::new(), None);
    for (instance, result) in results {
        match result {
            Ok(()) => {
                ctx.expectations.expect(&wkey, &instance, Pending::Delete);
                deleted.push(instance);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                ctx.expectations.expect(&wkey, &instance, Pending::Delete);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    deleted.sort();
    if !deleted.is_empty() {
        info!(workload = %name, namespace = %ns, count = deleted.len(), "deleted instances");
        event(
            ctx,
            wl,
            "Deleted",
            "DeleteInstance",
            summary("deleted", &deleted, ""),
        );
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// "created 3 instances of revision r: a, b, c", naming at most ten.
fn summary(verb: &str, names: &[String], suffix: &str) -> String {
    const NAMED: usize = 10;
    let noun = if names.len() == 1 {
        "instance"
    } else {
        "instances"
    };
    let mut listed = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED {
        listed.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    format!("{verb} {} {noun}{suffix}: {listed}", names.len())
}

/// The Hosts annotated `bulkhead.dev/drain: "true"`.
async fn draining_hosts(ctx: &Context) -> Result<std::collections::BTreeSet<String>, Error> {
    // Judging before the first list would miss a drain; the watch fills this within a moment.
    Ok(ctx
        .placement
        .hosts_ready()
        .await?
        .state()
        .iter()
        .filter(|h| is_draining(h))
        .map(|h| h.name_any())
        .collect())
}

/// Whether a Host is being drained.
pub fn is_draining(host: &Host) -> bool {
    host.annotations().get(ANNOTATION_DRAIN).map(String::as_str) == Some("true")
}

/// The blue/green settings of a Workload, resolved.
fn blue_green_settings(wl: &Workload) -> bluegreen::Settings {
    let bg = wl.spec.strategy.blue_green.clone().unwrap_or_default();
    bluegreen::Settings {
        replicas: wl.spec.replicas,
        preview_replicas: bg.preview_replicas.unwrap_or(wl.spec.replicas),
        auto_promote: bg.auto_promote,
        auto_promotion_seconds: i64::from(bg.auto_promotion_seconds.unwrap_or(0)),
        scale_down_delay_seconds: i64::from(bg.scale_down_delay_seconds),
        abort_scale_down_delay_seconds: i64::from(bg.abort_scale_down_delay_seconds),
        progress_deadline_seconds: i64::from(wl.spec.progress_deadline_seconds),
        paused: wl.spec.paused,
    }
}

/// The revision each WorkloadService of a Workload publishes now.
async fn published_revisions(
    ctx: &Context,
    ns: &str,
    workload: &str,
) -> Result<Vec<Option<String>>, Error> {
    // Judging before the first list would retire a revision a Service still publishes.
    Ok(ctx
        .services
        .ready()
        .await
        .map_err(|_| Error::StoreGone("WorkloadService"))?
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns) && s.spec.workload_name == workload)
        .map(|s| s.status.as_ref().and_then(|st| st.active_revision.clone()))
        .collect())
}

/// Tells the story of a blue/green rollout as Events on the Workload.
fn step_event(ctx: &Context, wl: &Workload, step: &bluegreen::Step) {
    use bluegreen::Step::*;
    let name = wl.name_any();
    let (reason, note) = match step {
        PreviewStarted { revision, active } => (
            "PreviewStarted",
            format!("starting preview revision {revision} beside active revision {active}"),
        ),
        PreviewReady { revision, manual } => (
            "PreviewReady",
            if *manual {
                format!(
                    "every preview instance of revision {revision} is ready and verified; promote with: kubectl annotate workload {name} {ANNOTATION_PROMOTE}={revision}"
                )
            } else {
                format!("every preview instance of revision {revision} is ready and verified")
            },
        ),
        Promoted { from, to } => (
            "Promoted",
            format!("traffic switched from revision {from} to revision {to}"),
        ),
        RolledBack { from, to } => (
            "RolledBack",
            format!("traffic switched back from revision {from} to warm revision {to}"),
        ),
        Aborted { revision, reason } => (
            "Aborted",
            format!(
                "preview revision {revision} aborted ({reason}); traffic stays on the active revision"
            ),
        ),
        ScaledDown { revision } => (
            "ScaledDown",
            format!("retired the instances of revision {revision}"),
        ),
    };
    let warning = matches!(step, Aborted { .. });
    emit(ctx, wl, reason, "Rollout", note, warning);
}

/// Publishes an Event on the Workload off the reconcile's path; a failure to publish is
/// logged, never fatal.
fn event(ctx: &Context, wl: &Workload, reason: &str, action: &str, note: String) {
    emit(ctx, wl, reason, action, note, false);
}

pub(crate) fn emit(
    ctx: &Context,
    wl: &Workload,
    reason: &str,
    action: &str,
    note: String,
    warning: bool,
) {
    let ev = kube::runtime::events::Event {
        type_: if warning {
            kube::runtime::events::EventType::Warning
        } else {
            kube::runtime::events::EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let (recorder, regarding) = (ctx.recorder.clone(), wl.object_ref(&()));
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&ev, &regarding).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    });
}

/// A new Instance of the Workload's current template, owned by it.
fn new_instance(wl: &Workload, name: &str, rev: &str) -> Result<Instance, Error> {
    let owner = wl
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let workload = wl.name_any();
    Ok(Instance {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: wl.namespace(),
            labels: Some(
                [
                    (LABEL_WORKLOAD.to_string(), workload),
                    (LABEL_REVISION.to_string(), rev.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: InstanceSpec {
            host_name: None,
            revision: rev.to_string(),
            template: wl.spec.template.clone(),
            isolation: wl.spec.isolation.clone(),
            seccomp_profile_digest: None,
            image_signature: None,
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_create_holds_creates_back_until_none_is_wanted() {
        let refusals = CreateRefusals::default();
        assert_eq!(refusals.holds("w1", true), None, "nothing refused yet");
        refusals.refused("w1", "exceeded quota");
        assert_eq!(
            refusals.holds("w1", true).as_deref(),
            Some("exceeded quota")
        );
        assert_eq!(refusals.holds("w2", true), None, "another Workload");
        // Scaled down meanwhile: no create is wanted, the refusal is forgotten.
        assert_eq!(refusals.holds("w1", false), None);
        assert_eq!(refusals.holds("w1", true), None);
    }
}
