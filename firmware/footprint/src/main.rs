//! omni-core and nothing else (no executor, no network stack, no logging):
//! every entry point a host uses is called on inputs the compiler cannot see,
//! so the image holds exactly the core's code. `hil-tests/footprint.sh`
//! builds it for thumbv7em and thumbv6m with 1 and 4 peers and reports the
//! flash (text + rodata + data) and the static RAM (data + bss; the node
//! itself is a static).
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::net::SocketAddr;
use core::ptr::{addr_of_mut, read_volatile};

use omni_core::crypto::RustCrypto;
use omni_core::storage::Fixed;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[cfg(not(feature = "peers4"))]
const PEERS: usize = 1;
#[cfg(feature = "peers4")]
const PEERS: usize = 4;

/// PEERS peers, 4 allowed-IP entries and 4 receiver indexes per peer.
type FwNode = Node<RustCrypto, ChaCha20Rng, Fixed<PEERS, { 4 * PEERS }, { 4 * PEERS }>>;

/// The node lives in .bss (an `Option` would put its bytes in .data, i.e. flash too).
static mut NODE: MaybeUninit<FwNode> = MaybeUninit::uninit();
static mut BUF: [u8; 1500] = [0; 1500];
/// What a host would feed in; volatile reads keep the optimizer honest.
static mut INPUT: [u8; 64] = [0; 64];

fn input(i: usize) -> u8 {
    // SAFETY: single-threaded, no references to INPUT are held.
    unsafe { read_volatile(addr_of_mut!(INPUT).cast::<u8>().add(i % 64)) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut key = [0u8; 32];
    key.iter_mut().enumerate().for_each(|(i, b)| *b = input(i));
    let now = Instant::from_nanos(u64::from(input(40)));
    // SAFETY: main runs once, nothing else touches these statics.
    let (node, buf) = unsafe {
        let n = &mut *addr_of_mut!(NODE);
        let buf = &mut *addr_of_mut!(BUF);
        (
            n.write(Node::new(
                NodeConfig { private_key: Some(StaticSecret::from_bytes(key)), ..NodeConfig::default() },
                ChaCha20Rng::seed_from_u64(u64::from(input(33))),
            )),
            buf,
        )
    };
    node.set_wall_time(now, WallTime::new(u64::from(input(34)), 0));
    for p in 0..PEERS {
        let mut pk = [0u8; 32];
        pk.iter_mut().enumerate().for_each(|(i, b)| *b = input(i + p));
        let ep = SocketAddr::from(([10, 0, 2, input(35)], 51820));
        if let Ok(id) = node.add_peer(now, PeerConfig { endpoint: Some(ep), ..PeerConfig::new(PublicKey(pk)) }) {
            if let Ok(net) = omni_core::AllowedIp::new([10, 77, p as u8, 0].into(), 24) {
                let _ = node.add_allowed_ip(id, net);
            }
            node.initiate(now, id);
        }
    }
    loop {
        let now = Instant::from_nanos(u64::from(input(36)) << 20);
        while let Ok(Some(t)) = node.poll_transmit(now, buf) {
            core::hint::black_box(t);
        }
        let n = usize::from(input(37)) * 8;
        let from = SocketAddr::from(([10, 0, 2, 2], u16::from(input(38))));
        let _ = core::hint::black_box(node.handle_datagram_in_place(now, from, &mut buf[..n.min(1500)]));
        let _ = core::hint::black_box(node.send_ip_in_place(now, buf, usize::from(input(39)) * 8));
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        while let Some(e) = node.poll_event() {
            core::hint::black_box(e);
        }
    }
}
