//! Poly1305 (RFC 8439 §2.5) with AVX-512.
//!
//! Design
//! ------
//! * Inputs of fewer than [`VEC_MIN_BLOCKS`] 16-byte blocks, and the final
//!   partial block of [`mac`], use a scalar radix-2^64 Horner loop (`u64`
//!   limbs, `u128` products, 2^130 ≡ 5 folded in with the clamped
//!   r1 ≡ 0 mod 4).
//! * Longer inputs use 8 lanes in radix 2^26: lane j of five zmm registers
//!   (one per 26-bit limb, in 64-bit elements, products by `vpmuludq`, so
//!   AVX-512F suffices) accumulates blocks j, j+8, j+16, ... as
//!   `acc = acc·r^8 + m`; a last step multiplies lane j by r^(8-j) and adds
//!   the lanes up.  The first n mod 8 blocks go through the scalar code first
//!   (that latency chain overlaps the computation of the powers) and enter
//!   lane 0 of the first group.  Per call: r^2..r^4 by scalar products,
//!   r^5..r^8 by one vector product.
//! * [`aead_tag`] never builds the padded MAC input: it reads aad and ct in
//!   place, with the two zero-padded partial blocks and the length block on
//!   the stack; only the last group of 8 blocks and any group straddling two
//!   of these pieces are copied together.
//!
//! Everything is constant time with respect to key and data: control flow
//! and memory addresses depend only on the lengths.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_and_si512, _mm512_loadu_si512, _mm512_maskz_mov_epi64, _mm512_mul_epu32,
    _mm512_or_si512, _mm512_permutex2var_epi64, _mm512_permutexvar_epi64, _mm512_reduce_add_epi64, _mm512_set1_epi64,
    _mm512_set_epi64, _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srli_epi64,
};

/// One Poly1305 block.
type Block = [u8; 16];
/// Eight consecutive blocks: one step of the vector loop.
type Group = [Block; 8];

/// Inputs of at least this many 16-byte blocks (for [`aead_tag`]: including
/// the padding and the length block) take the vector path.
const VEC_MIN_BLOCKS: usize = 16;
// `vector_blocks` needs at least 16 blocks.
const _: () = assert!(VEC_MIN_BLOCKS >= 16);

/// The ChaCha20-Poly1305 tag (RFC 8439 §2.8): Poly1305 under the one-time
/// `key` over aad ‖ pad16 ‖ ct ‖ pad16 ‖ le64(aad.len) ‖ le64(ct.len).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) unsafe fn aead_tag(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> [u8; 16] {
    let k = Key::new(key);
    let (aad_full, aad_rest) = aad.as_chunks::<16>();
    let (ct_full, ct_rest) = ct.as_chunks::<16>();
    // Partial blocks are zero-padded to full blocks (the 2^128 bit is still
    // set for them: the padding is part of the AEAD's MAC input).
    let aad_pad = zero_padded(aad_rest);
    let ct_pad = zero_padded(ct_rest);
    let aad_pad: &[Block] = if aad_rest.is_empty() { &[] } else { core::slice::from_ref(&aad_pad) };
    let ct_pad: &[Block] = if ct_rest.is_empty() { &[] } else { core::slice::from_ref(&ct_pad) };
    // `usize` is at most 64 bits on x86_64, so `as u64` is lossless.
    let lens = ((ct.len() as u128) << 64) | aad.len() as u128;
    let lens = [lens.to_le_bytes()];
    let parts: [&[Block]; 5] = [aad_full, aad_pad, ct_full, ct_pad, &lens];
    // Cannot overflow: the slices live in memory, so their block counts sum to
    // far less than usize::MAX.
    let n = aad_full.len() + aad_pad.len() + ct_full.len() + ct_pad.len() + 1;
    let h = if n >= VEC_MIN_BLOCKS {
        vector_blocks(&k, &parts, n)
    } else {
        let mut h = Acc::ZERO;
        for part in [aad_full, aad_pad, ct_full, ct_pad] {
            for b in part {
                h.block(&k, b, 1);
            }
        }
        h.block(&k, &lens[0], 1);
        h
    };
    h.finish(&k)
}

/// Plain Poly1305 of `msg` under the one-time `key` (for test vectors).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[cfg_attr(not(test), allow(dead_code))]
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) unsafe fn mac(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    let k = Key::new(key);
    let (full, rest) = msg.as_chunks::<16>();
    let mut h = if full.len() >= VEC_MIN_BLOCKS {
        vector_blocks(&k, &[full], full.len())
    } else {
        let mut h = Acc::ZERO;
        for b in full {
            h.block(&k, b, 1);
        }
        h
    };
    if !rest.is_empty() {
        // A final partial block gets a 0x01 byte after it and no 2^128 bit.
        let mut b = zero_padded(rest);
        // `rest.len() < 16`; `get_mut` keeps this free of panics anyway.
        if let Some(x) = b.get_mut(rest.len()) {
            *x = 1;
        }
        h.block(&k, &b, 0);
    }
    h.finish(&k)
}

/// `rest` (shorter than a block) followed by zero bytes.
fn zero_padded(rest: &[u8]) -> Block {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(rest) {
        *d = *s;
    }
    b
}

// ---------------------------------------------------------------------------
// Scalar part: radix 2^64.
// ---------------------------------------------------------------------------

