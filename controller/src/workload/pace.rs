//! How often a Workload's status is written while only its counts move.
//!
//! During a fan-out every Instance event changes a count (replicas, ready, available,
//! updated) and the messages that quote them; written each time, a scale to 1000 cost about
//! 240 Workload status writes, each as dear to the API server as an instance's create. A
//! change of anything else (a condition's status or reason, the phase, a revision, the
//! blue/green record, the observed generation) is written at once, and so is a status that
//! has settled (every count at the desired replicas); a change of counts alone is written at
//! most once per [`COUNTS_INTERVAL`], the reconcile coming back for it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bulkhead_crds::WorkloadStatus;

/// At most one write of counts alone per Workload in this interval.
pub const COUNTS_INTERVAL: Duration = Duration::from_secs(1);

/// When to write a changed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Now,
    /// Only counts moved and the last write was recent: the reconcile comes back then.
    After(Duration),
}

/// Whether `next` differs from `previous` only in counts: the four replica counts, the last
/// progress time, and the messages of conditions whose status and reason stay.
pub fn only_counts_moved(previous: &WorkloadStatus, next: &WorkloadStatus) -> bool {
    let mut masked = next.clone();
    masked.replicas = previous.replicas;
    masked.ready_replicas = previous.ready_replicas;
    masked.available_replicas = previous.available_replicas;
    masked.updated_replicas = previous.updated_replicas;
    masked.last_progress_time = previous.last_progress_time.clone();
    for c in &mut masked.conditions {
        if let Some(p) = previous.conditions.iter().find(|p| {
            p.type_ == c.type_
                && p.status == c.status
                && p.reason == c.reason
                && p.observed_generation == c.observed_generation
        }) {
            c.message = p.message.clone();
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    masked == *previous
}

/// Every count at the desired replicas: where a scale or a rollout comes to rest.
fn settled(next: &WorkloadStatus, replicas: i32) -> bool {
    [
        next.replicas,
        next.ready_replicas,
        next.available_replicas,
        next.updated_replicas,
    ]
    .iter()
    .all(|&n| n == replicas)
}

/// When to write `next` over `previous` (they differ), `since` the last write of this
/// Workload's status by this process (None: none remembered).
pub fn decide(
    previous: &WorkloadStatus,
    next: &WorkloadStatus,
    replicas: i32,
    since: Option<Duration>,
) -> Write {
    match since {
        Some(since)
            if since < COUNTS_INTERVAL
                && !settled(next, replicas)
                && only_counts_moved(previous, next) =>
        {
            Write::After(COUNTS_INTERVAL - since)
        }
        _ => Write::Now,
    }
}

/// When each Workload's status was last written, by UID.
#[derive(Debug, Default)]
pub struct Paced(Mutex<HashMap<String, Instant>>);

impl Paced {
    /// Time since the last write of `uid`'s status, if within the interval.
    pub fn since(&self, uid: &str) -> Option<Duration> {
        let map = self.0.lock().ok()?;
        map.get(uid)
            .map(Instant::elapsed)
            .filter(|d| *d < COUNTS_INTERVAL)
    }

    /// Records a write of `uid`'s status now, and forgets writes older than the interval.
    pub fn wrote(&self, uid: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, at| at.elapsed() < COUNTS_INTERVAL);
            map.insert(uid.to_string(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::conditions::{self, types};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn status(ready: i32, available_reason: &str, available: &str) -> WorkloadStatus {
        WorkloadStatus {
            observed_generation: Some(1),
            replicas: 10,
            ready_replicas: ready,
            available_replicas: ready,
            updated_replicas: 10,
            update_revision: Some("a".into()),
            last_progress_time: Some(at(100 + i64::from(ready))),
            conditions: vec![conditions::new(
                types::AVAILABLE,
                available,
                available_reason,
                format!("{ready} of 10 instances available"),
                Some(1),
                at(100 + i64::from(ready)),
            )],
            ..Default::default()
        }
    }

    const RECENT: Option<Duration> = Some(Duration::from_millis(300));

    #[test]
    fn counts_alone_wait_for_the_interval_and_everything_else_is_written_at_once() {
        let before = status(3, "MinimumReplicasUnavailable", "False");
        // More ready: counts, the progress time and the message moved, nothing else.
        let counts = status(4, "MinimumReplicasUnavailable", "False");
        assert!(only_counts_moved(&before, &counts));
        assert_eq!(
            decide(&before, &counts, 10, RECENT),
            Write::After(Duration::from_millis(700))
        );
        assert_eq!(
            decide(&before, &counts, 10, None),
            Write::Now,
            "no recent write"
        );
        assert_eq!(
            decide(&before, &counts, 10, Some(COUNTS_INTERVAL)),
            Write::Now
        );

        // A condition's status or reason, a revision, the generation: at once.
        let flipped = status(8, "MinimumReplicasAvailable", "True");
        assert!(!only_counts_moved(&before, &flipped));
        assert_eq!(decide(&before, &flipped, 10, RECENT), Write::Now);
        let mut revision = counts.clone();
        revision.active_revision = Some("b".into());
        assert_eq!(decide(&before, &revision, 10, RECENT), Write::Now);
        let mut generation = counts.clone();
        generation.observed_generation = Some(2);
        assert_eq!(decide(&before, &generation, 10, RECENT), Write::Now);
        let mut bluegreen = counts.clone();
        bluegreen.blue_green = Some(Default::default());
        assert_eq!(decide(&before, &bluegreen, 10, RECENT), Write::Now);
    }

    #[test]
    fn a_settled_status_is_written_at_once() {
        let before = status(9, "MinimumReplicasAvailable", "True");
        let all = status(10, "MinimumReplicasAvailable", "True");
        assert!(only_counts_moved(&before, &all));
        assert_eq!(decide(&before, &all, 10, RECENT), Write::Now);
        // The same counts short of a larger desired count wait.
        assert!(matches!(decide(&before, &all, 20, RECENT), Write::After(_)));
    }

    #[test]
    fn the_record_of_writes_forgets_what_is_past_the_interval() {
        let paced = Paced::default();
        assert_eq!(paced.since("a"), None);
        paced.wrote("a");
        assert!(paced.since("a").is_some_and(|d| d < COUNTS_INTERVAL));
        assert_eq!(paced.since("b"), None);
    }
}
