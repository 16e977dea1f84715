//! ChaCha20 (RFC 8439 §2.4) keystream with AVX-512.
//!
//! Kernels (all AVX-512F/VL, rotations with `vprold`):
//!
//! * [`col16`]: 16 blocks at once, one zmm register per state word (lane `i`
//!   is block `counter + i`), then a 16×16 transpose of the 32-bit words.
//!   No shuffles inside the rounds, so it has the best throughput; it does
//!   every full 1 KiB chunk and tails of 9–16 blocks. Three of the four
//!   column quarter rounds of the first round do not involve the counter,
//!   so they are computed once per call in scalar code
//!   ([`Setup::first_round`]).
//! * [`rows`]: `N` groups of 4 blocks, one block per 128-bit lane, one zmm
//!   register per state row. The diagonal rounds rotate rows `a`, `c` and
//!   `d` (not `b`), which keeps the shuffles off the critical path. Lowest
//!   latency; used for tails of 1–4 (`N` = 1) and 5–8 (`N` = 2) blocks.
//! * [`col16_rows`]: both of the above interleaved, for tails of 17–20
//!   (`N` = 1) and 21–24 (`N` = 2) blocks. A 1420-byte WireGuard packet
//!   through [`poly_key_and_xor`] is 24 blocks (block 0 for the Poly1305 key
//!   plus 23 data blocks): one `col16_rows::<2>`.
//!
//! The 32-bit block counter wraps modulo 2^32 (block `u32::MAX` is followed
//! by block 0 with the same nonce), as most RFC 8439 implementations do; the
//! AEAD never gets there (at most 256 GiB per nonce).
//!
//! Partial blocks use 32-bit-masked loads/stores (AVX-512F) plus at most 3
//! single bytes, so no byte outside `buf` is read or written.

use core::arch::x86_64::*;

/// "expand 32-byte k", state words 0..=3.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Bytes per full `col16` chunk.
const CHUNK: usize = 16 * 64;

/// Scalar RFC 8439 §2.1 quarter round on state words `a`, `b`, `c`, `d`.
#[inline(always)]
fn quarter_round(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// The key and nonce of one call.
struct Setup<'a> {
    key: &'a [u8; 32],
    nonce: &'a [u8; 12],
}

impl Setup<'_> {
    /// Initial state word `i` (RFC 8439 §2.3), with 0 for the counter (12).
    #[inline(always)]
    fn word(&self, i: usize) -> u32 {
        match i {
            0..=3 => SIGMA[i],
            4..=11 => u32::from_le_bytes(self.key.as_chunks::<4>().0[i - 4]),
            13..=15 => u32::from_le_bytes(self.nonce.as_chunks::<4>().0[i - 13]),
            _ => 0,
        }
    }

    /// The state after the first column round for columns 1–3, which do not
    /// involve the counter; word 0 holds `s[0] + s[4]`, the first step of
    /// column 0; words 4, 8, 12 are unused.
    #[inline(always)]
    fn first_round(&self) -> [u32; 16] {
        let mut r: [u32; 16] = core::array::from_fn(|i| self.word(i));
        quarter_round(&mut r, 1, 5, 9, 13);
        quarter_round(&mut r, 2, 6, 10, 14);
        quarter_round(&mut r, 3, 7, 11, 15);
        r[0] = self.word(0).wrapping_add(self.word(4));
        r
    }

    /// State row `i` (0..4) broadcast to all four 128-bit lanes; row 3 holds
    /// `ctr` in word 12.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    fn row(&self, i: usize, ctr: u32) -> __m512i {
        let w = |j: usize| if 4 * i + j == 12 { ctr as i32 } else { self.word(4 * i + j) as i32 };
        _mm512_broadcast_i32x4(_mm_setr_epi32(w(0), w(1), w(2), w(3)))
    }
}

/// Broadcasts a state word to all 16 lanes.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn splat(v: u32) -> __m512i {
    _mm512_set1_epi32(v as i32)
}

