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

/// The status of a rolling (or recreate) Workload for this observation: counts, revisions,
/// the Available, Progressing and Degraded conditions (as a Deployment's) and the phase.
pub fn compute(
    previous: &WorkloadStatus,
    generation: Option<i64>,
    desired: &Desired,
    observed: &[ObservedInstance],
    progress_deadline_seconds: i32,
    now: Time,
) -> WorkloadStatus {
    let alive = live(observed);
    let update = desired.update_revision.as_str();
    let n = Counts::of(&alive, update);
    let complete = n.updated == desired.replicas
        && n.updated_available == desired.replicas
        && n.alive == desired.replicas;
    let mut s = previous.clone();

    // 1. Progress: a new spec, or more instances ready or available. Replacing an instance
    //    that failed is not progress, so a revision that cannot start runs into its deadline.
    if progressed(previous, generation, update, &n) || s.last_progress_time.is_none() {
        s.last_progress_time = Some(now.clone());
    }
    let stalled = !complete
        && !desired.paused
        && s.last_progress_time.as_ref().is_some_and(|t| {
            t.0.as_second() + i64::from(progress_deadline_seconds) < now.0.as_second()
        });

    // 2. Counts and revisions.
    n.record(&mut s, generation, update);
    s.current_revision = if complete {
        Some(update.to_string())
    } else {
        // The first revision ever seen is where this rollout comes from.
        previous.current_revision.clone().or_else(|| {
            let from = alive.iter().find(|i| i.revision != update);
            Some(from.map_or(update, |i| i.revision.as_str()).to_string())
        })
    };
    s.active_revision = s.current_revision.clone();
    s.preview_revision = None;

    // 3. Conditions and phase.
    let stamp = Stamp { generation, now };
    let min_available = desired.replicas - desired.limits.max_unavailable;
    let enough = n.available >= min_available;
    stamp.available(
        &mut s,
        enough,
        format!(
            "{} of {} instances available (minimum {min_available})",
            n.available, desired.replicas
        ),
    );
    let (status, reason, message) =
        rolling_progress(desired, &n, stalled, complete, progress_deadline_seconds);
    stamp.set(&mut s, types::PROGRESSING, status, reason, message);
    let (status, reason, message) = if stalled {
        (
            status::TRUE,
            reasons::PROGRESS_DEADLINE_EXCEEDED,
            "the rollout stopped making progress",
        )
    } else {
        (status::FALSE, reasons::AS_EXPECTED, "")
    };
    stamp.set(&mut s, types::DEGRADED, status, reason, message);
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

/// The instances that count: neither finished nor being deleted.
fn live(observed: &[ObservedInstance]) -> Vec<&ObservedInstance> {
    observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .collect()
}

/// How many live instances are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    alive: i32,
    /// Running the update revision.
    updated: i32,
    ready: i32,
    available: i32,
    /// Running the update revision and available.
    updated_available: i32,
}

impl Counts {
    fn of(alive: &[&ObservedInstance], update: &str) -> Self {
        let count =
            |f: &dyn Fn(&ObservedInstance) -> bool| alive.iter().filter(|i| f(i)).count() as i32;
        Self {
            alive: alive.len() as i32,
            updated: count(&|i| i.revision == update),
            ready: count(&|i| i.ready),
            available: count(&|i| i.available),
            updated_available: count(&|i| i.revision == update && i.available),
        }
    }

    /// Writes the counts, the observed generation and the update revision into `s`.
    fn record(&self, s: &mut WorkloadStatus, generation: Option<i64>, update: &str) {
        s.observed_generation = generation;
        s.replicas = self.alive;
        s.ready_replicas = self.ready;
        s.available_replicas = self.available;
        s.updated_replicas = self.updated;
        s.update_revision = Some(update.to_string());
    }
}

/// Whether this observation is progress over `previous`.
fn progressed(
    previous: &WorkloadStatus,
    generation: Option<i64>,
    update: &str,
    n: &Counts,
) -> bool {
    previous.observed_generation != generation
        || previous.update_revision.as_deref() != Some(update)
        || n.ready > previous.ready_replicas
        || n.available > previous.available_replicas
}

