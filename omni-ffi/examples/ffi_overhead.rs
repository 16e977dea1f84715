//! Per-packet cost of the C API versus calling omni-core directly, at 1420 B.
//!
//! One "packet" is an encrypt on tunnel A plus a decrypt on tunnel B (both
//! directions of the data path). The direct column drives two omni-core
//! `Node`s; the FFI column loads `libomni_ffi.so` with dlopen and calls the
//! exported C functions through function pointers, exactly as a C host does
//! (null checks, catch_unwind, the tunnel mutex, result structs). Rounds
//! alternate between the two and the best round of each is reported.
//!
//! Usage: cargo run --release -p omni-ffi [--features ring] --example ffi_overhead [-- path/to/libomni_ffi.so]

use std::ffi::{c_char, c_int, CString};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant as StdInstant;

use omni_core::crypto::DefaultProvider;
use omni_core::node::{Received, Sent};
use omni_core::storage::Heap;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, StaticSecret};
use omni_ffi::capi::{OmniEndpoint, OmniOutput, OmniTunnel};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const PACKET: usize = 1420;
const PACKETS_PER_ROUND: usize = 20_000;
const ROUNDS: usize = 7;

fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = vec![0x5au8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

type Core = Node<DefaultProvider, ChaCha20Rng, Heap>;

struct Direct {
    a: Core,
    b: Core,
    from_a: SocketAddr,
    pkt: Vec<u8>,
    out_a: Vec<u8>,
    out_b: Vec<u8>,
    now: Instant,
}

impl Direct {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (ka, kb) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
        let (pa, pb) = (ka.public_key::<DefaultProvider>(), kb.public_key::<DefaultProvider>());
        let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
        let mut a: Core = Node::new(cfg(ka), ChaCha20Rng::seed_from_u64(1));
        let mut b: Core = Node::new(cfg(kb), ChaCha20Rng::seed_from_u64(2));
        let (from_a, from_b): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1000".parse().unwrap(), "127.0.0.1:2000".parse().unwrap());
        let now = Instant::from_secs(10);
        let ia = a.add_peer(now, PeerConfig { endpoint: Some(from_b), ..PeerConfig::new(pb) }).unwrap();
        let ib = b.add_peer(now, PeerConfig::new(pa)).unwrap();
        a.add_allowed_ip(ia, "10.0.0.2/32".parse().unwrap()).unwrap();
        b.add_allowed_ip(ib, "10.0.0.1/32".parse().unwrap()).unwrap();
        let (mut out_a, mut out_b) = (vec![0u8; 2048], vec![0u8; 2048]);
        a.initiate(now, ia);
        let t = a.poll_transmit(now, &mut out_a).unwrap().unwrap();
        let Ok(Received::Reply { len }) = b.handle_datagram(now, from_a, &out_a[..t.len], &mut out_b) else { panic!() };
        a.handle_datagram(now, from_b, &out_b[..len], &mut out_a).unwrap();
        while a.poll_transmit(now, &mut out_a).unwrap().is_some() {}
        Direct { a, b, from_a, pkt: ipv4([10, 0, 0, 1], [10, 0, 0, 2], PACKET), out_a, out_b, now }
    }

    fn round(&mut self) -> f64 {
        let start = StdInstant::now();
        for _ in 0..PACKETS_PER_ROUND {
            let Ok(Sent::Transmit(t)) = self.a.send_ip(self.now, &self.pkt, &mut self.out_a) else { panic!() };
            let r = self.b.handle_datagram(self.now, self.from_a, &self.out_a[..t.len], &mut self.out_b);
            assert!(matches!(black_box(r), Ok(Received::Packet { .. })));
        }
        start.elapsed().as_nanos() as f64 / PACKETS_PER_ROUND as f64
    }
}

