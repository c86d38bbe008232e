//! Stopping an Instance: SIGTERM, the grace period, SIGKILL, then nothing left behind.

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{Instance, InstancePhase};
use kube::{ResourceExt, runtime::controller::Action};
use tracing::{info, warn};

use super::{Context, Error, labels, status};
use crate::{failpoint, runtime::containerd::TaskState};

const SIGTERM: u32 = 15;
pub(crate) const SIGKILL: u32 = 9;

/// Tears down the Instance's container; the finalizer goes once this returns Ok.
pub async fn cleanup(instance: &Instance, ctx: &Arc<Context>) -> Result<Action, Error> {
    let uid = instance
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let id = labels::container_id(&uid);
    if let Some(mut b) = ctx.backoff() {
        b.forget(&uid);
    }
    let grace = Duration::from_secs(
        instance
            .spec
            .template
            .termination_grace_period_seconds
            .max(0) as u64,
    );
    if ctx.containerd.get_container(&id).await?.is_some() {
        let mut s = status::current(ctx, instance);
        let was_serving = s.phase == Some(InstancePhase::Running)
            && bulkhead_crds::conditions::is_true(
                &s.conditions,
                bulkhead_crds::conditions::types::READY,
            );
        if s.phase != Some(InstancePhase::Terminating)
            && !matches!(
                s.phase,
                Some(InstancePhase::Failed | InstancePhase::Succeeded)
            )
        {
            status::phase(
                &mut s,
                InstancePhase::Terminating,
                None,
                Some("stopping the instance".into()),
            );
            // Best effort: the Instance may already be going away.
            let _ = status::write(ctx, instance, &s).await;
        }
        // Deregistration: Service consumers drop an instance once it is deleting; give
        // them a moment before the process stops answering.
        if was_serving {
            tokio::time::sleep(ctx.deregistration.min(grace)).await;
        }
    }
    teardown(ctx, &id, &uid, grace).await?;
    // A recording ends in its profile; the session stays until that is written, so a failed
    // write is retried with the next reconcile, unless the namespace is going away: nothing
    // can be written there any more, and the finalizer must not hold its deletion up.
    if let Some(s) = ctx.notifier.session(&id)
        && s.mode == crate::isolation::notify::Mode::Record
    {
        match super::record::write_profile(ctx, instance, &s.counts()).await {
            Err(Error::Kube(e)) if super::record::namespace_going_away(&e) => {
                warn!(instance = %instance.name_any(), error = %e, "the namespace is being deleted: the recording is dropped");
            }
            other => {
                other?;
            }
        }
    }
    ctx.notifier.close(&id);
    let namespace = instance.namespace().unwrap_or_default();
    let log = ctx.log_path(&namespace, &instance.name_any(), &uid);
    if let Err(e) = crate::logs::remove(&log) {
        warn!(log = %log.display(), error = %e, "removing the instance's logs failed");
    }
    let key = format!("{namespace}/{}", instance.name_any());
    ctx.metrics.phase(&key, None);
    ctx.written.forget(&uid);
    info!(instance = %instance.name_any(), container = %id, "instance stopped and removed");
    Ok(Action::await_change())
}

/// Stops and removes a container, its snapshot and its allocations. Every step tolerates
/// having been done already, so an interrupted teardown simply runs again.
pub async fn teardown(
    ctx: &Context,
    id: &str,
    instance_uid: &str,
    grace: Duration,
) -> Result<(), Error> {
    super::probe::stop(ctx, id);
    let ctr = &ctx.containerd;
    match ctr.task_state(id).await? {
        Some(TaskState::Running(_) | TaskState::Other) => {
            ctr.kill_task(id, SIGTERM).await?;
            failpoint::hit("delete-after-sigterm");
            if tokio::time::timeout(grace, ctr.wait_task(id))
                .await
                .is_err()
            {
                warn!(
                    container = id,
                    ?grace,
                    "still running after the grace period; sending SIGKILL"
                );
                ctr.kill_task(id, SIGKILL).await?;
                if tokio::time::timeout(Duration::from_secs(30), ctr.wait_task(id))
                    .await
                    .is_err()
                {
                    return Err(Error::Host(format!(
                        "container {id} did not die after SIGKILL"
                    )));
                }
            }
            ctr.delete_task(id).await?;
        }
        Some(TaskState::Created(_)) => {
            ctr.kill_task(id, SIGKILL).await?;
            ctr.delete_task(id).await?;
        }
        Some(TaskState::Stopped(_)) => ctr.delete_task(id).await?,
        None => {}
    }
    // The network namespace went with the task; release the address.
    if let Some(cni) = &ctx.cni
        && let Err(e) = cni.del(id, None).await
    {
        warn!(container = id, error = %e, "releasing the instance's network failed");
    }
    // Its walls go with it (its address may be handed to another instance).
    if let Some(walls) = &ctx.walls
        && let Err(e) = walls.sync(false).await
    {
        warn!(container = id, error = %e, "removing the instance's network walls failed");
    }
    failpoint::hit("delete-after-delete-task");
    ctr.delete_container(id).await?;
    failpoint::hit("delete-after-delete-container");
    ctr.remove_snapshot(id).await?;
    if let Ok(mut alloc) = ctx.allocations.lock() {
        alloc.uids.release(instance_uid);
        alloc.mcs.release(instance_uid);
    }
    // Stop listening, except for a recording, whose counts `cleanup` still writes out.
    if ctx
        .notifier
        .session(id)
        .is_some_and(|s| s.mode != crate::isolation::notify::Mode::Record)
    {
        ctx.notifier.close(id);
    }
    Ok(())
}
