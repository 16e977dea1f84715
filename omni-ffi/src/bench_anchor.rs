//! The anchor of the FFI benchmarks (feature `bench-anchor`, never in a
//! shipped library): omni-core called directly, no omni-ffi layer, on the
//! benchmarks' workload. One "packet" is a 1420-byte IPv4 packet encrypted by
//! node A and decrypted by node B (both directions of the data path).
//!
//! Rust uses [`CorePair`] directly (omni-ffi/examples/ffi_overhead.rs). A JVM
//! benchmark calls [`omni_bench_core_pair_round_in_place`] once per round of
//! thousands of packets, so the crossing costs nothing per packet and the
//! anchor runs in the same process, interleaved with the paths it is compared
//! with: both see the same machine state (frequency, caches, other load),
//! which two separate processes a minute apart do not.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant as StdInstant;

use omni_core::crypto::DefaultProvider;
use omni_core::node::{Received, Sent, IN_PLACE_OFFSET};
use omni_core::storage::Heap;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, StaticSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The benchmarks' packet size.
pub const PACKET: usize = 1420;

type Core = Node<DefaultProvider, ChaCha20Rng, Heap>;

/// A 1420-byte IPv4/UDP packet from 10.0.0.1 to 10.0.0.2 (A's peer B).
pub fn ipv4_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0x5au8; len.max(20)];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p
}

/// Two omni-core nodes with a session between them.
pub struct CorePair {
    a: Core,
    b: Core,
    from_a: SocketAddr,
    /// The packet A sends (copying rounds).
    pub pkt: Vec<u8>,
    out_a: Vec<u8>,
    out_b: Vec<u8>,
    /// In-place rounds ping-pong on this buffer: A encrypts `buf[16..]` into
    /// `buf[0..]`, B decrypts it back to `buf[16..]`, A's next input.
    pub buf: Vec<u8>,
    now: Instant,
}

impl CorePair {
    /// Two nodes after a completed handshake; `None` if it did not complete.
    pub fn new() -> Option<Self> {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (ka, kb) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
        let (pa, pb) = (ka.public_key::<DefaultProvider>(), kb.public_key::<DefaultProvider>());
        let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
        let mut a: Core = Node::new(cfg(ka), ChaCha20Rng::seed_from_u64(1));
        let mut b: Core = Node::new(cfg(kb), ChaCha20Rng::seed_from_u64(2));
        let from_a = SocketAddr::from((Ipv4Addr::LOCALHOST, 1000));
        let from_b = SocketAddr::from((Ipv4Addr::LOCALHOST, 2000));
        let now = Instant::from_secs(10);
        let ia = a.add_peer(now, PeerConfig { endpoint: Some(from_b), ..PeerConfig::new(pb) }).ok()?;
        let ib = b.add_peer(now, PeerConfig::new(pa)).ok()?;
        a.add_allowed_ip(ia, "10.0.0.2/32".parse().ok()?).ok()?;
        b.add_allowed_ip(ib, "10.0.0.1/32".parse().ok()?).ok()?;
        let (mut out_a, mut out_b) = (vec![0u8; 2048], vec![0u8; 2048]);
        a.initiate(now, ia);
        let t = a.poll_transmit(now, &mut out_a).ok()??;
        let Ok(Received::Reply { len }) = b.handle_datagram(now, from_a, out_a.get(..t.len)?, &mut out_b) else {
            return None;
        };
        a.handle_datagram(now, from_b, out_b.get(..len)?, &mut out_a).ok()?;
        while a.poll_transmit(now, &mut out_a).ok()?.is_some() {}
        let pkt = ipv4_packet(PACKET);
        let mut buf = vec![0u8; 2048];
        buf[IN_PLACE_OFFSET..][..PACKET].copy_from_slice(&pkt);
        Some(CorePair { a, b, from_a, pkt, out_a, out_b, buf, now })
    }

    /// Nanoseconds per packet over `packets` packets, separate buffers
    /// (`send_ip` / `handle_datagram`); `None` if a packet did not get through.
    pub fn round(&mut self, packets: usize) -> Option<f64> {
        let start = StdInstant::now();
        for _ in 0..packets {
            let Ok(Sent::Transmit(t)) = self.a.send_ip(self.now, &self.pkt, &mut self.out_a) else { return None };
            let r = self.b.handle_datagram(self.now, self.from_a, self.out_a.get(..t.len)?, &mut self.out_b);
            if !matches!(black_box(r), Ok(Received::Packet { .. })) {
                return None;
            }
        }
        Some(per_packet(start, packets))
    }

    /// Nanoseconds per packet over `packets` packets, in place on [`buf`](Self::buf)
    /// (`send_ip_in_place` / `handle_datagram_in_place`).
    pub fn round_in_place(&mut self, packets: usize) -> Option<f64> {
        let start = StdInstant::now();
        for _ in 0..packets {
            let Ok(Sent::Transmit(t)) = self.a.send_ip_in_place(self.now, &mut self.buf, PACKET) else { return None };
            let r = self.b.handle_datagram_in_place(self.now, self.from_a, self.buf.get_mut(..t.len)?);
            if !matches!(black_box(r), Ok(Received::Packet { len: PACKET, .. })) {
                return None;
            }
        }
        Some(per_packet(start, packets))
    }

    /// Whether the in-place buffer still holds the packet (B kept up with A).
    pub fn intact(&self) -> bool {
        self.buf.get(IN_PLACE_OFFSET..IN_PLACE_OFFSET + PACKET) == Some(&self.pkt[..])
    }
}

fn per_packet(start: StdInstant, packets: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / packets.max(1) as f64
}

/// A [`CorePair`] for a foreign benchmark; NULL if the handshake failed.
/// Free with [`omni_bench_core_pair_free`].
#[no_mangle]
pub extern "C" fn omni_bench_core_pair_new() -> *mut CorePair {
    catch_unwind(CorePair::new).ok().flatten().map_or(std::ptr::null_mut(), |p| Box::into_raw(Box::new(p)))
}

/// One in-place round of `packets` packets: nanoseconds per packet, or a
/// negative number if `pair` is NULL or a packet did not get through.
///
/// # Safety
/// `pair` NULL or from [`omni_bench_core_pair_new`], not freed, not used by
/// another thread at the same time.
#[no_mangle]
pub unsafe extern "C" fn omni_bench_core_pair_round_in_place(pair: *mut CorePair, packets: u64) -> f64 {
    // SAFETY: NULL or a live, exclusively used pair per the contract.
    let Some(p) = (unsafe { pair.as_mut() }) else { return -1.0 };
    let packets = usize::try_from(packets).unwrap_or(usize::MAX);
    catch_unwind(AssertUnwindSafe(|| p.round_in_place(packets))).ok().flatten().filter(|_| p.intact()).unwrap_or(-1.0)
}

/// Frees a pair; NULL is ignored.
///
/// # Safety
/// `pair` NULL or from [`omni_bench_core_pair_new`], freed once.
#[no_mangle]
pub unsafe extern "C" fn omni_bench_core_pair_free(pair: *mut CorePair) {
    if !pair.is_null() {
        // SAFETY: from Box::into_raw in omni_bench_core_pair_new, freed once.
        drop(unsafe { Box::from_raw(pair) });
    }
}
