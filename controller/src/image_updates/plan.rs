//! Following a tag, decided without a client or a clock: when to ask the registry, what a
//! digest seen under the tag means, and how the status records it.
//!
//! A digest is verified once: a trusted verdict is kept in `status.imageUpdates.history` and
//! never asked again. An untrusted one is asked again only at the next due check (someone may
//! sign it since), a registry failure after a back-off, so nothing hot-loops. While a rollout
//! is in progress a newer digest waits (`pendingDigest`); it is taken up once the rollout
//! ends, so there are never two previews at once.

use bulkhead_crds::workload::{DigestVerdict, ImageUpdatesStatus};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

/// Verdicts kept in the status.
pub const HISTORY_LIMIT: usize = 10;
/// The first retry after a failed look at the registry, in seconds; it doubles each time.
pub const FIRST_RETRY_SECONDS: i64 = 5;

/// The verdict of a trusted digest.
pub const TRUSTED: &str = "Trusted";
/// The verdict of a digest rolled out without a signature check (allowUnsigned).
pub const ALLOW_UNSIGNED: &str = "AllowUnsigned";

/// What is known before the registry is asked.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The status so far.
    pub previous: Option<&'a ImageUpdatesStatus>,
    /// The followed reference (`registry/repository:tag`).
    pub tag: &'a str,
    /// spec.imageUpdates.checkIntervalSeconds.
    pub interval: i64,
    /// The registry announced a push to the followed repository since the last check.
    pub pushed: bool,
    /// A rollout is under way (a newer digest waits for it).
    pub rollout_in_progress: bool,
    /// Now, in seconds.
    pub now: i64,
}

/// Seconds to wait after a check with `failures` failed looks in a row.
pub fn wait_after(interval: i64, failures: i32) -> i64 {
    if failures <= 0 {
        return interval;
    }
    let exp = u32::try_from(failures - 1).unwrap_or(0).min(10);
    (FIRST_RETRY_SECONDS << exp).min(interval.max(FIRST_RETRY_SECONDS))
}

/// Seconds until the registry should be asked: 0 when now.
pub fn check_in(input: &Input) -> i64 {
    let Some(prev) = input.previous.filter(|p| p.tag == input.tag) else {
        return 0;
    };
    if input.pushed {
        return 0;
    }
    // A digest that waited for a rollout is taken up as soon as the rollout is over.
    if prev.pending_digest.is_some() && refusal(prev).is_none() && !input.rollout_in_progress {
        return 0;
    }
    let Some(checked) = &prev.checked_time else {
        return 0;
    };
    let due = checked.0.as_second() + wait_after(input.interval, prev.failures);
    (due - input.now).max(0)
}

/// What the registry said about the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    /// The tag points to this digest.
    Digest(String),
    /// The registry could not be asked.
    Failed(String),
}

/// What to do with a digest seen under the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// It is the accepted digest: nothing changes.
    Keep,
    /// A rollout is in progress: it waits as the pending digest.
    Wait,
    /// Verified before and trusted, or no signature required: accept it.
    Accept,
    /// Verify its signature first.
    Verify,
}

/// Decides what a digest seen under the tag needs.
pub fn next(
    previous: Option<&ImageUpdatesStatus>,
    digest: &str,
    rollout_in_progress: bool,
    signature_required: bool,
) -> Next {
    let accepted = previous.and_then(|p| p.digest.as_deref());
    if accepted == Some(digest) {
        return Next::Keep;
    }
    if accepted.is_some() && rollout_in_progress {
        return Next::Wait;
    }
    let trusted_before = previous.is_some_and(|p| {
        p.history
            .iter()
            .any(|v| v.digest == digest && v.verdict == TRUSTED)
    });
    if !signature_required || trusted_before {
        Next::Accept
    } else {
        Next::Verify
    }
}

/// The outcome of a look at the registry, as the status records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The registry could not be asked (tag or signatures); back off.
    Failed(String),
    /// The tag points to the accepted digest.
    Unchanged,
    /// A newer digest waits for the rollout in progress.
    Waiting(String),
    /// The digest is accepted, with this verdict (Trusted or AllowUnsigned) and message.
    Accepted {
        /// The digest.
        digest: String,
        /// Trusted or AllowUnsigned.
        verdict: String,
        /// Which key signed it, in words.
        message: String,
    },
    /// The digest is refused.
    Refused {
        /// The digest.
        digest: String,
        /// Why, as a CamelCase reason.
        reason: String,
        /// Why, in words.
        message: String,
    },
}

