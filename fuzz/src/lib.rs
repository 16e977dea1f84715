//! Harness code shared by the fuzz targets and by `examples/gen_corpus.rs`:
//! a byte cursor over the fuzz input, deterministic two-node setups, a real
//! handshake whose datagrams are captured, and IP packet builders.
//!
//! Everything here is deterministic (fixed keys, seeded ChaCha20 RNGs), so a
//! crashing input always reproduces.

use std::net::SocketAddr;

use omni_core::cookie::CookieJar;
use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, RecvError, SendError, Sent};
use omni_core::storage::Heap;
use omni_core::wire::{Initiation, Response};
use omni_core::{AllowedIp, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub type N = Node<RustCrypto, ChaCha20Rng, Heap>;

/// Message type bytes (first byte of each datagram).
pub const T_INIT: u8 = 1;
pub const T_RESP: u8 = 2;
pub const T_COOKIE: u8 = 3;
pub const T_DATA: u8 = 4;

// ----- input cursor ----------------------------------------------------------

/// Reads structured values from fuzz input; yields zeros once exhausted.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// Up to `n` bytes (fewer if the input runs out).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }
}

/// Output buffer sizes around every threshold the node checks
/// (transport overhead, cookie reply, response, initiation).
pub const OUT_SIZES: [usize; 16] = [0, 1, 15, 16, 31, 32, 47, 48, 63, 64, 91, 92, 147, 148, 2048, 65535];

pub fn out_size(sel: u8) -> usize {
    OUT_SIZES[usize::from(sel) % OUT_SIZES.len()]
}

// ----- addresses and keys ------------------------------------------------------

pub fn addr_a() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}
pub fn addr_b() -> SocketAddr {
    "198.51.100.2:51820".parse().unwrap()
}

/// Source addresses a datagram may claim: the two real endpoints, roamed
/// ports, other IPv4/IPv6 hosts, and odd ones (unspecified, port 0, mapped).
pub fn source_addr(sel: u8) -> SocketAddr {
    let s = match sel % 12 {
        0 => return addr_a(),
        1 => return addr_b(),
        2 => "192.0.2.1:40000",
        3 => "198.51.100.2:1",
        4 => "203.0.113.7:51820",
        5 => "[2001:db8::1]:51820",
        6 => "[2001:db8::2]:9",
        7 => "[2001:db8:0:0:ffff::1]:51820",
        8 => "0.0.0.0:0",
        9 => "[::ffff:192.0.2.1]:51820",
        10 => "255.255.255.255:65535",
        _ => "[fe80::1]:51820",
    };
    s.parse().unwrap()
}

pub fn secret_a() -> StaticSecret {
    StaticSecret::from_bytes([0xa1; 32])
}
pub fn secret_b() -> StaticSecret {
    StaticSecret::from_bytes([0xb2; 32])
}

pub fn public_of(s: &StaticSecret) -> PublicKey {
    s.public_key::<RustCrypto>()
}

pub fn node(secret: StaticSecret, seed: u64, cfg: NodeConfig) -> N {
    let mut n: N = Node::new(NodeConfig { private_key: Some(secret), ..cfg }, ChaCha20Rng::seed_from_u64(seed));
    n.set_wall_time(Instant::ZERO, WallTime { secs: 1_700_000_000, nanos: 0 });
    n
}

/// Re-stamps MAC1 (and MAC2 if `jar` holds a cookie) of a handshake message
/// for the receiver whose public key is `to`, so mutated messages get past
/// the MAC1 gate and reach the Noise code.
pub fn restamp(now: Instant, to: &PublicKey, msg: &mut [u8]) {
    let off = match msg.first() {
        Some(&T_INIT) => Initiation::MAC1_OFFSET,
        Some(&T_RESP) => Response::MAC1_OFFSET,
        _ => return,
    };
    if msg.len() >= off + 32 {
        CookieJar::new(&to.0).stamp(now, msg, off);
    }
}

