//! Crash points for restart-safety tests.
//!
//! `BULKHEAD_FAILPOINTS=after-create-container,...` makes the agent or the controller abort
//! the moment it reaches a named point, exactly like a `kill -9` there. The end-to-end tests
//! use this to prove that a restarted component finishes or undoes every half-done step.
//! Unset in production, where `hit` is a single environment lookup.

use std::sync::OnceLock;

static POINTS: OnceLock<Vec<String>> = OnceLock::new();

/// Aborts the process if `point` is armed.
pub fn hit(point: &str) {
    let points = POINTS.get_or_init(|| {
        std::env::var("BULKHEAD_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == point) {
        eprintln!("failpoint {point} hit: aborting");
        std::process::abort();
    }
}