/// The status after an outcome at `now`. A verdict is recorded once per digest (a repeated
/// refusal only moves its time).
pub fn record(
    previous: Option<&ImageUpdatesStatus>,
    tag: &str,
    outcome: &Outcome,
    now: Timestamp,
) -> ImageUpdatesStatus {
    let mut s = previous
        .filter(|p| p.tag == tag)
        .cloned()
        .unwrap_or_else(|| ImageUpdatesStatus {
            tag: tag.to_string(),
            ..Default::default()
        });
    s.checked_time = Some(Time(now));
    let verdict = |digest: &str, verdict: &str, message: &str| DigestVerdict {
        digest: digest.to_string(),
        verdict: verdict.to_string(),
        tag: None,
        message: message.to_string(),
        time: Time(now),
    };
    match outcome {
        Outcome::Failed(_) => s.failures = s.failures.saturating_add(1),
        Outcome::Unchanged => {
            s.failures = 0;
            s.pending_digest = None;
        }
        Outcome::Waiting(d) => {
            s.failures = 0;
            s.pending_digest = Some(d.clone());
        }
        Outcome::Accepted {
            digest,
            verdict: v,
            message,
        } => {
            s.failures = 0;
            s.pending_digest = None;
            s.digest = Some(digest.clone());
            s.changed_time = Some(Time(now));
            remember(&mut s.history, verdict(digest, v, message));
        }
        Outcome::Refused {
            digest,
            reason,
            message,
        } => {
            s.failures = 0;
            s.pending_digest = Some(digest.clone());
            remember(&mut s.history, verdict(digest, reason, message));
        }
    }
    s
}

/// Records the tag a digest was found under (policy SemverRange) on its verdict and, when it
/// was accepted, as the status's `resolvedTag`.
pub fn note_tag(s: &mut ImageUpdatesStatus, outcome: &Outcome, tag: Option<&str>) {
    let (Some(tag), Outcome::Accepted { digest, .. } | Outcome::Refused { digest, .. }) =
        (tag, outcome)
    else {
        return;
    };
    if let Some(v) = s.history.iter_mut().find(|v| &v.digest == digest) {
        v.tag = Some(tag.to_string());
    }
    if matches!(outcome, Outcome::Accepted { .. }) {
        s.resolved_tag = Some(tag.to_string());
    }
}

/// Puts a verdict first in the history, replacing an older one on the same digest.
fn remember(history: &mut Vec<DigestVerdict>, v: DigestVerdict) {
    history.retain(|old| old.digest != v.digest);
    history.insert(0, v);
    history.truncate(HISTORY_LIMIT);
}

