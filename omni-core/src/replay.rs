//! Sliding anti-replay window for transport counters (RFC 6479): a ring of
//! 64-bit words, so advancing the window clears whole words instead of shifting.
//! `check` is side-effect free and runs before decryption; `update` runs only
//! after the packet authenticated, so forged counters cannot move the window.
//!
//! The ring size is a type parameter so each [`Storage`](crate::storage::Storage)
//! picks what it can afford (every session carries one window, three sessions
//! per peer):
//! - [`ReplayWindow8192`] (1032 bytes): hosts. It tolerates 8192 counters of
//!   reordering, what multi-queue NICs and parallel decryption at 10 Gbit/s
//!   produce; [`Heap`](crate::storage::Heap) uses it, like Linux and wireguard-go.
//! - [`ReplayWindow2048`] (264 bytes): microcontrollers, the default of
//!   [`Fixed`](crate::storage::Fixed); see its documentation for why 2048 suffices.
//!
//! Any other size is `ReplayWindow<WORDS>`: `WORDS` ring words hold a window
//! of `(WORDS - 1) * 64` counters (one word is the slack RFC 6479 needs so that
//! advancing never clears bits still inside the window). `WORDS` must be ≥ 2.

use crate::constants::REJECT_AFTER_MESSAGES;

const WORD_BITS: u64 = 64;

/// What a session needs from its replay window. Implemented by every
/// [`ReplayWindow<WORDS>`]; a storage chooses one through
/// [`Storage::Replay`](crate::storage::Storage::Replay).
pub trait AntiReplay: Default {
    /// Counters this far behind the highest one seen are still accepted once.
    const WINDOW_SIZE: u64;
    /// Would `counter` be accepted? (No state change.)
    fn check(&self, counter: u64) -> bool;
    /// Records an authenticated counter. Returns false if it was a replay
    /// (or too old, or past Reject-After-Messages).
    fn update(&mut self, counter: u64) -> bool;
}

/// An RFC 6479 window of `(WORDS - 1) * 64` counters in `WORDS * 8 + 16` bytes.
#[derive(Clone)]
pub struct ReplayWindow<const WORDS: usize> {
    /// Highest counter accepted so far (meaningful once `any` is set).
    last: u64,
    any: bool,
    ring: [u64; WORDS],
}

/// 8192 counters (1032 bytes): the host window ([`Heap`](crate::storage::Heap)).
pub type ReplayWindow8192 = ReplayWindow<129>;
/// 2048 counters (264 bytes): the device window ([`Fixed`](crate::storage::Fixed)'s default).
pub type ReplayWindow2048 = ReplayWindow<33>;

impl<const WORDS: usize> ReplayWindow<WORDS> {
    /// Counters this far behind the highest one seen are still accepted once.
    /// Evaluating it for `WORDS < 2` is a compile-time error.
    pub const WINDOW_SIZE: u64 = {
        assert!(WORDS >= 2, "ReplayWindow needs at least 2 ring words");
        (WORDS as u64 - 1) * WORD_BITS
    };
    const RING_WORDS: u64 = WORDS as u64;

    /// An empty window (accepts any counter below Reject-After-Messages).
    pub const fn new() -> Self {
        // Referencing the constant rejects WORDS < 2 at compile time.
        let _ = Self::WINDOW_SIZE;
        ReplayWindow { last: 0, any: false, ring: [0; WORDS] }
    }

    fn index(block: u64) -> usize {
        usize::try_from(block.checked_rem(Self::RING_WORDS).unwrap_or(0)).unwrap_or(0)
    }

    fn slot(counter: u64) -> (usize, u64) {
        (Self::index(counter / WORD_BITS), 1u64 << (counter % WORD_BITS))
    }

    /// Would `counter` be accepted? (No state change.)
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if !self.any || counter > self.last {
            return true;
        }
        if self.last.saturating_sub(counter) >= Self::WINDOW_SIZE {
            return false;
        }
        let (idx, bit) = Self::slot(counter);
        self.ring.get(idx).is_some_and(|w| w & bit == 0)
    }

    /// Records an authenticated counter. Returns false if it was a replay.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.any || counter > self.last {
            let new_block = counter / WORD_BITS;
            let old_block = if self.any { self.last / WORD_BITS } else { new_block };
            let advance = new_block.saturating_sub(old_block).min(Self::RING_WORDS);
            let mut b = old_block;
            for _ in 0..advance {
                b = b.wrapping_add(1);
                if let Some(w) = self.ring.get_mut(Self::index(b)) {
                    *w = 0;
                }
            }
            if !self.any {
                let (idx, _) = Self::slot(counter);
                if let Some(w) = self.ring.get_mut(idx) {
                    *w = 0;
                }
            }
            self.last = counter;
            self.any = true;
        }
        let (idx, bit) = Self::slot(counter);
        match self.ring.get_mut(idx) {
            Some(w) => {
                let fresh = *w & bit == 0;
                *w |= bit;
                fresh
            }
            None => false,
        }
    }
}

