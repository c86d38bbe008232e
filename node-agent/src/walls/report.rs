//! Writing each instance's applied walls into its `status.isolation.network`, one write at a
//! time in the background.
//!
//! A change of the walls can change the rules of every instance on the bridge (a new member
//! of a namespace is one more address in its neighbours' chains), so one start used to send
//! a status write for each of them at once, and the new instance's own Running write queued
//! behind them at the API server: the more instances ran, the slower a start. Reports are
//! queued by instance, a newer one replacing one not sent yet, and sent one after the other.
//!
//! Only a change of the policies that select an instance is sent at once. A change of its
//! rule count alone (a neighbour came or went) waits [`DEFER`], so a burst of starts on the
//! bridge ends in one write per neighbour instead of one per neighbour per start, after the
//! burst rather than in its middle. A new instance's first report waits too: its Running
//! write carries the same figures and claims it ([`Reporter::claim`]), one write fewer per
//! start.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bulkhead_crds::Instance;
use kube::{Api, Client};
use tracing::{debug, warn};

use super::{Applied, network_status};

/// How long a report that only changes the rule count waits for newer ones.
pub const DEFER: Duration = Duration::from_secs(2);

/// (namespace, name) of an Instance.
type Key = (String, String);

/// A report not sent yet, and when it is due.
#[derive(Debug, Clone)]
struct Pending {
    applied: Applied,
    due: Instant,
}

/// The reports not sent yet, and the task that sends them.
#[derive(Debug, Default)]
pub struct Reporter {
    pending: Mutex<BTreeMap<Key, Pending>>,
    wake: tokio::sync::Notify,
}

impl Reporter {
    /// A reporter whose sender runs in the background with `client`.
    pub fn start(client: Client) -> Arc<Self> {
        let r = Arc::new(Self::default());
        tokio::spawn(send_all(client, r.clone()));
        r
    }

    /// Queues the report of an instance's walls, replacing one of it not sent yet: due now
    /// when `before` (what was applied for it until now) named other policies, else after
    /// [`DEFER`] (a replaced report keeps its earlier due time, so a steady stream of
    /// changes still reports).
    pub fn queue(&self, namespace: String, name: String, a: Applied, before: Option<&Applied>) {
        self.queue_at(namespace, name, a, before, Instant::now());
        self.wake.notify_one();
    }

    fn queue_at(
        &self,
        namespace: String,
        name: String,
        a: Applied,
        before: Option<&Applied>,
        now: Instant,
    ) {
        let urgent = before.is_some_and(|b| b.policies != a.policies);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let key = (namespace, name);
        let due = match (urgent, p.get(&key)) {
            (true, _) => now,
            (false, Some(old)) => old.due.min(now + DEFER),
            (false, None) => now + DEFER,
        };
        p.insert(key, Pending { applied: a, due });
    }

    /// Drops the unsent report of an instance whose own status write carries `a` (the
    /// report it would send); a newer, different one stays queued.
    pub fn claim(&self, namespace: &str, name: &str, a: &Applied) {
        if let Ok(mut p) = self.pending.lock() {
            let key = (namespace.to_string(), name.to_string());
            if p.get(&key).is_some_and(|q| &q.applied == a) {
                p.remove(&key);
            }
        }
    }

