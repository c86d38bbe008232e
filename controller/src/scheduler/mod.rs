//! The scheduler: binds each unscheduled Instance to a Host.
//!
//! Hosts, their Leases and every Instance come from the shared stores; decisions go through
//! the shared placement view (`crate::placement`), which the Workload reconciler uses too
//! when it creates instances already bound. One Instance is scheduled at a time.

pub mod filter;

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{
    Host, Instance, LABEL_HOST, LABEL_WORKLOAD, MANAGER_CONTROLLER,
    conditions::{self, status, types},
};
use filter::Requirements;
use futures::StreamExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{Context, Error};

/// Runs the scheduler until shutdown. It binds only the leftovers: instances the Workload
/// reconciler could not place when it created them (and Instances created unbound by hand).
/// Each Instance change wakes its own Instance; a change of a host that matters for
/// scheduling (readiness, cordon, drain, capacity, features, floor) retries every one; Lease
/// renewals and other Host status writes retry nothing.
pub async fn run(ctx: Arc<Context>, instances: crate::cache::InstanceEvents) {
    let client = ctx.client.clone();
    let host_changes = watcher(Api::<Host>::all(client), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(schedulability, Default::default())
        .map(|_| ());
    Controller::for_shared_stream(instances, ctx.placement.instances.clone())
        .with_config(Config::default().concurrency(1))
        .reconcile_all_on(host_changes)
        .shutdown_on_signal()
        .run(
            schedule,
            |_, e: &Error, _| {
                warn!(error = %e, "scheduling failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A hash of what the scheduler reads of a Host, so that only those changes retry.
fn schedulability(host: &Host) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let status = host.status.clone().unwrap_or_default();
    let seen = json!([
        conditions::is_true(&status.conditions, types::READY),
        host.spec.unschedulable,
        crate::workload::reconcile::is_draining(host),
        status.capacity,
        status.features,
        status.isolation_floor,
    ]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seen.to_string().hash(&mut h);
    Some(h.finish())
}

async fn schedule(instance: Arc<Instance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    let waiting =
        instance.spec.host_name.is_none() && instance.metadata.deletion_timestamp.is_none();
    ctx.metrics.unscheduled(&key, waiting);
    if instance.spec.host_name.is_some() || instance.metadata.deletion_timestamp.is_some() {
        ctx.placement.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = instance.name_any();
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let req = Requirements::of(
        &instance.spec,
        instance.labels().get(LABEL_WORKLOAD).cloned(),
    );
    let decision = ctx
        .placement
        .place(&[(key.clone(), req)])
        .pop()
        .unwrap_or_else(|| Err("no decision".to_string()));
    let (holds, reason, message) = match &decision {
        Ok(host) => (true, "Bound", format!("bound to host {host}")),
        Err(why) => (false, "Unschedulable", why.clone()),
    };
    if let Ok(host) = &decision {
        let bind = json!({"metadata": {"labels": {LABEL_HOST: host}}, "spec": {"hostName": host}});
        let pp = PatchParams {
            field_manager: Some(MANAGER_CONTROLLER.into()),
            ..Default::default()
        };
        if let Err(e) = api.patch(&name, &pp, &Patch::Merge(&bind)).await {
            ctx.placement.forget(&key);
            return Err(e.into());
        }
        info!(instance = %name, namespace = %ns, host = %host, "bound instance");
        ctx.metrics.unscheduled(&key, false);
    }
    // The Scheduled condition is the controller's one field of Instance.status.
    let previous = instance
        .status
        .as_ref()
        .and_then(|st| conditions::find(&st.conditions, types::SCHEDULED).cloned());
    let mut conds = previous.into_iter().collect::<Vec<_>>();
    let changed = conditions::merge(
        &mut conds,
        conditions::new(
            types::SCHEDULED,
            if holds { status::TRUE } else { status::FALSE },
            reason,
            message,
            instance.metadata.generation,
            Time(now),
        ),
    );
    if changed {
        let body = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Instance", "status": {"conditions": conds}});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    ctx.metrics.reconciled("Instance");
    Ok(if holds {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(10))
    })
}
