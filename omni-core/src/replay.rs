//! Sliding anti-replay window for transport counters (RFC 6479): a ring of
//! 64-bit words, so advancing the window clears whole words instead of shifting.
//! `check` is side-effect free and runs before decryption; `update` runs only
//! after the packet authenticated, so forged counters cannot move the window.

use crate::constants::REJECT_AFTER_MESSAGES;

const WORD_BITS: u64 = 64;
const RING_WORDS: usize = 129;
const RING_WORDS_U64: u64 = RING_WORDS as u64;
/// Counters this far behind the highest one seen are still accepted once.
pub const WINDOW_SIZE: u64 = (RING_WORDS as u64 - 1) * WORD_BITS;

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningful once `any` is set).
    last: u64,
    any: bool,
    ring: [u64; RING_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { last: 0, any: false, ring: [0; RING_WORDS] }
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow").field("last", &self.last).finish()
    }
}

fn slot(counter: u64) -> (usize, u64) {
    let block = counter / WORD_BITS;
    let idx = usize::try_from(block.checked_rem(RING_WORDS_U64).unwrap_or(0)).unwrap_or(0);
    (idx, 1u64 << (counter % WORD_BITS))
}

impl ReplayWindow {
    /// Would `counter` be accepted? (No state change.)
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if !self.any || counter > self.last {
            return true;
        }
        if self.last.saturating_sub(counter) >= WINDOW_SIZE {
            return false;
        }
        let (idx, bit) = slot(counter);
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
            let advance = new_block.saturating_sub(old_block).min(RING_WORDS_U64);
            let mut b = old_block;
            for _ in 0..advance {
                b = b.wrapping_add(1);
                let idx = usize::try_from(b.checked_rem(RING_WORDS_U64).unwrap_or(0)).unwrap_or(0);
                if let Some(w) = self.ring.get_mut(idx) {
                    *w = 0;
                }
            }
            if !self.any {
                let (idx, _) = slot(counter);
                if let Some(w) = self.ring.get_mut(idx) {
                    *w = 0;
                }
            }
            self.last = counter;
            self.any = true;
        }
        let (idx, bit) = slot(counter);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_replays() {
        let mut w = ReplayWindow::default();
        for c in 0..20_000u64 {
            assert!(w.update(c), "{c}");
            assert!(!w.update(c), "replay {c}");
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        assert!(WINDOW_SIZE >= 8192);
        assert!(w.update(10_000));
        assert!(w.check(10_000 - WINDOW_SIZE + 1));
        assert!(!w.check(10_000 - WINDOW_SIZE));
        assert!(w.update(10_000 - 8191));
        assert!(!w.update(10_000 - 8191));
        // Jump far ahead: the whole ring is cleared, old counters are too old.
        assert!(w.update(1_000_000));
        assert!(!w.check(10_000));
        assert!(w.update(1_000_000 - 5));
        assert!(!w.update(u64::MAX));
        assert!(!w.check(REJECT_AFTER_MESSAGES));
        assert!(w.update(REJECT_AFTER_MESSAGES - 1));
    }

    #[test]
    fn reordered_matches_reference() {
        // Differential check against a naive set-based window.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut max: Option<u64> = None;
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (i + (x % 12_000)).saturating_sub(6_000);
            let expect = match max {
                None => true,
                Some(m) => c > m || (m - c < WINDOW_SIZE && !seen.contains(&c)),
            };
            assert_eq!(w.update(c), expect, "counter {c} at step {i}");
            if expect {
                seen.insert(c);
                max = Some(max.map_or(c, |m| m.max(c)));
            }
        }
    }
}
