//! omni-core on the emulated Cortex-M3, without a network: two nodes (the
//! firmware's fixed storage, no heap) complete a handshake and exchange data
//! in memory; the persisted wall clock and the configuration parser are
//! checked too. The result is the semihosting exit code (0 = all passed).
//!
//! Under `qemu-system-arm -icount shift=0` one instruction takes one virtual
//! nanosecond, so the reported durations are instruction counts: this is how
//! `hil-tests/footprint.sh` measures the cost of a handshake.
#![no_std]
#![no_main]

use core::net::SocketAddr;

use defmt_semihosting as _;
use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, Sent};
use omni_core::storage::Fixed;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, StaticSecret, WallTime};
use omni_firmware::{omni_now, Config, PersistedWall, WallStore};
use omni_qemu_mps2::{self as board, board_handlers};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

board_handlers!();

type Small = Node<RustCrypto, ChaCha20Rng, Fixed<1, 4, 8>>;

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            defmt::info!("ok: {=str}", what);
        } else {
            self.failed += 1;
            defmt::error!("FAILED: {=str}", what);
        }
    }
}

/// Virtual nanoseconds spent in `f` (instructions under `-icount shift=0`).
fn measure<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let t = omni_now();
    let r = f();
    (r, omni_now().as_nanos() - t.as_nanos())
}

fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize, buf: &mut [u8]) {
    buf[..len].fill(0x5a);
    buf[0] = 0x45;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    buf[12..16].copy_from_slice(&src);
    buf[16..20].copy_from_slice(&dst);
}

struct MemStore(Option<u64>);
impl WallStore for &mut MemStore {
    fn load(&mut self) -> Option<u64> {
        self.0
    }
    fn store(&mut self, v: u64) -> bool {
        self.0 = Some(v);
        true
    }
}

const PAINT: u32 = 0xa5a5_a5a5;
const PAINT_WORDS: usize = 16 * 1024;

/// Fills the unused stack below the caller with a pattern; returns the top.
#[inline(never)]
fn paint_stack() -> usize {
    let top = cortex_m::register::msp::read() as usize - 256;
    for i in 0..PAINT_WORDS {
        // SAFETY: below the current stack pointer (plus a margin): unused stack in the 4 MiB RAM.
        unsafe { core::ptr::write_volatile((top - 4 * (i + 1)) as *mut u32, PAINT) };
    }
    top
}

