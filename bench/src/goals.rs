//! The goals of issue #16, each a ratio (or a bound) against a baseline of the same run,
//! judged met, not met, or not measured (a figure or its baseline is missing).

use serde::{Deserialize, Serialize};

use crate::{Run, cutover::Outcome, stats::ratio};

/// A goal's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The figure meets the goal.
    Met,
    /// It does not.
    NotMet,
    /// The figure or its baseline is missing from this run.
    NotMeasured,
}

impl Verdict {
    fn of(ok: Option<bool>) -> Self {
        match ok {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::NotMet,
            None => Verdict::NotMeasured,
        }
    }

    /// How the report prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One goal: what it asks, what this run measured, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// The goal as the issue words it.
    pub goal: &'static str,
    /// The figure, its baseline and their ratio, in words.
    pub measured: String,
    /// Met or not.
    pub verdict: Verdict,
}

fn goal(goal: &'static str, measured: String, ok: Option<bool>) -> Goal {
    Goal {
        goal,
        measured,
        verdict: Verdict::of(ok),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// Every goal of the issue, judged from a run (pure).
pub fn judge(run: &Run) -> Vec<Goal> {
    let mut goals = fanout_goals(run);
    goals.push(start_goal(run));
    goals.push(cutover_goal(run));
    goals.push(patched_goal(run));
    goals.push(goal(
        "`make bench` ≤ 15 min after the build",
        format!("{:.0} s", run.wall_s),
        Some(run.wall_s <= 900.0),
    ));
    goals
}

fn fanout_goals(run: &Run) -> Vec<Goal> {
    let f = run.fanout.as_ref();
    let first = f.and_then(|f| f.steps.first());
    let raw = f
        .and_then(|f| f.raw_instances.as_ref())
        .and_then(|r| r.done_s);
    let bound = first.and_then(|s| s.all_bound_s);
    let bound_ratio = bound.zip(raw).and_then(|(b, r)| ratio(b, r));
    let kcm = f.and_then(|f| f.kcm.as_ref()).and_then(|k| k.done_s);
    let available = first.and_then(|s| s.available_s);
    let faster = kcm.zip(available).and_then(|(k, a)| ratio(k, a));
    // The floor of "all Running" with no controller at all: raw creates, each followed by
    // the agent's Running write. Printed beside the goals it bounds.
    let floor = f.and_then(|f| f.raw_status.as_ref()).and_then(|r| r.done_s);
    let last = f.and_then(|f| f.steps.last()).filter(|s| s.to >= 10000);
    let peak = last.map(|s| s.controller.peak_rss);
    let n = first.map_or(0, |s| s.to);
    vec![
        goal(
            "fan-out 0 → 1000: all bound ≤ 1.25× the raw create ceiling (bound Instances, 32 in flight)",
            format!(
                "{} vs raw {}: {}{}",
                secs(bound),
                secs(raw),
                fmt_ratio(bound_ratio),
                floor.map_or_else(String::new, |fl| format!(
                    "; the raw create + Running loop (creates sharing the API server with reports, as here) takes {}",
                    secs(Some(fl))
                ))
            ),
            bound_ratio.map(|r| r <= 1.25),
        ),
        goal(
            "fan-out 0 → 1000: Available ≥ 5× faster than kcm's Deployment controller at its defaults",
            format!(
                "Available {} vs kcm {n} Pods created {}: {} faster{}",
                secs(available),
                secs(kcm),
                fmt_ratio(faster),
                floor.map_or_else(String::new, |fl| format!(
                    "; with no controller at all, raw creates each followed by the Running write take {} ({} faster than kcm)",
                    secs(Some(fl)),
                    fmt_ratio(kcm.and_then(|k| ratio(k, fl)))
                ))
            ),
            faster.map(|r| r >= 5.0),
        ),
        tuned_kcm_goal(f, available, raw, n),
        goal(
            "fan-out 0 → 10000: all bound ≤ 1.25× the raw create ceiling",
            format!(
                "{} (no raw create loop of 10000 in this run)",
                secs(last.and_then(|s| s.all_bound_s))
            ),
            None,
        ),
        goal(
            "controller peak RSS ≤ 100 MB at 10000 instances",
            peak.map_or_else(
                || "not reached".into(),
                |p| format!("{:.1} MB ({:.1} MiB)", p as f64 / 1e6, p as f64 / 1048576.0),
            ),
            peak.map(|p| p <= 100_000_000),
        ),
    ]
}

/// Available faster than kcm given `--kube-api-qps 500 --kube-api-burst 1000`.
fn tuned_kcm_goal(
    f: Option<&crate::fanout::Results>,
    available: Option<f64>,
    raw: Option<f64>,
    n: i32,
) -> Goal {
    let asks = "fan-out 0 → 1000: Available faster than kcm given --kube-api-qps 500 --kube-api-burst 1000";
    let tuned = f.and_then(|f| f.kcm_tuned.as_ref()).and_then(|k| k.done_s);
    let faster = tuned.zip(available).and_then(|(k, a)| ratio(k, a));
    let measured = match f.and_then(|f| f.kcm_tuned_error.as_deref()) {
        Some(e) if tuned.is_none() => format!("the tuned kcm baseline failed: {e}"),
        _ => format!(
            "Available {} vs tuned kcm {n} Pods created {}: {} faster{}",
            secs(available),
            secs(tuned),
            fmt_ratio(faster),
            raw.map_or_else(String::new, |r| format!(
                "; raw creates of {n} bound Instances alone, with no controller and no reports, take {}",
                secs(Some(r))
            ))
        ),
    };
    goal(asks, measured, faster.map(|r| r > 1.0))
}

fn start_goal(run: &Run) -> Goal {
    let s = run.start.as_ref();
    let (a, c) = (s.and_then(|s| s.agent), s.and_then(|s| s.ctr_cni));
    let (p50, p99) = match (a, c) {
        (Some(a), Some(c)) => (ratio(a.p50, c.p50), ratio(a.p99, c.p99)),
        _ => (None, None),
    };
    let measured = match (a, c) {
        (Some(a), Some(c)) => format!(
            "p50 {:.1} / p99 {:.1} ms against `ctr run` + the agent's CNI chain {:.1} / {:.1} ms: {} / {}",
            a.p50,
            a.p99,
            c.p50,
            c.p99,
            fmt_ratio(p50),
            fmt_ratio(p99)
        ),
        (Some(a), None) => format!(
            "p50 {:.1} / p99 {:.1} ms; the `ctr run` + CNI baseline has no starts in this run",
            a.p50, a.p99
        ),
        _ => "not measured".into(),
    };
    goal(
        "start p50 ≤ 1.15× and p99 ≤ 1.5× `ctr run` plus the same CNI chain",
        measured,
        p50.zip(p99).map(|(p50, p99)| p50 <= 1.15 && p99 <= 1.5),
    )
}

fn cutover_goal(run: &Run) -> Goal {
    match &run.cutover {
        Outcome::Measured(r) => {
            let p50 = r.switch.map(|s| s.p50);
            let ms = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"));
            goal(
                "blue/green cutover p50 ≤ 30 ms (release build), 0 failed requests",
                format!(
                    "p50 {}, {} of {} requests failed; the same slice written directly: p50 {}",
                    ms(p50),
                    r.failed_requests,
                    r.total_requests,
                    ms(r.direct.map(|d| d.p50))
                ),
                p50.map(|v| v <= 30.0 && r.failed_requests == 0),
            )
        }
        Outcome::NotMeasured { reason } => goal(
            "blue/green cutover p50 ≤ 30 ms (release build), 0 failed requests",
            reason.clone(),
            None,
        ),
        Outcome::Failed { error } => goal(
            "blue/green cutover p50 ≤ 30 ms (release build), 0 failed requests",
            format!("failed: {error}"),
            Some(false),
        ),
    }
}

fn patched_goal(run: &Run) -> Goal {
    let p = run.patched.as_ref();
    let preview = p.and_then(|p| p.preview).map(|s| s.p50);
    let measured = match (p, preview) {
        (Some(p), Some(v)) => format!(
            "push → preview started p50 {v:.2} s, push → traffic switched p50 {}, check interval {}",
            secs(p.switch.map(|s| s.p50)),
            secs(p.interval_s)
        ),
        _ => run
            .patched_error
            .as_ref()
            .map_or_else(|| "not measured".into(), |e| format!("failed: {e}")),
    };
    goal(
        "issue #17: with notifications on, the switch of a pushed image starts within 2 s, p50",
        measured,
        preview.map(|v| v <= 2.0),
    )
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "not reached".into(), |s| format!("{s:.2} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_run_measures_nothing_but_its_length() {
        let run = Run {
            wall_s: 1000.0,
            ..Run::empty(Outcome::NotMeasured {
                reason: "not selected".into(),
            })
        };
        let goals = judge(&run);
        let last = goals.last().map(|g| g.verdict);
        assert_eq!(last, Some(Verdict::NotMet), "1000 s is over 15 minutes");
        assert!(
            goals[..goals.len() - 1]
                .iter()
                .all(|g| g.verdict == Verdict::NotMeasured),
            "{goals:?}"
        );
    }

    fn summary(p50: f64, p99: f64) -> Option<crate::stats::Summary> {
        let mut v = vec![p50; 98];
        v.push(p99);
        v.push(p99);
        crate::stats::Summary::of(&v)
    }

    fn with_start(agent: (f64, f64), cni: (f64, f64)) -> Run {
        Run {
            start: Some(crate::start::Results {
                agent: summary(agent.0, agent.1),
                ctr_cni: summary(cni.0, cni.1),
                ..Default::default()
            }),
            ..Run::empty(Outcome::NotMeasured {
                reason: "not selected".into(),
            })
        }
    }

    fn find(run: &Run, starts: &str) -> Goal {
        judge(run)
            .into_iter()
            .find(|g| g.goal.starts_with(starts))
            .unwrap_or_else(|| panic!("no goal {starts}"))
    }

    #[test]
    fn the_start_goal_needs_both_ratios_to_ctr_run_with_cni() {
        let met = find(&with_start((110.0, 140.0), (100.0, 100.0)), "start p50");
        assert_eq!(met.verdict, Verdict::Met, "{met:?}");
        assert!(met.measured.contains("1.10× / 1.40×"), "{met:?}");
        let slow_p50 = find(&with_start((120.0, 140.0), (100.0, 100.0)), "start p50");
        assert_eq!(slow_p50.verdict, Verdict::NotMet, "{slow_p50:?}");
        let slow_p99 = find(&with_start((110.0, 160.0), (100.0, 100.0)), "start p50");
        assert_eq!(slow_p99.verdict, Verdict::NotMet, "{slow_p99:?}");
    }

    /// A baseline that created 1000 objects in `s` seconds.
    fn creation(s: f64) -> crate::fanout::Creation {
        crate::fanout::Creation {
            n: 1000,
            done_s: Some(s),
            ..Default::default()
        }
    }

    fn with_fanout(available: f64, tuned: Option<f64>, error: Option<&str>) -> Run {
        Run {
            fanout: Some(crate::fanout::Results {
                steps: vec![crate::fanout::Step {
                    to: 1000,
                    available_s: Some(available),
                    ..Default::default()
                }],
                kcm: Some(creation(50.0)),
                kcm_tuned: tuned.map(creation),
                kcm_tuned_error: error.map(String::from),
                ..Default::default()
            }),
            ..Run::empty(Outcome::NotMeasured {
                reason: "not selected".into(),
            })
        }
    }

    #[test]
    fn the_fanout_goals_name_the_floors_no_controller_gets_below() {
        let mut run = with_fanout(12.0, Some(3.0), None);
        if let Some(f) = run.fanout.as_mut() {
            f.raw_instances = Some(creation(4.0));
            f.raw_status = Some(creation(11.0));
        }
        let default = find(&run, "fan-out 0 → 1000: Available ≥ 5×");
        assert!(
            default
                .measured
                .contains("take 11.00 s (4.55× faster than kcm)"),
            "{default:?}"
        );
        assert_eq!(default.verdict, Verdict::NotMet, "the floor only explains");
        let tuned = find(&run, "fan-out 0 → 1000: Available faster than kcm given");
        assert!(
            tuned
                .measured
                .contains("alone, with no controller and no reports, take 4.00 s"),
            "{tuned:?}"
        );
        let bound = find(&run, "fan-out 0 → 1000: all bound");
        assert!(
            bound.measured.ends_with("as here) takes 11.00 s"),
            "{bound:?}"
        );
        // Without those loops the texts say nothing of them.
        let bare = find(
            &with_fanout(12.0, Some(3.0), None),
            "fan-out 0 → 1000: Available ≥ 5×",
        );
        assert!(!bare.measured.contains("no controller"), "{bare:?}");
    }

    #[test]
    fn the_tuned_kcm_goal_asks_for_faster_and_names_a_failure() {
        let tuned = "fan-out 0 → 1000: Available faster than kcm given";
        let faster = find(&with_fanout(8.0, Some(10.0), None), tuned);
        assert_eq!(faster.verdict, Verdict::Met, "{faster:?}");
        assert!(faster.measured.contains("1.25× faster"), "{faster:?}");
        let slower = find(&with_fanout(12.0, Some(10.0), None), tuned);
        assert_eq!(slower.verdict, Verdict::NotMet, "{slower:?}");
        let failed = find(&with_fanout(8.0, None, Some("up.sh failed")), tuned);
        assert_eq!(failed.verdict, Verdict::NotMeasured, "{failed:?}");
        assert!(failed.measured.contains("up.sh failed"), "{failed:?}");
        // The default-flags goal is judged beside it, from its own baseline.
        let default = find(
            &with_fanout(8.0, Some(10.0), None),
            "fan-out 0 → 1000: Available ≥ 5×",
        );
        assert_eq!(default.verdict, Verdict::Met, "50 s / 8 s: {default:?}");
    }
}
