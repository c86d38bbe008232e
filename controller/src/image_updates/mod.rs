//! Image updates (issue #17): a Workload with `spec.imageUpdates` follows its template's tag.
//! Each new digest under the tag, once its cosign signature verifies against the Workload's
//! trusted keys, becomes a new revision (the template pinned to the digest) that the
//! Workload's strategy rolls out with every gate it already has. The registry is asked on the
//! interval and at once when it announces a push (see [`notify`]).
//!
//! `plan` decides (pure), `follow` asks the registry and verifies, `keys` reads the trusted
//! keys (and copies them into each Instance, for the agent's own check), `notify` serves the
//! registry's push notifications. See docs/image-updates.md.

pub mod follow;
pub mod keys;
pub mod notify;
pub mod plan;
pub mod semver_range;

use std::{collections::BTreeSet, sync::Mutex};

use bulkhead_crds::Workload;
use bulkhead_registry::Registry;
use kube::ResourceExt;

/// What the image-updates part of the controller shares between reconciles.
#[derive(Debug)]
pub struct ImageUpdates {
    /// The registry client (the node agent's, bounded and digest-verified).
    pub registry: Registry,
    /// Workloads whose followed repository the registry announced a push to.
    pub pushes: Pushes,
    /// Workloads looked at since this process started: the first reconcile of each looks at
    /// the registry whatever the interval, since a push announced while no controller ran
    /// (or to one that died before recording it) is not announced again.
    pub looked: Pushes,
}

impl ImageUpdates {
    /// Talks only to the registries in `allowed` (host[:port]); empty allows any.
    pub fn new(allowed: Vec<String>) -> Self {
        Self {
            registry: Registry::new(allowed),
            pushes: Pushes::default(),
            looked: Pushes::default(),
        }
    }
}

/// Workloads (`namespace/name`) to look at the registry for at once.
#[derive(Debug, Default)]
pub struct Pushes(Mutex<BTreeSet<String>>);

impl Pushes {
    /// Marks a Workload.
    pub fn mark(&self, key: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    }

    /// Marks a Workload; whether it was not marked before.
    pub fn first(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string())
    }

    /// Whether a Workload was marked, unmarking it.
    pub fn take(&self, key: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
    }
}

/// The key of a Workload in [`Pushes`].
pub fn key(wl: &Workload) -> String {
    format!("{}/{}", wl.namespace().unwrap_or_default(), wl.name_any())
}

/// The Workloads following a tag in `repository` (as the registry names it, no host).
pub fn following<'a>(
    workloads: impl IntoIterator<Item = &'a Workload>,
    repository: &str,
) -> Vec<&'a Workload> {
    workloads
        .into_iter()
        .filter(|wl| wl.spec.image_updates.is_some())
        .filter(|wl| {
            bulkhead_registry::ImageRef::parse(&wl.spec.template.image)
                .is_ok_and(|r| r.repository == repository)
        })
        .collect()
}
