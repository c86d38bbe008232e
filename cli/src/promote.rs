//! `promote WL`: switches a BlueGreen Workload's traffic to its preview revision, through the
//! `bulkhead.dev/promote=<previewRevision>` annotation.

use bulkhead_crds::{ANNOTATION_PROMOTE, Workload, workload::StrategyType};
use kube::ResourceExt;

use crate::client::Kube;

/// The preview revision to promote, or why there is nothing to promote.
pub fn check(wl: &Workload) -> anyhow::Result<String> {
    let name = wl.name_any();
    let preview = in_preview(wl, "promote")?;
    let bg = wl
        .status
        .as_ref()
        .and_then(|s| s.blue_green.clone())
        .unwrap_or_default();
    if bg.promoting {
        anyhow::bail!("workload {name} is already promoting its preview revision {preview}");
    }
    Ok(preview)
}

/// The preview revision of a BlueGreen Workload that is not aborted, or an error naming why
/// `verb` has nothing to act on.
pub fn in_preview(wl: &Workload, verb: &str) -> anyhow::Result<String> {
    let name = wl.name_any();
    if wl.spec.strategy.type_ != StrategyType::BlueGreen {
        anyhow::bail!(
            "workload {name} uses the RollingUpdate strategy: {verb} applies to BlueGreen rollouts only (undo rolls back any rollout)"
        );
    }
    let status = wl.status.clone().unwrap_or_default();
    let Some(preview) = status.preview_revision else {
        anyhow::bail!(
            "workload {name} has no rollout in progress to {verb}: no preview revision (active revision {})",
            status.active_revision.as_deref().unwrap_or("none")
        );
    };
    let aborted = status.blue_green.and_then(|b| b.aborted_revision);
    if aborted.as_deref() == Some(preview.as_str()) {
        anyhow::bail!(
            "the preview revision {preview} of workload {name} was aborted: change the template (or undo) to start a new rollout"
        );
    }
    Ok(preview)
}

/// Annotates the Workload.
pub async fn run(kube: &Kube, name: &str) -> anyhow::Result<()> {
    let revision = check(&kube.workload(name).await?)?;
    kube.annotate_workload(name, ANNOTATION_PROMOTE, &revision)
        .await?;
    println!("workload {name}: promoting revision {revision}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn promotes_the_preview_and_refuses_when_there_is_none() {
        assert_eq!(check(&fixtures::blue_green("a", Some("b"))).unwrap(), "b");
        let none = check(&fixtures::blue_green("a", None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            none,
            "workload web has no rollout in progress to promote: no preview revision (active revision a)"
        );
        let rolling = check(&fixtures::rolling()).unwrap_err().to_string();
        assert!(rolling.contains("RollingUpdate strategy"), "{rolling}");
    }

    #[test]
    fn refuses_a_preview_that_is_already_promoting_or_aborted() {
        let mut wl = fixtures::blue_green("a", Some("b"));
        let st = wl.status.as_mut().unwrap();
        st.blue_green = Some(bulkhead_crds::workload::BlueGreenStatus {
            promoting: true,
            ..Default::default()
        });
        assert!(
            check(&wl)
                .unwrap_err()
                .to_string()
                .contains("already promoting")
        );
        let st = wl.status.as_mut().unwrap();
        st.blue_green = Some(bulkhead_crds::workload::BlueGreenStatus {
            aborted_revision: Some("b".into()),
            ..Default::default()
        });
        assert!(check(&wl).unwrap_err().to_string().contains("was aborted"));
    }
}
