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
use std::{collections::HashMap, sync::Mutex};

use super::{Context, Error};

/// The status the agent last wrote, without the controller's `Scheduled` condition: from
/// `instance`, or from the agent's own last write when `instance` is a cached copy the
/// watch has not refreshed since (see [`Written`]).
pub fn current(ctx: &Context, instance: &Instance) -> InstanceStatus {
    let mut s = ctx
        .written
        .newer_than(instance)
        .unwrap_or_else(|| instance.status.clone().unwrap_or_default());
    s.conditions.retain(|c| c.type_ != types::SCHEDULED);
    s
}

/// Each Instance's status as the agent's last write left it, with the resourceVersion the
/// API server gave that write, by UID. A reconcile woken by a task's exit can run on a
/// cached copy from before the agent's own last write; building on that copy would write
/// the older status back (a restart's start time, count and back-off undone). An entry
/// lives only until the watch delivers that version or a newer one.
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (u64, InstanceStatus)>>);

impl Written {
    /// The status of the agent's last write when `instance` is older than it.
    fn newer_than(&self, instance: &Instance) -> Option<InstanceStatus> {
        let uid = instance.metadata.uid.as_deref()?;
        let mut map = self.0.lock().ok()?;
        let (written, status) = map.get(uid)?;
        match resource_version(instance) {
            Some(seen) if seen < *written => Some(status.clone()),
            _ => {
                map.remove(uid);
                None
            }
        }
    }

    /// Remembers what a write returned.
    fn record(&self, returned: &Instance) {
        if let (Some(uid), Some(version), Ok(mut map)) = (
            returned.metadata.uid.clone(),
            resource_version(returned),
            self.0.lock(),
        ) {
            map.insert(uid, (version, returned.status.clone().unwrap_or_default()));
        }
    }

    /// Forgets a deleted Instance.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(uid);
        }
    }
}

/// An object's resourceVersion as a number. The API calls it opaque; it is etcd's revision
/// and grows with every write. When it does not parse, the cached copy is trusted.
fn resource_version(instance: &Instance) -> Option<u64> {
    instance.metadata.resource_version.as_deref()?.parse().ok()
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
    if *s == current(ctx, instance) {
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
    let began = std::time::Instant::now();
    let written = api
        .patch_status(
            &instance.name_any(),
            &PatchParams::apply(MANAGER_NODE_AGENT).force(),
            &Patch::Apply(&body),
        )
        .await?;
    tracing::debug!(instance = %instance.name_any(), %namespace, phase = ?s.phase, ms = began.elapsed().as_secs_f64() * 1000.0, "wrote the status");
    ctx.written.record(&written);
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
    let mut s = current(ctx, instance);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(uid: &str, version: &str, restarts: i32) -> Instance {
        serde_json::from_value(json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "Instance",
            "metadata": {"namespace": "a", "name": "web", "uid": uid, "resourceVersion": version},
            "spec": {"hostName": "h", "revision": "r", "template": {"image": "localhost:5000/web@sha256:0000000000000000000000000000000000000000000000000000000000000000"}},
            "status": {"restartCount": restarts},
        }))
        .unwrap()
    }

    #[test]
    fn an_older_cached_copy_yields_to_the_last_write_until_the_watch_catches_up() {
        let written = Written::default();
        written.record(&copy("u1", "12", 3));
        // The copy a task's exit woke a reconcile with predates the write.
        let stale = copy("u1", "9", 2);
        assert_eq!(written.newer_than(&stale).unwrap().restart_count, 3);
        // Another Instance is not affected.
        assert!(written.newer_than(&copy("u2", "9", 0)).is_none());
        // The watch delivered the write (or something newer): the copy wins and the entry goes.
        assert!(written.newer_than(&copy("u1", "12", 3)).is_none());
        assert!(written.newer_than(&stale).is_none(), "the entry is gone");
        // A version that does not parse trusts the copy.
        written.record(&copy("u1", "14", 4));
        assert!(written.newer_than(&copy("u1", "opaque", 1)).is_none());
        written.record(&copy("u1", "20", 5));
        written.forget("u1");
        assert!(written.newer_than(&stale).is_none());
    }
}
