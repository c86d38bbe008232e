//! bulkhead-node-agent: starts the instances bound to its host through containerd and runc
//! with every isolation layer on, verifies what the kernel enforces, and reports it.

pub mod agent;
pub mod failpoint;
#[cfg(test)]
mod fixture_fs;
pub mod host;
pub mod image;
pub mod image_gc;
pub mod instance;
pub mod isolation;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod preflight;
pub mod runtime;
pub mod spec;
pub mod walls;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
