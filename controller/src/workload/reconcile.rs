//! The Workload reconciler: observe → plan → apply → report. Only this file and the status
//! write touch the API.

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{
    Instance, InstanceSpec, LABEL_REVISION, LABEL_WORKLOAD, MANAGER_CONTROLLER, Workload,
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
use tracing::info;

use super::{
    history,
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

/// The rollout limits of a strategy. BlueGreen runs, until its own controller lands, as a
/// rolling update that starts every new instance before retiring any old one.
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
    let now = Timestamp::now();
    let observed: Vec<_> = owned
        .iter()
        .map(|i| observe(i, wl.spec.min_ready_seconds, now))
        .collect();
    let desired = desired(&wl, rev.clone());

    // Plan.
    let actions = plan::plan(&name, &desired, &observed);
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
    for action in &actions {
        match action {
            plan::Action::Create(instance_name) => {
                let mut instance = new_instance(&wl, instance_name, &rev)?;
                instance.spec.seccomp_profile_digest = profile.clone();
                match instances
                    .create(
                        &PostParams {
                            field_manager: Some(MANAGER_CONTROLLER.into()),
                            ..Default::default()
                        },
                        &instance,
                    )
                    .await
                {
                    Ok(_) => {
                        info!(workload = %name, namespace = %ns, instance = %instance_name, revision = %rev, "created instance");
                        let note = format!("created instance {instance_name} of revision {rev}");
                        event(&ctx, &wl, "Created", "CreateInstance", note).await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
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
                        event(&ctx, &wl, "Deleted", "DeleteInstance", note).await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    // Report.
    let previous = wl.status.clone().unwrap_or_default();
    let next = status::compute(
        &previous,
        wl.metadata.generation,
        &desired,
        &observed,
        wl.spec.progress_deadline_seconds,
        Time(now),
    );
    let reason_of = |s: &bulkhead_crds::WorkloadStatus| {
        bulkhead_crds::conditions::find(
            &s.conditions,
            bulkhead_crds::conditions::types::PROGRESSING,
        )
        .map(|c| c.reason.clone())
    };
    if reason_of(&next) != reason_of(&previous) {
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

    // Wake up when a ready instance becomes available (minReadySeconds) or the progress
    // deadline passes, else on changes.
    let deadline_in = next
        .last_progress_time
        .as_ref()
        .filter(|_| next.phase == Some(bulkhead_crds::workload::WorkloadPhase::Progressing))
        .map(|t| {
            t.0.as_second() + i64::from(wl.spec.progress_deadline_seconds) + 1 - now.as_second()
        });
    let wake = [
        next_available_in(&owned, wl.spec.min_ready_seconds, now),
        deadline_in,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(300);
    Ok(Action::requeue(Duration::from_secs(
        wake.clamp(1, 300) as u64
    )))
}

/// Publishes an Event on the Workload; a failure to publish is logged, never fatal.
async fn event(ctx: &Context, wl: &Workload, reason: &str, action: &str, note: String) {
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
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
