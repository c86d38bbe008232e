//! Crash points for restart-safety tests; see [`bulkhead_telemetry::failpoint`].

pub use bulkhead_telemetry::failpoint::{delay, hit};