/// Four interleaved quarter rounds on state-word vectors `$x[..]`; each
/// `[a, b, c, d]` names the word indices of one quarter round.
macro_rules! quarter_rounds {
    ($x:ident; $([$a:literal, $b:literal, $c:literal, $d:literal]),+) => {
        $( $x[$a] = _mm512_add_epi32($x[$a], $x[$b]); )+
        $( $x[$d] = _mm512_rol_epi32::<16>(_mm512_xor_si512($x[$d], $x[$a])); )+
        $( $x[$c] = _mm512_add_epi32($x[$c], $x[$d]); )+
        $( $x[$b] = _mm512_rol_epi32::<12>(_mm512_xor_si512($x[$b], $x[$c])); )+
        $( $x[$a] = _mm512_add_epi32($x[$a], $x[$b]); )+
        $( $x[$d] = _mm512_rol_epi32::<8>(_mm512_xor_si512($x[$d], $x[$a])); )+
        $( $x[$c] = _mm512_add_epi32($x[$c], $x[$d]); )+
        $( $x[$b] = _mm512_rol_epi32::<7>(_mm512_xor_si512($x[$b], $x[$c])); )+
    };
}

macro_rules! column_round {
    ($x:ident) => {
        quarter_rounds!($x; [0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15])
    };
}

macro_rules! diagonal_round {
    ($x:ident) => {
        quarter_rounds!($x; [0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14])
    };
}

/// Counter vector of a `col16` batch: lane `i` is `ctr + i` (wrapping).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn col16_counters(ctr: u32) -> __m512i {
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_add_epi32(splat(ctr), iota)
}

/// State of 16 blocks (counters `ctrs`) after the first double round.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn col16_start(st: &Setup, r: &[u32; 16], ctrs: __m512i) -> [__m512i; 16] {
    let r = |i: usize| splat(r[i]);
    let mut x = [
        r(0),
        r(1),
        r(2),
        r(3),
        splat(st.word(4)),
        r(5),
        r(6),
        r(7),
        splat(st.word(8)),
        r(9),
        r(10),
        r(11),
        ctrs,
        r(13),
        r(14),
        r(15),
    ];
    // Column 0 of the first round, after its first step (in `r[0]`).
    x[12] = _mm512_rol_epi32::<16>(_mm512_xor_si512(x[12], x[0]));
    x[8] = _mm512_add_epi32(x[8], x[12]);
    x[4] = _mm512_rol_epi32::<12>(_mm512_xor_si512(x[4], x[8]));
    x[0] = _mm512_add_epi32(x[0], x[4]);
    x[12] = _mm512_rol_epi32::<8>(_mm512_xor_si512(x[12], x[0]));
    x[8] = _mm512_add_epi32(x[8], x[12]);
    x[4] = _mm512_rol_epi32::<7>(_mm512_xor_si512(x[4], x[8]));
    diagonal_round!(x);
    x
}

/// Adds the input state to `x` and transposes: element `i` of the result is
/// the keystream block of lane `i`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn col16_finish(st: &Setup, ctrs: __m512i, mut x: [__m512i; 16]) -> [__m512i; 16] {
    for (i, xi) in x.iter_mut().enumerate() {
        let init = if i == 12 { ctrs } else { splat(st.word(i)) };
        *xi = _mm512_add_epi32(*xi, init);
    }
    // 16×16 transpose of 32-bit words. After the two unpack stages, `q[k][r]`
    // holds, in 128-bit lane L, words 4r..4r+4 of block 4L + k.
    let mut q = [[_mm512_setzero_si512(); 4]; 4];
    for r in 0..4 {
        let (x0, x1, x2, x3) = (x[4 * r], x[4 * r + 1], x[4 * r + 2], x[4 * r + 3]);
        let t0 = _mm512_unpacklo_epi32(x0, x1);
        let t1 = _mm512_unpackhi_epi32(x0, x1);
        let t2 = _mm512_unpacklo_epi32(x2, x3);
        let t3 = _mm512_unpackhi_epi32(x2, x3);
        q[0][r] = _mm512_unpacklo_epi64(t0, t2);
        q[1][r] = _mm512_unpackhi_epi64(t0, t2);
        q[2][r] = _mm512_unpacklo_epi64(t1, t3);
        q[3][r] = _mm512_unpackhi_epi64(t1, t3);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for (k, qk) in q.iter().enumerate() {
        let blocks = transpose_lanes(qk[0], qk[1], qk[2], qk[3]);
        for (lane, b) in blocks.into_iter().enumerate() {
            out[4 * lane + k] = b;
        }
    }
    out
}

/// Keystream blocks `ctr .. ctr + 16` (wrapping); element `i` = block `ctr + i`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn col16(st: &Setup, r: &[u32; 16], ctr: u32) -> [__m512i; 16] {
    let ctrs = col16_counters(ctr);
    let mut x = col16_start(st, r, ctrs);
    for _ in 1..10 {
        column_round!(x);
        diagonal_round!(x);
    }
    col16_finish(st, ctrs, x)
}

