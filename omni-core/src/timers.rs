//! The per-peer timer table (quinn-proto style): a fixed array of optional
//! deadlines, one per timer kind. The node arms and disarms them following
//! the WireGuard paper §6 and fires the expired ones in `handle_timeout`.

use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Timer {
    /// No response to our initiation yet: send it again.
    RetransmitHandshake = 0,
    /// We received data and sent nothing back: send a keepalive.
    SendKeepalive = 1,
    /// We sent data and heard nothing back: start a new handshake.
    NewHandshake = 2,
    /// Nothing happened for 3 × Reject-After-Time: erase all keys.
    ZeroKeyMaterial = 3,
    /// The configured persistent keepalive interval passed without traffic.
    PersistentKeepalive = 4,
}

impl Timer {
    pub const ALL: [Timer; 5] = [
        Timer::RetransmitHandshake,
        Timer::SendKeepalive,
        Timer::NewHandshake,
        Timer::ZeroKeyMaterial,
        Timer::PersistentKeepalive,
    ];
}

/// Deadlines in nanoseconds, [`UNSET`] for a disarmed timer: half the size
/// of `[Option<Instant>; 5]` (a Nucleus keeps one table per member).
#[derive(Clone, Copy, Debug)]
pub struct TimerTable {
    deadlines: [u64; 5],
}

const UNSET: u64 = u64::MAX;

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable { deadlines: [UNSET; 5] }
    }
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, at: Instant) {
        if let Some(d) = self.deadlines.get_mut(t as usize) {
            // The last nanosecond of the clock (584 years) stands for "unset".
            *d = at.as_nanos().min(UNSET.saturating_sub(1));
        }
    }
    pub fn stop(&mut self, t: Timer) {
        if let Some(d) = self.deadlines.get_mut(t as usize) {
            *d = UNSET;
        }
    }
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.deadlines.get(t as usize).copied().filter(|&d| d != UNSET).map(Instant::from_nanos)
    }
    pub fn is_set(&self, t: Timer) -> bool {
        self.get(t).is_some()
    }
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().copied().filter(|&d| d != UNSET).min().map(Instant::from_nanos)
    }
    /// Disarms and returns the first timer due at `now`.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for t in Timer::ALL {
            if let Some(d) = self.deadlines.get_mut(t as usize) {
                if *d != UNSET && *d <= now.as_nanos() {
                    *d = UNSET;
                    return Some(t);
                }
            }
        }
        None
    }
    pub fn clear(&mut self) {
        self.deadlines = [UNSET; 5];
    }
}
