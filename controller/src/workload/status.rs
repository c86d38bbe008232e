//! The Workload status, computed from the observation (a pure function).

use bulkhead_crds::{
    WorkloadStatus,
    conditions::{self, status, types},
    workload::WorkloadPhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    bluegreen,
    plan::{Desired, ObservedInstance},
};
use k8s_openapi::jiff::Timestamp;

/// Condition reasons, as a Deployment's.
pub mod reasons {
    /// ReplicaFailure: the API server refused an instance.
    pub const FAILED_CREATE: &str = "FailedCreate";
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
/// Sets the `ReplicaFailure` condition (reason `FailedCreate`, like a ReplicaSet's) while the
/// API server refuses the Workload's instances, and removes it once a pass creates all.
pub fn report_create_refusal(
    s: &mut WorkloadStatus,
    refused: Option<&str>,
    generation: Option<i64>,
    now: Time,
) {
    match refused {
        Some(message) => {
            conditions::merge(
                &mut s.conditions,
                conditions::new(
                    types::REPLICA_FAILURE,
                    status::TRUE,
                    reasons::FAILED_CREATE,
                    message,
                    generation,
                    now,
                ),
            );
        }
        None => s.conditions.retain(|c| c.type_ != types::REPLICA_FAILURE),
    }
}

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

/// Blue/green condition reasons.
pub mod bg_reasons {
    /// Preview instances are starting beside the active ones.
    pub const PREVIEW_STARTED: &str = "PreviewStarted";
    /// Every preview instance is ready; promotion waits for the annotation.
    pub const AWAITING_PROMOTION: &str = "AwaitingPromotion";
    /// Traffic switched; the old revision retires after scaleDownDelaySeconds.
    pub const PROMOTED: &str = "Promoted";
    /// The preview was aborted; traffic stays on the active revision.
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
}

fn secs(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

fn time(s: Option<i64>) -> Option<Time> {
    s.and_then(|s| Timestamp::from_second(s).ok()).map(Time)
}

/// The blue/green planner's memory, as stored in the status.
pub fn blue_green_state(s: &WorkloadStatus) -> bluegreen::State {
    let bg = s.blue_green.clone().unwrap_or_default();
    bluegreen::State {
        // A Workload that ran another strategy before: its current revision has the traffic.
        active: s.active_revision.clone().or(s.current_revision.clone()),
        preview: s.preview_revision.clone(),
        preview_started: secs(&bg.preview_started_time),
        preview_ready: secs(&bg.preview_ready_time),
        promoting: bg.promoting,
        switched: secs(&bg.switched_time),
        previous_active: bg.previous_active_revision,
        aborted: bg.aborted_revision,
        aborted_at: secs(&bg.aborted_time),
        abort_reason: bg.abort_reason,
    }
}

/// Rewrites the revision fields, Available, Progressing, Degraded and the phase of `s` (as
/// [`compute`] left them) for a blue/green rollout in state `st`: availability counts the
/// active revision only, waiting for promotion is not a stall, and an abort is Degraded.
pub fn report_blue_green(
    s: &mut WorkloadStatus,
    st: &bluegreen::State,
    settings: &bluegreen::Settings,
    update: &str,
    observed: &[ObservedInstance],
    generation: Option<i64>,
    now: Time,
) {
    let alive: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .collect();
    let active = st.active.clone().unwrap_or_default();
    let of = |rev: &str, f: fn(&ObservedInstance) -> bool| {
        alive.iter().filter(|i| i.revision == rev && f(i)).count() as i32
    };
    let replicas = settings.replicas;
    s.active_revision = st.active.clone();
    s.current_revision = st.active.clone();
    s.preview_revision = st.preview.clone();
    s.blue_green = Some(bulkhead_crds::workload::BlueGreenStatus {
        preview_started_time: time(st.preview_started),
        preview_ready_time: time(st.preview_ready),
        promoting: st.promoting,
        switched_time: time(st.switched),
        previous_active_revision: st.previous_active.clone(),
        aborted_revision: st.aborted.clone(),
        aborted_time: time(st.aborted_at),
        abort_reason: st.abort_reason.clone(),
    });

    let available = of(&active, |i| i.available);
    let enough = available >= replicas;
    let cond = |t, ok: bool, reason: &str, message: String| {
        conditions::new(
            t,
            if ok { status::TRUE } else { status::FALSE },
            reason,
            message,
            generation,
            now.clone(),
        )
    };
    conditions::merge(
        &mut s.conditions,
        cond(
            types::AVAILABLE,
            enough,
            if enough {
                reasons::MINIMUM_REPLICAS_AVAILABLE
            } else {
                reasons::MINIMUM_REPLICAS_UNAVAILABLE
            },
            format!("{available} of {replicas} instances of active revision {active} available"),
        ),
    );
    let aborted = st.aborted.as_deref() == Some(update);
    let complete = active == update && alive.len() as i32 == replicas && enough;
    let (progressing, reason, message, phase) = if settings.paused {
        (
            true,
            reasons::PAUSED,
            "the workload is paused".to_string(),
            WorkloadPhase::Paused,
        )
    } else if aborted {
        let why = st.abort_reason.clone().unwrap_or_default();
        (
            false,
            bg_reasons::ROLLOUT_ABORTED,
            format!(
                "preview revision {update} was aborted ({why}); traffic stays on revision {active}"
            ),
            WorkloadPhase::Degraded,
        )
    } else if let Some(preview) = &st.preview {
        let ready = of(preview, |i| i.ready && i.verified);
        if st.preview_ready.is_some() && !st.promoting && !settings.auto_promote {
            (
                true,
                bg_reasons::AWAITING_PROMOTION,
                format!(
                    "preview revision {preview} is ready; promote it with: kubectl annotate workload <name> {}={preview}",
                    bulkhead_crds::ANNOTATION_PROMOTE
                ),
                WorkloadPhase::Paused,
            )
        } else {
            (
                true,
                bg_reasons::PREVIEW_STARTED,
                format!(
                    "{ready} of {} preview instances of revision {preview} ready and verified; revision {active} has the traffic",
                    if st.promoting {
                        replicas
                    } else {
                        settings.preview_replicas.min(replicas)
                    }
                ),
                WorkloadPhase::Progressing,
            )
        }
    } else if complete {
        (
            true,
            reasons::NEW_REVISION_AVAILABLE,
            format!("revision {active} is available"),
            WorkloadPhase::Healthy,
        )
    } else if st.switched.is_some() && alive.iter().any(|i| i.revision != active) {
        (
            true,
            bg_reasons::PROMOTED,
            format!(
                "revision {active} has the traffic; the previous revision retires after its delay"
            ),
            WorkloadPhase::Progressing,
        )
    } else {
        (
            true,
            reasons::REVISION_UPDATED,
            format!("{available} of {replicas} instances of revision {active} available"),
            WorkloadPhase::Progressing,
        )
    };
    conditions::merge(
        &mut s.conditions,
        cond(types::PROGRESSING, progressing, reason, message.clone()),
    );
    conditions::merge(
        &mut s.conditions,
        cond(
            types::DEGRADED,
            aborted,
            if aborted {
                bg_reasons::ROLLOUT_ABORTED
            } else {
                reasons::AS_EXPECTED
            },
            if aborted { message } else { String::new() },
        ),
    );
    s.phase = Some(if !enough && phase != WorkloadPhase::Paused {
        WorkloadPhase::Degraded
    } else {
        phase
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fixtures::inst;
    use crate::workload::plan::Limits;

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
