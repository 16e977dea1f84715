use super::{nonce, AeadError, AeadKey, CryptoProvider};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};

/// std-host provider on AWS-LC: assembly ChaCha20-Poly1305 and the
/// formally verified s2n-bignum X25519 (ADX/BMI2 on x86_64), about twice as
/// fast as x25519-dalek's ladder. Private keys are parsed once into AWS-LC's
/// own form, which AWS-LC wipes when freed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

pub struct AwsLcAeadKey(LessSafeKey);

impl core::fmt::Debug for AwsLcAeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// A parsed X25519 private key; `None` only if AWS-LC refused the bytes
/// (it accepts every 32-byte string, so this never happens in practice, and
/// then every DH yields zeros, which the handshake rejects).
pub struct AwsLcSecret(Option<PrivateKey>);

impl core::fmt::Debug for AwsLcSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X25519Secret(<redacted>)")
    }
}

impl AeadKey for AwsLcAeadKey {
    fn new(key: &[u8; 32]) -> Self {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, key).or_else(|_| UnboundKey::new(&CHACHA20_POLY1305, &[0u8; 32]));
        match unbound {
            Ok(k) => AwsLcAeadKey(LessSafeKey::new(k)),
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
        match self.0.open_in_place_separate_tag(n, Aad::from(aad), tag, buf) {
            Ok(_) => Ok(()),
            Err(_) => {
                // AWS-LC may have written unauthenticated plaintext: wipe it.
                buf.fill(0);
                Err(AeadError)
            }
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> AwsLcAeadKey {
    // AWS-LC accepts every 32-byte ChaCha20-Poly1305 key; a static invariant.
    panic!("aws-lc rejected a 32-byte ChaCha20-Poly1305 key")
}

impl CryptoProvider for AwsLc {
    type AeadKey = AwsLcAeadKey;
    type X25519Secret = AwsLcSecret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret {
        AwsLcSecret(PrivateKey::from_private_key(&X25519, bytes).ok())
    }
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(pk) = secret.0.as_ref().and_then(|k| k.compute_public_key().ok()) {
            if pk.as_ref().len() == 32 {
                out.copy_from_slice(pk.as_ref());
            }
        }
        out
    }
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32] {
        let Some(key) = secret.0.as_ref() else { return [0u8; 32] };
        // AWS-LC refuses low-order points itself; report that as the
        // all-zero result the handshake already rejects.
        agreement::agree(key, UnparsedPublicKey::new(&X25519, public), (), |shared| {
            let mut out = [0u8; 32];
            if shared.len() == 32 {
                out.copy_from_slice(shared);
            }
            Ok(out)
        })
        .unwrap_or([0u8; 32])
    }
}
