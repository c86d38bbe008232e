//! The controller's shared caches: one Instance watch for every controller, pruned before it
//! is stored, one watch of the WorkloadServices, and one of the hosts' Leases.
//!
//! The Workload reconciler, the scheduler and the WorkloadService reconciler each subscribe
//! to the one Instance reflector instead of keeping their own cache, and read its store
//! instead of listing. The WorkloadService reconciler runs on the WorkloadService
//! reflector; the Workload reconciler reads its store (which revision each Service
//! publishes) and is woken when a Service's status changes.

use std::sync::Arc;

use bulkhead_crds::{Instance, SYSTEM_NAMESPACE, WorkloadService};
pub use bulkhead_telemetry::ready::{Readiness, Ready};
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

/// Tells `readiness` when a reflector's stream passes its first complete list (`InitDone`):
/// the store is filled. Put after the reflector, so the store has applied the event.
pub fn tell_on_init<K>(
    readiness: Readiness,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            readiness.ready();
        }
    }
}

/// A shared store with its readiness, for many waiters at once.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // reflector stores are not Debug
pub struct Cached<K>
where
    K: kube::Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    ready: Ready,
}

impl<K> Cached<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// `store`, ready when `ready` says so.
    pub fn new(store: Store<K>, ready: Ready) -> Self {
        Self { store, ready }
    }

    /// The store, ready or not (for a Controller, which waits on its store itself).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The store once it holds its first list.
    pub async fn ready(&self) -> Result<&Store<K>, bulkhead_telemetry::ready::NeverReady> {
        self.ready.wait().await?;
        Ok(&self.store)
    }
}

/// Events a subscriber may lag behind the reflector before it waits (backpressure).
const SUBSCRIBER_BUFFER: usize = 4096;

/// The annotation `kubectl apply` leaves: a second copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no decision of the controller reads before an Instance is stored: its
/// managedFields (often the largest part of the object), the last-applied copy, the
/// template but for its resources (the scheduler's requests; image, command, environment and
/// probes are the agent's business, and a tenant may make them large), and the agent's
/// report of the process (the isolation read-back, container, digest, start and last exit).
/// The controller's own Instance writes are server-side applies of its own fields, built
/// from scratch, so nothing pruned here is ever written back.
pub fn prune(instance: &mut Instance) {
    instance.metadata.managed_fields = None;
    if let Some(a) = instance.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    let template = &mut instance.spec.template;
    *template = bulkhead_crds::template::InstanceTemplate {
        resources: std::mem::take(&mut template.resources),
        ..Default::default()
    };
    if let Some(s) = instance.status.as_mut() {
        s.isolation = None;
        s.container_id = None;
        s.image_digest = None;
        s.started_at = None;
        s.last_exit = None;
    }
}

/// A stream of changed objects for one subscriber.
pub type Events<K> = std::pin::Pin<Box<dyn Stream<Item = Arc<K>> + Send>>;
/// A stream of changed Instances for one subscriber.
pub type InstanceEvents = Events<Instance>;

/// A subscription to a shared reflector (a stream that never yields if it cannot subscribe).
fn subscribe<K>(writer: &reflector::store::Writer<K>) -> Events<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    match writer.subscribe() {
        Some(s) => s.boxed(),
        None => futures::stream::pending().boxed(),
    }
}

/// Passes an Instance change on to one subscriber only when what the store keeps of it differs
/// from what this subscriber last saw: the agent's writes of what pruning drops (its report
/// of the walls, the isolation read-back) and a relist of unchanged objects wake no
/// reconcile. On a busy host the walls report of every neighbour of a new instance is one
/// status write each; each used to run the Workload reconciler and the WorkloadService
/// reconciler (five reads) while a rollout's traffic switch waited behind them.
pub fn changed_only(events: InstanceEvents, store: Store<Instance>) -> InstanceEvents {
    changed_by(events, store, content_hash)
}

/// Passes a change of an object on only when `hash` of it differs from the last one this
/// subscriber saw of the same object (name and UID).
///
/// Deletions reach no subscriber of a shared reflector (kube-runtime dispatches applies only),
/// so a key is forgotten once its object has left the store.
pub fn changed_by<K>(events: Events<K>, store: Store<K>, hash: fn(&K) -> u64) -> Events<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let mut filter = Filter {
        seen: Seen::default(),
        store,
        hash,
    };
    events
        .filter(move |o| futures::future::ready(filter.pass(o)))
        .boxed()
}

/// The state of [`changed_by`] for one subscriber.
struct Filter<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    seen: Seen,
    store: Store<K>,
    hash: fn(&K) -> u64,
}

impl<K> Filter<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// Whether `o` passes (it changed); records it.
    fn pass(&mut self, o: &K) -> bool {
        let changed = self.seen.changed(o, (self.hash)(o));
        // Forget what left the store, in one sweep once the map doubles it.
        if self.seen.0.len() > 2 * self.store.len() + 1024 {
            let live: std::collections::HashSet<Key> =
                self.store.state().iter().map(|o| key(o.as_ref())).collect();
            self.seen.0.retain(|k, _| live.contains(k));
        }
        changed
    }
}

