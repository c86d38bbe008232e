//! Where new instances go: the scheduler's pure choice (`scheduler::filter::choose`) over one
//! shared view of the hosts, the bound instances and the bindings made but not yet seen in
//! the Instance store ("assumed", as kube-scheduler does).
//!
//! The Workload reconciler places a whole batch of new instances before creating them, so
//! each Instance is created already bound (one API write); the scheduler places only the
//! leftovers. Both go through the same lock, so two decisions never count the same room.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use bulkhead_crds::{
    Host, Instance, LABEL_WORKLOAD, SYSTEM_NAMESPACE,
    conditions::{self, types},
};
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::scheduler::filter::{HostView, Requirements, choose};

/// How long an assumed binding counts without the store showing its Instance (a create
/// that was refused or deleted before the watch saw it).
const ASSUMED_FOR: Duration = Duration::from_secs(60);

/// A binding made but not yet seen in the store.
#[derive(Debug, Clone)]
struct Assumed {
    host: String,
    req: Requirements,
    at: Instant,
}

/// The shared placement view.
#[allow(missing_debug_implementations)] // reflector stores are not Debug
pub struct Placement {
    /// Every Host.
    pub hosts: Store<Host>,
    /// The hosts' Leases in `bulkhead-system`.
    pub leases: Store<Lease>,
    /// Every Instance, pruned (see `cache`).
    pub instances: Store<Instance>,
    /// `namespace/name` → assumed binding.
    assumed: Mutex<HashMap<String, Assumed>>,
    /// When the Host and Instance stores hold their first lists (for many waiters at once).
    hosts_ready: crate::cache::Ready,
    instances_ready: crate::cache::Ready,
}

/// The store key of an instance: `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Placement {
    /// A placement view over these stores, each with its readiness.
    pub fn new(
        (hosts, hosts_ready): (Store<Host>, crate::cache::Ready),
        leases: Store<Lease>,
        (instances, instances_ready): (Store<Instance>, crate::cache::Ready),
    ) -> Self {
        Self {
            hosts_ready,
            instances_ready,
            hosts,
            leases,
            instances,
            assumed: Mutex::default(),
        }
    }

    /// Waits until the Host store holds its first list.
    pub async fn hosts_ready(&self) -> Result<&Store<Host>, crate::Error> {
        self.hosts_ready
            .wait()
            .await
            .map_err(|_| crate::Error::StoreGone("Host"))?;
        Ok(&self.hosts)
    }

    /// Waits until the Instance store holds its first list.
    pub async fn instances_ready(&self) -> Result<&Store<Instance>, crate::Error> {
        self.instances_ready
            .wait()
            .await
            .map_err(|_| crate::Error::StoreGone("Instance"))?;
        Ok(&self.instances)
    }

    /// The instances of Workload `namespace/workload`, from the shared store (never a list:
    /// reconciles and the cutover read it without a round trip).
    pub async fn workload_instances(
        &self,
        namespace: &str,
        workload: &str,
    ) -> Result<Vec<std::sync::Arc<Instance>>, crate::Error> {
        Ok(self
            .instances_ready()
            .await?
            .state()
            .into_iter()
            .filter(|i| {
                i.metadata.namespace.as_deref() == Some(namespace)
                    && i.labels().get(LABEL_WORKLOAD).map(String::as_str) == Some(workload)
            })
            .collect())
    }

    /// Places each request (instance key, requirements) in order, each decision counting
    /// the ones before it, and assumes the bindings made. An error is the reason nothing
    /// fits.
    pub fn place(&self, requests: &[(String, Requirements)]) -> Vec<Result<String, String>> {
        let Ok(mut assumed) = self.assumed.lock() else {
            return requests
                .iter()
                .map(|_| Err("the placement lock is poisoned".to_string()))
                .collect();
        };
        let mut views = self.views(&mut assumed, Timestamp::now());
        let decisions = place_all(&mut views, requests);
        for ((key, req), decision) in requests.iter().zip(&decisions) {
            if let Ok(host) = decision {
                let (host, req, at) = (host.clone(), req.clone(), Instant::now());
                assumed.insert(key.clone(), Assumed { host, req, at });
            }
        }
        decisions
    }

    /// Forgets an assumed binding (its create failed, or the store shows it bound).
    pub fn forget(&self, key: &str) {
        if let Ok(mut a) = self.assumed.lock() {
            a.remove(key);
        }
    }

    fn host_ready(&self, host: &Host, now: Timestamp) -> bool {
        let agent_ready = host
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, types::READY));
        let lease_fresh = self
            .leases
            .get(&ObjectRef::new(&host.name_any()).within(SYSTEM_NAMESPACE))
            .and_then(|l| l.spec.clone())
            .and_then(|s| Some((s.renew_time?.0, s.lease_duration_seconds?)))
            .is_some_and(|(renewed, secs)| renewed.as_second() + i64::from(secs) > now.as_second());
        agent_ready && lease_fresh
    }

    /// Every host with what is bound or assumed on it. Assumed bindings the store now shows
    /// (or that are too old) are dropped on the way.
    fn views(&self, assumed: &mut HashMap<String, Assumed>, now: Timestamp) -> Vec<HostView> {
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
        let mut seen = std::collections::HashSet::new();
        for inst in self.instances.state() {
            let k = key(&inst.namespace().unwrap_or_default(), &inst.name_any());
            let host = match &inst.spec.host_name {
                Some(h) => {
                    assumed.remove(&k);
                    Some(h.clone())
                }
                // Bound by the scheduler, the patch not seen yet.
                None => assumed.get(&k).map(|a| a.host.clone()),
            };
            if let Some(view) = host.and_then(|h| views.get_mut(&h)) {
                let workload = inst.labels().get(LABEL_WORKLOAD).cloned();
                view.reserve(&Requirements::of(&inst.spec, workload));
            }
            seen.insert(k);
        }
        assumed.retain(|_, a| a.at.elapsed() < ASSUMED_FOR);
        // Created bound, not seen yet: counted from what was asked.
        for (k, a) in assumed.iter() {
            if !seen.contains(k)
                && let Some(view) = views.get_mut(&a.host)
            {
                view.reserve(&a.req);
            }
        }
        views.into_values().collect()
    }
}

