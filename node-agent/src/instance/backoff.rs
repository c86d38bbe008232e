//! The start back-off of the instances on this host: a start that fails on the host is
//! retried behind a delay that doubles from [`FIRST`] to [`MAX`] (see
//! [`bulkhead_telemetry::backoff`] for why the gate must hold whatever wakes the instance).

use std::time::Duration;

pub use bulkhead_telemetry::backoff::Backoff;

/// The delay after the first failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const MAX: Duration = Duration::from_secs(30);

/// An empty start back-off, keyed by Instance UID.
pub fn start_backoff() -> Backoff {
    Backoff::new(FIRST, MAX)
}
