//! Key types. Secrets are wiped on drop and never printed by `Debug`.
//! Base64 (wg(8) config) and hex (the UAPI) encodings live here so every host
//! parses keys the same way.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::CryptoProvider;

/// A Curve25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PublicKey(pub [u8; 32]);

/// A Curve25519 private key (clamped when used by X25519).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticSecret([u8; 32]);

/// An optional 32-byte symmetric key mixed into the handshake (all zero = none).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey(pub(crate) [u8; 32]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not 44 characters of padded base64 (or 64 hex digits) encoding 32 bytes.
    BadLength,
    /// A character outside the alphabet, or non-canonical trailing bits.
    BadCharacter,
}

impl core::fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyParseError::BadLength => f.write_str("key must be 32 bytes (44 base64 characters or 64 hex digits)"),
            KeyParseError::BadCharacter => f.write_str("key contains an invalid character"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyParseError {}

impl PublicKey {
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_base64_key(s).map(PublicKey)
    }
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex_key(s).map(PublicKey)
    }
    pub fn to_base64(&self) -> Base64Key {
        encode_base64_key(&self.0)
    }
    pub fn to_hex(&self) -> HexKey {
        encode_hex_key(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64().as_str())
    }
}

impl core::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.to_base64().as_str())
    }
}

impl StaticSecret {
    /// Wraps 32 random bytes (clamping happens inside X25519).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StaticSecret(bytes)
    }
    /// Draws a fresh key from a cryptographic RNG.
    pub fn random(rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        StaticSecret(b)
    }
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_base64_key(s).map(StaticSecret)
    }
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex_key(s).map(StaticSecret)
    }
    /// The secret in base64, for writing a 0600 key file. Handle with care.
    pub fn to_base64(&self) -> Base64Key {
        encode_base64_key(&self.0)
    }
    /// The secret in hex, for the UAPI `get` answer. Handle with care.
    pub fn to_hex(&self) -> HexKey {
        encode_hex_key(&self.0)
    }
    pub fn public_key<C: CryptoProvider>(&self) -> PublicKey {
        PublicKey(C::x25519_public(&C::x25519_secret(&self.0)))
    }
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Whether the key is all zero (the UAPI's way of saying "no key").
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; 32]).into()
    }
}

impl core::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

impl PresharedKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PresharedKey(bytes)
    }
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_base64_key(s).map(PresharedKey)
    }
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex_key(s).map(PresharedKey)
    }
    pub fn to_hex(&self) -> HexKey {
        encode_hex_key(&self.0)
    }
    pub fn to_base64(&self) -> Base64Key {
        encode_base64_key(&self.0)
    }
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; 32]).into()
    }
}

impl core::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// A key encoded as 44 base64 characters (stack string, no allocation).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Base64Key([u8; 44]);
impl Base64Key {
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}
impl core::fmt::Debug for Base64Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Base64Key(..)")
    }
}

/// A key encoded as 64 lowercase hex digits.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HexKey([u8; 64]);
impl HexKey {
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}
impl core::fmt::Debug for HexKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HexKey(..)")
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_char(i: u32) -> u8 {
    B64.get(usize::try_from(i & 63).unwrap_or(0)).copied().unwrap_or(b'A')
}

fn b64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c.wrapping_sub(b'A'),
        b'a'..=b'z' => c.wrapping_sub(b'a').wrapping_add(26),
        b'0'..=b'9' => c.wrapping_sub(b'0').wrapping_add(52),
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

fn encode_base64_key(k: &[u8; 32]) -> Base64Key {
    let mut out = [b'='; 44];
    let mut o = out.iter_mut();
    for chunk in k.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        let chars = [b64_char(n >> 18), b64_char(n >> 12), b64_char(n >> 6), b64_char(n)];
        let keep = chunk.len().saturating_add(1);
        for (i, c) in chars.iter().enumerate() {
            if let Some(slot) = o.next() {
                if i < keep {
                    *slot = *c;
                }
            }
        }
    }
    Base64Key(out)
}

fn decode_base64_key(s: &str) -> Result<[u8; 32], KeyParseError> {
    let b = s.as_bytes();
    if b.len() != 44 || b.get(43) != Some(&b'=') || b.get(42) == Some(&b'=') {
        return Err(KeyParseError::BadLength);
    }
    // '=' is padding: only the final character may be one.
    if b.get(..43).is_some_and(|head| head.contains(&b'=')) {
        return Err(KeyParseError::BadCharacter);
    }
    let mut out = [0u8; 32];
    let mut o = 0usize;
    for quad in b.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0usize;
        for &c in quad {
            n <<= 6;
            if c == b'=' {
                pad = pad.saturating_add(1);
            } else {
                n |= b64_value(c).ok_or(KeyParseError::BadCharacter)?;
            }
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        for byte in bytes.iter().take(3usize.saturating_sub(pad)) {
            if let Some(slot) = out.get_mut(o) {
                *slot = *byte;
            }
            o = o.saturating_add(1);
        }
        if pad > 0 && (n & 0xff) != 0 {
            // Non-canonical: bits beyond the 32 bytes must be zero.
            return Err(KeyParseError::BadCharacter);
        }
    }
    Ok(out)
}

fn encode_hex_key(k: &[u8; 32]) -> HexKey {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 64];
    for (pair, byte) in out.chunks_mut(2).zip(k.iter()) {
        if let [hi, lo] = pair {
            *hi = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
            *lo = HEX.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
        }
    }
    HexKey(out)
}

fn decode_hex_key(s: &str) -> Result<[u8; 32], KeyParseError> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(KeyParseError::BadLength);
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(b.chunks(2)) {
        let hi = hex_value(pair.first().copied().unwrap_or(0))?;
        let lo = hex_value(pair.get(1).copied().unwrap_or(0))?;
        *slot = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Result<u8, KeyParseError> {
    match c {
        b'0'..=b'9' => Ok(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Ok(c.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Ok(c.wrapping_sub(b'A').wrapping_add(10)),
        _ => Err(KeyParseError::BadCharacter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn base64_and_hex_round_trip() {
        for seed in 0u8..=255 {
            let k: [u8; 32] = core::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let p = PublicKey(k);
            assert_eq!(PublicKey::from_base64(p.to_base64().as_str()).unwrap(), p);
            assert_eq!(PublicKey::from_hex(p.to_hex().as_str()).unwrap(), p);
        }
        // Known answer: 32 zero bytes.
        assert_eq!(PublicKey([0; 32]).to_base64().as_str(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(PublicKey([0xff; 32]).to_base64().as_str(), "//////////////////////////////////////////8=");
    }
    #[test]
    fn bad_keys_are_rejected() {
        assert_eq!(PublicKey::from_base64("abc"), Err(KeyParseError::BadLength));
        assert_eq!(
            PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
            Err(KeyParseError::BadLength)
        );
        assert_eq!(
            PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!AA="),
            Err(KeyParseError::BadCharacter)
        );
        assert_eq!(
            PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB="),
            Err(KeyParseError::BadCharacter)
        );
        // '=' anywhere but the end (found by the key_parse fuzz target).
        assert_eq!(
            PublicKey::from_base64("AAAAAAA=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(KeyParseError::BadCharacter)
        );
        assert!(PublicKey::from_base64("==========================================A=").is_err());
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyParseError::BadLength));
        assert!(PublicKey::from_hex(&"g".repeat(64)).is_err());
    }
}
