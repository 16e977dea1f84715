//! Interoperability with an independent WireGuard implementation: Cloudflare's
//! boringtun (`noise::Tunn`). Every datagram omni-core produces is consumed by
//! boringtun and vice versa, so these tests pin omni-core to the wire protocol
//! rather than to itself: handshakes in both roles (with and without PSK),
//! IPv4/IPv6 transport with padding, counters and replay windows, cookie
//! replies in both directions, rekeys, and clean failures on wrong keys.
//!
//! omni-core runs on a virtual clock; boringtun reads its own clock, which is
//! fine because every exchange here is immediate (boringtun's timers are only
//! bypassed by forcing initiations, never waited for).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use omni_core::crypto::{CryptoProvider, RustCrypto};
use omni_core::node::{Received, RecvError, Sent};
use omni_core::noise::handshake::HandshakeError;
use omni_core::storage::Heap;
use omni_core::{
    Event, Instant, Node, NodeConfig, PeerConfig, PeerId, PresharedKey, PublicKey, StaticSecret, WallTime,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const MTU: usize = 1420;
const OMNI_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const BT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OMNI_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const BT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Experimental protocol number (RFC 3692): the payload needs no inner header.
const PROTO_EXPERIMENTAL: u8 = 253;

// ----- IP packets -----------------------------------------------------------

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A well-formed IPv4 packet of exactly `total_len` bytes (header included).
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, total_len: usize, rng: &mut impl RngCore) -> Vec<u8> {
    assert!((20..=usize::from(u16::MAX)).contains(&total_len));
    let mut p = vec![0u8; total_len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(rng.next_u32() as u16).to_be_bytes()); // identification
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = PROTO_EXPERIMENTAL;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = ipv4_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    rng.fill_bytes(&mut p[20..]);
    p
}

/// A well-formed IPv6 packet of exactly `total_len` bytes (40-byte header included).
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, total_len: usize, rng: &mut impl RngCore) -> Vec<u8> {
    assert!((40..=40 + usize::from(u16::MAX)).contains(&total_len));
    let mut p = vec![0u8; total_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((total_len - 40) as u16).to_be_bytes());
    p[6] = PROTO_EXPERIMENTAL;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    rng.fill_bytes(&mut p[40..]);
    p
}

/// What omni-core must put on the wire for a `len`-byte packet: the plaintext
/// is zero-padded to a multiple of 16 but never past the MTU, plus a 16-byte
/// header and a 16-byte tag (WireGuard paper §5.4.6).
fn expected_wire_len(len: usize) -> usize {
    let padded = if len <= MTU { len.div_ceil(16).saturating_mul(16).min(MTU) } else { len };
    padded + 32
}

fn counter_of(transport: &[u8]) -> u64 {
    assert_eq!(&transport[..4], &[4, 0, 0, 0], "not a transport message");
    u64::from_le_bytes(transport[8..16].try_into().unwrap())
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

// ----- boringtun glue ---------------------------------------------------------

/// An owned `TunnResult`.
#[derive(Debug)]
enum Bt {
    Done,
    Net(Vec<u8>),
    V4(Vec<u8>, Ipv4Addr),
    V6(Vec<u8>, Ipv6Addr),
    Err(WireGuardError),
}

fn own(r: TunnResult<'_>) -> Bt {
    match r {
        TunnResult::Done => Bt::Done,
        TunnResult::Err(e) => Bt::Err(e),
        TunnResult::WriteToNetwork(b) => Bt::Net(b.to_vec()),
        TunnResult::WriteToTunnelV4(b, a) => Bt::V4(b.to_vec(), a),
        TunnResult::WriteToTunnelV6(b, a) => Bt::V6(b.to_vec(), a),
    }
}

// ----- the harness ------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Setup {
    seed: u64,
    omni_psk: Option<[u8; 32]>,
    bt_psk: Option<[u8; 32]>,
    /// `NodeConfig::under_load_threshold = 0`: omni-core demands a cookie for every handshake.
    omni_under_load: bool,
    /// boringtun gets a `RateLimiter` with limit 0: it demands a cookie for every handshake.
    bt_under_load: bool,
    /// omni-core is configured with boringtun's endpoint (needed to initiate).
    omni_knows_endpoint: bool,
    /// Give omni-core this key as boringtun's public key instead of the real one.
    omni_thinks_bt_is: Option<[u8; 32]>,
    /// Give boringtun this key as omni-core's public key instead of the real one.
    bt_thinks_omni_is: Option<[u8; 32]>,
}

/// One omni-core node with boringtun as its single peer, wired back to back.
struct Harness<C: CryptoProvider> {
    omni: Node<C, ChaCha20Rng, Heap>,
    bt: Tunn,
    /// boringtun as a peer of omni-core.
    peer: PeerId,
    now: Instant,
    omni_addr: SocketAddr,
    bt_addr: SocketAddr,
    /// Packet contents and sizes.
    rng: ChaCha20Rng,
    /// Bytes of the datagrams omni-core sent to / accepted from boringtun,
    /// tallied here independently of omni-core's own counters.
    omni_tx: u64,
    omni_rx: u64,
}