/// The Progressing condition of a rolling Workload: status, reason and message.
fn rolling_progress(
    desired: &Desired,
    n: &Counts,
    stalled: bool,
    complete: bool,
    progress_deadline_seconds: i32,
) -> (&'static str, &'static str, String) {
    let update = &desired.update_revision;
    if desired.paused {
        (
            status::UNKNOWN,
            reasons::PAUSED,
            "the workload is paused".into(),
        )
    } else if stalled {
        (
            status::FALSE,
            reasons::PROGRESS_DEADLINE_EXCEEDED,
            format!("revision {update} has not progressed for {progress_deadline_seconds}s"),
        )
    } else if complete {
        (
            status::TRUE,
            reasons::NEW_REVISION_AVAILABLE,
            format!("revision {update} is available"),
        )
    } else {
        (
            status::TRUE,
            reasons::REVISION_UPDATED,
            format!(
                "{} of {} instances run revision {update} and are available",
                n.updated_available, desired.replicas
            ),
        )
    }
}

/// Conditions stamped with one observed generation and time.
struct Stamp {
    generation: Option<i64>,
    now: Time,
}

impl Stamp {
    /// Sets condition `type_` of `s` (its transition time kept while its status holds).
    fn set(
        &self,
        s: &mut WorkloadStatus,
        type_: &str,
        status: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let c = conditions::new(
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now.clone(),
        );
        conditions::merge(&mut s.conditions, c);
    }

    /// Sets Available: `enough` instances are available, or too few.
    fn available(&self, s: &mut WorkloadStatus, enough: bool, message: String) {
        let (status, reason) = if enough {
            (status::TRUE, reasons::MINIMUM_REPLICAS_AVAILABLE)
        } else {
            (status::FALSE, reasons::MINIMUM_REPLICAS_UNAVAILABLE)
        };
        self.set(s, types::AVAILABLE, status, reason, message);
    }
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
    let alive = live(observed);
    let active = st.active.clone().unwrap_or_default();
    let replicas = settings.replicas;
    record_blue_green(s, st);

    let available = alive
        .iter()
        .filter(|i| i.revision == active && i.available)
        .count() as i32;
    let enough = available >= replicas;
    let stamp = Stamp { generation, now };
    stamp.available(
        s,
        enough,
        format!("{available} of {replicas} instances of active revision {active} available"),
    );
    let aborted = st.aborted.as_deref() == Some(update);
    let complete = active == update && alive.len() as i32 == replicas && enough;
    let p = blue_green_progress(st, settings, update, &alive, aborted, complete, available);
    let to_status = |ok: bool| if ok { status::TRUE } else { status::FALSE };
    stamp.set(
        s,
        types::PROGRESSING,
        to_status(p.progressing),
        p.reason,
        p.message.clone(),
    );
    let (reason, message) = if aborted {
        (bg_reasons::ROLLOUT_ABORTED, p.message)
    } else {
        (reasons::AS_EXPECTED, String::new())
    };
    stamp.set(s, types::DEGRADED, to_status(aborted), reason, message);
    s.phase = Some(if !enough && p.phase != WorkloadPhase::Paused {
        WorkloadPhase::Degraded
    } else {
        p.phase
    });
}

/// The revision fields and the blue/green record of `s`: the planner's memory ([`blue_green_state`]
/// reads it back).
fn record_blue_green(s: &mut WorkloadStatus, st: &bluegreen::State) {
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
}

/// Where a blue/green rollout stands: the Progressing condition and the phase (before
/// availability is taken into account).
struct Progress {
    progressing: bool,
    reason: &'static str,
    message: String,
    phase: WorkloadPhase,
}

