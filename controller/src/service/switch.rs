//! The traffic switch, written the moment the Workload reconciler records it.
//!
//! The WorkloadService reconciler publishes on its own schedule: a promotion reaches it as a
//! wake or a watch event, often while it is still publishing the readiness change that led
//! to the promotion, and then it reads everything again before it writes. Instead, right
//! after recording a new active revision, the Workload reconciler rewrites the active
//! EndpointSlice of each of the Workload's Services itself, from the shared Instance store:
//! one write, the same body the WorkloadService reconciler would apply (which then finds
//! nothing to change and only reports).
//!
//! Two writers of one slice stay in order through a lane per WorkloadService: the switch
//! counts itself there and writes under its lock; the reconciler notes the count before it
//! reads the Workload and applies the active slice under the same lock only if no switch
//! came in between (else it drops what it computed from the old revision and runs again).
//! The reconciler's reads no longer hold the switch back, only its one active-slice write.
//! The switch writes only a slice the reconciler last saw as its own and names that slice's
//! UID, so a slice someone replaced or deleted in between is refused by the API server (the
//! UID is immutable, and an apply naming a UID creates nothing), never taken over.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bulkhead_crds::MANAGER_CONTROLLER;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    ownership::{self, Kind, Role},
    publish,
};
use crate::Context;

/// The UID of the active EndpointSlice the reconciler last saw as its own, if any.
pub type Known = Option<String>;

/// What the reconciler and the switch of one WorkloadService share.
#[derive(Debug, Default)]
pub struct Lane {
    /// The active slice the switch may write.
    pub known: Known,
    /// Switches so far: a reconcile that read the Workload before the latest one must not
    /// apply the active slice it computed.
    pub switches: u64,
}

/// One lane per WorkloadService (`namespace/name`).
#[derive(Debug, Default)]
pub struct Switchboard(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lane>>>>);

impl Switchboard {
    /// The lane of WorkloadService `namespace/name`.
    pub fn entry(&self, namespace: &str, name: &str) -> Arc<tokio::sync::Mutex<Lane>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(format!("{namespace}/{name}"))
            .or_default()
            .clone()
    }

    /// Forgets a deleted WorkloadService.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&format!("{namespace}/{name}"));
    }
}

/// What the reconciler knows after publishing: the active slice's UID when it applied that
/// slice and it was already its own (a slice it has just created is known from the next
/// reconcile on).
pub fn known_active_slice(plan: &ownership::Plan, slots: &[ownership::Slot]) -> Known {
    let applied = plan
        .apply
        .iter()
        .find(|(kind, role, _)| *kind == Kind::EndpointSlice && *role == Role::Active)?;
    slots
        .iter()
        .find(|s| s.kind == Kind::EndpointSlice && s.role == Role::Active && s.name == applied.2)
        .and_then(|s| match &s.claim {
            ownership::Claim::Ours(uid) => Some(uid.clone()),
            _ => None,
        })
}

/// Points the active EndpointSlice of every Service of Workload `namespace/workload` at the
/// ready instances of `active`. Best effort: what it cannot write, the WorkloadService
/// reconciler (woken next) writes.
pub async fn follow(ctx: &Context, namespace: &str, workload: &str, active: &str) {
    let (Ok(services), Ok(instances)) = (
        ctx.services.ready().await,
        ctx.placement.workload_instances(namespace, workload).await,
    ) else {
        return;
    };
    let ready = publish::ready_instances(instances.iter().map(AsRef::as_ref), Some(active));
    if ready.is_empty() {
        return;
    }
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let pp = PatchParams::apply(MANAGER_CONTROLLER).force();
    let ours = services.state().into_iter().filter(|s| {
        s.namespace().as_deref() == Some(namespace) && s.spec.workload_name == workload
    });
    for svc in ours {
        let name = svc.name_any();
        let entry = ctx.switchboard.entry(namespace, &name);
        let mut lane = entry.lock().await;
        lane.switches += 1;
        let Some(uid) = lane.known.as_deref() else {
            continue;
        };
        let mut body =
            publish::endpoint_slice(&svc, &name, Role::Active.as_str(), Some(active), &ready);
        body["metadata"]["uid"] = json!(uid);
        match slices.patch(&name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => {
                info!(service = %name, %namespace, revision = active, endpoints = ready.len(), "switched the active EndpointSlice")
            }
            Err(e) => {
                warn!(service = %name, %namespace, error = %e, "switching the active EndpointSlice failed; the WorkloadService reconciler follows")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ownership::{Claim, Slot};

    fn slots(active_slice: Claim) -> Vec<Slot> {
        let slot = |kind, role, name: &str, claim| Slot {
            kind,
            role,
            name: name.into(),
            claim,
        };
        vec![
            slot(Kind::Service, Role::Active, "web", Claim::Ours("s1".into())),
            slot(Kind::EndpointSlice, Role::Active, "web", active_slice),
            slot(Kind::Service, Role::Preview, "web-preview", Claim::Absent),
            slot(
                Kind::EndpointSlice,
                Role::Preview,
                "web-preview",
                Claim::Absent,
            ),
        ]
    }

    #[test]
    fn the_switch_may_write_only_an_active_slice_the_reconciler_applied_as_its_own() {
        let ours = slots(Claim::Ours("e1".into()));
        let plan = ownership::plan("ns", false, &ours);
        assert_eq!(known_active_slice(&plan, &ours).as_deref(), Some("e1"));
        // Just created: known from the next reconcile.
        let absent = slots(Claim::Absent);
        let plan = ownership::plan("ns", false, &absent);
        assert_eq!(known_active_slice(&plan, &absent), None);
        // Someone else's slice under the name: never.
        let foreign = slots(Claim::Foreign);
        let plan = ownership::plan("ns", false, &foreign);
        assert_eq!(known_active_slice(&plan, &foreign), None);
        // Our slice, but the active Service is someone else's: the slice is not published.
        let mut taken = slots(Claim::Ours("e1".into()));
        taken[0].claim = Claim::Foreign;
        let plan = ownership::plan("ns", false, &taken);
        assert_eq!(known_active_slice(&plan, &taken), None);
    }
}
