//! bulkhead-controller: schedules instances onto hosts, keeps replicas, runs rolling and
//! blue/green replacement, publishes service endpoints and notices dead hosts.
//!
//! The reconcilers arrive with the controller issue; this crate currently holds the binary's
//! entry point and version.

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