// ----- two-node setup -------------------------------------------------------

/// Node `a` at [`addr_a`] and node `b` at [`addr_b`], each with the other as
/// its only peer (with endpoint), routing 10.0.0.1 (a) / 10.0.0.2 (b) and
/// fd00::1 / fd00::2, plus whatever `extra_routes` adds for b's peer in a.
pub struct Pair {
    pub a: N,
    pub b: N,
    /// Peer b as seen by a.
    pub ida: PeerId,
    /// Peer a as seen by b.
    pub idb: PeerId,
    pub pa: PublicKey,
    pub pb: PublicKey,
    pub now: Instant,
}

pub fn pair(cfg_a: NodeConfig, cfg_b: NodeConfig, catch_all_routes: bool) -> Pair {
    let (ka, kb) = (secret_a(), secret_b());
    let (pa, pb) = (public_of(&ka), public_of(&kb));
    let now = Instant::from_secs(1);
    let mut a = node(ka, 2, cfg_a);
    let mut b = node(kb, 3, cfg_b);
    let ida = a.add_peer(now, PeerConfig { endpoint: Some(addr_b()), ..PeerConfig::new(pb) }).unwrap();
    let idb = b.add_peer(now, PeerConfig { endpoint: Some(addr_a()), ..PeerConfig::new(pa) }).unwrap();
    let routes_a: &[&str] = if catch_all_routes { &["0.0.0.0/0", "::/0"] } else { &["10.0.0.2/32", "fd00::2/128"] };
    let routes_b: &[&str] = if catch_all_routes { &["0.0.0.0/0", "::/0"] } else { &["10.0.0.1/32", "fd00::1/128"] };
    for r in routes_a {
        a.add_allowed_ip(ida, r.parse::<AllowedIp>().unwrap()).unwrap();
    }
    for r in routes_b {
        b.add_allowed_ip(idb, r.parse::<AllowedIp>().unwrap()).unwrap();
    }
    Pair { a, b, ida, idb, pa, pb, now }
}

/// Datagrams captured from a real exchange between the two nodes.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    /// In send order; each is (sender is a, bytes).
    pub datagrams: Vec<(bool, Vec<u8>)>,
}

impl Captured {
    pub fn of_type(&self, t: u8) -> impl Iterator<Item = &[u8]> {
        self.datagrams.iter().filter(move |(_, d)| d.first() == Some(&t)).map(|(_, d)| d.as_slice())
    }
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

pub fn ipv6(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p[40..].copy_from_slice(payload);
    p
}

pub const IP_A: [u8; 4] = [10, 0, 0, 1];
pub const IP_B: [u8; 4] = [10, 0, 0, 2];
pub const IP6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const IP6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn drain(n: &mut N, now: Instant, from_a: bool, cap: &mut Captured) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; 2048];
    let mut sent = Vec::new();
    while let Some(t) = n.poll_transmit(now, &mut out).unwrap() {
        let d = out[..t.len].to_vec();
        cap.datagrams.push((from_a, d.clone()));
        sent.push(d);
    }
    sent
}

/// a sends a packet to b (starting a handshake), b answers; both directions
/// carry data and a keepalive. Panics if the protocol does not complete:
/// that is a harness bug (or an omni-core regression), not fuzz input.
pub fn handshake(p: &mut Pair) -> Captured {
    let mut cap = Captured::default();
    let mut out = vec![0u8; 2048];
    let now = p.now;
    let pkt = ipv4(IP_A, IP_B, b"hello from a");
    assert!(matches!(p.a.send_ip(now, &pkt, &mut out), Ok(Sent::Queued { .. })));
    run_network(p, &mut cap);
    // b -> a data, then a keepalive from b via its timer.
    let back = ipv6(IP6_B, IP6_A, b"hello from b");
    match p.b.send_ip(now, &back, &mut out) {
        Ok(Sent::Transmit(t)) => cap.datagrams.push((false, out[..t.len].to_vec())),
        r => panic!("b could not send: {r:?}"),
    }
    let d = cap.datagrams.last().unwrap().1.clone();
    let r = p.a.handle_datagram(now, addr_b(), &d, &mut out);
    assert!(matches!(r, Ok(Received::Packet { .. })), "{r:?}");
    // 10 s later a owes b a keepalive (it received data and sent none).
    p.now = Instant::from_secs(12);
    p.a.handle_timeout(p.now);
    p.b.handle_timeout(p.now);
    run_network(p, &mut cap);
    cap
}

