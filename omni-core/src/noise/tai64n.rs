//! TAI64N timestamps for initiations (replay protection on the responder).

use crate::time::WallTime;

/// 2^62 + 10: the TAI64 label of the Unix epoch (with the classic 10 s TAI offset).
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;

/// A 12-byte TAI64N label, compared big-endian (byte order = time order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tai64N(pub [u8; 12]);

impl Tai64N {
    pub fn from_wall(t: WallTime) -> Self {
        let mut b = [0u8; 12];
        let (s, n) = b.split_at_mut(8);
        s.copy_from_slice(&TAI64_EPOCH.saturating_add(t.secs).to_be_bytes());
        n.copy_from_slice(&t.nanos.to_be_bytes());
        Tai64N(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ordering_follows_time() {
        let a = Tai64N::from_wall(WallTime::new(1_700_000_000, 999_999_999));
        let b = Tai64N::from_wall(WallTime::new(1_700_000_001, 0));
        assert!(b > a);
        assert_eq!(&a.0[..8], &(TAI64_EPOCH + 1_700_000_000).to_be_bytes());
    }
}