/// The one-time key: clamped r = r0 + 2^64·r1, s1 = 5·r1/4, and s.
#[derive(Clone, Copy)]
struct Key {
    /// r mod 2^64 after clamping: < 2^60.
    r0: u64,
    /// r div 2^64 after clamping: < 2^60 and divisible by 4.
    r1: u64,
    /// r1 + r1/4 = 5·r1/4 < 1.25·2^60.
    s1: u64,
    /// The second key half, added at the end.
    s: u128,
}

impl Key {
    fn new(key: &[u8; 32]) -> Key {
        let (r, s) = key.split_at(16);
        let mut rb = [0u8; 16];
        let mut sb = [0u8; 16];
        rb.copy_from_slice(r);
        sb.copy_from_slice(s);
        let r = u128::from_le_bytes(rb) & 0x0fff_fffc_0fff_fffc_0fff_fffc_0fff_ffff;
        let r0 = r as u64;
        let r1 = (r >> 64) as u64;
        Key { r0, r1, s1: r1 + (r1 >> 2), s: u128::from_le_bytes(sb) }
    }
}

/// Accumulator h = h0 + 2^64·h1 + 2^128·h2, kept partially reduced:
/// h2 ≤ 4 between operations (so h < 5·2^128 < 2·p).
#[derive(Clone, Copy)]
struct Acc {
    h0: u64,
    h1: u64,
    h2: u64,
}

impl Acc {
    const ZERO: Acc = Acc { h0: 0, h1: 0, h2: 0 };

    /// h ← (h + block + hibit·2^128)·r mod⁺ p, with `hibit` 0 or 1.
    #[inline(always)]
    fn block(&mut self, k: &Key, b: &Block, hibit: u64) {
        let m = u128::from_le_bytes(*b);
        let t = self.h0 as u128 + (m as u64) as u128;
        let h0 = t as u64;
        let t = (t >> 64) + self.h1 as u128 + (m >> 64);
        let h1 = t as u64;
        // h2 ≤ 4 + 1 + 1 = 6.
        let h2 = self.h2 + hibit + (t >> 64) as u64;
        *self = Acc { h0, h1, h2 }.mul_r(k);
    }

    /// h·r mod⁺ p for h2 ≤ 6; the result has h2 ≤ 4.
    ///
    /// With r1 divisible by 4: h1·r1·2^128 = h1·(r1/4)·2^130 ≡ h1·s1 and
    /// h2·r1·2^192 ≡ h2·s1·2^64 (mod p), so
    /// h·r ≡ (h0·r0 + h1·s1) + 2^64·(h0·r1 + h1·r0 + h2·s1) + 2^128·h2·r0.
    #[inline(always)]
    fn mul_r(self, k: &Key) -> Acc {
        let Acc { h0, h1, h2 } = self;
        let (h0, h1, h2) = (h0 as u128, h1 as u128, h2 as u128);
        let (r0, r1, s1) = (k.r0 as u128, k.r1 as u128, k.s1 as u128);
        // d0 < 2^64·2^60 + 2^64·1.25·2^60 < 2^126.
        let d0 = h0 * r0 + h1 * s1;
        // d1 < 2·2^124 + 6·1.25·2^60 < 2^125.1, plus d0>>64 < 2^62.
        let d1 = h0 * r1 + h1 * r0 + h2 * s1 + (d0 >> 64);
        // t = bits 128.. of the product: h2·r0 + d1>>64 < 6·2^60 + 2^61.1 < 2^63.2.
        let t = (h2 * r0 + (d1 >> 64)) as u64;
        // Fold bits ≥ 130: (t>>2)·2^130 ≡ 5·(t>>2) = (t & !3) + (t >> 2) < 2^63.6.
        let c = (t & !3) + (t >> 2);
        let s = (d0 as u64) as u128 + c as u128;
        let h0 = s as u64;
        let s = (d1 as u64) as u128 + (s >> 64);
        let h1 = s as u64;
        // (t & 3) ≤ 3 plus a carry of at most 1.
        let h2 = (t & 3) + (s >> 64) as u64;
        Acc { h0, h1, h2 }
    }

    /// Fold a sum Σ d_k·2^(26k) (each d_k < 2^61) into a partially reduced
    /// accumulator.
    fn from_radix26(d: [u64; 5]) -> Acc {
        let [d0, d1, d2, d3, d4] = d.map(|x| x as u128);
        // < 2^61 + 2^87 + 2^113 < 2^114.
        let t = d0 + (d1 << 26) + (d2 << 52);
        let h0 = t as u64;
        // < 2^50 + 2^75 + 2^101 < 2^102 (78 = 64 + 14, 104 = 64 + 40).
        let t = (t >> 64) + (d3 << 14) + (d4 << 40);
        let h1 = t as u64;
        let h2 = (t >> 64) as u64; // < 2^38
        let c = (h2 & !3) + (h2 >> 2); // 5·(h2>>2) < 2^39
        let s = h0 as u128 + c as u128;
        let h0 = s as u64;
        let s = h1 as u128 + (s >> 64);
        Acc { h0, h1: s as u64, h2: (h2 & 3) + (s >> 64) as u64 }
    }

    /// Radix-2^26 limbs of h: limbs 0..3 < 2^26, limb 4 < 2^24 + 4·2^24.
    fn to_radix26(self) -> [u64; 5] {
        const M: u64 = (1 << 26) - 1;
        let Acc { h0, h1, h2 } = self;
        [h0 & M, (h0 >> 26) & M, ((h0 >> 52) | (h1 << 12)) & M, (h1 >> 14) & M, (h1 >> 40) | (h2 << 24)]
    }

