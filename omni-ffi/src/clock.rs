//! The tunnel's clock: the host's, through [`HostClock`], or the system's
//! monotonic clock *including time asleep*. WireGuard's timers (session age,
//! Reject-After-Time) are about real elapsed time, and phones sleep: Linux
//! and Android `CLOCK_BOOTTIME` (= `SystemClock.elapsedRealtimeNanos()`) and
//! Darwin's `CLOCK_MONOTONIC` keep counting while suspended, unlike
//! `std::time::Instant`.

use std::sync::Arc;

use omni_core::Instant;

/// A monotonic clock provided by the host (tests drive virtual time with it;
/// a host may prefer its platform's clock). Must never go backwards.
#[uniffi::export(with_foreign)]
pub trait HostClock: Send + Sync {
    /// Nanoseconds since an arbitrary origin fixed for the tunnel's lifetime.
    fn now_nanos(&self) -> u64;
}

#[derive(Clone)]
pub(crate) enum Clock {
    System,
    Host(Arc<dyn HostClock>),
}

impl Clock {
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::from_nanos(system_now_nanos()),
            Clock::Host(c) => Instant::from_nanos(c.now_nanos()),
        }
    }
}

/// Nanoseconds on the system's monotonic clock that includes sleep.
pub fn system_now_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        const ID: libc::clockid_t = libc::CLOCK_BOOTTIME;
        #[cfg(target_vendor = "apple")]
        const ID: libc::clockid_t = libc::CLOCK_MONOTONIC;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
        // the platform supports (clock_gettime cannot fail for it).
        let rc = unsafe { libc::clock_gettime(ID, &mut ts) };
        if rc == 0 {
            let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
            return secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        }
    }
    fallback_nanos()
}

fn fallback_nanos() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    // Offset by one second so no reading is the zero instant.
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX).saturating_add(1_000_000_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn system_clock_is_monotonic() {
        let a = super::system_now_nanos();
        let b = super::system_now_nanos();
        assert!(a > 0 && b >= a);
    }
}
