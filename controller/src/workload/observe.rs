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
    let none = bulkhead_crds::InstanceStatus::default();
    let status = instance.status.as_ref().unwrap_or(&none);
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
        verified: conditions::is_true(&status.conditions, types::ISOLATION_VERIFIED),
        finished: matches!(
            status.phase,
            Some(InstancePhase::Failed | InstancePhase::Succeeded | InstancePhase::Lost)
        ),
        deleting: instance.metadata.deletion_timestamp.is_some(),
        evicting: false,
    }
}

/// Seconds until the first ready-but-not-yet-available instance becomes available.
pub fn next_available_in<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<i64> {
    instances
        .into_iter()
        .filter_map(|i| {
            let s = i.status.as_ref()?;
            let c = conditions::find(&s.conditions, types::READY)
                .filter(|c| c.status == conditions::status::TRUE)?;
            let at = c.last_transition_time.0.as_second() + i64::from(min_ready_seconds);
            (at > now.as_second()).then_some(at - now.as_second())
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::{InstanceSpec, InstanceStatus, conditions::new};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn instance(phase: InstancePhase, ready_since: Option<i64>) -> Instance {
        let mut i = Instance::new(
            "w-r-0",
            InstanceSpec {
                host_name: Some("h".into()),
                revision: "r".into(),
                template: Default::default(),
                isolation: Default::default(),
                seccomp_profile_digest: None,
                image_signature: None,
            },
        );
        let mut status = InstanceStatus {
            phase: Some(phase),
            ..Default::default()
        };
        if let Some(t) = ready_since {
            status.conditions.push(new(
                types::READY,
                conditions::status::TRUE,
                "Running",
                "",
                None,
                Time(Timestamp::from_second(t).unwrap()),
            ));
        }
        i.status = Some(status);
        i
    }

    #[test]
    fn ready_available_and_finished() {
        let now = Timestamp::from_second(100).unwrap();
        let o = observe(&instance(InstancePhase::Running, Some(95)), 10, now);
        assert!(
            o.ready && !o.available,
            "ready 5 s of the 10 minReadySeconds"
        );
        assert_eq!(
            next_available_in(&[instance(InstancePhase::Running, Some(95))], 10, now),
            Some(5)
        );
        let o = observe(&instance(InstancePhase::Running, Some(80)), 10, now);
        assert!(o.ready && o.available);
        let o = observe(&instance(InstancePhase::Starting, None), 0, now);
        assert!(!o.ready && !o.finished);
        for phase in [
            InstancePhase::Failed,
            InstancePhase::Succeeded,
            InstancePhase::Lost,
        ] {
            assert!(
                observe(&instance(phase, None), 0, now).finished,
                "{phase:?}"
            );
        }
    }
}