/// Chooses a host for each request in order, reserving each choice in `views` so the next
/// decision sees it (pure).
pub fn place_all(
    views: &mut [HostView],
    requests: &[(String, Requirements)],
) -> Vec<Result<String, String>> {
    requests
        .iter()
        .map(|(_, req)| {
            let host = choose(req, views)?;
            if let Some(view) = views.iter_mut().find(|v| v.name == host) {
                view.reserve(req);
            }
            Ok(host)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::{host::HostCapacity, policy::IsolationLevel};

    fn host(name: &str, max_instances: i64) -> HostView {
        HostView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            features: Default::default(),
            isolation_floor: IsolationLevel::Privileged,
            capacity: HostCapacity {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                instances: max_instances,
            },
            used_cpu_millis: 0,
            used_memory_bytes: 0,
            instances: 0,
            per_workload: BTreeMap::new(),
        }
    }

    fn req() -> Requirements {
        Requirements {
            cpu_millis: 100,
            memory_bytes: 64 << 20,
            selinux_required: false,
            user_namespace: false,
            seccomp: false,
            isolation_level: IsolationLevel::Strict,
            workload: Some("web".into()),
        }
    }

    #[test]
    fn a_batch_counts_its_own_decisions() {
        let mut views = vec![host("a", 2), host("b", 1)];
        let requests: Vec<_> = (0..4).map(|i| (format!("ns/web-{i}"), req())).collect();
        let decisions = place_all(&mut views, &requests);
        let placed: Vec<_> = decisions.iter().filter_map(|d| d.clone().ok()).collect();
        assert_eq!(placed.len(), 3, "{decisions:?}");
        assert_eq!(placed.iter().filter(|h| *h == "a").count(), 2);
        assert_eq!(placed.iter().filter(|h| *h == "b").count(), 1);
        assert!(
            decisions[3]
                .as_ref()
                .is_err_and(|why| why.contains("too many instances")),
            "{decisions:?}"
        );
    }

    #[test]
    fn a_batch_spreads_a_workload() {
        let mut views = vec![host("a", 10), host("b", 10)];
        let requests: Vec<_> = (0..4).map(|i| (format!("ns/web-{i}"), req())).collect();
        let placed: Vec<_> = place_all(&mut views, &requests)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(placed.iter().filter(|h| *h == "a").count(), 2, "{placed:?}");
    }
}
