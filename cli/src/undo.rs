//! `undo WL [--to-revision N]`: rolls a Workload back to a revision of its history, the way
//! docs/operations.md does with kubectl: the Workload's template and isolation are replaced by
//! those the revision's ControllerRevision holds, so its revision hash is the old one again.

use bulkhead_crds::{LABEL_REVISION, LABEL_WORKLOAD, Workload};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::{
    ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::Value;

use crate::{args::UndoArgs, client::Kube};

/// One revision of a Workload's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The revision hash.
    pub revision: String,
    /// Its number; the newest is the highest.
    pub number: i64,
    /// `{"template": ..., "isolation": ...}`.
    pub data: Value,
}

/// The history from the Workload's ControllerRevisions, oldest first.
pub fn history(revisions: &[ControllerRevision]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = revisions
        .iter()
        .filter_map(|c| {
            Some(Entry {
                revision: c.labels().get(LABEL_REVISION)?.clone(),
                number: c.revision,
                data: c.data.as_ref()?.0.clone(),
            })
        })
        .collect();
    entries.sort_by_key(|e| e.number);
    entries
}

/// The revision to go back to: number `to`, or the newest that is not `current`.
pub fn pick<'a>(
    workload: &str,
    history: &'a [Entry],
    current: Option<&str>,
    to: Option<i64>,
) -> anyhow::Result<&'a Entry> {
    let numbers = || {
        history
            .iter()
            .map(|e| format!("{} ({})", e.number, e.revision))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = match to {
        Some(n) => history.iter().find(|e| e.number == n).ok_or_else(|| {
            anyhow::anyhow!(
                "workload {workload} has no revision {n}; its history: {}",
                numbers()
            )
        })?,
        None => history
            .iter()
            .rev()
            .find(|e| Some(e.revision.as_str()) != current)
            .ok_or_else(|| {
                anyhow::anyhow!("workload {workload} has no earlier revision to go back to")
            })?,
    };
    if Some(entry.revision.as_str()) == current {
        anyhow::bail!(
            "revision {} ({}) is already the current revision of workload {workload}",
            entry.number,
            entry.revision
        );
    }
    Ok(entry)
}

/// The Workload with its spec's template and isolation replaced by the revision's.
pub fn rolled_back(mut wl: Workload, entry: &Entry) -> anyhow::Result<Workload> {
    let template = entry
        .data
        .get("template")
        .ok_or_else(|| anyhow::anyhow!("revision {} holds no template", entry.revision))?;
    wl.spec.template = serde_json::from_value(template.clone())?;
    wl.spec.isolation = match entry.data.get("isolation") {
        Some(i) => serde_json::from_value(i.clone())?,
        None => Default::default(),
    };
    Ok(wl)
}

/// Finds the revision and replaces the Workload's spec. A conflict caused only by a status write
/// (the generation is unchanged) is retried on the fresh object; a spec change meanwhile refuses.
pub async fn run(kube: &Kube, args: &UndoArgs) -> anyhow::Result<()> {
    const TRIES: usize = 5;
    let name = &args.workload;
    let mut wl = kube.workload(name).await?;
    let generation = wl.metadata.generation;
    let lp = ListParams::default().labels(&format!("{LABEL_WORKLOAD}={name}"));
    let revisions = kube.api::<ControllerRevision>().list(&lp).await?.items;
    let history = history(&revisions);
    let current = wl.status.as_ref().and_then(|s| s.update_revision.clone());
    let entry = pick(name, &history, current.as_deref(), args.to_revision)?;
    for _ in 0..TRIES {
        let desired = rolled_back(wl, entry)?;
        match kube
            .api::<Workload>()
            .replace(name, &PostParams::default(), &desired)
            .await
        {
            Ok(_) => {
                println!(
                    "workload {name}: rolling back to revision {} ({})",
                    entry.number, entry.revision
                );
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                wl = kube.workload(name).await?;
                if wl.metadata.generation != generation {
                    anyhow::bail!("workload {name} changed while undoing it: run the command again")
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "workload {name} kept changing status while undoing it ({TRIES} tries): run the command again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(revision: &str, number: i64) -> Entry {
        Entry {
            revision: revision.into(),
            number,
            data: json!({"template": {"image": format!("web:{revision}")}, "isolation": {}}),
        }
    }

    #[test]
    fn goes_back_to_the_previous_revision_or_the_one_named() {
        let h = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        assert_eq!(pick("web", &h, Some("c"), None).unwrap().revision, "b");
        assert_eq!(pick("web", &h, Some("c"), Some(1)).unwrap().revision, "a");
        let missing = pick("web", &h, Some("c"), Some(7)).unwrap_err().to_string();
        assert_eq!(
            missing,
            "workload web has no revision 7; its history: 1 (a), 2 (b), 3 (c)"
        );
        let same = pick("web", &h, Some("c"), Some(3)).unwrap_err().to_string();
        assert!(same.contains("already the current revision"), "{same}");
        let alone = pick("web", &h[2..], Some("c"), None)
            .unwrap_err()
            .to_string();
        assert_eq!(alone, "workload web has no earlier revision to go back to");
    }

    #[test]
    fn the_spec_takes_the_revisions_template_and_isolation() {
        let mut wl = crate::fixtures::rolling();
        wl.spec.template.restarted_at = Some("now".into());
        wl.spec.isolation.user_namespace = false;
        let back = rolled_back(wl, &entry("a", 1)).unwrap();
        assert_eq!(back.spec.template.image, "web:a");
        assert_eq!(
            back.spec.template.restarted_at, None,
            "fields the revision lacks go"
        );
        assert!(back.spec.isolation.user_namespace);
    }
}
