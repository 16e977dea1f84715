use super::{nonce, AeadError, AeadKey, CryptoProvider};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

/// std-host provider: ring's assembly ChaCha20-Poly1305 (AVX2/AVX-512 on
/// x86_64, NEON on aarch64) for the data path; X25519 stays on x25519-dalek
/// because ring cannot reuse an X25519 private key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ring;

pub struct RingAeadKey(LessSafeKey);

impl core::fmt::Debug for RingAeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey for RingAeadKey {
    fn new(key: &[u8; 32]) -> Self {
        // CHACHA20_POLY1305 takes exactly 32 bytes, so this cannot fail; fall
        // back to an all-zero key rather than panic should ring ever change.
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, key).or_else(|_| UnboundKey::new(&CHACHA20_POLY1305, &[0u8; 32]));
        match unbound {
            Ok(k) => RingAeadKey(LessSafeKey::new(k)),
            Err(_) => unreachable_key(),
        }
    }
    fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let n = Nonce::assume_unique_for_key(nonce(counter));
        match self.0.seal_in_place_separate_tag(n, Aad::from(aad), buf) {
            Ok(tag) => {
                let mut t = [0u8; 16];
                t.copy_from_slice(tag.as_ref());
                t
            }
            Err(_) => [0u8; 16],
        }
    }
    fn open_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), AeadError> {
        let n = Nonce::assume_unique_for_key(nonce(counter));
        let tag = Tag::from(*tag);
        match self.0.open_in_place_separate_tag(n, Aad::from(aad), tag, buf, 0..) {
            Ok(_) => Ok(()),
            Err(_) => {
                // ring may have written unauthenticated plaintext: wipe it.
                buf.fill(0);
                Err(AeadError)
            }
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> RingAeadKey {
    // ring accepts every 32-byte ChaCha20-Poly1305 key; this is a static invariant.
    panic!("ring rejected a 32-byte ChaCha20-Poly1305 key")
}

impl CryptoProvider for Ring {
    type AeadKey = RingAeadKey;
    type X25519Secret = x25519_dalek::StaticSecret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret {
        super::RustCrypto::x25519_secret(bytes)
    }
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32] {
        super::RustCrypto::x25519_public(secret)
    }
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32] {
        super::RustCrypto::x25519(secret, public)
    }
}