    /// (h mod p + s) mod 2^128, little endian.
    fn finish(self, k: &Key) -> [u8; 16] {
        let Acc { h0, h1, h2 } = self;
        // h < 5·2^128 < 2p, so one conditional subtraction of p reduces it:
        // g = h + 5 has bit 130 set exactly when h ≥ p, and then h - p = g - 2^130.
        let t = h0 as u128 + 5;
        let g0 = t as u64;
        let t = h1 as u128 + (t >> 64);
        let g1 = t as u64;
        let g2 = h2 + (t >> 64) as u64; // ≤ 5
        let mask = 0u64.wrapping_sub(g2 >> 2); // all ones iff h ≥ p
        let h0 = (h0 & !mask) | (g0 & mask);
        let h1 = (h1 & !mask) | (g1 & mask);
        let h = ((h1 as u128) << 64) | h0 as u128;
        h.wrapping_add(k.s).to_le_bytes()
    }
}

// ---------------------------------------------------------------------------
// Vector part: 8 lanes × radix 2^26.
// ---------------------------------------------------------------------------

/// Five 26-bit limbs, one lane per 64-bit element.
type V5 = [__m512i; 5];
/// 5·limbs 1..4 of a multiplier.
type S4 = [__m512i; 4];

/// Limb mask 2^26 - 1.
const M26: i64 = (1 << 26) - 1;

/// a·b mod⁺ p lane by lane, without carries: returns d with
/// a·b ≡ Σ d_k·2^(26k) (mod p), using 2^130 ≡ 5 (`bs[i-1]` = 5·b_i).
///
/// Bound: with all limbs a_i ≤ A, b_i ≤ B (A, B < 2^32/5), every
/// d_k ≤ 21·A·B (d0 has 1 + 4·5 weighted products, the others fewer).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn mul_nocarry(a: &V5, b: &V5, bs: &S4) -> V5 {
    let [a0, a1, a2, a3, a4] = a.map(|v| opaque(v));
    let [b0, b1, b2, b3, b4] = b.map(|v| opaque(v));
    let [s1, s2, s3, s4] = bs.map(|v| opaque(v));
    let m = _mm512_mul_epu32;
    let d0 = sum5(m(a0, b0), m(a1, s4), m(a2, s3), m(a3, s2), m(a4, s1));
    let d1 = sum5(m(a0, b1), m(a1, b0), m(a2, s4), m(a3, s3), m(a4, s2));
    let d2 = sum5(m(a0, b2), m(a1, b1), m(a2, b0), m(a3, s4), m(a4, s3));
    let d3 = sum5(m(a0, b3), m(a1, b2), m(a2, b1), m(a3, b0), m(a4, s4));
    let d4 = sum5(m(a0, b4), m(a1, b3), m(a2, b2), m(a3, b1), m(a4, b0));
    [d0, d1, d2, d3, d4]
}

