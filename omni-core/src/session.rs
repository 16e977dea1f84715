//! One transport session (a "keypair" in wireguard-go): keys for both
//! directions, the send counter and the receive replay window.

use crate::constants::*;
use crate::crypto::{AeadKey, CryptoProvider};
use crate::noise::handshake::SessionKeys;
use crate::replay::AntiReplay;
use crate::time::Instant;
use crate::wire::TransportHeader;

/// `W` is the receive replay window (chosen by the node's
/// [`Storage::Replay`](crate::storage::Storage::Replay)).
pub struct Session<C: CryptoProvider, W: AntiReplay> {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    send_key: C::AeadKey,
    recv_key: C::AeadKey,
    send_counter: u64,
    replay: W,
    pub(crate) created: Instant,
    /// We sent the initiation that produced this session (only the
    /// initiator rekeys on time, so the two sides never race each other).
    pub(crate) initiator: bool,
}

impl<C: CryptoProvider, W: AntiReplay> core::fmt::Debug for Session<C, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.send_counter)
            .field("initiator", &self.initiator)
            .finish()
    }
}

/// Why a transport message did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    Replay,
    Expired,
    Decrypt,
}

/// Size of a transport message carrying `len` plaintext bytes: padded to a
/// multiple of 16, but never past `mtu` (padding must not cause fragmentation).
pub fn sealed_len(len: usize, mtu: usize) -> usize {
    // PADDING_MULTIPLE is a power of two: round up by masking.
    let padded = len.saturating_add(PADDING_MULTIPLE - 1) & !(PADDING_MULTIPLE - 1);
    let padded = if len <= mtu { padded.min(mtu) } else { len };
    padded.saturating_add(TRANSPORT_OVERHEAD)
}

impl<C: CryptoProvider, W: AntiReplay> Session<C, W> {
    pub(crate) fn new(keys: &SessionKeys, local_index: u32, remote_index: u32, now: Instant, initiator: bool) -> Self {
        Session {
            local_index,
            remote_index,
            send_key: C::AeadKey::new(&keys.send),
            recv_key: C::AeadKey::new(&keys.recv),
            send_counter: 0,
            replay: W::default(),
            created: now,
            initiator,
        }
    }

    pub(crate) fn age(&self, now: Instant) -> core::time::Duration {
        now.saturating_duration_since(self.created)
    }

    /// Usable for sending: younger than Reject-After-Time, counter not exhausted.
    pub(crate) fn can_send(&self, now: Instant) -> bool {
        self.age(now) < REJECT_AFTER_TIME && self.send_counter < REJECT_AFTER_MESSAGES
    }

    pub(crate) fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Encrypts `payload` into `out` as a complete transport message.
    /// `out` must hold `sealed_len(payload.len(), mtu)` bytes (checked by the caller).
    pub(crate) fn seal(&mut self, payload: &[u8], out: &mut [u8], mtu: usize) -> usize {
        let end = TRANSPORT_HEADER_LEN.saturating_add(payload.len());
        match out.get_mut(TRANSPORT_HEADER_LEN..end) {
            Some(dst) => dst.copy_from_slice(payload),
            None => return 0,
        }
        self.seal_in_place(payload.len(), out, mtu)
    }

    /// Encrypts the `len` payload bytes already at `buf[16..]` in place: pads
    /// them, seals, writes the header in front. `buf` must hold
    /// `sealed_len(len, mtu)` bytes (checked by the caller). Returns that length.
    pub(crate) fn seal_in_place(&mut self, len: usize, buf: &mut [u8], mtu: usize) -> usize {
        let total = sealed_len(len, mtu);
        let counter = self.send_counter;
        self.send_counter = self.send_counter.saturating_add(1);
        let Some(msg) = buf.get_mut(..total) else { return 0 };
        let (header, body) = msg.split_at_mut(TRANSPORT_HEADER_LEN);
        TransportHeader { receiver: self.remote_index, counter }.emit(header);
        let body_len = total.saturating_sub(TRANSPORT_OVERHEAD);
        let (plain, tag) = body.split_at_mut(body_len);
        if let Some(pad) = plain.get_mut(len..) {
            pad.fill(0);
        }
        let t = self.send_key.seal_in_place(counter, &[], plain);
        tag.copy_from_slice(&t);
        total
    }

    /// Verify-then-decrypt: replay and age checks first (cheap, no state
    /// change), then the AEAD, and only then is the window advanced.
    /// Decrypts `buf` (ciphertext || tag) in place; returns the plaintext length.
    pub(crate) fn open(&mut self, now: Instant, counter: u64, buf: &mut [u8]) -> Result<usize, OpenError> {
        if self.age(now) >= REJECT_AFTER_TIME {
            return Err(OpenError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let plain_len = buf.len().checked_sub(AEAD_TAG_LEN).ok_or(OpenError::Decrypt)?;
        let (plain, tag) = buf.split_at_mut(plain_len);
        let tag: [u8; 16] = (&*tag).try_into().map_err(|_| OpenError::Decrypt)?;
        self.recv_key.open_in_place(counter, &[], plain, &tag).map_err(|_| OpenError::Decrypt)?;
        if !self.replay.update(counter) {
            return Err(OpenError::Replay);
        }
        Ok(plain_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn padding_rules() {
        assert_eq!(sealed_len(0, 1420), 32);
        assert_eq!(sealed_len(1, 1420), 48);
        assert_eq!(sealed_len(16, 1420), 48);
        assert_eq!(sealed_len(1419, 1420), 1420 + 32);
        assert_eq!(sealed_len(1420, 1420), 1420 + 32);
        assert_eq!(sealed_len(1500, 1420), 1500 + 32);
    }
}
