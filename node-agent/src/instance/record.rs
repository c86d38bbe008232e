//! Record mode's output and the Events of seccomp notifications.
//!
//! A recording ends in a SeccompProfile `<workload>-recorded` (the Instance's
//! `bulkhead.dev/workload` label, its own name when it has none) in the Instance's
//! namespace, labelled `bulkhead.dev/host: <host>` (the host that recorded it first owns it:
//! node restriction refuses another host's write), written by server-side apply with field
//! manager `bulkhead-node-agent`: the
//! observed calls plus the runtime's minimal set allowed, EPERM for the rest, the per-call
//! counts in the annotation [`ANNOTATION_COUNTS`], and `status.recordedFrom`. It is written
//! when the instance is deleted, and while it runs each time the Instance's annotation
//! [`ANNOTATION_RECORD`] gets a new value.

use std::{collections::BTreeMap, sync::Arc};

use bulkhead_crds::{Instance, LABEL_HOST, LABEL_WORKLOAD, MANAGER_NODE_AGENT, SeccompProfile};
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Context, Error};
use crate::isolation::notify::{self, FirstSeen, Mode};

/// Annotation on a recorded SeccompProfile: the JSON object of calls observed per name.
pub const ANNOTATION_COUNTS: &str = "bulkhead.dev/syscall-counts";
/// Annotation on a Record-mode Instance: a new value writes the recorded profile now.
pub const ANNOTATION_RECORD: &str = "bulkhead.dev/record";

/// The name of the profile recorded from an Instance.
pub fn profile_name(instance: &Instance) -> String {
    let workload = instance
        .labels()
        .get(LABEL_WORKLOAD)
        .cloned()
        .unwrap_or_else(|| instance.name_any());
    format!("{workload}-recorded")
}

/// Writes the profile recorded from `instance` with the calls in `counts`.
pub async fn write_profile(
    ctx: &Context,
    instance: &Instance,
    counts: &BTreeMap<String, u64>,
) -> Result<String, Error> {
    let ns = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = profile_name(instance);
    let spec = notify::recorded_profile(counts);
    let counts_json = serde_json::to_string(counts)
        .map_err(|e| Error::Host(format!("serializing syscall counts: {e}")))?;
    let api: Api<SeccompProfile> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply(MANAGER_NODE_AGENT).force();
    let object = json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "SeccompProfile",
        "metadata": {
            "name": name,
            // Node restriction lets an agent write only the recorded profiles labelled
            // with its own host (charts/bulkhead/templates/admission-node-restriction.yaml).
            "labels": { LABEL_HOST: &ctx.host },
            "annotations": { ANNOTATION_COUNTS: counts_json },
        },
        "spec": spec,
    });
    api.patch(&name, &params, &Patch::Apply(&object)).await?;
    let workload = instance
        .labels()
        .get(LABEL_WORKLOAD)
        .cloned()
        .unwrap_or_else(|| instance.name_any());
    let status = json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "SeccompProfile",
        "status": {
            "digest": spec.content_digest(),
            "syscallCount": crate::isolation::seccomp::syscall_count(&spec),
            "recordedFrom": {
                "workload": workload,
                "instance": instance.name_any(),
                "recordedAt": Timestamp::now().to_string(),
            },
        },
    });
    api.patch_status(&name, &params, &Patch::Apply(&status))
        .await?;
    info!(instance = %instance.name_any(), profile = %name, observed = counts.len(), "wrote the recorded seccomp profile");
    publish(
        ctx,
        &reference(instance),
        EventType::Normal,
        "SeccompProfileRecorded",
        format!(
            "wrote SeccompProfile {name}: {} observed system calls and the runtime's minimal set",
            counts.len()
        ),
    )
    .await;
    Ok(name)
}

/// Whether a write failed because the namespace is being deleted (NamespaceLifecycle refuses
/// new objects in it) or is gone: such a write can never succeed.
pub fn namespace_going_away(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            (s.code == 403 && s.message.contains("because it is being terminated"))
                || (s.code == 404 && s.message.contains("namespaces"))
        }
        _ => false,
    }
}

/// Writes the recorded profile when the Instance asks for it with a new
/// [`ANNOTATION_RECORD`] value.
pub async fn on_request(ctx: &Context, instance: &Instance, container: &str) -> Result<(), Error> {
    let Some(wanted) = instance.annotations().get(ANNOTATION_RECORD) else {
        return Ok(());
    };
    let Some(session) = ctx.notifier.session(container) else {
        return Ok(());
    };
    if session.mode != Mode::Record
        || session
            .written_for
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .as_ref()
            == Some(wanted)
    {
        return Ok(());
    }
    write_profile(ctx, instance, &session.counts()).await?;
    if let Ok(mut w) = session.written_for.lock() {
        *w = Some(wanted.clone());
    }
    Ok(())
}

fn reference(instance: &Instance) -> ObjectReference {
    ObjectReference {
        api_version: Some("bulkhead.dev/v1alpha1".into()),
        kind: Some("Instance".into()),
        name: Some(instance.name_any()),
        namespace: instance.namespace(),
        uid: instance.uid(),
        ..Default::default()
    }
}

async fn publish(
    ctx: &Context,
    to: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Seccomp".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, to).await {
        warn!(error = %e, "publishing an event failed");
    }
}

/// The Events recorder of the agent.
pub fn recorder(client: Client, host: &str) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: MANAGER_NODE_AGENT.into(),
            instance: Some(host.to_string()),
        },
    )
}

/// Publishes an Event on the Instance the first time each system call is refused (or, in
/// Complain mode, would have been): reason `SeccompDenied` or `SeccompWouldDeny`. The
/// counts of every later call are in the metrics.
pub async fn publish_first_seen(ctx: Arc<Context>, mut rx: mpsc::UnboundedReceiver<FirstSeen>) {
    while let Some(seen) = rx.recv().await {
        let (reason, verb) = match seen.mode {
            Mode::Record => continue,
            Mode::Complain => (
                "SeccompWouldDeny",
                "would be refused (Complain mode: it ran)",
            ),
            Mode::Enforce { .. } => ("SeccompDenied", "was refused"),
        };
        let Some(session) = ctx.notifier.session(&seen.container) else {
            continue;
        };
        let Some((ns, name)) = session.instance.split_once('/') else {
            continue;
        };
        let to = ObjectReference {
            api_version: Some("bulkhead.dev/v1alpha1".into()),
            kind: Some("Instance".into()),
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        publish(
            &ctx,
            &to,
            EventType::Warning,
            reason,
            format!(
                "system call {} {verb} by the seccomp profile; later calls are counted in bulkhead_agent_seccomp_{}_total",
                seen.syscall,
                if reason == "SeccompDenied" { "denials" } else { "complaints" }
            ),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_terminating_namespace_is_recognised() {
        assert!(namespace_going_away(&api(
            403,
            "Forbidden",
            "seccompprofiles.bulkhead.dev \"web-recorded\" is forbidden: unable to create new content in namespace t-1 because it is being terminated"
        )));
        assert!(namespace_going_away(&api(
            404,
            "NotFound",
            "namespaces \"t-1\" not found"
        )));
        // Other refusals (node restriction, RBAC) are real errors, retried.
        assert!(!namespace_going_away(&api(
            403,
            "Forbidden",
            "seccompprofiles.bulkhead.dev is forbidden: ValidatingAdmissionPolicy denied"
        )));
        assert!(!namespace_going_away(&api(500, "InternalError", "etcd")));
    }
}
