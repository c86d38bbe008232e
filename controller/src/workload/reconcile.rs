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
    observe::{next_available_in, observe},
    plan::{self, Desired, IntOrPercent},
    revision::revision,
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

/// Reconciles one Workload.
pub async fn reconcile(wl: Arc<Workload>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = wl
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = wl.name_any();
    let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let workloads: Api<Workload> = Api::namespaced(ctx.client.clone(), &ns);

    // Observe.
    let rev = revision(&wl.spec.template, &wl.spec.isolation);
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

    // Apply.
    for action in &actions {
        match action {
            plan::Action::Create(instance_name) => {
                let instance = new_instance(&wl, instance_name, &rev)?;
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
                        info!(workload = %name, namespace = %ns, instance = %instance_name, revision = %rev, "created instance")
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
                        info!(workload = %name, namespace = %ns, instance = %instance_name, "deleted instance")
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
        Time(now),
    );
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
    ctx.metrics.reconciled("Workload");

    // Wake up when a ready instance becomes available (minReadySeconds), else on changes.
    Ok(
        match next_available_in(&owned, wl.spec.min_ready_seconds, now) {
            Some(secs) => Action::requeue(Duration::from_secs(secs.max(1) as u64)),
            None => Action::requeue(Duration::from_secs(300)),
        },
    )
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
        },
        status: None,
    })
}
