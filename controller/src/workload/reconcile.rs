//! The Workload reconciler: observe → plan → apply → report. Only this file and the status
//! write touch the API.

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{
    ANNOTATION_ABORT, ANNOTATION_DRAIN, ANNOTATION_PROMOTE, Host, Instance, InstanceSpec,
    LABEL_REVISION, LABEL_WORKLOAD, MANAGER_CONTROLLER, Workload, WorkloadService,
    workload::{Strategy, StrategyType},
};
use k8s_openapi::{
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    bluegreen, history,
    observe::{next_available_in, observe},
    plan::{self, Desired, IntOrPercent},
    status,
};
use crate::{Context, Error};

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
    let ns = wl
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = wl.name_any();
    let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let workloads: Api<Workload> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();

    // Image updates (issue #17): a followed tag is pinned to its accepted digest, which makes
    // the revision. Until a digest is accepted nothing is started.
    let followed = crate::image_updates::follow::follow(&ctx, &wl, now).await;
    if let Some((warning, reason, note)) = &followed.event {
        emit(&ctx, &wl, reason, "ImageUpdate", note.clone(), *warning).await;
    }
    let Some(pinned) = followed.workload.clone() else {
        return crate::image_updates::follow::write_waiting(&workloads, &wl, &followed, now).await;
    };
    let wl = Arc::new(pinned);

    // Observe.
    let profile = super::seccomp::resolve(&ctx, &wl).await?;
    let rev = super::seccomp::revision_with_profile(
        &wl.spec.template,
        &wl.spec.isolation,
        profile.as_deref(),
    );
    let owned = instances
        .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}={name}")))
        .await?
        .items;
    let draining = draining_hosts(&ctx).await?;
    let observed: Vec<_> = owned
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
    let desired = desired(&wl, rev.clone());

    // Plan.
    let blue_green = match wl.spec.strategy.type_ {
        StrategyType::BlueGreen => {
            let published = published_revisions(&ctx, &ns, &name).await?;
            let settings = blue_green_settings(&wl);
            let previous = wl.status.clone().unwrap_or_default();
            let annotation = |key: &str| wl.annotations().get(key).map(String::as_str);
            let input = bluegreen::Input {
                update: &rev,
                settings: settings.clone(),
                state: status::blue_green_state(&previous),
                requests: bluegreen::Requests {
                    promote: annotation(ANNOTATION_PROMOTE) == Some(rev.as_str()),
                    abort: annotation(ANNOTATION_ABORT) == Some(rev.as_str()),
                },
                published,
                now: now.as_second(),
                observed: &observed,
            };
            Some((bluegreen::plan(&name, &input), settings))
        }
        StrategyType::RollingUpdate => None,
    };
    let actions = match &blue_green {
        Some((p, _)) => p.actions.clone(),
        None => plan::plan(&name, &desired, &observed),
    };
    let in_use: std::collections::BTreeSet<String> = observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .map(|i| i.revision.clone())
        .collect();
    history::record(
        &Api::namespaced(ctx.client.clone(), &ns),
        &wl,
        &rev,
        &in_use,
    )
    .await?;

    // Apply.
    let refused = apply_actions(&ctx, &wl, &instances, &actions, &rev, profile.as_deref()).await?;

    // Report.
    let previous = wl.status.clone().unwrap_or_default();
    let mut next = status::compute(
        &previous,
        wl.metadata.generation,
        &desired,
        &observed,
        wl.spec.progress_deadline_seconds,
        Time(now),
    );
    status::report_create_refusal(
        &mut next,
        refused.as_deref(),
        wl.metadata.generation,
        Time(now),
    );
    if let Some(s) = &followed.status {
        crate::image_updates::follow::report(&mut next, s, now);
    }
    if let Some((p, settings)) = &blue_green {
        status::report_blue_green(
            &mut next,
            &p.state,
            settings,
            &rev,
            &observed,
            wl.metadata.generation,
            Time(now),
        );
        for step in &p.steps {
            step_event(&ctx, &wl, step).await;
        }
    }
    let reason_of = |s: &bulkhead_crds::WorkloadStatus| {
        bulkhead_crds::conditions::find(
            &s.conditions,
            bulkhead_crds::conditions::types::PROGRESSING,
        )
        .map(|c| c.reason.clone())
    };
    if blue_green.is_none() && reason_of(&next) != reason_of(&previous) {
        match reason_of(&next).as_deref() {
            Some(status::reasons::NEW_REVISION_AVAILABLE) => {
                event(
                    &ctx,
                    &wl,
                    "RolloutComplete",
                    "Rollout",
                    format!("revision {rev} is available on every instance"),
                )
                .await
            }
            Some(status::reasons::PROGRESS_DEADLINE_EXCEEDED) => {
                event(
                    &ctx,
                    &wl,
                    "ProgressDeadlineExceeded",
                    "Rollout",
                    format!(
                        "revision {rev} made no progress for {}s",
                        wl.spec.progress_deadline_seconds
                    ),
                )
                .await
            }
            Some(status::reasons::REVISION_UPDATED) => {
                event(
                    &ctx,
                    &wl,
                    "RolloutStarted",
                    "Rollout",
                    format!("rolling out revision {rev}"),
                )
                .await
            }
            _ => {}
        }
    }
    let phase_name = next.phase.map(|p| match p {
        bulkhead_crds::workload::WorkloadPhase::Healthy => "Healthy",
        bulkhead_crds::workload::WorkloadPhase::Progressing => "Progressing",
        bulkhead_crds::workload::WorkloadPhase::Paused => "Paused",
        bulkhead_crds::workload::WorkloadPhase::Degraded => "Degraded",
    });
    ctx.metrics
        .workload_phase(&format!("{ns}/{name}"), phase_name);
    if next != previous {
        let body =
            json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Workload", "status": next});
        workloads
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER_CONTROLLER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    if blue_green.as_ref().is_some_and(|(p, _)| {
        p.steps
            .iter()
            .any(|s| matches!(s, bluegreen::Step::Promoted { .. }))
    }) {
        // Crash-safety tests stop here: the switch is recorded, no Service has followed yet.
        bulkhead_telemetry::failpoint::hit("controller-after-promote");
    }

    // Wake up when a ready instance becomes available (minReadySeconds) or the progress
    // deadline passes, else on changes.
    let deadline_in = next
        .last_progress_time
        .as_ref()
        .filter(|_| next.phase == Some(bulkhead_crds::workload::WorkloadPhase::Progressing))
        .map(|t| {
            t.0.as_second() + i64::from(wl.spec.progress_deadline_seconds) + 1 - now.as_second()
        });
    let deadline_in = deadline_in.filter(|_| blue_green.is_none());
    let wake = [
        next_available_in(&owned, wl.spec.min_ready_seconds, now),
        // A refused create (isolation level, quota) is tried again, not hot-looped.
        refused.as_ref().map(|_| CREATE_RETRY_SECONDS),
        deadline_in,
        blue_green.as_ref().and_then(|(p, _)| p.wake_in),
        followed.wake_in,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(300);
    Ok(Action::requeue(Duration::from_secs(
        wake.clamp(1, 300) as u64
    )))
}

/// Seconds before a create the API server refused is tried again.
const CREATE_RETRY_SECONDS: i64 = 30;

/// Creates and deletes instances as planned. A create the API server refuses (admission:
/// the namespace's isolation level, a quota) stops the creates of this pass and comes back
/// as the refusal's message, for the Workload's `ReplicaFailure` condition; other errors
/// fail the reconcile.
async fn apply_actions(
    ctx: &Context,
    wl: &Workload,
    instances: &Api<Instance>,
    actions: &[plan::Action],
    rev: &str,
    profile: Option<&str>,
) -> Result<Option<String>, Error> {
    let name = wl.name_any();
    let ns = wl.namespace().unwrap_or_default();
    let mut refused = None;
    for action in actions {
        match action {
            plan::Action::Create(instance_name) => {
                if refused.is_some() {
                    continue;
                }
                let mut instance = new_instance(wl, instance_name, rev)?;
                instance.spec.seccomp_profile_digest = profile.map(str::to_string);
                let params = PostParams {
                    field_manager: Some(MANAGER_CONTROLLER.into()),
                    ..Default::default()
                };
                match instances.create(&params, &instance).await {
                    Ok(_) => {
                        info!(workload = %name, namespace = %ns, instance = %instance_name, revision = %rev, "created instance");
                        let note = format!("created instance {instance_name} of revision {rev}");
                        event(ctx, wl, "Created", "CreateInstance", note).await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                        warn!(workload = %name, namespace = %ns, instance = %instance_name, error = %e.message, "the API server refused an instance");
                        let note = format!("creating instance {instance_name}: {}", e.message);
                        event(ctx, wl, "FailedCreate", "CreateInstance", note.clone()).await;
                        refused = Some(note);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            plan::Action::Delete(instance_name) => {
                match instances
                    .delete(instance_name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {
                        info!(workload = %name, namespace = %ns, instance = %instance_name, "deleted instance");
                        let note = format!("deleted instance {instance_name}");
                        event(ctx, wl, "Deleted", "DeleteInstance", note).await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(refused)
}

/// The Hosts annotated `bulkhead.dev/drain: "true"`.
async fn draining_hosts(ctx: &Context) -> Result<std::collections::BTreeSet<String>, Error> {
    // Judging before the first list would miss a drain; the watch fills this within a moment.
    ctx.hosts
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreGone("Host"))?;
    Ok(ctx
        .hosts
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
    let services: Api<WorkloadService> = Api::namespaced(ctx.client.clone(), ns);
    Ok(services
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.workload_name == workload)
        .map(|s| s.status.and_then(|st| st.active_revision))
        .collect())
}

/// Tells the story of a blue/green rollout as Events on the Workload.
async fn step_event(ctx: &Context, wl: &Workload, step: &bluegreen::Step) {
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
    emit(ctx, wl, reason, "Rollout", note, warning).await;
}

/// Publishes an Event on the Workload; a failure to publish is logged, never fatal.
async fn event(ctx: &Context, wl: &Workload, reason: &str, action: &str, note: String) {
    emit(ctx, wl, reason, action, note, false).await;
}

pub(crate) async fn emit(
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
    if let Err(e) = ctx.recorder.publish(&ev, &wl.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
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
        },
        status: None,
    })
}
