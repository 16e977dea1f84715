//! ChaCha20-Poly1305 (RFC 8439) for x86_64 CPUs with AVX-512F and AVX-512VL:
//! WireGuard's transport AEAD, for the hosts where the data path's speed is
//! the product (omni-daemon).
//!
//! Why our own: the AEAD is most of a WireGuard data plane's CPU time, and the
//! assembly in AWS-LC, ring and Go's x/crypto stops at AVX2. Sixteen ChaCha20
//! blocks per pass and Poly1305 over eight blocks at a time make a 1420-byte
//! packet markedly cheaper (figures: `cargo test --release -p omni-aead --
//! --ignored --nocapture`, and omni-core's `examples/bench.rs`).
//!
//! [`ChaCha20Poly1305::new`] returns `None` where the CPU lacks the
//! instructions (or on other architectures); callers keep another backend for
//! that case (omni-core's `Avx512` provider falls back to AWS-LC). The check
//! is made once per key, so the packet path carries no detection cost.
//!
//! `no_std` without `alloc`; the `std` feature (default) detects the CPU at
//! run time, without it only a build for an AVX-512 target uses the vector
//! code.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(target_arch = "x86_64")]
mod chacha20;
#[cfg(target_arch = "x86_64")]
mod poly1305;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The AEAD failed to authenticate: wrong key, tampered or truncated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error;

/// Proof that the CPU runs the vector code; only [`available`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Cpu(());

/// Nothing to prove elsewhere: no value exists, so no key can be made.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
enum Cpu {}

/// Whether this CPU runs the vector code (AVX-512F and AVX-512VL).
pub fn available() -> bool {
    cpu().is_some()
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
fn cpu() -> Option<Cpu> {
    // std caches the CPUID answer: a load and a test after the first call.
    (std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")).then_some(Cpu(()))
}

#[cfg(all(target_arch = "x86_64", not(feature = "std")))]
fn cpu() -> Option<Cpu> {
    cfg!(all(target_feature = "avx512f", target_feature = "avx512vl")).then_some(Cpu(()))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu() -> Option<Cpu> {
    None
}

/// A ChaCha20-Poly1305 key on a CPU that runs the vector code. The key is
/// wiped when dropped.
pub struct ChaCha20Poly1305 {
    key: [u8; 32],
    cpu: Cpu,
}

impl core::fmt::Debug for ChaCha20Poly1305 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ChaCha20Poly1305(<redacted>)")
    }
}

impl Drop for ChaCha20Poly1305 {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ChaCha20Poly1305 {
    /// The key, or `None` when this CPU lacks AVX-512F/VL.
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        cpu().map(|cpu| ChaCha20Poly1305 { key: *key, cpu })
    }

    /// Encrypts `buf` in place and returns the tag over `aad` and the
    /// ciphertext.
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        #[cfg(target_arch = "x86_64")]
        {
            let Cpu(()) = self.cpu;
            // SAFETY: `self.cpu` exists only where `cpu()` found AVX-512F and
            // AVX-512VL, all the two functions need.
            unsafe {
                let one_time = chacha20::poly_key_and_xor(&self.key, nonce, buf);
                poly1305::aead_tag(&one_time, aad, buf)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (nonce, aad, buf);
            match self.cpu {}
        }
    }

    /// Verifies `tag` over `aad` and the ciphertext in `buf`, then decrypts
    /// `buf` in place. On `Err` the buffer is untouched: the tag is checked
    /// before anything is decrypted.
    pub fn open_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), Error> {
        #[cfg(target_arch = "x86_64")]
        {
            let Cpu(()) = self.cpu;
            // SAFETY: as in `seal_in_place`.
            unsafe {
                let one_time = chacha20::poly_key(&self.key, nonce);
                if !equal_in_constant_time(&poly1305::aead_tag(&one_time, aad, buf), tag) {
                    return Err(Error);
                }
                chacha20::xor_keystream(&self.key, nonce, 1, buf);
            }
            Ok(())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (nonce, aad, buf, tag);
            match self.cpu {}
        }
    }
}

