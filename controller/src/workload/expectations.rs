//! Expectations: the creates and deletes a reconcile made that the shared Instance store may
//! not show yet. A reconcile reads the store, never a fresh list, so without them a stale
//! store would make it create the same instances again (each a refused write; names are
//! deterministic, so never a twin) or delete one twice.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::plan::ObservedInstance;

/// How long an expectation holds without the store confirming it (the watch lost an event
/// or the object went away before it was seen).
const EXPECT_FOR: Duration = Duration::from_secs(60);

/// What a reconcile did to one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Created with this revision.
    Create(String),
    /// Deleted.
    Delete,
}

/// Instance name → what was done and when.
type PerWorkload = HashMap<String, (Pending, Instant)>;

/// Pending changes per Workload (`namespace/name`), per instance name.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, PerWorkload>>,
}

impl Expectations {
    /// Records what a reconcile of `workload` did to `instance`.
    pub fn expect(&self, workload: &str, instance: &str, what: Pending) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(workload.to_string())
                .or_default()
                .insert(instance.to_string(), (what, Instant::now()));
        }
    }

    /// Drops what a reconcile expected of `instance` (its create failed).
    pub fn forget(&self, workload: &str, instance: &str) {
        if let Ok(mut p) = self.pending.lock()
            && let Some(mine) = p.get_mut(workload)
        {
            mine.remove(instance);
        }
    }

    /// Adds the pending changes of `workload` to what the store shows, dropping those the
    /// store now confirms.
    pub fn overlay(&self, workload: &str, observed: &mut Vec<ObservedInstance>) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        if let Some(mine) = p.get_mut(workload) {
            mine.retain(|_, (_, at)| at.elapsed() < EXPECT_FOR);
            let mut pending: HashMap<String, Pending> = mine
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            apply(&mut pending, observed);
            mine.retain(|k, _| pending.contains_key(k));
            if mine.is_empty() {
                p.remove(workload);
            }
        }
    }
}

/// Overlays `pending` on `observed` (pure): a create not yet seen counts as a starting
/// instance, a delete not yet seen as deleting. Confirmed entries leave `pending`.
pub fn apply(pending: &mut HashMap<String, Pending>, observed: &mut Vec<ObservedInstance>) {
    pending.retain(|name, what| {
        let seen = observed.iter_mut().find(|o| &o.name == name);
        match (what, seen) {
            (Pending::Create(_), Some(_)) => false,
            (Pending::Create(revision), None) => {
                observed.push(ObservedInstance {
                    name: name.clone(),
                    revision: revision.clone(),
                    ready: false,
                    available: false,
                    verified: false,
                    finished: false,
                    deleting: false,
                    evicting: false,
                });
                true
            }
            (Pending::Delete, Some(o)) if !o.deleting => {
                o.deleting = true;
                true
            }
            (Pending::Delete, _) => false,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fixtures::inst;

    #[test]
    fn an_unseen_create_counts_and_a_seen_one_is_forgotten() {
        let mut pending: HashMap<String, Pending> = [
            ("w-r-0".to_string(), Pending::Create("r".into())),
            ("w-r-1".to_string(), Pending::Create("r".into())),
        ]
        .into();
        let mut observed = vec![inst("w-r-0", "r", false)];
        apply(&mut pending, &mut observed);
        assert_eq!(observed.len(), 2);
        assert_eq!(observed[1].name, "w-r-1");
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["w-r-1"]);
    }

    #[test]
    fn an_unseen_delete_counts_as_deleting_until_the_store_shows_it() {
        let mut pending: HashMap<String, Pending> = [("w-r-0".to_string(), Pending::Delete)].into();
        let mut observed = vec![inst("w-r-0", "r", true)];
        apply(&mut pending, &mut observed);
        assert!(observed[0].deleting);
        assert_eq!(pending.len(), 1);
        apply(&mut pending, &mut observed);
        assert!(pending.is_empty(), "the store shows it deleting");
        let mut gone = Vec::new();
        let mut pending: HashMap<String, Pending> = [("w-r-0".to_string(), Pending::Delete)].into();
        apply(&mut pending, &mut gone);
        assert!(pending.is_empty() && gone.is_empty());
    }

    #[test]
    fn a_stale_store_never_plans_a_create_twice() {
        use crate::workload::plan::{Desired, Limits, plan};
        let desired = Desired {
            replicas: 3,
            update_revision: "r".into(),
            limits: Limits {
                max_surge: 1,
                max_unavailable: 0,
            },
            paused: false,
        };
        let first = plan("w", &desired, &[]);
        let e = Expectations::default();
        for a in &first {
            if let crate::workload::plan::Action::Create(n) = a {
                e.expect("ns/w", n, Pending::Create("r".into()));
            }
        }
        // The store has not shown any of them yet.
        let mut observed = Vec::new();
        e.overlay("ns/w", &mut observed);
        assert_eq!(first.len(), 3);
        assert_eq!(plan("w", &desired, &observed), Vec::new());
    }
}