fn key_pair_bytes(seed: u64) -> ([u8; 32], [u8; 32]) {
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    r.fill_bytes(&mut a);
    r.fill_bytes(&mut b);
    (a, b)
}

fn random_key(seed: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut k);
    k
}

fn public_of(secret: [u8; 32]) -> [u8; 32] {
    *x25519::PublicKey::from(&x25519::StaticSecret::from(secret)).as_bytes()
}

impl<C: CryptoProvider> Harness<C> {
    fn new(s: Setup) -> Self {
        let now = Instant::from_secs(1);
        let omni_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let bt_addr: SocketAddr = "198.51.100.2:51821".parse().unwrap();
        let (omni_sk, bt_sk) = key_pair_bytes(s.seed);

        let omni_secret = StaticSecret::from_bytes(omni_sk);
        let omni_pub = omni_secret.public_key::<C>();
        let bt_secret = x25519::StaticSecret::from(bt_sk);
        let bt_pub = x25519::PublicKey::from(&bt_secret);
        // Both X25519 implementations derive the same public key.
        assert_eq!(omni_pub.0, public_of(omni_sk));
        assert_eq!(StaticSecret::from_bytes(bt_sk).public_key::<C>().0, *bt_pub.as_bytes());

        let threshold = if s.omni_under_load { 0 } else { NodeConfig::default().under_load_threshold };
        let mut omni: Node<C, ChaCha20Rng, Heap> = Node::new(
            NodeConfig { private_key: Some(omni_secret), under_load_threshold: threshold, ..Default::default() },
            ChaCha20Rng::seed_from_u64(s.seed ^ 0x6f6d_6e69),
        );
        omni.set_wall_time(now, WallTime::new(1_700_000_000, 0));
        let peer_key = PublicKey(s.omni_thinks_bt_is.unwrap_or(*bt_pub.as_bytes()));
        let peer = omni
            .add_peer(
                now,
                PeerConfig {
                    preshared_key: s.omni_psk.map(PresharedKey::from_bytes),
                    endpoint: s.omni_knows_endpoint.then_some(bt_addr),
                    ..PeerConfig::new(peer_key)
                },
            )
            .unwrap();
        omni.add_allowed_ip(peer, "10.0.0.2/32".parse().unwrap()).unwrap();
        omni.add_allowed_ip(peer, "fd00::2/128".parse().unwrap()).unwrap();

        let limiter = s.bt_under_load.then(|| Arc::new(RateLimiter::new(&bt_pub, 0)));
        let bt_peer = x25519::PublicKey::from(s.bt_thinks_omni_is.unwrap_or(omni_pub.0));
        let bt = Tunn::new(bt_secret, bt_peer, s.bt_psk, None, (s.seed as u32) & 0x00ff_ffff, limiter);

        Harness {
            omni,
            bt,
            peer,
            now,
            omni_addr,
            bt_addr,
            rng: ChaCha20Rng::seed_from_u64(s.seed.wrapping_add(1000)),
            omni_tx: 0,
            omni_rx: 0,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.omni.poll_event()).collect()
    }

    // --- omni-core side ---

    fn omni_send_ip(&mut self, packet: &[u8]) -> Sent {
        let mut out = vec![0u8; packet.len() + 32 + 15 + 148];
        let sent = self.omni.send_ip(self.now, packet, &mut out).expect("send_ip");
        if let Sent::Transmit(t) = sent {
            assert_eq!((t.to, t.peer), (self.bt_addr, self.peer));
            self.omni_tx += t.len as u64;
        }
        sent
    }

