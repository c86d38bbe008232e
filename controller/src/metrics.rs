//! Controller metrics, served on /metrics in the Prometheus text format.
//!
//! Labels are bounded: the kind (Workload, Instance) and the result (ok, error).

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

#[derive(Debug, Default)]
struct Series {
    count: u64,
    errors: u64,
    seconds: f64,
}

/// Reconcile counters and durations by kind.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, Series>>,
}

impl Metrics {
    /// Counts one successful reconcile of `kind`.
    pub fn reconciled(&self, kind: &'static str) {
        self.observe(kind, true, Duration::ZERO);
    }

    /// Records one reconcile of `kind` with its outcome and duration.
    pub fn observe(&self, kind: &'static str, ok: bool, took: Duration) {
        if let Ok(mut r) = self.reconciles.lock() {
            let s = r.entry(kind).or_default();
            if ok {
                s.count += 1;
            } else {
                s.errors += 1;
            }
            s.seconds += took.as_secs_f64();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP bulkhead_controller_reconciles_total Reconciles by kind and result.\n",
        );
        out.push_str("# TYPE bulkhead_controller_reconciles_total counter\n");
        let mut durations = String::from(
            "# HELP bulkhead_controller_reconcile_seconds_total Time spent reconciling, by kind.\n# TYPE bulkhead_controller_reconcile_seconds_total counter\n",
        );
        if let Ok(r) = self.reconciles.lock() {
            for (kind, s) in r.iter() {
                out.push_str(&format!(
                    "bulkhead_controller_reconciles_total{{kind=\"{kind}\",result=\"ok\"}} {}\n",
                    s.count
                ));
                out.push_str(&format!(
                    "bulkhead_controller_reconciles_total{{kind=\"{kind}\",result=\"error\"}} {}\n",
                    s.errors
                ));
                durations.push_str(&format!(
                    "bulkhead_controller_reconcile_seconds_total{{kind=\"{kind}\"}} {:.6}\n",
                    s.seconds
                ));
            }
        }
        out + &durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_durations_with_bounded_labels() {
        let m = Metrics::default();
        m.observe("Workload", true, Duration::from_millis(500));
        m.observe("Workload", false, Duration::from_millis(250));
        m.reconciled("Instance");
        let text = m.render();
        assert!(
            text.contains(
                "bulkhead_controller_reconciles_total{kind=\"Workload\",result=\"ok\"} 1"
            )
        );
        assert!(text.contains(
            "bulkhead_controller_reconciles_total{kind=\"Workload\",result=\"error\"} 1"
        ));
        assert!(
            text.contains(
                "bulkhead_controller_reconcile_seconds_total{kind=\"Workload\"} 0.750000"
            )
        );
        assert!(text.contains("kind=\"Instance\",result=\"ok\"} 1"));
    }
}
