//! Reconcile counters, served on /metrics in the Prometheus text format.

use std::{collections::BTreeMap, sync::Mutex};

/// Counters by kind.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one reconcile of `kind`.
    pub fn reconciled(&self, kind: &'static str) {
        if let Ok(mut r) = self.reconciles.lock() {
            *r.entry(kind).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP bulkhead_controller_reconciles_total Reconciles by kind.\n# TYPE bulkhead_controller_reconciles_total counter\n",
        );
        if let Ok(r) = self.reconciles.lock() {
            for (kind, n) in r.iter() {
                out.push_str(&format!(
                    "bulkhead_controller_reconciles_total{{kind=\"{kind}\"}} {n}\n"
                ));
            }
        }
        out
    }
}
