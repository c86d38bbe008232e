//! Host lifecycle: notices hosts whose agent stopped renewing its Lease, as Kubernetes' node
//! lifecycle controller does for Nodes.
//!
//! A host whose Lease expired is marked Ready=False (reason `HostLeaseExpired`); the scheduler
//! already places nothing on it. When it stays silent for a further grace period, every
//! instance bound to it is marked `Lost` with its Ready condition False, and the Workload
//! reconciler replaces Lost instances on other hosts. The stale Instances keep the agent's
//! finalizer: when the agent comes back it tears their containers down (fencing) before it
//! reports Ready, and only then are they gone. If the Host object itself is deleted, nobody
//! will ever come back for them, and this controller removes their finalizer.
//!
//! These status writes use their own field manager ([`MANAGER_LIFECYCLE`]), so that they never
//! disturb the fields the scheduler applies as `bulkhead-controller`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bulkhead_crds::{
    FINALIZER_NODE_AGENT, Host, Instance, InstancePhase, SYSTEM_NAMESPACE,
    conditions::{self, status, types},
};
use futures::StreamExt;
use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{Context, Error};

/// Field manager of the lifecycle's status writes.
pub const MANAGER_LIFECYCLE: &str = "bulkhead-controller-lifecycle";
/// Reason of the Ready=False condition a silent host gets.
pub const REASON_LEASE_EXPIRED: &str = "HostLeaseExpired";
/// Reason on the instances of a lost host.
pub const REASON_HOST_LOST: &str = "HostLost";

/// How a host's Lease looks at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Renewed in time; it expires in this many seconds.
    Fresh {
        /// Seconds until the Lease expires.
        expires_in: i64,
    },
    /// Expired; its instances are lost in this many seconds.
    Expired {
        /// Seconds until the grace period ends.
        lost_in: i64,
    },
    /// Expired for longer than the grace period (or never renewed at all).
    Lost,
}

/// Assesses a Lease last renewed at `renewed` (Unix seconds) for `duration` seconds.
pub fn assess(renewed: Option<(i64, i64)>, now: i64, grace: i64) -> Health {
    let Some((renewed, duration)) = renewed else {
        return Health::Lost;
    };
    let expires = renewed + duration;
    if now < expires {
        Health::Fresh {
            expires_in: expires - now,
        }
    } else if now < expires + grace {
        Health::Expired {
            lost_in: expires + grace - now,
        }
    } else {
        Health::Lost
    }
}

/// What a lifecycle reconcile needs.
struct Lifecycle {
    ctx: Arc<Context>,
    grace: Duration,
    /// The hosts' Leases in `bulkhead-system`, from a watch (the controller may list and
    /// watch Leases there, but get only its own leader Lease).
    leases: crate::cache::Cached<Lease>,
}

