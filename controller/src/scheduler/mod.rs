//! The scheduler: binds each unscheduled Instance to a Host.
//!
//! Hosts, their Leases and every Instance come from reflector stores. Bindings made but not
//! yet seen in the store are "assumed", as kube-scheduler does, so that back-to-back
//! decisions account for each other. One Instance is scheduled at a time.

pub mod filter;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use bulkhead_crds::{
    Host, Instance, LABEL_HOST, LABEL_WORKLOAD, MANAGER_CONTROLLER, SYSTEM_NAMESPACE,
    conditions::{self, status, types},
};
use filter::{HostView, Requirements, choose};
use futures::StreamExt;
use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config},
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{Context, Error};

/// The scheduler's view of the cluster.
#[allow(missing_debug_implementations)] // reflector stores are not Debug
pub struct Scheduler {
    ctx: Arc<Context>,
    hosts: Store<Host>,
    leases: Store<Lease>,
    instances: Store<Instance>,
    /// Instance UID → host, for bindings the store has not shown yet.
    assumed: Mutex<HashMap<String, String>>,
}

/// Runs the scheduler until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (hosts, host_writer) = reflector::store();
    let host_events = reflector::reflector(
        host_writer,
        watcher(Api::<Host>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let (leases, lease_writer) = reflector::store();
    let lease_events = reflector::reflector(
        lease_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    // Host and Lease changes retry every unscheduled Instance.
    let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
    let forward = |events: futures::stream::BoxStream<'static, ()>,
                   tx: futures::channel::mpsc::UnboundedSender<()>| {
        tokio::spawn(events.for_each(move |()| {
            let _ = tx.unbounded_send(());
            futures::future::ready(())
        }))
    };
    forward(host_events.boxed(), tx.clone());
    forward(lease_events.boxed(), tx);

    let controller = Controller::new(Api::<Instance>::all(client), watcher::Config::default())
        .with_config(Config::default().concurrency(1));
    let scheduler = Arc::new(Scheduler {
        ctx,
        hosts,
        leases,
        instances: controller.store(),
        assumed: Mutex::default(),
    });
    controller
        .reconcile_all_on(rx.ready_chunks(64).map(|_| ()))
        .shutdown_on_signal()
        .run(
            schedule,
            |_, e: &Error, _| {
                warn!(error = %e, "scheduling failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            scheduler,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

impl Scheduler {
    fn host_ready(&self, host: &Host, now: Timestamp) -> bool {
        let agent_ready = host
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, types::READY));
        let lease_fresh = self
            .leases
            .get(&reflector::ObjectRef::new(&host.name_any()).within(SYSTEM_NAMESPACE))
            .and_then(|l| l.spec.clone())
            .and_then(|s| Some((s.renew_time?.0, s.lease_duration_seconds?)))
            .is_some_and(|(renewed, secs)| renewed.as_second() + i64::from(secs) > now.as_second());
        agent_ready && lease_fresh
    }

    fn views(&self, now: Timestamp) -> Vec<HostView> {
        let assumed = self.assumed.lock().map(|a| a.clone()).unwrap_or_default();
        let mut views: BTreeMap<String, HostView> = BTreeMap::new();
        for host in self.hosts.state() {
            let status = host.status.clone().unwrap_or_default();
            views.insert(
                host.name_any(),
                HostView {
                    name: host.name_any(),
                    ready: self.host_ready(&host, now),
                    // A draining host takes nothing new, cordoned or not.
                    unschedulable: host.spec.unschedulable
                        || crate::workload::reconcile::is_draining(&host),
                    features: status.features.unwrap_or_default(),
                    isolation_floor: status.isolation_floor.unwrap_or_default(),
                    capacity: status.capacity.unwrap_or_default(),
                    used_cpu_millis: 0,
                    used_memory_bytes: 0,
                    instances: 0,
                    per_workload: BTreeMap::new(),
                },
            );
        }
        for inst in self.instances.state() {
            let uid = inst.uid().unwrap_or_default();
            let host = inst
                .spec
                .host_name
                .clone()
                .or_else(|| assumed.get(&uid).cloned());
            let Some(view) = host.and_then(|h| views.get_mut(&h)) else {
                continue;
            };
            view.reserve(&Requirements::of(
                &inst.spec,
                inst.labels().get(LABEL_WORKLOAD).cloned(),
            ));
        }
        views.into_values().collect()
    }
}

async fn schedule(instance: Arc<Instance>, s: Arc<Scheduler>) -> Result<Action, Error> {
    let key = format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    let waiting =
        instance.spec.host_name.is_none() && instance.metadata.deletion_timestamp.is_none();
    s.ctx.metrics.unscheduled(&key, waiting);
    if instance.spec.host_name.is_some() || instance.metadata.deletion_timestamp.is_some() {
        if let (Some(uid), Ok(mut a)) = (instance.uid(), s.assumed.lock()) {
            a.remove(&uid);
        }
        return Ok(Action::await_change());
    }
    let ns = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = instance.name_any();
    let uid = instance
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let api: Api<Instance> = Api::namespaced(s.ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let req = Requirements::of(
        &instance.spec,
        instance.labels().get(LABEL_WORKLOAD).cloned(),
    );
    let decision = choose(&req, &s.views(now));
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
        api.patch(&name, &pp, &Patch::Merge(&bind)).await?;
        if let Ok(mut a) = s.assumed.lock() {
            a.insert(uid, host.clone());
        }
        info!(instance = %name, namespace = %ns, host = %host, "bound instance");
        s.ctx.metrics.unscheduled(&key, false);
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
    s.ctx.metrics.reconciled("Instance");
    Ok(if holds {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(10))
    })
}