/// Transposes 4×4 128-bit lanes: output `i` is lane `i` of `w`, `x`, `y`, `z`
/// (in that order), i.e. one 64-byte block when the inputs are state rows.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn transpose_lanes(w: __m512i, x: __m512i, y: __m512i, z: __m512i) -> [__m512i; 4] {
    let wx01 = _mm512_shuffle_i32x4::<0x44>(w, x); // w0 w1 x0 x1
    let wx23 = _mm512_shuffle_i32x4::<0xEE>(w, x); // w2 w3 x2 x3
    let yz01 = _mm512_shuffle_i32x4::<0x44>(y, z);
    let yz23 = _mm512_shuffle_i32x4::<0xEE>(y, z);
    [
        _mm512_shuffle_i32x4::<0x88>(wx01, yz01), // w0 x0 y0 z0
        _mm512_shuffle_i32x4::<0xDD>(wx01, yz01), // w1 x1 y1 z1
        _mm512_shuffle_i32x4::<0x88>(wx23, yz23),
        _mm512_shuffle_i32x4::<0xDD>(wx23, yz23),
    ]
}

/// Row-layout state of `N` groups of 4 blocks: `[a, b, c, d]`, each `[_; N]`.
type Rows<const N: usize> = [[__m512i; N]; 4];

/// Initial row-layout state for blocks `ctr .. ctr + 4N`; block `ctr + 4g + i`
/// is 128-bit lane `i` of group `g`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_init<const N: usize>(st: &Setup, ctr: u32) -> Rows<N> {
    let d = st.row(3, ctr);
    let mut ds = [d; N];
    for (g, dg) in ds.iter_mut().enumerate() {
        let c = 4 * g as i32;
        let inc = _mm512_setr_epi32(c, 0, 0, 0, c + 1, 0, 0, 0, c + 2, 0, 0, 0, c + 3, 0, 0, 0);
        *dg = _mm512_add_epi32(d, inc);
    }
    [[st.row(0, 0); N], [st.row(1, 0); N], [st.row(2, 0); N], ds]
}

/// One round on all groups: quarter rounds on the four columns (the caller
/// arranges the diagonals).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_quarter_round<const N: usize>(s: &mut Rows<N>) {
    // Group by group: measurably faster than interleaving the groups step by
    // step (the out-of-order core overlaps them anyway).
    let [a, b, c, d] = s;
    for g in 0..N {
        a[g] = _mm512_add_epi32(a[g], b[g]);
        d[g] = _mm512_rol_epi32::<16>(_mm512_xor_si512(d[g], a[g]));
        c[g] = _mm512_add_epi32(c[g], d[g]);
        b[g] = _mm512_rol_epi32::<12>(_mm512_xor_si512(b[g], c[g]));
        a[g] = _mm512_add_epi32(a[g], b[g]);
        d[g] = _mm512_rol_epi32::<8>(_mm512_xor_si512(d[g], a[g]));
        c[g] = _mm512_add_epi32(c[g], d[g]);
        b[g] = _mm512_rol_epi32::<7>(_mm512_xor_si512(b[g], c[g]));
    }
}

/// Moves rows `a`, `c`, `d` (not `b`, which is the last one computed) so
/// that column `j` holds the diagonal `(a[j-1], b[j], c[j+1], d[j+2])`,
/// i.e. quarter round `(j+3)%4, 4+j, 8+(j+1)%4, 12+(j+2)%4` of RFC 8439.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_diagonalize<const N: usize>(s: &mut Rows<N>) {
    let [a, _, c, d] = s;
    for ((a, c), d) in a.iter_mut().zip(c.iter_mut()).zip(d.iter_mut()) {
        *a = _mm512_shuffle_epi32::<0x93>(*a); // a3 a0 a1 a2
        *c = _mm512_shuffle_epi32::<0x39>(*c); // c1 c2 c3 c0
        *d = _mm512_shuffle_epi32::<0x4E>(*d); // d2 d3 d0 d1
    }
}

