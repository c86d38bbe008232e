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

/// Reconcile counters and durations by kind, and gauges of where work stands.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, Series>>,
    /// Workload (namespace/name) → its phase, for the rollout phase gauge.
    phases: Mutex<BTreeMap<String, &'static str>>,
    /// Instances waiting for a host (the scheduler's queue).
    unscheduled: Mutex<BTreeMap<String, ()>>,
    /// Status writes by kind: (written, held back for pacing).
    status_writes: Mutex<BTreeMap<&'static str, (u64, u64)>>,
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

    /// Records the phase of a Workload (None once it is gone).
    pub fn workload_phase(&self, key: &str, phase: Option<&'static str>) {
        if let Ok(mut p) = self.phases.lock() {
            match phase {
                Some(phase) => p.insert(key.to_string(), phase),
                None => p.remove(key),
            };
        }
    }

    /// Marks an Instance as waiting for a host, or not.
    pub fn unscheduled(&self, key: &str, waiting: bool) {
        if let Ok(mut u) = self.unscheduled.lock() {
            if waiting {
                u.insert(key.to_string(), ());
            } else {
                u.remove(key);
            }
        }
    }

    /// Counts a status write of `kind`, or one held back (`written` false) because only its
    /// counts moved since a recent write.
    pub fn status_write(&self, kind: &'static str, written: bool) {
        if let Ok(mut w) = self.status_writes.lock() {
            let e = w.entry(kind).or_default();
            if written {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
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
        let mut gauges = String::from(
            "# HELP bulkhead_controller_workloads Workloads by rollout phase.\n# TYPE bulkhead_controller_workloads gauge\n",
        );
        if let Ok(p) = self.phases.lock() {
            for phase in ["Healthy", "Progressing", "Paused", "Degraded"] {
                let n = p.values().filter(|v| **v == phase).count();
                gauges.push_str(&format!(
                    "bulkhead_controller_workloads{{phase=\"{phase}\"}} {n}\n"
                ));
            }
        }
        gauges.push_str("# HELP bulkhead_controller_unscheduled_instances Instances waiting for a host (the scheduler's queue).\n# TYPE bulkhead_controller_unscheduled_instances gauge\n");
        let waiting = self.unscheduled.lock().map(|u| u.len()).unwrap_or(0);
        gauges.push_str(&format!(
            "bulkhead_controller_unscheduled_instances {waiting}\n"
        ));
        let mut writes = String::from(
            "# HELP bulkhead_controller_status_writes_total Status writes by kind and outcome (written, or held back while only counts moved).\n# TYPE bulkhead_controller_status_writes_total counter\n",
        );
        if let Ok(w) = self.status_writes.lock() {
            for (kind, (written, held)) in w.iter() {
                writes.push_str(&format!(
                    "bulkhead_controller_status_writes_total{{kind=\"{kind}\",outcome=\"written\"}} {written}\n\
                     bulkhead_controller_status_writes_total{{kind=\"{kind}\",outcome=\"held\"}} {held}\n"
                ));
            }
        }
        out + &durations + &gauges + &writes
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
        m.workload_phase("ns/a", Some("Healthy"));
        m.workload_phase("ns/b", Some("Degraded"));
        m.workload_phase("ns/b", None);
        m.unscheduled("ns/i", true);
        m.status_write("Workload", true);
        m.status_write("Workload", false);
        m.status_write("Workload", false);
        let text = m.render();
        assert!(text.contains(
            "bulkhead_controller_status_writes_total{kind=\"Workload\",outcome=\"written\"} 1\n"
        ));
        assert!(text.contains(
            "bulkhead_controller_status_writes_total{kind=\"Workload\",outcome=\"held\"} 2\n"
        ));
        assert!(text.contains("bulkhead_controller_workloads{phase=\"Healthy\"} 1"));
        assert!(text.contains("bulkhead_controller_workloads{phase=\"Degraded\"} 0"));
        assert!(text.contains("bulkhead_controller_unscheduled_instances 1"));
    }
}
