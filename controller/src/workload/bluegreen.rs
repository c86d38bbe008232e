//! The blue/green planner: a pure function from what is observed to what to do next.
//!
//! A blue/green rollout starts the update revision (the preview) beside the active revision,
//! waits until every preview instance is Ready with its isolation verified, and promotes it:
//! the active revision switches in one step, and the old instances retire after
//! scaleDownDelaySeconds — but never before every WorkloadService publishes the new active
//! revision, so that no client is sent to an instance that is going away. A preview that is
//! aborted (on request, or because it was not ready within progressDeadlineSeconds) never
//! receives traffic and retires after abortScaleDownDelaySeconds.
//!
//! Everything the planner remembers is in [`State`], which the reconciler stores in
//! `Workload.status` (`activeRevision`, `previewRevision`, `blueGreen`). With the instances it
//! is the whole state of a rollout, so a restarted controller carries on where it stopped.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::{Action, ObservedInstance, instance_name, scale_revision};

/// The strategy's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Instances of the active revision.
    pub replicas: i32,
    /// Instances of the preview revision before promotion (at most replicas).
    pub preview_replicas: i32,
    /// Promote without a user once the preview is ready.
    pub auto_promote: bool,
    /// Seconds between the preview being ready and an automatic promotion.
    pub auto_promotion_seconds: i64,
    /// Seconds the old revision stays warm after a switch.
    pub scale_down_delay_seconds: i64,
    /// Seconds an aborted preview keeps running.
    pub abort_scale_down_delay_seconds: i64,
    /// Seconds a preview may take to become ready before it is aborted.
    pub progress_deadline_seconds: i64,
    /// spec.paused: keep replicas, take no rollout step.
    pub paused: bool,
}

/// What the planner remembers between observations (times in Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The revision that receives traffic.
    pub active: Option<String>,
    /// The revision under test beside it.
    pub preview: Option<String>,
    /// When the preview's instances were first created.
    pub preview_started: Option<i64>,
    /// When every preview instance became ready.
    pub preview_ready: Option<i64>,
    /// Promotion decided; waiting for the preview to reach full replicas.
    pub promoting: bool,
    /// When traffic last switched.
    pub switched: Option<i64>,
    /// The revision that had traffic before the last switch.
    pub previous_active: Option<String>,
    /// The preview revision that was aborted.
    pub aborted: Option<String>,
    /// When it was aborted.
    pub aborted_at: Option<i64>,
    /// Why it was aborted.
    pub abort_reason: Option<String>,
}

/// Requests a user made with the promote and abort annotations, already matched against the
/// preview revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `bulkhead.dev/promote` names the preview revision.
    pub promote: bool,
    /// `bulkhead.dev/abort` names the preview revision.
    pub abort: bool,
}

/// Everything the planner looks at.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The revision of the current spec.
    pub update: &'a str,
    /// The strategy's settings.
    pub settings: Settings,
    /// What was stored last time.
    pub state: State,
    /// The user's requests.
    pub requests: Requests,
    /// The revision each WorkloadService of the Workload publishes now (empty: none exist).
    /// The revision traffic left retires only once every one publishes the new one.
    pub published: Vec<Option<String>>,
    /// Unix seconds.
    pub now: i64,
    /// The Workload's instances.
    pub observed: &'a [ObservedInstance],
}

/// A step of the rollout worth telling the user about (an Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Preview instances of a revision are being started.
    PreviewStarted {
        /// The preview revision.
        revision: String,
        /// The active revision beside it.
        active: String,
    },
    /// Every preview instance is ready and verified.
    PreviewReady {
        /// The preview revision.
        revision: String,
        /// Promotion waits for the annotation.
        manual: bool,
    },
    /// Traffic switched to the preview.
    Promoted {
        /// The previous active revision.
        from: String,
        /// The new active revision.
        to: String,
    },
    /// Traffic switched back to a revision that was still warm.
    RolledBack {
        /// The revision traffic left.
        from: String,
        /// The warm revision traffic returned to.
        to: String,
    },
    /// The preview was aborted; traffic stays on the active revision.
    Aborted {
        /// The aborted revision.
        revision: String,
        /// AbortRequested or ProgressDeadlineExceeded.
        reason: String,
    },
    /// The instances of a revision that no longer has traffic were deleted.
    ScaledDown {
        /// The retired revision.
        revision: String,
    },
}

