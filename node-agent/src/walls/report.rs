//! Writing each instance's applied walls into its `status.isolation.network`, one write at a
//! time in the background.
//!
//! A change of the walls can change the rules of every instance on the bridge (a new member
//! of a namespace is one more address in its neighbours' chains), so one start used to send
//! a status write for each of them at once, and the new instance's own Running write queued
//! behind them at the API server: the more instances ran, the slower a start. Reports are
//! now queued by instance, a newer one replacing one not sent yet, and sent one after the
//! other, so at most one competes with a start's own writes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use bulkhead_crds::Instance;
use kube::{Api, Client};
use tracing::{debug, warn};

use super::{Applied, network_status};

/// (namespace, name) of an Instance.
type Key = (String, String);

/// The reports not sent yet, and the task that sends them.
#[derive(Debug, Default)]
pub struct Reporter {
    pending: Mutex<BTreeMap<Key, Applied>>,
    wake: tokio::sync::Notify,
}

impl Reporter {
    /// A reporter whose sender runs in the background with `client`.
    pub fn start(client: Client) -> Arc<Self> {
        let r = Arc::new(Self::default());
        tokio::spawn(send_all(client, r.clone()));
        r
    }

    /// Queues the report of an instance's walls, replacing one of it not sent yet.
    pub fn queue(&self, namespace: String, name: String, a: Applied) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert((namespace, name), a);
        }
        self.wake.notify_one();
    }

    /// Takes every queued report.
    fn take(&self) -> BTreeMap<Key, Applied> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// Sends queued reports one at a time, for as long as the agent runs.
async fn send_all(client: Client, r: Arc<Reporter>) {
    loop {
        r.wake.notified().await;
        loop {
            let batch = r.take();
            if batch.is_empty() {
                break;
            }
            for ((namespace, name), a) in batch {
                report(&client, &namespace, &name, &a).await;
            }
        }
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

    fn applied(rules: usize) -> Applied {
        Applied {
            rules,
            policies: vec![],
        }
    }

    #[test]
    fn a_newer_report_replaces_the_unsent_one_and_taking_empties_the_queue() {
        let r = Reporter::default();
        r.queue("a".into(), "web-1".into(), applied(3));
        r.queue("a".into(), "web-2".into(), applied(3));
        r.queue("a".into(), "web-1".into(), applied(4));
        let batch = r.take();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[&("a".to_string(), "web-1".to_string())].rules, 4);
        assert!(r.take().is_empty());
    }
}