/// The verdict recorded on the pending digest, when it was refused.
pub fn refusal(status: &ImageUpdatesStatus) -> Option<&DigestVerdict> {
    let pending = status.pending_digest.as_deref()?;
    status
        .history
        .iter()
        .find(|v| v.digest == pending && v.verdict != TRUSTED && v.verdict != ALLOW_UNSIGNED)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "localhost:5000/bulkhead/web:v1";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn accepted(digest: &str, checked: i64) -> ImageUpdatesStatus {
        record(
            None,
            TAG,
            &Outcome::Accepted {
                digest: digest.into(),
                verdict: TRUSTED.into(),
                message: "signed by cosign.pub".into(),
            },
            at(checked),
        )
    }

    fn input<'a>(prev: Option<&'a ImageUpdatesStatus>, now: i64, pushed: bool) -> Input<'a> {
        Input {
            previous: prev,
            tag: TAG,
            interval: 60,
            pushed,
            rollout_in_progress: false,
            now,
        }
    }

    #[test]
    fn the_registry_is_asked_on_the_interval_at_once_on_a_push_and_for_a_new_tag() {
        assert_eq!(check_in(&input(None, 100, false)), 0, "never checked");
        let s = accepted("sha256:a", 100);
        assert_eq!(check_in(&input(Some(&s), 130, false)), 30);
        assert_eq!(check_in(&input(Some(&s), 160, false)), 0);
        assert_eq!(check_in(&input(Some(&s), 130, true)), 0, "a push");
        let other = Input {
            tag: "localhost:5000/bulkhead/web:v2",
            ..input(Some(&s), 130, false)
        };
        assert_eq!(check_in(&other), 0, "the spec names another tag");
    }

    #[test]
    fn a_digest_that_waited_is_looked_at_again_once_the_rollout_is_over() {
        let s = record(
            Some(&accepted("sha256:a", 100)),
            TAG,
            &Outcome::Waiting("sha256:b".into()),
            at(110),
        );
        let during = Input {
            rollout_in_progress: true,
            ..input(Some(&s), 120, false)
        };
        assert_eq!(check_in(&during), 50, "it waits for the rollout");
        assert_eq!(
            check_in(&input(Some(&s), 120, false)),
            0,
            "the rollout is over"
        );
    }

    #[test]
    fn failed_looks_back_off_up_to_the_interval_and_reset_on_success() {
        let mut s = accepted("sha256:a", 100);
        let waits: Vec<i64> = (1..=6)
            .map(|_| {
                s = record(Some(&s), TAG, &Outcome::Failed("down".into()), at(100));
                wait_after(60, s.failures)
            })
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(
            s.digest.as_deref(),
            Some("sha256:a"),
            "the accepted digest stays"
        );
        s = record(Some(&s), TAG, &Outcome::Unchanged, at(200));
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn a_new_digest_is_verified_once_and_waits_for_a_rollout_in_progress() {
        let s = accepted("sha256:a", 100);
        assert_eq!(next(Some(&s), "sha256:a", false, true), Next::Keep);
        assert_eq!(next(Some(&s), "sha256:b", false, true), Next::Verify);
        assert_eq!(next(Some(&s), "sha256:b", true, true), Next::Wait);
        assert_eq!(next(Some(&s), "sha256:b", false, false), Next::Accept);
        assert_eq!(
            next(None, "sha256:a", true, true),
            Next::Verify,
            "the first digest never waits"
        );
        // Rolled forward to b, then the tag goes back to a: a was trusted, no second check.
        let s = record(
            Some(&s),
            TAG,
            &Outcome::Accepted {
                digest: "sha256:b".into(),
                verdict: TRUSTED.into(),
                message: String::new(),
            },
            at(200),
        );
        assert_eq!(next(Some(&s), "sha256:a", false, true), Next::Accept);
    }

    #[test]
    fn a_refusal_keeps_the_running_digest_and_is_recorded_once() {
        let s = accepted("sha256:a", 100);
        let refused = Outcome::Refused {
            digest: "sha256:b".into(),
            reason: "Unsigned".into(),
            message: "image sha256:b is not signed".into(),
        };
        let s = record(Some(&s), TAG, &refused, at(160));
        let s = record(Some(&s), TAG, &refused, at(220));
        assert_eq!(s.digest.as_deref(), Some("sha256:a"));
        assert_eq!(s.pending_digest.as_deref(), Some("sha256:b"));
        assert_eq!(s.history.len(), 2, "{:?}", s.history);
        assert_eq!(refusal(&s).map(|v| v.verdict.as_str()), Some("Unsigned"));
        assert_eq!(s.changed_time, Some(Time(at(100))));
        let s = record(Some(&s), TAG, &Outcome::Unchanged, at(280));
        assert!(
            refusal(&s).is_none(),
            "the tag went back to the running digest"
        );
    }

    #[test]
    fn the_history_is_bounded_newest_first() {
        let mut s = accepted("sha256:0", 0);
        for n in 1..=15 {
            s = record(
                Some(&s),
                TAG,
                &Outcome::Accepted {
                    digest: format!("sha256:{n}"),
                    verdict: TRUSTED.into(),
                    message: String::new(),
                },
                at(n),
            );
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].digest, "sha256:15");
    }

    #[test]
    fn a_range_records_the_tag_each_digest_was_found_under() {
        let outcome = Outcome::Accepted {
            digest: "sha256:b".into(),
            verdict: TRUSTED.into(),
            message: String::new(),
        };
        let mut s = record(Some(&accepted("sha256:a", 0)), TAG, &outcome, at(60));
        note_tag(&mut s, &outcome, Some("1.3.0"));
        assert_eq!(s.resolved_tag.as_deref(), Some("1.3.0"));
        assert_eq!(s.history[0].tag.as_deref(), Some("1.3.0"));
        assert_eq!(s.history[1].tag, None);
        let refused = Outcome::Refused {
            digest: "sha256:c".into(),
            reason: "Unsigned".into(),
            message: String::new(),
        };
        let mut s = record(Some(&s), TAG, &refused, at(120));
        note_tag(&mut s, &refused, Some("1.4.0"));
        assert_eq!(
            s.resolved_tag.as_deref(),
            Some("1.3.0"),
            "a refusal moves nothing"
        );
        assert_eq!(s.history[0].tag.as_deref(), Some("1.4.0"));
    }
}
