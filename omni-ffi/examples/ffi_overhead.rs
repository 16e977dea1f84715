//! Per-packet cost of the C API versus calling omni-core directly, at 1420 B.
//!
//! One "packet" is an encrypt on tunnel A plus a decrypt on tunnel B (both
//! directions of the data path). The direct columns drive two omni-core
//! `Node`s (`omni_ffi::bench_anchor::CorePair`, feature `bench-anchor`); the
//! FFI columns load `libomni_ffi.so` with dlopen and call the exported C functions through function pointers, exactly as a C host does
//! (null checks, catch_unwind, the tunnel mutex, result structs). Each comes
//! twice: with separate input and output buffers (`send_ip` /
//! `handle_datagram`) and in place on one buffer (`*_in_place`: A encrypts
//! `buf[16..]` into `buf[0..]`, B decrypts it back to `buf[16..]`, A's next
//! input). Rounds alternate between the columns and the best round of each is
//! reported. The last line (`figures: ...`) is for omni-ffi/bench/ffi-overhead.sh,
//! which prints them beside the JVM figures (those have their own in-process anchor).
//!
//! Usage: cargo run --release -p omni-ffi --features bench-anchor[,ring] --example ffi_overhead [-- path/to/libomni_ffi.so [packets rounds]]

use std::ffi::{c_char, c_int, CString};
use std::hint::black_box;
use std::time::Instant as StdInstant;

use omni_core::crypto::DefaultProvider;
use omni_core::node::IN_PLACE_OFFSET;
use omni_ffi::bench_anchor::{ipv4_packet, CorePair, PACKET};
use omni_ffi::capi::{OmniEndpoint, OmniOutput, OmniTunnel};

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
type SendInPlaceFn = unsafe extern "C" fn(*const OmniTunnel, u64, *mut u8, usize, usize, *mut OmniOutput) -> c_int;
type RecvInPlaceFn =
    unsafe extern "C" fn(*const OmniTunnel, u64, *const OmniEndpoint, *mut u8, usize, *mut OmniOutput) -> c_int;

