//! Item 5 (issue #17): a patched image pushed under a followed tag, push → traffic switched,
//! beside the Workload's polling interval.
//!
//! The scenario is the demo's second act, `e2e/hack/demo-patched.sh --rounds N` (not a copy of
//! it): a Workload follows `bulkhead/demo-web:stable` with a check interval of 300 s and one
//! trusted cosign key; the act pushes a signed patched image under the same tag under a 20 ms
//! client, then N more signed pushes alternate between the two images. Each round is timed
//! from the push (before the tag moves) to the Workload's `PreviewStarted` Event and to its
//! `Promoted` (or `RolledBack`, when traffic goes back to the revision it had before) Event.
//! The interval is the baseline: without the registry's push notification a push would wait
//! for the next look, up to that long. This module runs the script, bounded in time, and
//! reads its lines.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Signed pushes timed after the act.
    pub rounds: usize,
    /// Longest the whole script may take.
    pub timeout: Duration,
}

/// One timed push.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Push → PreviewStarted, seconds.
    pub preview_s: f64,
    /// Push → Promoted (traffic switched), seconds.
    pub switch_s: f64,
}

/// Figures of item 5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Each timed push.
    pub rounds: Vec<Round>,
    /// Summary of the rounds' push → preview started.
    pub preview: Option<Summary>,
    /// Summary of the rounds' push → traffic switched.
    pub switch: Option<Summary>,
    /// The Workload's check interval (the baseline), seconds.
    pub interval_s: Option<f64>,
    /// The 20 ms client's summary over the act's rollout, as it printed it.
    pub client: Option<String>,
    /// Wall seconds of item 5.
    #[serde(default)]
    pub wall_s: f64,
}

/// Runs `e2e/hack/demo-patched.sh --rounds N` from `repo_root` against the local system (the
/// environment's BULKHEAD_STATE_DIR and BULKHEAD_PORT_OFFSET) and reads its figures.
pub async fn run(cfg: &Config, repo_root: &Path) -> anyhow::Result<Results> {
    let script = repo_root.join("e2e/hack/demo-patched.sh");
    let script = script.to_string_lossy();
    let rounds = cfg.rounds.to_string();
    let (stdout, wall) =
        crate::cmd::run("bash", &[script.as_ref(), "--rounds", &rounds], cfg.timeout)
            .await
            .context("e2e/hack/demo-patched.sh")?;
    let mut r = parse(&stdout)?;
    if r.rounds.len() != cfg.rounds {
        bail!(
            "demo-patched.sh timed {} rounds of {}: {stdout}",
            r.rounds.len(),
            cfg.rounds
        );
    }
    r.wall_s = wall;
    Ok(r)
}

/// Reads the script's output: `round N: push -> preview started 0.47s, push -> traffic
/// switched 2.38s`, the client's summary and `(poll interval 300 s)`.
pub fn parse(stdout: &str) -> anyhow::Result<Results> {
    let seconds = |s: &str| -> Option<f64> { s.trim().trim_end_matches('s').parse().ok() };
    let mut rounds = Vec::new();
    let mut interval_s = None;
    let mut client = None;
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("round ")
            && let Some((_, times)) = rest.split_once(": push -> preview started ")
        {
            let (preview, switch) = times
                .split_once(", push -> traffic switched ")
                .with_context(|| format!("a round line without its switch: {line}"))?;
            match (seconds(preview), seconds(switch)) {
                (Some(preview_s), Some(switch_s)) => rounds.push(Round {
                    preview_s,
                    switch_s,
                }),
                _ => bail!("a round without both times (an Event was missing): {line}"),
            }
        } else if let Some(rest) = line.strip_prefix("client: ") {
            client = Some(rest.to_string());
        } else if let Some((_, rest)) = line.split_once("(poll interval ") {
            interval_s = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        }
    }
    let of = |f: fn(&Round) -> f64| Summary::of(&rounds.iter().map(f).collect::<Vec<_>>());
    Ok(Results {
        preview: of(|r| r.preview_s),
        switch: of(|r| r.switch_s),
        rounds,
        interval_s,
        client,
        wall_s: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "
==> a client polls the service every 20 ms
  client: summary: 412 requests every 20 ms, 412 served, 0 failed
  push -> traffic switched:  2.40s
==> benchmark: 3 signed pushes under the same tag (check interval 300 s)
  round 1: push -> preview started 0.47s, push -> traffic switched 2.38s
  round 2: push -> preview started 1.10s, push -> traffic switched 3.02s
  round 3: push -> preview started 0.40s, push -> traffic switched 2.20s
  p50 over 3 rounds: push -> preview started 0.47s, push -> traffic switched 2.38s (poll interval 300 s)
";

    #[test]
    fn the_scripts_rounds_interval_and_client_are_read() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.rounds.len(), 3);
        assert_eq!(
            r.rounds[1],
            Round {
                preview_s: 1.10,
                switch_s: 3.02
            }
        );
        assert_eq!(r.switch.map(|s| s.p50), Some(2.38));
        assert_eq!(r.preview.map(|s| s.p50), Some(0.47));
        assert_eq!(r.interval_s, Some(300.0));
        assert_eq!(
            r.client.as_deref(),
            Some("summary: 412 requests every 20 ms, 412 served, 0 failed")
        );
    }

    #[test]
    fn a_round_the_script_could_not_time_is_an_error() {
        let err = parse("  round 1: push -> preview started ?, push -> traffic switched 2.1s")
            .unwrap_err();
        assert!(err.to_string().contains("round 1"), "{err}");
    }
}