/// Undoes [`rows_diagonalize`].
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_undiagonalize<const N: usize>(s: &mut Rows<N>) {
    let [a, _, c, d] = s;
    for ((a, c), d) in a.iter_mut().zip(c.iter_mut()).zip(d.iter_mut()) {
        *a = _mm512_shuffle_epi32::<0x39>(*a);
        *c = _mm512_shuffle_epi32::<0x93>(*c);
        *d = _mm512_shuffle_epi32::<0x4E>(*d);
    }
}

/// One double round on all groups.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_double_round<const N: usize>(s: &mut Rows<N>) {
    rows_quarter_round(s);
    rows_diagonalize(s);
    rows_quarter_round(s);
    rows_undiagonalize(s);
}

/// Adds the input state and returns the blocks: `[g][i]` = block `ctr + 4g + i`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows_finish<const N: usize>(init: &Rows<N>, s: &Rows<N>) -> [[__m512i; 4]; N] {
    let mut out = [[_mm512_setzero_si512(); 4]; N];
    for (g, o) in out.iter_mut().enumerate() {
        let add = |r: usize| _mm512_add_epi32(s[r][g], init[r][g]);
        *o = transpose_lanes(add(0), add(1), add(2), add(3));
    }
    out
}

/// Keystream blocks `ctr .. ctr + 4N` (wrapping): `[g][i]` = block `ctr + 4g + i`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn rows<const N: usize>(st: &Setup, ctr: u32) -> [[__m512i; 4]; N] {
    let init = rows_init::<N>(st, ctr);
    let mut s = init;
    for _ in 0..10 {
        rows_double_round(&mut s);
    }
    rows_finish(&init, &s)
}

/// Keystream blocks `ctr .. ctr + 16 + 4N`: `col16` and `rows::<N>`
/// interleaved (independent work for the out-of-order core).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn col16_rows<const N: usize>(st: &Setup, r: &[u32; 16], ctr: u32) -> ([__m512i; 16], [[__m512i; 4]; N]) {
    let ctrs = col16_counters(ctr);
    let init = rows_init::<N>(st, ctr.wrapping_add(16));
    let mut x = col16_start(st, r, ctrs);
    let mut s = init;
    rows_double_round(&mut s);
    for _ in 1..10 {
        column_round!(x);
        rows_quarter_round(&mut s);
        rows_diagonalize(&mut s);
        diagonal_round!(x);
        rows_quarter_round(&mut s);
        rows_undiagonalize(&mut s);
    }
    (col16_finish(st, ctrs, x), rows_finish(&init, &s))
}

/// XORs one full keystream block into `dst`.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn xor64(ks: __m512i, dst: &mut [u8; 64]) {
    let p = dst.as_mut_ptr();
    // SAFETY: `p` points to 64 writable bytes (`dst`); unaligned access is
    // allowed (vmovdqu32).
    unsafe {
        let v = _mm512_loadu_si512(p.cast());
        _mm512_storeu_si512(p.cast(), _mm512_xor_si512(v, ks));
    }
}

/// XORs the first `dst.len()` bytes of a keystream block into `dst`, which
/// is shorter than a block.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn xor_partial(ks: __m512i, dst: &mut [u8]) {
    let len = dst.len() % 64;
    let words = len / 4;
    let mask: __mmask16 = ((1u32 << words) - 1) as u16;
    let p = dst.as_mut_ptr();
    // SAFETY: only the `words` unmasked 32-bit lanes are accessed (masked-off
    // lanes are neither read nor written and cannot fault), and
    // `4 * words <= dst.len()`.
    unsafe {
        let v = _mm512_maskz_loadu_epi32(mask, p.cast());
        _mm512_mask_storeu_epi32(p.cast(), mask, _mm512_xor_si512(v, ks));
    }
    if !len.is_multiple_of(4) {
        let mut tmp = [0u8; 64];
        // SAFETY: `tmp` is 64 writable bytes.
        unsafe { _mm512_storeu_si512(tmp.as_mut_ptr().cast(), ks) };
        for (d, k) in dst[words * 4..].iter_mut().zip(&tmp[words * 4..]) {
            *d ^= *k;
        }
    }
}

/// Where keystream blocks go: the first one optionally into `key` (its first
/// 32 bytes), the rest XORed into `buf` in order.
struct Sink<'a> {
    key: Option<&'a mut [u8; 32]>,
    buf: &'a mut [u8],
}

