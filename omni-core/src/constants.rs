//! Protocol constants from the WireGuard paper (section 6) and the Noise spec.

use core::time::Duration;

pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub const LABEL_MAC1: &[u8] = b"mac1----";
pub const LABEL_COOKIE: &[u8] = b"cookie--";

pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// 2^64 - 2^13 - 1: the last counter value a session may use.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to each handshake retransmission.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
/// Minimum spacing between two initiations we send to the same peer, and
/// between two initiations we accept from the same peer (flood protection).
pub const HANDSHAKE_INITIATION_RATE: Duration = Duration::from_millis(50);
/// How many times a handshake is retried before giving up (90 s / 5 s).
pub const MAX_HANDSHAKE_ATTEMPTS: u32 = 18;

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
