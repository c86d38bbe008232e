//! Writing Instance.status, the agent's report of what runs and what the kernel enforces.

use bulkhead_crds::{
    Instance, InstancePhase, InstanceStatus, MANAGER_NODE_AGENT,
    conditions::{self, status, types},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error};

/// The status the agent last wrote, without the controller's `Scheduled` condition.
pub fn current(instance: &Instance) -> InstanceStatus {
    let mut s = instance.status.clone().unwrap_or_default();
    s.conditions.retain(|c| c.type_ != types::SCHEDULED);
    s
}

/// Now, as an API time.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets a condition in `s`, keeping its transition time when the status holds.
pub fn set_condition(
    s: &mut InstanceStatus,
    type_: &str,
    holds: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let st = if holds { status::TRUE } else { status::FALSE };
    conditions::merge(
        &mut s.conditions,
        conditions::new(type_, st, reason, message, generation, now()),
    );
}

/// Marks the status as a phase with a reason and message.
pub fn phase(
    s: &mut InstanceStatus,
    phase: InstancePhase,
    reason: Option<&str>,
    message: Option<String>,
) {
    s.phase = Some(phase);
    s.reason = reason.map(String::from);
    s.message = message;
}

/// Writes `s` as the agent's part of the status (server-side apply, field manager
/// bulkhead-node-agent). Skips the write when nothing changed.
pub async fn write(ctx: &Context, instance: &Instance, s: &InstanceStatus) -> Result<(), Error> {
    let key = format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    ctx.metrics.phase(&key, s.phase.map(phase_name));
    if *s == current(instance) {
        return Ok(());
    }
    let namespace = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "Instance",
        "status": s,
    });
    api.patch_status(
        &instance.name_any(),
        &PatchParams::apply(MANAGER_NODE_AGENT).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Marks `s` as ended (Failed or Succeeded) with a reason and message, and clears Ready.
pub fn ended(
    s: &mut InstanceStatus,
    phase_: InstancePhase,
    reason: &str,
    message: String,
    generation: Option<i64>,
) {
    set_condition(s, types::READY, false, reason, &message, generation);
    phase(s, phase_, Some(reason), Some(message));
}

/// Marks the instance Failed with a reason and message, and clears Ready.
pub async fn fail(
    ctx: &Context,
    instance: &Instance,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let mut s = current(instance);
    ended(
        &mut s,
        InstancePhase::Failed,
        reason,
        message,
        instance.metadata.generation,
    );
    write(ctx, instance, &s).await
}

/// The name of a phase, for metrics.
pub fn phase_name(p: InstancePhase) -> &'static str {
    match p {
        InstancePhase::Pending => "Pending",
        InstancePhase::Scheduled => "Scheduled",
        InstancePhase::Pulling => "Pulling",
        InstancePhase::Starting => "Starting",
        InstancePhase::Running => "Running",
        InstancePhase::Succeeded => "Succeeded",
        InstancePhase::Failed => "Failed",
        InstancePhase::Terminating => "Terminating",
        InstancePhase::Lost => "Lost",
    }
}
