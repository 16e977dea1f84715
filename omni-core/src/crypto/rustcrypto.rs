use super::{nonce, AeadError, AeadKey, CryptoProvider};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Pure-Rust portable provider: chacha20poly1305 (with its runtime-detected
/// AVX2 backend on x86_64), x25519-dalek.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

/// Raw key kept; the cipher is rebuilt per call (ChaCha's "key schedule" is a copy).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RustCryptoAeadKey([u8; 32]);

impl core::fmt::Debug for RustCryptoAeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey for RustCryptoAeadKey {
    fn new(key: &[u8; 32]) -> Self {
        RustCryptoAeadKey(*key)
    }
    fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        // Only fails for buffers beyond ChaCha's 256 GiB limit, which no datagram reaches.
        match cipher.encrypt_in_place_detached(Nonce::from_slice(&nonce(counter)), aad, buf) {
            Ok(tag) => tag.into(),
            Err(_) => [0u8; 16],
        }
    }
    fn open_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), AeadError> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(&nonce(counter)), aad, buf, Tag::from_slice(tag))
            .map_err(|_| AeadError)
    }
}

impl CryptoProvider for RustCrypto {
    type AeadKey = RustCryptoAeadKey;
    /// Zeroized on drop (x25519-dalek's `zeroize` feature).
    type X25519Secret = x25519_dalek::StaticSecret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret {
        x25519_dalek::StaticSecret::from(*bytes)
    }
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32] {
        x25519_dalek::PublicKey::from(secret).to_bytes()
    }
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32] {
        secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public)).to_bytes()
    }
}
