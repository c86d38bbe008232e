//! Workload reconciliation: revisions, replicas and rollouts.

pub mod bluegreen;
pub mod expectations;
pub mod history;
pub mod observe;
pub mod pace;
pub mod plan;
pub mod reconcile;
pub mod revision;
pub mod seccomp;
pub mod status;

#[cfg(test)]
pub(crate) mod fixtures {
    use super::plan::ObservedInstance;

    /// An instance that is ready and available, or neither.
    pub fn inst(name: &str, revision: &str, available: bool) -> ObservedInstance {
        ObservedInstance {
            name: name.into(),
            revision: revision.into(),
            ready: available,
            available,
            verified: available,
            finished: false,
            deleting: false,
            evicting: false,
        }
    }
}
