//! Protocol constants from the WireGuard paper (section 6) and the Noise spec.

use core::time::Duration;

pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub const LABEL_MAC1: &[u8] = b"mac1----";
pub const LABEL_COOKIE: &[u8] = b"cookie--";

pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// 2^64 - 2^13 - 1: the last counter value a session may use.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
pub use timer_values::*;

/// Whether this build has the shortened timers of the `short-timers-for-tests`
/// feature (hosts and firmware print a warning at start when it is set).
pub const SHORT_TIMERS_FOR_TESTS: bool = cfg!(feature = "short-timers-for-tests");

/// Minimum spacing between two initiations we send to the same peer, and
/// between two initiations we accept from the same peer (flood protection).
pub const HANDSHAKE_INITIATION_RATE: Duration = Duration::from_millis(50);

#[cfg(not(feature = "short-timers-for-tests"))]
mod timer_values {
    use core::time::Duration;

    pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
    pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
    pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
    pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Upper bound of the random jitter added to each handshake retransmission.
    pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
    /// How many times a handshake is retried before giving up (90 s / 5 s).
    pub const MAX_HANDSHAKE_ATTEMPTS: u32 = 18;
}

/// **Never for production.** The `short-timers-for-tests` feature: every
/// time-based protocol timer shortened (~15x) with the paper's relations kept
/// (Rekey-After < Reject-After − Keepalive − Rekey-Timeout, Rekey-Attempt <
/// Rekey-After, attempts = Rekey-Attempt / Rekey-Timeout, cookies live as long
/// as a session's rekey interval), so tests see many rekeys, keepalives and
/// expiries in seconds. Such a build rekeys every 8 s and talks to standard
/// WireGuard peers correctly, but its timing is not WireGuard's: only test
/// images (e.g. the firmware's `demo-short-timers-for-tests`) enable it.
/// Message-count limits are unchanged.
#[cfg(feature = "short-timers-for-tests")]
mod timer_values {
    use core::time::Duration;

    pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(8);
    pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(12);
    pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(6);
    pub const REKEY_TIMEOUT: Duration = Duration::from_secs(1);
    /// Upper bound of the random jitter added to each handshake retransmission.
    pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(66);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
    pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(8);
    /// How many times a handshake is retried before giving up (6 s / 1 s).
    pub const MAX_HANDSHAKE_ATTEMPTS: u32 = 6;
}

pub const MSG_INITIATION: u32 = 1;
pub const MSG_RESPONSE: u32 = 2;
pub const MSG_COOKIE_REPLY: u32 = 3;
pub const MSG_TRANSPORT: u32 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const TRANSPORT_HEADER_LEN: usize = 16;
pub const AEAD_TAG_LEN: usize = 16;
/// Header + tag: what a transport message adds to its (padded) payload.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + AEAD_TAG_LEN;
pub const PADDING_MULTIPLE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// The relations the timer logic relies on hold for whichever set of
    /// timers this build has (run with and without `short-timers-for-tests`).
    #[test]
    fn timer_relations() {
        assert!(REKEY_AFTER_TIME < REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT);
        assert!(REKEY_ATTEMPT_TIME < REKEY_AFTER_TIME);
        assert_eq!(u128::from(MAX_HANDSHAKE_ATTEMPTS), REKEY_ATTEMPT_TIME.as_millis() / REKEY_TIMEOUT.as_millis());
        assert!(REKEY_TIMEOUT_JITTER_MAX * 10 < REKEY_TIMEOUT);
        assert!(KEEPALIVE_TIMEOUT >= REKEY_TIMEOUT * 2);
        // cookie.rs uses cookies for COOKIE_REFRESH_TIME - 5 s.
        assert!(COOKIE_REFRESH_TIME > Duration::from_secs(5));
        assert!(HANDSHAKE_INITIATION_RATE < REKEY_TIMEOUT);
        if SHORT_TIMERS_FOR_TESTS {
            assert_eq!(REKEY_AFTER_TIME, Duration::from_secs(8));
        } else {
            assert_eq!(REKEY_AFTER_TIME, Duration::from_secs(120));
            assert_eq!(REJECT_AFTER_TIME, Duration::from_secs(180));
            assert_eq!(KEEPALIVE_TIMEOUT, Duration::from_secs(10));
        }
    }
}
