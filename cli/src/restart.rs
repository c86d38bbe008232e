//! `restart WL`: a new revision with the same template, so every instance is replaced by the
//! Workload's own strategy. It sets `spec.template.restartedAt`, which changes the revision
//! hash and nothing that runs.

use bulkhead_crds::Workload;
use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};

use crate::client::Kube;

/// Whether a restart may start now: not while paused or while a preview waits.
pub fn check(wl: &Workload) -> anyhow::Result<()> {
    let name = wl.name_any();
    if wl.spec.paused {
        anyhow::bail!(
            "workload {name} is paused: a restart would not roll out; resume it first (spec.paused: false)"
        );
    }
    let status = wl.status.clone().unwrap_or_default();
    if let Some(preview) = status.preview_revision {
        let aborted = status.blue_green.and_then(|b| b.aborted_revision);
        if aborted.as_deref() != Some(preview.as_str()) {
            anyhow::bail!(
                "workload {name} has a rollout in progress (preview revision {preview}): promote or abort it first"
            );
        }
    }
    Ok(())
}

/// Sets `spec.template.restartedAt` to now.
pub async fn run(kube: &Kube, name: &str) -> anyhow::Result<()> {
    check(&kube.workload(name).await?)?;
    let at = Timestamp::now().to_string();
    let patch = serde_json::json!({"spec": {"template": {"restartedAt": at}}});
    kube.api::<Workload>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("workload {name}: restart requested at {at}; a new revision rolls out");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn restarts_only_when_nothing_else_is_in_flight() {
        assert!(check(&fixtures::blue_green("a", None)).is_ok());
        assert!(check(&fixtures::rolling()).is_ok());
        let busy = check(&fixtures::blue_green("a", Some("b"))).unwrap_err();
        assert!(
            busy.to_string().contains("promote or abort it first"),
            "{busy}"
        );
        let mut paused = fixtures::rolling();
        paused.spec.paused = true;
        assert!(
            check(&paused)
                .unwrap_err()
                .to_string()
                .contains("is paused")
        );
    }
}
