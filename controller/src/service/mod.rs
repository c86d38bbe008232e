//! The WorkloadService reconciler: keeps a native selectorless Service and its EndpointSlice
//! pointing at the ready instances of the Workload's active revision (and `<name>-preview` at
//! the preview revision), and reports them in the WorkloadService's status.
//!
//! It runs on every change of the WorkloadService, of its Workload (a promotion changes
//! `status.activeRevision`) and of the Workload's Instances (readiness), so an instance that
//! stops being Ready leaves the endpoints as soon as its agent reports it.

pub mod ownership;
pub mod publish;
pub mod switch;

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{
    LABEL_WORKLOAD, MANAGER_CONTROLLER, Workload, WorkloadService, WorkloadServiceStatus,
    conditions::{self, status, types},
};
use futures::StreamExt;
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{Context, Error};
use ownership::{Kind, Role, Slot};
use publish::{MANAGED_BY, PREVIEW_SUFFIX};

/// Runs the WorkloadService controller until shutdown, on the shared WorkloadService
/// reflector (`services`, `changes`). `switched` names the Workloads whose reconciler just
/// changed the active or preview revision: their Services follow at once, without waiting
/// for the Workload's watch event.
pub async fn run(
    ctx: Arc<Context>,
    services: Store<WorkloadService>,
    changes: crate::cache::Events<WorkloadService>,
    instances: crate::cache::InstanceEvents,
    switched: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Workload>>,
) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let controller = Controller::for_shared_stream(changes, services);
    let by_workload = controller.store();
    let by_instance = controller.store();
    let by_switch = controller.store();
    let switched = switched.flat_map(move |wl| {
        futures::stream::iter(services_of(&by_switch, wl.namespace.clone(), &wl.name))
    });
    controller
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<EndpointSlice>::all(client.clone()), managed)
        .watches_stream(
            published_changes(Api::<Workload>::all(client.clone())),
            move |wl| services_of(&by_workload, wl.namespace(), &wl.name_any()),
        )
        .watches_shared_stream(instances, move |inst| match inst.labels().get(LABEL_WORKLOAD) {
                Some(w) => services_of(&by_instance, inst.namespace(), w),
                None => Vec::new(),
            },
        )
        .reconcile_on(switched)
        .shutdown_on_signal()
        .run(
            reconcile,
            |svc, e, _| {
                warn!(service = %svc.name_any(), error = %e, "publishing a WorkloadService failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The Workload changes a WorkloadService follows: the revisions it publishes, its deletion
/// and its coming and going (not its every status write: a rollout writes many, and each
/// reconcile here reads five objects while the traffic switch waits for its lock).
fn published_changes(
    api: Api<Workload>,
) -> impl futures::Stream<Item = Result<Workload, watcher::Error>> + Send + 'static {
    let mut seen = crate::cache::Seen::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let passed = match event {
                Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) => {
                    seen.changed(&w, published(&w)).then_some(Ok(w))
                }
                Ok(watcher::Event::Delete(w)) => {
                    seen.forget(&w);
                    Some(Ok(w))
                }
                Ok(watcher::Event::Init) => {
                    seen.relisting();
                    None
                }
                Ok(watcher::Event::InitDone) => {
                    seen.relisted();
                    None
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(passed)
        })
}

/// What a WorkloadService reads of its Workload.
fn published(w: &Workload) -> u64 {
    let s = w.status.as_ref();
    crate::cache::hash_of(&(
        s.map(|s| (&s.active_revision, &s.current_revision, &s.preview_revision)),
        w.metadata.deletion_timestamp.is_some(),
    ))
}

fn services_of(
    store: &Store<WorkloadService>,
    ns: Option<String>,
    workload: &str,
) -> Vec<ObjectRef<WorkloadService>> {
    store
        .state()
        .iter()
        .filter(|s| s.namespace() == ns && s.spec.workload_name == workload)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

async fn reconcile(svc: Arc<WorkloadService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&svc, &ctx).await;
    ctx.metrics
        .observe("WorkloadService", result.is_ok(), started.elapsed());
    result
}

async fn reconcile_inner(svc: &WorkloadService, ctx: &Context) -> Result<Action, Error> {
    let ns = svc
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = svc.name_any();
    if svc.metadata.deletion_timestamp.is_some() {
        // The Service and slices are owned by it; the garbage collector removes them.
        ctx.switchboard.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    // 1. Switches before the Workload is read: the active slice is applied only if none
    //    follows (see `switch`).
    let entry = ctx.switchboard.entry(&ns, &name);
    let switches = entry.lock().await.switches;
    let client = ctx.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let workloads = Api::<Workload>::namespaced(client.clone(), &ns);
    let uid = svc.uid().unwrap_or_default();
    debug!(service = %name, namespace = %ns, "reconciling");

    // 2. One round trip for the five reads (the Workload and the four names), not five.
    let (workload, (slots, held)) = futures::try_join!(
        async { Ok::<_, Error>(workloads.get_opt(&svc.spec.workload_name).await?) },
        observe_names(&services, &slices, &name, &uid),
    )?;
    let revisions = revisions(ctx, &ns, svc, workload.as_ref()).await?;
    debug!(service = %name, namespace = %ns, active = ?revisions.active, "read the Workload and the four names");

    // 3. The plan for the four names, applied unless a switch came meanwhile.
    let plan = ownership::plan(&ns, svc.spec.preview, &slots);
    let published = Published {
        active: revisions.active.as_deref(),
        preview: revisions.preview.as_deref(),
        ready: &revisions.ready,
        preview_ready: &revisions.preview_ready,
    };
    let lane = (entry.as_ref(), switches);
    let superseded = execute(svc, (&services, &slices), &plan, &published, &held, lane).await?;
    entry.lock().await.known = switch::known_active_slice(&plan, &slots);
    if superseded {
        debug!(service = %name, namespace = %ns, "a switch came after the Workload was read; again");
        return Ok(Action::requeue(Duration::ZERO));
    }
    debug!(service = %name, namespace = %ns, active = ?revisions.active, "applied");
    if !plan.conflicts.is_empty() {
        warn!(service = %name, namespace = %ns, conflicts = ?plan.conflicts, "names taken by objects this WorkloadService does not own");
    }

    // 4. The status.
    let wl = format!("{ns}/{}", svc.spec.workload_name);
    let (ok, reason, message) = condition(
        &plan.conflicts,
        (&wl, workload.is_some()),
        revisions.active.as_deref(),
        revisions.ready.len(),
    );
    let shown_preview = |v: Vec<String>| if svc.spec.preview { v } else { Vec::new() };
    report(
        svc,
        ctx,
        &ns,
        revisions.active.clone(),
        revisions.preview.clone().filter(|_| svc.spec.preview),
        &publish::endpoint_strings(&revisions.ready, &svc.spec.ports),
        &shown_preview(publish::endpoint_strings(
            &revisions.preview_ready,
            &svc.spec.ports,
        )),
        ok,
        reason,
        message,
    )
    .await?;
    // A conflict clears when the other object goes; its deletion is not watched.
    Ok(Action::requeue(Duration::from_secs(
        if plan.conflicts.is_empty() { 300 } else { 30 },
    )))
}

/// The Workload's active and preview revisions and the ready instances of each.
struct Revisions {
    active: Option<String>,
    preview: Option<String>,
    ready: Vec<publish::Ready>,
    preview_ready: Vec<publish::Ready>,
}

/// Reads `workload`'s revisions from its status (the active one, else the current one) and
/// their ready instances from the shared store; none without a Workload.
async fn revisions(
    ctx: &Context,
    ns: &str,
    svc: &WorkloadService,
    workload: Option<&Workload>,
) -> Result<Revisions, Error> {
    let instances = match workload {
        Some(_) => {
            ctx.placement
                .workload_instances(ns, &svc.spec.workload_name)
                .await?
        }
        None => Vec::new(),
    };
    let status = workload.and_then(|w| w.status.clone()).unwrap_or_default();
    let active = status.active_revision.or(status.current_revision);
    let preview = status.preview_revision;
    let of = |revision: Option<&str>| {
        publish::ready_instances(instances.iter().map(AsRef::as_ref), revision)
    };
    Ok(Revisions {
        ready: of(active.as_deref()),
        preview_ready: of(preview.as_deref()),
        active,
        preview,
    })
}

/// The `EndpointsPublished` condition: (status, reason, message). A name conflict comes
/// first, then a missing Workload (`workload`: its namespace/name and whether it exists),
/// then no active revision, then no ready instance of it.
fn condition(
    conflicts: &[String],
    (workload, exists): (&str, bool),
    active: Option<&str>,
    ready: usize,
) -> (bool, &'static str, String) {
    match (exists, active) {
        _ if !conflicts.is_empty() => (false, ownership::SERVICE_CONFLICT, conflicts.join("; ")),
        (false, _) => (
            false,
            "WorkloadNotFound",
            format!("Workload {workload} does not exist"),
        ),
        (true, None) => (
            false,
            "NoActiveRevision",
            "the Workload has no active revision yet".into(),
        ),
        (true, Some(rev)) if ready == 0 => (
            false,
            "NoReadyEndpoints",
            format!("no instance of active revision {rev} is ready"),
        ),
        (true, Some(rev)) => (
            true,
            "EndpointsPublished",
            format!("{ready} ready instances of revision {rev}"),
        ),
    }
}

/// The objects the four names hold, as JSON, by kind and name.
type Held = std::collections::BTreeMap<(Kind, String), serde_json::Value>;

/// What the four names hold now: who claims each, and the objects.
async fn observe_names(
    services: &Api<Service>,
    slices: &Api<EndpointSlice>,
    name: &str,
    owner_uid: &str,
) -> Result<(Vec<Slot>, Held), Error> {
    let preview_name = format!("{name}{PREVIEW_SUFFIX}");
    // One round trip for the four reads, not four.
    let (active_service, active_slice, preview_service, preview_slice) = futures::try_join!(
        services.get_opt(name),
        slices.get_opt(name),
        services.get_opt(&preview_name),
        slices.get_opt(&preview_name),
    )?;
    let mut slots = Vec::with_capacity(4);
    let mut held = Held::new();
    for (role, object, service, slice) in [
        (Role::Active, name, active_service, active_slice),
        (
            Role::Preview,
            preview_name.as_str(),
            preview_service,
            preview_slice,
        ),
    ] {
        for (kind, json) in [
            (Kind::Service, service.as_ref().map(serde_json::to_value)),
            (
                Kind::EndpointSlice,
                slice.as_ref().map(serde_json::to_value),
            ),
        ] {
            if let Some(Ok(json)) = json {
                held.insert((kind, object.to_owned()), json);
            }
        }
        for (kind, meta) in [
            (Kind::Service, service.as_ref().map(|s| &s.metadata)),
            (Kind::EndpointSlice, slice.as_ref().map(|s| &s.metadata)),
        ] {
            slots.push(Slot {
                kind,
                role,
                name: object.to_owned(),
                claim: ownership::claim(meta, owner_uid),
            });
        }
    }
    Ok((slots, held))
}

/// The revisions and ready instances the objects publish.
struct Published<'a> {
    active: Option<&'a str>,
    preview: Option<&'a str>,
    ready: &'a [publish::Ready],
    preview_ready: &'a [publish::Ready],
}

/// Applies and deletes what the plan says; an apply that would change nothing in what was
/// read is skipped, and a delete names the UID it checked, so an object that someone
/// replaced in between is left alone. The active slice is written under the lane's lock,
/// and not at all when a switch came after `switches` (then returns true).
async fn execute(
    svc: &WorkloadService,
    (services, slices): (&Api<Service>, &Api<EndpointSlice>),
    plan: &ownership::Plan,
    published: &Published<'_>,
    held: &Held,
    (lane, switches): (&tokio::sync::Mutex<switch::Lane>, u64),
) -> Result<bool, Error> {
    let superseded = std::sync::atomic::AtomicBool::new(false);
    let superseded_ref = &superseded;
    let pp = PatchParams::apply(MANAGER_CONTROLLER).force();
    // The applies touch four different objects: all in one round trip (the active slice is
    // the traffic switch, and it no longer waits behind the Service applies).
    let applies = plan.apply.iter().map(|(kind, role, object)| {
        let (revision, ready) = match role {
            Role::Active => (published.active, published.ready),
            Role::Preview => (published.preview, published.preview_ready),
        };
        let pp = &pp;
        let body = match kind {
            Kind::Service => publish::service(svc, object, role.as_str()),
            Kind::EndpointSlice => {
                publish::endpoint_slice(svc, object, role.as_str(), revision, ready)
            }
        };
        let unchanged = held
            .get(&(*kind, object.clone()))
            .is_some_and(|o| publish::already_holds(o, &body));
        async move {
            match kind {
                _ if unchanged => {}
                Kind::Service => {
                    services.patch(object, pp, &Patch::Apply(&body)).await?;
                }
                Kind::EndpointSlice if *role == Role::Active => {
                    let lane = lane.lock().await;
                    if lane.switches != switches {
                        superseded_ref.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Ok(());
                    }
                    slices.patch(object, pp, &Patch::Apply(&body)).await?;
                    drop(lane);
                }
                Kind::EndpointSlice => {
                    slices.patch(object, pp, &Patch::Apply(&body)).await?;
                }
            }
            Ok::<_, Error>(())
        }
    });
    futures::future::try_join_all(applies).await?;
    for (kind, object, uid) in &plan.delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let result = match kind {
            Kind::Service => services.delete(object, &dp).await.map(|_| ()),
            Kind::EndpointSlice => slices.delete(object, &dp).await.map(|_| ()),
        };
        match result {
            Ok(()) => {}
            // Gone, or no longer the object we own.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(superseded.into_inner())
}

/// Writes the status when it changed.
#[allow(clippy::too_many_arguments)]
async fn report(
    svc: &WorkloadService,
    ctx: &Context,
    ns: &str,
    active: Option<String>,
    preview: Option<String>,
    endpoints: &[String],
    preview_endpoints: &[String],
    ok: bool,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let previous = svc.status.clone().unwrap_or_default();
    let mut next = WorkloadServiceStatus {
        observed_generation: svc.metadata.generation,
        active_revision: active,
        preview_revision: preview,
        endpoints: endpoints.to_vec(),
        preview_endpoints: preview_endpoints.to_vec(),
        conditions: previous.conditions.clone(),
    };
    conditions::merge(
        &mut next.conditions,
        conditions::new(
            types::READY,
            if ok { status::TRUE } else { status::FALSE },
            reason,
            message,
            svc.metadata.generation,
            Time(Timestamp::now()),
        ),
    );
    if next == previous {
        return Ok(());
    }
    if next.active_revision != previous.active_revision {
        info!(service = %svc.name_any(), namespace = %ns, from = ?previous.active_revision, to = ?next.active_revision, "service switched revision");
    }
    let body =
        json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "WorkloadService", "status": next});
    Api::<WorkloadService>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &svc.name_any(),
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name conflict outranks everything; then a missing Workload, no active revision, no
    /// ready instance; only then are endpoints published.
    #[test]
    fn the_published_condition_names_the_first_thing_missing() {
        let conflict = vec!["Service web is not owned by this WorkloadService".to_string()];
        let wl = ("ns/web", true);
        let reason =
            |c: &[String], wl: (&str, bool), active, ready| condition(c, wl, active, ready).1;
        assert_eq!(
            reason(&conflict, wl, Some("r1"), 2),
            ownership::SERVICE_CONFLICT
        );
        assert_eq!(
            reason(&[], ("ns/web", false), Some("r1"), 2),
            "WorkloadNotFound"
        );
        assert_eq!(reason(&[], wl, None, 2), "NoActiveRevision");
        assert_eq!(reason(&[], wl, Some("r1"), 0), "NoReadyEndpoints");
        let (ok, reason, message) = condition(&[], wl, Some("r1"), 2);
        assert!(ok);
        assert_eq!(
            (reason, message.as_str()),
            ("EndpointsPublished", "2 ready instances of revision r1")
        );
        let (ok, _, message) = condition(&[], ("ns/web", false), None, 0);
        assert!(!ok);
        assert_eq!(message, "Workload ns/web does not exist");
    }
}