/// Abort reasons.
pub mod reasons {
    /// The `bulkhead.dev/abort` annotation named the preview.
    pub const ABORT_REQUESTED: &str = "AbortRequested";
    /// The preview was not ready within progressDeadlineSeconds.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Creations and deletions to apply now.
    pub actions: Vec<Action>,
    /// What to store.
    pub state: State,
    /// What happened, for Events.
    pub steps: Vec<Step>,
    /// Seconds until something is due (a promotion, a deadline, a scale-down).
    pub wake_in: Option<i64>,
}

impl State {
    fn switch_to(&mut self, to: &str, now: i64) -> String {
        let from = self.active.clone().unwrap_or_default();
        self.previous_active = Some(from.clone());
        self.active = Some(to.to_string());
        self.switched = Some(now);
        self.clear_preview();
        if self.aborted.as_deref() == Some(to) {
            self.clear_abort();
        }
        from
    }

    fn clear_preview(&mut self) {
        self.preview = None;
        self.preview_started = None;
        self.preview_ready = None;
        self.promoting = false;
    }

    fn clear_abort(&mut self) {
        self.aborted = None;
        self.aborted_at = None;
        self.abort_reason = None;
    }
}

/// Plans the next step of `workload`'s blue/green rollout.
pub fn plan(workload: &str, input: &Input) -> Plan {
    let mut st = input.state.clone();
    let mut steps = Vec::new();
    let mut wake: Vec<i64> = Vec::new();

    // Finished instances never come back: delete them, the scaling below replaces them.
    let mut actions: Vec<Action> = (input.observed.iter())
        .filter(|i| i.finished && !i.deleting)
        .map(|i| Action::Delete(i.name.clone()))
        .collect();
    let mut by_rev: Revisions = BTreeMap::new();
    for i in input.observed.iter().filter(|i| !i.finished && !i.deleting) {
        by_rev.entry(i.revision.as_str()).or_default().push(i);
    }

    // The first time: the revision most instances run has the traffic, else the update.
    let update = input.update;
    let active = st.active.clone().unwrap_or_else(|| {
        by_rev
            .iter()
            .max_by_key(|(rev, v)| (v.len(), *rev == &update))
            .map_or(update.to_string(), |(rev, _)| rev.to_string())
    });
    st.active = Some(active.clone());
    // A new spec forgets an abort of another revision once that preview has retired.
    if st.aborted.as_deref().is_some_and(|a| a != update)
        && !by_rev.contains_key(st.aborted.as_deref().unwrap_or_default())
    {
        st.clear_abort();
    }

    advance(&mut st, input, &by_rev, &active, (&mut steps, &mut wake));
    scale_and_retire(
        workload,
        input,
        &st,
        &by_rev,
        &mut actions,
        (&mut steps, &mut wake),
    );
    Plan {
        actions,
        state: st,
        steps,
        wake_in: wake.into_iter().filter(|w| *w > 0).min(),
    }
}

/// The live instances of each revision.
type Revisions<'a> = BTreeMap<&'a str, Vec<&'a ObservedInstance>>;

/// How many instances of `rev` pass `f`.
fn count(by_rev: &Revisions, rev: &str, f: fn(&ObservedInstance) -> bool) -> i32 {
    by_rev
        .get(rev)
        .map_or(0, |v| v.iter().filter(|i| f(i)).count() as i32)
}

/// The preview replicas wanted now: all of them while promoting.
fn preview_want(st: &State, s: &Settings) -> i32 {
    if st.promoting {
        s.replicas
    } else {
        s.preview_replicas.min(s.replicas)
    }
}

