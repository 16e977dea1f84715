use super::aws_lc_provider::{AwsLcAeadKey, AwsLcSecret};
use super::{nonce, AeadError, AeadKey, AwsLc, CryptoProvider};

/// std-host provider for x86_64 servers: `omni-aead`'s AVX-512
/// ChaCha20-Poly1305 on CPUs that have AVX-512F/VL (most of a data plane's
/// time is this AEAD, and AWS-LC's assembly stops at AVX2), AWS-LC's
/// otherwise; X25519 is always AWS-LC's. The CPU is checked once per key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Avx512;

/// A transport key on whichever code this CPU runs.
#[derive(Debug)]
pub enum Avx512AeadKey {
    Vector(omni_aead::ChaCha20Poly1305),
    Fallback(AwsLcAeadKey),
}

impl Avx512AeadKey {
    /// The AWS-LC form of `key` even where the vector code runs (tests
    /// check that the two interoperate).
    pub fn fallback(key: &[u8; 32]) -> Self {
        Avx512AeadKey::Fallback(AwsLcAeadKey::new(key))
    }

    /// Whether this key runs the AVX-512 code.
    pub fn is_vector(&self) -> bool {
        matches!(self, Avx512AeadKey::Vector(_))
    }
}

impl AeadKey for Avx512AeadKey {
    fn new(key: &[u8; 32]) -> Self {
        match omni_aead::ChaCha20Poly1305::new(key) {
            Some(k) => Avx512AeadKey::Vector(k),
            None => Self::fallback(key),
        }
    }
    fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        match self {
            Avx512AeadKey::Vector(k) => k.seal_in_place(&nonce(counter), aad, buf),
            Avx512AeadKey::Fallback(k) => k.seal_in_place(counter, aad, buf),
        }
    }
    fn open_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), AeadError> {
        match self {
            // omni-aead checks the tag before decrypting: `buf` is untouched on failure.
            Avx512AeadKey::Vector(k) => k.open_in_place(&nonce(counter), aad, buf, tag).map_err(|_| AeadError),
            Avx512AeadKey::Fallback(k) => k.open_in_place(counter, aad, buf, tag),
        }
    }
}

impl CryptoProvider for Avx512 {
    type AeadKey = Avx512AeadKey;
    type X25519Secret = AwsLcSecret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret {
        AwsLc::x25519_secret(bytes)
    }
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32] {
        AwsLc::x25519_public(secret)
    }
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32] {
        AwsLc::x25519(secret, public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms produce the same bytes and open each other's, so a
    /// session never depends on which CPU its peer's key landed on.
    #[test]
    fn vector_and_fallback_interoperate() {
        let key = [0x42u8; 32];
        let vector = Avx512AeadKey::new(&key);
        // CI's machines have AVX-512: there the vector form must be chosen.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            vector.is_vector(),
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
        );
        let fallback = Avx512AeadKey::fallback(&key);
        for len in [0usize, 1, 16, 63, 64, 65, 1420, 9000] {
            let plain: std::vec::Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (mut a, mut b) = (plain.clone(), plain.clone());
            let tag_a = vector.seal_in_place(len as u64, b"aad", &mut a);
            let tag_b = fallback.seal_in_place(len as u64, b"aad", &mut b);
            assert_eq!((&a, tag_a), (&b, tag_b), "length {len}");
            fallback.open_in_place(len as u64, b"aad", &mut a, &tag_a).expect("authentic");
            vector.open_in_place(len as u64, b"aad", &mut b, &tag_b).expect("authentic");
            assert_eq!((&a, &b), (&plain, &plain));
            let before = b.clone();
            assert_eq!(vector.open_in_place(len as u64 + 1, b"aad", &mut b, &tag_b), Err(AeadError));
            assert!(b == before || b.iter().all(|&x| x == 0), "a refused open left plaintext behind");
        }
    }
}
