//! Revision history: one ControllerRevision per revision a Workload has run, so that a
//! rollout can be undone with kubectl (see docs/operations.md).
//!
//! The revision's `data` is `{"template": ..., "isolation": ...}`; its `revision` number grows
//! each time the revision becomes the update revision again. Old revisions beyond
//! `revisionHistoryLimit` are deleted, never one that still has instances.

use std::collections::BTreeSet;

use bulkhead_crds::{LABEL_REVISION, LABEL_WORKLOAD, MANAGER_CONTROLLER, Workload};
use k8s_openapi::{api::apps::v1::ControllerRevision, apimachinery::pkg::runtime::RawExtension};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::Error;

/// The ControllerRevision name of a Workload revision.
pub fn name(workload: &str, revision: &str) -> String {
    format!("{workload}-{revision}")
}

/// Which revisions to delete: the oldest beyond `limit`, never the update revision or one
/// that still has instances. `revisions` is (revision, number).
pub fn to_prune(
    revisions: &[(String, i64)],
    update: &str,
    in_use: &BTreeSet<String>,
    limit: usize,
) -> Vec<String> {
    let mut old: Vec<&(String, i64)> = revisions
        .iter()
        .filter(|(r, _)| r != update && !in_use.contains(r))
        .collect();
    old.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    old.into_iter()
        .skip(limit)
        .map(|(r, _)| r.clone())
        .collect()
}

/// What [`record`] last made true for each Workload (by UID), so that a reconcile that would
/// change nothing (the same revision, the same revisions in use, the same limit) skips its
/// list round trip: a blue/green switch no longer waits for it. A new leader starts empty
/// and records once. Bounded: cleared when it outgrows [`Recorded::MAX`] Workloads.
#[derive(Debug, Default)]
pub struct Recorded(std::sync::Mutex<std::collections::HashMap<String, Memo>>);

/// The inputs of one recording.
#[derive(Debug)]
pub struct Memo {
    revision: String,
    in_use: BTreeSet<String>,
    limit: i32,
}

impl Recorded {
    /// Workloads remembered at most.
    pub const MAX: usize = 100_000;

    /// Whether `record` with these inputs already succeeded for this Workload (compared in
    /// place: this runs on every reconcile).
    pub fn done(&self, wl: &Workload, revision: &str, in_use: &BTreeSet<String>) -> bool {
        let (Some(uid), Ok(map)) = (wl.uid(), self.0.lock()) else {
            return false;
        };
        map.get(&uid).is_some_and(|m| {
            m.revision == revision
                && m.limit == wl.spec.revision_history_limit
                && &m.in_use == in_use
        })
    }

    /// Remembers a successful `record`.
    pub fn remember(&self, wl: &Workload, revision: &str, in_use: &BTreeSet<String>) {
        let (Some(uid), Ok(mut map)) = (wl.uid(), self.0.lock()) else {
            return;
        };
        if map.len() >= Self::MAX {
            map.clear();
        }
        let memo = Memo {
            revision: revision.to_string(),
            in_use: in_use.clone(),
            limit: wl.spec.revision_history_limit,
        };
        map.insert(uid, memo);
    }
}

/// Records `revision` as the newest in the Workload's history and prunes the oldest.
pub async fn record(
    api: &Api<ControllerRevision>,
    wl: &Workload,
    revision: &str,
    in_use: &BTreeSet<String>,
) -> Result<(), Error> {
    let workload = wl.name_any();
    let existing = api
        .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}={workload}")))
        .await?
        .items;
    let numbered: Vec<(String, i64)> = existing
        .iter()
        .filter_map(|c| Some((c.labels().get(LABEL_REVISION)?.clone(), c.revision)))
        .collect();
    let newest = numbered.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let this = name(&workload, revision);
    match numbered.iter().find(|(r, _)| r == revision) {
        Some((_, n)) if *n == newest => {}
        Some(_) => {
            // Rolled back to an older revision: it becomes the newest again.
            let pp = PatchParams {
                field_manager: Some(MANAGER_CONTROLLER.into()),
                ..Default::default()
            };
            api.patch(&this, &pp, &Patch::Merge(&json!({"revision": newest + 1})))
                .await?;
        }
        None => {
            let owner = wl
                .controller_owner_ref(&())
                .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(this),
                    labels: Some(
                        [
                            (LABEL_WORKLOAD.to_string(), workload.clone()),
                            (LABEL_REVISION.to_string(), revision.to_string()),
                        ]
                        .into(),
                    ),
                    owner_references: Some(vec![owner]),
                    ..Default::default()
                },
                data: Some(RawExtension(
                    json!({"template": wl.spec.template, "isolation": wl.spec.isolation}),
                )),
                revision: newest + 1,
            };
            match api
                .create(
                    &PostParams {
                        field_manager: Some(MANAGER_CONTROLLER.into()),
                        ..Default::default()
                    },
                    &cr,
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let limit = usize::try_from(wl.spec.revision_history_limit).unwrap_or(0);
    for old in to_prune(&numbered, revision, in_use, limit) {
        match api
            .delete(&name(&workload, &old), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_is_skipped_only_with_the_same_inputs() {
        let mut wl = Workload::new(
            "web",
            serde_json::from_value(json!({"owner": "t", "template": {"image": "x"}})).unwrap(),
        );
        wl.metadata.uid = Some("u1".into());
        let r = Recorded::default();
        let none = BTreeSet::new();
        assert!(!r.done(&wl, "a", &none));
        r.remember(&wl, "a", &none);
        assert!(r.done(&wl, "a", &none));
        assert!(!r.done(&wl, "b", &none), "a new revision is recorded");
        let running: BTreeSet<String> = ["a".to_string()].into();
        assert!(
            !r.done(&wl, "a", &running),
            "a change of what runs may prune"
        );
        wl.spec.revision_history_limit += 1;
        assert!(!r.done(&wl, "a", &none), "a new limit may prune");
        let mut other = wl.clone();
        other.metadata.uid = Some("u2".into());
        assert!(
            !r.done(&other, "a", &none),
            "a Workload recreated under the name starts over"
        );
    }

    #[test]
    fn prunes_the_oldest_beyond_the_limit_but_never_what_runs() {
        let revs: Vec<(String, i64)> = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        let none = BTreeSet::new();
        assert_eq!(to_prune(&revs, "e", &none, 2), ["b", "a"]);
        let running: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(
            to_prune(&revs, "e", &running, 2),
            ["b"],
            "a still has instances"
        );
        assert_eq!(to_prune(&revs, "a", &none, 10), Vec::<String>::new());
        assert_eq!(to_prune(&revs, "c", &none, 0), ["e", "d", "b", "a"]);
    }
}