/// Runs the host lifecycle controller until shutdown.
pub async fn run(ctx: Arc<Context>, grace: Duration) {
    let client = ctx.client.clone();
    let sweeper = tokio::spawn(release_orphaned(ctx.clone()));
    let (leases, writer) = reflector::store();
    let (told, leases_ready) = crate::cache::Ready::channel();
    let lease_events = reflector::reflector(
        writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .inspect(crate::cache::tell_on_init(told))
    .touched_objects();
    Controller::new(Api::<Host>::all(client), watcher::Config::default())
        .watches_stream(lease_events, |lease| {
            Some(ObjectRef::<Host>::new(&lease.name_any()))
        })
        .shutdown_on_signal()
        .run(
            reconcile,
            |host, e, _| {
                warn!(host = %host.name_any(), error = %e, "host lifecycle failed; retrying");
                Action::requeue(Duration::from_secs(5))
            },
            Arc::new(Lifecycle {
                ctx,
                grace,
                leases: crate::cache::Cached::new(leases, leases_ready),
            }),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
    sweeper.abort();
}

async fn reconcile(host: Arc<Host>, lc: Arc<Lifecycle>) -> Result<Action, Error> {
    let (ctx, grace) = (&lc.ctx, lc.grace);
    let name = host.name_any();
    // Never judge a host before every Lease has been seen: an empty store would make every
    // host look silent right after a controller start.
    let Ok(leases) = lc.leases.ready().await else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let lease = leases.get(&ObjectRef::new(&name).within(SYSTEM_NAMESPACE));
    // A host that has not renewed a Lease yet has one grace period from its registration.
    let registered = host
        .creation_timestamp()
        .map(|t| (t.0.as_second(), grace.as_secs() as i64));
    let renewed = lease
        .and_then(|l| l.spec.clone())
        .and_then(|s| {
            Some((
                s.renew_time?.0.as_second(),
                i64::from(s.lease_duration_seconds?),
            ))
        })
        .or(registered);
    let now = Timestamp::now();
    let health = assess(renewed, now.as_second(), grace.as_secs() as i64);
    ctx.metrics.reconciled("Host");
    match health {
        Health::Fresh { expires_in } => Ok(Action::requeue(Duration::from_secs(
            expires_in.clamp(1, 300) as u64 + 1,
        ))),
        Health::Expired { lost_in } => {
            mark_not_ready(ctx, &host, now).await?;
            Ok(Action::requeue(Duration::from_secs(lost_in.max(1) as u64)))
        }
        Health::Lost => {
            mark_not_ready(ctx, &host, now).await?;
            mark_instances_lost(ctx, &name, now).await?;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

async fn mark_not_ready(ctx: &Context, host: &Host, now: Timestamp) -> Result<(), Error> {
    let current = host
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if conditions::find(current, types::READY)
        .is_some_and(|c| c.status == status::FALSE && c.reason == REASON_LEASE_EXPIRED)
    {
        return Ok(());
    }
    let name = host.name_any();
    warn!(host = %name, "host stopped renewing its Lease; marking it not ready");
    let ready = conditions::new(
        types::READY,
        status::FALSE,
        REASON_LEASE_EXPIRED,
        "the node agent stopped renewing the host's Lease",
        None,
        Time(now),
    );
    let body = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Host", "status": {"conditions": [ready]}});
    apply_status(&Api::<Host>::all(ctx.client.clone()), &name, &body).await
}

/// Server-side applies a status body as the lifecycle field manager.
async fn apply_status<K>(api: &Api<K>, name: &str, body: &serde_json::Value) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER_LIFECYCLE).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

/// Marks every instance bound to `host` that could still be running as Lost.
async fn mark_instances_lost(ctx: &Context, host: &str, now: Timestamp) -> Result<(), Error> {
    let all: Api<Instance> = Api::all(ctx.client.clone());
    let bound = all
        .list(&ListParams::default().fields(&format!("spec.hostName={host}")))
        .await?
        .items;
    for inst in bound {
        let phase = inst.status.as_ref().and_then(|s| s.phase);
        if matches!(
            phase,
            Some(InstancePhase::Lost | InstancePhase::Failed | InstancePhase::Succeeded)
        ) || inst.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let ns = inst.namespace().unwrap_or_default();
        let name = inst.name_any();
        info!(instance = %name, namespace = %ns, host, "marking the instance of a lost host as Lost");
        let ready = conditions::new(
            types::READY,
            status::FALSE,
            REASON_HOST_LOST,
            format!("host {host} stopped renewing its Lease"),
            None,
            Time(now),
        );
        let body = json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Instance",
            "status": {"phase": "Lost", "reason": REASON_HOST_LOST,
                       "message": format!("host {host} is lost; the instance is replaced elsewhere"),
                       "conditions": [ready]},
        });
        apply_status(
            &Api::<Instance>::namespaced(ctx.client.clone(), &ns),
            &name,
            &body,
        )
        .await?;
    }
    Ok(())
}

/// Every minute: Instances being deleted whose Host no longer exists lose the agent's
/// finalizer, since no agent will ever remove it.
async fn release_orphaned(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = release_once(&ctx).await {
            warn!(error = %e, "releasing instances of deleted hosts failed");
        }
    }
}

async fn release_once(ctx: &Context) -> Result<(), Error> {
    // From the shared stores: a LIST of every Instance each minute held them all in memory
    // at once (90 MB at 10000) and cost the API server as much.
    let hosts: BTreeSet<String> = ctx
        .placement
        .hosts_ready()
        .await?
        .state()
        .iter()
        .map(|h| h.name_any())
        .collect();
    let instances = ctx.placement.instances_ready().await?.state();
    for (inst, host, keep) in orphaned(instances.iter().map(AsRef::as_ref), &hosts) {
        let ns = inst.namespace().unwrap_or_default();
        info!(instance = %inst.name_any(), namespace = %ns, host, "host is gone; releasing the instance");
        // The resourceVersion makes a stale store copy fail (409) rather than drop a
        // finalizer added since; the next pass reads again.
        let patch =
            json!({"metadata": {"finalizers": keep, "resourceVersion": inst.resource_version()}});
        Api::<Instance>::namespaced(ctx.client.clone(), &ns)
            .patch(
                &inst.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// Instances being deleted whose Host is gone and that still carry the agent's finalizer,
/// with their host and the finalizers to keep (pure).
fn orphaned<'a>(
    instances: impl Iterator<Item = &'a Instance>,
    hosts: &BTreeSet<String>,
) -> Vec<(&'a Instance, &'a str, Vec<&'a String>)> {
    instances
        .filter(|i| i.metadata.deletion_timestamp.is_some())
        .filter_map(|i| {
            let host = i.spec.host_name.as_deref()?;
            let finalizers = i.finalizers();
            if hosts.contains(host) || !finalizers.iter().any(|f| f == FINALIZER_NODE_AGENT) {
                return None;
            }
            let keep = finalizers
                .iter()
                .filter(|f| *f != FINALIZER_NODE_AGENT)
                .collect();
            Some((i, host, keep))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deleting_instances_of_gone_hosts_lose_only_the_agent_finalizer() {
        let inst = |name: &str, host: Option<&str>, deleting: bool, finalizers: &[&str]| {
            let mut i = Instance::new(
                name,
                bulkhead_crds::InstanceSpec {
                    host_name: host.map(String::from),
                    revision: "r".into(),
                    template: Default::default(),
                    isolation: Default::default(),
                    seccomp_profile_digest: None,
                    image_signature: None,
                },
            );
            i.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
            if deleting {
                i.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
            }
            i
        };
        let all = [
            inst(
                "gone",
                Some("h-gone"),
                true,
                &[FINALIZER_NODE_AGENT, "other/keep"],
            ),
            inst("alive-host", Some("h1"), true, &[FINALIZER_NODE_AGENT]),
            inst(
                "not-deleting",
                Some("h-gone"),
                false,
                &[FINALIZER_NODE_AGENT],
            ),
            inst("released", Some("h-gone"), true, &["other/keep"]),
            inst("unbound", None, true, &[FINALIZER_NODE_AGENT]),
        ];
        let hosts: BTreeSet<String> = ["h1".to_string()].into();
        let out = orphaned(all.iter(), &hosts);
        assert_eq!(
            out.len(),
            1,
            "{:?}",
            out.iter().map(|o| o.0.name_any()).collect::<Vec<_>>()
        );
        let (i, host, keep) = &out[0];
        assert_eq!((i.name_any().as_str(), *host), ("gone", "h-gone"));
        assert_eq!(keep, &vec![&"other/keep".to_string()]);
    }

    #[test]
    fn a_lease_is_fresh_then_expired_then_lost() {
        let lease = Some((1000, 10));
        assert_eq!(assess(lease, 1004, 20), Health::Fresh { expires_in: 6 });
        assert_eq!(assess(lease, 1010, 20), Health::Expired { lost_in: 20 });
        assert_eq!(assess(lease, 1029, 20), Health::Expired { lost_in: 1 });
        assert_eq!(assess(lease, 1030, 20), Health::Lost);
        assert_eq!(assess(None, 1030, 20), Health::Lost, "never renewed");
        assert_eq!(
            assess(lease, 1010, 0),
            Health::Lost,
            "no grace: lost as soon as it expires"
        );
    }
}
