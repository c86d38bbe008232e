//! Crash points for restart-safety tests.
//!
//! `BULKHEAD_FAILPOINTS=after-create-container,...` makes the agent or the controller abort
//! the moment it reaches a named point, exactly like a `kill -9` there. The end-to-end tests
//! use this to prove that a restarted component finishes or undoes every half-done step.
//! `BULKHEAD_FAILPOINT_DELAYS=finalizer-patch:2000,...` makes [`delay`] at a named point
//! wait that many milliseconds (at most 10 s), so that a test can widen a race window and
//! prove what an ordering guarantees. Unset in production, where `hit` and `delay` are a
//! single environment lookup each.

use std::{sync::OnceLock, time::Duration};

static POINTS: OnceLock<Vec<String>> = OnceLock::new();
static DELAYS: OnceLock<Vec<(String, Duration)>> = OnceLock::new();
/// The longest a delay point waits.
const MAX_DELAY: Duration = Duration::from_secs(10);

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

/// The delay armed at `point` by `BULKHEAD_FAILPOINT_DELAYS`, if any.
pub fn delay(point: &str) -> Option<Duration> {
    let delays = DELAYS.get_or_init(|| {
        std::env::var("BULKHEAD_FAILPOINT_DELAYS")
            .map(|v| parse_delays(&v))
            .unwrap_or_default()
    });
    delays.iter().find(|(p, _)| p == point).map(|(_, d)| *d)
}

/// `name:milliseconds` pairs, comma-separated; malformed entries are ignored and each delay
/// is capped at [`MAX_DELAY`].
fn parse_delays(v: &str) -> Vec<(String, Duration)> {
    v.split(',')
        .filter_map(|entry| {
            let (name, ms) = entry.trim().split_once(':')?;
            let ms: u64 = ms.trim().parse().ok()?;
            Some((
                name.trim().to_string(),
                Duration::from_millis(ms).min(MAX_DELAY),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_by_name_capped_and_malformed_ones_are_ignored() {
        let d = parse_delays("finalizer-patch:2000, x:abc,y,slow:999999");
        assert_eq!(
            d,
            vec![
                ("finalizer-patch".to_string(), Duration::from_millis(2000)),
                ("slow".to_string(), MAX_DELAY),
            ]
        );
    }
}
