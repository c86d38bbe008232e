//! Fixture objects for the rendering tests.

#![allow(clippy::unwrap_used)]

use bulkhead_crds::{
    Instance, InstancePhase, InstanceSpec, InstanceStatus, LABEL_REVISION, LABEL_WORKLOAD,
    Workload, WorkloadSpec, WorkloadStatus,
    conditions::{self, types},
    workload::{BlueGreen, Strategy, StrategyType, WorkloadPhase},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::api::ObjectMeta;

/// A fixed "now" the fixtures' times are relative to.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn time(seconds_ago: i64) -> Time {
    Time(Timestamp::from_second(now().as_second() - seconds_ago).unwrap())
}

/// A BlueGreen Workload `web` in `shop`, two replicas, with `active` and an optional preview.
pub fn blue_green(active: &str, preview: Option<&str>) -> Workload {
    let spec: WorkloadSpec = serde_json::from_value(serde_json::json!({
        "owner": "team", "replicas": 2, "template": {"image": "web:v1"}
    }))
    .unwrap();
    let mut wl = Workload::new("web", spec);
    wl.metadata.namespace = Some("shop".into());
    wl.spec.strategy = Strategy {
        type_: StrategyType::BlueGreen,
        blue_green: Some(BlueGreen::default()),
        rolling_update: None,
    };
    wl.status = Some(WorkloadStatus {
        active_revision: Some(active.into()),
        preview_revision: preview.map(Into::into),
        update_revision: Some(preview.unwrap_or(active).into()),
        phase: Some(if preview.is_some() {
            WorkloadPhase::Paused
        } else {
            WorkloadPhase::Healthy
        }),
        ..Default::default()
    });
    wl
}

/// A rolling Workload `api` in `shop`.
pub fn rolling() -> Workload {
    let spec: WorkloadSpec = serde_json::from_value(serde_json::json!({
        "owner": "team", "template": {"image": "api:v1"}
    }))
    .unwrap();
    let mut wl = Workload::new("api", spec);
    wl.metadata.namespace = Some("shop".into());
    wl.status = Some(WorkloadStatus {
        active_revision: Some("a1".into()),
        phase: Some(WorkloadPhase::Healthy),
        ..Default::default()
    });
    wl
}

/// An Instance of `web` in `shop` on host `h1`, of `revision`, in `phase`, Ready or not.
pub fn instance(name: &str, revision: &str, phase: InstancePhase, ready: bool) -> Instance {
    let mut inst = Instance::new(
        name,
        InstanceSpec {
            host_name: Some("h1".into()),
            revision: revision.into(),
            template: serde_json::from_value(serde_json::json!({"image": "web:v1"})).unwrap(),
            isolation: Default::default(),
            seccomp_profile_digest: None,
            image_signature: None,
        },
    );
    inst.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop".into()),
        labels: Some(
            [
                (LABEL_WORKLOAD.to_string(), "web".to_string()),
                (LABEL_REVISION.to_string(), revision.to_string()),
            ]
            .into(),
        ),
        creation_timestamp: Some(time(90)),
        ..Default::default()
    };
    let status = if ready { "True" } else { "False" };
    inst.status = Some(InstanceStatus {
        phase: Some(phase),
        conditions: vec![
            conditions::new(types::READY, status, "Probe", "", None, time(60)),
            conditions::new(
                types::ISOLATION_VERIFIED,
                "True",
                "Verified",
                "",
                None,
                time(60),
            ),
        ],
        ..Default::default()
    });
    inst
}

/// Seconds before [`now`] as a Time.
pub fn ago(seconds: i64) -> Time {
    time(seconds)
}