    /// `send_ip` that must encrypt right away; returns the datagram.
    fn omni_seal(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; packet.len() + 32 + 15];
        match self.omni.send_ip(self.now, packet, &mut out).expect("send_ip") {
            Sent::Transmit(t) => {
                assert_eq!((t.to, t.peer), (self.bt_addr, self.peer));
                self.omni_tx += t.len as u64;
                out.truncate(t.len);
                out
            }
            other => panic!("expected an encrypted packet, got {other:?}"),
        }
    }

    fn omni_poll(&mut self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 2048];
        let t = self.omni.poll_transmit(self.now, &mut out).expect("poll_transmit")?;
        assert_eq!((t.to, t.peer), (self.bt_addr, self.peer));
        self.omni_tx += t.len as u64;
        out.truncate(t.len);
        Some(out)
    }

    fn omni_recv_from(&mut self, from: SocketAddr, datagram: &[u8]) -> Result<(Received, Vec<u8>), RecvError> {
        let mut out = vec![0u8; datagram.len().max(148)];
        let r = self.omni.handle_datagram(self.now, from, datagram, &mut out)?;
        let cookie_reply_in = datagram.first() == Some(&3);
        let bytes = match r {
            Received::Reply { len } => {
                if len != 64 {
                    // A handshake response (a cookie reply is not peer traffic).
                    self.omni_tx += len as u64;
                    self.omni_rx += datagram.len() as u64;
                }
                out[..len].to_vec()
            }
            Received::Packet { peer, len } => {
                assert_eq!(peer, self.peer);
                self.omni_rx += datagram.len() as u64;
                out[..len].to_vec()
            }
            Received::Done => {
                if !cookie_reply_in {
                    self.omni_rx += datagram.len() as u64;
                }
                Vec::new()
            }
        };
        Ok((r, bytes))
    }

    fn omni_recv(&mut self, datagram: &[u8]) -> Result<(Received, Vec<u8>), RecvError> {
        self.omni_recv_from(self.bt_addr, datagram)
    }

    /// Delivers a transport message that must decrypt to `expected`.
    fn omni_expect_packet(&mut self, datagram: &[u8], expected: &[u8]) {
        match self.omni_recv(datagram) {
            Ok((Received::Packet { peer, len }, bytes)) => {
                assert_eq!(peer, self.peer);
                assert_eq!(len, expected.len(), "omni-core must strip padding using the IP length field");
                assert_eq!(bytes, expected, "payload corrupted on the way boringtun -> omni-core");
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn assert_omni_byte_counters(&self) {
        let s = self.omni.peer_stats(self.peer).unwrap();
        assert_eq!((s.tx_bytes, s.rx_bytes), (self.omni_tx, self.omni_rx), "omni-core peer byte counters");
    }

    // --- boringtun side ---

    fn bt_recv(&mut self, datagram: &[u8]) -> Bt {
        let mut dst = vec![0u8; datagram.len().max(2048)];
        own(self.bt.decapsulate(Some(self.omni_addr.ip()), datagram, &mut dst))
    }

    /// Whatever boringtun queued to send after a `WriteToNetwork` result.
    fn bt_drain(&mut self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        loop {
            let mut dst = vec![0u8; 2048];
            match own(self.bt.decapsulate(None, &[], &mut dst)) {
                Bt::Done => return v,
                Bt::Net(d) => v.push(d),
                other => panic!("unexpected drain result {other:?}"),
            }
        }
    }

    fn bt_encapsulate(&mut self, packet: &[u8]) -> Bt {
        let mut dst = vec![0u8; packet.len() + 32 + 148];
        own(self.bt.encapsulate(packet, &mut dst))
    }

    fn bt_seal(&mut self, packet: &[u8]) -> Vec<u8> {
        match self.bt_encapsulate(packet) {
            Bt::Net(d) => {
                assert_eq!(d.len(), packet.len() + 32);
                assert_eq!(d[0], 4, "boringtun should have encrypted, not initiated");
                d
            }
            other => panic!("boringtun did not encrypt: {other:?}"),
        }
    }

    fn bt_force_initiation(&mut self) -> Vec<u8> {
        let mut dst = vec![0u8; 2048];
        match own(self.bt.format_handshake_initiation(&mut dst, true)) {
            Bt::Net(d) => d,
            other => panic!("boringtun did not initiate: {other:?}"),
        }
    }

    /// Delivers an omni-core transport message to boringtun; it must decrypt to `expected`.
    fn bt_expect_packet(&mut self, datagram: &[u8], expected: &[u8]) {
        match self.bt_recv(datagram) {
            Bt::V4(p, src) => {
                assert_eq!(IpAddr::V4(src), IpAddr::from(<[u8; 4]>::try_from(&expected[12..16]).unwrap()));
                assert_eq!(p, expected, "payload corrupted on the way omni-core -> boringtun");
            }
            Bt::V6(p, src) => {
                assert_eq!(IpAddr::V6(src), IpAddr::from(<[u8; 16]>::try_from(&expected[8..24]).unwrap()));
                assert_eq!(p, expected, "payload corrupted on the way omni-core -> boringtun");
            }
            other => panic!("boringtun did not decrypt omni-core's packet: {other:?}"),
        }
    }

    // --- packets ---

    fn packet(&mut self, v6: bool, from_omni: bool, len: usize) -> Vec<u8> {
        match (v6, from_omni) {
            (false, true) => ipv4_packet(OMNI_V4, BT_V4, len, &mut self.rng),
            (false, false) => ipv4_packet(BT_V4, OMNI_V4, len, &mut self.rng),
            (true, true) => ipv6_packet(OMNI_V6, BT_V6, len, &mut self.rng),
            (true, false) => ipv6_packet(BT_V6, OMNI_V6, len, &mut self.rng),
        }
    }

    // --- handshakes ---

    /// omni-core initiates because a packet is waiting; boringtun responds;
    /// the waiting packet (or, on a rekey, a keepalive) confirms the session.
    fn handshake_omni_initiates(&mut self, with_packet: bool) {
        let first = self.packet(false, true, 84);
        let had_session = self.omni.peer_stats(self.peer).unwrap().has_session;
        if with_packet {
            assert!(!had_session);
            assert_eq!(self.omni_send_ip(&first), Sent::Queued { peer: self.peer });
        } else {
            assert!(self.omni.initiate(self.now, self.peer));
        }
        let init = self.omni_poll().expect("omni-core should send an initiation");
        assert_eq!(init.len(), 148);
        assert_eq!(&init[..4], &[1, 0, 0, 0]);
        assert_eq!(&init[132..148], &[0u8; 16], "no cookie yet: MAC2 is zero");

        let resp = match self.bt_recv(&init) {
            Bt::Net(r) => r,
            other => panic!("boringtun rejected omni-core's initiation: {other:?}"),
        };
        assert_eq!(resp.len(), 92);
        assert_eq!(&resp[..4], &[2, 0, 0, 0]);
        assert_eq!(le_u32(&resp, 8), le_u32(&init, 4), "response is addressed to our sender index");
        assert!(self.bt_drain().is_empty());

        assert_eq!(self.omni_recv(&resp).expect("omni-core rejected boringtun's response").0, Received::Done);
        let ev = self.events();
        assert!(ev.contains(&Event::HandshakeCompleted { peer: self.peer, initiator: true }), "{ev:?}");
        assert!(!ev.iter().any(|e| matches!(e, Event::EndpointChanged { .. })), "{ev:?}");

        let confirm = self.omni_poll().expect("omni-core confirms the session at once");
        assert!(self.omni_poll().is_none());
        assert_eq!(le_u32(&confirm, 4), le_u32(&resp, 4), "sent to boringtun's new index");
        assert_eq!(counter_of(&confirm), 0, "a fresh session starts at counter 0");
        if with_packet {
            assert_eq!(confirm.len(), expected_wire_len(first.len()));
            self.bt_expect_packet(&confirm, &first);
        } else {
            assert_eq!(confirm.len(), 32, "keepalive");
            assert!(matches!(self.bt_recv(&confirm), Bt::Done), "boringtun takes the keepalive");
        }
        assert!(self.omni.peer_stats(self.peer).unwrap().has_session);
    }

    /// boringtun initiates (because a packet is waiting, or forced on a
    /// rekey); omni-core responds; boringtun's keepalive confirms the session.
    fn handshake_bt_initiates(&mut self, with_packet: bool) {
        let first = self.packet(true, false, 96);
        let init = if with_packet {
            match self.bt_encapsulate(&first) {
                Bt::Net(d) => d,
                other => panic!("boringtun did not initiate: {other:?}"),
            }
        } else {
            self.bt_force_initiation()
        };
        assert_eq!(init.len(), 148);
        assert_eq!(init[0], 1);

        let endpoint_before = self.omni.peer_stats(self.peer).unwrap().endpoint;
        let resp = match self.omni_recv(&init) {
            Ok((Received::Reply { len: 92 }, r)) => r,
            other => panic!("omni-core did not answer boringtun's initiation: {other:?}"),
        };
        assert_eq!(&resp[..4], &[2, 0, 0, 0]);
        assert_eq!(le_u32(&resp, 8), le_u32(&init, 4), "response is addressed to boringtun's sender index");
        let ev = self.events();
        if endpoint_before != Some(self.bt_addr) {
            assert!(ev.contains(&Event::EndpointChanged { peer: self.peer, endpoint: self.bt_addr }), "{ev:?}");
        }
        assert!(
            !ev.iter().any(|e| matches!(e, Event::HandshakeCompleted { .. })),
            "the responder's session is confirmed only by the first transport message: {ev:?}"
        );
        assert_eq!(self.omni.peer_stats(self.peer).unwrap().endpoint, Some(self.bt_addr));

        let keepalive = match self.bt_recv(&resp) {
            Bt::Net(k) => k,
            other => panic!("boringtun rejected omni-core's response: {other:?}"),
        };
        assert_eq!(keepalive.len(), 32);
        assert_eq!(le_u32(&keepalive, 4), le_u32(&resp, 4), "keepalive uses omni-core's new index");
        let queued = self.bt_drain();
        assert_eq!(queued.len(), usize::from(with_packet));

        assert_eq!(self.omni_recv(&keepalive).expect("keepalive").0, Received::Done);
        let ev = self.events();
        assert!(ev.contains(&Event::HandshakeCompleted { peer: self.peer, initiator: false }), "{ev:?}");
        if with_packet {
            self.omni_expect_packet(&queued[0], &first);
        }
        assert!(self.omni.peer_stats(self.peer).unwrap().has_session);
    }

    // --- data ---

    /// `rounds` packets each way, alternating IPv4 and IPv6, of sizes from the
    /// smallest header-only packet to the MTU (edge sizes first, then random).
    /// Every third packet from boringtun is zero-padded to a multiple of 16 as
    /// a padding sender (the kernel, wireguard-go) would, so omni-core must
    /// strip it using the IP length field.
    fn exchange(&mut self, rounds: usize) {
        const EDGES: [usize; 14] = [20, 21, 40, 41, 47, 48, 49, 64, 1403, 1404, 1405, 1408, 1419, 1420];
        let mut last_omni_counter: Option<u64> = None;
        let mut last_bt_counter: Option<u64> = None;
        for i in 0..rounds {
            let v6 = i % 2 == 1;
            let min = if v6 { 40 } else { 20 };
            let len = match EDGES.get(i / 2) {
                Some(&e) => e.max(min),
                None => min + (self.rng.next_u32() as usize) % (MTU - min + 1),
            };

            // omni-core -> boringtun
            let pkt = self.packet(v6, true, len);
            let wire = self.omni_seal(&pkt);
            assert_eq!(wire.len(), expected_wire_len(len), "padding of a {len}-byte packet");
            let c = counter_of(&wire);
            if let Some(prev) = last_omni_counter {
                assert_eq!(c, prev + 1, "omni-core counters are consecutive");
            }
            last_omni_counter = Some(c);
            self.bt_expect_packet(&wire, &pkt);

            // boringtun -> omni-core
            let pkt = self.packet(v6, false, len);
            let mut sent = pkt.clone();
            if i % 3 == 0 {
                sent.resize(len.div_ceil(16) * 16, 0);
            }
            let wire = self.bt_seal(&sent);
            let c = counter_of(&wire);
            if let Some(prev) = last_bt_counter {
                assert_eq!(c, prev + 1, "boringtun counters are consecutive");
            }
            last_bt_counter = Some(c);
            self.omni_expect_packet(&wire, &pkt);
        }
    }

    /// A burst delivered in reverse order is accepted by both replay windows;
    /// delivering any of it again is refused by both.
    fn reorder_and_replay(&mut self) {
        const BURST: usize = 48;
        // boringtun -> omni-core
        let pkts: Vec<Vec<u8>> = (0..BURST).map(|i| self.packet(i % 2 == 0, false, 60 + i)).collect();
        let wires: Vec<Vec<u8>> = pkts.iter().map(|p| self.bt_seal(p)).collect();
        for (w, p) in wires.iter().zip(&pkts).rev() {
            self.omni_expect_packet(w, p);
        }
        for w in &wires {
            assert_eq!(self.omni_recv(w).unwrap_err(), RecvError::Replay);
        }
        // omni-core -> boringtun
        let pkts: Vec<Vec<u8>> = (0..BURST).map(|i| self.packet(i % 2 == 0, true, 60 + i)).collect();
        let wires: Vec<Vec<u8>> = pkts.iter().map(|p| self.omni_seal(p)).collect();
        for (w, p) in wires.iter().zip(&pkts).rev() {
            self.bt_expect_packet(w, p);
        }
        for w in &wires {
            match self.bt_recv(w) {
                Bt::Err(WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter) => {}
                other => panic!("boringtun accepted a replayed omni-core packet: {other:?}"),
            }
        }
    }

    /// Keepalives both ways are consumed silently.
    fn keepalives(&mut self) {
        let mut out = vec![0u8; 64];
        let t = match self.omni.send_to_peer(self.now, self.peer, &[], &mut out).unwrap() {
            Sent::Transmit(t) => t,
            other => panic!("{other:?}"),
        };
        self.omni_tx += t.len as u64;
        assert_eq!(t.len, 32);
        assert!(matches!(self.bt_recv(&out[..t.len]), Bt::Done));
        let k = self.bt_seal(&[]);
        assert_eq!(self.omni_recv(&k).unwrap().0, Received::Done);
    }
}

fn psk(seed: u64) -> [u8; 32] {
    random_key(seed ^ 0x7073_6b00)
}

/// One full scenario: handshake in the given direction, then data.
fn handshake_and_traffic<C: CryptoProvider>(seed: u64, omni_initiates: bool, with_psk: bool) {
    let key = with_psk.then(|| psk(seed));
    let mut h = Harness::<C>::new(Setup {
        seed,
        omni_psk: key,
        bt_psk: key,
        omni_knows_endpoint: omni_initiates,
        ..Default::default()
    });
    if omni_initiates {
        h.handshake_omni_initiates(true);
    } else {
        h.handshake_bt_initiates(true);
    }
    h.exchange(300);
    h.reorder_and_replay();
    h.keepalives();
    assert!(h.events().is_empty(), "no roaming or failures during steady traffic");
    h.assert_omni_byte_counters();
}

// ----- 1 + 2: handshakes in both roles, with and without PSK, then traffic --------

#[test]
fn omni_initiator_boringtun_responder_no_psk() {
    handshake_and_traffic::<RustCrypto>(11, true, false);
}

#[test]
fn omni_initiator_boringtun_responder_psk() {
    handshake_and_traffic::<RustCrypto>(12, true, true);
}

#[test]
fn boringtun_initiator_omni_responder_no_psk() {
    handshake_and_traffic::<RustCrypto>(13, false, false);
}

#[test]
fn boringtun_initiator_omni_responder_psk() {
    handshake_and_traffic::<RustCrypto>(14, false, true);
}

#[cfg(feature = "ring")]
#[test]
fn ring_provider_interop_all_roles() {
    use omni_core::crypto::Ring;
    handshake_and_traffic::<Ring>(15, true, false);
    handshake_and_traffic::<Ring>(16, true, true);
    handshake_and_traffic::<Ring>(17, false, false);
    handshake_and_traffic::<Ring>(18, false, true);
}

/// Successive handshakes on the same pair, alternating initiators: each new
/// session replaces the previous one on both sides and data keeps flowing.
#[test]
fn rekeys_alternating_initiators_keep_data_flowing() {
    let key = psk(20);
    let mut h = Harness::<RustCrypto>::new(Setup {
        seed: 20,
        omni_psk: Some(key),
        bt_psk: Some(key),
        omni_knows_endpoint: true,
        ..Default::default()
    });
    h.handshake_omni_initiates(true);
    h.exchange(20);
    for round in 0..3 {
        // Past Rekey-Timeout and the initiation rate limits of both sides.
        h.advance(Duration::from_secs(6));
        h.handshake_bt_initiates(false);
        h.exchange(20);
        h.advance(Duration::from_secs(6));
        h.handshake_omni_initiates(false);
        h.exchange(20 + round);
    }
    h.reorder_and_replay();
    h.assert_omni_byte_counters();
}

// ----- 3: cookie replies ---------------------------------------------------------

/// boringtun under load answers omni-core's initiation with a cookie reply;
/// omni-core absorbs it (no roaming, nothing sent), and its retransmission
/// after the retransmit timer carries a MAC2 boringtun accepts.
#[test]
fn omni_honours_boringtun_cookie_reply() {
    let mut h = Harness::<RustCrypto>::new(Setup {
        seed: 30,
        bt_under_load: true,
        omni_knows_endpoint: true,
        ..Default::default()
    });
    let first = h.packet(false, true, 200);
    assert_eq!(h.omni_send_ip(&first), Sent::Queued { peer: h.peer });
    let init1 = h.omni_poll().expect("initiation");
    assert_eq!(&init1[132..148], &[0u8; 16]);

    let cookie = match h.bt_recv(&init1) {
        Bt::Net(c) => c,
        other => panic!("boringtun under load should answer with a cookie reply: {other:?}"),
    };
    assert_eq!(cookie.len(), 64);
    assert_eq!(&cookie[..4], &[3, 0, 0, 0]);
    assert_eq!(le_u32(&cookie, 4), le_u32(&init1, 4));

    // A tampered cookie reply is refused without effect.
    let mut bad = cookie.clone();
    bad[40] ^= 1;
    assert_eq!(h.omni_recv(&bad).unwrap_err(), RecvError::BadCookie);

    // The real one is absorbed, even from another address, without roaming.
    let elsewhere: SocketAddr = "203.0.113.9:4444".parse().unwrap();
    assert_eq!(h.omni_recv_from(elsewhere, &cookie).expect("cookie absorbed").0, Received::Done);
    assert!(h.events().is_empty(), "a cookie reply is unauthenticated: no roaming");
    assert_eq!(h.omni.peer_stats(h.peer).unwrap().endpoint, Some(h.bt_addr));
    assert!(!h.omni.peer_stats(h.peer).unwrap().has_session);
    assert!(h.omni_poll().is_none(), "the cookie alone triggers no retransmission");

    // Nothing until the retransmit timer: Rekey-Timeout (5 s) + jitter (< 334 ms).
    h.advance(Duration::from_secs(4));
    h.omni.handle_timeout(h.now);
    assert!(h.omni_poll().is_none());
    h.advance(Duration::from_millis(1400));
    let deadline = h.omni.poll_timeout().expect("retransmit timer armed");
    assert!(deadline <= h.now, "retransmit deadline {deadline:?} should be due by {:?}", h.now);
    h.omni.handle_timeout(h.now);
    let init2 = h.omni_poll().expect("retransmitted initiation");
    assert_eq!(init2.len(), 148);
    assert_ne!(le_u32(&init2, 4), le_u32(&init1, 4), "a retransmission is a new handshake");
    assert_ne!(&init2[132..148], &[0u8; 16], "the retransmission carries MAC2");

    // boringtun really checks that MAC2: a corrupted one earns another cookie.
    let mut bad_mac2 = init2.clone();
    bad_mac2[147] ^= 1;
    match h.bt_recv(&bad_mac2) {
        Bt::Net(c) => assert_eq!((c.len(), c[0]), (64, 3)),
        other => panic!("{other:?}"),
    }
    let resp = match h.bt_recv(&init2) {
        Bt::Net(r) => r,
        other => panic!("boringtun rejected the cookie-stamped initiation: {other:?}"),
    };
    assert_eq!(resp.len(), 92, "boringtun answered with a handshake response, not another cookie");
    assert_eq!(h.omni_recv(&resp).expect("response").0, Received::Done);
    assert!(h.events().contains(&Event::HandshakeCompleted { peer: h.peer, initiator: true }));
    let data = h.omni_poll().expect("the packet queued before the handshake");
    assert!(h.omni_poll().is_none());
    h.bt_expect_packet(&data, &first);

    h.exchange(40);
    h.assert_omni_byte_counters();
}

/// omni-core under load answers boringtun's initiation with a cookie reply
/// (no crypto, no state); boringtun absorbs it and its next initiation,
/// stamped with MAC2, is accepted.
#[test]
fn boringtun_honours_omni_cookie_reply() {
    let mut h = Harness::<RustCrypto>::new(Setup { seed: 40, omni_under_load: true, ..Default::default() });
    let first = h.packet(true, false, 300);
    let init1 = match h.bt_encapsulate(&first) {
        Bt::Net(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(init1.len(), 148);

    let cookie = match h.omni_recv(&init1) {
        Ok((Received::Reply { len: 64 }, c)) => c,
        other => panic!("omni-core under load should send a cookie reply: {other:?}"),
    };
    assert!(h.omni.is_under_load(h.now));
    assert_eq!(&cookie[..4], &[3, 0, 0, 0]);
    assert_eq!(le_u32(&cookie, 4), le_u32(&init1, 4), "cookie reply addressed to boringtun's sender index");
    assert!(h.events().is_empty(), "nothing is learned from an unproven initiation");
    let stats = h.omni.peer_stats(h.peer).unwrap();
    assert_eq!(stats.endpoint, None, "no roaming before the source proved its address");
    assert!(!stats.has_session);

    assert!(matches!(h.bt_recv(&cookie), Bt::Done), "boringtun absorbs omni-core's cookie");

    // boringtun would retry after its own Rekey-Timeout on its real clock;
    // force the retry instead of sleeping.
    let init2 = h.bt_force_initiation();
    assert_eq!(init2.len(), 148);
    assert_ne!(&init2[132..148], &[0u8; 16], "boringtun stamped MAC2 with omni-core's cookie");
    h.advance(Duration::from_millis(100));

    // The cookie is bound to the source address and port it was issued to.
    let other_port = SocketAddr::new(h.bt_addr.ip(), h.bt_addr.port() + 1);
    match h.omni_recv_from(other_port, &init2) {
        Ok((Received::Reply { len: 64 }, _)) => {}
        other => panic!("a cookie from another source port must not pass: {other:?}"),
    }
    assert!(h.events().is_empty());

    let resp = match h.omni_recv(&init2) {
        Ok((Received::Reply { len: 92 }, r)) => r,
        other => panic!("omni-core should accept the cookie-stamped initiation: {other:?}"),
    };
    assert_eq!(
        h.events(),
        vec![Event::EndpointChanged { peer: h.peer, endpoint: h.bt_addr }],
        "the proven initiation sets the endpoint"
    );
    let keepalive = match h.bt_recv(&resp) {
        Bt::Net(k) => k,
        other => panic!("boringtun rejected omni-core's response: {other:?}"),
    };
    let queued = h.bt_drain();
    assert_eq!(queued.len(), 1);
    assert_eq!(h.omni_recv(&keepalive).unwrap().0, Received::Done);
    assert!(h.events().contains(&Event::HandshakeCompleted { peer: h.peer, initiator: false }));
    h.omni_expect_packet(&queued[0], &first);

    h.exchange(40);
    h.assert_omni_byte_counters();
}

// ----- 4: wrong keys fail cleanly -------------------------------------------------

#[test]
fn wrong_static_keys_fail_cleanly() {
    let stranger = public_of(random_key(0xbad));

    // boringtun addresses its initiation to a key that is not omni-core's: MAC1 fails.
    let mut h = Harness::<RustCrypto>::new(Setup { seed: 50, bt_thinks_omni_is: Some(stranger), ..Default::default() });
    let init = match h.bt_encapsulate(&[0x45; 20]) {
        Bt::Net(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.omni_recv(&init).unwrap_err(), RecvError::BadMac1);
    assert!(h.events().is_empty());

    // boringtun knows omni-core, but omni-core does not know boringtun.
    let mut h = Harness::<RustCrypto>::new(Setup { seed: 51, omni_thinks_bt_is: Some(stranger), ..Default::default() });
    let init = match h.bt_encapsulate(&[0x45; 20]) {
        Bt::Net(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.omni_recv(&init).unwrap_err(), RecvError::UnknownPeer);
    assert!(h.events().is_empty());
    assert!(!h.omni.peer_stats(h.peer).unwrap().has_session);

    // omni-core addresses its initiation to a key that is not boringtun's.
    let mut h = Harness::<RustCrypto>::new(Setup {
        seed: 52,
        omni_knows_endpoint: true,
        omni_thinks_bt_is: Some(stranger),
        ..Default::default()
    });
    assert!(h.omni.initiate(h.now, h.peer));
    let init = h.omni_poll().unwrap();
    assert!(matches!(h.bt_recv(&init), Bt::Err(WireGuardError::InvalidMac)));

    // boringtun expects another peer: it decrypts omni-core's static key and refuses it.
    let mut h = Harness::<RustCrypto>::new(Setup {
        seed: 53,
        omni_knows_endpoint: true,
        bt_thinks_omni_is: Some(stranger),
        ..Default::default()
    });
    assert!(h.omni.initiate(h.now, h.peer));
    let init = h.omni_poll().unwrap();
    assert!(matches!(h.bt_recv(&init), Bt::Err(WireGuardError::WrongKey)));

    // A response whose bytes were altered in flight fails MAC1; a response
    // to an initiation omni-core never sent names no index of ours. Neither
    // disturbs the handshake in progress.
    let mut h = Harness::<RustCrypto>::new(Setup { seed: 54, omni_knows_endpoint: true, ..Default::default() });
    assert!(h.omni.initiate(h.now, h.peer));
    let init = h.omni_poll().unwrap();
    let resp = match h.bt_recv(&init) {
        Bt::Net(r) => r,
        other => panic!("{other:?}"),
    };
    let mut tampered = resp.clone();
    tampered[20] ^= 1;
    assert_eq!(h.omni_recv(&tampered).unwrap_err(), RecvError::BadMac1);
    let stray = {
        let mut other = Harness::<RustCrypto>::new(Setup { seed: 55, omni_knows_endpoint: true, ..Default::default() });
        assert!(other.omni.initiate(other.now, other.peer));
        let i = other.omni_poll().unwrap();
        match other.bt_recv(&i) {
            Bt::Net(r) => r,
            x => panic!("{x:?}"),
        }
    };
    // Addressed to the other omni-core node's key: not even MAC1 matches.
    assert_eq!(h.omni_recv(&stray).unwrap_err(), RecvError::BadMac1);
    assert!(h.events().is_empty());
    assert_eq!(h.omni_recv(&resp).expect("the genuine response still completes").0, Received::Done);
    assert!(h.events().contains(&Event::HandshakeCompleted { peer: h.peer, initiator: true }));
}

#[test]
fn wrong_psk_fails_cleanly() {
    for (seed, omni_psk, bt_psk) in
        [(60, Some(psk(60)), Some(psk(61))), (62, Some(psk(62)), None), (63, None, Some(psk(63)))]
    {
        // omni-core initiates: boringtun cannot tell (the PSK enters only at
        // the response), so omni-core is the one to refuse the response.
        let mut h = Harness::<RustCrypto>::new(Setup {
            seed,
            omni_psk,
            bt_psk,
            omni_knows_endpoint: true,
            ..Default::default()
        });
        let pkt = h.packet(false, true, 100);
        assert_eq!(h.omni_send_ip(&pkt), Sent::Queued { peer: h.peer });
        let init = h.omni_poll().unwrap();
        let resp = match h.bt_recv(&init) {
            Bt::Net(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(resp.len(), 92);
        assert_eq!(h.omni_recv(&resp).unwrap_err(), RecvError::Handshake(HandshakeError::Decrypt));
        assert!(h.events().is_empty());
        assert!(!h.omni.peer_stats(h.peer).unwrap().has_session);
        assert!(h.omni_poll().is_none(), "the queued packet stays queued");
        // Still no session: a new packet is queued, not sent.
        let pkt = h.packet(false, true, 100);
        assert_eq!(h.omni_send_ip(&pkt), Sent::Queued { peer: h.peer });

        // boringtun initiates: omni-core answers (it cannot tell either), and
        // boringtun refuses the response; omni-core's session is never confirmed.
        let mut h = Harness::<RustCrypto>::new(Setup { seed: seed + 100, omni_psk, bt_psk, ..Default::default() });
        let init = match h.bt_encapsulate(&ipv4_packet(BT_V4, OMNI_V4, 40, &mut ChaCha20Rng::seed_from_u64(seed))) {
            Bt::Net(d) => d,
            other => panic!("{other:?}"),
        };
        let resp = match h.omni_recv(&init) {
            Ok((Received::Reply { len: 92 }, r)) => r,
            other => panic!("{other:?}"),
        };
        assert!(matches!(h.bt_recv(&resp), Bt::Err(WireGuardError::InvalidAeadTag)));
        assert!(h.bt_drain().is_empty());
        let ev = h.events();
        assert!(!ev.iter().any(|e| matches!(e, Event::HandshakeCompleted { .. })), "{ev:?}");
        let pkt = h.packet(false, true, 100);
        assert_eq!(h.omni_send_ip(&pkt), Sent::Queued { peer: h.peer }, "an unconfirmed session carries no data");
    }
}

/// Damaged boringtun datagrams are refused with errors, never panics, and do
/// not disturb the session.
#[test]
fn damaged_boringtun_datagrams_are_rejected() {
    let mut h = Harness::<RustCrypto>::new(Setup { seed: 70, omni_knows_endpoint: true, ..Default::default() });
    h.handshake_omni_initiates(true);
    let pkt = h.packet(false, false, 500);
    let wire = h.bt_seal(&pkt);

    let mut flipped = wire.clone();
    flipped[100] ^= 0x80;
    assert_eq!(h.omni_recv(&flipped).unwrap_err(), RecvError::Decrypt);
    let mut wrong_index = wire.clone();
    wrong_index[4] ^= 0xff;
    assert_eq!(h.omni_recv(&wrong_index).unwrap_err(), RecvError::UnknownIndex);
    assert!(matches!(h.omni_recv(&wire[..20]).unwrap_err(), RecvError::Malformed(_) | RecvError::Decrypt));
    for cut in [0, 1, 3, 4, 15] {
        assert!(matches!(h.omni_recv(&wire[..cut]).unwrap_err(), RecvError::Malformed(_)));
    }
    // A packet whose inner source is not boringtun's allowed IP.
    let spoofed = ipv4_packet(Ipv4Addr::new(10, 9, 9, 9), OMNI_V4, 64, &mut h.rng);
    let w = h.bt_seal(&spoofed);
    assert_eq!(h.omni_recv(&w).unwrap_err(), RecvError::DisallowedSource { peer: h.peer });
    // Not IP at all.
    let w = h.bt_seal(&[0x00; 48]);
    assert_eq!(h.omni_recv(&w).unwrap_err(), RecvError::NotIp);
    // An IPv4 length field claiming more than was sent.
    let mut lying = h.packet(false, false, 100);
    lying[2..4].copy_from_slice(&200u16.to_be_bytes());
    let w = h.bt_seal(&lying);
    assert!(h.omni_recv(&w).is_err(), "a packet shorter than its IP length field is dropped");

    // The untouched original still goes through: the session is intact.
    h.omni_expect_packet(&wire, &pkt);
    h.exchange(10);
}
