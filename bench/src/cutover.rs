//! Item 3, blue/green cutover: **the slot, not yet measured.**
//!
//! The measurement needs the blue/green controller and the WorkloadService endpoints
//! (issue #6), which are not on this branch. [`run`] is where the scenario plugs in; until
//! then it returns [`Outcome::NotMeasured`] and the report says so. It never invents a
//! number.
//!
//! The scenario, once #6 lands (bounded in count and time, loopback and the local bridge
//! only):
//! 1. a BlueGreen Workload (e.g. 5 replicas of web:v1, `autoPromote: false`) and a
//!    WorkloadService on the local system's real agent; wait until Available and the active
//!    EndpointSlice lists 5 ready endpoints;
//! 2. start a bounded polling load (e.g. 50 requests/s for at most 120 s, each with a 1 s
//!    timeout) against the active endpoints on the agent's bridge, counting failures;
//! 3. change the template to web:v2; watch the preview Instances and record when the last
//!    one turns Ready; promote (`bulkhead.dev/promote` annotation); watch the active
//!    EndpointSlice and record when it lists only preview endpoints;
//! 4. report last-preview-Ready → EndpointSlice switched (ms, over several rollouts) and
//!    failed / total requests, beside the same switch done by hand (patching a Service's
//!    selector) as the baseline.

use kube::Client;
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// Figures of a measured cutover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Last preview Instance Ready → EndpointSlice switched, milliseconds, per rollout.
    pub switch_ms: Vec<f64>,
    /// Summary of `switch_ms`.
    pub switch: Option<Summary>,
    /// Requests of the polling load that failed.
    pub failed_requests: u64,
    /// Requests of the polling load.
    pub total_requests: u64,
}

/// Whether item 3 ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Outcome {
    /// Not measured, and why.
    NotMeasured {
        /// Why not.
        reason: String,
    },
    /// Measured.
    Measured(Results),
}

/// Runs the blue/green cutover scenario (see the module documentation). Not measured until
/// the blue/green controller (issue #6) is merged.
pub async fn run(_client: &Client) -> Outcome {
    Outcome::NotMeasured {
        reason: "the blue/green controller and WorkloadService endpoints (issue #6) are not \
                 merged yet; bench/src/cutover.rs::run is where the scenario plugs in"
            .into(),
    }
}
