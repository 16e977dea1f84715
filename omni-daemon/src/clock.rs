//! The host's clocks: a monotonic clock for the node (nanoseconds since
//! process start) and the wall clock it uses for TAI64N timestamps.

use std::time::Duration;

use omni_core::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { start: std::time::Instant::now() }
    }

    /// Now on the node's monotonic clock.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// How long from now until `deadline` (zero if it passed).
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}