type NewFn = unsafe extern "C" fn(*const c_char, *mut *mut OmniTunnel, *mut c_char, usize) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut OmniTunnel);
type KeyFn = unsafe extern "C" fn(*mut c_char, usize, *mut usize) -> c_int;
type PubFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize, *mut usize) -> c_int;
type SendFn = unsafe extern "C" fn(*const OmniTunnel, u64, *const u8, usize, *mut u8, usize, *mut OmniOutput) -> c_int;
type RecvFn = unsafe extern "C" fn(
    *const OmniTunnel,
    u64,
    *const OmniEndpoint,
    *const u8,
    usize,
    *mut u8,
    usize,
    *mut OmniOutput,
) -> c_int;
type PollFn = unsafe extern "C" fn(*const OmniTunnel, u64, *mut u8, usize, *mut OmniOutput) -> c_int;

struct Ffi {
    _lib: libloading::Library,
    free: FreeFn,
    send: SendFn,
    recv: RecvFn,
    a: *mut OmniTunnel,
    b: *mut OmniTunnel,
    from_a: OmniEndpoint,
    pkt: Vec<u8>,
    out_a: Vec<u8>,
    out_b: Vec<u8>,
}

fn key_string(buf: &[c_char]) -> String {
    buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect()
}

impl Ffi {
    fn new(path: &str) -> Self {
        // SAFETY: loading our own library; the signatures match omni.h.
        unsafe {
            let lib = libloading::Library::new(path).unwrap_or_else(|e| panic!("dlopen {path}: {e}"));
            let new: NewFn = *lib.get(b"omni_tunnel_new_from_wg_quick").unwrap();
            let free: FreeFn = *lib.get(b"omni_tunnel_free").unwrap();
            let genkey: KeyFn = *lib.get(b"omni_generate_private_key").unwrap();
            let pubkey: PubFn = *lib.get(b"omni_public_key_from_private").unwrap();
            let send: SendFn = *lib.get(b"omni_tunnel_send_ip").unwrap();
            let recv: RecvFn = *lib.get(b"omni_tunnel_handle_datagram").unwrap();
            let poll: PollFn = *lib.get(b"omni_tunnel_poll_transmit").unwrap();
            let mut k = [[0 as c_char; 45]; 4];
            for i in 0..2 {
                assert_eq!(genkey(k[i].as_mut_ptr(), 45, std::ptr::null_mut()), 0);
                let (privs, pubs) = k.split_at_mut(2);
                assert_eq!(pubkey(privs[i].as_ptr(), pubs[i].as_mut_ptr(), 45, std::ptr::null_mut()), 0);
            }
            let [ka, kb, pa, pb] = k.map(|b| key_string(&b));
            let cfg = |k: &str, p: &str, allowed: &str, ep: &str| {
                CString::new(format!(
                    "[Interface]\nPrivateKey = {k}\n[Peer]\nPublicKey = {p}\nAllowedIPs = {allowed}/32\n{ep}\n"
                ))
                .unwrap()
            };
            let (mut a, mut b) = (std::ptr::null_mut(), std::ptr::null_mut());
            let ca = cfg(&ka, &pb, "10.0.0.2", "Endpoint = 127.0.0.1:2000");
            let cb = cfg(&kb, &pa, "10.0.0.1", "");
            assert_eq!(new(ca.as_ptr(), &mut a, std::ptr::null_mut(), 0), 0);
            assert_eq!(new(cb.as_ptr(), &mut b, std::ptr::null_mut(), 0), 0);
            let ep = |port| OmniEndpoint { family: 4, port, addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] };
            let (from_a, from_b) = (ep(1000), ep(2000));
            let (mut out_a, mut out_b) = (vec![0u8; 2048], vec![0u8; 2048]);
            let mut o = std::mem::zeroed::<OmniOutput>();
            // Handshake: the first packet is queued and starts it.
            let pkt = ipv4([10, 0, 0, 1], [10, 0, 0, 2], PACKET);
            assert_eq!(send(a, NOW, pkt.as_ptr(), pkt.len(), out_a.as_mut_ptr(), 2048, &mut o), 0);
            assert_eq!(poll(a, NOW, out_a.as_mut_ptr(), 2048, &mut o), 0);
            assert_eq!(recv(b, NOW, &from_a, out_a.as_ptr(), o.len, out_b.as_mut_ptr(), 2048, &mut o), 0);
            assert_eq!(recv(a, NOW, &from_b, out_b.as_ptr(), o.len, out_a.as_mut_ptr(), 2048, &mut o), 0);
            loop {
                assert_eq!(poll(a, NOW, out_a.as_mut_ptr(), 2048, &mut o), 0);
                if o.len == 0 {
                    break;
                }
                recv(b, NOW, &from_a, out_a.as_ptr(), o.len, out_b.as_mut_ptr(), 2048, &mut o);
            }
            Ffi { _lib: lib, free, send, recv, a, b, from_a, pkt, out_a, out_b }
        }
    }

    fn round(&mut self, now: u64) -> f64 {
        let mut o = OmniOutput {
            kind: omni_ffi::capi::OmniOutputKind::None,
            offset: 0,
            len: 0,
            endpoint: OmniEndpoint::default(),
            needed: 0,
        };
        let start = StdInstant::now();
        for _ in 0..PACKETS_PER_ROUND {
            // SAFETY: live handles, buffers of the stated sizes.
            unsafe {
                let r = (self.send)(
                    self.a,
                    now,
                    self.pkt.as_ptr(),
                    self.pkt.len(),
                    self.out_a.as_mut_ptr(),
                    self.out_a.len(),
                    &mut o,
                );
                assert_eq!(r, 0);
                let r = (self.recv)(
                    self.b,
                    now,
                    &self.from_a,
                    self.out_a.as_ptr(),
                    o.len,
                    self.out_b.as_mut_ptr(),
                    self.out_b.len(),
                    &mut o,
                );
                assert_eq!(black_box(r), 0);
                assert_eq!(o.len, PACKET);
            }
        }
        start.elapsed().as_nanos() as f64 / PACKETS_PER_ROUND as f64
    }
}

