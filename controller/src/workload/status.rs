//! The Workload status, computed from the observation (a pure function).

use bulkhead_crds::{
    WorkloadStatus,
    conditions::{self, status, types},
    workload::WorkloadPhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{Desired, ObservedInstance};

/// Condition reasons, as a Deployment's.
pub mod reasons {
    /// Enough instances are available.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Fewer than replicas - maxUnavailable are available.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// The rollout finished: every instance runs the update revision and is available.
    pub const NEW_REVISION_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// The rollout is replacing instances.
    pub const REVISION_UPDATED: &str = "ReplicaSetUpdated";
    /// spec.paused is set.
    pub const PAUSED: &str = "DeploymentPaused";
    /// No progress within progressDeadlineSeconds.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Nothing is wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// Builds the status the controller reports for this observation.
pub fn compute(
    previous: &WorkloadStatus,
    generation: Option<i64>,
    desired: &Desired,
    observed: &[ObservedInstance],
    progress_deadline_seconds: i32,
    now: Time,
) -> WorkloadStatus {
    let alive: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .collect();
    let update = &desired.update_revision;
    let updated = alive.iter().filter(|i| &i.revision == update).count() as i32;
    let ready = alive.iter().filter(|i| i.ready).count() as i32;
    let available = alive.iter().filter(|i| i.available).count() as i32;
    let updated_available = alive
        .iter()
        .filter(|i| &i.revision == update && i.available)
        .count() as i32;
    let complete = updated == desired.replicas
        && updated_available == desired.replicas
        && alive.len() as i32 == desired.replicas;

    let mut s = previous.clone();
    // Progress: a new spec, or more instances ready or available. Replacing an instance
    // that failed is not progress, so a revision that cannot start runs into its deadline.
    let progressed = previous.observed_generation != generation
        || previous.update_revision.as_deref() != Some(update.as_str())
        || ready > previous.ready_replicas
        || available > previous.available_replicas;
    if progressed || s.last_progress_time.is_none() {
        s.last_progress_time = Some(now.clone());
    }
    let stalled = !complete
        && !desired.paused
        && s.last_progress_time.as_ref().is_some_and(|t| {
            t.0.as_second() + i64::from(progress_deadline_seconds) < now.0.as_second()
        });
    s.observed_generation = generation;
    s.replicas = alive.len() as i32;
    s.ready_replicas = ready;
    s.available_replicas = available;
    s.updated_replicas = updated;
    s.update_revision = Some(update.clone());
    if complete {
        s.current_revision = Some(update.clone());
    } else if s.current_revision.is_none() {
        // The first revision ever seen is where this rollout comes from.
        s.current_revision = alive
            .iter()
            .find(|i| &i.revision != update)
            .map(|i| i.revision.clone())
            .or(Some(update.clone()));
    }
    s.active_revision = s.current_revision.clone();
    s.preview_revision = None;

    let min_available = desired.replicas - desired.limits.max_unavailable;
    let enough = available >= min_available;
    conditions::merge(
        &mut s.conditions,
        conditions::new(
            types::AVAILABLE,
            if enough { status::TRUE } else { status::FALSE },
            if enough {
                reasons::MINIMUM_REPLICAS_AVAILABLE
            } else {
                reasons::MINIMUM_REPLICAS_UNAVAILABLE
            },
            format!(
                "{available} of {} instances available (minimum {min_available})",
                desired.replicas
            ),
            generation,
            now.clone(),
        ),
    );
    let (reason, message) = if desired.paused {
        (reasons::PAUSED, "the workload is paused".to_string())
    } else if stalled {
        (
            reasons::PROGRESS_DEADLINE_EXCEEDED,
            format!("revision {update} has not progressed for {progress_deadline_seconds}s"),
        )
    } else if complete {
        (
            reasons::NEW_REVISION_AVAILABLE,
            format!("revision {update} is available"),
        )
    } else {
        (
            reasons::REVISION_UPDATED,
            format!(
                "{updated_available} of {} instances run revision {update} and are available",
                desired.replicas
            ),
        )
    };
    conditions::merge(
        &mut s.conditions,
        conditions::new(
            types::PROGRESSING,
            if desired.paused {
                status::UNKNOWN
            } else if stalled {
                status::FALSE
            } else {
                status::TRUE
            },
            reason,
            message,
            generation,
            now.clone(),
        ),
    );
    conditions::merge(
        &mut s.conditions,
        conditions::new(
            types::DEGRADED,
            if stalled { status::TRUE } else { status::FALSE },
            if stalled {
                reasons::PROGRESS_DEADLINE_EXCEEDED
            } else {
                reasons::AS_EXPECTED
            },
            if stalled {
                "the rollout stopped making progress"
            } else {
                ""
            },
            generation,
            now.clone(),
        ),
    );
    s.phase = Some(if desired.paused {
        WorkloadPhase::Paused
    } else if !enough || stalled {
        WorkloadPhase::Degraded
    } else if complete {
        WorkloadPhase::Healthy
    } else {
        WorkloadPhase::Progressing
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fixtures::inst;
    use crate::workload::plan::Limits;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn healthy_when_every_replica_runs_the_update_revision() {
        let d = Desired {
            replicas: 2,
            update_revision: "b".into(),
            limits: Limits {
                max_surge: 1,
                max_unavailable: 0,
            },
            paused: false,
        };
        let now = Time(Timestamp::from_second(100).unwrap());
        let s = compute(
            &WorkloadStatus::default(),
            Some(3),
            &d,
            &[inst("x", "b", true), inst("y", "b", true)],
            600,
            now.clone(),
        );
        assert_eq!(s.phase, Some(WorkloadPhase::Healthy));
        assert_eq!(
            (
                s.replicas,
                s.ready_replicas,
                s.available_replicas,
                s.updated_replicas
            ),
            (2, 2, 2, 2)
        );
        assert_eq!(s.current_revision.as_deref(), Some("b"));
        assert!(conditions::is_true(&s.conditions, types::AVAILABLE));
        assert_eq!(
            conditions::find(&s.conditions, types::PROGRESSING)
                .unwrap()
                .reason,
            reasons::NEW_REVISION_AVAILABLE
        );
        assert_eq!(s.observed_generation, Some(3));

        let mid = compute(
            &s,
            Some(4),
            &Desired {
                update_revision: "c".into(),
                ..d.clone()
            },
            &[
                inst("x", "b", true),
                inst("y", "b", true),
                inst("z", "c", false),
            ],
            600,
            now,
        );
        assert_eq!(mid.phase, Some(WorkloadPhase::Progressing));
        assert_eq!(
            mid.current_revision.as_deref(),
            Some("b"),
            "the active revision stays until the rollout completes"
        );
        assert_eq!(mid.update_revision.as_deref(), Some("c"));
        assert_eq!(
            conditions::find(&mid.conditions, types::PROGRESSING)
                .unwrap()
                .reason,
            reasons::REVISION_UPDATED
        );
    }

    #[test]
    fn degraded_below_the_minimum() {
        let d = Desired {
            replicas: 3,
            update_revision: "a".into(),
            limits: Limits {
                max_surge: 1,
                max_unavailable: 0,
            },
            paused: false,
        };
        let s = compute(
            &WorkloadStatus::default(),
            None,
            &d,
            &[inst("x", "a", true)],
            600,
            Time(Timestamp::from_second(1).unwrap()),
        );
        assert_eq!(s.phase, Some(WorkloadPhase::Degraded));
        assert!(!conditions::is_true(&s.conditions, types::AVAILABLE));
    }

    #[test]
    fn a_stalled_rollout_exceeds_its_deadline() {
        let d = Desired {
            replicas: 2,
            update_revision: "b".into(),
            limits: Limits {
                max_surge: 1,
                max_unavailable: 0,
            },
            paused: false,
        };
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap());
        let stuck = [
            inst("x", "a", true),
            inst("y", "a", true),
            inst("z", "b", false),
        ];
        let first = compute(
            &WorkloadStatus::default(),
            Some(2),
            &d,
            &stuck,
            60,
            at(1000),
        );
        assert_eq!(first.last_progress_time, Some(at(1000)));
        let within = compute(&first, Some(2), &d, &stuck, 60, at(1059));
        assert_eq!(
            within.last_progress_time,
            Some(at(1000)),
            "no progress, no new time"
        );
        assert_eq!(within.phase, Some(WorkloadPhase::Progressing));
        let late = compute(&within, Some(2), &d, &stuck, 60, at(1061));
        let progressing = conditions::find(&late.conditions, types::PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", reasons::PROGRESS_DEADLINE_EXCEEDED)
        );
        assert!(conditions::is_true(&late.conditions, types::DEGRADED));
        assert_eq!(late.phase, Some(WorkloadPhase::Degraded));
        // Progress (the new instance became available) clears it.
        let moving = [
            inst("x", "a", true),
            inst("y", "a", true),
            inst("z", "b", true),
        ];
        let after = compute(&late, Some(2), &d, &moving, 60, at(1070));
        assert!(!conditions::is_true(&after.conditions, types::DEGRADED));
        assert_eq!(after.last_progress_time, Some(at(1070)));
    }
}