impl Sink<'_> {
    /// Keystream blocks still wanted.
    #[inline(always)]
    fn blocks(&self) -> usize {
        usize::from(self.key.is_some()) + self.buf.len().div_ceil(64)
    }

    /// Consumes blocks from `ks` (those beyond what is wanted are ignored).
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    fn put(&mut self, ks: &[__m512i]) {
        let mut ks = ks;
        if let Some(key) = self.key.take() {
            let Some((k0, rest)) = ks.split_first() else { return };
            // SAFETY: `key` is 32 writable bytes.
            unsafe { _mm256_storeu_si256(key.as_mut_ptr().cast(), _mm512_castsi512_si256(*k0)) };
            ks = rest;
        }
        for &k in ks {
            let buf = core::mem::take(&mut self.buf);
            if buf.len() < 64 {
                xor_partial(k, buf);
                return;
            } else if let Some((block, rest)) = buf.split_first_chunk_mut::<64>() {
                xor64(k, block);
                self.buf = rest;
            }
        }
    }
}

/// Shared driver: keystream from block `ctr` on, the first block into `key`
/// if given, the rest XORed into `buf`. Picks the kernel by the number of
/// blocks left; each kernel has one call site, so all are inlined.
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn run(st: &Setup, mut ctr: u32, key: Option<&mut [u8; 32]>, buf: &mut [u8]) {
    let mut sink = Sink { key, buf };
    let mut first_round = None;
    loop {
        let n = sink.blocks();
        match n {
            0 => return,
            1..=4 => return sink.put(&rows::<1>(st, ctr)[0]),
            5..=8 => return sink.put(rows::<2>(st, ctr).as_flattened()),
            17..=20 => {
                let r = first_round.get_or_insert_with(|| st.first_round());
                let (x, y) = col16_rows::<1>(st, r, ctr);
                sink.put(&x);
                return sink.put(y.as_flattened());
            }
            21..=24 => {
                let r = first_round.get_or_insert_with(|| st.first_round());
                let (x, y) = col16_rows::<2>(st, r, ctr);
                sink.put(&x);
                return sink.put(y.as_flattened());
            }
            // 9–16 blocks, or more than 24: sixteen now, the rest next time.
            _ => {
                let r = first_round.get_or_insert_with(|| st.first_round());
                let ks = col16(st, r, ctr);
                ctr = ctr.wrapping_add(16);
                if sink.key.is_none() && sink.buf.len() >= CHUNK {
                    let (chunk, rest) = core::mem::take(&mut sink.buf).split_at_mut(CHUNK);
                    for (k, block) in ks.into_iter().zip(chunk.as_chunks_mut::<64>().0) {
                        xor64(k, block);
                    }
                    sink.buf = rest;
                } else {
                    sink.put(&ks);
                }
            }
        }
    }
}

/// XORs the keystream from block `counter` on into `buf`.
///
/// The block counter wraps modulo 2^32 (after block `u32::MAX` comes block 0
/// with the same nonce). Any length is accepted.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) unsafe fn xor_keystream(key: &[u8; 32], nonce: &[u8; 12], counter: u32, buf: &mut [u8]) {
    run(&Setup { key, nonce }, counter, None, buf);
}

/// Returns the first 32 bytes of block 0 (the AEAD's one-time Poly1305 key)
/// and XORs the keystream from block 1 on into `buf`, in one pass.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) unsafe fn poly_key_and_xor(key: &[u8; 32], nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 32] {
    let mut otk = [0u8; 32];
    run(&Setup { key, nonce }, 0, Some(&mut otk), buf);
    otk
}

