//! The agent's metrics, in the Prometheus text format. Labels are bounded: phases, probe
//! kinds and results.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Duration};

/// Upper bounds of the start-latency histogram, in seconds.
pub const START_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Debug, Default)]
struct State {
    phases: BTreeMap<String, &'static str>,
    start_buckets: [u64; START_BUCKETS.len()],
    start_count: u64,
    start_sum: f64,
    probes: BTreeMap<(&'static str, &'static str), u64>,
    pulls: BTreeMap<&'static str, u64>,
    pull_seconds: f64,
    pull_bytes: u64,
}

/// Counters, gauges and a histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

/// Allocation pool usage, read when rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pools {
    /// UID ranges in use.
    pub uid_ranges: u64,
    /// UID ranges in the pool.
    pub uid_capacity: u64,
    /// MCS pairs in use.
    pub mcs_pairs: u64,
    /// MCS pairs that exist.
    pub mcs_capacity: u64,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Records an instance's phase (None once it is gone).
    pub fn phase(&self, instance: &str, phase: Option<&'static str>) {
        self.with(|s| {
            match phase {
                Some(p) => s.phases.insert(instance.to_string(), p),
                None => s.phases.remove(instance),
            };
        });
    }

    /// Records the time from an Instance's creation to its process running.
    pub fn started(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        self.with(|s| {
            for (i, bound) in START_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    s.start_buckets[i] += 1;
                }
            }
            s.start_count += 1;
            s.start_sum += secs;
        });
    }

    /// Counts a probe result.
    pub fn probe(&self, kind: &'static str, ok: bool) {
        self.with(|s| {
            *s.probes
                .entry((kind, if ok { "success" } else { "failure" }))
                .or_default() += 1
        });
    }

    /// Records a pull.
    pub fn pull(&self, ok: bool, took: Duration, bytes: u64) {
        self.with(|s| {
            *s.pulls
                .entry(if ok { "success" } else { "failure" })
                .or_default() += 1;
            s.pull_seconds += took.as_secs_f64();
            s.pull_bytes += bytes;
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self, pools: Pools) -> String {
        let Ok(s) = self.state.lock() else {
            return String::new();
        };
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_instances Instances on this host by phase.\n# TYPE bulkhead_agent_instances gauge"
        );
        for phase in [
            "Pulling",
            "Starting",
            "Running",
            "Succeeded",
            "Failed",
            "Terminating",
        ] {
            let n = s.phases.values().filter(|p| **p == phase).count();
            let _ = writeln!(o, "bulkhead_agent_instances{{phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_start_latency_seconds From Instance creation to its process running.\n# TYPE bulkhead_agent_start_latency_seconds histogram"
        );
        for (i, bound) in START_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "bulkhead_agent_start_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                s.start_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "bulkhead_agent_start_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            s.start_count
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_start_latency_seconds_sum {:.6}",
            s.start_sum
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_start_latency_seconds_count {}",
            s.start_count
        );
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_probes_total Probe runs by probe and result.\n# TYPE bulkhead_agent_probes_total counter"
        );
        for ((kind, result), n) in &s.probes {
            let _ = writeln!(
                o,
                "bulkhead_agent_probes_total{{probe=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_pulls_total Image pulls by result.\n# TYPE bulkhead_agent_pulls_total counter"
        );
        for result in ["success", "failure"] {
            let _ = writeln!(
                o,
                "bulkhead_agent_pulls_total{{result=\"{result}\"}} {}",
                s.pulls.get(result).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_pull_seconds_total Time spent pulling images.\n# TYPE bulkhead_agent_pull_seconds_total counter\nbulkhead_agent_pull_seconds_total {:.6}",
            s.pull_seconds
        );
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_pull_bytes_total Bytes fetched from registries.\n# TYPE bulkhead_agent_pull_bytes_total counter\nbulkhead_agent_pull_bytes_total {}",
            s.pull_bytes
        );
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_allocations_in_use Allocations held by live instances.\n# TYPE bulkhead_agent_allocations_in_use gauge"
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_allocations_in_use{{pool=\"uid-ranges\"}} {}",
            pools.uid_ranges
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_allocations_in_use{{pool=\"mcs-pairs\"}} {}",
            pools.mcs_pairs
        );
        let _ = writeln!(
            o,
            "# HELP bulkhead_agent_allocations_capacity Size of each allocation pool.\n# TYPE bulkhead_agent_allocations_capacity gauge"
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_allocations_capacity{{pool=\"uid-ranges\"}} {}",
            pools.uid_capacity
        );
        let _ = writeln!(
            o,
            "bulkhead_agent_allocations_capacity{{pool=\"mcs-pairs\"}} {}",
            pools.mcs_capacity
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::default();
        m.phase("ns/a", Some("Running"));
        m.phase("ns/b", Some("Running"));
        m.phase("ns/b", None);
        m.started(Duration::from_millis(700));
        m.probe("readiness", true);
        m.pull(true, Duration::from_secs(1), 1000);
        let text = m.render(Pools {
            uid_ranges: 1,
            uid_capacity: 1024,
            mcs_pairs: 1,
            mcs_capacity: 523_776,
        });
        for line in [
            "bulkhead_agent_instances{phase=\"Running\"} 1",
            "bulkhead_agent_start_latency_seconds_bucket{le=\"0.5\"} 0",
            "bulkhead_agent_start_latency_seconds_bucket{le=\"1\"} 1",
            "bulkhead_agent_start_latency_seconds_count 1",
            "bulkhead_agent_probes_total{probe=\"readiness\",result=\"success\"} 1",
            "bulkhead_agent_pulls_total{result=\"success\"} 1",
            "bulkhead_agent_pull_bytes_total 1000",
            "bulkhead_agent_allocations_capacity{pool=\"mcs-pairs\"} 523776",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