fn blue_green_progress(
    st: &bluegreen::State,
    settings: &bluegreen::Settings,
    update: &str,
    alive: &[&ObservedInstance],
    aborted: bool,
    complete: bool,
    available: i32,
) -> Progress {
    let active = st.active.as_deref().unwrap_or_default();
    let replicas = settings.replicas;
    let step = |reason, message, phase| Progress {
        progressing: true,
        reason,
        message,
        phase,
    };
    if settings.paused {
        return step(
            reasons::PAUSED,
            "the workload is paused".into(),
            WorkloadPhase::Paused,
        );
    }
    if aborted {
        let why = st.abort_reason.as_deref().unwrap_or_default();
        return Progress {
            progressing: false,
            reason: bg_reasons::ROLLOUT_ABORTED,
            message: format!(
                "preview revision {update} was aborted ({why}); traffic stays on revision {active}"
            ),
            phase: WorkloadPhase::Degraded,
        };
    }
    if let Some(preview) = &st.preview {
        if st.preview_ready.is_some() && !st.promoting && !settings.auto_promote {
            return step(
                bg_reasons::AWAITING_PROMOTION,
                format!(
                    "preview revision {preview} is ready; promote it with: kubectl annotate workload <name> {}={preview}",
                    bulkhead_crds::ANNOTATION_PROMOTE
                ),
                WorkloadPhase::Paused,
            );
        }
        let ready = alive
            .iter()
            .filter(|i| &i.revision == preview && i.ready && i.verified)
            .count();
        let wanted = if st.promoting {
            replicas
        } else {
            settings.preview_replicas.min(replicas)
        };
        return step(
            bg_reasons::PREVIEW_STARTED,
            format!(
                "{ready} of {wanted} preview instances of revision {preview} ready and verified; revision {active} has the traffic"
            ),
            WorkloadPhase::Progressing,
        );
    }
    if complete {
        step(
            reasons::NEW_REVISION_AVAILABLE,
            format!("revision {active} is available"),
            WorkloadPhase::Healthy,
        )
    } else if st.switched.is_some() && alive.iter().any(|i| i.revision != active) {
        step(
            bg_reasons::PROMOTED,
            format!(
                "revision {active} has the traffic; the previous revision retires after its delay"
            ),
            WorkloadPhase::Progressing,
        )
    } else {
        step(
            reasons::REVISION_UPDATED,
            format!("{available} of {replicas} instances of revision {active} available"),
            WorkloadPhase::Progressing,
        )
    }
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

    fn settings(replicas: i32) -> bluegreen::Settings {
        bluegreen::Settings {
            replicas,
            preview_replicas: replicas,
            auto_promote: false,
            auto_promotion_seconds: 0,
            scale_down_delay_seconds: 30,
            abort_scale_down_delay_seconds: 30,
            progress_deadline_seconds: 600,
            paused: false,
        }
    }

    fn state(active: &str, preview: Option<&str>) -> bluegreen::State {
        bluegreen::State {
            active: Some(active.into()),
            preview: preview.map(Into::into),
            ..Default::default()
        }
    }

    /// report_blue_green over `observed`: (phase, Progressing reason and status, Degraded).
    fn blue_green(
        st: &bluegreen::State,
        settings: &bluegreen::Settings,
        update: &str,
        observed: &[ObservedInstance],
    ) -> WorkloadStatus {
        let mut s = WorkloadStatus::default();
        report_blue_green(
            &mut s,
            st,
            settings,
            update,
            observed,
            Some(7),
            Time(Timestamp::from_second(50).unwrap()),
        );
        s
    }

    fn progressing(s: &WorkloadStatus) -> (String, String, String) {
        let c = conditions::find(&s.conditions, types::PROGRESSING).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn blue_green_availability_counts_the_active_revision_only() {
        let two = settings(2);
        // Active a fully available, preview b starting: availability is a's.
        let st = state("a", Some("b"));
        let s = blue_green(
            &st,
            &two,
            "b",
            &[
                inst("a1", "a", true),
                inst("a2", "a", true),
                inst("b1", "b", true),
                inst("b2", "b", false),
            ],
        );
        assert!(conditions::is_true(&s.conditions, types::AVAILABLE));
        assert_eq!(s.phase, Some(WorkloadPhase::Progressing));
        let (status, reason, message) = progressing(&s);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", bg_reasons::PREVIEW_STARTED)
        );
        assert!(
            message.starts_with("1 of 2 preview instances of revision b"),
            "{message}"
        );
        assert_eq!(s.active_revision.as_deref(), Some("a"));
        assert_eq!(s.current_revision.as_deref(), Some("a"));
        assert_eq!(s.preview_revision.as_deref(), Some("b"));
        assert!(!conditions::is_true(&s.conditions, types::DEGRADED));
        // Too few of the active revision available: Degraded, whatever the preview does.
        let s = blue_green(
            &st,
            &two,
            "b",
            &[
                inst("a1", "a", true),
                inst("b1", "b", true),
                inst("b2", "b", true),
            ],
        );
        assert!(!conditions::is_true(&s.conditions, types::AVAILABLE));
        assert_eq!(s.phase, Some(WorkloadPhase::Degraded));
    }

    #[test]
    fn a_ready_preview_waits_for_promotion_as_paused_and_the_record_is_kept() {
        let st = bluegreen::State {
            preview_started: Some(10),
            preview_ready: Some(20),
            switched: Some(5),
            previous_active: Some("z".into()),
            ..state("a", Some("b"))
        };
        let observed = [inst("a1", "a", true), inst("b1", "b", true)];
        let s = blue_green(&st, &settings(1), "b", &observed);
        assert_eq!(s.phase, Some(WorkloadPhase::Paused));
        let (status, reason, message) = progressing(&s);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", bg_reasons::AWAITING_PROMOTION)
        );
        assert!(
            message.contains(bulkhead_crds::ANNOTATION_PROMOTE),
            "{message}"
        );
        let record = s.blue_green.clone().unwrap();
        assert_eq!(secs(&record.preview_started_time), Some(10));
        assert_eq!(secs(&record.preview_ready_time), Some(20));
        assert_eq!(secs(&record.switched_time), Some(5));
        assert_eq!(record.previous_active_revision.as_deref(), Some("z"));
        assert_eq!(
            blue_green_state(&s),
            st,
            "the status holds the planner's memory"
        );
        // Promoting, or promoting by itself: starting, not waiting.
        let promoting = bluegreen::State {
            promoting: true,
            ..st.clone()
        };
        let s = blue_green(&promoting, &settings(1), "b", &observed);
        assert_eq!(progressing(&s).1, bg_reasons::PREVIEW_STARTED);
        let auto = bluegreen::Settings {
            auto_promote: true,
            ..settings(1)
        };
        let s = blue_green(&st, &auto, "b", &observed);
        assert_eq!(progressing(&s).1, bg_reasons::PREVIEW_STARTED);
        assert_eq!(s.phase, Some(WorkloadPhase::Progressing));
    }

    #[test]
    fn an_aborted_preview_is_degraded_with_its_reason_in_both_conditions() {
        let st = bluegreen::State {
            aborted: Some("b".into()),
            aborted_at: Some(30),
            abort_reason: Some("not ready in 600s".into()),
            ..state("a", Some("b"))
        };
        let s = blue_green(&st, &settings(1), "b", &[inst("a1", "a", true)]);
        assert_eq!(s.phase, Some(WorkloadPhase::Degraded));
        let (status, reason, message) = progressing(&s);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", bg_reasons::ROLLOUT_ABORTED)
        );
        assert!(
            message.contains("not ready in 600s") && message.contains("revision a"),
            "{message}"
        );
        let degraded = conditions::find(&s.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (
                degraded.status.as_str(),
                degraded.reason.as_str(),
                degraded.message.as_str()
            ),
            ("True", bg_reasons::ROLLOUT_ABORTED, message.as_str())
        );
        // Paused wins over an abort; a paused rollout below its replicas stays Paused.
        let paused = bluegreen::Settings {
            paused: true,
            ..settings(2)
        };
        let s = blue_green(&st, &paused, "b", &[inst("a1", "a", true)]);
        assert_eq!(s.phase, Some(WorkloadPhase::Paused));
        assert_eq!(progressing(&s).1, reasons::PAUSED);
        assert!(
            conditions::is_true(&s.conditions, types::DEGRADED),
            "the abort still shows"
        );
    }

    #[test]
    fn after_a_switch_the_old_revision_retires_then_the_rollout_is_complete() {
        let st = bluegreen::State {
            switched: Some(40),
            previous_active: Some("a".into()),
            ..state("b", None)
        };
        let retiring = [inst("b1", "b", true), inst("a1", "a", true)];
        let s = blue_green(&st, &settings(1), "b", &retiring);
        assert_eq!(s.phase, Some(WorkloadPhase::Progressing));
        assert_eq!(progressing(&s).1, bg_reasons::PROMOTED);
        let s = blue_green(&st, &settings(1), "b", &[inst("b1", "b", true)]);
        assert_eq!(s.phase, Some(WorkloadPhase::Healthy));
        let (_, reason, message) = progressing(&s);
        assert_eq!(reason, reasons::NEW_REVISION_AVAILABLE);
        assert_eq!(message, "revision b is available");
        // No switch yet and a stray instance of another revision: still updating.
        let s = blue_green(&state("b", None), &settings(1), "b", &retiring);
        let (_, reason, message) = progressing(&s);
        assert_eq!(reason, reasons::REVISION_UPDATED);
        assert_eq!(message, "1 of 1 instances of revision b available");
    }
}
