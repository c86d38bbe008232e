//! Per-key back-off: a growing delay between attempts of one thing that keeps failing,
//! shared by the node agent (an instance's start attempts) and the controller (replacing a
//! Workload's failed instances).
//!
//! Each attempt there writes to the API, and each write is a watch event that would start
//! the next attempt at once: without a gate one broken object spins its component and the
//! API server. The gate holds every attempt of a key until its delay has passed, whatever
//! woke it; the delay doubles from `first` to `max` and is forgotten when the thing works
//! again or goes away.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// No attempt before this instant.
    until: Instant,
    /// The delay set by the last failure.
    delay: Duration,
}

/// Failures by key (an Instance or Workload UID). Bounded by the keys its user forgets:
/// each user removes an entry when its thing works again or is gone.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// A back-off whose delay starts at `first` and doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            entries: HashMap::new(),
        }
    }

    /// How long the key must still wait before its next attempt, if at all.
    pub fn wait(&self, uid: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(uid)?;
        (now < e.until).then(|| e.until - now)
    }

    /// Records a failed attempt; returns the delay before the next one.
    pub fn failed(&mut self, uid: &str, now: Instant) -> Duration {
        let delay = match self.entries.get(uid) {
            Some(e) => (e.delay * 2).min(self.max),
            None => self.first,
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

    /// Forgets the key (it works again, or it is gone).
    pub fn forget(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// How many keys are backing off.
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

    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn an_attempt_waits_the_doubling_delay_whatever_wakes_it() {
        let mut b = Backoff::new(FIRST, MAX);
        let t0 = Instant::now();
        assert_eq!(b.wait("a", t0), None, "a first attempt never waits");
        assert_eq!(b.failed("a", t0), FIRST);
        assert_eq!(b.wait("a", t0), Some(FIRST));
        let half = t0 + FIRST / 2;
        assert_eq!(b.wait("a", half), Some(FIRST / 2));
        assert_eq!(b.wait("a", t0 + FIRST), None);
        assert_eq!(b.failed("a", t0 + FIRST), FIRST * 2);
        assert_eq!(b.failed("a", t0 + FIRST * 3), FIRST * 4);
        assert_eq!(b.wait("b", t0), None, "other keys are not held");
    }

    #[test]
    fn the_delay_stops_at_the_maximum_and_is_forgotten_on_success() {
        let mut b = Backoff::new(FIRST, MAX);
        let t0 = Instant::now();
        let last = (0..20).map(|_| b.failed("a", t0)).last().unwrap();
        assert_eq!(last, MAX);
        assert_eq!(b.len(), 1);
        b.forget("a");
        assert!(b.is_empty());
        assert_eq!(b.failed("a", t0), FIRST, "a later failure starts over");
    }
}
