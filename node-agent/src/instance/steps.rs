//! Where a start spends its time: each step's duration, logged at debug level when the
//! instance runs (`RUST_LOG=bulkhead_node_agent::instance=debug`), so that an operator can
//! tell a slow registry from a slow containerd or a slow firewall.

use std::time::{Duration, Instant};

/// The steps of one start, in order, each with the time since the step before.
#[derive(Debug)]
pub struct Steps {
    began: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    /// Starts timing now.
    pub fn new() -> Self {
        Self::at(Instant::now())
    }

    /// Starts timing at `began`.
    pub fn at(began: Instant) -> Self {
        Self {
            began,
            last: began,
            done: Vec::new(),
        }
    }

    /// Ends step `name` now.
    pub fn mark(&mut self, name: &'static str) {
        self.mark_at(name, Instant::now());
    }

    /// Ends step `name` at `now`.
    pub fn mark_at(&mut self, name: &'static str, now: Instant) {
        self.done
            .push((name, now.saturating_duration_since(self.last)));
        self.last = now;
    }

    /// From the first instant to the last step's end.
    pub fn total(&self) -> Duration {
        self.last.saturating_duration_since(self.began)
    }

    /// `name=1.2ms name=0.3ms ...`, in the order the steps ran.
    pub fn summary(&self) -> String {
        self.done
            .iter()
            .map(|(name, d)| format!("{name}={:.1}ms", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Default for Steps {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_counts_from_the_end_of_the_one_before() {
        let t0 = Instant::now();
        let mut s = Steps::at(t0);
        s.mark_at("pull", t0 + Duration::from_micros(1500));
        s.mark_at("create", t0 + Duration::from_millis(12));
        s.mark_at("start", t0 + Duration::from_millis(12));
        assert_eq!(s.summary(), "pull=1.5ms create=10.5ms start=0.0ms");
        assert_eq!(s.total(), Duration::from_millis(12));
    }

    #[test]
    fn no_steps_is_an_empty_summary() {
        let s = Steps::new();
        assert_eq!(s.summary(), "");
        assert_eq!(s.total(), Duration::ZERO);
    }
}