    /// Takes the reports due at `now`, and says when the next one is due.
    fn take_due(&self, now: Instant) -> (BTreeMap<Key, Applied>, Option<Instant>) {
        let Ok(mut p) = self.pending.lock() else {
            return (BTreeMap::new(), None);
        };
        let due: Vec<Key> = p
            .iter()
            .filter(|(_, q)| q.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let taken = due
            .into_iter()
            .filter_map(|k| p.remove(&k).map(|q| (k, q.applied)))
            .collect();
        (taken, p.values().map(|q| q.due).min())
    }
}

/// Sends the reports as they fall due, one at a time, for as long as the agent runs.
async fn send_all(client: Client, r: Arc<Reporter>) {
    let mut next: Option<Instant> = None;
    loop {
        match next {
            Some(due) => {
                tokio::select! {
                    () = r.wake.notified() => {}
                    () = tokio::time::sleep_until(due.into()) => {}
                }
            }
            None => r.wake.notified().await,
        }
        let (batch, then) = r.take_due(Instant::now());
        for ((namespace, name), a) in batch {
            report(&client, &namespace, &name, &a).await;
        }
        next = then;
    }
}

/// Writes an instance's applied walls into `status.isolation.network` (a field manager of
/// its own, so the agent's full status writes never drop it).
async fn report(client: &Client, namespace: &str, name: &str, a: &Applied) {
    let api: Api<Instance> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "Instance",
        "status": {"isolation": {"network": network_status(a)}},
    });
    let params = kube::api::PatchParams::apply("bulkhead-node-agent-walls").force();
    let began = std::time::Instant::now();
    match api
        .patch_status(name, &params, &kube::api::Patch::Apply(&body))
        .await
    {
        Ok(_) => {
            debug!(instance = %name, %namespace, ms = began.elapsed().as_secs_f64() * 1000.0, "reported the network walls")
        }
        Err(e) => {
            warn!(instance = %name, %namespace, error = %e, "reporting the network walls failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(rules: usize, policies: &[&str]) -> Applied {
        Applied {
            rules,
            policies: policies.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn key(name: &str) -> Key {
        ("a".to_string(), name.to_string())
    }

    #[test]
    fn a_newer_report_replaces_the_unsent_one_and_keeps_its_due_time() {
        let r = Reporter::default();
        let t0 = Instant::now();
        r.queue_at("a".into(), "web-1".into(), applied(3, &[]), None, t0);
        r.queue_at("a".into(), "web-2".into(), applied(3, &[]), None, t0);
        let later = t0 + DEFER / 2;
        let before = applied(3, &[]);
        r.queue_at(
            "a".into(),
            "web-1".into(),
            applied(4, &[]),
            Some(&before),
            later,
        );
        // A count change waits; nothing is due yet.
        let (batch, next) = r.take_due(later);
        assert!(batch.is_empty());
        assert_eq!(
            next,
            Some(t0 + DEFER),
            "the replaced report kept its due time"
        );
        let (batch, next) = r.take_due(t0 + DEFER);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[&key("web-1")].rules, 4, "the newer report is sent");
        assert_eq!(next, None);
        assert!(r.take_due(t0 + DEFER * 10).0.is_empty());
    }

    #[test]
    fn a_change_of_the_selecting_policies_is_due_at_once() {
        let r = Reporter::default();
        let t0 = Instant::now();
        let before = applied(4, &[]);
        r.queue_at(
            "a".into(),
            "web-1".into(),
            applied(5, &["a/deny"]),
            Some(&before),
            t0,
        );
        // Control: a count-only change of a neighbour at the same instant waits.
        r.queue_at(
            "a".into(),
            "web-2".into(),
            applied(5, &[]),
            Some(&before),
            t0,
        );
        let (batch, next) = r.take_due(t0);
        assert_eq!(batch.keys().collect::<Vec<_>>(), [&key("web-1")]);
        assert_eq!(next, Some(t0 + DEFER));
    }

    #[test]
    fn a_status_write_claims_only_the_report_it_carries() {
        let r = Reporter::default();
        let t0 = Instant::now();
        r.queue_at("a".into(), "web-1".into(), applied(4, &[]), None, t0);
        r.queue_at("a".into(), "web-2".into(), applied(4, &[]), None, t0);
        r.claim("a", "web-1", &applied(4, &[]));
        // A newer figure than the write carries stays queued.
        r.claim("a", "web-2", &applied(3, &[]));
        let (batch, _) = r.take_due(t0 + DEFER);
        assert_eq!(batch.keys().collect::<Vec<_>>(), [&key("web-2")]);
    }
}
