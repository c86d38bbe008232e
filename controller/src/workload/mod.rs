//! Workload reconciliation: revisions, replicas and rollouts.

pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod revision;
pub mod status;
