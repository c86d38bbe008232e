//! bulkhead-node-agent: starts the instances bound to its host through containerd and runc
//! with every isolation layer on, verifies what the kernel enforces, and reports it.
//!
//! The runtime path arrives with the node agent issue; this crate currently holds the
//! binary's entry point and version.

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