struct Ffi {
    _lib: libloading::Library,
    free: FreeFn,
    send: SendFn,
    recv: RecvFn,
    send_in_place: SendInPlaceFn,
    recv_in_place: RecvInPlaceFn,
    a: *mut OmniTunnel,
    b: *mut OmniTunnel,
    from_a: OmniEndpoint,
    pkt: Vec<u8>,
    out_a: Vec<u8>,
    out_b: Vec<u8>,
    buf: Vec<u8>,
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
            let send_in_place: SendInPlaceFn = *lib.get(b"omni_tunnel_send_ip_in_place").unwrap();
            let recv_in_place: RecvInPlaceFn = *lib.get(b"omni_tunnel_handle_datagram_in_place").unwrap();
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
            let pkt = ipv4_packet(PACKET);
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
            let mut buf = vec![0u8; 2048];
            buf[IN_PLACE_OFFSET..][..PACKET].copy_from_slice(&pkt);
            Ffi { _lib: lib, free, send, recv, send_in_place, recv_in_place, a, b, from_a, pkt, out_a, out_b, buf }
        }
    }

    fn round(&mut self, now: u64, packets: usize) -> f64 {
        let mut o = OmniOutput {
            kind: omni_ffi::capi::OmniOutputKind::None,
            offset: 0,
            len: 0,
            endpoint: OmniEndpoint::default(),
            needed: 0,
        };
        let start = StdInstant::now();
        for _ in 0..packets {
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
        start.elapsed().as_nanos() as f64 / packets as f64
    }

    fn round_in_place(&mut self, now: u64, packets: usize) -> f64 {
        let mut o = OmniOutput {
            kind: omni_ffi::capi::OmniOutputKind::None,
            offset: 0,
            len: 0,
            endpoint: OmniEndpoint::default(),
            needed: 0,
        };
        let cap = self.buf.len();
        let start = StdInstant::now();
        for _ in 0..packets {
            // SAFETY: live handles, a buffer of `cap` bytes.
            unsafe {
                let r = (self.send_in_place)(self.a, now, self.buf.as_mut_ptr(), cap, PACKET, &mut o);
                assert_eq!(r, 0);
                let r = (self.recv_in_place)(self.b, now, &self.from_a, self.buf.as_mut_ptr(), o.len, &mut o);
                assert_eq!(black_box(r), 0);
                assert_eq!((o.offset, o.len), (IN_PLACE_OFFSET, PACKET));
            }
        }
        start.elapsed().as_nanos() as f64 / packets as f64
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

/// The uniffi methods of `Tunnel` called from Rust, without any FFI: what the
/// uniffi path costs on the Rust side alone (a `Vec` per packet, endpoint
/// strings, the datagram parse of `from`), so the JVM figures can be split
/// into our Rust-side marshalling and the uniffi/JNA layers.
struct Api {
    a: std::sync::Arc<omni_ffi::Tunnel>,
    b: std::sync::Arc<omni_ffi::Tunnel>,
    pkt: Vec<u8>,
}

impl Api {
    fn new() -> Self {
        let (ka, kb) = (omni_ffi::generate_private_key(), omni_ffi::generate_private_key());
        let pa = omni_ffi::public_key_from_private(ka.clone()).unwrap();
        let pb = omni_ffi::public_key_from_private(kb.clone()).unwrap();
        let a = omni_ffi::Tunnel::from_wg_quick(format!(
            "[Interface]\nPrivateKey = {ka}\n[Peer]\nPublicKey = {pb}\nAllowedIPs = 10.0.0.2/32\nEndpoint = 127.0.0.1:2000\n"
        ))
        .unwrap();
        let b = omni_ffi::Tunnel::from_wg_quick(format!(
            "[Interface]\nPrivateKey = {kb}\n[Peer]\nPublicKey = {pa}\nAllowedIPs = 10.0.0.1/32\n"
        ))
        .unwrap();
        let pkt = ipv4_packet(PACKET);
        assert!(a.send_ip(pkt.clone()).unwrap().is_none());
        let init = a.poll_transmit().unwrap().unwrap();
        let omni_ffi::DatagramOutcome::Reply { datagram } =
            b.handle_datagram("127.0.0.1:1000".into(), init.data).unwrap()
        else {
            panic!("no handshake response")
        };
        a.handle_datagram("127.0.0.1:2000".into(), datagram).unwrap();
        for d in a.drain_transmits().unwrap() {
            b.handle_datagram("127.0.0.1:1000".into(), d.data).unwrap();
        }
        Api { a, b, pkt }
    }

    fn round(&self, packets: usize) -> f64 {
        let start = StdInstant::now();
        for _ in 0..packets {
            let d = self.a.send_ip(self.pkt.clone()).unwrap().unwrap();
            let r = self.b.handle_datagram("127.0.0.1:1000".into(), d.data).unwrap();
            assert!(matches!(black_box(r), omni_ffi::DatagramOutcome::Packet { .. }));
        }
        start.elapsed().as_nanos() as f64 / packets as f64
    }

    fn round_batch(&self, packets: usize, batch: usize) -> f64 {
        let rounds = packets / batch;
        let start = StdInstant::now();
        for _ in 0..rounds {
            let ds = self.a.send_ip_batch(vec![self.pkt.clone(); batch]);
            let ds = ds.into_iter().map(|d| omni_ffi::Datagram { endpoint: "127.0.0.1:1000".into(), data: d.data });
            let rs = self.b.handle_datagram_batch(ds.collect());
            assert_eq!(black_box(rs).len(), batch);
        }
        start.elapsed().as_nanos() as f64 / (rounds * batch) as f64
    }
}

/// A fixed explicit time, like the direct column's (no clock read).
const NOW: u64 = 10_000_000_000;
const OMNI_NOW: u64 = u64::MAX;

fn main() {
    let mut args = std::env::args().skip(1);
    let lib = args.next().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("libomni_ffi.so").to_string_lossy().into_owned()
    });
    let packets: usize = args.next().map_or(20_000, |a| a.parse().expect("packets"));
    let rounds: usize = args.next().map_or(7, |a| a.parse().expect("rounds"));
    let provider = std::any::type_name::<DefaultProvider>().rsplit("::").next().unwrap_or("?").to_owned();
    let mut direct = CorePair::new().expect("direct: handshake");
    let mut ffi = Ffi::new(&lib);
    let api = Api::new();
    let [mut d, mut di, mut f, mut fi, mut fc, mut u, mut ub] = [f64::MAX; 7];
    // Warm up, then alternate so all columns see the same machine state.
    direct.round(packets).expect("direct round");
    ffi.round(NOW, packets);
    for _ in 0..rounds {
        d = d.min(direct.round(packets).expect("direct round"));
        di = di.min(direct.round_in_place(packets).expect("direct in place round"));
        f = f.min(ffi.round(NOW, packets));
        fi = fi.min(ffi.round_in_place(NOW, packets));
        fc = fc.min(ffi.round(OMNI_NOW, packets));
        u = u.min(api.round(packets));
        ub = ub.min(api.round_batch(packets, 32));
    }
    assert_eq!(&direct.buf[IN_PLACE_OFFSET..][..PACKET], &direct.pkt[..], "in place: the packet survived");
    assert_eq!(&ffi.buf[IN_PLACE_OFFSET..][..PACKET], &ffi.pkt[..], "C in place: the packet survived");
    let mbps = |ns: f64| PACKET as f64 * 8.0 / ns * 1000.0;
    let pct = |x: f64, base: f64| (x / base - 1.0) * 100.0;
    println!("ffi overhead, {PACKET}-byte packets, encrypt + decrypt per packet, provider {provider}, best of {rounds} rounds x {packets}");
    println!("  omni-core direct                : {d:8.1} ns/packet ({:.0} Mbit/s)", mbps(d));
    println!("  omni-core direct, in place      : {di:8.1} ns/packet ({:.0} Mbit/s)", mbps(di));
    println!("  C API via dlopen (explicit now) : {f:8.1} ns/packet ({:.0} Mbit/s)", mbps(f));
    println!("  C API in place (explicit now)   : {fi:8.1} ns/packet ({:.0} Mbit/s)", mbps(fi));
    println!("  C API via dlopen (OMNI_NOW)     : {fc:8.1} ns/packet ({:.0} Mbit/s)", mbps(fc));
    println!(
        "  uniffi methods from Rust, no FFI: {u:8.1} ns/packet (Vec + String per packet; {:+.1} % vs direct)",
        pct(u, d)
    );
    println!("  … batches of 32, no FFI         : {ub:8.1} ns/packet ({:+.1} % vs direct)", pct(ub, d));
    println!("  ratio C API / direct            : {:.3} ({:+.1} % per packet; target <= +10 %)", f / d, pct(f, d));
    println!("  ratio C API in place / direct in place : {:.3} ({:+.1} %)", fi / di, pct(fi, di));
    println!("  ratio C API with clock / direct : {:.3} ({:+.1} %)", fc / d, pct(fc, d));
    println!(
        "figures: direct_ns={d:.1} direct_in_place_ns={di:.1} capi_ns={f:.1} capi_in_place_ns={fi:.1} capi_clock_ns={fc:.1} rust_api_ns={u:.1} rust_api_batch_ns={ub:.1}"
    );
}