/// Returns `v`, hidden from the optimizer.
///
/// `_mm512_mul_epu32` is `(a & 0xffff_ffff) * (b & 0xffff_ffff)` in LLVM IR.
/// Where LLVM can prove the masks redundant (our limbs are < 2^32) it drops
/// them, and the instruction selector, which cannot see known bits across
/// basic blocks (loop-carried and loop-invariant values), then emits a full
/// 64×64-bit multiply (3 `vpmuludq` + shifts + adds) instead of one
/// `vpmuludq`.  An opaque copy right before the multiply keeps the masks in
/// the same block, where they fold into a single `vpmuludq`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn opaque(mut v: __m512i) -> __m512i {
    // SAFETY: the asm template is a comment: no instructions, no memory or
    // flag access; `v` only has to be in a zmm register, and is unchanged.
    // (Not `pure`, so that loop-invariant copies are not hoisted away.)
    unsafe { core::arch::asm!("/* {0} */", inout(zmm_reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn sum5(a: __m512i, b: __m512i, c: __m512i, d: __m512i, e: __m512i) -> __m512i {
    let add = _mm512_add_epi64;
    add(add(add(a, b), add(c, d)), e)
}

/// Partial carry of limbs d_k < 2^58 (radix 2^26, 64-bit lanes), as one
/// chain d0→d1→d2→d3→d4→d0(×5)→d1 (6 steps: fewer operations than the usual
/// two interleaved chains, which need 7; the loop is throughput-bound).
///
/// Bounds (c = carry out of the step, M = 2^26 - 1):
/// 1. d0→d1: c < 2^32,     d0 ≤ M, d1 < 2^58 + 2^32
/// 2. d1→d2: c < 2^32.01,  d1 ≤ M, d2 < 2^58 + 2^32.01
/// 3. d2→d3: c < 2^32.01,  d2 ≤ M, d3 < 2^58 + 2^32.01
/// 4. d3→d4: c < 2^32.01,  d3 ≤ M, d4 < 2^58 + 2^32.01
/// 5. d4→d0: c < 2^32.01,  d4 ≤ M, d0 < 2^26 + 5·2^32.01 < 2^34.35
/// 6. d0→d1: c < 2^8.35,   d0 ≤ M, d1 < 2^26 + 2^8.35
///
/// Result: every limb < L = 2^26 + 2^9 (all but limb 1 even < 2^26).  The
/// value mod p is unchanged (a carry out of limb 4 is worth 2^130 ≡ 5).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn carry(d: V5) -> V5 {
    let [mut d0, mut d1, mut d2, mut d3, mut d4] = d;
    let mask = _mm512_set1_epi64(M26);
    let hi = |x: __m512i| _mm512_srli_epi64::<26>(x);
    let lo = |x: __m512i| _mm512_and_si512(x, mask);
    d1 = _mm512_add_epi64(d1, hi(d0));
    d0 = lo(d0);
    d2 = _mm512_add_epi64(d2, hi(d1));
    d1 = lo(d1);
    d3 = _mm512_add_epi64(d3, hi(d2));
    d2 = lo(d2);
    d4 = _mm512_add_epi64(d4, hi(d3));
    d3 = lo(d3);
    let c = hi(d4);
    d4 = lo(d4);
    d0 = _mm512_add_epi64(d0, _mm512_add_epi64(c, _mm512_slli_epi64::<2>(c)));
    d1 = _mm512_add_epi64(d1, hi(d0));
    d0 = lo(d0);
    [d0, d1, d2, d3, d4]
}

/// 5·x per element (x < 2^30).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn times5(x: &V5) -> S4 {
    let f = |v: __m512i| _mm512_add_epi64(v, _mm512_slli_epi64::<2>(v));
    [f(x[1]), f(x[2]), f(x[3]), f(x[4])]
}

/// The per-call vector key material.
struct Powers {
    /// r^8 in every lane (limbs < L = 2^26 + 2^9), and 5× its limbs 1..4.
    r8: V5,
    r8s: S4,
    /// r^(8-j) in lane j (limbs < L), and 5× its limbs 1..4.
    tail: V5,
    tails: S4,
}

impl Powers {
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    fn new(k: &Key) -> Powers {
        let r1 = Acc { h0: k.r0, h1: k.r1, h2: 0 };
        let r2 = r1.mul_r(k);
        let r3 = r2.mul_r(k);
        let r4 = r3.mul_r(k);
        let [p1, p2, p3, p4] = [r1, r2, r3, r4].map(Acc::to_radix26);
        // x = [r^4, r^3, r^2, r^1, r^4, r^3, r^2, r^1] (lane 0 first),
        // y = [r^4, r^4, r^4, r^4, 1, 1, 1, 1]; lane j of x·y is r^(8-j).
        // Limbs of x and y are < 5·2^24 < 2^26.33 (`to_radix26`), products
        // < 21·2^52.66 < 2^57.05 < 2^58 as `carry` needs.
        let mut x = [_mm512_setzero_si512(); 5];
        let mut y = [_mm512_setzero_si512(); 5];
        for i in 0..5 {
            let (a, b, c, d) = (p4[i] as i64, p3[i] as i64, p2[i] as i64, p1[i] as i64);
            let one = (i == 0) as i64;
            x[i] = _mm512_set_epi64(d, c, b, a, d, c, b, a);
            y[i] = _mm512_set_epi64(one, one, one, one, a, a, a, a);
        }
        let tail = carry(mul_nocarry(&x, &y, &times5(&y)));
        let zero = _mm512_setzero_si512();
        let r8 = tail.map(|v| _mm512_permutexvar_epi64(zero, v));
        Powers { r8s: times5(&r8), r8, tails: times5(&tail), tail }
    }
}

/// The message limbs of one group, lane j = block j, with `hib` (the 2^128
/// bit as 2^24 in limb 4, per lane).  Only meant to be added before a
/// `carry`: limb 1 is all of bits 26..63 of the block (< 2^38; its top 12
/// bits carry the weight of limb 2, which therefore only holds bits 64..77);
/// limbs 0, 2, 3 < 2^26, limb 4 < 2^25.  This saves masking and a shift.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn load_group(g: &Group, hib: __m512i) -> V5 {
    let p = g.as_ptr().cast::<u8>();
    // SAFETY: `g` is 128 readable bytes; the two unaligned 64-byte loads
    // cover bytes 0..64 and 64..128 of it.
    let (a, b) = unsafe { (_mm512_loadu_si512(p.cast()), _mm512_loadu_si512(p.add(64).cast())) };
    // a = [b0.lo, b0.hi, b1.lo, b1.hi, ..., b3.hi], b likewise for blocks 4..7.
    let lo = _mm512_permutex2var_epi64(a, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b);
    let hi = _mm512_permutex2var_epi64(a, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b);
    let mask = _mm512_set1_epi64(M26);
    let m0 = _mm512_and_si512(lo, mask);
    let m1 = _mm512_srli_epi64::<26>(lo);
    let m2 = _mm512_and_si512(_mm512_slli_epi64::<12>(hi), mask);
    let m3 = _mm512_and_si512(_mm512_srli_epi64::<14>(hi), mask);
    let m4 = _mm512_or_si512(_mm512_srli_epi64::<40>(hi), hib);
    [m0, m1, m2, m3, m4]
}

