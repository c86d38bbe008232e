//! Small readings of Bulkhead objects that several subcommands share.

use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD,
    conditions::{self, types},
};
use kube::ResourceExt;

/// The condition's status ("True", "False", "Unknown"), "-" when absent.
pub fn condition(inst: &Instance, type_: &str) -> String {
    inst.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, type_))
        .map_or_else(|| "-".into(), |c| c.status.clone())
}

/// Whether the instance is Ready.
pub fn is_ready(inst: &Instance) -> bool {
    inst.status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, types::READY))
}

/// Its phase as a word, "Pending" before the agent wrote one.
pub fn phase(inst: &Instance) -> String {
    inst.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".into(), |p| format!("{p:?}"))
}

/// Whether the instance ended or is going (it no longer counts toward a revision).
pub fn is_gone(inst: &Instance) -> bool {
    inst.metadata.deletion_timestamp.is_some()
        || matches!(
            inst.status.as_ref().and_then(|s| s.phase),
            Some(InstancePhase::Failed | InstancePhase::Succeeded | InstancePhase::Lost)
        )
}

/// Whether the instance belongs to the Workload `name` in `namespace`.
pub fn belongs_to(inst: &Instance, namespace: Option<&str>, name: &str) -> bool {
    inst.labels().get(LABEL_WORKLOAD).map(String::as_str) == Some(name)
        && inst.namespace().as_deref() == namespace
}

/// A duration in seconds the way kubectl prints ages: 45s, 12m, 5h, 3d.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(-3), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }

    #[test]
    fn ready_gone_and_ownership() {
        let ready = fixtures::instance("web-1", "r1", InstancePhase::Running, true);
        assert!(is_ready(&ready) && !is_gone(&ready));
        assert_eq!(condition(&ready, types::READY), "True");
        assert!(belongs_to(&ready, Some("shop"), "web"));
        assert!(!belongs_to(&ready, Some("other"), "web"));
        let done = fixtures::instance("web-2", "r1", InstancePhase::Succeeded, false);
        assert!(is_gone(&done) && !is_ready(&done));
        assert_eq!(phase(&done), "Succeeded");
    }
}
