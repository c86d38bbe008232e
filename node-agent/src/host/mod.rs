//! The Host this agent runs on: what it detects, its registration and its Lease.

pub mod detect;
pub mod lease;