/// The first 32 bytes of block 0 (the AEAD's one-time Poly1305 key).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) unsafe fn poly_key(key: &[u8; 32], nonce: &[u8; 12]) -> [u8; 32] {
    let mut otk = [0u8; 32];
    run(&Setup { key, nonce }, 0, Some(&mut otk), &mut []);
    otk
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use std::vec::Vec;

    use crate::tests::require_avx512;

    fn xor_ks(key: &[u8; 32], nonce: &[u8; 12], counter: u32, buf: &mut [u8]) {
        require_avx512();
        // SAFETY: the CPU features were checked just above.
        unsafe { xor_keystream(key, nonce, counter, buf) }
    }

    fn pk_xor(key: &[u8; 32], nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 32] {
        require_avx512();
        // SAFETY: the CPU features were checked just above.
        unsafe { poly_key_and_xor(key, nonce, buf) }
    }

    fn pk(key: &[u8; 32], nonce: &[u8; 12]) -> [u8; 32] {
        require_avx512();
        // SAFETY: the CPU features were checked just above.
        unsafe { poly_key(key, nonce) }
    }

    /// Scalar RFC 8439 §2.3 block function (reference for the wrap tests).
    fn ref_block(key: &[u8; 32], nonce: &[u8; 12], counter: u32) -> [u8; 64] {
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let mut s = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574, 0, 0, 0, 0, 0, 0, 0, 0, counter, 0, 0, 0];
        for i in 0..8 {
            s[4 + i] = word(&key[4 * i..]);
        }
        for i in 0..3 {
            s[13 + i] = word(&nonce[4 * i..]);
        }
        let mut x = s;
        for _ in 0..10 {
            quarter_round(&mut x, 0, 4, 8, 12);
            quarter_round(&mut x, 1, 5, 9, 13);
            quarter_round(&mut x, 2, 6, 10, 14);
            quarter_round(&mut x, 3, 7, 11, 15);
            quarter_round(&mut x, 0, 5, 10, 15);
            quarter_round(&mut x, 1, 6, 11, 12);
            quarter_round(&mut x, 2, 7, 8, 13);
            quarter_round(&mut x, 3, 4, 9, 14);
        }
        let mut out = [0u8; 64];
        for (i, o) in out.chunks_exact_mut(4).enumerate() {
            o.copy_from_slice(&x[i].wrapping_add(s[i]).to_le_bytes());
        }
        out
    }

    /// Scalar reference; the counter wraps modulo 2^32.
    fn ref_xor(key: &[u8; 32], nonce: &[u8; 12], counter: u32, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(64).enumerate() {
            let ks = ref_block(key, nonce, counter.wrapping_add(i as u32));
            for (b, k) in chunk.iter_mut().zip(ks) {
                *b ^= k;
            }
        }
    }

    /// RustCrypto `chacha20` 0.9 (which refuses to use block `u32::MAX`).
    fn rc_xor(key: &[u8; 32], nonce: &[u8; 12], counter: u32, buf: &mut [u8]) {
        let mut c = chacha20::ChaCha20::new(key.into(), nonce.into());
        c.seek(64 * u64::from(counter));
        c.apply_keystream(buf);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2).map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    fn seq_key(start: u8) -> [u8; 32] {
        core::array::from_fn(|i| start + i as u8)
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(0x5eed_c4a4_2020)
    }

    fn random_key_nonce(r: &mut ChaCha20Rng) -> ([u8; 32], [u8; 12]) {
        let mut k = [0u8; 32];
        let mut n = [0u8; 12];
        r.fill_bytes(&mut k);
        r.fill_bytes(&mut n);
        (k, n)
    }

    fn random_bytes(r: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
        let mut v = std::vec![0u8; len];
        r.fill_bytes(&mut v);
        v
    }

    #[test]
    fn rfc8439_2_3_2_block_function() {
        let key = seq_key(0);
        let nonce: [u8; 12] = hex("000000090000004a00000000").try_into().unwrap();
        let expected = hex("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
             d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e");
        let mut block = [0u8; 64];
        xor_ks(&key, &nonce, 1, &mut block);
        assert_eq!(block[..], expected[..]);
        assert_eq!(ref_block(&key, &nonce, 1)[..], expected[..]);
    }

    const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";

    #[test]
    fn rfc8439_2_4_2_encryption() {
        let key = seq_key(0);
        let nonce: [u8; 12] = hex("000000000000004a00000000").try_into().unwrap();
        let expected = hex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b\
             f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8\
             07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736\
             5af90bbf74a35be6b40b8eedf2785e42874d");
        assert_eq!(SUNSCREEN.len(), 114);
        let mut buf = SUNSCREEN.to_vec();
        xor_ks(&key, &nonce, 1, &mut buf);
        assert_eq!(buf, expected);
        // Same via poly_key_and_xor (data starts at block 1).
        let mut buf = SUNSCREEN.to_vec();
        pk_xor(&key, &nonce, &mut buf);
        assert_eq!(buf, expected);
        xor_ks(&key, &nonce, 1, &mut buf);
        assert_eq!(buf, SUNSCREEN);
    }

    #[test]
    fn rfc8439_2_6_2_poly1305_key_generation() {
        let key = seq_key(0x80);
        let nonce: [u8; 12] = hex("000000000001020304050607").try_into().unwrap();
        let expected = hex("8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646");
        assert_eq!(pk(&key, &nonce)[..], expected[..]);
        assert_eq!(pk_xor(&key, &nonce, &mut [])[..], expected[..]);
        assert_eq!(pk_xor(&key, &nonce, &mut [0u8; 1420])[..], expected[..]);
    }

    /// RustCrypto's keystream: `len` bytes from block `ctr` on.
    fn rc_keystream(key: &[u8; 32], nonce: &[u8; 12], ctr: u32, len: usize) -> Vec<u8> {
        let mut ks = std::vec![0u8; len];
        rc_xor(key, nonce, ctr, &mut ks);
        ks
    }

    /// For each length, checks that `f` turns `data[..len]` into
    /// `data[..len] ^ ks[..len]`.
    fn check_lengths(ks: &[u8], data: &[u8], lens: impl IntoIterator<Item = usize>, f: impl Fn(&mut [u8]), what: &str) {
        for len in lens {
            let mut buf = data[..len].to_vec();
            f(&mut buf);
            let ok = buf.iter().zip(&data[..len]).zip(&ks[..len]).all(|((b, d), k)| *b == d ^ k);
            assert!(ok, "{what}: mismatch at length {len}");
        }
    }

    #[test]
    fn matches_rustcrypto_all_lengths_to_2100() {
        let mut r = rng();
        for ctr in [0, 1, 7] {
            for _ in 0..2 {
                let (key, nonce) = random_key_nonce(&mut r);
                let ks = rc_keystream(&key, &nonce, ctr, 2100);
                let data = random_bytes(&mut r, 2100);
                check_lengths(&ks, &data, 0..=2100, |b| xor_ks(&key, &nonce, ctr, b), "xor_keystream");
            }
        }
    }

    /// Lengths near multiples of 16 blocks (1 KiB) up to 70000 bytes.
    #[test]
    fn matches_rustcrypto_around_chunk_multiples_to_70000() {
        let mut lens = std::vec![70000];
        for m in 1..=68usize {
            let deltas: &[isize] = if m <= 4 || m % 9 == 0 || m >= 67 {
                &[-129, -65, -64, -63, -1, 0, 1, 63, 64, 65, 129, 500]
            } else {
                &[-65, -1, 0, 1, 65]
            };
            lens.extend(deltas.iter().map(|&d| (1024 * m).wrapping_add_signed(d)).filter(|&l| l <= 70000));
        }
        let mut r = rng();
        for ctr in [0, 1, 7] {
            let (key, nonce) = random_key_nonce(&mut r);
            let ks = rc_keystream(&key, &nonce, ctr, 70000);
            let data = random_bytes(&mut r, 70000);
            check_lengths(&ks, &data, lens.iter().copied(), |b| xor_ks(&key, &nonce, ctr, b), "xor_keystream");
        }
    }

    #[test]
    fn reference_matches_rustcrypto() {
        let mut r = rng();
        let (key, nonce) = random_key_nonce(&mut r);
        for (ctr, len) in [(0, 1500), (7, 3000), (u32::MAX - 3, 192)] {
            let mut ks = std::vec![0u8; len];
            ref_xor(&key, &nonce, ctr, &mut ks);
            assert_eq!(ks, rc_keystream(&key, &nonce, ctr, len));
        }
    }

    /// The counter wraps modulo 2^32 (documented behaviour), checked against
    /// the scalar reference (RustCrypto refuses to use block `u32::MAX`).
    #[test]
    fn counter_wraps() {
        let mut r = rng();
        for ctr in [u32::MAX - 3, u32::MAX - 20, u32::MAX] {
            let (key, nonce) = random_key_nonce(&mut r);
            let mut ks = std::vec![0u8; 5000];
            ref_xor(&key, &nonce, ctr, &mut ks);
            let data = random_bytes(&mut r, 5000);
            check_lengths(&ks, &data, (0..=2100).chain([4096, 5000]), |b| xor_ks(&key, &nonce, ctr, b), "wrap");
            // Where RustCrypto agrees to go, it agrees.
            let allowed = 64 * (u32::MAX - ctr) as usize;
            assert_eq!(ks[..allowed], rc_keystream(&key, &nonce, ctr, allowed)[..]);
            // Block u32::MAX is followed by block 0.
            let mut wrapped = [0u8; 128];
            xor_ks(&key, &nonce, u32::MAX, &mut wrapped);
            assert_eq!(wrapped[..64], ref_block(&key, &nonce, u32::MAX)[..]);
            assert_eq!(wrapped[64..], rc_keystream(&key, &nonce, 0, 64)[..]);
        }
    }

    /// Sub-slices at every offset 0..64 of a larger buffer: correct output
    /// and the bytes around `buf` untouched.
    #[test]
    fn unaligned_and_in_bounds() {
        let mut r = rng();
        let (key, nonce) = random_key_nonce(&mut r);
        const MAX: usize = 4100;
        let ks0 = rc_keystream(&key, &nonce, 0, MAX);
        let ks1 = rc_keystream(&key, &nonce, 1, MAX);
        let orig = random_bytes(&mut r, MAX + 128);
        let lens = (0..=130).chain([191, 192, 193, 255, 256, 257, 1023, 1024, 1025, 1420, 2100, MAX]);
        for len in lens {
            for off in 0..64 {
                for (ks, poly) in [(&ks0, false), (&ks1, true)] {
                    let mut v = orig[..off + len + 64].to_vec();
                    if poly {
                        pk_xor(&key, &nonce, &mut v[off..off + len]);
                    } else {
                        xor_ks(&key, &nonce, 0, &mut v[off..off + len]);
                    }
                    let inside = (0..len).all(|i| v[off + i] == orig[off + i] ^ ks[i]);
                    assert!(inside, "poly {poly}, offset {off}, len {len}: wrong output");
                    let outside = v[..off] == orig[..off] && v[off + len..] == orig[off + len..off + len + 64];
                    assert!(outside, "poly {poly}, offset {off}, len {len}: bytes outside buf changed");
                }
            }
        }
    }

    #[test]
    fn poly_key_and_xor_is_poly_key_plus_xor_from_1() {
        let mut r = rng();
        for _ in 0..3 {
            let (key, nonce) = random_key_nonce(&mut r);
            let otk = pk(&key, &nonce);
            assert_eq!(otk[..], rc_keystream(&key, &nonce, 0, 32)[..]);
            let data = random_bytes(&mut r, 2100);
            for len in 0..=2100 {
                let mut a = data[..len].to_vec();
                let k = pk_xor(&key, &nonce, &mut a);
                let mut b = data[..len].to_vec();
                xor_ks(&key, &nonce, 1, &mut b);
                assert_eq!(k, otk, "len {len}");
                assert!(a == b, "len {len}");
            }
        }
    }

    /// Throughput (GB/s, best of eight 0.5 s runs, taken in turns) of
    /// `poly_key_and_xor`, of `xor_keystream` alone, and of RustCrypto
    /// `chacha20` 0.9 (its AVX2 backend) doing the same work as
    /// `poly_key_and_xor`. Run with
    /// `cargo test --release -p omni-aead -- --ignored --nocapture bench_chacha20`.
    #[test]
    #[ignore]
    fn bench_chacha20() {
        use std::hint::black_box;
        use std::time::{Duration, Instant};
        require_avx512();
        let key = seq_key(1);
        let nonce = [7u8; 12];
        let ours = |b: &mut [u8]| {
            black_box(pk_xor(black_box(&key), black_box(&nonce), b));
        };
        let xor = |b: &mut [u8]| xor_ks(black_box(&key), black_box(&nonce), 1, b);
        let rc = |b: &mut [u8]| {
            let mut c = chacha20::ChaCha20::new((&key).into(), (&nonce).into());
            let mut otk = [0u8; 32];
            c.apply_keystream(&mut otk);
            c.seek(64u64);
            c.apply_keystream(b);
            black_box(otk);
        };
        type Work<'a> = &'a dyn Fn(&mut [u8]);
        let fns: [Work; 3] = [&ours, &xor, &rc];
        for len in [64, 256, 1420, 8192] {
            let mut buf = std::vec![0x5au8; len];
            let mut best = [0f64; 3];
            for _ in 0..8 {
                for (f, best) in fns.iter().zip(&mut best) {
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < Duration::from_millis(500) {
                        for _ in 0..64 {
                            f(black_box(&mut buf));
                        }
                        n += 64;
                    }
                    *best = best.max((n * len as u64) as f64 / start.elapsed().as_secs_f64() / 1e9);
                }
            }
            let [ours, xor, rc] = best;
            std::println!(
                "{len:>5} B: poly_key_and_xor {ours:5.2} GB/s, xor_keystream {xor:5.2} GB/s, RustCrypto {rc:5.2} GB/s"
            );
        }
    }
}
