//! A deterministic network simulator for omni-core, modelled on quinn-proto's
//! test `Pair`: N nodes, a virtual clock, a priority queue of datagrams in
//! flight with per-link latency, jitter (hence reordering), loss and
//! duplication, all drawn from one seeded RNG. The same seed gives the same run.
//!
//! The driver follows the calling rules documented on [`omni_core::Node`]:
//! time advances to the earliest of the next delivery and every node's
//! `poll_timeout()`; `handle_timeout` then runs for due nodes, due datagrams
//! go through `handle_datagram` (a `Received::Reply` goes back to the source),
//! and `poll_transmit` / `poll_event` are drained after every call.
//!
//! Everything a test may want to check is recorded: per node, every datagram
//! sent ([`TxRecord`], with the age of the session a transport message was
//! sealed with) and received ([`RxRecord`], with the node's verdict), the
//! decrypted packets ([`SimNode::inbox`]), the events; for the network, every
//! datagram dropped and why ([`DropRecord`]), and optionally every datagram
//! delivered ([`Sim::capture`]) for replays. A filter can drop or steal
//! datagrams; [`Sim::inject`] and [`Sim::deliver_now`] play the attacker.
#![allow(dead_code)]

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, RecvError, SendError, Sent};
use omni_core::storage::Heap;
use omni_core::{AllowedIp, Event, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub type N = Node<RustCrypto, ChaCha20Rng, Heap>;

/// Wall clock (Unix seconds) at simulated time zero.
pub const WALL_BASE_SECS: u64 = 1_700_000_000;

pub const MSG_INITIATION: u32 = 1;
pub const MSG_RESPONSE: u32 = 2;
pub const MSG_COOKIE_REPLY: u32 = 3;
pub const MSG_TRANSPORT: u32 = 4;
/// A transport message with an empty payload.
pub const KEEPALIVE_LEN: usize = 32;

/// Message type of a datagram (0 if it is not a WireGuard message type).
pub fn kind(data: &[u8]) -> u32 {
    data.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// Little-endian u32 at `off` (sender/receiver indexes).
pub fn le32(data: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(data[off..off + 4].try_into().unwrap())
}

/// Counter of a transport message.
pub fn counter(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[8..16].try_into().unwrap())
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// `b - a` in seconds (floating, for readable assertions).
pub fn elapsed(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64()
}

pub fn fmt_t(t: Instant) -> String {
    format!("{:.3}s", t.as_nanos() as f64 / 1e9)
}

/// A minimal IPv4/UDP packet with a correct header checksum.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let len = 20 + 8 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for i in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    // UDP header (checksum 0 = none, legal for IPv4).
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&4000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Properties of a one-way link.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Minimum one-way latency.
    pub latency: Duration,
    /// Extra latency drawn uniformly from `[0, jitter)` per datagram: reorders
    /// datagrams sent closer together than the jitter.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (independent latencies).
    pub duplicate: f64,
}

impl Link {
    pub fn ideal(latency_ms: u64) -> Self {
        Link { latency: Duration::from_millis(latency_ms), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }
    /// Latency uniform in `[min_ms, max_ms)`.
    pub fn lossy(min_ms: u64, max_ms: u64, loss: f64, duplicate: f64) -> Self {
        Link { latency: Duration::from_millis(min_ms), jitter: Duration::from_millis(max_ms - min_ms), loss, duplicate }
    }
    /// Drops everything (a cut cable / firewall).
    pub fn down() -> Self {
        Link { loss: 1.0, ..Link::ideal(10) }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::ideal(20)
    }
}

#[derive(Clone, Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
    pub sent_at: Instant,
    /// Put on the wire by [`Sim::inject`] rather than by a node.
    pub injected: bool,
}

impl Datagram {
    pub fn kind(&self) -> u32 {
        kind(&self.data)
    }
}

struct Scheduled {
    at: Instant,
    seq: u64,
    dgram: Datagram,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A datagram a node put on the wire (through `poll_transmit`, `send_ip` or a reply).
#[derive(Clone, Debug)]
pub struct TxRecord {
    pub at: Instant,
    pub to: SocketAddr,
    pub len: usize,
    pub kind: u32,
    /// Transport messages: the age of the session that sealed it (as far as
    /// the simulator saw the session being created), `None` if unknown.
    pub session_age: Option<Duration>,
    /// Transport messages: the receiver index.
    pub receiver: Option<u32>,
}

impl TxRecord {
    pub fn is_keepalive(&self) -> bool {
        self.kind == MSG_TRANSPORT && self.len == KEEPALIVE_LEN
    }
    pub fn is_data(&self) -> bool {
        self.kind == MSG_TRANSPORT && self.len > KEEPALIVE_LEN
    }
}

/// A datagram handed to a node's `handle_datagram`, with the verdict.
#[derive(Clone, Debug)]
pub struct RxRecord {
    pub at: Instant,
    pub from: SocketAddr,
    pub len: usize,
    pub kind: u32,
    pub result: Result<Received, RecvError>,
    pub injected: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The link's loss probability.
    Loss,
    /// The test's filter.
    Filtered,
    /// No node has the destination address (roamed away, or an attacker's spoofed source).
    Unroutable,
}

#[derive(Clone, Debug)]
pub struct DropRecord {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub len: usize,
    pub kind: u32,
    pub reason: DropReason,
}

/// A decrypted packet a node handed to its "TUN device".
#[derive(Clone, Debug)]
pub struct Delivered {
    pub at: Instant,
    pub peer: PeerId,
    pub packet: Vec<u8>,
}

pub struct SimNode {
    pub name: String,
    pub secret: StaticSecret,
    pub public: PublicKey,
    /// Tunnel address (its allowed IP at the peers).
    pub ip: Ipv4Addr,
    /// Current UDP address.
    pub addr: SocketAddr,
    pub config: NodeConfig,
    pub node: N,
    /// Incremented by [`Sim::restart`].
    pub generation: u32,
    pub inbox: Vec<Delivered>,
    pub events: Vec<(Instant, Event)>,
    pub tx: Vec<TxRecord>,
    pub rx: Vec<RxRecord>,
    /// Peers as configured (re-applied on restart): (node index, config).
    peer_configs: Vec<(usize, PeerConfig)>,
    /// Peer id of each other node.
    peer_ids: HashMap<usize, PeerId>,
    /// Creation time of our sessions, keyed by the remote index (the receiver
    /// index we put on transport messages).
    sessions: HashMap<u32, Instant>,
}

impl SimNode {
    pub fn count_tx(&self, pred: impl Fn(&TxRecord) -> bool) -> usize {
        self.tx.iter().filter(|r| pred(r)).count()
    }
    pub fn count_rx(&self, pred: impl Fn(&RxRecord) -> bool) -> usize {
        self.rx.iter().filter(|r| pred(r)).count()
    }
    pub fn handshakes_completed(&self) -> usize {
        self.events.iter().filter(|(_, e)| matches!(e, Event::HandshakeCompleted { .. })).count()
    }
    pub fn has_event(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, e)| pred(e))
    }
}

