//! `make bench`: Bulkhead's benchmarks, each side by side with a baseline in the same run.
//!
//! 1. [`start`]: Instance start latency through the agent, beside `ctr run` plus the agent's
//!    CNI chain, and `ctr run` and `runc run` without network, all with the same OCI spec
//!    ([`handstart`], [`cni`]);
//! 2. [`fanout`]: the controller scaling a Workload over simulated hosts, beside
//!    kube-controller-manager's Deployment controller at its defaults and with
//!    `--kube-api-qps 500 --kube-api-burst 1000` ([`kcm`]), and a raw parallel create loop;
//! 3. [`cutover`]: blue/green cutover under a 20 ms client, beside the same EndpointSlice
//!    switch applied directly;
//! 4. [`start`] also samples the agent's idle footprint with and without instances;
//! 5. [`patched`]: a signed patched image pushed under a followed tag, push → traffic
//!    switched, beside the Workload's polling interval (issue #17).
//!
//! The results are written as `results.json`; [`report`] turns them into `report.md`, and
//! `bench/charts.py` draws the charts. Performance is never asserted in tests; the unit
//! tests here check only the statistics, /proc parsing, the cutover's readiness logic and
//! the report's text.

pub mod argv;
pub mod cmd;
pub mod cni;
pub mod cutover;
pub mod fanout;
pub mod goals;
pub mod handstart;
pub mod kcm;
pub mod machine;
pub mod patched;
pub mod procfs;
pub mod report;
pub mod start;
pub mod stats;

use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// When it began (UTC, RFC 3339).
    pub began: String,
    /// Wall seconds it took.
    pub wall_s: f64,
    /// The machine.
    pub machine: machine::Machine,
    /// A note from whoever ran it (BULKHEAD_BENCH_NOTE), e.g. "machine shared with builds".
    pub note: Option<String>,
    /// Items 1 and 4.
    pub start: Option<start::Results>,
    /// Why items 1 and 4 have no results, if they failed.
    pub start_error: Option<String>,
    /// Item 2.
    pub fanout: Option<fanout::Results>,
    /// Why item 2 has no results, if it failed.
    pub fanout_error: Option<String>,
    /// Item 3.
    pub cutover: cutover::Outcome,
    /// Item 5.
    #[serde(default)]
    pub patched: Option<patched::Results>,
    /// Why item 5 has no results, if it failed.
    #[serde(default)]
    pub patched_error: Option<String>,
}

impl Run {
    /// A run that measured nothing yet, with `cutover` as item 3's outcome.
    pub fn empty(cutover: cutover::Outcome) -> Self {
        Self {
            began: String::new(),
            wall_s: 0.0,
            machine: Default::default(),
            note: None,
            start: None,
            start_error: None,
            fanout: None,
            fanout_error: None,
            cutover,
            patched: None,
            patched_error: None,
        }
    }
}
