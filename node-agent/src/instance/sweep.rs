//! Start-up and periodic housekeeping: rebuild the allocators from what runs, and remove
//! what should not run here (containers whose Instance is gone or bound elsewhere,
//! half-finished pulls and snapshots of an agent that was killed).

use std::{collections::HashSet, time::Duration};

use bulkhead_crds::{Instance, InstancePhase};
use kube::{Api, ResourceExt};
use tracing::{error, info, warn};

use super::{Context, Error, labels::ContainerIdentity, start::mcs_of, stop::teardown};
use crate::isolation::userns::UidRange;

/// Rebuilds the UID range and MCS allocators from the labels of existing containers.
pub async fn rebuild_allocations(ctx: &Context) -> Result<usize, Error> {
    let containers = ctx.containerd.list_containers(None).await?;
    let mut alloc = ctx
        .allocations
        .lock()
        .map_err(|_| Error::Host("allocator lock poisoned".into()))?;
    let mut restored = 0;
    for c in &containers {
        let Some(identity) = ContainerIdentity::from_labels(&c.id, &c.labels) else {
            continue;
        };
        if let Some(start) = identity.uid_start
            && let Err(e) = alloc.uids.restore(
                &identity.instance_uid,
                UidRange {
                    start,
                    size: UidRange::SIZE,
                },
            )
        {
            error!(container = %c.id, error = %e, "UID range of a running container is held twice");
        }
        if let Some(pair) = mcs_of(&c.labels)
            && let Err(e) = alloc.mcs.restore(&identity.instance_uid, pair)
        {
            error!(container = %c.id, error = %e, "MCS pair of a running container is held twice");
        }
        restored += 1;
    }
    Ok(restored)
}

/// Removes what a killed agent may have left half-done: pull leases (collecting their
/// content and snapshots) and extraction snapshots.
pub async fn clear_interrupted_work(ctx: &Context) -> Result<(), Error> {
    for lease in ctx.containerd.list_leases().await? {
        if lease.starts_with("bulkhead-pull-") {
            info!(%lease, "removing the lease of an interrupted pull");
            ctx.containerd.delete_lease(&lease, true).await?;
        }
    }
    let containers: HashSet<String> = ctx
        .containerd
        .list_containers(None)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    for key in ctx.containerd.list_snapshots().await? {
        let orphan_rootfs = key.starts_with("bh-") && !containers.contains(&key);
        if key.starts_with("extract-") || orphan_rootfs {
            info!(snapshot = %key, "removing a snapshot left by an interrupted start");
            ctx.containerd.remove_snapshot(&key).await?;
        }
    }
    Ok(())
}

/// Tears down containers whose Instance no longer exists, has another UID, or is bound to
/// another host (fencing).
pub async fn remove_orphans(ctx: &Context) -> Result<usize, Error> {
    let mut removed = 0;
    for c in ctx.containerd.list_containers(None).await? {
        let Some(identity) = ContainerIdentity::from_labels(&c.id, &c.labels) else {
            continue;
        };
        let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &identity.namespace);
        // Fencing: an Instance that is gone, bound elsewhere, being deleted, or given up as
        // Lost while this host was unreachable may have a replacement elsewhere already.
        let existing = api.get_opt(&identity.name).await?;
        let gone = existing
            .as_ref()
            .is_none_or(|i| i.uid().as_deref() != Some(identity.instance_uid.as_str()));
        let keep = match existing {
            Some(i) => {
                i.uid().as_deref() == Some(identity.instance_uid.as_str())
                    && i.spec.host_name.as_deref() == Some(ctx.host.as_str())
                    && i.metadata.deletion_timestamp.is_none()
                    && i.status.as_ref().and_then(|s| s.phase) != Some(InstancePhase::Lost)
            }
            None => false,
        };
        if !keep {
            warn!(container = %c.id, instance = %format!("{}/{}", identity.namespace, identity.name), "removing a container whose Instance is gone, deleted, lost or bound elsewhere");
            teardown(ctx, &c.id, &identity.instance_uid, Duration::from_secs(10)).await?;
            ctx.notifier.close(&c.id);
            // An Instance that no longer exists has nobody to read its logs; one that does
            // (lost, bound elsewhere) keeps them until its deletion removes them.
            if gone
                && let Some(log) = c.labels.get(super::labels::LOG_PATH)
                && let Err(e) = crate::logs::remove(std::path::Path::new(log))
            {
                warn!(log = %log, error = %e, "removing an orphan's logs failed");
            }
            removed += 1;
        }
    }
    Ok(removed)
}
