//! Registering the Host and renewing its Lease, the way a kubelet keeps its node alive.

use std::time::Duration;

use bulkhead_crds::{
    Host, HostStatus, MANAGER_NODE_AGENT,
    conditions::{self, status, types},
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Lease timing, as for a kubelet: renew every 10 s, expire after 40 s.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How often the agent renews.
    pub renew: Duration,
    /// How long a renewal is valid.
    pub duration: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            renew: Duration::from_secs(10),
            duration: Duration::from_secs(40),
        }
    }
}

/// Creates the Host if it does not exist (without touching spec.unschedulable, which the
/// user owns) and returns it.
///
/// With `unschedulable`, the Host registers cordoned (as a kubelet's
/// `--register-schedulable=false`): instances bound by hand run, the scheduler places none.
pub async fn ensure_host(client: &Client, name: &str, unschedulable: bool) -> kube::Result<Host> {
    let api: Api<Host> = Api::all(client.clone());
    let existing = api.get_opt(name).await?;
    if unschedulable && existing.is_none() {
        // Registered cordoned: spec.unschedulable belongs to the user from then on, so the
        // agent sets it only when it creates the Host, never on a later start.
        let host: Host = serde_json::from_value(json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "Host",
            "metadata": {"name": name},
            "spec": {"unschedulable": true},
        }))
        .map_err(kube::Error::SerdeError)?;
        let pp = PostParams {
            field_manager: Some(MANAGER_NODE_AGENT.into()),
            ..Default::default()
        };
        match api.create(&pp, &host).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name, "labels": {"bulkhead.dev/host": name}},
        // An empty spec: it creates a new Host, and claims no field of an existing one.
        "spec": {},
    });
    api.patch(
        name,
        &PatchParams::apply(MANAGER_NODE_AGENT),
        &Patch::Apply(&body),
    )
    .await
}

/// Writes the agent's view of the Host status (server-side apply, so other writers' fields
/// are untouched). `Ready` is set True: the agent is up and renewing its Lease.
pub async fn report_host_status(
    client: &Client,
    name: &str,
    mut status: HostStatus,
) -> kube::Result<()> {
    let api: Api<Host> = Api::all(client.clone());
    let now = Time(Timestamp::now());
    let previous = api
        .get_status(name)
        .await
        .ok()
        .and_then(|h| h.status)
        .unwrap_or_default();
    let mut conds = previous.conditions.clone();
    conditions::merge(
        &mut conds,
        conditions::new(
            types::READY,
            status::TRUE,
            "AgentReady",
            "the node agent is running and renews its Lease",
            None,
            now,
        ),
    );
    status.conditions = conds
        .into_iter()
        .filter(|c| c.type_ == types::READY)
        .collect();
    let body = json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "Host",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER_NODE_AGENT).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Renews the Host's Lease in `namespace` (creating it on first call), owned by the Host so
/// that deleting the Host removes it.
pub async fn renew_lease(
    client: &Client,
    namespace: &str,
    host: &Host,
    timing: LeaseTiming,
) -> kube::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = host.name_any();
    let owner = OwnerReference {
        api_version: Host::api_version(&()).into(),
        kind: Host::kind(&()).into(),
        name: name.clone(),
        uid: host.uid().unwrap_or_default(),
        ..Default::default()
    };
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![owner]),
            labels: Some([("bulkhead.dev/host".to_string(), name.clone())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(timing.duration.as_secs() as i32),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let mut body = serde_json::to_value(&lease).unwrap_or_default();
    body["apiVersion"] = json!("coordination.k8s.io/v1");
    body["kind"] = json!("Lease");
    api.patch(
        &name,
        &PatchParams::apply(MANAGER_NODE_AGENT).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
