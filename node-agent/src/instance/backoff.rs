//! Back-off between failed start attempts of one instance.
//!
//! A start that fails on the host (a mount point that cannot be made, containerd refusing a
//! snapshot, ...) is retried, but each attempt writes the instance's status (Pulling,
//! Starting, the error), and each write is a watch event that would start the next attempt
//! at once: without a gate one broken instance spins the agent and the API server. The gate
//! holds every attempt of an instance until its delay has passed, whatever woke it; the
//! delay doubles from [`FIRST`] to [`MAX`] and is forgotten when a start succeeds or the
//! Instance goes away.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// The delay after the first failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// No attempt before this instant.
    until: Instant,
    /// The delay set by the last failure.
    delay: Duration,
}

/// Failed starts by Instance UID (bounded by the Instances bound to this host: an entry is
/// removed when its start succeeds or its Instance is cleaned up).
#[derive(Debug, Default)]
pub struct StartBackoff {
    entries: HashMap<String, Entry>,
}

impl StartBackoff {
    /// How long the instance must still wait before its next attempt, if at all.
    pub fn wait(&self, uid: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(uid)?;
        (now < e.until).then(|| e.until - now)
    }

    /// Records a failed attempt; returns the delay before the next one.
    pub fn failed(&mut self, uid: &str, now: Instant) -> Duration {
        let delay = match self.entries.get(uid) {
            Some(e) => (e.delay * 2).min(MAX),
            None => FIRST,
        };
        self.entries.insert(
            uid.to_string(),
            Entry {
                until: now + delay,
                delay,
            },
        );
        delay
    }

    /// Forgets the instance (its start succeeded, or it is gone).
    pub fn forget(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// How many instances are backing off.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_waits_the_doubling_delay_whatever_wakes_it() {
        let mut b = StartBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.wait("a", t0), None, "a first attempt never waits");
        assert_eq!(b.failed("a", t0), FIRST);
        assert_eq!(b.wait("a", t0), Some(FIRST));
        let half = t0 + FIRST / 2;
        assert_eq!(b.wait("a", half), Some(FIRST / 2));
        assert_eq!(b.wait("a", t0 + FIRST), None);
        assert_eq!(b.failed("a", t0 + FIRST), FIRST * 2);
        assert_eq!(b.failed("a", t0 + FIRST * 3), FIRST * 4);
        assert_eq!(b.wait("b", t0), None, "other instances are not held");
    }

    #[test]
    fn the_delay_stops_at_the_maximum_and_is_forgotten_on_success() {
        let mut b = StartBackoff::default();
        let t0 = Instant::now();
        let last = (0..20).map(|_| b.failed("a", t0)).last().unwrap();
        assert_eq!(last, MAX);
        assert_eq!(b.len(), 1);
        b.forget("a");
        assert!(b.is_empty());
        assert_eq!(b.failed("a", t0), FIRST, "a later failure starts over");
    }
}