/// Namespace, name and UID of an object.
type Key = (Option<String>, String, Option<String>);

fn key<K: kube::Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.clone(),
        m.name.clone().unwrap_or_default(),
        m.uid.clone(),
    )
}

/// What one subscriber last saw of each object: a hash of what it reads.
#[derive(Debug, Default)]
pub struct Seen(
    std::collections::HashMap<Key, u64>,
    /// The keys a relist in progress has shown so far.
    Option<std::collections::HashSet<Key>>,
);

impl Seen {
    /// Whether `hash` of `o` differs from the last one seen under its key; records it.
    pub fn changed<K: kube::Resource>(&mut self, o: &K, hash: u64) -> bool {
        let key = key(o);
        if let Some(relisted) = self.1.as_mut() {
            relisted.insert(key.clone());
        }
        self.0.insert(key, hash) != Some(hash)
    }

    /// Forgets a deleted object.
    pub fn forget<K: kube::Resource>(&mut self, o: &K) {
        self.0.remove(&key(o));
    }

    /// A watch relists (`Init`): what it does not show again was deleted meanwhile.
    pub fn relisting(&mut self) {
        self.1 = Some(Default::default());
    }

    /// The relist is complete (`InitDone`): forgets every object it did not show.
    pub fn relisted(&mut self) {
        if let Some(relisted) = self.1.take() {
            self.0.retain(|k, _| relisted.contains(k));
        }
    }
}

/// A hash of an Instance as stored, but for its resourceVersion (every write changes it).
fn content_hash(i: &Instance) -> u64 {
    let mut i = i.clone();
    i.metadata.resource_version = None;
    hash_of(&serde_json::to_vec(&i).unwrap_or_default())
}

/// The standard library's hash of `v`.
pub fn hash_of<T: std::hash::Hash + ?Sized>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The shared stores and their subscriptions.
#[allow(missing_debug_implementations)] // reflector stores are not Debug
pub struct Caches {
    /// Every Instance, pruned.
    pub instances: Store<Instance>,
    /// When `instances` holds its first list.
    pub instances_ready: Ready,
    /// The hosts' Leases.
    pub leases: Store<Lease>,
    /// Instance changes for the Workload controller.
    pub for_workloads: InstanceEvents,
    /// Instance changes for the scheduler.
    pub for_scheduler: InstanceEvents,
    /// Instance changes for the WorkloadService controller.
    pub for_services: InstanceEvents,
    /// Every WorkloadService (managedFields dropped), once it holds its first list.
    pub services: Cached<WorkloadService>,
    /// WorkloadService changes: the WorkloadService controller's own trigger.
    pub services_for_services: Events<WorkloadService>,
    /// WorkloadService changes for the Workload controller (a Service followed a switch).
    pub services_for_workloads: Events<WorkloadService>,
}