/// Compares two tags without a data-dependent branch or early exit
/// (`subtle`, as omni-core's own MAC and key checks).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn equal_in_constant_time(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a[..].ct_eq(&b[..]).into()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use std::vec;
    use std::vec::Vec;

    /// The tests are about the vector code: a CPU without it is a failure
    /// here, not a skip (CI's machines have AVX-512).
    pub(crate) fn require_avx512() {
        assert!(available(), "this CPU lacks AVX-512F/VL: the vector code cannot be tested here");
    }

    fn ours(key: &[u8; 32]) -> ChaCha20Poly1305 {
        require_avx512();
        ChaCha20Poly1305::new(key).expect("available() said yes")
    }

    fn theirs(key: &[u8; 32]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte key"))
    }

    /// RFC 8439 §2.8.2: the sunscreen AEAD example.
    #[test]
    fn rfc8439_aead_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        let aad = [0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7];
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = plaintext.to_vec();
        let tag = ours(&key).seal_in_place(&nonce, &aad, &mut buf);
        assert_eq!(
            &buf[..16],
            &[0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e, 0xc2]
        );
        assert_eq!(&buf[buf.len() - 2..], &[0x61, 0x16]);
        assert_eq!(
            tag,
            [0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06, 0x91]
        );
        ours(&key).open_in_place(&nonce, &aad, &mut buf, &tag).expect("authentic");
        assert_eq!(&buf[..], &plaintext[..]);
    }

    /// Same bytes as AWS-LC for every length a WireGuard packet takes and
    /// then some, with and without AAD; and each opens the other's.
    #[test]
    fn matches_aws_lc_for_every_length() {
        let mut rng = ChaCha20Rng::seed_from_u64(8439);
        let lengths = (0..=2100).chain([4095, 4096, 4097, 8191, 8192, 16383, 65535, 65536, 70000]);
        for len in lengths {
            let mut key = [0u8; 32];
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut nonce[4..]);
            let aad_len = [0, 0, 1, 12, 16, 17, 33][len % 7];
            let mut aad = vec![0u8; aad_len];
            rng.fill_bytes(&mut aad);
            let mut plaintext = vec![0u8; len];
            rng.fill_bytes(&mut plaintext);

            let mut mine = plaintext.clone();
            let tag = ours(&key).seal_in_place(&nonce, &aad, &mut mine);
            let mut reference = plaintext.clone();
            let n = Nonce::assume_unique_for_key(nonce);
            let their_tag = theirs(&key).seal_in_place_separate_tag(n, Aad::from(&aad[..]), &mut reference).unwrap();
            assert_eq!(mine, reference, "ciphertext, length {len}");
            assert_eq!(&tag[..], their_tag.as_ref(), "tag, length {len}");

            let mut opened = mine.clone();
            ours(&key).open_in_place(&nonce, &aad, &mut opened, &tag).expect("authentic");
            assert_eq!(opened, plaintext, "opened, length {len}");
            let n = Nonce::assume_unique_for_key(nonce);
            theirs(&key)
                .open_in_place_separate_tag(n, Aad::from(&aad[..]), their_tag.as_ref(), &mut reference)
                .unwrap();
            assert_eq!(reference, plaintext);
        }
    }

    /// Any changed bit (ciphertext, tag, AAD, nonce, key) is refused and the
    /// buffer is left as it was.
    #[test]
    fn forgeries_are_refused_and_change_nothing() {
        let key = [7u8; 32];
        let nonce = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let aad = [9u8; 20];
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 128, 1420, 4000] {
            let mut sealed: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let tag = ours(&key).seal_in_place(&nonce, &aad, &mut sealed);
            let refused = |buf: &mut Vec<u8>, nonce: &[u8; 12], aad: &[u8], tag: &[u8; 16], key: &[u8; 32]| {
                let before = buf.clone();
                assert_eq!(ours(key).open_in_place(nonce, aad, buf, tag), Err(Error), "length {len}");
                assert_eq!(*buf, before, "a refused open changed the buffer (length {len})");
            };
            for bit in [0, 7, 8 * len.saturating_sub(1) + 3] {
                if bit < 8 * len {
                    let mut b = sealed.clone();
                    b[bit / 8] ^= 1 << (bit % 8);
                    refused(&mut b, &nonce, &aad, &tag, &key);
                }
            }
            for i in [0, 15] {
                let mut t = tag;
                t[i] ^= 0x80;
                refused(&mut sealed.clone(), &nonce, &aad, &t, &key);
            }
            let mut a = aad;
            a[19] ^= 1;
            refused(&mut sealed.clone(), &nonce, &a, &tag, &key);
            refused(&mut sealed.clone(), &nonce, &aad[..19], &tag, &key);
            let mut n = nonce;
            n[11] ^= 1;
            refused(&mut sealed.clone(), &n, &aad, &tag, &key);
            let mut k = key;
            k[31] ^= 1;
            refused(&mut sealed.clone(), &nonce, &aad, &tag, &k);
            if len > 0 {
                refused(&mut sealed[..len - 1].to_vec(), &nonce, &aad, &tag, &key);
            }
        }
    }

    #[test]
    fn tag_comparison() {
        let a = [3u8; 16];
        assert!(equal_in_constant_time(&a, &a));
        for i in 0..16 {
            let mut b = a;
            b[i] ^= 0x01;
            assert!(!equal_in_constant_time(&a, &b));
        }
    }

    /// Figures, not a check: `cargo test --release -p omni-aead -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn speed_against_aws_lc() {
        use std::time::Instant;
        let key = [1u8; 32];
        let (mine, reference) = (ours(&key), theirs(&key));
        for len in [64usize, 256, 1420, 8192] {
            let mut buf = vec![0u8; len];
            let mut best = [f64::MAX; 2];
            for _ in 0..5 {
                for (who, slot) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    let mut bytes = 0usize;
                    let mut counter = 0u64;
                    while start.elapsed().as_secs_f64() < 0.3 {
                        for _ in 0..64 {
                            counter += 1;
                            let mut nonce = [0u8; 12];
                            nonce[4..].copy_from_slice(&counter.to_le_bytes());
                            if who == 0 {
                                std::hint::black_box(mine.seal_in_place(&nonce, &[], &mut buf));
                            } else {
                                let n = Nonce::assume_unique_for_key(nonce);
                                let tag = reference.seal_in_place_separate_tag(n, Aad::empty(), &mut buf).unwrap();
                                let _ = std::hint::black_box(tag);
                            }
                            bytes += len;
                        }
                    }
                    *slot = slot.min(start.elapsed().as_secs_f64() / bytes as f64);
                }
            }
            let gbs = |s: f64| 1e-9 / s;
            std::println!(
                "seal {len:>5} B: omni-aead {:.2} GB/s, AWS-LC {:.2} GB/s, ratio {:.2}x",
                gbs(best[0]),
                gbs(best[1]),
                best[1] / best[0]
            );
        }
    }
}
