//! The controller's shared caches: one Instance watch for every controller, pruned before it
//! is stored, and one watch of the hosts' Leases.
//!
//! The Workload reconciler, the scheduler and the WorkloadService reconciler each subscribe
//! to the one Instance reflector instead of keeping their own cache, and read its store
//! instead of listing.

use std::sync::Arc;

use bulkhead_crds::{Instance, SYSTEM_NAMESPACE};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};

/// Events a subscriber may lag behind the reflector before it waits (backpressure).
const SUBSCRIBER_BUFFER: usize = 4096;

/// The annotation `kubectl apply` leaves: a second copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no decision reads before an Instance is stored: its managedFields (often the
/// largest part of the object) and the last-applied copy.
pub fn prune(instance: &mut Instance) {
    instance.metadata.managed_fields = None;
    if let Some(a) = instance.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A stream of changed Instances for one subscriber.
pub type InstanceEvents = std::pin::Pin<Box<dyn Stream<Item = Arc<Instance>> + Send>>;

/// The shared stores and their subscriptions.
#[allow(missing_debug_implementations)] // reflector stores are not Debug
pub struct Caches {
    /// Every Instance, pruned.
    pub instances: Store<Instance>,
    /// The hosts' Leases.
    pub leases: Store<Lease>,
    /// Instance changes for the Workload controller.
    pub for_workloads: InstanceEvents,
    /// Instance changes for the scheduler.
    pub for_scheduler: InstanceEvents,
    /// Instance changes for the WorkloadService controller.
    pub for_services: InstanceEvents,
}

/// Starts the shared watches (on the current runtime) and returns their stores.
pub fn start(client: &Client) -> Caches {
    let (instances, writer) = reflector::store_shared::<Instance>(SUBSCRIBER_BUFFER);
    let subscribe = || -> InstanceEvents {
        match writer.subscribe() {
            Some(s) => s.boxed(),
            None => futures::stream::pending().boxed(),
        }
    };
    let (for_workloads, for_scheduler, for_services) = (subscribe(), subscribe(), subscribe());
    let watch = watcher(
        Api::<Instance>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(prune)
    .default_backoff()
    .reflect_shared(writer)
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(watch);
    let (leases, lease_writer) = reflector::store();
    let lease_watch = reflector::reflector(
        lease_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(lease_watch);
    Caches {
        instances,
        leases,
        for_workloads,
        for_scheduler,
        for_services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn pruning_drops_managed_fields_and_the_last_applied_copy() {
        let spec = bulkhead_crds::InstanceSpec {
            host_name: None,
            revision: "r0".into(),
            template: Default::default(),
            isolation: Default::default(),
            seccomp_profile_digest: None,
            image_signature: None,
        };
        let mut i = Instance::new("a", spec);
        i.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        i.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("keep".to_string(), "me".to_string()),
            ]
            .into(),
        );
        i.spec.revision = "r1".into();
        prune(&mut i);
        assert_eq!(i.metadata.managed_fields, None);
        let annotations = i.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
        assert_eq!(i.spec.revision, "r1");
    }
}