/// Bytes of stack used below `top` since `paint_stack`.
fn stack_used(top: usize) -> usize {
    for i in (0..PAINT_WORDS).rev() {
        // SAFETY: the painted region.
        if unsafe { core::ptr::read_volatile((top - 4 * (i + 1)) as *const u32) } != PAINT {
            return 4 * (i + 1);
        }
    }
    0
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let p = cortex_m::Peripherals::take().unwrap_or_else(|| board::exit(2));
    board::time::init(p.SYST);
    let mut c = Checks { passed: 0, failed: 0 };

    // Two nodes with the firmware's storage (no alloc), keys from a seeded RNG.
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (ka, kb) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
    let (pa, pb) = (ka.public_key::<RustCrypto>(), kb.public_key::<RustCrypto>());
    let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
    let (mut a, t_new_a) = measure(|| Small::new(cfg(ka), ChaCha20Rng::seed_from_u64(1)));
    let mut b = Small::new(cfg(kb), ChaCha20Rng::seed_from_u64(2));
    let sa: SocketAddr = SocketAddr::from(([10, 0, 2, 15], 51820));
    let sb: SocketAddr = SocketAddr::from(([10, 0, 2, 2], 51821));
    let now = Instant::from_secs(10);
    a.set_wall_time(now, WallTime::new(1_700_000_000, 0));
    b.set_wall_time(now, WallTime::new(1_700_000_000, 0));
    let (ia, t_add_peer) = measure(|| a.add_peer(now, PeerConfig { endpoint: Some(sb), ..PeerConfig::new(pb) }).ok());
    let ib = b.add_peer(now, PeerConfig::new(pa)).ok();
    c.check(ia.is_some() && ib.is_some(), "add peers");
    let (Some(ia), Some(ib)) = (ia, ib) else { board::exit(1) };
    c.check(a.add_allowed_ip(ia, "10.77.0.0/24".parse().unwrap_or_else(|_| board::exit(1))).is_ok(), "route a");
    c.check(b.add_allowed_ip(ib, "10.77.1.0/24".parse().unwrap_or_else(|_| board::exit(1))).is_ok(), "route b");

    // The handshake, step by step (and how much stack it takes).
    let top = paint_stack();
    let mut out_a = [0u8; 1500];
    let mut out_b = [0u8; 1500];
    a.initiate(now, ia);
    let (t, t_init) = measure(|| a.poll_transmit(now, &mut out_a));
    let init_len = match t {
        Ok(Some(t)) => t.len,
        _ => 0,
    };
    c.check(init_len == 148, "initiation written");
    let (r, t_resp) = measure(|| b.handle_datagram(now, sa, &out_a[..init_len], &mut out_b));
    let resp_len = match r {
        Ok(Received::Reply { len }) => len,
        _ => 0,
    };
    c.check(resp_len == 92, "initiation accepted, response written");
    let (r, t_consume) = measure(|| a.handle_datagram(now, sb, &out_b[..resp_len], &mut out_a));
    c.check(r == Ok(Received::Done), "response accepted");
    let keepalive = match a.poll_transmit(now, &mut out_a) {
        Ok(Some(t)) => t.len,
        _ => 0,
    };
    c.check(keepalive == 32, "confirming keepalive");
    let r = b.handle_datagram(now, sa, &out_a[..keepalive], &mut out_b);
    c.check(r == Ok(Received::Done), "keepalive confirms the session");

    // Transport: a full-MTU packet each way, in place.
    let len = 1420;
    ipv4([10, 77, 1, 1], [10, 77, 0, 2], len, &mut out_a[16..]);
    let (s, t_seal) = measure(|| a.send_ip_in_place(now, &mut out_a, len));
    let dg = match s {
        Ok(Sent::Transmit(t)) => t.len,
        _ => 0,
    };
    c.check(dg == len + 32, "seal 1420 bytes");
    let mut copy = [0u8; 1500];
    copy[..dg].copy_from_slice(&out_a[..dg]);
    let (r, t_open) = measure(|| b.handle_datagram_in_place(now, sa, &mut out_a[..dg]));
    c.check(matches!(r, Ok(Received::Packet { len: 1420, .. })), "open 1420 bytes");
    c.check(b.handle_datagram_in_place(now, sa, &mut copy[..dg]).is_err(), "replay refused");
    ipv4([10, 77, 0, 2], [10, 77, 1, 1], 100, &mut out_b[16..]);
    let r = match b.send_ip_in_place(now, &mut out_b, 100) {
        Ok(Sent::Transmit(t)) => a.handle_datagram_in_place(now, sb, &mut out_b[..t.len]),
        _ => Err(omni_core::node::RecvError::NotIp),
    };
    c.check(matches!(r, Ok(Received::Packet { len: 100, .. })), "reply from the responder");
    let stack = stack_used(top);

    // The persisted wall clock: a reboot starts above every earlier timestamp.
    let mut mem = MemStore(None);
    let boot1 = Instant::from_secs(0);
    let w1 = PersistedWall::boot(&mut mem, boot1);
    let late = w1.wall_at(Instant::from_secs(3000));
    let _ = w1; // the first boot ends (its store borrow with it)
    let w2 = PersistedWall::boot(&mut mem, Instant::from_secs(0));
    c.check(w2.wall_at(Instant::ZERO) > late, "wall clock after reboot is above the previous boot's");

    // The configuration format.
    let text = "x key=oAVLbZvIygB28kK4yABFGHWgeX7ie3iZiF3kofxdrHw= vip=10.77.0.2/24 \
                peer=oAVLbZvIygB28kK4yABFGHWgeX7ie3iZiF3kofxdrHw= endpoint=10.0.2.2:51821 \
                allowed=10.77.0.1/32 keepalive=25 state=/tmp/s";
    let parsed = Config::parse(text);
    c.check(
        parsed.as_ref().is_ok_and(|p| p.peers.len() == 1 && p.peers[0].keepalive == Some(25)),
        "configuration parses",
    );
    c.check(parsed.as_ref().is_ok_and(|p| p.get("state") == Some("/tmp/s")), "board keys pass through");

    let hs = t_init + t_resp + t_consume;
    defmt::println!(
        "cost: node_new={=u64} add_peer={=u64} initiation={=u64} response={=u64} consume_response={=u64} handshake_total={=u64} seal_1420={=u64} open_1420={=u64}",
        t_new_a, t_add_peer, t_init, t_resp, t_consume, hs, t_seal, t_open
    );
    defmt::println!("node_bytes={=usize} stack_peak={=usize}", core::mem::size_of::<Small>(), stack);
    defmt::println!("selftest: {=u32} passed, {=u32} failed", c.passed, c.failed);
    board::exit(if c.failed == 0 { 0 } else { 1 })
}