impl Drop for Ffi {
    fn drop(&mut self) {
        // SAFETY: handles from omni_tunnel_new_from_wg_quick, freed once.
        unsafe {
            (self.free)(self.a);
            (self.free)(self.b);
        }
    }
}

/// A fixed explicit time, like the direct column's (no clock read).
const NOW: u64 = 10_000_000_000;
const OMNI_NOW: u64 = u64::MAX;

fn main() {
    let lib = std::env::args().nth(1).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("libomni_ffi.so").to_string_lossy().into_owned()
    });
    let provider = std::any::type_name::<DefaultProvider>().rsplit("::").next().unwrap_or("?").to_owned();
    let mut direct = Direct::new();
    let mut ffi = Ffi::new(&lib);
    let (mut d, mut f, mut fc) = (f64::MAX, f64::MAX, f64::MAX);
    // Warm up, then alternate so both columns see the same machine state.
    direct.round();
    ffi.round(NOW);
    for _ in 0..ROUNDS {
        d = d.min(direct.round());
        f = f.min(ffi.round(NOW));
        fc = fc.min(ffi.round(OMNI_NOW));
    }
    let mbps = |ns: f64| PACKET as f64 * 8.0 / ns * 1000.0;
    println!("ffi overhead, {PACKET}-byte packets, encrypt + decrypt per packet, provider {provider}, best of {ROUNDS} rounds x {PACKETS_PER_ROUND}");
    println!("  omni-core direct                : {d:8.1} ns/packet ({:.0} Mbit/s)", mbps(d));
    println!("  C API via dlopen (explicit now) : {f:8.1} ns/packet ({:.0} Mbit/s)", mbps(f));
    println!("  C API via dlopen (OMNI_NOW)     : {fc:8.1} ns/packet ({:.0} Mbit/s)", mbps(fc));
    println!(
        "  ratio C API / direct            : {:.3} ({:+.1} % per packet; target <= +10 %)",
        f / d,
        (f / d - 1.0) * 100.0
    );
    println!("  ratio C API with clock / direct : {:.3} ({:+.1} %)", fc / d, (fc / d - 1.0) * 100.0);
}