/// Shuttles datagrams (transmits and replies) between a and b until both are quiet.
pub fn run_network(p: &mut Pair, cap: &mut Captured) {
    let now = p.now;
    let mut out = vec![0u8; 2048];
    for _ in 0..16 {
        // (delivered to b?, bytes)
        let mut queue: Vec<(bool, Vec<u8>)> = Vec::new();
        queue.extend(drain(&mut p.a, now, true, cap).into_iter().map(|d| (true, d)));
        queue.extend(drain(&mut p.b, now, false, cap).into_iter().map(|d| (false, d)));
        if queue.is_empty() {
            return;
        }
        while let Some((to_b, d)) = queue.pop() {
            let (n, from) = if to_b { (&mut p.b, addr_a()) } else { (&mut p.a, addr_b()) };
            if let Ok(Received::Reply { len }) = n.handle_datagram(now, from, &d, &mut out) {
                let reply = out[..len].to_vec();
                cap.datagrams.push((!to_b, reply.clone()));
                queue.push((!to_b, reply));
            }
        }
    }
}

/// Like [`handshake`] but b is always "under load" (threshold 0), so the
/// exchange includes a cookie reply and a retried initiation carrying MAC2.
pub fn cookie_handshake() -> (Pair, Captured) {
    let mut p = pair(NodeConfig::default(), NodeConfig { under_load_threshold: 0, ..NodeConfig::default() }, false);
    let mut cap = Captured::default();
    let mut out = vec![0u8; 2048];
    let pkt = ipv4(IP_A, IP_B, b"cookie please");
    assert!(matches!(p.a.send_ip(p.now, &pkt, &mut out), Ok(Sent::Queued { .. })));
    run_network(&mut p, &mut cap);
    // a retries after Rekey-Timeout (+ jitter), now with a cookie.
    p.now = Instant::from_secs(7);
    p.a.handle_timeout(p.now);
    run_network(&mut p, &mut cap);
    (p, cap)
}

/// Checks the documented buffer contract of `handle_datagram`'s result
/// (panics on violation) and returns the reply bytes to capture, if any.
pub fn check_recv(r: &Result<Received, RecvError>, out_len: usize, datagram_len: usize) {
    match *r {
        Ok(Received::Reply { len }) => assert!(len <= out_len && (len == 92 || len == 64), "reply len {len}"),
        Ok(Received::Packet { len, .. }) => assert!(len <= out_len && len <= datagram_len, "packet len {len}"),
        Ok(Received::Done) => {}
        Err(RecvError::BufferTooSmall { needed }) => {
            assert!(needed > out_len, "BufferTooSmall {{ needed: {needed} }} with out.len() = {out_len}");
            assert!(
                out_len < datagram_len,
                "a buffer as large as the datagram ({datagram_len}) must suffice, needed {needed}"
            );
        }
        Err(_) => {}
    }
}

/// Same for `send_ip`/`send_to_peer`/`poll_transmit` results.
pub fn check_send(r: &Result<Sent, SendError>, out_len: usize) {
    match *r {
        Ok(Sent::Transmit(t)) => assert!(t.len <= out_len && t.len >= 32, "transmit len {}", t.len),
        Err(SendError::BufferTooSmall { needed }) => assert!(needed > out_len, "needed {needed} <= {out_len}"),
        _ => {}
    }
}
