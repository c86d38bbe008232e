//! `abort WL`: ends a BlueGreen Workload's preview, through the `bulkhead.dev/abort=<rev>`
//! annotation. Traffic stays on the active revision.

use bulkhead_crds::{ANNOTATION_ABORT, Workload};

use crate::{client::Kube, promote};

/// The preview revision to abort, or why there is nothing to abort.
pub fn check(wl: &Workload) -> anyhow::Result<String> {
    promote::in_preview(wl, "abort")
}

/// Annotates the Workload.
pub async fn run(kube: &Kube, name: &str) -> anyhow::Result<()> {
    let revision = check(&kube.workload(name).await?)?;
    kube.annotate_workload(name, ANNOTATION_ABORT, &revision)
        .await?;
    println!("workload {name}: aborting revision {revision}; traffic stays on the active revision");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn aborts_the_preview_and_refuses_when_there_is_none() {
        assert_eq!(check(&fixtures::blue_green("a", Some("b"))).unwrap(), "b");
        let err = check(&fixtures::blue_green("a", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no rollout in progress to abort"), "{err}");
    }
}