pub type Filter = Box<dyn FnMut(Instant, &Datagram) -> bool>;

pub struct Sim {
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    pub seed: u64,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    /// Network randomness (loss, duplication, latency).
    rng: ChaCha20Rng,
    /// Key generation.
    key_rng: ChaCha20Rng,
    pub default_link: Link,
    links: HashMap<(usize, usize), Link>,
    filter: Option<Filter>,
    /// When set, every datagram handed to a node is also kept in `captured`.
    pub capture: bool,
    pub captured: Vec<(Instant, Datagram)>,
    pub dropped: Vec<DropRecord>,
    /// Datagrams the network delivered twice.
    pub duplicated: usize,
    buf: Vec<u8>,
    /// Iterations of the driver loop (for a busy-loop guard).
    pub steps: u64,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        Sim {
            now: Instant::ZERO,
            nodes: Vec::new(),
            seed,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            key_rng: ChaCha20Rng::seed_from_u64(seed ^ 0x6b65_7973),
            default_link: Link::default(),
            links: HashMap::new(),
            filter: None,
            capture: false,
            captured: Vec::new(),
            dropped: Vec::new(),
            duplicated: 0,
            buf: vec![0u8; 4096],
            steps: 0,
        }
    }

    // ----- topology ------------------------------------------------------

    /// Wall clock of a node whose clock is right.
    pub fn true_wall(&self) -> WallTime {
        let n = self.now.as_nanos();
        WallTime::new(WALL_BASE_SECS + n / 1_000_000_000, (n % 1_000_000_000) as u32)
    }

    fn node_rng(&self, idx: usize, generation: u32) -> ChaCha20Rng {
        let s = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((idx as u64) << 32) ^ u64::from(generation);
        ChaCha20Rng::seed_from_u64(s)
    }

    /// Adds a node with a fresh key, tunnel address 10.0.0.(idx+1) and the
    /// given UDP address. Its wall clock is set right.
    pub fn add_node(&mut self, name: &str, addr: SocketAddr) -> usize {
        self.add_node_with(name, addr, NodeConfig::default())
    }

    pub fn add_node_with(&mut self, name: &str, addr: SocketAddr, config: NodeConfig) -> usize {
        let idx = self.nodes.len();
        let secret = StaticSecret::random(&mut self.key_rng);
        let public = secret.public_key::<RustCrypto>();
        let config = NodeConfig { private_key: Some(secret.clone()), ..config };
        let mut node = N::new(config.clone(), self.node_rng(idx, 0));
        node.set_wall_time(self.now, self.true_wall());
        self.nodes.push(SimNode {
            name: name.to_string(),
            secret,
            public,
            ip: Ipv4Addr::new(10, 0, 0, (idx + 1) as u8),
            addr,
            config,
            node,
            generation: 0,
            inbox: Vec::new(),
            events: Vec::new(),
            tx: Vec::new(),
            rx: Vec::new(),
            peer_configs: Vec::new(),
            peer_ids: HashMap::new(),
            sessions: HashMap::new(),
        });
        idx
    }

    /// Makes `b` a peer of `a`: public key, allowed IP `b.ip/32`, and `b`'s
    /// current address as endpoint if `with_endpoint`.
    pub fn add_peer(&mut self, a: usize, b: usize, with_endpoint: bool, persistent_keepalive: Option<u16>) -> PeerId {
        let cfg = PeerConfig {
            endpoint: with_endpoint.then_some(self.nodes[b].addr),
            persistent_keepalive,
            ..PeerConfig::new(self.nodes[b].public)
        };
        self.nodes[a].peer_configs.push((b, cfg.clone()));
        let id = self.configure_peer(a, b, cfg);
        self.drain(a);
        id
    }

    fn configure_peer(&mut self, a: usize, b: usize, cfg: PeerConfig) -> PeerId {
        let now = self.now;
        let ip = self.nodes[b].ip;
        let n = &mut self.nodes[a];
        let id = n.node.add_peer(now, cfg).expect("add_peer");
        n.node.add_allowed_ip(id, AllowedIp::new(IpAddr::V4(ip), 32).unwrap()).expect("allowed ip");
        n.peer_ids.insert(b, id);
        id
    }

    /// Peers `a` and `b` with each other, both knowing the other's endpoint.
    pub fn connect(&mut self, a: usize, b: usize) -> (PeerId, PeerId) {
        (self.add_peer(a, b, true, None), self.add_peer(b, a, true, None))
    }

    /// The id under which node `a` knows node `b`.
    pub fn peer_id(&self, a: usize, b: usize) -> PeerId {
        self.nodes[a].peer_ids[&b]
    }

    pub fn endpoint_of(&self, a: usize, b: usize) -> Option<SocketAddr> {
        self.nodes[a].node.peer_stats(self.peer_id(a, b)).unwrap().endpoint
    }

    /// Replaces node `idx` by a fresh `Node` with the same key and peer
    /// configuration (all session state lost, as after a reboot), whose
    /// wall clock reads `wall` now.
    pub fn restart(&mut self, idx: usize, wall: WallTime) {
        let generation = self.nodes[idx].generation + 1;
        let rng = self.node_rng(idx, generation);
        let now = self.now;
        let n = &mut self.nodes[idx];
        n.generation = generation;
        n.node = N::new(n.config.clone(), rng);
        n.node.set_wall_time(now, wall);
        n.peer_ids.clear();
        n.sessions.clear();
        let cfgs = n.peer_configs.clone();
        for (b, cfg) in cfgs {
            self.configure_peer(idx, b, cfg);
        }
        self.drain(idx);
    }

    /// Moves a node to a new UDP address (roaming). Datagrams in flight to
    /// the old address are lost.
    pub fn set_addr(&mut self, idx: usize, addr: SocketAddr) {
        self.nodes[idx].addr = addr;
    }

    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.links.insert((from, to), link);
    }

    pub fn set_links_both(&mut self, a: usize, b: usize, link: Link) {
        self.set_link(a, b, link);
        self.set_link(b, a, link);
    }

    /// Installs a filter run on each datagram just before delivery: `false`
    /// drops it (the closure may keep a copy: an on-path attacker).
    pub fn set_filter(&mut self, f: impl FnMut(Instant, &Datagram) -> bool + 'static) {
        self.filter = Some(Box::new(f));
    }

    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// A filter that steals (drops and keeps) datagrams matching `pred`;
    /// returns the stash.
    pub fn steal(&mut self, mut pred: impl FnMut(Instant, &Datagram) -> bool + 'static) -> Rc<RefCell<Vec<Datagram>>> {
        let stash = Rc::new(RefCell::new(Vec::new()));
        let s = stash.clone();
        self.set_filter(move |t, d| {
            if pred(t, d) {
                s.borrow_mut().push(d.clone());
                false
            } else {
                true
            }
        });
        stash
    }

    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    // ----- the host side: application traffic ----------------------------

    /// The TUN device of `from` hands the node a packet.
    pub fn send_ip(&mut self, from: usize, packet: &[u8]) -> Result<Sent, SendError> {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.nodes[from].node.send_ip(now, packet, &mut buf);
        if let Ok(Sent::Transmit(t)) = r {
            self.record_tx(from, t.to, &buf[..t.len]);
            let src = self.nodes[from].addr;
            self.emit(src, t.to, buf[..t.len].to_vec());
        }
        self.buf = buf;
        self.drain(from);
        r
    }

    /// Sends an IPv4/UDP packet from `from`'s tunnel address to `to`'s.
    pub fn send_udp(&mut self, from: usize, to: usize, payload: &[u8]) -> Result<Sent, SendError> {
        let p = ipv4_udp(self.nodes[from].ip, self.nodes[to].ip, payload);
        self.send_ip(from, &p)
    }

    // ----- the attacker side --------------------------------------------

    /// Puts a datagram on the wire, arriving after `delay` (no loss, no jitter).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>, delay: Duration) {
        let at = self.now + delay;
        self.schedule(at, Datagram { from, to, data, sent_at: self.now, injected: true });
    }

    /// Hands a datagram to node `idx` right now and returns its verdict
    /// (replies go out on the network as usual).
    pub fn deliver_now(&mut self, idx: usize, from: SocketAddr, data: &[u8]) -> Result<Received, RecvError> {
        self.handle(idx, from, data, true)
    }

    // ----- the driver ------------------------------------------------------

    fn schedule(&mut self, at: Instant, dgram: Datagram) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, dgram });
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A node sends a datagram: apply the link model.
    fn emit(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let link = match (self.node_at(from), self.node_at(to)) {
            (Some(a), Some(b)) => self.links.get(&(a, b)).copied().unwrap_or(self.default_link),
            _ => self.default_link,
        };
        if self.uniform() < link.loss {
            self.dropped.push(DropRecord {
                at: self.now,
                from,
                to,
                len: data.len(),
                kind: kind(&data),
                reason: DropReason::Loss,
            });
            return;
        }
        let copies = if self.uniform() < link.duplicate { 2 } else { 1 };
        if copies == 2 {
            self.duplicated += 1;
        }
        for _ in 0..copies {
            let j = link.jitter.mul_f64(self.uniform());
            let at = self.now + link.latency + j;
            self.schedule(at, Datagram { from, to, data: data.clone(), sent_at: self.now, injected: false });
        }
    }

    fn record_tx(&mut self, idx: usize, to: SocketAddr, data: &[u8]) {
        let now = self.now;
        let n = &mut self.nodes[idx];
        let k = kind(data);
        let (receiver, session_age) = if k == MSG_TRANSPORT {
            let r = le32(data, 4);
            (Some(r), n.sessions.get(&r).map(|&c| now.saturating_duration_since(c)))
        } else {
            (None, None)
        };
        n.tx.push(TxRecord { at: now, to, len: data.len(), kind: k, session_age, receiver });
    }

    /// Drains `poll_transmit` and `poll_event` of node `idx`.
    fn drain(&mut self, idx: usize) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            match self.nodes[idx].node.poll_transmit(now, &mut buf) {
                Ok(Some(t)) => {
                    self.record_tx(idx, t.to, &buf[..t.len]);
                    let src = self.nodes[idx].addr;
                    self.emit(src, t.to, buf[..t.len].to_vec());
                }
                Ok(None) => break,
                Err(e) => panic!("{}: poll_transmit failed at {}: {e:?}", self.nodes[idx].name, fmt_t(now)),
            }
        }
        self.buf = buf;
        let n = &mut self.nodes[idx];
        while let Some(e) = n.node.poll_event() {
            n.events.push((now, e));
        }
    }

    fn handle(&mut self, idx: usize, from: SocketAddr, data: &[u8], injected: bool) -> Result<Received, RecvError> {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < data.len() {
            buf.resize(data.len(), 0);
        }
        let k = kind(data);
        let r = self.nodes[idx].node.handle_datagram(now, from, data, &mut buf);
        self.nodes[idx].rx.push(RxRecord { at: now, from, len: data.len(), kind: k, result: r, injected });
        match r {
            Ok(Received::Reply { len }) => {
                if k == MSG_INITIATION && len == 92 && kind(&buf[..len]) == MSG_RESPONSE {
                    // We answered as responder: a session with the initiator's index.
                    self.nodes[idx].sessions.insert(le32(data, 4), now);
                }
                self.record_tx(idx, from, &buf[..len]);
                let src = self.nodes[idx].addr;
                self.emit(src, from, buf[..len].to_vec());
            }
            Ok(Received::Packet { peer, len }) => {
                self.nodes[idx].inbox.push(Delivered { at: now, peer, packet: buf[..len].to_vec() });
            }
            Ok(Received::Done) => {
                if k == MSG_RESPONSE {
                    // Our initiation was answered: a session with the responder's index.
                    self.nodes[idx].sessions.insert(le32(data, 4), now);
                }
            }
            Err(_) => {}
        }
        self.buf = buf;
        self.drain(idx);
        r
    }

    fn deliver(&mut self, d: Datagram) {
        if let Some(f) = self.filter.as_mut() {
            if !f(self.now, &d) {
                self.dropped.push(DropRecord {
                    at: self.now,
                    from: d.from,
                    to: d.to,
                    len: d.data.len(),
                    kind: d.kind(),
                    reason: DropReason::Filtered,
                });
                return;
            }
        }
        let Some(idx) = self.node_at(d.to) else {
            self.dropped.push(DropRecord {
                at: self.now,
                from: d.from,
                to: d.to,
                len: d.data.len(),
                kind: d.kind(),
                reason: DropReason::Unroutable,
            });
            return;
        };
        if self.capture {
            self.captured.push((self.now, d.clone()));
        }
        let _ = self.handle(idx, d.from, &d.data, d.injected);
    }

    /// The next moment something happens: a delivery or a node's timer.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|s| s.at);
        let t = self.nodes.iter().filter_map(|n| n.node.poll_timeout()).min();
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the network until `end` (inclusive); the clock ends at `end`.
    pub fn run_until(&mut self, end: Instant) {
        let mut same_instant = 0u32;
        while let Some(t) = self.next_wakeup() {
            if t > end {
                break;
            }
            if t <= self.now {
                same_instant += 1;
                assert!(same_instant < 100_000, "busy loop at {}", fmt_t(self.now));
            } else {
                same_instant = 0;
                self.now = t;
            }
            self.steps += 1;
            let now = self.now;
            for i in 0..self.nodes.len() {
                if self.nodes[i].node.poll_timeout().is_some_and(|d| d <= now) {
                    self.nodes[i].node.handle_timeout(now);
                    self.drain(i);
                    if let Some(d) = self.nodes[i].node.poll_timeout() {
                        assert!(
                            d > now,
                            "{}: poll_timeout {} not after handle_timeout({})",
                            self.nodes[i].name,
                            fmt_t(d),
                            fmt_t(now)
                        );
                    }
                }
            }
            while self.queue.peek().is_some_and(|s| s.at <= now) {
                let s = self.queue.pop().unwrap();
                self.deliver(s.dgram);
            }
        }
        if end > self.now {
            self.now = end;
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Datagrams still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Datagrams the network dropped that match `pred`.
    pub fn count_dropped(&self, pred: impl Fn(&DropRecord) -> bool) -> usize {
        self.dropped.iter().filter(|d| pred(d)).count()
    }

    /// A digest of everything observable, for determinism checks.
    pub fn trace_digest(&self) -> u64 {
        // FNV-1a over a textual trace.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: &str| {
            for b in s.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for n in &self.nodes {
            for r in &n.tx {
                eat(&format!("T{} {:?} {} {}|", r.at.as_nanos(), r.to, r.len, r.kind));
            }
            for r in &n.rx {
                eat(&format!("R{} {:?} {} {:?}|", r.at.as_nanos(), r.from, r.len, r.result));
            }
            for d in &n.inbox {
                eat(&format!("I{} {:?}|", d.at.as_nanos(), d.packet));
            }
            for (t, e) in &n.events {
                eat(&format!("E{} {:?}|", t.as_nanos(), e));
            }
        }
        for d in &self.dropped {
            eat(&format!("D{} {:?}|", d.at.as_nanos(), d));
        }
        h
    }
}

// ----- application traffic with sequence numbers ---------------------------

/// One direction of application traffic: `from` sends numbered UDP packets
/// to `to` at random intervals, sometimes in bursts (which the link jitter
/// reorders).
pub struct Flow {
    pub id: u32,
    pub from: usize,
    pub to: usize,
    pub min_gap: Duration,
    pub max_gap: Duration,
    /// Up to this many packets are sent at once.
    pub max_burst: u32,
    pub next_at: Instant,
    pub next_seq: u64,
    /// (seq, time handed to `send_ip`, result was Ok).
    pub sent: Vec<(u64, Instant, bool)>,
    rng: ChaCha20Rng,
}

impl Flow {
    pub fn new(id: u32, from: usize, to: usize, start: Instant, min_gap_ms: u64, max_gap_ms: u64, seed: u64) -> Self {
        Flow {
            id,
            from,
            to,
            min_gap: Duration::from_millis(min_gap_ms),
            max_gap: Duration::from_millis(max_gap_ms),
            max_burst: 1,
            next_at: start,
            next_seq: 0,
            sent: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(seed ^ u64::from(id).wrapping_mul(0x5851_f42d_4c95_7f2d)),
        }
    }

    pub fn with_bursts(mut self, max_burst: u32) -> Self {
        self.max_burst = max_burst.max(1);
        self
    }

    fn fire(&mut self, sim: &mut Sim) {
        let burst = 1 + self.rng.next_u32() % self.max_burst;
        for _ in 0..burst {
            let mut payload = Vec::new();
            payload.extend_from_slice(&self.id.to_be_bytes());
            payload.extend_from_slice(&self.next_seq.to_be_bytes());
            let extra = (self.rng.next_u32() % 200) as usize;
            payload.extend((0..extra).map(|i| (i as u8) ^ (self.next_seq as u8)));
            let ok = sim.send_udp(self.from, self.to, &payload).is_ok();
            self.sent.push((self.next_seq, sim.now, ok));
            self.next_seq += 1;
        }
        let span = self.max_gap.saturating_sub(self.min_gap);
        let gap = self.min_gap + span.mul_f64((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64);
        self.next_at = sim.now + gap;
    }
}

/// Runs the network until `end` while the flows send; flows stop at `end`.
pub fn run_flows(sim: &mut Sim, flows: &mut [&mut Flow], end: Instant) {
    while let Some(i) = (0..flows.len()).filter(|&i| flows[i].next_at <= end).min_by_key(|&i| (flows[i].next_at, i)) {
        let t = flows[i].next_at;
        sim.run_until(t);
        flows[i].fire(sim);
    }
    sim.run_until(end);
}

/// What arrived of a flow.
#[derive(Debug)]
pub struct FlowReport {
    pub sent: usize,
    pub delivered: usize,
    /// Packets delivered more than once (must be 0: replay protection).
    pub duplicates: usize,
    /// Deliveries with a lower sequence number than an earlier one.
    pub reordered: usize,
    /// Longest time between consecutive deliveries within `[from, until]`
    /// (the window's edges count as deliveries).
    pub max_gap: Duration,
    pub max_gap_at: Instant,
    /// Packets handed to the node that never arrived.
    pub lost: usize,
    /// Longest time from `send_ip` to arrival (queued packets included) of
    /// the packets sent from `from` on, and that packet's number.
    pub max_latency: Duration,
    pub max_latency_seq: u64,
    /// Arrival times of the flow's packets.
    pub arrivals: Vec<(Instant, u64)>,
}

impl FlowReport {
    pub fn ratio(&self) -> f64 {
        self.delivered as f64 / self.sent.max(1) as f64
    }
}

/// Parses flow packets out of node `flow.to`'s inbox.
pub fn flow_report(sim: &Sim, flow: &Flow, from: Instant, until: Instant) -> FlowReport {
    let dst = &sim.nodes[flow.to];
    let src_ip = sim.nodes[flow.from].ip;
    let mut arrivals = Vec::new();
    for d in &dst.inbox {
        let p = &d.packet;
        if p.len() < 40 || p[12..16] != src_ip.octets() {
            continue;
        }
        let id = u32::from_be_bytes(p[28..32].try_into().unwrap());
        if id != flow.id {
            continue;
        }
        let seq = u64::from_be_bytes(p[32..40].try_into().unwrap());
        arrivals.push((d.at, seq));
    }
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    let mut reordered = 0;
    let mut max_seq: Option<u64> = None;
    for &(_, s) in &arrivals {
        if !seen.insert(s) {
            duplicates += 1;
        }
        if max_seq.is_some_and(|m| s < m) {
            reordered += 1;
        }
        max_seq = Some(max_seq.map_or(s, |m| m.max(s)));
    }
    let mut times: Vec<Instant> = arrivals.iter().map(|a| a.0).filter(|&t| t >= from && t <= until).collect();
    times.insert(0, from);
    times.push(until);
    let (mut max_gap, mut max_gap_at) = (Duration::ZERO, from);
    for w in times.windows(2) {
        let g = w[1].saturating_duration_since(w[0]);
        if g > max_gap {
            max_gap = g;
            max_gap_at = w[0];
        }
    }
    let sent_at: HashMap<u64, Instant> = flow.sent.iter().map(|s| (s.0, s.1)).collect();
    let (mut max_latency, mut max_latency_seq) = (Duration::ZERO, 0);
    for &(at, s) in &arrivals {
        if sent_at[&s] < from {
            continue;
        }
        let l = at.saturating_duration_since(sent_at[&s]);
        if l > max_latency {
            max_latency = l;
            max_latency_seq = s;
        }
    }
    let sent = flow.sent.len();
    FlowReport {
        max_latency,
        max_latency_seq,
        sent,
        delivered: seen.len(),
        duplicates,
        reordered,
        max_gap,
        max_gap_at,
        lost: sent - seen.len(),
        arrivals,
    }
}
