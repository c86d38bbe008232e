//! Turning Instances into what the planner sees.

use bulkhead_crds::{
    Instance, InstancePhase,
    conditions::{self, types},
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::plan::ObservedInstance;

/// What the planner sees of an Instance at `now`.
pub fn observe(instance: &Instance, min_ready_seconds: i32, now: Timestamp) -> ObservedInstance {
    let status = instance.status.clone().unwrap_or_default();
    let ready_condition = conditions::find(&status.conditions, types::READY)
        .filter(|c| c.status == conditions::status::TRUE);
    let ready = status.phase == Some(InstancePhase::Running) && ready_condition.is_some();
    let available = ready
        && ready_condition.is_some_and(|c| {
            c.last_transition_time.0.as_second() + i64::from(min_ready_seconds) <= now.as_second()
        });
    ObservedInstance {
        name: instance.name_any(),
        revision: instance.spec.revision.clone(),
        ready,
        available,
        finished: matches!(
            status.phase,
            Some(InstancePhase::Failed | InstancePhase::Succeeded | InstancePhase::Lost)
        ),
        deleting: instance.metadata.deletion_timestamp.is_some(),
    }
}

/// Seconds until the first ready-but-not-yet-available instance becomes available.
pub fn next_available_in(
    instances: &[Instance],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<i64> {
    instances
        .iter()
        .filter_map(|i| {
            let s = i.status.as_ref()?;
            let c = conditions::find(&s.conditions, types::READY)
                .filter(|c| c.status == conditions::status::TRUE)?;
            let at = c.last_transition_time.0.as_second() + i64::from(min_ready_seconds);
            (at > now.as_second()).then_some(at - now.as_second())
        })
        .min()
}
