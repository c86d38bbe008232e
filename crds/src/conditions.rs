//! Condition types and reasons, and the one way conditions are merged.
//!
//! `lastTransitionTime` only moves when a condition's status changes, as Kubernetes
//! conventions require, so a reconcile that finds nothing new writes nothing new.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// Workload: enough instances are available (replicas - maxUnavailable).
    pub const AVAILABLE: &str = "Available";
    /// Workload: a rollout is making progress, or finished.
    pub const PROGRESSING: &str = "Progressing";
    /// Workload: a rollout failed or was aborted.
    pub const DEGRADED: &str = "Degraded";
    /// Workload: the API server refuses its instances (isolation level, quota).
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// Workload: the newest digest under a followed tag is not rolled out because its
    /// signature is missing or not from a trusted key.
    pub const IMAGE_NOT_TRUSTED: &str = "ImageNotTrusted";
    /// Instance: bound to a host.
    pub const SCHEDULED: &str = "Scheduled";
    /// Instance: passes its readiness probe. Host: its agent renews its Lease.
    pub const READY: &str = "Ready";
    /// Instance: the kernel enforces every isolation setting that was asked for.
    pub const ISOLATION_VERIFIED: &str = "IsolationVerified";
}

/// Condition status values.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Builds a condition; `lastTransitionTime` is `now` until [`merge`] keeps an older one.
pub fn new(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Sets `next` in `conditions`, replacing the condition of the same type. The previous
/// `lastTransitionTime` is kept when the status did not change. Returns whether anything
/// other than the time changed.
pub fn merge(conditions: &mut Vec<Condition>, mut next: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == next.type_) {
        Some(current) => {
            if current.status == next.status {
                next.last_transition_time = current.last_transition_time.clone();
            }
            let changed = *current != next;
            *current = next;
            changed
        }
        None => {
            conditions.push(next);
            true
        }
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn merge_keeps_transition_time_while_status_holds() {
        let mut cs = vec![];
        assert!(merge(
            &mut cs,
            new(types::READY, status::TRUE, "Ok", "", None, at(10))
        ));
        assert!(!merge(
            &mut cs,
            new(types::READY, status::TRUE, "Ok", "", None, at(20))
        ));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert!(merge(
            &mut cs,
            new(types::READY, status::TRUE, "Ok", "new", None, at(30))
        ));
        assert_eq!(
            cs[0].last_transition_time,
            at(10),
            "message change is not a transition"
        );
        assert!(merge(
            &mut cs,
            new(types::READY, status::FALSE, "Down", "", None, at(40))
        ));
        assert_eq!(cs[0].last_transition_time, at(40));
        assert_eq!(cs.len(), 1);
        assert!(!is_true(&cs, types::READY));
    }

    #[test]
    fn merge_adds_new_types() {
        let mut cs = vec![];
        merge(
            &mut cs,
            new(types::READY, status::TRUE, "Ok", "", None, at(1)),
        );
        merge(
            &mut cs,
            new(types::SCHEDULED, status::TRUE, "Bound", "", None, at(1)),
        );
        assert_eq!(cs.len(), 2);
        assert!(is_true(&cs, types::SCHEDULED));
    }
}