/// The rollout's state machine for the update: nothing to do, aborted, back to the warm
/// previous revision, or the preview's progress (started, ready, promoted, aborted at the
/// deadline). The steps it takes and when to look again are added to `out`.
fn advance(
    st: &mut State,
    input: &Input,
    by_rev: &Revisions,
    active: &str,
    (steps, wake): (&mut Vec<Step>, &mut Vec<i64>),
) {
    let (update, now, s, requests) = (input.update, input.now, &input.settings, &input.requests);
    if update == active || st.aborted.as_deref() == Some(update) {
        // Nothing to roll out, or aborted: the traffic stays where it is until the spec
        // changes.
        st.clear_preview();
        return;
    }
    if st.previous_active.as_deref() == Some(update)
        && count(by_rev, update, |i| i.ready) >= s.replicas
    {
        // Going back to the revision that is still warm: switch at once.
        let from = st.switch_to(update, now);
        steps.push(Step::RolledBack {
            from,
            to: update.to_string(),
        });
        return;
    }
    if st.preview.as_deref() != Some(update) {
        st.clear_preview();
        st.preview = Some(update.to_string());
        st.preview_started = Some(now);
        steps.push(Step::PreviewStarted {
            revision: update.to_string(),
            active: active.to_string(),
        });
    }
    let ready = count(by_rev, update, |i| i.ready && i.verified);
    if s.paused {
        // No step while paused.
    } else if requests.abort {
        abort(st, steps, update, reasons::ABORT_REQUESTED, now);
    } else if ready >= preview_want(st, s) {
        if st.preview_ready.is_none() {
            st.preview_ready = Some(now);
            steps.push(Step::PreviewReady {
                revision: update.to_string(),
                manual: !s.auto_promote,
            });
        }
        let promote_at = st.preview_ready.unwrap_or(now) + s.auto_promotion_seconds;
        if !st.promoting && (requests.promote || (s.auto_promote && now >= promote_at)) {
            st.promoting = true;
        } else if !st.promoting && s.auto_promote {
            wake.push(promote_at - now);
        }
        if st.promoting && ready >= s.replicas {
            let from = st.switch_to(update, now);
            steps.push(Step::Promoted {
                from,
                to: update.to_string(),
            });
        }
    } else {
        // Readiness lost before promotion starts the wait for it again.
        if !st.promoting {
            st.preview_ready = None;
        }
        let deadline = st.preview_started.unwrap_or(now) + s.progress_deadline_seconds;
        if now >= deadline {
            let reason = reasons::PROGRESS_DEADLINE_EXCEEDED;
            abort(st, steps, update, reason, now);
        } else {
            wake.push(deadline - now);
        }
    }
}

/// Scales each revision to what the state says it should have: the active one to the
/// replicas, the preview to its share, and every other one to zero once its grace is over
/// (and, for the revision traffic left, once every service publishes the new one).
fn scale_and_retire(
    workload: &str,
    input: &Input,
    st: &State,
    by_rev: &Revisions,
    actions: &mut Vec<Action>,
    (steps, wake): (&mut Vec<Step>, &mut Vec<i64>),
) {
    let (s, now) = (&input.settings, input.now);
    let taken: BTreeSet<String> = input.observed.iter().map(|i| i.name.clone()).collect();
    let scale = |rev: &str, want: i32, actions: &mut Vec<Action>| {
        let have = by_rev.get(rev).cloned().unwrap_or_default();
        let mut names = (0..)
            .map(|k| instance_name(workload, rev, k))
            .filter(|name| !taken.contains(name));
        actions.extend(scale_revision(&have, want, &mut names));
    };
    let active = st.active.clone().unwrap_or_default();
    scale(&active, s.replicas, actions);
    if let Some(preview) = st.preview.clone() {
        scale(&preview, preview_want(st, s), actions);
    }
    let others: Vec<String> = by_rev
        .keys()
        .filter(|r| **r != active && Some(**r) != st.preview.as_deref())
        .map(|r| r.to_string())
        .collect();
    for rev in others {
        let keep_until = if st.previous_active.as_deref() == Some(rev.as_str()) {
            st.switched.map(|t| t + s.scale_down_delay_seconds)
        } else if st.aborted.as_deref() == Some(rev.as_str()) {
            st.aborted_at.map(|t| t + s.abort_scale_down_delay_seconds)
        } else {
            None
        };
        if let Some(at) = keep_until.filter(|at| *at > now) {
            wake.push(at - now);
            continue;
        }
        // Traffic may still reach the old revision through a service that has not switched.
        let switched_everywhere = input.published.iter().all(|p| p.as_ref() == Some(&active));
        if st.previous_active.as_deref() == Some(rev.as_str()) && !switched_everywhere {
            wake.push(1);
            continue;
        }
        scale(&rev, 0, actions);
        steps.push(Step::ScaledDown { revision: rev });
    }
}