/// Starts the shared watches (on the current runtime) and returns their stores.
pub fn start(client: &Client) -> Caches {
    // Readiness comes from the streams, never from `Store::wait_until_ready`: the scheduler
    // and the WorkloadService controller run on these stores and wait there themselves.
    let (instances, writer) = reflector::store_shared::<Instance>(SUBSCRIBER_BUFFER);
    let (instances_told, instances_ready) = Ready::channel();
    let changed = || changed_only(subscribe(&writer), instances.clone());
    let (for_workloads, for_scheduler, for_services) = (changed(), changed(), changed());
    let watch = watcher(
        Api::<Instance>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(prune)
    .default_backoff()
    .reflect_shared(writer)
    .inspect(tell_on_init(instances_told))
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
    let (services, service_writer) = reflector::store_shared::<WorkloadService>(SUBSCRIBER_BUFFER);
    let (services_told, services_ready) = Ready::channel();
    // The Workload reconciler reads of a WorkloadService only which revision it publishes.
    let services_for_workloads = changed_by(subscribe(&service_writer), services.clone(), |s| {
        hash_of(&(
            &s.spec.workload_name,
            s.status.as_ref().map(|st| &st.active_revision),
        ))
    });
    let services_for_services = subscribe(&service_writer);
    let service_watch = watcher(
        Api::<WorkloadService>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(|s| s.metadata.managed_fields = None)
    .default_backoff()
    .reflect_shared(service_writer)
    .inspect(tell_on_init(services_told))
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(service_watch);
    Caches {
        instances,
        instances_ready,
        leases,
        for_workloads,
        for_scheduler,
        for_services,
        services: Cached::new(services, services_ready),
        services_for_services,
        services_for_workloads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::time::Duration;

    /// Why the controller waits through `bulkhead_telemetry::ready::Ready`: kube-runtime's
    /// own wait wakes one of two concurrent waiters. If kube-runtime fixes this, this test
    /// fails and the workaround can go.
    #[tokio::test]
    async fn kube_store_readiness_wakes_only_the_last_of_two_waiters() {
        let (store, mut writer) = reflector::store::<Lease>();
        let waiter = |s: Store<Lease>| tokio::spawn(async move { s.wait_until_ready().await });
        let (first, second) = (waiter(store.clone()), waiter(store.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let second = tokio::time::timeout(Duration::from_secs(2), second).await;
        assert!(second.is_ok(), "the waiter that polled last is woken");
        let first = tokio::time::timeout(Duration::from_millis(500), first).await;
        assert!(first.is_err(), "the first waiter is not woken");
        // Told by the stream instead, both are.
        let (told, ready) = Ready::channel();
        let mut tell = tell_on_init::<Lease>(told);
        let waiter = |r: Ready| tokio::spawn(async move { r.wait().await });
        let (first, second) = (waiter(ready.clone()), waiter(ready));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tell(&Ok(watcher::Event::Init));
        tell(&Ok(watcher::Event::InitDone));
        for w in [first, second] {
            let woke = tokio::time::timeout(Duration::from_secs(2), w).await;
            assert!(woke.is_ok(), "a waiter on Ready was not woken");
        }
    }

    fn stored(name: &str, uid: &str, rv: &str) -> Instance {
        let spec = bulkhead_crds::InstanceSpec {
            host_name: Some("h1".into()),
            revision: "r1".into(),
            template: Default::default(),
            isolation: Default::default(),
            seccomp_profile_digest: None,
            image_signature: None,
        };
        let mut i = Instance::new(name, spec);
        i.status = Some(bulkhead_crds::InstanceStatus {
            pod_ip: Some("10.90.0.2".into()),
            ..Default::default()
        });
        i.metadata.namespace = Some("ns".into());
        i.metadata.uid = Some(uid.into());
        i.metadata.resource_version = Some(rv.into());
        i
    }

    #[test]
    fn a_subscriber_sees_an_instance_again_only_when_its_stored_content_changed() {
        let (store, mut writer) = reflector::store::<Instance>();
        let mut seen = Filter {
            seen: Seen::default(),
            store: store.clone(),
            hash: content_hash,
        };
        let a = stored("a", "u1", "1");
        writer.apply_watcher_event(&watcher::Event::Apply(a.clone()));
        assert!(seen.pass(&a), "first sight");
        // The walls report: a status field pruning drops, and a new resourceVersion.
        let mut walls = a.clone();
        walls.metadata.resource_version = Some("2".into());
        if let Some(s) = walls.status.as_mut() {
            s.isolation = Some(Default::default());
        }
        prune(&mut walls);
        assert!(!seen.pass(&walls), "only pruned fields changed");
        // Control: a phase change passes.
        let mut running = walls.clone();
        running.metadata.resource_version = Some("3".into());
        if let Some(s) = running.status.as_mut() {
            s.phase = Some(bulkhead_crds::InstancePhase::Running);
        }
        assert!(seen.pass(&running), "a phase change");
        assert!(!seen.pass(&running), "the same object twice");
        // A new object under the same name (a new UID) is new.
        let twin = stored("a", "u2", "4");
        assert!(seen.pass(&twin));
        // What left the store is forgotten once the map grows past twice the store.
        for n in 0..1100 {
            assert!(seen.pass(&stored(&format!("gone-{n}"), "g", "1")));
        }
        assert!(seen.seen.0.len() < 1100, "{} keys kept", seen.seen.0.len());
        assert!(
            seen.seen
                .0
                .contains_key(&(Some("ns".into()), "a".into(), Some("u1".into())))
        );
    }

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
        i.spec.template.image = "localhost:5000/web:v1".into();
        i.spec.template.command = vec!["x".repeat(4096)];
        i.spec.template.resources.memory = Some("64Mi".into());
        i.spec.isolation.user_namespace = true;
        i.status = Some(bulkhead_crds::InstanceStatus {
            phase: Some(bulkhead_crds::InstancePhase::Running),
            pod_ip: Some("10.90.0.2".into()),
            container_id: Some("bh-1".into()),
            isolation: Some(Default::default()),
            restart_count: 2,
            ..Default::default()
        });
        let requirements = crate::scheduler::filter::Requirements::of(&i.spec, None);
        let observed =
            crate::workload::observe::observe(&i, 0, k8s_openapi::jiff::Timestamp::now());
        prune(&mut i);
        assert_eq!(i.metadata.managed_fields, None);
        let annotations = i.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
        assert_eq!(i.spec.revision, "r1");
        assert!(i.spec.template.command.is_empty() && i.spec.template.image.is_empty());
        let s = i.status.as_ref().unwrap();
        assert_eq!(
            (s.container_id.as_ref(), s.isolation.as_ref()),
            (None, None)
        );
        assert_eq!(s.pod_ip.as_deref(), Some("10.90.0.2"));
        // What the decisions read is unchanged.
        assert_eq!(
            crate::scheduler::filter::Requirements::of(&i.spec, None),
            requirements
        );
        assert_eq!(
            crate::workload::observe::observe(&i, 0, k8s_openapi::jiff::Timestamp::now()),
            observed
        );
    }
}