impl<const WORDS: usize> Default for ReplayWindow<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> AntiReplay for ReplayWindow<WORDS> {
    const WINDOW_SIZE: u64 = ReplayWindow::<WORDS>::WINDOW_SIZE;
    fn check(&self, counter: u64) -> bool {
        ReplayWindow::check(self, counter)
    }
    fn update(&mut self, counter: u64) -> bool {
        ReplayWindow::update(self, counter)
    }
}

impl<const WORDS: usize> core::fmt::Debug for ReplayWindow<WORDS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow").field("size", &Self::WINDOW_SIZE).field("last", &self.last).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_order_and_replays<const W: usize>() {
        let mut w = ReplayWindow::<W>::new();
        for c in 0..20_000u64 {
            assert!(w.update(c), "{c}");
            assert!(!w.update(c), "replay {c}");
        }
    }

    fn window_edges<const W: usize>() {
        let size = ReplayWindow::<W>::WINDOW_SIZE;
        let mut w = ReplayWindow::<W>::new();
        let top = 3 * size + 17;
        assert!(w.update(top));
        assert!(w.check(top - size + 1));
        assert!(!w.check(top - size));
        assert!(!w.update(top - size));
        assert!(w.update(top - size + 1));
        assert!(!w.update(top - size + 1));
        // Jump far ahead: the whole ring is cleared, old counters are too old.
        assert!(w.update(1_000_000));
        assert!(!w.check(top));
        assert!(w.update(1_000_000 - 5));
        assert!(!w.update(u64::MAX));
        assert!(!w.check(REJECT_AFTER_MESSAGES));
        assert!(w.update(REJECT_AFTER_MESSAGES - 1));
    }

    fn reordered_matches_reference<const W: usize>() {
        // Differential check against a naive set-based window, with reordering
        // spread over ~1.5 windows so both the accept and the too-old paths run.
        let size = ReplayWindow::<W>::WINDOW_SIZE;
        let spread = size + size / 2;
        let mut w = ReplayWindow::<W>::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut max: Option<u64> = None;
        let mut x = 0x1234_5678_9abc_def0u64;
        let (mut accepted, mut old) = (0u32, 0u32);
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (i + (x % spread)).saturating_sub(spread / 2);
            let expect = match max {
                None => true,
                Some(m) => c > m || (m - c < size && !seen.contains(&c)),
            };
            assert_eq!(w.update(c), expect, "counter {c} at step {i}");
            if expect {
                accepted += 1;
                seen.insert(c);
                max = Some(max.map_or(c, |m| m.max(c)));
            } else if max.is_some_and(|m| m - c >= size) {
                old += 1;
            }
        }
        assert!(accepted > 10_000 && old > 100, "accepted {accepted}, too old {old}");
    }

    fn all<const W: usize>() {
        in_order_and_replays::<W>();
        window_edges::<W>();
        reordered_matches_reference::<W>();
    }

    #[test]
    fn host_window_8192() {
        assert_eq!(ReplayWindow8192::WINDOW_SIZE, 8192);
        all::<129>();
    }

    #[test]
    fn device_window_2048() {
        assert_eq!(ReplayWindow2048::WINDOW_SIZE, 2048);
        assert!(core::mem::size_of::<ReplayWindow2048>() <= 33 * 8 + 16);
        all::<33>();
    }

    #[test]
    fn smallest_windows() {
        assert_eq!(ReplayWindow::<2>::WINDOW_SIZE, 64);
        all::<2>();
        all::<3>();
        all::<17>();
    }

    #[test]
    fn trait_matches_inherent() {
        fn via_trait<W: AntiReplay>(w: &mut W, c: u64) -> bool {
            w.update(c)
        }
        let mut w = ReplayWindow2048::default();
        assert_eq!(<ReplayWindow2048 as AntiReplay>::WINDOW_SIZE, 2048);
        assert!(via_trait(&mut w, 5));
        assert!(!via_trait(&mut w, 5));
        assert!(!AntiReplay::check(&w, 5));
    }
}
