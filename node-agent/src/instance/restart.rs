//! Restart policy and back-off, as kubelet does it: 10 s doubling to 5 minutes, back to the
//! start once an instance has run for 10 minutes.

use bulkhead_crds::template::RestartPolicy;

/// The longest wait between restarts, in seconds.
pub const MAX_BACKOFF_SECONDS: i32 = 300;
/// An instance that ran this long starts its back-off over.
pub const RESET_AFTER_SECONDS: i64 = 600;

/// Whether an exit with `exit_code` is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// The delay before the next restart: `base` at first or after a long run, then doubling.
pub fn next_backoff(previous: Option<i32>, ran_for_seconds: i64, base: i32) -> i32 {
    match previous {
        Some(p) if ran_for_seconds < RESET_AFTER_SECONDS => {
            (p.saturating_mul(2)).clamp(base, MAX_BACKOFF_SECONDS.max(base))
        }
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 1));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
        assert!(!should_restart(RestartPolicy::Never, 1));
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten() {
        let mut delays = vec![];
        let mut prev = None;
        for _ in 0..8 {
            let d = next_backoff(prev, 1, 10);
            delays.push(d);
            prev = Some(d);
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            next_backoff(Some(300), 600, 10),
            10,
            "reset after 10 minutes of running"
        );
        assert_eq!(next_backoff(Some(300), 599, 10), 300);
    }
}