/// Evaluation of the `n` blocks in `parts` (each with the 2^128 bit),
/// starting from h = 0; vectorized for n ≥ 16.
#[target_feature(enable = "avx512f,avx512vl")]
fn vector_blocks(k: &Key, parts: &[&[Block]], n: usize) -> Acc {
    if n < 16 {
        // Not reached (callers use `VEC_MIN_BLOCKS`); kept for robustness.
        let mut h = Acc::ZERO;
        for b in parts.iter().flat_map(|p| p.iter()) {
            h.block(k, b, 1);
        }
        return h;
    }
    let pw = Powers::new(k);
    let hib = _mm512_set1_epi64(1 << 24);
    // The last 8 blocks are copied together first: copied right before use,
    // their (wide) loads would wait for the (narrow) stores to retire.
    let mut last: Group = [[0u8; 16]; 8];
    let mut slots = last.iter_mut().rev();
    'fill: for part in parts.iter().rev() {
        for b in part.iter().rev() {
            match slots.next() {
                Some(slot) => *slot = *b,
                None => break 'fill,
            }
        }
    }
    let mut blocks = Blocks { parts, cur: &[] };
    let mut buf: Group = [[0u8; 16]; 8];

    // h of the first n mod 8 blocks (that scalar chain runs while the
    // powers of r are computed), then h + (the next 8 blocks) in lane 0.
    let mut h = Acc::ZERO;
    for _ in 0..n % 8 {
        h.block(k, &blocks.next_block(), 1);
    }
    // Limbs of h < 2^27 plus message limbs < 2^38: far below `carry`'s 2^58.
    let hv = h.to_radix26().map(|x| _mm512_maskz_mov_epi64(1, _mm512_set1_epi64(x as i64)));
    let groups = n / 8;
    let mut acc = carry(add5(load_group(blocks.next_group(&mut buf), hib), hv));
    // `mid` counts the groups between the first and the last (n ≥ 16 makes
    // these two distinct).
    let mut mid = groups.saturating_sub(2);

    // Loop invariant: acc limbs < L = 2^26 + 2^9 (`carry`); with r^8 limbs
    // < L too, the products are < 21·L² < 2^56.41 (`mul_nocarry`), plus
    // message limbs < 2^38: < 2^58 as `carry` needs.
    while mid > 0 {
        // Groups that lie in one slice are read in place.
        let (gs, _) = blocks.contiguous().as_chunks::<8>();
        let take = gs.len().min(mid);
        for g in gs.iter().take(take) {
            acc = carry(add5(mul_nocarry(&acc, &pw.r8, &pw.r8s), load_group(g, hib)));
        }
        blocks.skip(take * 8);
        mid -= take;
        if take == 0 {
            // A group that straddles slices is copied together.
            blocks.fill(&mut buf);
            acc = carry(add5(mul_nocarry(&acc, &pw.r8, &pw.r8s), load_group(&buf, hib)));
            mid -= 1;
        }
    }
    acc = carry(add5(mul_nocarry(&acc, &pw.r8, &pw.r8s), load_group(&last, hib)));
    finish_vector(&acc, &pw)
}

/// Σ_j acc_j·r^(8-j) over the lanes j, as a scalar accumulator.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn finish_vector(acc: &V5, pw: &Powers) -> Acc {
    // acc and tail limbs < L: d_k < 2^56.41, and the sum of 8 lanes
    // < 2^59.41 (`from_radix26` takes < 2^61).
    let d = mul_nocarry(acc, &pw.tail, &pw.tails);
    Acc::from_radix26(d.map(|v| _mm512_reduce_add_epi64(v) as u64))
}

#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn add5(a: V5, b: V5) -> V5 {
    [
        _mm512_add_epi64(a[0], b[0]),
        _mm512_add_epi64(a[1], b[1]),
        _mm512_add_epi64(a[2], b[2]),
        _mm512_add_epi64(a[3], b[3]),
        _mm512_add_epi64(a[4], b[4]),
    ]
}

/// A sequence of blocks spread over several slices.
struct Blocks<'a, 'p> {
    /// Parts not yet started.
    parts: &'p [&'a [Block]],
    /// The rest of the current part.
    cur: &'a [Block],
}

