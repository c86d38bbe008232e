//! Reading an attempt's result from its Instance, and the report table.

use bulkhead_crds::{Instance, InstancePhase};
use serde::Serialize;

use super::attempts::Attempt;
use crate::table;

/// What an attempt showed.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The wall held: the attempt was denied.
    Held,
    /// The wall failed: the attempt succeeded.
    Breached,
    /// The control succeeded, as it must.
    ControlOk,
    /// The control was denied: the suite cannot tell a held wall from a broken probe.
    ControlFailed,
    /// The attempt did not run to a verdict (image, start, or a probe usage error).
    Error,
    /// Still running when the time was up.
    Unfinished,
}

impl Verdict {
    /// Whether it fails the run.
    pub fn fails(self) -> bool {
        !matches!(self, Verdict::Held | Verdict::ControlOk)
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Breached => "BREACHED",
            Verdict::ControlOk => "control ok",
            Verdict::ControlFailed => "CONTROL FAILED",
            Verdict::Error => "ERROR",
            Verdict::Unfinished => "UNFINISHED",
        }
    }
}

/// One line of the report.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The attempt.
    pub attempt: String,
    /// The wall it tests.
    pub wall: String,
    /// What it showed.
    pub verdict: Verdict,
    /// Why: the probe's own line when readable, else the exit or the Instance's status.
    pub evidence: String,
}

/// Whether the instance has ended (so it can be judged).
pub fn ended(inst: &Instance) -> bool {
    matches!(
        inst.status.as_ref().and_then(|s| s.phase),
        Some(InstancePhase::Succeeded | InstancePhase::Failed)
    )
}

/// Judges `attempt` from its Instance (None: it is gone) and the probe's output, if read.
pub fn judge(attempt: &Attempt, inst: Option<&Instance>, probe_output: Option<&str>) -> Outcome {
    let status = inst.and_then(|i| i.status.clone()).unwrap_or_default();
    let exit = status.last_exit.as_ref().map(|e| e.exit_code);
    let verdict = match (status.phase, exit) {
        (Some(InstancePhase::Succeeded), _) | (Some(InstancePhase::Failed), Some(0)) => {
            if attempt.control {
                Verdict::ControlFailed
            } else {
                Verdict::Held
            }
        }
        (Some(InstancePhase::Failed), Some(1)) => {
            if attempt.control {
                Verdict::ControlOk
            } else {
                Verdict::Breached
            }
        }
        (Some(InstancePhase::Failed), _) => Verdict::Error,
        _ if inst.is_none() => Verdict::Error,
        _ => Verdict::Unfinished,
    };
    let line = probe_output.and_then(|o| o.lines().find(|l| !l.trim().is_empty()));
    let evidence = match (line, exit) {
        (Some(l), _) => l.trim().to_string(),
        (None, Some(code)) => format!("probe exited {code} ({})", meaning(code)),
        (None, None) => match (&status.reason, &status.message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            _ if inst.is_none() => "the instance is gone".into(),
            _ => format!(
                "phase {}",
                status
                    .phase
                    .map_or_else(|| "Pending".into(), |p| format!("{p:?}"))
            ),
        },
    };
    Outcome {
        attempt: attempt.name.into(),
        wall: attempt.wall.into(),
        verdict,
        evidence,
    }
}

fn meaning(code: i32) -> &'static str {
    match code {
        0 => "denied",
        1 => "succeeded",
        _ => "probe error",
    }
}

/// The report table and a summary line.
pub fn render(host: &str, outcomes: &[Outcome]) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.attempt.clone(),
                o.verdict.word().into(),
                o.wall.clone(),
                o.evidence.clone(),
            ]
        })
        .collect();
    let mut out = table::render(&["ATTEMPT", "RESULT", "WALL", "EVIDENCE"], &rows);
    let attempts = outcomes
        .iter()
        .filter(|o| !o.wall.starts_with("none"))
        .count();
    let named = |f: &dyn Fn(Verdict) -> bool| {
        outcomes
            .iter()
            .filter(|o| f(o.verdict))
            .map(|o| o.attempt.as_str())
            .collect::<Vec<_>>()
    };
    let breached = named(&|v| v == Verdict::Breached);
    let other = named(&|v| v.fails() && v != Verdict::Breached);
    let mut summary = format!("host {host}: ");
    if breached.is_empty() && other.is_empty() {
        summary.push_str(&format!(
            "all {attempts} attempts held; the control succeeded"
        ));
    }
    if !breached.is_empty() {
        summary.push_str(&format!(
            "{} of {attempts} attempts BREACHED: {}",
            breached.len(),
            breached.join(", ")
        ));
    }
    if !other.is_empty() {
        let sep = if breached.is_empty() { "" } else { "; " };
        summary.push_str(&format!(
            "{sep}no verdict or failed control: {}",
            other.join(", ")
        ));
    }
    out.push_str(&summary);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixtures, verify::attempts::ALL};
    use bulkhead_crds::instance::ExitStatus;

    fn ended_with(code: i32) -> Instance {
        let phase = if code == 0 {
            InstancePhase::Succeeded
        } else {
            InstancePhase::Failed
        };
        let mut inst = fixtures::instance("v", "verify", phase, false);
        inst.status.as_mut().unwrap().last_exit = Some(ExitStatus {
            exit_code: code,
            ..Default::default()
        });
        inst
    }

    #[test]
    fn exit_codes_become_verdicts_and_the_control_is_inverted() {
        let mount = &ALL[0];
        let control = ALL.last().unwrap();
        assert_eq!(
            judge(mount, Some(&ended_with(0)), None).verdict,
            Verdict::Held
        );
        assert_eq!(
            judge(mount, Some(&ended_with(1)), None).verdict,
            Verdict::Breached
        );
        assert_eq!(
            judge(mount, Some(&ended_with(2)), None).verdict,
            Verdict::Error
        );
        assert_eq!(
            judge(control, Some(&ended_with(1)), None).verdict,
            Verdict::ControlOk
        );
        assert_eq!(
            judge(control, Some(&ended_with(0)), None).verdict,
            Verdict::ControlFailed
        );
        let running = fixtures::instance("v", "verify", InstancePhase::Running, false);
        assert_eq!(
            judge(mount, Some(&running), None).verdict,
            Verdict::Unfinished
        );
        assert_eq!(judge(mount, None, None).verdict, Verdict::Error);
    }

    #[test]
    fn evidence_prefers_the_probes_own_words() {
        let mount = &ALL[0];
        let said = "DENIED mount tmpfs: Operation not permitted (errno 1)\n";
        assert_eq!(
            judge(mount, Some(&ended_with(0)), Some(said)).evidence,
            "DENIED mount tmpfs: Operation not permitted (errno 1)"
        );
        assert_eq!(
            judge(mount, Some(&ended_with(1)), None).evidence,
            "probe exited 1 (succeeded)"
        );
    }

    #[test]
    fn the_report_names_the_breaches() {
        let outcomes = vec![
            judge(&ALL[0], Some(&ended_with(1)), None),
            judge(&ALL[1], Some(&ended_with(0)), None),
            judge(ALL.last().unwrap(), Some(&ended_with(1)), None),
        ];
        let out = render("h1", &outcomes);
        assert!(out.contains("mount          BREACHED"), "{out}");
        assert!(
            out.ends_with("host h1: 1 of 2 attempts BREACHED: mount\n"),
            "{out}"
        );
        let held = render("h1", &outcomes[1..]);
        assert!(
            held.ends_with("host h1: all 1 attempts held; the control succeeded\n"),
            "{held}"
        );
    }
}
