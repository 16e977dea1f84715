//! Wall time for TAI64N on a device without a battery-backed clock.
//!
//! A WireGuard responder accepts an initiation only if its TAI64N timestamp is
//! newer than the last one it accepted from that peer. A device that boots
//! with its clock at zero would be refused until its uptime exceeds the last
//! uptime the peer saw. [`PersistedWall`] keeps a ceiling in persistent
//! storage: at boot the wall clock starts just above the stored ceiling and a
//! new ceiling (`RESERVE` seconds later) is written *before* any timestamp is
//! used; the ceiling moves up again before the clock reaches it. So every
//! timestamp after a reboot is newer than every timestamp before it, with one
//! flash write per boot and one per `RESERVE` seconds of uptime.
//!
//! The timestamps start near the Unix epoch, which is fine: peers only compare
//! them with earlier timestamps from the same device. A device that later
//! learns the real time (from the Nucleus) moves forward, never back
//! ([`PersistedWall::adopt`], which stores the new ceiling first).

use omni_core::{Instant, WallTime};

/// Where the ceiling lives: a flash sector, an EEPROM cell, a host file under
/// QEMU semihosting.
pub trait WallStore {
    /// The stored ceiling in seconds, `None` if nothing was ever stored.
    fn load(&mut self) -> Option<u64>;
    /// Stores a new ceiling; must be durable when it returns `true`.
    fn store(&mut self, ceiling_secs: u64) -> bool;
}

/// A wall clock that only goes up, across reboots.
pub struct PersistedWall<S: WallStore> {
    store: S,
    boot: Instant,
    base_secs: u64,
    ceiling_secs: u64,
    healthy: bool,
}

/// Seconds reserved per flash write.
pub const RESERVE_SECS: u64 = 3600;
/// The ceiling is raised when the clock comes this close to it.
const MARGIN_SECS: u64 = 60;

impl<S: WallStore> PersistedWall<S> {
    /// Reads the ceiling and reserves the next interval. `now` is the
    /// monotonic time the returned wall time corresponds to.
    pub fn boot(mut store: S, now: Instant) -> Self {
        let stored = store.load().unwrap_or(0);
        let base_secs = stored.saturating_add(1);
        let ceiling_secs = base_secs.saturating_add(RESERVE_SECS);
        let healthy = store.store(ceiling_secs);
        PersistedWall { store, boot: now, base_secs, ceiling_secs, healthy }
    }

    /// The (wall time at `now`) pair to hand to `Node::set_wall_time`.
    pub fn wall_at(&self, now: Instant) -> WallTime {
        let e = now.saturating_duration_since(self.boot);
        WallTime::new(self.base_secs.saturating_add(e.as_secs()), e.subsec_nanos())
    }

    /// Seconds of the wall clock at boot (for logs and tests).
    pub fn base_secs(&self) -> u64 {
        self.base_secs
    }

    /// Whether every reservation so far was stored durably. If not, the
    /// device may be refused after its next reboot (until its clock catches up).
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Moves the clock forward to `wall` (e.g. the Nucleus's time), never
    /// back: the new ceiling is stored before the new time is handed out, so
    /// timestamps after a reboot stay above every one used now. Returns the
    /// wall time at `now` to give to `Node::set_wall_time`.
    pub fn adopt(&mut self, now: Instant, wall: WallTime) -> WallTime {
        let current = self.wall_at(now);
        if wall.secs > current.secs {
            let elapsed = now.saturating_duration_since(self.boot).as_secs();
            let next = wall.secs.saturating_add(RESERVE_SECS);
            if next > self.ceiling_secs {
                self.healthy &= self.store.store(next);
                self.ceiling_secs = next;
            }
            self.base_secs = wall.secs.saturating_sub(elapsed);
        }
        self.wall_at(now)
    }

    /// Raises the ceiling if the clock is near it. Call before any handshake
    /// and at least every `RESERVE_SECS - MARGIN_SECS`; returns when to call again.
    pub fn maintain(&mut self, now: Instant) -> Instant {
        let secs = self.wall_at(now).secs;
        if secs.saturating_add(MARGIN_SECS) >= self.ceiling_secs {
            let next = secs.saturating_add(RESERVE_SECS);
            self.healthy &= self.store.store(next);
            self.ceiling_secs = next;
        }
        let until = self.ceiling_secs.saturating_sub(MARGIN_SECS).saturating_sub(secs);
        now.saturating_add(core::time::Duration::from_secs(until.max(1)))
    }
}