fn abort(st: &mut State, steps: &mut Vec<Step>, revision: &str, reason: &str, now: i64) {
    st.clear_preview();
    st.aborted = Some(revision.to_string());
    st.aborted_at = Some(now);
    st.abort_reason = Some(reason.to_string());
    steps.push(Step::Aborted {
        revision: revision.to_string(),
        reason: reason.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fixtures::inst;

    fn settings(replicas: i32) -> Settings {
        Settings {
            replicas,
            preview_replicas: replicas,
            auto_promote: true,
            auto_promotion_seconds: 0,
            scale_down_delay_seconds: 30,
            abort_scale_down_delay_seconds: 10,
            progress_deadline_seconds: 60,
            paused: false,
        }
    }

    fn input<'a>(update: &'a str, state: State, observed: &'a [ObservedInstance]) -> Input<'a> {
        Input {
            update,
            settings: settings(2),
            state,
            requests: Requests::default(),
            published: vec![],
            now: 1000,
            observed,
        }
    }

    fn active(rev: &str) -> State {
        State {
            active: Some(rev.into()),
            ..Default::default()
        }
    }

    fn creates(p: &Plan) -> Vec<&str> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    fn deletes(p: &Plan) -> Vec<&str> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    fn blue_ready() -> Vec<ObservedInstance> {
        vec![inst("w-v1-0", "v1", true), inst("w-v1-1", "v1", true)]
    }

    /// Two ready v1 instances and `green` ready v2 instances.
    fn blue_green(green: usize) -> Vec<ObservedInstance> {
        let mut obs = blue_ready();
        obs.extend((0..green).map(|k| inst(&format!("w-v2-{k}"), "v2", true)));
        obs
    }

    /// v1 active, v2 previewing since `started`.
    fn previewing(started: i64) -> State {
        State {
            preview: Some("v2".into()),
            preview_started: Some(started),
            ..active("v1")
        }
    }

    #[test]
    fn first_deployment_is_active_at_once() {
        let p = plan("w", &input("v1", State::default(), &[]));
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert_eq!(p.state.preview, None);
        assert_eq!(creates(&p), ["w-v1-0", "w-v1-1"]);
    }

    #[test]
    fn a_new_revision_starts_as_preview_beside_the_active_one() {
        let obs = blue_ready();
        let p = plan("w", &input("v2", active("v1"), &obs));
        assert_eq!(p.state.active.as_deref(), Some("v1"), "traffic stays");
        assert_eq!(p.state.preview.as_deref(), Some("v2"));
        assert_eq!(p.state.preview_started, Some(1000));
        assert_eq!(creates(&p), ["w-v2-0", "w-v2-1"]);
        assert!(deletes(&p).is_empty(), "nothing of v1 goes");
        assert!(matches!(p.steps[0], Step::PreviewStarted { .. }));
    }

    #[test]
    fn promotion_needs_ready_and_verified_preview_instances() {
        let mut obs = blue_ready();
        obs.push(inst("w-v2-0", "v2", true));
        let mut unverified = inst("w-v2-1", "v2", true);
        unverified.verified = false;
        obs.push(unverified);
        let st = previewing(990);
        let p = plan("w", &input("v2", st.clone(), &obs));
        assert_eq!(
            p.state.active.as_deref(),
            Some("v1"),
            "one preview not verified"
        );
        assert_eq!(p.state.preview_ready, None);

        obs[3].verified = true;
        let p = plan("w", &input("v2", st, &obs));
        assert_eq!(p.state.active.as_deref(), Some("v2"), "auto-promoted");
        assert_eq!(p.state.previous_active.as_deref(), Some("v1"));
        assert_eq!(p.state.switched, Some(1000));
        assert!(
            deletes(&p).is_empty(),
            "v1 stays warm for scaleDownDelaySeconds"
        );
        assert_eq!(p.wake_in, Some(30));
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::Promoted { from, to } if from == "v1" && to == "v2"))
        );
    }

    #[test]
    fn the_old_revision_retires_after_the_delay_and_only_once_services_switched() {
        let obs = blue_green(2);
        let st = State {
            active: Some("v2".into()),
            previous_active: Some("v1".into()),
            switched: Some(960),
            ..Default::default()
        };
        let mut i = input("v2", st.clone(), &obs);
        i.now = 985;
        assert!(deletes(&plan("w", &i)).is_empty(), "within the delay");
        i.now = 995;
        i.published = vec![Some("v2".into()), Some("v1".into())];
        let p = plan("w", &i);
        assert!(deletes(&p).is_empty(), "a service still points at v1");
        assert_eq!(p.wake_in, Some(1));
        i.published = vec![Some("v2".into()), Some("v2".into())];
        let p = plan("w", &i);
        assert_eq!(deletes(&p), ["w-v1-1", "w-v1-0"]);
        assert!(p.steps.contains(&Step::ScaledDown {
            revision: "v1".into()
        }));
    }

    #[test]
    fn with_no_delay_the_switch_still_waits_for_the_services() {
        let obs = blue_green(2);
        let st = previewing(990);
        let mut i = input("v2", st, &obs);
        i.settings.scale_down_delay_seconds = 0;
        i.published = vec![Some("v1".into())];
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v2"));
        assert!(
            deletes(&p).is_empty(),
            "the service still sends traffic to v1"
        );
        i.state = p.state;
        i.published = vec![Some("v2".into())];
        assert_eq!(deletes(&plan("w", &i)).len(), 2);
    }

    #[test]
    fn manual_promotion_waits_for_the_request() {
        let obs = blue_green(2);
        let st = previewing(900);
        let mut i = input("v2", st, &obs);
        i.settings.auto_promote = false;
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert_eq!(p.state.preview_ready, Some(1000));
        assert!(p.steps.contains(&Step::PreviewReady {
            revision: "v2".into(),
            manual: true
        }));
        // Long past the deadline: a ready preview waiting for promotion is not aborted.
        i.state = p.state;
        i.now = 5000;
        let p = plan("w", &i);
        assert_eq!(p.state.aborted, None);
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        i.requests.promote = true;
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v2"));
    }

    #[test]
    fn auto_promotion_waits_auto_promotion_seconds() {
        let obs = blue_green(2);
        let st = previewing(990);
        let mut i = input("v2", st, &obs);
        i.settings.auto_promotion_seconds = 20;
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert_eq!(p.wake_in, Some(20));
        i.state = p.state;
        i.now = 1020;
        assert_eq!(plan("w", &i).state.active.as_deref(), Some("v2"));
    }

    #[test]
    fn fewer_preview_replicas_scale_up_before_the_switch() {
        let mut obs = blue_ready();
        obs.push(inst("w-v2-0", "v2", true));
        let st = previewing(990);
        let mut i = input("v2", st, &obs);
        i.settings.preview_replicas = 1;
        let p = plan("w", &i);
        assert!(p.state.promoting);
        assert_eq!(
            p.state.active.as_deref(),
            Some("v1"),
            "not all replicas ready yet"
        );
        assert_eq!(creates(&p), ["w-v2-1"]);
        let state = p.state;
        obs.push(inst("w-v2-1", "v2", true));
        let mut i = input("v2", state, &obs);
        i.settings.preview_replicas = 1;
        assert_eq!(plan("w", &i).state.active.as_deref(), Some("v2"));
    }

    #[test]
    fn a_preview_that_is_never_ready_aborts_at_the_deadline() {
        let mut obs = blue_ready();
        obs.push(inst("w-v2-0", "v2", false));
        obs.push(inst("w-v2-1", "v2", false));
        let st = previewing(950);
        let mut i = input("v2", st, &obs);
        let p = plan("w", &i);
        assert_eq!(p.wake_in, Some(10), "deadline at 1010");
        assert_eq!(p.state.aborted, None);
        i.now = 1010;
        let p = plan("w", &i);
        assert_eq!(p.state.aborted.as_deref(), Some("v2"));
        assert_eq!(
            p.state.abort_reason.as_deref(),
            Some(reasons::PROGRESS_DEADLINE_EXCEEDED)
        );
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert_eq!(p.state.preview, None);
        assert!(deletes(&p).is_empty(), "the preview stays for inspection");
        // After abortScaleDownDelaySeconds the preview goes and is not started again.
        i.state = p.state;
        i.now = 1020;
        let p = plan("w", &i);
        assert_eq!(deletes(&p), ["w-v2-1", "w-v2-0"]);
        assert!(creates(&p).is_empty());
        assert_eq!(p.state.aborted.as_deref(), Some("v2"), "stays aborted");
    }

    #[test]
    fn an_abort_request_keeps_traffic_and_a_new_spec_clears_it() {
        let mut obs = blue_ready();
        obs.push(inst("w-v2-0", "v2", true));
        let st = previewing(990);
        let mut i = input("v2", st, &obs);
        i.settings.auto_promote = false;
        i.requests.abort = true;
        let p = plan("w", &i);
        assert_eq!(p.state.aborted.as_deref(), Some("v2"));
        assert_eq!(
            p.state.abort_reason.as_deref(),
            Some(reasons::ABORT_REQUESTED)
        );
        // A v3 spec: v2 retires now (it is not the aborted preview any more) and v3 previews.
        let mut i3 = input("v3", p.state, &obs);
        i3.settings.auto_promote = false;
        let p = plan("w", &i3);
        assert_eq!(p.state.preview.as_deref(), Some("v3"));
        assert!(deletes(&p).is_empty(), "v2 keeps its abort grace");
        assert_eq!(creates(&p), ["w-v3-0", "w-v3-1"]);
    }

    #[test]
    fn going_back_to_the_warm_revision_switches_at_once() {
        let obs = blue_green(2);
        let st = State {
            active: Some("v2".into()),
            previous_active: Some("v1".into()),
            switched: Some(990),
            ..Default::default()
        };
        let mut i = input("v1", st, &obs);
        i.settings.auto_promote = false;
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert_eq!(p.state.previous_active.as_deref(), Some("v2"));
        assert!(creates(&p).is_empty() && deletes(&p).is_empty());
        assert!(matches!(p.steps[0], Step::RolledBack { .. }));
    }

    #[test]
    fn failed_instances_are_replaced_in_their_revision() {
        let mut obs = blue_ready();
        obs[1].finished = true;
        let p = plan("w", &input("v1", active("v1"), &obs));
        assert_eq!(deletes(&p), ["w-v1-1"]);
        assert_eq!(creates(&p), ["w-v1-2"], "a fresh name, never a twin");
    }

    #[test]
    fn an_instance_on_a_draining_host_is_replaced_before_it_goes() {
        let mut obs = blue_ready();
        obs[0].evicting = true;
        let p = plan("w", &input("v1", active("v1"), &obs));
        assert_eq!(creates(&p), ["w-v1-2"], "the replacement first");
        assert!(
            deletes(&p).is_empty(),
            "only 2 available: the evicted one stays"
        );
        obs.push(inst("w-v1-2", "v1", false));
        let p = plan("w", &input("v1", active("v1"), &obs));
        assert!(p.actions.is_empty(), "the replacement is not available yet");
        obs[2].available = true;
        obs[2].ready = true;
        let p = plan("w", &input("v1", active("v1"), &obs));
        assert_eq!(deletes(&p), ["w-v1-0"]);
        assert!(creates(&p).is_empty());
    }

    #[test]
    fn paused_takes_no_step_but_keeps_replicas() {
        let obs = blue_green(2);
        let st = previewing(990);
        let mut i = input("v2", st, &obs);
        i.settings.paused = true;
        let p = plan("w", &i);
        assert_eq!(p.state.active.as_deref(), Some("v1"));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_superseded_preview_is_replaced_by_the_newer_one() {
        let mut obs = blue_ready();
        obs.push(inst("w-v2-0", "v2", false));
        let st = previewing(990);
        let p = plan("w", &input("v3", st, &obs));
        assert_eq!(p.state.preview.as_deref(), Some("v3"));
        assert_eq!(deletes(&p), ["w-v2-0"]);
        assert_eq!(creates(&p), ["w-v3-0", "w-v3-1"]);
    }

    /// Simulates a whole rollout: instances become ready one observation after they are
    /// created; at every point at most one revision has traffic and the active revision
    /// always has `replicas` ready instances.
    #[test]
    fn simulated_rollout_never_leaves_traffic_without_ready_instances() {
        let mut obs = blue_ready();
        let mut st = active("v1");
        let mut now = 1000;
        let mut switched = 0;
        for _ in 0..50 {
            let i = Input {
                now,
                ..input("v2", st.clone(), &obs)
            };
            let p = plan("w", &i);
            let active = p.state.active.clone().unwrap();
            let ready_active = obs
                .iter()
                .filter(|o| o.revision == active && o.ready)
                .count();
            assert!(
                ready_active >= 2,
                "active {active} has {ready_active} ready"
            );
            if p.state.active != st.active {
                switched += 1;
            }
            for o in obs.iter_mut() {
                o.ready = true;
                o.available = true;
            }
            for a in &p.actions {
                match a {
                    Action::Create(n) => obs.push(ObservedInstance {
                        name: n.clone(),
                        revision: "v2".into(),
                        ready: false,
                        available: false,
                        verified: true,
                        finished: false,
                        deleting: false,
                        evicting: false,
                    }),
                    Action::Delete(n) => obs.retain(|o| &o.name != n),
                }
            }
            st = p.state;
            now += 5;
        }
        assert_eq!(switched, 1);
        assert!(obs.iter().all(|o| o.revision == "v2"), "{obs:?}");
        assert_eq!(obs.len(), 2);
    }
}
