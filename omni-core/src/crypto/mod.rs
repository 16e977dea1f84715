//! The crypto provider seam (after rustls' `crypto` module): the handshake and
//! the transport path call through a provider type, so a host can plug in a
//! faster backend without touching protocol code.
//!
//! [`RustCrypto`] is the portable default (chacha20poly1305, x25519-dalek,
//! blake2; runs on every target). The `ring` feature adds [`Ring`]: ring's
//! assembly ChaCha20-Poly1305 for the data path on std hosts; `aws-lc` adds
//! [`AwsLc`]: AWS-LC's ChaCha20-Poly1305 and its ADX/BMI2 X25519, about twice
//! as fast as x25519-dalek for handshakes; `avx512` adds [`Avx512`]:
//! omni-aead's AVX-512 ChaCha20-Poly1305 where the CPU has it (AWS-LC's
//! elsewhere), the data path's largest cost, with AWS-LC's X25519.
//! BLAKE2s and XChaCha20-Poly1305 (cookie replies) are always RustCrypto: they
//! are off the data path.

mod rustcrypto;
pub use rustcrypto::RustCrypto;

#[cfg(feature = "aws-lc")]
mod aws_lc_provider;
#[cfg(feature = "aws-lc")]
pub use aws_lc_provider::AwsLc;

#[cfg(feature = "avx512")]
mod avx512_provider;
#[cfg(feature = "avx512")]
pub use avx512_provider::{Avx512, Avx512AeadKey};

#[cfg(feature = "ring")]
mod ring_provider;
#[cfg(feature = "ring")]
pub use ring_provider::Ring;

/// The AEAD failed to authenticate: wrong key, tampered or truncated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AeadError;

/// A ChaCha20-Poly1305 key bound for one direction of one session.
/// Implementations must wipe key material when dropped.
pub trait AeadKey: Sized {
    fn new(key: &[u8; 32]) -> Self;
    /// Encrypts `buf` in place with nonce `0u32 || counter_le`, returns the tag.
    fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16];
    /// Verifies `tag` over `aad` and `buf`, then decrypts `buf` in place.
    /// On failure `buf` must be left unmodified or zeroed, never half-decrypted plaintext.
    fn open_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), AeadError>;
}

/// Backend selection for the asymmetric and transport primitives.
pub trait CryptoProvider: 'static {
    type AeadKey: AeadKey;
    /// A private key in the backend's own parsed form, so a key used for
    /// several Diffie-Hellman operations (our static key, a handshake's
    /// ephemeral) is parsed once. Implementations wipe it on drop.
    type X25519Secret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret;
    /// X25519(secret, basepoint): the public key of `secret`.
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32];
    /// X25519(secret, public). Returns all zeros for a low-order `public`
    /// (callers reject an all-zero result).
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32];
}

/// The provider a std host gets by default: the fastest one compiled in
/// (avx512, aws-lc, then ring, then the portable RustCrypto).
#[cfg(feature = "avx512")]
pub type DefaultProvider = Avx512;
#[cfg(all(feature = "aws-lc", not(feature = "avx512")))]
pub type DefaultProvider = AwsLc;
#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
pub type DefaultProvider = Ring;
#[cfg(not(any(feature = "ring", feature = "aws-lc")))]
pub type DefaultProvider = RustCrypto;

pub(crate) fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    let (_, tail) = n.split_at_mut(4);
    tail.copy_from_slice(&counter.to_le_bytes());
    n
}