impl<'a> Blocks<'a, '_> {
    /// Make `cur` non-empty if any block is left.
    fn refill(&mut self) {
        while self.cur.is_empty() {
            match self.parts {
                [first, rest @ ..] => {
                    self.cur = first;
                    self.parts = rest;
                }
                [] => return,
            }
        }
    }

    /// The blocks that follow contiguously in memory.
    fn contiguous(&mut self) -> &'a [Block] {
        self.refill();
        self.cur
    }

    /// Skip `n` blocks of `contiguous()`.
    fn skip(&mut self, n: usize) {
        self.cur = self.cur.get(n..).unwrap_or(&[]);
    }

    /// Copies the next `dst.len()` blocks to `dst` (zeros past the end,
    /// which callers never reach).
    fn fill(&mut self, mut dst: &mut [Block]) {
        while !dst.is_empty() {
            self.refill();
            if self.cur.is_empty() {
                dst.fill([0u8; 16]);
                return;
            }
            let n = dst.len().min(self.cur.len());
            let (d, rest) = dst.split_at_mut(n);
            let (s, cur) = self.cur.split_at(n);
            d.copy_from_slice(s);
            dst = rest;
            self.cur = cur;
        }
    }

    /// The next 8 blocks: in place if they lie in one slice, else copied to
    /// `buf`.
    fn next_group<'b>(&mut self, buf: &'b mut Group) -> &'b Group
    where
        'a: 'b,
    {
        self.refill();
        if let Some((g, rest)) = self.cur.split_first_chunk::<8>() {
            self.cur = rest;
            return g;
        }
        self.fill(buf);
        buf
    }

    /// The next block (zeros past the end, which callers never reach).
    fn next_block(&mut self) -> Block {
        self.refill();
        match self.cur {
            [first, rest @ ..] => {
                self.cur = rest;
                *first
            }
            [] => [0u8; 16],
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::{aead_tag, mac};
    use poly1305::universal_hash::{KeyInit, UniversalHash};
    use poly1305::Poly1305;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use std::vec::Vec;

    use crate::tests::require_avx512;

    fn my_mac(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
        require_avx512();
        // SAFETY: `require_avx512` checked AVX-512F and AVX-512VL.
        unsafe { mac(key, msg) }
    }

    fn my_tag(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> [u8; 16] {
        require_avx512();
        // SAFETY: `require_avx512` checked AVX-512F and AVX-512VL.
        unsafe { aead_tag(key, aad, ct) }
    }

    fn ref_mac(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
        Poly1305::new(key.into()).compute_unpadded(msg).into()
    }

    fn ref_tag(key: &[u8; 32], aad: &[u8], ct: &[u8]) -> [u8; 16] {
        let mut p = Poly1305::new(key.into());
        p.update_padded(aad);
        p.update_padded(ct);
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
        lens[8..].copy_from_slice(&(ct.len() as u64).to_le_bytes());
        p.update(&[lens.into()]);
        p.finalize().into()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: std::string::String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    fn key(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    fn tag(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    /// Checks a vector against the expected tag, RustCrypto, and (for the
    /// vector path) itself repeated so that it runs through `vector_blocks`.
    fn check(k: &[u8; 32], msg: &[u8], expected: &[u8; 16]) {
        assert_eq!(&my_mac(k, msg), expected);
        assert_eq!(&ref_mac(k, msg), expected);
    }

    const IETF: &str = "Any submission to the IETF intended by the Contributor for \
        publication as all or part of an IETF Internet-Draft or RFC and any statement made \
        within the context of an IETF activity is considered an \"IETF Contribution\". Such \
        statements include oral statements in IETF sessions, as well as written and \
        electronic communications made at any time or place, which are addressed to";

    #[test]
    fn rfc8439_2_5_2() {
        check(
            &key("85:d6:be:78:57:55:6d:33:7f:44:52:fe:42:d5:06:a8:01:03:80:8a:fb:0d:b2:fd:4a:bf:f6:af:41:49:f5:1b"),
            b"Cryptographic Forum Research Group",
            &tag("a8:06:1d:c1:30:51:36:c6:c2:2b:8b:af:0c:01:27:a9"),
        );
    }

    #[test]
    fn rfc8439_a3() {
        assert_eq!(IETF.len(), 375);
        // #1: all zero.
        check(&[0; 32], &[0; 64], &[0; 16]);
        // #2: r = 0, so the tag is s.
        let s2 = "36e5f6b5c5e06070f0efca96227a863e";
        check(&key(&std::format!("{}{}", "00".repeat(16), s2)), IETF.as_bytes(), &tag(s2));
        // #3: s = 0.
        check(
            &key(&std::format!("{}{}", s2, "00".repeat(16))),
            IETF.as_bytes(),
            &tag("f3477e7cd95417af89a6b8794c310cf0"),
        );
        // #4
        check(
            &key("1c9240a5eb55d38af333888604f6b5f047 3917c1402b80099dca5cbc207075c0"),
            b"'Twas brillig, and the slithy toves\nDid gyre and gimble in the wabe:\n\
              All mimsy were the borogoves,\nAnd the mome raths outgrabe.",
            &tag("4541669a7eaaee61e708dc7cbcc5eb62"),
        );
        let r2 = key(&std::format!("02{}", "00".repeat(31)));
        let r1 = key(&std::format!("01{}", "00".repeat(31)));
        // #5: h reaches exactly p + something small.
        check(&r2, &[0xff; 16], &tag(&std::format!("03{}", "00".repeat(15))));
        // #6: s = all ones, wraps mod 2^128.
        check(
            &key(&std::format!("02{}{}", "00".repeat(15), "ff".repeat(16))),
            &tag(&std::format!("02{}", "00".repeat(15))),
            &tag(&std::format!("03{}", "00".repeat(15))),
        );
        // #7
        let m7 = hex(&std::format!("{}f0{}11{}", "ff".repeat(16), "ff".repeat(15), "00".repeat(15)));
        check(&r1, &m7, &tag(&std::format!("05{}", "00".repeat(15))));
        // #8
        let m8 = hex(&std::format!("{}fb{}{}", "ff".repeat(16), "fe".repeat(15), "01".repeat(16)));
        check(&r1, &m8, &[0; 16]);
        // #9: h = 2^130 - 6 + ... final reduction boundary.
        check(&r2, &hex(&std::format!("fd{}", "ff".repeat(15))), &tag(&std::format!("fa{}", "ff".repeat(15))));
        // #10 and #11: r = 1 + 2^66 style keys.
        let r10 = key(&std::format!("0100000000000000 0400000000000000{}", "00".repeat(16)));
        let m10 = hex("E33594D7505E43B900000000000000003394D7505E4379CD0100000000000000\
             0000000000000000000000000000000001000000000000000000000000000000");
        check(&r10, &m10, &tag("14000000000000005500000000000000"));
        check(&r10, &m10[..48], &tag("13000000000000000000000000000000"));
    }

    #[test]
    fn rfc8439_2_8_2_aead() {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let otk = key("7b ac 2b 25 2d b4 47 af 09 b6 7a 55 a4 e9 55 84 \
             0a e1 d6 73 10 75 d9 eb 2a 93 75 78 3e d5 53 ff");
        let aad = hex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
        let ct = hex("d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 \
             a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6 \
             3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b \
             1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36 \
             92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58 \
             fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc \
             3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b \
             61 16");
        let expected = tag("1a:e1:0b:59:4f:09:e2:6a:7e:90:2e:cb:d0:60:06:91");
        assert_eq!(my_tag(&otk, &aad, &ct), expected);
        assert_eq!(ref_tag(&otk, &aad, &ct), expected);

        // Cross-check the transcribed bytes: one-time key and ciphertext from
        // the RFC's key, nonce and plaintext with the `chacha20` crate.
        let k: Vec<u8> = (0x80..=0x9f).collect();
        let nonce = hex("07 00 00 00 40 41 42 43 44 45 46 47");
        let mut c = chacha20::ChaCha20::new(k[..].into(), nonce[..].into());
        let mut block0 = [0u8; 64];
        c.apply_keystream(&mut block0);
        assert_eq!(block0[..32], otk[..]);
        let mut pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only \
            one tip for the future, sunscreen would be it."
            .to_vec();
        c.seek(64u32);
        c.apply_keystream(&mut pt);
        assert_eq!(pt, ct);
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(0x5eed_1305)
    }

    fn random_key(rng: &mut ChaCha20Rng) -> [u8; 32] {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        k
    }

    #[test]
    fn differential_mac_all_lengths() {
        let mut rng = rng();
        let mut buf = std::vec![0u8; 2100];
        for len in 0..=2100 {
            let k = random_key(&mut rng);
            rng.fill_bytes(&mut buf[..len]);
            assert_eq!(my_mac(&k, &buf[..len]), ref_mac(&k, &buf[..len]), "len {len}");
        }
    }

    #[test]
    fn differential_mac_long() {
        let mut rng = rng();
        let mut buf = std::vec![0u8; 70000 + 64];
        rng.fill_bytes(&mut buf);
        for m in (256..=70000).step_by(128) {
            for d in [-33i64, -17, -16, -15, -1, 0, 1, 15, 16, 17, 33] {
                let len = (m as i64 + d) as usize;
                let k = random_key(&mut rng);
                // Vary the start too (alignment of the loads).
                let off = len % 7;
                let msg = &buf[off..off + len];
                assert_eq!(my_mac(&k, msg), ref_mac(&k, msg), "len {len}");
            }
        }
    }

    /// Keys whose r (clamped) and s are extreme, with all-0xff messages: the
    /// largest limbs and products the code can see.
    #[test]
    fn adversarial_keys_and_messages() {
        let mut rng = rng();
        let ones = std::vec![0xffu8; 4200];
        let mut keys = std::vec![[0xffu8; 32], [0u8; 32]];
        let mut k = random_key(&mut rng);
        k[16..].fill(0xff);
        keys.push(k);
        let mut k = random_key(&mut rng);
        k[..16].fill(0xff);
        keys.push(k);
        let mut k = [0xffu8; 32];
        k[16..].fill(0);
        keys.push(k);
        for k in &keys {
            for len in (0..=2100).chain([4095, 4096, 4097, 4200]) {
                let msg = &ones[..len];
                assert_eq!(my_mac(k, msg), ref_mac(k, msg), "len {len}");
                assert_eq!(my_tag(k, msg, msg), ref_tag(k, msg, msg), "len {len}");
            }
        }
        // Random messages whose 16-byte words are often 0 or 2^64 - 1.
        let mut buf = std::vec![0u8; 3000];
        for len in 0..=3000 {
            for w in buf[..len].chunks_mut(8) {
                let v = match rng.next_u32() % 4 {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.next_u64(),
                };
                let n = w.len();
                w.copy_from_slice(&v.to_le_bytes()[..n]);
            }
            let k = keys[len % keys.len()];
            assert_eq!(my_mac(&k, &buf[..len]), ref_mac(&k, &buf[..len]), "len {len}");
        }
    }

    /// With r = 1 and s = 0 the tag is (Σ blocks) mod p mod 2^128; messages
    /// whose sum is c·p + δ test the final reduction exactly, from every lane.
    #[test]
    fn sums_near_p() {
        let mut k = [0u8; 32];
        k[0] = 1; // r = 1
        for n in [3usize, 4, 7, 15, 16, 17, 19, 23, 24, 25, 31, 33, 99] {
            // Σ c_i = n·2^128 + Σ m_i = c·p + δ  ⇔  Σ m_i = w·2^128 - 5c + δ
            // with w = 4c - n ∈ [1, 4]: w blocks of 2^128 - 1, and
            // e = w - 5c + δ added to one of them (e ≤ 0) or put in another
            // block (e ≥ 0).
            let c = (n + 1).div_ceil(4);
            let w = 4 * c - n;
            for delta in -6i64..=6 {
                let e = w as i64 - 5 * c as i64 + delta;
                for start in [0, n / 2, n - 1] {
                    let mut m = std::vec![0u128; n];
                    for i in 0..w {
                        m[(start + i) % n] = u128::MAX;
                    }
                    if e <= 0 {
                        m[start] = m[start].wrapping_sub(e.unsigned_abs() as u128);
                    } else {
                        assert!(w < n);
                        m[(start + w) % n] = e as u128;
                    }
                    let msg: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
                    // p mod 2^128 = 2^128 - 5.
                    let expected = if delta >= 0 {
                        delta as u128
                    } else {
                        (u128::MAX - 4).wrapping_sub(delta.unsigned_abs() as u128)
                    };
                    let what = std::format!("n {n} δ {delta} start {start}");
                    assert_eq!(ref_mac(&k, &msg), expected.to_le_bytes(), "{what}");
                    assert_eq!(my_mac(&k, &msg), expected.to_le_bytes(), "{what}");
                    // The same sums through the AEAD (vector path from 16 blocks).
                    assert_eq!(my_tag(&k, &msg, &[]), ref_tag(&k, &msg, &[]), "{what}");
                }
            }
        }
    }

    /// Multi-megabyte inputs, odd lengths, through both entry points.
    #[test]
    fn large_inputs() {
        let mut rng = rng();
        let mut buf = std::vec![0u8; 3 << 20];
        rng.fill_bytes(&mut buf);
        for len in [(1 << 20) + 13, 3 << 20] {
            let k = random_key(&mut rng);
            let msg = &buf[..len];
            assert_eq!(my_mac(&k, msg), ref_mac(&k, msg), "len {len}");
            let (aad, ct) = msg.split_at(4099);
            assert_eq!(my_tag(&k, aad, ct), ref_tag(&k, aad, ct), "len {len}");
        }
    }

    /// `vector_blocks` on one stream cut into parts in many ways (all group
    /// straddling cases), and below its 16-block minimum, against the scalar
    /// loop.
    #[test]
    fn vector_blocks_any_split() {
        use super::{vector_blocks, Acc, Block, Key};
        require_avx512();
        let mut rng = rng();
        for n in 0..=70usize {
            let mut blocks: Vec<Block> = std::vec![[0u8; 16]; n];
            for b in blocks.iter_mut() {
                rng.fill_bytes(b);
            }
            let k = Key::new(&random_key(&mut rng));
            let mut expected = Acc::ZERO;
            for b in &blocks {
                expected.block(&k, b, 1);
            }
            for _ in 0..20 {
                // Up to 5 parts with random (possibly empty) lengths.
                let mut cuts: Vec<usize> = (0..4).map(|_| rng.next_u32() as usize % (n + 1)).collect();
                cuts.push(0);
                cuts.push(n);
                cuts.sort();
                let parts: Vec<&[Block]> = cuts.windows(2).map(|w| &blocks[w[0]..w[1]]).collect();
                // SAFETY: `require_avx512` checked AVX-512F and AVX-512VL.
                let h = unsafe { vector_blocks(&k, &parts, n) };
                assert_eq!(h.finish(&k), expected.finish(&k), "n {n} cuts {cuts:?}");
            }
        }
    }

    #[test]
    fn differential_aead() {
        let mut rng = rng();
        let mut buf = std::vec![0u8; 65535 + 1100];
        rng.fill_bytes(&mut buf);
        let aad_lens = [0usize, 1, 12, 15, 16, 17, 33, 127, 128, 129, 1000];
        for &al in &aad_lens {
            for cl in (0..=300).chain([1400, 1419, 1420, 1421, 8192, 65535]) {
                let k = random_key(&mut rng);
                let (aad, ct) = buf.split_at(al);
                let ct = &ct[..cl];
                assert_eq!(my_tag(&k, aad, ct), ref_tag(&k, aad, ct), "aad {al} ct {cl}");
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture bench`
    ///
    /// `aead_tag` (empty aad) against RustCrypto's `poly1305` over the same
    /// padded MAC input, fresh key per call; best of 8 interleaved 0.5 s runs
    /// each.  Cycles are TSC cycles (the TSC rate is measured).
    #[test]
    #[ignore]
    fn bench() {
        use std::hint::black_box;
        use std::time::Instant;
        fn run(f: &mut dyn FnMut()) -> f64 {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < 0.5 {
                for _ in 0..64 {
                    f();
                }
                n += 64;
            }
            t.elapsed().as_secs_f64() / n as f64
        }
        require_avx512();
        let t = Instant::now();
        // SAFETY: `_rdtsc` has no preconditions on x86_64.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        while t.elapsed().as_millis() < 200 {}
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ghz = (c1 - c0) as f64 / t.elapsed().as_nanos() as f64;
        std::println!("TSC {ghz:.2} GHz");
        let mut rng = rng();
        let mut data = std::vec![0u8; 8192];
        rng.fill_bytes(&mut data);
        let mut k = random_key(&mut rng);
        for len in [64usize, 256, 1420, 8192] {
            let ct = &data[..len];
            let (mut mine, mut theirs) = (f64::MAX, f64::MAX);
            for _ in 0..8 {
                mine = mine.min(run(&mut || {
                    k[0] = k[0].wrapping_add(1);
                    black_box(my_tag(black_box(&k), black_box(&[]), black_box(ct)));
                }));
                theirs = theirs.min(run(&mut || {
                    k[0] = k[0].wrapping_add(1);
                    black_box(ref_tag(black_box(&k), black_box(&[]), black_box(ct)));
                }));
            }
            let cpb = |t: f64| t * 1e9 * ghz / len as f64;
            std::println!(
                "{len:5} B: avx512 {:7.1} ns {:5.2} GB/s {:5.2} c/B | RustCrypto {:7.1} ns {:5.2} GB/s {:5.2} c/B | {:.2}x",
                mine * 1e9,
                len as f64 / mine / 1e9,
                cpb(mine),
                theirs * 1e9,
                len as f64 / theirs / 1e9,
                cpb(theirs),
                theirs / mine
            );
        }
    }
}
