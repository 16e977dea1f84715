//! Time as plain values handed in by the host: the core never reads a clock.

use core::time::Duration;

/// A point on the host's monotonic clock, in nanoseconds since an arbitrary
/// origin chosen by the host (boot, process start, a test's zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The origin of the host's clock.
    pub const ZERO: Instant = Instant(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000_000))
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later
    /// (a host clock that stepped backwards must not panic or wrap).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
    /// `self - d`, saturating at the origin.
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

/// Wall-clock time (seconds and nanoseconds since the Unix epoch), used only to
/// build TAI64N timestamps for handshake initiations. It may come from an RTC,
/// from the Nucleus, or from a counter persisted across reboots: the responder
/// only needs it to go up between two initiations to the same peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WallTime {
    pub secs: u64,
    pub nanos: u32,
}

impl WallTime {
    pub const fn new(secs: u64, nanos: u32) -> Self {
        WallTime { secs, nanos }
    }
    pub(crate) fn as_nanos(self) -> u128 {
        u128::from(self.secs).saturating_mul(1_000_000_000).saturating_add(u128::from(self.nanos))
    }
    pub(crate) fn from_nanos(n: u128) -> Self {
        let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
        let nanos = u32::try_from(n % 1_000_000_000).unwrap_or(0);
        WallTime { secs, nanos }
    }
}

#[cfg(feature = "std")]
impl WallTime {
    /// Reads the system clock (std hosts only; the core itself never calls this).
    pub fn now_system() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        WallTime { secs: d.as_secs(), nanos: d.subsec_nanos() }
    }
}
