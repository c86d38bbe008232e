//! bulkhead-controller: schedules instances onto hosts, keeps replicas and runs rollouts.
//!
//! Reconcilers are short pipelines (observe → plan → apply → report); planning is pure and
//! unit-tested (`workload::plan`, `workload::status`, `scheduler::filter`).

pub mod cache;
pub mod hosts;
pub mod image_updates;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod scheduler;
pub mod service;
pub mod workload;

use std::sync::Arc;

use kube::Client;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object lacks a field the API always sets.
    #[error("object is missing {0}")]
    MissingObjectKey(&'static str),
    /// A reflector store will never be filled: its watch stopped.
    #[error("the {0} store is gone: its watch stopped")]
    StoreGone(&'static str),
}

/// Shared state of the reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// Publishes Events on the objects the controller acts on.
    pub recorder: kube::runtime::events::Recorder,
    /// Hosts, Leases and Instances from the shared watches, and the bindings assumed on
    /// them: where new instances go.
    pub placement: placement::Placement,
    /// Creates and deletes of the Workload reconciler the Instance store may not show yet.
    pub expectations: workload::expectations::Expectations,
    /// Followed tags: the registry client and the pushes the registry announced.
    pub image_updates: image_updates::ImageUpdates,
    /// What the revision history last recorded per Workload (skips unchanged recordings).
    pub history: workload::history::Recorded,
    /// The back-off of replacing each Workload's failed instances, by Workload UID.
    pub replacements: std::sync::Mutex<bulkhead_telemetry::backoff::Backoff>,
    /// Every WorkloadService, from the shared watch: which revision each one publishes.
    pub services: cache::Cached<bulkhead_crds::WorkloadService>,
    /// Each Workload's last refused create: creates wait 30 s after one.
    pub create_refusals: workload::reconcile::CreateRefusals,
    /// When each Workload's status was last written: counts alone are written at most once
    /// a second.
    pub status_writes: workload::pace::Paced,
    /// One lock per WorkloadService between its reconciler and the traffic switch.
    pub switchboard: service::switch::Switchboard,
    /// Tells the WorkloadService controller that a Workload's reconciler changed its active
    /// or preview revision, so its Services follow without waiting for the watch.
    pub switched: futures::channel::mpsc::UnboundedSender<
        kube::runtime::reflector::ObjectRef<bulkhead_crds::Workload>,
    >,
}

/// The first delay before a Workload's failed instances are replaced again.
pub const REPLACE_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest.
pub const REPLACE_MAX: std::time::Duration = std::time::Duration::from_secs(300);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}
