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

#[derive(Clone, Copy, Debug, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; 5],
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, at: Instant) {
        if let Some(d) = self.deadlines.get_mut(t as usize) {
            *d = Some(at);
        }
    }
    pub fn stop(&mut self, t: Timer) {
        if let Some(d) = self.deadlines.get_mut(t as usize) {
            *d = None;
        }
    }
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.deadlines.get(t as usize).copied().flatten()
    }
    pub fn is_set(&self, t: Timer) -> bool {
        self.get(t).is_some()
    }
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
    /// Disarms and returns the first timer due at `now`.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for t in Timer::ALL {
            if let Some(d) = self.deadlines.get_mut(t as usize) {
                if d.is_some_and(|at| at <= now) {
                    *d = None;
                    return Some(t);
                }
            }
        }
        None
    }
    pub fn clear(&mut self) {
        self.deadlines = [None; 5];
    }
}
